//! The behaviour every backend of the stores must show, as functions over a fresh store: the unit
//! tests run them on SQLite, `tests/store_backends.rs` on a real PostgreSQL. (Coder's
//! `database.Store` suite runs the same way on both of its databases.)

#![allow(clippy::missing_panics_doc)]

use super::{SessionRecord, SessionRuntime, SessionStore, SqlStore, StoreError};
use crate::accounts::store::{AccountStore, AuditFilter, AuditRecord, GitCredentialRecord, TokenRecord, UserRecord};
use crate::agent::store::{AgentStore, RunEnd};
use crate::cluster::store::{ClaimError, NodeClaim, NodeStore, Renewal};
use mayfly_proto::accounts::{Quotas, Role};
use mayfly_proto::api::{AgentRunStatus, EgressMode, Network, SessionState, Visibility};
use mayfly_proto::nodes::{NodeCapacity, NodeImage, NodeMode};
use std::sync::Arc;
use time::OffsetDateTime;
use SessionState::*;

pub fn alice() -> UserRecord {
    UserRecord {
        id: "ualice".into(),
        email: "alice@example.com".into(),
        name: "Alice".into(),
        role: Role::Member,
        password_hash: Some("$argon2id$x".into()),
        oidc: None,
        quotas: Quotas { max_sessions: Some(2), ..Default::default() },
        created_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        last_sign_in_at: None,
    }
}


pub fn session(id: &str, node: Option<&str>) -> SessionRecord {
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
        runtime: SessionRuntime { auto_push: true, sealed: Some("c2VhbGVk".into()), ..Default::default() },
        last_active_at: None,
        owner: Some("ualice".into()),
        node: node.map(str::to_string),
    }
}

/// Sessions: insert, transitions (stale ones refused), events, lists, counts, runtime, last
/// activity, end of life, port visibility.
pub async fn sessions(store: &SqlStore) {
    let first = store.insert(&session("sa", Some("n1"))).await.unwrap();
    assert_eq!((first.from, first.to), (None, Creating));
    assert!(matches!(store.insert(&session("sa", None)).await, Err(StoreError::Duplicate(_))));
    let now = OffsetDateTime::now_utc();
    store.transition("sa", Creating, Ready, None, now).await.unwrap();
    let stale = store.transition("sa", Creating, Failed, Some("x"), now).await.unwrap_err();
    assert!(matches!(stale, StoreError::StateMismatch { actual: Ready, .. }), "{stale}");
    store.transition("sa", Ready, Failed, Some("QEMU killed"), now).await.unwrap();
    let got = store.get("sa").await.unwrap().unwrap();
    assert_eq!((got.state, got.failure.as_deref(), got.node.as_deref()), (Failed, Some("QEMU killed"), Some("n1")));
    assert_eq!(got.network, session("sa", None).network, "the network policy round-trips");
    assert_eq!(got.size, session("sa", None).size, "the size round-trips");
    let evs = store.events("sa").await.unwrap();
    assert_eq!(evs.iter().map(|e| e.to).collect::<Vec<_>>(), vec![Creating, Ready, Failed]);
    assert!(evs.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(matches!(store.transition("nope", Ready, Failed, None, now).await, Err(StoreError::NotFound(_))));
    assert_eq!(store.list(&[Failed]).await.unwrap().len(), 1);
    assert!(store.list(&[Ready, Creating]).await.unwrap().is_empty());
    assert_eq!(store.count_by_state().await.unwrap().get(&Failed), Some(&1));

    let r = session("sb", None);
    store.insert(&r).await.unwrap();
    assert_eq!(store.get("sb").await.unwrap().unwrap().runtime, r.runtime);
    let mut rt = r.runtime.clone();
    rt.forked_from = Some("sa".into());
    rt.labels.insert("team".into(), "ml".into());
    store.set_runtime("sb", &rt).await.unwrap();
    assert_eq!(store.get("sb").await.unwrap().unwrap().runtime, rt);
    assert!(matches!(store.set_runtime("nope", &rt).await, Err(StoreError::NotFound(_))));
    let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    store.set_last_active("sb", at).await.unwrap();
    store.set_expires_at("sb", at).await.unwrap();
    let got = store.get("sb").await.unwrap().unwrap();
    assert_eq!((got.last_active_at, got.expires_at, got.node), (Some(at), at, None));

    store.set_port_visibility("sa", 8000, Visibility::Public).await.unwrap();
    store.set_port_visibility("sa", 8000, Visibility::Private).await.unwrap();
    store.set_port_visibility("sa", 3000, Visibility::Team).await.unwrap();
    let v = store.port_visibility("sa").await.unwrap();
    assert_eq!((v.get(&8000), v.get(&3000)), (Some(&Visibility::Private), Some(&Visibility::Team)));
    assert!(store.port_visibility("other").await.unwrap().is_empty());
}

/// Many concurrent transitions of one session from the same state: exactly one wins, the
/// others see the state it left.
pub async fn concurrent_transitions(store: Arc<SqlStore>) {
    store.insert(&session("sc", None)).await.unwrap();
    let tries = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let to = if i % 2 == 0 { Ready } else { Failed };
            store.transition("sc", Creating, to, Some("race"), OffsetDateTime::now_utc()).await
        })
    });
    let results = futures::future::join_all(tries).await;
    let won = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    let lost = results.iter().filter(|r| matches!(r, Ok(Err(StoreError::StateMismatch { .. })))).count();
    assert_eq!((won, lost), (1, 7), "{results:?}");
    assert_eq!(store.events("sc").await.unwrap().len(), 2, "one creation, one transition");
}

