//! Creating, deleting and failing sessions; shutting down (reconcile and detaching: `adopt`).
//!
//! Who may change what: the boot task moves `creating → ready | failed`; teardowns (delete,
//! fail, reaper, shutdown) hold the session's `lifecycle` lock, so two never interleave. A
//! delete during boot moves `creating → stopping`, cancels the boot (the VM backend's cleanup
//! stack undoes a half-made VM) and waits for the boot task before finishing.

use super::{LiveSession, SessionError, SessionManager};
use crate::images::BootImage;
use crate::store::SessionRecord;
use crate::accounts::Caller;
use mayfly_proto::accounts::Quotas;
use mayfly_proto::api::{CreateSession, Session, SessionState};
use mayfly_vm::VmError;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use SessionState::*;

/// What a new session's VM starts from.
pub(super) enum Origin {
    /// The image: the pool clone reserved for the session, else another pool clone, a template
    /// restore or a cold boot.
    Image(Box<BootImage>, mayfly_proto::api::SessionSize, Option<super::pool::Pooled>),
    /// A running session, forked.
    Fork(Arc<LiveSession>),
}

impl Origin {
    fn describe(&self) -> String {
        match self {
            Origin::Image(i, ..) => format!("image {}", i.name),
            Origin::Fork(s) => format!("fork of {}", s.id),
        }
    }

    /// The session will not start: a reserved pool clone is stopped, not leaked.
    fn discard(self) {
        if let Origin::Image(_, _, Some(p)) = self {
            tokio::spawn(async move {
                let _ = p.vm.stop().await;
            });
        }
    }
}

/// Bytes of console output quoted in failure reasons.
const CONSOLE_TAIL: usize = 600;

impl SessionManager {
    /// Creates a session and starts booting its VM. With `wait`, returns once the session is
    /// ready (or fails with the boot failure); otherwise returns it in state `creating`.
    pub async fn create(self: &Arc<Self>, caller: &Caller, req: CreateSession, wait: bool) -> Result<Session, SessionError> {
        if self.shutdown.is_cancelled() {
            return Err(SessionError::ShuttingDown);
        }
        let image = self.images.get(req.image.as_deref().unwrap_or(&self.cfg.default_image))?;
        let (ttl, idle) = self.lifetime(req.ttl_seconds, req.idle_timeout_seconds)?;
        validate_env(&req.env)?;
        validate_labels(&req.labels)?;
        let size = super::size::resolve(&req, &image, &self.cfg)?;
        let network = req.network.unwrap_or_else(|| self.cfg.default_network());
        let policy = crate::egress::Policy::parse(&network).map_err(|e| SessionError::Invalid(e.to_string()))?;
        let repo = req.repo.as_ref().map(super::repo::validate_repo).transpose()?;
        super::repo::validate_credentials(&req.git_credentials)?;
        // The operator's tokens are not copied in: the credential helper asks for them last.
        let git_credentials = req.git_credentials;
        if network.egress != mayfly_proto::api::EgressMode::Allowlist && !network.allow.is_empty() {
            return Err(SessionError::Invalid(format!("network.allow is only used with egress \"allowlist\", not {:?}", network.egress.as_str())));
        }

        // A pool clone is already named after its future session: the session takes that id.
        let pooled = self.provisioner.reserve(&image, size);
        let now = OffsetDateTime::now_utc();
        let record = SessionRecord {
            id: pooled.as_ref().map_or_else(super::new_session_id, |p| p.session.clone()),
            image: image.name.clone(),
            state: Creating,
            created_at: now,
            expires_at: now + Duration::from_secs(ttl),
            idle_timeout_seconds: idle,
            failure: None,
            network,
            size: Some(size),
            runtime: Default::default(),
            last_active_at: None,
            owner: caller.who.user_id().map(str::to_string),
            node: Some(self.node.clone()),
        };
        let setup = super::Setup {
            env: req.env,
            policy,
            git_credentials,
            repo,
            auto_push: req.auto_push.unwrap_or(self.cfg.auto_push),
            forked_from: None,
            owner: record.owner.clone(),
            labels: req.labels,
        };
        let record = SessionRecord { runtime: self.runtime_of(&record.id, &setup), ..record };
        let session = LiveSession::new(&record, setup, self.now_ms());
        let quotas = self.accounts.quotas_of(&caller.who).await.map_err(|e| SessionError::Vm {
            id: record.id.clone(),
            what: "reading the owner's quotas",
            source: Box::new(e),
        })?;
        self.start(record, session, Origin::Image(Box::new(image), size, pooled), quotas, wait).await
    }

