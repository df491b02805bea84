//! Several nodes, one deployment (issue 17), with real parts: a PostgreSQL started here
//! (`common::postgres`) and two `mayfly serve` processes on their own data dirs and loopback
//! ports sharing it. One test, in steps, so that the nodes and their VMs are shared:
//! registration and the node list, placement spreading creates, every kind of request for a
//! session served through the other node (REST, exec, files, terminal and events WebSockets,
//! ports, a preview by host name and by path), concurrent creates never exceeding a node's
//! `max_sessions`, a second node claiming a live name refused, the database restarting under the
//! nodes, `kill -9` of a node (a forward to it fails fast; its sessions become lost within the
//! lease; creates go to the survivor; a lost session past its lifetime is ended by the survivor's
//! reaper), its restart re-adopting them (and reaping the VM of the one that ended), and draining
//! a node with a live session (`mayfly nodes`).

use crate::common;

use common::external::{self, ExternalServer, VmGuard};
use common::postgres::Postgres;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

const SECRET: &str = "cluster-test-secret-0123456789abcdef-0123";
/// Short, so that the loss of a node shows quickly; the test waits on conditions, not on it.
const LEASE_SECONDS: u64 = 8;

fn node_env(db: &str, name: &str, n: u32) -> Vec<(&'static str, String)> {
    vec![
        ("MAYFLY_DATABASE_URL", db.to_string()),
        ("MAYFLY_NODE_NAME", name.to_string()),
        ("MAYFLY_CLUSTER_SECRET", SECRET.to_string()),
        ("MAYFLY_NODE_LEASE_SECONDS", LEASE_SECONDS.to_string()),
        ("MAYFLY_MAX_SESSIONS", "2".to_string()),
        ("MAYFLY_POOL_SIZE", "0".to_string()),
        ("MAYFLY_RATE_LIMIT_PER_SECOND", "0".to_string()),
        // Two nodes on one host: their VMs must not share uids.
        ("MAYFLY_VM_UID_RANGE", format!("{}-{}", 320_000 + n * 10_000, 329_999 + n * 10_000)),
    ]
}

fn start_node(data: &Path, db: &str, name: &str, n: u32, run: u32) -> ExternalServer {
    ExternalServer::start(data, &node_env(db, name, n), run)
}

/// Polls `f` until it returns `Some`, for up to `within`.
async fn until<T, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn node_list(via: &ExternalServer) -> Vec<Value> {
    let (status, nodes) = via.get("/api/v1/nodes").await;
    assert_eq!(status, 200, "{nodes}");
    nodes.as_array().cloned().unwrap_or_default()
}

fn live_names(nodes: &[Value]) -> Vec<String> {
    nodes.iter().filter(|n| n["live"] == true).map(|n| n["name"].as_str().unwrap().to_string()).collect()
}

