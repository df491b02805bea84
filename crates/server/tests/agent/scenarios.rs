//! Whole scenarios: build a small web app, run it, check it through `http`, see the error, fix
//! it with `edit_file`, check again (OpenAI wire format); a shorter Anthropic one with a
//! follow-up prompt that continues the conversation.

use crate::common::*;
use super::helpers::*;
use mayfly_agent_testing::{call, tools, Reply, ScriptedModel};
use mayfly_agent::ProviderKind;
use serde_json::{json, Value};

const BUGGY_APP: &str = r#"import http.server

MESSAGE = "hello from mayfly"


def render():
    return MESAGE.upper()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            body, status = render(), 200
        except Exception as e:
            body, status = "error: %r" % (e,), 500
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.end_headers()
        self.wfile.write(body.encode())


http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
"#;

/// Starts the app in the background and waits until it accepts connections.
const START: &str = "cd /root/app && (nohup python3 app.py > /tmp/app.log 2>&1 &) && \
    for i in $(seq 100); do python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 8000))' 2>/dev/null && echo up && break; sleep 0.2; done";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_agent_builds_a_web_app_sees_the_error_and_fixes_it() {
    let model = ScriptedModel::start(vec![
        Reply::Tools {
            text: "I'll write a small web app.".into(),
            calls: vec![call("write_file", json!({"path": "app/app.py", "content": BUGGY_APP}))],
        },
        tools(vec![call("shell", json!({"command": START}))]),
        tools(vec![call("http", json!({"port": 8000, "path": "/"}))]),
        tools(vec![call("read_file", json!({"path": "/tmp/app.log"})), call("search", json!({"pattern": "MESA?GE", "path": "/root/app"}))]),
        tools(vec![call("edit_file", json!({"path": "/root/app/app.py", "old_string": "return MESAGE.upper()", "new_string": "return MESSAGE.upper()"}))]),
        tools(vec![call("shell", json!({"command": format!("pkill -f 'python3 app.py'; sleep 0.5; {START}")}))]),
        tools(vec![call("ports", json!({})), call("http", json!({"port": 8000, "path": "/"}))]),
        tools(vec![call("finish", json!({"summary": "The app serves HELLO FROM MAYFLY on port 8000."}))]),
    ])
    .await;
    let server = TestServer::start(|c| c.agent = model.config(ProviderKind::Openai)).await;
    let id = server.ready_session(json!({})).await;
    let mut events = server.ws(&format!("/api/v1/sessions/{id}/events")).await;

    let run = run_id(&server, &id, "Write a web app on port 8000 that greets in capitals.").await;
    let seen = until_done(&mut events, &run).await;
    let done = final_run(&server, &id, &run).await;
    assert_eq!(done["status"], "succeeded", "{done}\n{seen:#?}");
    assert_eq!(done["summary"], "The app serves HELLO FROM MAYFLY on port 8000.");
    assert_eq!(done["steps"], 8);
    assert_eq!(model.remaining(), 0);

    // The VM's real state: the fixed file, the running server, the preview through the proxy.
    let (_, src) = sh(&server, &id, "cat /root/app/app.py").await;
    assert!(src.contains("return MESSAGE.upper()") && !src.contains("MESAGE"), "{src}");
    let (code, _) = sh(&server, &id, "pgrep -f 'python3 app[.]py'").await;
    assert_eq!(code, 0, "the app keeps running after the agent's shell call returned");
    assert_eq!(preview_get(&server, &id, 8000, "/").await, (200, "HELLO FROM MAYFLY".to_string()));

    // The agent did see the error on the way (through the same proxy).
    let results: Vec<&Value> = seen.iter().filter(|e| e["type"] == "agent_tool_result" && e["name"] == "http").collect();
    assert_eq!(results.len(), 2, "{seen:#?}");
    assert!(results[0]["output"].as_str().unwrap().starts_with("HTTP 500"), "{}", results[0]);
    assert!(results[0]["output"].as_str().unwrap().contains("NameError"), "{}", results[0]);
    assert!(results[1]["output"].as_str().unwrap().starts_with("HTTP 200"), "{}", results[1]);
    // Events the panel renders: streamed text, tool calls with arguments, written paths.
    let text: String = seen.iter().filter(|e| e["type"] == "agent_text").map(|e| e["delta"].as_str().unwrap()).collect();
    assert_eq!(text, "I'll write a small web app.");
    let edit = seen.iter().find(|e| e["type"] == "agent_tool_result" && e["name"] == "edit_file").unwrap();
    assert_eq!(edit["paths"], json!(["/root/app/app.py"]));
    assert!(seen.iter().any(|e| e["type"] == "agent_tool_call" && e["name"] == "shell" && e["arguments"].as_str().unwrap().contains("nohup")));
    let shell = seen.iter().find(|e| e["type"] == "agent_tool_result" && e["name"] == "shell").unwrap();
    assert!(shell["output"].as_str().unwrap().starts_with("exit code 0\nup"), "{shell}");

    // The agent's shell ran in the terminal the human can open.
    let mut term = server.ws(&format!("/api/v1/sessions/{id}/pty?terminal=agent")).await;
    read_until(&mut term, "up").await;

    // The key went to the model server only.
    let all = serde_json::to_string(&seen).unwrap();
    assert!(!all.contains(KEY));
    assert_key_not_in_vm(&server, &id).await;
    assert!(model.requests().iter().all(|r| r.header("authorization") == Some(&format!("Bearer {KEY}"))));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_agent_runs_a_script_and_a_follow_up_continues() {
    let model = ScriptedModel::start(vec![
        tools(vec![call("write_file", json!({"path": "/root/hello.py", "content": "print(sum(range(10)))\n"}))]),
        Reply::Tools {
            text: "Running it.".into(),
            calls: vec![call("shell", json!({"command": "python3 /root/hello.py | tee /root/out.txt; exit 3"}))],
        },
        Reply::Text("It printed 45.".into()),
        // The follow-up run.
        tools(vec![call("list_dir", json!({"path": "/root"}))]),
        tools(vec![call("write_file", json!({"path": "/root/follow-up.txt", "content": "second run"}))]),
        Reply::Text("Done.".into()),
    ])
    .await;
    let server = TestServer::start(|c| c.agent = model.config(ProviderKind::Anthropic)).await;
    let id = server.ready_session(json!({})).await;
    let mut events = server.ws(&format!("/api/v1/sessions/{id}/events")).await;

    let first = run_id(&server, &id, "Sum 0..9 in Python.").await;
    let seen = until_done(&mut events, &first).await;
    assert_eq!(final_run(&server, &id, &first).await["summary"], "It printed 45.");
    assert_eq!(sh(&server, &id, "cat /root/out.txt").await.1, "45\n");
    let shell = seen.iter().find(|e| e["type"] == "agent_tool_result" && e["name"] == "shell").unwrap();
    assert!(shell["output"].as_str().unwrap().starts_with("exit code 3\n45"), "{shell}");

    let second = run_id(&server, &id, "Now leave a note.").await;
    until_done(&mut events, &second).await;
    assert_eq!(final_run(&server, &id, &second).await["status"], "succeeded");
    assert_eq!(sh(&server, &id, "cat /root/follow-up.txt").await.1, "second run");
    // The follow-up's first request carried the first run's conversation.
    let reqs = model.requests();
    let sent = reqs[3].body["messages"].to_string();
    assert!(sent.contains("Sum 0..9 in Python.") && sent.contains("It printed 45.") && sent.contains("Now leave a note."), "{sent}");
    assert!(reqs.iter().all(|r| r.header("x-api-key") == Some(KEY) && r.header("anthropic-version").is_some()));
    let (_, runs) = server.get(&format!("/api/v1/sessions/{id}/agent/runs")).await;
    assert_eq!(runs.as_array().unwrap().len(), 2);
    let (_, msgs) = server.get(&format!("/api/v1/sessions/{id}/agent/messages")).await;
    assert_eq!(msgs[0], json!({"role": "user", "text": "Sum 0..9 in Python."}));
    server.stop().await;
}
