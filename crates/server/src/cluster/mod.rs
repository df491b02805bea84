//! Several hosts, one deployment (issue 17): nodes share the store (PostgreSQL), register with a
//! lease ([`node`], [`heartbeat`]), place new sessions ([`placement`]) and serve every session,
//! forwarding a request for another node's session to it ([`route`], [`forward`], signed by
//! [`node_auth`]). A single host with SQLite is a cluster of one: it registers itself and routes
//! nothing.

pub mod forward;
pub mod heartbeat;
pub mod keys;
pub mod node;
pub mod node_auth;
pub mod placement;
pub mod route;
pub mod settings;
pub mod store;
pub mod view;

use axum::middleware::from_fn_with_state;
use std::sync::Arc;

/// `app` behind the cluster's two layers: node-to-node signatures checked first, then (on a
/// shared database) requests for other nodes' sessions forwarded and creates placed.
pub fn layer(app: axum::Router, cluster: &Arc<node::Cluster>, cfg: &crate::config::ServerConfig, control_port: u16) -> axum::Router {
    let auth = cfg.cluster_secret.as_ref().map(|s| Arc::new(node_auth::NodeAuth::new(cluster.name(), s.expose().as_bytes())));
    let app = match (&auth, cluster.shared()) {
        (Some(a), true) => {
            let router = Arc::new(route::Router {
                cluster: cluster.clone(),
                forwarder: forward::Forwarder::new(a.clone()),
                preview_domain: cfg.preview_domain.clone(),
                control_port,
                max_body_bytes: cfg.max_body_bytes,
                default_image: cfg.default_image.clone(),
            });
            app.layer(from_fn_with_state(router, route::route))
        }
        _ => app,
    };
    app.layer(from_fn_with_state(auth, node_auth::accept_forwarded))
}
