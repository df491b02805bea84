//! The initramfs: an uncompressed newc cpio (decompressing costs seconds under TCG) holding a static
//! busybox with its applet links, the virtio modules and the `/init` script in `init.sh`.
//!
//! `/init` loads the modules in [`VIRTIO_MODULES`] order, waits for the root disk, mounts it, moves
//! `/dev`, `/proc` and `/sys` over and `switch_root`s to `/usr/local/sbin/mayfly-guest init`. On any
//! failure it says why and opens a shell on the console instead.
//!
//! Layout: `/bin/busybox`, applet symlinks at the paths `busybox --list-full` names, `/init`,
//! `/lib/modules/<name>.ko` (flat), `/dev/console` and `/dev/null` nodes (the kernel opens the
//! console before `/init` can mount devtmpfs), empty `/proc`, `/sys`, `/newroot`.

use std::collections::BTreeSet;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::cache::Cache;
use crate::cpio::CpioWriter;
use crate::error::{ImageError, IoContext};
use crate::host::{self, HostTools};
use crate::kernel::{Kernel, VIRTIO_MODULES};
use crate::progress::Step;
use crate::recipe::hash_parts;

const INIT_TEMPLATE: &str = include_str!("init.sh");
/// Bump when the archive layout changes.
const LAYOUT_VERSION: &str = "mayfly-initramfs-v1";

/// The `/init` script with the module list filled in.
pub fn init_script() -> String {
    INIT_TEMPLATE.replace("@MODULES@", &VIRTIO_MODULES.join(" "))
}

/// Build (or reuse) the initramfs for `kernel`. Returns the path and whether it was cached.
pub(crate) fn prepare(
    cache: &Cache,
    tools: &HostTools,
    kernel: &Kernel,
    force: bool,
) -> Result<(PathBuf, bool), ImageError> {
    let busybox =
        std::fs::read(&tools.busybox).ctx(|| format!("cannot read {}", tools.busybox.display()))?;
    let busybox_sha = hex::encode(Sha256::digest(&busybox));
    let key = hash_parts(&[
        LAYOUT_VERSION.as_bytes(),
        init_script().as_bytes(),
        busybox_sha.as_bytes(),
        kernel.package.as_bytes(),
        kernel.version.as_bytes(),
    ]);
    let (dir, cached) = cache.get_or_fill("initramfs", &key[..32], force, |out| {
        let applets = host::query(
            Step::Initramfs,
            Command::new(&tools.busybox).arg("--list-full"),
        )?;
        write(&out.join("initrd.img"), &busybox, &applets, &kernel.modules)
    })?;
    Ok((dir.join("initrd.img"), cached))
}

/// Write the archive to `path`. `applets` is the output of `busybox --list-full`.
fn write(
    path: &Path,
    busybox: &[u8],
    applets: &str,
    modules: &[(String, PathBuf)],
) -> Result<(), ImageError> {
    let ctx = || format!("cannot write {}", path.display());
    let file = std::fs::File::create(path).ctx(ctx)?;
    let mut w = CpioWriter::new(BufWriter::new(file));
    let links = applet_links(applets);
    let mut dirs: BTreeSet<&str> =
        ["bin", "dev", "lib", "lib/modules", "newroot", "proc", "sys"].into();
    for link in &links {
        let mut parent = Path::new(link.as_str()).parent();
        while let Some(p) = parent.and_then(|p| p.to_str()).filter(|p| !p.is_empty()) {
            dirs.insert(p);
            parent = Path::new(p).parent();
        }
    }
    // BTreeSet order puts every parent before its children.
    for d in &dirs {
        w.dir(d, 0o755).ctx(ctx)?;
    }
    w.char_device("dev/console", 0o600, 5, 1).ctx(ctx)?;
    w.char_device("dev/null", 0o666, 1, 3).ctx(ctx)?;
    w.file("bin/busybox", 0o755, busybox).ctx(ctx)?;
    for link in &links {
        w.symlink(link, "/bin/busybox").ctx(ctx)?;
    }
    for (name, src) in modules {
        let data = std::fs::read(src).ctx(|| format!("cannot read {}", src.display()))?;
        w.file(&format!("lib/modules/{name}.ko"), 0o644, &data)
            .ctx(ctx)?;
    }
    w.file("init", 0o755, init_script().as_bytes()).ctx(ctx)?;
    w.finish().ctx(ctx)?;
    Ok(())
}

/// Applet paths from `busybox --list-full`, without busybox itself and top-level names (`linuxrc`).
fn applet_links(list: &str) -> Vec<String> {
    let mut links: Vec<String> = list
        .lines()
        .map(|l| l.trim().trim_start_matches('/'))
        .filter(|l| l.contains('/') && *l != "bin/busybox")
        .map(str::to_string)
        .collect();
    links.sort();
    links.dedup();
    links
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::tests::parse;

    #[test]
    fn init_loads_modules_in_order_and_switches_root() {
        let s = init_script();
        assert!(s.contains(
            "for m in virtio_ring virtio virtio_mmio virtio_pci_legacy_dev virtio_pci_modern_dev \
             virtio_pci virtio_blk failover net_failover virtio_net virtio_console virtio-rng; do"
        ));
        assert!(s.contains("exec switch_root /newroot /usr/local/sbin/mayfly-guest init"));
        assert!(!s.contains('@'));
    }

    #[test]
    fn archive_has_init_busybox_links_modules_and_console() {
        let dir = tempfile::tempdir().unwrap();
        let ko = dir.path().join("virtio.ko");
        std::fs::write(&ko, b"\x7fELF module").unwrap();
        let img = dir.path().join("initrd.img");
        let applets = "/linuxrc\n/bin/busybox\n/bin/sh\n/sbin/switch_root\n/usr/bin/env\n";
        write(&img, b"\x7fELF busybox", applets, &[("virtio".into(), ko)]).unwrap();
        let entries = parse(&std::fs::read(&img).unwrap());
        let get = |n: &str| {
            entries
                .iter()
                .find(|e| e.0 == n)
                .unwrap_or_else(|| panic!("no {n}"))
        };
        assert_eq!(get("init").4, init_script().as_bytes());
        assert_eq!(get("init").1 & 0o777, 0o755);
        assert_eq!(get("bin/sh").4, b"/bin/busybox");
        assert_eq!(get("usr/bin/env").4, b"/bin/busybox");
        assert_eq!(get("lib/modules/virtio.ko").4, b"\x7fELF module");
        assert_eq!((get("dev/console").2, get("dev/console").3), (5, 1));
        assert!(entries.iter().all(|e| e.0 != "linuxrc"));
        // Parents come before children.
        let pos = |n: &str| entries.iter().position(|e| e.0 == n).unwrap();
        assert!(pos("usr") < pos("usr/bin") && pos("usr/bin") < pos("usr/bin/env"));
        for d in ["proc", "sys", "newroot"] {
            get(d);
        }
    }
}
