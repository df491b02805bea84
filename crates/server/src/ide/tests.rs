//! The IDE routes through the whole router (`oneshot`), with or without a web build.

use super::{safe_next, Dist};
use crate::config::ServerConfig;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;

const TOKEN: &str = "ide-token-0123456789";

async fn app() -> (Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::with_data_dir(dir.path());
    cfg.token = Some(TOKEN.into());
    let (state, _) = crate::build_state(cfg, "http://127.0.0.1:7070".into()).await.unwrap();
    (crate::router(state), dir)
}

async fn get(app: &Router, uri: &str, cookie: bool, extra: Option<(header::HeaderName, String)>) -> axum::response::Response {
    let mut b = Request::builder().uri(uri);
    if cookie {
        b = b.header(header::COOKIE, format!("mayfly_token={TOKEN}"));
    }
    if let Some((k, v)) = extra {
        b = b.header(k, v);
    }
    app.clone().oneshot(b.body(Body::empty()).unwrap()).await.unwrap()
}

fn header(r: &axum::response::Response, name: header::HeaderName) -> &str {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn pages_redirect_to_login_without_the_cookie() {
    let (app, _dir) = app().await;
    for (uri, location) in [
        ("/", "/login?next=%2F"),
        ("/account", "/login?next=%2Faccount"),
        ("/s/sabc123", "/login?next=%2Fs%2Fsabc123"),
    ] {
        let r = get(&app, uri, false, None).await;
        assert_eq!(r.status(), StatusCode::FOUND, "{uri}");
        assert_eq!(header(&r, header::LOCATION), location);
    }
    let r = get(&app, "/s/Not_An_Id", true, None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // The API keeps answering JSON 401s, not redirects.
    let r = get(&app, "/api/v1/sessions", false, None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn pages_are_html_and_revalidate() {
    let (app, _dir) = app().await;
    for uri in ["/", "/account", "/s/sabc123"] {
        let r = get(&app, uri, true, None).await;
        assert_eq!(r.status(), StatusCode::OK, "{uri}");
        assert_eq!(header(&r, header::CONTENT_TYPE), "text/html; charset=utf-8");
        assert_eq!(header(&r, header::X_FRAME_OPTIONS), "DENY");
        let etag = header(&r, header::ETAG).to_string();
        if Dist::get("index.html").is_none() {
            let body = r.into_body().collect().await.unwrap().to_bytes();
            assert!(String::from_utf8_lossy(&body).contains("npm run build"), "placeholder page");
            continue;
        }
        assert_eq!(header(&r, header::CACHE_CONTROL), "no-cache");
        assert!(etag.starts_with('"'), "{etag}");
        let r = get(&app, uri, true, Some((header::IF_NONE_MATCH, etag))).await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    }
    let r = get(&app, "/login", false, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(header(&r, header::CONTENT_TYPE).starts_with("text/html"));
}

#[tokio::test]
async fn login_sends_a_logged_in_browser_on() {
    let (app, _dir) = app().await;
    for (uri, to) in [
        ("/login?next=%2Fs%2Fsabc", "/s/sabc"),
        ("/login", "/"),
        ("/login?next=%2F%2Fevil.example", "/"),
        ("/login?next=https%3A%2F%2Fevil.example", "/"),
    ] {
        let r = get(&app, uri, true, None).await;
        assert_eq!(r.status(), StatusCode::FOUND, "{uri}");
        assert_eq!(header(&r, header::LOCATION), to, "{uri}");
    }
}

#[tokio::test]
async fn assets_are_immutable_with_their_type() {
    let (app, _dir) = app().await;
    let r = get(&app, "/assets/nope-123.js", false, None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let Some(js) = Dist::iter().find(|p| p.starts_with("assets/") && p.ends_with(".js")) else {
        return; // no web build in this binary
    };
    let r = get(&app, &format!("/{js}"), false, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, header::CONTENT_TYPE), "text/javascript; charset=utf-8");
    assert_eq!(header(&r, header::CACHE_CONTROL), "public, max-age=31536000, immutable");
}

#[test]
fn next_stays_on_this_origin() {
    let cases = [
        (None, "/"),
        (Some("/s/abc"), "/s/abc"),
        (Some("/?x=1"), "/?x=1"),
        (Some("//evil.example/"), "/"),
        (Some("/\\evil.example"), "/"),
        (Some("https://evil.example"), "/"),
        (Some("javascript:alert(1)"), "/"),
        (Some("/a\nb"), "/"),
        (Some(""), "/"),
    ];
    for (input, want) in cases {
        assert_eq!(safe_next(input), want, "{input:?}");
    }
}
