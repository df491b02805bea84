//! The SQL implementation of [`SessionStore`] (and, in `sql_accounts.rs` and `nodes.rs`, of the
//! account and node stores) over one sqlx `AnyPool`: the embedded SQLite file by default,
//! PostgreSQL with `database_url`. The same query text runs on both (`$1` parameters, named
//! columns, `RETURNING`); times are Unix milliseconds; the schema is versioned
//! ([`super::migrations`], [`MIGRATIONS`]).

use super::migrations::{self, Migration};
use super::pool::{self, Dialect};
use super::{parse_state, parse_visibility, visibility_str, SessionRecord, SessionStore, StoreError, StoredEvent};
use async_trait::async_trait;
use mayfly_proto::api::{EgressMode, Network, SessionState, Visibility};
use sqlx::any::AnyRow;
use sqlx::AnyPool;
use sqlx::Row;
use std::collections::HashMap;
use std::path::Path;
use time::OffsetDateTime;

/// Named, not `*`: a connection that prepared `SELECT *` before a migration added a column
/// would read the old column list.
const SESSION_COLUMNS: &str =
    "id, image, state, created_at, expires_at, idle_timeout_seconds, failure, network, size, runtime, last_active_at, owner, node";

/// The main store's schema, oldest first. Append; never edit an applied migration.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "sessions, events, port visibility, accounts",
        statements: &[
            "CREATE TABLE IF NOT EXISTS sessions (
                id TEXT PRIMARY KEY,
                image TEXT NOT NULL,
                state TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                idle_timeout_seconds BIGINT NOT NULL,
                failure TEXT,
                updated_at BIGINT NOT NULL,
                network TEXT,
                size TEXT,
                runtime TEXT,
                last_active_at BIGINT,
                owner TEXT
            )",
            "CREATE INDEX IF NOT EXISTS sessions_state ON sessions(state)",
            "CREATE TABLE IF NOT EXISTS session_events (
                seq {serial},
                session_id TEXT NOT NULL,
                from_state TEXT,
                to_state TEXT NOT NULL,
                reason TEXT,
                at BIGINT NOT NULL
            )",
            "CREATE INDEX IF NOT EXISTS session_events_session ON session_events(session_id, seq)",
            "CREATE TABLE IF NOT EXISTS port_visibility (
                session_id TEXT NOT NULL,
                port BIGINT NOT NULL,
                visibility TEXT NOT NULL,
                PRIMARY KEY (session_id, port)
            )",
            "CREATE TABLE IF NOT EXISTS users (
                id TEXT PRIMARY KEY,
                email TEXT NOT NULL,
                name TEXT NOT NULL,
                role TEXT NOT NULL,
                password_hash TEXT,
                oidc_issuer TEXT,
                oidc_subject TEXT,
                quotas TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                last_sign_in_at BIGINT,
                deleted_at BIGINT
            )",
            "CREATE UNIQUE INDEX IF NOT EXISTS users_email ON users(email) WHERE deleted_at IS NULL",
            "CREATE UNIQUE INDEX IF NOT EXISTS users_oidc ON users(oidc_issuer, oidc_subject) WHERE deleted_at IS NULL AND oidc_subject IS NOT NULL",
            "CREATE TABLE IF NOT EXISTS api_tokens (
                id TEXT PRIMARY KEY,
                user_id TEXT NOT NULL,
                name TEXT NOT NULL,
                hash TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                expires_at BIGINT,
                last_used_at BIGINT
            )",
            "CREATE INDEX IF NOT EXISTS api_tokens_user ON api_tokens(user_id)",
            "CREATE TABLE IF NOT EXISTS web_sessions (
                id TEXT PRIMARY KEY,
                user_id TEXT,
                hash TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL
            )",
            "CREATE INDEX IF NOT EXISTS web_sessions_user ON web_sessions(user_id)",
            "CREATE TABLE IF NOT EXISTS user_git_credentials (
                user_id TEXT NOT NULL,
                host TEXT NOT NULL,
                username TEXT,
                sealed_token TEXT NOT NULL,
                updated_at BIGINT NOT NULL,
                PRIMARY KEY (user_id, host)
            )",
            "CREATE TABLE IF NOT EXISTS audit_log (
                seq {serial},
                at BIGINT NOT NULL,
                user_id TEXT,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                session_id TEXT,
                detail TEXT NOT NULL,
                ip TEXT
            )",
            "CREATE INDEX IF NOT EXISTS audit_log_user ON audit_log(user_id, seq)",
            "CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log(at)",
            "CREATE TABLE IF NOT EXISTS ssh_keys (
                id TEXT PRIMARY KEY,
                user_id TEXT NOT NULL,
                name TEXT NOT NULL,
                algorithm TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                public_key TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                last_used_at BIGINT
            )",
            "CREATE UNIQUE INDEX IF NOT EXISTS ssh_keys_fingerprint ON ssh_keys(fingerprint)",
            "CREATE INDEX IF NOT EXISTS ssh_keys_user ON ssh_keys(user_id)",
        ],
    },
    Migration {
        version: 2,
        name: "nodes: the registry, placements, each session's node",
        statements: &[
            "CREATE TABLE nodes (
                name TEXT PRIMARY KEY,
                address TEXT NOT NULL,
                node_id TEXT NOT NULL,
                incarnation TEXT NOT NULL,
                mode TEXT NOT NULL,
                version TEXT NOT NULL,
                started_at BIGINT NOT NULL,
                heartbeat_at BIGINT NOT NULL,
                lease_until BIGINT NOT NULL,
                stopped BIGINT NOT NULL,
                clock_skew_ms BIGINT NOT NULL,
                capacity TEXT NOT NULL
            )",
            "CREATE TABLE placements (
                token TEXT PRIMARY KEY,
                node TEXT NOT NULL,
                expires_at BIGINT NOT NULL
            )",
            "ALTER TABLE sessions ADD COLUMN node TEXT",
            "CREATE INDEX sessions_node ON sessions(node, state)",
        ],
    },
];

pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
}

/// The SQLite store of one host ([`SqlStore::open`] on its file); the name older code knows.
pub type SqliteStore = SqlStore;

pub(super) fn backend(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| StoreError::Backend { op, source: Box::new(e) }
}

pub(super) fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub(super) fn from_ms(v: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(v as i128 * 1_000_000)
        .map_err(|_| StoreError::Corrupt { what: "timestamp", value: v.to_string() })
}

fn opened(e: pool::OpenError) -> StoreError {
    StoreError::Backend { op: "opening the database", source: Box::new(e) }
}

/// A database made before versioned migrations (SQLite only): the columns later versions added
/// to `sessions` are added in place.
fn adopt_legacy_sqlite(conn: &mut sqlx::AnyConnection) -> futures::future::BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        for (column, decl) in [("network", "TEXT"), ("size", "TEXT"), ("runtime", "TEXT"), ("last_active_at", "BIGINT"), ("owner", "TEXT")] {
            let have: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pragma_table_info('sessions') WHERE name = $1")
                .bind(column)
                .fetch_one(&mut *conn)
                .await?;
            if have == 0 {
                sqlx::query(&format!("ALTER TABLE sessions ADD COLUMN {column} {decl}")).execute(&mut *conn).await?;
            }
        }
        Ok(())
    })
}

impl SqlStore {
    /// Opens (creating if needed) the SQLite database file at `path`.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::init(pool::sqlite_file(path).await.map_err(opened)?, Dialect::Sqlite).await
    }

    /// A private in-memory SQLite database (tests).
    pub async fn in_memory() -> Result<Self, StoreError> {
        Self::init(pool::sqlite_memory().await.map_err(opened)?, Dialect::Sqlite).await
    }

    /// PostgreSQL at `url` (`postgres://user:password@host:port/database`).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::init(pool::postgres(url).await.map_err(opened)?, Dialect::Postgres).await
    }

    async fn init(pool: AnyPool, dialect: Dialect) -> Result<Self, StoreError> {
        let legacy: &migrations::AdoptLegacy = &adopt_legacy_sqlite;
        migrations::apply(&pool, dialect, "schema_migrations", MIGRATIONS, (dialect == Dialect::Sqlite).then_some(legacy))
            .await
            .map_err(|e| StoreError::Backend { op: "migrating the schema", source: Box::new(e) })?;
        Ok(Self { pool, dialect })
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The pool, for a store that shares this database (the agent store on PostgreSQL).
    pub fn shared_pool(&self) -> AnyPool {
        self.pool.clone()
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// More than one node can share this database.
    pub fn shared(&self) -> bool {
        self.dialect == Dialect::Postgres
    }
}

fn record(row: &AnyRow) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id: row.get("id"),
        image: row.get("image"),
        state: parse_state(row.get::<&str, _>("state"))?,
        created_at: from_ms(row.get("created_at"))?,
        expires_at: from_ms(row.get("expires_at"))?,
        idle_timeout_seconds: row.get::<i64, _>("idle_timeout_seconds").max(0) as u64,
        failure: row.get("failure"),
        network: match row.get::<Option<&str>, _>("network") {
            // Written before policies existed: those sessions had no network at all.
            None => Network { egress: EgressMode::None, allow: Vec::new() },
            Some(j) => serde_json::from_str(j).map_err(|_| StoreError::Corrupt { what: "network", value: j.to_string() })?,
        },
        size: match row.get::<Option<&str>, _>("size") {
            None => None,
            Some(j) => Some(serde_json::from_str(j).map_err(|_| StoreError::Corrupt { what: "size", value: j.to_string() })?),
        },
        runtime: match row.get::<Option<&str>, _>("runtime") {
            None => Default::default(),
            Some(j) => serde_json::from_str(j).map_err(|_| StoreError::Corrupt { what: "runtime", value: j.to_string() })?,
        },
        last_active_at: row.get::<Option<i64>, _>("last_active_at").map(from_ms).transpose()?,
        owner: row.get("owner"),
        node: row.get("node"),
    })
}

