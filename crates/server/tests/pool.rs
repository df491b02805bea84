//! Warm pool: clones of the image's template wait unclaimed; a create is a hand-over with the
//! session's own identity; the pool refills; shutdown drains it and leaves no process behind.

mod common;

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
        let (status, out) = server.exec(id, &["sh", "-c", "hostname; cat /etc/machine-id"]).await;
        assert_eq!(status, 200, "{out}");
        let text = out["stdout"].as_str().unwrap();
        assert_eq!(text.lines().next().unwrap(), id.as_str(), "{text}");
    }
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
