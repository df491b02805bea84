//! `tunnel` streams: one TCP connection to a port inside the guest (preview proxy, port forward).
//!
//! Dials `127.0.0.1:PORT`, then `[::1]:PORT` if that is refused (servers bound to `::1` only).
//! CTRL `connected`, then bytes both ways; host EOF half-closes the socket, socket EOF sends EOF.
//! The stream ends once both directions finished, or at once on a reset.

use crate::serve::finish;
use mayfly_proto::msg::{Ctrl, ErrorKind};
use mayfly_proto::mux::{Event, Stream, StreamReceiver, StreamSender};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const CHUNK: usize = 256 * 1024;

async fn dial(port: u16) -> Result<TcpStream, Ctrl> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let first = match TcpStream::connect(v4).await {
        Ok(s) => return Ok(s),
        Err(e) => e,
    };
    if first.kind() != io::ErrorKind::ConnectionRefused {
        return Err(Ctrl::io_error(&v4.to_string(), &first));
    }
    match TcpStream::connect(SocketAddr::from((Ipv6Addr::LOCALHOST, port))).await {
        Ok(s) => Ok(s),
        Err(_) => Err(Ctrl::error(ErrorKind::ConnectionRefused, format!("nothing listens on port {port}"))),
    }
}

pub async fn serve(port: u16, stream: Stream) {
    // `rx` must live until the end: dropping a receiver resets the whole stream.
    let (tx, mut rx) = stream.split();
    let sock = match dial(port).await {
        Ok(s) => s,
        Err(reply) => return finish(&tx, &reply).await,
    };
    let _ = sock.set_nodelay(true);
    if tx.send_ctrl(&Ctrl::Connected).await.is_err() {
        return;
    }
    relay(sock, &tx, &mut rx).await;
}

/// Bytes both ways between `sock` (TCP, or the agent's Unix socket) and the stream until both
/// directions finished (or a reset).
pub(crate) async fn relay<S: AsyncRead + AsyncWrite + Send>(sock: S, tx: &StreamSender, rx: &mut StreamReceiver) {
    let (sr, sw) = tokio::io::split(sock);
    let up = host_to_socket(rx, sw);
    let down = socket_to_host(sr, tx);
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        tokio::select! {
            reset = &mut up, if !up_done => {
                if reset {
                    return;
                }
                up_done = true;
            }
            () = &mut down, if !down_done => down_done = true,
        }
    }
}

/// Host → socket. Returns true when the stream was reset (stop everything).
async fn host_to_socket<W: AsyncWrite>(rx: &mut StreamReceiver, sw: W) -> bool {
    tokio::pin!(sw);
    loop {
        match rx.recv().await {
            Event::Data { data, .. } => {
                if sw.write_all(&data).await.is_err() {
                    return drain_until_end(rx).await;
                }
            }
            Event::Eof => {
                let _ = sw.shutdown().await;
                return false;
            }
            Event::Ctrl(_) => {}
            Event::Reset(_) => return true,
        }
    }
}

/// The socket no longer takes bytes: discard the host's until it finishes. True on reset.
async fn drain_until_end(rx: &mut StreamReceiver) -> bool {
    loop {
        match rx.recv().await {
            Event::Eof => return false,
            Event::Reset(_) => return true,
            _ => {}
        }
    }
}

/// Socket → host, then EOF. A read error ends the host's direction the same way.
async fn socket_to_host<R: AsyncRead>(sr: R, tx: &StreamSender) {
    tokio::pin!(sr);
    // Read into owned buffers the frames share: no copy between the socket and the port.
    let mut buf = bytes::BytesMut::new();
    loop {
        buf.reserve(CHUNK);
        match sr.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if tx.send_bytes(0, buf.split().freeze()).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = tx.send_eof().await;
}
