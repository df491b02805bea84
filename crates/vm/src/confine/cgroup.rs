//! One cgroup per VM, under a parent named after the state dir (`mayfly-<hash>`), created inside
//! the control plane's own cgroup of each hierarchy (so whatever limits the operator put on the
//! server still bound its VMs).
//!
//! Two layouts, picked at start from `/proc/mounts` and `/proc/self/cgroup`:
//! * **v2** (unified, with the `memory` and `cpu` controllers available): `memory.max`, `cpu.max`,
//!   and where the `pids` / `io` controllers are available `pids.max` and `io.max`.
//! * **v1** (separate `memory` and `cpu` hierarchies): `memory.limit_in_bytes`,
//!   `cpu.cfs_quota_us` / `cpu.cfs_period_us`, and where mounted `pids.max` (pids hierarchy) and
//!   `blkio.throttle.*_device` (blkio hierarchy; v1 throttles reads and direct I/O, not buffered
//!   writes, which QEMU's own `-drive` throttling covers).
//!
//! The disk caps name the block device holding the state dir (its whole disk for a partition);
//! on a filesystem without one (tmpfs, overlay) only QEMU's own throttling applies.
//!
//! Neither usable (not root, read-only, controllers missing): [`Cgroups::detect`] says why and the
//! caller falls back to rlimits. A VM's cgroup directories are removed when its QEMU exits, and by
//! [`remove_vm`] for one left over by a crashed control plane (any process still in it is killed).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// CFS period used for the CPU quota (the kernel default).
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    /// `parent` is `<mount>/<own cgroup>/mayfly-<hash>`, with `memory` and `cpu` enabled below it
    /// (and `pids` / `io` when the own cgroup has them).
    V2 { parent: PathBuf, pids: bool, io: bool, device: Option<String> },
    /// One parent per hierarchy.
    V1 { memory: PathBuf, cpu: PathBuf, pids: Option<PathBuf>, blkio: Option<PathBuf>, device: Option<String> },
}

/// Per-VM caps besides memory and CPU (0 = none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoCaps {
    pub pids_max: u32,
    pub disk_bytes_per_second: u64,
    pub disk_iops: u32,
}

/// A VM's resource caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub memory_bytes: u64,
    pub vcpus: u32,
    pub io: IoCaps,
}

impl Cgroups {
    /// Finds a usable layout and creates the parent cgroup(s); `Err` says why there is none.
    /// Disk caps apply to the block device holding `state_dir`.
    pub fn detect(tag: &str, state_dir: &Path) -> Result<Cgroups, String> {
        let mut layout = Self::locate(tag)?;
        let dev = block_device_of(state_dir);
        match &mut layout {
            Cgroups::V2 { device, .. } | Cgroups::V1 { device, .. } => *device = dev,
        }
        layout.create_parents()?;
        Ok(layout)
    }

    /// Where the parents for `tag` are (or would be), without creating anything.
    pub fn locate(tag: &str) -> Result<Cgroups, String> {
        let mounts = std::fs::read_to_string("/proc/mounts").map_err(|e| format!("cannot read /proc/mounts: {e}"))?;
        let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        pick_layout(&mounts, &own, tag)
    }

    fn create_parents(&mut self) -> Result<(), String> {
        match self {
            Cgroups::V2 { parent, pids, io, .. } => {
                mkdir(parent)?;
                // The own cgroup must delegate the controllers to its children; that fails when it
                // holds processes and is not the root ("no internal processes"), and then v2 is
                // not usable here.
                let own = parent.parent().expect("parent has a parent").to_path_buf();
                write(&own.join("cgroup.subtree_control"), "+memory +cpu")?;
                write(&parent.join("cgroup.subtree_control"), "+memory +cpu")?;
                // The optional controllers: a cgroup without them still caps memory and CPU.
                for (on, ctrl) in [(pids, "+pids"), (io, "+io")] {
                    if *on {
                        *on = write(&own.join("cgroup.subtree_control"), ctrl).and_then(|()| write(&parent.join("cgroup.subtree_control"), ctrl)).is_ok();
                    }
                }
                Ok(())
            }
            Cgroups::V1 { memory, cpu, pids, blkio, .. } => {
                mkdir(memory)?;
                mkdir(cpu)?;
                for opt in [pids, blkio] {
                    if opt.as_ref().is_some_and(|d| mkdir(d).is_err()) {
                        *opt = None;
                    }
                }
                Ok(())
            }
        }
    }

    /// The cgroup directories of VM `id` (they may not exist).
    pub fn vm_dirs(&self, id: &str) -> Vec<PathBuf> {
        self.parents().iter().map(|p| p.join(id)).collect()
    }

