//! Preview URLs: every port a session listens on, reachable from the browser.
//!
//! `http://<port>-<session>.<preview_domain>[:<server port>]/…` (grammar in [`host`]) and the
//! fallback `/preview/<session>/<port>/…` on the main origin are routed here, before the API, by
//! [`Preview::layer`]; each request goes through a tunnel stream to `127.0.0.1:<port>` inside
//! the session's VM ([`proxy`], [`tunnel`]) — the guest needs no network.
//!
//! Access (decided by [`crate::access`]; tokens in [`access`]): public ports are open; team
//! ports need any signed-in user; private ones (the default) the owner or an admin. A program
//! shows a bearer token (the server token or an API token); a browser the preview cookie, which
//! the exchange below mints with the owner's scope or a team scope — or, on the path fallback,
//! the main origin's sign-in.
//! A browser without the cookie goes through the exchange:
//!
//! ```text
//! preview host  GET /path            → 302 <main>/preview/_auth?session=S&port=P&next=/path
//! main origin   GET /preview/_auth   → (logged in) 302 <preview>/__mayfly/auth?token=T&next=/path
//!                                      (not logged in) 302 /login?next=<this exchange URL>
//! preview host  GET /__mayfly/auth   → Set-Cookie mayfly_preview (host-only), 302 /path
//! ```
//!
//! Not here: detecting ports and their visibility (`manager::ports`), the IDE's ports panel.

pub mod access;
pub mod host;
#[cfg(test)]
mod host_props;
mod pages;
pub mod proxy;
pub(crate) mod tunnel;

use crate::access::{PreviewDenied, SessionRef};
use crate::accounts::Caller;
use crate::auth::Auth;
use crate::manager::{SessionError, SessionManager};
use access::{Kind, Signer};
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use host::Target;
use mayfly_proto::msg::ErrorKind;
use std::path::Path;
use std::sync::Arc;

/// Exchange endpoint on the main origin.
pub const MAIN_AUTH_PATH: &str = "/preview/_auth";
/// Cookie-setting endpoint on every preview host (shadows the app's own path of that name).
pub const PREVIEW_AUTH_PATH: &str = "/__mayfly/auth";
/// Set by the connection guard on a request with both `Transfer-Encoding` and `Content-Length`.
pub(crate) const CONFLICT_MARK: &str = crate::listen::guard::CONFLICT_HEADER;

/// Everything the preview routes need.
pub struct Preview {
    manager: Arc<SessionManager>,
    auth: Arc<Auth>,
    signer: Signer,
    domain: String,
    /// The control plane's own port, refused as a preview port.
    control_port: u16,
}

impl Preview {
    /// Loads (or creates) the signing key in `data_dir`; a cluster's nodes derive theirs from
    /// `cluster_secret`, so a cookie one node minted opens the preview through any other.
    pub fn new(manager: Arc<SessionManager>, auth: Arc<Auth>, data_dir: &Path, control_port: u16) -> Result<Self, access::KeyError> {
        let signer = match &manager.config().cluster_secret {
            Some(secret) => Signer::new(crate::cluster::keys::derive(secret.expose().as_bytes(), crate::cluster::keys::Purpose::PreviewSigning)),
            None => Signer::load_or_generate(&data_dir.join("preview.key"))?,
        };
        let domain = manager.config().preview_domain.clone();
        Ok(Self { manager, auth, signer, domain, control_port })
    }

    /// `app` with previews dispatched before it: requests for a preview host or path never reach it.
    pub fn layer(self: Arc<Self>, app: Router) -> Router {
        app.layer(from_fn_with_state(self, dispatch))
    }

    fn main_origin(&self) -> &str {
        self.manager.public_url()
    }

    fn proto(&self) -> &'static str {
        if self.main_origin().starts_with("https://") {
            "https"
        } else {
            "http"
        }
    }
}

