//! Built images on disk, and the only way other crates find them.
//!
//! ```text
//! <data_dir>/images/<name>/<key>/vmlinux        ELF kernel (booted via PVH)
//!                               /initrd.img     uncompressed newc initramfs
//!                               /rootfs.qcow2   read-only base disk (ext4, label mayfly-root)
//!                               /manifest.json  written last: a key dir with it is complete
//! <data_dir>/images/<name>/current -> <key>     the image `get(name)` returns
//! <data_dir>/images/<name>/.lock                held (flock) by a build of <name>
//! ```
//!
//! Key directories are never modified after they appear; older keys stay until deleted by hand,
//! because session overlays may still use them as backing files.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use time::OffsetDateTime;

use crate::cache::replace_dir;
use crate::error::{ImageError, IoContext};
use crate::manifest::{Manifest, INITRD_FILE, ROOTFS_FILE, VMLINUX_FILE};

const CURRENT: &str = "current";
const LOCK: &str = ".lock";

/// A complete image, ready to boot.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltImage {
    pub name: String,
    pub key: String,
    pub dir: PathBuf,
    /// ELF vmlinux.
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Read-only qcow2 base disk; sessions put an overlay on top.
    pub rootfs: PathBuf,
    pub manifest: Manifest,
}

impl BuiltImage {
    /// Load the image in a key directory (which must hold a manifest).
    pub fn open(dir: &Path) -> Result<BuiltImage, ImageError> {
        let manifest = Manifest::read(dir)?;
        Ok(BuiltImage {
            name: manifest.name.clone(),
            key: manifest.key.clone(),
            dir: dir.to_path_buf(),
            kernel: dir.join(VMLINUX_FILE),
            initrd: dir.join(INITRD_FILE),
            rootfs: dir.join(ROOTFS_FILE),
            manifest,
        })
    }
}

/// One line of `mayfly image ls`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSummary {
    pub name: String,
    pub key: String,
    pub dir: PathBuf,
    pub description: String,
    pub built_at: OffsetDateTime,
    /// Bytes on disk: kernel + initrd + qcow2.
    pub size_bytes: u64,
    pub disk_size_bytes: u64,
    pub kernel_version: String,
}

