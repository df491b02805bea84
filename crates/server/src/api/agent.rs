//! The coding agent of a session: start a run, follow it (events on `/events`), read runs and
//! the conversation, cancel. One run at a time per session (409 otherwise).

use super::{ApiJson, ApiPath, AppState, Routes};
use crate::agent::AgentError;
use crate::access::Action;
use crate::accounts::Caller;
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
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<StartAgentRun>,
) -> Result<(StatusCode, Json<AgentRun>), ApiError> {
    let s = st.manager.open(&caller, &id, Action::Agent).await?;
    let run = st.agent.start(&s, body.prompt).await?;
    st.manager.accounts().audit(&caller, "agent_run", Some(&id), serde_json::json!({"run": run.id})).await;
    Ok((StatusCode::CREATED, Json(run)))
}

async fn list(State(st): State<AppState>, caller: Caller, ApiPath(id): ApiPath<String>) -> Result<Json<Vec<AgentRun>>, ApiError> {
    let s = st.manager.open(&caller, &id, Action::Agent).await?;
    Ok(Json(st.agent.list(&s).await?))
}

async fn get(State(st): State<AppState>, caller: Caller, ApiPath((id, run)): ApiPath<(String, String)>) -> Result<Json<AgentRun>, ApiError> {
    let s = st.manager.open(&caller, &id, Action::Agent).await?;
    Ok(Json(st.agent.get(&s, &run).await?))
}

async fn cancel(State(st): State<AppState>, caller: Caller, ApiPath((id, run)): ApiPath<(String, String)>) -> Result<Json<AgentRun>, ApiError> {
    let s = st.manager.open(&caller, &id, Action::Agent).await?;
    Ok(Json(st.agent.cancel(&s, &run).await?))
}

async fn messages(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<mayfly_agent::Message>>, ApiError> {
    let s = st.manager.open(&caller, &id, Action::Agent).await?;
    Ok(Json(st.agent.messages(&s).await?))
}
