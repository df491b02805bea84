//! The HTTP layer without sockets: `oneshot` on the router with a real SQLite store and the real
//! QEMU backend (no VM is booted: no image is built in the temp data dir), plus a lifecycle test
//! against a VM host whose boots never finish.

use super::{protected_routes, public_routes, router, AppState, OPENAPI};
use crate::config::ServerConfig;
use crate::images::{BootImage, CatalogError, ImageCatalog};
use crate::manager::SessionManager;
use crate::metrics::Metrics;
use crate::store::SqliteStore;
use crate::vmhost::VmHost;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;
use tower::ServiceExt;

pub(super) const TOKEN: &str = "test-token-0123456789";

pub(super) async fn app_with(f: impl FnOnce(&mut ServerConfig)) -> (Router, AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::with_data_dir(dir.path());
    cfg.token = Some(TOKEN.into());
    cfg.default_image = "minimal".into();
    f(&mut cfg);
    let (state, generated) = crate::build_state(cfg, "http://127.0.0.1:7070".into()).await.unwrap();
    assert!(!generated);
    (router(state.clone()), state, dir)
}

async fn app() -> (Router, AppState, tempfile::TempDir) {
    app_with(|_| {}).await
}

pub(super) fn req(method: Method, uri: &str, token: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(body.into()).unwrap()
}

