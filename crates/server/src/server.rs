//! Putting the control plane together: data dir, token, store, VM backend, image catalog,
//! session manager (which adopts the VMs a previous process left running), reaper and HTTP
//! server; graceful shutdown that leaves the VMs running (`on_shutdown = "keep"`) or stops them.

use crate::api::{router, AppState};
use crate::auth::Auth;
use crate::config::ServerConfig;
use crate::images::StoreCatalog;
use crate::manager::SessionManager;
use crate::metrics::Metrics;
use crate::preview::Preview;
use crate::store::SqlStore;
use anyhow::Context;
use mayfly_vm::qemu::{QemuBackend, QemuConfig};
use nix::fcntl::{Flock, FlockArg};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// A bound, reconciled server that has not started serving yet.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
    token_generated: bool,
    preview: Arc<Preview>,
    /// Held while the server runs: a second server on the same data dir would reap our VMs.
    _lock: Flock<std::fs::File>,
}

fn lock_data_dir(cfg: &ServerConfig) -> anyhow::Result<Flock<std::fs::File>> {
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
    let path = cfg.data_dir.join("server.lock");
    let file = std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        anyhow::anyhow!("another mayfly server uses data dir {} ({e})", cfg.data_dir.display())
    })
}

/// Builds the application state for `config` (no socket; nothing reconciled).
/// The flag is true when the token was generated now.
pub async fn build_state(config: ServerConfig, public_url: String) -> anyhow::Result<(AppState, bool)> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let (auth, generated) = Auth::load_or_generate(config.token.as_deref(), &config.token_path())?;
    let store = Arc::new(match &config.database_url {
        Some(url) => SqlStore::connect(url.expose()).await.context("cannot open the PostgreSQL database (database_url)")?,
        None => SqlStore::open(&config.store_path()).await.context("cannot open the session store")?,
    });
    let cluster = crate::cluster::node::Cluster::new(
        &config,
        config.resolved_advertise_url(config.bind),
        store.clone() as Arc<dyn crate::cluster::store::NodeStore>,
        store.shared(),
    )?;
    let accounts = crate::accounts::Accounts::new(
        store.clone(),
        config.account_settings(),
        Arc::new(crate::cluster::keys::secrets_for(&config)),
    );
    let mut qemu = QemuConfig::new(config.vm_state_dir());
    qemu.accel = config.accel;
    qemu.boot_timeout = Duration::from_secs(config.boot_timeout_seconds);
    qemu.confine = mayfly_vm::confine::ConfineConfig {
        vm_uid_range: config.uid_range(),
        qemu_user: Some(config.qemu_user.clone()).filter(|u| !u.is_empty()),
        cgroups: config.cgroups,
        memory_overhead_mib: config.vm_memory_overhead_mib,
        must_reach: vec![config.image_data_dir()],
        pids_max: config.vm_pids_max,
        disk_bytes_per_second: u64::from(config.vm_disk_mib_per_second) << 20,
        disk_iops: config.vm_disk_iops,
        ..Default::default()
    };
    let host = QemuBackend::new(qemu).context("cannot start the QEMU backend")?;
    let images = StoreCatalog::new(&config.image_data_dir());
    let metrics = Arc::new(Metrics::default());
    let agent_cfg = config.agent.clone();
    let oidc_settings = config.oidc_settings();
    let agent_cfg_dir = config.data_dir.clone();
    let shared_store = store.shared().then(|| (store.shared_pool(), store.dialect()));
    let manager = SessionManager::new(
        Arc::new(config),
        public_url,
        store,
        Arc::new(host),
        Arc::new(images),
        metrics.clone(),
        accounts,
    );
    manager.set_cluster(cluster);
    let agent_store = match shared_store {
        Some((pool, dialect)) => crate::agent::store::AgentStore::shared(pool, dialect).await.context("cannot open the agent store")?,
        None => crate::agent::store::AgentStore::open(&agent_cfg_dir.join("agent.db")).await.context("cannot open the agent store")?,
    };
    let agent = crate::agent::AgentService::new(manager.clone(), agent_cfg, agent_store, auth.token().to_string(), &agent_cfg_dir);
    let oidc = match oidc_settings {
        Some(settings) => {
            let redirect = format!("{}/auth/oidc/callback", manager.public_url());
            let oidc = crate::users::oidc::Oidc::new(settings, redirect).context("invalid OpenID Connect settings")?;
            Some(Arc::new(crate::api::oidc::OidcDoor::new(oidc)))
        }
        None => None,
    };
    Ok((AppState { manager, auth: Arc::new(auth), metrics, agent, oidc }, generated))
}

