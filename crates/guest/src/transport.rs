//! Byte transports the daemon serves the host channel over.
//!
//! * [`Port`] — the virtio-serial port inside the VM (`/dev/vportNpM`, found by its name in
//!   `/sys/class/virtio-ports/*/name`). The port is opened once and kept for the life of the
//!   daemon; each host connection gets a fresh reader/writer pair from [`Port::connection`].
//! * A Unix socket listener (`--unix-listen`), one connection at a time; used by tests on the host.
//!
//! How the port reports the host (measured, and per `drivers/char/virtio_console.c`): `read()`
//! returns 0 while the host side is not connected, blocks (or `EAGAIN`) while connected with no
//! data; `write()` cannot proceed while the host is away. So the port is driven by two plain
//! threads on a non-blocking fd, bridged to tokio:
//!
//! * the reader thread forwards bytes, and one `Hangup` per disconnect episode; while the host is
//!   away it re-polls ([`away_poll`]: every 10 ms at first, slowing to every 250 ms after 2.5 s);
//! * the writer thread performs writes in order and waits (same pacing) while the host is away.
//!
//! `poll()` cannot wait for the host: the port reports `POLLHUP` at once while it is away. So the
//! away-pacing is a sleep, and it backs off because a 10 ms re-poll kept a disconnected guest
//! (e.g. all VMs while the control plane restarts) waking 100 times a second, ≈ 4 % of a host
//! CPU per VM under TCG. A reconnect is noticed within a tenth of the time the host was away
//! (≤ 250 ms); short episodes (a clone's host connecting right after restore) keep 10 ms.
//!
//! A connection has a generation number. Its reader returns EOF on a `Hangup` only after it saw
//! bytes from the host (so a fresh connection waiting for the host's HELLO ignores the hangup that
//! is still in effect). Starting a new connection bumps the generation: every reader and writer of
//! the old one fails from then on, and a write the old connection left waiting for the host is
//! abandoned instead of landing in the middle of the new conversation.
//!
//! This module does not know about frames; [`mayfly_proto::mux::Mux`] does.

use bytes::{Buf, Bytes};
use mayfly_proto::mux::PeerRestartHook;
use std::fs::File;
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

/// Where virtio-serial ports are listed, one directory per port with a `name` file.
pub const VIRTIO_PORTS_DIR: &str = "/sys/class/virtio-ports";
/// How often to look for the port while it has not appeared yet.
const APPEAR_POLL: Duration = Duration::from_millis(20);
/// Pause between reads (or write attempts) while the host side has just gone.
const HOST_AWAY_POLL: Duration = Duration::from_millis(10);
/// Longest pause between reads while the host is away.
const HOST_AWAY_POLL_MAX: Duration = Duration::from_millis(250);
/// Largest chunk handed to the writer thread per `poll_write`.
const MAX_WRITE: usize = 256 * 1024;
/// Read chunk of the reader thread.
const READ_CHUNK: usize = 64 * 1024;
/// Chunks buffered between the reader thread and the connection.
const READ_QUEUE: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot open virtio port {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen on {path}")]
    Listen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("accept failed")]
    Accept(#[source] io::Error),
}

pub type BoxRead = Box<dyn AsyncRead + Unpin + Send>;
pub type BoxWrite = Box<dyn AsyncWrite + Unpin + Send>;

/// One host connection: its bytes, and what the multiplexer calls when the host says HELLO again
/// on it ([`Mux::connect_with`](mayfly_proto::mux::Mux::connect_with)).
pub struct Connection {
    pub read: BoxRead,
    pub write: BoxWrite,
    pub on_peer_restart: Option<PeerRestartHook>,
}

/// Source of host connections.
pub enum Listener {
    Port(Port),
    Unix(UnixListener),
}

impl Listener {
    /// Binds a Unix socket at `path`, replacing a stale socket file.
    pub fn unix(path: &Path) -> Result<Self, TransportError> {
        let _ = std::fs::remove_file(path);
        let l = UnixListener::bind(path).map_err(|source| TransportError::Listen { path: path.into(), source })?;
        Ok(Listener::Unix(l))
    }

