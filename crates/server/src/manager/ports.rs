//! Listening ports of ready sessions and their preview visibility.
//!
//! One task per ready session holds a `watch_ports` stream: the guest sends the full set of
//! listening TCP ports on every change; the task diffs it against the last set and broadcasts
//! `port_opened` / `port_closed`. Visibility is stored per (session, port), private by default,
//! and may be set before the port opens.

use super::{Activity, Envelope, LiveSession, SessionError, SessionManager};
use mayfly_proto::api::{Port, SessionEvent, Visibility};
use mayfly_proto::msg::{Ctrl, ListenPort, OpenRequest};
use mayfly_proto::mux::{Event, Stream};
use mayfly_vm::Vm;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Pause before re-opening a port watch that ended (guest daemon restart, channel reconnect).
const REWATCH_DELAY: Duration = Duration::from_secs(1);
/// Limit for the guest to dial a port and answer `connected` (or refuse).
const TUNNEL_TIMEOUT: Duration = Duration::from_secs(10);

/// `scheme://host[:port]` → (`scheme`, `:port` or empty).
fn scheme_and_port(public_url: &str) -> (&str, String) {
    let (scheme, rest) = public_url.split_once("://").unwrap_or(("http", public_url));
    let authority = rest.split('/').next().unwrap_or("");
    let host_end = authority.rfind(']').map(|i| i + 1).unwrap_or(0);
    let port = match authority[host_end..].rsplit_once(':') {
        Some((_, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => format!(":{p}"),
        _ => String::new(),
    };
    (scheme, port)
}

/// `http://<port>-<session>.<preview_domain>[:<server port>]/`, the server port and scheme
/// taken from the public URL.
pub fn preview_url(public_url: &str, preview_domain: &str, session: &str, port: u16) -> String {
    let (scheme, server_port) = scheme_and_port(public_url);
    format!("{scheme}://{port}-{session}.{preview_domain}{server_port}/")
}

impl SessionManager {
    fn port_view(&self, s: &LiveSession, port: u16) -> Port {
        let visibility = s.visibility.lock().expect("visibility lock").get(&port).copied().unwrap_or(Visibility::Private);
        Port { port, url: preview_url(&self.public_url, &self.cfg.preview_domain, &s.id, port), visibility }
    }

    /// The preview URL of `port` of session `id` (whether or not it exists).
    pub fn preview_url_of(&self, id: &str, port: u16) -> String {
        preview_url(&self.public_url, &self.cfg.preview_domain, id, port)
    }

    /// The current listening ports of ready session `id`.
    pub async fn ports(&self, sref: &crate::access::SessionRef) -> Result<Vec<Port>, SessionError> {
        let id = sref.id();
        let (s, _) = self.ready_vm(id).await?;
        let open: Vec<u16> = s.ports.lock().expect("ports lock").iter().copied().collect();
        Ok(open.into_iter().map(|p| self.port_view(&s, p)).collect())
    }

    /// The `(uid, gid)` of the session's VM (its own, one per VM), for helpers that act for the
    /// session on the host (the agent's browser) and must not be able to do more than it.
    pub async fn vm_account(&self, sref: &crate::access::SessionRef) -> Result<Option<(u32, u32)>, SessionError> {
        let (_, vm) = self.ready_vm(sref.id()).await?;
        Ok(self.host.vm_account(vm.id()))
    }

    /// Ports of `id` for a new event subscriber (empty unless ready).
    pub(super) fn open_ports(&self, id: &str) -> Vec<Port> {
        let Some(s) = self.live(id) else { return Vec::new() };
        let open: Vec<u16> = s.ports.lock().expect("ports lock").iter().copied().collect();
        open.into_iter().map(|p| self.port_view(&s, p)).collect()
    }

    pub async fn set_port_visibility(&self, sref: &crate::access::SessionRef, port: u16, visibility: Visibility) -> Result<Port, SessionError> {
        let id = sref.id();
        if port == 0 {
            return Err(SessionError::Invalid("port must be 1-65535".into()));
        }
        let (s, _) = self.ready_vm(id).await?;
        self.store.set_port_visibility(id, port, visibility).await?;
        s.visibility.lock().expect("visibility lock").insert(port, visibility);
        Ok(self.port_view(&s, port))
    }

    /// Visibility of a session's port, for the preview proxy (`None`: no such live session).
    pub fn port_visibility(&self, id: &str, port: u16) -> Option<Visibility> {
        let s = self.live(id)?;
        let v = s.visibility.lock().expect("visibility lock").get(&port).copied();
        Some(v.unwrap_or(Visibility::Private))
    }

    /// A TCP connection to `127.0.0.1:<port>` (`[::1]` fallback) inside ready session `id`, for
    /// the preview proxy. Counts as activity; the returned [`Activity`] lets the proxy touch the
    /// session while bytes flow. Nothing listening is [`SessionError::Guest`] `ConnectionRefused`.
    pub async fn open_tunnel(&self, sref: &crate::access::SessionRef, port: u16) -> Result<(Stream, Activity), SessionError> {
        let id = sref.id();
        let (s, vm) = self.ready_vm(id).await?;
        let vm_error = |source: Box<dyn std::error::Error + Send + Sync>| SessionError::Vm { id: id.into(), what: "tunnel", source };
        let opened = tokio::time::timeout(TUNNEL_TIMEOUT, async {
            let mut stream = vm.channel().open(&OpenRequest::Tunnel { port }).await.map_err(|e| vm_error(Box::new(e)))?;
            match stream.recv().await {
                Event::Ctrl(Ctrl::Connected) => Ok(stream),
                Event::Ctrl(Ctrl::Error { kind, message }) => Err(SessionError::Guest { kind, message }),
                other => Err(vm_error(format!("unexpected reply {other:?}").into())),
            }
        });
        match opened.await {
            Ok(Ok(stream)) => Ok((stream, self.client_activity(&s))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(vm_error(format!("no answer within {TUNNEL_TIMEOUT:?}").into())),
        }
    }

    pub(super) async fn watch_ports(self: Arc<Self>, s: Arc<LiveSession>, vm: Arc<dyn Vm>) {
        // The session is ready: its workspace watcher starts alongside (see `file_watch`).
        tokio::spawn(self.clone().watch_files(s.clone(), vm.clone()));
        loop {
            let opened = tokio::select! {
                r = vm.channel().open(&OpenRequest::WatchPorts) => r,
                _ = s.cancel.cancelled() => return,
            };
            match opened {
                Err(e) => tracing::debug!(session = %s.id, "cannot watch ports: {e}"),
                Ok(mut stream) => loop {
                    let ev = tokio::select! {
                        ev = stream.recv() => ev,
                        _ = s.cancel.cancelled() => return,
                    };
                    match ev {
                        Event::Ctrl(Ctrl::Ports { ports }) => self.update_ports(&s, &ports),
                        Event::Ctrl(Ctrl::Error { message, .. }) => {
                            tracing::warn!(session = %s.id, "guest refused to watch ports: {message}");
                            break;
                        }
                        Event::Eof | Event::Reset(_) => break,
                        Event::Ctrl(_) | Event::Data { .. } => {}
                    }
                },
            }
            tokio::select! {
                _ = tokio::time::sleep(REWATCH_DELAY) => {}
                _ = s.cancel.cancelled() => return,
            }
        }
    }

    fn update_ports(&self, s: &LiveSession, listening: &[ListenPort]) {
        let now: BTreeSet<u16> = listening.iter().map(|p| p.port).collect();
        let before = std::mem::replace(&mut *s.ports.lock().expect("ports lock"), now.clone());
        for port in now.difference(&before) {
            let event = SessionEvent::PortOpened { session: s.id.clone(), port: self.port_view(s, *port) };
            tracing::info!(session = %s.id, port, "port opened");
            let _ = self.events.send(Envelope { seq: None, event });
        }
        for port in before.difference(&now) {
            tracing::info!(session = %s.id, port, "port closed");
            let _ = self.events.send(Envelope { seq: None, event: SessionEvent::PortClosed { session: s.id.clone(), port: *port } });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::preview_url;

    #[test]
    fn preview_urls() {
        let cases = [
            ("http://127.0.0.1:7070", "localhost", "http://8000-sabc.localhost:7070/"),
            ("http://localhost:7070/", "localhost", "http://8000-sabc.localhost:7070/"),
            ("https://ide.example.com", "preview.example.com", "https://8000-sabc.preview.example.com/"),
            ("http://[::1]:9000/x", "localhost", "http://8000-sabc.localhost:9000/"),
            ("http://[::1]/", "localhost", "http://8000-sabc.localhost/"),
        ];
        for (public, domain, want) in cases {
            assert_eq!(preview_url(public, domain, "sabc", 8000), want, "{public}");
        }
    }
}
