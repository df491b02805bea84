//! Users and ownership through a real server and a real VM: every route of the OpenAPI document,
//! both WebSockets and the preview proxy answer user B about user A's session exactly as about a
//! session that does not exist; admins see everything and are audited; a user's saved git token
//! reaches their session on demand.

use crate::common;
use crate::gitserver;

use common::users::{as_user, audit, make_user, status_and_body, Account};
use common::{TestServer, SLOW, TOKEN};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const MISSING: &str = "snotthere0000";
const GIT_USER: &str = "gituser";
const GIT_SECRET: &str = "saved-git-token-6b1c";

/// A body that passes each route's own validation, so that access is what decides.
fn body_for(method: &Method, path: &str) -> Option<Value> {
    if *method == Method::GET || *method == Method::DELETE {
        return None;
    }
    Some(match path {
        "/api/v1/sessions/{id}/exec" => json!({"cmd": ["true"]}),
        "/api/v1/sessions/{id}/files/rename" => json!({"from": "/tmp/a", "to": "/tmp/b"}),
        "/api/v1/sessions/{id}/ports/{port}" => json!({"visibility": "public"}),
        "/api/v1/sessions/{id}/agent/runs" => json!({"prompt": "hello"}),
        _ => json!({}),
    })
}

fn concrete(method: &Method, path: &str, id: &str) -> String {
    let p = path.replace("{id}", id).replace("{port}", "8000").replace("{run}", "rnothere00000");
    match (p.contains("/files") && !p.ends_with("/rename"), *method == Method::GET) {
        (true, true) => format!("{p}?path=/tmp"),
        (true, false) => format!("{p}?path=/tmp/probe"),
        _ => p,
    }
}

/// The answer as seen by someone who must not learn whether `id` exists.
fn normalized(status: u16, body: &Value, id: &str) -> (u16, String) {
    (status, body.to_string().replace(id, "<id>"))
}

async fn request(server: &TestServer, method: &Method, path: &str, token: &str, id: &str) -> (u16, Value) {
    let mut r = as_user(method.clone(), server, &concrete(method, path, id), token);
    if let Some(b) = body_for(method, path) {
        r = r.json(&b);
    } else if *method == Method::PUT {
        r = r.body("data");
    }
    status_and_body(r).await
}

async fn ws_status(server: &TestServer, path: &str, token: &str) -> u16 {
    let mut req = format!("{}{path}", server.ws_base).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("WebSocket to {path}: {e}"),
    }
}

