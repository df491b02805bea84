//! QEMU implementation of [`VmBackend`].
//!
//! A VM is one `qemu-system-x86_64` child process plus its run directory (see [`crate::rundir`]).
//! Creation is a cleanup stack: overlay, process and record are undone in reverse if any later
//! step fails. Stopping asks QEMU to quit over QMP, falls back to SIGKILL, reaps the process and
//! deletes the run directory — whatever state the VM was in.

use crate::accel::{self, Accel, AccelSetting, HostVirt};
use crate::channel::GuestChannel;
use crate::cleanup::Cleanup;
use crate::cmdline::{self, MemoryBacking, QemuArgs};
use crate::confine::{cgroup, ConfineConfig, Confiner};
use crate::snapshot::Template;
use crate::overlay;
use crate::qmp::Qmp;
use crate::rundir::{RunDir, VmRecord};
use crate::{ExitInfo, Vm, VmBackend, VmError, VmSpec};
use async_trait::async_trait;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::process::Command;
use tokio::sync::watch;

/// Operator settings for the QEMU backend.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// `qemu-system-x86_64` (looked up on PATH) or an absolute path.
    pub binary: PathBuf,
    pub qemu_img: PathBuf,
    /// Parent of the per-VM run directories.
    pub state_dir: PathBuf,
    pub accel: AccelSetting,
    /// `q35` here; `microvm` suits real KVM hosts.
    pub machine: String,
    /// TCG translation-buffer size; smaller saves host memory per VM.
    pub tcg_tb_size_mib: u32,
    /// Run QEMU with `-sandbox on` (seccomp).
    pub sandbox: bool,
    /// Spawn → guest daemon answer limit.
    pub boot_timeout: Duration,
    /// Kill QEMU when the thread that spawned it exits (for short-lived CLI runs).
    pub die_with_parent: bool,
    /// Account, cgroup caps and rlimits of QEMU processes.
    pub confine: ConfineConfig,
}

impl QemuConfig {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            binary: "qemu-system-x86_64".into(),
            qemu_img: "qemu-img".into(),
            state_dir: state_dir.into(),
            accel: AccelSetting::Auto,
            machine: "q35".into(),
            tcg_tb_size_mib: 64,
            sandbox: true,
            boot_timeout: Duration::from_secs(90),
            die_with_parent: false,
            confine: ConfineConfig::default(),
        }
    }
}

pub struct QemuBackend {
    pub(crate) cfg: QemuConfig,
    accel: Accel,
    /// `qemu-system-x86_64 --version`, recorded in templates.
    pub(crate) qemu_version: String,
    pub(crate) confiner: Confiner,
}

impl QemuBackend {
    /// Checks the QEMU tools exist and resolves the accelerator.
    pub fn new(cfg: QemuConfig) -> Result<Self, VmError> {
        for (bin, pkg) in [(&cfg.binary, "qemu-system-x86"), (&cfg.qemu_img, "qemu-utils")] {
            if find_program(bin).is_none() {
                return Err(VmError::Missing {
                    what: bin.display().to_string(),
                    path: "PATH".into(),
                    hint: format!("install it with: sudo apt-get install {pkg}"),
                });
            }
        }
        let accel = accel::resolve(cfg.accel, HostVirt::probe()).map_err(VmError::Accel)?;
        std::fs::create_dir_all(&cfg.state_dir)
            .map_err(|source| VmError::Io { vm: "-".into(), step: "creating the VM state directory", source })?;
        let qemu_version = std::process::Command::new(&cfg.binary)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        let confiner = Confiner::new(&cfg.confine, &cfg.state_dir, accel)?;
        tracing::info!(?accel, qemu = %qemu_version, state_dir = %cfg.state_dir.display(), "QEMU backend ready");
        Ok(Self { cfg, accel, qemu_version, confiner })
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    pub fn config(&self) -> &QemuConfig {
        &self.cfg
    }

    /// Who QEMU runs as and what caps it gets.
    pub fn confiner(&self) -> &Confiner {
        &self.confiner
    }

    /// Ids of the VMs with a run directory or a cgroup present (live or left over).
    pub fn run_dir_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.cfg.state_dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.extend(self.confiner.cgroups().map(|c| c.vm_ids()).unwrap_or_default());
        ids.sort();
        ids.dedup();
        ids
    }

