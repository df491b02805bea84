//! One SSH connection: public-key sign-in (the user name is the session id), then its channels.
//!
//! Sign-in: an offered key that is not registered is turned away before its signature is
//! checked; a verified key becomes its user's [`Caller`], who must be able to open the session
//! (`manager.open`, which audits an admin's access to someone else's). A verified key that may
//! not open the session — unknown, ended or someone else's, the same answer — is let in only to
//! be disconnected at once with a message saying so. Failures count against the client address
//! ([`mayfly_server::accounts::limiter::FailureLimiter`]) and are written to the audit log: a
//! verified key refused for the session at once, a connection whose keys were all unknown when
//! it ends (one entry, however many keys it offered).

use crate::session_channel::{self, ChannelCtx};
use crate::{tunnel, Shared};
use mayfly_proto::api::SessionState;
use mayfly_server::access::{Action, SessionRef};
use mayfly_server::accounts::{Caller, Principal};
use russh::keys::HashAlg;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, Disconnect};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// The answer for a session the key may not open (whatever the reason).
pub fn refusal(session: &str) -> String {
    format!("mayfly: no session {session:?} for this key (it does not exist, has ended, or is not yours)")
}

pub struct Conn {
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    sref: Option<SessionRef>,
    /// Why a verified key is disconnected right after sign-in.
    refused: Option<String>,
    /// Told the session id once signed in (the connection task then watches the session).
    signed_in: Option<oneshot::Sender<String>>,
    channels: Arc<AtomicUsize>,
    agent: crate::agent::AgentSocket,
    /// Relays the forwarded agent's connections while the connection lives.
    agent_task: Option<crate::agent::AgentTask>,
    /// Keys offered that nobody registered (recorded as one failure if no key signs in).
    unknown_keys: Vec<String>,
    /// The session id asked for.
    user: String,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // A connection that ends with no registered key offered: one failed attempt.
        if self.sref.is_some() || self.refused.is_some() || self.unknown_keys.is_empty() || self.signed_in.is_none() {
            return;
        }
        let key = self.limiter_key();
        self.shared.limiter.failed(&[&key], Instant::now());
        let (shared, ip, user, keys) = (self.shared.clone(), self.ip(), std::mem::take(&mut self.user), std::mem::take(&mut self.unknown_keys));
        tracing::warn!(?ip, session = %user, ?keys, "ssh sign-in refused: no registered key");
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let detail = serde_json::json!({"session": user, "reason": "unknown key", "fingerprints": keys});
                shared.manager.accounts().audit_ssh_refusal(None, ip.as_deref(), detail).await;
            });
        }
    }
}

/// Counts one open channel of a connection while it lives.
struct ChannelSlot(Arc<AtomicUsize>);

impl Drop for ChannelSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Conn {
    pub fn new(shared: Arc<Shared>, peer: Option<SocketAddr>, signed_in: oneshot::Sender<String>) -> Conn {
        Conn {
            shared,
            peer,
            sref: None,
            refused: None,
            signed_in: Some(signed_in),
            channels: Arc::new(AtomicUsize::new(0)),
            agent: Default::default(),
            agent_task: None,
            unknown_keys: Vec::new(),
            user: String::new(),
        }
    }

    fn ip(&self) -> Option<String> {
        self.peer.map(|p| p.ip().to_string())
    }

    fn limiter_key(&self) -> String {
        format!("ssh:{}", self.ip().unwrap_or_default())
    }

    /// A channel slot, or `None` when the connection has its maximum open.
    fn take_slot(&self) -> Option<ChannelSlot> {
        let n = self.channels.fetch_add(1, Ordering::SeqCst);
        let slot = ChannelSlot(self.channels.clone());
        (n < self.shared.max_channels).then_some(slot)
    }

    async fn failed(&self, who: Option<&Principal>, user: &str, reason: &str, fingerprint: &str) {
        let key = self.limiter_key();
        self.shared.limiter.failed(&[&key], Instant::now());
        tracing::warn!(ip = ?self.ip(), session = user, fingerprint, reason, "ssh sign-in refused");
        let detail = serde_json::json!({"session": user, "reason": reason, "fingerprint": fingerprint});
        self.shared.manager.accounts().audit_ssh_refusal(who, self.ip().as_deref(), detail).await;
    }
}