    /// The next host connection.
    pub async fn next(&mut self) -> Result<Connection, TransportError> {
        match self {
            Listener::Port(p) => {
                let (r, w) = p.connection();
                let hook = r.peer_restart_hook();
                Ok(Connection { read: Box::new(r), write: Box::new(w), on_peer_restart: Some(hook) })
            }
            Listener::Unix(l) => {
                let (s, _) = l.accept().await.map_err(TransportError::Accept)?;
                let (r, w) = s.into_split();
                Ok(Connection { read: Box::new(r), write: Box::new(w), on_peer_restart: None })
            }
        }
    }

    /// How long a connection may take to say HELLO. The port waits for the host forever; a
    /// silent socket client must not block the next one.
    pub fn handshake_timeout(&self) -> Option<Duration> {
        match self {
            Listener::Port(_) => None,
            Listener::Unix(_) => Some(Duration::from_secs(30)),
        }
    }
}

/// Finds the device node of the virtio-serial port called `name` under `ports_dir`.
pub fn find_port(ports_dir: &Path, name: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(ports_dir).ok()?;
    for entry in entries.flatten() {
        let Ok(n) = std::fs::read_to_string(entry.path().join("name")) else { continue };
        if n.trim_end_matches(['\n', '\0']) == name {
            return Some(Path::new("/dev").join(entry.file_name()));
        }
    }
    None
}

enum PortEvent {
    Data(Bytes),
    /// `read()` returned 0: the host side went away.
    Hangup,
}

struct WriteReq {
    generation: u64,
    data: Bytes,
    done: oneshot::Sender<io::Result<()>>,
}

struct PortShared {
    generation: Arc<AtomicU64>,
    rx: Mutex<mpsc::Receiver<PortEvent>>,
    writes: std_mpsc::Sender<WriteReq>,
}

/// The virtio-serial port, open for the life of the daemon.
pub struct Port {
    shared: Arc<PortShared>,
}

impl Port {
    /// Waits (forever) for the port called `name` to appear, opens it and starts its threads.
    pub async fn open(name: &str) -> Result<Port, TransportError> {
        let mut logged = false;
        loop {
            if let Some(path) = find_port(Path::new(VIRTIO_PORTS_DIR), name) {
                match std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK).open(&path) {
                    Ok(f) => {
                        tracing::info!(port = name, path = %path.display(), "virtio port open");
                        return Ok(Port::start(f));
                    }
                    // Not created by devtmpfs yet, or still held by a dying predecessor.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EBUSY)) => {}
                    Err(source) => return Err(TransportError::Open { path, source }),
                }
            }
            if !logged {
                tracing::info!(port = name, "waiting for the virtio port to appear");
                logged = true;
            }
            tokio::time::sleep(APPEAR_POLL).await;
        }
    }

    /// Drives an already open non-blocking port-like file.
    fn start(file: File) -> Port {
        let file = Arc::new(file);
        let generation = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel(READ_QUEUE);
        let (wtx, wrx) = std_mpsc::channel();
        let f = file.clone();
        std::thread::Builder::new()
            .name("port-read".into())
            .spawn(move || read_thread(&f, &tx))
            .expect("spawn port reader thread");
        let g = generation.clone();
        std::thread::Builder::new()
            .name("port-write".into())
            .spawn(move || write_thread(&file, &wrx, &g))
            .expect("spawn port writer thread");
        Port { shared: Arc::new(PortShared { generation, rx: Mutex::new(rx), writes: wtx }) }
    }

    /// Starts a new connection; the previous one (if any) is dead from now on.
    pub fn connection(&self) -> (PortReader, PortWriter) {
        let generation = self.shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
        (
            PortReader {
                shared: self.shared.clone(),
                generation,
                seen_host: false,
                stale_hangup: Arc::new(AtomicBool::new(false)),
                eof: false,
                pending: Bytes::new(),
            },
            PortWriter { shared: self.shared.clone(), generation, inflight: None },
        )
    }
}

