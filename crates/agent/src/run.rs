//! The loop of one run: prompt → model turn → tool calls → results → next turn, until the model
//! calls `finish` (or answers without tools), a budget is spent, or the run is cancelled.
//!
//! Budgets: `max_steps` model turns, `max_tokens` reported tokens, `max_wall_seconds`. A model
//! request that fails retryably is retried per [`RetryPolicy`]; once the retries are spent the
//! run fails with the last error as its reason. A malformed tool call (unknown tool, arguments
//! that are not a JSON object) and a failing tool are answered with an error result, which the
//! model reads and reacts to. Every message is emitted as [`AgentEvent::Message`] for storage;
//! tool calls interrupted by a cancel get an error result, so the stored history stays valid.

use crate::context::fit;
use crate::message::{Message, ToolCall, Usage};
use crate::provider::{Model, ProviderError, Request};
use crate::retry::RetryPolicy;
use crate::tools::{specs, truncate_middle, ToolOutput, Tools, FINISH};
use crate::AgentConfig;
use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Running, Self::Succeeded, Self::Failed, Self::Cancelled].into_iter().find(|v| v.as_str() == s)
    }
    /// A run only ever leaves `running`, once.
    pub fn can_become(self, to: RunStatus) -> bool {
        self == Self::Running && to != Self::Running
    }
}

/// What the loop reports while it works.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// A piece of assistant text, as it streams.
    Text(String),
    ToolCall(ToolCall),
    ToolResult { call_id: String, name: String, output: String, is_error: bool, has_image: bool, paths: Vec<String> },
    /// A model request failed and will be retried after `delay_ms`.
    Retry { attempt: u32, delay_ms: u64, reason: String },
    /// A message to append to the stored conversation.
    Message(Message),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub status: RunStatus,
    /// The `finish` summary (or the final answer) of a succeeded run.
    pub summary: Option<String>,
    /// Why the run failed or was cancelled.
    pub reason: Option<String>,
    pub usage: Usage,
    pub steps: u32,
}

/// Everything one run needs.
pub struct RunContext<'a> {
    pub cfg: &'a AgentConfig,
    pub model: &'a Model,
    pub system: &'a str,
    pub tools: &'a dyn Tools,
    pub cancel: CancellationToken,
    pub events: UnboundedSender<AgentEvent>,
}

enum Stop {
    Cancelled(String),
    Failed(String),
}

