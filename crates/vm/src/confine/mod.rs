//! Least privilege for QEMU processes: who they run as and what they may consume.
//!
//! * **Account** — when the control plane is root, QEMU runs as an unprivileged system user
//!   (`mayfly-qemu` by default, created on first use). It owns its run directory and overlay; the
//!   image base, kernel, initrd and a template's frozen disk stay root's and read-only to it.
//!   When the control plane is not root, QEMU runs as the control plane's user.
//! * **Caps** — each VM gets its own cgroup ([`cgroup`]): memory = guest RAM + an overhead
//!   allowance, CPU quota = vCPUs. The child joins it before `exec`, so QEMU never runs uncapped.
//!   Where no cgroup is usable the VM gets an `RLIMIT_DATA` of the same size instead (a softer
//!   cap: it bounds private writable mappings, not the page cache), and a log line says so.
//! * Always: `RLIMIT_CORE` 0 (a crash never writes guest memory to disk), `RLIMIT_NOFILE`.
//!
//! Not here: `RLIMIT_AS` (QEMU reserves large address ranges it never touches, so it breaks
//! QEMU) and `RLIMIT_NPROC` (it counts every thread of every VM of the shared account).

pub mod cgroup;
pub mod user;

use crate::accel::Accel;
use crate::VmError;
use cgroup::{Caps, Cgroups};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
pub use user::Account;

/// Operator settings for confinement.
#[derive(Debug, Clone)]
pub struct ConfineConfig {
    /// Account QEMU runs as when the control plane is root; `None` keeps the control plane's.
    pub qemu_user: Option<String>,
    /// One cgroup per VM with memory and CPU caps, where the host has usable cgroups.
    pub cgroups: bool,
    /// Memory a VM may use beyond its guest RAM: QEMU itself, the TCG translation buffer, page
    /// tables, device buffers.
    pub memory_overhead_mib: u32,
    /// Open files per QEMU process.
    pub max_open_files: u64,
    /// Directories QEMU must reach besides the state dir (the image store); if its account
    /// cannot enter them, QEMU runs as the control plane's user instead (logged).
    pub must_reach: Vec<PathBuf>,
}

impl Default for ConfineConfig {
    fn default() -> Self {
        Self {
            qemu_user: Some("mayfly-qemu".into()),
            cgroups: true,
            memory_overhead_mib: 384,
            max_open_files: 4096,
            must_reach: Vec::new(),
        }
    }
}

/// What the backend applies to every QEMU it starts.
#[derive(Debug)]
pub struct Confiner {
    account: Option<Account>,
    cgroups: Option<Cgroups>,
    overhead_mib: u32,
    max_open_files: u64,
    /// Supplementary group for `/dev/kvm` (KVM only).
    kvm_gid: Option<u32>,
}

/// The confinement of one VM: its cgroup directories and, until spawn, their `cgroup.procs`.
#[derive(Debug, Default)]
pub struct VmConfinement {
    pub cgroup_dirs: Vec<PathBuf>,
    procs: Vec<std::fs::File>,
    /// `RLIMIT_DATA` in bytes where there is no cgroup.
    data_limit: Option<u64>,
}

impl VmConfinement {
    /// Closes the `cgroup.procs` files once the child has joined.
    pub fn spawned(&mut self) {
        self.procs.clear();
    }
}

impl Confiner {
    /// Resolves (or creates) the account and finds the cgroup layout; logs what applies.
    pub fn new(cfg: &ConfineConfig, state_dir: &Path, accel: Accel) -> Result<Self, VmError> {
        let root = nix::unistd::geteuid().is_root();
        let account = match (&cfg.qemu_user, root) {
            (Some(name), true) if !name.is_empty() => {
                Some(user::resolve_or_create(name).map_err(|e| VmError::Confine(format!("qemu_user: {e}")))?)
            }
            (Some(name), false) if !name.is_empty() => {
                tracing::info!(user = name, "not running as root: QEMU runs as the control plane's own user");
                None
            }
            _ => None,
        };
        // A data dir under a private home (e.g. /root/.local/share/mayfly, /root being 0700)
        // cannot be reached by another account: keep QEMU working, as the control plane's user.
        let account = account.and_then(|a| {
            let blocked = std::iter::once(state_dir).chain(cfg.must_reach.iter().map(PathBuf::as_path)).find_map(|p| user::unreachable_dir(p, a));
            match blocked {
                None => Some(a),
                Some(dir) => {
                    tracing::warn!(
                        user = ?cfg.qemu_user,
                        blocked = %dir.display(),
                        "QEMU runs as the control plane's user (root): its account cannot enter this directory; use a data dir it can reach (e.g. /var/lib/mayfly)"
                    );
                    None
                }
            }
        });
        let cgroups = if !cfg.cgroups {
            tracing::warn!("cgroups turned off: QEMU memory is capped by RLIMIT_DATA only, CPU is not capped");
            None
        } else {
            match Cgroups::detect(&state_tag(state_dir)) {
                Ok(c) => Some(c),
                Err(why) => {
                    tracing::warn!("no usable cgroups ({why}): QEMU memory is capped by RLIMIT_DATA only, CPU is not capped");
                    None
                }
            }
        };
        let kvm_gid = match (accel, account) {
            (Accel::Kvm, Some(_)) => {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata("/dev/kvm").ok().map(|m| m.gid())
            }
            _ => None,
        };
        tracing::info!(
            user = ?cfg.qemu_user.as_ref().filter(|_| account.is_some()),
            uid = account.map(|a| a.uid),
            cgroups = ?cgroups,
            overhead_mib = cfg.memory_overhead_mib,
            "QEMU confinement"
        );
        Ok(Self { account, cgroups, overhead_mib: cfg.memory_overhead_mib, max_open_files: cfg.max_open_files, kvm_gid })
    }

