//! Stream multiplexer over one reliable byte stream (the VM's virtio-serial port).
//!
//! Both ends run the same code. A [`Mux`] owns a reader task (decodes frames and dispatches them to
//! streams; it never blocks on a stream's consumer) and a writer task (serialises frames from every
//! stream). Each stream has credit-based flow control for DATA: a sender may have at most
//! [`INITIAL_WINDOW`] unacknowledged bytes in flight, the receiver returns credit with WINDOW frames
//! as its consumer reads, so one slow stream never stalls the others and memory stays bounded.
//!
//! Connection life: both ends send HELLO (`ack: false`) on start and answer every HELLO with
//! `ack: false` by a HELLO with `ack: true`. A HELLO with `ack: false` on a live connection means
//! the peer restarted (daemon respawned, host reconnected): every stream is reset. A header that
//! does not decode ends the connection ([`Mux::closed`] resolves); a payload that does not parse
//! only fails its stream.

use crate::frame::{self, Frame, FrameType, MAX_PAYLOAD};
use crate::msg::{Ctrl, ErrorKind, Hello, OpenRequest};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Notify};

/// Called (on the reader task, before the next read) when the peer says HELLO on a live
/// connection, i.e. it restarted without this side having seen it go.
pub type PeerRestartHook = Box<dyn Fn() + Send + Sync>;

/// DATA bytes a sender may have in flight per stream before it waits for WINDOW credit.
pub const INITIAL_WINDOW: u32 = 1024 * 1024;
/// Consumed bytes accumulated before a WINDOW frame is sent back.
const WINDOW_BATCH: u32 = 256 * 1024;
/// Frames queued for the writer before senders wait.
const WRITE_QUEUE: usize = 256;
/// Streams the peer opened that nobody has accepted yet; more OPENs are refused. Together with
/// the receive window this bounds what a hostile peer can make this side buffer.
const ACCEPT_BACKLOG: usize = 64;
/// Open streams per connection; an OPEN beyond it is refused.
const MAX_STREAMS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Host,
    Guest,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Guest => "guest",
        }
    }
}

#[derive(Debug, thiserror::Error, Clone)]
pub enum MuxError {
    #[error("channel closed: {0}")]
    Closed(String),
    #[error("stream reset: {0}")]
    Reset(String),
    #[error("channel handshake failed: {0}")]
    Handshake(String),
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// What a stream's consumer receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Bytes on sub-channel `fd` (0 = stdin/stdout, 1 = stderr).
    Data { fd: u8, data: Bytes },
    Ctrl(Ctrl),
    /// The peer will send no more DATA.
    Eof,
    /// The stream was aborted (by the peer, a bad frame or the connection ending).
    Reset(String),
}

struct StreamSlot {
    tx: mpsc::UnboundedSender<Event>,
    credit: Arc<Credit>,
    /// DATA bytes the peer may still send before it must wait for our WINDOW frames; a peer
    /// that goes below zero ignores flow control and gets its stream reset.
    recv_window: Arc<AtomicI64>,
}

#[derive(Default)]
struct Credit {
    avail: Mutex<i64>,
    notify: Notify,
    dead: AtomicBool,
}

impl Credit {
    fn new(initial: u32) -> Arc<Self> {
        let c = Credit::default();
        *c.avail.lock().expect("credit lock") = initial as i64;
        Arc::new(c)
    }
    fn grant(&self, n: u32) {
        *self.avail.lock().expect("credit lock") += n as i64;
        self.notify.notify_waiters();
    }
    fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

struct Shared {
    role: Role,
    out: mpsc::Sender<Frame>,
    streams: Mutex<HashMap<u32, StreamSlot>>,
    next_id: AtomicU32,
    /// `Some(reason)` once the connection ended.
    closed: watch::Sender<Option<String>>,
    accept_tx: mpsc::Sender<(OpenRequest, Stream)>,
    on_peer_restart: Option<PeerRestartHook>,
}

/// Handle to a live connection. Cheap to clone.
#[derive(Clone)]
pub struct Mux {
    shared: Arc<Shared>,
    accept_rx: Arc<tokio::sync::Mutex<mpsc::Receiver<(OpenRequest, Stream)>>>,
    peer: Hello,
}

impl Mux {
    /// Sends HELLO, waits for the peer's, and starts the reader and writer tasks.
    /// The caller bounds the wait with a timeout.
    pub async fn connect<R, W>(reader: R, writer: W, role: Role) -> Result<Mux, MuxError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        Self::connect_with(reader, writer, role, None).await
    }

