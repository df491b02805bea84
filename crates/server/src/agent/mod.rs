//! Coding-agent runs of sessions: starts a run of the [`mayfly_agent`] loop with tools bound to
//! the session's VM ([`tools::VmTools`]), relays what it does as [`SessionEvent`]s, stores runs
//! and the conversation ([`store`]), and cancels runs on request or when the session ends.
//!
//! Run status moves `running → succeeded | failed | cancelled | interrupted`, once
//! ([`transition`]); one run at a time per session. `interrupted`: the server stopped during the
//! run ([`AgentService::interrupt_all`] at a graceful stop, the store at the next start after a
//! crash); the session goes on and a new run can pick up the stored conversation. The API key stays in this process: it is not in events, logs, the
//! store or the VM, and is redacted from failure reasons a model server might echo it in.

pub mod browser;
mod cdp;
mod session_end;
pub mod shell;
pub mod store;
pub mod tools;

use crate::access::SessionRef;
use crate::manager::{SessionError, SessionManager};
use mayfly_agent::provider::Model;
use mayfly_agent::run::{AgentEvent, RunContext};
use mayfly_agent::{AgentConfig, RunOutcome, RunStatus};
use mayfly_proto::api::{AgentRun, AgentRunStatus, SessionEvent, SessionState};
use std::collections::HashMap;
use crate::preview::access::Signer;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use store::{AgentStore, AgentStoreError, RunEnd};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a cancel request waits for the run to wind down.
const CANCEL_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Store(#[from] AgentStoreError),
    #[error("session {session} already has a running agent run ({run})")]
    Busy { session: String, run: String },
    #[error("agent run {run} not found in session {session}")]
    RunNotFound { session: String, run: String },
    #[error("{0}")]
    Invalid(String),
    #[error("agent run status cannot go from {} to {}", .from.as_str(), .to.as_str())]
    IllegalTransition { from: AgentRunStatus, to: AgentRunStatus },
}

/// The one check every run status change passes.
pub fn transition(from: AgentRunStatus, to: AgentRunStatus) -> Result<(), AgentError> {
    if from == AgentRunStatus::Running && to != AgentRunStatus::Running {
        Ok(())
    } else {
        Err(AgentError::IllegalTransition { from, to })
    }
}

fn api_status(s: RunStatus) -> AgentRunStatus {
    match s {
        RunStatus::Running => AgentRunStatus::Running,
        RunStatus::Succeeded => AgentRunStatus::Succeeded,
        RunStatus::Failed => AgentRunStatus::Failed,
        RunStatus::Cancelled => AgentRunStatus::Cancelled,
    }
}

struct Active {
    run: String,
    cancel: CancellationToken,
    /// Why it was cancelled (user, session end), set before `cancel` fires.
    reason: Arc<Mutex<Option<String>>>,
    /// Set when the server stops under the run: the run ends `interrupted`, not `cancelled`.
    interrupted: Arc<std::sync::atomic::AtomicBool>,
    done: watch::Receiver<bool>,
}

/// Why runs end when the server stops under them.
const SERVER_STOPPED: &str = "the server stopped during the run";

pub struct AgentService {
    manager: Arc<SessionManager>,
    cfg: AgentConfig,
    store: AgentStore,
    token: String,
    active: Mutex<HashMap<String, Active>>,
    local: OnceLock<SocketAddr>,
    browser: Option<Arc<browser::Browser>>,
    /// Signs the preview cookie the `browser` tool presents (the same key the preview proxy checks).
    signer: Option<Arc<Signer>>,
    /// Held while a run is counted against its quota and stored.
    quota_lock: tokio::sync::Mutex<()>,
}

