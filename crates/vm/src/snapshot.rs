//! Template snapshots: a session is a restored clone of an already-booted VM, not a cold boot.
//!
//! The technique is VM templating (as Kata Containers does it): the template VM runs with its RAM
//! in a file mapped *shared*, so when it is paused that file already is the memory snapshot; with
//! the migration capability `x-ignore-shared` a `migrate` then saves only device state (≈ 0.3 MB).
//! A clone maps the same RAM file *private* (copy-on-write: pages it never writes stay shared with
//! every other clone through the page cache), loads the device state with `-incoming defer` +
//! `migrate-incoming`, and continues. Its disk is a fresh qcow2 overlay on the template's frozen
//! disk. After restore the guest daemon refreshes identity: clock, RNG seed, hostname, machine id.
//!
//! The template also holds a *parked* login shell: bash that has run its start-up files and waits
//! before its first prompt. Under TCG a clone is a new QEMU whose translation cache is empty, so
//! starting a shell there (exec, the loader, bash, its profile) costs about 400 ms; the parked one
//! has done all that already and only prints its prompt, with the clone's host name, when the
//! clone's first terminal adopts it (see the guest's `pty.rs`).
//!
//! On-disk layout of a template directory (kept together; never mapped shared by a clone):
//! ```text
//! <dir>/mem            guest RAM (memory-backend-file)
//! <dir>/state          device state (QEMU migration stream, RAM excluded)
//! <dir>/disk.qcow2     the disk overlay the snapshot was taken with (frozen, read-only)
//! <dir>/template.json  TemplateMeta: format, image key, QEMU version, sizing, timings
//! <dir>/blank-<h>.qcow2 an empty overlay on disk.qcow2 (h: hash of its path), made at the first
//!                      clone, copied for each
//! ```
//! A template whose recorded format, image key or QEMU version differ from the running ones is
//! never restored: it is rebuilt.

