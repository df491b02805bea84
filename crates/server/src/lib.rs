//! The Mayfly control plane: sessions (state machine, store, reaper, port watching) and the
//! REST + WebSocket API that serves them. `mayfly serve` calls [`run`].
//!
//! * [`accounts`] — users, API tokens, sign-ins, quotas, the audit log; [`access`] — who may
//!   touch which session (the only maker of [`access::SessionRef`]).
//! * [`config`] — [`ServerConfig`]: defaults, TOML file, `MAYFLY_*` overrides.
//! * [`manager`] — [`manager::SessionManager`] and the session lifecycle.
//! * [`store`] — [`store::SessionStore`] and its SQLite implementation.
//! * [`api`] — the HTTP surface ([`router`]), documented in `src/openapi.json`.
//! * [`preview`] — preview URLs: the Host-routed reverse proxy into each VM, and its access rules.
//! * [`listen`] — serving HTTP connections (header timeout, smuggling guard, graceful shutdown).
//! * [`users`] — user sign-in: [`users::oidc`], the OpenID Connect relying party.
//! * `ide` — the browser IDE's pages and assets (`web/dist`, embedded).
//!
//! Not here: VM details (`mayfly-vm`), image building (`mayfly-image`).

pub mod access;
pub mod accounts;
pub mod agent;
pub mod api;
pub mod cluster;
mod auth;
pub mod egress;
pub mod config;
mod error;
mod ide;
pub mod images;
pub mod listen;
pub mod manager;
mod metrics;
pub mod preview;
pub mod ratelimit;
pub mod redacted;
pub mod secrets;
mod server;
pub mod store;
pub mod users;
pub mod vmhost;

pub use api::{router, AppState};
pub use config::ServerConfig;
pub use server::{build_state, run, Server};
