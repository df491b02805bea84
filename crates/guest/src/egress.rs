//! The egress proxy inside the VM: the only way out of a guest that has no network device.
//!
//! Programs find it through `http_proxy`/`https_proxy` (set by init for every process). Each
//! client connection sends one HTTP request head:
//!
//! * `CONNECT host:port` (HTTPS, or any TCP through a proxy-aware client) → the daemon opens an
//!   `egress` stream to the host, answers `200` once the host connected, then relays bytes.
//! * `GET http://host[:port]/path` (plain HTTP in absolute form) → same, then forwards the
//!   request rewritten to origin form with `Connection: close` (one request per connection, so
//!   a keep-alive client can never switch hosts behind the policy's back).
//!
//! The host decides: it applies the session's egress policy and answers `connected` or an
//! error, which becomes `403` (policy) or `502` (unreachable) with the host's reason as the body.
//! Nothing here is a security boundary: a root user in the VM can bypass this process and still
//! reach nothing, because the only path out is the host's check.

use crate::tunnel::relay;
use mayfly_proto::msg::{Ctrl, ErrorKind, OpenRequest};
use mayfly_proto::mux::{Event, Mux};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Where the proxy listens inside the VM (see `boot::ENV`).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3128";
/// Longest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// A client gets this long to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// The host gets this long to connect (it has its own, shorter, connect timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The current host connection, if any (set by the connection loop).
pub type HostLink = watch::Receiver<Option<Mux>>;

/// Accepts proxy clients forever.
pub async fn run(listener: TcpListener, host: HostLink) {
    loop {
        match listener.accept().await {
            Ok((sock, _)) => {
                tokio::spawn(serve(sock, host.clone()));
            }
            Err(e) => {
                tracing::warn!("egress proxy accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// A parsed request head: where to connect and what to send first.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// True for CONNECT (answer 200, then raw bytes); false for a forwarded HTTP request.
    pub tunnel: bool,
    /// Bytes to send upstream before relaying (the rewritten request head and any body bytes
    /// that arrived with it).
    pub first: Vec<u8>,
}

async fn serve(mut sock: TcpStream, host: HostLink) {
    let _ = sock.set_nodelay(true);
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut sock)).await {
        Ok(Ok(h)) => h,
        Ok(Err(msg)) => return reply(&mut sock, 400, "Bad Request", &msg).await,
        Err(_) => return reply(&mut sock, 408, "Request Timeout", "no request head within 30 s").await,
    };
    let target = match parse(&head) {
        Ok(t) => t,
        Err(msg) => return reply(&mut sock, 400, "Bad Request", &msg).await,
    };
    let Some(mux) = host.borrow().clone() else {
        return reply(&mut sock, 503, "Service Unavailable", "the VM is not connected to its host right now").await;
    };
    let stream = match mux.open(&OpenRequest::Egress { host: target.host.clone(), port: target.port }).await {
        Ok(s) => s,
        Err(e) => return reply(&mut sock, 503, "Service Unavailable", &format!("host channel: {e}")).await,
    };
    let (tx, mut rx) = stream.split();
    let answer = tokio::time::timeout(CONNECT_TIMEOUT, rx.recv()).await;
    match answer {
        Ok(Event::Ctrl(Ctrl::Connected)) => {}
        Ok(Event::Ctrl(Ctrl::Error { kind: ErrorKind::PermissionDenied, message })) => {
            tracing::info!(host = %target.host, port = target.port, "egress denied: {message}");
            return reply(&mut sock, 403, "Forbidden by Mayfly egress policy", &message).await;
        }
        Ok(Event::Ctrl(Ctrl::Error { message, .. })) => return reply(&mut sock, 502, "Bad Gateway", &message).await,
        Ok(other) => return reply(&mut sock, 502, "Bad Gateway", &format!("unexpected answer from the host: {other:?}")).await,
        Err(_) => return reply(&mut sock, 504, "Gateway Timeout", "the host did not connect within 30 s").await,
    }
    if target.tunnel && sock.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n").await.is_err() {
        tx.reset("proxy client went away");
        return;
    }
    if !target.first.is_empty() && tx.send_data(0, &target.first).await.is_err() {
        return;
    }
    relay(sock, &tx, &mut rx).await;
}

/// Reads up to the end of the request head (`\r\n\r\n`); returns everything read so far.
async fn read_head(sock: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await.map_err(|e| format!("reading the request: {e}"))?;
        if n == 0 {
            return Err("connection closed before the request head ended".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if find_end(&buf).is_some() {
            return Ok(buf);
        }
        if buf.len() > MAX_HEAD {
            return Err(format!("request head longer than {MAX_HEAD} bytes"));
        }
    }
}

fn find_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Parses a proxy request head (and any bytes after it).
pub fn parse(buf: &[u8]) -> Result<Target, String> {
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut req = httparse::Request::new(&mut headers);
    let end = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("incomplete request head".into()),
        Err(e) => return Err(format!("malformed request head: {e}")),
    };
    let (method, target) = (req.method.unwrap_or_default(), req.path.unwrap_or_default());
    let rest = &buf[end..];
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = split_host_port(target, None)?;
        return Ok(Target { host, port, tunnel: true, first: rest.to_vec() });
    }
    let Some(after) = target.strip_prefix("http://") else {
        return Err(format!(
            "expected CONNECT or an absolute http:// URL, got {method} {target} (this is a proxy; https:// goes through CONNECT)"
        ));
    };
    let (authority, path) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, "/"),
    };
    let (host, port) = split_host_port(authority, Some(80))?;
    let mut first = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if matches!(name.as_str(), "connection" | "proxy-connection" | "proxy-authorization" | "keep-alive") {
            continue;
        }
        first.extend_from_slice(h.name.as_bytes());
        first.extend_from_slice(b": ");
        first.extend_from_slice(h.value);
        first.extend_from_slice(b"\r\n");
    }
    first.extend_from_slice(b"Connection: close\r\n\r\n");
    first.extend_from_slice(rest);
    Ok(Target { host, port, tunnel: false, first })
}

