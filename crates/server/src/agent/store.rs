//! Agent runs and the conversation of each session: on one host in their own SQLite file
//! (`<data_dir>/agent.db`), apart from the session store so the two evolve separately; with
//! PostgreSQL in the shared database (tables of their own, migrations of their own).
//!
//! ```text
//! agent_runs(id PK, session_id, status, prompt, summary, reason, created_at, finished_at,
//!            steps, input_tokens, output_tokens)          -- times: Unix milliseconds
//! agent_messages(seq PK AUTOINCREMENT, session_id, run_id, body)  -- body: mayfly_agent::Message JSON
//! ```
//! At open, runs left `running` by a previous process (a crash) are marked `interrupted`.

use mayfly_agent::Message;
use mayfly_proto::api::{AgentRun, AgentRunStatus};
use crate::store::migrations::{self, Migration};
use crate::store::Dialect;
use sqlx::any::AnyRow;
use sqlx::AnyPool;
use sqlx::Row;
use std::path::Path;
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum AgentStoreError {
    #[error("agent store: {op} failed")]
    Backend {
        op: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("agent store holds an invalid {what}: {value:?}")]
    Corrupt { what: &'static str, value: String },
}

fn backend(op: &'static str) -> impl FnOnce(sqlx::Error) -> AgentStoreError {
    move |e| AgentStoreError::Backend { op, source: Box::new(e) }
}

/// Named, not `*`: a pooled connection that prepared `SELECT *` before a migration added a
/// column reads rows of the new width with the old column list (sqlx panics).
const RUN_COLUMNS: &str =
    "id, session_id, status, prompt, summary, reason, created_at, finished_at, steps, input_tokens, output_tokens, user_id";

/// The agent store's schema, oldest first (table `agent_schema_migrations`).
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "agent runs and messages",
    statements: &[
        "CREATE TABLE IF NOT EXISTS agent_runs (
            id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            status TEXT NOT NULL,
            prompt TEXT NOT NULL,
            summary TEXT,
            reason TEXT,
            created_at BIGINT NOT NULL,
            finished_at BIGINT,
            steps BIGINT NOT NULL DEFAULT 0,
            input_tokens BIGINT NOT NULL DEFAULT 0,
            output_tokens BIGINT NOT NULL DEFAULT 0,
            user_id TEXT
        )",
        "CREATE INDEX IF NOT EXISTS agent_runs_session ON agent_runs(session_id, created_at)",
        "CREATE TABLE IF NOT EXISTS agent_messages (
            seq {serial},
            session_id TEXT NOT NULL,
            run_id TEXT NOT NULL,
            body TEXT NOT NULL
        )",
        "CREATE INDEX IF NOT EXISTS agent_messages_session ON agent_messages(session_id, seq)",
    ],
}];

/// An agent.db from before versioned migrations: `user_id` (added with users) added in place.
fn adopt_legacy_sqlite(conn: &mut sqlx::AnyConnection) -> futures::future::BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        let have: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pragma_table_info('agent_runs') WHERE name = 'user_id'")
            .fetch_one(&mut *conn)
            .await?;
        if have == 0 {
            sqlx::query("ALTER TABLE agent_runs ADD COLUMN user_id TEXT").execute(&mut *conn).await?;
        }
        Ok(())
    })
}

async fn create_schema(pool: &AnyPool, dialect: Dialect) -> Result<(), AgentStoreError> {
    let legacy: &migrations::AdoptLegacy = &adopt_legacy_sqlite;
    migrations::apply(pool, dialect, "agent_schema_migrations", MIGRATIONS, (dialect == Dialect::Sqlite).then_some(legacy))
        .await
        .map_err(|e| AgentStoreError::Backend { op: "migrate schema", source: Box::new(e) })
}