    /// The account QEMU runs as, when it is not the control plane's own.
    pub fn account(&self) -> Option<Account> {
        self.account
    }

    pub fn cgroups(&self) -> Option<&Cgroups> {
        self.cgroups.as_ref()
    }

    /// Hands `path` to QEMU's account (no-op when QEMU runs as the control plane's user).
    pub fn give(&self, vm: &str, path: &Path) -> Result<(), VmError> {
        let Some(a) = self.account else { return Ok(()) };
        user::give(path, a).map_err(|source| VmError::Io { vm: vm.to_string(), step: "handing a file to the QEMU user", source })
    }

    /// Memory cap of a VM with `memory_mib` of guest RAM.
    pub fn memory_limit_bytes(&self, memory_mib: u32) -> u64 {
        (u64::from(memory_mib) + u64::from(self.overhead_mib)) << 20
    }

    /// Creates VM `id`'s cgroups (or picks its rlimit fallback).
    pub fn prepare(&self, id: &str, vcpus: u32, memory_mib: u32) -> Result<VmConfinement, VmError> {
        let memory_bytes = self.memory_limit_bytes(memory_mib);
        match &self.cgroups {
            Some(cg) => {
                let dirs = cg.vm_dirs(id);
                let procs = cg.create_vm(id, Caps { memory_bytes, vcpus }).map_err(|e| {
                    cgroup::remove_vm(&dirs);
                    VmError::Confine(format!("VM {id}: {e}"))
                })?;
                Ok(VmConfinement { cgroup_dirs: dirs, procs, data_limit: None })
            }
            None => Ok(VmConfinement { cgroup_dirs: Vec::new(), procs: Vec::new(), data_limit: Some(memory_bytes) }),
        }
    }

    /// Makes the child join `c`'s cgroups, set its limits and drop to QEMU's account before it
    /// executes QEMU.
    pub fn apply(&self, cmd: &mut tokio::process::Command, c: &VmConfinement) {
        let fds: Vec<RawFd> = c.procs.iter().map(|f| f.as_raw_fd()).collect();
        let account = self.account;
        let groups: Vec<libc::gid_t> = self.kvm_gid.into_iter().collect();
        // Never above the hard limit the control plane has (raising it needs privilege).
        let nofile = self.max_open_files.min(hard_limit(libc::RLIMIT_NOFILE));
        let data = c.data_limit;
        // SAFETY: the closure runs between fork and exec and makes only async-signal-safe
        // syscalls (write, setrlimit, setgroups, setgid, setuid) on memory allocated before fork.
        unsafe {
            cmd.pre_exec(move || {
                for fd in &fds {
                    // "0" = the writing process.
                    if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                set_limit(libc::RLIMIT_CORE, 0)?;
                set_limit(libc::RLIMIT_NOFILE, nofile)?;
                if let Some(bytes) = data {
                    set_limit(libc::RLIMIT_DATA, bytes)?;
                }
                if let Some(a) = account {
                    if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                        || libc::setgid(a.gid) != 0
                        || libc::setuid(a.uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }

    /// Every cgroup directory VM `id` may have (for reaping after a crash).
    pub fn vm_cgroup_dirs(&self, id: &str) -> Vec<PathBuf> {
        self.cgroups.as_ref().map(|c| c.vm_dirs(id)).unwrap_or_default()
    }
}

impl Drop for Confiner {
    fn drop(&mut self) {
        // Empty parents go with the backend; a parent that still holds VM cgroups stays (and
        // the next start on this state dir reaps them).
        for p in self.cgroups.iter().flat_map(|c| c.parents()) {
            let _ = std::fs::remove_dir(p);
        }
    }
}

fn set_limit(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
    let lim = libc::rlimit { rlim_cur: value, rlim_max: value };
    // SAFETY: plain syscall with a valid pointer to a stack value.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscall writing into a stack value.
    if unsafe { libc::getrlimit(resource, &mut lim) } != 0 {
        return u64::MAX;
    }
    lim.rlim_max
}

/// A short stable name for `state_dir`, so servers with different data dirs never share (or
/// reap) each other's cgroups.
pub fn state_tag(state_dir: &Path) -> String {
    let canonical = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:012x}", h & 0xffff_ffff_ffff)
}
