//! The HTTP API (`/api/v1`, `/healthz`, `/metrics`): parses requests at the edge and calls the
//! [`SessionManager`]; no business logic lives here.
//!
//! The router is assembled from each module's `routes()`, built with [`Routes`], which records
//! every (method, path) so a test can check the OpenAPI document (`openapi.json`) covers them.
//! Extractors here turn every rejection into the JSON error shape.

mod accounts;
mod agent;
mod events;
mod exec;
mod files;
mod nodes;
pub mod oidc;
#[cfg(test)]
mod hostile_tests;
mod ports;
mod pty;
mod sessions;
pub mod signin;
#[cfg(test)]
mod tests;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::manager::SessionManager;
use crate::metrics::Metrics;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequestParts, Path, Query, Request, State};
use axum::handler::Handler;
use axum::http::header::{CONTENT_TYPE, UPGRADE};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{self, MethodRouter};
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use tower_http::trace::TraceLayer;

/// The OpenAPI 3 document of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub manager: Arc<SessionManager>,
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
    pub agent: Arc<crate::agent::AgentService>,
    /// OpenID Connect sign-in, when configured.
    pub oidc: Option<Arc<oidc::OidcDoor>>,
}

impl AppState {
    /// "Sign in with <name>" when OpenID Connect is configured.
    pub fn oidc_name(&self) -> Option<String> {
        self.oidc.as_ref().map(|o| o.display_name().to_string())
    }
}

/// A router that remembers the (method, path) of every route added to it.
pub struct Routes {
    router: Router<AppState>,
    table: Vec<(Method, &'static str)>,
}

macro_rules! method {
    ($name:ident, $method:ident) => {
        pub fn $name<H, T>(self, path: &'static str, handler: H) -> Self
        where
            H: Handler<T, AppState>,
            T: 'static,
        {
            self.add(Method::$method, path, routing::$name(handler))
        }
    };
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}

impl Routes {
    pub fn new() -> Self {
        Self { router: Router::new(), table: Vec::new() }
    }
    method!(get, GET);
    method!(post, POST);
    method!(put, PUT);
    method!(patch, PATCH);
    method!(delete, DELETE);

    fn add(mut self, method: Method, path: &'static str, route: MethodRouter<AppState>) -> Self {
        self.router = self.router.route(path, route);
        self.table.push((method, path));
        self
    }

    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    pub fn table(&self) -> &[(Method, &'static str)] {
        &self.table
    }
}

/// Routes that need the token.
pub(crate) fn protected_routes() -> Routes {
    Routes::new()
        .merge(sessions::routes())
        .merge(exec::routes())
        .merge(files::routes())
        .merge(ports::routes())
        .merge(pty::routes())
        .merge(events::routes())
        .merge(agent::routes())
        .merge(accounts::routes())
        .merge(nodes::routes())
        .post("/api/v1/logout", signin::logout)
        .get("/api/v1/images", images)
        .get("/api/v1/pool", pool)
        .get("/api/v1/openapi.json", openapi)
        .get("/metrics", metrics)
}

/// Routes open to anyone.
pub(crate) fn public_routes() -> Routes {
    Routes::new()
        .get("/healthz", healthz)
        .post("/api/v1/login", signin::login)
        .post("/api/v1/auth/password", signin::password)
        .get("/api/v1/auth/providers", signin::providers)
}

/// The whole HTTP surface, without a socket (tests drive it with `oneshot`).
pub fn router(state: AppState) -> Router {
    let protected =
        protected_routes().router.fallback(no_route).layer(from_fn_with_state(state.clone(), signin::require));
    let limiter = crate::ratelimit::RateLimiter::new(state.manager.config().rate_limit());
    protected
        .merge(public_routes().router)
        .merge(crate::ide::routes())
        .merge(oidc::routes())
        // Outside auth, so guessing tokens at /api/v1/login or with bearers is limited too.
        .layer(from_fn_with_state(limiter, crate::ratelimit::limit))
        .layer(from_fn_with_state(state.clone(), count_responses))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

/// Counts responses by status class; gives axum's bare 405 the JSON error shape.
async fn count_responses(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let resp = next.run(req).await;
    state.metrics.http_response(resp.status().as_u16());
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED && !resp.headers().contains_key(CONTENT_TYPE) {
        let allow = resp.headers().get(axum::http::header::ALLOW).cloned();
        let mut r = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("{method} is not allowed here"))
            .into_response();
        if let Some(a) = allow {
            r.headers_mut().insert(axum::http::header::ALLOW, a);
        }
        return r;
    }
    resp
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn openapi() -> Response {
    ([(CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Install-wide figures: admins (and the server token a scraper uses) only.
async fn metrics(State(state): State<AppState>, caller: crate::accounts::Caller) -> Result<Response, ApiError> {
    signin::admin(&caller)?;
    let text = state.manager.metrics_text().await?;
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn images(State(state): State<AppState>) -> Json<Vec<mayfly_proto::api::ImageInfo>> {
    Json(state.manager.images())
}

/// Warm pool and template status per image.
async fn pool(State(state): State<AppState>) -> Json<Vec<crate::manager::PoolStatus>> {
    Json(state.manager.pool_status())
}

/// A JSON body, read up to `max_body_bytes` (413 beyond), parsed with the DTO's own rules
/// (unknown fields are refused). An empty body reads as `{}`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.manager.config().max_body_bytes;
        let body = http_body_util::Limited::new(req.into_body(), limit);
        let bytes = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(ApiError::payload_too_large(limit as u64)),
            Err(e) => return Err(ApiError::bad_request(format!("cannot read the request body: {e}"))),
        };
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        serde_json::from_slice(text).map(ApiJson).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// Path parameters; a bad one is a 400 in the JSON shape.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        <Path<T> as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| ApiPath(t))
            .map_err(|e: PathRejection| ApiError::bad_request(e.body_text()))
    }
}

/// Query parameters; a bad one is a 400 in the JSON shape.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        <Query<T> as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| ApiQuery(t))
            .map_err(|e: QueryRejection| ApiError::bad_request(e.body_text()))
    }
}

/// A WebSocket upgrade; as an `Option`, absent when the request does not ask for one.
pub struct ApiWs(pub WebSocketUpgrade);

impl<S: Send + Sync> FromRequestParts<S> for ApiWs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        <WebSocketUpgrade as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
            .map(ApiWs)
            .map_err(|e| ApiError::bad_request(format!("expected a WebSocket upgrade: {}", e.body_text())))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for ApiWs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, ApiError> {
        let wants = parts.headers.get(UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        if !wants {
            return Ok(None);
        }
        <ApiWs as FromRequestParts<S>>::from_request_parts(parts, state).await.map(Some)
    }
}

/// `?path=` of the files API: an absolute guest path.
pub fn guest_path(raw: Option<&str>) -> Result<String, ApiError> {
    let Some(p) = raw else { return Err(ApiError::bad_request("missing query parameter `path`")) };
    if !p.starts_with('/') {
        return Err(ApiError::bad_request(format!("path must be absolute, got {p:?}")));
    }
    if p.contains('\0') {
        return Err(ApiError::bad_request("path must not contain NUL"));
    }
    Ok(p.to_string())
}