async fn dispatch(State(p): State<Arc<Preview>>, req: Request, next: Next) -> Response {
    if req.headers().contains_key(CONFLICT_MARK) {
        return pages::ambiguous_framing();
    }
    let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).or_else(|| req.uri().host()).unwrap_or("");
    match host::parse_host(host, &p.domain, p.control_port) {
        Ok(Some(target)) => return serve_host(&p, target, req).await,
        Err(e) => return pages::bad_address(&e.to_string()),
        Ok(None) => {}
    }
    let path = req.uri().path();
    if path == MAIN_AUTH_PATH {
        return authorize(&p, req).await;
    }
    match host::parse_path(path, p.control_port) {
        None => next.run(req).await,
        Some(Err(e)) => pages::bad_address(&e.to_string()),
        Some(Ok((target, rest))) => {
            if rest.is_empty() {
                // `/preview/s/8000` → `/preview/s/8000/`, so relative links resolve under it.
                let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
                return redirect(StatusCode::PERMANENT_REDIRECT, &format!("{path}/{query}"));
            }
            let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
            let forwarded = format!("{rest}{query}");
            serve_path(&p, target, forwarded, req).await
        }
    }
}

/// A request on a preview host.
async fn serve_host(p: &Preview, target: Target, req: Request) -> Response {
    if req.uri().path() == PREVIEW_AUTH_PATH {
        return set_cookie(p, &target, &req);
    }
    let pass = access::cookie_pass(&p.signer, req.headers(), &target);
    // Programs pass a bearer token (the server token or an API token); browsers use the cookie.
    let caller = match p.auth.bearer_principal(p.manager.accounts(), req.headers()).await {
        Ok(Some(who)) => Some(Caller { who, ip: crate::api::signin::client_ip(req.extensions()) }),
        _ => None,
    };
    let sref = match p.manager.open_preview(caller.as_ref(), pass, &target.session, target.port).await {
        Ok(s) => s,
        Err(PreviewDenied::Gone) => return pages::session_gone(&target.session),
        Err(PreviewDenied::SignIn) => {
            let browser = matches!(*req.method(), Method::GET | Method::HEAD)
                && !req.headers().contains_key(header::AUTHORIZATION)
                && !req.headers().contains_key(header::UPGRADE);
            if !browser {
                return pages::unauthorized(p.main_origin());
            }
            let next = req.uri().path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("session", &target.session)
                .append_pair("port", &target.port.to_string())
                .append_pair("next", next)
                .finish();
            return redirect(StatusCode::FOUND, &format!("{}{MAIN_AUTH_PATH}?{query}", p.main_origin()));
        }
    };
    let path_and_query = req.uri().path_and_query().map(|pq| pq.as_str().to_string()).unwrap_or_else(|| "/".into());
    forward(p, &sref, &target, path_and_query, None, req).await
}

/// A request on the main origin's fallback path: the main origin's sign-in opens private ports.
async fn serve_path(p: &Preview, target: Target, forwarded: String, req: Request) -> Response {
    let ip = crate::api::signin::client_ip(req.extensions());
    let caller = main_caller(p, req.headers(), ip).await;
    let sref = match p.manager.open_preview(caller.as_ref(), crate::access::PreviewPass::None, &target.session, target.port).await {
        Ok(s) => s,
        Err(PreviewDenied::Gone) => return pages::session_gone(&target.session),
        Err(PreviewDenied::SignIn) => return pages::unauthorized(p.main_origin()),
    };
    let prefix = format!("{}{}/{}", host::PATH_PREFIX, target.session, target.port);
    forward(p, &sref, &target, forwarded, Some(prefix), req).await
}

/// The caller signed in on the main origin (bearer or cookie; a cookie only from this origin).
async fn main_caller(p: &Preview, headers: &axum::http::HeaderMap, ip: Option<String>) -> Option<Caller> {
    let who = p.auth.principal(p.manager.accounts(), headers).await?;
    let by_cookie = !headers.contains_key(header::AUTHORIZATION);
    if by_cookie && crate::auth::cross_origin(headers) {
        return None;
    }
    Some(Caller { who, ip })
}

async fn forward(p: &Preview, sref: &SessionRef, target: &Target, path_and_query: String, prefix: Option<String>, req: Request) -> Response {
    let fwd = proxy::Forward { target, path_and_query, proto: p.proto(), prefix };
    match proxy::forward(&p.manager, sref, &p.auth, req, fwd).await {
        Ok(r) => r,
        Err(proxy::ProxyError::Session(e)) => match e {
            SessionError::Guest { kind: ErrorKind::ConnectionRefused, .. } => pages::not_listening(target.port),
            SessionError::NotFound(_) => pages::session_gone(&target.session),
            SessionError::NotReady { state: mayfly_proto::api::SessionState::Creating, .. } => pages::starting(&target.session),
            SessionError::NotReady { .. } | SessionError::StateChanged { .. } => pages::session_gone(&target.session),
            other => {
                tracing::warn!(session = %target.session, port = target.port, "preview failed: {other}");
                pages::bad_gateway(target.port, "the session's VM did not answer")
            }
        },
        Err(e @ proxy::ProxyError::Upstream { .. }) => {
            tracing::debug!(session = %target.session, port = target.port, "preview upstream: {e}");
            pages::bad_gateway(target.port, "it closed the connection without answering")
        }
    }
}

