//! The guest kernel: Debian's cloud kernel package, resolved and downloaded with the host's apt,
//! unpacked with `dpkg-deb`, reduced to the ELF `vmlinux` and the virtio modules the initramfs loads.
//!
//! The kernel comes from the host's apt sources, not the recipe's mirror: it is the same for every
//! image and is keyed by exact package version, so `apt-get update` on the host is what picks up a
//! new kernel.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cache::Cache;
use crate::error::{ImageError, IoContext};
use crate::host::{self, HostTools};
use crate::progress::{Progress, Step};

/// Modules the initramfs loads, in load order (dependencies first). ext4 is built in.
pub const VIRTIO_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_console",
    "virtio-rng",
];

/// An unpacked kernel in the cache.
#[derive(Debug, Clone)]
pub(crate) struct Kernel {
    /// Concrete package, e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub package: String,
    /// Debian package version, e.g. `6.1.192-2`.
    pub version: String,
    /// `uname -r`, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    pub vmlinux: PathBuf,
    /// `VIRTIO_MODULES` paths, in load order.
    pub modules: Vec<(String, PathBuf)>,
}

/// Where apt keeps its package lists; their mtimes change exactly when `apt-get update` fetches.
const APT_LISTS: &str = "/var/lib/apt/lists";

/// Resolve `meta` (e.g. `linux-image-cloud-amd64`) to a concrete package and version.
///
/// apt-cache takes ~1.5 s here (the host keeps no binary package cache), which would dominate a
/// cached build, so the answer is remembered until apt's lists change.
pub(crate) fn resolve(
    cache: &Cache,
    tools: &HostTools,
    meta: &str,
) -> Result<(String, String), ImageError> {
    let memo = cache.dir("kernel").join(format!("resolved-{meta}"));
    let fingerprint = lists_fingerprint(Path::new(APT_LISTS));
    if let (Some(fp), Ok(text)) = (&fingerprint, std::fs::read_to_string(&memo)) {
        let mut lines = text.lines();
        if let (Some(seen), Some(package), Some(version)) =
            (lines.next(), lines.next(), lines.next())
        {
            if seen == fp {
                return Ok((package.to_string(), version.to_string()));
            }
        }
    }
    let (package, version) = resolve_with_apt(tools, meta)?;
    if let Some(fp) = fingerprint {
        let _ = std::fs::create_dir_all(cache.dir("kernel"));
        let _ = std::fs::write(&memo, format!("{fp}\n{package}\n{version}\n"));
    }
    Ok((package, version))
}

/// File count and newest mtime of apt's lists, or None if they cannot be read.
fn lists_fingerprint(lists: &Path) -> Option<String> {
    let (mut count, mut newest) = (0u64, std::time::SystemTime::UNIX_EPOCH);
    for entry in std::fs::read_dir(lists).ok()?.flatten() {
        let modified = entry.metadata().ok()?.modified().ok()?;
        count += 1;
        newest = newest.max(modified);
    }
    let since = newest
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .ok()?;
    Some(format!("{count}:{}", since.as_nanos()))
}

fn resolve_with_apt(tools: &HostTools, meta: &str) -> Result<(String, String), ImageError> {
    let show = |package: &str| {
        host::query(
            Step::Kernel,
            Command::new(&tools.apt_cache).args(["show", "--no-all-versions", package]),
        )
        .map_err(|e| {
            ImageError::Kernel(format!(
                "apt does not know {package} ({e}); run `apt-get update`"
            ))
        })
    };
    let text = show(meta)?;
    match kernel_dependency(&text) {
        // A meta-package pins its kernel: `Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)`.
        Some((package, Some(version))) => Ok((package, version)),
        Some((package, None)) => {
            let version = field(&show(&package)?, "Version")
                .ok_or_else(|| ImageError::Kernel(format!("apt shows no version of {package}")))?;
            Ok((package, version))
        }
        None => {
            let version = field(&text, "Version")
                .ok_or_else(|| ImageError::Kernel(format!("apt shows no version of {meta}")))?;
            Ok((meta.to_string(), version))
        }
    }
}

