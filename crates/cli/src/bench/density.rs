//! `mayfly bench --density N`: what N idle sessions cost the host. Creates N sessions of the
//! image through a server in this process (templates on, no pool: every session is a clone, as
//! pool hand-overs are), waits until their VMs have settled, then measures over a 30 s window:
//! host busy % (`/proc/stat`), each QEMU's own CPU (`/proc/<pid>/stat`), this process's CPU (the
//! control plane), PSS per session (`smaps_rollup`), and exec `true` latency with N idle sessions
//! against the same with one. Nothing here asserts a speed: it prints and writes JSON.

use super::procstat::{busy_pct, host_ticks, process_cpu_secs};
use super::session::{start_with, Running};
use super::stats::{rss_pss_mib, summarize, Summary};
use serde::Serialize;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// The measuring window.
const WINDOW: Duration = Duration::from_secs(30);
/// Settling: sample QEMU CPU over this window until it is low ([`SETTLED_PCT`] per VM) or has
/// stopped falling (within [`STEADY`] of the previous window: a guest that polls never gets low).
const SETTLE_WINDOW: Duration = Duration::from_secs(5);
const SETTLED_PCT: f64 = 2.0;
const STEADY: f64 = 0.15;
/// Give up settling after this long and measure anyway (reported as `settled: false`).
const SETTLE_LIMIT: Duration = Duration::from_secs(300);
/// exec `true` calls per sample.
const EXECS: usize = 20;
/// Attempts per session: one failed create (a slow, loaded host) should not void the run.
const CREATE_TRIES: usize = 3;

#[derive(Debug, Serialize)]
pub struct DensityBench {
    pub image: String,
    pub sessions: usize,
    pub host_cpus: usize,
    /// Host busy % (all CPUs = 100) over a window before any session existed: other load.
    pub host_busy_pct_before: f64,
    /// Host busy % (all CPUs = 100) over the window with N idle sessions.
    pub host_busy_pct: f64,
    pub window_secs: u64,
    /// Seconds from the last session ready until the VMs had settled (or the limit).
    pub settle_secs: f64,
    pub settled: bool,
    /// Sum over all QEMUs, % of one CPU.
    pub qemu_cpu_pct_sum: f64,
    /// Per QEMU, % of one CPU: mean and max.
    pub qemu_cpu_pct_per_vm: f64,
    pub qemu_cpu_pct_max_vm: f64,
    /// The QEMUs' sum as % of the whole host (comparable with `host_busy_pct`).
    pub qemu_host_pct: f64,
    /// This process (the control plane and the benchmark), % of one CPU.
    pub server_cpu_pct: f64,
    pub pss_mib_per_session: f64,
    pub rss_mib_per_session: f64,
    pub exec_true_one_session: Summary,
    pub exec_true_n_sessions: Summary,
    /// p50 with N idle sessions / p50 with one.
    pub exec_p50_ratio: f64,
    /// True when the sessions were measured paused (`--pause-after`).
    pub paused: bool,
    /// One exec `true` on each of up to [`EXECS`] paused sessions: resume plus the round trip.
    /// Each had one exec before it paused, so this is the resume, not a first exec.
    pub exec_on_paused: Option<Summary>,
    /// The server's own time for those resumes (QMP `cont` and setting the guest clock), mean ms,
    /// from its `/metrics` counters.
    pub resume_ms_mean: Option<f64>,
    /// The first exec `true` on each new session (clones 2…N, no pool): a clone's first exec
    /// runs the guest's exec path for the first time in its QEMU (TCG translates it then).
    pub first_exec_new_clone: Option<Summary>,
    /// Creates that failed and were retried (each session gets [`CREATE_TRIES`]).
    pub create_failures: usize,
}

pub async fn run(data_dir: &Path, image: &str, n: usize, pause_after: Option<u64>) -> anyhow::Result<DensityBench> {
    anyhow::ensure!(n >= 1, "--density needs at least one session");
    let cpus = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1);
    eprintln!("  host load before any session ({} s)…", SETTLE_WINDOW.as_secs() * 2);
    let h0 = host_ticks().unwrap_or_default();
    tokio::time::sleep(SETTLE_WINDOW * 2).await;
    let host_busy_pct_before = busy_pct(h0, host_ticks().unwrap_or_default());

    if pause_after == Some(0) {
        anyhow::bail!("--pause-after must be at least 1 second");
    }
    let r = start_with(data_dir, image, 0, true, "density", n + 1, pause_after.unwrap_or(0)).await?;
    let result = measure(&r, image, n, cpus, host_busy_pct_before, pause_after).await;
    let ids = session_ids(&r).await.unwrap_or_default();
    eprintln!("  deleting {} sessions…", ids.len());
    for id in ids {
        let _ = r.delete(&id).await;
    }
    r.stop().await;
    result
}

