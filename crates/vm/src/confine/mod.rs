//! Least privilege for QEMU processes: who they run as and what they may consume.
//!
//! * **Account** — when the control plane is root, each VM's QEMU runs under its own uid from
//!   `vm_uid_range` ([`uids`]; gid = uid, no supplementary groups, no passwd entry). It owns its
//!   run directory (0700) and overlay; the image base, kernel, initrd and a template's frozen disk
//!   and RAM stay root's and read-only to it (template RAM reaches clones as a sealed memfd,
//!   [`ram`]). With an empty range, every QEMU shares the `qemu_user` account (the old model).
//!   When the control plane is not root, QEMU runs as the control plane's user. A data dir the
//!   VM uids cannot enter is refused at start (QEMU never falls back to root).
//! * **Caps** — each VM gets its own cgroup ([`cgroup`]): memory = guest RAM + an overhead
//!   allowance, CPU quota = vCPUs, `pids.max` (QEMU's threads), and disk bandwidth/IOPS where the
//!   host's cgroups can throttle the state dir's disk. The child joins it before `exec`, so QEMU
//!   never runs uncapped. The disk caps are also QEMU's own `-drive` throttling, which holds for
//!   every guest whatever the host's cgroups (cgroup v1 cannot throttle buffered writes).
//!   Where no cgroup is usable the VM gets an `RLIMIT_DATA` of the same size instead (a softer
//!   cap: it bounds private writable mappings, not the page cache), and a log line says so.
//! * Always: `RLIMIT_CORE` 0 (a crash never writes guest memory to disk), `RLIMIT_NOFILE`.
//!
//! Not here: `RLIMIT_AS` (QEMU reserves large address ranges it never touches, so it breaks
//! QEMU) and `RLIMIT_NPROC` (it is per uid: with per-VM uids `pids.max` does that job and also
//! holds without them).

pub mod cgroup;
pub mod ram;
pub mod uids;
pub mod user;

use crate::accel::Accel;
use crate::VmError;
pub use cgroup::IoCaps;
use cgroup::{Caps, Cgroups};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
pub use uids::{UidAllocator, UidRange};
pub use user::Account;

/// Default `vm_uid_range`: above the 100000-165535 that container tools hand out by default.
pub const DEFAULT_UID_RANGE: UidRange = UidRange { first: 200_000, last: 265_535 };

/// Operator settings for confinement.
#[derive(Debug, Clone)]
pub struct ConfineConfig {
    /// Uids for QEMU (one per VM) when the control plane is root; `None`: `qemu_user` instead.
    pub vm_uid_range: Option<UidRange>,
    /// Account every QEMU shares when there is no `vm_uid_range` and the control plane is root;
    /// `None` keeps the control plane's (QEMU as root: only when the operator asks for it).
    pub qemu_user: Option<String>,
    /// One cgroup per VM with memory and CPU caps, where the host has usable cgroups.
    pub cgroups: bool,
    /// Memory a VM may use beyond its guest RAM: QEMU itself, the TCG translation buffer, page
    /// tables, device buffers.
    pub memory_overhead_mib: u32,
    /// Open files per QEMU process.
    pub max_open_files: u64,
    /// Directories QEMU must reach besides the state dir (the image store); if its account
    /// cannot enter them the backend refuses to start, naming the directory.
    pub must_reach: Vec<PathBuf>,
    /// Tasks (QEMU's threads) per VM (`pids.max`); 0 = no cap.
    pub pids_max: u32,
    /// Disk bandwidth per VM in bytes/s, reads and writes together; 0 = no cap.
    pub disk_bytes_per_second: u64,
    /// Disk operations per second per VM; 0 = no cap.
    pub disk_iops: u32,
}

impl Default for ConfineConfig {
    fn default() -> Self {
        Self {
            vm_uid_range: Some(DEFAULT_UID_RANGE),
            qemu_user: Some("mayfly-qemu".into()),
            cgroups: true,
            memory_overhead_mib: 384,
            max_open_files: 4096,
            must_reach: Vec::new(),
            pids_max: DEFAULT_PIDS_MAX,
            disk_bytes_per_second: DEFAULT_DISK_BYTES_PER_SECOND,
            disk_iops: DEFAULT_DISK_IOPS,
        }
    }
}

/// Default `pids.max` per VM: QEMU needs a few dozen threads (vCPUs, I/O workers, RCU).
pub const DEFAULT_PIDS_MAX: u32 = 256;
/// Default disk bandwidth per VM: 200 MiB/s.
pub const DEFAULT_DISK_BYTES_PER_SECOND: u64 = 200 << 20;
/// Default disk operations per second per VM.
pub const DEFAULT_DISK_IOPS: u32 = 5000;

