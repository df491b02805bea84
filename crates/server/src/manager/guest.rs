//! Operations inside a ready session's VM, over its guest channel: exec, files (read, write,
//! mkdir, rename, remove), terminals.
//! Guest refusals (missing file, missing binary) become [`SessionError::Guest`] or
//! [`SessionError::Exec`]; channel failures become [`SessionError::Vm`].

use super::{Activity, SessionError, SessionManager};
use bytes::Bytes;
use futures::Stream;
use mayfly_proto::api::{ExecBody, ExecResult};
use mayfly_proto::msg::{Ctrl, ErrorKind, ExecRequest, FileInfo, FileType, OpenRequest, PtyRequest};
use mayfly_proto::mux::{Event, StreamReceiver};
use mayfly_vm::ChannelError;
use std::future::Future;
use std::time::Duration;
use tokio::io::AsyncRead;

/// Limit for one-shot guest calls (stat, list, remove).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a terminal may take to start before the WebSocket is accepted anyway.
const PTY_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Slack on top of an exec's own timeout before the host gives up on the guest.
const EXEC_SLACK: Duration = Duration::from_secs(15);

/// What a path in the guest is.
pub enum FileEntry {
    Dir(Vec<FileInfo>),
    /// A file's size and its content, streamed.
    File { size: u64, body: StreamReceiver },
}

/// Terminal parameters, parsed at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtyParams {
    pub cols: u16,
    pub rows: u16,
    pub terminal: Option<String>,
}

/// A terminal stream attached to a session.
pub struct PtyAttach {
    pub stream: mayfly_proto::mux::Stream,
    /// An event read while waiting for the terminal to start, to be forwarded first.
    pub first: Option<Event>,
    pub activity: Activity,
}

pub(super) fn channel_error(id: &str, what: &'static str, e: ChannelError) -> SessionError {
    match e {
        ChannelError::Guest { kind, message } => SessionError::Guest { kind, message },
        other => SessionError::Vm { id: id.to_string(), what, source: Box::new(other) },
    }
}

async fn bounded<T>(
    id: &str,
    what: &'static str,
    limit: Duration,
    f: impl Future<Output = Result<T, ChannelError>>,
) -> Result<T, SessionError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(|e| channel_error(id, what, e)),
        Err(_) => Err(SessionError::Vm { id: id.to_string(), what, source: format!("no answer within {limit:?}").into() }),
    }
}

impl SessionManager {
    pub async fn exec(&self, sref: &crate::access::SessionRef, body: ExecBody) -> Result<ExecResult, SessionError> {
        let id = sref.id();
        let Some(program) = body.cmd.first().cloned() else {
            return Err(SessionError::Invalid("cmd must not be empty".into()));
        };
        if let Some(cwd) = &body.cwd {
            if !cwd.starts_with('/') {
                return Err(SessionError::Invalid(format!("cwd must be an absolute path, got {cwd:?}")));
            }
        }
        let timeout = Duration::from_secs(body.timeout_seconds.unwrap_or(self.cfg.exec_timeout_seconds).max(1));
        let (s, vm) = self.ready_vm(id).await?;
        // A running command is a client: the session does not pause under it.
        let _client = self.attach(id);
        let mut env = s.env.clone();
        env.extend(body.env);
        let req = ExecRequest { cmd: body.cmd, env, cwd: body.cwd, timeout_ms: Some(timeout.as_millis() as u64) };
        let run = vm.channel().exec(req, self.cfg.exec_output_limit_bytes);
        let out = match tokio::time::timeout(timeout + EXEC_SLACK, run).await {
            Ok(Ok(out)) => out,
            Ok(Err(ChannelError::Guest { message, .. })) => return Err(SessionError::Exec { command: program, message }),
            Ok(Err(e)) => return Err(channel_error(id, "exec", e)),
            Err(_) => return Err(SessionError::Vm { id: id.into(), what: "exec", source: "the guest did not finish the command".into() }),
        };
        self.touch(id);
        Ok(ExecResult {
            exit_code: out.exit_code,
            signal: out.signal,
            timed_out: out.timed_out,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            truncated: out.truncated,
        })
    }

    /// What `path` is (not following a final symlink).
    pub async fn stat_path(&self, sref: &crate::access::SessionRef, path: &str) -> Result<FileInfo, SessionError> {
        let id = sref.id();
        let (_, vm) = self.ready_vm(id).await?;
        bounded(id, "stat", CALL_TIMEOUT, vm.channel().stat(path)).await
    }

    /// A directory's entries, unsorted.
    pub async fn list_dir(&self, sref: &crate::access::SessionRef, path: &str) -> Result<Vec<FileInfo>, SessionError> {
        let id = sref.id();
        let (_, vm) = self.ready_vm(id).await?;
        bounded(id, "list", CALL_TIMEOUT, vm.channel().list(path)).await
    }