use crate::qemu::{remove_dir, Launch, QemuBackend};
use crate::qmp::Qmp;
use crate::{Vm, VmError, VmSpec};
use mayfly_proto::msg::Identity;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bump when the template layout or the clone command line changes (2: a parked login shell;
/// 3: the TCG CPU model without ERMS/FSRM, see [`crate::cmdline::TCG_CPU_MODEL`]).
pub const TEMPLATE_FORMAT: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateMeta {
    pub format: u32,
    pub image: String,
    pub image_key: String,
    pub qemu_version: String,
    pub machine: String,
    pub accel: crate::accel::Accel,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub cmdline: String,
    pub created_at_unix: u64,
    pub boot_ms: u64,
    pub save_ms: u64,
    pub state_bytes: u64,
    /// Whether the template holds a parked login shell for its clones' first terminal.
    #[serde(default)]
    pub parked_shell: bool,
}

#[derive(Debug, Clone)]
pub struct Template {
    pub dir: PathBuf,
    pub meta: TemplateMeta,
}

impl Template {
    pub fn mem(&self) -> PathBuf {
        self.dir.join("mem")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.qcow2")
    }
    /// An empty overlay on [`Self::disk`], copied for each clone (see `crate::overlay`). It
    /// records the disk's absolute path, so its name carries a hash of that path: a data dir
    /// moved elsewhere makes a new blank instead of copying one that names the old place.
    pub fn blank_overlay(&self) -> PathBuf {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.disk().hash(&mut h);
        self.dir.join(format!("blank-{:016x}.qcow2", h.finish()))
    }

    pub fn open(dir: &Path) -> Result<Template, VmError> {
        let err = |reason: String| VmError::Snapshot { dir: dir.display().to_string(), reason };
        let data = std::fs::read(dir.join("template.json")).map_err(|e| err(format!("no template.json: {e}")))?;
        let meta: TemplateMeta = serde_json::from_slice(&data).map_err(|e| err(format!("bad template.json: {e}")))?;
        let t = Template { dir: dir.to_path_buf(), meta };
        for f in [t.mem(), t.state(), t.disk()] {
            if !f.exists() {
                return Err(err(format!("{} is missing", f.display())));
            }
        }
        Ok(t)
    }

    /// Why this template cannot be restored by `backend` for an image with `image_key`, if so.
    pub fn incompatibility(&self, backend: &QemuBackend, image_key: &str) -> Option<String> {
        let m = &self.meta;
        if m.format != TEMPLATE_FORMAT {
            return Some(format!("template format {} != {}", m.format, TEMPLATE_FORMAT));
        }
        if m.image_key != image_key {
            return Some(format!("made from image {} but the image is now {}", m.image_key, image_key));
        }
        if m.qemu_version != backend.qemu_version {
            return Some(format!("made with {:?} but QEMU is now {:?}", m.qemu_version, backend.qemu_version));
        }
        if m.accel != backend.accel() || m.machine != backend.cfg.machine {
            return Some("made with another accelerator or machine type".into());
        }
        None
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(crate) async fn qmp(vm: &str, path: &Path) -> Result<Qmp, VmError> {
    Qmp::connect(path).await.map_err(|source| VmError::Qmp { vm: vm.to_string(), source })
}

pub(crate) async fn qmp_exec(
    q: &mut Qmp,
    vm: &str,
    cmd: &str,
    args: Option<serde_json::Value>,
) -> Result<serde_json::Value, VmError> {
    q.execute(cmd, args).await.map_err(|source| VmError::Qmp { vm: vm.to_string(), source })
}

/// Polls `query-migrate` until the migration completed (or failed).
pub(crate) async fn wait_migration(q: &mut Qmp, vm: &str, timeout: Duration) -> Result<(), VmError> {
    let deadline = Instant::now() + timeout;
    loop {
        let v = qmp_exec(q, vm, "query-migrate", None).await?;
        match v["status"].as_str().unwrap_or("") {
            "completed" => {
                tracing::debug!(vm, ram = %v["ram"], total_ms = %v["total-time"], "migration completed");
                return Ok(());
            }
            "failed" | "cancelled" => {
                let why = v["error-desc"].as_str().unwrap_or("no detail").to_string();
                return Err(VmError::Snapshot { dir: vm.to_string(), reason: format!("migration failed: {why}") });
            }
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(VmError::Snapshot { dir: vm.to_string(), reason: "migration timed out".into() });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub(crate) fn ignore_shared() -> serde_json::Value {
    serde_json::json!({ "capabilities": [ { "capability": "x-ignore-shared", "state": true } ] })
}

/// QMP of a VM just spawned. QEMU creates the socket during start-up (bind before listen), so a
/// refused connect is retried briefly, unless QEMU already exited.
pub(crate) async fn launched_qmp(l: &crate::qemu::Launched) -> Result<Qmp, VmError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match qmp(&l.spec.id, &l.run.qmp()).await {
            Ok(q) => return Ok(q),
            Err(e) if Instant::now() > deadline || l.exit_rx.borrow().is_some() => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

impl QemuBackend {
    /// Boots `spec` with file-backed RAM, waits for the guest daemon, and saves a template into
    /// `dir` (replacing any old one atomically).
    pub async fn create_template(&self, spec: VmSpec, image_key: &str, dir: &Path) -> Result<Template, VmError> {
        let parent = dir.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(parent).map_err(|source| VmError::Io {
            vm: spec.id.clone(),
            step: "creating the template dir",
            source,
        })?;
        let tmp = parent.join(format!(
            ".{}.tmp-{}",
            dir.file_name().and_then(|n| n.to_str()).unwrap_or("template"),
            std::process::id()
        ));
        remove_dir(&tmp);
        std::fs::create_dir(&tmp).map_err(|source| VmError::Io {
            vm: spec.id.clone(),
            step: "creating the template dir",
            source,
        })?;
        let result = self.save_template(&spec, image_key, &tmp).await;
        match result {
            Ok(meta) => {
                let old = parent.join(format!(
                    ".{}.old-{}",
                    dir.file_name().and_then(|n| n.to_str()).unwrap_or("t"),
                    std::process::id()
                ));
                if dir.exists() {
                    let _ = std::fs::rename(dir, &old);
                }
                std::fs::rename(&tmp, dir).map_err(|source| VmError::Io {
                    vm: spec.id.clone(),
                    step: "publishing the template",
                    source,
                })?;
                remove_dir(&old);
                Ok(Template { dir: dir.to_path_buf(), meta })
            }
            Err(e) => {
                remove_dir(&tmp);
                Err(e)
            }
        }
    }

    async fn save_template(&self, spec: &VmSpec, image_key: &str, tmp: &Path) -> Result<TemplateMeta, VmError> {
        let (launched, cleanup) = self.launch(spec, &Launch::Template { mem: tmp.join("mem") }).await?;
        self.ready(spec, &launched).await?;
        let boot_ms = launched.started.elapsed().as_millis() as u64;
        let parked_shell = match launched.channel.park_shell(80, 24).await {
            Ok(()) => true,
            Err(e) => {
                tracing::info!(image = %spec.image, "the template has no parked login shell: {e}");
                false
            }
        };
        // Let the guest settle (daemon start-up work, page cache of what it touched), then make
        // its disk consistent with its memory.
        let _ = launched
            .channel
            .exec(mayfly_proto::msg::ExecRequest { cmd: vec!["sync".into()], ..Default::default() }, 1024)
            .await;
        launched.channel.disconnect().await;
        let t0 = Instant::now();
        let mut q = qmp(&spec.id, &launched.run.qmp()).await?;
        qmp_exec(&mut q, &spec.id, "migrate-set-capabilities", Some(ignore_shared())).await?;
        qmp_exec(&mut q, &spec.id, "stop", None).await?;
        // QEMU runs under `-sandbox on,spawn=deny`, so `exec:` migration is out: it connects to
        // a socket of ours instead and we write the stream to the file.
        let sock = launched.run.dir.join("migrate.sock");
        let listener = tokio::net::UnixListener::bind(&sock).map_err(|source| VmError::Io {
            vm: spec.id.clone(),
            step: "binding the migration socket",
            source,
        })?;
        self.confiner.give(launched.account, &spec.id, &sock)?;
        let state_path = tmp.join("state");
        let writer = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await?;
            let mut file = tokio::fs::File::create(&state_path).await?;
            tokio::io::copy(&mut conn, &mut file).await?;
            tokio::io::AsyncWriteExt::flush(&mut file).await?;
            Ok::<(), std::io::Error>(())
        });
        let uri = format!("unix:{}", sock.display());
        qmp_exec(&mut q, &spec.id, "migrate", Some(serde_json::json!({ "uri": uri }))).await?;
        wait_migration(&mut q, &spec.id, Duration::from_secs(60)).await?;
        match tokio::time::timeout(Duration::from_secs(30), writer).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(source))) => {
                return Err(VmError::Io { vm: spec.id.clone(), step: "writing the device state", source })
            }
            _ => {
                return Err(VmError::Snapshot {
                    dir: tmp.display().to_string(),
                    reason: "device state writer failed".into(),
                })
            }
        }
        let save_ms = t0.elapsed().as_millis() as u64;
        let _ = qmp_exec(&mut q, &spec.id, "quit", None).await;
        let mut rx = launched.exit_rx.clone();
        if tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|e| e.is_some())).await.is_err() {
            crate::qemu::kill(launched.pid);
            let _ = rx.wait_for(|e| e.is_some()).await;
        }
        // The overlay the snapshot was taken with becomes the frozen disk of every clone.
        std::fs::rename(launched.run.overlay(), tmp.join("disk.qcow2")).map_err(|source| VmError::Io {
            vm: spec.id.clone(),
            step: "keeping the template disk",
            source,
        })?;
        drop(cleanup); // removes the run dir
        for f in ["disk.qcow2", "state", "mem"] {
            // Root's and read-only: QEMU's account (every clone) must not change a frozen disk.
            let _ = std::os::unix::fs::chown(
                tmp.join(f),
                Some(nix::unistd::geteuid().as_raw()),
                Some(nix::unistd::getegid().as_raw()),
            );
            set_readonly(&tmp.join(f));
        }
        let state_bytes = std::fs::metadata(tmp.join("state")).map(|m| m.len()).unwrap_or(0);
        let meta = TemplateMeta {
            format: TEMPLATE_FORMAT,
            image: spec.image.clone(),
            image_key: image_key.to_string(),
            qemu_version: self.qemu_version.clone(),
            machine: self.cfg.machine.clone(),
            accel: self.accel(),
            memory_mib: spec.memory_mib,
            vcpus: spec.vcpus,
            cmdline: spec.cmdline.clone(),
            created_at_unix: unix_now(),
            boot_ms,
            save_ms,
            state_bytes,
            parked_shell,
        };
        std::fs::write(tmp.join("template.json"), serde_json::to_vec_pretty(&meta).expect("json"))
            .map_err(|source| VmError::Io { vm: spec.id.clone(), step: "writing template.json", source })?;
        tracing::info!(image = %spec.image, boot_ms, save_ms, state_bytes, parked_shell, "template saved");
        Ok(meta)
    }

    /// Starts a clone of `template` as VM `spec.id` (sizing comes from the template).
    pub(crate) async fn restore_clone(&self, mut spec: VmSpec, template: &Template) -> Result<Arc<dyn Vm>, VmError> {
        if let Some(why) = template.incompatibility(self, &template.meta.image_key) {
            return Err(VmError::Snapshot { dir: template.dir.display().to_string(), reason: why });
        }
        spec.memory_mib = template.meta.memory_mib;
        spec.vcpus = template.meta.vcpus;
        spec.cmdline = template.meta.cmdline.clone();
        // The template's RAM reaches the clone as a sealed memfd (see `confine::ram`): the
        // file stays root's and read-only.
        let (launched, cleanup) = self.launch(&spec, &Launch::Clone(template)).await?;
        let restore = async {
            let mut q = launched_qmp(&launched).await?;
            tracing::debug!(vm = %spec.id, ms = launched.started.elapsed().as_millis() as u64, "restore: QMP up");
            qmp_exec(&mut q, &spec.id, "migrate-set-capabilities", Some(ignore_shared())).await?;
            // QEMU listens on a socket of ours (no `exec:` under the sandbox); we feed the file.
            let sock = launched.run.dir.join("migrate.sock");
            let uri = format!("unix:{}", sock.display());
            qmp_exec(&mut q, &spec.id, "migrate-incoming", Some(serde_json::json!({ "uri": uri }))).await?;
            let mut conn = tokio::net::UnixStream::connect(&sock).await.map_err(|source| VmError::Io {
                vm: spec.id.clone(),
                step: "connecting to the migration socket",
                source,
            })?;
            let mut file = tokio::fs::File::open(template.state()).await.map_err(|source| VmError::Io {
                vm: spec.id.clone(),
                step: "opening the device state",
                source,
            })?;
            tokio::io::copy(&mut file, &mut conn).await.map_err(|source| VmError::Io {
                vm: spec.id.clone(),
                step: "sending the device state",
                source,
            })?;
            drop(conn);
            wait_migration(&mut q, &spec.id, Duration::from_secs(60)).await?;
            tracing::debug!(vm = %spec.id, ms = launched.started.elapsed().as_millis() as u64, "restore: state loaded");
            qmp_exec(&mut q, &spec.id, "cont", None).await?;
            Ok::<(), VmError>(())
        };
        if let Err(e) = restore.await {
            return Err(self.boot_error(&spec, &launched, format!("restore failed: {e}")).await);
        }
        self.ready(&spec, &launched).await?;
        tracing::debug!(vm = %spec.id, ms = launched.started.elapsed().as_millis() as u64, "restore: guest answered");
        if let Err(e) = refresh_identity(&launched.channel, &spec.id).await {
            return Err(self.boot_error(&spec, &launched, format!("identity refresh failed: {e}")).await);
        }
        tracing::debug!(vm = %spec.id, ms = launched.started.elapsed().as_millis() as u64, "restore: identity set");
        Ok(self.finish(launched, cleanup))
    }
}

