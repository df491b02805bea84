//! The loop against the scripted model server, over real HTTP in both wire formats. Tools here
//! are an in-memory recorder (the VM-backed tools are tested in the server's `agent` suite).

use mayfly_agent::provider::Model;
use mayfly_agent::run::{AgentEvent, RunContext};
use mayfly_agent_testing::{call, tools, Reply, ScriptedModel};
use mayfly_agent::{AgentConfig, Message, ProviderKind, RunOutcome, RunStatus, ToolOutput, Tools};
use serde_json::{json, Value};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<(String, Value)>>,
}

#[async_trait::async_trait]
impl Tools for Recorder {
    async fn call(&self, name: &str, args: Value) -> ToolOutput {
        self.calls.lock().unwrap().push((name.to_string(), args.clone()));
        if name == "shell" && args["command"] == "sleep forever" {
            std::future::pending::<()>().await;
        }
        ToolOutput::ok(format!("ran {name}"))
    }
}

struct Ran {
    outcome: RunOutcome,
    events: Vec<AgentEvent>,
}

async fn run_with(cfg: &AgentConfig, tools: &Recorder, history: Vec<Message>, prompt: &str, cancel: CancellationToken) -> Ran {
    let model = Model::new(cfg).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let ctx = RunContext { cfg, model: &model, system: "be brief", tools, cancel, events: tx };
    let outcome = ctx.run(history, prompt.to_string()).await;
    drop(ctx);
    let mut events = Vec::new();
    while let Some(e) = rx.recv().await {
        events.push(e);
    }
    Ran { outcome, events }
}

async fn run(cfg: &AgentConfig, tools: &Recorder, prompt: &str) -> Ran {
    run_with(cfg, tools, Vec::new(), prompt, CancellationToken::new()).await
}

fn streamed_text(events: &[AgentEvent]) -> String {
    events.iter().filter_map(|e| if let AgentEvent::Text(t) = e { Some(t.as_str()) } else { None }).collect()
}

fn stored(events: &[AgentEvent]) -> Vec<Message> {
    events.iter().filter_map(|e| if let AgentEvent::Message(m) = e { Some(m.clone()) } else { None }).collect()
}

async fn tool_round_trip(kind: ProviderKind) {
    let model = ScriptedModel::start(vec![
        Reply::Tools { text: "Listing files first.".into(), calls: vec![call("list_dir", json!({"path": "/root"})), call("shell", json!({"command": "echo é"}))] },
        tools(vec![call("finish", json!({"summary": "all done"}))]),
    ])
    .await;
    let rec = Recorder::default();
    let cfg = model.config(kind);
    let ran = run(&cfg, &rec, "look around").await;
    assert_eq!(ran.outcome.status, RunStatus::Succeeded, "{:?}", ran.outcome);
    assert_eq!(ran.outcome.summary.as_deref(), Some("all done"));
    assert_eq!(ran.outcome.steps, 2);
    assert!(ran.outcome.usage.total() > 0);
    assert_eq!(
        *rec.calls.lock().unwrap(),
        [("list_dir".to_string(), json!({"path": "/root"})), ("shell".to_string(), json!({"command": "echo é"}))]
    );
    assert_eq!(streamed_text(&ran.events), "Listing files first.");
    // The second request carried both tool results back, in the format's own shape.
    let reqs = model.requests();
    assert_eq!(reqs.len(), 2);
    let body = reqs[1].body.to_string();
    assert!(body.contains("ran list_dir") && body.contains("ran shell"), "{body}");
    let key_header = match kind {
        ProviderKind::Openai => reqs[0].header("authorization").map(str::to_string),
        ProviderKind::Anthropic => reqs[0].header("x-api-key").map(str::to_string),
    };
    assert!(key_header.unwrap().contains("sk-test-secret-key"));
    for r in &reqs {
        assert!(!r.body.to_string().contains("sk-test-secret-key"), "the key is never in a body");
    }
    // Stored: user, assistant(2 calls), 2 results, assistant(finish), finish result.
    let msgs = stored(&ran.events);
    assert_eq!(msgs.len(), 6, "{msgs:?}");
    assert!(matches!(&msgs[1], Message::Assistant { tool_calls, .. } if tool_calls.len() == 2));
}

#[tokio::test]
async fn openai_tool_round_trip() {
    tool_round_trip(ProviderKind::Openai).await;
}

#[tokio::test]
async fn anthropic_tool_round_trip() {
    tool_round_trip(ProviderKind::Anthropic).await;
}