pub(super) async fn send(app: &Router, r: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(r).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Asserts the documented error shape and returns the message.
fn error(status: StatusCode, body: &Value, want: StatusCode, code: &str) -> String {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    body["error"]["message"].as_str().expect("message").to_string()
}

fn concrete(path: &str) -> String {
    path.replace("{id}", "sdoesnotexist0").replace("{port}", "8000")
}

#[tokio::test]
async fn every_route_but_healthz_and_login_needs_the_token() {
    let (app, _, _dir) = app().await;
    for (method, path) in protected_routes().table() {
        let uri = concrete(path);
        for token in [None, Some("wrong-token-0123456789"), Some("")] {
            let (status, body) = send(&app, req(method.clone(), &uri, token, "{}")).await;
            error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
            assert_eq!(body.as_object().unwrap().len(), 1, "nothing but the error: {body}");
        }
        // With the token the route exists (whatever the unknown session makes of it).
        let (status, body) = send(&app, req(method.clone(), &uri, Some(TOKEN), "{}")).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert!(!body.to_string().contains("no route"), "{method} {uri}: {body}");
    }
    let (status, _) = send(&app, req(Method::GET, "/healthz", None, Body::empty())).await;
    assert_eq!(status, StatusCode::OK);
    // Unknown routes do not reveal themselves before auth.
    let (status, body) = send(&app, req(Method::GET, "/api/v1/nope", None, Body::empty())).await;
    error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, body) = send(&app, req(Method::GET, "/api/v1/nope", Some(TOKEN), Body::empty())).await;
    error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = send(&app, req(Method::DELETE, "/healthz", None, Body::empty())).await;
    error(status, &body, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn login_sets_a_cookie_that_authenticates() {
    let (app, _, _dir) = app().await;
    let (status, body) = send(&app, req(Method::POST, "/api/v1/login", None, r#"{"token":"nope"}"#)).await;
    error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let login = format!(r#"{{"token":"{TOKEN}"}}"#);
    let resp = app.clone().oneshot(req(Method::POST, "/api/v1/login", None, login)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let cookie = resp.headers().get(header::SET_COOKIE).unwrap().to_str().unwrap().to_string();
    assert!(cookie.starts_with("mayfly_session="), "a sign-in of its own, not the token: {cookie}");
    assert!(!cookie.contains(TOKEN), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    let r = Request::builder()
        .uri("/api/v1/sessions")
        .header(header::COOKIE, cookie.split(';').next().unwrap())
        .body(Body::empty())
        .unwrap();
    let (status, body) = send(&app, r).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, serde_json::json!([]));
    let r = Request::builder().uri("/metrics").header(header::COOKIE, "mayfly_token=bad").body(Body::empty()).unwrap();
    assert_eq!(send(&app, r).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_input_gets_the_documented_errors() {
    let (app, _, _dir) = app_with(|c| c.max_body_bytes = 256).await;
    let post = |body: &str| req(Method::POST, "/api/v1/sessions", Some(TOKEN), body.to_string());

    let (s, b) = send(&app, post("{")).await;
    error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = send(&app, post(r#"{"image":"minimal","colour":"red"}"#)).await;
    assert!(error(s, &b, StatusCode::BAD_REQUEST, "bad_request").contains("colour"));
    let (s, b) = send(&app, post(r#"{"ttl_seconds":"soon"}"#)).await;
    error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let big = format!(r#"{{"env":{{"X":"{}"}}}}"#, "x".repeat(1000));
    let (s, b) = send(&app, post(&big)).await;
    error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let (s, b) = send(&app, post(r#"{"image":"nosuch"}"#)).await;
    let m = error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    assert!(m.contains("unknown image \"nosuch\"") && m.contains("built images"), "{m}");
    let (s, b) = send(&app, post(r#"{"image":"../../etc"}"#)).await;
    error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = send(&app, req(Method::POST, "/api/v1/sessions?wait=maybe", Some(TOKEN), "{}")).await;
    error(s, &b, StatusCode::BAD_REQUEST, "bad_request");

    let id = "sdoesnotexist0";
    for (method, uri, body) in [
        (Method::GET, format!("/api/v1/sessions/{id}"), ""),
        (Method::DELETE, format!("/api/v1/sessions/{id}"), ""),
        (Method::POST, format!("/api/v1/sessions/{id}/exec"), r#"{"cmd":["true"]}"#),
        (Method::GET, format!("/api/v1/sessions/{id}/files?path=/etc"), ""),
        (Method::GET, format!("/api/v1/sessions/{id}/ports"), ""),
        (Method::GET, format!("/api/v1/sessions/{id}/events"), ""),
        (Method::PATCH, format!("/api/v1/sessions/{id}/ports/8000"), r#"{"visibility":"public"}"#),
    ] {
        let (s, b) = send(&app, req(method.clone(), &uri, Some(TOKEN), body.to_string())).await;
        let m = error(s, &b, StatusCode::NOT_FOUND, "not_found");
        assert!(m.contains(id), "{method} {uri}: {m}");
    }
    let (s, b) = send(&app, req(Method::POST, &format!("/api/v1/sessions/{id}/exec"), Some(TOKEN), r#"{"cmd":"ls"}"#)).await;
    error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    for q in ["path=etc", "path=", "", "path=relative/x"] {
        let (s, b) = send(&app, req(Method::GET, &format!("/api/v1/sessions/{id}/files?{q}"), Some(TOKEN), "")).await;
        error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    }
    let (s, b) = send(&app, req(Method::PATCH, &format!("/api/v1/sessions/{id}/ports/http"), Some(TOKEN), "{}")).await;
    error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) =
        send(&app, req(Method::PATCH, &format!("/api/v1/sessions/{id}/ports/80"), Some(TOKEN), r#"{"visibility":"world"}"#)).await;
    error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = send(&app, req(Method::GET, &format!("/api/v1/sessions/{id}/pty"), Some(TOKEN), "")).await;
    error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn uploads_over_the_limit_are_refused_before_reading() {
    let (app, _, _dir) = app_with(|c| c.max_upload_bytes = 10).await;
    let r = Request::builder()
        .method(Method::PUT)
        .uri("/api/v1/sessions/sdoesnotexist0/files?path=/tmp/x")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_LENGTH, "11")
        .body(Body::from("hello world"))
        .unwrap();
    let (s, b) = send(&app, r).await;
    error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
}

#[tokio::test]
async fn openapi_documents_every_route() {
    let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
    assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.")), Some(true));
    let paths = doc["paths"].as_object().unwrap();
    let routes: Vec<(String, String)> = protected_routes()
        .table()
        .iter()
        .chain(public_routes().table())
        .map(|(m, p)| (m.as_str().to_ascii_lowercase(), p.to_string()))
        .collect();
    for (method, path) in &routes {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} is not in openapi.json");
    }
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys().filter(|k| *k != "parameters") {
            assert!(routes.contains(&(method.clone(), path.clone())), "openapi.json documents {method} {path}, which is no route");
        }
    }
    let (app, _, _dir) = app().await;
    let (s, b) = send(&app, req(Method::GET, "/api/v1/openapi.json", Some(TOKEN), "")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, doc);
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let (app, _, _dir) = app().await;
    let resp = app.clone().oneshot(req(Method::GET, "/metrics", Some(TOKEN), "")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    for want in ["mayfly_sessions{state=\"ready\"} 0", "mayfly_session_creations_total 0", "mayfly_vm_boot_seconds_count 0"] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
}

/// Images that exist on paper, for a host that never boots them.
struct FakeImages;

impl ImageCatalog for FakeImages {
    fn get(&self, name: &str) -> Result<BootImage, CatalogError> {
        Ok(BootImage {
            name: name.into(),
            kernel: "/nonexistent".into(),
            initrd: "/nonexistent".into(),
            rootfs: "/nonexistent".into(),
            cmdline: String::new(),
            memory_mib: 64,
            vcpus: 1,
            disk_size_bytes: 2 << 30,
            key: "fake".into(),
            dir: "/nonexistent".into(),
        })
    }
    fn list(&self) -> Vec<mayfly_proto::api::ImageInfo> {
        Vec::new()
    }
}

/// A VM host whose boots never finish (until cancelled), and that records reaps.
#[derive(Default)]
struct SlowHost {
    reaped: std::sync::Mutex<Vec<String>>,
    /// Specs of the cold boots asked for.
    created: std::sync::Mutex<Vec<mayfly_vm::VmSpec>>,
}

#[async_trait::async_trait]
impl mayfly_vm::VmBackend for SlowHost {
    fn name(&self) -> &'static str {
        "slow"
    }
    async fn create(&self, spec: mayfly_vm::VmSpec) -> Result<Arc<dyn mayfly_vm::Vm>, mayfly_vm::VmError> {
        self.created.lock().unwrap().push(spec);
        std::future::pending().await
    }
    async fn restore(
        &self,
        _spec: mayfly_vm::VmSpec,
        _template: &mayfly_vm::snapshot::Template,
    ) -> Result<Arc<dyn mayfly_vm::Vm>, mayfly_vm::VmError> {
        std::future::pending().await
    }
    async fn fork(&self, _source: &dyn mayfly_vm::Vm, _id: &str) -> Result<Arc<dyn mayfly_vm::Vm>, mayfly_vm::VmError> {
        std::future::pending().await
    }
}

#[async_trait::async_trait]
impl VmHost for SlowHost {
    fn vm_ids(&self) -> Vec<String> {
        vec!["sleftover".into()]
    }
    async fn reap(&self, id: &str) {
        self.reaped.lock().unwrap().push(id.to_string());
    }
}

#[tokio::test]
async fn sizes_beyond_the_operator_maxima_are_refused_naming_the_limit() {
    let mut cfg = ServerConfig::with_data_dir("/nonexistent");
    cfg.max_vcpus = 2;
    cfg.max_memory_mib = 1024;
    cfg.max_disk_gib = 4;
    let host = Arc::new(SlowHost::default());
    let store = Arc::new(SqliteStore::in_memory().await.unwrap());
    let manager = test_manager(cfg, store, host.clone());
    let agent_store = crate::agent::store::AgentStore::in_memory().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let agent = crate::agent::AgentService::new(manager.clone(), Default::default(), agent_store, TOKEN.into(), data.path());
    let state = AppState { manager: manager.clone(), auth: Arc::new(crate::auth::Auth::new(TOKEN)), metrics: Arc::new(Metrics::default()), agent, oidc: None };
    let app = router(state);
    let create = |body: &'static str| req(Method::POST, "/api/v1/sessions?wait=false", Some(TOKEN), body);

    for (body, want) in [
        (r#"{"vcpus":3}"#, "vcpus 3 exceeds max_vcpus (2)"),
        (r#"{"memory_mib":2048}"#, "memory_mib 2048 exceeds max_memory_mib (1024)"),
        (r#"{"disk_gib":5}"#, "disk_gib 5 exceeds max_disk_gib (4)"),
    ] {
        let (s, b) = send(&app, create(body)).await;
        assert_eq!(error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"), want);
    }
    let (s, b) = send(&app, create(r#"{"disk_gib":1}"#)).await;
    assert!(error(s, &b, StatusCode::BAD_REQUEST, "bad_request").contains("at least 2"), "{b}");
    let (s, b) = send(&app, create(r#"{"vcpus":"two"}"#)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(host.created.lock().unwrap().is_empty(), "refused requests boot nothing");

    // Within the limits: shown in the session JSON and given to the VM (a cold boot: the pool
    // and templates are made at the image's size).
    let (s, b) = send(&app, create(r#"{"vcpus":2,"memory_mib":768,"disk_gib":3}"#)).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!((b["vcpus"].as_u64(), b["memory_mib"].as_u64(), b["disk_gib"].as_u64()), (Some(2), Some(768), Some(3)), "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    let (_, got) = send(&app, req(Method::GET, &format!("/api/v1/sessions/{id}"), Some(TOKEN), "")).await;
    assert_eq!(got["disk_gib"], 3, "{got}");
    let spec = loop {
        if let Some(spec) = host.created.lock().unwrap().first().cloned() {
            break spec;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!((spec.vcpus, spec.memory_mib, spec.disk_size_bytes), (2, 768, Some(3 << 30)));
    // Labels: kept with the session and shown in it; bad ones refused.
    let (s, b) = send(&app, create(r#"{"labels":{"":"x"}}"#)).await;
    assert!(error(s, &b, StatusCode::BAD_REQUEST, "bad_request").contains("label key"), "{b}");
    let (s, b) = send(&app, create(r#"{"labels":{"team":"infra","e2b.purpose":"ci run"}}"#)).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let want = serde_json::json!({"team": "infra", "e2b.purpose": "ci run"});
    assert_eq!(b["labels"], want, "{b}");
    let (_, got) = send(&app, req(Method::GET, &format!("/api/v1/sessions/{}", b["id"].as_str().unwrap()), Some(TOKEN), "")).await;
    assert_eq!(got["labels"], want, "{got}");
    // Defaults: the image's size.
    let (s, b) = send(&app, create("{}")).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!((b["vcpus"].as_u64(), b["memory_mib"].as_u64(), b["disk_gib"].as_u64()), (Some(1), Some(64), Some(2)), "{b}");
    manager.shutdown().await;
}

#[tokio::test]
async fn creating_sessions_count_against_the_limit_and_delete_cancels_the_boot() {
    let mut cfg = ServerConfig::with_data_dir("/nonexistent");
    cfg.max_sessions = 1;
    let host = Arc::new(SlowHost::default());
    let store = Arc::new(SqliteStore::in_memory().await.unwrap());
    let manager = test_manager(cfg, store, host.clone());
    manager.reconcile().await.unwrap();
    assert_eq!(*host.reaped.lock().unwrap(), vec!["sleftover".to_string()]);
    let agent_store = crate::agent::store::AgentStore::in_memory().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let agent = crate::agent::AgentService::new(manager.clone(), Default::default(), agent_store, TOKEN.into(), data.path());
    let state = AppState { manager: manager.clone(), auth: Arc::new(crate::auth::Auth::new(TOKEN)), metrics: Arc::new(Metrics::default()), agent, oidc: None };
    let app = router(state);

    let (s, created) = send(&app, req(Method::POST, "/api/v1/sessions?wait=false", Some(TOKEN), "")).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["state"], "creating");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["ide_url"], format!("http://h:1/s/{id}"));
    assert_eq!(created["image"], "dev", "the config's default image");

    let (s, b) = send(&app, req(Method::POST, "/api/v1/sessions?wait=false", Some(TOKEN), "{}")).await;
    assert_eq!(error(s, &b, StatusCode::TOO_MANY_REQUESTS, "too_many_sessions"), "max_sessions (1) reached");
    let (s, b) = send(&app, req(Method::POST, &format!("/api/v1/sessions/{id}/exec"), Some(TOKEN), r#"{"cmd":["true"]}"#)).await;
    error(s, &b, StatusCode::CONFLICT, "conflict");

    // Without an upgrade, events are Server-Sent Events, history first.
    let resp = app.clone().oneshot(req(Method::GET, &format!("/api/v1/sessions/{id}/events"), Some(TOKEN), "")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut sse = resp.into_body();
    let frame = tokio::time::timeout(std::time::Duration::from_secs(10), sse.frame()).await.unwrap().unwrap().unwrap();
    let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
    assert!(text.contains(r#""type":"state""#) && text.contains(r#""to":"creating""#), "{text}");
    assert!(text.contains("id: "), "state events carry their sequence number: {text}");
    drop(sse);
    let events = manager.subscribe(&crate::access::system(&id, "test")).await.unwrap();
    // Two deletes at once: one wins (204), the other finds the session gone (404).
    let uri = format!("/api/v1/sessions/{id}");
    let (a, b) = tokio::join!(
        send(&app, req(Method::DELETE, &uri, Some(TOKEN), "")),
        send(&app, req(Method::DELETE, &uri, Some(TOKEN), "")),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::NO_CONTENT, StatusCode::NOT_FOUND]);
    assert_eq!(send(&app, req(Method::GET, &uri, Some(TOKEN), "")).await.0, StatusCode::NOT_FOUND);
    assert!(host.reaped.lock().unwrap().contains(&id), "the cancelled boot was reaped");

    // The events tell the whole story, and the stream ends with the session.
    use futures::StreamExt;
    let states: Vec<String> = events
        .filter_map(|e| async move {
            match e.event {
                mayfly_proto::api::SessionEvent::State { to, .. } => Some(to.as_str().to_string()),
                _ => None,
            }
        })
        .collect()
        .await;
    assert_eq!(states, ["creating", "stopping", "destroyed"]);
    let resp = app.clone().oneshot(req(Method::GET, &format!("{uri}/events"), Some(TOKEN), "")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "destroyed sessions are gone");
    // The slot is free again.
    let (s, b) = send(&app, req(Method::POST, "/api/v1/sessions?wait=false", Some(TOKEN), "")).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

#[tokio::test]
async fn each_client_address_has_a_request_budget() {
    let (app, _, _dir) = app_with(|c| {
        c.rate_limit_per_second = 1;
        c.rate_limit_burst = 2;
    })
    .await;
    let from = |last: u8, uri: &str| {
        let mut r = req(Method::GET, uri, Some(TOKEN), Body::empty());
        let peer: std::net::SocketAddr = ([127, 0, 0, last], 40000).into();
        r.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        r
    };
    for _ in 0..2 {
        assert_eq!(send(&app, from(1, "/api/v1/sessions")).await.0, StatusCode::OK);
    }
    let resp = app.clone().oneshot(from(1, "/api/v1/sessions/sx")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    let body: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let msg = error(StatusCode::TOO_MANY_REQUESTS, &body, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(msg.contains("rate_limit_per_second = 1") && msg.contains("rate_limit_burst = 2"), "{msg}");
    // Unauthenticated guesses count too; other clients and non-API paths are not affected.
    assert_eq!(send(&app, from(1, "/api/v1/login")).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(send(&app, from(2, "/api/v1/sessions")).await.0, StatusCode::OK);
    let health = app.clone().oneshot(from(1, "/healthz")).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

/// A manager on the fake VM host and images.
fn test_manager(cfg: ServerConfig, store: Arc<SqliteStore>, host: Arc<SlowHost>) -> Arc<SessionManager> {
    let accounts = test_accounts(&store);
    SessionManager::new(Arc::new(cfg), "http://h:1".into(), store, host, Arc::new(FakeImages), Arc::new(Metrics::default()), accounts)
}

/// Accounts on the test's store (secrets in a throw-away dir).
fn test_accounts(store: &Arc<SqliteStore>) -> Arc<crate::accounts::Accounts> {
    let dir = tempfile::tempdir().unwrap().keep();
    crate::accounts::Accounts::new(store.clone(), Default::default(), Arc::new(crate::secrets::Secrets::new(&dir)))
}
