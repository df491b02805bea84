//! Forking a session: a new session whose VM starts as a copy of a running session's VM —
//! memory (running processes, terminals and their scrollback), devices and disk at one instant.
//!
//! The fork inherits what the source was created with: image, size, network policy, environment, git
//! credentials, `auto_push` and the repository's status (the clone is on the copied disk). Its lifetime comes
//! from the request or the defaults. The source keeps running; its guest stands still while it is
//! copied. The source's teardown lock is held for the copy, so a delete of the source waits for it.

use super::lifecycle::Origin;
use super::{LiveSession, SessionError, SessionManager};
use crate::store::SessionRecord;
use mayfly_proto::api::{ForkSession, RepoState, Session, SessionState};
use mayfly_vm::{Vm, VmError};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

impl SessionManager {
    /// Forks ready session `id` into a new session. With `wait`, returns once the fork is ready.
    /// The fork belongs to whoever forks it (an admin forking someone's session owns the fork).
    pub async fn fork(self: &Arc<Self>, sref: &crate::access::SessionRef, req: ForkSession, wait: bool) -> Result<Session, SessionError> {
        let id = sref.id();
        if self.shutdown.is_cancelled() {
            return Err(SessionError::ShuttingDown);
        }
        let (source, _) = self.ready_vm(id).await?;
        let src = self.record(id).await?;
        let (ttl, idle) = self.lifetime(req.ttl_seconds, req.idle_timeout_seconds)?;
        let now = OffsetDateTime::now_utc();
        let record = SessionRecord {
            id: super::new_session_id(),
            image: src.image.clone(),
            state: SessionState::Creating,
            created_at: now,
            expires_at: now + Duration::from_secs(ttl),
            idle_timeout_seconds: idle,
            failure: None,
            network: src.network.clone(),
            size: src.size,
            runtime: Default::default(),
            last_active_at: None,
            owner: sref.caller().who.user_id().map(str::to_string),
            node: Some(self.node.clone()),
        };
        let mut repo = source.repo.lock().expect("repo lock").clone();
        if let Some(r) = repo.as_mut().filter(|r| r.state == RepoState::Cloning) {
            // The clone's connection belongs to the source; the copy of git in the fork loses it.
            r.state = RepoState::Failed;
            r.message = Some(format!("the session was forked from {id} while the repository was still being cloned"));
        }
        let setup = super::Setup {
            env: source.env.clone(),
            policy: source.policy.clone(),
            git_credentials: source.git_credentials.lock().expect("credentials lock").clone(),
            repo,
            auto_push: source.auto_push,
            forked_from: Some(id.to_string()),
            owner: record.owner.clone(),
            labels: source.labels.clone(),
        };
        let record = SessionRecord { runtime: self.runtime_of(&record.id, &setup), ..record };
        let session = LiveSession::new(&record, setup, self.now_ms());
        let quotas = self.accounts.quotas_of(&sref.caller().who).await.map_err(|e| SessionError::Vm {
            id: id.to_string(),
            what: "reading the owner's quotas",
            source: Box::new(e),
        })?;
        self.start(record, session, Origin::Fork(source), quotas, wait).await
    }

    /// The fork itself (in the new session's boot task): under the source's teardown lock.
    pub(super) async fn fork_vm(&self, source: &Arc<LiveSession>, id: &str) -> Result<Arc<dyn Vm>, VmError> {
        let gone = |why: String| VmError::Snapshot { dir: source.id.clone(), reason: why };
        let _g = source.lifecycle.lock().await;
        if source.state() != SessionState::Ready {
            return Err(gone(format!("session {} is {}, not ready", source.id, source.state().as_str())));
        }
        let vm = source.vm().ok_or_else(|| gone(format!("session {} has no VM", source.id)))?;
        self.host.fork(vm.as_ref(), id).await
    }

    pub(super) fn now_ms(&self) -> u64 {
        super::clock_ms(self.epoch)
    }
}
