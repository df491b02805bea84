//! `mayfly bench --cluster URL,URL…`: what forwarding between nodes costs. Against running nodes
//! of one deployment (the token from `MAYFLY_TOKEN`): each create goes in through the nodes in
//! turn and placement decides its owner; then every node is asked for the session (GET) and runs
//! `true` in it (exec). Each figure is split by whether the node asked was the owner or had to
//! forward.

use super::stats::{summarize, Summary};
use anyhow::Context;
use serde::Serialize;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[derive(Serialize)]
pub struct ClusterBench {
    pub nodes: Vec<String>,
    pub create_via_owner: Summary,
    pub create_via_other: Summary,
    pub get_via_owner: Summary,
    pub get_via_other: Summary,
    pub exec_via_owner: Summary,
    pub exec_via_other: Summary,
    /// A 32 MiB download through the files API, MB/s (median of the runs).
    pub download_mb_s_via_owner: f64,
    pub download_mb_s_via_other: f64,
}

impl std::fmt::Display for ClusterBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "cluster ({} nodes: {})", self.nodes.len(), self.nodes.join(", "))?;
        writeln!(f, "  create, via the owner node    {}", self.create_via_owner)?;
        writeln!(f, "  create, placed on another     {}", self.create_via_other)?;
        writeln!(f, "  GET session, via the owner    {}", self.get_via_owner)?;
        writeln!(f, "  GET session, via another node {}", self.get_via_other)?;
        writeln!(f, "  exec true, via the owner      {}", self.exec_via_owner)?;
        writeln!(f, "  exec true, via another node   {}", self.exec_via_other)?;
        write!(f, "  32 MiB download: via the owner {:.0} MB/s, via another node {:.0} MB/s", self.download_mb_s_via_owner, self.download_mb_s_via_other)
    }
}

#[derive(Default)]
struct Samples {
    create: [Vec<Duration>; 2],
    get: [Vec<Duration>; 2],
    exec: [Vec<Duration>; 2],
    download_mb_s: [Vec<f64>; 2],
}

const DOWNLOAD_BYTES: usize = 32 << 20;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

struct Node {
    name: String,
    url: String,
}

pub async fn run(urls: &[String], image: &str, runs: usize) -> anyhow::Result<ClusterBench> {
    anyhow::ensure!(urls.len() >= 2, "--cluster needs the URLs of at least two nodes, comma-separated");
    let token = std::env::var("MAYFLY_TOKEN").context("--cluster needs MAYFLY_TOKEN (an admin's token or the server token)")?;
    let http = reqwest::Client::builder()
        .default_headers([(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse()?)].into_iter().collect())
        .timeout(Duration::from_secs(300))
        .build()?;
    let mut nodes = Vec::new();
    for url in urls {
        let url = url.trim_end_matches('/').to_string();
        let listed: Value = ok(http.get(format!("{url}/api/v1/nodes")).send().await, "GET /api/v1/nodes").await?;
        let name = listed
            .as_array()
            .and_then(|a| a.iter().find(|n| n["address"].as_str() == Some(url.as_str())))
            .and_then(|n| n["name"].as_str())
            .with_context(|| format!("{url} is not the advertised address of any node in its own /api/v1/nodes"))?
            .to_string();
        nodes.push(Node { name, url });
    }
    let mut s = Samples::default();
    for i in 0..runs {
        let entry = &nodes[i % nodes.len()];
        let t = Instant::now();
        let created = ok(
            http.post(format!("{}/api/v1/sessions", entry.url)).json(&json!({"image": image, "ttl_seconds": 900})).send().await,
            "create",
        )
        .await?;
        let took = t.elapsed();
        let id = created["id"].as_str().context("a created session has an id")?.to_string();
        let owner = created["node"].as_str().unwrap_or("").to_string();
        s.create[usize::from(owner != entry.name)].push(took);
        let measured = measure(&http, &nodes, &id, &owner, &mut s).await;
        let _ = http.delete(format!("{}/api/v1/sessions/{id}", entry.url)).send().await;
        measured?;
        eprintln!("  run {}/{runs}: via {} placed on {owner}, {:.0} ms", i + 1, entry.name, took.as_secs_f64() * 1e3);
    }
    Ok(ClusterBench {
        nodes: nodes.iter().map(|n| n.name.clone()).collect(),
        create_via_owner: summarize(&s.create[0]),
        create_via_other: summarize(&s.create[1]),
        get_via_owner: summarize(&s.get[0]),
        get_via_other: summarize(&s.get[1]),
        exec_via_owner: summarize(&s.exec[0]),
        exec_via_other: summarize(&s.exec[1]),
        download_mb_s_via_owner: median(std::mem::take(&mut s.download_mb_s[0])),
        download_mb_s_via_other: median(std::mem::take(&mut s.download_mb_s[1])),
    })
}

async fn measure(http: &reqwest::Client, nodes: &[Node], id: &str, owner: &str, s: &mut Samples) -> anyhow::Result<()> {
    let blob: Vec<u8> = (0..DOWNLOAD_BYTES).map(|i| (i % 251) as u8).collect();
    let files = |n: &Node| format!("{}/api/v1/sessions/{id}/files?path=/root/bench.bin", n.url);
    let put = http.put(files(&nodes[0])).body(blob).send().await.context("upload")?;
    anyhow::ensure!(put.status().is_success(), "upload: {}", put.status());
    for n in nodes {
        let t = Instant::now();
        let got = http.get(files(n)).send().await.context("download")?.bytes().await.context("download")?;
        anyhow::ensure!(got.len() == DOWNLOAD_BYTES, "download via {}: {} bytes", n.name, got.len());
        s.download_mb_s[usize::from(n.name != owner)].push(DOWNLOAD_BYTES as f64 / 1e6 / t.elapsed().as_secs_f64());
    }
    for n in nodes {
        let other = usize::from(n.name != owner);
        for _ in 0..10 {
            let t = Instant::now();
            ok(http.get(format!("{}/api/v1/sessions/{id}", n.url)).send().await, "GET session").await?;
            s.get[other].push(t.elapsed());
        }
        for _ in 0..3 {
            let t = Instant::now();
            let out = ok(http.post(format!("{}/api/v1/sessions/{id}/exec", n.url)).json(&json!({"cmd": ["true"]})).send().await, "exec").await?;
            s.exec[other].push(t.elapsed());
            anyhow::ensure!(out["exit_code"] == 0, "exec true in {id} via {}: {out}", n.name);
        }
    }
    Ok(())
}

async fn ok(resp: reqwest::Result<reqwest::Response>, what: &str) -> anyhow::Result<Value> {
    let resp = resp.with_context(|| format!("{what}: no answer"))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "{what}: {status}: {body}");
    Ok(body)
}
