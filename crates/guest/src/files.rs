//! File metadata ops: `stat`, `list`, `mkdir`, `rename`, `remove`. Streaming reads and writes
//! live in [`crate::transfer`].
//!
//! Every path must be absolute. Types come from `lstat` (a symlink is reported as a symlink, not
//! as what it points to). A `list` reply is one or more CTRL `list` messages — a frame payload
//! is capped at 64 KiB, so a large directory is split — followed by EOF; the host concatenates
//! the entries. Order across messages: directories first, then by name.

use crate::serve::finish;
use mayfly_proto::frame::MAX_PAYLOAD;
use mayfly_proto::msg::{Ctrl, ErrorKind, FileInfo, FileType};
use mayfly_proto::mux::Stream;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// JSON budget of one CTRL `list` message, leaving room for the envelope.
const LIST_CHUNK_BYTES: usize = MAX_PAYLOAD - 1024;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("path must be absolute: {0:?}")]
    Relative(String),
    #[error("{0}: is a directory")]
    IsDirectory(String),
    #[error("{path}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl FileError {
    pub fn io(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
        move |source| FileError::Io { path: path.display().to_string(), source }
    }

    pub fn to_ctrl(&self) -> Ctrl {
        match self {
            FileError::Relative(_) => Ctrl::error(ErrorKind::InvalidInput, self.to_string()),
            FileError::IsDirectory(_) => Ctrl::error(ErrorKind::IsADirectory, self.to_string()),
            FileError::Io { path, source } => Ctrl::io_error(path, source),
        }
    }
}

/// Accepts only absolute paths.
pub fn absolute(path: &str) -> Result<PathBuf, FileError> {
    let p = Path::new(path);
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Err(FileError::Relative(path.to_string()))
    }
}

/// Describes `path` from its (not followed) metadata.
pub fn file_info(path: &Path, meta: &Metadata) -> FileInfo {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        FileType::Dir
    } else if ft.is_symlink() {
        FileType::Symlink
    } else if ft.is_file() {
        FileType::File
    } else {
        FileType::Other
    };
    FileInfo {
        name: path.file_name().map_or_else(|| "/".to_string(), |n| n.to_string_lossy().into_owned()),
        path: path.to_string_lossy().into_owned(),
        kind,
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        modified: meta.mtime(),
    }
}

/// Directories first, then by name.
pub fn sort_entries(entries: &mut [FileInfo]) {
    entries.sort_by(|a, b| (a.kind != FileType::Dir, &a.name).cmp(&(b.kind != FileType::Dir, &b.name)));
}

/// Splits `entries` into runs whose JSON stays under `budget` bytes. Always at least one run.
pub fn chunk_entries(entries: Vec<FileInfo>, budget: usize) -> Vec<Vec<FileInfo>> {
    let mut chunks = vec![Vec::new()];
    let mut used = 0;
    for e in entries {
        let size = serde_json::to_vec(&e).map_or(0, |v| v.len()) + 1;
        let last = chunks.last_mut().expect("non-empty");
        if !last.is_empty() && used + size > budget {
            chunks.push(Vec::new());
            used = 0;
        }
        used += size;
        chunks.last_mut().expect("non-empty").push(e);
    }
    chunks
}

fn list_dir(dir: &Path) -> Result<Vec<FileInfo>, FileError> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(FileError::io(dir))? {
        let entry = entry.map_err(FileError::io(dir))?;
        // An entry removed since readdir is simply not listed.
        if let Ok(meta) = entry.metadata() {
            entries.push(file_info(&entry.path(), &meta));
        }
    }
    sort_entries(&mut entries);
    Ok(entries)
}

/// Runs blocking file work off the runtime thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FileError> + Send + 'static,
) -> Result<T, FileError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(FileError::Io { path: String::new(), source: io::Error::other(format!("file task failed: {e}")) })
    })
}

pub async fn stat(path: &str, stream: Stream) {
    let res = match absolute(path) {
        Ok(p) => {
            blocking(move || {
                let meta = std::fs::symlink_metadata(&p).map_err(FileError::io(&p))?;
                Ok(file_info(&p, &meta))
            })
            .await
        }
        Err(e) => Err(e),
    };
    finish(&stream.tx, &res.map_or_else(|e| e.to_ctrl(), Ctrl::Stat)).await;
}

