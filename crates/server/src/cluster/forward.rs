//! Forwarding one request to the node that owns its session: a new HTTP/1.1 connection to the
//! node's `advertise_url`, the request as the client sent it (method, path, query, `Host`, the
//! user's credential, a streamed body) minus hop-by-hop headers, plus `x-forwarded-for` and this
//! node's signature ([`super::node_auth`]). The response streams back; an upgrade (WebSocket
//! terminals, events, agent, preview WebSockets) is spliced both ways for as long as it lives.
//! A node that does not answer fails fast with 502 `node_unreachable`.

use super::node_auth::NodeAuth;
use crate::error::ApiError;
use crate::preview::proxy::{strip_hop_by_hop, upgrade_of};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long connecting to a node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a node may take to answer with headers (a create that boots a VM included).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(600);

/// Where a request goes.
#[derive(Debug, Clone)]
pub struct NodeTarget {
    pub name: String,
    /// `http://host:port`
    pub base_url: String,
}

pub struct Forwarder {
    auth: Arc<NodeAuth>,
}

fn unreachable(t: &NodeTarget, why: impl std::fmt::Display) -> Response {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "node_unreachable",
        format!("the session's node {} ({}) did not answer: {why}", t.name, t.base_url),
    )
    .into_response()
}

impl Forwarder {
    pub fn new(auth: Arc<NodeAuth>) -> Self {
        Self { auth }
    }

    pub async fn forward(&self, mut req: Request, target: &NodeTarget, client_ip: IpAddr) -> Response {
        let started = Instant::now();
        let authority = match target.base_url.strip_prefix("http://").map(|a| a.trim_end_matches('/')) {
            Some(a) if !a.is_empty() => a.to_string(),
            _ => return unreachable(target, "its advertise_url is not an http:// address"),
        };
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&authority)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return unreachable(target, e),
            Err(_) => return unreachable(target, format!("no connection within {} s", CONNECT_TIMEOUT.as_secs())),
        };
        let _ = tcp.set_nodelay(true);
        let upgrade = upgrade_of(req.headers());
        let downstream = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(u) = upgrade {
            parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, u);
        }
        if let Ok(v) = HeaderValue::from_str(&client_ip.to_string()) {
            parts.headers.insert("x-forwarded-for", v);
        }
        parts.uri = path.parse::<Uri>().unwrap_or_else(|_| Uri::from_static("/"));
        parts.version = Version::HTTP_11;
        if !parts.headers.contains_key(header::HOST) {
            if let Ok(v) = HeaderValue::from_str(&authority) {
                parts.headers.insert(header::HOST, v);
            }
        }
        self.auth.sign(&mut parts.headers, &parts.method, &parts.uri, client_ip);
        let method = parts.method.clone();
        let upstream = Request::from_parts(parts, body);

        let (mut sender, conn) = match hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(tcp)).await {
            Ok(pair) => pair,
            Err(e) => return unreachable(target, e),
        };
        let node = target.name.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(node = %node, "forwarded connection: {e}");
            }
        });
        let mut resp = match tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(upstream)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return unreachable(target, e),
            Err(_) => return unreachable(target, format!("no answer within {} s", RESPONSE_TIMEOUT.as_secs())),
        };
        tracing::debug!(node = %target.name, %method, path, status = resp.status().as_u16(), ms = started.elapsed().as_millis() as u64, "forwarded");
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            let Some(down) = downstream else { return unreachable(target, "it switched protocols unasked") };
            let up = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::try_join!(down, up) {
                    Ok((down, up)) => {
                        let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(down), &mut TokioIo::new(up)).await;
                    }
                    Err(e) => tracing::debug!("forwarded upgrade failed: {e}"),
                }
            });
        }
        let (mut parts, body) = resp.into_parts();
        let upgrade_back = switching.then(|| parts.headers.get(header::UPGRADE).cloned()).flatten();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(u) = upgrade_back {
            parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, u);
        }
        Response::from_parts(parts, Body::new(body))
    }
}
