//! Git credentials on demand: git's credential helper (`mayfly-guest credential get`, set in
//! every process's environment by init) asks the daemon over a local socket, the daemon asks the
//! host over the channel, the host answers from the session's tokens for exactly that host.
//! Nothing is written to the VM's disk: each git operation asks again, and once the session
//! ends there is nobody left to answer.
//!
//! Local protocol: one JSON line each way — `{"protocol","host","path"}` then
//! `{"username","password"}` or `{"error"}`.

use crate::egress::HostLink;
use mayfly_proto::msg::{Ctrl, OpenRequest};
use mayfly_proto::mux::Event;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// The daemon's local socket (root only).
pub const SOCKET: &str = "/run/mayfly/credential.sock";
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// Listens on [`SOCKET`] (or `path`), replacing a stale socket file.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
}

pub async fn run(listener: UnixListener, host: HostLink) {
    while let Ok((sock, _)) = listener.accept().await {
        tokio::spawn(serve(sock, host.clone()));
    }
}

async fn serve(sock: UnixStream, host: HostLink) {
    let (r, mut w) = sock.into_split();
    let mut line = String::new();
    if tokio::io::BufReader::new(r.take(64 * 1024)).read_line(&mut line).await.is_err() {
        return;
    }
    let answer = match serde_json::from_str::<Value>(&line) {
        Ok(q) => ask(&q, &host).await.unwrap_or_else(|e| json!({ "error": e })),
        Err(e) => json!({ "error": format!("bad request: {e}") }),
    };
    let _ = w.write_all(format!("{answer}\n").as_bytes()).await;
}

async fn ask(q: &Value, host: &HostLink) -> Result<Value, String> {
    let field = |k: &str| q.get(k).and_then(Value::as_str).map(str::to_string);
    let req = OpenRequest::Credential {
        protocol: field("protocol").unwrap_or_default(),
        host: field("host").ok_or("no host in the request")?,
        path: field("path"),
    };
    let mux = host.borrow().clone().ok_or("the VM is not connected to its host right now")?;
    let mut s = mux.open(&req).await.map_err(|e| format!("host channel: {e}"))?;
    match tokio::time::timeout(ANSWER_TIMEOUT, s.recv()).await {
        Ok(Event::Ctrl(Ctrl::Credential { username, password })) => Ok(json!({ "username": username, "password": password })),
        Ok(Event::Ctrl(Ctrl::Error { message, .. })) => Err(message),
        Ok(_) => Err("unexpected answer from the host".into()),
        Err(_) => Err("the host did not answer".into()),
    }
}

/// `mayfly-guest credential <get|store|erase>`: git's side. Only `get` does anything; git's
/// attempts to store or erase are no-ops (there is nothing stored).
pub fn helper(action: &str, socket: &Path) -> std::io::Result<()> {
    let mut fields = serde_json::Map::new();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once('=') {
            fields.insert(k.to_string(), Value::String(v.to_string()));
        }
    }
    if action != "get" {
        return Ok(());
    }
    let host = fields.get("host").and_then(Value::as_str).unwrap_or("?").to_string();
    match ask_daemon(socket, fields) {
        Ok(a) => match (a["username"].as_str(), a["password"].as_str()) {
            (Some(u), Some(p)) => println!("username={u}\npassword={p}"),
            _ => eprintln!("mayfly: no git credential for {host}: {}", a["error"].as_str().unwrap_or("no answer")),
        },
        Err(e) => eprintln!("mayfly: cannot ask for a git credential for {host}: {e}"),
    }
    Ok(())
}

/// One question to the daemon on `socket` (blocking): the request's fields, then its answer.
pub fn ask_daemon(socket: &Path, fields: serde_json::Map<String, Value>) -> std::io::Result<Value> {
    let mut sock = std::os::unix::net::UnixStream::connect(socket)?;
    sock.set_read_timeout(Some(ANSWER_TIMEOUT + Duration::from_secs(5)))?;
    sock.write_all(format!("{}\n", Value::Object(fields)).as_bytes())?;
    let mut line = String::new();
    BufReader::new(sock).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(std::io::Error::other)
}
