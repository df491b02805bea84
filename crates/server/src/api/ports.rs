//! `/api/v1/sessions/{id}/ports`: listening ports with their preview URLs; visibility per port.

use super::{ApiJson, ApiPath, AppState, Routes};
use crate::access::Action;
use crate::accounts::Caller;
use crate::error::ApiError;
use axum::extract::State;
use axum::Json;
use mayfly_proto::api::{PatchPort, Port};

pub fn routes() -> Routes {
    Routes::new()
        .get("/api/v1/sessions/{id}/ports", list)
        .patch("/api/v1/sessions/{id}/ports/{port}", patch)
}

async fn list(State(st): State<AppState>, caller: Caller, ApiPath(id): ApiPath<String>) -> Result<Json<Vec<Port>>, ApiError> {
    let s = st.manager.open(&caller, &id, Action::Ports).await?;
    Ok(Json(st.manager.ports(&s).await?))
}

async fn patch(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath((id, port)): ApiPath<(String, u16)>,
    ApiJson(body): ApiJson<PatchPort>,
) -> Result<Json<Port>, ApiError> {
    let s = st.manager.open(&caller, &id, Action::Visibility).await?;
    let p = st.manager.set_port_visibility(&s, port, body.visibility).await?;
    let detail = serde_json::json!({"port": port, "visibility": body.visibility});
    st.manager.accounts().audit(&caller, "visibility_change", Some(&id), detail).await;
    Ok(Json(p))
}