    /// Parent directories (where every VM cgroup of this state dir lives).
    pub fn parents(&self) -> Vec<PathBuf> {
        match self {
            Cgroups::V2 { parent, .. } => vec![parent.clone()],
            Cgroups::V1 { memory, cpu, pids, blkio, .. } => {
                [Some(memory), Some(cpu), pids.as_ref(), blkio.as_ref()].into_iter().flatten().cloned().collect()
            }
        }
    }

    /// Which of `caps` the cgroups enforce: (pids, disk). The disk needs a block device.
    pub fn enforces(&self) -> (bool, bool) {
        match self {
            Cgroups::V2 { pids, io, device, .. } => (*pids, *io && device.is_some()),
            Cgroups::V1 { pids, blkio, device, .. } => (pids.is_some(), blkio.is_some() && device.is_some()),
        }
    }

    /// Ids of the VM cgroups present.
    pub fn vm_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .parents()
            .iter()
            .flat_map(|p| std::fs::read_dir(p).into_iter().flatten().flatten())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Creates VM `id`'s cgroups with `caps` and opens their `cgroup.procs` for the child to join.
    pub fn create_vm(&self, id: &str, caps: Caps) -> Result<Vec<std::fs::File>, String> {
        let quota = u64::from(caps.vcpus.max(1)) * CPU_PERIOD_US;
        let io = caps.io;
        let mut files: Vec<(PathBuf, &str, String)> = match self {
            Cgroups::V2 { parent, .. } => {
                let d = parent.join(id);
                vec![
                    (d.clone(), "memory.max", caps.memory_bytes.to_string()),
                    (d.clone(), "memory.swap.max", "0".into()),
                    (d, "cpu.max", format!("{quota} {CPU_PERIOD_US}")),
                ]
            }
            Cgroups::V1 { memory, cpu, .. } => vec![
                (memory.join(id), "memory.limit_in_bytes", caps.memory_bytes.to_string()),
                (cpu.join(id), "cpu.cfs_period_us", CPU_PERIOD_US.to_string()),
                (cpu.join(id), "cpu.cfs_quota_us", quota.to_string()),
            ],
        };
        let (pids_on, disk_on) = self.enforces();
        let limit = |v: u64| if v == 0 { "max".to_string() } else { v.to_string() };
        match self {
            Cgroups::V2 { parent, device, .. } => {
                let d = parent.join(id);
                if pids_on && io.pids_max > 0 {
                    files.push((d.clone(), "pids.max", io.pids_max.to_string()));
                }
                if let (true, Some(dev)) = (disk_on, device) {
                    let (bps, iops) = (limit(io.disk_bytes_per_second), limit(u64::from(io.disk_iops)));
                    files.push((d, "io.max", format!("{dev} rbps={bps} wbps={bps} riops={iops} wiops={iops}")));
                }
            }
            Cgroups::V1 { pids, blkio, device, .. } => {
                if let (Some(p), true) = (pids, io.pids_max > 0) {
                    files.push((p.join(id), "pids.max", io.pids_max.to_string()));
                }
                if let (Some(b), Some(dev)) = (blkio, device) {
                    // v1 has no "max": 0 means no limit (and a limit of 0 is refused).
                    for (file, v) in [
                        ("blkio.throttle.read_bps_device", io.disk_bytes_per_second),
                        ("blkio.throttle.write_bps_device", io.disk_bytes_per_second),
                        ("blkio.throttle.read_iops_device", u64::from(io.disk_iops)),
                        ("blkio.throttle.write_iops_device", u64::from(io.disk_iops)),
                    ] {
                        if v > 0 {
                            files.push((b.join(id), file, format!("{dev} {v}")));
                        }
                    }
                }
            }
        }
        let mut procs = Vec::new();
        for dir in self.vm_dirs(id) {
            mkdir(&dir)?;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))
                .map_err(|e| format!("cannot open {}/cgroup.procs: {e}", dir.display()))?;
            procs.push(f);
        }
        for (dir, file, value) in files {
            let path = dir.join(file);
            // memory.swap.max is absent without swap accounting; the memory limit still holds.
            if file == "memory.swap.max" && !path.exists() {
                continue;
            }
            // The pids and disk caps are extras: a host whose kernel refuses one (a device it
            // cannot throttle) still gets a VM capped in memory and CPU, and QEMU's own disk
            // throttling; the log says which cap is missing.
            let extra = file.starts_with("pids.") || file.starts_with("io.") || file.starts_with("blkio.");
            match write(&path, &value) {
                Err(e) if extra => tracing::warn!(vm = id, "cap not applied: {e}"),
                r => r?,
            }
        }
        Ok(procs)
    }
}