impl RunContext<'_> {
    fn emit(&self, ev: AgentEvent) {
        // A gone receiver means nobody records the run any more; the loop still ends properly.
        let _ = self.events.send(ev);
    }

    fn push(&self, conv: &mut Vec<Message>, m: Message) {
        self.emit(AgentEvent::Message(m.clone()));
        conv.push(m);
    }

    /// Runs `prompt` after the stored `history`.
    pub async fn run(&self, history: Vec<Message>, prompt: String) -> RunOutcome {
        let deadline = Instant::now() + self.cfg.wall_time();
        let mut conv = history;
        let mut usage = Usage::default();
        let mut steps = 0;
        self.push(&mut conv, Message::user(prompt));
        let result = self.steps(&mut conv, &mut usage, &mut steps, deadline).await;
        let (status, summary, reason) = match result {
            Ok(summary) => (RunStatus::Succeeded, Some(summary), None),
            Err(Stop::Cancelled(r)) => (RunStatus::Cancelled, None, Some(r)),
            Err(Stop::Failed(r)) => (RunStatus::Failed, None, Some(r)),
        };
        RunOutcome { status, summary, reason, usage, steps }
    }

    async fn steps(&self, conv: &mut Vec<Message>, usage: &mut Usage, steps: &mut u32, deadline: Instant) -> Result<String, Stop> {
        let specs = specs();
        loop {
            if *steps >= self.cfg.max_steps {
                return Err(Stop::Failed(format!("step budget spent ({} model turns)", self.cfg.max_steps)));
            }
            if usage.total() >= self.cfg.max_tokens {
                return Err(Stop::Failed(format!("token budget spent ({} of {} tokens)", usage.total(), self.cfg.max_tokens)));
            }
            *steps += 1;
            let window = fit(conv, self.cfg.context_tokens);
            let turn = self.model_turn(&Request { system: self.system, messages: &window, tools: &specs }, deadline).await?;
            usage.add(turn.usage);
            let calls = turn.tool_calls.clone();
            self.push(conv, Message::Assistant { text: turn.text.clone(), tool_calls: turn.tool_calls });
            if calls.is_empty() {
                return Ok(turn.text);
            }
            let mut finished = None;
            for (i, call) in calls.iter().enumerate() {
                self.emit(AgentEvent::ToolCall(call.clone()));
                let out = match self.tool(call, deadline).await {
                    Ok(out) => out,
                    Err(stop) => {
                        // Answer every call of this turn, so the stored conversation stays valid.
                        for c in &calls[i..] {
                            self.record_result(conv, c, ToolOutput::error("interrupted: the run stopped before this call finished"));
                        }
                        return Err(stop);
                    }
                };
                if call.name == FINISH && !out.is_error {
                    finished = Some(out.text.clone());
                }
                self.record_result(conv, call, out);
            }
            if let Some(summary) = finished {
                return Ok(summary);
            }
        }
    }

    fn record_result(&self, conv: &mut Vec<Message>, call: &ToolCall, out: ToolOutput) {
        let text = truncate_middle(&out.text, self.cfg.tool_output_limit);
        self.emit(AgentEvent::ToolResult {
            call_id: call.id.clone(),
            name: call.name.clone(),
            output: text.clone(),
            is_error: out.is_error,
            has_image: out.image_png.is_some(),
            paths: out.paths,
        });
        let image_png_base64 = out.image_png.map(|png| base64::engine::general_purpose::STANDARD.encode(png));
        self.push(conv, Message::Tool { call_id: call.id.clone(), name: call.name.clone(), content: text, is_error: out.is_error, image_png_base64 });
    }

    /// One model request, retried per the policy.
    async fn model_turn(&self, req: &Request<'_>, deadline: Instant) -> Result<crate::provider::Turn, Stop> {
        let policy = RetryPolicy::from_config(self.cfg);
        let mut attempt = 0;
        loop {
            let mut on_text = |t: &str| self.emit(AgentEvent::Text(t.to_string()));
            let r = tokio::select! {
                r = self.model.turn(req, &mut on_text) => r,
                _ = self.cancel.cancelled() => return Err(self.cancelled()),
                _ = tokio::time::sleep_until(deadline) => return Err(self.out_of_time()),
            };
            let err = match r {
                Ok(turn) => return Ok(turn),
                Err(e) => e,
            };
            if !err.retryable() || attempt >= policy.max_retries {
                return Err(Stop::Failed(failure(&err, attempt)));
            }
            let delay = policy.delay(attempt, err.retry_after());
            if Instant::now() + delay > deadline {
                return Err(Stop::Failed(format!("{} (no wall time left to retry)", failure(&err, attempt))));
            }
            tracing::warn!(attempt, delay_ms = delay.as_millis() as u64, error = %err, "model request failed; retrying");
            self.emit(AgentEvent::Retry { attempt: attempt + 1, delay_ms: delay.as_millis() as u64, reason: err.to_string() });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.cancel.cancelled() => return Err(self.cancelled()),
            }
            attempt += 1;
        }
    }

    async fn tool(&self, call: &ToolCall, deadline: Instant) -> Result<ToolOutput, Stop> {
        let args = match parse_args(call) {
            Ok(a) => a,
            Err(msg) => return Ok(ToolOutput::error(msg)),
        };
        if call.name == FINISH {
            return Ok(match args["summary"].as_str() {
                Some(s) => ToolOutput::ok(s),
                None => ToolOutput::error("finish needs a `summary` string"),
            });
        }
        tokio::select! {
            out = self.tools.call(&call.name, args) => Ok(out),
            _ = self.cancel.cancelled() => Err(self.cancelled()),
            _ = tokio::time::sleep_until(deadline) => Err(self.out_of_time()),
        }
    }

    fn cancelled(&self) -> Stop {
        Stop::Cancelled("cancelled".into())
    }

    fn out_of_time(&self) -> Stop {
        Stop::Failed(format!("wall time budget spent ({} s)", self.cfg.max_wall_seconds))
    }
}

fn failure(err: &ProviderError, retries: u32) -> String {
    if err.retryable() {
        format!("model request failed after {retries} retries: {err}")
    } else {
        format!("model request failed: {err}")
    }
}

/// The arguments of a call as a JSON object, or the error the model is told.
fn parse_args(call: &ToolCall) -> Result<serde_json::Value, String> {
    if !specs().iter().any(|s| s.name == call.name) {
        let names: Vec<&str> = specs().iter().map(|s| s.name).collect();
        return Err(format!("unknown tool {:?}; the tools are: {}", call.name, names.join(", ")));
    }
    let raw = if call.arguments.trim().is_empty() { "{}" } else { call.arguments.as_str() };
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(format!("the arguments of {} must be a JSON object", call.name)),
        Err(e) => Err(format!("the arguments of {} are not valid JSON ({e}); call it again with a JSON object", call.name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: &str) -> ToolCall {
        ToolCall { id: "1".into(), name: name.into(), arguments: args.into() }
    }

    #[test]
    fn argument_errors_name_the_problem() {
        assert!(parse_args(&call("shell", "{\"command\":\"ls\"}")).is_ok());
        assert!(parse_args(&call("ports", "")).is_ok());
        assert!(parse_args(&call("rm_rf", "{}")).unwrap_err().contains("unknown tool \"rm_rf\""));
        assert!(parse_args(&call("shell", "{\"command\": ")).unwrap_err().contains("not valid JSON"));
        assert!(parse_args(&call("shell", "[1]")).unwrap_err().contains("JSON object"));
    }

    #[test]
    fn status_machine() {
        use RunStatus::*;
        assert!(Running.can_become(Succeeded) && Running.can_become(Failed) && Running.can_become(Cancelled));
        assert!(!Running.can_become(Running));
        for done in [Succeeded, Failed, Cancelled] {
            assert!(!done.can_become(Running) && !done.can_become(Failed), "{done:?}");
            assert_eq!(RunStatus::parse(done.as_str()), Some(done));
        }
    }
}