/// A same-site path to return to after the exchange (never another origin).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') && !n.contains(['\r', '\n']) => n.to_string(),
        _ => "/".to_string(),
    }
}

fn query_pairs<B>(req: &axum::http::Request<B>) -> Vec<(String, String)> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect()
}

fn query_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Main origin: a signed-in browser gets a short-lived exchange token for one preview host:
/// of the owner's scope for the owner or an admin, of team scope for anyone else on a team or
/// public port; someone else's private port is "gone", as a missing one is.
async fn authorize(p: &Preview, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let req = &Request::from_parts(parts, ());
    let ip = crate::api::signin::client_ip(req.extensions());
    let Some(caller) = main_caller(p, req.headers(), ip).await else {
        // The IDE's login page comes back here (`next`) once signed in.
        let back = req.uri().path_and_query().map(|pq| pq.as_str()).unwrap_or(MAIN_AUTH_PATH);
        let query = form_urlencoded::Serializer::new(String::new()).append_pair("next", back).finish();
        return redirect(StatusCode::FOUND, &format!("/login?{query}"));
    };
    let pairs = query_pairs(req);
    let session = query_get(&pairs, "session").unwrap_or("");
    let port = query_get(&pairs, "port").unwrap_or("");
    let target = match host::parse_path(&format!("{}{session}/{port}/", host::PATH_PREFIX), p.control_port) {
        Some(Ok((t, _))) => t,
        Some(Err(e)) => return pages::bad_address(&e.to_string()),
        None => return pages::bad_address("missing session or port"),
    };
    let Ok(pass) = p.manager.preview_pass(&caller, &target.session, target.port).await else {
        return pages::session_gone(&target.session);
    };
    let (exchange, _) = Kind::for_pass(pass);
    let token = p.signer.sign(exchange, &target, access::unix_now() + access::EXCHANGE_TTL.as_secs());
    let next = safe_next(query_get(&pairs, "next"));
    let query = form_urlencoded::Serializer::new(String::new()).append_pair("token", &token).append_pair("next", &next).finish();
    let base = p.manager.preview_url_of(&target.session, target.port);
    redirect(StatusCode::FOUND, &format!("{}{}?{query}", base.trim_end_matches('/'), PREVIEW_AUTH_PATH))
}

/// Preview host: an exchange token becomes this host's own cookie.
fn set_cookie(p: &Preview, target: &Target, req: &Request) -> Response {
    let pairs = query_pairs(req);
    let token = query_get(&pairs, "token").unwrap_or("");
    let now = access::unix_now();
    let cookie_kind = match p.signer.verify(token, Kind::Exchange, target, now) {
        Ok(()) => Kind::Cookie,
        Err(owner_err) => match p.signer.verify(token, Kind::TeamExchange, target, now) {
            Ok(()) => Kind::TeamCookie,
            Err(_) => {
                tracing::debug!(session = %target.session, port = target.port, "preview exchange refused: {owner_err}");
                return pages::link_expired();
            }
        },
    };
    let ttl = cookie_kind.cookie_ttl();
    let cookie = p.signer.sign(cookie_kind, target, now + ttl.as_secs());
    let mut r = redirect(StatusCode::FOUND, &safe_next(query_get(&pairs, "next")));
    if let Ok(v) = HeaderValue::from_str(&access::set_cookie(&cookie, p.proto() == "https", ttl)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn redirect(status: StatusCode, location: &str) -> Response {
    let mut r = status.into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Exchange tokens travel in URLs: never leak them to other sites.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn next_stays_on_the_same_origin() {
        let cases = [
            (Some("/a?b=1"), "/a?b=1"),
            (Some("//evil.example/"), "/"),
            (Some("https://evil.example/"), "/"),
            (Some("/\\evil.example"), "/"),
            (Some("/a\r\nSet-Cookie: x"), "/"),
            (None, "/"),
        ];
        for (next, want) in cases {
            assert_eq!(super::safe_next(next), want, "{next:?}");
        }
    }
}
