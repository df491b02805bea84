//! SQLite implementation of [`SessionStore`] (sqlx, WAL mode). Times are Unix milliseconds.
//! Tables are created at open (`CREATE TABLE IF NOT EXISTS`); `schema_version` is recorded in
//! `PRAGMA user_version` so later migrations know where they start.

use super::{parse_state, parse_visibility, visibility_str, SessionRecord, SessionStore, StoreError, StoredEvent};
use async_trait::async_trait;
use mayfly_proto::api::{EgressMode, Network, SessionState, Visibility};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::Row;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use time::OffsetDateTime;

/// Named, not `*`: a connection that prepared `SELECT *` before a migration added a column
/// would read the old column list.
const SESSION_COLUMNS: &str =
    "id, image, state, created_at, expires_at, idle_timeout_seconds, failure, network, size, runtime, last_active_at, owner";

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS sessions (
        id TEXT PRIMARY KEY,
        image TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        idle_timeout_seconds INTEGER NOT NULL,
        failure TEXT,
        updated_at INTEGER NOT NULL,
        network TEXT,
        size TEXT,
        runtime TEXT,
        last_active_at INTEGER,
        owner TEXT
    )",
    "CREATE INDEX IF NOT EXISTS sessions_state ON sessions(state)",
    "CREATE TABLE IF NOT EXISTS session_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL,
        from_state TEXT,
        to_state TEXT NOT NULL,
        reason TEXT,
        at INTEGER NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS session_events_session ON session_events(session_id, seq)",
    "CREATE TABLE IF NOT EXISTS port_visibility (
        session_id TEXT NOT NULL,
        port INTEGER NOT NULL,
        visibility TEXT NOT NULL,
        PRIMARY KEY (session_id, port)
    )",
    "PRAGMA user_version = 1",
];

pub struct SqliteStore {
    pub(super) pool: SqlitePool,
}

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

/// A pool on the database file at `path` (created if needed; WAL, synchronous NORMAL, 5 s busy timeout). Shared by
/// the session store and the agent store.
pub(crate) async fn file_pool(path: &Path) -> Result<SqlitePool, sqlx::Error> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // With WAL, NORMAL never corrupts the database; a power cut may lose the last
        // transactions, which a restart's reconcile fails anyway. One fsync less per change.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
    SqlitePoolOptions::new().max_connections(4).connect_with(opts).await
}

/// A private in-memory database (tests). One connection: every connection to `:memory:` is a
/// separate database.
pub(crate) async fn memory_pool() -> Result<SqlitePool, sqlx::Error> {
    let opts = SqliteConnectOptions::new().in_memory(true);
    SqlitePoolOptions::new().max_connections(1).idle_timeout(None).max_lifetime(None).connect_with(opts).await
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::init(file_pool(path).await.map_err(backend("open"))?).await
    }

    /// A private in-memory database (tests).
    pub async fn in_memory() -> Result<Self, StoreError> {
        Self::init(memory_pool().await.map_err(backend("open"))?).await
    }

    async fn init(pool: SqlitePool) -> Result<Self, StoreError> {
        for stmt in SCHEMA.iter().chain(super::sqlite_accounts::SCHEMA) {
            sqlx::query(stmt).execute(&pool).await.map_err(backend("creating tables"))?;
        }
        // Columns added after the first release: added to older databases in place.
        for (column, decl) in [("network", "TEXT"), ("size", "TEXT"), ("runtime", "TEXT"), ("last_active_at", "INTEGER"), ("owner", "TEXT")] {
            let have: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pragma_table_info('sessions') WHERE name = ?")
                .bind(column)
                .fetch_one(&pool)
                .await
                .map_err(backend("reading the schema"))?;
            if have == 0 {
                sqlx::query(&format!("ALTER TABLE sessions ADD COLUMN {column} {decl}"))
                    .execute(&pool)
                    .await
                    .map_err(backend("migrating the schema"))?;
            }
        }
        Ok(Self { pool })
    }
}

fn record(row: &SqliteRow) -> Result<SessionRecord, StoreError> {
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
        node: None,
    })
}

fn event(row: &SqliteRow) -> Result<StoredEvent, StoreError> {
    Ok(StoredEvent {
        seq: row.get("seq"),
        session: row.get("session_id"),
        from: row.get::<Option<&str>, _>("from_state").map(parse_state).transpose()?,
        to: parse_state(row.get::<&str, _>("to_state"))?,
        reason: row.get("reason"),
        at: from_ms(row.get("at"))?,
    })
}

