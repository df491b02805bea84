//! This node's membership: its claim on its name at start, the lease its heartbeat renews in
//! the database, and what it knows of the others (who owns a session, where a node listens).
//!
//! Lease state machine of this node (driven by [`super::heartbeat`]):
//! ```text
//! claimed ──renew ok──▶ holding ──renew fails──▶ lapsing ──renew ok──▶ holding (+ reclaim lost sessions)
//!                          │                        │
//!                          └──────── name taken by another process ──▶ superseded (logged; no more renewals)
//! ```
//! Times that matter across nodes (leases) are the database's clock, never a node's: a node with
//! a skewed clock keeps its lease and shows its skew in `mayfly nodes`.

use super::store::{ClaimError, NodeClaim, NodeRecord, NodeStore};
use crate::manager::SessionManager;
use mayfly_proto::nodes::NodeMode;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a node list read for routing stays fresh.
const NODES_FRESH: Duration = Duration::from_secs(1);
/// Session → node entries kept (sessions never move, so entries only go when the map is full).
const OWNERS_MAX: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    Holding,
    Lapsing,
    Superseded,
}

pub struct Cluster {
    name: String,
    /// Set again once the listener is bound (port 0 picks one).
    address: Mutex<String>,
    node_id: String,
    incarnation: String,
    lease: Duration,
    store: Arc<dyn NodeStore>,
    /// More than one node can use the store (PostgreSQL): requests are routed between nodes.
    shared: bool,
    state: Mutex<LeaseState>,
    owners: Mutex<HashMap<String, String>>,
    nodes: tokio::sync::Mutex<Option<(Instant, Vec<NodeRecord>, i64)>>,
}

/// A node as routing sees it.
#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
    pub address: String,
    pub live: bool,
}

impl Cluster {
    pub fn new(
        cfg: &crate::config::ServerConfig,
        address: String,
        store: Arc<dyn NodeStore>,
        shared: bool,
    ) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            name: super::settings::node_name(cfg),
            address: Mutex::new(address),
            node_id: node_id(&cfg.data_dir)?,
            incarnation: random_hex(16),
            lease: Duration::from_secs(cfg.node_lease_seconds),
            store,
            shared,
            state: Mutex::new(LeaseState::Holding),
            owners: Mutex::new(HashMap::new()),
            nodes: tokio::sync::Mutex::new(None),
        }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn address(&self) -> String {
        self.address.lock().expect("address lock").clone()
    }

    pub fn set_address(&self, address: String) {
        *self.address.lock().expect("address lock") = address;
    }

    pub fn shared(&self) -> bool {
        self.shared
    }

    pub fn store(&self) -> &Arc<dyn NodeStore> {
        &self.store
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    pub fn incarnation(&self) -> &str {
        &self.incarnation
    }

    pub fn lease_state(&self) -> LeaseState {
        *self.state.lock().expect("lease state lock")
    }

    pub(super) fn set_lease_state(&self, s: LeaseState) -> LeaseState {
        std::mem::replace(&mut *self.state.lock().expect("lease state lock"), s)
    }

    pub(super) fn lease_ms(&self) -> i64 {
        self.lease.as_millis() as i64
    }

    /// Claims this node's name in the registry (before reconciling: a node must not touch the
    /// rows of a name it does not hold).
    pub async fn claim(&self, manager: &SessionManager) -> Result<(), ClaimError> {
        let claim = NodeClaim {
            name: self.name.clone(),
            address: self.address(),
            node_id: self.node_id.clone(),
            incarnation: self.incarnation.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            lease_ms: self.lease_ms(),
            clock_ms: now_ms(),
            capacity: manager.node_capacity(),
        };
        let db_now = self.store.claim_node(&claim).await?;
        let skew = claim.clock_ms - db_now;
        if skew.abs() > 2_000 {
            tracing::warn!(node = %self.name, skew_ms = skew, "this node's clock differs from the database's; leases use the database's clock");
        }
        tracing::info!(node = %self.name, address = %self.address(), lease_s = self.lease.as_secs(), shared = self.shared, "node registered");
        Ok(())
    }

    /// The node that runs session `id`, if the session exists and is another node's.
    pub async fn remote_owner(&self, id: &str) -> Option<String> {
        if let Some(n) = self.owners.lock().expect("owners lock").get(id) {
            return (n != &self.name).then(|| n.clone());
        }
        let node = match self.store.session_node(id).await {
            Ok(Some(Some(n))) => n,
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!(session = id, error = %e, "cannot look up the session's node; serving it here");
                return None;
            }
        };
        let mut owners = self.owners.lock().expect("owners lock");
        if owners.len() >= OWNERS_MAX {
            owners.clear();
        }
        owners.insert(id.to_string(), node.clone());
        (node != self.name).then_some(node)
    }

    /// Node `name` as last read (at most [`NODES_FRESH`] old).
    pub async fn peer(&self, name: &str) -> Option<Peer> {
        let mut cached = self.nodes.lock().await;
        let stale = cached.as_ref().is_none_or(|(at, ..)| at.elapsed() > NODES_FRESH);
        if stale {
            match self.store.nodes().await {
                Ok((nodes, db_now)) => *cached = Some((Instant::now(), nodes, db_now)),
                Err(e) => tracing::warn!(error = %e, "cannot read the node registry"),
            }
        }
        let (at, nodes, db_now) = cached.as_ref()?;
        let now = db_now + at.elapsed().as_millis() as i64;
        nodes
            .iter()
            .find(|n| n.name == name)
            .map(|n| Peer { name: n.name.clone(), address: n.address.clone(), live: n.lease_until > now && !n.stopped })
    }

    /// Forgets the cached node list (after a forward to a node failed).
    pub async fn refresh(&self) {
        *self.nodes.lock().await = None;
    }

    /// Applies the mode the operator set for this node (a draining node empties its pool).
    pub(super) fn apply_mode(&self, mode: NodeMode, manager: &Arc<SessionManager>) {
        if mode == NodeMode::Draining {
            let m = manager.clone();
            tokio::spawn(async move { m.drain_pool().await });
        }
    }
}

pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    hex::encode(b)
}

/// The data dir's node id (`node.id`, made at first start): the same machine restarting takes
/// its name back at once, while another machine with the same name is refused.
fn node_id(data_dir: &Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let path = data_dir.join("node.id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let id = random_hex(16);
    std::fs::write(&path, format!("{id}\n")).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}
