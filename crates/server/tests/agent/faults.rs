//! Faults: a rate limit with Retry-After, a model server that keeps failing, malformed tool
//! calls, a command that hangs, a cancel, a session deleted mid-run. Each asserts the VM's state
//! and that the session still works.

use crate::common::*;
use super::helpers::*;
use mayfly_agent_testing::{call, tools, Reply, ScriptedModel};
use mayfly_agent::ProviderKind;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_budget_and_malformed_calls() {
    let model = ScriptedModel::start(vec![
        // Run 1: rate limited once, then works.
        Reply::Status { status: 429, retry_after: Some(1) },
        tools(vec![call("shell", json!({"command": "touch /root/after-429"}))]),
        Reply::Text("done".into()),
        // Run 2: the model server keeps failing.
        Reply::Status { status: 500, retry_after: None },
        Reply::Status { status: 503, retry_after: None },
        Reply::Garbage,
        // Run 3: malformed calls, fed back, then a good one.
        tools(vec![("write_file".into(), "{\"path\": \"/root/x\", \"content\": ".into()), call("teleport", json!({}))]),
        tools(vec![call("edit_file", json!({"path": "/root/nope.txt", "old_string": "a", "new_string": "b"}))]),
        tools(vec![call("write_file", json!({"path": "/root/recovered.txt", "content": "yes"}))]),
        Reply::Text("recovered".into()),
    ])
    .await;
    let server = TestServer::start(|c| c.agent = mayfly_agent::AgentConfig { max_retries: 2, ..model.config(ProviderKind::Openai) }).await;
    let id = server.ready_session(json!({})).await;
    let mut events = server.ws(&format!("/api/v1/sessions/{id}/events")).await;

    let run = run_id(&server, &id, "touch a file").await;
    let seen = until_done(&mut events, &run).await;
    assert_eq!(final_run(&server, &id, &run).await["status"], "succeeded");
    assert_eq!(sh(&server, &id, "test -f /root/after-429").await.0, 0);
    let retry = seen.iter().find(|e| e["type"] == "agent_retry").expect("a retry event");
    assert_eq!((retry["attempt"].as_u64(), retry["delay_ms"].as_u64()), (Some(1), Some(1000)), "Retry-After honoured: {retry}");

    let run = run_id(&server, &id, "anything").await;
    until_done(&mut events, &run).await;
    let failed = final_run(&server, &id, &run).await;
    assert_eq!(failed["status"], "failed");
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("after 2 retries") && reason.contains("unreadable"), "{reason}");
    // The session is unaffected.
    assert_eq!(sh(&server, &id, "echo still here").await, (0, "still here\n".into()));

    let run = run_id(&server, &id, "write a file").await;
    let seen = until_done(&mut events, &run).await;
    assert_eq!(final_run(&server, &id, &run).await["status"], "succeeded");
    assert_eq!(sh(&server, &id, "cat /root/recovered.txt; test -e /root/x || echo ' no x'").await.1, "yes no x\n");
    let errors: Vec<&str> =
        seen.iter().filter(|e| e["type"] == "agent_tool_result" && e["is_error"] == true).map(|e| e["output"].as_str().unwrap()).collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].contains("not valid JSON") && errors[1].contains("unknown tool") && errors[2].contains("nope.txt"), "{errors:?}");
    assert_eq!(model.remaining(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_cancel_and_session_end() {
    let model = ScriptedModel::start(vec![
        // Run 1: a command that hangs is killed at its timeout.
        tools(vec![call("shell", json!({"command": "sleep 600; touch /root/not-reached", "timeout_seconds": 2}))]),
        tools(vec![call("shell", json!({"command": "echo alive"}))]),
        Reply::Text("ok".into()),
        // Run 2: cancelled by the user while a command runs.
        tools(vec![call("shell", json!({"command": "sleep 500"}))]),
        // Run 3: a follow-up after the cancel works (the stored history stays valid).
        Reply::Text("fine".into()),
        // Run 4: the session is deleted under it.
        tools(vec![call("shell", json!({"command": "sleep 400"}))]),
    ])
    .await;
    let server = TestServer::start(|c| c.agent = model.config(ProviderKind::Anthropic)).await;
    let id = server.ready_session(json!({})).await;
    let mut events = server.ws(&format!("/api/v1/sessions/{id}/events")).await;

    let run = run_id(&server, &id, "hang").await;
    let seen = until_done(&mut events, &run).await;
    assert_eq!(final_run(&server, &id, &run).await["status"], "succeeded");
    let results: Vec<&str> = seen.iter().filter(|e| e["type"] == "agent_tool_result").map(|e| e["output"].as_str().unwrap()).collect();
    assert!(results[0].starts_with("timed out after 2 s"), "{results:?}");
    assert!(results[1].starts_with("exit code 0\nalive"), "the terminal is usable after a kill: {results:?}");
    assert_eq!(sh(&server, &id, "pgrep -f 'sleep 60[0]'; test -e /root/not-reached").await.0, 1, "the command is gone");

    let run = run_id(&server, &id, "sleep").await;
    until(&mut events, |e| e["type"] == "agent_tool_call" && e["run"] == run.as_str()).await;
    let (status, busy) = start_run(&server, &id, "second at once").await;
    assert_eq!(status, 409, "{busy}");
    let r = server.http.post(server.url(&format!("/api/v1/sessions/{id}/agent/runs/{run}/cancel"))).send().await.unwrap();
    let cancelled: serde_json::Value = r.json().await.unwrap();
    assert_eq!((cancelled["status"].as_str(), cancelled["reason"].as_str()), (Some("cancelled"), Some("cancelled by the user")), "{cancelled}");
    until_done(&mut events, &run).await;
    // The interrupted command does not outlive the run.
    assert_eq!(sh(&server, &id, "pgrep -f 'sleep 50[0]'").await.0, 1, "the run ends only once its command is gone");

    let run = run_id(&server, &id, "still there?").await;
    until_done(&mut events, &run).await;
    assert_eq!(final_run(&server, &id, &run).await["summary"], "fine");

    let run = run_id(&server, &id, "sleep again").await;
    until(&mut events, |e| e["type"] == "agent_tool_call" && e["run"] == run.as_str()).await;
    assert_eq!(server.delete(&id).await, 204);
    let ended = final_run(&server, &id, &run).await;
    assert_eq!((ended["status"].as_str(), ended["reason"].as_str()), (Some("cancelled"), Some("the session ended")), "{ended}");
    assert_eq!(start_run(&server, &id, "after the end").await.0, 404);
    server.stop().await;
}