pub async fn list(path: &str, stream: Stream) {
    let res = match absolute(path) {
        Ok(p) => blocking(move || list_dir(&p)).await,
        Err(e) => Err(e),
    };
    let entries = match res {
        Ok(e) => e,
        Err(e) => return finish(&stream.tx, &e.to_ctrl()).await,
    };
    for chunk in chunk_entries(entries, LIST_CHUNK_BYTES) {
        if stream.tx.send_ctrl(&Ctrl::List { entries: chunk }).await.is_err() {
            return;
        }
    }
    let _ = stream.tx.send_eof().await;
}

pub async fn mkdir(path: &str, stream: Stream) {
    let res = match absolute(path) {
        Ok(p) => blocking(move || std::fs::create_dir_all(&p).map_err(FileError::io(&p))).await,
        Err(e) => Err(e),
    };
    finish(&stream.tx, &res.map_or_else(|e| e.to_ctrl(), |()| Ctrl::Ok)).await;
}

pub async fn rename(from: &str, to: &str, stream: Stream) {
    let res = match (absolute(from), absolute(to)) {
        (Ok(f), Ok(t)) => blocking(move || std::fs::rename(&f, &t).map_err(FileError::io(&f))).await,
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    finish(&stream.tx, &res.map_or_else(|e| e.to_ctrl(), |()| Ctrl::Ok)).await;
}

pub async fn remove(path: &str, recursive: bool, stream: Stream) {
    let res = match absolute(path) {
        Ok(p) => {
            blocking(move || {
                let meta = std::fs::symlink_metadata(&p).map_err(FileError::io(&p))?;
                let r = match (meta.is_dir(), recursive) {
                    (true, true) => std::fs::remove_dir_all(&p),
                    (true, false) => std::fs::remove_dir(&p),
                    (false, _) => std::fs::remove_file(&p),
                };
                r.map_err(FileError::io(&p))
            })
            .await
        }
        Err(e) => Err(e),
    };
    finish(&stream.tx, &res.map_or_else(|e| e.to_ctrl(), |()| Ctrl::Ok)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, kind: FileType) -> FileInfo {
        FileInfo { name: name.into(), path: format!("/d/{name}"), kind, size: 1, mode: 0o644, modified: 0 }
    }

    #[test]
    fn only_absolute_paths() {
        for (p, ok) in [("/", true), ("/etc/hosts", true), ("etc", false), ("./x", false), ("", false), ("../x", false)]
        {
            assert_eq!(absolute(p).is_ok(), ok, "{p}");
        }
        assert!(matches!(absolute("x").unwrap_err().to_ctrl(), Ctrl::Error { kind: ErrorKind::InvalidInput, .. }));
    }

    #[test]
    fn dirs_first_then_name() {
        let mut v = vec![
            entry("b.txt", FileType::File),
            entry("z", FileType::Dir),
            entry("a-link", FileType::Symlink),
            entry("a", FileType::Dir),
            entry("C", FileType::File),
        ];
        sort_entries(&mut v);
        let names: Vec<_> = v.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "z", "C", "a-link", "b.txt"]);
    }

    #[test]
    fn chunks_respect_the_budget_and_keep_order() {
        let entries: Vec<_> = (0..2000).map(|i| entry(&format!("file-{i:05}"), FileType::File)).collect();
        let chunks = chunk_entries(entries.clone(), LIST_CHUNK_BYTES);
        assert!(chunks.len() > 1);
        for c in &chunks {
            let json = serde_json::to_vec(&Ctrl::List { entries: c.clone() }).unwrap();
            assert!(json.len() <= MAX_PAYLOAD, "{} bytes", json.len());
        }
        assert_eq!(chunks.concat(), entries);
        assert_eq!(chunk_entries(vec![], 100), vec![Vec::<FileInfo>::new()]);
    }

    #[test]
    fn info_does_not_follow_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("root-link")).unwrap();
        let entries = list_dir(dir.path()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].kind, FileType::Symlink);
        let root = file_info(Path::new("/"), &std::fs::symlink_metadata("/").unwrap());
        assert_eq!((root.name.as_str(), root.kind), ("/", FileType::Dir));
    }
}
