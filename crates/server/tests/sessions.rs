//! End to end with a real server, a real VM and real HTTP/WebSocket clients: a session from
//! creation to deletion, every API on the way, and nothing left behind.

use crate::common;

use common::*;
use futures::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_from_creation_to_deletion() {
    let server = TestServer::start(|_| {}).await;

    // Create without waiting, then watch it become ready on the events WebSocket.
    let (status, created) = server.create(json!({"image": "minimal", "env": {"GREETING": "hi there"}}), false).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["state"], "creating");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["ide_url"], format!("{}/s/{id}", server.base));
    let mut events = server.ws(&format!("/api/v1/sessions/{id}/events")).await;
    let seen = events_until(&mut events, state_is("ready")).await;
    let states: Vec<&Value> = seen.iter().filter(|e| e["type"] == "state").map(|e| &e["to"]).collect();
    assert_eq!(states, ["creating", "ready"], "{seen:?}");
    assert_eq!(server.get(&format!("/api/v1/sessions/{id}")).await.1["state"], "ready");
    assert!(server.run_dir(&id).exists());

    // exec, with the session's environment.
    let (status, out) = server.exec(&id, &["sh", "-c", "echo $GREETING; echo oops >&2; exit 3"]).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!((out["exit_code"].as_i64(), out["stdout"].as_str(), out["stderr"].as_str()), (Some(3), Some("hi there\n"), Some("oops\n")));
    let (status, out) = server.exec(&id, &["no-such-binary-xyz"]).await;
    assert_eq!(status, 422, "{out}");
    assert!(out["error"]["message"].as_str().unwrap().contains("no-such-binary-xyz"), "{out}");

    files(&server, &id).await;
    terminal(&server, &id).await;
    ports(&server, &id, &mut events).await;

    // Delete: 204, the stream ends with stopping → destroyed, and nothing is left.
    assert_eq!(server.delete(&id).await, 204);
    let rest = events_until(&mut events, state_is("destroyed")).await;
    assert!(rest.iter().any(state_is("stopping")), "{rest:?}");
    assert!(next_event(&mut events).await.is_none(), "stream ends after destroyed");
    assert_eq!(server.get(&format!("/api/v1/sessions/{id}")).await.0, 404);
    assert_eq!(server.delete(&id).await, 404, "a second delete finds nothing");
    assert_vm_gone(&server, &id).await;
    let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("mayfly_vm_boot_seconds_count 1"), "{metrics}");
    assert!(metrics.contains("mayfly_sessions{state=\"destroyed\"} 1"), "{metrics}");
    server.stop().await;
}