/// How a run ended.
pub struct RunEnd {
    pub status: AgentRunStatus,
    pub summary: Option<String>,
    pub reason: Option<String>,
    pub steps: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

pub struct AgentStore {
    pool: AnyPool,
}

fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn rfc3339_ms(v: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(v as i128 * 1_000_000).map(crate::manager::rfc3339).unwrap_or_default()
}

fn parse_status(s: &str) -> Result<AgentRunStatus, AgentStoreError> {
    use AgentRunStatus::*;
    [Running, Succeeded, Failed, Cancelled, Interrupted]
        .into_iter()
        .find(|v| v.as_str() == s)
        .ok_or_else(|| AgentStoreError::Corrupt { what: "run status", value: s.to_string() })
}

fn run_of(r: &AnyRow) -> Result<AgentRun, AgentStoreError> {
    Ok(AgentRun {
        id: r.get("id"),
        session: r.get("session_id"),
        status: parse_status(r.get("status"))?,
        prompt: r.get("prompt"),
        created_at: rfc3339_ms(r.get("created_at")),
        finished_at: r.get::<Option<i64>, _>("finished_at").map(rfc3339_ms),
        summary: r.get("summary"),
        reason: r.get("reason"),
        steps: r.get::<i64, _>("steps") as u32,
        input_tokens: r.get::<i64, _>("input_tokens") as u64,
        output_tokens: r.get::<i64, _>("output_tokens") as u64,
    })
}

impl AgentStore {
    /// The SQLite file at `path` (one host).
    pub async fn open(path: &Path) -> Result<Self, AgentStoreError> {
        let pool = crate::store::pool::sqlite_file(path).await.map_err(|e| AgentStoreError::Backend { op: "open", source: Box::new(e) })?;
        Self::init(pool, Dialect::Sqlite, true).await
    }

    /// The shared database of a cluster (the session store's pool). Runs left `running` belong
    /// to whichever node runs their session, so none is closed here: each node closes its own
    /// at start ([`AgentStore::interrupt_runs_of_node`]).
    pub async fn shared(pool: AnyPool, dialect: Dialect) -> Result<Self, AgentStoreError> {
        Self::init(pool, dialect, false).await
    }

    async fn init(pool: AnyPool, dialect: Dialect, close_running: bool) -> Result<Self, AgentStoreError> {
        create_schema(&pool, dialect).await?;
        if close_running {
            sqlx::query("UPDATE agent_runs SET status = 'interrupted', reason = 'the server stopped during the run', finished_at = $1 WHERE status = 'running'")
                .bind(ms(OffsetDateTime::now_utc()))
                .execute(&pool)
                .await
                .map_err(backend("close interrupted runs"))?;
        }
        Ok(Self { pool })
    }

    /// On a shared database: marks the runs left `running` by this node's previous process
    /// `interrupted` (those of its sessions; other nodes' runs go on).
    pub async fn interrupt_runs_of_node(&self, node: &str) -> Result<u64, AgentStoreError> {
        let r = sqlx::query(
            "UPDATE agent_runs SET status = 'interrupted', reason = 'the server stopped during the run', finished_at = $1
             WHERE status = 'running' AND session_id IN (SELECT id FROM sessions WHERE node = $2)",
        )
        .bind(ms(OffsetDateTime::now_utc()))
        .bind(node)
        .execute(&self.pool)
        .await
        .map_err(backend("close interrupted runs"))?;
        Ok(r.rows_affected())
    }

    /// A private in-memory store (tests).
    pub async fn in_memory() -> Result<Self, AgentStoreError> {
        let pool = crate::store::pool::sqlite_memory().await.map_err(|e| AgentStoreError::Backend { op: "open", source: Box::new(e) })?;
        Self::init(pool, Dialect::Sqlite, false).await
    }

    pub async fn insert_run(&self, id: &str, session: &str, user: Option<&str>, prompt: &str) -> Result<AgentRun, AgentStoreError> {
        sqlx::query("INSERT INTO agent_runs (id, session_id, status, prompt, created_at, user_id) VALUES ($1, $2, 'running', $3, $4, $5)")
            .bind(id)
            .bind(session)
            .bind(prompt)
            .bind(ms(OffsetDateTime::now_utc()))
            .bind(user)
            .execute(&self.pool)
            .await
            .map_err(backend("insert run"))?;
        self.run(session, id).await?.ok_or_else(|| AgentStoreError::Corrupt { what: "run", value: id.to_string() })
    }

    /// Moves a running run to its final status; a run that already ended is left alone.
    pub async fn finish_run(&self, id: &str, end: &RunEnd) -> Result<(), AgentStoreError> {
        sqlx::query(
            "UPDATE agent_runs SET status = $1, summary = $2, reason = $3, steps = $4, input_tokens = $5, output_tokens = $6, finished_at = $7
             WHERE id = $8 AND status = 'running'",
        )
        .bind(end.status.as_str())
        .bind(&end.summary)
        .bind(&end.reason)
        .bind(end.steps as i64)
        .bind(end.input_tokens as i64)
        .bind(end.output_tokens as i64)
        .bind(ms(OffsetDateTime::now_utc()))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(backend("finish run"))?;
        Ok(())
    }

