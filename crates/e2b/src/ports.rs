//! Port traffic: a request whose Host is `<port>-<id>.<domain>` (what the SDK's `get_host`
//! gives) goes to that port in the sandbox, over the manager's tunnel and the preview proxy
//! (HTTP and WebSocket). It needs the sandbox's key (`X-API-KEY`, `X-Access-Token` or
//! `e2b-traffic-access-token`, opening the session as its owner or an admin) unless the
//! port's Mayfly visibility lets anyone in (`public`).

use crate::auth::{caller, Peer};
use crate::error::ApiError;
use crate::Shared;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mayfly_server::access::{Action, PreviewPass};
use mayfly_server::preview::host::parse_host;
use mayfly_server::preview::proxy::{forward, Forward, ProxyError};

/// Routes Host-addressed port traffic; everything else goes on to the API.
pub async fn route(State(door): State<Shared>, peer: Peer, mut req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
    let (domain, port) = door.domain.rsplit_once(':').map_or((door.domain.as_str(), 0), |(d, p)| (d, p.parse().unwrap_or(0)));
    let target = match parse_host(&host, domain, port) {
        Ok(Some(t)) => t,
        Ok(None) => return next.run(req).await,
        Err(e) => return ApiError::bad_request(e.to_string()).into_response(),
    };
    if let Some(key) = req.headers().get("e2b-traffic-access-token").cloned() {
        req.headers_mut().insert("x-access-token", key);
    }
    let sref = match caller(&door, req.headers(), peer).await {
        Ok(c) => door.app.manager.open(&c, &target.session, Action::Preview).await.ok(),
        Err(_) => door.app.manager.open_preview(None, PreviewPass::None, &target.session, target.port).await.ok(),
    };
    let Some(sref) = sref else {
        return ApiError::not_found(format!("sandbox \"{}\" or its port {} not found", target.session, target.port)).into_response();
    };
    for h in ["x-api-key", "x-access-token", "e2b-traffic-access-token"] {
        req.headers_mut().remove(h);
    }
    let path_and_query = req.uri().path_and_query().map_or("/".to_string(), |p| p.as_str().to_string());
    let fwd = Forward { target: &target, path_and_query, proto: "http", prefix: None };
    match forward(&door.app.manager, &sref, &door.app.auth, req, fwd).await {
        Ok(r) => r,
        Err(ProxyError::Session(e)) => ApiError::from(e).into_response(),
        Err(e @ ProxyError::Upstream { .. }) => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