fn event(row: &AnyRow) -> Result<StoredEvent, StoreError> {
    Ok(StoredEvent {
        seq: row.get("seq"),
        session: row.get("session_id"),
        from: row.get::<Option<&str>, _>("from_state").map(parse_state).transpose()?,
        to: parse_state(row.get::<&str, _>("to_state"))?,
        reason: row.get("reason"),
        at: from_ms(row.get("at"))?,
    })
}

pub(super) async fn append_event(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    from: Option<SessionState>,
    to: SessionState,
    reason: Option<&str>,
    at: OffsetDateTime,
) -> Result<StoredEvent, StoreError> {
    let seq: i64 = sqlx::query_scalar("INSERT INTO session_events (session_id, from_state, to_state, reason, at) VALUES ($1, $2, $3, $4, $5) RETURNING seq")
        .bind(id)
        .bind(from.map(|s| s.as_str()))
        .bind(to.as_str())
        .bind(reason)
        .bind(ms(at))
        .fetch_one(&mut *conn)
        .await
        .map_err(backend("appending an event"))?;
    Ok(StoredEvent {
        seq,
        session: id.to_string(),
        from,
        to,
        reason: reason.map(str::to_string),
        at,
    })
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn insert(&self, s: &SessionRecord) -> Result<StoredEvent, StoreError> {
        let mut tx = self.pool().begin().await.map_err(backend("begin"))?;
        let res = sqlx::query(
            "INSERT INTO sessions (id, image, state, created_at, expires_at, idle_timeout_seconds, failure, updated_at, network, size, runtime, owner, node)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&s.id)
        .bind(&s.image)
        .bind(s.state.as_str())
        .bind(ms(s.created_at))
        .bind(ms(s.expires_at))
        .bind(s.idle_timeout_seconds as i64)
        .bind(&s.failure)
        .bind(ms(s.created_at))
        .bind(serde_json::to_string(&s.network).expect("network serialises"))
        .bind(s.size.map(|z| serde_json::to_string(&z).expect("size serialises")))
        .bind(serde_json::to_string(&s.runtime).expect("runtime serialises"))
        .bind(&s.owner)
        .bind(&s.node)
        .execute(&mut *tx)
        .await;
        if let Err(e) = res {
            if let sqlx::Error::Database(d) = &e {
                if d.is_unique_violation() {
                    return Err(StoreError::Duplicate(s.id.clone()));
                }
            }
            return Err(backend("inserting a session")(e));
        }
        let ev = append_event(&mut tx, &s.id, None, s.state, None, s.created_at).await?;
        tx.commit().await.map_err(backend("commit"))?;
        Ok(ev)
    }

    async fn transition(
        &self,
        id: &str,
        from: SessionState,
        to: SessionState,
        reason: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<StoredEvent, StoreError> {
        let mut tx = self.pool().begin().await.map_err(backend("begin"))?;
        let failure = if to == SessionState::Failed { reason } else { None };
        let res = sqlx::query(
            "UPDATE sessions SET state = $1, failure = COALESCE($2, failure), updated_at = $3 WHERE id = $4 AND state = $5",
        )
        .bind(to.as_str())
        .bind(failure)
        .bind(ms(at))
        .bind(id)
        .bind(from.as_str())
        .execute(&mut *tx)
        .await
        .map_err(backend("updating a session"))?;
        if res.rows_affected() == 0 {
            let actual: Option<String> = sqlx::query_scalar("SELECT state FROM sessions WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend("reading a session"))?;
            return match actual {
                None => Err(StoreError::NotFound(id.to_string())),
                Some(a) => Err(StoreError::StateMismatch { id: id.to_string(), expected: from, actual: parse_state(&a)? }),
            };
        }
        let ev = append_event(&mut tx, id, Some(from), to, reason, at).await?;
        tx.commit().await.map_err(backend("commit"))?;
        Ok(ev)
    }

    async fn get(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(backend("reading a session"))?;
        row.as_ref().map(record).transpose()
    }

    async fn list(&self, states: &[SessionState]) -> Result<Vec<SessionRecord>, StoreError> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let marks = (1..=states.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE state IN ({marks}) ORDER BY created_at, id");
        let mut q = sqlx::query(&sql);
        for s in states {
            q = q.bind(s.as_str());
        }
        let rows = q.fetch_all(self.pool()).await.map_err(backend("listing sessions"))?;
        rows.iter().map(record).collect()
    }

    async fn events(&self, id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query("SELECT seq, session_id, from_state, to_state, reason, at FROM session_events WHERE session_id = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(self.pool())
            .await
            .map_err(backend("reading events"))?;
        rows.iter().map(event).collect()
    }

    async fn count_by_state(&self) -> Result<HashMap<SessionState, u64>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM sessions GROUP BY state")
            .fetch_all(self.pool())
            .await
            .map_err(backend("counting sessions"))?;
        rows.iter()
            .map(|r| Ok((parse_state(r.get::<&str, _>("state"))?, r.get::<i64, _>("n").max(0) as u64)))
            .collect()
    }

    async fn set_last_active(&self, id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET last_active_at = $1 WHERE id = $2")
            .bind(ms(at))
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(backend("storing a session's last activity"))?;
        Ok(())
    }

    async fn set_expires_at(&self, id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET expires_at = $1 WHERE id = $2")
            .bind(ms(at))
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(backend("storing a session's end of life"))?;
        Ok(())
    }

    async fn set_runtime(&self, id: &str, runtime: &super::SessionRuntime) -> Result<(), StoreError> {
        let res = sqlx::query("UPDATE sessions SET runtime = $1 WHERE id = $2")
            .bind(serde_json::to_string(runtime).expect("runtime serialises"))
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(backend("storing a session's runtime"))?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound(id.to_string()));
        }
        Ok(())
    }

    async fn port_visibility(&self, id: &str) -> Result<HashMap<u16, Visibility>, StoreError> {
        let rows = sqlx::query("SELECT port, visibility FROM port_visibility WHERE session_id = $1")
            .bind(id)
            .fetch_all(self.pool())
            .await
            .map_err(backend("reading port visibility"))?;
        rows.iter()
            .map(|r| Ok((r.get::<i64, _>("port") as u16, parse_visibility(r.get::<&str, _>("visibility"))?)))
            .collect()
    }

    async fn set_port_visibility(&self, id: &str, port: u16, visibility: Visibility) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO port_visibility (session_id, port, visibility) VALUES ($1, $2, $3)
             ON CONFLICT (session_id, port) DO UPDATE SET visibility = excluded.visibility",
        )
        .bind(id)
        .bind(port as i64)
        .bind(visibility_str(visibility))
        .execute(self.pool())
        .await
        .map_err(backend("storing port visibility"))?;
        Ok(())
    }
}