    /// Registers a new session (limits, store, events) and starts its boot task. With `wait`,
    /// returns once it is ready or failed.
    pub(super) async fn start(
        self: &Arc<Self>,
        record: SessionRecord,
        session: Arc<LiveSession>,
        origin: Origin,
        quotas: Option<Quotas>,
        wait: bool,
    ) -> Result<Session, SessionError> {
        if let Err(e) = super::capacity::check_free_memory(session.size.map_or(0, |s| u64::from(s.memory_mib)), self.cfg.min_free_memory_mib) {
            origin.discard();
            return Err(e);
        }
        // On a shared database the owner's sessions on other nodes count against the quota too
        // (read before the lock; the node's own are counted under it).
        let elsewhere: Vec<Option<mayfly_proto::api::SessionSize>> = match (&quotas, self.cluster().is_some_and(|c| c.shared())) {
            (Some(_), true) => match self.store.list(&[Creating, Ready, Stopping, Lost]).await {
                Ok(recs) => recs.iter().filter(|r| r.owner == session.owner && !self.is_mine(r)).map(|r| r.size).collect(),
                Err(e) => {
                    origin.discard();
                    return Err(e.into());
                }
            },
            _ => Vec::new(),
        };
        {
            // Limits and quotas are counted and the session registered under one lock, so two
            // creates never both take the last slot.
            let mut live = self.live.lock().expect("live lock");
            if live.values().filter(|s| super::state::is_live(s.state())).count() >= self.cfg.max_sessions {
                origin.discard();
                return Err(SessionError::TooManySessions(self.cfg.max_sessions));
            }
            if let Some(q) = quotas {
                let mine = live.values().filter(|s| s.owner == session.owner && super::state::is_live(s.state()));
                if let Err(e) = super::quota::check(&q, mine.map(|s| s.size).chain(elsewhere), session.size) {
                    origin.discard();
                    return Err(e);
                }
            }
            live.insert(record.id.clone(), session.clone());
        }
        let first = match self.store.insert(&record).await {
            Ok(ev) => ev,
            Err(e) => {
                self.forget(&record.id);
                origin.discard();
                return Err(e.into());
            }
        };
        self.publish(&first);
        self.metrics.session_created();
        tracing::info!(session = %record.id, image = %record.image, expires = %super::rfc3339(record.expires_at), idle = record.idle_timeout_seconds, size = ?record.size, origin = origin.describe(), "session created");

        let mut state_rx = session.state.subscribe();
        {
            // Spawned under the lock, so a delete always finds the task to wait for.
            let mut slot = session.boot.lock().expect("boot lock");
            *slot = Some(tokio::spawn(self.clone().boot(session.clone(), origin)));
        }

        if wait {
            let _ = state_rx.wait_for(|s| *s != Creating).await;
        }
        let rec = self.store.get(&record.id).await?.ok_or_else(|| SessionError::NotFound(record.id.clone()))?;
        match rec.state {
            Failed if wait => Err(SessionError::Failed { reason: rec.failure.clone().unwrap_or_default(), id: rec.id }),
            // Deleted (or the server began shutting down) while booting.
            Stopping | Destroyed if wait && self.is_shutting_down() => Err(SessionError::ShuttingDown),
            Stopping | Destroyed if wait => Err(SessionError::StateChanged { id: rec.id, actual: rec.state }),
            _ => Ok(self.view(&rec)),
        }
    }

