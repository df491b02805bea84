//! A scripted model server for tests: real HTTP on 127.0.0.1, speaking the real streaming wire
//! formats of OpenAI Chat Completions (`POST /v1/chat/completions`) and Anthropic Messages
//! (`POST /v1/messages`). It plays an ordered list of [`Reply`]s, one per request, whichever
//! format the request came in, and records every request so a test can see what the model was
//! sent. With the script exhausted it answers 400 ("no reply left"), which fails the run.
//!
//! Only the model is scripted: the tools a scenario calls run for real.

mod wire;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use mayfly_agent::{AgentConfig, ProviderKind};
use serde_json::Value;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Assistant text and no tool call (the run ends).
    Text(String),
    /// Optional text, then tool calls `(name, raw JSON arguments)`; raw so a test can send garbage.
    Tools { text: String, calls: Vec<(String, String)> },
    /// An HTTP error, with `Retry-After: seconds` if given.
    Status { status: u16, retry_after: Option<u64> },
    /// 200 and an event stream that is not JSON.
    Garbage,
}

/// A tool call with JSON arguments.
pub fn call(name: &str, args: Value) -> (String, String) {
    (name.to_string(), args.to_string())
}

/// Shorthand for a reply of tool calls without text.
pub fn tools(calls: Vec<(String, String)>) -> Reply {
    Reply::Tools { text: String::new(), calls }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Openai,
    Anthropic,
}

/// A request as the scripted server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub format: Format,
    /// Lower-case header names.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Script {
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
}

pub struct ScriptedModel {
    addr: SocketAddr,
    script: Arc<Script>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedModel {
    pub async fn start(replies: Vec<Reply>) -> ScriptedModel {
        let script = Arc::new(Script { replies: Mutex::new(replies.into()), requests: Mutex::default() });
        let app = Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the scripted model");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ScriptedModel { addr, script, task }
    }

    /// Base URL for [`ProviderKind`] `kind`.
    pub fn base_url(&self, kind: ProviderKind) -> String {
        match kind {
            ProviderKind::Openai => format!("http://{}/v1", self.addr),
            ProviderKind::Anthropic => format!("http://{}", self.addr),
        }
    }

    /// An agent config pointing at this server, with short retry delays.
    pub fn config(&self, kind: ProviderKind) -> AgentConfig {
        AgentConfig {
            provider: kind,
            base_url: self.base_url(kind),
            model: "scripted".into(),
            api_key: Some("sk-test-secret-key".into()),
            retry_base_delay_ms: 10,
            retry_max_delay_ms: 50,
            ..AgentConfig::default()
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.script.requests.lock().expect("requests lock").clone()
    }

    /// Replies not played yet.
    pub fn remaining(&self) -> usize {
        self.script.replies.lock().expect("replies lock").len()
    }
}

impl Drop for ScriptedModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn next(script: &Script, format: Format, headers: &HeaderMap, body: Value) -> (Option<Reply>, usize) {
    let headers = headers.iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect();
    let mut reqs = script.requests.lock().expect("requests lock");
    reqs.push(Recorded { format, headers, body });
    (script.replies.lock().expect("replies lock").pop_front(), reqs.len())
}

async fn openai(State(s): State<Arc<Script>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let input = body.to_string().len() / 4;
    let (reply, n) = next(&s, Format::Openai, &headers, body);
    wire::openai(reply, n, input)
}

async fn anthropic(State(s): State<Arc<Script>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let input = body.to_string().len() / 4;
    let (reply, n) = next(&s, Format::Anthropic, &headers, body);
    wire::anthropic(reply, n, input)
}