/// A new identity for a clone: `hostname`, a random machine id, the host's clock, fresh entropy.
/// Gives a restored or forked guest its own identity. Right after a restore the guest's
/// transport may still report the old host hanging up and greet again, which resets streams
/// opened meanwhile ("peer restarted"): the refresh is idempotent, so a channel fault (not a
/// refusal by the guest) is tried again, three times more at most.
pub(crate) async fn refresh_identity(channel: &crate::GuestChannel, hostname: &str) -> Result<(), crate::ChannelError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match channel.set_identity(fresh_identity(hostname)).await {
            Err(e) if attempt < 4 && e.guest_kind().is_none() => {
                tracing::debug!(vm = hostname, attempt, "identity refresh hit a channel fault ({e}); again");
                tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
            }
            r => return r,
        }
    }
}

pub fn fresh_identity(hostname: &str) -> Identity {
    Identity {
        hostname: Some(hostname.to_string()),
        machine_id: Some(hex::encode(rand_bytes::<16>())),
        unix_time_ns: Some(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
        ),
        rng_seed_hex: Some(hex::encode(rand_bytes::<64>())),
    }
}

fn set_readonly(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o444));
}

/// Entropy from the host kernel.
fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    b
}

impl QemuBackend {
    /// Opens the template in `dir` if it is compatible with this backend and `image_key`;
    /// otherwise (missing, other QEMU, other image) builds it. A lock file next to `dir`
    /// serialises builders across processes.
    pub async fn ensure_template(&self, spec: VmSpec, image_key: &str, dir: &Path) -> Result<Template, VmError> {
        let t = self.open_or_build_template(spec, image_key, dir).await?;
        self.confiner.seal_template_ram(&t.mem()).await?;
        Ok(t)
    }

    async fn open_or_build_template(&self, spec: VmSpec, image_key: &str, dir: &Path) -> Result<Template, VmError> {
        if let Ok(t) = Template::open(dir) {
            if t.incompatibility(self, image_key).is_none() {
                return Ok(t);
            }
        }
        let lock_path = dir.with_extension("lock");
        if let Some(parent) = lock_path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| VmError::Io {
                vm: spec.id.clone(),
                step: "creating the template dir",
                source,
            })?;
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| VmError::Io { vm: spec.id.clone(), step: "opening the template lock", source })?;
        let lock = tokio::task::spawn_blocking(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on an fd we own; blocks until the other builder is done.
            unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
            lock
        })
        .await
        .map_err(|e| VmError::Snapshot { dir: dir.display().to_string(), reason: e.to_string() })?;
        // Another process may have built it while we waited.
        if let Ok(t) = Template::open(dir) {
            match t.incompatibility(self, image_key) {
                None => return Ok(t),
                Some(why) => tracing::info!(dir = %dir.display(), "rebuilding template: {why}"),
            }
        }
        let result = self.create_template(spec, image_key, dir).await;
        drop(lock);
        result
    }
}
