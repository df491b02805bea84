//! Session benchmarks through a real server (in this process, on a free port) and real HTTP and
//! WebSocket clients: create → first shell byte (pool hit, pool miss = restore, cold boot),
//! keystroke echo, fork, idle memory per session, teardown.

use super::stats::{rss_pss_mib, summarize, Summary};
use futures::{SinkExt, StreamExt};
use mayfly_server::{Server, ServerConfig};
use serde::Serialize;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "bench-token";

/// A WebSocket to the benchmark's server.
pub(super) type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Debug, Serialize)]
pub struct Mode {
    pub create_to_first_shell_byte: Summary,
    pub create_api_call: Summary,
}

#[derive(Debug, Serialize)]
pub struct SessionBench {
    pub image: String,
    pub pool_hit: Mode,
    pub pool_miss_restore: Mode,
    pub cold_boot: Mode,
    pub keystroke_echo: Summary,
    /// `POST …/fork` of an idle session until the fork is ready.
    pub fork: Summary,
    pub idle_session_rss_mib: f64,
    pub idle_session_pss_mib: f64,
    pub memory_budget_mib: u64,
    pub idle_sessions_fitting_budget: u64,
    pub teardown: Summary,
}

pub(super) struct Running {
    pub(super) base: String,
    ws: String,
    pub(super) http: reqwest::Client,
    pub(super) data: std::path::PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub(super) async fn start(data_dir: &Path, image: &str, pool: usize, templates: bool, tag: &str) -> anyhow::Result<Running> {
    start_with(data_dir, image, pool, templates, tag, 32, 0).await
}

/// A server in this process; `max_sessions` must allow every session the benchmark holds at once.
pub(super) async fn start_with(
    data_dir: &Path,
    image: &str,
    pool: usize,
    templates: bool,
    tag: &str,
    max_sessions: usize,
    pause_idle_seconds: u64,
) -> anyhow::Result<Running> {
    let data = data_dir.join(format!("bench-server-{tag}"));
    let _ = std::fs::remove_dir_all(&data);
    let mut cfg = ServerConfig::with_data_dir(&data);
    cfg.bind = "127.0.0.1:0".parse()?;
    cfg.token = Some(TOKEN.into());
    cfg.image_data_dir = Some(data_dir.to_path_buf());
    cfg.default_image = image.into();
    cfg.pool_size = pool;
    cfg.templates = templates;
    cfg.max_sessions = max_sessions;
    // The benchmark's sessions end with its server (its data dir is scratch).
    cfg.on_shutdown = mayfly_server::config::OnShutdown::End;
    // Measured sessions pause only where the benchmark asks for it (its waits are not activity).
    cfg.pause_idle_seconds = pause_idle_seconds;
    let server = Server::bind(cfg).await?;
    let addr = server.local_addr();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    let http = reqwest::Client::builder()
        .default_headers([(reqwest::header::AUTHORIZATION, format!("Bearer {TOKEN}").parse()?)].into_iter().collect())
        .build()?;
    Ok(Running { base: format!("http://{addr}"), ws: format!("ws://{addr}"), http, data, stop, task })
}

impl Running {
    /// The server's address.
    pub(super) fn addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        Ok(self.base.trim_start_matches("http://").parse()?)
    }

