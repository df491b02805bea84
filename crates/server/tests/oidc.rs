//! OpenID Connect sign-in (`users::oidc`) against a real provider: the certified `oidc-provider`
//! package run by Node (`tests/oidc/provider.mjs`; needs `npm ci` in web/), driven over HTTP
//! the way a browser would: the provider's login form, consent, and the redirect back.

#[path = "oidc/support.rs"]
mod support;

use std::time::{Duration, Instant};

use mayfly_server::users::oidc::{Identity, Oidc, OidcError, PendingLogin};
use support::*;

#[tokio::test]
async fn signs_in_through_the_provider_login_form() {
    let provider = Provider::start().await;
    let mut settings = provider.settings();
    settings.allowed_email_domains = vec!["corp.example".to_string()];
    settings.allowed_groups = vec!["admins".to_string()];
    let oidc = Oidc::new(settings, REDIRECT_URI.to_string()).unwrap();

    let (url, pending) = oidc.start("/sessions/42").await.unwrap();
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert!(url.as_str().starts_with(&format!("{}/auth", provider.issuer)), "{url}");
    assert_eq!(query["response_type"], "code");
    assert_eq!(query["client_id"], CLIENT_ID);
    assert_eq!(query["redirect_uri"], REDIRECT_URI);
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["state"], pending.state);
    assert_eq!(query["nonce"], pending.nonce);
    let scopes: Vec<&str> = query["scope"].split(' ').collect();
    for scope in ["openid", "email", "profile", "groups"] {
        assert!(scopes.contains(&scope), "{scope} missing from {scopes:?}");
    }
    assert_eq!(pending.next, "/sessions/42");
    // The pending state survives a round trip through the cookie/store format.
    let pending: PendingLogin = serde_json::from_str(&serde_json::to_string(&pending).unwrap()).unwrap();

    let login = "alice+admins+devs@corp.example";
    let callback = browse(url, login).await;
    let identity = oidc.finish(&pending, &callback.code, &callback.state).await.unwrap();
    assert_eq!(
        identity,
        Identity {
            issuer: provider.issuer.clone(),
            subject: login.to_string(),
            email: Some("alice@corp.example".to_string()),
            email_verified: true,
            name: Some("Alice".to_string()),
            groups: vec!["admins".to_string(), "devs".to_string()],
        }
    );

    // A code is good once.
    let err = oidc.finish(&pending, &callback.code, &callback.state).await.unwrap_err();
    assert!(matches!(err, OidcError::Exchange(_)), "{err:?}");
}

#[tokio::test]
async fn public_client_signs_in_with_pkce_alone() {
    let provider = Provider::start().await;
    let mut settings = provider.settings();
    settings.client_id = PUBLIC_CLIENT_ID.to_string();
    settings.client_secret = None;
    let oidc = Oidc::new(settings, REDIRECT_URI.to_string()).unwrap();
    let (pending, callback) = sign_in(&oidc, "carol").await;
    let identity = oidc.finish(&pending, &callback.code, &callback.state).await.unwrap();
    assert_eq!(identity.subject, "carol");
    assert_eq!(identity.email.as_deref(), Some("carol@example.com"));
    assert!(identity.groups.is_empty());
}

#[tokio::test]
async fn state_must_match_the_pending_sign_in() {
    let provider = Provider::start().await;
    let oidc = provider.oidc();
    let (pending, callback) = sign_in(&oidc, "dave").await;
    let err = oidc.finish(&pending, &callback.code, "forged-state").await.unwrap_err();
    assert!(matches!(err, OidcError::StateMismatch), "{err:?}");
    assert!(err.to_string().contains("sign in again"), "{err}");
    // Another sign-in's pending state (another tab): also a mismatch.
    let (_, other) = oidc.start("/").await.unwrap();
    let err = oidc.finish(&other, &callback.code, &callback.state).await.unwrap_err();
    assert!(matches!(err, OidcError::StateMismatch), "{err:?}");
    // The code was not spent by the refused attempts.
    let identity = oidc.finish(&pending, &callback.code, &callback.state).await.unwrap();
    assert_eq!(identity.subject, "dave");
}

