//! Warm pool: clones of the image's template wait unclaimed; a create is a hand-over with the
//! session's own identity; the pool refills; shutdown drains it and leaves no process behind.

use crate::common;

use common::TestServer;
use serde_json::{json, Value};
use std::time::Duration;

async fn pool_of(server: &TestServer, image: &str) -> Value {
    let (status, body) = server.get("/api/v1/pool").await;
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().iter().find(|p| p["image"] == image).cloned().unwrap_or(Value::Null)
}

async fn wait_ready_count(server: &TestServer, want: u64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        let p = pool_of(server, "minimal").await;
        if p["ready"].as_u64() == Some(want) {
            return p;
        }
        assert!(tokio::time::Instant::now() < deadline, "pool never reached {want}: {p}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn pool_vm_dirs(server: &TestServer) -> Vec<String> {
    std::fs::read_dir(server.data_dir.join("vms"))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("p-")).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_hands_over_refills_and_drains() {
    let server = TestServer::start(|c| c.pool_size = 2).await;
    let p = wait_ready_count(&server, 2).await;
    assert_eq!(p["template"], true, "{p}");
    assert_eq!(p["target"], 2);
    let pooled_before = pool_vm_dirs(&server);
    assert_eq!(pooled_before.len(), 2, "{pooled_before:?}");

    let a = server.ready_session(json!({})).await;
    let b = server.ready_session(json!({})).await;
    let p = pool_of(&server, "minimal").await;
    assert_eq!(p["hits"], 2, "both creates were hand-overs: {p}");

    // Each handed-over clone carries its session's identity, not the pool's or the template's.
    for id in [&a, &b] {
        let (status, out) = server.exec(id, &["sh", "-c", "hostname; cat /etc/hostname; cat /etc/machine-id"]).await;
        assert_eq!(status, 200, "{out}");
        let text = out["stdout"].as_str().unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[..2], [id.as_str(), id.as_str()], "the name and /etc/hostname: {text}");
        assert_eq!(lines[2].len(), 32, "a machine id: {text}");
    }
    // Those files live on tmpfs (bind mounts over the image's copies): a clone's identity does
    // not write to its disk.
    let (_, out) = server.exec(&a, &["sh", "-c", "grep -E ' /etc/(hostname|machine-id) ' /proc/self/mountinfo | grep -c tmpfs"]).await;
    assert_eq!(out["stdout"], "2\n", "{out}");
    let (_, ma) = server.exec(&a, &["cat", "/etc/machine-id"]).await;
    let (_, mb) = server.exec(&b, &["cat", "/etc/machine-id"]).await;
    assert_ne!(ma["stdout"], mb["stdout"]);
    // Files are private to each clone.
    server.exec(&a, &["sh", "-c", "echo mine > /root/a-only"]).await;
    let (_, out) = server.exec(&b, &["sh", "-c", "test -e /root/a-only && echo yes || echo no"]).await;
    assert_eq!(out["stdout"], "no\n");

    // The pool refills after the hand-overs.
    wait_ready_count(&server, 2).await;
    let (_, metrics) = {
        let r = server.http.get(server.url("/metrics")).send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    };
    assert!(metrics.contains("mayfly_pool_ready{image=\"minimal\"} 2"), "{metrics}");
    assert!(metrics.contains("mayfly_pool_hits_total{image=\"minimal\"} 2"), "{metrics}");

    assert_eq!(server.delete(&a).await, 204);
    let pooled: Vec<String> = pool_vm_dirs(&server);
    let data_dir = server.data_dir.clone();
    let _keep = server.stop().await;
    assert!(data_dir.join("vms").exists());
    // Shutdown drained the pool and stopped every session: no QEMU, no run dir.
    for id in pooled.iter().chain([&b]) {
        assert!(common::qemu_pids_for(id).is_empty(), "QEMU of {id} still running");
    }
    let left: Vec<_> = std::fs::read_dir(data_dir.join("vms")).map(|rd| rd.flatten().collect()).unwrap_or_default();
    assert!(left.is_empty(), "run dirs left: {:?}", left.iter().map(|e| e.file_name()).collect::<Vec<_>>());
}

async fn fork(server: &TestServer, id: &str, body: &str) -> (u16, Value) {
    let r = server
        .http
        .post(server.url(&format!("/api/v1/sessions/{id}/fork")))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_keeps_running_terminals_memory_and_disk() {
    let server = TestServer::start(|c| c.pool_size = 1).await;
    let a = server.ready_session(json!({ "ttl_seconds": 3600 })).await;
    // State that lives only in a running shell's memory.
    let mut term = server.ws(&format!("/api/v1/sessions/{a}/pty?terminal=main")).await;
    common::type_keys(&mut term, "MARK=fork-$((6*7))-ok; echo marked\r").await;
    common::read_until(&mut term, "marked").await;
    drop(term);
    let (status, _) = server.exec(&a, &["sh", "-c", "echo before > /root/before && sync"]).await;
    assert_eq!(status, 200);

    let (status, f) = fork(&server, &a, r#"{"ttl_seconds": 600}"#).await;
    assert_eq!(status, 201, "{f}");
    assert_eq!(f["state"], "ready", "{f}");
    assert_eq!(f["forked_from"], a.as_str(), "{f}");
    let b = f["id"].as_str().unwrap().to_string();
    assert_ne!(a, b);
    let (_, src) = server.get(&format!("/api/v1/sessions/{a}")).await;
    assert_eq!(f["network"], src["network"], "the fork has its source's policy");

    // The fork's shell is the source's shell, with its variables and its scrollback.
    let mut term = server.ws(&format!("/api/v1/sessions/{b}/pty?terminal=main")).await;
    common::read_until(&mut term, "marked").await;
    common::type_keys(&mut term, "echo \"got $MARK\"\r").await;
    common::read_until(&mut term, "got fork-42-ok").await;
    drop(term);
    // Its own identity and disk.
    let (_, out) = server.exec(&b, &["sh", "-c", "hostname; cat /root/before; echo mine > /root/b-only"]).await;
    assert_eq!(out["stdout"], format!("{b}\nbefore\n"), "{out}");
    let (_, out) = server.exec(&a, &["sh", "-c", "test -e /root/b-only && echo yes || echo no; hostname"]).await;
    assert_eq!(out["stdout"], format!("no\n{a}\n"), "the source is untouched and running: {out}");
    let mut term = server.ws(&format!("/api/v1/sessions/{a}/pty?terminal=main")).await;
    common::type_keys(&mut term, "echo \"still $MARK\"\r").await;
    common::read_until(&mut term, "still fork-42-ok").await;
    drop(term);

    // Bad input: unknown session, unknown field, a source that is gone.
    let (status, body) = fork(&server, "snosuchsession", "").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = fork(&server, &a, r#"{"ttl": 5}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("ttl"), "{body}");
    let (status, body) = fork(&server, &a, r#"{"ttl_seconds": 0}"#).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(server.delete(&a).await, 204);
    let (status, body) = fork(&server, &a, "{}").await;
    assert_eq!(status, 404, "{body}");
    // The fork outlives its source; then nothing of either is left.
    let (status, _) = server.exec(&b, &["true"]).await;
    assert_eq!(status, 200);
    assert_eq!(server.delete(&b).await, 204);
    common::assert_vm_gone(&server, &b).await;
    // Only the pool's clone is left (the source's VM was a pool clone with its own id).
    wait_ready_count(&server, 1).await;
    let dirs: Vec<String> = std::fs::read_dir(server.data_dir.join("vms")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(dirs, pool_vm_dirs(&server), "VMs left besides the pool: {dirs:?}");
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    server.stop().await;
}