/// Waits until `fd` is ready for `events` or `timeout` passes; returns the reported events.
fn wait_fd(file: &File, events: nix::poll::PollFlags, timeout: Duration) -> nix::poll::PollFlags {
    use nix::poll::{poll, PollFd, PollTimeout};
    let mut fds = [PollFd::new(file.as_fd(), events)];
    let ms = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, ms) {
        Ok(n) if n > 0 => fds[0].revents().unwrap_or(nix::poll::PollFlags::empty()),
        _ => nix::poll::PollFlags::empty(),
    }
}

/// Pause before the next look for the host after it has been away for `away`: a tenth of that,
/// between [`HOST_AWAY_POLL`] and [`HOST_AWAY_POLL_MAX`].
pub fn away_poll(away: Duration) -> Duration {
    (away / 10).clamp(HOST_AWAY_POLL, HOST_AWAY_POLL_MAX)
}

/// Sleeps the away-pacing for an episode that started at `*since` (now, if it had not started).
fn pause_while_away(since: &mut Option<Instant>) {
    let start = *since.get_or_insert_with(Instant::now);
    std::thread::sleep(away_poll(start.elapsed()));
}

fn read_thread(file: &File, tx: &mpsc::Sender<PortEvent>) {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut hung_up = false;
    let mut away_since = None;
    let mut error_logged = false;
    loop {
        let event = match (&*file).read(&mut buf) {
            Ok(0) => {
                pause_while_away(&mut away_since);
                if hung_up {
                    continue;
                }
                hung_up = true;
                PortEvent::Hangup
            }
            Ok(n) => {
                hung_up = false;
                away_since = None;
                error_logged = false;
                PortEvent::Data(Bytes::copy_from_slice(&buf[..n]))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Connected, nothing to read: the host is back (a later hangup is a new episode).
                away_since = None;
                wait_fd(file, nix::poll::PollFlags::POLLIN, Duration::from_secs(1));
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if !error_logged {
                    tracing::warn!("virtio port read failed: {e}");
                    error_logged = true;
                }
                std::thread::sleep(Duration::from_millis(100));
                if hung_up {
                    continue;
                }
                hung_up = true;
                PortEvent::Hangup
            }
        };
        if tx.blocking_send(event).is_err() {
            return;
        }
    }
}

fn write_thread(file: &File, rx: &std_mpsc::Receiver<WriteReq>, generation: &AtomicU64) {
    while let Ok(req) = rx.recv() {
        let stale = || generation.load(Ordering::SeqCst) != req.generation;
        let res = write_all(file, &req.data, stale);
        let _ = req.done.send(res);
    }
}

fn stale_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "host connection replaced")
}