    /// A stream of file-event batches (CTRL `file_events`) under `path`, recursive; dropping it
    /// ends the watch.
    pub async fn watch_path(&self, sref: &crate::access::SessionRef, path: &str) -> Result<mayfly_proto::mux::Stream, SessionError> {
        let id = sref.id();
        let (_, vm) = self.ready_vm(id).await?;
        vm.channel().open(&OpenRequest::WatchFiles { path: path.to_string() }).await.map_err(|e| channel_error(id, "watch", e))
    }

    /// A directory's entries, or a file's content.
    pub async fn read_path(&self, sref: &crate::access::SessionRef, path: &str) -> Result<FileEntry, SessionError> {
        let id = sref.id();
        let (_, vm) = self.ready_vm(id).await?;
        let ch = vm.channel();
        let info = bounded(id, "stat", CALL_TIMEOUT, ch.stat(path)).await?;
        if info.kind == FileType::Dir {
            let mut entries = bounded(id, "list", CALL_TIMEOUT, ch.list(path)).await?;
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            return Ok(FileEntry::Dir(entries));
        }
        let (size, body) = bounded(id, "read_file", CALL_TIMEOUT, ch.read_file(path)).await?;
        Ok(FileEntry::File { size, body })
    }

    /// Writes `src` to `path` (parents created, replaced atomically by the guest).
    pub async fn write_file<R: AsyncRead + Unpin + Send>(&self, sref: &crate::access::SessionRef, path: &str, src: R) -> Result<u64, SessionError> {
        let id = sref.id();
        let (_, vm) = self.ready_vm(id).await?;
        let n = vm.channel().write_file(path, None, src).await.map_err(|e| channel_error(id, "write_file", e))?;
        self.touch(id);
        Ok(n)
    }

    /// Removes a file or a directory tree.
    pub async fn remove_path(&self, sref: &crate::access::SessionRef, path: &str) -> Result<(), SessionError> {
        let id = sref.id();
        let (_, vm) = self.ready_vm(id).await?;
        bounded(id, "remove", CALL_TIMEOUT, vm.channel().remove(path, true)).await
    }

    /// Creates a directory (and its parents).
    pub async fn make_dir(&self, sref: &crate::access::SessionRef, path: &str) -> Result<(), SessionError> {
        let id = sref.id();
        let (_, vm) = self.ready_vm(id).await?;
        bounded(id, "mkdir", CALL_TIMEOUT, vm.channel().mkdir(path)).await
    }

    /// Renames `from` to `to`; refuses to replace an existing `to`.
    pub async fn rename_path(&self, sref: &crate::access::SessionRef, from: &str, to: &str) -> Result<(), SessionError> {
        let id = sref.id();
        let (_, vm) = self.ready_vm(id).await?;
        let ch = vm.channel();
        match bounded(id, "stat", CALL_TIMEOUT, ch.stat(to)).await {
            Ok(_) => return Err(SessionError::Guest { kind: ErrorKind::AlreadyExists, message: format!("{to}: already exists") }),
            Err(SessionError::Guest { kind: ErrorKind::NotFound, .. }) => {}
            Err(e) => return Err(e),
        }
        bounded(id, "rename", CALL_TIMEOUT, ch.rename(from, to)).await
    }

    /// Opens (or re-attaches to) a terminal. Fails early if the guest refuses it.
    pub async fn open_pty(&self, sref: &crate::access::SessionRef, p: PtyParams) -> Result<PtyAttach, SessionError> {
        let id = sref.id();
        let (s, vm) = self.ready_vm(id).await?;
        let req = PtyRequest { terminal: p.terminal, cols: p.cols, rows: p.rows, env: s.env.clone(), ..Default::default() };
        let mut stream = vm.channel().open(&OpenRequest::Pty(req)).await.map_err(|e| channel_error(id, "pty", e))?;
        let first = match tokio::time::timeout(PTY_START_TIMEOUT, stream.recv()).await {
            Err(_) => {
                tracing::warn!(session = id, "terminal did not report its start; attaching anyway");
                None
            }
            Ok(Event::Ctrl(Ctrl::Started { .. })) => None,
            Ok(Event::Ctrl(Ctrl::Error { kind, message })) => return Err(SessionError::Guest { kind, message }),
            Ok(Event::Reset(r)) => {
                return Err(SessionError::Vm { id: id.into(), what: "pty", source: format!("stream reset: {r}").into() })
            }
            Ok(other) => Some(other),
        };
        Ok(PtyAttach { stream, first, activity: self.client_activity(&s) })
    }
}

/// A file's content as a byte stream for an HTTP body; a guest failure mid-way aborts it.
pub fn file_body(rx: StreamReceiver) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        loop {
            match rx.recv().await {
                Event::Data { data, .. } => return Some((Ok(data), Some(rx))),
                Event::Eof => return None,
                Event::Ctrl(Ctrl::Error { message, .. }) => return Some((Err(std::io::Error::other(message)), None)),
                Event::Ctrl(_) => continue,
                Event::Reset(r) => return Some((Err(std::io::Error::other(format!("stream reset: {r}"))), None)),
            }
        }
    })
}