    /// [`Mux::connect`], calling `on_peer_restart` whenever the peer says HELLO again on this
    /// connection (just before every stream is reset).
    pub async fn connect_with<R, W>(
        mut reader: R,
        mut writer: W,
        role: Role,
        on_peer_restart: Option<PeerRestartHook>,
    ) -> Result<Mux, MuxError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let hello = |ack| Frame::new(FrameType::Hello, 0, serde_json::to_vec(&own_hello(role, ack)).expect("json"));
        writer.write_all(&hello(false).to_bytes()).await.map_err(|e| MuxError::Handshake(format!("write: {e}")))?;
        writer.flush().await.map_err(|e| MuxError::Handshake(format!("flush: {e}")))?;

        let mut buf = BytesMut::with_capacity(64 * 1024);
        let peer = loop {
            frame::resync_to_hello(&mut buf);
            match frame::decode(&mut buf) {
                Ok(Some(f)) if f.kind == FrameType::Hello => {
                    let peer: Hello = serde_json::from_slice(&f.payload)
                        .map_err(|e| MuxError::Handshake(format!("bad HELLO: {e}")))?;
                    if !peer.ack {
                        writer.write_all(&hello(true).to_bytes()).await.map_err(|e| MuxError::Handshake(e.to_string()))?;
                        writer.flush().await.map_err(|e| MuxError::Handshake(e.to_string()))?;
                    }
                    break peer;
                }
                Ok(Some(_)) => continue,
                Ok(None) => {}
                // Garbage that happened to start like a HELLO: drop a byte and rescan.
                Err(_) => {
                    bytes::Buf::advance(&mut buf, 1);
                    continue;
                }
            }
            let n = reader.read_buf(&mut buf).await.map_err(|e| MuxError::Handshake(format!("read: {e}")))?;
            if n == 0 {
                return Err(MuxError::Handshake("peer closed the channel before HELLO".into()));
            }
        };
        if peer.protocol != crate::PROTOCOL_VERSION {
            return Err(MuxError::Handshake(format!(
                "peer speaks protocol {} (version {}), this side speaks {}",
                peer.protocol,
                peer.version,
                crate::PROTOCOL_VERSION
            )));
        }

        let (out_tx, out_rx) = mpsc::channel(WRITE_QUEUE);
        let (accept_tx, accept_rx) = mpsc::channel(ACCEPT_BACKLOG);
        let (closed, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            role,
            out: out_tx,
            streams: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(match role {
                Role::Host => 1,
                Role::Guest => 2,
            }),
            closed,
            accept_tx,
            on_peer_restart,
        });
        tokio::spawn(write_loop(writer, out_rx, shared.clone()));
        tokio::spawn(read_loop(reader, buf, shared.clone()));
        Ok(Mux { shared, accept_rx: Arc::new(tokio::sync::Mutex::new(accept_rx)), peer })
    }

    /// The peer's HELLO.
    pub fn peer(&self) -> &Hello {
        &self.peer
    }

    /// Opens a stream with `req`.
    pub async fn open(&self, req: &OpenRequest) -> Result<Stream, MuxError> {
        if let Some(reason) = self.shared.closed.borrow().clone() {
            return Err(MuxError::Closed(reason));
        }
        let id = self.shared.next_id.fetch_add(2, Ordering::Relaxed);
        let stream = self.shared.register(id);
        let payload = serde_json::to_vec(req).expect("OpenRequest serialises");
        self.shared.send(Frame::new(FrameType::Open, id, payload)).await?;
        Ok(stream)
    }

    /// Next stream the peer opened. `None` once the connection ended.
    pub async fn accept(&self) -> Option<(OpenRequest, Stream)> {
        let mut rx = self.accept_rx.lock().await;
        tokio::select! {
            s = rx.recv() => s,
            _ = self.closed() => None,
        }
    }

    /// Resolves with the reason once the connection ended.
    pub async fn closed(&self) -> String {
        let mut rx = self.shared.closed.subscribe();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                return "channel dropped".into();
            }
        }
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.borrow().is_some()
    }

    /// Ends the connection: every stream is reset, the tasks stop.
    pub fn close(&self, reason: &str) {
        self.shared.shutdown(reason);
    }

    /// Number of open streams (for metrics and leak tests).
    pub fn stream_count(&self) -> usize {
        self.shared.streams.lock().expect("streams lock").len()
    }
}