async fn measure(
    r: &Running,
    image: &str,
    n: usize,
    cpus: usize,
    host_busy_pct_before: f64,
    pause_after: Option<u64>,
) -> anyhow::Result<DensityBench> {
    // The first session cold-boots and builds the template; the rest are clones of it.
    eprintln!("  session 1/{n} (cold boot, builds the template)…");
    let first = create(r).await?;
    wait_ready(r, &first).await?;
    r.wait_pool(image, 0, true).await?;
    settle(r, std::slice::from_ref(&first)).await;
    eprintln!("  exec `true` × {EXECS} with one session…");
    let one = exec_true(r, &first).await?;

    let mut ids = vec![first.clone()];
    let mut create_failures = 0;
    let mut first_execs = Vec::new();
    for i in 1..n {
        eprintln!("  session {}/{n}…", i + 1);
        let mut tries = 0;
        let id = loop {
            tries += 1;
            let made = match create(r).await {
                Ok(id) => wait_ready(r, &id).await.map(|()| id),
                Err(e) => Err(e),
            };
            match made {
                Ok(id) => break id,
                Err(e) if tries < CREATE_TRIES => {
                    create_failures += 1;
                    eprintln!("    create failed ({e:#}); retrying");
                }
                Err(e) => return Err(e.context(format!("session {} failed {CREATE_TRIES} times", i + 1))),
            }
        };
        // A paused session is one somebody used: its first exec (a clone's first, which pays
        // for translating the exec path in its new QEMU) is timed here, not after the pause.
        first_execs.push(exec_once(r, &id).await?);
        ids.push(id);
    }
    let (settle_secs, settled) = match pause_after {
        Some(secs) => {
            eprintln!("  waiting for {n} sessions to pause (pause_idle_seconds = {secs})…");
            wait_paused(r, n).await
        }
        None => {
            eprintln!("  waiting for {n} VMs to settle (≤ {SETTLED_PCT} % of a CPU each, or steady, over {} s)…", SETTLE_WINDOW.as_secs());
            settle(r, &ids).await
        }
    };

    eprintln!("  measuring {n} idle sessions for {} s…", WINDOW.as_secs());
    let pids = qemu_pids(r, &ids);
    anyhow::ensure!(pids.len() == n, "found {} QEMU processes for {n} sessions", pids.len());
    let me = std::process::id();
    let q0: Vec<Option<f64>> = pids.iter().map(|p| process_cpu_secs(*p)).collect();
    let s0 = process_cpu_secs(me);
    let h0 = host_ticks().unwrap_or_default();
    let t0 = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let q1: Vec<Option<f64>> = pids.iter().map(|p| process_cpu_secs(*p)).collect();
    let s1 = process_cpu_secs(me);
    let h1 = host_ticks().unwrap_or_default();
    let secs = t0.elapsed().as_secs_f64();
    let per_vm: Vec<f64> =
        q0.iter().zip(&q1).filter_map(|(a, b)| Some(100.0 * (b.as_ref()? - a.as_ref()?) / secs)).collect();
    anyhow::ensure!(per_vm.len() == n, "{} QEMU processes ended during the window", n - per_vm.len());
    let sum: f64 = per_vm.iter().sum();
    let mem: Vec<(f64, f64)> = pids.iter().map(|p| rss_pss_mib(*p)).collect();

    let mut resume_ms_mean = None;
    let exec_on_paused = match pause_after {
        Some(_) => {
            let sample: Vec<&String> = ids.iter().skip(1).take(EXECS).collect();
            eprintln!("  exec `true` on {} paused sessions (resume included)…", sample.len());
            let before = resume_counters(r).await;
            let mut times = Vec::new();
            for id in sample {
                times.push(exec_once(r, id).await?);
            }
            let after = resume_counters(r).await;
            resume_ms_mean = match (before, after) {
                (Some((n0, us0)), Some((n1, us1))) if n1 > n0 => Some(round2((us1 - us0) / (n1 - n0) / 1000.0)),
                _ => None,
            };
            Some(summarize(&times))
        }
        None => None,
    };
    eprintln!("  exec `true` × {EXECS} with {n} idle sessions…");
    let many = exec_true(r, &first).await?;
    let ratio = if one.p50_ms > 0.0 { many.p50_ms / one.p50_ms } else { 0.0 };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    Ok(DensityBench {
        image: image.to_string(),
        sessions: n,
        host_cpus: cpus,
        host_busy_pct_before: round2(host_busy_pct_before),
        host_busy_pct: round2(busy_pct(h0, h1)),
        window_secs: WINDOW.as_secs(),
        settle_secs: round2(settle_secs),
        settled,
        qemu_cpu_pct_sum: round2(sum),
        qemu_cpu_pct_per_vm: round2(sum / n as f64),
        qemu_cpu_pct_max_vm: round2(per_vm.iter().copied().fold(0.0, f64::max)),
        qemu_host_pct: round2(sum / cpus as f64),
        server_cpu_pct: round2(match (s0, s1) {
            (Some(a), Some(b)) => 100.0 * (b - a) / secs,
            _ => 0.0,
        }),
        pss_mib_per_session: round2(mean(&mem.iter().map(|m| m.1).collect::<Vec<_>>())),
        rss_mib_per_session: round2(mean(&mem.iter().map(|m| m.0).collect::<Vec<_>>())),
        exec_true_one_session: one,
        exec_true_n_sessions: many,
        exec_p50_ratio: round2(ratio),
        paused: pause_after.is_some(),
        exec_on_paused,
        resume_ms_mean,
        first_exec_new_clone: (!first_execs.is_empty()).then(|| summarize(&first_execs)),
        create_failures,
    })
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

pub(super) async fn create(r: &Running) -> anyhow::Result<String> {
    let resp = r
        .http
        .post(format!("{}/api/v1/sessions", r.base))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await?;
    anyhow::ensure!(resp.status().as_u16() == 201, "create: {}", resp.text().await?);
    let s: Value = resp.json().await?;
    s["id"].as_str().map(str::to_string).ok_or_else(|| anyhow::anyhow!("create answered no id: {s}"))
}

pub(super) async fn wait_ready(r: &Running, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let s: Value = r.http.get(format!("{}/api/v1/sessions/{id}", r.base)).send().await?.json().await?;
        match s["state"].as_str() {
            Some("ready") => return Ok(()),
            Some("creating") => {}
            other => anyhow::bail!("session {id} is {other:?}: {s}"),
        }
        anyhow::ensure!(Instant::now() < deadline, "session {id} not ready after 300 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn session_ids(r: &Running) -> anyhow::Result<Vec<String>> {
    let v: Value = r.http.get(format!("{}/api/v1/sessions", r.base)).send().await?.json().await?;
    Ok(v.as_array().into_iter().flatten().filter_map(|s| s["id"].as_str().map(str::to_string)).collect())
}

/// QEMU pids of these sessions' VMs (a session's run directory is named after it).
fn qemu_pids(r: &Running, ids: &[String]) -> Vec<u32> {
    ids.iter()
        .filter_map(|id| mayfly_vm::rundir::VmRecord::load(&r.data.join("vms").join(id).join("vm.json")).ok())
        .map(|rec| rec.pid)
        .collect()
}

/// Waits until the sessions' QEMUs use at most [`SETTLED_PCT`] of a CPU each on average over a
/// [`SETTLE_WINDOW`], or as much as in the window before (±[`STEADY`]); returns (seconds
/// waited, settled).
async fn settle(r: &Running, ids: &[String]) -> (f64, bool) {
    let t0 = Instant::now();
    let mut prev: Option<f64> = None;
    loop {
        let pids = qemu_pids(r, ids);
        let a: Vec<Option<f64>> = pids.iter().map(|p| process_cpu_secs(*p)).collect();
        let w = Instant::now();
        tokio::time::sleep(SETTLE_WINDOW).await;
        let secs = w.elapsed().as_secs_f64();
        let used: f64 = pids.iter().zip(&a).filter_map(|(p, a)| Some(process_cpu_secs(*p)? - (*a)?)).sum();
        let per_vm = 100.0 * used / secs / pids.len().max(1) as f64;
        if per_vm <= SETTLED_PCT || prev.is_some_and(|p| steady(p, per_vm)) {
            return (t0.elapsed().as_secs_f64(), true);
        }
        prev = Some(per_vm);
        if t0.elapsed() >= SETTLE_LIMIT {
            eprintln!(
                "    not settled after {} s ({per_vm:.1} % of a CPU per VM); measuring anyway",
                SETTLE_LIMIT.as_secs()
            );
            return (t0.elapsed().as_secs_f64(), false);
        }
    }
}

/// Two successive windows' CPU figures differ by at most [`STEADY`] of the earlier one.
fn steady(prev: f64, now: f64) -> bool {
    (now - prev).abs() <= STEADY * prev
}

async fn exec_true(r: &Running, id: &str) -> anyhow::Result<Summary> {
    let mut samples = Vec::new();
    for _ in 0..EXECS {
        samples.push(exec_once(r, id).await?);
    }
    Ok(summarize(&samples))
}

/// One exec `true`, timed from request to answer.
async fn exec_once(r: &Running, id: &str) -> anyhow::Result<Duration> {
    let url = format!("{}/api/v1/sessions/{id}/exec", r.base);
    let t = Instant::now();
    let resp = r.http.post(&url).header("content-type", "application/json").body(r#"{"cmd":["true"]}"#).send().await?;
    anyhow::ensure!(resp.status().is_success(), "exec: {}", resp.text().await?);
    let out: Value = resp.json().await?;
    anyhow::ensure!(out["exit_code"] == 0, "exec true: {out}");
    Ok(t.elapsed())
}

/// The server's resume counters: (resumes, microseconds spent), from `/metrics`.
async fn resume_counters(r: &Running) -> Option<(f64, f64)> {
    let text = r.http.get(format!("{}/metrics", r.base)).send().await.ok()?.text().await.ok()?;
    let value = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok()))
    };
    Some((value("mayfly_session_resumes_total ")?, value("mayfly_session_resume_microseconds_total ")?))
}

