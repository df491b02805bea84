//! Network isolation with real VMs: probes run inside sessions under each egress policy against
//! listeners this test starts on the host (loopback, the host's own address) and a server in
//! another session. Forbidden targets must refuse under every policy — and the host listeners
//! count what actually reached them, so "refused" means nothing got through, not merely that
//! the client saw an error.

use crate::common;

use common::*;
use mayfly_server::egress::addrs::host_addresses;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PROBE: &str = include_str!("probe.py");

/// A host TCP server answering every connection with `HTTP/1.0 200` and `hello from NAME`.
struct HostListener {
    port: u16,
    hits: Arc<AtomicUsize>,
}

async fn listen(addr: &str, name: &'static str) -> HostListener {
    let l = TcpListener::bind(addr).await.unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = format!("hello from {name}");
                let _ = s.write_all(format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes()).await;
            });
        }
    });
    HostListener { port, hits }
}

async fn probe(srv: &TestServer, id: &str, probes: &[Value]) -> Vec<Value> {
    let arg = serde_json::to_string(probes).unwrap();
    let (status, out) = srv.exec(id, &["python3", "-c", PROBE, &arg]).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["exit_code"], 0, "{out}");
    serde_json::from_str(out["stdout"].as_str().unwrap()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn connect(host: &str, port: u16) -> Value {
    json!({ "kind": "connect", "host": host, "port": port })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_reach_only_what_their_policy_allows() {
    let allowed = listen("127.0.0.1:0", "allowed").await;
    let forbidden = listen("0.0.0.0:0", "forbidden").await;
    let host_ip = host_addresses()
        .into_iter()
        .find(|a| matches!(a, IpAddr::V4(v4) if !v4.is_loopback()))
        .expect("the host has a non-loopback IPv4 address")
        .to_string();
    let private_allow = format!("127.0.0.1:{}", allowed.port);
    let srv = TestServer::start(|c| c.egress_private_allow = vec![private_allow.clone()]).await;
    let cp_port: u16 = srv.base.rsplit(':').next().unwrap().parse().unwrap();

    let open = srv.ready_session(json!({ "image": "minimal", "network": { "egress": "open" } })).await;
    let allow = json!({ "egress": "allowlist", "allow": [private_allow, "pypi.org:443"] });
    let listed = srv.ready_session(json!({ "image": "minimal", "network": allow })).await;
    let none = srv.ready_session(json!({ "image": "minimal", "network": { "egress": "none" } })).await;
    let (_, s) = srv.get(&format!("/api/v1/sessions/{listed}")).await;
    assert_eq!(s["network"], allow, "the policy is part of the session");
    let (_, s) = srv.get(&format!("/api/v1/sessions/{none}")).await;
    assert_eq!(s["network"], json!({ "egress": "none" }));

    // Another guest's server, reachable (for its owner) only through the preview proxy.
    let (status, out) = srv.exec(&open, &["sh", "-c", "python3 -m http.server 8000 >/dev/null 2>&1 & echo started"]).await;
    assert_eq!((status, out["exit_code"].clone()), (200, json!(0)), "{out}");
    let other_guest = format!("8000-{open}.localhost");

    // Never reachable, whatever the policy.
    let b = forbidden.port;
    let never = vec![
        json!({ "kind": "direct", "host": host_ip, "port": b }),
        json!({ "kind": "direct", "host": "10.0.2.2", "port": b }),
        connect("127.0.0.1", b),
        connect("localhost", b),
        connect("::1", b),
        connect("::ffff:127.0.0.1", b),
        connect(&host_ip, b),
        connect("127.0.0.1", cp_port),
        connect(&other_guest, cp_port),
        connect("169.254.169.254", 80),
        json!({ "kind": "get", "url": format!("http://127.0.0.1:{b}/") }),
        json!({ "kind": "get", "url": format!("http://{host_ip}:{b}/") }),
    ];
    for (id, policy) in [(&open, "open"), (&listed, "allowlist"), (&none, "none")] {
        let results = probe(&srv, id, &never).await;
        for (p, r) in never.iter().zip(&results) {
            if p["kind"] == "direct" {
                assert_eq!(r["connected"], false, "{policy}: {p} → {r}");
                assert!(r["error"].as_str().unwrap().contains("unreachable"), "no route at all: {policy}: {p} → {r}");
            } else {
                assert_eq!(r["status"], 403, "{policy}: {p} → {r}");
                assert!(r["body"].as_str().unwrap().contains(&format!("`{policy}` policy")), "the refusal names the policy: {r}");
            }
        }
    }
    assert_eq!(forbidden.hits.load(Ordering::SeqCst), 0, "nothing reached the forbidden host listener");

    // The operator-allowed host service: reachable under `open` and when listed, never under `none`.
    let a = allowed.port;
    let svc = [connect("127.0.0.1", a), json!({ "kind": "get", "url": format!("http://127.0.0.1:{a}/") })];
    for id in [&open, &listed] {
        let r = probe(&srv, id, &svc).await;
        assert_eq!(r[0]["status"], 200, "{r:?}");
        assert!(r[0]["reply"].as_str().unwrap().ends_with("hello from allowed"), "{r:?}");
        assert_eq!(r[1], json!({ "status": 200, "body": "hello from allowed" }), "plain HTTP through the proxy");
    }
    let r = probe(&srv, &none, &svc).await;
    assert_eq!((r[0]["status"].clone(), r[1]["status"].clone()), (json!(403), json!(403)), "{r:?}");
    assert_eq!(allowed.hits.load(Ordering::SeqCst), 4);

    // The internet: names are resolved by the host. Listed or open → through; others refused
    // before any lookup.
    let web = [json!({ "kind": "connect", "host": "pypi.org", "port": 443, "talk": false }), connect("files.pythonhosted.org", 443)];
    let r = probe(&srv, &open, &web).await;
    assert_eq!((r[0]["status"].clone(), r[1]["status"].clone()), (json!(200), json!(200)), "{r:?}");
    let r = probe(&srv, &listed, &web).await;
    assert_eq!(r[0]["status"], 200, "{r:?}");
    assert_eq!(r[1]["status"], 403, "{r:?}");
    assert!(r[1]["body"].as_str().unwrap().contains("not in the allowlist"), "{r:?}");
    let r = probe(&srv, &none, &web).await;
    assert_eq!(r[0]["status"], 403, "{r:?}");
    assert!(r[0]["body"].as_str().unwrap().contains("no network access"), "{r:?}");

    // The proxy itself is not a user's port.
    let (_, ports) = srv.get(&format!("/api/v1/sessions/{none}/ports")).await;
    assert!(!ports.to_string().contains("3128"), "{ports}");

    for id in [&open, &listed, &none] {
        assert_eq!(srv.delete(id).await, 204);
    }
    srv.stop().await;
}

#[tokio::test]
async fn bad_policies_are_refused_at_creation() {
    let srv = TestServer::start(|_| {}).await;
    for (network, needle) in [
        (json!({ "egress": "sometimes" }), "sometimes"),
        (json!({ "egress": "allowlist", "allow": ["not a host"] }), "not a host"),
        (json!({ "egress": "allowlist", "allow": ["pypi.org:0"] }), "port"),
        (json!({ "egress": "open", "allow": ["pypi.org"] }), "only used with egress"),
        (json!({ "egress": "open", "extra": 1 }), "extra"),
    ] {
        let (status, body) = srv.create(json!({ "image": "minimal", "network": network }), false).await;
        assert_eq!(status, 400, "{network} → {body}");
        assert!(body.to_string().contains(needle), "{network} → {body}");
    }
    let (_, list) = srv.get("/api/v1/sessions").await;
    assert_eq!(list.as_array().map(Vec::len), Some(0), "nothing was created: {list}");
    srv.stop().await;
}
