//! Who is calling: `X-API-KEY` (control plane) or `X-Access-Token` (envd, where the SDK sends
//! the `envdAccessToken` the create answer gave it, which this door sets to the caller's key)
//! carries a Mayfly API token — a user's `mfy_…` token or the server token.

use crate::error::ApiError;
use crate::Door;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use mayfly_server::accounts::Caller;
use std::net::SocketAddr;

/// Where a request came from (the listener records it).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)))
    }
}

/// The key a request carries, if any.
pub fn key_of(headers: &HeaderMap) -> Option<&str> {
    ["x-api-key", "x-access-token"].iter().find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok())).map(str::trim).filter(|k| !k.is_empty())
}

/// The caller of a request, or 401.
pub async fn caller(door: &Door, headers: &HeaderMap, peer: Peer) -> Result<Caller, ApiError> {
    let key = key_of(headers).ok_or_else(ApiError::unauthorized)?;
    let mut bearer = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| ApiError::unauthorized())?;
    bearer.insert(axum::http::header::AUTHORIZATION, value);
    match door.app.auth.bearer_principal(door.app.manager.accounts(), &bearer).await {
        Ok(Some(who)) => Ok(Caller { who, ip: peer.0.map(|p| p.ip().to_string()) }),
        _ => Err(ApiError::unauthorized()),
    }
}

/// The sandbox an envd request is for, opened for `action` as its caller: someone else's or an
/// unknown sandbox is the same 404.
pub async fn open_sandbox(
    door: &Door,
    headers: &HeaderMap,
    peer: Peer,
    action: mayfly_server::access::Action,
) -> Result<mayfly_server::access::SessionRef, ApiError> {
    let c = caller(door, headers, peer).await?;
    let id = sandbox_id(headers)?;
    door.app.manager.open(&c, &id, action).await.map_err(|_| ApiError::not_found(format!("sandbox \"{id}\" not found")))
}

/// The sandbox an envd request is for (`E2b-Sandbox-Id`).
pub fn sandbox_id(headers: &HeaderMap) -> Result<String, ApiError> {
    headers
        .get("e2b-sandbox-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ApiError::bad_request("missing E2b-Sandbox-Id header"))
}
