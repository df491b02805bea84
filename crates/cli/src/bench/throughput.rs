//! `mayfly bench --throughput`: bulk data through the guest channel, side by side with the same
//! transfer inside the guest. One session serves a file of random bytes with a real HTTP server
//! (Python's `http.server`) on the guest's loopback; the benchmark then downloads it
//!
//! * inside the guest over loopback (bash's `/dev/tcp` into `cat`: no client overhead worth
//!   naming), timed by the guest's own clock — the ceiling the channel is compared against;
//! * through the preview proxy (`<port>-<id>.localhost`), as a browser would;
//! * through the files API (`GET …/files?path=`), as the IDE's download does;
//!
//! and uploads the same number of bytes through the files API. Nothing is asserted: the figures
//! are printed and written to JSON, each with its ratio to the in-guest figure.

use super::session::Running;
use serde::Serialize;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The port the guest's file server listens on.
const PORT: u16 = 8093;

#[derive(Debug, Serialize)]
pub struct ThroughputBench {
    pub bytes: u64,
    pub runs: usize,
    /// In-guest loopback download: the ceiling.
    pub in_guest_loopback: Rate,
    pub preview_download: Rate,
    pub files_api_download: Rate,
    pub files_api_upload: Rate,
    /// p50 of each through-the-channel figure divided by the in-guest p50.
    pub preview_vs_in_guest: f64,
    pub files_download_vs_in_guest: f64,
    pub files_upload_vs_in_guest: f64,
}

pub async fn run(r: &Running, id: &str, mib: u64, runs: usize) -> anyhow::Result<ThroughputBench> {
    let bytes = mib << 20;
    let blob = "/tmp/mayfly-bench-blob";
    eprintln!("  writing {mib} MiB of random bytes in the guest…");
    exec_ok(r, id, &format!("head -c {bytes} /dev/urandom > {blob}")).await?;
    exec_ok(
        r,
        id,
        &format!("cd /tmp && setsid nohup python3 -m http.server {PORT} --bind 127.0.0.1 >/dev/null 2>&1 </dev/null &"),
    )
    .await?;
    wait_listening(r, id).await?;

    let (preview, host) = r.preview_client(id, PORT)?;
    let mut guest = Vec::new();
    let mut via_preview = Vec::new();
    let mut files_down = Vec::new();
    let mut files_up = Vec::new();
    for i in 0..runs {
        eprintln!("  run {}/{runs}…", i + 1);
        guest.push(in_guest_mbps(r, id, bytes).await?);
        via_preview.push(timed_get(&preview, &format!("http://{host}/mayfly-bench-blob"), Some(r.token()), bytes).await?);
        let files = format!("{}/api/v1/sessions/{id}/files?path={blob}", r.base);
        files_down.push(timed_get(&r.http, &files, None, bytes).await?);
        files_up.push(upload_mbps(r, id, bytes).await?);
    }
    let _ = exec_ok(r, id, &format!("rm -f {blob} {blob}.up; pkill -f 'http.server {PORT}'")).await;
    let (g, p, fd, fu) = (Rate::of(guest), Rate::of(via_preview), Rate::of(files_down), Rate::of(files_up));
    let ratio = |x: &Rate| if g.p50_mbps > 0.0 { round2(x.p50_mbps / g.p50_mbps) } else { 0.0 };
    Ok(ThroughputBench {
        bytes,
        runs,
        preview_vs_in_guest: ratio(&p),
        files_download_vs_in_guest: ratio(&fd),
        files_upload_vs_in_guest: ratio(&fu),
        in_guest_loopback: g,
        preview_download: p,
        files_api_download: fd,
        files_api_upload: fu,
    })
}

/// Transfer rates over the runs, MB/s (10^6 bytes per second).
#[derive(Debug, Serialize)]
pub struct Rate {
    pub p50_mbps: f64,
    pub min_mbps: f64,
    pub max_mbps: f64,
    pub n: usize,
}

