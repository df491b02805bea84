//! The store suite (`mayfly_server::store::suite`, run on SQLite by the unit tests) on a real
//! PostgreSQL started here, plus what only a server database does: two nodes migrating one
//! database at once, a bad URL, an unreachable server, and the database restarting under a
//! store that goes on once it answers again.

use crate::common;

use common::postgres::Postgres;
use mayfly_server::agent::store::AgentStore;
use mayfly_server::store::{suite, SessionStore, SqlStore};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_suite_on_postgres() {
    let pg = Postgres::start().await;
    let store = |name: &'static str| {
        let pg = &pg;
        async move { SqlStore::connect(&pg.create_database(name).await).await.unwrap() }
    };
    suite::sessions(&store("sessions").await).await;
    suite::concurrent_transitions(Arc::new(store("race").await)).await;
    let accounts = store("accounts").await;
    suite::users_tokens_and_deletion(&accounts).await;
    suite::audit_filters_and_pages(&store("audit").await).await;
    suite::nodes(&store("nodes").await).await;
    let shared = store("agent").await;
    suite::agent(&AgentStore::shared(shared.shared_pool(), shared.dialect()).await.unwrap(), Some(&shared)).await;

    // Two nodes starting on one new database at once: both migrate without a race.
    let url = pg.create_database("together").await;
    let (a, b) = tokio::join!(SqlStore::connect(&url), SqlStore::connect(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    a.insert(&suite::session("s1", Some("n1"))).await.unwrap();
    assert_eq!(b.get("s1").await.unwrap().unwrap().node.as_deref(), Some("n1"), "one database");

    // Bad URLs and an unreachable server: clear errors that never show the password.
    let e = SqlStore::connect("mysql://u:pw@127.0.0.1/x").await.err().unwrap();
    assert!(mayfly_proto::error_chain(&e).contains("must start with postgres://"), "{}", mayfly_proto::error_chain(&e));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = SqlStore::connect(&format!("postgres://mayfly:hunter2@127.0.0.1:{closed}/x")).await.err().unwrap();
    let chain = mayfly_proto::error_chain(&e);
    assert!(chain.contains(&format!("cannot connect to PostgreSQL at 127.0.0.1:{closed}/x")), "{chain}");
    assert!(!chain.contains("hunter2"), "the password is never shown: {chain}");

    // The database restarts under the store: it fails meanwhile and goes on afterwards.
    pg.stop();
    assert!(a.get("s1").await.is_err(), "no database, an error (not a hang)");
    pg.start_again().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        match a.get("s1").await {
            Ok(Some(_)) => break,
            other => {
                assert!(tokio::time::Instant::now() < deadline, "the store did not reconnect: {other:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// `?sslmode=require` in `database_url`: the store's connections are encrypted (sqlx's rustls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_url_can_ask_for_tls() {
    let pg = Postgres::start().await;
    let url = pg.create_database("tls").await;
    pg.enable_tls().await;
    let store = SqlStore::connect(&format!("{url}?sslmode=require")).await.unwrap();
    store.insert(&suite::session("s1", None)).await.unwrap();
    let tls: i64 = sqlx::query_scalar("SELECT CAST(CASE WHEN ssl THEN 1 ELSE 0 END AS BIGINT) FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&store.shared_pool())
        .await
        .unwrap();
    assert_eq!(tls, 1, "the connection is encrypted");
    assert!(store.get("s1").await.unwrap().is_some());
}
