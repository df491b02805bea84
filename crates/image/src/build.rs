//! The build pipeline: check → kernel → initramfs → rootfs → assemble → publish, each step cached
//! on its own (see [`crate::cache`]) and the whole image cached by its key.
//!
//! Image key = hash(builder version, recipe, guest binary sha256, kernel package and version, init
//! script, busybox, kernel command line). A build runs under the image's lock, writes into a
//! scratch directory under `<data_dir>/tmp/` and only renames the finished directory into place, so
//! a crashed build never leaves a half image marked current.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::assemble::{self, Inputs};
use crate::cache::Cache;
use crate::error::{ImageError, IoContext};
use crate::host::HostTools;
use crate::initramfs::{self, init_script};
use crate::kernel;
use crate::manifest::{FileSizes, Manifest, INITRD_FILE, ROOTFS_FILE, VMLINUX_FILE};
use crate::progress::{Progress, Step, StepReport};
use crate::recipe::{hash_parts, Recipe};
use crate::rootfs;
use crate::store::{BuiltImage, ImageStore};

/// Bump when the builder's output changes in a way the other key inputs do not capture.
pub const BUILDER_VERSION: u32 = 1;

/// Kernel command line for the images this builder makes. The initramfs's `/init` reads `root=`.
///
/// The rest keeps an idle guest from waking (every wake-up is emulated work under TCG; see "Idle
/// cost" in docs/ARCHITECTURE.md): `nowatchdog nmi_watchdog=0` drop the soft/hard lockup
/// detectors (a timer every 4 s, and a perf NMI that TCG cannot deliver anyway); `tsc=reliable`
/// drops the clocksource watchdog, which every 0.5 s read the emulated HPET/ACPI PM timer to
/// cross-check the TSC (QEMU derives the guest TSC from the host's monotonic clock, and a restored
/// clone's wall clock is set by `identity`); `audit=0` stops kauditd (nothing in the VM reads it).
///
/// `no_timer_check` skips the boot-time check that timer interrupts arrive through the IO-APIC
/// within a few ticks: under TCG on a loaded host they can come late, and the kernel then panics
/// ("IO-APIC + timer doesn't work!"; seen in CI with 20 boots at once on 2 busy cores). The
/// emulated timer works; only its punctuality is at the host's mercy.
pub const KERNEL_CMDLINE: &str =
    "console=ttyS0 root=/dev/vda rw quiet loglevel=3 nowatchdog nmi_watchdog=0 tsc=reliable audit=0 no_timer_check";

/// What to build with.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Mayfly's data directory; images and caches live under it.
    pub data_dir: PathBuf,
    /// The `mayfly-guest` executable to install as `/usr/local/sbin/mayfly-guest`.
    pub guest_bin: PathBuf,
    /// Ignore every cache (image and steps) except downloaded packages, and rebuild.
    pub force: bool,
}

/// The result of [`build`].
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    pub image: BuiltImage,
    /// The image with this key already existed; nothing was built.
    pub cache_hit: bool,
    pub elapsed: Duration,
}

impl std::fmt::Display for BuildOutcome {
    /// One line for the CLI, e.g. `minimal 23e1933ccc9cb5be built in 61.9 s (139 MiB): /data/images/...`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let img = &self.image;
        let how = if self.cache_hit {
            "is up to date".to_string()
        } else {
            format!("built in {:.1} s", self.elapsed.as_secs_f64())
        };
        let mib = img.manifest.files.total() >> 20;
        write!(
            f,
            "{} {} {how} ({mib} MiB): {}",
            img.name,
            img.key,
            img.dir.display()
        )
    }
}

