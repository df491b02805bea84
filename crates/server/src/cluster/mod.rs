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
