//! `watch_files` streams: changes under a directory tree, from inotify.
//!
//! One inotify instance per stream and one watch per directory, added recursively at the start
//! and whenever a directory appears (created or moved in), at most [`MAX_WATCHES`]. Subtrees
//! that churn and that nobody browses live ([`SKIPPED_DIRS`]: `.git`, `node_modules`, …) are
//! not descended into; their own creation and deletion are still reported.
//!
//! The stream answers CTRL `ok` once the watches are in place. Events are then coalesced for
//! [`COALESCE`] after the first one of a batch ([`crate::watch_batch::Batch`]) and sent as CTRL
//! `file_events`, split to fit a frame. The daemon's own atomic-write temp files
//! (`.mayfly-write-*`) are hidden: their rename onto a file reads as that file being modified.
//! The stream ends (EOF) when the watched root itself is deleted or moved.

use crate::files::FileError;
use crate::serve::finish;
use crate::watch_batch::Batch;
use mayfly_proto::msg::{Ctrl, FileEventKind};
use mayfly_proto::mux::{Event, Stream, StreamSender};
use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// How long events are gathered after the first one of a batch.
pub const COALESCE: Duration = Duration::from_millis(100);
/// Directories watched at most per stream (each costs kernel memory).
pub const MAX_WATCHES: usize = 4096;
/// Directory names whose contents are not watched.
pub const SKIPPED_DIRS: &[&str] = &[".git", "node_modules", "__pycache__", ".cache", ".venv", "target"];
/// Prefix of the temp files `write_file` renames into place.
const TEMP_PREFIX: &str = ".mayfly-write-";

fn mask() -> AddWatchFlags {
    use AddWatchFlags as F;
    F::IN_CREATE
        | F::IN_DELETE
        | F::IN_MODIFY
        | F::IN_CLOSE_WRITE
        | F::IN_MOVED_FROM
        | F::IN_MOVED_TO
        | F::IN_DELETE_SELF
        | F::IN_MOVE_SELF
        | F::IN_ONLYDIR
        | F::IN_DONT_FOLLOW
}

/// The inotify fd, for tokio's reactor.
struct Fd(Inotify);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

fn hidden(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n.to_string_lossy().starts_with(TEMP_PREFIX))
}

fn skipped(dir: &Path) -> bool {
    dir.file_name().is_some_and(|n| SKIPPED_DIRS.iter().any(|s| n == *s))
}

/// Which directory each watch descriptor stands for.
struct Tree {
    root: PathBuf,
    root_wd: Option<WatchDescriptor>,
    dirs: HashMap<WatchDescriptor, PathBuf>,
    full_logged: bool,
    /// Set when the root was deleted or moved: the stream ends.
    gone: bool,
    /// MOVED_FROM halves waiting for their MOVED_TO, by cookie: (path, is a directory).
    moves: HashMap<u32, (PathBuf, bool)>,
}

impl Tree {
    /// Watches `dir` and every directory below it (skipped names and the cap permitting). With
    /// `report`, entries found below `dir` are reported as created: they may have appeared
    /// before the watch did.
    fn add(&mut self, ino: &Inotify, dir: &Path, mut report: Option<&mut Batch>) {
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            if self.dirs.len() >= MAX_WATCHES {
                if !self.full_logged {
                    tracing::warn!(root = %self.root.display(), "watching {MAX_WATCHES} directories; not watching more");
                    self.full_logged = true;
                }
                return;
            }
            let Ok(wd) = ino.add_watch(&d, mask()) else { continue };
            if d == self.root {
                self.root_wd = Some(wd);
            }
            self.dirs.insert(wd, d.clone());
            let Ok(entries) = std::fs::read_dir(&d) else { continue };
            for e in entries.flatten() {
                let path = e.path();
                if let Some(b) = report.as_deref_mut() {
                    if !hidden(&path) {
                        b.push(path.clone(), FileEventKind::Created, None);
                    }
                }
                if e.file_type().is_ok_and(|t| t.is_dir()) && !skipped(&path) {
                    todo.push(path);
                }
            }
        }
    }

    /// Stops watching `dir` and everything below it (moved out of the tree).
    fn remove(&mut self, ino: &Inotify, dir: &Path) {
        let gone: Vec<WatchDescriptor> = self.dirs.iter().filter(|(_, p)| p.starts_with(dir)).map(|(wd, _)| *wd).collect();
        for wd in gone {
            self.dirs.remove(&wd);
            let _ = ino.rm_watch(wd);
        }
    }

    /// A directory moved within the tree: its watches follow it.
    fn rename(&mut self, from: &Path, to: &Path) {
        for p in self.dirs.values_mut() {
            if let Ok(rest) = p.strip_prefix(from) {
                *p = if rest.as_os_str().is_empty() { to.to_path_buf() } else { to.join(rest) };
            }
        }
    }

    /// Translates one inotify event into batch entries.
    fn handle(&mut self, ino: &Inotify, ev: InotifyEvent, batch: &mut Batch) {
        use AddWatchFlags as F;
        let m = ev.mask;
        if m.contains(F::IN_Q_OVERFLOW) {
            batch.overflow();
            return;
        }
        if m.contains(F::IN_IGNORED) {
            self.dirs.remove(&ev.wd);
            if Some(ev.wd) == self.root_wd {
                self.gone = true;
            }
            return;
        }
        if Some(ev.wd) == self.root_wd && m.intersects(F::IN_DELETE_SELF | F::IN_MOVE_SELF) {
            batch.push(self.root.clone(), FileEventKind::Deleted, None);
            self.gone = true;
            return;
        }
        let (Some(dir), Some(name)) = (self.dirs.get(&ev.wd), ev.name) else { return };
        let path = dir.join(name);
        let is_dir = m.contains(F::IN_ISDIR);
        if m.contains(F::IN_MOVED_FROM) {
            self.moves.insert(ev.cookie, (path, is_dir));
        } else if m.contains(F::IN_MOVED_TO) {
            match self.moves.remove(&ev.cookie) {
                Some((from, _)) if hidden(&from) => batch.push(path, FileEventKind::Modified, None),
                Some((from, was_dir)) => {
                    if was_dir {
                        self.rename(&from, &path);
                    }
                    batch.push(path, FileEventKind::Renamed, Some(from));
                }
                None => self.appeared(ino, path, is_dir, batch),
            }
        } else if hidden(&path) {
            // The daemon's own temp file: only its rename into place matters.
        } else if m.contains(F::IN_CREATE) {
            self.appeared(ino, path, is_dir, batch);
        } else if m.contains(F::IN_DELETE) {
            batch.push(path, FileEventKind::Deleted, None);
        } else if m.intersects(F::IN_MODIFY | F::IN_CLOSE_WRITE) {
            batch.push(path, FileEventKind::Modified, None);
        }
    }

    fn appeared(&mut self, ino: &Inotify, path: PathBuf, is_dir: bool, batch: &mut Batch) {
        if hidden(&path) {
            return;
        }
        batch.push(path.clone(), FileEventKind::Created, None);
        if is_dir && !skipped(&path) {
            self.add(ino, &path, Some(batch));
        }
    }

    /// MOVED_FROM halves that found no MOVED_TO: moved out of the tree, i.e. gone.
    fn settle_moves(&mut self, ino: &Inotify, batch: &mut Batch) {
        for (_, (from, is_dir)) in std::mem::take(&mut self.moves) {
            if is_dir {
                self.remove(ino, &from);
            }
            if !hidden(&from) {
                batch.push(from, FileEventKind::Deleted, None);
            }
        }
    }
}

