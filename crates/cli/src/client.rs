//! A small typed client for the Mayfly API, and which server and token it uses.

use crate::credentials::{self, Credentials};
use anyhow::{anyhow, Context};
use mayfly_proto::api::{ErrorBody, ExecBody, ExecResult, Port, Session};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// The server a command talks to when neither `MAYFLY_URL` nor the credentials file names one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7070";

/// Where the token of a command came from (named in errors).
#[derive(Debug, Clone)]
pub enum TokenSource {
    Env,
    CredentialsFile(PathBuf),
    TokenFile(PathBuf),
    /// Given to `mayfly login`.
    Login,
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Env => write!(f, "MAYFLY_TOKEN"),
            TokenSource::CredentialsFile(p) => write!(f, "the credentials file {} (from `mayfly login`)", p.display()),
            TokenSource::TokenFile(p) => write!(f, "the server token file {}", p.display()),
            TokenSource::Login => write!(f, "the token given to `mayfly login`"),
        }
    }
}

pub struct Client {
    base: String,
    token: String,
    source: TokenSource,
    http: reqwest::Client,
}

/// The server URL: `explicit` (a `--url`), else `MAYFLY_URL`, else the only entry of the
/// credentials file, else [`DEFAULT_URL`].
pub fn server_url(explicit: Option<&str>, creds: &Credentials) -> String {
    if let Some(u) = explicit.filter(|u| !u.is_empty()) {
        return credentials::normalize(u);
    }
    if let Some(u) = std::env::var("MAYFLY_URL").ok().filter(|u| !u.is_empty()) {
        return credentials::normalize(&u);
    }
    creds.only_url().unwrap_or(DEFAULT_URL).to_string()
}

impl Client {
    /// The server of [`server_url`]; the token of `MAYFLY_TOKEN`, else the credentials file's
    /// entry for that URL, else `<data_dir>/token` (the server token of a local server).
    pub fn from_env(data_dir: &Path) -> anyhow::Result<Self> {
        let cred_path = credentials::path();
        let creds = Credentials::load(&cred_path)?;
        let base = server_url(None, &creds);
        if let Some(t) = std::env::var("MAYFLY_TOKEN").ok().filter(|t| !t.is_empty()) {
            return Ok(Self::new(&base, t, TokenSource::Env));
        }
        if let Some(t) = creds.token_for(&base) {
            return Ok(Self::new(&base, t.to_string(), TokenSource::CredentialsFile(cred_path)));
        }
        let token_file = data_dir.join("token");
        match std::fs::read_to_string(&token_file) {
            Ok(t) if !t.trim().is_empty() => Ok(Self::new(&base, t.trim().to_string(), TokenSource::TokenFile(token_file))),
            read => {
                let why = match read {
                    Err(e) => e.to_string(),
                    Ok(_) => "it is empty".to_string(),
                };
                Err(anyhow!(
                    "no token for {base}: MAYFLY_TOKEN is unset, {} has no entry for {base}, and {} cannot be read ({why}); \
                     run `mayfly login --url {base}`, set MAYFLY_TOKEN, or start a local server with `mayfly serve`",
                    cred_path.display(),
                    token_file.display()
                ))
            }
        }
    }

    pub fn new(base: &str, token: String, source: TokenSource) -> Self {
        Self { base: credentials::normalize(base), token, source, http: reqwest::Client::new() }
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn source(&self) -> &TokenSource {
        &self.source
    }

    pub(crate) async fn send(&self, method: Method, path: &str, body: Option<serde_json::Value>) -> anyhow::Result<reqwest::Response> {
        self.send_query(method, path, &[], body).await
    }

    pub(crate) async fn send_query(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self.http.request(method, format!("{}{}", self.base, path)).bearer_auth(&self.token);
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach the Mayfly server at {}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let msg = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(e) => format!("{} ({})", e.error.message, e.error.code),
            Err(_) => format!("server answered {status}: {text}"),
        };
        if status == StatusCode::UNAUTHORIZED {
            let hint = match self.source {
                TokenSource::Login => String::new(),
                _ => format!("; run `mayfly login --url {}` for a new one", self.base),
            };
            return Err(anyhow!("{msg}: {} refused the token from {}{hint}", self.base, self.source));
        }
        Err(anyhow!(msg))
    }

    pub(crate) async fn json<T: DeserializeOwned>(&self, method: Method, path: &str, body: Option<serde_json::Value>) -> anyhow::Result<T> {
        let resp = self.send(method, path, body).await?;
        resp.json().await.context("decoding the server's answer")
    }

    pub async fn create(&self, body: serde_json::Value) -> anyhow::Result<Session> {
        self.json(Method::POST, "/api/v1/sessions", Some(body)).await
    }

    pub async fn fork(&self, id: &str, body: serde_json::Value) -> anyhow::Result<Session> {
        self.json(Method::POST, &format!("/api/v1/sessions/{id}/fork"), Some(body)).await
    }

    pub async fn get(&self, id: &str) -> anyhow::Result<Session> {
        self.json(Method::GET, &format!("/api/v1/sessions/{id}"), None).await
    }

    pub async fn list(&self) -> anyhow::Result<Vec<Session>> {
        self.json(Method::GET, "/api/v1/sessions", None).await
    }

    pub async fn delete(&self, id: &str) -> anyhow::Result<()> {
        let resp = self.send(Method::DELETE, &format!("/api/v1/sessions/{id}"), None).await?;
        debug_assert!(resp.status() == StatusCode::NO_CONTENT || resp.status().is_success());
        Ok(())
    }

    pub async fn exec(&self, id: &str, body: &ExecBody) -> anyhow::Result<ExecResult> {
        self.json(Method::POST, &format!("/api/v1/sessions/{id}/exec"), Some(serde_json::to_value(body)?)).await
    }

    pub async fn ports(&self, id: &str) -> anyhow::Result<Vec<Port>> {
        self.json(Method::GET, &format!("/api/v1/sessions/{id}/ports"), None).await
    }

    pub async fn start_agent_run(&self, id: &str, prompt: &str) -> anyhow::Result<mayfly_proto::api::AgentRun> {
        self.json(Method::POST, &format!("/api/v1/sessions/{id}/agent/runs"), Some(serde_json::json!({ "prompt": prompt }))).await
    }

    pub async fn cancel_agent_run(&self, id: &str, run: &str) -> anyhow::Result<mayfly_proto::api::AgentRun> {
        self.json(Method::POST, &format!("/api/v1/sessions/{id}/agent/runs/{run}/cancel"), None).await
    }

    /// `ws://…/api/v1/sessions/{id}/events`
    pub fn events_url(&self, id: &str) -> String {
        let ws = self.base.replacen("http", "ws", 1);
        format!("{ws}/api/v1/sessions/{id}/events")
    }

    /// `ws://…/api/v1/sessions/{id}/pty?…`
    pub fn pty_url(&self, id: &str, cols: u16, rows: u16) -> String {
        let ws = self.base.replacen("http", "ws", 1);
        format!("{ws}/api/v1/sessions/{id}/pty?cols={cols}&rows={rows}")
    }
}