pub async fn users_tokens_and_deletion(store: &SqlStore) {
    let a = alice();
    store.insert_user(&a).await.unwrap();
    assert_eq!(store.user("ualice").await.unwrap(), Some(a.clone()));
    assert_eq!(store.user_by_email("alice@example.com").await.unwrap().map(|u| u.id), Some("ualice".into()));
    let dup = UserRecord { id: "u2".into(), ..a.clone() };
    assert!(matches!(store.insert_user(&dup).await, Err(StoreError::Duplicate(_))), "emails are unique");

    let t = TokenRecord {
        id: "tok1".into(),
        user_id: "ualice".into(),
        name: "ci".into(),
        hash: "h".into(),
        created_at: a.created_at,
        expires_at: None,
        last_used_at: None,
    };
    store.insert_token(&t).await.unwrap();
    assert!(!store.delete_token("someone-else", "tok1").await.unwrap(), "only the owner revokes");
    assert_eq!(store.tokens_of("ualice").await.unwrap().len(), 1);
    store.put_git_credential(&GitCredentialRecord {
        user_id: "ualice".into(),
        host: "git.example".into(),
        username: None,
        sealed_token: "sealed".into(),
        updated_at: a.created_at,
    })
    .await
    .unwrap();

    assert!(store.delete_user("ualice", a.created_at).await.unwrap());
    assert!(!store.delete_user("ualice", a.created_at).await.unwrap(), "already deleted");
    assert_eq!(store.user("ualice").await.unwrap(), None);
    assert_eq!(store.token("tok1").await.unwrap(), None, "tokens are revoked with the user");
    assert!(store.git_credentials("ualice").await.unwrap().is_empty());
    assert_eq!(store.email_of("ualice").await.unwrap().as_deref(), Some("alice@example.com"), "kept for the audit log");
    store.insert_user(&dup).await.unwrap();
}