/// The first `linux-image-*` dependency in `apt-cache show` output, with its `=` version if pinned.
fn kernel_dependency(show: &str) -> Option<(String, Option<String>)> {
    field(show, "Depends")?
        .split(',')
        .map(str::trim)
        .find(|d| d.starts_with("linux-image-"))
        .map(|dep| {
            let (name, constraint) = dep.split_once(' ').unwrap_or((dep, ""));
            let version = constraint
                .trim()
                .strip_prefix("(=")
                .and_then(|v| v.strip_suffix(')'))
                .map(|v| v.trim().to_string());
            (name.to_string(), version)
        })
}

fn field(show: &str, name: &str) -> Option<String> {
    show.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .map(|v| v.trim().to_string())
}

/// Download (cached by package and version) and unpack the kernel.
pub(crate) fn prepare(
    cache: &Cache,
    tools: &HostTools,
    (package, version): (&str, &str),
    force: bool,
    log: &Path,
    progress: &dyn Progress,
) -> Result<(Kernel, bool), ImageError> {
    let key = format!("{package}_{}", version.replace(':', "%3a"));
    let (dir, cached) = cache.get_or_fill("kernel", &key, force, |out| {
        let deb = download(cache, tools, package, version, log, progress)?;
        unpack(tools, &deb, out, log, progress)
    })?;
    let release = std::fs::read_to_string(dir.join("release"))
        .ctx(|| format!("cannot read {}", dir.join("release").display()))?;
    let modules = VIRTIO_MODULES
        .iter()
        .map(|m| (m.to_string(), dir.join("modules").join(format!("{m}.ko"))))
        .collect();
    let kernel = Kernel {
        package: package.to_string(),
        version: version.to_string(),
        release: release.trim().to_string(),
        vmlinux: dir.join("vmlinux"),
        modules,
    };
    Ok((kernel, cached))
}

/// `apt-get download` into `cache/debs`, unless the .deb is already there.
fn download(
    cache: &Cache,
    tools: &HostTools,
    package: &str,
    version: &str,
    log: &Path,
    progress: &dyn Progress,
) -> Result<PathBuf, ImageError> {
    let debs = cache.dir("debs");
    let prefix = format!(
        "{package}_{}_",
        version.split_once(':').map_or(version, |(_, v)| v)
    );
    if let Some(deb) = find_deb(&debs, &prefix) {
        return Ok(deb);
    }
    std::fs::create_dir_all(&debs).ctx(|| format!("cannot create {}", debs.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(&debs)
        .ctx(|| format!("cannot create a temporary directory in {}", debs.display()))?;
    // Sandbox::User=root: apt's _apt user cannot write into a root-owned cache dir.
    host::run(
        Step::Kernel,
        Command::new(&tools.apt_get)
            .args([
                "-o",
                "APT::Sandbox::User=root",
                "download",
                &format!("{package}={version}"),
            ])
            .current_dir(tmp.path()),
        log,
        progress,
    )
    .map_err(|e| ImageError::KernelDownload {
        package: package.to_string(),
        version: version.to_string(),
        source: Box::new(e),
    })?;
    let downloaded = find_deb(tmp.path(), &prefix)
        .ok_or_else(|| ImageError::Kernel(format!("apt-get download left no {prefix}*.deb")))?;
    let deb = debs.join(downloaded.file_name().unwrap_or_default());
    std::fs::rename(&downloaded, &deb)
        .ctx(|| format!("cannot move {} into the cache", deb.display()))?;
    Ok(deb)
}

fn find_deb(dir: &Path, prefix: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(prefix) && name.ends_with(".deb")
        })
}