fn watch_root(path: &str) -> Result<(Fd, Tree), FileError> {
    let root = PathBuf::from(path);
    if !root.is_absolute() {
        return Err(FileError::Relative(path.to_string()));
    }
    let meta = std::fs::metadata(&root).map_err(FileError::io(&root))?;
    if !meta.is_dir() {
        let e = std::io::Error::from(std::io::ErrorKind::NotADirectory);
        return Err(FileError::Io { path: path.to_string(), source: e });
    }
    let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
        .map_err(|e| FileError::Io { path: path.to_string(), source: e.into() })?;
    let mut tree =
        Tree { root: root.clone(), root_wd: None, dirs: HashMap::new(), full_logged: false, gone: false, moves: HashMap::new() };
    tree.add(&ino, &root, None);
    if tree.root_wd.is_none() {
        let e = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        return Err(FileError::Io { path: path.to_string(), source: e });
    }
    Ok((Fd(ino), tree))
}

/// Sends the batch (if any); false once the host is gone.
async fn flush(tx: &StreamSender, tree: &mut Tree, ino: &Inotify, batch: &mut Batch) -> bool {
    tree.settle_moves(ino, batch);
    for events in std::mem::take(batch).into_messages(&tree.root) {
        if tx.send_ctrl(&Ctrl::FileEvents { events }).await.is_err() {
            return false;
        }
    }
    true
}

pub async fn serve(path: &str, stream: Stream) {
    let (tx, mut rx) = stream.split();
    let (fd, mut tree) = match watch_root(path) {
        Ok(w) => w,
        Err(e) => return finish(&tx, &e.to_ctrl()).await,
    };
    // SAFETY: `Fd` owns the inotify descriptor for as long as the `AsyncFd` lives and always
    // returns that same descriptor.
    let fd = match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => return finish(&tx, &Ctrl::io_error(path, &e.into())).await,
    };
    if tx.send_ctrl(&Ctrl::Ok).await.is_err() {
        return;
    }
    let mut batch = Batch::default();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            ready = fd.readable() => {
                let mut guard = match ready {
                    Ok(g) => g,
                    Err(e) => return finish(&tx, &Ctrl::io_error(path, &e)).await,
                };
                loop {
                    match guard.get_inner().0.read_events() {
                        Ok(events) => {
                            for ev in events {
                                tree.handle(&guard.get_inner().0, ev, &mut batch);
                            }
                        }
                        Err(Errno::EAGAIN) => {
                            guard.clear_ready();
                            break;
                        }
                        Err(e) => return finish(&tx, &Ctrl::io_error(path, &e.into())).await,
                    }
                }
                if tree.gone {
                    if flush(&tx, &mut tree, &fd.get_ref().0, &mut batch).await {
                        let _ = tx.send_eof().await;
                    }
                    return;
                }
                if deadline.is_none() && (!batch.is_empty() || !tree.moves.is_empty()) {
                    deadline = Some(tokio::time::Instant::now() + COALESCE);
                }
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                deadline = None;
                if !flush(&tx, &mut tree, &fd.get_ref().0, &mut batch).await {
                    return;
                }
            }
            ev = rx.recv() => if let Event::Reset(_) = ev {
                return;
            },
        }
    }
}
