//! SSH agent forwarding (`agent_listen`): a Unix socket in the VM whose clients (`ssh-add`,
//! `git` over SSH) are relayed to the SSH client's agent through the host. The directory is
//! root's only (mode 0700), the socket goes when the stream ends, and no key is ever here: only
//! the agent protocol's requests and answers pass.

use crate::egress::HostLink;
use crate::serve::finish;
use mayfly_proto::msg::{agent_socket_path, valid_agent_id, Ctrl, ErrorKind, OpenRequest};
use mayfly_proto::mux::{Event, Stream, StreamReceiver};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Removes the agent's directory when dropped.
struct SocketDir(std::path::PathBuf);

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bind(path: &Path) -> std::io::Result<(UnixListener, SocketDir)> {
    let dir = path.parent().ok_or_else(|| std::io::Error::other("socket path has no directory"))?;
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir(dir)?;
    let guard = SocketDir(dir.to_path_buf());
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok((listener, guard))
}

pub async fn serve(id: &str, stream: Stream, host: HostLink) {
    let (tx, mut rx) = stream.split();
    if !valid_agent_id(id) {
        return finish(&tx, &Ctrl::error(ErrorKind::InvalidInput, format!("bad agent id {id:?}"))).await;
    }
    let path = agent_socket_path(id);
    let (listener, _dir) = match bind(Path::new(&path)) {
        Ok(l) => l,
        Err(e) => return finish(&tx, &Ctrl::io_error(&path, &e)).await,
    };
    if tx.send_ctrl(&Ctrl::Ok).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((sock, _)) => {
                    tokio::spawn(connect(id.to_string(), sock, host.clone()));
                }
                Err(e) => {
                    tracing::warn!("agent socket accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            ev = rx.recv() => if matches!(ev, Event::Eof | Event::Reset(_)) {
                return;
            },
        }
    }
}

/// One agent client: an `agent_connect` stream to the host, then bytes both ways.
async fn connect(id: String, sock: UnixStream, host: HostLink) {
    let Some(mux) = host.borrow().clone() else { return };
    let Ok(stream) = mux.open(&OpenRequest::AgentConnect { id }).await else { return };
    let (tx, mut rx): (_, StreamReceiver) = stream.split();
    match tokio::time::timeout(CONNECT_TIMEOUT, rx.recv()).await {
        Ok(Event::Ctrl(Ctrl::Connected)) => crate::tunnel::relay(sock, &tx, &mut rx).await,
        other => tracing::debug!("agent connection refused by the host: {other:?}"),
    }
}
