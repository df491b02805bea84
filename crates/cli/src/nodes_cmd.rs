//! `mayfly nodes` (admins): the hosts of the deployment, their leases and capacity; cordon,
//! drain and uncordon.

use crate::cells;
use crate::client::Client;
use mayfly_proto::nodes::{Node, NodeMode, SetNodeMode};
use reqwest::Method;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum NodesCmd {
    /// Every node: live or not, mode, sessions and memory, clock skew (the default).
    Ls,
    /// No new sessions on NODE; its sessions go on.
    Cordon { node: String },
    /// No new sessions and no warm pool on NODE; it is drained when its last session ended.
    Drain { node: String },
    /// NODE takes new sessions again.
    Uncordon { node: String },
}

impl Client {
    pub async fn nodes(&self) -> anyhow::Result<Vec<Node>> {
        self.json(Method::GET, "/api/v1/nodes", None).await
    }

    pub async fn set_node_mode(&self, node: &str, mode: NodeMode) -> anyhow::Result<Node> {
        let body = serde_json::to_value(SetNodeMode { mode })?;
        let path = format!("/api/v1/nodes/{}/mode", crate::accounts_api::segment(node));
        self.json(Method::POST, &path, Some(body)).await
    }
}

pub async fn run(client: &Client, cmd: Option<NodesCmd>) -> anyhow::Result<ExitCode> {
    let (node, mode) = match cmd.unwrap_or(NodesCmd::Ls) {
        NodesCmd::Ls => {
            print(&client.nodes().await?);
            return Ok(ExitCode::SUCCESS);
        }
        NodesCmd::Cordon { node } => (node, NodeMode::Cordoned),
        NodesCmd::Drain { node } => (node, NodeMode::Draining),
        NodesCmd::Uncordon { node } => (node, NodeMode::Active),
    };
    let n = client.set_node_mode(&node, mode).await?;
    println!("{}: {}", n.name, status(&n));
    Ok(ExitCode::SUCCESS)
}

fn status(n: &Node) -> String {
    let life = if n.live {
        "live"
    } else if n.stopped {
        "stopped"
    } else {
        "lost"
    };
    match (n.mode, n.capacity.sessions) {
        (NodeMode::Active, _) => life.to_string(),
        (NodeMode::Draining, 0) if n.live => format!("{life}, drained"),
        (m, _) => format!("{life}, {}", m.as_str()),
    }
}

fn print(nodes: &[Node]) {
    println!("{:<16} {:<18} {:<10} {:>9} {:>11} {:>6} {:<21} {:>8} ADDRESS", "NODE", "STATUS", "VERSION", "SESSIONS", "MEM FREE", "POOL", "HEARTBEAT", "SKEW");
    for n in nodes {
        let c = &n.capacity;
        println!(
            "{:<16} {:<18} {:<10} {:>9} {:>11} {:>6} {:<21} {:>8} {}",
            n.name,
            status(n),
            n.version,
            format!("{}/{}", c.sessions, c.max_sessions),
            format!("{} MiB", c.memory_mib_free),
            c.pool_ready,
            cells::time(&n.heartbeat_at),
            format!("{} ms", n.clock_skew_ms),
            n.address
        );
    }
}
