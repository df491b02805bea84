//! `/api/v1/nodes`: the hosts of the deployment (admins). A single host lists itself.

use super::{ApiJson, ApiPath, AppState, Routes};
use crate::accounts::Caller;
use crate::error::ApiError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use mayfly_proto::nodes::{Node, SetNodeMode};

pub fn routes() -> Routes {
    Routes::new().get("/api/v1/nodes", list).post("/api/v1/nodes/{name}/mode", set_mode)
}

fn cluster(st: &AppState) -> Result<std::sync::Arc<crate::cluster::node::Cluster>, ApiError> {
    st.manager.cluster().ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "starting", "the node registry is not up yet"))
}

async fn list(State(st): State<AppState>, caller: Caller) -> Result<Json<Vec<Node>>, ApiError> {
    super::signin::admin(&caller)?;
    let (nodes, db_now) = cluster(&st)?.store().nodes().await.map_err(crate::manager::SessionError::from)?;
    Ok(Json(nodes.iter().map(|n| crate::cluster::view::node(n, db_now)).collect()))
}

async fn set_mode(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<SetNodeMode>,
) -> Result<Json<Node>, ApiError> {
    super::signin::admin(&caller)?;
    let c = cluster(&st)?;
    if !c.store().set_node_mode(&name, body.mode).await.map_err(crate::manager::SessionError::from)? {
        return Err(ApiError::not_found(format!("no node named {name:?}")));
    }
    st.manager.accounts().audit(&caller, "node_mode", None, serde_json::json!({"node": name, "mode": body.mode})).await;
    let (nodes, db_now) = c.store().nodes().await.map_err(crate::manager::SessionError::from)?;
    let n = nodes.iter().find(|n| n.name == name).ok_or_else(|| ApiError::not_found(format!("no node named {name:?}")))?;
    Ok(Json(crate::cluster::view::node(n, db_now)))
}
