//! Preview test helpers: clients for preview hosts (connected to the server's address, whatever
//! the host name), raw HTTP over TCP, dev servers started inside the VM.

use crate::common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const SRV_PY: &str = include_str!("srv.py");

pub fn addr(server: &TestServer) -> SocketAddr {
    server.base.trim_start_matches("http://").parse().unwrap()
}

pub fn port_of(server: &TestServer) -> u16 {
    addr(server).port()
}

/// `<port>-<id>.localhost:<server port>`
pub fn host(server: &TestServer, id: &str, port: u16) -> String {
    format!("{port}-{id}.localhost:{}", port_of(server))
}

/// A client that resolves `hosts` to the server, follows no redirects and sends no token.
pub fn client(server: &TestServer, hosts: &[String]) -> reqwest::Client {
    let mut b = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    for h in hosts {
        let name = h.split(':').next().unwrap().to_string();
        b = b.resolve(&name, addr(server));
    }
    b.build().unwrap()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Starts `cmd` in the background inside the VM (detached, output to `log`).
pub async fn spawn_in_vm(server: &TestServer, id: &str, cmd: &str, log: &str) {
    let (status, out) = server.exec(id, &["sh", "-c", &format!("setsid {cmd} >{log} 2>&1 </dev/null &")]).await;
    assert_eq!((status, out["exit_code"].as_i64()), (200, Some(0)), "{out}");
}

/// Copies the test dev server into the VM.
pub async fn install_srv(server: &TestServer, id: &str) {
    let r = server.http.put(server.url(&format!("/api/v1/sessions/{id}/files?path=/root/srv.py"))).body(SRV_PY).send().await.unwrap();
    assert_eq!(r.status(), 204);
}

/// Waits until `port_opened` for `port` arrives on `events`; returns when it did.
pub async fn wait_port_opened(events: &mut Ws, port: u16) -> (Instant, std::time::SystemTime, Value) {
    let seen = events_until(events, |e| e["type"] == "port_opened" && e["port"]["port"] == port).await;
    (Instant::now(), std::time::SystemTime::now(), seen.last().unwrap().clone())
}

/// The guest clock minus the host clock, in seconds, and the uncertainty of that estimate.
pub async fn clock_offset(server: &TestServer, id: &str) -> (f64, f64) {
    let mut best = (0.0, f64::MAX);
    for _ in 0..3 {
        let before = unix_secs(std::time::SystemTime::now());
        let (_, out) = server.exec(id, &["date", "+%s.%N"]).await;
        let after = unix_secs(std::time::SystemTime::now());
        let guest: f64 = out["stdout"].as_str().unwrap().trim().parse().unwrap();
        let half = (after - before) / 2.0;
        if half < best.1 {
            best = (guest - (before + half), half);
        }
    }
    best
}

pub fn unix_secs(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Writes `raw` on a new connection to the server and reads until it closes (or `limit`).
pub async fn raw_exchange(server: &TestServer, raw: &[u8], limit: Duration) -> String {
    let mut tcp = TcpStream::connect(addr(server)).await.unwrap();
    tcp.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Median of durations in milliseconds.
pub fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

/// GETs `url` until it stops answering 502 (the dev server is up), or panics after 60 s.
pub async fn wait_serving(c: &reqwest::Client, url: &str, token: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut req = c.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        if r.status() != 502 {
            return;
        }
        assert!(Instant::now() < deadline, "{url} still 502");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
