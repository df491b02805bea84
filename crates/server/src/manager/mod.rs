//! The session manager: owns every live session (its VM, its watchers), moves sessions through
//! the lifecycle of [`state`], records each change in the store and broadcasts it.
//!
//! * [`lifecycle`] — create (boot in a background task), delete, fail, shut down.
//! * [`adopt`] — taking over running VMs at start (reconcile) and leaving them at a stop.
//! * [`guest`] — operations inside a ready session's VM: exec, files, terminals.
//! * [`ports`] — per-session port watcher and preview visibility.
//! * [`file_watch`] — per-session workspace watcher (`file_changed` events).
//! * [`events`] — per-session event streams (history replayed, then live).
//! * [`repo`] — the session's repository clone; [`repo_push`] — its push at session end.
//! * [`reaper`] — idle timeout and maximum lifetime.
//! * `streams`, `agent_forward` — raw guest streams (commands, terminals, forwarded SSH agents)
//!   for doors that relay bytes themselves (the SSH gateway).
//!
//! Not owned here: HTTP (the `api` module parses requests and calls these methods), the VM
//! command line (the `vm` crate), image building (the `image` crate).

mod adopt;
pub mod capacity;
mod agent_forward;
mod deadline;
mod events;
pub mod file_watch;
mod fork;
mod guest;
mod guest_streams;
mod lifecycle;
mod node_report;
mod pause;
mod pool;
mod quota;
mod repo;
pub mod size;
mod repo_push;
mod streams;
mod ports;
pub mod reaper;
pub mod state;

