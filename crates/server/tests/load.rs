//! Bounded load: K workers each create a session, use a terminal (PTY WebSocket) and a preview
//! (a dev server in the VM, reached through the preview proxy), and delete the session with
//! the terminal still open — in a loop for D seconds. Then nothing may be left: no QEMU, run
//! dir, overlay, socket or live store row, and no session may have failed.
//!
//! K = `MAYFLY_LOAD_SESSIONS` (default 20), D = `MAYFLY_LOAD_SECS` (default 45; a worker
//! finishes the round it is in). Figures (sessions/min, create and round latencies) are
//! printed, not asserted: run with `--nocapture` to see them.

use crate::common;

use common::leaks::{assert_nothing_left, live_rows, qemu_pids_in};
use common::*;
use mayfly_proto::api::SessionState;
use mayfly_server::store::{SessionStore, SqliteStore};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Serves /root/index.html on 127.0.0.1:8000 to every request (no shell quoting inside).
const DEV_SERVER: &str = "import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', 8000))
s.listen(16)
while True:
    c, _ = s.accept()
    c.recv(65536)
    body = open('/root/index.html', 'rb').read()
    c.sendall(b'HTTP/1.1 200 OK' + bytes([13, 10]) + b'Content-Length: ' + str(len(body)).encode() + bytes([13, 10]) + b'Connection: close' + bytes([13, 10, 13, 10]) + body)
    c.close()";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Default)]
struct Round {
    create: Duration,
    first_shell: Duration,
    preview: Duration,
    delete: Duration,
}

/// One session's life: create → terminal echo → dev server → preview 200 → delete.
async fn round(server: &TestServer, worker: u64, n: u64) -> Round {
    let mut r = Round::default();
    let t = Instant::now();
    let id = server.ready_session(json!({})).await;
    r.create = t.elapsed();

    let t = Instant::now();
    let mut pty = server.ws(&format!("/api/v1/sessions/{id}/pty?terminal=load")).await;
    type_keys(&mut pty, &format!("echo w{worker}r{n}=$(({worker}*1000+{n}))\r")).await;
    read_until_slow(&mut pty, &format!("w{worker}r{n}={}", worker * 1000 + n)).await;
    r.first_shell = t.elapsed();

    let t = Instant::now();
    let marker = format!("session {id} worker {worker} round {n}");
    // A minimal dev server: `python3 -m http.server` takes minutes to start with 20 VMs
    // sharing 2 cores under TCG; this answers the same way after a fraction of the start-up.
    let start = format!(
        "echo '{marker}' > /root/index.html; setsid python3 -I -S -c \"{DEV_SERVER}\" >/dev/null 2>&1 </dev/null &"
    );
    let (status, out) = server.exec(&id, &["sh", "-c", &start]).await;
    assert_eq!(status, 200, "{out}");
    let url = server.url(&format!("/preview/{id}/8000/index.html"));
    let deadline = Instant::now() + SLOW * 2;
    loop {
        // The bearer token opens private ports on the path fallback.
        let resp = server.http.get(&url).send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        if status == 200 {
            assert_eq!(body.trim(), marker, "the preview reached this session's VM");
            break;
        }
        assert_eq!(status, 502, "only 'not listening yet' while the dev server starts: {body}");
        assert!(Instant::now() < deadline, "{id}: the dev server never answered");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    r.preview = t.elapsed();

    // Delete with the terminal still open: the WebSocket must end, not hang.
    let t = Instant::now();
    assert_eq!(server.delete(&id).await, 204);
    r.delete = t.elapsed();
    tokio::time::timeout(SLOW, read_until_closed(&mut pty)).await.expect("terminal closed after delete");
    assert_eq!(server.get(&format!("/api/v1/sessions/{id}")).await.0, 404);
    r
}

/// Terminal output until `needle`. With K VMs starting on 2 cores a login shell can take
/// longer than the common helper's 60 s, so the hang guard here is longer.
async fn read_until_slow(ws: &mut Ws, needle: &str) {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut out = String::new();
    let deadline = tokio::time::Instant::now() + SLOW * 2;
    while !out.contains(needle) {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => out.push_str(&String::from_utf8_lossy(&b)),
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("terminal closed ({other:?}) before {needle:?}; output: {out:?}"),
            Err(_) => panic!("no {needle:?} in terminal output: {out:?}"),
        }
    }
}