    /// The boot task of one session.
    async fn boot(self: Arc<Self>, s: Arc<LiveSession>, origin: Origin) {
        let from_image = matches!(origin, Origin::Image(..));
        let provided = match origin {
            Origin::Image(image, size, pooled) => tokio::select! {
                r = self.provisioner.acquire(&s.id, &image, size, pooled) => Some(r),
                _ = s.cancel.cancelled() => None,
            },
            // Not cancellable: the source is paused until the fork is done (a bounded wait).
            Origin::Fork(source) => Some(self.fork_vm(&source, &s.id).await.map(|vm| (vm, super::Source::Fork))),
        };
        let created = provided.map(|r| {
            r.map(|(vm, source)| {
                tracing::info!(session = %s.id, vm = vm.id(), ?source, ms = vm.boot_time().as_millis() as u64, "VM provided");
                vm
            })
        });
        match created {
            // Deleted while booting: dropping the create future unwound its cleanup stack; reap
            // catches a QEMU that was spawned but not yet recorded as killed. The deleter
            // finishes the session's transitions.
            None => self.host.reap(&s.id).await,
            Some(Err(e)) => {
                let reason = boot_failure(&e);
                tracing::warn!(session = %s.id, error = %e, "VM did not boot");
                // The backend cleans up after itself; this makes sure of it.
                self.host.reap(&s.id).await;
                // A concurrent delete may have moved the session on; then it finishes the job.
                if self.transition(&s, Creating, Failed, Some(&reason)).await.is_ok() {
                    self.forget(&s.id);
                }
            }
            Some(Ok(vm)) => {
                self.metrics.vm_booted(vm.boot_time());
                *s.vm.lock().expect("vm lock") = Some(vm.clone());
                if vm.id() != s.id {
                    // A pool clone keeps its own id: a restarted server must find it.
                    self.save_runtime(&s).await;
                }
                // From here on the guest's outbound connections are decided by this session's policy.
                vm.channel().set_acceptor(Some(self.guest_acceptor(&s)));
                match self.transition(&s, Creating, Ready, None).await {
                    Ok(()) => {
                        // Idle time counts from ready, not from the start of the boot.
                        self.activity(&s).touch();
                        tokio::spawn(self.clone().watch_exit(s.clone(), vm.clone()));
                        if from_image {
                            tokio::spawn(self.clone().clone_repo(s.clone(), vm.clone()));
                        }
                        tokio::spawn(self.clone().watch_ports(s.clone(), vm));
                    }
                    // Deleted meanwhile: the deleter stops the VM once this task ends; stopping
                    // it here too (stop is idempotent) means no VM outlives its session.
                    Err(e) => {
                        tracing::info!(session = %s.id, "boot finished after {e}");
                        let vm = s.vm.lock().expect("vm lock").take();
                        if let Some(vm) = vm {
                            let _ = vm.stop().await;
                        }
                        // Ended in the store by another node (no deleter here will finish it).
                        if matches!(e, SessionError::Store(_)) {
                            self.forget(&s.id);
                        }
                    }
                }
            }
        }
    }

    /// Fails the session when its VM exits without being asked to.
    pub(super) async fn watch_exit(self: Arc<Self>, s: Arc<LiveSession>, vm: Arc<dyn mayfly_vm::Vm>) {
        let exit = tokio::select! {
            e = vm.wait_exit() => e,
            _ = s.cancel.cancelled() => return,
        };
        if exit.requested {
            return;
        }
        let tail = short_tail(&vm.console_tail(CONSOLE_TAIL * 4));
        let reason = if tail.is_empty() { format!("VM died: {exit}") } else { format!("VM died: {exit}; console tail:\n{tail}") };
        self.fail(&s, &reason).await;
    }

    /// Moves a live session to `failed` and releases its VM (if nothing else tore it down first).
    async fn fail(&self, s: &Arc<LiveSession>, reason: &str) {
        let _g = s.lifecycle.lock().await;
        let from = s.state();
        if !super::state::is_live(from) {
            return;
        }
        if let Err(e) = self.transition(s, from, Failed, Some(reason)).await {
            tracing::warn!(session = %s.id, "cannot mark session failed: {e}");
            return;
        }
        s.cancel.cancel();
        self.release(s).await;
        self.forget(&s.id);
    }

    /// Stops the session's VM (which deletes its run dir) and makes sure nothing is left.
    pub(super) async fn release(&self, s: &LiveSession) -> Option<String> {
        // Revoked: the guest's credential helper gets nothing from here on.
        s.git_credentials.lock().expect("credentials lock").clear();
        let vm = s.vm.lock().expect("vm lock").take();
        let mut err = None;
        if let Some(vm) = vm {
            if let Err(e) = vm.stop().await {
                tracing::warn!(session = %s.id, "stopping the VM failed: {e}");
                err = Some(e.to_string());
            }
        }
        self.host.reap(&s.id).await;
        s.ports.lock().expect("ports lock").clear();
        err
    }

