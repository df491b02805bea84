//! `/api/v1/sessions`: create, list, get, delete.
//!
//! `POST` waits until the session is ready (201, state `ready`) unless `?wait=false` (201, state
//! `creating`; follow `/events`). A boot failure answers 502 and leaves the session `failed`.
//! `DELETE` answers 204 once the VM is gone; deleting it again answers 404.
//! `POST …/{id}/fork` starts a new session from a copy of a ready session's VM (memory, running
//! processes, disk); 409 when the source is not ready.

use super::{ApiJson, ApiPath, ApiQuery, AppState, Routes};
use crate::access::Action;
use crate::accounts::Caller;
use crate::error::ApiError;
use axum::extract::State;
use axum::http::header::LOCATION;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mayfly_proto::api::{CreateSession, ForkSession, Session};
use serde::Deserialize;

pub fn routes() -> Routes {
    Routes::new()
        .post("/api/v1/sessions", create)
        .get("/api/v1/sessions", list)
        .get("/api/v1/sessions/{id}", get)
        .delete("/api/v1/sessions/{id}", delete)
        .post("/api/v1/sessions/{id}/fork", fork)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateQuery {
    #[serde(default = "yes")]
    wait: bool,
}

fn yes() -> bool {
    true
}

async fn create(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<CreateQuery>,
    ApiJson(body): ApiJson<CreateSession>,
) -> Result<Response, ApiError> {
    let image = body.image.clone();
    let s = st.manager.create(&caller, body, q.wait).await?;
    st.manager.accounts().audit(&caller, "session_create", Some(&s.id), serde_json::json!({"image": image.unwrap_or(s.image.clone()), "vcpus": s.vcpus, "memory_mib": s.memory_mib})).await;
    let location = format!("/api/v1/sessions/{}", s.id);
    Ok((StatusCode::CREATED, [(LOCATION, location)], Json(s)).into_response())
}

/// `POST /api/v1/sessions/{id}/fork`: a new session from a copy of this one's running VM.
/// The body (optional) sets the fork's lifetime; `?wait` as for a create.
async fn fork(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<CreateQuery>,
    ApiJson(body): ApiJson<ForkSession>,
) -> Result<Response, ApiError> {
    let source = st.manager.open(&caller, &id, Action::Fork).await?;
    let s = st.manager.fork(&source, body, q.wait).await?;
    st.manager.accounts().audit(&caller, "session_fork", Some(&s.id), serde_json::json!({"source": id})).await;
    let location = format!("/api/v1/sessions/{}", s.id);
    Ok((StatusCode::CREATED, [(LOCATION, location)], Json(s)).into_response())
}

/// A member's own sessions; every session for an admin, with each owner's email.
async fn list(State(st): State<AppState>, caller: Caller) -> Result<Json<Vec<Session>>, ApiError> {
    let mut sessions = st.manager.list(&caller).await?;
    if caller.who.is_admin() {
        show_owners(&st, &mut sessions).await;
    }
    Ok(Json(sessions))
}

async fn show_owners(st: &AppState, sessions: &mut [Session]) {
    let mut emails = std::collections::HashMap::new();
    for s in sessions.iter_mut() {
        let Some(owner) = s.owner.clone() else { continue };
        if !emails.contains_key(&owner) {
            let e = st.manager.accounts().email_of(&owner).await;
            emails.insert(owner.clone(), e);
        }
        s.owner_email = emails.get(&owner).cloned().flatten();
    }
}

async fn get(State(st): State<AppState>, caller: Caller, ApiPath(id): ApiPath<String>) -> Result<Json<Session>, ApiError> {
    let s = st.manager.open(&caller, &id, Action::Read).await?;
    let mut one = [st.manager.get(&s).await?];
    if caller.who.is_admin() {
        show_owners(&st, &mut one).await;
    }
    let [session] = one;
    Ok(Json(session))
}

async fn delete(State(st): State<AppState>, caller: Caller, ApiPath(id): ApiPath<String>) -> Result<StatusCode, ApiError> {
    let s = st.manager.open(&caller, &id, Action::Delete).await?;
    st.manager.delete(&s, "deleted by request").await?;
    st.manager.accounts().audit(&caller, "session_delete", Some(&id), serde_json::Value::Null).await;
    Ok(StatusCode::NO_CONTENT)
}
