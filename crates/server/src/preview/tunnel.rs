//! A tunnel stream to a port inside the VM as an `AsyncRead + AsyncWrite` byte pipe, for hyper.
//!
//! One task bridges the mux stream to one end of an in-memory duplex pipe; the proxy gets the
//! other end. Half-closes pass through both ways (pipe shutdown → EOF frame; EOF frame → pipe
//! shutdown). A guest reset, or the proxy dropping its end while bytes are still owed, resets
//! the stream (the guest then closes the TCP connection) and ends the pipe. Every chunk that
//! moves counts as session activity, so a long download or an open WebSocket keeps the
//! session alive. Dropping the [`TunnelIo`] ends the bridge at once (the guest may be holding
//! a keep-alive connection open and would otherwise never say goodbye).

use crate::manager::Activity;
use mayfly_proto::mux::{Event, Stream, StreamReceiver, StreamSender};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf, ReadHalf, WriteHalf};
use tokio::sync::oneshot;

/// Bytes buffered in the pipe in each direction (the mux window adds 1 MiB of its own).
const PIPE: usize = 256 * 1024;
const CHUNK: usize = 64 * 1024;
/// How long bytes left in the pipe by a closed proxy end may take to reach the guest.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The proxy's end of a tunnel: a byte pipe to the guest's port.
pub struct TunnelIo {
    inner: DuplexStream,
    /// Dropped with this end: tells the bridge nobody reads any more.
    _alive: oneshot::Sender<()>,
}

impl AsyncRead for TunnelIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TunnelIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Starts the bridge; the returned end is the connection to the guest's port.
pub fn pipe(stream: Stream, activity: Activity) -> TunnelIo {
    let (ours, theirs) = tokio::io::duplex(PIPE);
    let (alive, dropped) = oneshot::channel();
    tokio::spawn(bridge(stream, theirs, activity, dropped));
    TunnelIo { inner: ours, _alive: alive }
}

async fn bridge(stream: Stream, end: DuplexStream, activity: Activity, mut dropped: oneshot::Receiver<()>) {
    // `rx` lives until both directions are done: dropping it resets the stream.
    let (tx, mut rx) = stream.split();
    let (r, w) = tokio::io::split(end);
    let down = guest_to_pipe(&mut rx, w, &activity);
    let up = pipe_to_guest(r, &tx, &activity);
    tokio::pin!(down, up);
    let (mut down_done, mut up_done) = (false, false);
    while !(down_done && up_done) {
        tokio::select! {
            _ = &mut dropped => {
                // Bytes the proxy wrote before it let go still reach the guest.
                if !up_done {
                    let _ = tokio::time::timeout(DRAIN, &mut up).await;
                }
                if !down_done {
                    tx.reset("preview connection closed");
                }
                return;
            }
            ok = &mut down, if !down_done => {
                if !ok {
                    tx.reset("preview connection ended");
                    return;
                }
                down_done = true;
            }
            ok = &mut up, if !up_done => {
                if !ok {
                    tx.reset("preview connection ended");
                    return;
                }
                up_done = true;
            }
        }
    }
}

/// Guest → pipe. False when the stream or the pipe broke.
async fn guest_to_pipe(rx: &mut StreamReceiver, mut w: WriteHalf<DuplexStream>, activity: &Activity) -> bool {
    loop {
        match rx.recv().await {
            Event::Data { data, .. } => {
                activity.touch();
                if w.write_all(&data).await.is_err() {
                    return false;
                }
            }
            Event::Eof => {
                let _ = w.shutdown().await;
                return true;
            }
            Event::Ctrl(_) => {}
            Event::Reset(_) => return false,
        }
    }
}

/// Pipe → guest, then EOF. False when the stream broke.
async fn pipe_to_guest(mut r: ReadHalf<DuplexStream>, tx: &StreamSender, activity: &Activity) -> bool {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return tx.send_eof().await.is_ok(),
            Ok(n) => {
                activity.touch();
                if tx.send_data(0, &buf[..n]).await.is_err() {
                    return false;
                }
            }
        }
    }
}
