//! A template's RAM, read-only to every QEMU that maps it.
//!
//! QEMU 7.2 opens a `memory-backend-file` read-write even when it maps it private (`share=off`),
//! and `readonly=on` there makes guest RAM itself read-only. So a clone is never given the
//! template's `mem` file: the control plane (root) copies it once into a **sealed memfd**
//! (`F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL`) and every clone inherits that
//! descriptor and maps `mem-path=/proc/self/fd/N` private. A memfd may be opened read-write by
//! anyone holding it, but with the seals no `write`, `ftruncate`, `fallocate` or shared writable
//! mapping succeeds, for anyone, and the seals cannot be removed; private copy-on-write mappings
//! still work, so clones keep sharing the untouched pages (now through the memfd's shmem pages).
//! The `mem` file itself is root's and `0444`, like the template's disk.
//!
//! One memfd per template file (keyed by device, inode and modification time, so a rebuilt
//! template gets a new one); it lives as long as the backend. Its pages cost host memory once per
//! template (the pages the template guest had touched; runs of zeroes stay holes).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Copy unit; an all-zero chunk is left a hole.
const CHUNK: usize = 2 << 20;

type Key = (u64, u64, i64, i64);
/// Template RAM file → (its version, the sealed copy).
type Sealed = HashMap<PathBuf, (Key, Arc<OwnedFd>)>;

/// Sealed memfd copies of template RAM files. Clones share one registry.
#[derive(Debug, Default, Clone)]
pub struct TemplateRam {
    fds: Arc<Mutex<Sealed>>,
}

impl TemplateRam {
    /// The sealed copy of `mem` (made now if there is none for this version of the file).
    pub fn sealed(&self, mem: &Path) -> Result<Arc<OwnedFd>, String> {
        let meta = std::fs::metadata(mem).map_err(|e| format!("cannot read {}: {e}", mem.display()))?;
        let key = (meta.dev(), meta.ino(), meta.mtime(), meta.mtime_nsec());
        let mut fds = self.fds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, fd)) = fds.get(mem) {
            if *k == key {
                return Ok(fd.clone());
            }
        }
        let started = std::time::Instant::now();
        let fd = Arc::new(sealed_copy(mem)?);
        tracing::info!(mem = %mem.display(), ms = started.elapsed().as_millis() as u64, "template RAM sealed in a memfd");
        fds.insert(mem.to_path_buf(), (key, fd.clone()));
        Ok(fd)
    }
}

/// Makes `mem` root's and read-only, and copies it into a new sealed memfd.
pub fn sealed_copy(mem: &Path) -> Result<OwnedFd, String> {
    let err = |what: &str, e: std::io::Error| format!("{what} {}: {e}", mem.display());
    lock_down(mem).map_err(|e| err("cannot make read-only", e))?;
    let file = std::fs::File::open(mem).map_err(|e| err("cannot open", e))?;
    let len = file.metadata().map_err(|e| err("cannot stat", e))?.len();
    let name = c"mayfly-template-ram";
    // SAFETY: plain syscall with a valid C string; the result is checked.
    let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if raw < 0 {
        return Err(err("memfd_create for", std::io::Error::last_os_error()));
    }
    // SAFETY: a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let out = std::fs::File::from(fd);
    out.set_len(len).map_err(|e| err("cannot size the memfd for", e))?;
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    while off < len {
        let n = file.read_at(&mut buf, off).map_err(|e| err("cannot read", e))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            out.write_all_at(&buf[..n], off).map_err(|e| err("cannot copy", e))?;
        }
        off += n as u64;
    }
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(out.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(err("cannot seal the memfd of", std::io::Error::last_os_error()));
    }
    // The copy is in memory now; the file's page cache is not needed.
    // SAFETY: advice on a descriptor we own.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    Ok(OwnedFd::from(out))
}

/// Root's and `0444` (templates made before kept it QEMU's account's and writable).
fn lock_down(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
    let m = std::fs::metadata(p)?;
    if m.uid() != uid || m.gid() != gid {
        std::os::unix::fs::chown(p, Some(uid), Some(gid))?;
    }
    if m.mode() & 0o777 != 0o444 {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o444))?;
    }
    Ok(())
}

/// The path QEMU opens for descriptor `fd` inherited from us.
pub fn fd_path(fd: RawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{fd}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_has_the_content_and_refuses_every_write() {
        let tmp = tempfile::tempdir().unwrap();
        let mem = tmp.path().join("mem");
        let mut data = vec![0u8; 3 * CHUNK + 17];
        data[5] = 1;
        data[3 * CHUNK + 3] = 9;
        std::fs::write(&mem, &data).unwrap();
        let ram = TemplateRam::default();
        let fd = ram.sealed(&mem).unwrap();
        assert!(Arc::ptr_eq(&fd, &ram.sealed(&mem).unwrap()), "one memfd per file version");
        let mode = std::fs::metadata(&mem).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o444);
        // Reopened read-write (as QEMU does) it reads the same and refuses writes.
        let f = std::fs::OpenOptions::new().read(true).write(true).open(fd_path(fd.as_raw_fd())).unwrap();
        let mut got = vec![0u8; data.len()];
        f.read_exact_at(&mut got, 0).unwrap();
        assert!(got == data, "content differs");
        assert_eq!(f.write_at(b"x", 0).unwrap_err().raw_os_error(), Some(libc::EPERM));
        assert_eq!(f.set_len(0).unwrap_err().raw_os_error(), Some(libc::EPERM));
    }
}
