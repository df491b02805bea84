//! The coding agent of a session: start a run, follow it (events on `/events`), read runs and
//! the conversation, cancel. One run at a time per session (409 otherwise).

use super::{ApiJson, ApiPath, AppState, Routes};
use crate::agent::AgentError;
use crate::error::ApiError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use mayfly_proto::api::{AgentRun, StartAgentRun};

pub fn routes() -> Routes {
    Routes::new()
        .post("/api/v1/sessions/{id}/agent/runs", start)
        .get("/api/v1/sessions/{id}/agent/runs", list)
        .get("/api/v1/sessions/{id}/agent/runs/{run}", get)
        .post("/api/v1/sessions/{id}/agent/runs/{run}/cancel", cancel)
        .get("/api/v1/sessions/{id}/agent/messages", messages)
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::Session(s) => s.into(),
            AgentError::Busy { .. } => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            AgentError::RunNotFound { .. } => ApiError::not_found(e.to_string()),
            AgentError::Invalid(m) => ApiError::bad_request(m),
            AgentError::Store(_) | AgentError::IllegalTransition { .. } => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "agent request failed");
                ApiError::internal()
            }
        }
    }
}

async fn start(
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<StartAgentRun>,
) -> Result<(StatusCode, Json<AgentRun>), ApiError> {
    Ok((StatusCode::CREATED, Json(st.agent.start(&id, body.prompt).await?)))
}

async fn list(State(st): State<AppState>, ApiPath(id): ApiPath<String>) -> Result<Json<Vec<AgentRun>>, ApiError> {
    Ok(Json(st.agent.list(&id).await?))
}

async fn get(State(st): State<AppState>, ApiPath((id, run)): ApiPath<(String, String)>) -> Result<Json<AgentRun>, ApiError> {
    Ok(Json(st.agent.get(&id, &run).await?))
}

async fn cancel(State(st): State<AppState>, ApiPath((id, run)): ApiPath<(String, String)>) -> Result<Json<AgentRun>, ApiError> {
    Ok(Json(st.agent.cancel(&id, &run).await?))
}

async fn messages(
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<mayfly_agent::Message>>, ApiError> {
    Ok(Json(st.agent.messages(&id).await?))
}