impl Rate {
    fn of(mut v: Vec<f64>) -> Rate {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let at = |i: usize| v.get(i).copied().map(round2).unwrap_or(0.0);
        Rate { p50_mbps: at(n / 2), min_mbps: at(0), max_mbps: at(n.saturating_sub(1)), n }
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs.max(1e-9) / 1e6
}

/// Runs `bash -c script` in the guest; its stdout, or an error with its exit and stderr.
pub(super) async fn exec_ok(r: &Running, id: &str, script: &str) -> anyhow::Result<String> {
    exec_argv(r, id, &["bash", "-c", script]).await
}

/// Runs `argv` in the guest (no shell); its stdout, or an error with its exit and stderr.
pub(super) async fn exec_argv(r: &Running, id: &str, argv: &[&str]) -> anyhow::Result<String> {
    let body = serde_json::json!({ "cmd": argv, "timeout_seconds": 600 });
    let resp = r.http.post(format!("{}/api/v1/sessions/{id}/exec", r.base)).json(&body).send().await?;
    anyhow::ensure!(resp.status().is_success(), "exec {argv:?}: {}", resp.text().await?);
    let out: Value = resp.json().await?;
    anyhow::ensure!(out["exit_code"] == 0, "exec {argv:?}: {out}");
    Ok(out["stdout"].as_str().unwrap_or_default().to_string())
}

async fn wait_listening(r: &Running, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let probe = format!("exec 3<>/dev/tcp/127.0.0.1/{PORT}");
    loop {
        if exec_ok(r, id, &probe).await.is_ok() {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the guest's file server did not listen on {PORT} in 120 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One download inside the guest over loopback, timed by the guest (nanoseconds around `cat`).
async fn in_guest_mbps(r: &Running, id: &str, bytes: u64) -> anyhow::Result<f64> {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{PORT}; a=$(date +%s%N); \
         printf 'GET /mayfly-bench-blob HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' >&3; n=$(wc -c <&3); \
         b=$(date +%s%N); echo \"$n $((b - a))\""
    );
    let out = exec_ok(r, id, &script).await?;
    let mut it = out.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(n)), Some(Ok(ns))) = (it.next(), it.next()) else {
        anyhow::bail!("unexpected output from the in-guest download: {out:?}");
    };
    anyhow::ensure!(n >= bytes, "the in-guest download got {n} bytes of {bytes}");
    Ok(mbps(bytes, ns as f64 / 1e9))
}

async fn timed_get(http: &reqwest::Client, url: &str, bearer: Option<&str>, bytes: u64) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut req = http.get(url);
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    let mut resp = req.send().await?;
    anyhow::ensure!(resp.status().is_success(), "GET {url}: {}", resp.status());
    let mut got = 0u64;
    while let Some(chunk) = resp.chunk().await? {
        got += chunk.len() as u64;
    }
    anyhow::ensure!(got == bytes, "GET {url}: {got} bytes of {bytes}");
    Ok(mbps(bytes, t.elapsed().as_secs_f64()))
}

async fn upload_mbps(r: &Running, id: &str, bytes: u64) -> anyhow::Result<f64> {
    let body = vec![0x5au8; bytes as usize];
    let url = format!("{}/api/v1/sessions/{id}/files?path=/tmp/mayfly-bench-blob.up", r.base);
    let t = Instant::now();
    let resp = r.http.put(&url).body(body).send().await?;
    anyhow::ensure!(resp.status().is_success(), "PUT {url}: {}", resp.text().await?);
    Ok(mbps(bytes, t.elapsed().as_secs_f64()))
}

impl std::fmt::Display for ThroughputBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p50 = |s: &Rate| s.p50_mbps;
        writeln!(f, "Throughput ({} MiB, {} runs each; MB/s, p50 over runs):", self.bytes >> 20, self.runs)?;
        writeln!(f, "  in the guest over loopback   {:8.1}", p50(&self.in_guest_loopback))?;
        writeln!(f, "  preview proxy download       {:8.1}  ({:.2}× in-guest)", p50(&self.preview_download), self.preview_vs_in_guest)?;
        writeln!(f, "  files API download           {:8.1}  ({:.2}× in-guest)", p50(&self.files_api_download), self.files_download_vs_in_guest)?;
        write!(f, "  files API upload             {:8.1}  ({:.2}× in-guest)", p50(&self.files_api_upload), self.files_upload_vs_in_guest)
    }
}