/// Removes the cgroup directories `dirs`: kills whatever still runs in them (only VM processes
/// are ever put there), then waits briefly for the kernel to let go of exited tasks.
pub fn remove_vm(dirs: &[PathBuf]) {
    for dir in dirs {
        if !dir.exists() {
            continue;
        }
        for _ in 0..200 {
            let pids = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: plain syscall on a pid found in a cgroup only VM processes join.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            match std::fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        if dir.exists() {
            tracing::warn!(cgroup = %dir.display(), "cannot remove VM cgroup");
        } else {
            tracing::debug!(cgroup = %dir.display(), "VM cgroup removed");
        }
    }
}

/// The layout to use, from `/proc/mounts` and `/proc/self/cgroup` (pure, tested).
fn pick_layout(mounts: &str, own: &str, tag: &str) -> Result<Cgroups, String> {
    let mut v2_mount = None;
    let mut v1: std::collections::HashMap<&str, &str> = Default::default();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        match f[2] {
            "cgroup2" => v2_mount = Some(f[1]),
            "cgroup" => {
                for opt in f[3].split(',') {
                    if matches!(opt, "memory" | "cpu" | "pids" | "blkio") {
                        v1.insert(opt, f[1]);
                    }
                }
            }
            _ => {}
        }
    }
    let own_path = |key: &str| {
        own.lines().find_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
            let hit = if key.is_empty() { ctrls.is_empty() } else { ctrls.split(',').any(|c| c == key) };
            hit.then(|| path.trim_start_matches('/').to_string())
        })
    };
    let leaf = format!("mayfly-{tag}");
    if let Some(m) = v2_mount {
        let own2 = own_path("").unwrap_or_default();
        let own_dir = Path::new(m).join(&own2);
        let controllers = std::fs::read_to_string(own_dir.join("cgroup.controllers")).unwrap_or_default();
        let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
        if has("memory") && has("cpu") {
            return Ok(Cgroups::V2 { parent: own_dir.join(&leaf), pids: has("pids"), io: has("io"), device: None });
        }
    }
    let v1_parent = |ctrl: &str| v1.get(ctrl).map(|m| Path::new(m).join(own_path(ctrl).unwrap_or_default()).join(&leaf));
    match (v1_parent("memory"), v1_parent("cpu")) {
        (Some(memory), Some(cpu)) => Ok(Cgroups::V1 { memory, cpu, pids: v1_parent("pids"), blkio: v1_parent("blkio"), device: None }),
        _ => Err("no cgroup v2 with the memory and cpu controllers, and no cgroup v1 memory and cpu hierarchies".into()),
    }
}

/// `major:minor` of the whole disk holding `path`, if it is on a block device.
fn block_device_of(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if !sys.exists() {
        return None; // tmpfs, overlay, NFS…: an anonymous device
    }
    // A partition's cgroup limits go on its disk: the parent directory in sysfs.
    if sys.join("partition").exists() {
        let disk = std::fs::canonicalize(&sys).ok()?.parent()?.join("dev");
        return std::fs::read_to_string(disk).ok().map(|s| s.trim().to_string());
    }
    Some(format!("{major}:{minor}"))
}

fn mkdir(dir: &Path) -> Result<(), String> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot create {}: {e}", dir.display())),
    }
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| format!("cannot write {value:?} to {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
        cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
        cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n\
        cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0\n\
        cgroup2 /nonexistent/unified cgroup2 rw,relatime 0 0\n";

    #[test]
    fn v1_parents_sit_in_the_own_cgroups() {
        let own = "4:memory:/process_api/abc\n1:cpu:/\n8:pids:/\n0::/\n";
        let got = pick_layout(HYBRID_MOUNTS, own, "t1").unwrap();
        assert_eq!(
            got,
            Cgroups::V1 {
                memory: "/sys/fs/cgroup/memory/process_api/abc/mayfly-t1".into(),
                cpu: "/sys/fs/cgroup/cpu/mayfly-t1".into(),
                pids: Some("/sys/fs/cgroup/pids/mayfly-t1".into()),
                blkio: None,
                device: None,
            }
        );
        assert_eq!(got.vm_dirs("vm1")[1], PathBuf::from("/sys/fs/cgroup/cpu/mayfly-t1/vm1"));
    }

    #[test]
    fn combined_v1_controllers_and_missing_ones() {
        let mounts = "cgroup /c/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\ncgroup /c/memory cgroup rw,memory 0 0\n";
        let own = "3:cpu,cpuacct:/a\n2:memory:/a\n";
        let Cgroups::V1 { cpu, .. } = pick_layout(mounts, own, "t").unwrap() else { panic!("v1") };
        assert_eq!(cpu, PathBuf::from("/c/cpu,cpuacct/a/mayfly-t"));
        let e = pick_layout("cgroup /c/memory cgroup rw,memory 0 0\n", own, "t").unwrap_err();
        assert!(e.contains("no cgroup"), "{e}");
    }
}