    /// Destroys session `id`. A second delete of the same session finds it gone (not found).
    pub async fn delete(&self, sref: &crate::access::SessionRef, reason: &str) -> Result<(), SessionError> {
        let id = sref.id();
        let Some(s) = self.live(id) else {
            // Not live: a failed session is dismissed; anything else is unknown.
            let rec = self.record(id).await?;
            // Another node's session that reached this one: its node is not answering (the
            // router forwards otherwise). A session it was creating or deleting ends here; its
            // node, if it comes back, finds the row ended and reaps the VM.
            if !self.is_mine(&rec) && matches!(rec.state, Creating | Stopping) {
                if rec.state == Creating {
                    self.record_transition(id, Creating, Failed, Some("its node stopped answering while the session was being created")).await?;
                }
                let from = if rec.state == Creating { Failed } else { Stopping };
                self.record_transition(id, from, Destroyed, Some(&format!("{reason} (while its node was not answering)"))).await?;
                return Ok(());
            }
            // A lost session is ended from any node: its own node, if it comes back, finds the
            // row destroyed and reaps the VM.
            if matches!(rec.state, Failed | Lost) {
                let reason = if rec.state == Lost { format!("{reason} (while its node was lost)") } else { reason.to_string() };
                self.record_transition(id, rec.state, Destroyed, Some(&reason)).await.map_err(|e| match e {
                    SessionError::Store(crate::store::StoreError::StateMismatch { .. }) => SessionError::NotFound(id.into()),
                    e => e,
                })?;
                return Ok(());
            }
            return Err(SessionError::NotFound(id.to_string()));
        };
        let _g = s.lifecycle.lock().await;
        loop {
            let from = s.state();
            let r = match from {
                Creating | Ready => self.transition(&s, from, Stopping, Some(reason)).await,
                Failed => {
                    self.transition(&s, Failed, Destroyed, Some(reason)).await?;
                    self.forget(id);
                    return Ok(());
                }
                // Stopping only happens under the lifecycle lock, which we hold; a live session is
                // never lost in memory (only in the store, while its node is cut off).
                Stopping | Destroyed | Lost => return Err(SessionError::NotFound(id.to_string())),
            };
            match r {
                Ok(()) => break,
                // The boot task moved it on (ready or failed) just now: look again.
                Err(SessionError::StateChanged { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        s.cancel.cancel();
        let boot = s.boot.lock().expect("boot lock").take();
        if let Some(task) = boot {
            let _ = task.await;
        }
        // Before the VM and the tokens go: the work leaves by a push (if the session asks),
        // which needs a running guest.
        self.resume_if_paused(&s).await;
        self.push_at_end(&s).await;
        let outcome = match self.release(&s).await {
            None => self.transition(&s, Stopping, Destroyed, Some(reason)).await,
            Some(e) => self.transition(&s, Stopping, Failed, Some(&format!("stopping the VM failed: {e}"))).await,
        };
        self.forget(id);
        outcome
    }

    /// Refuses new sessions, ends event streams and watchers, and then either leaves every
    /// session's VM running for the next start (`on_shutdown = "keep"`) or destroys every
    /// session (`"end"`). Pool clones are stopped either way.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        self.provisioner.drain().await;
        if self.cfg.on_shutdown == crate::config::OnShutdown::Keep {
            self.detach_all().await;
            return;
        }
        let all: Vec<String> = self.live.lock().expect("live lock").keys().cloned().collect();
        tracing::info!(sessions = all.len(), "stopping every session");
        let deletes = all.iter().map(|id| async move {
            if let Err(e) = self.delete(&crate::access::system(id, "shutdown"), "server shutting down").await {
                tracing::debug!(session = %id, "shutdown: {e}");
            }
        });
        futures::future::join_all(deletes).await;
    }

    /// True once [`SessionManager::shutdown`] began.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Resolves when shutdown begins.
    pub async fn shutting_down(&self) {
        self.shutdown.cancelled().await
    }
}

impl SessionManager {
    /// A new session's maximum lifetime and idle timeout (seconds): the request's or the
    /// defaults, within `max_ttl_seconds`.
    pub(super) fn lifetime(&self, ttl: Option<u64>, idle: Option<u64>) -> Result<(u64, u64), SessionError> {
        let max = self.cfg.max_ttl_seconds;
        let ttl = ttl.unwrap_or(self.cfg.default_ttl_seconds);
        if ttl == 0 || ttl > max {
            return Err(SessionError::Invalid(format!("ttl_seconds must be 1..={max}")));
        }
        let idle = idle.unwrap_or(self.cfg.default_idle_timeout_seconds);
        if idle == 0 || idle > max {
            return Err(SessionError::Invalid(format!("idle_timeout_seconds must be 1..={max}")));
        }
        Ok((ttl, idle))
    }
}

fn validate_env(env: &BTreeMap<String, String>) -> Result<(), SessionError> {
    for (k, v) in env {
        if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
            return Err(SessionError::Invalid(format!("invalid environment variable {k:?}")));
        }
    }
    Ok(())
}

/// Labels are bounded: at most 64, keys 1–64 characters without control characters, values up
/// to 512 characters.
fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), SessionError> {
    if labels.len() > 64 {
        return Err(SessionError::Invalid(format!("at most 64 labels, got {}", labels.len())));
    }
    for (k, v) in labels {
        if k.is_empty() || k.chars().count() > 64 || k.chars().any(char::is_control) {
            return Err(SessionError::Invalid(format!("invalid label key {k:?}: 1-64 characters, no control characters")));
        }
        if v.chars().count() > 512 || v.contains('\0') {
            return Err(SessionError::Invalid(format!("label {k:?}: the value is longer than 512 characters or holds a NUL")));
        }
    }
    Ok(())
}

/// A failure reason for a VM that did not come up. Host paths stay in the log.
fn boot_failure(e: &VmError) -> String {
    match e {
        VmError::Boot { reason, console, .. } => {
            let tail = short_tail(console);
            if tail.is_empty() {
                format!("VM did not boot: {reason}")
            } else {
                format!("VM did not boot: {reason}; console tail:\n{tail}")
            }
        }
        VmError::Missing { what, .. } => format!("{what} is missing; rebuild the image"),
        // Forks: the source went away or the copy failed (details in the server log).
        VmError::Snapshot { reason, .. } => format!("fork failed: {reason}"),
        _ => "VM could not be started (see the server log)".to_string(),
    }
}

/// Console text without terminal escape sequences and control characters (but newlines).
fn printable(console: &str) -> String {
    let mut out = String::with_capacity(console.len());
    let mut chars = console.chars();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI (`ESC [ … final`) or a two-character escape (`ESC c`).
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The last few lines of console output, at most [`CONSOLE_TAIL`] bytes.
fn short_tail(console: &str) -> String {
    let console = printable(console);
    let trimmed = console.trim_end();
    let mut start = trimmed.len().saturating_sub(CONSOLE_TAIL);
    while !trimmed.is_char_boundary(start) {
        start += 1;
    }
    let tail = &trimmed[start..];
    // Start at a line boundary when one is near.
    let tail = match tail.find('\n') {
        Some(i) if start > 0 && i < tail.len() / 2 => &tail[i + 1..],
        _ => tail,
    };
    tail.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_tails_are_short_and_start_on_a_line() {
        let long: String = (0..200).map(|i| format!("line {i}\n")).collect();
        let t = short_tail(&long);
        assert!(t.len() <= CONSOLE_TAIL);
        assert!(t.starts_with("line "), "{t}");
        assert!(t.ends_with("line 199"));
        assert_eq!(short_tail("  \n"), "");
        assert_eq!(short_tail("panic\n"), "panic");
        assert_eq!(short_tail("\u{1b}c\u{1b}[?7l\u{1b}[2J\u{1b}[0mSeaBIOS\r\nBooting\r\n"), "SeaBIOS\nBooting");
    }

    #[test]
    fn env_names_are_checked() {
        assert!(validate_env(&BTreeMap::from([("A".into(), "1".into())])).is_ok());
        assert!(validate_env(&BTreeMap::from([("A=B".into(), "1".into())])).is_err());
        assert!(validate_env(&BTreeMap::from([("".into(), "1".into())])).is_err());
    }
}
