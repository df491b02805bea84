//! Sessions outlive the control plane. At start, [`SessionManager::reconcile`] takes over every
//! session the store says is live and whose VM still runs (the VM layer checks record, pid, QMP
//! and the guest's HELLO); at a graceful stop with `on_shutdown = "keep"`,
//! [`SessionManager::detach_all`] leaves every ready VM running for the next start.
//!
//! What an adopted session gets back: its row (state, deadlines, size, policy), its runtime
//! (`auto_push`, fork origin, repository status) and its sealed secrets (environment, git
//! tokens), the preview visibility of its ports, the guest-opened streams (egress, credentials),
//! and its watchers (VM exit, ports, files). Terminals live in the guest daemon and re-attach by
//! id with their scrollback. The idle timer goes on from the last activity stored (written at
//! most a minute late while the server runs, exactly at a graceful stop); so does the lifetime.
//!
//! Outcomes by stored state: `ready` → adopted, or `failed` with the reason and the VM reaped;
//! `creating` → `failed` (the boot task died with the old process); `stopping` → the delete is
//! finished (`destroyed`). Then every VM no session owns (pool clones, half-made forks and
//! templates) is reaped.

use super::{LiveSession, SessionError, SessionManager, Setup};
use crate::store::{SessionRecord, SessionRuntime};
use futures::StreamExt;
use mayfly_proto::api::{GitCredential, RepoState, SessionState};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use SessionState::*;

/// Prefix of every failure reason reconcile writes.
pub const RESTARTED: &str = "control plane restarted";
/// VMs adopted at once (each is a few socket round trips).
const ADOPT_PARALLEL: usize = 32;

/// The sealed part of a session's set-up.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Sealed {
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    git_credentials: Vec<GitCredential>,
}