impl Server {
    /// Binds the listener (port 0 picks one), opens everything and reconciles leftovers.
    pub async fn bind(config: ServerConfig) -> anyhow::Result<Server> {
        config.validate()?;
        let lock = lock_data_dir(&config)?;
        let listener = TcpListener::bind(config.bind).await.with_context(|| format!("cannot listen on {}", config.bind))?;
        let addr = listener.local_addr()?;
        let public_url = config.resolved_public_url(addr);
        let data_dir = config.data_dir.clone();
        let (state, token_generated) = build_state(config, public_url).await?;
        state.manager.egress().set_control_port(addr.port());
        let preview = Preview::new(state.manager.clone(), state.auth.clone(), &data_dir, addr.port())?;
        state.agent.set_local_addr(addr);
        let cluster = state.manager.cluster().expect("build_state sets the cluster");
        cluster.set_address(state.manager.config().resolved_advertise_url(addr));
        // The name first: a node must not touch the rows of a name it does not hold.
        cluster.claim(&state.manager).await.context("cannot register this node")?;
        state.manager.reconcile().await.context("reconciling sessions with the host")?;
        state.agent.interrupt_left_running().await;
        Ok(Server { listener, addr, state, token_generated, preview: Arc::new(preview), _lock: lock })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn token(&self) -> &str {
        self.state.auth.token()
    }

    /// True when the token was generated at this start (and should be shown to the operator).
    pub fn token_generated(&self) -> bool {
        self.token_generated
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then stops every session and waits for the tasks.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let manager = self.state.manager.clone();
        let reaper = tokio::spawn(manager.clone().run_reaper(manager.config().reaper_interval()));
        let pool = manager.start_pool();
        let cluster = manager.cluster().expect("build_state sets the cluster");
        let stop_heartbeat = tokio_util::sync::CancellationToken::new();
        let heartbeat = tokio::spawn(cluster.clone().run_heartbeat(manager.clone(), stop_heartbeat.clone()));
        let app = crate::cluster::layer(self.preview.clone().layer(router(self.state.clone())), &cluster, manager.config(), self.addr.port());
        let m = manager.clone();
        let agent = self.state.agent.clone();
        // Sessions stop (or are left running) before connections drain: open terminals and
        // event streams then end by themselves, and new sessions are refused meanwhile.
        let graceful = async move {
            shutdown.await;
            tracing::info!(on_shutdown = ?m.config().on_shutdown, "shutting down");
            agent.interrupt_all().await;
            m.shutdown().await;
        };
        let served = crate::listen::serve(self.listener, app, graceful).await;
        self.state.agent.interrupt_all().await;
        manager.shutdown().await;
        // After the sessions are left or ended: the other nodes then see this one stopped.
        stop_heartbeat.cancel();
        let _ = heartbeat.await;
        let _ = reaper.await;
        let _ = pool.await;
        served.context("HTTP server failed")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Runs `mayfly serve`: binds, prints `mayfly listening on http://ADDR` (and the token if it
/// was generated), serves until `shutdown` resolves, then stops every VM.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let token_path = config.token_path();
    let server = Server::bind(config).await?;
    println!("mayfly listening on http://{}", server.local_addr());
    if server.token_generated() {
        println!("mayfly token: {} (saved in {})", server.token(), token_path.display());
    }
    server.serve(shutdown).await
}
