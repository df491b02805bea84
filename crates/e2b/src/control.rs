//! E2B's control plane over Mayfly sessions: create (`POST /v2/sandboxes`), get, list (filters,
//! paging by `x-next-token`), kill, set-timeout, connect. A sandbox's `timeout` is its
//! session's end of life (and its idle timeout, so an idle sandbox lives as long as E2B's would).

use crate::auth::caller;
use crate::error::ApiError;
use crate::{Shared, ENVD_VERSION};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mayfly_proto::api::{CreateSession, Session, SessionState};
use mayfly_server::access::Action;
use mayfly_server::accounts::Caller;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use time::OffsetDateTime;

/// E2B's default timeout (seconds) when a create names none.
const DEFAULT_TIMEOUT: u64 = 300;
/// E2B's default template: Mayfly's default image.
const DEFAULT_TEMPLATES: &[&str] = &["base", "default", ""];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSandbox {
    #[serde(rename = "templateID")]
    template_id: String,
    timeout: Option<u64>,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
    #[serde(default)]
    env_vars: Option<BTreeMap<String, String>>,
    #[serde(default)]
    allow_internet_access: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct Timeout {
    timeout: u64,
}

use crate::auth::Peer;

async fn who(door: &Shared, headers: &HeaderMap, peer: Peer) -> Result<Caller, ApiError> {
    caller(door, headers, peer).await
}

fn parse_time(s: &str) -> OffsetDateTime {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn key_of(headers: &HeaderMap) -> String {
    crate::auth::key_of(headers).unwrap_or_default().to_string()
}

/// The sandbox as E2B shows it (a superset of its create, get and list answers).
/// The sandbox's metadata is the session's labels (stored with it: a restart keeps them); its
/// template is the session's image.
fn view(door: &Shared, s: &Session, key: Option<&str>) -> Value {
    let mut v = json!({
        "templateID": s.image,
        "sandboxID": s.id,
        "clientID": "mayfly",
        "alias": s.image,
        "startedAt": s.created_at,
        "endAt": s.expires_at,
        "cpuCount": s.vcpus.unwrap_or(1),
        "memoryMB": s.memory_mib.unwrap_or(512),
        "diskSizeMB": u64::from(s.disk_gib.unwrap_or(1)) * 1024,
        "state": "running",
        "envdVersion": ENVD_VERSION,
        "metadata": s.labels,
        "domain": door.domain,
    });
    if let Some(k) = key {
        v["envdAccessToken"] = json!(k);
    }
    v
}

pub async fn create(State(door): State<Shared>, peer: Peer, headers: HeaderMap, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let c = who(&door, &headers, peer).await?;
    let req: NewSandbox = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid sandbox request: {e}")))?;
    let image = if DEFAULT_TEMPLATES.contains(&req.template_id.as_str()) { None } else { Some(req.template_id.clone()) };
    let timeout = req.timeout.unwrap_or(DEFAULT_TIMEOUT).max(1);
    let mut create = CreateSession {
        image,
        ttl_seconds: Some(timeout),
        idle_timeout_seconds: Some(timeout),
        env: req.env_vars.unwrap_or_default(),
        labels: req.metadata.unwrap_or_default().into_iter().collect(),
        ..Default::default()
    };
    if req.allow_internet_access == Some(false) {
        create.network = Some(mayfly_proto::api::Network { egress: mayfly_proto::api::EgressMode::None, allow: Vec::new() });
    }
    let session = door.app.manager.create(&c, create, true).await?;
    tracing::info!(session = %session.id, caller = %c.who.label(), "e2b sandbox created");
    Ok((StatusCode::CREATED, Json(view(&door, &session, Some(&key_of(&headers))))).into_response())
}

async fn session(door: &Shared, c: &Caller, id: &str, action: Action) -> Result<(mayfly_server::access::SessionRef, Session), ApiError> {
    let sref = door.app.manager.open(c, id, action).await.map_err(|_| ApiError::not_found(format!("sandbox \"{id}\" not found")))?;
    let s = door.app.manager.get(&sref).await?;
    if matches!(s.state, SessionState::Destroyed | SessionState::Failed | SessionState::Stopping) {
        return Err(ApiError::not_found(format!("sandbox \"{id}\" not found")));
    }
    Ok((sref, s))
}

pub async fn get_one(State(door): State<Shared>, peer: Peer, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    let c = who(&door, &headers, peer).await?;
    let (_, s) = session(&door, &c, &id, Action::Read).await?;
    Ok(Json(view(&door, &s, Some(&key_of(&headers)))).into_response())
}

pub async fn connect(State(door): State<Shared>, peer: Peer, headers: HeaderMap, Path(id): Path<String>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let c = who(&door, &headers, peer).await?;
    let (sref, s) = session(&door, &c, &id, Action::Read).await?;
    if let Ok(t) = serde_json::from_slice::<Timeout>(&body) {
        extend(&door, &sref, &s, t.timeout).await?;
    }
    let s = door.app.manager.get(&sref).await?;
    Ok(Json(view(&door, &s, Some(&key_of(&headers)))).into_response())
}

/// Moves the end of life to `timeout` seconds from now (connect only ever extends it).
async fn extend(door: &Shared, sref: &mayfly_server::access::SessionRef, s: &Session, timeout: u64) -> Result<(), ApiError> {
    let at = OffsetDateTime::now_utc() + std::time::Duration::from_secs(timeout);
    if at > parse_time(&s.expires_at) {
        door.app.manager.set_expiry(sref, at).await?;
    }
    Ok(())
}

pub async fn set_timeout(State(door): State<Shared>, peer: Peer, headers: HeaderMap, Path(id): Path<String>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let c = who(&door, &headers, peer).await?;
    let t: Timeout = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid timeout request: {e}")))?;
    let (sref, _) = session(&door, &c, &id, Action::Read).await?;
    let at = OffsetDateTime::now_utc() + std::time::Duration::from_secs(t.timeout.max(1));
    door.app.manager.set_expiry(&sref, at).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn refresh(State(door): State<Shared>, peer: Peer, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    let c = who(&door, &headers, peer).await?;
    let _ = session(&door, &c, &id, Action::Read).await?;
    door.app.manager.touch(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn kill(State(door): State<Shared>, peer: Peer, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    let c = who(&door, &headers, peer).await?;
    let (sref, _) = session(&door, &c, &id, Action::Delete).await?;
    door.processes.end_session(&id);
    door.watchers.end_session(&id);
    door.app.manager.delete(&sref, "killed through the E2B API").await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list(State(door): State<Shared>, peer: Peer, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    let c = who(&door, &headers, peer).await?;
    let limit: usize = match q.get("limit") {
        Some(l) => l.parse().ok().filter(|l| (1..=1000).contains(l)).ok_or_else(|| ApiError::bad_request("limit must be 1..=1000"))?,
        None => 100,
    };
    let wanted: Vec<(String, String)> = q.get("metadata").map(|m| form_urlencoded::parse(m.as_bytes()).into_owned().collect()).unwrap_or_default();
    if let Some(states) = q.get("state") {
        if !states.split(',').any(|s| s == "running") {
            return Ok(Json(json!([])).into_response());
        }
    }
    let mut all: Vec<Session> = door.app.manager.list(&c).await?.into_iter().filter(|s| s.state == SessionState::Ready).collect();
    all.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
    let matches = |s: &Session| wanted.iter().all(|(k, v)| s.labels.get(k) == Some(v));
    let mut rest = all.into_iter().filter(matches);
    if let Some(after) = q.get("nextToken") {
        rest.by_ref().find(|s| &s.id == after);
    }
    let page: Vec<Session> = rest.by_ref().take(limit).collect();
    let more = rest.next().is_some();
    let body: Vec<Value> = page.iter().map(|s| view(&door, s, None)).collect();
    let mut resp = Json(body).into_response();
    if more {
        if let Some(last) = page.last() {
            if let Ok(v) = last.id.parse() {
                resp.headers_mut().insert("x-next-token", v);
            }
        }
    }
    Ok(resp)
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route on the E2B API")
}
