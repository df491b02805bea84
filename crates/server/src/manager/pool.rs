//! Where a session's VM comes from: the warm pool, a template restore, or a cold boot.
//!
//! * **Pool hit** — a clone restored earlier and waiting unclaimed, already named after the
//!   session it will serve (the session takes the clone's pre-assigned id) with a spare login
//!   shell at its prompt: health-checked, given fresh identity (clock, RNG seed, machine id) and
//!   handed over. A refill starts.
//! * **Pool miss** — restore a clone of the image's template snapshot; retried once if it fails.
//! * **No template yet** (first start, new image, QEMU upgraded) — cold boot, and the template is
//!   built in the background so the next session restores.
//!
//! Templates live in the image's build directory (`<image dir>/templates/<mem>m-<vcpus>c`), so a
//! new image build or QEMU version is detected by the template's recorded versions and rebuilt.
//! Pool VMs are ordinary VMs with ids `p-<random>`; at shutdown they are stopped (drained).
//!
//! A session that asks for a size other than the image's default (vCPUs, memory or disk) skips
//! the pool and the template (both are made at the default size; a clone's RAM and disk sizes
//! are the template's) and cold-boots at its own size.

use crate::images::{BootImage, ImageCatalog};
use crate::vmhost::VmHost;
use mayfly_proto::api::SessionSize;
use mayfly_proto::msg::{ExecRequest, Identity, OpenRequest};
use mayfly_vm::snapshot::Template;
use mayfly_vm::{Vm, VmError, VmSpec};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long the refill waits after a hand-over or a miss before restoring the next clone.
/// Measured on 2 cores under TCG: a refill started at once stretched a pool hit's first shell
/// byte from ≈ 12 to ≈ 30 ms.
const REFILL_DEFER: Duration = Duration::from_millis(300);

/// How a VM was provided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    PoolHit,
    Restore,
    ColdBoot,
    /// A copy of another session's running VM.
    Fork,
}

/// A restored clone waiting in the pool. It already carries the id of the session it will
/// serve as its hostname, and a spare login shell started under that name, so the session's
/// first terminal shows its prompt at once.
pub(crate) struct Pooled {
    pub vm: Arc<dyn Vm>,
    pub session: String,
}

#[derive(Default)]
struct ImagePool {
    key: String,
    ready: VecDeque<Pooled>,
    template: Option<Template>,
    template_error: Option<String>,
    building: bool,
    hits: u64,
    misses: u64,
}

/// Pool status per image (API and metrics).
#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    pub image: String,
    pub ready: usize,
    pub target: usize,
    pub template: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_error: Option<String>,
    pub hits: u64,
    pub misses: u64,
}

/// Pool settings (from the server config).
pub struct PoolConfig {
    pub size: usize,
    pub pooled: Vec<String>,
    pub templates: bool,
    pub memory_override: Option<u32>,
    pub vcpus_override: Option<u32>,
}

pub struct Provisioner {
    host: Arc<dyn VmHost>,
    images: Arc<dyn ImageCatalog>,
    size: usize,
    pooled: Vec<String>,
    templates: bool,
    memory_override: Option<u32>,
    vcpus_override: Option<u32>,
    pools: Mutex<HashMap<String, ImagePool>>,
    refill: Notify,
    stop: CancellationToken,
    /// Held while a refill runs: `drain` waits for it, so no clone is half-made (or handed to
    /// the pool just after the drain) when the server exits.
    filling: tokio::sync::Mutex<()>,
}

impl Provisioner {
    pub fn new(host: Arc<dyn VmHost>, images: Arc<dyn ImageCatalog>, cfg: PoolConfig) -> Arc<Self> {
        Arc::new(Self {
            host,
            images,
            size: cfg.size,
            pooled: cfg.pooled,
            templates: cfg.templates,
            memory_override: cfg.memory_override,
            vcpus_override: cfg.vcpus_override,
            pools: Mutex::new(HashMap::new()),
            refill: Notify::new(),
            stop: CancellationToken::new(),
            filling: tokio::sync::Mutex::new(()),
        })
    }

    /// The spec a VM of `image` gets (id filled in by the caller).
    pub fn spec(&self, id: &str, image: &BootImage) -> VmSpec {
        VmSpec {
            id: id.to_string(),
            image: image.name.clone(),
            kernel: image.kernel.clone(),
            initrd: image.initrd.clone(),
            cmdline: image.cmdline.clone(),
            base_disk: image.rootfs.clone(),
            disk_size_bytes: None,
            vcpus: self.vcpus_override.unwrap_or(image.vcpus).max(1),
            memory_mib: self.memory_override.unwrap_or(image.memory_mib),
        }
    }

