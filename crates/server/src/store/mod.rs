//! Durable session records behind [`SessionStore`]: one row per session, one row per state change
//! (the event log), and the per-port preview visibility.
//!
//! The store only records; it does not decide which transitions are legal (that is
//! [`crate::manager::state`]) beyond refusing an update whose `from` state is stale, which makes
//! concurrent transitions of one session safe. [`sql::SqlStore`] implements it (and the account
//! and node stores) for both the embedded SQLite file and PostgreSQL, with one query text.

pub mod migrations;
mod nodes;
pub mod pool;
pub mod sql;
pub mod sql_accounts;
#[doc(hidden)]
pub mod suite;

use async_trait::async_trait;
use mayfly_proto::api::{Network, SessionSize, SessionState, Visibility};
use std::collections::HashMap;
use time::OffsetDateTime;

pub use pool::Dialect;
pub use sql::{SqlStore, SqliteStore};

/// One session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    pub image: String,
    pub state: SessionState,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub idle_timeout_seconds: u64,
    /// Why the session failed.
    pub failure: Option<String>,
    pub network: Network,
    /// The VM's size; `None` for rows written before sizes were recorded.
    pub size: Option<SessionSize>,
    /// What a live session holds besides this row, kept so a restarted server can adopt it.
    pub runtime: SessionRuntime,
    /// Last API, terminal or preview activity as last recorded (at most a minute old while the
    /// server runs, exact after a graceful stop); a restarted server's idle timer goes on from it.
    pub last_active_at: Option<OffsetDateTime>,
    /// The user who created it; `None`: the server token (or a row older than users).
    pub owner: Option<String>,
    /// The node whose VM runs it; `None`: a row older than nodes (the one node there was).
    pub node: Option<String>,
}

/// The rest of a live session's set-up (column `runtime`, JSON). Secrets only sealed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionRuntime {
    #[serde(default)]
    pub auto_push: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<String>,
    /// `CreateSession.labels`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The VM's id when it is not the session's (a pool clone keeps the id it was made with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<mayfly_proto::api::RepoStatus>,
    /// The environment and git tokens, sealed by [`crate::secrets::Secrets`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
}

/// One state change, in the order the store recorded it (`seq` grows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: i64,
    pub session: String,
    pub from: Option<SessionState>,
    pub to: SessionState,
    pub reason: Option<String>,
    pub at: OffsetDateTime,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session {0} already exists")]
    Duplicate(String),
    #[error("session {0} not found")]
    NotFound(String),
    #[error("session {id} is {}, not {}", .actual.as_str(), .expected.as_str())]
    StateMismatch { id: String, expected: SessionState, actual: SessionState },
    #[error("session store: {op} failed")]
    Backend {
        op: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("session store holds an invalid {what}: {value:?}")]
    Corrupt { what: &'static str, value: String },
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session (its state is the record's) and its first event (`from: None`).
    async fn insert(&self, session: &SessionRecord) -> Result<StoredEvent, StoreError>;

    /// Moves `id` from `from` to `to` and appends the event, atomically. Fails with
    /// [`StoreError::StateMismatch`] when the stored state is not `from`. A transition to
    /// `failed` also records `reason` as the session's failure.
    async fn transition(
        &self,
        id: &str,
        from: SessionState,
        to: SessionState,
        reason: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<StoredEvent, StoreError>;

    async fn get(&self, id: &str) -> Result<Option<SessionRecord>, StoreError>;

    /// Sessions in any of `states`, oldest first.
    async fn list(&self, states: &[SessionState]) -> Result<Vec<SessionRecord>, StoreError>;

    /// The state changes of `id`, oldest first.
    async fn events(&self, id: &str) -> Result<Vec<StoredEvent>, StoreError>;

    async fn count_by_state(&self) -> Result<HashMap<SessionState, u64>, StoreError>;

    /// Records the last activity of session `id`.
    async fn set_last_active(&self, id: &str, at: OffsetDateTime) -> Result<(), StoreError>;

    /// Moves a session's end of life (an E2B `set_timeout`).
    async fn set_expires_at(&self, id: &str, at: OffsetDateTime) -> Result<(), StoreError>;

    /// Replaces the runtime part of session `id` (repository progress, for instance).
    async fn set_runtime(&self, id: &str, runtime: &SessionRuntime) -> Result<(), StoreError>;

    async fn port_visibility(&self, id: &str) -> Result<HashMap<u16, Visibility>, StoreError>;

    async fn set_port_visibility(&self, id: &str, port: u16, visibility: Visibility) -> Result<(), StoreError>;
}

pub const ALL_STATES: [SessionState; 6] = [
    SessionState::Creating,
    SessionState::Ready,
    SessionState::Stopping,
    SessionState::Destroyed,
    SessionState::Failed,
    SessionState::Lost,
];

pub fn parse_state(s: &str) -> Result<SessionState, StoreError> {
    ALL_STATES
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| StoreError::Corrupt { what: "state", value: s.to_string() })
}

pub fn visibility_str(v: Visibility) -> &'static str {
    match v {
        Visibility::Private => "private",
        Visibility::Team => "team",
        Visibility::Public => "public",
    }
}

pub fn parse_visibility(s: &str) -> Result<Visibility, StoreError> {
    match s {
        "private" => Ok(Visibility::Private),
        "team" => Ok(Visibility::Team),
        "public" => Ok(Visibility::Public),
        other => Err(StoreError::Corrupt { what: "visibility", value: other.to_string() }),
    }
}
