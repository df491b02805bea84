//! Host side of the guest channel: connects to the VM's virtio-serial socket, runs the
//! multiplexer, and offers typed operations (exec, files, ports, tunnels, PTYs).
//!
//! The connection is re-established on demand: if the multiplexer lost sync or the guest daemon
//! restarted, the next operation reconnects (QEMU keeps the socket listening).

use mayfly_proto::msg::{Ctrl, ErrorKind, ExecRequest, FileInfo, GuestInfo, Identity, OpenRequest};
use mayfly_proto::mux::{Event, Mux, MuxError, Role, Stream, StreamReceiver};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("cannot connect to the guest channel of VM {vm}")]
    Connect {
        vm: String,
        #[source]
        source: std::io::Error,
    },
    #[error("guest daemon of VM {vm} did not answer within {secs} s")]
    Timeout { vm: String, secs: u64 },
    #[error(transparent)]
    Mux(#[from] MuxError),
    #[error("{message}")]
    Guest { kind: ErrorKind, message: String },
    #[error("unexpected reply from guest: {0}")]
    Protocol(String),
}

impl ChannelError {
    pub fn guest_kind(&self) -> Option<ErrorKind> {
        match self {
            ChannelError::Guest { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// Output of a finished command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// True when output beyond the collection limit was dropped.
    pub truncated: bool,
}

/// Handles a stream the guest opened (egress). Called on the runtime; must not block.
pub type Acceptor = std::sync::Arc<dyn Fn(OpenRequest, Stream) + Send + Sync>;

pub struct GuestChannel {
    vm: String,
    path: PathBuf,
    mux: tokio::sync::Mutex<Option<Mux>>,
    handshake_timeout: Duration,
    /// Who takes guest-opened streams; `None` refuses them.
    acceptor: std::sync::Arc<std::sync::Mutex<Option<Acceptor>>>,
}

impl GuestChannel {
    /// A channel that connects lazily; see [`GuestChannel::mux`].
    pub fn new(vm: &str, path: &Path, handshake_timeout: Duration) -> Self {
        Self {
            vm: vm.to_string(),
            path: path.to_path_buf(),
            mux: tokio::sync::Mutex::new(None),
            handshake_timeout,
            acceptor: Default::default(),
        }
    }

    /// Routes the streams the guest opens (on this and every later connection) to `a`.
    pub fn set_acceptor(&self, a: Option<Acceptor>) {
        *self.acceptor.lock().expect("acceptor lock") = a;
    }

    /// The live multiplexer, connecting (or reconnecting) if needed.
    pub async fn mux(&self) -> Result<Mux, ChannelError> {
        let mut guard = self.mux.lock().await;
        if let Some(m) = guard.as_ref() {
            if !m.is_closed() {
                return Ok(m.clone());
            }
            tracing::info!(vm = %self.vm, "guest channel closed; reconnecting");
        }
        let stream = UnixStream::connect(&self.path)
            .await
            .map_err(|source| ChannelError::Connect { vm: self.vm.clone(), source })?;
        let (r, w) = stream.into_split();
        let m = tokio::time::timeout(self.handshake_timeout, Mux::connect(r, w, Role::Host))
            .await
            .map_err(|_| ChannelError::Timeout { vm: self.vm.clone(), secs: self.handshake_timeout.as_secs() })??;
        *guard = Some(m.clone());
        tokio::spawn(accept_loop(self.vm.clone(), m.clone(), self.acceptor.clone()));
        Ok(m)
    }

    /// Connects now (if not connected), so that the guest can open streams before the host's
    /// first request.
    pub async fn connect(&self) -> Result<(), ChannelError> {
        self.mux().await.map(|_| ())
    }

    /// Drops the current connection (the socket is closed; the guest sees the host disconnect).
    pub async fn disconnect(&self) {
        if let Some(m) = self.mux.lock().await.take() {
            m.close("disconnect requested");
        }
    }

    pub async fn open(&self, req: &OpenRequest) -> Result<Stream, ChannelError> {
        Ok(self.mux().await?.open(req).await?)
    }

    /// Sends a one-shot request and returns the guest's reply (its first CTRL message).
    pub async fn call(&self, req: &OpenRequest) -> Result<Ctrl, ChannelError> {
        let mut s = self.open(req).await?;
        loop {
            match s.recv().await {
                Event::Ctrl(Ctrl::Error { kind, message }) => return Err(ChannelError::Guest { kind, message }),
                Event::Ctrl(c) => return Ok(c),
                Event::Data { .. } => continue,
                Event::Eof => return Err(ChannelError::Protocol("stream ended without a reply".into())),
                Event::Reset(r) => return Err(MuxError::Reset(r).into()),
            }
        }
    }

    /// Runs a command to completion, collecting up to `limit` bytes of each output stream.
    pub async fn exec(&self, req: ExecRequest, limit: usize) -> Result<ExecOutput, ChannelError> {
        let mut s = self.open(&OpenRequest::Exec(req)).await?;
        s.send_eof().await?; // no stdin
        let mut out = ExecOutput {
            exit_code: None,
            signal: None,
            timed_out: false,
            stdout: Vec::new(),
            stderr: Vec::new(),
            truncated: false,
        };
        loop {
            match s.recv().await {
                Event::Data { fd, data } => {
                    let buf = if fd == 1 { &mut out.stderr } else { &mut out.stdout };
                    let room = limit.saturating_sub(buf.len());
                    if data.len() > room {
                        out.truncated = true;
                    }
                    buf.extend_from_slice(&data[..data.len().min(room)]);
                }
                Event::Ctrl(Ctrl::Started { .. }) => {}
                Event::Ctrl(Ctrl::Exit { code, signal, timed_out }) => {
                    out.exit_code = code;
                    out.signal = signal;
                    out.timed_out = timed_out;
                }
                Event::Ctrl(Ctrl::Error { kind, message }) => return Err(ChannelError::Guest { kind, message }),
                Event::Ctrl(other) => return Err(ChannelError::Protocol(format!("exec: unexpected {other:?}"))),
                Event::Eof => {
                    if out.exit_code.is_none() && out.signal.is_none() {
                        return Err(ChannelError::Protocol("exec stream ended without an exit status".into()));
                    }
                    return Ok(out);
                }
                Event::Reset(r) => return Err(MuxError::Reset(r).into()),
            }
        }
    }

    pub async fn info(&self) -> Result<GuestInfo, ChannelError> {
        match self.call(&OpenRequest::Info).await? {
            Ctrl::Info(i) => Ok(i),
            other => Err(ChannelError::Protocol(format!("info: unexpected {other:?}"))),
        }
    }

    pub async fn stat(&self, path: &str) -> Result<FileInfo, ChannelError> {
        match self.call(&OpenRequest::Stat { path: path.into() }).await? {
            Ctrl::Stat(i) => Ok(i),
            other => Err(ChannelError::Protocol(format!("stat: unexpected {other:?}"))),
        }
    }

    /// Lists a directory. Large directories arrive as several `List` messages, then EOF.
    pub async fn list(&self, path: &str) -> Result<Vec<FileInfo>, ChannelError> {
        let mut s = self.open(&OpenRequest::List { path: path.into() }).await?;
        let mut all = Vec::new();
        loop {
            match s.recv().await {
                Event::Ctrl(Ctrl::List { entries }) => all.extend(entries),
                Event::Eof => return Ok(all),
                ev => return Err(reply_error(ev)),
            }
        }
    }

    async fn expect_ok(&self, req: OpenRequest) -> Result<(), ChannelError> {
        match self.call(&req).await? {
            Ctrl::Ok => Ok(()),
            other => Err(ChannelError::Protocol(format!("unexpected {other:?}"))),
        }
    }

    pub async fn mkdir(&self, path: &str) -> Result<(), ChannelError> {
        self.expect_ok(OpenRequest::Mkdir { path: path.into() }).await
    }

    pub async fn rename(&self, from: &str, to: &str) -> Result<(), ChannelError> {
        self.expect_ok(OpenRequest::Rename { from: from.into(), to: to.into() }).await
    }

    pub async fn remove(&self, path: &str, recursive: bool) -> Result<(), ChannelError> {
        self.expect_ok(OpenRequest::Remove { path: path.into(), recursive }).await
    }

    pub async fn set_identity(&self, id: Identity) -> Result<(), ChannelError> {
        self.expect_ok(OpenRequest::Identity(id)).await
    }

    /// Starts a spare login shell in the guest and waits for its prompt: the next default
    /// terminal adopts it and shows the prompt at once.
    pub async fn spare_shell(&self, cols: u16, rows: u16) -> Result<(), ChannelError> {
        self.expect_ok(OpenRequest::SpareShell { cols, rows, parked: false }).await
    }

    /// Runs `true` on a private terminal to its end. Under TCG a new QEMU translates each guest
    /// code path the first time it runs; a pool clone does this before hand-over so that the
    /// session's first terminal finds the terminal paths (open, attach, output, exit) warm.
    pub async fn warm_terminal(&self) -> Result<(), ChannelError> {
        let req =
            mayfly_proto::msg::PtyRequest { cols: 80, rows: 24, cmd: Some(vec!["true".into()]), ..Default::default() };
        let mut s = self.open(&OpenRequest::Pty(req)).await?;
        loop {
            match s.recv().await {
                Event::Ctrl(Ctrl::Error { kind, message }) => return Err(ChannelError::Guest { kind, message }),
                Event::Ctrl(_) | Event::Data { .. } => continue,
                Event::Eof => return Ok(()),
                Event::Reset(r) => return Err(MuxError::Reset(r).into()),
            }
        }
    }

    /// Starts a parked login shell (see [`OpenRequest::SpareShell`]) for a template: the first
    /// terminal of every clone adopts it with its start-up already done.
    pub async fn park_shell(&self, cols: u16, rows: u16) -> Result<(), ChannelError> {
        self.expect_ok(OpenRequest::SpareShell { cols, rows, parked: true }).await
    }

    /// Opens a file for streaming: returns its size and the receiver that yields DATA then EOF.
    pub async fn read_file(&self, path: &str) -> Result<(u64, StreamReceiver), ChannelError> {
        let s = self.open(&OpenRequest::ReadFile { path: path.into() }).await?;
        let (_tx, mut rx) = s.split();
        match rx.recv().await {
            Event::Ctrl(Ctrl::File { size, .. }) => Ok((size, rx)),
            Event::Ctrl(Ctrl::Error { kind, message }) => Err(ChannelError::Guest { kind, message }),
            Event::Reset(r) => Err(MuxError::Reset(r).into()),
            other => Err(ChannelError::Protocol(format!("read_file: unexpected {other:?}"))),
        }
    }

    /// Reads a whole file into memory (small files only).
    pub async fn read_to_vec(&self, path: &str) -> Result<Vec<u8>, ChannelError> {
        let (size, mut rx) = self.read_file(path).await?;
        let mut buf = Vec::with_capacity(size.min(64 << 20) as usize);
        loop {
            match rx.recv().await {
                Event::Data { data, .. } => buf.extend_from_slice(&data),
                Event::Eof => return Ok(buf),
                Event::Ctrl(Ctrl::Error { kind, message }) => return Err(ChannelError::Guest { kind, message }),
                Event::Ctrl(_) => {}
                Event::Reset(r) => return Err(MuxError::Reset(r).into()),
            }
        }
    }

    /// Writes a file from `src` (streamed; parents are created; replaced atomically).
    pub async fn write_file<R: AsyncRead + Unpin>(
        &self,
        path: &str,
        mode: Option<u32>,
        mut src: R,
    ) -> Result<u64, ChannelError> {
        let s = self.open(&OpenRequest::WriteFile { path: path.into(), mode }).await?;
        let (tx, mut rx) = s.split();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        // The guest may fail early (bad path): watch for its reply while sending.
        loop {
            let n = tokio::select! {
                biased;
                ev = rx.recv() => return Err(reply_error(ev)),
                n = src.read(&mut buf) => n.map_err(|e| ChannelError::Protocol(format!("reading upload: {e}")))?,
            };
            if n == 0 {
                break;
            }
            if let Err(e) = tx.send_data(0, &buf[..n]).await {
                // The guest stopped taking data (a write failed, e.g. ENOSPC): its reply says
                // why, and is queued before the reset that ended the send.
                return Err(match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                    Ok(ev @ Event::Ctrl(Ctrl::Error { .. })) => reply_error(ev),
                    _ => e.into(),
                });
            }
            total += n as u64;
        }
        tx.send_eof().await?;
        match rx.recv().await {
            Event::Ctrl(Ctrl::Ok) => Ok(total),
            ev => Err(reply_error(ev)),
        }
    }
}

fn reply_error(ev: Event) -> ChannelError {
    match ev {
        Event::Ctrl(Ctrl::Error { kind, message }) => ChannelError::Guest { kind, message },
        Event::Reset(r) => MuxError::Reset(r).into(),
        other => ChannelError::Protocol(format!("unexpected {other:?}")),
    }
}

/// Hands every guest-opened stream of one connection to the current acceptor.
async fn accept_loop(vm: String, mux: Mux, acceptor: std::sync::Arc<std::sync::Mutex<Option<Acceptor>>>) {
    while let Some((req, stream)) = mux.accept().await {
        let a = acceptor.lock().expect("acceptor lock").clone();
        match a {
            Some(a) => a(req, stream),
            None => {
                tracing::debug!(%vm, ?req, "guest-opened stream refused: no acceptor");
                tokio::spawn(async move {
                    let reply = Ctrl::error(ErrorKind::PermissionDenied, "this VM is not assigned to a session");
                    let _ = stream.send_ctrl(&reply).await;
                    let _ = stream.send_eof().await;
                });
            }
        }
    }
}
