//! Streaming file contents: `read_file` and `write_file`, in 64 KiB DATA chunks, never holding a
//! whole file in memory.
//!
//! `write_file` is atomic: DATA goes to a temporary file in the target's directory, which is
//! renamed over the target after the host's EOF. A reset stream (or any error) removes the
//! temporary file. Writing through a symlink writes the file it points to. Without an explicit
//! mode, an existing file keeps its permissions and owner; a new one gets 0644.

use crate::files::{absolute, FileError};
use crate::serve::finish;
use mayfly_proto::msg::Ctrl;
use mayfly_proto::mux::{Event, Stream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHUNK: usize = 256 * 1024;
const NEW_FILE_MODE: u32 = 0o644;

pub async fn read_file(path: &str, stream: Stream) {
    let tx = &stream.tx;
    let path = match absolute(path) {
        Ok(p) => p,
        Err(e) => return finish(tx, &e.to_ctrl()).await,
    };
    let opened = async {
        let file = tokio::fs::File::open(&path).await.map_err(FileError::io(&path))?;
        let meta = file.metadata().await.map_err(FileError::io(&path))?;
        if meta.is_dir() {
            return Err(FileError::IsDirectory(path.display().to_string()));
        }
        Ok((file, meta))
    };
    let (mut file, meta) = match opened.await {
        Ok(fm) => fm,
        Err(e) => return finish(tx, &e.to_ctrl()).await,
    };
    if tx.send_ctrl(&Ctrl::File { size: meta.len(), mode: meta.mode() & 0o7777 }).await.is_err() {
        return;
    }
    // Owned buffers the frames share: no copy between here and the port writer.
    let mut buf = bytes::BytesMut::new();
    loop {
        buf.reserve(CHUNK);
        match file.read_buf(&mut buf).await {
            Ok(0) => break,
            Ok(_) => {
                if tx.send_bytes(0, buf.split().freeze()).await.is_err() {
                    return; // the host went away
                }
            }
            Err(e) => return finish(tx, &Ctrl::io_error(&path.display().to_string(), &e)).await,
        }
    }
    let _ = tx.send_eof().await;
}

/// A temporary file that is removed unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn temp_path(dir: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".mayfly-write-{}-{n}.tmp", std::process::id()))
}

pub async fn write_file(path: &str, mode: Option<u32>, mut stream: Stream) {
    let target = match absolute(path) {
        Ok(p) => p,
        Err(e) => return finish(&stream.tx, &e.to_ctrl()).await,
    };
    match receive(&target, mode, &mut stream).await {
        Ok(true) => finish(&stream.tx, &Ctrl::Ok).await,
        Ok(false) => {} // reset by the host: nothing to answer
        Err(e) => finish(&stream.tx, &e.to_ctrl()).await,
    }
}

/// Receives the contents and renames them into place. `Ok(false)`: the host reset the stream.
async fn receive(path: &Path, mode: Option<u32>, stream: &mut Stream) -> Result<bool, FileError> {
    // Write through symlinks: replace the file a link points to, not the link.
    let target = tokio::fs::canonicalize(path).await.unwrap_or_else(|_| path.to_path_buf());
    let existing = tokio::fs::metadata(&target).await.ok();
    if existing.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(FileError::IsDirectory(path.display().to_string()));
    }
    let dir = target.parent().ok_or_else(|| FileError::IsDirectory(path.display().to_string()))?;
    tokio::fs::create_dir_all(dir).await.map_err(FileError::io(dir))?;
    let mut temp = TempFile { path: temp_path(dir), keep: false };
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp.path)
        .await
        .map_err(FileError::io(dir))?;
    loop {
        match stream.recv().await {
            Event::Data { data, .. } => file.write_all(&data).await.map_err(FileError::io(path))?,
            Event::Eof => break,
            Event::Ctrl(_) => {}
            Event::Reset(_) => return Ok(false),
        }
    }
    file.flush().await.map_err(FileError::io(path))?;
    drop(file);
    let mode = mode.or(existing.as_ref().map(|m| m.mode())).unwrap_or(NEW_FILE_MODE) & 0o7777;
    tokio::fs::set_permissions(&temp.path, std::fs::Permissions::from_mode(mode)).await.map_err(FileError::io(path))?;
    if let Some(m) = &existing {
        // Keep the owner of a file we replace (best effort: only root may give files away).
        let _ = std::os::unix::fs::chown(&temp.path, Some(m.uid()), Some(m.gid()));
    }
    tokio::fs::rename(&temp.path, &target).await.map_err(FileError::io(path))?;
    temp.keep = true;
    Ok(true)
}
