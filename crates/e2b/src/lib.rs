//! The E2B door: serves, on one address (`e2b_listen`), E2B's control-plane REST API
//! ([`control`]) and its in-sandbox API "envd" ([`files`], [`process`], [`filesystem`] over the
//! Connect protocol, [`connect`]), so the official E2B SDKs drive Mayfly sessions unchanged.
//!
//! An E2B sandbox is a Mayfly session. Every request turns its key into a
//! [`mayfly_server::accounts::Caller`] ([`auth`]) and every sandbox operation goes through
//! `SessionManager::open`, so the owner rules, limits, egress policy and lifetimes are Mayfly's.
//! Errors take E2B's shapes ([`error`]).

pub mod auth;
pub mod connect;
pub mod control;
pub mod error;
pub mod files;
pub mod filesystem;
pub mod ports;
pub mod process;

use axum::routing::{get, post};
use axum::Router;
use mayfly_server::AppState;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The envd version reported to the SDK: high enough for its current paths (octet-stream
/// uploads, stdin, default user), below features this door does not serve.
pub const ENVD_VERSION: &str = "0.5.7";

/// Shared state of the door.
pub struct Door {
    pub app: AppState,
    /// `get_host(port)` gives `<port>-<id>.<domain>`.
    pub domain: String,
    pub processes: process::Registry,
    pub watchers: filesystem::Watchers,
}

pub type Shared = Arc<Door>;

/// The door's routes.
pub fn router(door: Shared) -> Router {
    Router::new()
        .route("/v2/sandboxes", get(control::list).post(control::create))
        .route("/sandboxes", get(control::list).post(control::create))
        .route("/sandboxes/{id}", get(control::get_one).delete(control::kill))
        .route("/sandboxes/{id}/timeout", post(control::set_timeout))
        .route("/sandboxes/{id}/connect", post(control::connect))
        .route("/v2/sandboxes/{id}/connect", post(control::connect))
        .route("/sandboxes/{id}/refreshes", post(control::refresh))
        .route("/health", get(files::health))
        .route("/files", get(files::download).post(files::upload).layer(axum::extract::DefaultBodyLimit::disable()))
        .route("/process.Process/{method}", post(process::rpc))
        .route("/filesystem.Filesystem/{method}", post(filesystem::rpc))
        .fallback(control::not_found)
        .layer(axum::middleware::from_fn_with_state(door.clone(), ports::route))
        .with_state(door)
}

/// Serves the door on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, app: AppState, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let domain = match listener.local_addr()? {
        a if a.ip().is_loopback() || a.ip().is_unspecified() => format!("localhost:{}", a.port()),
        a => a.to_string(),
    };
    let door = Arc::new(Door { app, domain, processes: process::Registry::default(), watchers: filesystem::Watchers::default() });
    let routes = router(door.clone());
    mayfly_server::listen::serve(listener, routes, shutdown).await?;
    door.processes.end_all();
    Ok(())
}
