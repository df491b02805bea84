//! Users for tests: made by the server token (the bootstrap admin), signed in with their
//! password like a browser, and given an API token like the tokens page does.

use super::{TestServer, TOKEN};
use serde_json::{json, Value};

pub struct Account {
    pub id: String,
    pub email: String,
    pub password: String,
    /// An API token of the user (`mfy_…`).
    pub token: String,
    /// The user's browser: cookie store signed in by password.
    pub browser: reqwest::Client,
}

pub fn browser() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Makes a user with `role` and `quotas`, signs them in by password and makes them an API token.
pub async fn make_user(server: &TestServer, email: &str, role: &str, quotas: Value) -> Account {
    let password = format!("pw-{email}-0123456789");
    let r = server
        .http
        .post(server.url("/api/v1/users"))
        .json(&json!({"email": email, "role": role, "password": password, "quotas": quotas}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let user: Value = r.json().await.unwrap();
    let browser = browser();
    sign_in(server, &browser, email, &password).await;
    let token = create_token(server, &browser, "tests").await["token"].as_str().unwrap().to_string();
    Account { id: user["id"].as_str().unwrap().into(), email: email.into(), password, token, browser }
}

pub async fn sign_in(server: &TestServer, browser: &reqwest::Client, email: &str, password: &str) {
    let r = browser
        .post(server.url("/api/v1/auth/password"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204, "{}", r.text().await.unwrap());
}

/// `POST /api/v1/tokens` from a signed-in browser (cookie + Origin, as a page sends it).
pub async fn create_token(server: &TestServer, browser: &reqwest::Client, name: &str) -> Value {
    let r = browser
        .post(server.url("/api/v1/tokens"))
        .header("origin", &server.base)
        .json(&json!({"name": name, "expires_in_days": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

/// A request with `token` as the bearer (no cookies).
pub fn as_user(method: reqwest::Method, server: &TestServer, path: &str, token: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new().request(method, server.url(path)).bearer_auth(token)
}

pub async fn status_and_body(r: reqwest::RequestBuilder) -> (u16, Value) {
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The audit entries of `action` (as the server token sees them).
pub async fn audit(server: &TestServer, query: &str) -> Vec<Value> {
    let (s, page) = status_and_body(as_user(reqwest::Method::GET, server, &format!("/api/v1/audit?{query}"), TOKEN)).await;
    assert_eq!(s, 200, "{page}");
    page["entries"].as_array().unwrap().clone()
}
