//! A database made by the mayfly before versioned migrations (tables created at open, `PRAGMA
//! user_version = 1`, later columns added by `ALTER TABLE`, no `schema_migrations`) opens with
//! nothing lost and is adopted as version 1, then migrated onwards. The statements below are that
//! release's, verbatim: do not "fix" them.

use super::{SqlStore, MIGRATIONS};
use crate::accounts::store::{AccountStore, AuditFilter};
use crate::agent::store::AgentStore;
use crate::store::SessionStore;
use mayfly_proto::api::{AgentRunStatus, SessionState, Visibility};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use time::OffsetDateTime;

const OLD_SESSIONS: &[&str] = &[
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

const OLD_ACCOUNTS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS users (
        id TEXT PRIMARY KEY,
        email TEXT NOT NULL,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        password_hash TEXT,
        oidc_issuer TEXT,
        oidc_subject TEXT,
        quotas TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_sign_in_at INTEGER,
        deleted_at INTEGER
    )",
    "CREATE UNIQUE INDEX IF NOT EXISTS users_email ON users(email) WHERE deleted_at IS NULL",
    "CREATE UNIQUE INDEX IF NOT EXISTS users_oidc ON users(oidc_issuer, oidc_subject) WHERE deleted_at IS NULL AND oidc_subject IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS api_tokens (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        name TEXT NOT NULL,
        hash TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        last_used_at INTEGER
    )",
    "CREATE INDEX IF NOT EXISTS api_tokens_user ON api_tokens(user_id)",
    "CREATE TABLE IF NOT EXISTS web_sessions (
        id TEXT PRIMARY KEY,
        user_id TEXT,
        hash TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS web_sessions_user ON web_sessions(user_id)",
    "CREATE TABLE IF NOT EXISTS user_git_credentials (
        user_id TEXT NOT NULL,
        host TEXT NOT NULL,
        username TEXT,
        sealed_token TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (user_id, host)
    )",
    "CREATE TABLE IF NOT EXISTS audit_log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
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
        created_at INTEGER NOT NULL,
        last_used_at INTEGER
    )",
    "CREATE UNIQUE INDEX IF NOT EXISTS ssh_keys_fingerprint ON ssh_keys(fingerprint)",
    "CREATE INDEX IF NOT EXISTS ssh_keys_user ON ssh_keys(user_id)",
];

/// An agent.db from before users: `agent_runs` without `user_id`.
const OLD_AGENT: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS agent_runs (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        status TEXT NOT NULL,
        prompt TEXT NOT NULL,
        summary TEXT,
        reason TEXT,
        created_at INTEGER NOT NULL,
        finished_at INTEGER,
        steps INTEGER NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0
    )",
    "CREATE INDEX IF NOT EXISTS agent_runs_session ON agent_runs(session_id, created_at)",
    "CREATE TABLE IF NOT EXISTS agent_messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        body TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS agent_messages_session ON agent_messages(session_id, seq)",
];

