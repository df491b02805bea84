//! Streams a session's guest opens towards the host: `egress` (a program's outbound
//! connection, decided by [`crate::egress`]) and `credential` (git asking for a token).
//! Anything else is a protocol error. The acceptor holds the session weakly: once the session
//! is gone, its tokens are gone and every request is refused.

use super::repo::credential_for;
use super::{LiveSession, SessionManager};
use mayfly_proto::msg::{Ctrl, ErrorKind, OpenRequest};
use mayfly_proto::mux::Stream;
use mayfly_vm::channel::Acceptor;
use std::sync::{Arc, Weak};

impl SessionManager {
    pub(super) fn guest_acceptor(&self, s: &Arc<LiveSession>) -> Acceptor {
        let egress = self.egress.clone();
        let session = Arc::downgrade(s);
        let id: Arc<str> = s.id.as_str().into();
        Arc::new(move |req, stream| {
            let (egress, session, id) = (egress.clone(), session.clone(), id.clone());
            tokio::spawn(async move {
                match req {
                    OpenRequest::Egress { host, port } => {
                        let Some(policy) = session.upgrade().map(|s| s.policy.clone()) else {
                            return answer(&stream, Ctrl::error(ErrorKind::PermissionDenied, "the session has ended")).await;
                        };
                        egress.serve(&id, &policy, &host, port, stream).await
                    }
                    OpenRequest::Credential { protocol, host, .. } => credential(&id, &session, &protocol, &host, &stream).await,
                    other => {
                        tracing::warn!(session = %id, ?other, "guest opened an unexpected stream");
                        answer(&stream, Ctrl::error(ErrorKind::Protocol, "only egress and credential streams may be opened by the guest")).await
                    }
                }
            });
        })
    }
}

async fn credential(id: &str, session: &Weak<LiveSession>, protocol: &str, host: &str, stream: &Stream) {
    let found = session
        .upgrade()
        .and_then(|s| credential_for(&s.git_credentials.lock().expect("credentials lock"), protocol, host).cloned());
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
