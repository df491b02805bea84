//! `/api/v1/sessions/{id}/ports`: listening ports with their preview URLs; visibility per port.

use super::{ApiJson, ApiPath, AppState, Routes};
use crate::error::ApiError;
use axum::extract::State;
use axum::Json;
use mayfly_proto::api::{PatchPort, Port};

pub fn routes() -> Routes {
    Routes::new()
        .get("/api/v1/sessions/{id}/ports", list)
        .patch("/api/v1/sessions/{id}/ports/{port}", patch)
}

async fn list(State(st): State<AppState>, ApiPath(id): ApiPath<String>) -> Result<Json<Vec<Port>>, ApiError> {
    Ok(Json(st.manager.ports(&id).await?))
}

async fn patch(
    State(st): State<AppState>,
    ApiPath((id, port)): ApiPath<(String, u16)>,
    ApiJson(body): ApiJson<PatchPort>,
) -> Result<Json<Port>, ApiError> {
    Ok(Json(st.manager.set_port_visibility(&id, port, body.visibility).await?))
}
