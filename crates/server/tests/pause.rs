//! Idle sessions pause and resume transparently (real VMs): a session nobody uses pauses; an
//! exec, a terminal attach, a preview request and an agent run each resume it and work; the
//! guest's clock is right after a long pause; a busy guest with no client is not paused; an
//! attached client (an open events stream, like an IDE page) keeps it running; a paused
//! session is deleted without leaving anything; a paused session stays paused across a restart
//! (adopted, its clock set) and resumes on the next request.

use crate::common;

use common::*;
use mayfly_agent_testing::{call, tools, Reply, ScriptedModel};
use mayfly_agent::ProviderKind;
use serde_json::{json, Value};
use std::time::Duration;

/// The session as the list shows it (a GET of the session itself is activity; the list is not).
async fn session(server: &TestServer, id: &str) -> Value {
    let list = server.get("/api/v1/sessions").await.1;
    list.as_array().unwrap().iter().find(|s| s["id"] == id).cloned().unwrap_or(Value::Null)
}

/// Waits (generously) until the session reports `paused`.
async fn until_paused(server: &TestServer, id: &str) {
    let deadline = tokio::time::Instant::now() + SLOW;
    while session(server, id).await["paused"] != true {
        assert!(tokio::time::Instant::now() < deadline, "{id} never paused: {}", session(server, id).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // QEMU agrees: the guest's CPUs are stopped.
    let qmp = server.run_dir(id).join("qmp.sock");
    let mut q = mayfly_vm::qmp::Qmp::connect(&qmp).await.unwrap();
    assert_eq!(q.execute("query-status", None).await.unwrap()["status"], "paused");
}

fn host_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_pause_and_any_request_resumes_them() {
    let model = ScriptedModel::start(vec![tools(vec![call("shell", json!({"command": "echo agent-ran"}))]), Reply::Text("done".into())]).await;
    let agent = model.config(ProviderKind::Openai);
    let server = TestServer::start(|c| {
        c.pause_idle_seconds = 2;
        c.agent = agent;
    })
    .await;
    let id = server.ready_session(json!({})).await;
    // A dev server for the preview case, started before the first pause.
    let (_, out) = server.exec(&id, &["sh", "-c", "mkdir -p /srv && echo hello-preview > /srv/p.txt && cd /srv && (setsid python3 -m http.server 8000 >/dev/null 2>&1 &)"]).await;
    assert_eq!(out["exit_code"], 0, "{out}");
    let deadline = tokio::time::Instant::now() + SLOW;
    while !server.get(&format!("/api/v1/sessions/{id}/ports")).await.1.as_array().is_some_and(|a| a.iter().any(|p| p["port"] == 8000)) {
        assert!(tokio::time::Instant::now() < deadline, "port 8000 never detected");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 1. exec resumes; the clock was set again (after a pause of at least 5 s).
    until_paused(&server, &id).await;
    tokio::time::sleep(Duration::from_secs(5)).await; // a long pause: the guest clock stands still
    let (status, out) = server.exec(&id, &["date", "+%s"]).await;
    assert_eq!(status, 200, "{out}");
    let guest: i64 = out["stdout"].as_str().unwrap().trim().parse().unwrap();
    assert!((guest - host_now()).abs() <= 2, "guest clock {guest} vs host {} after a resume", host_now());
    assert_eq!(session(&server, &id).await["paused"], false);

    // 2. a terminal attach resumes.
    until_paused(&server, &id).await;
    let mut pty = server.ws(&format!("/api/v1/sessions/{id}/pty?terminal=p1")).await;
    type_keys(&mut pty, "echo term-$((6*7))\r").await;
    read_until(&mut pty, "term-42").await;
    // An attached terminal keeps it running past the idle time.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(session(&server, &id).await["paused"], false, "not paused under an attached terminal");
    drop(pty);

    // 3. a preview request resumes (the dev server answers its first request).
    until_paused(&server, &id).await;
    let r = server.http.get(server.url(&format!("/preview/{id}/8000/p.txt"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello-preview\n");

    // 4. an agent run resumes and works.
    until_paused(&server, &id).await;
    let r = server.http.post(server.url(&format!("/api/v1/sessions/{id}/agent/runs"))).json(&json!({"prompt": "go"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let run: Value = r.json().await.unwrap();
    let deadline = tokio::time::Instant::now() + SLOW;
    loop {
        let got = server.get(&format!("/api/v1/sessions/{id}/agent/runs/{}", run["id"].as_str().unwrap())).await.1;
        if got["status"] == "succeeded" {
            break;
        }
        assert!(got["status"] == "running" && tokio::time::Instant::now() < deadline, "{got}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 5. an open events stream (an IDE page) keeps the session running.
    let mut events = server.ws(&format!("/api/v1/sessions/{id}/events")).await;
    events_until(&mut events, state_is("ready")).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(session(&server, &id).await["paused"], false, "not paused while watched");
    drop(events);

    // 6. a paused session is deleted cleanly.
    until_paused(&server, &id).await;
    let text = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.lines().any(|l| l.starts_with("mayfly_session_resumes_total ") && !l.ends_with(" 0")), "{text}");
    assert_eq!(server.delete(&id).await, 204);
    assert_vm_gone(&server, &id).await;
    let data = server.stop().await;
    common::leaks::assert_no_leftovers(data.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_guest_with_no_client_is_not_paused() {
    let server = TestServer::start(|c| c.pause_idle_seconds = 2).await;
    let id = server.ready_session(json!({})).await;
    let (_, out) = server.exec(&id, &["sh", "-c", "(setsid sh -c 'while :; do :; done' >/dev/null 2>&1 &)"]).await;
    assert_eq!(out["exit_code"], 0, "{out}");
    // Well past the idle time and several pauser passes (every second).
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(session(&server, &id).await["paused"], false, "a busy guest was paused");
    // Once the work is done it pauses.
    server.exec(&id, &["pkill", "-f", "while :"]).await;
    until_paused(&server, &id).await;
    let data = server.stop().await;
    common::leaks::assert_no_leftovers(data.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_session_stays_paused_across_a_restart() {
    let server = TestServer::start(|c| {
        c.pause_idle_seconds = 2;
        c.on_shutdown = mayfly_server::config::OnShutdown::Keep;
    })
    .await;
    let id = server.ready_session(json!({})).await;
    until_paused(&server, &id).await;
    let pid = qemu_pids_for(&id);
    let data = server.stop().await;
    assert_eq!(qemu_pids_for(&id), pid, "the paused VM outlives the server");

    // The next server would not pause it for ten minutes: `paused` can only come from adoption.
    let next = TestServer::start_in(data, |c| c.pause_idle_seconds = 600).await;
    until_paused(&next, &id).await;
    assert_eq!(qemu_pids_for(&id), pid, "the same QEMU");
    tokio::time::sleep(Duration::from_secs(3)).await; // the guest clock stands still meanwhile
    let (status, out) = next.exec(&id, &["date", "+%s"]).await;
    assert_eq!(status, 200, "{out}");
    let guest: i64 = out["stdout"].as_str().unwrap().trim().parse().unwrap();
    assert!((guest - host_now()).abs() <= 2, "guest clock {guest} vs host {} after the resume", host_now());
    assert_eq!(session(&next, &id).await["paused"], false);
    let data = next.stop().await;
    assert!(qemu_pids_for(&id).is_empty(), "on_shutdown = end stopped it");
    common::leaks::assert_no_leftovers(data.path()).await;
}
