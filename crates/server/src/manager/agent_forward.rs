//! SSH agent forwarding for doors (the SSH gateway): [`SessionManager::listen_agent`] makes the
//! guest listen on a Unix socket; each program that connects to it arrives here as an
//! `agent_connect` stream and is handed to the door that asked, which relays it to the SSH
//! client's agent. The socket lives as long as the returned [`AgentListener`].

use super::guest::channel_error;
use super::{SessionError, SessionManager};
use mayfly_proto::msg::{agent_socket_path, Ctrl, ErrorKind, OpenRequest};
use mayfly_proto::mux::{Event, Stream};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Agent connections waiting for their door.
const QUEUE: usize = 16;

/// Open agent listeners by id: (session, where their connections go).
#[derive(Default)]
pub(crate) struct AgentForwards(Mutex<HashMap<String, (String, mpsc::Sender<Stream>)>>);

impl AgentForwards {
    /// Hands an `agent_connect` stream of session `session` to its listener, or answers it
    /// with an error.
    pub(crate) async fn deliver(&self, session: &str, id: &str, stream: Stream) {
        let tx = match self.0.lock().expect("agent forwards lock").get(id) {
            Some((s, tx)) if s == session => Some(tx.clone()),
            _ => None,
        };
        let Some(tx) = tx else {
            let reply = Ctrl::error(ErrorKind::NotFound, "no forwarded agent here (the SSH connection ended)");
            return super::answer(&stream, reply).await;
        };
        if let Err(e) = tx.try_send(stream) {
            let stream = match e {
                mpsc::error::TrySendError::Full(s) | mpsc::error::TrySendError::Closed(s) => s,
            };
            super::answer(&stream, Ctrl::error(ErrorKind::Io, "the forwarded agent is busy")).await;
        }
    }
}

/// A forwarded agent's socket in the guest. Dropping it removes the socket.
pub struct AgentListener {
    /// The socket's path in the guest (for `SSH_AUTH_SOCK`).
    pub path: String,
    /// One stream per program that connected: answer CTRL `connected` (or `error`), then relay.
    pub incoming: mpsc::Receiver<Stream>,
    id: String,
    forwards: Arc<AgentForwards>,
    _listen: Stream,
}

impl Drop for AgentListener {
    fn drop(&mut self) {
        self.forwards.0.lock().expect("agent forwards lock").remove(&self.id);
    }
}

impl SessionManager {
    /// Makes the guest of session `sref` listen for agent clients (see [`AgentListener`]).
    pub async fn listen_agent(&self, sref: &crate::access::SessionRef) -> Result<AgentListener, SessionError> {
        let id = sref.id();
        let (_, vm) = self.ready_vm(id).await?;
        let agent_id = crate::accounts::secret::random(16).to_lowercase();
        let (tx, incoming) = mpsc::channel(QUEUE);
        self.agent_forwards.0.lock().expect("agent forwards lock").insert(agent_id.clone(), (id.to_string(), tx));
        // Registered first: the listener unregisters itself if anything below fails.
        let mut listener_guard = AgentGuard { id: agent_id.clone(), forwards: self.agent_forwards.clone(), armed: true };
        let vm_error = |source: Box<dyn std::error::Error + Send + Sync>| SessionError::Vm { id: id.into(), what: "agent_listen", source };
        let opened = tokio::time::timeout(LISTEN_TIMEOUT, async {
            let mut stream = vm.channel().open(&OpenRequest::AgentListen { id: agent_id.clone() }).await.map_err(|e| channel_error(id, "agent_listen", e))?;
            match stream.recv().await {
                Event::Ctrl(Ctrl::Ok) => Ok(stream),
                Event::Ctrl(Ctrl::Error { kind, message }) => Err(SessionError::Guest { kind, message }),
                other => Err(vm_error(format!("unexpected reply {other:?}").into())),
            }
        })
        .await
        .unwrap_or_else(|_| Err(vm_error(format!("no answer within {LISTEN_TIMEOUT:?}").into())))?;
        listener_guard.armed = false;
        Ok(AgentListener { path: agent_socket_path(&agent_id), incoming, id: agent_id, forwards: self.agent_forwards.clone(), _listen: opened })
    }
}

/// Unregisters a listener whose set-up failed.
struct AgentGuard {
    id: String,
    forwards: Arc<AgentForwards>,
    armed: bool,
}

impl Drop for AgentGuard {
    fn drop(&mut self) {
        if self.armed {
            self.forwards.0.lock().expect("agent forwards lock").remove(&self.id);
        }
    }
}
