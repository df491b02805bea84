//! Streaming model clients. One request = one model turn: the conversation and the tool specs
//! go out, text deltas come back as they stream (through `on_text`), and the turn ends with the
//! whole text, the tool calls and the token usage.
//!
//! * [`openai`] — Chat Completions with `stream: true`, `tools`, `tool_calls` deltas.
//! * [`anthropic`] — Messages with `stream: true`, `tool_use` / `tool_result` blocks.

pub mod anthropic;
pub mod openai;

use crate::message::{Message, ToolCall, Usage};
use crate::retry::{retry_after, retryable_status};
use crate::tools::ToolSpec;
use crate::{AgentConfig, ProviderKind};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("model server answered {status}: {message}")]
    Status { status: u16, message: String, retry_after: Option<Duration> },
    #[error("cannot reach the model server: {0}")]
    Connect(String),
    #[error("the model server did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the model server sent something unreadable: {0}")]
    Malformed(String),
    #[error("invalid agent configuration: {0}")]
    Config(String),
}

impl ProviderError {
    pub fn retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => retryable_status(*status),
            Self::Connect(_) | Self::Timeout(_) | Self::Malformed(_) => true,
            Self::Config(_) => false,
        }
    }
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// What one model turn produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Turn {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
}

/// A configured model client.
pub struct Model {
    http: reqwest::Client,
    kind: ProviderKind,
    base_url: String,
    model: String,
    api_key: Option<String>,
    max_output_tokens: u32,
    timeout: Duration,
}

/// One request: what the model is told and shown.
pub struct Request<'a> {
    pub system: &'a str,
    pub messages: &'a [Message],
    pub tools: &'a [ToolSpec],
}

impl Model {
    pub fn new(cfg: &AgentConfig) -> Result<Self, ProviderError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ProviderError::Config(format!("HTTP client: {e}")))?;
        if cfg.model.is_empty() {
            return Err(ProviderError::Config("no model configured (MAYFLY_AGENT_MODEL)".into()));
        }
        Ok(Self {
            http,
            kind: cfg.provider,
            base_url: cfg.base_url.trim_end_matches('/').to_string(),
            model: cfg.model.clone(),
            api_key: cfg.api_key.clone(),
            max_output_tokens: cfg.max_output_tokens,
            timeout: cfg.request_timeout(),
        })
    }

    /// Runs one turn; `on_text` sees each text delta as it arrives.
    pub async fn turn(&self, req: &Request<'_>, on_text: &mut (dyn FnMut(&str) + Send)) -> Result<Turn, ProviderError> {
        let fut = async {
            let (url, body) = match self.kind {
                ProviderKind::Openai => (format!("{}/chat/completions", self.base_url), openai::body(&self.model, self.max_output_tokens, req)),
                ProviderKind::Anthropic => (format!("{}/v1/messages", self.base_url), anthropic::body(&self.model, self.max_output_tokens, req)),
            };
            let mut rb = self.http.post(&url).json(&body).header("accept", "text/event-stream");
            rb = match (self.kind, &self.api_key) {
                (ProviderKind::Openai, Some(k)) => rb.bearer_auth(k),
                (ProviderKind::Anthropic, Some(k)) => rb.header("x-api-key", k),
                (_, None) => rb,
            };
            if self.kind == ProviderKind::Anthropic {
                rb = rb.header("anthropic-version", "2023-06-01");
            }
            let resp = rb.send().await.map_err(|e| ProviderError::Connect(without_url(&e)))?;
            let status = resp.status();
            if !status.is_success() {
                let ra = retry_after(resp.headers());
                let text = resp.text().await.unwrap_or_default();
                return Err(ProviderError::Status { status: status.as_u16(), message: error_message(&text), retry_after: ra });
            }
            match self.kind {
                ProviderKind::Openai => openai::read_stream(resp, on_text).await,
                ProviderKind::Anthropic => anthropic::read_stream(resp, on_text).await,
            }
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ProviderError::Timeout(self.timeout)),
        }
    }
}

/// A reqwest error without its URL (which is harmless, but keep messages short).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The message of an error body (`{"error":{"message":…}}` in both formats), else the text.
fn error_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let msg = parsed
        .as_ref()
        .and_then(|v| v["error"]["message"].as_str().or(v["error"].as_str()).or(v["message"].as_str()))
        .map(str::to_string)
        .unwrap_or_else(|| body.trim().to_string());
    let mut msg: String = msg.chars().take(300).collect();
    if msg.is_empty() {
        msg = "(empty body)".into();
    }
    msg
}

/// Reads an SSE response body, handing each event to `f`; stops when `f` says so.
pub(crate) async fn each_event(
    resp: reqwest::Response,
    mut f: impl FnMut(crate::sse::SseEvent) -> Result<bool, ProviderError>,
) -> Result<(), ProviderError> {
    use futures::StreamExt;
    let mut parser = crate::sse::SseParser::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ProviderError::Connect(without_url(&e)))?;
        for ev in parser.push(&chunk) {
            if f(ev)? {
                return Ok(());
            }
        }
    }
    if let Some(ev) = parser.finish() {
        if f(ev)? {
            return Ok(());
        }
    }
    Err(ProviderError::Malformed("the stream ended before the reply was complete".into()))
}

pub(crate) fn parse_json(data: &str) -> Result<serde_json::Value, ProviderError> {
    serde_json::from_str(data).map_err(|e| {
        let shown: String = data.chars().take(80).collect();
        ProviderError::Malformed(format!("{e} in {shown:?}"))
    })
}
