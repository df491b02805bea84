//! Sign-in, browser cookies and API tokens through a real server (no VM needed): passwords,
//! cookie rotation and sign-out, same-origin rules for cookies, token lifecycle, forged and
//! malformed credentials, the failed sign-in limit and the audit entries of each.

use crate::common;

use common::users::{as_user, audit, create_token, make_user, status_and_body};
use common::{TestServer, TOKEN};
use reqwest::Method;
use serde_json::json;

fn session_cookie(r: &reqwest::Response) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("mayfly_session="))
        .and_then(|c| c.split(';').next())
        .expect("a mayfly_session cookie")
        .to_string()
}

async fn password(server: &TestServer, email: &str, pw: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut r = reqwest::Client::new().post(server.url("/api/v1/auth/password")).json(&json!({"email": email, "password": pw}));
    if let Some(c) = cookie {
        r = r.header("cookie", c);
    }
    r.send().await.unwrap()
}

async fn me_with_cookie(server: &TestServer, cookie: &str) -> u16 {
    reqwest::Client::new().get(server.url("/api/v1/me")).header("cookie", cookie).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn cookies_rotate_expire_on_sign_out_and_only_work_from_this_origin() {
    let server = TestServer::start(|_| {}).await;
    let erin = make_user(&server, "erin@example.com", "member", json!({})).await;

    let wrong = password(&server, "erin@example.com", "not the password", None).await;
    assert_eq!(wrong.status().as_u16(), 401);
    let unknown = password(&server, "nobody@example.com", "not the password", None).await;
    assert_eq!(unknown.status().as_u16(), 401);
    assert_eq!(wrong.text().await.unwrap(), unknown.text().await.unwrap(), "an unknown email answers like a wrong password");

    let first = session_cookie(&password(&server, "Erin@Example.com ", &erin.password, None).await);
    assert_eq!(me_with_cookie(&server, &first).await, 200, "emails are matched case-insensitively");
    // Signing in again from the same browser ends the old sign-in (no fixation).
    let second = session_cookie(&password(&server, "erin@example.com", &erin.password, Some(&first)).await);
    assert_ne!(first, second);
    assert_eq!(me_with_cookie(&server, &first).await, 401);
    assert_eq!(me_with_cookie(&server, &second).await, 200);

    // A cookie changes state only from this origin, and only saying so.
    let post = |origin: Option<&str>| {
        let mut r = reqwest::Client::new().post(server.url("/api/v1/tokens")).header("cookie", &second).json(&json!({"name": "x"}));
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    assert_eq!(post(None).await.unwrap().status().as_u16(), 403, "no Origin");
    assert_eq!(post(Some("http://8000-sabc.localhost:1")).await.unwrap().status().as_u16(), 403, "a preview page");
    assert_eq!(post(Some(&server.base)).await.unwrap().status().as_u16(), 201);
    // A bearer needs no Origin (programs).
    let (s, _) = status_and_body(as_user(Method::POST, &server, "/api/v1/tokens", &erin.token).json(&json!({"name": "y"}))).await;
    assert_eq!(s, 201);

    // Sign-out ends it server-side.
    let out = reqwest::Client::new().post(server.url("/api/v1/logout")).header("cookie", &second).header("origin", &server.base).send().await.unwrap();
    assert_eq!(out.status().as_u16(), 204);
    assert!(out.headers().get_all("set-cookie").iter().any(|c| c.to_str().unwrap().starts_with("mayfly_session=;")));
    assert_eq!(me_with_cookie(&server, &second).await, 401);
    for (cookie, why) in [("mayfly_session=garbage", "malformed"), ("mayfly_session=aaaaaaaaaaaaaaaa.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "forged")] {
        assert_eq!(me_with_cookie(&server, cookie).await, 401, "{why}");
    }
    let kinds: Vec<String> = audit(&server, &format!("user={}", erin.id)).await.iter().map(|e| e["action"].as_str().unwrap().to_string()).collect();
    for want in ["sign_in", "token_create", "sign_out"] {
        assert!(kinds.iter().any(|k| k == want), "{want} in {kinds:?}");
    }
    let failed = audit(&server, "action=sign_in_failed").await;
    assert!(failed.iter().any(|e| e["actor"] == "nobody@example.com"), "{failed:?}");
    assert!(audit(&server, "since=2999-01-01T00:00:00Z").await.is_empty(), "time filter");
    server.stop().await;
}

#[tokio::test]
async fn api_tokens_are_shown_once_expire_and_revoke() {
    let server = TestServer::start(|c| c.max_token_days = 30).await;
    let frank = make_user(&server, "frank@example.com", "member", json!({})).await;
    let gina = make_user(&server, "gina@example.com", "member", json!({})).await;

    for days in [0, 31] {
        let (s, e) = status_and_body(as_user(Method::POST, &server, "/api/v1/tokens", &frank.token).json(&json!({"name": "t", "expires_in_days": days}))).await;
        assert_eq!(s, 400, "{days} days: {e}");
        assert!(e["error"]["message"].as_str().unwrap().contains("max_token_days"), "{e}");
    }
    let made = create_token(&server, &frank.browser, "ci").await;
    let secret = made["token"].as_str().unwrap().to_string();
    assert!(secret.starts_with("mfy_"), "{made}");
    let (_, list) = status_and_body(as_user(Method::GET, &server, "/api/v1/tokens", &frank.token)).await;
    assert!(!list.to_string().contains(&secret), "listed without the secret: {list}");
    let listed = list.as_array().unwrap().iter().find(|t| t["id"] == made["id"]).unwrap().clone();
    assert!(listed["last_used_at"].is_null() && listed["expires_at"].is_string(), "{listed}");
    let (s, me) = status_and_body(as_user(Method::GET, &server, "/api/v1/me", &secret)).await;
    assert_eq!((s, me["user"]["email"].as_str()), (200, Some("frank@example.com")));
    let (_, list) = status_and_body(as_user(Method::GET, &server, "/api/v1/tokens", &frank.token)).await;
    let used = list.as_array().unwrap().iter().find(|t| t["id"] == made["id"]).unwrap();
    assert!(used["last_used_at"].is_string(), "last use recorded: {used}");

    // Someone else cannot revoke it (not found), its owner can; then it stops working.
    let path = format!("/api/v1/tokens/{}", made["id"].as_str().unwrap());
    assert_eq!(status_and_body(as_user(Method::DELETE, &server, &path, &gina.token)).await.0, 404);
    assert_eq!(status_and_body(as_user(Method::DELETE, &server, &path, &frank.token)).await.0, 204);
    assert_eq!(status_and_body(as_user(Method::GET, &server, "/api/v1/me", &secret)).await.0, 401);
    let entries = audit(&server, &format!("user={}&action=token_revoke", frank.id)).await;
    assert_eq!(entries[0]["detail"]["token"], made["id"]);

    // Forged and malformed bearers.
    let forged = format!("{}{}", &secret[..secret.len() - 1], if secret.ends_with('a') { 'b' } else { 'a' });
    for bad in [forged.as_str(), "mfy_", "mfy_aaaaaaaaaaaa_short", "Bearer", "x".repeat(5000).as_str()] {
        assert_eq!(status_and_body(as_user(Method::GET, &server, "/api/v1/me", bad)).await.0, 401, "{bad:.40}");
    }
    // The server token cannot make user tokens; members cannot administer.
    let (s, e) = status_and_body(as_user(Method::POST, &server, "/api/v1/tokens", TOKEN).json(&json!({"name": "x"}))).await;
    assert_eq!(s, 400, "{e}");
    for path in ["/api/v1/users", "/api/v1/audit", "/metrics"] {
        assert_eq!(status_and_body(as_user(Method::GET, &server, path, &frank.token)).await.0, 403, "{path}");
    }
    let (s, me) = status_and_body(as_user(Method::GET, &server, "/api/v1/me", TOKEN)).await;
    assert_eq!((s, me["bootstrap"].as_bool(), me["role"].as_str()), (200, Some(true), Some("admin")), "{me}");
    server.stop().await;
}

#[tokio::test]
async fn repeated_failures_are_limited_per_account() {
    let server = TestServer::start(|_| {}).await;
    let hank = make_user(&server, "hank@example.com", "member", json!({})).await;
    let mut last = 0;
    for _ in 0..12 {
        last = password(&server, "hank@example.com", "guess-guess-guess", None).await.status().as_u16();
        if last == 429 {
            break;
        }
    }
    assert_eq!(last, 429, "limited after repeated failures");
    let r = password(&server, "hank@example.com", &hank.password, None).await;
    assert_eq!(r.status().as_u16(), 429, "even the right password waits");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("try again in"), "{body}");
    // His API token (another kind of credential) still works; the limit is on sign-ins.
    assert_eq!(status_and_body(as_user(Method::GET, &server, "/api/v1/me", &hank.token)).await.0, 200);
    server.stop().await;
}
