//! Authenticating node-to-node requests: a node forwarding a request signs it with the cluster
//! secret (HMAC-SHA256 over the method, host, path and query, the sending node, the client's
//! address and the time); the owner accepts the client address it names only from a valid
//! signature, and never forwards such a request again. The user's own credential travels
//! unchanged and is checked by the owner like any other request, so a node cannot act for a user
//! it has no credential of.
//!
//! Header: `x-mayfly-node: v1;from=<node>;ts=<unix seconds>;ip=<client ip>;sig=<hex>`.

use crate::error::ApiError;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub const HEADER: &str = "x-mayfly-node";
/// How far a signature's time may be from this node's clock.
pub const WINDOW_SECS: i64 = 300;

/// What a valid signature says about a request (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    pub from: String,
    pub client_ip: IpAddr,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeAuthError {
    #[error("malformed {HEADER} header: {0}")]
    Malformed(&'static str),
    #[error("unknown {HEADER} version (this node speaks v1)")]
    Version,
    #[error("the {HEADER} signature does not match: the nodes do not share the same cluster_secret, or the request was changed")]
    Signature,
    #[error("the {HEADER} signature is {0} s away from this node's clock (allowed: {WINDOW_SECS} s): check the clocks of both nodes (NTP)")]
    Skew(i64),
    #[error("a request forwarded by another node reached a node with no cluster_secret")]
    NotClustered,
}

pub struct NodeAuth {
    node: String,
    key: Vec<u8>,
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn host_of(headers: &HeaderMap, uri: &Uri) -> String {
    headers.get(axum::http::header::HOST).and_then(|v| v.to_str().ok()).or_else(|| uri.host()).unwrap_or("").to_string()
}

impl NodeAuth {
    pub fn new(node: &str, secret: &[u8]) -> Self {
        Self { node: node.to_string(), key: secret.to_vec() }
    }

    fn mac(&self, from: &str, ts: i64, ip: IpAddr, method: &Method, host: &str, uri: &Uri) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        mac.update(format!("v1\n{from}\n{ts}\n{ip}\n{method}\n{host}\n{path}").as_bytes());
        mac
    }

    /// Adds this node's signature to a request it forwards for `client_ip`.
    pub fn sign(&self, headers: &mut HeaderMap, method: &Method, uri: &Uri, client_ip: IpAddr) {
        let ts = unix_now();
        let host = host_of(headers, uri);
        let sig = hex::encode(self.mac(&self.node, ts, client_ip, method, &host, uri).finalize().into_bytes());
        let value = format!("v1;from={};ts={ts};ip={client_ip};sig={sig}", self.node);
        headers.insert(HEADER, HeaderValue::from_str(&value).expect("node names and IPs are header-safe"));
    }

    /// `None` when the request carries no signature.
    pub fn verify(&self, headers: &HeaderMap, method: &Method, uri: &Uri) -> Result<Option<Forwarded>, NodeAuthError> {
        let Some(raw) = headers.get(HEADER) else { return Ok(None) };
        let raw = raw.to_str().map_err(|_| NodeAuthError::Malformed("not text"))?;
        let mut fields = raw.split(';');
        if fields.next() != Some("v1") {
            return Err(NodeAuthError::Version);
        }
        let (mut from, mut ts, mut ip, mut sig) = (None, None, None, None);
        for f in fields {
            let (k, v) = f.split_once('=').ok_or(NodeAuthError::Malformed("a field without '='"))?;
            match k {
                "from" => from = Some(v),
                "ts" => ts = Some(v.parse::<i64>().map_err(|_| NodeAuthError::Malformed("ts"))?),
                "ip" => ip = Some(v.parse::<IpAddr>().map_err(|_| NodeAuthError::Malformed("ip"))?),
                "sig" => sig = Some(hex::decode(v).map_err(|_| NodeAuthError::Malformed("sig"))?),
                _ => return Err(NodeAuthError::Malformed("an unknown field")),
            }
        }
        let (Some(from), Some(ts), Some(ip), Some(sig)) = (from, ts, ip, sig) else {
            return Err(NodeAuthError::Malformed("from, ts, ip and sig are required"));
        };
        self.mac(from, ts, ip, method, &host_of(headers, uri), uri).verify_slice(&sig).map_err(|_| NodeAuthError::Signature)?;
        let skew = unix_now() - ts;
        if skew.abs() > WINDOW_SECS {
            return Err(NodeAuthError::Skew(skew));
        }
        Ok(Some(Forwarded { from: from.to_string(), client_ip: ip }))
    }
}

/// Middleware, outermost: a signed request gets its [`Forwarded`] extension and its client
/// address (for rate limits, the audit log and sign-in records) from the signature; a bad
/// signature is refused with 401 `node_auth`.
pub async fn accept_forwarded(State(auth): State<Option<Arc<NodeAuth>>>, mut req: Request, next: Next) -> Response {
    if !req.headers().contains_key(HEADER) {
        return next.run(req).await;
    }
    let verified = match &auth {
        Some(a) => a.verify(req.headers(), req.method(), req.uri()),
        None => Err(NodeAuthError::NotClustered),
    };
    match verified {
        Ok(Some(f)) => {
            req.headers_mut().remove(HEADER);
            req.extensions_mut().insert(ConnectInfo(SocketAddr::new(f.client_ip, 0)));
            req.extensions_mut().insert(f);
            next.run(req).await
        }
        Ok(None) => next.run(req).await,
        Err(e) => {
            tracing::warn!(error = %e, path = %req.uri().path(), "refused a node-to-node request");
            ApiError::new(StatusCode::UNAUTHORIZED, "node_auth", e.to_string()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(auth: &NodeAuth) -> (HeaderMap, Method, Uri) {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("8000-sabc.preview.test:7070"));
        let (m, u) = (Method::POST, Uri::from_static("/api/v1/sessions/sabc/exec?x=1"));
        auth.sign(&mut h, &m, &u, "10.1.2.3".parse().unwrap());
        (h, m, u)
    }

    #[test]
    fn a_signature_names_the_node_and_the_client() {
        let a = NodeAuth::new("node-a", b"0123456789abcdef0123456789abcdef");
        let (h, m, u) = signed(&a);
        let f = a.verify(&h, &m, &u).unwrap().unwrap();
        assert_eq!(f, Forwarded { from: "node-a".into(), client_ip: "10.1.2.3".parse().unwrap() });
        assert_eq!(a.verify(&HeaderMap::new(), &m, &u), Ok(None));
    }

    #[test]
    fn anything_changed_or_another_secret_is_refused() {
        let a = NodeAuth::new("node-a", b"0123456789abcdef0123456789abcdef");
        let (h, m, u) = signed(&a);
        let other = NodeAuth::new("node-b", b"another-secret-0123456789abcdef!");
        assert_eq!(other.verify(&h, &m, &u), Err(NodeAuthError::Signature));
        assert_eq!(a.verify(&h, &Method::GET, &u), Err(NodeAuthError::Signature));
        assert_eq!(a.verify(&h, &m, &Uri::from_static("/api/v1/sessions/sother/exec?x=1")), Err(NodeAuthError::Signature));
        let mut moved = h.clone();
        moved.insert("host", HeaderValue::from_static("8000-sother.preview.test:7070"));
        assert_eq!(a.verify(&moved, &m, &u), Err(NodeAuthError::Signature));
        let mut spoofed = h.clone();
        let v = h[HEADER].to_str().unwrap().replace("ip=10.1.2.3", "ip=127.0.0.1");
        spoofed.insert(HEADER, HeaderValue::from_str(&v).unwrap());
        assert_eq!(a.verify(&spoofed, &m, &u), Err(NodeAuthError::Signature));
        let mut bad = HeaderMap::new();
        bad.insert(HEADER, HeaderValue::from_static("v2;from=x"));
        assert_eq!(a.verify(&bad, &m, &u), Err(NodeAuthError::Version));
        bad.insert(HEADER, HeaderValue::from_static("v1;from=x;ts=1"));
        assert!(matches!(a.verify(&bad, &m, &u), Err(NodeAuthError::Malformed(_))));
    }

    #[test]
    fn an_old_signature_names_the_skew() {
        let a = NodeAuth::new("node-a", b"0123456789abcdef0123456789abcdef");
        let u = Uri::from_static("/x");
        let ts = unix_now() - 3600;
        let sig = hex::encode(a.mac("node-a", ts, "10.0.0.1".parse().unwrap(), &Method::GET, "", &u).finalize().into_bytes());
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_str(&format!("v1;from=node-a;ts={ts};ip=10.0.0.1;sig={sig}")).unwrap());
        let e = a.verify(&h, &Method::GET, &u).unwrap_err();
        assert!(matches!(e, NodeAuthError::Skew(s) if (3599..=3700).contains(&s)), "{e:?}");
        assert!(e.to_string().contains("check the clocks"), "{e}");
    }
}