/// Build `recipe` (or find it already built). Blocking: call it from `spawn_blocking` in async code.
pub fn build(
    recipe: &Recipe,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<BuildOutcome, ImageError> {
    let started = Instant::now();
    let store = ImageStore::new(&opts.data_dir);
    let cache = Cache::new(&opts.data_dir);

    let (tools, guest_sha, busybox_sha) = step(progress, Step::Check, || {
        let tools = HostTools::check()?;
        let guest_sha = sha256_file(&opts.guest_bin).map_err(|e| match e {
            ImageError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ImageError::Host(format!(
                    "guest binary {} does not exist; build mayfly-guest first",
                    opts.guest_bin.display()
                ))
            }
            e => e,
        })?;
        let busybox_sha = sha256_file(&tools.busybox)?;
        let summary = format!("guest {}", &guest_sha[..12]);
        Ok(((tools, guest_sha, busybox_sha), false, summary))
    })?;

    let _lock = store.lock(&recipe.name, |path| {
        progress.note(&format!(
            "another build of {} holds {}; waiting",
            recipe.name,
            path.display()
        ))
    })?;
    let logs = opts.data_dir.join("logs");
    std::fs::create_dir_all(&logs).ctx(|| format!("cannot create {}", logs.display()))?;
    let log = logs.join(format!("build-{}.log", recipe.name));
    std::fs::write(&log, "").ctx(|| format!("cannot create {}", log.display()))?;

    let kernel = step(progress, Step::Kernel, || {
        let (package, version) = kernel::resolve(&cache, &tools, &recipe.kernel_package)?;
        let (k, cached) = kernel::prepare(
            &cache,
            &tools,
            (&package, &version),
            opts.force,
            &log,
            progress,
        )?;
        let summary = format!("{} ({})", k.release, k.version);
        Ok((k, cached, summary))
    })?;

    let key = image_key(
        recipe,
        &guest_sha,
        &busybox_sha,
        &kernel.package,
        &kernel.version,
    );
    if !opts.force {
        if let Some(image) = store.find(&recipe.name, &key) {
            step(progress, Step::Publish, || {
                store.set_current(&recipe.name, &key)?;
                Ok(((), true, format!("{} {key} is up to date", recipe.name)))
            })?;
            return Ok(BuildOutcome {
                image,
                cache_hit: true,
                elapsed: started.elapsed(),
            });
        }
    }

    let scratch_root = opts.data_dir.join("tmp");
    remove_stale_scratch(&scratch_root, &recipe.name);
    std::fs::create_dir_all(&scratch_root)
        .ctx(|| format!("cannot create {}", scratch_root.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix(&scratch_prefix(&recipe.name))
        .tempdir_in(&scratch_root)
        .ctx(|| {
            format!(
                "cannot create a scratch directory in {}",
                scratch_root.display()
            )
        })?;
    let out = scratch.path().join("out");
    std::fs::create_dir(&out).ctx(|| format!("cannot create {}", out.display()))?;

    let initrd = step(progress, Step::Initramfs, || {
        let (path, cached) = initramfs::prepare(&cache, &tools, &kernel, opts.force)?;
        let size = std::fs::metadata(&path)
            .ctx(|| format!("cannot stat {}", path.display()))?
            .len();
        Ok((path, cached, format!("{} MiB, uncompressed", size >> 20)))
    })?;

    let tree = step(progress, Step::Rootfs, || {
        let (tree, cached) = rootfs::prepare(&cache, &tools, recipe, opts.force, &log, progress)?;
        let summary = format!(
            "{} {} + {} packages",
            recipe.suite,
            recipe.variant,
            recipe.packages.len()
        );
        Ok((tree, cached, summary))
    })?;

    step(progress, Step::Assemble, || {
        let release = format!(
            "name={}\nkey={key}\nbuilt_at={}\n",
            recipe.name,
            rfc3339(OffsetDateTime::now_utc())
        );
        let inputs = Inputs {
            tree: &tree,
            guest_bin: &opts.guest_bin,
            release: &release,
            disk_size: recipe.disk_size_bytes(),
            work: scratch.path(),
            qcow2: &out.join(ROOTFS_FILE),
        };
        let data = assemble::assemble(&tools, &inputs, &log, progress)?;
        Ok((
            (),
            false,
            format!("{} MiB of files on a {} disk", data >> 20, recipe.disk_size),
        ))
    })?;

    let image = step(progress, Step::Publish, || {
        link_or_copy(&kernel.vmlinux, &out.join(VMLINUX_FILE))?;
        link_or_copy(&initrd, &out.join(INITRD_FILE))?;
        let size = |f: &str| {
            std::fs::metadata(out.join(f))
                .map(|m| m.len())
                .ctx(|| format!("cannot stat {f}"))
        };
        let files = FileSizes {
            vmlinux: size(VMLINUX_FILE)?,
            initrd: size(INITRD_FILE)?,
            rootfs: size(ROOTFS_FILE)?,
        };
        let manifest = Manifest {
            name: recipe.name.clone(),
            key: key.clone(),
            built_at: OffsetDateTime::now_utc(),
            build_seconds: started.elapsed().as_secs_f64(),
            builder_version: BUILDER_VERSION,
            kernel_version: kernel.release.clone(),
            kernel_package: kernel.package.clone(),
            kernel_package_version: kernel.version.clone(),
            kernel_cmdline: KERNEL_CMDLINE.to_string(),
            disk_size_bytes: recipe.disk_size_bytes(),
            rootfs_format: "qcow2".to_string(),
            guest_sha256: guest_sha.clone(),
            memory_mib: recipe.memory_mib,
            vcpus: recipe.vcpus,
            files,
            recipe: recipe.clone(),
        };
        manifest.write(&out)?;
        make_read_only(&out)?;
        let image = store.publish(&recipe.name, &key, out.clone())?;
        Ok((
            image,
            false,
            format!("{} {key}, {} MiB", recipe.name, files.total() >> 20),
        ))
    })?;
    Ok(BuildOutcome {
        image,
        cache_hit: false,
        elapsed: started.elapsed(),
    })
}

/// Run one step with timing and progress reporting. `f` returns (value, cached, summary).
fn step<T>(
    progress: &dyn Progress,
    step: Step,
    f: impl FnOnce() -> Result<(T, bool, String), ImageError>,
) -> Result<T, ImageError> {
    progress.started(step);
    let t = Instant::now();
    match f() {
        Ok((value, cached, summary)) => {
            progress.finished(
                step,
                &StepReport {
                    elapsed: t.elapsed(),
                    cached,
                    summary,
                },
            );
            Ok(value)
        }
        Err(e) => {
            progress.failed(step, &e);
            Err(e)
        }
    }
}

/// The image key: 16 hex digits naming the image's directory.
fn image_key(
    recipe: &Recipe,
    guest_sha: &str,
    busybox_sha: &str,
    kernel_pkg: &str,
    kernel_ver: &str,
) -> String {
    hash_parts(&[
        BUILDER_VERSION.to_string().as_bytes(),
        recipe.hash().as_bytes(),
        rootfs::cache_key(recipe).as_bytes(),
        guest_sha.as_bytes(),
        busybox_sha.as_bytes(),
        format!("{kernel_pkg}={kernel_ver}").as_bytes(),
        init_script().as_bytes(),
        KERNEL_CMDLINE.as_bytes(),
    ])[..16]
        .to_string()
}

fn scratch_prefix(name: &str) -> String {
    // '.' cannot occur in an image name, so `build.dev.` never matches `build.dev-x.`.
    format!("build.{name}.")
}

/// Remove scratch directories left by crashed builds of `name`. Runs under the image's lock.
fn remove_stale_scratch(scratch_root: &Path, name: &str) {
    let prefix = scratch_prefix(name);
    let Ok(entries) = std::fs::read_dir(scratch_root) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            tracing::info!(
                "removing scratch left by an interrupted build: {}",
                entry.path().display()
            );
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!("cannot remove {}: {e}", entry.path().display());
            }
        }
    }
}