/// Who QEMU runs as.
#[derive(Debug)]
pub enum Accounts {
    /// The control plane's own user (it is not root, or the operator turned accounts off).
    Server,
    /// Every QEMU shares one account (`qemu_user`, no `vm_uid_range`).
    Shared(Account),
    /// Each VM its own uid.
    PerVm(UidAllocator),
}

/// What the backend applies to every QEMU it starts.
#[derive(Debug)]
pub struct Confiner {
    accounts: Accounts,
    /// Sealed copies of template RAM handed to clones.
    ram: ram::TemplateRam,
    pids_max: u32,
    disk_bytes_per_second: u64,
    disk_iops: u32,
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
    /// The account QEMU drops to (`None`: stays the control plane's user).
    pub account: Option<Account>,
    /// Descriptors QEMU inherits (cleared of close-on-exec in the child only).
    pub inherit: Vec<RawFd>,
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
        let accounts = match (&cfg.vm_uid_range, &cfg.qemu_user, root) {
            (_, _, false) => {
                tracing::info!("not running as root: QEMU runs as the control plane's own user");
                Accounts::Server
            }
            (Some(range), _, true) => Accounts::PerVm(UidAllocator::new(*range, state_dir)),
            (None, Some(name), true) if !name.is_empty() => Accounts::Shared(
                user::resolve_or_create(name).map_err(|e| VmError::Confine(format!("qemu_user: {e}")))?,
            ),
            (None, _, true) => {
                tracing::warn!("vm_uid_range and qemu_user are empty: QEMU runs as root");
                Accounts::Server
            }
        };
        // Never fall back to root: a directory QEMU's accounts cannot enter is the operator's
        // to fix, and the error says which and how.
        let probe = match &accounts {
            Accounts::Server => None,
            Accounts::Shared(a) => {
                Some((*a, format!("the QEMU account {:?} (uid {})", cfg.qemu_user.as_deref().unwrap_or(""), a.uid)))
            }
            // A uid of the range owns nothing outside its run dir: it needs "others" search bits.
            Accounts::PerVm(u) => Some((
                Account { uid: u.range().first, gid: u.range().first },
                format!("QEMU's uids ({}, one per VM)", u.range()),
            )),
        };
        if let Some((a, who)) = probe {
            let blocked = std::iter::once(state_dir)
                .chain(cfg.must_reach.iter().map(PathBuf::as_path))
                .find_map(|p| user::unreachable_dir(p, a));
            if let Some(dir) = blocked {
                return Err(VmError::Confine(format!(
                    "{who} cannot enter {}, on the way to the data dir; QEMU never runs as root instead. \
                     Let them through with `chmod o+x {}` or use a data dir they can reach (root's default, /var/lib/mayfly, is fine)",
                    dir.display(),
                    dir.display()
                )));
            }
        }
        let cgroups = if !cfg.cgroups {
            tracing::warn!("cgroups turned off: QEMU memory is capped by RLIMIT_DATA only, CPU is not capped");
            None
        } else {
            match Cgroups::detect(&state_tag(state_dir), state_dir) {
                Ok(c) => Some(c),
                Err(why) => {
                    tracing::warn!(
                        "no usable cgroups ({why}): QEMU memory is capped by RLIMIT_DATA only, CPU is not capped"
                    );
                    None
                }
            }
        };
        let kvm_gid = match (accel, &accounts) {
            (Accel::Kvm, Accounts::Shared(_) | Accounts::PerVm(_)) => {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata("/dev/kvm").ok().map(|m| m.gid())
            }
            _ => None,
        };
        tracing::info!(
            accounts = ?accounts,
            cgroups = ?cgroups,
            overhead_mib = cfg.memory_overhead_mib,
            pids_max = cfg.pids_max,
            disk_bytes_per_second = cfg.disk_bytes_per_second,
            disk_iops = cfg.disk_iops,
            "QEMU confinement"
        );
        Ok(Self {
            accounts,
            ram: ram::TemplateRam::default(),
            pids_max: cfg.pids_max,
            disk_bytes_per_second: cfg.disk_bytes_per_second,
            disk_iops: cfg.disk_iops,
            cgroups,
            overhead_mib: cfg.memory_overhead_mib,
            max_open_files: cfg.max_open_files,
            kvm_gid,
        })
    }

    /// Who QEMU runs as.
    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// The account VM `id` runs as (its run directory's owner), when not the control plane's.
    pub fn account_of(&self, id: &str) -> Option<Account> {
        match &self.accounts {
            Accounts::Server => None,
            Accounts::Shared(a) => Some(*a),
            Accounts::PerVm(u) => u.owner_of(id),
        }
    }

    /// Gives VM `id`'s new run directory to the account its QEMU will run as (a fresh uid per
    /// VM) and closes it to everyone else (0700).
    pub fn claim(&self, id: &str, run_dir: &Path) -> Result<Option<Account>, VmError> {
        let io =
            |source| VmError::Io { vm: id.to_string(), step: "handing the run directory to the QEMU user", source };
        let account = match &self.accounts {
            Accounts::Server => None,
            Accounts::Shared(a) => {
                user::give(run_dir, *a).map_err(io)?;
                Some(*a)
            }
            Accounts::PerVm(u) => Some(u.claim(run_dir).map_err(|e| VmError::Confine(format!("VM {id}: {e}")))?),
        };
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        Ok(account)
    }

    /// The sealed, read-only copy of a template's RAM file that clones map.
    pub fn template_ram(&self, mem: &Path) -> Result<std::sync::Arc<std::os::fd::OwnedFd>, VmError> {
        self.ram.sealed(mem).map_err(VmError::Confine)
    }

    /// Makes the sealed copy of a template's RAM now, off the async threads (≈ 1 s for 512 MiB
    /// here), so that no clone's start waits for it.
    pub async fn seal_template_ram(&self, mem: &Path) -> Result<(), VmError> {
        let (ram, mem) = (self.ram.clone(), mem.to_path_buf());
        tokio::task::spawn_blocking(move || ram.sealed(&mem).map(drop))
            .await
            .map_err(|e| VmError::Confine(e.to_string()))?
            .map_err(VmError::Confine)
    }

    /// The per-VM caps besides memory and CPU, as configured.
    pub fn io_caps(&self) -> IoCaps {
        IoCaps { pids_max: self.pids_max, disk_bytes_per_second: self.disk_bytes_per_second, disk_iops: self.disk_iops }
    }

    pub fn cgroups(&self) -> Option<&Cgroups> {
        self.cgroups.as_ref()
    }

    /// Hands `path` to `account` (no-op when QEMU runs as the control plane's user).
    pub fn give(&self, account: Option<Account>, vm: &str, path: &Path) -> Result<(), VmError> {
        let Some(a) = account else { return Ok(()) };
        user::give(path, a).map_err(|source| VmError::Io {
            vm: vm.to_string(),
            step: "handing a file to the QEMU user",
            source,
        })
    }

    /// Memory cap of a VM with `memory_mib` of guest RAM.
    pub fn memory_limit_bytes(&self, memory_mib: u32) -> u64 {
        (u64::from(memory_mib) + u64::from(self.overhead_mib)) << 20
    }

    /// Creates VM `id`'s cgroups (or picks its rlimit fallback); QEMU will drop to `account`.
    pub fn prepare(
        &self,
        id: &str,
        vcpus: u32,
        memory_mib: u32,
        account: Option<Account>,
    ) -> Result<VmConfinement, VmError> {
        let memory_bytes = self.memory_limit_bytes(memory_mib);
        let caps = Caps { memory_bytes, vcpus, io: self.io_caps() };
        match &self.cgroups {
            Some(cg) => {
                let dirs = cg.vm_dirs(id);
                let procs = cg.create_vm(id, caps).map_err(|e| {
                    cgroup::remove_vm(&dirs);
                    VmError::Confine(format!("VM {id}: {e}"))
                })?;
                Ok(VmConfinement { cgroup_dirs: dirs, procs, data_limit: None, account, inherit: Vec::new() })
            }
            None => Ok(VmConfinement {
                cgroup_dirs: Vec::new(),
                procs: Vec::new(),
                data_limit: Some(memory_bytes),
                account,
                inherit: Vec::new(),
            }),
        }
    }

    /// Makes the child join `c`'s cgroups, set its limits and drop to QEMU's account before it
    /// executes QEMU.
    pub fn apply(&self, cmd: &mut tokio::process::Command, c: &VmConfinement) {
        let fds: Vec<RawFd> = c.procs.iter().map(|f| f.as_raw_fd()).collect();
        let inherit = c.inherit.clone();
        let account = c.account;
        let groups: Vec<libc::gid_t> = self.kvm_gid.into_iter().collect();
        // Never above the hard limit the control plane has (raising it needs privilege).
        let nofile = self.max_open_files.min(hard_limit(libc::RLIMIT_NOFILE));
        let data = c.data_limit;
        // SAFETY: the closure runs between fork and exec and makes only async-signal-safe
        // syscalls (write, setrlimit, fcntl, setgroups, setgid, setuid) on memory allocated before fork.
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
                for fd in &inherit {
                    if libc::fcntl(*fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
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