/// Runs `statements` on a SQLite file with the plain sqlite driver, as the old code did.
async fn old_db(path: &std::path::Path, statements: &[&str]) {
    let opts = SqliteConnectOptions::new().filename(path).create_if_missing(true);
    let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await.unwrap();
    for s in statements {
        sqlx::query(s).execute(&pool).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    pool.close().await;
}

#[tokio::test]
async fn a_database_from_before_versioned_migrations_is_adopted_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mayfly.db");
    let t = 1_700_000_000_000_i64;
    let mut stmts: Vec<String> = OLD_SESSIONS.iter().chain(OLD_ACCOUNTS).map(|s| s.to_string()).collect();
    stmts.extend([
        format!("INSERT INTO sessions (id, image, state, created_at, expires_at, idle_timeout_seconds, failure, updated_at, network, size, runtime, last_active_at, owner)
                 VALUES ('sold', 'minimal', 'ready', {t}, {}, 900, NULL, {t}, '{{\"egress\":\"allowlist\",\"allow\":[\"pypi.org\"]}}', '{{\"vcpus\":2,\"memory_mib\":768,\"disk_gib\":3}}', '{{\"auto_push\":true}}', {t}, 'ualice')", t + 3_600_000),
        format!("INSERT INTO session_events (session_id, from_state, to_state, reason, at) VALUES ('sold', NULL, 'creating', NULL, {t})"),
        format!("INSERT INTO session_events (session_id, from_state, to_state, reason, at) VALUES ('sold', 'creating', 'ready', NULL, {t})"),
        "INSERT INTO port_visibility (session_id, port, visibility) VALUES ('sold', 8080, 'public')".into(),
        format!("INSERT INTO users (id, email, name, role, password_hash, quotas, created_at) VALUES ('ualice', 'alice@example.com', 'Alice', 'member', '$argon2id$x', '{{}}', {t})"),
        format!("INSERT INTO api_tokens (id, user_id, name, hash, created_at) VALUES ('tok1', 'ualice', 'laptop', 'h', {t})"),
        format!("INSERT INTO audit_log (at, user_id, actor, action, session_id, detail, ip) VALUES ({t}, 'ualice', 'alice@example.com', 'session.create', 'sold', '{{}}', '127.0.0.1')"),
    ]);
    old_db(&path, &stmts.iter().map(String::as_str).collect::<Vec<_>>()).await;

    let store = SqlStore::open(&path).await.expect("the old database opens");
    let s = store.get("sold").await.unwrap().expect("the session is kept");
    assert_eq!((s.state, s.owner.as_deref(), s.node.as_deref()), (SessionState::Ready, Some("ualice"), None));
    assert_eq!(s.network.allow, vec!["pypi.org".to_string()]);
    assert_eq!(s.size.map(|z| z.memory_mib), Some(768));
    assert!(s.runtime.auto_push);
    let evs = store.events("sold").await.unwrap();
    assert_eq!(evs.iter().map(|e| e.to).collect::<Vec<_>>(), vec![SessionState::Creating, SessionState::Ready]);
    assert_eq!(store.port_visibility("sold").await.unwrap().get(&8080), Some(&Visibility::Public));
    assert_eq!(store.user("ualice").await.unwrap().expect("the user is kept").email, "alice@example.com");
    assert_eq!(store.tokens_of("ualice").await.unwrap().len(), 1);
    assert_eq!(store.audit(&AuditFilter { limit: 10, ..Default::default() }).await.unwrap().len(), 1);

    // Adopted as version 1, then migrated to the newest; new rows go on after the old ones.
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version").fetch_all(store.pool()).await.unwrap();
    assert_eq!(versions, MIGRATIONS.iter().map(|m| m.version).collect::<Vec<_>>());
    let next = store.transition("sold", SessionState::Ready, SessionState::Stopping, None, OffsetDateTime::now_utc()).await.unwrap();
    assert!(next.seq > evs[1].seq, "event numbers go on after the old ones");
    drop(store);
    // And opening it again changes nothing.
    let again = SqlStore::open(&path).await.unwrap();
    assert_eq!(again.events("sold").await.unwrap().len(), 3);

    // The agent store's own file, from before `user_id`.
    let agent_path = dir.path().join("agent.db");
    let mut agent: Vec<String> = OLD_AGENT.iter().map(|s| s.to_string()).collect();
    agent.push(format!(
        "INSERT INTO agent_runs (id, session_id, status, prompt, summary, created_at, finished_at, steps, input_tokens, output_tokens)
         VALUES ('r1', 'sold', 'succeeded', 'add a test', 'done', {t}, {}, 3, 100, 20)",
        t + 1000
    ));
    old_db(&agent_path, &agent.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let agents = AgentStore::open(&agent_path).await.expect("the old agent.db opens");
    let runs = agents.runs("sold").await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!((runs[0].status, runs[0].steps, runs[0].summary.as_deref()), (AgentRunStatus::Succeeded, 3, Some("done")));
    agents.insert_run("r2", "sold", Some("ualice"), "more").await.unwrap();
    assert_eq!(agents.runs_since("ualice", OffsetDateTime::UNIX_EPOCH).await.unwrap(), 1, "the added user_id column is used");
}