    /// A client for the preview of `port` in session `id` (its host name resolved to this
    /// server, redirects not followed), and the preview's `host:port`.
    pub(super) fn preview_client(&self, id: &str, port: u16) -> anyhow::Result<(reqwest::Client, String)> {
        let name = format!("{port}-{id}.localhost");
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).resolve(&name, self.addr()?).build()?;
        Ok((client, format!("{name}:{}", self.addr()?.port())))
    }

    /// The server token the benchmark's clients send.
    pub(super) fn token(&self) -> &'static str {
        TOKEN
    }

    async fn pool_ready(&self, image: &str) -> anyhow::Result<(u64, bool)> {
        let v: Value = self.http.get(format!("{}/api/v1/pool", self.base)).send().await?.json().await?;
        let p = v.as_array().and_then(|a| a.iter().find(|p| p["image"] == image)).cloned().unwrap_or(Value::Null);
        Ok((p["ready"].as_u64().unwrap_or(0), p["template"].as_bool().unwrap_or(false)))
    }

    pub(super) async fn wait_pool(&self, image: &str, ready: u64, template: bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let (r, t) = self.pool_ready(image).await?;
            if r >= ready && (t || !template) {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "pool never became ready ({r} ready, template {t})");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Create → PTY WebSocket → first byte. Returns (total, create call, session id).
    pub(super) async fn create_to_shell(&self) -> anyhow::Result<(Duration, Duration, String)> {
        let t0 = Instant::now();
        let resp = self.http.post(format!("{}/api/v1/sessions", self.base)).body("{}").header("content-type", "application/json").send().await?;
        anyhow::ensure!(resp.status().as_u16() == 201, "create: {}", resp.text().await?);
        let s: Value = resp.json().await?;
        let created = t0.elapsed();
        let id = s["id"].as_str().unwrap_or_default().to_string();
        let mut ws = self.pty(&id).await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) if !b.is_empty() => break,
                Some(Ok(_)) => continue,
                other => anyhow::bail!("PTY closed before the first byte: {other:?}"),
            }
        }
        let total = t0.elapsed();
        drop(ws);
        Ok((total, created, id))
    }

    async fn pty(&self, id: &str) -> anyhow::Result<Ws> {
        self.websocket(&format!("/api/v1/sessions/{id}/pty?cols=80&rows=24")).await
    }

    /// The session's events (`GET …/events` as a WebSocket).
    pub(super) async fn events(&self, id: &str) -> anyhow::Result<Ws> {
        self.websocket(&format!("/api/v1/sessions/{id}/events")).await
    }

    async fn websocket(&self, path: &str) -> anyhow::Result<Ws> {
        let mut req = format!("{}{path}", self.ws).into_client_request()?;
        req.headers_mut().insert("authorization", format!("Bearer {TOKEN}").parse()?);
        Ok(tokio_tungstenite::connect_async(req).await?.0)
    }

    pub(super) async fn delete(&self, id: &str) -> anyhow::Result<Duration> {
        let t = Instant::now();
        let r = self.http.delete(format!("{}/api/v1/sessions/{id}", self.base)).send().await?;
        anyhow::ensure!(r.status().as_u16() == 204, "delete {id}: {}", r.status());
        Ok(t.elapsed())
    }

    /// QEMU pids of the live VMs (from their run directories).
    pub(super) fn vm_pids(&self) -> Vec<u32> {
        let Ok(rd) = std::fs::read_dir(self.data.join("vms")) else { return Vec::new() };
        rd.flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with("p-"))
            .filter_map(|e| mayfly_vm::rundir::VmRecord::load(&e.path().join("vm.json")).ok())
            .map(|r| r.pid)
            .collect()
    }

    pub(super) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

async fn measure_mode(r: &Running, image: &str, runs: usize, pool: u64, teardown: &mut Vec<Duration>) -> anyhow::Result<Mode> {
    let mut total = Vec::new();
    let mut api = Vec::new();
    for i in 0..runs {
        if pool > 0 {
            r.wait_pool(image, pool, true).await?;
        }
        let (t, c, id) = r.create_to_shell().await?;
        eprintln!("    run {}/{}: first shell byte after {} ms (create call {} ms)", i + 1, runs, t.as_millis(), c.as_millis());
        total.push(t);
        api.push(c);
        teardown.push(r.delete(&id).await?);
    }
    Ok(Mode { create_to_first_shell_byte: summarize(&total), create_api_call: summarize(&api) })
}

