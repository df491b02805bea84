//! `mayfly bench --throughput` also measures port publishing: how long after a program in the
//! guest calls `listen()` the session's events say `port_opened`, and how long until its preview
//! URL first answers. Each run starts a fresh HTTP server (Python's `http.server`) on a new port;
//! the server writes the guest's clock right after `listen()` returned, and the host converts it
//! with the guest-minus-host clock offset, estimated from `date` round trips (its uncertainty,
//! half the best round trip, is reported beside the figures). The preview is polled every 10 ms.

use super::session::Running;
use super::stats::{summarize, Summary};
use super::throughput::{exec_argv, exec_ok};
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;
use std::time::{Duration, SystemTime};
use tokio_tungstenite::tungstenite::Message;

/// Runs at least this many times (`--throughput-runs` if more).
pub const MIN_RUNS: usize = 8;
/// The first port the runs listen on (run `i` uses `FIRST_PORT + i`).
const FIRST_PORT: u16 = 9100;
/// The preview is polled this often until it answers.
const POLL: Duration = Duration::from_millis(10);
/// How long one run may take before the benchmark gives up (TCG on a loaded host).
const RUN_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Debug, Serialize)]
pub struct PortPublish {
    /// `listen()` in the guest → `port_opened` on the session's events (WebSocket).
    pub listen_to_port_opened: Summary,
    /// `listen()` in the guest → the first `200` through the preview proxy.
    pub listen_to_first_preview_answer: Summary,
    /// Half the best `date` round trip: each figure is ± this much.
    pub clock_uncertainty_ms: f64,
}

pub async fn run(r: &Running, id: &str, runs: usize) -> anyhow::Result<PortPublish> {
    let (offset, uncertainty) = clock_offset(r, id).await?;
    let mut events = r.events(id).await?;
    let mut to_event = Vec::new();
    let mut to_answer = Vec::new();
    for i in 0..runs {
        let port = FIRST_PORT + i as u16;
        let stamp = format!("/tmp/mayfly-bench-listen-{port}");
        let (preview, host) = r.preview_client(id, port)?;
        let url = format!("http://{host}/");
        let poller = tokio::spawn(first_answer(preview, url, r.token()));
        let _stop_polling = AbortOnDrop(poller.abort_handle());
        let server = format!(
            "# mayfly-bench-port-{port}\n\
             import http.server as h, time\n\
             s = h.HTTPServer(('0.0.0.0', {port}), h.SimpleHTTPRequestHandler)\n\
             open('{stamp}', 'w').write(repr(time.time()))\n\
             s.serve_forever()\n"
        );
        exec_ok(r, id, &format!("cd /tmp && setsid nohup python3 -c \"{server}\" >/dev/null 2>&1 </dev/null &")).await?;
        let event_at = tokio::time::timeout(RUN_DEADLINE, port_opened(&mut events, port))
            .await
            .map_err(|_| anyhow::anyhow!("no port_opened for {port} within {RUN_DEADLINE:?}"))??;
        let answered_at = tokio::time::timeout(RUN_DEADLINE, poller)
            .await
            .map_err(|_| anyhow::anyhow!("the preview of {port} did not answer within {RUN_DEADLINE:?}"))???;
        let listened: f64 = exec_ok(r, id, &format!("cat {stamp}")).await?.trim().parse()?;
        let listened_host = listened - offset;
        to_event.push(since(listened_host, event_at));
        to_answer.push(since(listened_host, answered_at));
        // `[m]` keeps the pattern from matching the shell that runs pkill.
        exec_ok(r, id, &format!("pkill -f '[m]ayfly-bench-port-{port}'; rm -f {stamp}; true")).await?;
    }
    Ok(PortPublish {
        listen_to_port_opened: summarize(&to_event),
        listen_to_first_preview_answer: summarize(&to_answer),
        clock_uncertainty_ms: (uncertainty * 100_000.0).round() / 100.0,
    })
}

/// Stops the preview poller when a run ends early (an error).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Host time minus the guest's `listen()` (host clock); a negative difference (the offset's
/// uncertainty) counts as zero.
fn since(listened_host: f64, at: SystemTime) -> Duration {
    Duration::from_secs_f64((unix_secs(at) - listened_host).max(0.0))
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The guest clock minus the host clock (seconds) and its uncertainty, from the best of ten
/// `date` round trips (exec'd directly: a shell's start-up under TCG would widen the bracket).
async fn clock_offset(r: &Running, id: &str) -> anyhow::Result<(f64, f64)> {
    let mut best = (0.0, f64::MAX);
    for _ in 0..10 {
        let before = unix_secs(SystemTime::now());
        let guest: f64 = exec_argv(r, id, &["date", "+%s.%N"]).await?.trim().parse()?;
        let half = (unix_secs(SystemTime::now()) - before) / 2.0;
        if half < best.1 {
            best = (guest - (before + half), half);
        }
    }
    Ok(best)
}

/// Reads the session's events until `port_opened` for `port`; returns when it arrived.
async fn port_opened(events: &mut super::session::Ws, port: u16) -> anyhow::Result<SystemTime> {
    loop {
        match events.next().await {
            Some(Ok(Message::Text(t))) => {
                let ev: Value = serde_json::from_str(&t)?;
                if ev["type"] == "port_opened" && ev["port"]["port"] == port {
                    return Ok(SystemTime::now());
                }
            }
            Some(Ok(_)) => {}
            other => anyhow::bail!("the session's events ended: {other:?}"),
        }
    }
}

/// Polls `url` through the preview proxy until it answers 200; returns when it did.
async fn first_answer(client: reqwest::Client, url: String, token: &'static str) -> anyhow::Result<SystemTime> {
    loop {
        if let Ok(resp) = client.get(&url).bearer_auth(token).send().await {
            if resp.status() == 200 {
                return Ok(SystemTime::now());
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

impl std::fmt::Display for PortPublish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "Port publishing (guest clock ± {:.1} ms):", self.clock_uncertainty_ms)?;
        writeln!(f, "  listen() → port_opened event     {}", self.listen_to_port_opened)?;
        write!(f, "  listen() → first preview answer  {}", self.listen_to_first_preview_answer)
    }
}
