//! Hostile input on the API: arbitrary bodies, path ids, query strings and port numbers get a
//! 4xx in the JSON error shape, never a 5xx or a panic. Fixed case counts and seed (CI budget);
//! `PROPTEST_CASES` raises it locally.

use super::tests::{app_with, req, send, TOKEN};
use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::Router;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngSeed, TestRunner};

/// `cases` values drawn from `strategy` with a fixed seed. The requests are async, so the cases
/// are drawn first and sent in order (a failure names its input; no shrinking).
fn sample<S: Strategy>(strategy: S, cases: u32) -> Vec<S::Value> {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(cases);
    let mut runner = TestRunner::new(Config {
        rng_seed: RngSeed::Fixed(0x6d61_7966),
        failure_persistence: None,
        ..Config::default()
    });
    (0..cases).map(|_| strategy.new_tree(&mut runner).expect("a value").current()).collect()
}

/// Percent-encodes every byte outside the unreserved set, so any string fits in a URI.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The router and its data dir (the store lives there: keep it until the test ends).
async fn app() -> (Router, tempfile::TempDir) {
    // No rate limit here: every case comes from the same (absent) client address.
    let (router, _, dir) = app_with(|c| c.rate_limit_per_second = 0).await;
    (router, dir)
}

async fn assert_client_error(app: &Router, method: Method, uri: &str, body: Vec<u8>) {
    let (status, json) = send(app, req(method.clone(), uri, Some(TOKEN), Body::from(body))).await;
    assert!(status.is_client_error(), "{method} {uri} → {status} {json}");
    assert!(json["error"]["code"].is_string() && json["error"]["message"].is_string(), "{method} {uri} → {json}");
}

/// Bodies: raw bytes, and JSON values of every shape (what a confused or hostile client sends).
fn bodies() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    let json = leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("image".to_string()),
                    Just("cmd".to_string()),
                    Just("ttl_seconds".to_string()),
                    Just("visibility".to_string()),
                    ".{0,12}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..256), json.prop_map(|v| serde_json::to_vec(&v).unwrap())]
}

#[tokio::test]
async fn arbitrary_bodies_get_4xx() {
    let (app, _dir) = app().await;
    for body in sample(bodies(), 96) {
        // `image` is never one that is built in this data dir, so no create gets to boot a VM.
        for (m, uri) in [
            (Method::POST, "/api/v1/sessions"),
            (Method::POST, "/api/v1/sessions/sdoesnotexist0/exec"),
            (Method::PATCH, "/api/v1/sessions/sdoesnotexist0/ports/8000"),
            (Method::POST, "/api/v1/sessions/sdoesnotexist0/files/rename"),
            (Method::POST, "/api/v1/login"),
        ] {
            assert_client_error(&app, m, uri, body.clone()).await;
        }
    }
}

#[tokio::test]
async fn arbitrary_ids_queries_and_ports_get_4xx() {
    let (app, _dir) = app().await;
    for (id, query, port) in sample((".{0,80}", ".{0,40}", ".{0,8}"), 128) {
        let (id, query, port) = (enc(&id), enc(&query), enc(&port));
        if id.is_empty() {
            continue; // `/api/v1/sessions/` is another route
        }
        for (m, uri) in [
            (Method::GET, format!("/api/v1/sessions/{id}")),
            (Method::DELETE, format!("/api/v1/sessions/{id}")),
            (Method::GET, format!("/api/v1/sessions/{id}/files?path={query}")),
            (Method::GET, format!("/api/v1/sessions/{id}/ports")),
            (Method::PATCH, format!("/api/v1/sessions/{id}/ports/{port}")),
            (Method::GET, format!("/api/v1/sessions/{id}/pty?cols={port}&rows={query}")),
            (Method::GET, format!("/api/v1/sessions/sdoesnotexist0/files?path=/{query}")),
        ] {
            let body = br#"{"visibility":"public"}"#.to_vec();
            assert_client_error(&app, m, &uri, body).await;
        }
    }
    let (status, _) = send(&app, req(Method::GET, "/api/v1/sessions", Some(TOKEN), Body::empty())).await;
    assert_eq!(status, StatusCode::OK, "still serving");
}