/// The images under `<data_dir>/images`.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    pub fn new(data_dir: impl AsRef<Path>) -> ImageStore {
        ImageStore {
            root: data_dir.as_ref().join("images"),
        }
    }

    /// The current build of `name`.
    pub fn get(&self, name: &str) -> Result<BuiltImage, ImageError> {
        let not_built = || ImageError::NotBuilt {
            name: name.to_string(),
            available: self.list().into_iter().map(|s| s.name).collect(),
        };
        // Names become paths: anything but a recipe-style name cannot be in the store.
        if !crate::recipe::is_dns_label(name) {
            return Err(not_built());
        }
        let current = self.root.join(name).join(CURRENT);
        if std::fs::read_link(&current).is_err() {
            return Err(not_built());
        }
        // Resolve once, so a build swapping `current` meanwhile cannot mix two keys.
        let dir = std::fs::canonicalize(&current).map_err(|_| not_built())?;
        BuiltImage::open(&dir)
    }

    /// Every image with a current build, sorted by name. Unreadable entries are logged and skipped.
    pub fn list(&self) -> Vec<ImageSummary> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.') && self.root.join(n).join(CURRENT).exists())
            .collect();
        names.sort();
        names
            .into_iter()
            .filter_map(
                |name| match std::fs::canonicalize(self.root.join(&name).join(CURRENT)) {
                    Ok(dir) => match BuiltImage::open(&dir) {
                        Ok(img) => Some(summary(img)),
                        Err(e) => {
                            tracing::warn!(image = %name, "skipping image: {e}");
                            None
                        }
                    },
                    Err(e) => {
                        tracing::warn!(image = %name, "skipping image: {e}");
                        None
                    }
                },
            )
            .collect()
    }

    /// The image `name` with `key`, if it was built.
    pub(crate) fn find(&self, name: &str, key: &str) -> Option<BuiltImage> {
        BuiltImage::open(&self.root.join(name).join(key)).ok()
    }

    #[cfg(test)]
    fn image_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Take the build lock for `name`, calling `waiting` if another build holds it.
    pub(crate) fn lock(
        &self,
        name: &str,
        waiting: impl FnOnce(&Path),
    ) -> Result<Flock<File>, ImageError> {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).ctx(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(LOCK);
        let file = File::create(&path).ctx(|| format!("cannot create {}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(lock),
            Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
                waiting(&path);
                Flock::lock(file, FlockArg::LockExclusive)
                    .map_err(|(_, e)| std::io::Error::from(e))
                    .ctx(|| format!("cannot lock {}", path.display()))
            }
            Err((_, e)) => {
                Err(std::io::Error::from(e)).ctx(|| format!("cannot lock {}", path.display()))
            }
        }
    }

    /// Move a complete image directory into place as `<name>/<key>` (replacing an existing one:
    /// only a forced build gets here with the key already built) and make it current.
    pub(crate) fn publish(
        &self,
        name: &str,
        key: &str,
        staged: PathBuf,
    ) -> Result<BuiltImage, ImageError> {
        let dir = self.root.join(name).join(key);
        replace_dir(staged, &dir, true)?;
        self.set_current(name, key)?;
        BuiltImage::open(&dir)
    }

    /// Point `<name>/current` at `key` atomically (rename a new symlink over the old one).
    pub(crate) fn set_current(&self, name: &str, key: &str) -> Result<(), ImageError> {
        let dir = self.root.join(name);
        let tmp = dir.join(format!(".current-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(key, &tmp).ctx(|| format!("cannot create {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(CURRENT))
            .ctx(|| format!("cannot update {}/{CURRENT}", dir.display()))
    }
}

fn summary(img: BuiltImage) -> ImageSummary {
    let m = img.manifest;
    ImageSummary {
        name: img.name,
        key: img.key,
        dir: img.dir,
        description: m.recipe.description,
        built_at: m.built_at,
        size_bytes: m.files.total(),
        disk_size_bytes: m.disk_size_bytes,
        kernel_version: m.kernel_version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::sample;

    /// A fake built image: manifest plus empty files, published through the store.
    fn fake(store: &ImageStore, data: &Path, name: &str, key: &str) {
        let staged = data.join(format!("staged-{name}-{key}"));
        std::fs::create_dir_all(&staged).unwrap();
        for f in [VMLINUX_FILE, INITRD_FILE, ROOTFS_FILE] {
            std::fs::write(staged.join(f), "").unwrap();
        }
        sample(name, key).write(&staged).unwrap();
        std::fs::create_dir_all(store.image_dir(name)).unwrap();
        store.publish(name, key, staged).unwrap();
    }

    #[test]
    fn lists_and_gets_current_images() {
        let data = tempfile::tempdir().unwrap();
        let store = ImageStore::new(data.path());
        assert!(store.list().is_empty());
        fake(&store, data.path(), "minimal", "k1");
        fake(&store, data.path(), "dev", "k2");
        fake(&store, data.path(), "minimal", "k3");
        let list = store.list();
        let names: Vec<(&str, &str)> = list
            .iter()
            .map(|s| (s.name.as_str(), s.key.as_str()))
            .collect();
        assert_eq!(names, [("dev", "k2"), ("minimal", "k3")]);
        assert_eq!(list[0].size_bytes, 132);
        let img = store.get("minimal").unwrap();
        assert_eq!(img.key, "k3");
        assert!(img.kernel.ends_with("minimal/k3/vmlinux"));
        assert!(img.rootfs.ends_with("minimal/k3/rootfs.qcow2"));
        assert_eq!(store.find("minimal", "k1").unwrap().key, "k1");
        assert!(store.find("minimal", "nope").is_none());
    }

    #[test]
    fn missing_image_lists_what_is_built() {
        let data = tempfile::tempdir().unwrap();
        let store = ImageStore::new(data.path());
        let e = store.get("dev").unwrap_err().to_string();
        assert!(e.contains("no images are built yet"), "{e}");
        assert!(matches!(
            store.get("../minimal"),
            Err(ImageError::NotBuilt { .. })
        ));
        fake(&store, data.path(), "minimal", "k1");
        // A half-finished build (no current link) does not count.
        std::fs::create_dir_all(store.image_dir("dev").join("k9")).unwrap();
        match store.get("dev").unwrap_err() {
            ImageError::NotBuilt { name, available } => {
                assert_eq!(name, "dev");
                assert_eq!(available, ["minimal"]);
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn second_lock_waits() {
        let data = tempfile::tempdir().unwrap();
        let store = ImageStore::new(data.path());
        let held = store
            .lock("minimal", |_| panic!("first lock must not wait"))
            .unwrap();
        let waited = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                store.lock("minimal", |_| {
                    waited.store(true, std::sync::atomic::Ordering::SeqCst)
                })
            });
            while !waited.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            drop(held);
            t.join().unwrap().unwrap();
        });
    }
}
