//! `mayfly` — one binary for the control plane, images, sessions and developer VMs.

mod account_cmd;
mod accounts_api;
mod agent_cmd;
mod audit_cmd;
mod bench;
mod cells;
mod client;
mod credentials;
mod git_token_cmd;
mod image_cmd;
mod paths;
mod secret;
mod session_cmd;
mod ssh_cmd;
mod terminal;
mod token_cmd;
mod user_cmd;
mod vm_cmd;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mayfly",
    version,
    about = "Fresh VMs as browser IDEs, on your own machine",
    after_help = "Client commands talk to $MAYFLY_URL, else the only server saved by `mayfly login`, else \
                  http://127.0.0.1:7070. Their token: $MAYFLY_TOKEN, else the one `mayfly login` saved for that \
                  URL, else <data-dir>/token (the local server's own token)."
)]
struct Cli {
    /// Data directory (images, VM state, database, token). Default: /var/lib/mayfly as root, else
    /// $XDG_DATA_HOME/mayfly, else ~/.local/share/mayfly (the help shows the one in effect).
    #[arg(long, global = true, env = "MAYFLY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the control plane (API, IDE, previews) until interrupted.
    Serve {
        /// Config file (TOML). Default: <data-dir>/config.toml if present.
        #[arg(long, env = "MAYFLY_CONFIG")]
        config: Option<PathBuf>,
        /// Listen address, e.g. 127.0.0.1:7070 (overrides the config).
        #[arg(long)]
        bind: Option<String>,
    },
    /// Build and list guest images.
    #[command(subcommand)]
    Image(image_cmd::ImageCmd),
    /// Create a session; prints its id and IDE URL.
    New {
        #[arg(long)]
        image: Option<String>,
        /// Maximum lifetime in seconds.
        #[arg(long)]
        ttl: Option<u64>,
        #[command(flatten)]
        opts: session_cmd::NewOpts,
    },
    /// Fork a running session: a new session from a copy of its VM (memory, running
    /// processes and terminals, disk). Prints the new id and IDE URL.
    Fork {
        id: String,
        /// Maximum lifetime of the fork in seconds.
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// List sessions.
    Ls,
    /// Delete sessions (their VMs are destroyed).
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Run a command in a session; its exit code becomes ours.
    Exec {
        id: String,
        #[arg(long)]
        cwd: Option<String>,
        #[arg(long)]
        timeout: Option<u64>,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Interactive shell in a session, in this terminal.
    Shell { id: String },
    /// Listening ports of a session and their preview URLs.
    Ports { id: String },
    /// Give the session's coding agent a task and stream what it does (Ctrl-C cancels the run).
    Agent { id: String, prompt: String },
    /// Check an API token with a server and save it for that server's URL.
    ///
    /// Saved in $XDG_CONFIG_HOME/mayfly/credentials.json, else ~/.config/mayfly/credentials.json
    /// (mode 0600), one token per server URL.
    Login {
        /// The server (default: $MAYFLY_URL, else the only saved server, else http://127.0.0.1:7070).
        #[arg(long)]
        url: Option<String>,
        /// The token (default: read from stdin; prompted without echo on a terminal).
        #[arg(long)]
        token: Option<String>,
    },
    /// Forget the saved token of a server.
    Logout {
        /// The server (default: as for login).
        #[arg(long)]
        url: Option<String>,
    },
    /// Who this CLI acts as: email, role, quotas and what is in use.
    Whoami,
    /// Your API tokens.
    #[command(subcommand)]
    Token(token_cmd::TokenCmd),
    /// Users and their quotas (admins).
    #[command(subcommand)]
    User(user_cmd::UserCmd),
    /// The audit log, newest first (admins).
    Audit(audit_cmd::AuditArgs),
    /// Git tokens saved on the server and given to your sessions' git.
    #[command(subcommand)]
    GitToken(git_token_cmd::GitTokenCmd),
    /// Your SSH public keys: they sign you in at the server's SSH gateway.
    #[command(subcommand)]
    SshKey(ssh_cmd::SshKeyCmd),
    /// SSH into a session with the system's ssh. After `--`: ssh options, then a command
    /// (`mayfly ssh <id> -- -A -L 3000:localhost:3000 make dev`).
    Ssh {
        id: String,
        #[command(flatten)]
        gateway: ssh_cmd::Gateway,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Write `Host <id>.mayfly` entries for your ready sessions into ~/.ssh/config (a managed
    /// block, rewritten each time), so `ssh <id>.mayfly` and VS Code Remote-SSH reach them.
    SshConfig {
        #[command(flatten)]
        gateway: ssh_cmd::Gateway,
        /// The ssh config file (default: ~/.ssh/config).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Print the block instead of writing it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Developer VMs without a server: boot, run, destroy.
    #[command(subcommand)]
    Vm(vm_cmd::VmCmd),
    /// Measure boot, clone, exec, throughput and memory; prints figures and writes JSON.
    Bench(bench::BenchOpts),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MAYFLY_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if std::env::args().nth(1).as_deref() == Some("serve") {
                    "info,sqlx=warn,tower_http=warn"
                } else {
                    "warn"
                })
            }),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: logs redirected to a file or a pipe stay plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // The help states the data dir this invocation really uses (it depends on the user and the
    // environment), not only the rule.
    let default_dir = paths::data_dir(None);
    let matches = Cli::command()
        .mut_arg("data_dir", |a| {
            a.help(format!(
                "Data directory (images, VM state, database, token). Default: {} \
                 (/var/lib/mayfly as root, else $XDG_DATA_HOME/mayfly, else ~/.local/share/mayfly)",
                default_dir.display()
            ))
        })
        .get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let data_dir = paths::data_dir(cli.data_dir);
    let rt = match cli.cmd {
        Cmd::Serve { .. } => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
        // current_thread: QEMU children of `vm` commands are spawned from the main thread, so
        // PDEATHSIG ties their lifetime to this process.
        _ => tokio::runtime::Builder::new_current_thread().enable_all().build(),
    }
    .expect("tokio runtime");
    let result = rt.block_on(async move {
        let client = || client::Client::from_env(&data_dir);
        match cli.cmd {
            Cmd::Serve { config, bind } => serve(config, bind, &data_dir).await,
            Cmd::Image(c) => image_cmd::run(c, &data_dir).await,
            Cmd::Vm(c) => vm_cmd::run(c, &data_dir).await,
            Cmd::Bench(o) => bench::run(o, &data_dir).await,
            Cmd::New { image, ttl, opts } => session_cmd::new(&client()?, image, ttl, opts).await,
            Cmd::Fork { id, ttl } => session_cmd::fork(&client()?, &id, ttl).await,
            Cmd::Ls => session_cmd::ls(&client()?).await,
            Cmd::Rm { ids } => session_cmd::rm(&client()?, &ids).await,
            Cmd::Exec { id, cwd, timeout, cmd } => session_cmd::exec(&client()?, &id, cmd, cwd, timeout).await,
            Cmd::Shell { id } => session_cmd::shell(&client()?, &id).await,
            Cmd::Ports { id } => session_cmd::ports(&client()?, &id).await,
            Cmd::Agent { id, prompt } => agent_cmd::run(&client()?, &id, &prompt).await,
            Cmd::Login { url, token } => account_cmd::login(url, token).await,
            Cmd::Logout { url } => account_cmd::logout(url).await,
            Cmd::Whoami => account_cmd::whoami(&client()?).await,
            Cmd::Token(c) => token_cmd::run(&client()?, c).await,
            Cmd::User(c) => user_cmd::run(&client()?, c).await,
            Cmd::Audit(a) => audit_cmd::run(&client()?, a).await,
            Cmd::GitToken(c) => git_token_cmd::run(&client()?, c).await,
            Cmd::SshKey(c) => ssh_cmd::key(&client()?, c).await,
            Cmd::Ssh { id, gateway, args } => ssh_cmd::ssh(&client()?, &gateway, &id, &args).await,
            Cmd::SshConfig { gateway, file, dry_run } => ssh_cmd::config(&client()?, &gateway, file, dry_run).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve(config: Option<PathBuf>, bind: Option<String>, data_dir: &std::path::Path) -> anyhow::Result<ExitCode> {
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