fn fingerprint(key: &russh::keys::PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

impl russh::server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_publickey_offered(&mut self, user: &str, offer: PublicKeyOffer<'_>) -> Result<Auth, Self::Error> {
        let key = self.limiter_key();
        if let Err(wait) = self.shared.limiter.check(&[&key], Instant::now()) {
            tracing::warn!(ip = ?self.ip(), session = user, "ssh sign-in rate limited for {} s", wait.as_secs());
            return Ok(Auth::reject());
        }
        let fp = fingerprint(offer.public_key);
        self.user = user.chars().take(64).collect();
        match self.shared.manager.accounts().store().ssh_key_by_fingerprint(&fp).await {
            Ok(Some(_)) => Ok(Auth::Accept),
            Ok(None) => {
                if self.unknown_keys.len() < 8 {
                    self.unknown_keys.push(fp);
                }
                Ok(Auth::reject())
            }
            Err(e) => {
                tracing::error!("cannot look up an SSH key: {}", mayfly_proto::error_chain(&e));
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_publickey(&mut self, user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        let fp = fingerprint(key.public_key);
        let limiter_key = self.limiter_key();
        if self.shared.limiter.check(&[&limiter_key], Instant::now()).is_err() {
            return Ok(Auth::reject());
        }
        let who = match self.shared.manager.accounts().ssh_principal(&fp).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                self.failed(None, user, "unknown key", &fp).await;
                return Ok(Auth::reject());
            }
            Err(e) => {
                tracing::error!("cannot look up an SSH key: {}", mayfly_proto::error_chain(&e));
                return Ok(Auth::reject());
            }
        };
        let caller = Caller { who: who.clone(), ip: self.ip() };
        let manager = &self.shared.manager;
        let live = |id: &str| {
            manager.watch_state(id).is_some_and(|rx| matches!(*rx.borrow(), SessionState::Ready | SessionState::Creating))
        };
        match manager.open(&caller, user, Action::Terminal).await {
            Ok(sref) if live(user) => {
                tracing::info!(ip = ?self.ip(), session = user, who = %who.label(), "ssh signed in");
                self.sref = Some(sref);
            }
            _ => {
                self.failed(Some(&who), user, "session not found", &fp).await;
                self.refused = Some(refusal(user));
            }
        }
        Ok(Auth::Accept)
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        if let Some(message) = self.refused.take() {
            session.disconnect(Disconnect::ByApplication, &message, "en")?;
            return Ok(());
        }
        if let (Some(tx), Some(sref)) = (self.signed_in.take(), &self.sref) {
            let _ = tx.send(sref.id().to_string());
        }
        Ok(())
    }

    async fn channel_open_session(&mut self, channel: Channel<Msg>, reply: ChannelOpenHandle, _: &mut Session) -> Result<(), Self::Error> {
        let Some(sref) = self.sref.clone() else {
            reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
            return Ok(());
        };
        let Some(slot) = self.take_slot() else {
            tracing::warn!(session = sref.id(), "ssh channel refused: {} open", self.shared.max_channels);
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        reply.accept().await;
        let ctx = ChannelCtx { manager: self.shared.manager.clone(), sref, agent: self.agent.clone() };
        tokio::spawn(async move {
            session_channel::run(channel, ctx).await;
            drop(slot);
        });
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        _originator: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(sref) = self.sref.clone() else {
            reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
            return Ok(());
        };
        let port = match u16::try_from(port) {
            Ok(p) if p != 0 && tunnel::is_vm_local(host) => p,
            _ => {
                let reason = format!("only ports on the session's own loopback can be forwarded, not {host}:{port}");
                reply.reject(ChannelOpenFailure::Other { code: 1, reason }).await;
                return Ok(());
            }
        };
        let Some(slot) = self.take_slot() else {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        // Opened on its own task: a slow VM must not hold up the connection's other channels.
        let manager = self.shared.manager.clone();
        tokio::spawn(async move {
            match manager.open_tunnel(&sref, port).await {
                Ok((stream, activity)) => {
                    reply.accept().await;
                    tunnel::relay(channel, stream, activity).await;
                }
                Err(e) => {
                    tracing::debug!(session = sref.id(), port, "ssh forward refused: {e}");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                }
            }
            drop(slot);
        });
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _cols: u32,
        _rows: u32,
        _pix_w: u32,
        _pix_h: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(&mut self, channel: ChannelId, name: &str, _value: &str, session: &mut Session) -> Result<(), Self::Error> {
        if session_channel::valid_env_name(name) {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(&mut self, channel: ChannelId, _data: &[u8], session: &mut Session) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn agent_request(&mut self, _channel: ChannelId, session: &mut Session) -> Result<bool, Self::Error> {
        let Some(sref) = self.sref.clone() else { return Ok(false) };
        if self.agent_task.is_some() {
            return Ok(true);
        }
        match crate::agent::start(&self.shared.manager, &sref, &self.agent, session.handle()).await {
            Ok(task) => {
                self.agent_task = Some(task);
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(session = sref.id(), "ssh agent forwarding refused: {e}");
                Ok(false)
            }
        }
    }

    async fn subsystem_request(&mut self, channel: ChannelId, name: &str, session: &mut Session) -> Result<(), Self::Error> {
        if name == "sftp" {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }
}
