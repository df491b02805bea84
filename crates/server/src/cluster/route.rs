//! Any node serves any session: this middleware, in front of the previews and the API, sends a
//! request for a session another node runs to that node ([`super::forward`], signed with the
//! cluster secret), and places new sessions ([`super::placement`]). Everything else, and every
//! request another node forwarded here, is served by this node.
//!
//! Which requests name a session: `/api/v1/sessions/{id}[/…]` (REST, terminals, events, files,
//! ports, agent, fork — so forks stay on their source's node), preview hosts
//! `<port>-<session>.<domain>`, the path fallback `/preview/<session>/<port>/…` and the main
//! origin's preview sign-in `/preview/_auth?session=…`. A session whose node is not live is
//! served here from the store (its state shows `lost`; a delete ends it).

use super::forward::{Forwarder, NodeTarget};
use super::node::Cluster;
use super::node_auth::Forwarded;
use crate::error::ApiError;
use crate::preview::host;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

/// How long a placement holds its slot if the owner never answers.
const PLACEMENT_HOLD: Duration = Duration::from_secs(120);
/// Nodes tried for one create before giving up.
const CREATE_ATTEMPTS: usize = 3;

pub struct Router {
    pub cluster: Arc<Cluster>,
    pub forwarder: Forwarder,
    pub preview_domain: String,
    pub control_port: u16,
    pub max_body_bytes: usize,
    pub default_image: String,
}

/// What a request is about, for routing.
#[derive(Debug, PartialEq, Eq)]
enum Subject {
    Session(String),
    Create,
    Other,
}

fn subject(req: &Request, domain: &str, control_port: u16) -> Subject {
    let host = req.headers().get(axum::http::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    if let Ok(Some(t)) = host::parse_host(host, domain, control_port) {
        return Subject::Session(t.session);
    }
    let path = req.uri().path();
    if let Some(Ok((t, _))) = host::parse_path(path, control_port) {
        return Subject::Session(t.session);
    }
    if path == crate::preview::MAIN_AUTH_PATH {
        let session = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == "session")
            .map(|(_, v)| v.into_owned());
        return session.map_or(Subject::Other, Subject::Session);
    }
    if path == "/api/v1/sessions" && req.method() == Method::POST {
        return Subject::Create;
    }
    match path.strip_prefix("/api/v1/sessions/") {
        Some(rest) => {
            let id = rest.split('/').next().unwrap_or("");
            if id.is_empty() {
                Subject::Other
            } else {
                Subject::Session(id.to_string())
            }
        }
        None => Subject::Other,
    }
}

pub async fn route(State(r): State<Arc<Router>>, req: Request, next: Next) -> Response {
    if !r.cluster.shared() || req.extensions().get::<Forwarded>().is_some() {
        return next.run(req).await;
    }
    match subject(&req, &r.preview_domain, r.control_port) {
        Subject::Other => next.run(req).await,
        Subject::Session(id) => {
            let Some(owner) = r.cluster.remote_owner(&id).await else { return next.run(req).await };
            let mut peer = r.cluster.peer(&owner).await;
            if !peer.as_ref().is_some_and(|p| p.live) {
                // Not live as last read: it may have come back since.
                r.cluster.refresh().await;
                peer = r.cluster.peer(&owner).await;
            }
            match peer {
                Some(peer) if peer.live => {
                    let ip = client_ip(&req);
                    let resp = r.forwarder.forward(req, &NodeTarget { name: peer.name, base_url: peer.address }, ip).await;
                    if resp.status() == StatusCode::BAD_GATEWAY {
                        r.cluster.refresh().await;
                    }
                    resp
                }
                // Its node is gone: what the store knows is served here.
                _ => next.run(req).await,
            }
        }
        Subject::Create => create(&r, req, next).await,
    }
}

fn client_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