    /// Destroys the VM in run directory `id` that no live object owns: kills its QEMU (if the
    /// recorded pid still is that VM's QEMU), waits for it to go, deletes the directory.
    pub async fn reap(&self, id: &str) {
        let run = RunDir::new(&self.cfg.state_dir, id);
        let mut cgroups = self.confiner.vm_cgroup_dirs(id);
        if let Ok(rec) = VmRecord::load(&run.record()) {
            cgroups.extend(self.own_cgroups(id, &rec.cgroups));
            if crate::rundir::pid_is_vm(rec.pid, id) {
                tracing::warn!(vm = id, pid = rec.pid, "killing orphaned QEMU");
                kill(rec.pid);
                for _ in 0..200 {
                    if !crate::rundir::pid_is_vm(rec.pid, id) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        cgroups.sort();
        cgroups.dedup();
        tokio::task::spawn_blocking(move || cgroup::remove_vm(&cgroups)).await.ok();
        remove_dir(&run.dir);
    }

    /// The recorded cgroup directories of VM `id` that can be its own: cgroups (they hold a
    /// `cgroup.procs`) at `…/mayfly-<tag of this state dir>/<id>` (the server's own cgroup, and
    /// so the prefix, may have changed since, e.g. a shell then systemd). `vm.json` sits in a
    /// directory QEMU's account can write, so nothing else it names is ever removed (or its
    /// processes killed) as root.
    pub(crate) fn own_cgroups(&self, id: &str, recorded: &[PathBuf]) -> Vec<PathBuf> {
        let parent = format!("mayfly-{}", crate::confine::state_tag(&self.cfg.state_dir));
        recorded
            .iter()
            .filter(|p| {
                p.is_absolute()
                    && p.join("cgroup.procs").is_file()
                    && p.file_name().is_some_and(|n| n == id)
                    && p.parent().and_then(Path::file_name).is_some_and(|n| n.to_string_lossy() == parent)
                    && !p.components().any(|c| matches!(c, std::path::Component::ParentDir))
            })
            .cloned()
            .collect()
    }
}

/// How a VM process starts.
pub(crate) enum Launch<'a> {
    /// Cold boot from the image's kernel and base disk.
    Boot,
    /// Cold boot with RAM in a shared file, to be saved as a template.
    Template { mem: PathBuf },
    /// Restore of a template: private copy-on-write RAM, device state from `-incoming`.
    Clone(&'a Template),
    /// A fork of a paused VM: a copy of its overlay, its RAM layout, everything from `-incoming`.
    Fork { overlay: PathBuf, memory: MemoryBacking },
}

/// A spawned VM process that is not yet known to be healthy.
pub(crate) struct Launched {
    pub pid: u32,
    pub run: RunDir,
    pub exit_rx: watch::Receiver<Option<ExitInfo>>,
    pub stop_requested: Arc<AtomicBool>,
    pub started: Instant,
    pub channel: GuestChannel,
    /// What was launched (a fork repeats it).
    pub spec: VmSpec,
    pub memory: MemoryBacking,
    /// The account QEMU runs as (`None`: the control plane's).
    pub account: Option<crate::confine::Account>,
    /// A fork's overlay, open for the control plane to copy the paused source's into.
    pub overlay_copy: Option<std::fs::File>,
}

impl QemuBackend {
    pub(crate) async fn launch(&self, spec: &VmSpec, mode: &Launch<'_>) -> Result<(Launched, Cleanup), VmError> {
        if !crate::valid_id(&spec.id) {
            return Err(VmError::InvalidId(spec.id.clone()));
        }
        let backing = match mode {
            Launch::Clone(t) => t.disk(),
            Launch::Fork { overlay, .. } => overlay.clone(),
            _ => spec.base_disk.clone(),
        };
        for (what, path) in [("kernel", &spec.kernel), ("initrd", &spec.initrd), ("base disk", &backing)] {
            if !path.exists() {
                return Err(VmError::Missing {
                    what: format!("image {} {what}", spec.image),
                    path: path.display().to_string(),
                    hint: format!("rebuild it with: mayfly image build {}", spec.image),
                });
            }
        }
        let started = Instant::now();
        let run = RunDir::new(&self.cfg.state_dir, &spec.id);
        let mut cleanup = Cleanup::new();
        match std::fs::create_dir(&run.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(VmError::Exists(spec.id.clone())),
            Err(source) => return Err(VmError::Io { vm: spec.id.clone(), step: "creating the run directory", source }),
        }
        let dir = run.dir.clone();
        cleanup.push("run directory", move || remove_dir(&dir));
        // The VM's own uid owns the run dir (QEMU creates the console log and sockets there)
        // and the overlay; only the control plane (root) and that uid can enter it.
        let account = self.confiner.claim(&spec.id, &run.dir)?;

        let mut overlay_copy = None;
        let qemu_img = &self.cfg.qemu_img;
        match mode {
            // A copy of the source's overlay (same backing chain). QEMU opens it inactive
            // (`-incoming`) and re-reads it when the migration completes; the fork copies it
            // again, through the descriptor kept here, once the source is paused.
            Launch::Fork { overlay, .. } => {
                let (from, to) = (overlay.clone(), run.overlay());
                let file = tokio::task::spawn_blocking(move || copy_nofollow(&from, &to))
                    .await
                    .map_err(|e| VmError::Io { vm: spec.id.clone(), step: "copying the disk overlay", source: std::io::Error::other(e) })?
                    .map_err(|source| VmError::Io { vm: spec.id.clone(), step: "copying the disk overlay", source })?;
                overlay_copy = Some(file);
            }
            Launch::Clone(t) => {
                let blank = t.blank_overlay();
                overlay::create(qemu_img, &spec.id, &backing, None, &run.overlay(), Some(&blank)).await?
            }
            _ => overlay::create(qemu_img, &spec.id, &backing, spec.disk_size_bytes, &run.overlay(), None).await?,
        }
        self.confiner.give(account, &spec.id, &run.overlay())?;
        tracing::debug!(vm = %spec.id, ms = started.elapsed().as_millis() as u64, "overlay created");
        if let Launch::Template { mem } = mode {
            // QEMU creates the RAM file of a template in a directory that is root's: make it
            // here, for QEMU's account.
            std::fs::File::create(mem).map_err(|source| VmError::Io { vm: spec.id.clone(), step: "creating the template RAM file", source })?;
            set_mode(mem, 0o600);
            self.confiner.give(account, &spec.id, mem)?;
        }
        let mut confinement = self.confiner.prepare(&spec.id, spec.vcpus, spec.memory_mib, account)?;
        let cgroup_dirs = confinement.cgroup_dirs.clone();
        cleanup.push("cgroup", move || cgroup::remove_vm(&cgroup_dirs));

        let memory = match mode {
            Launch::Boot => MemoryBacking::Anonymous,
            Launch::Template { mem } => MemoryBacking::TemplateFile(mem.clone()),
            Launch::Clone(t) => MemoryBacking::CloneOf(t.mem()),
            Launch::Fork { memory, .. } => memory.clone(),
        };
        // A clone (or a fork of one) maps the template's RAM through a sealed memfd: QEMU 7.2
        // opens the file read-write, and the file must stay unwritable to every VM.
        let ram_fd = match &memory {
            MemoryBacking::CloneOf(mem) => Some(self.confiner.template_ram(mem)?),
            _ => None,
        };
        if let Some(fd) = &ram_fd {
            use std::os::fd::AsRawFd;
            confinement.inherit.push(fd.as_raw_fd());
        }
        let io = self.confiner.io_caps();
        let args = QemuArgs {
            id: spec.id.clone(),
            accel: self.accel,
            machine: self.cfg.machine.clone(),
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            tcg_tb_size_mib: self.cfg.tcg_tb_size_mib,
            kernel: spec.kernel.clone(),
            initrd: spec.initrd.clone(),
            cmdline: spec.cmdline.clone(),
            sandbox: self.cfg.sandbox,
            memory: memory.clone(),
            incoming: matches!(mode, Launch::Clone(_) | Launch::Fork { .. }),
            mem_path: ram_fd.as_ref().map(|fd| {
                use std::os::fd::AsRawFd;
                crate::confine::ram::fd_path(fd.as_raw_fd())
            }),
            disk_bytes_per_second: io.disk_bytes_per_second,
            disk_iops: io.disk_iops,
        };
        let stderr = std::fs::File::create(run.dir.join("qemu.log"))
            .map_err(|source| VmError::Io { vm: spec.id.clone(), step: "creating qemu.log", source })?;
        let mut cmd = Command::new(&self.cfg.binary);
        cmd.args(cmdline::build(&args, &run))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(false)
            // Its own process group: a Ctrl-C in the terminal that runs `mayfly serve`, or a
            // signal to the server's group, must not reach the VMs (they outlive the server).
            .process_group(0);
        // First: the parent-death signal is cleared by the uid change this makes.
        self.confiner.apply(&mut cmd, &confinement);
        if self.cfg.die_with_parent {
            // SAFETY: prctl is async-signal-safe and touches only the child's own state.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|source| VmError::Io { vm: spec.id.clone(), step: "spawning QEMU", source })?;
        let pid = child.id().expect("child has a pid before it is awaited");
        confinement.spawned();
        drop(ram_fd);
        cleanup.push("QEMU process", move || kill(pid));

        let record = VmRecord {
            id: spec.id.clone(),
            pid,
            image: spec.image.clone(),
            started_at_unix: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            cgroups: confinement.cgroup_dirs.clone(),
            spec: Some(spec.clone()),
            memory: Some(memory.clone()),
        };
        std::fs::write(run.record(), serde_json::to_vec_pretty(&record).expect("json"))
            .map_err(|source| VmError::Io { vm: spec.id.clone(), step: "writing vm.json", source })?;

        let (exit_tx, exit_rx) = watch::channel(None::<ExitInfo>);
        let stop_requested = Arc::new(AtomicBool::new(false));
        let requested = stop_requested.clone();
        let vm_id = spec.id.clone();
        let cgroup_dirs = confinement.cgroup_dirs;
        tokio::spawn(async move {
            let status = child.wait().await;
            // Before anyone hears of the exit: a stopped VM has no cgroup left.
            tokio::task::spawn_blocking(move || cgroup::remove_vm(&cgroup_dirs)).await.ok();
            let info = match status {
                Ok(s) => {
                    use std::os::unix::process::ExitStatusExt;
                    ExitInfo { code: s.code(), signal: s.signal(), requested: requested.load(Ordering::SeqCst) }
                }
                Err(_) => ExitInfo { code: None, signal: None, requested: requested.load(Ordering::SeqCst) },
            };
            tracing::info!(vm = %vm_id, exit = %info, requested = info.requested, "VM process exited");
            let _ = exit_tx.send(Some(info));
        });
        let channel = GuestChannel::new(&spec.id, &run.channel(), self.cfg.boot_timeout);
        let spec = spec.clone();
        Ok((Launched { pid, run, exit_rx, stop_requested, started, channel, spec, memory, account, overlay_copy }, cleanup))
    }

    /// Waits for the guest daemon; on failure kills QEMU and returns a boot error with the console.
    pub(crate) async fn ready(&self, spec: &VmSpec, l: &Launched) -> Result<(), VmError> {
        if let Err(reason) = wait_ready(&l.run, &l.channel, l.exit_rx.clone(), self.cfg.boot_timeout).await {
            return Err(self.boot_error(spec, l, reason).await);
        }
        Ok(())
    }

    pub(crate) async fn boot_error(&self, spec: &VmSpec, l: &Launched, reason: String) -> VmError {
        let mut console = l.run.console_tail(3000);
        let qemu_log = crate::rundir::console_tail(&l.run.dir.join("qemu.log"), 2000);
        if !qemu_log.trim().is_empty() {
            console.push_str("\n--- qemu stderr ---\n");
            console.push_str(qemu_log.trim());
        }
        kill(l.pid);
        let mut rx = l.exit_rx.clone();
        let _ = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|e| e.is_some())).await;
        VmError::Boot { vm: spec.id.clone(), reason, console }
    }

    pub(crate) fn finish(&self, l: Launched, cleanup: Cleanup) -> Arc<dyn Vm> {
        let boot_time = l.started.elapsed();
        tracing::info!(vm = %l.run.dir.display(), pid = l.pid, boot_ms = boot_time.as_millis() as u64, accel = ?self.accel, "VM ready");
        cleanup.disarm();
        let id = l.run.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Arc::new(QemuVm {
            id,
            pid: l.pid,
            run: l.run,
            channel: l.channel,
            exit_rx: l.exit_rx,
            stop_requested: l.stop_requested,
            boot_time,
            spec: l.spec,
            memory: l.memory,
            detached: AtomicBool::new(false),
            adopted_paused: false,
        })
    }
}

#[async_trait]
impl VmBackend for QemuBackend {
    fn name(&self) -> &'static str {
        "qemu"
    }

    async fn create(&self, spec: VmSpec) -> Result<Arc<dyn Vm>, VmError> {
        let (launched, cleanup) = self.launch(&spec, &Launch::Boot).await?;
        self.ready(&spec, &launched).await?;
        Ok(self.finish(launched, cleanup))
    }

    async fn restore(&self, spec: VmSpec, template: &Template) -> Result<Arc<dyn Vm>, VmError> {
        self.restore_clone(spec, template).await
    }

    async fn fork(&self, source: &dyn Vm, id: &str) -> Result<Arc<dyn Vm>, VmError> {
        let Some(source) = source.as_any().downcast_ref::<QemuVm>() else {
            return Err(VmError::Snapshot { dir: source.id().to_string(), reason: "not a QEMU VM".into() });
        };
        self.fork_vm(source, id).await
    }
}

/// Waits for the guest daemon's HELLO, failing early if QEMU exits.
async fn wait_ready(
    _run: &RunDir,
    channel: &GuestChannel,
    mut exit_rx: watch::Receiver<Option<ExitInfo>>,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let attempt = async {
        // QEMU creates the socket during start-up, before the guest runs.
        // QEMU creates the socket during start-up, before the guest runs; the file appears at
        // bind(), a moment before listen(), so a refused connect is retried.
        loop {
            match channel.mux().await {
                Ok(_) => return Ok(()),
                Err(crate::ChannelError::Connect { .. }) => tokio::time::sleep(Duration::from_millis(2)).await,
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    tokio::select! {
        r = tokio::time::timeout_at(deadline.into(), attempt) => match r {
            Ok(r) => r,
            Err(_) => Err(format!("guest daemon did not answer within {} s", timeout.as_secs())),
        },
        e = exit_rx.wait_for(|e| e.is_some()) => {
            let info = e.map(|e| e.clone().expect("some")).ok();
            Err(info.map(|i| i.to_string()).unwrap_or_else(|| "QEMU exited".into()) + " before the guest daemon answered")
        }
    }
}

pub struct QemuVm {
    pub(crate) id: String,
    pub(crate) pid: u32,
    pub(crate) run: RunDir,
    pub(crate) channel: GuestChannel,
    pub(crate) exit_rx: watch::Receiver<Option<ExitInfo>>,
    pub(crate) stop_requested: Arc<AtomicBool>,
    pub(crate) boot_time: Duration,
    pub(crate) spec: VmSpec,
    pub(crate) memory: MemoryBacking,
    /// Left running for the next control plane ([`Vm::detach`]): dropping it kills nothing.
    pub(crate) detached: AtomicBool,
    /// Found paused when adopted, and left paused ([`Vm::adopted_paused`]).
    pub(crate) adopted_paused: bool,
}

impl QemuVm {
    pub fn run_dir(&self) -> &Path {
        &self.run.dir
    }

    pub(crate) fn run(&self) -> &RunDir {
        &self.run
    }

    pub(crate) fn exited(&self) -> bool {
        self.exit_rx.borrow().is_some()
    }
}

#[async_trait]
impl Vm for QemuVm {
    fn id(&self) -> &str {
        &self.id
    }

    fn pid(&self) -> Option<u32> {
        (!self.exited()).then_some(self.pid)
    }

    fn channel(&self) -> &GuestChannel {
        &self.channel
    }

    fn boot_time(&self) -> Duration {
        self.boot_time
    }

    async fn stop(&self) -> Result<(), VmError> {
        self.stop_requested.store(true, Ordering::SeqCst);
        self.channel.disconnect().await;
        if !self.exited() {
            // Ask politely; the guest holds nothing worth flushing, so do not wait long.
            let quit = async {
                let mut qmp = Qmp::connect(&self.run.qmp()).await?;
                qmp.execute("quit", None).await
            };
            if let Err(e) = tokio::time::timeout(Duration::from_secs(2), quit).await.unwrap_or(Ok(serde_json::Value::Null)) {
                tracing::debug!(vm = %self.id, "QMP quit failed ({e}); killing");
            }
            let mut rx = self.exit_rx.clone();
            if tokio::time::timeout(Duration::from_secs(3), rx.wait_for(|e| e.is_some())).await.is_err() {
                kill(self.pid);
                let _ = rx.wait_for(|e| e.is_some()).await;
            }
        }
        remove_dir(&self.run.dir);
        tracing::info!(vm = %self.id, "VM stopped and cleaned up");
        Ok(())
    }

    async fn wait_exit(&self) -> ExitInfo {
        let mut rx = self.exit_rx.clone();
        let info = match rx.wait_for(|e| e.is_some()).await {
            Ok(e) => e.clone().expect("some"),
            Err(_) => ExitInfo { code: None, signal: None, requested: false },
        };
        info
    }

    fn console_tail(&self, max_bytes: usize) -> String {
        self.run.console_tail(max_bytes)
    }

    async fn pause(&self) -> Result<(), VmError> {
        self.pause_vm().await
    }

    async fn resume(&self) -> Result<Duration, VmError> {
        self.resume_vm().await
    }

    fn cpu_time(&self) -> Option<Duration> {
        if self.exited() {
            return None;
        }
        self.process_cpu_time()
    }

    fn adopted_paused(&self) -> bool {
        self.adopted_paused
    }

    async fn detach(&self) {
        self.detached.store(true, Ordering::SeqCst);
        self.channel.disconnect().await;
        tracing::info!(vm = %self.id, pid = self.pid, "VM left running for the next control plane");
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        if self.detached.load(Ordering::SeqCst) {
            return;
        }
        // Last line of defence: a VM object that goes away never leaves QEMU or files behind,
        // even when a `stop()` in progress was cancelled (its future dropped part-way).
        if !self.exited() {
            if !self.stop_requested.load(Ordering::SeqCst) {
                tracing::warn!(vm = %self.id, "VM dropped without stop(); killing QEMU");
            }
            kill(self.pid);
        }
        if self.run.dir.exists() {
            remove_dir(&self.run.dir);
        }
    }
}

pub(crate) fn kill(pid: u32) {
    // SAFETY: plain syscall; at worst the pid is gone (ESRCH), which is fine.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

pub(crate) fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        tracing::warn!(path = %path.display(), "cannot set mode {mode:o}: {e}");
    }
}

/// Copies `from` (in a directory a VM's uid can write) without following a symlink there.
/// Copies regular file `from` (not a symlink) to new file `to`; returns `to`, still open.
fn copy_nofollow(from: &Path, to: &Path) -> std::io::Result<std::fs::File> {
    let mut dst = std::fs::OpenOptions::new().write(true).create_new(true).open(to)?;
    copy_into(from, &mut dst)?;
    Ok(dst)
}

/// Replaces the contents of the open file `dst` with those of regular file `from` (not a
/// symlink). Through the descriptor, not the path: the path is in a directory a VM's account owns.
pub(crate) fn copy_into(from: &Path, dst: &mut std::fs::File) -> std::io::Result<u64> {
    use std::io::Seek;
    use std::os::unix::fs::OpenOptionsExt;
    let mut src = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(from)?;
    if !src.metadata()?.is_file() {
        return Err(std::io::Error::other(format!("{} is not a regular file", from.display())));
    }
    dst.set_len(0)?;
    dst.rewind()?;
    std::io::copy(&mut src, dst)
}

pub(crate) fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), "cannot remove run directory: {e}");
        }
    }
}

/// Finds `bin` on PATH (or checks it when it is a path).
pub fn find_program(bin: &Path) -> Option<PathBuf> {
    if bin.components().count() > 1 {
        return bin.exists().then(|| bin.to_path_buf());
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}