async fn append_event(
    conn: &mut sqlx::SqliteConnection,
    id: &str,
    from: Option<SessionState>,
    to: SessionState,
    reason: Option<&str>,
    at: OffsetDateTime,
) -> Result<StoredEvent, StoreError> {
    let res = sqlx::query("INSERT INTO session_events (session_id, from_state, to_state, reason, at) VALUES (?, ?, ?, ?, ?)")
        .bind(id)
        .bind(from.map(|s| s.as_str()))
        .bind(to.as_str())
        .bind(reason)
        .bind(ms(at))
        .execute(&mut *conn)
        .await
        .map_err(backend("appending an event"))?;
    Ok(StoredEvent {
        seq: res.last_insert_rowid(),
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
        let mut tx = self.pool.begin().await.map_err(backend("begin"))?;
        let res = sqlx::query(
            "INSERT INTO sessions (id, image, state, created_at, expires_at, idle_timeout_seconds, failure, updated_at, network, size, runtime, owner)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        let mut tx = self.pool.begin().await.map_err(backend("begin"))?;
        let failure = if to == SessionState::Failed { reason } else { None };
        let res = sqlx::query(
            "UPDATE sessions SET state = ?, failure = COALESCE(?, failure), updated_at = ? WHERE id = ? AND state = ?",
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
            let actual: Option<String> = sqlx::query_scalar("SELECT state FROM sessions WHERE id = ?")
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
        let row = sqlx::query(&format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend("reading a session"))?;
        row.as_ref().map(record).transpose()
    }

    async fn list(&self, states: &[SessionState]) -> Result<Vec<SessionRecord>, StoreError> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let marks = vec!["?"; states.len()].join(", ");
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE state IN ({marks}) ORDER BY created_at, id");
        let mut q = sqlx::query(&sql);
        for s in states {
            q = q.bind(s.as_str());
        }
        let rows = q.fetch_all(&self.pool).await.map_err(backend("listing sessions"))?;
        rows.iter().map(record).collect()
    }

    async fn events(&self, id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query("SELECT * FROM session_events WHERE session_id = ? ORDER BY seq")
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(backend("reading events"))?;
        rows.iter().map(event).collect()
    }

    async fn count_by_state(&self) -> Result<HashMap<SessionState, u64>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM sessions GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(backend("counting sessions"))?;
        rows.iter()
            .map(|r| Ok((parse_state(r.get::<&str, _>("state"))?, r.get::<i64, _>("n").max(0) as u64)))
            .collect()
    }

    async fn set_last_active(&self, id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET last_active_at = ? WHERE id = ?")
            .bind(ms(at))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend("storing a session's last activity"))?;
        Ok(())
    }

    async fn set_expires_at(&self, id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET expires_at = $1 WHERE id = $2")
            .bind(ms(at))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend("storing a session's end of life"))?;
        Ok(())
    }

    async fn set_runtime(&self, id: &str, runtime: &super::SessionRuntime) -> Result<(), StoreError> {
        let res = sqlx::query("UPDATE sessions SET runtime = ? WHERE id = ?")
            .bind(serde_json::to_string(runtime).expect("runtime serialises"))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend("storing a session's runtime"))?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound(id.to_string()));
        }
        Ok(())
    }

    async fn port_visibility(&self, id: &str) -> Result<HashMap<u16, Visibility>, StoreError> {
        let rows = sqlx::query("SELECT port, visibility FROM port_visibility WHERE session_id = ?")
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(backend("reading port visibility"))?;
        rows.iter()
            .map(|r| Ok((r.get::<i64, _>("port") as u16, parse_visibility(r.get::<&str, _>("visibility"))?)))
            .collect()
    }

    async fn set_port_visibility(&self, id: &str, port: u16, visibility: Visibility) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO port_visibility (session_id, port, visibility) VALUES (?, ?, ?)
             ON CONFLICT (session_id, port) DO UPDATE SET visibility = excluded.visibility",
        )
        .bind(id)
        .bind(port as i64)
        .bind(visibility_str(visibility))
        .execute(&self.pool)
        .await
        .map_err(backend("storing port visibility"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SessionState::*;

    fn rec(id: &str) -> SessionRecord {
        let now = OffsetDateTime::now_utc();
        SessionRecord {
            id: id.into(),
            image: "minimal".into(),
            state: Creating,
            created_at: now,
            expires_at: now + time::Duration::hours(1),
            idle_timeout_seconds: 900,
            failure: None,
            network: Network { egress: EgressMode::Allowlist, allow: vec!["pypi.org".into()] },
            size: Some(mayfly_proto::api::SessionSize { vcpus: 2, memory_mib: 768, disk_gib: 3 }),
            runtime: super::super::SessionRuntime { auto_push: true, sealed: Some("c2VhbGVk".into()), ..Default::default() },
            last_active_at: None,
            owner: Some("ualice".into()),
        }
    }

    #[tokio::test]
    async fn runtime_round_trips_and_updates() {
        let store = SqliteStore::in_memory().await.unwrap();
        let r = rec("sa");
        store.insert(&r).await.unwrap();
        assert_eq!(store.get("sa").await.unwrap().unwrap().runtime, r.runtime);
        let mut rt = r.runtime.clone();
        rt.forked_from = Some("sb".into());
        store.set_runtime("sa", &rt).await.unwrap();
        assert_eq!(store.get("sa").await.unwrap().unwrap().runtime, rt);
        assert!(matches!(store.set_runtime("nope", &rt).await, Err(StoreError::NotFound(_))));
        let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        store.set_last_active("sa", at).await.unwrap();
        assert_eq!(store.get("sa").await.unwrap().unwrap().last_active_at, Some(at));
    }

    #[tokio::test]
    async fn databases_from_before_network_policies_are_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let opts = SqliteConnectOptions::new().filename(&path).create_if_missing(true);
            let pool = SqlitePoolOptions::new().connect_with(opts).await.unwrap();
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
        store.insert(&rec("snew")).await.unwrap();
        assert_eq!(store.get("snew").await.unwrap().unwrap().network, rec("snew").network);
    }

    #[tokio::test]
    async fn records_transitions_and_refuses_stale_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).await.unwrap();
        let first = store.insert(&rec("sa")).await.unwrap();
        assert_eq!((first.from, first.to), (None, Creating));
        assert!(matches!(store.insert(&rec("sa")).await, Err(StoreError::Duplicate(_))));
        let now = OffsetDateTime::now_utc();
        store.transition("sa", Creating, Ready, None, now).await.unwrap();
        let stale = store.transition("sa", Creating, Failed, Some("x"), now).await.unwrap_err();
        assert!(matches!(stale, StoreError::StateMismatch { actual: Ready, .. }), "{stale}");
        store.transition("sa", Ready, Failed, Some("QEMU killed"), now).await.unwrap();
        let got = store.get("sa").await.unwrap().unwrap();
        assert_eq!(got.state, Failed);
        assert_eq!(got.failure.as_deref(), Some("QEMU killed"));
        assert_eq!(got.network, rec("sa").network, "the network policy round-trips");
        assert_eq!(got.size, rec("sa").size, "the size round-trips");
        let evs = store.events("sa").await.unwrap();
        assert_eq!(evs.iter().map(|e| e.to).collect::<Vec<_>>(), vec![Creating, Ready, Failed]);
        assert!(evs.windows(2).all(|w| w[0].seq < w[1].seq));
        assert!(matches!(store.transition("nope", Ready, Failed, None, now).await, Err(StoreError::NotFound(_))));
        assert_eq!(store.list(&[Failed]).await.unwrap().len(), 1);
        assert!(store.list(&[Ready, Creating]).await.unwrap().is_empty());
        assert_eq!(store.count_by_state().await.unwrap().get(&Failed), Some(&1));
    }

    #[tokio::test]
    async fn port_visibility_upserts() {
        let store = SqliteStore::in_memory().await.unwrap();
        store.set_port_visibility("sa", 8000, Visibility::Public).await.unwrap();
        store.set_port_visibility("sa", 8000, Visibility::Private).await.unwrap();
        store.set_port_visibility("sa", 3000, Visibility::Public).await.unwrap();
        let v = store.port_visibility("sa").await.unwrap();
        assert_eq!(v.get(&8000), Some(&Visibility::Private));
        assert_eq!(v.get(&3000), Some(&Visibility::Public));
        assert!(store.port_visibility("other").await.unwrap().is_empty());
    }
}
