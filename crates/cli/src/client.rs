//! A small typed client for the Mayfly API, used by the session verbs.

use anyhow::{anyhow, Context};
use mayfly_proto::api::{ErrorBody, ExecBody, ExecResult, Port, Session};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use std::path::Path;

pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// `MAYFLY_URL` (default the local server) and `MAYFLY_TOKEN` (default `<data_dir>/token`).
    pub fn from_env(data_dir: &Path) -> anyhow::Result<Self> {
        let base = std::env::var("MAYFLY_URL").unwrap_or_else(|_| "http://127.0.0.1:7070".into());
        let token = match std::env::var("MAYFLY_TOKEN") {
            Ok(t) if !t.is_empty() => t,
            _ => std::fs::read_to_string(data_dir.join("token"))
                .map(|t| t.trim().to_string())
                .with_context(|| {
                    format!("no MAYFLY_TOKEN set and no token file at {}; start the server with `mayfly serve` or set MAYFLY_TOKEN", data_dir.join("token").display())
                })?,
        };
        Ok(Self { base: base.trim_end_matches('/').to_string(), token, http: reqwest::Client::new() })
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    async fn send(&self, method: Method, path: &str, body: Option<serde_json::Value>) -> anyhow::Result<reqwest::Response> {
        let mut req = self.http.request(method, format!("{}{}", self.base, path)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach the Mayfly server at {}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(e) => Err(anyhow!("{} ({})", e.error.message, e.error.code)),
            Err(_) => Err(anyhow!("server answered {status}: {text}")),
        }
    }

    async fn json<T: DeserializeOwned>(&self, method: Method, path: &str, body: Option<serde_json::Value>) -> anyhow::Result<T> {
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