/// Places a new session and sends the create to the chosen node (this one included), trying
/// the next best node when the chosen one turns out to be full.
async fn create(r: &Router, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, r.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => return ApiError::payload_too_large(r.max_body_bytes as u64).into_response(),
    };
    let image = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("image").and_then(|i| i.as_str()).map(str::to_string))
        .unwrap_or_else(|| r.default_image.clone());
    let rebuild = || Request::from_parts(parts.clone(), Body::from(bytes.clone()));
    let ip = client_ip(&Request::from_parts(parts.clone(), Body::empty()));
    let mut refused: Vec<String> = Vec::new();
    let mut tried: Vec<String> = Vec::new();
    for _ in 0..CREATE_ATTEMPTS {
        let placement = match r.cluster.store().place(&image, PLACEMENT_HOLD.as_millis() as i64, &tried).await {
            Ok(Ok(p)) => p,
            Ok(Err(why)) => {
                refused.extend(why);
                break;
            }
            Err(e) => {
                tracing::error!(error = %e, "placement failed");
                return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "placement_failed", "cannot place the session: the database did not answer (see the server log)").into_response();
            }
        };
        if placement.node.name == r.cluster.name() {
            // This node's own admission (max_sessions, memory) has the last word, as for any
            // create; its refusal is the answer (the request cannot be replayed here).
            let resp = next.run(rebuild()).await;
            return finish(r, &placement.token, resp).await;
        }
        let target = NodeTarget { name: placement.node.name.clone(), base_url: placement.node.address.clone() };
        let resp = r.forwarder.forward(rebuild(), &target, ip).await;
        let resp = finish(r, &placement.token, resp).await;
        match full(resp).await {
            Ok(resp) => return resp,
            Err(why) => {
                tracing::info!(node = %placement.node.name, "placed session refused: {why}; trying another node");
                refused.push(format!("{}: {why}", placement.node.name));
                tried.push(placement.node.name);
            }
        }
    }
    let msg = if refused.is_empty() {
        format!("no node can take a new session of image {image:?}")
    } else {
        format!("no node can take a new session of image {image:?} ({})", refused.join("; "))
    };
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_capacity", msg).into_response()
}

/// The slot is not needed once the owner answered: its session row counts now (or it failed).
async fn finish(r: &Router, token: &str, resp: Response) -> Response {
    if let Err(e) = r.cluster.store().release_placement(token).await {
        tracing::debug!(error = %e, "cannot release a placement (it runs out by itself)");
    }
    resp
}

/// `Err(reason)` when the owner refused for capacity (another node may take it); the response
/// otherwise.
async fn full(resp: Response) -> Result<Response, String> {
    if !matches!(resp.status(), StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
        return Ok(resp);
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 64 << 10).await.unwrap_or_default();
    let err: Option<mayfly_proto::api::ErrorBody> = serde_json::from_slice(&bytes).ok();
    match err {
        Some(e) if matches!(e.error.code.as_str(), "too_many_sessions" | "host_memory_low" | "no_capacity") => Err(e.error.message),
        _ => Ok(Response::from_parts(parts, Body::from(bytes))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subj(method: Method, uri: &str, host: &str) -> Subject {
        let req = Request::builder().method(method).uri(uri).header("host", host).body(Body::empty()).unwrap();
        subject(&req, "preview.test", 7070)
    }

    #[test]
    fn requests_name_their_session() {
        let s = |id: &str| Subject::Session(id.into());
        assert_eq!(subj(Method::GET, "/api/v1/sessions/sabc", "n1:7070"), s("sabc"));
        assert_eq!(subj(Method::GET, "/api/v1/sessions/sabc/pty?x=1", "n1:7070"), s("sabc"));
        assert_eq!(subj(Method::POST, "/api/v1/sessions/sabc/fork", "n1:7070"), s("sabc"));
        assert_eq!(subj(Method::GET, "/x", "8000-sabc.preview.test:7070"), s("sabc"));
        assert_eq!(subj(Method::GET, "/preview/sabc/8000/a.js", "n1:7070"), s("sabc"));
        assert_eq!(subj(Method::GET, "/preview/_auth?session=sabc&port=8000", "n1:7070"), s("sabc"));
        assert_eq!(subj(Method::POST, "/api/v1/sessions", "n1:7070"), Subject::Create);
        assert_eq!(subj(Method::GET, "/api/v1/sessions", "n1:7070"), Subject::Other);
        assert_eq!(subj(Method::GET, "/api/v1/sessions/", "n1:7070"), Subject::Other);
        assert_eq!(subj(Method::GET, "/api/v1/nodes", "n1:7070"), Subject::Other);
        assert_eq!(subj(Method::GET, "/s/sabc", "n1:7070"), Subject::Other);
    }
}
