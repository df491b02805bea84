//! The `browser` tool: real Chromium on the host against a real preview of a page served from
//! the VM. The page's script sets the title, so a title we read back proves the JavaScript ran.

use crate::common::*;
use crate::helpers::*;
use base64::Engine;
use mayfly_agent::testing::{call, tools, ScriptedModel};
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
