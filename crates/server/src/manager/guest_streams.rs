//! Streams a session's guest opens towards the host: `egress` (a program's outbound
//! connection, decided by [`crate::egress`]), `credential` (git asking for a token) and
//! `agent_connect` (a program using a forwarded SSH agent, handed to its door).
//! Anything else is a protocol error. The acceptor holds the session weakly: once the session
//! is gone, its tokens are gone and every request is refused.

use super::repo::credential_for;
use super::{LiveSession, SessionManager};
use mayfly_proto::api::GitCredential;
use mayfly_proto::msg::{Ctrl, ErrorKind, OpenRequest};
use mayfly_proto::mux::Stream;
use mayfly_vm::channel::Acceptor;
use std::sync::{Arc, Weak};

impl SessionManager {
    pub(super) fn guest_acceptor(&self, s: &Arc<LiveSession>) -> Acceptor {
        let egress = self.egress.clone();
        let tokens = Tokens { accounts: self.accounts.clone(), operator: Arc::new(self.cfg.git_credentials.clone()) };
        let session = Arc::downgrade(s);
        let id: Arc<str> = s.id.as_str().into();
        let agents = self.agent_forwards.clone();
        Arc::new(move |req, stream| {
            let (egress, session, id, tokens) = (egress.clone(), session.clone(), id.clone(), tokens.clone());
            let agents = agents.clone();
            tokio::spawn(async move {
                match req {
                    OpenRequest::Egress { host, port } => {
                        let Some(policy) = session.upgrade().map(|s| s.policy.clone()) else {
                            return answer(&stream, Ctrl::error(ErrorKind::PermissionDenied, "the session has ended")).await;
                        };
                        egress.serve(&id, &policy, &host, port, stream).await
                    }
                    OpenRequest::Credential { protocol, host, .. } => {
                        credential(&id, &session, &tokens, &protocol, &host, &stream).await
                    }
                    OpenRequest::AgentConnect { id: agent } => agents.deliver(&id, &agent, stream).await,
                    other => {
                        tracing::warn!(session = %id, ?other, "guest opened an unexpected stream");
                        answer(&stream, Ctrl::error(ErrorKind::Protocol, "only egress, credential and agent_connect streams may be opened by the guest")).await
                    }
                }
            });
        })
    }
}

/// Where git tokens come from besides the session's own.
#[derive(Clone)]
struct Tokens {
    accounts: Arc<crate::accounts::Accounts>,
    operator: Arc<Vec<GitCredential>>,
}

/// The session's own token for the host, else its owner's saved one, else the operator's.
async fn credential(id: &str, session: &Weak<LiveSession>, tokens: &Tokens, protocol: &str, host: &str, stream: &Stream) {
    let (own, owner) = match session.upgrade() {
        Some(s) => (credential_for(&s.git_credentials.lock().expect("credentials lock"), protocol, host).cloned(), s.owner.clone()),
        None => return answer(stream, Ctrl::error(ErrorKind::PermissionDenied, "the session has ended")).await,
    };
    let found = match (own, owner) {
        (Some(c), _) => Some(c),
        (None, Some(user)) => credential_for(&tokens.accounts.git_credentials_of(&user).await, protocol, host).cloned(),
        (None, None) => None,
    }
    .or_else(|| credential_for(&tokens.operator, protocol, host).cloned());
    tracing::info!(session = %id, %protocol, %host, found = found.is_some(), "git credential requested");
    let reply = match found {
        Some(c) => Ctrl::Credential { username: c.username.unwrap_or_else(|| "x-access-token".into()), password: c.token },
        None => Ctrl::error(ErrorKind::NotFound, format!("this session has no git token for {protocol}://{host}")),
    };
    answer(stream, reply).await
}

pub(crate) async fn answer(stream: &Stream, c: Ctrl) {
    if stream.send_ctrl(&c).await.is_ok() {
        let _ = stream.send_eof().await;
    }
}
