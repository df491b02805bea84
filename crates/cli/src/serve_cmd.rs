//! `mayfly serve`: the control plane and the doors with their own protocol (SSH, E2B), started
//! once the server is bound and reconciled and stopped first at shutdown.

use std::path::PathBuf;
use std::process::ExitCode;

pub async fn serve(config: Option<PathBuf>, bind: Option<String>, data_dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let mut cfg = mayfly_server::ServerConfig::load(config.as_deref(), data_dir)?;
    if let Some(b) = bind {
        cfg.bind = b.parse().map_err(|e| anyhow::anyhow!("--bind {b:?}: {e}"))?;
    }
    // Registered before anything starts: a SIGTERM or Ctrl-C during start-up (reconcile) is a
    // graceful stop, not the default disposition's instant death.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| anyhow::anyhow!("cannot handle SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| anyhow::anyhow!("cannot handle SIGINT: {e}"))?;
    let shutdown = async move {
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutdown requested");
    };
    let token_path = cfg.token_path();
    let (ssh_listen, host_key, e2b_listen) = (cfg.ssh_listen, cfg.ssh_host_key_path(), cfg.e2b_listen);
    let server = mayfly_server::Server::bind(cfg).await?;
    // The doors with their own protocol start once the server is bound and reconciled.
    let e2b = match e2b_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on e2b_listen {addr}: {e}"))?,
        ),
        None => None,
    };
    println!("mayfly listening on http://{}", server.local_addr());
    if let Some(l) = &e2b {
        println!("mayfly e2b api on http://{}", l.local_addr()?);
    }
    if server.token_generated() {
        println!("mayfly token: {} (saved in {})", server.token(), token_path.display());
    }
    let gateway = match ssh_listen {
        Some(addr) => {
            let g = mayfly_ssh::Gateway::start(server.state().manager.clone(), addr, &host_key).await?;
            println!("mayfly ssh listening on {} (host key {})", g.local_addr(), g.fingerprint());
            Some(g)
        }
        None => None,
    };
    let (stop_e2b, e2b_stopped) = tokio::sync::oneshot::channel::<()>();
    let e2b_door = e2b.map(|listener| {
        tokio::spawn(mayfly_e2b::serve(listener, server.state().clone(), async move {
            let _ = e2b_stopped.await;
        }))
    });
    // At shutdown the doors stop first: SSH clients are told the server is stopping before
    // their sessions end, and the E2B listener takes no new calls.
    let shutdown = async move {
        shutdown.await;
        if let Some(g) = gateway {
            g.stop().await;
        }
        let _ = stop_e2b.send(());
    };
    let served = server.serve(shutdown).await;
    if let Some(door) = e2b_door {
        match door.await {
            Ok(Err(e)) => tracing::warn!("the E2B API failed: {e:#}"),
            Err(e) => tracing::warn!("the E2B API task failed: {e}"),
            Ok(Ok(())) => {}
        }
    }
    served?;
    Ok(ExitCode::SUCCESS)
}