impl AgentService {
    /// `data_dir` holds the preview key (`preview.key`).
    pub fn new(manager: Arc<SessionManager>, cfg: AgentConfig, store: AgentStore, token: String, data_dir: &Path) -> Arc<Self> {
        let browser = browser::Browser::find(cfg.browser_path.as_deref()).map(Arc::new);
        let signer = match Signer::load_or_generate(&data_dir.join("preview.key")) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                tracing::warn!(error = %e, "no preview key; the agent's browser tool is disabled");
                None
            }
        };
        Arc::new(Self {
            manager,
            cfg,
            store,
            token,
            active: Mutex::new(HashMap::new()),
            local: OnceLock::new(),
            browser,
            signer,
            quota_lock: Default::default(),
        })
    }

    /// This server's listening address (for tools that go through the preview proxy).
    /// At start on a shared database: this node's runs a previous process left `running` end
    /// `interrupted` (on SQLite the store did it when it opened).
    pub async fn interrupt_left_running(&self) {
        if !self.manager.cluster().is_some_and(|c| c.shared()) {
            return;
        }
        match self.store.interrupt_runs_of_node(self.manager.node_name()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(runs = n, "agent runs left running by the previous process marked interrupted"),
            Err(e) => tracing::warn!(error = %e, "cannot close the agent runs the previous process left running"),
        }
    }

    pub fn set_local_addr(&self, addr: SocketAddr) {
        let _ = self.local.set(addr);
    }

    fn redact(&self, text: String) -> String {
        match &self.cfg.api_key {
            Some(k) if k.len() >= 4 => text.replace(k.as_str(), "<redacted>"),
            _ => text,
        }
    }

    /// Starts a run in `sref`'s session, counted against the caller's `agent_runs_per_day`.
    pub async fn start(self: &Arc<Self>, sref: &SessionRef, prompt: String) -> Result<AgentRun, AgentError> {
        let session = sref.id();
        if prompt.trim().is_empty() {
            return Err(AgentError::Invalid("prompt must not be empty".into()));
        }
        let s = self.manager.get(sref).await?;
        if s.state != SessionState::Ready {
            return Err(SessionError::NotReady { id: session.to_string(), state: s.state }.into());
        }
        let Some(state) = self.manager.watch_state(session) else {
            return Err(SessionError::NotReady { id: session.to_string(), state: s.state }.into());
        };
        let id = format!("r{}", &crate::manager::new_session_id()[1..]);
        let cancel = CancellationToken::new();
        let reason = Arc::new(Mutex::new(None));
        let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (done_tx, done) = watch::channel(false);
        {
            let mut active = self.active.lock().expect("active lock");
            if let Some(a) = active.get(session) {
                return Err(AgentError::Busy { session: session.to_string(), run: a.run.clone() });
            }
            active.insert(
                session.to_string(),
                Active { run: id.clone(), cancel: cancel.clone(), reason: reason.clone(), interrupted: interrupted.clone(), done },
            );
        }
        let run = match self.record_run(sref, &id, &prompt).await {
            Ok(r) => r,
            Err(e) => {
                self.active.lock().expect("active lock").remove(session);
                return Err(e);
            }
        };
        tracing::info!(session, run = %id, "agent run started");
        self.emit_status(session, &id, AgentRunStatus::Running, None, None);

        // The session ending cancels the run (while it waits, and after every tool call).
        let ended = session_end::SessionEnd::new(state, cancel.clone(), reason.clone());
        let watcher = tokio::spawn(ended.clone().wait());
        let me = self.clone();
        let session = session.to_string();
        tokio::spawn(async move {
            // A running agent is a client: the session does not pause under it.
            let _client = me.manager.attach(&session);
            let outcome = me.execute(&session, &id, prompt, cancel, ended).await;
            watcher.abort();
            let why = reason.lock().expect("reason lock").clone();
            let interrupted = interrupted.load(std::sync::atomic::Ordering::SeqCst);
            me.finish(&session, &id, outcome, why, interrupted).await;
            me.active.lock().expect("active lock").remove(&session);
            let _ = done_tx.send(true);
        });
        Ok(run)
    }

    async fn execute(&self, session: &str, run: &str, prompt: String, cancel: CancellationToken, ended: session_end::SessionEnd) -> RunOutcome {
        let failed = |reason: String| RunOutcome { status: RunStatus::Failed, summary: None, reason: Some(reason), usage: Default::default(), steps: 0 };
        let model = match Model::new(&self.cfg) {
            Ok(m) => m,
            Err(e) => return failed(e.to_string()),
        };
        let system = match self.cfg.system_prompt() {
            Ok(s) => s,
            Err(e) => return failed(format!("cannot read the system prompt file: {e}")),
        };
        let history = match self.store.messages(session).await {
            Ok(h) => h,
            Err(e) => return failed(format!("cannot read the conversation: {e}")),
        };
        let tools = tools::VmTools {
            manager: self.manager.clone(),
            session: session.to_string(),
            shell: shell::AgentShell::new(self.manager.clone(), session.to_string()),
            shell_timeout: Duration::from_secs(self.cfg.shell_timeout_seconds.max(1)),
            local: self.local.get().copied().unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            token: self.token.clone(),
            browser: self.browser.clone().zip(self.signer.clone()),
            ended,
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let ctx = RunContext { cfg: &self.cfg, model: &model, system: &system, tools: &tools, cancel, events: tx };
        let looped = async move {
            let o = ctx.run(history, prompt).await;
            drop(ctx);
            o
        };
        let relay = async {
            while let Some(ev) = rx.recv().await {
                self.relay(session, run, ev).await;
            }
        };
        let (outcome, ()) = tokio::join!(looped, relay);
        // A cancelled run leaves its command to be stopped: the run ends when it is gone.
        tools.shell.settle().await;
        outcome
    }

    /// One loop event → a session event, or a stored message.
    async fn relay(&self, session: &str, run: &str, ev: AgentEvent) {
        let (s, r) = (session.to_string(), run.to_string());
        let event = match ev {
            AgentEvent::Text(delta) => SessionEvent::AgentText { session: s, run: r, delta },
            AgentEvent::ToolCall(c) => SessionEvent::AgentToolCall { session: s, run: r, call_id: c.id, name: c.name, arguments: c.arguments },
            AgentEvent::ToolResult { call_id, name, output, is_error, paths, .. } => {
                SessionEvent::AgentToolResult { session: s, run: r, call_id, name, output, is_error, paths }
            }
            AgentEvent::Retry { attempt, delay_ms, reason } => {
                SessionEvent::AgentRetry { session: s, run: r, attempt, delay_ms, reason: self.redact(reason) }
            }
            AgentEvent::Message(m) => {
                if let Err(e) = self.store.append_message(session, run, &m).await {
                    tracing::error!(session, run, error = %e, "cannot store an agent message");
                }
                return;
            }
        };
        self.manager.emit(event);
    }

    async fn finish(&self, session: &str, run: &str, outcome: RunOutcome, cancel_reason: Option<String>, interrupted: bool) {
        let status = match api_status(outcome.status) {
            AgentRunStatus::Cancelled if interrupted => AgentRunStatus::Interrupted,
            s => s,
        };
        if let Err(e) = transition(AgentRunStatus::Running, status) {
            tracing::error!(session, run, error = %e, "agent run ended in an impossible state");
        }
        let reason = match status {
            AgentRunStatus::Cancelled | AgentRunStatus::Interrupted => cancel_reason.or(outcome.reason),
            _ => outcome.reason,
        }
        .map(|r| self.redact(r));
        let end = RunEnd {
            status,
            summary: outcome.summary.clone(),
            reason: reason.clone(),
            steps: outcome.steps,
            input_tokens: outcome.usage.input_tokens,
            output_tokens: outcome.usage.output_tokens,
        };
        if let Err(e) = self.store.finish_run(run, &end).await {
            tracing::error!(session, run, error = %e, "cannot store the end of an agent run");
        }
        tracing::info!(session, run, status = status.as_str(), steps = outcome.steps, tokens = outcome.usage.total(), reason = reason.as_deref().unwrap_or(""), "agent run ended");
        self.emit_status(session, run, status, reason, outcome.summary);
    }

    fn emit_status(&self, session: &str, run: &str, status: AgentRunStatus, reason: Option<String>, summary: Option<String>) {
        self.manager.emit(SessionEvent::AgentStatus { session: session.into(), run: run.into(), status, reason, summary });
    }

    /// Stores a new run, unless the caller's `agent_runs_per_day` is used up (counted and
    /// stored under one lock, so concurrent starts cannot both take the last run).
    async fn record_run(&self, sref: &SessionRef, id: &str, prompt: &str) -> Result<AgentRun, AgentError> {
        let who = &sref.caller().who;
        let _one_at_a_time = self.quota_lock.lock().await;
        if let Some(user) = who.user_id() {
            let quotas = self.manager.accounts().quotas_of(who).await.map_err(|e| AgentError::Invalid(e.to_string()))?;
            if let Some(limit) = quotas.and_then(|q| q.agent_runs_per_day) {
                let used = self.runs_today(user).await?;
                if used >= limit {
                    return Err(SessionError::Quota {
                        quota: "agent_runs_per_day",
                        message: format!("quota agent_runs_per_day exceeded: the limit is {limit}, {used} runs were started in the last 24 hours"),
                    }
                    .into());
                }
            }
        }
        Ok(self.store.insert_run(id, sref.id(), who.user_id(), prompt).await?)
    }

    /// Runs `user` started in the last 24 hours.
    pub async fn runs_today(&self, user: &str) -> Result<u32, AgentError> {
        Ok(self.store.runs_since(user, time::OffsetDateTime::now_utc() - time::Duration::days(1)).await?)
    }

    pub async fn get(&self, sref: &SessionRef, run: &str) -> Result<AgentRun, AgentError> {
        let session = sref.id();
        self.store.run(session, run).await?.ok_or_else(|| AgentError::RunNotFound { session: session.into(), run: run.into() })
    }

    pub async fn list(&self, sref: &SessionRef) -> Result<Vec<AgentRun>, AgentError> {
        self.manager.get(sref).await?;
        Ok(self.store.runs(sref.id()).await?)
    }

    /// The stored conversation of the session (provider-neutral messages).
    pub async fn messages(&self, sref: &SessionRef) -> Result<Vec<mayfly_agent::Message>, AgentError> {
        self.manager.get(sref).await?;
        Ok(self.store.messages(sref.id()).await?)
    }

    /// The server is stopping: every running run ends `interrupted` (stored, and an
    /// `agent_status` event for watchers). Waits (bounded) for them to record it.
    pub async fn interrupt_all(&self) {
        let done: Vec<watch::Receiver<bool>> = {
            let active = self.active.lock().expect("active lock");
            active
                .values()
                .map(|a| {
                    a.interrupted.store(true, std::sync::atomic::Ordering::SeqCst);
                    a.reason.lock().expect("reason lock").get_or_insert_with(|| SERVER_STOPPED.into());
                    a.cancel.cancel();
                    a.done.clone()
                })
                .collect()
        };
        if !done.is_empty() {
            tracing::info!(runs = done.len(), "interrupting agent runs");
        }
        for mut d in done {
            let _ = tokio::time::timeout(CANCEL_WAIT, d.wait_for(|d| *d)).await;
        }
    }

    /// Cancels `run` if it is running and waits (bounded) for it to end; returns the run.
    pub async fn cancel(&self, sref: &SessionRef, run: &str) -> Result<AgentRun, AgentError> {
        let session = sref.id();
        let done = {
            let active = self.active.lock().expect("active lock");
            match active.get(session).filter(|a| a.run == run) {
                Some(a) => {
                    a.reason.lock().expect("reason lock").get_or_insert_with(|| "cancelled by the user".into());
                    a.cancel.cancel();
                    Some(a.done.clone())
                }
                None => None,
            }
        };
        if let Some(mut done) = done {
            let _ = tokio::time::timeout(CANCEL_WAIT, done.wait_for(|d| *d)).await;
        }
        self.get(sref, run).await
    }
}
