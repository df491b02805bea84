//! Agent test helpers: start a run, follow its events, read the VM.

use crate::common::*;
use serde_json::{json, Value};
use std::time::Duration;

pub const KEY: &str = "sk-test-secret-key";

/// `POST .../agent/runs` → (status, body).
pub async fn start_run(server: &TestServer, id: &str, prompt: &str) -> (u16, Value) {
    let r = server.http.post(server.url(&format!("/api/v1/sessions/{id}/agent/runs"))).json(&json!({"prompt": prompt})).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Starts a run that must be accepted; returns its id.
pub async fn run_id(server: &TestServer, id: &str, prompt: &str) -> String {
    let (status, run) = start_run(server, id, prompt).await;
    assert_eq!(status, 201, "{run}");
    assert_eq!(run["status"], "running", "{run}");
    run["id"].as_str().unwrap().to_string()
}

/// Reads agent events of `run` until its final `agent_status`; returns them all.
pub async fn until_done(events: &mut Ws, run: &str) -> Vec<Value> {
    events_until(events, |e| e["type"] == "agent_status" && e["run"] == run && e["status"] != "running").await
}

/// Reads events until one matches `pred`.
pub async fn until(events: &mut Ws, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    events_until(events, pred).await
}

/// Polls `GET .../agent/runs/{run}` until it is no longer running.
pub async fn final_run(server: &TestServer, id: &str, run: &str) -> Value {
    for _ in 0..600 {
        let (status, r) = server.get(&format!("/api/v1/sessions/{id}/agent/runs/{run}")).await;
        assert_eq!(status, 200, "{r}");
        if r["status"] != "running" {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("run {run} never ended");
}

/// `sh -c script` in the VM → (exit code, stdout).
pub async fn sh(server: &TestServer, id: &str, script: &str) -> (i64, String) {
    let (status, out) = server.exec(id, &["sh", "-c", script]).await;
    assert_eq!(status, 200, "{out}");
    (out["exit_code"].as_i64().unwrap_or(-1), out["stdout"].as_str().unwrap_or_default().to_string())
}

/// A GET through the real preview proxy (preview host, API token) → (status, body).
pub async fn preview_get(server: &TestServer, id: &str, port: u16, path: &str) -> (u16, String) {
    let addr: std::net::SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let name = format!("{port}-{id}.localhost");
    let c = reqwest::Client::builder().resolve(&name, addr).build().unwrap();
    let r = c.get(format!("http://{name}:{}{path}", addr.port())).bearer_auth(TOKEN).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// No process in the VM has the model API key in its environment or command line.
pub async fn assert_key_not_in_vm(server: &TestServer, id: &str) {
    // `[y]`: the pattern must not match this very command line.
    let pattern = format!("{}[{}]", &KEY[..KEY.len() - 1], &KEY[KEY.len() - 1..]);
    let script = format!("cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n' | grep -c '{pattern}'; grep -rl '{pattern}' /root /tmp 2>/dev/null; true");
    let (_, out) = sh(server, id, &script).await;
    assert_eq!(out.trim(), "0", "the API key reached the VM: {out}");
}