async fn read_until_closed(ws: &mut Ws) {
    use futures::StreamExt;
    while let Some(Ok(_)) = ws.next().await {}
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_in_a_loop_with_terminals_and_previews_leak_nothing() {
    common::alone_in_this_process("load");
    let workers = env_or("MAYFLY_LOAD_SESSIONS", 20);
    let secs = env_or("MAYFLY_LOAD_SECS", 45);
    let baseline = common::leaks::baseline().await;
    let server = Arc::new(
        TestServer::start(|c| {
            c.max_sessions = workers as usize + 4;
            c.pool_size = 2;
        })
        .await,
    );
    // The template first (one cold boot builds it): K cold boots at once on a slow 2-core
    // machine can miss the boot deadline, and the loop measures restores, not first boots.
    let first = server.ready_session(json!({"image": "minimal"})).await;
    assert_eq!(server.delete(&first).await, 204);
    wait_template(&server).await;
    // The most QEMU processes seen at once (sampled), to show the K sessions overlapped.
    let peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (dir, peak) = (server.data_dir.clone(), peak.clone());
        tokio::spawn(async move {
            loop {
                peak.fetch_max(qemu_pids_in(&dir).len(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut rounds = Vec::new();
            let mut n = 0;
            // Every worker does at least one round, so K sessions really run at once.
            while n == 0 || Instant::now() < until {
                rounds.push(round(&server, w, n).await);
                n += 1;
            }
            rounds
        }));
    }
    let mut rounds = Vec::new();
    for t in tasks {
        rounds.extend(t.await.expect("worker finished without a panic"));
    }
    sampler.abort();
    let peak_qemu = peak.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    println!(
        "load: {workers} workers, {} sessions in {:.0} s = {:.1} sessions/min; p50 create {:?}, first shell {:?}, \
         preview {:?}, delete {:?}; QEMU processes seen at once: {peak_qemu}",
        rounds.len(),
        elapsed.as_secs_f64(),
        rounds.len() as f64 * 60.0 / elapsed.as_secs_f64(),
        p50(rounds.iter().map(|r| r.create).collect()),
        p50(rounds.iter().map(|r| r.first_shell).collect()),
        p50(rounds.iter().map(|r| r.preview).collect()),
        p50(rounds.iter().map(|r| r.delete).collect()),
    );

    // While the server still runs: no session is live, only the warm pool's VMs remain.
    let (_, list) = server.get("/api/v1/sessions").await;
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    assert!(live_rows(&server.data_dir).await.is_empty());
    let pool_only: Vec<String> = std::fs::read_dir(server.data_dir.join("vms"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("p-"))
        .collect();
    assert!(pool_only.is_empty(), "run dirs of sessions left: {pool_only:?}");

    let server = Arc::into_inner(server).expect("workers are done");
    let data = server.stop().await;
    assert_nothing_left(data.path(), &baseline).await;
    let store = SqliteStore::open(&data.path().join("sessions.db")).await.unwrap();
    let failed = store.list(&[SessionState::Failed]).await.unwrap();
    assert!(failed.is_empty(), "sessions failed under load: {:?}", failed.iter().map(|r| (&r.id, &r.failure)).collect::<Vec<_>>());
    let destroyed = store.list(&[SessionState::Destroyed]).await.unwrap();
    assert_eq!(destroyed.len(), rounds.len() + 1, "every session created (the rounds' and the first) was destroyed");
}