use crate::config::ServerConfig;
use crate::images::{CatalogError, ImageCatalog};
use crate::metrics::Metrics;
use crate::store::{SessionRecord, SessionStore, StoreError, StoredEvent};
use crate::vmhost::VmHost;
use mayfly_proto::api::{Session, SessionEvent, SessionState, Visibility};
use mayfly_proto::msg::ErrorKind;
use mayfly_vm::Vm;
use state::IllegalTransition;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use agent_forward::AgentListener;
pub use guest::{file_body, FileEntry, PtyAttach, PtyParams};
pub use streams::GuestProcess;
pub use repo::validate_credentials;
pub(crate) use guest_streams::answer;
pub use adopt::RESTARTED;
pub use pause::{should_pause, Attached, BUSY_CPU_PERCENT};
pub use pool::{PoolStatus, Source};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("session {0} not found")]
    NotFound(String),
    #[error("session {id} is {}, not ready", .state.as_str())]
    NotReady { id: String, state: SessionState },
    /// A live session of another node reached this one (its node was not answering a moment ago).
    #[error("session {id} runs on node {node}, which does not answer now; try again (its state here: {})", .state.as_str())]
    Elsewhere { id: String, node: String, state: SessionState },
    #[error("session {id} changed state meanwhile (now {})", .actual.as_str())]
    StateChanged { id: String, actual: SessionState },
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error(transparent)]
    Image(#[from] CatalogError),
    #[error("max_sessions ({0}) reached")]
    TooManySessions(usize),
    /// The host would have less than `min_free_memory_mib` left after this session's memory.
    #[error("the host is low on memory: {available_mib} MiB available, a new session needs {needed_mib} MiB (its memory plus min_free_memory_mib); end some sessions or ask for less memory")]
    HostMemoryLow { available_mib: u64, needed_mib: u64 },
    /// A user's quota would be exceeded; the message names the quota, its limit and the use.
    #[error("{message}")]
    Quota { quota: &'static str, message: String },
    /// A requested size beyond an operator maximum; the message names the setting.
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    Invalid(String),
    #[error("upload exceeds max_upload_bytes ({0})")]
    UploadTooLarge(u64),
    /// The guest refused to run a command (missing binary, bad cwd).
    #[error("cannot run {command:?}: {message}")]
    Exec { command: String, message: String },
    /// The guest refused a file or terminal operation.
    #[error("{message}")]
    Guest { kind: ErrorKind, message: String },
    /// The VM or its channel failed; `source` is logged, not shown to clients.
    #[error("session {id}: {what} failed")]
    Vm {
        id: String,
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("session {id} failed: {reason}")]
    Failed { id: String, reason: String },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An event with its store sequence number (state changes only; port events have none).
#[derive(Debug, Clone)]
pub struct Envelope {
    pub seq: Option<i64>,
    pub event: SessionEvent,
}

impl Envelope {
    pub fn session(&self) -> &str {
        match &self.event {
            SessionEvent::State { session, .. }
            | SessionEvent::PortOpened { session, .. }
            | SessionEvent::PortClosed { session, .. }
            | SessionEvent::FileChanged { session, .. }
            | SessionEvent::Repo { session, .. }
            | SessionEvent::RepoPush { session, .. }
            | SessionEvent::AgentStatus { session, .. }
            | SessionEvent::AgentText { session, .. }
            | SessionEvent::AgentToolCall { session, .. }
            | SessionEvent::AgentToolResult { session, .. }
            | SessionEvent::AgentRetry { session, .. } => session,
        }
    }
}

/// What a new session is set up with besides its record (a fork copies its source's).
pub(crate) struct Setup {
    pub env: BTreeMap<String, String>,
    pub policy: crate::egress::Policy,
    pub git_credentials: Vec<mayfly_proto::api::GitCredential>,
    pub repo: Option<mayfly_proto::api::RepoStatus>,
    pub auto_push: bool,
    pub forked_from: Option<String>,
    /// The user the session belongs to (`None`: the server token).
    pub owner: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// In-memory side of a session that holds (or is acquiring) a VM.
pub(crate) struct LiveSession {
    id: String,
    /// End of life; moved by [`SessionManager::set_expiry`].
    expires_at: Mutex<OffsetDateTime>,
    idle_timeout: Duration,
    /// Environment given at creation; applied to every exec and terminal. Never stored.
    env: BTreeMap<String, String>,
    /// Egress policy, checked at creation.
    policy: crate::egress::Policy,
    /// Git tokens (the session's, then the operator's). Memory only; emptied at the end.
    git_credentials: Mutex<Vec<mayfly_proto::api::GitCredential>>,
    /// The repository and its clone's progress.
    repo: Mutex<Option<mayfly_proto::api::RepoStatus>>,
    /// Push the repository's work to `mayfly/<id>` when the session is deleted.
    auto_push: bool,
    /// Current state; changed only by [`SessionManager::transition`].
    state: watch::Sender<SessionState>,
    /// Held for the length of one state change (store write + memory update).
    transition_lock: tokio::sync::Mutex<()>,
    /// Held by whoever tears the session down (delete, fail), so teardowns never interleave.
    lifecycle: tokio::sync::Mutex<()>,
    vm: Mutex<Option<Arc<dyn Vm>>>,
    boot: Mutex<Option<JoinHandle<()>>>,
    /// Cancels the boot and the session's watcher tasks.
    cancel: CancellationToken,
    /// [`clock_ms`] of the last API, terminal or preview activity.
    last_active_ms: AtomicU64,
    /// `last_active_ms` as last written to the store.
    stored_active_ms: AtomicU64,
    ports: Mutex<BTreeSet<u16>>,
    visibility: Mutex<HashMap<u16, Visibility>>,
    /// The session this one was forked from.
    forked_from: Option<String>,
    /// `CreateSession.labels` (a fork copies them).
    labels: BTreeMap<String, String>,
    /// Paused while idle, and the clients that keep it from pausing.
    pause: pause::PauseState,
    /// The user it belongs to; `None`: the server token.
    owner: Option<String>,
    /// The VM's size (counted against its owner's quotas).
    size: Option<mayfly_proto::api::SessionSize>,
}

impl LiveSession {
    fn new(
        record: &SessionRecord,
        setup: Setup,
        now_ms: u64,
    ) -> Arc<LiveSession> {
        Arc::new(LiveSession {
            id: record.id.clone(),
            expires_at: Mutex::new(record.expires_at),
            idle_timeout: Duration::from_secs(record.idle_timeout_seconds),
            env: setup.env,
            policy: setup.policy,
            git_credentials: Mutex::new(setup.git_credentials),
            repo: Mutex::new(setup.repo),
            auto_push: setup.auto_push,
            state: watch::channel(record.state).0,
            transition_lock: Default::default(),
            lifecycle: Default::default(),
            vm: Mutex::new(None),
            boot: Mutex::new(None),
            cancel: CancellationToken::new(),
            last_active_ms: AtomicU64::new(now_ms),
            stored_active_ms: AtomicU64::new(0),
            ports: Default::default(),
            visibility: Default::default(),
            forked_from: setup.forked_from,
            labels: setup.labels,
            pause: Default::default(),
            owner: setup.owner,
            size: record.size,
        })
    }

    fn state(&self) -> SessionState {
        *self.state.borrow()
    }
    fn vm(&self) -> Option<Arc<dyn Vm>> {
        self.vm.lock().expect("vm lock").clone()
    }
}

/// Milliseconds on the manager's activity clock: since `epoch`, plus a 30-day base so that an
/// adopted session's last activity before this process started is representable.
pub(crate) fn clock_ms(epoch: Instant) -> u64 {
    const BASE_MS: u64 = 30 * 24 * 3600 * 1000;
    epoch.elapsed().as_millis() as u64 + BASE_MS
}

/// Records the latest activity of one session; cheap to clone into long-lived tasks (terminals).
/// One made for a connected client (terminal, preview) also counts that client as attached
/// until its last clone is dropped, so the session does not pause under it.
#[derive(Clone)]
pub struct Activity {
    session: Option<Arc<LiveSession>>,
    epoch: Instant,
    _attached: Option<Arc<Attached>>,
}

impl Activity {
    /// Activity that is recorded nowhere (traffic that must not keep a session alive).
    pub fn none() -> Activity {
        Activity { session: None, epoch: Instant::now(), _attached: None }
    }

    pub fn touch(&self) {
        if let Some(s) = &self.session {
            s.last_active_ms.store(clock_ms(self.epoch), Ordering::Relaxed);
        }
    }
}

pub struct SessionManager {
    cfg: Arc<ServerConfig>,
    public_url: String,
    store: Arc<dyn SessionStore>,
    host: Arc<dyn VmHost>,
    images: Arc<dyn ImageCatalog>,
    metrics: Arc<Metrics>,
    live: Mutex<HashMap<String, Arc<LiveSession>>>,
    events: broadcast::Sender<Envelope>,
    shutdown: CancellationToken,
    epoch: Instant,
    provisioner: Arc<pool::Provisioner>,
    egress: Arc<crate::egress::Egress>,
    /// Seals the secrets a session keeps across a restart (environment, git tokens).
    secrets: crate::secrets::Secrets,
    /// Users: quotas, saved git tokens, the audit log.
    accounts: Arc<crate::accounts::Accounts>,
    /// Forwarded SSH agents' sockets in guests, and where their connections go.
    agent_forwards: Arc<agent_forward::AgentForwards>,
    /// The SSH gateway's port once it listens (0: no gateway), shown by `GET /api/v1/me`.
    ssh_port: std::sync::atomic::AtomicU16,
    /// This node's name: stored with every session it creates; start-up reconciliation touches
    /// only this node's rows.
    node: String,
    /// The node registry, once this node has claimed its name.
    cluster: std::sync::OnceLock<Arc<crate::cluster::node::Cluster>>,
}

/// RFC 3339 with second precision (what the API shows).
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

impl SessionManager {
    pub fn new(
        cfg: Arc<ServerConfig>,
        public_url: String,
        store: Arc<dyn SessionStore>,
        host: Arc<dyn VmHost>,
        images: Arc<dyn ImageCatalog>,
        metrics: Arc<Metrics>,
        accounts: Arc<crate::accounts::Accounts>,
    ) -> Arc<Self> {
        let cfg = capacity::resolve(cfg);
        let (events, _) = broadcast::channel(1024);
        let pooled = if cfg.templates && cfg.pool_size > 0 {
            cfg.pool_images.clone().unwrap_or_else(|| vec![cfg.default_image.clone()])
        } else {
            Vec::new()
        };
        let provisioner = pool::Provisioner::new(
            host.clone(),
            images.clone(),
            pool::PoolConfig {
                size: cfg.pool_size,
                pooled,
                templates: cfg.templates,
                memory_override: cfg.vm_memory_mib,
                vcpus_override: cfg.vm_vcpus,
            },
        );
        let private_allow = crate::egress::rules::parse_all(&cfg.egress_private_allow).unwrap_or_else(|e| {
            // `ServerConfig::validate` refuses bad rules before the manager exists.
            tracing::error!("{e}; no private destinations are allowed");
            Vec::new()
        });
        Arc::new(Self {
            secrets: crate::cluster::keys::secrets_for(&cfg),
            node: crate::cluster::settings::node_name(&cfg),
            cluster: Default::default(),
            provisioner,
            egress: Arc::new(crate::egress::Egress::new(private_allow)),
            cfg,
            public_url,
            store,
            host,
            images,
            metrics,
            live: Mutex::new(HashMap::new()),
            events,
            shutdown: CancellationToken::new(),
            epoch: Instant::now(),
            accounts,
            agent_forwards: Default::default(),
            ssh_port: Default::default(),
        })
    }

    /// The node registry this node belongs to (set once at start).
    pub fn set_cluster(&self, c: Arc<crate::cluster::node::Cluster>) {
        let _ = self.cluster.set(c);
    }

    pub fn cluster(&self) -> Option<Arc<crate::cluster::node::Cluster>> {
        self.cluster.get().cloned()
    }

    /// Records where the SSH gateway (`mayfly-ssh`) listens, for clients to find it.
    pub fn set_ssh_port(&self, port: u16) {
        self.ssh_port.store(port, Ordering::Relaxed);
    }

    /// The SSH gateway's port, when one runs.
    pub fn ssh_port(&self) -> Option<u16> {
        Some(self.ssh_port.load(Ordering::Relaxed)).filter(|p| *p != 0)
    }

    pub fn accounts(&self) -> &Arc<crate::accounts::Accounts> {
        &self.accounts
    }

    /// `Some(owner)` when session `id` was ever stored (destroyed ones too: their agent runs stay
    /// readable by their owner; every operation on the session itself finds it gone).
    pub(crate) async fn owner_of(&self, id: &str) -> Result<Option<Option<String>>, SessionError> {
        if let Some(s) = self.live(id) {
            return Ok(Some(s.owner.clone()));
        }
        Ok(self.store.get(id).await?.map(|r| r.owner))
    }

    /// Egress decisions and counters shared by every session.
    pub fn egress(&self) -> &Arc<crate::egress::Egress> {
        &self.egress
    }

    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    /// Warm pool and template status per image.
    pub fn pool_status(&self) -> Vec<PoolStatus> {
        self.provisioner.status()
    }

    /// Starts keeping the warm pool filled (after reconcile).
    pub fn start_pool(&self) -> JoinHandle<()> {
        tokio::spawn(self.provisioner.clone().run())
    }

    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    fn live(&self, id: &str) -> Option<Arc<LiveSession>> {
        self.live.lock().expect("live lock").get(id).cloned()
    }

    fn forget(&self, id: &str) {
        self.live.lock().expect("live lock").remove(id);
    }

    fn activity(&self, session: &Arc<LiveSession>) -> Activity {
        Activity { session: Some(session.clone()), epoch: self.epoch, _attached: None }
    }

    /// Activity of a client that stays connected (see [`Activity`]).
    fn client_activity(&self, session: &Arc<LiveSession>) -> Activity {
        Activity { session: Some(session.clone()), epoch: self.epoch, _attached: Some(Arc::new(self.attach(&session.id))) }
    }

    /// Marks session `id` active now (API use, terminal traffic, preview requests).
    pub fn touch(&self, id: &str) {
        if let Some(s) = self.live(id) {
            self.activity(&s).touch();
        }
    }

    /// Moves a live session from `from` to `to`: the one path every in-memory change takes.
    async fn transition(
        &self,
        s: &LiveSession,
        from: SessionState,
        to: SessionState,
        reason: Option<&str>,
    ) -> Result<(), SessionError> {
        let _g = s.transition_lock.lock().await;
        let actual = s.state();
        if actual != from {
            return Err(SessionError::StateChanged { id: s.id.clone(), actual });
        }
        self.record_transition(&s.id, from, to, reason).await?;
        s.state.send_replace(to);
        Ok(())
    }

    /// Checks, stores and broadcasts one state change (also for sessions with no live object).
    async fn record_transition(
        &self,
        id: &str,
        from: SessionState,
        to: SessionState,
        reason: Option<&str>,
    ) -> Result<StoredEvent, SessionError> {
        state::transition(from, to)?;
        let ev = self.store.transition(id, from, to, reason, OffsetDateTime::now_utc()).await?;
        tracing::info!(session = id, from = from.as_str(), to = to.as_str(), reason = reason.unwrap_or(""), "session state");
        if to == SessionState::Failed {
            self.metrics.session_failed();
        }
        self.publish(&ev);
        Ok(ev)
    }

    fn publish(&self, ev: &StoredEvent) {
        let event = SessionEvent::State {
            session: ev.session.clone(),
            from: ev.from,
            to: ev.to,
            reason: ev.reason.clone(),
            at: rfc3339(ev.at),
        };
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(Envelope { seq: Some(ev.seq), event });
    }

    /// Broadcasts a live event that is not stored (agent runs).
    pub fn emit(&self, event: SessionEvent) {
        let _ = self.events.send(Envelope { seq: None, event });
    }

    /// Follows the state of live session `id` (`None` once it is gone).
    pub fn watch_state(&self, id: &str) -> Option<watch::Receiver<SessionState>> {
        self.live(id).map(|s| s.state.subscribe())
    }

    fn view(&self, r: &SessionRecord) -> Session {
        let live = self.live(&r.id);
        Session {
            id: r.id.clone(),
            state: r.state,
            image: r.image.clone(),
            created_at: rfc3339(r.created_at),
            expires_at: rfc3339(r.expires_at),
            idle_timeout_seconds: r.idle_timeout_seconds,
            ide_url: format!("{}/s/{}", self.public_url, r.id),
            network: r.network.clone(),
            repo: live.as_ref().and_then(|s| s.repo.lock().expect("repo lock").clone()),
            git_credential_hosts: live
                .as_ref()
                .map(|s| {
                    let own = s.git_credentials.lock().expect("credentials lock");
                    let mut hosts: Vec<String> = own.iter().chain(&self.cfg.git_credentials).map(|c| c.host.clone()).collect();
                    hosts.dedup();
                    hosts
                })
                .unwrap_or_default(),
            auto_push: live.as_ref().is_some_and(|s| s.auto_push),
            failure: r.failure.clone(),
            forked_from: live.as_ref().and_then(|s| s.forked_from.clone()),
            labels: r.runtime.labels.clone(),
            paused: live.as_ref().is_some_and(|s| s.pause.paused.load(Ordering::SeqCst)),
            vcpus: r.size.map(|z| z.vcpus),
            memory_mib: r.size.map(|z| z.memory_mib),
            disk_gib: r.size.map(|z| z.disk_gib),
            max_processes: r.size.and((self.cfg.vm_pids_max > 0).then_some(self.cfg.vm_pids_max)),
            disk_mib_per_second: r.size.and((self.cfg.vm_disk_mib_per_second > 0).then_some(self.cfg.vm_disk_mib_per_second)),
            disk_iops: r.size.and((self.cfg.vm_disk_iops > 0).then_some(self.cfg.vm_disk_iops)),
            owner: r.owner.clone(),
            node: r.node.clone(),
            owner_email: None,
        }
    }

    /// The stored session `id`; destroyed sessions are gone (not found).
    async fn record(&self, id: &str) -> Result<SessionRecord, SessionError> {
        match self.store.get(id).await? {
            Some(r) if r.state != SessionState::Destroyed => Ok(r),
            _ => Err(SessionError::NotFound(id.to_string())),
        }
    }

    pub async fn get(&self, sref: &crate::access::SessionRef) -> Result<Session, SessionError> {
        let id = sref.id();
        let r = self.record(id).await?;
        self.touch(id);
        Ok(self.view(&r))
    }

    /// Every session `caller` may see that is not destroyed, oldest first (failed ones stay
    /// until deleted): a member's own, or all for an admin.
    pub async fn list(&self, caller: &crate::accounts::Caller) -> Result<Vec<Session>, SessionError> {
        use SessionState::*;
        let recs = self.store.list(&[Creating, Ready, Stopping, Lost, Failed]).await?;
        let admin = caller.who.is_admin();
        Ok(recs
            .iter()
            .filter(|r| admin || crate::access::owns(&caller.who, r.owner.as_deref()))
            .map(|r| self.view(r))
            .collect())
    }

    pub fn images(&self) -> Vec<mayfly_proto::api::ImageInfo> {
        self.images.list()
    }

    pub async fn metrics_text(&self) -> Result<String, SessionError> {
        let counts = self.store.count_by_state().await?;
        let mut text = self.metrics.render(&counts);
        let pools = self.provisioner.status();
        text.push_str("# HELP mayfly_pool_ready Restored, unclaimed VMs ready per image.\n# TYPE mayfly_pool_ready gauge\n");
        for p in &pools {
            text.push_str(&format!("mayfly_pool_ready{{image=\"{}\"}} {}\n", p.image, p.ready));
        }
        text.push_str("# HELP mayfly_pool_hits_total Sessions handed a pooled VM.\n# TYPE mayfly_pool_hits_total counter\n");
        for p in &pools {
            text.push_str(&format!("mayfly_pool_hits_total{{image=\"{}\"}} {}\n", p.image, p.hits));
        }
        text.push_str("# HELP mayfly_pool_misses_total Sessions that found the pool empty.\n# TYPE mayfly_pool_misses_total counter\n");
        for p in &pools {
            text.push_str(&format!("mayfly_pool_misses_total{{image=\"{}\"}} {}\n", p.image, p.misses));
        }
        Ok(text)
    }

    /// The error for an operation that needs a ready session `id`.
    async fn not_ready(&self, id: &str) -> SessionError {
        match self.record(id).await {
            Ok(r) if !self.is_mine(&r) && state::is_live(r.state) => {
                SessionError::Elsewhere { id: id.to_string(), node: r.node.unwrap_or_default(), state: r.state }
            }
            Ok(r) => SessionError::NotReady { id: id.to_string(), state: r.state },
            Err(e) => e,
        }
    }

    /// The VM of ready session `id` (resumed if it was paused); counts as activity.
    async fn ready_vm(&self, id: &str) -> Result<(Arc<LiveSession>, Arc<dyn Vm>), SessionError> {
        if let Some(s) = self.live(id) {
            let state = s.state();
            if state == SessionState::Ready {
                if let Some(vm) = s.vm() {
                    self.activity(&s).touch();
                    // Every request of any kind resumes a paused session.
                    self.resume_if_paused(&s).await;
                    return Ok((s, vm));
                }
            }
            return Err(SessionError::NotReady { id: id.to_string(), state });
        }
        Err(self.not_ready(id).await)
    }
}

/// A new session id: `s` + 11 random base32 characters, a lowercase DNS label.
pub fn new_session_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::thread_rng();
    std::iter::once('s').chain((0..11).map(|_| ALPHABET[rng.gen_range(0..32)] as char)).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn session_ids_are_dns_labels() {
        let a = super::new_session_id();
        assert_eq!(a.len(), 12);
        assert!(mayfly_vm::valid_id(&a), "{a}");
        assert_ne!(a, super::new_session_id());
    }
}
