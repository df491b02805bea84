//! The step cache under `<data_dir>/cache/`: one directory per `(kind, key)`, filled in a temporary
//! sibling and renamed into place when complete, so an entry that exists is always whole. Two builds
//! racing to fill the same entry both succeed; the second one's rename loses and its copy is dropped.
//!
//! ```text
//! cache/debs/<package>_<version>_<arch>.deb     downloaded kernel packages
//! cache/kernel/<package>_<version>/             vmlinux, release, modules/<name>.ko
//! cache/initramfs/<key>/initrd.img              busybox + modules + /init
//! cache/rootfs/<key>/root/                      the mmdebstrap tree (no guest daemon)
//! ```

use std::path::{Path, PathBuf};

use crate::error::{ImageError, IoContext};

pub(crate) struct Cache {
    root: PathBuf,
}

impl Cache {
    pub fn new(data_dir: &Path) -> Cache {
        Cache {
            root: data_dir.join("cache"),
        }
    }

    pub fn dir(&self, kind: &str) -> PathBuf {
        self.root.join(kind)
    }

    /// The entry for `(kind, key)`, filling it with `fill` first if it is missing or `force` is set.
    /// `fill` gets an empty directory that becomes the entry. Returns the path and whether it was
    /// already cached.
    pub fn get_or_fill(
        &self,
        kind: &str,
        key: &str,
        force: bool,
        fill: impl FnOnce(&Path) -> Result<(), ImageError>,
    ) -> Result<(PathBuf, bool), ImageError> {
        let entry = self.dir(kind).join(key);
        if !force && entry.is_dir() {
            return Ok((entry, true));
        }
        let parent = self.dir(kind);
        std::fs::create_dir_all(&parent).ctx(|| format!("cannot create {}", parent.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".tmp-{key}-"))
            .tempdir_in(&parent)
            .ctx(|| {
                format!(
                    "cannot create a temporary directory in {}",
                    parent.display()
                )
            })?;
        fill(tmp.path())?;
        replace_dir(tmp.keep(), &entry, force)?;
        Ok((entry, false))
    }
}

/// Move directory `from` to `to`. If `to` already exists it is kept and `from` dropped (another
/// build made the same entry meanwhile), unless `replace` is set: then the old `to` is moved aside
/// and deleted after the swap (open files in it stay valid for their users).
pub(crate) fn replace_dir(from: PathBuf, to: &Path, replace: bool) -> Result<(), ImageError> {
    if replace && to.exists() {
        let trash = to.with_file_name(format!(
            ".old-{}-{}",
            to.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        std::fs::rename(to, &trash).ctx(|| format!("cannot move {} aside", to.display()))?;
        let result =
            std::fs::rename(&from, to).ctx(|| format!("cannot move {} into place", to.display()));
        if let Err(e) = std::fs::remove_dir_all(&trash) {
            tracing::warn!("cannot remove {}: {e}", trash.display());
        }
        return result;
    }
    match std::fs::rename(&from, to) {
        Ok(()) => Ok(()),
        // Lost a race with another build that filled the same entry: keep theirs.
        Err(_) if to.is_dir() => {
            let _ = std::fs::remove_dir_all(&from);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&from);
            Err(e).ctx(|| format!("cannot move {} into place", to.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_once_then_hits() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let (p, cached) = cache
            .get_or_fill("k", "a", false, |d| {
                std::fs::write(d.join("f"), "1").ctx(|| "w".into())
            })
            .unwrap();
        assert!(!cached);
        assert_eq!(std::fs::read_to_string(p.join("f")).unwrap(), "1");
        let (_, cached) = cache
            .get_or_fill("k", "a", false, |_| panic!("must not refill"))
            .unwrap();
        assert!(cached);
        let (p, cached) = cache
            .get_or_fill("k", "a", true, |d| {
                std::fs::write(d.join("f"), "2").ctx(|| "w".into())
            })
            .unwrap();
        assert!(!cached);
        assert_eq!(std::fs::read_to_string(p.join("f")).unwrap(), "2");
    }

    #[test]
    fn losing_a_race_keeps_the_existing_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (theirs, ours) = (dir.path().join("entry"), dir.path().join("tmp"));
        for (d, v) in [(&theirs, "theirs"), (&ours, "ours")] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("f"), v).unwrap();
        }
        replace_dir(ours.clone(), &theirs, false).unwrap();
        assert_eq!(std::fs::read_to_string(theirs.join("f")).unwrap(), "theirs");
        assert!(!ours.exists());
    }

    #[test]
    fn failed_fill_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let r = cache.get_or_fill("k", "a", false, |_| Err(ImageError::Host("no".into())));
        assert!(r.is_err());
        assert_eq!(std::fs::read_dir(cache.dir("k")).unwrap().count(), 0);
    }
}