    fn template_dir(&self, image: &BootImage) -> PathBuf {
        let spec = self.spec("x", image);
        image.dir.join("templates").join(format!("{}m-{}c", spec.memory_mib, spec.vcpus))
    }

    /// The disk size of `image` in whole GiB (what a session gets when it asks for none).
    fn default_disk_gib(image: &BootImage) -> u32 {
        image.disk_size_bytes.div_ceil(1 << 30) as u32
    }

    /// The spec of a VM of `size`, if that is not the image's default size (which pool clones
    /// and templates have).
    fn custom_spec(&self, id: &str, image: &BootImage, size: SessionSize) -> Option<VmSpec> {
        let default = self.spec(id, image);
        let default_disk = Self::default_disk_gib(image);
        if (size.vcpus, size.memory_mib, size.disk_gib) == (default.vcpus, default.memory_mib, default_disk) {
            return None;
        }
        Some(VmSpec {
            vcpus: size.vcpus,
            memory_mib: size.memory_mib,
            disk_size_bytes: (size.disk_gib != default_disk).then_some(u64::from(size.disk_gib) << 30),
            ..default
        })
    }

    /// Takes a ready clone of `image` for a new session of `size`, whose id must then be
    /// `Pooled::session`. None when the pool is empty or the size is not the pool's.
    pub(crate) fn reserve(&self, image: &BootImage, size: SessionSize) -> Option<Pooled> {
        if self.custom_spec("x", image, size).is_some() {
            return None;
        }
        self.take_ready(image)
    }