#[cfg(test)]
mod legacy_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_store_suite_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let file = |n: &str| dir.path().join(n);
        super::super::suite::sessions(&SqlStore::open(&file("a.db")).await.unwrap()).await;
        super::super::suite::concurrent_transitions(std::sync::Arc::new(SqlStore::open(&file("b.db")).await.unwrap())).await;
        super::super::suite::nodes(&SqlStore::open(&file("c.db")).await.unwrap()).await;
        super::super::suite::agent(&crate::agent::store::AgentStore::open(&file("agent.db")).await.unwrap(), None).await;
    }

    #[tokio::test]
    async fn databases_from_before_network_policies_are_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true);
            let pool = sqlx::sqlite::SqlitePoolOptions::new().connect_with(opts).await.unwrap();
            sqlx::query("CREATE TABLE sessions (id TEXT PRIMARY KEY, image TEXT NOT NULL, state TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, idle_timeout_seconds INTEGER NOT NULL, failure TEXT, updated_at INTEGER NOT NULL)")
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query("INSERT INTO sessions VALUES ('sold', 'minimal', 'destroyed', 0, 0, 900, NULL, 0)").execute(&pool).await.unwrap();
            pool.close().await;
        }
        let store = SqliteStore::open(&path).await.unwrap();
        let old = store.get("sold").await.unwrap().unwrap();
        assert_eq!(old.network.egress, EgressMode::None);
        assert_eq!(old.size, None, "rows from before sizes have none");
        store.insert(&super::super::suite::session("snew", None)).await.unwrap();
        assert_eq!(store.get("snew").await.unwrap().unwrap().network, super::super::suite::session("snew", None).network);
    }

    #[tokio::test]
    async fn a_database_from_a_newer_mayfly_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(&path).await.unwrap();
        sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'future', 0)").execute(store.pool()).await.unwrap();
        drop(store);
        let e = SqliteStore::open(&path).await.err().expect("refused");
        let chain = mayfly_proto::error_chain(&e);
        assert!(chain.contains("made by a newer mayfly (schema version 99"), "{chain}");
    }
}