impl SessionManager {
    /// What is stored of a new session's set-up: secrets sealed with the data dir's key. A key
    /// that cannot be read or written leaves them out (logged): the session works, but a
    /// restarted server adopts it without its environment and tokens.
    pub(super) fn runtime_of(&self, id: &str, setup: &Setup) -> SessionRuntime {
        let sealed = Sealed { env: setup.env.clone(), git_credentials: setup.git_credentials.clone() };
        let sealed = if sealed.env.is_empty() && sealed.git_credentials.is_empty() {
            None
        } else {
            match self.secrets.seal(&serde_json::to_vec(&sealed).expect("json")) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(session = id, error = %e, "cannot seal the session's secrets; a restart will adopt it without them");
                    None
                }
            }
        };
        SessionRuntime {
            auto_push: setup.auto_push,
            forked_from: setup.forked_from.clone(),
            repo: setup.repo.clone(),
            sealed,
            vm: None,
            labels: setup.labels.clone(),
        }
    }

    /// Stores the live session's runtime again (once its VM is known, after its repository's
    /// clone finished).
    pub(super) async fn save_runtime(&self, s: &LiveSession) {
        let rec = match self.store.get(&s.id).await {
            Ok(Some(r)) => r,
            _ => return,
        };
        let mut runtime = rec.runtime;
        runtime.repo = s.repo.lock().expect("repo lock").clone();
        if let Some(vm) = s.vm() {
            runtime.vm = Some(vm.id().to_string()).filter(|v| *v != s.id);
        }
        if let Err(e) = self.store.set_runtime(&s.id, &runtime).await {
            tracing::warn!(session = %s.id, error = %e, "cannot store the session's runtime");
        }
    }

    /// The set-up of a stored session, for adoption.
    fn setup_of(&self, rec: &SessionRecord) -> Result<Setup, String> {
        let policy = crate::egress::Policy::parse(&rec.network).map_err(|e| format!("its stored network policy is invalid: {e}"))?;
        let sealed = match &rec.runtime.sealed {
            None => Sealed::default(),
            Some(s) => match self.secrets.open(s).map_err(|e| e.to_string()).and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string())) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(session = %rec.id, error = %e, "cannot open the session's sealed secrets; adopting it without its environment and git tokens");
                    Sealed::default()
                }
            },
        };
        let mut repo = rec.runtime.repo.clone();
        if let Some(r) = repo.as_mut().filter(|r| r.state == RepoState::Cloning) {
            // The clone ran as a stream of the old process's connection, which ended with it.
            r.state = RepoState::Failed;
            r.message = Some("the server restarted while the repository was being cloned; clone it again in a terminal".into());
        }
        Ok(Setup {
            env: sealed.env,
            policy,
            git_credentials: sealed.git_credentials,
            repo,
            auto_push: rec.runtime.auto_push,
            forked_from: rec.runtime.forked_from.clone(),
            owner: rec.owner.clone(),
            labels: rec.runtime.labels.clone(),
        })
    }

    /// At start: adopts the sessions whose VMs survived the previous process, ends the others,
    /// then reaps every VM no session owns.
    pub async fn reconcile(self: &Arc<Self>) -> Result<(), SessionError> {
        let started = Instant::now();
        // Only this node's rows: on a shared database the others belong to other nodes.
        let records: Vec<SessionRecord> =
            self.store.list(&[Creating, Ready, Stopping, Lost]).await?.into_iter().filter(|r| self.is_mine(r)).collect();
        let total = records.len();
        let outcomes: Vec<Result<bool, SessionError>> = futures::stream::iter(records)
            .map(|rec| async move { self.reconcile_one(rec).await })
            .buffer_unordered(ADOPT_PARALLEL)
            .collect()
            .await;
        let adopted = outcomes.iter().filter(|o| matches!(o, Ok(true))).count();
        for e in outcomes.into_iter().filter_map(Result::err) {
            tracing::error!(error = %e, "reconciling a session failed");
        }
        let owned: Vec<String> = self.live.lock().expect("live lock").values().filter_map(|s| s.vm()).map(|vm| vm.id().to_string()).collect();
        let mut reaped = 0;
        for id in self.host.vm_ids() {
            if !owned.contains(&id) {
                tracing::info!(vm = %id, "reaping a VM no session owns (pool clone or leftover)");
                self.host.reap(&id).await;
                reaped += 1;
            }
        }
        tracing::info!(sessions = total, adopted, reaped, ms = started.elapsed().as_millis() as u64, "reconciled sessions with the host");
        Ok(())
    }

    /// One stored live session; `Ok(true)` when it was adopted.
    async fn reconcile_one(self: &Arc<Self>, rec: SessionRecord) -> Result<bool, SessionError> {
        match rec.state {
            Ready => match self.adopt(&rec).await {
                Ok(()) => return Ok(true),
                Err(why) => {
                    tracing::warn!(session = %rec.id, "cannot adopt the session: {why}");
                    self.host.reap(vm_id(&rec)).await;
                    self.record_transition(&rec.id, Ready, Failed, Some(&format!("{RESTARTED}: {why}"))).await?;
                }
            },
            // Marked lost by another node while this one was away: back if its VM still runs.
            Lost => {
                let back = SessionRecord { state: Ready, ..rec.clone() };
                match self.adopt(&back).await {
                    Ok(()) => {
                        let reason = format!("node {} is back and re-adopted it", self.node);
                        if let Err(e) = self.record_transition(&rec.id, Lost, Ready, Some(&reason)).await {
                            // Deleted from another node meanwhile: the VM goes.
                            tracing::warn!(session = %rec.id, error = %e, "a re-adopted lost session changed meanwhile; stopping it");
                            if let Some(s) = self.live(&rec.id) {
                                self.release(&s).await;
                            }
                            self.forget(&rec.id);
                            return Ok(false);
                        }
                        return Ok(true);
                    }
                    Err(why) => {
                        tracing::warn!(session = %rec.id, "cannot re-adopt the lost session: {why}");
                        self.host.reap(vm_id(&rec)).await;
                        self.record_transition(&rec.id, Lost, Failed, Some(&format!("{RESTARTED} after its node was lost: {why}"))).await?;
                    }
                }
            }
            Creating => {
                self.host.reap(&rec.id).await;
                self.record_transition(&rec.id, Creating, Failed, Some(&format!("{RESTARTED} while the session was being created"))).await?;
            }
            Stopping => {
                self.host.reap(&rec.id).await;
                self.record_transition(&rec.id, Stopping, Destroyed, Some("deleted; finished after a control plane restart")).await?;
            }
            Destroyed | Failed => {}
        }
        Ok(false)
    }

    /// Takes over ready session `rec` and its running VM.
    async fn adopt(self: &Arc<Self>, rec: &SessionRecord) -> Result<(), String> {
        let setup = self.setup_of(rec)?;
        let vm = self.host.adopt(vm_id(rec)).await.map_err(|e| match e {
            mayfly_vm::VmError::Adopt { reason, .. } => reason,
            e => e.to_string(),
        })?;
        let visibility = self.store.port_visibility(&rec.id).await.map_err(|e| e.to_string())?;
        let repo_changed = setup.repo != rec.runtime.repo;
        // The idle timer goes on from the last activity the store knows of.
        let idle_ms = rec.last_active_at.map_or(0, |t| (time::OffsetDateTime::now_utc() - t).whole_milliseconds().max(0) as u64);
        let s = LiveSession::new(rec, setup, self.now_ms().saturating_sub(idle_ms));
        // Paused before the restart (idle): it stays paused until the next request resumes it.
        s.pause.paused.store(vm.adopted_paused(), std::sync::atomic::Ordering::SeqCst);
        *s.visibility.lock().expect("visibility lock") = visibility;
        *s.vm.lock().expect("vm lock") = Some(vm.clone());
        vm.channel().set_acceptor(Some(self.guest_acceptor(&s)));
        self.live.lock().expect("live lock").insert(rec.id.clone(), s.clone());
        if repo_changed {
            self.save_runtime(&s).await;
        }
        tokio::spawn(self.clone().watch_exit(s.clone(), vm.clone()));
        tokio::spawn(self.clone().watch_ports(s, vm));
        tracing::info!(session = %rec.id, "session adopted");
        Ok(())
    }

    /// Graceful stop with `on_shutdown = "keep"`: every ready session's VM is left running
    /// (watchers stop, the channel closes) for the next start to adopt. Sessions still being
    /// created hold no work yet and are deleted; deletes in progress finish.
    pub(super) async fn detach_all(&self) {
        // Exact idle timers for the next start.
        self.store_activity(std::time::Duration::ZERO).await;
        let all: Vec<Arc<LiveSession>> = self.live.lock().expect("live lock").values().cloned().collect();
        tracing::info!(sessions = all.len(), "leaving sessions running for the next start");
        let each = all.into_iter().map(|s| async move {
            if s.state() == Creating {
                if let Err(e) = self.delete(&crate::access::system(&s.id, "shutdown"), "server shutting down").await {
                    tracing::debug!(session = %s.id, "shutdown: {e}");
                }
                return;
            }
            // Waits for a delete or fork in progress to finish.
            let _g = s.lifecycle.lock().await;
            if s.state() != Ready {
                return;
            }
            s.cancel.cancel();
            let vm = s.vm.lock().expect("vm lock").take();
            if let Some(vm) = vm {
                vm.detach().await;
            }
            self.forget(&s.id);
        });
        futures::future::join_all(each).await;
    }
}

impl SessionManager {
    /// True for this node's rows (and for rows older than nodes, which only one node wrote).
    pub(crate) fn is_mine(&self, rec: &SessionRecord) -> bool {
        rec.node.as_deref().is_none_or(|n| n == self.node)
    }

    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// After this node was cut off from the database long enough for another node to mark its
    /// sessions lost: takes back those it still runs (`lost → ready`). Returns how many.
    pub async fn reclaim_lost(&self) -> Result<usize, SessionError> {
        let lost = self.store.list(&[Lost]).await?;
        let mut back = 0;
        for rec in lost.iter().filter(|r| self.is_mine(r)) {
            let Some(s) = self.live(&rec.id) else { continue };
            if s.state() != Ready {
                continue;
            }
            let reason = format!("node {} renewed its lease again", self.node);
            match self.record_transition(&rec.id, Lost, Ready, Some(&reason)).await {
                Ok(_) => back += 1,
                Err(e) => tracing::warn!(session = %rec.id, error = %e, "cannot take back a lost session"),
            }
        }
        Ok(back)
    }
}

/// The id of stored session `rec`'s VM.
fn vm_id(rec: &SessionRecord) -> &str {
    rec.runtime.vm.as_deref().unwrap_or(&rec.id)
}