pub async fn audit_filters_and_pages(store: &SqlStore) {
    let at = |s| OffsetDateTime::from_unix_timestamp(s).unwrap();
    for (i, user) in ["ua", "ub", "ua", "ua"].iter().enumerate() {
        let e = AuditRecord {
            at: at(1000 + i as i64),
            user_id: Some(user.to_string()),
            actor: format!("{user}@x"),
            action: if i == 3 { "sign_in".into() } else { "session_create".into() },
            session: Some(format!("s{i}")),
            detail: serde_json::json!({"i": i}),
            ip: None,
        };
        store.append_audit(&e).await.unwrap();
    }
    let all = store.audit(&AuditFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(all.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![4, 3, 2, 1], "newest first");
    let ua = store.audit(&AuditFilter { user_id: Some("ua".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(ua.len(), 3);
    let page = store.audit(&AuditFilter { user_id: Some("ua".into()), limit: 1, before: Some(4), ..Default::default() }).await.unwrap();
    assert_eq!(page.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3]);
    let window = store
        .audit(&AuditFilter { since: Some(at(1001)), until: Some(at(1003)), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(window.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3, 2]);
    let signins = store.audit(&AuditFilter { action: Some("sign_in".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(signins[0].1.detail, serde_json::json!({"i": 3}));
}

fn claim(name: &str, node_id: &str, incarnation: &str, lease_ms: i64) -> NodeClaim {
    NodeClaim {
        name: name.into(),
        address: format!("http://{name}:7070"),
        node_id: node_id.into(),
        incarnation: incarnation.into(),
        version: "test".into(),
        lease_ms,
        clock_ms: crate::cluster::node::now_ms(),
        capacity: NodeCapacity {
            max_sessions: 2,
            memory_mib_free: 1000,
            images: vec![NodeImage { name: "minimal".into(), recipe_hash: "h".into() }],
            ..Default::default()
        },
    }
}

/// The node registry: claims (a live name held by another machine refused, the same machine
/// taking its name back), renewals, modes, placement against `max_sessions` with held slots,
/// and marking a dead node's sessions.
pub async fn nodes(store: &SqlStore) {
    store.claim_node(&claim("a", "ida", "i1", 60_000)).await.unwrap();
    store.claim_node(&claim("b", "idb", "i1", 60_000)).await.unwrap();
    let taken = store.claim_node(&claim("a", "other-machine", "i9", 60_000)).await.unwrap_err();
    assert!(matches!(&taken, ClaimError::NameTaken { name, .. } if name == "a"), "{taken}");
    // The same machine (node id) restarting takes its name back at once.
    store.claim_node(&claim("a", "ida", "i2", 60_000)).await.unwrap();
    assert_eq!(store.renew_node("a", "i1", 60_000, 0, &NodeCapacity::default()).await.unwrap(), Renewal::Superseded);
    let cap = claim("a", "ida", "i2", 0).capacity;
    let Renewal::Renewed { db_now, lease_until, node_mode } = store.renew_node("a", "i2", 60_000, 0, &cap).await.unwrap() else {
        panic!("renewal refused")
    };
    assert_eq!((lease_until - db_now, node_mode), (60_000, NodeMode::Active));
    let (nodes, now) = store.nodes().await.unwrap();
    assert_eq!(nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert!(nodes[0].clock_skew_ms < -1_000_000_000, "a clock of 0 shows as skew: {}", nodes[0].clock_skew_ms);
    assert!(nodes.iter().all(|n| n.lease_until > now));

    // Placement: the emptiest node; held slots count; full nodes are passed over.
    store.insert(&session("s1", Some("a"))).await.unwrap();
    let p1 = store.place("minimal", 60_000, &[]).await.unwrap().unwrap();
    assert_eq!(p1.node.name, "b", "b has more free slots");
    let p2 = store.place("minimal", 60_000, &[]).await.unwrap().unwrap();
    let p3 = store.place("minimal", 60_000, &[]).await.unwrap().unwrap();
    let mut chosen = [p2.node.name.clone(), p3.node.name.clone()];
    chosen.sort();
    assert_eq!(chosen, ["a", "b"]);
    let full = store.place("minimal", 60_000, &[]).await.unwrap().unwrap_err();
    assert_eq!(full, ["a: it is full (2 of 2 sessions)", "b: it is full (2 of 2 sessions)"]);
    store.release_placement(&p1.token).await.unwrap();
    assert_eq!(store.place("minimal", 60_000, &[]).await.unwrap().unwrap().node.name, "b");
    assert_eq!(store.place("minimal", 60_000, &["b".to_string()]).await.unwrap().unwrap_err(), ["a: it is full (2 of 2 sessions)"]);
    assert!(store.place("dev", 60_000, &[]).await.unwrap().unwrap_err().iter().all(|w| w.contains("no image")));
    assert!(store.set_node_mode("b", NodeMode::Cordoned).await.unwrap());
    assert!(!store.set_node_mode("zz", NodeMode::Cordoned).await.unwrap());
    assert_eq!(store.session_node("s1").await.unwrap(), Some(Some("a".into())));
    assert_eq!(store.session_node("nope").await.unwrap(), None);

    // A node whose lease runs out: its ready sessions are lost, creating ones failed.
    store.transition("s1", Creating, Ready, None, OffsetDateTime::now_utc()).await.unwrap();
    store.insert(&session("s2", Some("a"))).await.unwrap();
    store.insert(&session("s3", Some("b"))).await.unwrap();
    assert!(store.mark_lost().await.unwrap().is_empty(), "every lease is current");
    store.release_node("a", "i2").await.unwrap();
    let mut marked = store.mark_lost().await.unwrap();
    marked.sort_by(|x, y| x.session.cmp(&y.session));
    assert_eq!(marked.iter().map(|e| (e.session.as_str(), e.to)).collect::<Vec<_>>(), [("s1", Lost), ("s2", Failed)]);
    assert!(marked[0].reason.as_deref().unwrap().contains("its node a stopped"), "{marked:?}");
    assert!(store.mark_lost().await.unwrap().is_empty(), "marked once");
    assert_eq!(store.get("s3").await.unwrap().unwrap().state, Creating, "node b's session is untouched");
    // The node is back: its lost session returns.
    store.claim_node(&claim("a", "ida", "i3", 60_000)).await.unwrap();
    store.transition("s1", Lost, Ready, Some("back"), OffsetDateTime::now_utc()).await.unwrap();
}

/// Agent runs and messages (`sessions`: the session store on the same database, for the
/// per-node close of interrupted runs; `None` on SQLite, where agent.db is a file of its own).
pub async fn agent(store: &AgentStore, sessions: Option<&SqlStore>) {
    let run = store.insert_run("r1", "s1", Some("ua"), "do it").await.unwrap();
    assert_eq!((run.status, run.prompt.as_str()), (AgentRunStatus::Running, "do it"));
    store.append_message("s1", "r1", &mayfly_agent::Message::user("do it")).await.unwrap();
    store.append_message("s2", "rx", &mayfly_agent::Message::user("other session")).await.unwrap();
    assert_eq!(store.messages("s1").await.unwrap(), vec![mayfly_agent::Message::user("do it")]);
    let end = RunEnd { status: AgentRunStatus::Succeeded, summary: Some("ok".into()), reason: None, steps: 2, input_tokens: 5, output_tokens: 7 };
    store.finish_run("r1", &end).await.unwrap();
    let got = store.run("s1", "r1").await.unwrap().unwrap();
    assert_eq!((got.status, got.summary.as_deref(), got.steps), (AgentRunStatus::Succeeded, Some("ok"), 2));
    assert_eq!(store.runs_since("ua", OffsetDateTime::UNIX_EPOCH).await.unwrap(), 1);
    store.insert_run("r2", "s1", None, "again").await.unwrap();
    if let Some(sessions) = sessions {
        sessions.insert(&session("s1", Some("n1"))).await.unwrap();
        store.insert_run("r3", "s9", None, "another node's").await.unwrap();
        assert_eq!(store.interrupt_runs_of_node("n1").await.unwrap(), 1);
        assert_eq!(store.runs("s9").await.unwrap()[0].status, AgentRunStatus::Running, "another node's run goes on");
        assert_eq!(
            store.runs("s1").await.unwrap().iter().map(|r| r.status).collect::<Vec<_>>(),
            [AgentRunStatus::Succeeded, AgentRunStatus::Interrupted]
        );
    }
}
