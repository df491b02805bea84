//! Assemble the root disk: a hard-linked copy of the cached rootfs tree plus the guest daemon,
//! turned into an ext4 filesystem by `mkfs.ext4 -d` (no loop mounts) and converted to qcow2.
//!
//! The staging tree shares inodes with the cache, so nothing may be written *through* a staged
//! file: files the builder adds are unlinked first and written as new inodes.

use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{ImageError, IoContext};
use crate::host::{self, HostTools};
use crate::progress::{Progress, Step};

/// Where the guest daemon lives in the image; the initramfs `switch_root`s to it.
pub const GUEST_PATH: &str = "usr/local/sbin/mayfly-guest";
/// Identifies the image from inside the guest.
const RELEASE_PATH: &str = "etc/mayfly-image";
/// ext4 metadata, journal and slack on top of the file data.
const FS_OVERHEAD_BYTES: u64 = 96 << 20;

pub(crate) struct Inputs<'a> {
    pub tree: &'a Path,
    pub guest_bin: &'a Path,
    /// Contents of `/etc/mayfly-image`.
    pub release: &'a str,
    pub disk_size: u64,
    /// Scratch space on the same file system as `tree` (for hard links).
    pub work: &'a Path,
    pub qcow2: &'a Path,
}

/// Build `inputs.qcow2`. Returns the size of the file data in the tree, for the progress line.
pub(crate) fn assemble(
    tools: &HostTools,
    inputs: &Inputs<'_>,
    log: &Path,
    progress: &dyn Progress,
) -> Result<u64, ImageError> {
    let staging = inputs.work.join("tree");
    progress.detail(Step::Assemble, "staging the rootfs tree");
    // Hard links: the scratch dir and the cache are both under the data dir. A failure here
    // (e.g. a mount inside the tree) is an error, not a reason to copy gigabytes.
    let mut cp = Command::new(&tools.cp);
    cp.arg("-a").arg("--link").arg(inputs.tree).arg(&staging);
    host::run(Step::Assemble, &mut cp, log, progress)?;
    install_file(
        &staging,
        GUEST_PATH,
        &std::fs::read(inputs.guest_bin)
            .ctx(|| format!("cannot read guest binary {}", inputs.guest_bin.display()))?,
        0o755,
    )?;
    install_file(&staging, RELEASE_PATH, inputs.release.as_bytes(), 0o644)?;

    let (data_bytes, inodes) = tree_usage(&staging)?;
    let needed = data_bytes + inodes * 256 + FS_OVERHEAD_BYTES;
    if needed > inputs.disk_size {
        return Err(ImageError::DiskTooSmall {
            needed_mib: needed >> 20,
            disk_mib: inputs.disk_size >> 20,
        });
    }

    let raw = inputs.work.join("rootfs.raw");
    let file = std::fs::File::create(&raw).ctx(|| format!("cannot create {}", raw.display()))?;
    file.set_len(inputs.disk_size)
        .ctx(|| format!("cannot size {}", raw.display()))?;
    drop(file);
    progress.detail(Step::Assemble, "mkfs.ext4");
    host::run(
        Step::Assemble,
        &mut mkfs(tools, &staging, &raw),
        log,
        progress,
    )?;
    progress.detail(Step::Assemble, "qemu-img convert");
    let mut convert = Command::new(&tools.qemu_img);
    convert
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(inputs.qcow2);
    host::run(Step::Assemble, &mut convert, log, progress)?;
    std::fs::remove_file(&raw).ctx(|| format!("cannot remove {}", raw.display()))?;
    std::fs::remove_dir_all(&staging).ctx(|| format!("cannot remove {}", staging.display()))?;
    Ok(data_bytes)
}

/// `mkfs.ext4` from a directory. Inode tables and journal are zeroed now: lazy init would make the
/// guest kernel's `ext4lazyinit` thread do it at every boot, slowly under TCG, into the overlay.
fn mkfs(tools: &HostTools, tree: &Path, raw: &Path) -> Command {
    let mut cmd = Command::new(&tools.mkfs_ext4);
    cmd.args(["-q", "-F", "-t", "ext4", "-L", "mayfly-root", "-m", "0"])
        .args(["-E", "lazy_itable_init=0,lazy_journal_init=0"])
        .arg("-d")
        .arg(tree)
        .arg(raw);
    cmd
}

/// Write `data` to `root/rel` as a new root-owned inode with `mode`.
fn install_file(root: &Path, rel: &str, data: &[u8], mode: u32) -> Result<(), ImageError> {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).ctx(|| format!("cannot create {}", parent.display()))?;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).ctx(|| format!("cannot replace {}", path.display())),
    }
    std::fs::write(&path, data).ctx(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .ctx(|| format!("cannot chmod {}", path.display()))?;
    std::os::unix::fs::chown(&path, Some(0), Some(0))
        .ctx(|| format!("cannot chown {}", path.display()))
}

/// Allocated bytes and inode count of a tree, counting hard-linked inodes once.
fn tree_usage(root: &Path) -> Result<(u64, u64), ImageError> {
    let mut seen = HashSet::new();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).ctx(|| format!("cannot list {}", dir.display()))? {
            let entry = entry.ctx(|| format!("cannot list {}", dir.display()))?;
            let meta = entry
                .metadata()
                .ctx(|| format!("cannot stat {}", entry.path().display()))?;
            if !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            inodes += 1;
            bytes += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok((bytes, inodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_file_never_writes_through_a_hard_link() {
        let dir = tempfile::tempdir().unwrap();
        let cached = dir.path().join("cached");
        std::fs::write(&cached, "original").unwrap();
        let staging = dir.path().join("staging");
        std::fs::create_dir_all(staging.join("etc")).unwrap();
        std::fs::hard_link(&cached, staging.join("etc/mayfly-image")).unwrap();
        install_file(&staging, RELEASE_PATH, b"new", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&cached).unwrap(), "original");
        assert_eq!(
            std::fs::read_to_string(staging.join(RELEASE_PATH)).unwrap(),
            "new"
        );
        install_file(&staging, GUEST_PATH, b"\x7fELF", 0o755).unwrap();
        let mode = std::fs::metadata(staging.join(GUEST_PATH))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn tree_usage_counts_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 10_000]).unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let (bytes, inodes) = tree_usage(dir.path()).unwrap();
        assert_eq!(inodes, 2);
        assert!(bytes >= 10_000, "{bytes}");
    }

    #[test]
    fn mkfs_zeroes_metadata_up_front() {
        let cmd = mkfs(&HostTools::named(), Path::new("/t"), Path::new("/r.raw"));
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.contains(&"lazy_itable_init=0,lazy_journal_init=0".to_string()));
        assert_eq!(args[args.len() - 3..], ["-d", "/t", "/r.raw"]);
    }
}