    pub async fn run(&self, session: &str, id: &str) -> Result<Option<AgentRun>, AgentStoreError> {
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM agent_runs WHERE id = $1 AND session_id = $2"))
            .bind(id)
            .bind(session)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend("get run"))?;
        row.as_ref().map(run_of).transpose()
    }

    /// The runs of `session`, oldest first.
    /// Runs `user` started since `since`.
    pub async fn runs_since(&self, user: &str, since: OffsetDateTime) -> Result<u32, AgentStoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agent_runs WHERE user_id = $1 AND created_at >= $2")
            .bind(user)
            .bind(ms(since))
            .fetch_one(&self.pool)
            .await
            .map_err(backend("count runs"))?;
        Ok(n.clamp(0, i64::from(u32::MAX)) as u32)
    }

    pub async fn runs(&self, session: &str) -> Result<Vec<AgentRun>, AgentStoreError> {
        let rows = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM agent_runs WHERE session_id = $1 ORDER BY created_at, id"))
            .bind(session)
            .fetch_all(&self.pool)
            .await
            .map_err(backend("list runs"))?;
        rows.iter().map(run_of).collect()
    }

    pub async fn append_message(&self, session: &str, run: &str, m: &Message) -> Result<(), AgentStoreError> {
        let body = serde_json::to_string(m).map_err(|e| AgentStoreError::Backend { op: "encode message", source: Box::new(e) })?;
        sqlx::query("INSERT INTO agent_messages (session_id, run_id, body) VALUES ($1, $2, $3)")
            .bind(session)
            .bind(run)
            .bind(body)
            .execute(&self.pool)
            .await
            .map_err(backend("append message"))?;
        Ok(())
    }

    /// The conversation of `session`, oldest first.
    pub async fn messages(&self, session: &str) -> Result<Vec<Message>, AgentStoreError> {
        let rows = sqlx::query("SELECT body FROM agent_messages WHERE session_id = $1 ORDER BY seq")
            .bind(session)
            .fetch_all(&self.pool)
            .await
            .map_err(backend("read messages"))?;
        rows.iter()
            .map(|r| {
                let body: String = r.get("body");
                serde_json::from_str(&body).map_err(|_| AgentStoreError::Corrupt { what: "message", value: body })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_and_messages_round_trip_and_runs_left_running_are_interrupted_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        let store = AgentStore::open(&path).await.unwrap();
        let run = store.insert_run("r1", "s1", Some("ua"), "do it").await.unwrap();
        assert_eq!((run.status, run.prompt.as_str()), (AgentRunStatus::Running, "do it"));
        store.append_message("s1", "r1", &Message::user("do it")).await.unwrap();
        store.append_message("s2", "rx", &Message::user("other session")).await.unwrap();
        assert_eq!(store.messages("s1").await.unwrap(), vec![Message::user("do it")]);
        let end = RunEnd { status: AgentRunStatus::Succeeded, summary: Some("ok".into()), reason: None, steps: 2, input_tokens: 5, output_tokens: 7 };
        store.finish_run("r1", &end).await.unwrap();
        let cancel = RunEnd { status: AgentRunStatus::Cancelled, summary: None, reason: None, steps: 0, input_tokens: 0, output_tokens: 0 };
        store.finish_run("r1", &cancel).await.unwrap();
        let got = store.run("s1", "r1").await.unwrap().unwrap();
        assert_eq!((got.status, got.summary.as_deref(), got.steps), (AgentRunStatus::Succeeded, Some("ok"), 2), "a final status sticks");
        assert!(store.run("s2", "r1").await.unwrap().is_none(), "runs are per session");

        store.insert_run("r2", "s1", None, "again").await.unwrap();
        drop(store);
        let store = AgentStore::open(&path).await.unwrap();
        let runs = store.runs("s1").await.unwrap();
        let day_ago = OffsetDateTime::now_utc() - time::Duration::days(1);
        assert_eq!(store.runs_since("ua", day_ago).await.unwrap(), 1, "runs are counted per user");
        assert_eq!(store.runs_since("ua", OffsetDateTime::now_utc() + time::Duration::minutes(1)).await.unwrap(), 0);
        assert_eq!(runs.iter().map(|r| r.status).collect::<Vec<_>>(), [AgentRunStatus::Succeeded, AgentRunStatus::Interrupted]);
        assert_eq!(runs[1].reason.as_deref(), Some("the server stopped during the run"));
    }
}