    /// A VM of `size` for session `id`: `reserved` (from [`Provisioner::reserve`]) if it passes
    /// the hand-over, else another ready clone, else a restore or a cold boot. Sizes other than
    /// the image's default always cold-boot (no pool, no template).
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        id: &str,
        image: &BootImage,
        size: SessionSize,
        reserved: Option<Pooled>,
    ) -> Result<(Arc<dyn Vm>, Source), VmError> {
        if let Some(spec) = self.custom_spec(id, image, size) {
            tracing::info!(session = id, ?size, "custom size: cold boot (no pool, no template)");
            return Ok((self.cold_boot(id, spec).await?, Source::ColdBoot));
        }
        let mut next = reserved;
        while let Some(Pooled { vm, .. }) = next.take().or_else(|| self.take_ready(image)) {
            match self.hand_over(id, &vm).await {
                Ok(()) => {
                    self.refill.notify_one();
                    return Ok((vm, Source::PoolHit));
                }
                Err(e) => {
                    tracing::warn!(vm = vm.id(), "pool VM failed its hand-over check ({e}); discarding");
                    let _ = vm.stop().await;
                }
            }
        }
        self.note_miss(image);
        self.refill.notify_one();
        let spec = self.spec(id, image);
        match self.template_for(image) {
            Some(t) => match self.host.restore(spec.clone(), &t).await {
                Ok(vm) => Ok((vm, Source::Restore)),
                Err(e) => {
                    tracing::warn!(session = id, "restore failed ({e}); retrying once");
                    self.host.reap(id).await;
                    Ok((self.host.restore(spec, &t).await?, Source::Restore))
                }
            },
            None => {
                self.build_template_in_background(image.clone());
                Ok((self.cold_boot(id, spec).await?, Source::ColdBoot))
            }
        }
    }

    /// Boots `spec` and names it after its session like every other VM (the image's default
    /// hostname is "mayfly").
    async fn cold_boot(&self, id: &str, spec: VmSpec) -> Result<Arc<dyn Vm>, VmError> {
        let vm = self.host.create(spec).await?;
        if let Err(e) = vm.channel().set_identity(mayfly_vm::snapshot::fresh_identity(id)).await {
            let _ = vm.stop().await;
            return Err(VmError::Boot {
                vm: id.to_string(),
                reason: format!("identity refresh failed: {e}"),
                console: String::new(),
            });
        }
        Ok(vm)
    }

    /// Health check, then the session's own identity.
    async fn hand_over(&self, id: &str, vm: &Arc<dyn Vm>) -> Result<(), String> {
        if vm.pid().is_none() {
            return Err("VM process has exited".into());
        }
        let ch = vm.channel();
        tokio::time::timeout(Duration::from_secs(3), ch.info())
            .await
            .map_err(|_| "guest did not answer".to_string())?
            .map_err(|e| e.to_string())?;
        ch.set_identity(mayfly_vm::snapshot::fresh_identity(id)).await.map_err(|e| e.to_string())
    }

    fn take_ready(&self, image: &BootImage) -> Option<Pooled> {
        let mut pools = self.pools.lock().expect("pool lock");
        let p = pools.get_mut(&image.name)?;
        if p.key != image.key {
            return None; // image rebuilt: the refill task replaces the old clones
        }
        let vm = p.ready.pop_front();
        if vm.is_some() {
            p.hits += 1;
        }
        vm
    }

    fn note_miss(&self, image: &BootImage) {
        self.pools.lock().expect("pool lock").entry(image.name.clone()).or_default().misses += 1;
    }

    fn template_for(&self, image: &BootImage) -> Option<Template> {
        let pools = self.pools.lock().expect("pool lock");
        pools.get(&image.name).filter(|p| p.key == image.key).and_then(|p| p.template.clone())
    }

    fn build_template_in_background(self: &Arc<Self>, image: BootImage) {
        if !self.templates {
            return;
        }
        {
            let mut pools = self.pools.lock().expect("pool lock");
            let p = pools.entry(image.name.clone()).or_default();
            if p.building || (p.key == image.key && p.template.is_some()) {
                return;
            }
            p.building = true;
        }
        let me = self.clone();
        tokio::spawn(async move {
            me.ensure_template(&image).await;
        });
    }

    /// Opens or builds the template of `image` and records it (or why it failed).
    async fn ensure_template(&self, image: &BootImage) -> Option<Template> {
        let spec = self.spec(&format!("t-{}", short_random()), image);
        let dir = self.template_dir(image);
        let result = tokio::select! {
            r = self.host.template(spec, &image.key, &dir) => r,
            _ = self.stop.cancelled() => return None,
        };
        let mut pools = self.pools.lock().expect("pool lock");
        let p = pools.entry(image.name.clone()).or_default();
        p.building = false;
        if p.key != image.key {
            p.key = image.key.clone();
            p.template = None;
        }
        match result {
            Ok(t) => {
                tracing::info!(image = %image.name, dir = %dir.display(), "template ready");
                p.template = Some(t.clone());
                p.template_error = None;
                Some(t)
            }
            Err(e) => {
                tracing::warn!(image = %image.name, "template unavailable: {e}");
                p.template_error = Some(e.to_string());
                None
            }
        }
    }

    /// Keeps every pooled image at `size` ready clones until [`Provisioner::drain`].
    pub async fn run(self: Arc<Self>) {
        if self.pooled.is_empty() {
            return;
        }
        loop {
            for name in self.pooled.clone() {
                let _filling = self.filling.lock().await;
                if self.stop.is_cancelled() {
                    return;
                }
                if let Err(e) = self.fill(&name).await {
                    tracing::warn!(image = %name, "pool refill: {e}");
                }
            }
            tokio::select! {
                _ = self.refill.notified() => {
                    // A hand-over (or a miss) just happened: that session's first terminal and
                    // commands get the host's CPUs before the next clone's restore competes.
                    tokio::select! {
                        _ = tokio::time::sleep(REFILL_DEFER) => {}
                        _ = self.stop.cancelled() => return,
                    }
                }
                _ = tokio::time::sleep(Duration::from_secs(15)) => {}
                _ = self.stop.cancelled() => return,
            }
        }
    }

    async fn fill(&self, name: &str) -> Result<(), String> {
        let image = self.images.get(name).map_err(|e| e.to_string())?;
        let template = match self.template_for(&image) {
            Some(t) => t,
            None => {
                self.pools.lock().expect("pool lock").entry(name.to_string()).or_default().building = true;
                self.ensure_template(&image).await.ok_or("no template")?
            }
        };
        // Drop clones of an older build of the image.
        let stale: Vec<_> = {
            let mut pools = self.pools.lock().expect("pool lock");
            let p = pools.entry(name.to_string()).or_default();
            p.ready.retain(|p| p.vm.pid().is_some());
            if p.key != image.key {
                p.ready.drain(..).collect()
            } else {
                Vec::new()
            }
        };
        for p in stale {
            let _ = p.vm.stop().await;
        }
        while self.ready_count(name) < self.size && !self.stop.is_cancelled() {
            let spec = self.spec(&format!("p-{}", short_random()), &image);
            let vm = tokio::select! {
                r = self.host.restore(spec, &template) => r.map_err(|e| e.to_string())?,
                _ = self.stop.cancelled() => return Ok(()),
            };
            let t = std::time::Instant::now();
            let session = super::new_session_id();
            if let Err(e) = prepare(&vm, &session).await {
                tracing::warn!(vm = vm.id(), "pool clone failed its preparation ({e}); discarding");
                let _ = vm.stop().await;
                continue;
            }
            if self.stop.is_cancelled() {
                // Drained meanwhile: this clone would outlive the pool.
                let _ = vm.stop().await;
                return Ok(());
            }
            tracing::info!(
                image = name,
                vm = vm.id(),
                session = %session,
                restore_ms = vm.boot_time().as_millis() as u64,
                prepare_ms = t.elapsed().as_millis() as u64,
                "pool clone ready"
            );
            self.pools
                .lock()
                .expect("pool lock")
                .entry(name.to_string())
                .or_default()
                .ready
                .push_back(Pooled { vm, session });
        }
        Ok(())
    }

    fn ready_count(&self, name: &str) -> usize {
        self.pools.lock().expect("pool lock").get(name).map_or(0, |p| p.ready.len())
    }

    pub fn status(&self) -> Vec<PoolStatus> {
        let pools = self.pools.lock().expect("pool lock");
        let mut names: Vec<String> = self.pooled.clone();
        for n in pools.keys() {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        names
            .into_iter()
            .map(|image| {
                let p = pools.get(&image);
                PoolStatus {
                    ready: p.map_or(0, |p| p.ready.len()),
                    target: if self.pooled.contains(&image) { self.size } else { 0 },
                    template: p.is_some_and(|p| p.template.is_some()),
                    template_error: p.and_then(|p| p.template_error.clone()),
                    hits: p.map_or(0, |p| p.hits),
                    misses: p.map_or(0, |p| p.misses),
                    image,
                }
            })
            .collect()
    }

    /// Stops refilling and destroys every unclaimed VM.
    pub async fn drain(&self) {
        self.stop.cancel();
        // A refill in progress ends (a restore is abandoned, a clone being prepared is stopped).
        let _filling = self.filling.lock().await;
        let vms: Vec<Arc<dyn Vm>> =
            self.pools.lock().expect("pool lock").values_mut().flat_map(|p| p.ready.drain(..)).map(|p| p.vm).collect();
        tracing::info!(vms = vms.len(), "draining the warm pool");
        futures::future::join_all(vms.iter().map(|vm| vm.stop())).await;
    }
}

