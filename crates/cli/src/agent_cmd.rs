//! `mayfly agent ID "prompt"`: starts a coding-agent run and streams it from the session's event
//! stream: assistant text as it arrives on stdout, tool calls and results (shortened) on stderr.
//! Ctrl-C cancels the run. Exit code 0 when the run succeeded, 1 otherwise.

use crate::client::Client;
use anyhow::Context;
use futures::StreamExt;
use mayfly_proto::api::{AgentRunStatus, SessionEvent};
use std::io::Write;
use std::process::ExitCode;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Lines of a tool result shown.
const RESULT_LINES: usize = 8;

fn short(s: &str, max: usize) -> String {
    let one: String = s.chars().map(|c| if c == '\n' { ' ' } else { c }).collect();
    if one.chars().count() <= max {
        one
    } else {
        format!("{}…", one.chars().take(max).collect::<String>())
    }
}

pub async fn run(client: &Client, id: &str, prompt: &str) -> anyhow::Result<ExitCode> {
    // Subscribe first, so the run's first events are not missed.
    let mut req = client.events_url(id).into_client_request()?;
    req.headers_mut().insert("authorization", format!("Bearer {}", client.token()).parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.with_context(|| format!("following session {id}"))?;
    let run = client.start_agent_run(id, prompt).await?;
    eprintln!("agent run {} started", run.id);
    let mut cancelled = false;
    let mut out = std::io::stdout();
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = tokio::signal::ctrl_c(), if !cancelled => {
                cancelled = true;
                eprintln!("\ncancelling…");
                client.cancel_agent_run(id, &run.id).await?;
                continue;
            }
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e).context("event stream failed"),
            None => anyhow::bail!("the event stream ended before the run did"),
        };
        let Ok(ev) = serde_json::from_str::<SessionEvent>(&text) else { continue };
        match ev {
            SessionEvent::AgentText { run: r, delta, .. } if r == run.id => {
                print!("{delta}");
                let _ = out.flush();
            }
            SessionEvent::AgentToolCall { run: r, name, arguments, .. } if r == run.id => {
                eprintln!("\n▸ {name} {}", short(&arguments, 160));
            }
            SessionEvent::AgentToolResult { run: r, output, is_error, .. } if r == run.id => {
                let mark = if is_error { "✗" } else { "✓" };
                let lines: Vec<&str> = output.lines().take(RESULT_LINES).collect();
                for (i, l) in lines.iter().enumerate() {
                    eprintln!("  {} {}", if i == 0 { mark } else { " " }, short(l, 160));
                }
                if output.lines().count() > RESULT_LINES {
                    eprintln!("    …");
                }
            }
            SessionEvent::AgentRetry { run: r, attempt, delay_ms, reason, .. } if r == run.id => {
                eprintln!("\n(model request failed: {reason}; retry {attempt} in {delay_ms} ms)");
            }
            SessionEvent::AgentStatus { run: r, status, reason, summary, .. } if r == run.id && status.is_final() => {
                println!();
                if let Some(s) = summary {
                    println!("{s}");
                }
                eprintln!("run {}: {}{}", run.id, status.as_str(), reason.map(|r| format!(" ({r})")).unwrap_or_default());
                return Ok(if status == AgentRunStatus::Succeeded { ExitCode::SUCCESS } else { ExitCode::FAILURE });
            }
            SessionEvent::State { to, .. } if to.is_terminal() => anyhow::bail!("session {id} ended"),
            _ => {}
        }
    }
}
