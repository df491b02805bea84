//! Signing in and out, and the middleware that makes every protected request a [`Caller`].
//!
//! * `POST /api/v1/login {"token"}` — the server token or an API token → a sign-in cookie.
//! * `POST /api/v1/auth/password {"email","password"}` — a password user → a sign-in cookie.
//! * `POST /api/v1/logout` — ends the sign-in.
//! * `GET /api/v1/auth/providers` — what the sign-in page offers.
//!
//! Every sign-in gets a new cookie (`mayfly_session`: HttpOnly, SameSite=Lax, `Secure` under
//! https, host-only so preview hosts never receive it); a cookie the browser already had is
//! ended at the same time.

use super::{ApiJson, AppState};
use crate::accounts::{Caller, Principal};
use crate::auth::{cookies, cross_origin, names_own_origin, COOKIE_NAME, SESSION_COOKIE};
use crate::error::ApiError;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::header::SET_COOKIE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mayfly_proto::accounts::{AuthProviders, PasswordLogin};
use mayfly_proto::api::Login;
use std::net::SocketAddr;
use std::time::Instant;

/// The client's address, where the request came over a socket.
pub fn client_ip(req_extensions: &axum::http::Extensions) -> Option<String> {
    req_extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string())
}

/// Middleware: everything behind it needs a credential; a cookie only counts from this origin.
pub async fn require(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let accounts = state.manager.accounts();
    let headers = req.headers();
    let who = match state.auth.bearer_principal(accounts, headers).await {
        Ok(Some(p)) => p,
        Err(()) => return ApiError::unauthorized().into_response(),
        Ok(None) => {
            let Some(p) = state.auth.cookie_principal(accounts, headers).await else {
                return ApiError::unauthorized().into_response();
            };
            if cross_origin(headers) {
                return ApiError::new(StatusCode::FORBIDDEN, "forbidden", "cross-origin request refused (use a bearer token)")
                    .into_response();
            }
            let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
            if !safe && !names_own_origin(headers) {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "a request signed in by cookie that changes state must carry its Origin (use a bearer token)",
                )
                .into_response();
            }
            p
        }
    };
    let ip = client_ip(req.extensions());
    req.extensions_mut().insert(Caller { who, ip });
    next.run(req).await
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(ApiError::unauthorized)
    }
}

/// An admin caller, else 403.
pub fn admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.who.is_admin() {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "only an admin may do this"))
    }
}

/// The client's address as an extractor.
pub struct ClientIp(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(&parts.extensions)))
    }
}

/// `POST /api/v1/login {"token"}` → 204 with a sign-in cookie, or 401.
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Login>,
) -> Result<Response, ApiError> {
    let accounts = state.manager.accounts();
    let key = format!("ip:{}", ip.as_deref().unwrap_or("?"));
    if let Err(wait) = accounts.token_limiter().check(&[&key], Instant::now()) {
        return Err(crate::accounts::AccountError::RateLimited(wait).into());
    }
    let who = if state.auth.check(&body.token) {
        Some(Principal::ServerToken)
    } else {
        accounts.principal_for_token(&body.token).await?
    };
    let Some(who) = who else {
        accounts.token_limiter().failed(&[&key], Instant::now());
        let caller = Caller { who: Principal::System("sign-in"), ip };
        accounts.audit(&caller, "sign_in_failed", None, serde_json::json!({"method": "token"})).await;
        return Err(ApiError::unauthorized());
    };
    let caller = Caller { who, ip };
    accounts.audit(&caller, "sign_in", None, serde_json::json!({"method": "token"})).await;
    signed_in(&state, &headers, caller.who.user_id()).await
}

/// `POST /api/v1/auth/password` → 204 with a sign-in cookie; 401 for a wrong email or password
/// (the same answer for both), 429 after repeated failures.
pub async fn password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PasswordLogin>,
) -> Result<Response, ApiError> {
    let user = state.manager.accounts().sign_in_password(&body.email, body.password, ip.as_deref()).await?;
    signed_in(&state, &headers, Some(&user.id)).await
}

/// A new sign-in for `user` (`None`: the server token), replacing any the browser had.
pub async fn signed_in(state: &AppState, headers: &HeaderMap, user: Option<&str>) -> Result<Response, ApiError> {
    let accounts = state.manager.accounts();
    for old in cookies(headers, SESSION_COOKIE) {
        let _ = accounts.end_sign_in(old).await;
    }
    let value = accounts.start_sign_in(user).await?;
    let max_age = accounts.settings().sign_in_ttl.as_secs();
    let cookie = format!("{SESSION_COOKIE}={value}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age}{}", secure(state));
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(SET_COOKIE, HeaderValue::from_str(&cookie).map_err(|_| ApiError::internal())?);
    // The wave 1 cookie, if any, goes: it would outlive a sign-out.
    let legacy = format!("{COOKIE_NAME}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0{}", secure(state));
    r.headers_mut().append(SET_COOKIE, HeaderValue::from_str(&legacy).map_err(|_| ApiError::internal())?);
    Ok(r)
}

fn secure(state: &AppState) -> &'static str {
    if state.manager.public_url().starts_with("https://") {
        "; Secure"
    } else {
        ""
    }
}

/// `POST /api/v1/logout` → 204; the sign-in ends and the cookies are cleared.
pub async fn logout(State(state): State<AppState>, caller: Caller, headers: HeaderMap) -> Result<Response, ApiError> {
    let accounts = state.manager.accounts();
    for v in cookies(&headers, SESSION_COOKIE) {
        accounts.end_sign_in(v).await?;
    }
    accounts.audit(&caller, "sign_out", None, serde_json::Value::Null).await;
    let mut r = StatusCode::NO_CONTENT.into_response();
    for name in [SESSION_COOKIE, COOKIE_NAME] {
        let c = format!("{name}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0{}", secure(&state));
        r.headers_mut().append(SET_COOKIE, HeaderValue::from_str(&c).map_err(|_| ApiError::internal())?);
    }
    Ok(r)
}

/// `GET /api/v1/auth/providers`.
pub async fn providers(State(state): State<AppState>) -> Json<AuthProviders> {
    Json(AuthProviders { password: true, oidc: state.oidc_name() })
}