#[tokio::test]
async fn pending_sign_in_of_another_flow_is_refused() {
    let provider = Provider::start().await;
    let oidc = provider.oidc();
    let (_, other) = oidc.start("/").await.unwrap();

    // Same state, another flow's nonce: the code exchange works, the ID token's nonce check fails.
    let (pending, callback) = sign_in(&oidc, "erin").await;
    let mixed = PendingLogin { nonce: other.nonce.clone(), ..pending.clone() };
    let err = oidc.finish(&mixed, &callback.code, &callback.state).await.unwrap_err();
    assert!(matches!(&err, OidcError::IdToken(m) if m.contains("nonce")), "{err:?}");

    // Same state, another flow's PKCE verifier: the provider refuses the code.
    let (pending, callback) = sign_in(&oidc, "erin").await;
    let mixed = PendingLogin { pkce_verifier: other.pkce_verifier.clone(), ..pending.clone() };
    let err = oidc.finish(&mixed, &callback.code, &callback.state).await.unwrap_err();
    assert!(matches!(err, OidcError::Exchange(_)), "{err:?}");

    // A pending sign-in older than 10 minutes.
    let (pending, callback) = sign_in(&oidc, "erin").await;
    let stale = PendingLogin { created_at_unix: unix_now() - 11 * 60, ..pending };
    let err = oidc.finish(&stale, &callback.code, &callback.state).await.unwrap_err();
    assert!(matches!(err, OidcError::Expired), "{err:?}");
}

#[tokio::test]
async fn tampered_or_foreign_id_tokens_are_rejected() {
    let provider = Provider::start().await;
    let oidc = provider.oidc();
    let (pending, callback) = sign_in(&oidc, "frank").await;
    let tokens = oidc.exchange(&pending, &callback.code).await.unwrap();
    let identity = oidc.verify_id_token(&tokens.id_token, &pending.nonce).await.unwrap();
    assert_eq!(identity.subject, "frank");

    // Another nonce.
    let err = oidc.verify_id_token(&tokens.id_token, "some-other-nonce").await.unwrap_err();
    assert!(matches!(&err, OidcError::IdToken(m) if m.contains("nonce")), "{err:?}");

    // Claims changed under the provider's signature.
    let mut claims = jwt_claims(&tokens.id_token);
    claims["sub"] = "admin".into();
    let forged = with_claims(&tokens.id_token, &claims);
    let err = oidc.verify_id_token(&forged, &pending.nonce).await.unwrap_err();
    assert!(matches!(&err, OidcError::IdToken(m) if m.contains("signature")), "{err:?}");

    // Not a JWT at all.
    let err = oidc.verify_id_token("garbage", &pending.nonce).await.unwrap_err();
    assert!(matches!(err, OidcError::IdToken(_)), "{err:?}");

    // A genuine token of the same provider, issued to another client.
    let mut settings = provider.settings();
    settings.client_id = OTHER_CLIENT_ID.to_string();
    settings.client_secret = Some("other-secret".to_string());
    let other_app = Oidc::new(settings, REDIRECT_URI.to_string()).unwrap();
    let (other_pending, other_callback) = sign_in(&other_app, "frank").await;
    let other_tokens = other_app.exchange(&other_pending, &other_callback.code).await.unwrap();
    other_app.verify_id_token(&other_tokens.id_token, &other_pending.nonce).await.unwrap();
    let err = oidc.verify_id_token(&other_tokens.id_token, &other_pending.nonce).await.unwrap_err();
    assert!(matches!(&err, OidcError::IdToken(m) if m.contains("audience")), "{err:?}");
}

