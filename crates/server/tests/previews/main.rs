//! Preview URLs end to end: a real server, real VMs, real dev servers inside them (python's
//! `http.server` and the stdlib-only `srv.py`), real HTTP and WebSocket clients.
//!
//! * [`protocols`] — detection (0.0.0.0, 127.0.0.1, `::`, `::1`), downloads, uploads (sized and
//!   chunked), SSE, WebSocket, keep-alive, a server that dies mid-response, the path fallback;
//!   prints the numbers (listen → URL, throughput and latency against the guest daemon).
//! * [`access`] — private by default, the redirect exchange, bearer, public, another session's
//!   cookie, bad addresses, smuggling, slow clients, a session that goes away, activity.

mod access;
mod helpers;
mod protocols;
