//! The SSH door: `ssh <session-id>@host -p PORT` reaches a session's VM without an sshd or a
//! network device in it. The gateway speaks SSH (`russh`) and maps each channel onto the
//! session's guest channel through the [`SessionManager`]:
//!
//! * sign-in with a user's registered public key; the user name is the session id
//!   ([`handler`]); no passwords;
//! * `session` channels — shell (with `pty-req`, `window-change`, `env`, signals, the exit
//!   status), `exec`, the `sftp` subsystem (the guest's own `sftp-server`) ([`session_channel`]);
//! * `direct-tcpip` to a port on the VM's loopback ([`tunnel`]);
//! * keep-alives; a cap on channels per connection and on connections;
//! * an open channel counts as session activity (no pause, no idle timeout while it is open).
//!
//! A connection ends when its session ends (with a message), and all of them when the server
//! stops. This crate uses mayfly-server's public interface only; the server knows nothing of it.

pub mod agent;
pub mod handler;
pub mod host_key;
pub mod session_channel;
pub mod tunnel;

use anyhow::Context;
use mayfly_proto::api::SessionState;
use mayfly_server::accounts::limiter::FailureLimiter;
use mayfly_server::manager::SessionManager;
use russh::Disconnect;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Open channels (sessions and forwards) per connection.
pub const MAX_CHANNELS: usize = 64;
/// Connections at once, signed in or not.
pub const MAX_CONNECTIONS: usize = 512;
/// Time a client has to sign in.
const LOGIN_GRACE: Duration = Duration::from_secs(60);
const KEEPALIVE: Duration = Duration::from_secs(30);
/// How long connections get to close at a stop.
const DRAIN: Duration = Duration::from_secs(5);
/// An open channel marks its session active this often, traffic or not.
const ACTIVE_EVERY: Duration = Duration::from_secs(30);

/// Marks the session active every [`ACTIVE_EVERY`] for as long as it is polled: an open SSH
/// channel (a quiet shell, a forward VS Code keeps) counts as use, like a connected IDE page.
/// Dead clients are found by keep-alives; the session's maximum lifetime still applies.
pub(crate) async fn keep_active(activity: &mayfly_server::manager::Activity) {
    loop {
        tokio::time::sleep(ACTIVE_EVERY).await;
        activity.touch();
    }
}

/// What every connection shares.
pub struct Shared {
    pub manager: Arc<SessionManager>,
    pub limiter: FailureLimiter,
    pub max_channels: usize,
}

/// A running gateway.
pub struct Gateway {
    addr: SocketAddr,
    fingerprint: String,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Gateway {
    /// Binds `listen`, loads (or makes) the host key at `host_key` and starts accepting.
    pub async fn start(manager: Arc<SessionManager>, listen: SocketAddr, host_key: &Path) -> anyhow::Result<Gateway> {
        let key = host_key::load_or_generate(host_key)?;
        let fingerprint = key.fingerprint(russh::keys::HashAlg::Sha256).to_string();
        let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen for SSH on {listen}"))?;
        let addr = listener.local_addr()?;
        manager.set_ssh_port(addr.port());
        let settings = manager.accounts().settings();
        let limiter = FailureLimiter::new(settings.max_failures, settings.failure_window);
        let shared = Arc::new(Shared { manager, limiter, max_channels: MAX_CHANNELS });
        let config = Arc::new(russh::server::Config {
            server_id: russh::SshId::Standard(format!("SSH-2.0-mayfly_{}", env!("CARGO_PKG_VERSION")).into()),
            methods: russh::MethodSet::from(&[russh::MethodKind::PublicKey][..]),
            keys: vec![key],
            auth_rejection_time: Duration::from_millis(500),
            auth_rejection_time_initial: Some(Duration::ZERO),
            inactivity_timeout: None,
            keepalive_interval: Some(KEEPALIVE),
            keepalive_max: 3,
            nodelay: true,
            max_auth_attempts: 6,
            ..Default::default()
        });
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(accept_loop(listener, config, shared, cancel.clone(), tracker.clone()));
        tracing::info!(%addr, %fingerprint, "SSH gateway listening");
        Ok(Gateway { addr, fingerprint, cancel, tracker })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `SHA256:…` of the host key.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Stops accepting and disconnects every client ("the server is shutting down").
    pub async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(DRAIN, self.tracker.wait()).await.is_err() {
            tracing::warn!("SSH connections did not close within {DRAIN:?}");
        }
    }
}

async fn accept_loop(listener: TcpListener, config: Arc<russh::server::Config>, shared: Arc<Shared>, cancel: CancellationToken, tracker: TaskTracker) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let (socket, peer) = tokio::select! {
            () = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("SSH accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if open.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            tracing::warn!(%peer, "SSH connection refused: {MAX_CONNECTIONS} open");
            drop(socket);
            continue;
        }
        open.fetch_add(1, Ordering::SeqCst);
        let (config, shared, cancel, open) = (config.clone(), shared.clone(), cancel.clone(), open.clone());
        tracker.spawn(async move {
            connection(socket, peer, config, shared, cancel).await;
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

async fn connection(socket: tokio::net::TcpStream, peer: SocketAddr, config: Arc<russh::server::Config>, shared: Arc<Shared>, cancel: CancellationToken) {
    let (signed_in_tx, signed_in) = oneshot::channel();
    let manager = shared.manager.clone();
    let handler = handler::Conn::new(shared, Some(peer), signed_in_tx);
    let running = match russh::server::run_stream(config, socket, handler).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%peer, "SSH connection set-up failed: {e}");
            return;
        }
    };
    let handle = running.handle();
    let mut running = std::pin::pin!(running);
    let reason = tokio::select! {
        r = &mut running => {
            if let Err(e) = r {
                tracing::debug!(%peer, "SSH connection ended: {e}");
            }
            return;
        }
        reason = session_over(&manager, signed_in) => reason,
        () = cancel.cancelled() => "mayfly: the server is shutting down".to_string(),
    };
    tracing::info!(%peer, "closing SSH connection: {reason}");
    let _ = handle.disconnect(Disconnect::ByApplication, reason, "en".into()).await;
    let _ = tokio::time::timeout(DRAIN, running).await;
}

/// Resolves with the reason to disconnect: no sign-in in time, or the session ended.
async fn session_over(manager: &SessionManager, signed_in: oneshot::Receiver<String>) -> String {
    let id = match tokio::time::timeout(LOGIN_GRACE, signed_in).await {
        Ok(Ok(id)) => id,
        // Refused: the handler disconnects by itself.
        Ok(Err(_)) => return std::future::pending().await,
        Err(_) => return "mayfly: sign-in timed out".into(),
    };
    let ended = format!("mayfly: session {id} has ended");
    let Some(mut state) = manager.watch_state(&id) else { return ended };
    loop {
        if !matches!(*state.borrow_and_update(), SessionState::Ready | SessionState::Creating) {
            return ended;
        }
        if state.changed().await.is_err() {
            return ended;
        }
    }
}
