//! `/api/v1/sessions`: create, list, get, delete.
//!
//! `POST` waits until the session is ready (201, state `ready`) unless `?wait=false` (201, state
//! `creating`; follow `/events`). A boot failure answers 502 and leaves the session `failed`.
//! `DELETE` answers 204 once the VM is gone; deleting it again answers 404.
//! `POST …/{id}/fork` starts a new session from a copy of a ready session's VM (memory, running
//! processes, disk); 409 when the source is not ready.

use super::{ApiJson, ApiPath, ApiQuery, AppState, Routes};
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
    ApiQuery(q): ApiQuery<CreateQuery>,
    ApiJson(body): ApiJson<CreateSession>,
) -> Result<Response, ApiError> {
    let s = st.manager.create(body, q.wait).await?;
    let location = format!("/api/v1/sessions/{}", s.id);
    Ok((StatusCode::CREATED, [(LOCATION, location)], Json(s)).into_response())
}

/// `POST /api/v1/sessions/{id}/fork`: a new session from a copy of this one's running VM.
/// The body (optional) sets the fork's lifetime; `?wait` as for a create.
async fn fork(
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<CreateQuery>,
    ApiJson(body): ApiJson<ForkSession>,
) -> Result<Response, ApiError> {
    let s = st.manager.fork(&id, body, q.wait).await?;
    let location = format!("/api/v1/sessions/{}", s.id);
    Ok((StatusCode::CREATED, [(LOCATION, location)], Json(s)).into_response())
}

async fn list(State(st): State<AppState>) -> Result<Json<Vec<Session>>, ApiError> {
    Ok(Json(st.manager.list().await?))
}

async fn get(State(st): State<AppState>, ApiPath(id): ApiPath<String>) -> Result<Json<Session>, ApiError> {
    Ok(Json(st.manager.get(&id).await?))
}

async fn delete(State(st): State<AppState>, ApiPath(id): ApiPath<String>) -> Result<StatusCode, ApiError> {
    st.manager.delete(&id, "deleted by request").await?;
    Ok(StatusCode::NO_CONTENT)
}