/// A preview request with `token` as the bearer, host-routed.
async fn preview(server: &TestServer, id: &str, token: &str) -> (u16, String) {
    let port = server.base.rsplit(':').next().unwrap();
    let r = reqwest::Client::new()
        .get(server.url("/"))
        .header("host", format!("8000-{id}.localhost:{port}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap().replace(id, "<id>"))
}

async fn path_preview(server: &TestServer, id: &str, token: &str) -> (u16, String) {
    let r = as_user(Method::GET, server, &format!("/preview/{id}/8000/"), token).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap().replace(id, "<id>"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_session_is_not_found_through_every_door() {
    let git_root = tempfile::tempdir().unwrap();
    gitserver::make_repo(git_root.path());
    let git = gitserver::start(git_root.path().to_path_buf(), GIT_USER, GIT_SECRET).await;
    let remote = git.vm_addr();
    let r = remote.clone();
    let server = TestServer::start(move |c| c.egress_private_allow = vec![r]).await;
    let alice = make_user(&server, "alice@example.com", "member", json!({})).await;
    let bob = make_user(&server, "bob@example.com", "member", json!({})).await;
    let carol = make_user(&server, "carol@example.com", "admin", json!({})).await;

    // Alice saves a git token once; her session's clone gets it on demand (the request has none).
    let (s, saved) = status_and_body(
        as_user(Method::PUT, &server, &format!("/api/v1/me/git-credentials/{remote}"), &alice.token)
            .json(&json!({"token": GIT_SECRET, "username": GIT_USER})),
    )
    .await;
    assert_eq!(s, 200, "{saved}");
    assert!(!saved.to_string().contains(GIT_SECRET), "never shown: {saved}");
    let network = json!({"egress": "allowlist", "allow": [remote]});
    let (s, created) = tokio::time::timeout(
        SLOW,
        status_and_body(
            as_user(Method::POST, &server, "/api/v1/sessions?wait=true", &alice.token)
                .json(&json!({"network": network, "repo": {"url": format!("http://{remote}/git/app.git")}})),
        ),
    )
    .await
    .expect("boot in time");
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["owner"], alice.id, "{created}");
    let repo = wait_repo(&server, &id, &alice).await;
    assert_eq!(repo["state"], "ready", "the saved token cloned the private repository: {repo}");

    // Every route with a session in it, from the document itself (a new route is covered).
    let (_, doc) = status_and_body(as_user(Method::GET, &server, "/api/v1/openapi.json", TOKEN)).await;
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        // The terminal is a WebSocket only (a plain GET is refused before any lookup): below.
        if !path.contains("{id}") || !path.starts_with("/api/v1/sessions/") || path.ends_with("/pty") {
            continue;
        }
        for m in item.as_object().unwrap().keys().filter(|k| *k != "parameters") {
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let theirs = request(&server, &method, path, &bob.token, &id).await;
            let missing = request(&server, &method, path, &bob.token, MISSING).await;
            assert_eq!(theirs.0, 404, "{m} {path} as another member: {}", theirs.1);
            assert_eq!(normalized(theirs.0, &theirs.1, &id), normalized(missing.0, &missing.1, MISSING), "{m} {path}");
            if method == Method::GET && !path.contains("{run}") {
                // Status only: `/events` is an endless Server-Sent Events stream.
                let own = as_user(Method::GET, &server, &concrete(&method, path, &id), &alice.token).send().await.unwrap();
                assert_eq!(own.status().as_u16(), 200, "{m} {path} as the owner");
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} session routes found in the document");
    for ws in ["pty", "events"] {
        assert_eq!(ws_status(&server, &format!("/api/v1/sessions/{id}/{ws}"), &bob.token).await, 404, "{ws}");
        assert_eq!(ws_status(&server, &format!("/api/v1/sessions/{MISSING}/{ws}"), &bob.token).await, 404, "{ws}");
        assert_eq!(ws_status(&server, &format!("/api/v1/sessions/{id}/{ws}"), &alice.token).await, 101, "{ws} as the owner");
    }
    assert_eq!(preview(&server, &id, &bob.token).await, preview(&server, MISSING, &bob.token).await, "host-routed preview");
    assert_eq!(path_preview(&server, &id, &bob.token).await, path_preview(&server, MISSING, &bob.token).await, "path preview");
    assert_ne!(preview(&server, &id, &alice.token).await.1, preview(&server, MISSING, &alice.token).await.1, "the owner reaches the port");

    // Bob's attempts changed nothing: the session is alive and still Alice's.
    let (s, still) = status_and_body(as_user(Method::GET, &server, &format!("/api/v1/sessions/{id}"), &alice.token)).await;
    assert_eq!((s, still["state"].as_str()), (200, Some("ready")), "{still}");
    let (_, bobs) = status_and_body(as_user(Method::GET, &server, "/api/v1/sessions", &bob.token)).await;
    assert_eq!(bobs, json!([]), "a member lists only their own sessions");

    // A team port opens to any signed-in user; a private one to the owner and admins only.
    let (s, _) = status_and_body(
        as_user(Method::PATCH, &server, &format!("/api/v1/sessions/{id}/ports/8000"), &alice.token).json(&json!({"visibility": "team"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(preview(&server, &id, &bob.token).await, preview(&server, &id, &alice.token).await, "team: Bob gets what Alice gets");
    let anonymous = reqwest::Client::new()
        .get(server.url(&format!("/preview/{id}/8000/")))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(anonymous, 401, "team is not public");

    // The admin sees all, with owners, and the access is audited.
    let (_, all) = status_and_body(as_user(Method::GET, &server, "/api/v1/sessions", &carol.token)).await;
    let mine = all.as_array().unwrap().iter().find(|s| s["id"] == id.as_str()).expect("admin lists it");
    assert_eq!(mine["owner_email"], "alice@example.com");
    let (s, _) = status_and_body(as_user(Method::POST, &server, &format!("/api/v1/sessions/{id}/exec"), &carol.token).json(&json!({"cmd": ["true"]}))).await;
    assert_eq!(s, 200);
    let entries = audit(&server, &format!("user={}&action=admin_access", carol.id)).await;
    assert!(entries.iter().any(|e| e["session"] == id.as_str() && e["detail"]["owner"] == alice.id.as_str()), "{entries:?}");
    let created = audit(&server, &format!("user={}&action=session_create", alice.id)).await;
    assert_eq!(created.len(), 1, "{created:?}");
    let vis = audit(&server, &format!("session={id}&action=visibility_change")).await;
    assert_eq!(vis[0]["detail"], json!({"port": 8000, "visibility": "team"}));

    // Bob's delete did not delete it; Alice's does.
    let (s, _) = status_and_body(as_user(Method::DELETE, &server, &format!("/api/v1/sessions/{id}"), &alice.token)).await;
    assert_eq!(s, 204);
    assert_eq!(audit(&server, &format!("session={id}&action=session_delete")).await.len(), 1);
    drop(git);
    server.stop().await;
}

async fn wait_repo(server: &TestServer, id: &str, owner: &Account) -> Value {
    tokio::time::timeout(SLOW, async {
        loop {
            let (_, s) = status_and_body(as_user(Method::GET, server, &format!("/api/v1/sessions/{id}"), &owner.token)).await;
            if s["repo"]["state"] != "cloning" {
                return s["repo"].clone();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the clone finished")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_under_concurrent_creates_and_a_deleted_user_loses_everything() {
    let server = TestServer::start(|_| {}).await;
    let dave = make_user(
        &server,
        "dave@example.com",
        "member",
        json!({"max_sessions": 1, "max_memory_mib": 1, "agent_runs_per_day": 0}),
    )
    .await;

    // Not even one VM fits a 1 MiB memory quota: refused naming it, before any VM starts.
    let (s, e) = status_and_body(as_user(Method::POST, &server, "/api/v1/sessions?wait=false", &dave.token).json(&json!({}))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (403, Some("quota_exceeded")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("max_memory_mib"), "{e}");
    // An admin raises it (a member may not).
    let patch = json!({"quotas": {"max_sessions": 1, "max_memory_mib": 8192, "agent_runs_per_day": 0}});
    let (s, _) = status_and_body(as_user(Method::PATCH, &server, &format!("/api/v1/users/{}", dave.id), &dave.token).json(&patch)).await;
    assert_eq!(s, 403, "members cannot change quotas");
    let (s, u) = status_and_body(as_user(Method::PATCH, &server, &format!("/api/v1/users/{}", dave.id), TOKEN).json(&patch)).await;
    assert_eq!((s, u["quotas"]["max_memory_mib"].as_u64()), (200, Some(8192)), "{u}");

    // Two creates at once for the last slot: exactly one wins.
    let create = || as_user(Method::POST, &server, "/api/v1/sessions?wait=false", &dave.token).json(&json!({})).send();
    let (a, b) = tokio::join!(create(), create());
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    let bodies = [a.text().await.unwrap(), b.text().await.unwrap()];
    statuses.sort();
    assert_eq!(statuses, [201, 403], "{bodies:?}");
    let refused: Value = serde_json::from_str(bodies.iter().find(|b| b.contains("quota_exceeded")).unwrap()).unwrap();
    assert!(refused["error"]["message"].as_str().unwrap().contains("max_sessions"), "{refused}");
    let won: Value = serde_json::from_str(bodies.iter().find(|b| !b.contains("quota_exceeded")).unwrap()).unwrap();
    let id = won["id"].as_str().unwrap().to_string();
    let (_, me) = status_and_body(as_user(Method::GET, &server, "/api/v1/me", &dave.token)).await;
    assert_eq!((me["usage"]["sessions"].as_u64(), me["quotas"]["max_sessions"].as_u64()), (Some(1), Some(1)), "{me}");

    // No agent runs allowed today: 429 naming the quota (no model is contacted).
    wait_ready(&server, &id, &dave).await;
    let (s, e) = status_and_body(
        as_user(Method::POST, &server, &format!("/api/v1/sessions/{id}/agent/runs"), &dave.token).json(&json!({"prompt": "hi"})),
    )
    .await;
    assert_eq!((s, e["error"]["code"].as_str()), (429, Some("quota_exceeded")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("agent_runs_per_day"), "{e}");

    // Deleting Dave revokes his token and ends his session.
    let r = reqwest::Client::new().delete(server.url(&format!("/api/v1/users/{}", dave.id))).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (s, _) = status_and_body(as_user(Method::GET, &server, "/api/v1/me", &dave.token)).await;
    assert_eq!(s, 401, "a deleted user's token no longer works");
    let (s, gone) = status_and_body(as_user(Method::GET, &server, &format!("/api/v1/sessions/{id}"), TOKEN)).await;
    assert_eq!(s, 404, "the session ended with its owner: {gone}");
    assert!(common::qemu_pids_for(&id).is_empty(), "its VM is gone");
    let ended = audit(&server, &format!("session={id}&action=session_delete")).await;
    assert_eq!(ended[0]["detail"]["reason"], "owner deleted");
    server.stop().await;
}

async fn wait_ready(server: &TestServer, id: &str, owner: &Account) {
    tokio::time::timeout(SLOW, async {
        loop {
            let (_, s) = status_and_body(as_user(Method::GET, server, &format!("/api/v1/sessions/{id}"), &owner.token)).await;
            match s["state"].as_str() {
                Some("ready") => return,
                Some("creating") => tokio::time::sleep(Duration::from_millis(200)).await,
                other => panic!("session {id} is {other:?}: {s}"),
            }
        }
    })
    .await
    .expect("ready in time")
}
