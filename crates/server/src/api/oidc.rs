//! The OpenID Connect door: sign-in through the configured provider (authorization code flow
//! with PKCE and a nonce; the protocol itself is [`crate::users::oidc`]).
//!
//! * `GET /auth/oidc/start?next=<path>` → 302 to the provider. The pending login (state, nonce,
//!   PKCE verifier, `next`) stays in this process for 10 minutes; the browser gets only the
//!   state, in the short-lived cookie `mayfly_oidc`, which binds the callback to it.
//! * `GET /auth/oidc/callback?code&state` → the user (made at first sign-in), a new
//!   `mayfly_session`, 302 to `next`.
//!
//! Every failure (provider down, refused, a bad token, a domain or group not allowed) comes back
//! to the sign-in page as `/login?error=<message>`; password sign-in keeps working meanwhile.

use super::signin::{client_ip, signed_in};
use super::AppState;
use crate::accounts::users::ExternalIdentity;
use crate::auth::cookies;
use crate::users::oidc::{Oidc, PendingLogin};
use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, LOCATION, SET_COOKIE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const STATE_COOKIE: &str = "mayfly_oidc";
/// How long a started sign-in may take at the provider.
const PENDING_TTL: Duration = Duration::from_secs(600);
/// Started sign-ins kept at most (oldest dropped beyond): an unauthenticated route must not grow memory.
const MAX_PENDING: usize = 10_000;

pub struct OidcDoor {
    oidc: Oidc,
    pending: Mutex<HashMap<String, (PendingLogin, Instant)>>,
}

impl OidcDoor {
    pub fn new(oidc: Oidc) -> Self {
        Self { oidc, pending: Mutex::new(HashMap::new()) }
    }

    pub fn display_name(&self) -> &str {
        &self.oidc.settings().display_name
    }

    fn keep(&self, p: PendingLogin) {
        let mut map = self.pending.lock().expect("pending lock");
        let now = Instant::now();
        map.retain(|_, (_, at)| now.duration_since(*at) < PENDING_TTL);
        if map.len() >= MAX_PENDING {
            if let Some(oldest) = map.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        map.insert(p.state.clone(), (p, now));
    }

    fn take(&self, state: &str) -> Option<PendingLogin> {
        let (p, at) = self.pending.lock().expect("pending lock").remove(state)?;
        (at.elapsed() < PENDING_TTL).then_some(p)
    }
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/auth/oidc/start", get(start)).route("/auth/oidc/callback", get(callback))
}

fn query(req: &Request) -> HashMap<String, String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect()
}

/// Back to the sign-in page with the reason, keeping where the user was going.
fn to_login(error: &str, next: &str) -> Response {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("error", error);
    if next != "/" {
        q.append_pair("next", next);
    }
    found(&format!("/login?{}", q.finish()))
}

fn found(location: &str) -> Response {
    let mut r = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(LOCATION, v);
    }
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn start(State(st): State<AppState>, req: Request) -> Response {
    let q = query(&req);
    let next = crate::ide::safe_next(q.get("next").map(String::as_str)).to_string();
    let Some(door) = st.oidc.clone() else { return to_login("OpenID Connect is not configured on this server", &next) };
    match door.oidc.start(&next).await {
        Ok((url, pending)) => {
            let cookie = format!(
                "{STATE_COOKIE}={}; HttpOnly; SameSite=Lax; Path=/auth/oidc; Max-Age={}",
                pending.state,
                PENDING_TTL.as_secs()
            );
            door.keep(pending);
            let mut r = found(url.as_str());
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(SET_COOKIE, v);
            }
            r
        }
        Err(e) => {
            tracing::warn!("OpenID Connect sign-in cannot start: {}", mayfly_proto::error_chain(&e));
            to_login(&e.to_string(), &next)
        }
    }
}

async fn callback(State(st): State<AppState>, req: Request) -> Response {
    let Some(door) = st.oidc.clone() else { return to_login("OpenID Connect is not configured on this server", "/") };
    let q = query(&req);
    let ip = client_ip(req.extensions());
    // Where the user was going, if this callback belongs to a sign-in this browser started.
    let pending = match q.get("state") {
        Some(state) if cookies(req.headers(), STATE_COOKIE).any(|c| c == state) => door.take(state),
        _ => None,
    };
    let next = pending.as_ref().map_or("/", |p| p.next.as_str()).to_string();
    if let Some(err) = q.get("error") {
        let why = q.get("error_description").map(|d| format!("{err}: {d}")).unwrap_or_else(|| err.clone());
        return to_login(&format!("the identity provider refused the sign-in ({why})"), &next);
    }
    let (Some(code), Some(state)) = (q.get("code"), q.get("state")) else {
        return to_login("the identity provider's answer has no code or state", &next);
    };
    // The callback must come to the browser that started the sign-in, within its time.
    let Some(pending) = pending else {
        return to_login("this sign-in was started in another browser, expired or was already used; try again", "/");
    };
    let identity = match door.oidc.finish(&pending, code, state).await {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!("OpenID Connect sign-in failed: {}", mayfly_proto::error_chain(&e));
            let caller = crate::accounts::Caller { who: crate::accounts::Principal::System("oidc"), ip };
            let detail = serde_json::json!({"method": "oidc", "reason": e.to_string()});
            st.manager.accounts().audit(&caller, "sign_in_failed", None, detail).await;
            return to_login(&e.to_string(), &next);
        }
    };
    // An unverified email is not an identity: it could name someone else's address.
    let ext = ExternalIdentity {
        issuer: identity.issuer,
        subject: identity.subject,
        email: identity.email.filter(|_| identity.email_verified),
        name: identity.name,
        groups: identity.groups,
    };
    let user = match st.manager.accounts().sign_in_external(ext, ip.as_deref()).await {
        Ok(u) => u,
        Err(e) => return to_login(&e.to_string(), &next),
    };
    let mut r = match signed_in(&st, req.headers(), Some(&user.id)).await {
        Ok(r) => r,
        Err(e) => return to_login(&e.message, &next),
    };
    *r.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(&pending.next) {
        r.headers_mut().insert(LOCATION, v);
    }
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let clear = format!("{STATE_COOKIE}=; HttpOnly; SameSite=Lax; Path=/auth/oidc; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&clear) {
        r.headers_mut().append(SET_COOKIE, v);
    }
    r
}