/// Writes all of `data`, waiting while the host is away, giving up once `stale()` is true.
///
/// The port takes at most 32 KiB per `write()` (`port_fops_write`). Splicing a 1 MiB pipe into
/// it instead was measured no faster (QEMU hands each 4 KiB page of a spliced buffer to the host
/// socket separately), so plain writes it is.
fn write_all(file: &File, mut data: &[u8], stale: impl Fn() -> bool) -> io::Result<()> {
    use nix::poll::PollFlags;
    let mut away_since = None;
    while !data.is_empty() {
        if stale() {
            return Err(stale_error());
        }
        match (&*file).write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let ev = wait_fd(file, PollFlags::POLLOUT, Duration::from_millis(100));
                if !ev.contains(PollFlags::POLLOUT) && ev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                    // Host not connected: poll reports HUP at once, so pace the retries.
                    pause_while_away(&mut away_since);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Read half of one connection over the port.
pub struct PortReader {
    shared: Arc<PortShared>,
    generation: u64,
    /// True once this connection received bytes, i.e. a host is (or was) on the other end.
    seen_host: bool,
    /// The host said HELLO again on this connection, so the hangup of the host it replaced is
    /// still to come (see [`PortReader::peer_restart_hook`]) and must not end the connection.
    stale_hangup: Arc<AtomicBool>,
    eof: bool,
    pending: Bytes,
}

impl PortReader {
    /// For the multiplexer: the host said HELLO again on this live connection.
    ///
    /// A new host can be talking before this guest has seen the old one go: virtio-console
    /// reports the port's close and open on its control queue, which the guest handles in a
    /// work item, while the new host's first bytes arrive on the data queue and wake the reader
    /// at once. (A clone restored from a template meets this every time the template's guest had
    /// not yet handled its host's disconnect when it was snapshotted.) The hangup read after that
    /// HELLO is the old host's: ending the connection on it would make the guest say HELLO to
    /// the new host a second time, which resets every stream the new host opened meanwhile. So
    /// the next hangup is ignored; a host that really left is replaced by one that says HELLO,
    /// which resets the streams of this connection anyway.
    pub fn peer_restart_hook(&self) -> PeerRestartHook {
        let flag = self.stale_hangup.clone();
        Box::new(move || flag.store(true, Ordering::SeqCst))
    }
}

impl AsyncRead for PortReader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.shared.generation.load(Ordering::SeqCst) != this.generation {
                return Poll::Ready(Err(stale_error()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            let event = {
                let mut rx = this.shared.rx.lock().expect("port rx lock");
                ready!(rx.poll_recv(cx))
            };
            match event {
                Some(PortEvent::Data(b)) => {
                    this.seen_host = true;
                    this.pending = b;
                }
                Some(PortEvent::Hangup) if this.stale_hangup.swap(false, Ordering::SeqCst) => {
                    tracing::info!("ignoring the hangup of the host that was already replaced on this connection");
                }
                Some(PortEvent::Hangup) if this.seen_host => {
                    this.eof = true;
                    return Poll::Ready(Ok(()));
                }
                // The host is still away from an earlier episode: keep waiting for its HELLO.
                Some(PortEvent::Hangup) => {}
                None => return Poll::Ready(Err(io::Error::other("port reader thread stopped"))),
            }
        }
    }
}

/// Write half of one connection over the port. One write is in flight at a time; `flush` waits
/// until the writer thread has put it on the port.
pub struct PortWriter {
    shared: Arc<PortShared>,
    generation: u64,
    inflight: Option<oneshot::Receiver<io::Result<()>>>,
}

impl PortWriter {
    fn poll_inflight(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(rx) = &mut self.inflight {
            let res = ready!(Pin::new(rx).poll(cx));
            self.inflight = None;
            match res {
                Ok(r) => r?,
                Err(_) => return Poll::Ready(Err(io::Error::other("port writer thread stopped"))),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Hands `data` to the writer thread; the caller has checked the generation and that no
    /// write is in flight.
    fn submit(&mut self, data: Bytes) -> Poll<io::Result<usize>> {
        let n = data.len();
        let (done, rx) = oneshot::channel();
        let req = WriteReq { generation: self.generation, data, done };
        if self.shared.writes.send(req).is_err() {
            return Poll::Ready(Err(io::Error::other("port writer thread stopped")));
        }
        self.inflight = Some(rx);
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for PortWriter {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_inflight(cx))?;
        if this.shared.generation.load(Ordering::SeqCst) != this.generation {
            return Poll::Ready(Err(stale_error()));
        }
        let n = buf.len().min(MAX_WRITE);
        this.submit(Bytes::copy_from_slice(&buf[..n]))
    }

    /// Gathers the slices (up to [`MAX_WRITE`]) into one write: the mux hands over headers and
    /// payloads separately, and this copy is the only one between them and the port.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_inflight(cx))?;
        if this.shared.generation.load(Ordering::SeqCst) != this.generation {
            return Poll::Ready(Err(stale_error()));
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut data = bytes::BytesMut::with_capacity(total.min(MAX_WRITE));
        for b in bufs {
            let room = MAX_WRITE - data.len();
            if room == 0 {
                break;
            }
            data.extend_from_slice(&b[..b.len().min(room)]);
        }
        this.submit(data.freeze())
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_inflight(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_inflight(cx)
    }
}

#[cfg(test)]
mod tests;