pub async fn run(data_dir: &Path, image: &str, runs: usize, cold_runs: usize, budget_mib: u64) -> anyhow::Result<SessionBench> {
    let mut teardown = Vec::new();

    eprintln!("  pool hit (pool of 1, refilled before each create)…");
    let r = start(data_dir, image, 1, true, "pool").await?;
    let pool_hit = measure_mode(&r, image, runs, 1, &mut teardown).await?;
    r.stop().await;

    eprintln!("  pool miss (no pool: restore from the template)…");
    let r = start(data_dir, image, 0, true, "restore").await?;
    // The first create cold-boots and builds the template; wait for it before timing.
    let (_, _, id) = r.create_to_shell().await?;
    r.delete(&id).await?;
    r.wait_pool(image, 0, true).await?;
    let pool_miss = measure_mode(&r, image, runs, 0, &mut teardown).await?;

    eprintln!("  keystroke echo and idle memory…");
    let (_, _, id) = r.create_to_shell().await?;
    let mut ws = r.pty(&id).await?;
    // Drain the prompt.
    let _ = tokio::time::timeout(Duration::from_millis(1500), async { while ws.next().await.is_some() {} }).await;
    let mut echo = Vec::new();
    for i in 0..100u32 {
        let c = b'a' + (i % 26) as u8;
        let t = Instant::now();
        ws.send(Message::Binary(vec![c])).await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) if b.contains(&c) => break,
                Ok(Some(Ok(_))) => continue,
                other => anyhow::bail!("no echo: {other:?}"),
            }
        }
        echo.push(t.elapsed());
    }
    ws.send(Message::Binary(b"\x15".to_vec())).await?; // clear the line
    drop(ws);
    // Idle memory: a few sessions at rest, measured together (shared pages count once in PSS).
    let mut ids = vec![id];
    for _ in 0..3 {
        ids.push(r.create_to_shell().await?.2);
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mem: Vec<(f64, f64)> = r.vm_pids().into_iter().map(rss_pss_mib).collect();
    let n = mem.len().max(1) as f64;
    let rss = mem.iter().map(|m| m.0).sum::<f64>() / n;
    let pss = mem.iter().map(|m| m.1).sum::<f64>() / n;
    eprintln!("  fork of an idle session…");
    let mut fork = Vec::new();
    for i in 0..runs.min(10) {
        let t = Instant::now();
        let resp = r.http.post(format!("{}/api/v1/sessions/{}/fork", r.base, ids[0])).send().await?;
        anyhow::ensure!(resp.status().as_u16() == 201, "fork: {}", resp.text().await?);
        fork.push(t.elapsed());
        let s: Value = resp.json().await?;
        eprintln!("    fork {}/{}: {} ms", i + 1, runs.min(10), t.elapsed().as_millis());
        teardown.push(r.delete(s["id"].as_str().unwrap_or_default()).await?);
    }
    for id in ids {
        teardown.push(r.delete(&id).await?);
    }
    r.stop().await;

    eprintln!("  cold boot (templates off)…");
    let r = start(data_dir, image, 0, false, "cold").await?;
    let cold = measure_mode(&r, image, cold_runs, 0, &mut teardown).await?;
    r.stop().await;

    let round = |v: f64| (v * 10.0).round() / 10.0;
    Ok(SessionBench {
        image: image.to_string(),
        pool_hit,
        pool_miss_restore: pool_miss,
        cold_boot: cold,
        keystroke_echo: summarize(&echo),
        fork: summarize(&fork),
        idle_session_rss_mib: round(rss),
        idle_session_pss_mib: round(pss),
        memory_budget_mib: budget_mib,
        idle_sessions_fitting_budget: if pss > 0.0 { (budget_mib as f64 / pss) as u64 } else { 0 },
        teardown: summarize(&teardown),
    })
}

impl std::fmt::Display for SessionBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "Sessions ({} image, through the API and the PTY WebSocket):", self.image)?;
        writeln!(f, "  create → first shell byte, pool hit   {}", self.pool_hit.create_to_first_shell_byte)?;
        writeln!(f, "  create → first shell byte, pool miss  {}", self.pool_miss_restore.create_to_first_shell_byte)?;
        writeln!(f, "  create → first shell byte, cold boot  {}", self.cold_boot.create_to_first_shell_byte)?;
        writeln!(f, "  keystroke echo                        {}", self.keystroke_echo)?;
        writeln!(f, "  fork (POST …/fork until ready)        {}", self.fork)?;
        writeln!(f, "  idle session                          RSS {:.1} MiB, PSS {:.1} MiB", self.idle_session_rss_mib, self.idle_session_pss_mib)?;
        writeln!(f, "  idle sessions in {} MiB               {}", self.memory_budget_mib, self.idle_sessions_fitting_budget)?;
        write!(f, "  teardown (DELETE)                     {}", self.teardown)
    }
}
