//! `POST /api/v1/sessions/{id}/exec`: run a command to completion in the session's VM.
//! A command the guest cannot start (missing binary, bad cwd) is a 422 with the guest's reason.

use super::{ApiJson, ApiPath, AppState, Routes};
use crate::access::Action;
use crate::accounts::Caller;
use crate::error::ApiError;
use axum::extract::State;
use axum::Json;
use mayfly_proto::api::{ExecBody, ExecResult};

pub fn routes() -> Routes {
    Routes::new().post("/api/v1/sessions/{id}/exec", exec)
}

async fn exec(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ExecBody>,
) -> Result<Json<ExecResult>, ApiError> {
    let s = st.manager.open(&caller, &id, Action::Exec).await?;
    Ok(Json(st.manager.exec(&s, body).await?))
}
