//! Agent forwarding (`ssh -A`): on the client's `auth-agent-req`, the guest listens on a Unix
//! socket ([`SessionManager::listen_agent`]); shells and commands started afterwards on the
//! connection get `SSH_AUTH_SOCK` pointing at it. Each program that connects to it gets an
//! `auth-agent@openssh.com` channel to the client's own agent: the keys stay on the client,
//! only the agent protocol's requests and signatures pass. The socket goes with the connection.

use mayfly_proto::msg::Ctrl;
use mayfly_server::access::SessionRef;
use mayfly_server::manager::{Activity, AgentListener, SessionManager};
use std::sync::{Arc, Mutex};

/// The guest path of a connection's forwarded agent socket, once there is one.
#[derive(Clone, Default)]
pub struct AgentSocket(Arc<Mutex<Option<String>>>);

impl AgentSocket {
    pub fn path(&self) -> Option<String> {
        self.0.lock().expect("agent socket lock").clone()
    }

    fn set(&self, path: String) {
        *self.0.lock().expect("agent socket lock") = Some(path);
    }
}

/// Aborts the connection's agent relay when the connection ends.
pub struct AgentTask(tokio::task::JoinHandle<()>);

impl Drop for AgentTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts forwarding for a connection (`handle` opens channels to its client).
pub async fn start(manager: &SessionManager, sref: &SessionRef, socket: &AgentSocket, handle: russh::server::Handle) -> Result<AgentTask, String> {
    let listener = manager.listen_agent(sref).await.map_err(|e| e.to_string())?;
    socket.set(listener.path.clone());
    tracing::info!(session = sref.id(), path = %listener.path, "ssh agent forwarding on");
    Ok(AgentTask(tokio::spawn(serve(listener, handle))))
}

async fn serve(mut listener: AgentListener, handle: russh::server::Handle) {
    while let Some(stream) = listener.incoming.recv().await {
        let handle = handle.clone();
        tokio::spawn(async move {
            match handle.channel_open_agent().await {
                Ok(channel) => {
                    if stream.send_ctrl(&Ctrl::Connected).await.is_ok() {
                        crate::tunnel::relay(channel, stream, Activity::none()).await;
                    }
                }
                Err(e) => {
                    tracing::debug!("the SSH client refused an agent channel: {e}");
                    let reply = Ctrl::error(mayfly_proto::msg::ErrorKind::ConnectionRefused, "the SSH client's agent refused");
                    if stream.send_ctrl(&reply).await.is_ok() {
                        let _ = stream.send_eof().await;
                    }
                }
            }
        });
    }
}
