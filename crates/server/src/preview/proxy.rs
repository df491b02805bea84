//! Forwarding one request through a tunnel to the user's server inside the VM.
//!
//! One tunnel (one guest TCP connection) per downstream request, spoken to with hyper's HTTP/1.1
//! client. Bodies stream both ways (hyper re-frames them: a chunked request stays chunked, a
//! sized one keeps its length; framing is never copied byte for byte, so nothing can be
//! smuggled past it). Hop-by-hop headers are dropped, `X-Forwarded-*` set, Mayfly's own
//! credentials removed. A WebSocket (any `Upgrade`) is forwarded as a request; on `101` both
//! sides are upgraded and bytes are copied both ways until either closes.

use super::access;
use super::host::Target;
use super::tunnel;
use crate::auth::{Auth, COOKIE_NAME, SESSION_COOKIE};
use crate::manager::{SessionError, SessionManager};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri, Version};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("the server on port {port} closed the connection without answering")]
    Upstream { port: u16, source: hyper::Error },
}

/// How the request reached us, for the forwarded headers.
pub struct Forward<'a> {
    pub target: &'a Target,
    /// Origin-form path and query to ask the guest server for.
    pub path_and_query: String,
    /// `http` or `https`: the scheme of the public URL.
    pub proto: &'static str,
    /// `/preview/<session>/<port>` for the path fallback.
    pub prefix: Option<String>,
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and ones a proxy must not pass on.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// The upgrade protocol a request asks for (`Connection: upgrade` + `Upgrade`).
pub(crate) fn upgrade_of(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned()).flatten()
}

/// Drops hop-by-hop headers, including those named in `Connection`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// The request headers the guest server gets.
fn upstream_headers(headers: &mut HeaderMap, auth: &Auth, client: Option<SocketAddr>, fwd: &Forward<'_>) {
    let upgrade = upgrade_of(headers);
    let host = headers.get(header::HOST).cloned();
    strip_hop_by_hop(headers);
    headers.remove(header::EXPECT); // hyper answers 100-continue downstream by itself
    headers.remove(super::CONFLICT_MARK);
    if let Some(u) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u);
    }
    // Mayfly's credentials never reach the VM.
    access::strip_cookies(headers, &[access::COOKIE, COOKIE_NAME, SESSION_COOKIE]);
    let ours = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, t)| {
            scheme.eq_ignore_ascii_case("bearer")
                && (auth.check(t.trim()) || crate::accounts::secret::token_id(t.trim()).is_some())
        });
    if ours {
        headers.remove(header::AUTHORIZATION);
    }
    if let Some(ip) = client.map(|c| c.ip().to_string()) {
        let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip,
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            headers.insert("x-forwarded-for", v);
        }
    }
    if let Some(h) = host {
        headers.insert("x-forwarded-host", h);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static(fwd.proto));
    match fwd.prefix.as_deref().and_then(|p| HeaderValue::from_str(p).ok()) {
        Some(p) => headers.insert("x-forwarded-prefix", p),
        None => headers.remove("x-forwarded-prefix"),
    };
}

/// The response headers the client gets.
fn downstream_headers(headers: &mut HeaderMap, fwd: &Forward<'_>, switching: bool) {
    if !switching {
        strip_hop_by_hop(headers);
    }
    // The app may not set or clear Mayfly's cookies (they are not its to touch).
    let cookies: Vec<HeaderValue> = headers.get_all(header::SET_COOKIE).iter().cloned().collect();
    headers.remove(header::SET_COOKIE);
    for c in cookies {
        let name = c.to_str().ok().and_then(|s| s.split_once('=')).map(|(n, _)| n.trim().to_string());
        if !matches!(name.as_deref(), Some(n) if n == access::COOKIE || n == COOKIE_NAME || n == SESSION_COOKIE) {
            headers.append(header::SET_COOKIE, c);
        }
    }
    // Root-relative redirects stay under the fallback prefix.
    if let (Some(prefix), Some(loc)) = (&fwd.prefix, headers.get(header::LOCATION).and_then(|v| v.to_str().ok())) {
        if loc.starts_with('/') && !loc.starts_with("//") {
            if let Ok(v) = HeaderValue::from_str(&format!("{prefix}{loc}")) {
                headers.insert(header::LOCATION, v);
            }
        }
    }
}