/// Waits until `n` sessions report `paused`; returns (seconds waited, all paused). Gives up after
/// [`SETTLE_LIMIT`] and measures anyway.
async fn wait_paused(r: &Running, n: usize) -> (f64, bool) {
    let t0 = Instant::now();
    loop {
        let paused = match r.http.get(format!("{}/api/v1/sessions", r.base)).send().await {
            Ok(resp) => resp.json::<Value>().await.ok().and_then(|v| {
                v.as_array().map(|a| a.iter().filter(|s| s["paused"] == true).count())
            }),
            Err(_) => None,
        };
        if paused.is_some_and(|p| p >= n) {
            return (t0.elapsed().as_secs_f64(), true);
        }
        if t0.elapsed() >= SETTLE_LIMIT {
            eprintln!("    {} of {n} paused after {} s; measuring anyway", paused.unwrap_or(0), SETTLE_LIMIT.as_secs());
            return (t0.elapsed().as_secs_f64(), false);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl std::fmt::Display for DensityBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.sessions;
        writeln!(
            f,
            "Density ({n} idle {} sessions{}, {} host CPUs, {} s window):",
            self.image,
            if self.paused { ", paused" } else { "" },
            self.host_cpus,
            self.window_secs
        )?;
        writeln!(
            f,
            "  settled after                 {:.0} s{}",
            self.settle_secs,
            if self.settled { "" } else { " (NOT settled)" }
        )?;
        writeln!(
            f,
            "  host busy                     {:.1} % with {n} idle sessions ({:.1} % before any)",
            self.host_busy_pct, self.host_busy_pct_before
        )?;
        writeln!(
            f,
            "  QEMU CPU, all VMs             {:.2} % of a CPU = {:.2} % of the host",
            self.qemu_cpu_pct_sum, self.qemu_host_pct
        )?;
        writeln!(
            f,
            "  QEMU CPU per idle VM          {:.2} % of a CPU (max {:.2} %)",
            self.qemu_cpu_pct_per_vm, self.qemu_cpu_pct_max_vm
        )?;
        writeln!(f, "  control plane (this process)  {:.2} % of a CPU", self.server_cpu_pct)?;
        writeln!(
            f,
            "  memory per session            PSS {:.1} MiB, RSS {:.1} MiB",
            self.pss_mib_per_session, self.rss_mib_per_session
        )?;
        writeln!(f, "  exec `true`, 1 session        {}", self.exec_true_one_session)?;
        writeln!(f, "  exec `true`, {n} idle sessions {}", self.exec_true_n_sessions)?;
        writeln!(f, "  exec p50 ratio N/1            {:.2}×", self.exec_p50_ratio)?;
        if let Some(s) = &self.first_exec_new_clone {
            writeln!(f, "  first exec on a new clone     {s}")?;
        }
        if let Some(s) = &self.exec_on_paused {
            writeln!(f, "  exec `true` on a paused one   {s} (resume included)")?;
        }
        if let Some(ms) = self.resume_ms_mean {
            writeln!(f, "  resume (cont + clock), mean   {ms:.2} ms")?;
        }
        write!(f, "  failed creates (retried)      {}", self.create_failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_means_within_a_fraction_of_the_last_window() {
        let table = [(4.0, 4.0, true), (4.0, 3.5, true), (4.0, 4.5, true), (4.0, 3.0, false), (10.0, 5.0, false), (0.0, 0.1, false)];
        for (prev, now, want) in table {
            assert_eq!(steady(prev, now), want, "{prev} → {now}");
        }
    }
}
