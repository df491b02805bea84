//! REST DTOs of the node registry (`/api/v1/nodes`): the hosts of one Mayfly deployment.

use serde::{Deserialize, Serialize};

/// What the operator lets a node do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeMode {
    /// Takes new sessions.
    Active,
    /// Takes no new sessions; its sessions go on.
    Cordoned,
    /// Takes no new sessions and keeps no warm pool; done when its last session has ended.
    Draining,
}

impl NodeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Cordoned => "cordoned",
            Self::Draining => "draining",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Active, Self::Cordoned, Self::Draining].into_iter().find(|m| m.as_str() == s)
    }
}

/// An image a node can start, with the hash of the recipe it was built from: nodes must agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeImage {
    pub name: String,
    pub recipe_hash: String,
}

/// A node's capacity as it last reported it (every heartbeat).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCapacity {
    /// Live sessions on the node and its limit (`max_sessions`).
    pub sessions: u64,
    pub max_sessions: u64,
    /// vCPUs and MiB of memory the live sessions were given, and what the host has.
    pub vcpus_used: u64,
    pub host_cpus: u64,
    pub memory_mib_used: u64,
    pub host_memory_mib: u64,
    /// MiB of memory free on the host (MemAvailable).
    pub memory_mib_free: u64,
    #[serde(default)]
    pub images: Vec<NodeImage>,
    /// Warm VMs ready per image.
    #[serde(default)]
    pub pool_ready: u64,
}

/// `GET /api/v1/nodes`: one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    /// Where the other nodes reach it (`advertise_url`).
    pub address: String,
    pub mode: NodeMode,
    /// True while its lease is current (it heartbeats); false: lost or stopped.
    pub live: bool,
    /// Stopped cleanly (released its lease) rather than lost.
    #[serde(default)]
    pub stopped: bool,
    /// RFC 3339.
    pub started_at: String,
    pub heartbeat_at: String,
    pub lease_until: String,
    /// How far the node's clock was from the database's at its last heartbeat, in ms (positive: ahead).
    pub clock_skew_ms: i64,
    pub version: String,
    pub capacity: NodeCapacity,
}

/// `POST /api/v1/nodes/{name}/mode`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetNodeMode {
    pub mode: NodeMode,
}