fn own_hello(role: Role, ack: bool) -> Hello {
    Hello {
        protocol: crate::PROTOCOL_VERSION,
        version: env!("CARGO_PKG_VERSION").to_string(),
        role: role.name().to_string(),
        ack,
    }
}

impl Shared {
    fn register(self: &Arc<Self>, id: u32) -> Stream {
        let (tx, rx) = mpsc::unbounded_channel();
        let credit = Credit::new(INITIAL_WINDOW);
        let recv_window = Arc::new(AtomicI64::new(INITIAL_WINDOW as i64));
        let slot = StreamSlot { tx, credit: credit.clone(), recv_window: recv_window.clone() };
        self.streams.lock().expect("streams lock").insert(id, slot);
        Stream {
            tx: StreamSender { id, shared: self.clone(), credit: credit.clone() },
            rx: StreamReceiver {
                id,
                shared: self.clone(),
                rx,
                credit,
                recv_window,
                consumed: 0,
                eof_seen: false,
                reset_seen: false,
            },
        }
    }

    async fn send(&self, f: Frame) -> Result<(), MuxError> {
        if let Some(r) = self.closed.borrow().clone() {
            return Err(MuxError::Closed(r));
        }
        self.out.send(f).await.map_err(|_| MuxError::Closed("writer stopped".into()))
    }

    fn send_now(&self, f: Frame) {
        // Used from Drop and the reader: never wait. If the queue is full the frame is delivered
        // by a task; losing it only matters if the connection is already gone.
        if let Err(mpsc::error::TrySendError::Full(f)) = self.out.try_send(f) {
            let out = self.out.clone();
            tokio::spawn(async move {
                let _ = out.send(f).await;
            });
        }
    }

    fn reset_stream(&self, id: u32, reason: &str, tell_peer: bool) {
        if let Some(slot) = self.streams.lock().expect("streams lock").remove(&id) {
            slot.credit.kill();
            let _ = slot.tx.send(Event::Reset(reason.to_string()));
        }
        if tell_peer {
            self.send_now(Frame::new(FrameType::Reset, id, reason.as_bytes().to_vec()));
        }
    }

    fn reset_all(&self, reason: &str) {
        let slots: Vec<_> = self.streams.lock().expect("streams lock").drain().collect();
        for (_, slot) in slots {
            slot.credit.kill();
            let _ = slot.tx.send(Event::Reset(reason.to_string()));
        }
    }

    fn shutdown(&self, reason: &str) {
        let first = self.closed.send_if_modified(|c| {
            if c.is_none() {
                *c = Some(reason.to_string());
                true
            } else {
                false
            }
        });
        if first {
            tracing::debug!(role = self.role.name(), reason, "channel closed");
        }
        self.reset_all(&format!("channel closed: {reason}"));
    }
}

/// Bytes the writer gathers into one write.
const WRITE_BATCH: usize = 256 * 1024;
/// Frames the writer gathers into one write (two slices each: header and payload).
const WRITE_BATCH_FRAMES: usize = 128;