/// `host:port`, `[v6]:port`, or (with a default port) just the host.
fn split_host_port(s: &str, default_port: Option<u16>) -> Result<(String, u16), String> {
    let bad = || format!("bad host:port {s:?}");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        (h, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match (port, default_port) {
        (Some(p), _) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
        (None, Some(d)) => d,
        (None, None) => return Err(format!("{s:?} has no port")),
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

async fn reply(sock: &mut TcpStream, code: u16, reason: &str, body: &str) {
    let body = format!("{body}\n");
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nX-Mayfly-Egress: {}\r\n\r\n",
        body.len(),
        if code == 403 { "denied" } else { "error" },
    );
    let _ = sock.write_all(head.as_bytes()).await;
    let _ = sock.write_all(body.as_bytes()).await;
    let _ = sock.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_targets() {
        let t = parse(b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\nHELLO").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.tunnel, t.first.as_slice()), ("pypi.org", 443, true, &b"HELLO"[..]));
        let t = parse(b"CONNECT [2001:db8::1]:8443 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("2001:db8::1", 8443));
        for bad in ["CONNECT pypi.org HTTP/1.1\r\n\r\n", "CONNECT :443 HTTP/1.1\r\n\r\n", "CONNECT a:0 HTTP/1.1\r\n\r\n", "CONNECT a:99999 HTTP/1.1\r\n\r\n"] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn absolute_requests_are_rewritten_to_origin_form() {
        let t = parse(
            b"POST http://git.example:8080/repo.git/info/refs?x=1 HTTP/1.1\r\nHost: git.example:8080\r\nProxy-Connection: keep-alive\r\nConnection: keep-alive\r\nProxy-Authorization: Basic eA==\r\nContent-Length: 4\r\n\r\nbody",
        )
        .unwrap();
        assert_eq!((t.host.as_str(), t.port, t.tunnel), ("git.example", 8080, false));
        let text = String::from_utf8(t.first).unwrap();
        assert_eq!(
            text,
            "POST /repo.git/info/refs?x=1 HTTP/1.1\r\nHost: git.example:8080\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody"
        );
        let t = parse(b"GET http://example.com HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("example.com", 80));
        assert!(String::from_utf8(t.first).unwrap().starts_with("GET / HTTP/1.1\r\n"));
    }

    #[test]
    fn non_proxy_requests_are_refused() {
        for bad in ["GET / HTTP/1.1\r\n\r\n", "GET https://a/ HTTP/1.1\r\n\r\n", "garbage\r\n\r\n"] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