/// Names a pool clone after the session it will serve and starts its spare shell.
///
/// A clone is a new QEMU process: under TCG every guest code path (fork, exec, the dynamic
/// loader, bash and its profile, the PTY paths) is translated again on first use, which costs
/// about half a second for the first shell. The spare shell pays that here, before hand-over:
/// the session's first terminal adopts it with its prompt already printed, and later shells
/// find the translation cache warm. (A clone of a template with a parked shell releases that
/// one instead of starting another.) A throwaway terminal running `true` and a port and a file
/// watch opened until their first answer then warm the paths the session's start takes: the
/// watchers start with the session, and their first run in a clone slowed its first terminal
/// by ≈ 20 ms.
async fn prepare(vm: &Arc<dyn Vm>, session: &str) -> Result<(), String> {
    let ch = vm.channel();
    let work = async {
        ch.set_identity(Identity { hostname: Some(session.to_string()), ..Default::default() }).await?;
        ch.spare_shell(80, 24).await?;
        ch.warm_terminal().await?;
        // A session's first exec in a new QEMU took ≈ 120 ms against ≈ 30 ms for the next ones
        // (first run of the daemon's exec path and the guest kernel's pipe and wait paths).
        let warm = ExecRequest { cmd: vec!["true".into()], timeout_ms: Some(10_000), ..Default::default() };
        ch.exec(warm, 1024).await?;
        // A watch's first answer (the ports, or `ok` once the file watches are in place) means
        // its start-up ran; dropping the stream ends it.
        ch.call(&OpenRequest::WatchPorts).await?;
        ch.call(&OpenRequest::WatchFiles { path: super::file_watch::WORKSPACE.into() }).await.map(drop)
    };
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())
}

fn short_random() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::thread_rng();
    (0..10).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}