async fn write_loop<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Frame>, shared: Arc<Shared>) {
    let mut frames: Vec<Frame> = Vec::with_capacity(WRITE_BATCH_FRAMES);
    let mut closed = shared.closed.subscribe();
    let vectored = w.is_write_vectored();
    loop {
        let first = tokio::select! {
            f = rx.recv() => f,
            _ = closed.wait_for(|c| c.is_some()) => None,
        };
        let Some(first) = first else { break };
        let mut bytes = first.payload.len();
        frames.push(first);
        // Coalesce whatever else is queued into one write.
        while bytes < WRITE_BATCH && frames.len() < WRITE_BATCH_FRAMES {
            match rx.try_recv() {
                Ok(f) => {
                    bytes += f.payload.len();
                    frames.push(f);
                }
                Err(_) => break,
            }
        }
        // A peer that stops reading must not pin this task (and the connection) after close.
        let written = tokio::select! {
            r = write_frames(&mut w, &frames, vectored) => r,
            _ = closed.wait_for(|c| c.is_some()) => break,
        };
        if let Err(e) = written {
            shared.shutdown(&format!("write failed: {e}"));
            break;
        }
        frames.clear();
    }
}

/// Writes `frames` and flushes. A writer that gathers slices gets headers and payloads as they
/// are (no copy of the payload here); any other gets them encoded into one buffer.
async fn write_frames<W: AsyncWrite + Unpin>(w: &mut W, frames: &[Frame], vectored: bool) -> std::io::Result<()> {
    if !vectored {
        let mut buf = BytesMut::with_capacity(frames.iter().map(|f| frame::HEADER_LEN + f.payload.len()).sum());
        for f in frames {
            f.encode(&mut buf);
        }
        w.write_all(&buf).await?;
        return w.flush().await;
    }
    let headers: Vec<[u8; frame::HEADER_LEN]> = frames.iter().map(Frame::header).collect();
    let mut slices: Vec<std::io::IoSlice<'_>> = Vec::with_capacity(frames.len() * 2);
    for (h, f) in headers.iter().zip(frames) {
        slices.push(std::io::IoSlice::new(h));
        if !f.payload.is_empty() {
            slices.push(std::io::IoSlice::new(&f.payload));
        }
    }
    let mut rest: &mut [std::io::IoSlice<'_>] = &mut slices;
    while !rest.is_empty() {
        let n = w.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        std::io::IoSlice::advance_slices(&mut rest, n);
    }
    w.flush().await
}

async fn read_loop<R: AsyncRead + Unpin>(mut r: R, mut buf: BytesMut, shared: Arc<Shared>) {
    let mut closed = shared.closed.subscribe();
    loop {
        loop {
            match frame::decode(&mut buf) {
                Ok(Some(f)) => dispatch(&shared, f),
                Ok(None) => break,
                Err(e) => {
                    shared.shutdown(&format!("lost frame sync: {e}"));
                    return;
                }
            }
        }
        let n = tokio::select! {
            n = r.read_buf(&mut buf) => n,
            _ = closed.wait_for(|c| c.is_some()) => return,
        };
        match n {
            Ok(0) => {
                shared.shutdown("peer closed the channel");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                shared.shutdown(&format!("read failed: {e}"));
                return;
            }
        }
    }
}

fn dispatch(shared: &Arc<Shared>, f: Frame) {
    let id = f.stream;
    let deliver = |ev: Event| -> bool {
        let streams = shared.streams.lock().expect("streams lock");
        match streams.get(&id) {
            Some(slot) => slot.tx.send(ev).is_ok(),
            None => false,
        }
    };
    match f.kind {
        FrameType::Hello => match serde_json::from_slice::<Hello>(&f.payload) {
            Ok(h) if !h.ack => {
                tracing::info!(peer_role = %h.role, peer_version = %h.version, "peer restarted; resetting streams");
                if let Some(hook) = &shared.on_peer_restart {
                    hook();
                }
                shared.reset_all("peer restarted");
                let ack = serde_json::to_vec(&own_hello(shared.role, true)).expect("json");
                shared.send_now(Frame::new(FrameType::Hello, 0, ack));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("ignoring HELLO that does not parse: {e}"),
        },
        FrameType::Open => {
            let refuse = |msg: String| {
                tracing::warn!(stream = id, "refusing OPEN: {msg}");
                let err = Ctrl::error(ErrorKind::Protocol, msg.clone());
                shared.send_now(Frame::new(FrameType::Ctrl, id, serde_json::to_vec(&err).expect("json")));
                shared.send_now(Frame::new(FrameType::Reset, id, msg.into_bytes()));
            };
            let (in_use, count) = {
                let streams = shared.streams.lock().expect("streams lock");
                (streams.contains_key(&id), streams.len())
            };
            if in_use {
                return refuse(format!("stream {id} is already open"));
            }
            if count >= MAX_STREAMS {
                return refuse(format!("too many open streams ({MAX_STREAMS})"));
            }
            let req = match serde_json::from_slice::<OpenRequest>(&f.payload) {
                Ok(req) => req,
                Err(e) => return refuse(format!("bad OPEN request: {e}")),
            };
            let stream = shared.register(id);
            if let Err(e) = shared.accept_tx.try_send((req, stream)) {
                let full = matches!(e, mpsc::error::TrySendError::Full(_));
                drop(e); // drops the stream: its slot goes and the peer gets a RESET
                if full {
                    tracing::warn!(stream = id, "refusing OPEN: {ACCEPT_BACKLOG} streams wait to be accepted");
                }
            }
        }
        FrameType::Data => {
            let len = f.payload.len() as i64;
            let over = shared
                .streams
                .lock()
                .expect("streams lock")
                .get(&id)
                .is_some_and(|slot| slot.recv_window.fetch_sub(len, Ordering::SeqCst) < len);
            if over {
                shared.reset_stream(id, "peer exceeded the flow-control window", true);
            } else if !deliver(Event::Data { fd: f.flags, data: f.payload }) {
                shared.reset_stream(id, "unknown stream", true);
            }
        }
        FrameType::Ctrl => match serde_json::from_slice::<Ctrl>(&f.payload) {
            Ok(c) => {
                deliver(Event::Ctrl(c));
            }
            Err(e) => shared.reset_stream(id, &format!("bad CTRL message: {e}"), true),
        },
        FrameType::Eof => {
            deliver(Event::Eof);
        }
        FrameType::Reset => {
            let reason = String::from_utf8_lossy(&f.payload).into_owned();
            shared.reset_stream(id, &reason, false);
        }
        FrameType::Window => match f.window_credit() {
            Ok(n) => {
                if let Some(slot) = shared.streams.lock().expect("streams lock").get(&id) {
                    slot.credit.grant(n);
                }
            }
            Err(e) => shared.reset_stream(id, &e.to_string(), true),
        },
    }
}

/// A bidirectional stream. Split it to read and write from different tasks.
pub struct Stream {
    pub tx: StreamSender,
    pub rx: StreamReceiver,
}

impl Stream {
    pub fn split(self) -> (StreamSender, StreamReceiver) {
        (self.tx, self.rx)
    }
    pub fn id(&self) -> u32 {
        self.tx.id
    }
    pub async fn recv(&mut self) -> Event {
        self.rx.recv().await
    }
    pub async fn send_data(&self, fd: u8, data: &[u8]) -> Result<(), MuxError> {
        self.tx.send_data(fd, data).await
    }
    pub async fn send_bytes(&self, fd: u8, data: Bytes) -> Result<(), MuxError> {
        self.tx.send_bytes(fd, data).await
    }
    pub async fn send_ctrl(&self, c: &Ctrl) -> Result<(), MuxError> {
        self.tx.send_ctrl(c).await
    }
    pub async fn send_eof(&self) -> Result<(), MuxError> {
        self.tx.send_eof().await
    }
}

/// Sending half of a stream. Clones share the stream's credit.
#[derive(Clone)]
pub struct StreamSender {
    id: u32,
    shared: Arc<Shared>,
    credit: Arc<Credit>,
}

impl StreamSender {
    /// Sends `data` on sub-channel `fd`, split into frames, waiting for credit as needed.
    pub async fn send_data(&self, fd: u8, data: &[u8]) -> Result<(), MuxError> {
        self.send_bytes(fd, Bytes::copy_from_slice(data)).await
    }

    /// [`send_data`](Self::send_data) for bytes the caller owns: the frames share them, no copy.
    pub async fn send_bytes(&self, fd: u8, mut data: Bytes) -> Result<(), MuxError> {
        while !data.is_empty() {
            let n = self.take_credit(data.len().min(MAX_PAYLOAD)).await?;
            let f = Frame::new(FrameType::Data, self.id, data.split_to(n)).with_flags(fd);
            self.shared.send(f).await?;
        }
        Ok(())
    }

    async fn take_credit(&self, want: usize) -> Result<usize, MuxError> {
        loop {
            let notified = self.credit.notify.notified();
            if self.credit.dead.load(Ordering::SeqCst) {
                return Err(MuxError::Reset("stream closed".into()));
            }
            {
                let mut avail = self.credit.avail.lock().expect("credit lock");
                if *avail > 0 {
                    let n = (*avail as usize).min(want);
                    *avail -= n as i64;
                    return Ok(n);
                }
            }
            notified.await;
        }
    }

    pub async fn send_ctrl(&self, c: &Ctrl) -> Result<(), MuxError> {
        if self.credit.dead.load(Ordering::SeqCst) {
            return Err(MuxError::Reset("stream closed".into()));
        }
        self.shared.send(Frame::new(FrameType::Ctrl, self.id, serde_json::to_vec(c).expect("json"))).await
    }

    /// Half-closes this direction.
    pub async fn send_eof(&self) -> Result<(), MuxError> {
        self.shared.send(Frame::new(FrameType::Eof, self.id, Bytes::new())).await
    }

    /// Aborts the stream on both ends.
    pub fn reset(&self, reason: &str) {
        self.shared.reset_stream(self.id, reason, true);
    }
}

/// Receiving half of a stream. Dropping it before the stream finished resets the stream, which
/// tells the peer to stop (kill the process, close the connection).
pub struct StreamReceiver {
    id: u32,
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Event>,
    /// Identifies this stream's slot: after a peer restart a new stream may reuse the id.
    credit: Arc<Credit>,
    recv_window: Arc<AtomicI64>,
    consumed: u32,
    eof_seen: bool,
    reset_seen: bool,
}

impl StreamReceiver {
    /// Next event. After [`Event::Reset`] every call returns another `Reset`.
    pub async fn recv(&mut self) -> Event {
        let ev = match self.rx.recv().await {
            Some(ev) => ev,
            None => Event::Reset("stream closed".into()),
        };
        match &ev {
            Event::Data { data, .. } => {
                self.consumed += data.len() as u32;
                if self.consumed >= WINDOW_BATCH {
                    self.recv_window.fetch_add(i64::from(self.consumed), Ordering::SeqCst);
                    self.shared.send_now(Frame::window(self.id, self.consumed));
                    self.consumed = 0;
                }
            }
            Event::Eof => self.eof_seen = true,
            Event::Reset(_) => self.reset_seen = true,
            Event::Ctrl(_) => {}
        }
        ev
    }
}

impl Drop for StreamReceiver {
    fn drop(&mut self) {
        // Only this stream's own slot: after a peer restart the id may belong to a new stream.
        let present = self
            .shared
            .streams
            .lock()
            .expect("streams lock")
            .get(&self.id)
            .is_some_and(|slot| Arc::ptr_eq(&slot.credit, &self.credit));
        if present && !self.reset_seen {
            // The consumer is gone: the peer must stop sending. If the peer already finished
            // (EOF), a RESET is still right: it frees the peer's slot for this stream.
            let reason = if self.eof_seen { "done" } else { "receiver dropped" };
            self.shared.reset_stream(self.id, reason, true);
        } else if present {
            self.shared.streams.lock().expect("streams lock").remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests;