fn sha256_file(path: &Path) -> Result<String, ImageError> {
    let ctx = || format!("cannot read {}", path.display());
    let mut file = std::fs::File::open(path).ctx(ctx)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).ctx(ctx)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

fn link_or_copy(from: &Path, to: &Path) -> Result<(), ImageError> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .ctx(|| format!("cannot copy {} to {}", from.display(), to.display()))
}

/// chmod 0444 every file in `dir`. Hard-linked cache files become read-only too, which is right:
/// cache entries are never modified either.
fn make_read_only(dir: &Path) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir)
        .ctx(|| format!("cannot list {}", dir.display()))?
        .flatten()
    {
        std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o444))
            .ctx(|| format!("cannot chmod {}", entry.path().display()))?;
    }
    Ok(())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_key_tracks_its_inputs() {
        let r = Recipe::builtin("minimal").unwrap();
        let k = image_key(&r, "g", "b", "linux-image-x", "1");
        assert_eq!(k.len(), 16);
        assert_eq!(k, image_key(&r, "g", "b", "linux-image-x", "1"));
        assert_ne!(k, image_key(&r, "g2", "b", "linux-image-x", "1"));
        assert_ne!(k, image_key(&r, "g", "b", "linux-image-x", "2"));
        let mut bigger = r.clone();
        bigger.disk_size = "3G".into();
        assert_ne!(k, image_key(&bigger, "g", "b", "linux-image-x", "1"));
    }

    #[test]
    fn stale_scratch_of_other_images_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["build.dev.abc", "build.dev-x.abc", "other"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        remove_stale_scratch(dir.path(), "dev");
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["build.dev-x.abc", "other"]);
    }
}