#[tokio::test]
async fn follow_up_continues_the_history() {
    let model = ScriptedModel::start(vec![Reply::Text("first answer".into()), Reply::Text("second answer".into())]).await;
    let cfg = model.config(ProviderKind::Anthropic);
    let rec = Recorder::default();
    let first = run(&cfg, &rec, "question one").await;
    let history = stored(&first.events);
    let second = run_with(&cfg, &rec, history, "question two", CancellationToken::new()).await;
    assert_eq!(second.outcome.summary.as_deref(), Some("second answer"));
    let body = &model.requests()[1].body;
    let msgs = body["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "{body}");
    assert_eq!(msgs[1]["content"][0]["text"], "first answer");
    assert_eq!(msgs[2]["content"][0]["text"], "question two");
}

#[tokio::test]
async fn too_many_requests_waits_for_retry_after_then_succeeds() {
    for kind in [ProviderKind::Openai, ProviderKind::Anthropic] {
        let model = ScriptedModel::start(vec![Reply::Status { status: 429, retry_after: Some(1) }, Reply::Text("ok".into())]).await;
        let cfg = model.config(kind);
        let started = Instant::now();
        let ran = run(&cfg, &Recorder::default(), "hi").await;
        assert_eq!(ran.outcome.status, RunStatus::Succeeded, "{:?}", ran.outcome);
        // Retry-After is a floor on the wait (the configured backoff is 10–50 ms).
        assert!(started.elapsed() >= Duration::from_secs(1), "{kind:?}: retried after {:?}", started.elapsed());
        assert!(ran.events.iter().any(|e| matches!(e, AgentEvent::Retry { attempt: 1, delay_ms: 1000, .. })), "{:?}", ran.events);
        assert_eq!(model.requests().len(), 2);
    }
}

#[tokio::test]
async fn server_errors_until_the_budget_is_spent_fail_the_run() {
    let model = ScriptedModel::start((0..10).map(|_| Reply::Status { status: 500, retry_after: None }).collect()).await;
    let cfg = AgentConfig { max_retries: 3, ..model.config(ProviderKind::Openai) };
    let ran = run(&cfg, &Recorder::default(), "hi").await;
    assert_eq!(ran.outcome.status, RunStatus::Failed);
    let reason = ran.outcome.reason.unwrap();
    assert!(reason.contains("after 3 retries") && reason.contains("500"), "{reason}");
    assert_eq!(model.requests().len(), 4, "one try and three retries");
}

#[tokio::test]
async fn garbage_is_retried_and_a_bad_key_is_not() {
    let model = ScriptedModel::start(vec![Reply::Garbage, Reply::Text("recovered".into())]).await;
    let ran = run(&model.config(ProviderKind::Anthropic), &Recorder::default(), "hi").await;
    assert_eq!(ran.outcome.summary.as_deref(), Some("recovered"), "{:?}", ran.outcome);

    let model = ScriptedModel::start(vec![Reply::Status { status: 401, retry_after: None }, Reply::Text("never".into())]).await;
    let ran = run(&model.config(ProviderKind::Openai), &Recorder::default(), "hi").await;
    assert_eq!(ran.outcome.status, RunStatus::Failed);
    assert!(ran.outcome.reason.unwrap().contains("401"));
    assert_eq!(model.requests().len(), 1);
}

#[tokio::test]
async fn malformed_tool_calls_are_fed_back_and_the_model_recovers() {
    let model = ScriptedModel::start(vec![
        tools(vec![("shell".into(), "{\"command\": \"ls".into()), call("teleport", json!({}))]),
        tools(vec![call("shell", json!({"command": "ls"}))]),
        Reply::Text("done".into()),
    ])
    .await;
    let rec = Recorder::default();
    let ran = run(&model.config(ProviderKind::Openai), &rec, "hi").await;
    assert_eq!(ran.outcome.status, RunStatus::Succeeded, "{:?}", ran.outcome);
    assert_eq!(rec.calls.lock().unwrap().len(), 1, "only the well-formed call ran");
    let second = model.requests()[1].body["messages"].to_string();
    assert!(second.contains("not valid JSON") && second.contains("unknown tool"), "{second}");
}

#[tokio::test]
async fn step_budget_and_cancel() {
    let model = ScriptedModel::start((0..5).map(|_| tools(vec![call("ports", json!({}))])).collect()).await;
    let cfg = AgentConfig { max_steps: 2, ..model.config(ProviderKind::Openai) };
    let ran = run(&cfg, &Recorder::default(), "hi").await;
    assert_eq!(ran.outcome.status, RunStatus::Failed);
    assert!(ran.outcome.reason.unwrap().contains("step budget"));

    let model = ScriptedModel::start(vec![tools(vec![call("shell", json!({"command": "sleep forever"})), call("ports", json!({}))])]).await;
    let cfg = model.config(ProviderKind::Openai);
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c2.cancel();
    });
    let ran = run_with(&cfg, &Recorder::default(), Vec::new(), "hi", cancel).await;
    assert_eq!(ran.outcome.status, RunStatus::Cancelled);
    // Both calls got a result, so the stored history is valid for a follow-up.
    let results = stored(&ran.events).iter().filter(|m| matches!(m, Message::Tool { is_error: true, .. })).count();
    assert_eq!(results, 2);
}
