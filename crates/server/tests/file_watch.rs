//! Live file changes and the tree operations the IDE uses, against a real server and VM:
//! files made inside the VM arrive as `file_changed` events on the session's event stream;
//! `files/mkdir` and `files/rename` work and rename refuses to replace.

use crate::common;
use common::*;
use serde_json::{json, Value};

fn file_event(path: &'static str, kind: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["type"] == "file_changed" && e["path"] == path && e["kind"] == kind
}

#[tokio::test]
async fn file_changes_reach_the_event_stream() {
    let server = TestServer::start(|_| {}).await;
    let id = server.ready_session(json!({})).await;
    let mut events = server.ws(&format!("/api/v1/sessions/{id}/events")).await;
    events_until(&mut events, state_is("ready")).await;

    // Written from a shell in the VM (the watcher may still be starting: retry until seen).
    let mut seen = false;
    for i in 0..20 {
        let (status, out) = server.exec(&id, &["sh", "-c", &format!("echo {i} > /root/made-in-vm.txt")]).await;
        assert_eq!(status, 200, "{out}");
        let wait = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            loop {
                match next_event(&mut events).await {
                    Some(e) if e["type"] == "file_changed" && e["path"] == "/root/made-in-vm.txt" => return,
                    Some(_) => continue,
                    None => panic!("event stream ended"),
                }
            }
        });
        if wait.await.is_ok() {
            seen = true;
            break;
        }
    }
    assert!(seen, "no file_changed event for /root/made-in-vm.txt");

    // The API's own operations show up too.
    let post = |path: String, body: Value| server.http.post(server.url(&path)).json(&body).send();
    let r = post(format!("/api/v1/sessions/{id}/files/mkdir?path=/root/src/deep"), json!({})).await.unwrap();
    assert_eq!(r.status(), 204);
    events_until(&mut events, file_event("/root/src", "created")).await;
    let r = post(format!("/api/v1/sessions/{id}/files/rename"), json!({"from": "/root/made-in-vm.txt", "to": "/root/src/moved.txt"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let seen = events_until(&mut events, file_event("/root/src/moved.txt", "renamed")).await;
    assert_eq!(seen.last().unwrap()["from"], "/root/made-in-vm.txt");
    let (status, _) = server.get(&format!("/api/v1/sessions/{id}/files?path=/root/made-in-vm.txt")).await;
    assert_eq!(status, 404);

    // Rename never replaces an existing target.
    let r = post(format!("/api/v1/sessions/{id}/files/rename"), json!({"from": "/root/src/moved.txt", "to": "/root/src/deep"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = post(format!("/api/v1/sessions/{id}/files/rename"), json!({"from": "relative", "to": "/root/x"})).await.unwrap();
    assert_eq!(r.status(), 400);

    assert_eq!(server.delete(&id).await, 204);
    server.stop().await;
}
