//! The `browser` tool: real Chromium on the host against a real preview of a page served from
//! the VM. The page's script sets the title, so a title we read back proves the JavaScript ran.

use crate::common::*;
use super::helpers::*;
use base64::Engine;
use mayfly_agent_testing::{call, tools, ScriptedModel};
use mayfly_agent::ProviderKind;
use serde_json::{json, Value};

const BROKEN: &str = r#"<!doctype html>
<html><head><title>Mayfly Test Page</title></head>
<body><h1>Hi there</h1>
<script>console.error("boom from console"); undefinedFunction();</script>
</body></html>
"#;

const SERVE: &str = "cd /root/site && (nohup python3 -m http.server 8080 > /tmp/site.log 2>&1 &) && \
    for i in $(seq 100); do python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 8080))' 2>/dev/null && echo up && break; sleep 0.2; done";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sees_console_errors_in_a_real_preview_and_the_fix() {
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        panic!("this test needs Chromium at /usr/bin/chromium (apt-get install chromium)");
    }
    let model = ScriptedModel::start(vec![
        tools(vec![call("write_file", json!({"path": "/root/site/index.html", "content": BROKEN}))]),
        tools(vec![call("shell", json!({"command": SERVE}))]),
        tools(vec![call("browser", json!({"port": 8080, "path": "/"}))]),
        tools(vec![call(
            "edit_file",
            json!({"path": "/root/site/index.html", "old_string": "console.error(\"boom from console\"); undefinedFunction();", "new_string": "document.title = \"Fixed Page\";"}),
        )]),
        tools(vec![call("browser", json!({"port": 8080}))]),
        tools(vec![call("finish", json!({"summary": "fixed"}))]),
    ])
    .await;
    let server = TestServer::start(|c| c.agent = model.config(ProviderKind::Openai)).await;
    let id = server.ready_session(json!({})).await;
    let mut events = server.ws(&format!("/api/v1/sessions/{id}/events")).await;
    let run = run_id(&server, &id, "check the page in a browser").await;
    let seen = until_done(&mut events, &run).await;
    assert_eq!(final_run(&server, &id, &run).await["status"], "succeeded", "{seen:#?}");

    let shots: Vec<&str> =
        seen.iter().filter(|e| e["type"] == "agent_tool_result" && e["name"] == "browser").map(|e| e["output"].as_str().unwrap()).collect();
    assert_eq!(shots.len(), 2, "{seen:#?}");
    assert!(!seen.iter().any(|e| e["type"] == "agent_tool_result" && e["name"] == "browser" && e["is_error"] == true), "{shots:?}");
    assert!(shots[0].contains("title: Mayfly Test Page") && shots[0].contains("Hi there"), "{}", shots[0]);
    assert!(shots[0].contains("boom from console") && shots[0].contains("undefinedFunction"), "{}", shots[0]);
    assert!(shots[1].contains("title: Fixed Page") && shots[1].contains("console errors: none"), "{}", shots[1]);

    // The screenshot reached the model as an image, and it is a PNG.
    let sent = &model.requests()[3].body["messages"];
    let url = sent
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .find_map(|part: &Value| part["image_url"]["url"].as_str())
        .expect("an image in the request after the browser call");
    let png = base64::engine::general_purpose::STANDARD.decode(url.strip_prefix("data:image/png;base64,").unwrap()).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 1000, "a real screenshot, {} bytes", png.len());

    // The VM's state and the real preview.
    let (status, body) = preview_get(&server, &id, 8080, "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("document.title = \"Fixed Page\";") && !body.contains("undefinedFunction"), "{body}");
    server.stop().await;
}

/// A hostile page in the VM probes the host from the agent's browser: a listener on the host's
/// loopback, the control plane by IP, another session's preview and a host file. Each attempt
/// must fail; the host listener must see no connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_page_cannot_reach_the_host_or_other_sessions_from_the_browser() {
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        panic!("this test needs Chromium at /usr/bin/chromium (apt-get install chromium)");
    }
    // A host-only listener that answers anything (with CORS allowed) and counts connections.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lport = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut c, _)) = listener.accept().await {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\nContent-Length: 6\r\n\r\nsecret").await;
        }
    });
    let page = |sport: u16, other: &str| {
        format!(
            r#"<!doctype html><html><head><title>probes</title></head><body><pre id="out">pending</pre><script>
const targets = {{ loopback: "http://127.0.0.1:{lport}/", control: "http://127.0.0.1:{sport}/healthz",
  other: "http://8080-{other}.localhost:{sport}/", file: "file:///etc/hostname" }};
Promise.all(Object.entries(targets).map(([k, u]) => fetch(u, {{ mode: "no-cors" }}).then(() => k + "=reached", () => k + "=blocked")))
  .then(r => {{ document.getElementById("out").textContent = r.join(" "); }});
</script></body></html>"#
        )
    };
    // The page names the server's port and the other session: the test writes it, the agent
    // serves and opens it.
    let model = ScriptedModel::start(vec![
        tools(vec![call("shell", json!({"command": SERVE}))]),
        tools(vec![call("browser", json!({"port": 8080, "path": "/hostile.html"}))]),
        tools(vec![call("finish", json!({"summary": "probed"}))]),
    ])
    .await;
    let server = TestServer::start(|c| c.agent = model.config(ProviderKind::Openai)).await;
    let sport: u16 = server.base.rsplit(':').next().unwrap().parse().unwrap();
    let id = server.ready_session(json!({})).await;
    let other = server.ready_session(json!({})).await;
    let (status, out) = server.exec(&other, &["sh", "-c", "mkdir -p /root/site && echo other-secret > /root/site/index.html && cd /root/site && (nohup python3 -m http.server 8080 >/dev/null 2>&1 &)"]).await;
    assert_eq!(status, 200, "{out}");
    let html = page(sport, &other);
    let (status, out) = server
        .exec(&id, &["sh", "-c", &format!("mkdir -p /root/site && cat > /root/site/hostile.html <<'EOF'\n{html}\nEOF")])
        .await;
    assert_eq!(status, 200, "{out}");

    let mut events = server.ws(&format!("/api/v1/sessions/{id}/events")).await;
    let run = run_id(&server, &id, "open the page").await;
    let seen = until_done(&mut events, &run).await;
    let shot = seen
        .iter()
        .find(|e| e["type"] == "agent_tool_result" && e["name"] == "browser")
        .and_then(|e| e["output"].as_str())
        .unwrap_or_else(|| panic!("no browser result: {seen:#?}"))
        .to_string();
    println!("{shot}");
    assert!(shot.contains("title: probes"), "the page itself loaded: {shot}");
    for probe in ["loopback=blocked", "control=blocked", "other=blocked", "file=blocked"] {
        assert!(shot.contains(probe), "{probe} missing: {shot}");
    }
    assert!(!shot.contains("=reached"), "{shot}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0, "the host listener was reached");
    server.stop().await;
}
