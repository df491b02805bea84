//! What the cluster keeps in the shared database: the node registry (one row per node, with a
//! lease renewed by its heartbeat and measured by the database's clock, never a node's), the
//! placement read, and the marking of a dead node's sessions as lost. Implemented by the SQL
//! store for SQLite (one node) and PostgreSQL (many).

use crate::store::{StoreError, StoredEvent};
use async_trait::async_trait;
use mayfly_proto::nodes::{NodeCapacity, NodeMode};

/// A node's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub name: String,
    /// Base URL the other nodes forward to.
    pub address: String,
    /// Random per data dir (`node.id`): the same machine restarting may take its name back at
    /// once; another machine must wait for the lease to run out.
    pub node_id: String,
    /// Random per process start.
    pub incarnation: String,
    pub mode: NodeMode,
    pub version: String,
    /// Unix ms by the database's clock.
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub lease_until: i64,
    /// Released its lease at a clean stop.
    pub stopped: bool,
    pub clock_skew_ms: i64,
    pub capacity: NodeCapacity,
}

/// What a starting node claims.
#[derive(Debug, Clone)]
pub struct NodeClaim {
    pub name: String,
    pub address: String,
    pub node_id: String,
    pub incarnation: String,
    pub version: String,
    pub lease_ms: i64,
    /// This node's clock (Unix ms) when it sent the claim.
    pub clock_ms: i64,
    pub capacity: NodeCapacity,
}

/// The database's answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The lease runs until `lease_until` (database ms); `node_mode` is what the operator set.
    Renewed { db_now: i64, lease_until: i64, node_mode: NodeMode },
    /// Another process holds the name now (a second node started with it after our lease ran out).
    Superseded,
}

/// Live sessions per node, for placement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeLoad {
    pub node: NodeRecord,
    /// Sessions in a live state on the node, as the session table says (not the node's report),
    /// plus the placements onto it still held.
    pub live_sessions: u64,
}

/// A chosen node and the slot held there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub token: String,
    pub node: NodeRecord,
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "node name {name:?} is held by another live node at {address} (lease until {lease_until} by the database's clock): give this node another node_name, or stop the other one"
    )]
    NameTaken { name: String, address: String, lease_until: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[async_trait]
pub trait NodeStore: Send + Sync {
    /// Registers the node, or takes its row back: refused while another machine's live lease
    /// holds the name. Returns the database's clock (Unix ms).
    async fn claim_node(&self, claim: &NodeClaim) -> Result<i64, ClaimError>;

    /// Renews the lease of `name` held by `incarnation` and stores its capacity.
    async fn renew_node(
        &self,
        name: &str,
        incarnation: &str,
        lease_ms: i64,
        clock_ms: i64,
        capacity: &NodeCapacity,
    ) -> Result<Renewal, StoreError>;

    /// A clean stop: the lease ends now, the row stays (marked stopped).
    async fn release_node(&self, name: &str, incarnation: &str) -> Result<(), StoreError>;

    /// Every node, by name, and the database's clock.
    async fn nodes(&self) -> Result<(Vec<NodeRecord>, i64), StoreError>;

    /// Sets a node's mode; false when there is no such node.
    async fn set_node_mode(&self, name: &str, mode: NodeMode) -> Result<bool, StoreError>;

    /// The node of session `id`: `None` when there is no such session, `Some(None)` for a row
    /// older than nodes.
    async fn session_node(&self, id: &str) -> Result<Option<Option<String>>, StoreError>;

    /// Places a new session of `image`, in one transaction: locks the active nodes with a
    /// current lease against concurrent placements (`FOR UPDATE` on PostgreSQL), counts their
    /// live sessions and the placements still held, lets [`crate::cluster::placement::choose`]
    /// pick one and holds a slot there for `hold_ms` (until the owner has stored the session and
    /// calls [`NodeStore::release_placement`]). Nodes in `exclude` (they refused it just now)
    /// are passed over. `Err`: no node can take it (the reasons per node).
    async fn place(&self, image: &str, hold_ms: i64, exclude: &[String]) -> Result<Result<Placement, Vec<String>>, StoreError>;

    /// The slot of a placement is no longer needed (the session row counts now, or it failed).
    async fn release_placement(&self, token: &str) -> Result<(), StoreError>;

    /// Sessions of nodes whose lease ran out before the database's now: `ready` → `lost`,
    /// `creating` → `failed`, `stopping` → `destroyed` (their node reaps the VM if it returns).
    /// Returns the recorded changes. Safe to run on every node at once.
    async fn mark_lost(&self) -> Result<Vec<StoredEvent>, StoreError>;
}

impl Default for NodeRecord {
    fn default() -> Self {
        Self {
            name: String::new(),
            address: String::new(),
            node_id: String::new(),
            incarnation: String::new(),
            mode: NodeMode::Active,
            version: String::new(),
            started_at: 0,
            heartbeat_at: 0,
            lease_until: 0,
            stopped: false,
            clock_skew_ms: 0,
            capacity: NodeCapacity::default(),
        }
    }
}