/// A member with `quotas`, made through `via`, signed in by password there; returns an API token.
async fn member_token(via: &ExternalServer, email: &str, quotas: Value) -> String {
    let password = format!("pw-{email}-0123456789");
    let body = json!({"email": email, "role": "member", "password": password, "quotas": quotas});
    let r = via.http.post(via.url("/api/v1/users")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let browser = users::browser();
    let r = browser.post(via.url("/api/v1/auth/password")).json(&json!({"email": email, "password": password})).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = browser.post(via.url("/api/v1/tokens")).header("origin", &via.base).json(&json!({"name": "t", "expires_in_days": 1})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string()
}

async fn as_token(via: &ExternalServer, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = reqwest::Client::new().request(method, via.url(path)).bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn state_via(via: &ExternalServer, id: &str) -> String {
    let (_, s) = via.get(&format!("/api/v1/sessions/{id}")).await;
    s["state"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_postgres_and_serve_each_others_sessions() {
    init_logs();
    let pg = Postgres::start().await;
    let db = pg.create_database("cluster").await;
    let dir_a = tempfile::Builder::new().prefix("mayfly-node-a-").tempdir().unwrap();
    let dir_b = tempfile::Builder::new().prefix("mayfly-node-b-").tempdir().unwrap();
    let _guards = (VmGuard(dir_a.path().to_path_buf()), VmGuard(dir_b.path().to_path_buf()));
    let a = start_node(dir_a.path(), &db, "node-a", 0, 1);
    let mut b = start_node(dir_b.path(), &db, "node-b", 1, 1);

    // 1. Both nodes registered, with their capacity and images.
    let nodes = until("both nodes live", SLOW, || async { Some(node_list(&a).await).filter(|n| live_names(n).len() == 2) }).await;
    for n in &nodes {
        assert_eq!(n["capacity"]["max_sessions"], 2, "{n}");
        assert!(n["capacity"]["images"].as_array().unwrap().iter().any(|i| i["name"] == "minimal"), "{n}");
        assert_eq!(n["mode"], "active");
    }
    assert_eq!(live_names(&node_list(&b).await), ["node-a", "node-b"]);

    // 2. A second machine claiming a live node's name is refused (a different data dir).
    let dir_c = tempfile::Builder::new().prefix("mayfly-node-c-").tempdir().unwrap();
    let (code, log) = ExternalServer::try_start(dir_c.path(), &node_env(&db, "node-b", 2), 1).err().expect("a second node-b is refused");
    assert_ne!(code, Some(0));
    assert!(log.contains("node name \"node-b\" is held by another live node"), "{log}");

    // 3. Placement spreads: two creates through node a land on both nodes.
    let s1 = a.ready_session(json!({})).await;
    let s2 = a.ready_session(json!({})).await;
    let mut owners = [s1["node"].as_str().unwrap(), s2["node"].as_str().unwrap()];
    owners.sort();
    assert_eq!(owners, ["node-a", "node-b"], "{s1}\n{s2}");
    let (on_a, on_b) = if s1["node"] == "node-a" { (s1, s2) } else { (s2, s1) };
    let (id_a, id_b) = (on_a["id"].as_str().unwrap().to_string(), on_b["id"].as_str().unwrap().to_string());

    // 4. Everything about node b's session works through node a, and the other way round.
    for (via, id, owner) in [(&a, &id_b, "node-b"), (&b, &id_a, "node-a")] {
        let (status, s) = via.get(&format!("/api/v1/sessions/{id}")).await;
        assert_eq!((status, s["node"].as_str()), (200, Some(owner)), "{s}");
        let (code, out) = via.sh(id, "echo via-$(hostname)-$((6*7))").await;
        assert_eq!(code, 0);
        assert!(out.contains("-42"), "{out}");
        // A file round trip, binary-safe.
        let blob: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let url = via.url(&format!("/api/v1/sessions/{id}/files?path=/root/blob.bin"));
        let put = via.http.put(&url).body(blob.clone()).send().await.unwrap();
        assert_eq!(put.status(), 204);
        let got = via.http.get(&url).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(got.as_ref(), blob.as_slice(), "file round trip through the other node");
        // A terminal.
        let mut pty = via.ws(&format!("/api/v1/sessions/{id}/pty?cols=80&rows=24&terminal=main")).await;
        type_keys(&mut pty, "echo $((6*9))-pty\r").await;
        read_until(&mut pty, "54-pty").await;
        drop(pty);
    }
    // Events of node b's session reach a subscriber on node a.
    let mut events = a.ws(&format!("/api/v1/sessions/{id_b}/events")).await;
    // A preview of a dev server in node b's VM, by host name and by path, through node a.
    let (code, _) = b
        .sh(&id_b, "mkdir -p /root/www && echo cluster-preview > /root/www/index.html && (setsid python3 -m http.server 8000 --bind 127.0.0.1 --directory /root/www >/tmp/h.log 2>&1 </dev/null &)")
        .await;
    assert_eq!(code, 0);
    events_until(&mut events, |e| e["type"] == "port_opened" && e["port"]["port"] == 8000).await;
    let port_a = a.base.rsplit(':').next().unwrap().to_string();
    let by_host = until("the preview through node a", SLOW, || async {
        let r = a.http.get(a.url("/")).header("host", format!("8000-{id_b}.localhost:{port_a}")).send().await.ok()?;
        let body = r.text().await.ok()?;
        body.contains("cluster-preview").then_some(body)
    })
    .await;
    assert!(by_host.contains("cluster-preview"));
    let by_path = a.http.get(a.url(&format!("/preview/{id_b}/8000/"))).send().await.unwrap();
    assert_eq!(by_path.status(), 200);
    assert!(by_path.text().await.unwrap().contains("cluster-preview"));
    let (status, ports) = a.get(&format!("/api/v1/sessions/{id_b}/ports")).await;
    assert_eq!(status, 200);
    assert!(ports.as_array().unwrap().iter().any(|p| p["port"] == 8000), "{ports}");
    // Both nodes list both sessions (one store).
    for via in [&a, &b] {
        let (_, list) = via.get("/api/v1/sessions").await;
        let ids: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
        assert!(ids.contains(&id_a.as_str()) && ids.contains(&id_b.as_str()), "{list}");
    }

    // 5. Concurrent creates through both nodes never exceed a node's max_sessions (2 each, one
    //    taken on each): of four, exactly two are placed, the others are refused clearly.
    let creates = (0..4).map(|i| {
        let via = if i % 2 == 0 { &a } else { &b };
        async move { via.post("/api/v1/sessions?wait=false", json!({})).await }
    });
    let results = futures::future::join_all(creates).await;
    let placed: Vec<&Value> = results.iter().filter(|(s, _)| *s == 201).map(|(_, v)| v).collect();
    let refused: Vec<&Value> = results.iter().filter(|(s, _)| *s == 503).map(|(_, v)| v).collect();
    assert_eq!((placed.len(), refused.len()), (2, 2), "{results:?}");
    for r in &refused {
        assert_eq!(r["error"]["code"], "no_capacity", "{r}");
    }
    let mut per_node: Vec<&str> = placed.iter().map(|s| s["node"].as_str().unwrap()).collect();
    per_node.sort();
    assert_eq!(per_node, ["node-a", "node-b"], "one more on each node, never three on one");
    for s in &placed {
        let id = s["id"].as_str().unwrap();
        let r = a.http.delete(a.url(&format!("/api/v1/sessions/{id}"))).send().await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(status, 204, "delete {id} ({s}) through node a: {body}\nnode a:\n{}\nnode b:\n{}", a.log_text(), b.log_text());
    }

    // 5b. Users and ownership across nodes: a member's token (checked by whichever node owns the
    //     session) works through both nodes; another member gets "not found" through both; the
    //     quota counts the member's sessions on every node.
    use reqwest::Method;
    let alice = member_token(&a, "alice@example.test", json!({"max_sessions": 1})).await;
    let bob = member_token(&b, "bob@example.test", json!({})).await;
    let (status, mine) = as_token(&b, Method::POST, "/api/v1/sessions", &alice, Some(json!({}))).await;
    assert_eq!(status, 201, "{mine}");
    let mine_id = mine["id"].as_str().unwrap().to_string();
    for via in [&a, &b] {
        let (status, s) = as_token(via, Method::GET, &format!("/api/v1/sessions/{mine_id}"), &alice, None).await;
        assert_eq!((status, s["id"].as_str()), (200, Some(mine_id.as_str())), "{s}");
        let (status, e) = as_token(via, Method::GET, &format!("/api/v1/sessions/{mine_id}"), &bob, None).await;
        assert_eq!((status, e["error"]["code"].as_str()), (404, Some("not_found")), "{e}");
        let (status, e) = as_token(via, Method::POST, &format!("/api/v1/sessions/{mine_id}/exec"), &bob, Some(json!({"cmd": ["true"]}))).await;
        assert_eq!(status, 404, "{e}");
        let (status, e) = as_token(via, Method::POST, "/api/v1/sessions", &alice, Some(json!({}))).await;
        assert_eq!((status, e["error"]["code"].as_str()), (403, Some("quota_exceeded")), "the quota counts every node: {e}");
    }
    let (status, _) = as_token(&a, Method::DELETE, &format!("/api/v1/sessions/{mine_id}"), &alice, None).await;
    assert_eq!(status, 204);

    // 6. The database restarts under the nodes: they reconnect and go on.
    pg.restart().await;
    until("both nodes live after the database restarted", SLOW, || async { Some(node_list(&a).await).filter(|n| live_names(n).len() == 2) }).await;
    until("node b's session ready again", SLOW, || async { (state_via(&a, &id_b).await == "ready").then_some(()) }).await;
    let (code, _) = a.sh(&id_b, "true").await;
    assert_eq!(code, 0);

    // 7. kill -9 of node b: a forward to it fails fast and clearly, its session is lost within
    //    the lease, and creates go to node a. A second session of node b's, with a short
    //    lifetime, is ended by node a's reaper once that lifetime is over (node b never sees
    //    it: it is dead by then).
    let mode = |m: &'static str| json!({ "mode": m });
    assert_eq!(a.post("/api/v1/nodes/node-a/mode", mode("cordoned")).await.0, 200);
    let (status, short) = a.post("/api/v1/sessions", json!({"ttl_seconds": 45})).await;
    assert_eq!((status, short["node"].as_str()), (201, Some("node-b")), "{short}");
    let short = short["id"].as_str().unwrap().to_string();
    assert_eq!(a.post("/api/v1/nodes/node-a/mode", mode("active")).await.0, 200);
    b.kill_9();
    let t = Instant::now();
    let r = tokio::time::timeout(SLOW, a.http.post(a.url(&format!("/api/v1/sessions/{id_b}/exec"))).json(&json!({"cmd": ["true"]})).send())
        .await
        .expect("an answer, not a hang")
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    // Before the lease ran out: the forward fails (502); after: the session is lost (409).
    assert!(matches!((status, body["error"]["code"].as_str()), (502, Some("node_unreachable")) | (409, _)), "{status} {body}");
    eprintln!("exec through node a right after kill -9 of node b: {status} in {:?}", t.elapsed());
    until("node b's session marked lost", SLOW, || async { (state_via(&a, &id_b).await == "lost").then_some(()) }).await;
    assert_eq!(live_names(&node_list(&a).await), ["node-a"]);
    let (status, s3) = a.post("/api/v1/sessions", json!({})).await;
    assert_eq!((status, s3["node"].as_str()), (201, Some("node-a")), "{s3}");
    let db_store = mayfly_server::store::SqlStore::connect(&db).await.unwrap();
    let ended = until("node b's short-lived session ended while lost", SLOW, || async {
        use mayfly_server::store::SessionStore;
        let events = db_store.events(&short).await.unwrap();
        events.last().filter(|e| e.to == mayfly_proto::api::SessionState::Destroyed).cloned()
    })
    .await;
    assert_eq!(ended.from, Some(mayfly_proto::api::SessionState::Lost), "ended by the reaper while lost: {ended:?}");
    let reason = ended.reason.clone().unwrap_or_default();
    assert!(reason.contains("max lifetime reached") && reason.contains("while its node was lost"), "{reason}");
    drop(db_store);

    // 8. Node b comes back on its data dir: it re-adopts the lost session (its VM outlived the
    //    control plane), which works through node a again.
    b = start_node(dir_b.path(), &db, "node-b", 1, 2);
    until("node b's session re-adopted", SLOW, || async { (state_via(&a, &id_b).await == "ready").then_some(()) }).await;
    let (code, out) = a.sh(&id_b, "cat /root/blob.bin | wc -c").await;
    assert_eq!((code, out.trim()), (0, "200000"), "the VM kept its disk");
    let (_, events) = a.get(&format!("/api/v1/sessions/{id_b}")).await;
    assert_eq!(events["node"], "node-b", "{events}");
    // The session that ended while node b was away: node b found its row ended and reaped its VM.
    until("the ended session's VM reaped by node b", SLOW, || async { qemu_pids_for(&short).is_empty().then_some(()) }).await;

    // 9. Drain node b with a live session on it (`mayfly nodes drain`, the real CLI): its
    //    session goes on, new sessions go to node a; `mayfly nodes` shows it; then delete
    //    everything through node b.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(external::mayfly_binary())
            .args(args)
            .env("MAYFLY_URL", &a.base)
            .env("MAYFLY_TOKEN", TOKEN)
            .output()
            .unwrap();
        assert!(out.status.success(), "mayfly {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let drained = cli(&["nodes", "drain", "node-b"]);
    assert!(drained.contains("node-b: live, drain"), "{drained}");
    let listed = cli(&["nodes"]);
    assert!(listed.lines().any(|l| l.starts_with("node-a") && l.contains("live")), "{listed}");
    assert!(listed.lines().any(|l| l.starts_with("node-b") && l.contains("drain")), "{listed}");
    let (code, _) = a.sh(&id_b, "true").await;
    assert_eq!(code, 0, "a draining node's session goes on");
    for s in [&id_a, &id_b, &s3["id"].as_str().unwrap().to_string()] {
        let r = b.http.delete(b.url(&format!("/api/v1/sessions/{s}"))).send().await.unwrap();
        assert_eq!(r.status(), 204, "delete {s} through node b");
    }
    let (status, s4) = b.post("/api/v1/sessions", json!({})).await;
    assert_eq!((status, s4["node"].as_str()), (201, Some("node-a")), "a draining node takes no new session: {s4}");
    let r = b.http.delete(b.url(&format!("/api/v1/sessions/{}", s4["id"].as_str().unwrap()))).send().await.unwrap();
    assert_eq!(r.status(), 204);
    a.stop().await;
    b.stop().await;
    leaks::assert_no_leftovers(dir_a.path()).await;
    leaks::assert_no_leftovers(dir_b.path()).await;
    let store = mayfly_server::store::SqlStore::connect(&db).await.unwrap();
    use mayfly_proto::api::SessionState::*;
    use mayfly_server::store::SessionStore;
    let live = store.list(&[Creating, Ready, Stopping, Lost]).await.unwrap();
    assert!(live.is_empty(), "live sessions left in PostgreSQL: {live:?}");
}
