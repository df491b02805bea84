//! The daemon's connection loop and stream dispatch.
//!
//! `forever { transport → Mux::connect(Guest) → accept streams until the mux closes }`. Every
//! accepted stream runs in its own task, so one failing stream never affects another, and a task
//! that panics only loses its own stream. State that outlives a connection (persistent
//! terminals) lives in [`Daemon`].

use crate::pty::Terminals;
use crate::transport::Listener;
use mayfly_proto::msg::{Ctrl, OpenRequest};
use mayfly_proto::mux::{Mux, Role, Stream, StreamSender};
use std::sync::Arc;
use std::time::Duration;

/// Pause after a failed transport or handshake before the next attempt.
const RETRY_DELAY: Duration = Duration::from_millis(200);

/// State shared by every connection of the daemon's life.
#[derive(Clone)]
pub struct Daemon {
    pub terminals: Arc<Terminals>,
    /// The current host connection, for streams the guest opens (egress).
    pub host: Arc<tokio::sync::watch::Sender<Option<Mux>>>,
}

impl Daemon {
    /// `terminal_idle`: how long a persistent terminal may stay detached before it is killed.
    pub fn new(terminal_idle: Duration) -> Self {
        let terminals = Terminals::new(terminal_idle);
        terminals.start_reaper();
        Daemon { terminals, host: Arc::new(tokio::sync::watch::channel(None).0) }
    }
}

/// Serves host connections from `listener` forever.
pub async fn run(mut listener: Listener, daemon: Daemon) {
    loop {
        let conn = match listener.next().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("{}", crate::error_chain(&e));
                tokio::time::sleep(RETRY_DELAY).await;
                continue;
            }
        };
        let handshake = Mux::connect_with(conn.read, conn.write, Role::Guest, conn.on_peer_restart);
        let mux = match listener.handshake_timeout() {
            Some(t) => match tokio::time::timeout(t, handshake).await {
                Ok(m) => m,
                Err(_) => {
                    tracing::warn!("host sent no HELLO within {t:?}");
                    continue;
                }
            },
            None => handshake.await,
        };
        match mux {
            Ok(mux) => {
                tracing::info!(host_version = %mux.peer().version, "host connected");
                daemon.host.send_replace(Some(mux.clone()));
                serve_connection(&mux, &daemon).await;
                daemon.host.send_replace(None);
                tracing::info!(reason = %mux.closed().await, "host disconnected");
            }
            Err(e) => {
                tracing::warn!("handshake failed: {e}");
                tokio::time::sleep(RETRY_DELAY).await;
            }
        }
    }
}

async fn serve_connection(mux: &Mux, daemon: &Daemon) {
    while let Some((req, stream)) = mux.accept().await {
        tokio::spawn(handle(req, stream, daemon.clone()));
    }
}

/// Runs one stream to its end.
pub async fn handle(req: OpenRequest, stream: Stream, daemon: Daemon) {
    use crate::{exec, files, identity, info, ports, pty, transfer, tunnel, watch};
    match req {
        OpenRequest::Exec(r) => exec::serve(r, stream).await,
        OpenRequest::Pty(r) => pty::serve(r, stream, &daemon.terminals).await,
        OpenRequest::SpareShell { cols, rows, parked } => {
            pty::serve_spare(cols, rows, parked, stream, &daemon.terminals).await
        }
        OpenRequest::Stat { path } => files::stat(&path, stream).await,
        OpenRequest::List { path } => files::list(&path, stream).await,
        OpenRequest::Mkdir { path } => files::mkdir(&path, stream).await,
        OpenRequest::Rename { from, to } => files::rename(&from, &to, stream).await,
        OpenRequest::Remove { path, recursive } => files::remove(&path, recursive, stream).await,
        OpenRequest::ReadFile { path } => transfer::read_file(&path, stream).await,
        OpenRequest::WriteFile { path, mode } => transfer::write_file(&path, mode, stream).await,
        OpenRequest::WatchPorts => ports::serve(stream).await,
        OpenRequest::WatchFiles { path } => watch::serve(&path, stream).await,
        OpenRequest::Tunnel { port } => tunnel::serve(port, stream).await,
        OpenRequest::Info => info::serve(stream).await,
        OpenRequest::Identity(id) => identity::serve(id, stream).await,
        OpenRequest::AgentListen { id } => crate::agent::serve(&id, stream, daemon.host.subscribe()).await,
        OpenRequest::Egress { .. } | OpenRequest::Credential { .. } | OpenRequest::AgentConnect { .. } => {
            let reply = Ctrl::error(
                mayfly_proto::msg::ErrorKind::Protocol,
                "egress, credential and agent_connect streams are opened by the guest",
            );
            finish(&stream.split().0, &reply).await
        }
    }
}

/// Sends a final CTRL message and EOF. Errors mean the host already went away: nothing to do.
pub(crate) async fn finish(tx: &StreamSender, reply: &Ctrl) {
    if tx.send_ctrl(reply).await.is_ok() {
        let _ = tx.send_eof().await;
    }
}