/// Forwards `req` to `fwd.target` inside its VM and returns the guest server's response.
pub async fn forward(
    manager: &SessionManager,
    sref: &crate::access::SessionRef,
    auth: &Auth,
    mut req: Request,
    fwd: Forward<'_>,
) -> Result<Response, ProxyError> {
    let target = fwd.target;
    let (stream, activity) = manager.open_tunnel(sref, target.port).await?;
    let io = tunnel::pipe(stream, activity);
    let client = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let wants_upgrade = upgrade_of(req.headers()).is_some();
    let downstream_upgrade = wants_upgrade.then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    upstream_headers(&mut parts.headers, auth, client, &fwd);
    parts.uri = fwd.path_and_query.parse::<Uri>().unwrap_or_else(|_| Uri::from_static("/"));
    parts.version = Version::HTTP_11;
    let upstream_req = Request::from_parts(parts, body);

    let upstream = |source| ProxyError::Upstream { port: target.port, source };
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(io)).await.map_err(upstream)?;
    let session = target.session.clone();
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(session = %session, "preview upstream connection: {e}");
        }
    });
    let mut resp = sender.send_request(upstream_req).await.map_err(upstream)?;

    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        match downstream_upgrade {
            Some(down) => {
                let up = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    let (down, up) = match tokio::try_join!(down, up) {
                        Ok(pair) => pair,
                        Err(e) => return tracing::debug!("preview upgrade failed: {e}"),
                    };
                    let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(down), &mut TokioIo::new(up)).await;
                });
            }
            None => return Ok(super::pages::bad_gateway(target.port, "the server switched protocols unasked")),
        }
    }
    let (mut parts, body) = resp.into_parts();
    downstream_headers(&mut parts.headers, &fwd, switching);
    Ok(Response::from_parts(parts, Body::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn request_headers() {
        let auth = Auth::new("servertoken");
        let t = Target { session: "sa".into(), port: 8000 };
        let fwd = Forward { target: &t, path_and_query: "/".into(), proto: "https", prefix: None };
        let mut h = map(&[
            ("host", "8000-sa.localhost:7070"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "hop"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("authorization", "Bearer servertoken"),
            ("cookie", "a=1; mayfly_preview=v1.c; mayfly_token=servertoken"),
            ("x-forwarded-for", "10.0.0.1"),
            ("expect", "100-continue"),
        ]);
        upstream_headers(&mut h, &auth, Some("192.0.2.7:5555".parse().unwrap()), &fwd);
        for gone in ["connection", "x-secret", "keep-alive", "te", "authorization", "expect"] {
            assert!(!h.contains_key(gone), "{gone} kept: {h:?}");
        }
        assert_eq!(h["cookie"], "a=1");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-forwarded-host"], "8000-sa.localhost:7070");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["host"], "8000-sa.localhost:7070", "the Host header is kept");

        // The app's own credentials and a WebSocket upgrade pass.
        let mut h = map(&[("authorization", "Bearer apptoken"), ("connection", "Upgrade"), ("upgrade", "websocket")]);
        upstream_headers(&mut h, &auth, None, &fwd);
        assert_eq!(h["authorization"], "Bearer apptoken");
        assert_eq!((h["connection"].to_str().unwrap(), h["upgrade"].to_str().unwrap()), ("upgrade", "websocket"));
    }

    #[test]
    fn response_headers() {
        let t = Target { session: "sa".into(), port: 8000 };
        let fwd = Forward { target: &t, path_and_query: "/".into(), proto: "http", prefix: Some("/preview/sa/8000".into()) };
        let mut h = map(&[
            ("location", "/login?x=1"),
            ("set-cookie", "app=1; Path=/"),
            ("set-cookie", "mayfly_token=evil; Path=/"),
            ("set-cookie", "mayfly_preview=evil"),
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
        ]);
        downstream_headers(&mut h, &fwd, false);
        assert_eq!(h["location"], "/preview/sa/8000/login?x=1");
        let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["app=1; Path=/"]);
        assert!(!h.contains_key("connection") && !h.contains_key("transfer-encoding"));
        let mut h = map(&[("location", "//evil.example/")]);
        downstream_headers(&mut h, &fwd, false);
        assert_eq!(h["location"], "//evil.example/", "only root-relative paths are prefixed");
    }
}