async fn files(server: &TestServer, id: &str) {
    let url = |p: &str| server.url(&format!("/api/v1/sessions/{id}/files?path={p}"));
    let r = server.http.put(url("/root/new/dir/hello.txt")).body("hello, world\n").send().await.unwrap();
    assert_eq!(r.status(), 204, "{:?}", r.text().await);
    let r = server.http.get(url("/root/new/dir/hello.txt")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "13");
    assert_eq!(r.text().await.unwrap(), "hello, world\n");
    // A larger binary file round-trips byte for byte.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let r = server.http.put(url("/tmp/big.bin")).body(big.clone()).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let got = server.http.get(url("/tmp/big.bin")).send().await.unwrap().bytes().await.unwrap();
    assert!(got == big, "big file differs ({} bytes back)", got.len());

    let (status, list) = server.get(&format!("/api/v1/sessions/{id}/files?path=/root/new/dir")).await;
    assert_eq!(status, 200, "{list}");
    let entry = &list.as_array().unwrap()[0];
    assert_eq!((entry["name"].as_str(), entry["type"].as_str(), entry["size"].as_u64()), (Some("hello.txt"), Some("file"), Some(13)));
    assert_eq!(entry["path"], "/root/new/dir/hello.txt");

    assert_eq!(server.http.delete(url("/root/new")).send().await.unwrap().status(), 204);
    let (status, body) = server.get(&format!("/api/v1/sessions/{id}/files?path=/root/new/dir/hello.txt")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = server.get(&format!("/api/v1/sessions/{id}/files?path=root")).await;
    assert_eq!(status, 400);
}

async fn terminal(server: &TestServer, id: &str) {
    let path = format!("/api/v1/sessions/{id}/pty?cols=80&rows=24&terminal=main");
    let mut pty = server.ws(&path).await;
    type_keys(&mut pty, "echo $((6*7))\r").await;
    read_until(&mut pty, "42").await;

    pty.send(Message::Text(r#"{"type":"resize","cols":100,"rows":30}"#.into())).await.unwrap();
    type_keys(&mut pty, "stty size\r").await;
    read_until(&mut pty, "30 100").await;

    // Garbage control frames are refused with a notice; the terminal keeps working.
    pty.send(Message::Text("this is not json".into())).await.unwrap();
    let notice = next_notice(&mut pty).await;
    assert_eq!(notice["type"], "error", "{notice}");
    type_keys(&mut pty, "echo ok$((40+2))\r").await;
    read_until(&mut pty, "ok42").await;
    pty.close(None).await.unwrap();

    // Re-attach to the same terminal: its scrollback comes back.
    let mut again = server.ws(&path).await;
    read_until(&mut again, "ok42").await;
    type_keys(&mut again, "echo back$((1+1))\r").await;
    read_until(&mut again, "back2").await;
    again.close(None).await.unwrap();

    cli_shell(server, id).await;
}

/// `mayfly shell` (the real CLI): returns when the remote shell exits, even with its stdin still
/// open, with the remote shell's exit status.
async fn cli_shell(server: &TestServer, id: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(external::mayfly_binary())
        .args(["shell", id])
        .env("MAYFLY_URL", &server.base)
        .env("MAYFLY_TOKEN", TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kept open (as a terminal would be) until the CLI has ended.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"echo cli$((6*7)); exit 7\n").unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    drop(stdin);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(7), "the remote exit status (killed after 60 s if it hung); stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("cli42"), "{stdout}");
}

async fn ports(server: &TestServer, id: &str, events: &mut Ws) {
    let listener = "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',8000))\ns.listen()\ntime.sleep(600)";
    let (status, out) = server.exec(id, &["sh", "-c", &format!("python3 -c \"{listener}\" >/dev/null 2>&1 & echo $! > /tmp/listener.pid")]).await;
    assert_eq!(status, 200, "{out}");
    let seen = events_until(events, |e| e["type"] == "port_opened" && e["port"]["port"] == 8000).await;
    let port = &seen.last().unwrap()["port"];
    let server_port = server.base.rsplit(':').next().unwrap();
    assert_eq!(port["url"], format!("http://8000-{id}.localhost:{server_port}/"));
    assert_eq!(port["visibility"], "private");

    let (status, list) = server.get(&format!("/api/v1/sessions/{id}/ports")).await;
    assert_eq!(status, 200);
    assert!(list.as_array().unwrap().iter().any(|p| p["port"] == 8000), "{list}");
    let r = server
        .http
        .patch(server.url(&format!("/api/v1/sessions/{id}/ports/8000")))
        .json(&json!({"visibility": "public"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["visibility"], "public");
    let (_, list) = server.get(&format!("/api/v1/sessions/{id}/ports")).await;
    let p8000 = list.as_array().unwrap().iter().find(|p| p["port"] == 8000).unwrap().clone();
    assert_eq!(p8000["visibility"], "public");

    let (status, out) = server.exec(id, &["sh", "-c", "kill -KILL $(cat /tmp/listener.pid)"]).await;
    assert_eq!((status, out["exit_code"].as_i64()), (200, Some(0)), "{out}");
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        events_until(events, |e| e["type"] == "port_closed" && e["port"] == 8000),
    )
    .await;
    if closed.is_err() {
        let (_, ps) = server.exec(id, &["sh", "-c", "ps aux; cat /proc/net/tcp /proc/net/tcp6"]).await;
        let (_, ports) = server.get(&format!("/api/v1/sessions/{id}/ports")).await;
        panic!("no port_closed; ports {ports}; guest: {}", ps["stdout"].as_str().unwrap_or(""));
    }
}