/// Unpack `deb` and write `out/{vmlinux, release, modules/<name>.ko}`.
fn unpack(
    tools: &HostTools,
    deb: &Path,
    out: &Path,
    log: &Path,
    progress: &dyn Progress,
) -> Result<(), ImageError> {
    let tree = out.join("deb");
    host::run(
        Step::Kernel,
        Command::new(&tools.dpkg_deb).arg("-x").arg(deb).arg(&tree),
        log,
        progress,
    )?;
    let boot = tree.join("boot");
    let vmlinuz = std::fs::read_dir(&boot)
        .ctx(|| format!("{} has no /boot", deb.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .starts_with("vmlinuz-")
        })
        .ok_or_else(|| ImageError::Kernel(format!("{} has no /boot/vmlinuz-*", deb.display())))?;
    let release =
        vmlinuz.file_name().unwrap_or_default().to_string_lossy()["vmlinuz-".len()..].to_string();
    progress.detail(
        Step::Kernel,
        &format!("extracting vmlinux from {}", vmlinuz.display()),
    );
    let image = std::fs::read(&vmlinuz).ctx(|| format!("cannot read {}", vmlinuz.display()))?;
    let vmlinux = crate::vmlinux::extract(&image).map_err(|source| ImageError::Vmlinux {
        path: vmlinuz,
        source,
    })?;
    std::fs::write(out.join("vmlinux"), vmlinux).ctx(|| "cannot write vmlinux".into())?;

    let module_root = ["lib", "usr/lib"]
        .iter()
        .map(|l| tree.join(l).join("modules").join(&release).join("kernel"))
        .find(|p| p.is_dir())
        .ok_or_else(|| {
            ImageError::Kernel(format!("{} has no modules for {release}", deb.display()))
        })?;
    let index = index_modules(&module_root)?;
    let modules_out = out.join("modules");
    std::fs::create_dir(&modules_out).ctx(|| "cannot create modules dir".into())?;
    for m in VIRTIO_MODULES {
        let src = index.get(*m).ok_or_else(|| {
            ImageError::Kernel(format!(
                "module {m}.ko not found under {} (compressed modules are not supported)",
                module_root.display()
            ))
        })?;
        std::fs::copy(src, modules_out.join(format!("{m}.ko")))
            .ctx(|| format!("cannot copy {}", src.display()))?;
    }
    std::fs::write(out.join("release"), format!("{release}\n"))
        .ctx(|| "cannot write release".into())?;
    std::fs::remove_dir_all(&tree).ctx(|| format!("cannot remove {}", tree.display()))
}

/// Map module name (file stem of `*.ko`) to path, for every module under `root`.
fn index_modules(root: &Path) -> Result<HashMap<String, PathBuf>, ImageError> {
    let mut index = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)
            .ctx(|| format!("cannot list {}", dir.display()))?
            .flatten()
        {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else if let Some(stem) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ko"))
            {
                index.insert(stem.to_string(), path.clone());
            }
        }
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_package_resolves_to_pinned_kernel() {
        let meta = "Package: linux-image-cloud-amd64\nVersion: 6.1.192-2\n\
                    Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)\nDescription: x\n";
        assert_eq!(
            kernel_dependency(meta),
            Some((
                "linux-image-6.1.0-56-cloud-amd64".to_string(),
                Some("6.1.192-2".to_string())
            ))
        );
        let unpinned = "Depends: initramfs-tools, linux-image-6.1.0-9-amd64\n";
        assert_eq!(
            kernel_dependency(unpinned),
            Some(("linux-image-6.1.0-9-amd64".to_string(), None))
        );
        let concrete = "Package: linux-image-6.1.0-56-cloud-amd64\nVersion: 6.1.192-2\nDepends: kmod, linux-base\n";
        assert_eq!(kernel_dependency(concrete), None);
        assert_eq!(field(concrete, "Version").as_deref(), Some("6.1.192-2"));
    }

    #[test]
    fn lists_fingerprint_changes_when_lists_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a_Packages"), "x").unwrap();
        let before = lists_fingerprint(dir.path()).unwrap();
        std::fs::write(dir.path().join("b_Packages"), "x").unwrap();
        assert_ne!(before, lists_fingerprint(dir.path()).unwrap());
        assert_eq!(lists_fingerprint(&dir.path().join("missing")), None);
    }

    #[test]
    fn modules_are_indexed_by_stem() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("drivers/char/hw_random");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("virtio-rng.ko"), "x").unwrap();
        std::fs::write(sub.join("notes.txt"), "x").unwrap();
        let index = index_modules(dir.path()).unwrap();
        assert_eq!(index.len(), 1);
        assert!(index["virtio-rng"].ends_with("hw_random/virtio-rng.ko"));
    }
}