#[tokio::test]
async fn expired_id_token_is_rejected() {
    let provider = Provider::start_with(ProviderOptions { id_token_ttl_secs: Some(3), ..Default::default() }).await;
    let skew = Duration::from_secs(1);
    let oidc = provider.oidc().with_clock_skew(skew);
    let (pending, callback) = sign_in(&oidc, "grace").await;
    let tokens = oidc.exchange(&pending, &callback.code).await.unwrap();
    oidc.verify_id_token(&tokens.id_token, &pending.nonce).await.expect("fresh token");

    // Wait until `exp` plus the allowed skew is past, with a margin.
    let exp = jwt_claims(&tokens.id_token)["exp"].as_u64().expect("exp");
    let deadline = Instant::now() + Duration::from_secs(60);
    while unix_now() < exp + skew.as_secs() + 1 {
        assert!(Instant::now() < deadline, "the clock did not pass the token's expiry");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let err = oidc.verify_id_token(&tokens.id_token, &pending.nonce).await.unwrap_err();
    assert!(matches!(&err, OidcError::IdToken(m) if m.contains("expired")), "{err:?}");
}

#[tokio::test]
async fn email_domain_restriction() {
    let provider = Provider::start().await;
    let mut settings = provider.settings();
    settings.allowed_email_domains = vec!["corp.example".to_string()];
    let oidc = Oidc::new(settings, REDIRECT_URI.to_string()).unwrap();

    let (pending, callback) = sign_in(&oidc, "mallory@evil.example").await;
    let err = oidc.finish(&pending, &callback.code, &callback.state).await.unwrap_err();
    assert!(
        matches!(&err, OidcError::NotAllowed(m) if m.contains("mallory@evil.example") && m.contains("corp.example")),
        "{err:?}"
    );

    let (pending, callback) = sign_in(&oidc, "unverified.eve@corp.example").await;
    let err = oidc.finish(&pending, &callback.code, &callback.state).await.unwrap_err();
    assert!(matches!(&err, OidcError::NotAllowed(m) if m.contains("not verified")), "{err:?}");

    let (pending, callback) = sign_in(&oidc, "heidi@corp.example").await;
    let identity = oidc.finish(&pending, &callback.code, &callback.state).await.unwrap();
    assert_eq!(identity.email.as_deref(), Some("heidi@corp.example"));
}

#[tokio::test]
async fn group_restriction() {
    let provider = Provider::start().await;
    let mut settings = provider.settings();
    settings.allowed_groups = vec!["admins".to_string()];
    let oidc = Oidc::new(settings, REDIRECT_URI.to_string()).unwrap();

    let (pending, callback) = sign_in(&oidc, "ivan+devs").await;
    let err = oidc.finish(&pending, &callback.code, &callback.state).await.unwrap_err();
    assert!(matches!(&err, OidcError::NotAllowed(m) if m.contains("admins") && m.contains("devs")), "{err:?}");

    let (pending, callback) = sign_in(&oidc, "judy+devs+admins").await;
    let identity = oidc.finish(&pending, &callback.code, &callback.state).await.unwrap();
    assert_eq!(identity.groups, ["devs", "admins"]);
}

#[tokio::test]
async fn provider_down_then_up() {
    // A port with nothing listening (until the provider starts on it below).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let issuer = format!("http://127.0.0.1:{port}");
    let mut settings = mayfly_server::users::oidc::OidcSettings::new(&issuer, CLIENT_ID);
    settings.client_secret = Some(CLIENT_SECRET.to_string());
    settings.scopes = vec!["groups".to_string()];
    // Creating it does not contact the provider.
    let oidc = Oidc::new(settings, REDIRECT_URI.to_string()).unwrap();

    let began = Instant::now();
    let err = oidc.start("/").await.unwrap_err();
    // A refused connection is reported, not retried until some far-off timeout.
    assert!(began.elapsed() < Duration::from_secs(30), "took {:?}", began.elapsed());
    match &err {
        OidcError::ProviderUnreachable { issuer: named, .. } => assert_eq!(named, &issuer),
        other => panic!("expected ProviderUnreachable, got {other:?}"),
    }
    assert!(err.to_string().contains(&issuer), "{err}");
    eprintln!("provider down: {err}");

    // Once the provider is up, the next sign-in discovers it.
    let provider = Provider::start_with(ProviderOptions { port, ..Default::default() }).await;
    assert_eq!(provider.issuer, issuer);
    let (pending, callback) = sign_in(&oidc, "kim+admins").await;
    let identity = oidc.finish(&pending, &callback.code, &callback.state).await.unwrap();
    assert_eq!(identity.groups, ["admins"]);
}
