//! `mayfly-guest`: `init` (PID 1 in the VM) or `daemon` (the host channel server).

use anyhow::Context;
use clap::{Parser, Subcommand};
use mayfly_guest::serve::{self, Daemon};
use mayfly_guest::transport::{Listener, Port};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "mayfly-guest", version, about = "Mayfly in-VM guest daemon")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Run as PID 1: mount, set up, supervise the daemon, reap zombies.
    Init {
        /// Do not grow the root file system (tests run init in namespaces on a real host).
        #[arg(long, hide = true)]
        no_resize: bool,
    },
    /// Serve the host channel.
    Daemon(DaemonArgs),
    /// git credential helper (`credential.helper`): asks the daemon, which asks the host.
    Credential {
        /// git's action: get, store or erase.
        action: String,
    },
    /// Runs CMD with the session's token for HOST in its environment (asked for now, never
    /// written down); `gh` as a link to this binary does this for /usr/bin/gh.
    WithToken {
        /// Host as git names it: `github.com`, or `host:port`.
        host: String,
        /// Environment variable(s) to put the token in.
        #[arg(long = "env", value_name = "NAME", default_value = "GH_TOKEN")]
        vars: Vec<String>,
        /// The program and its arguments.
        #[arg(last = true, required = true)]
        cmd: Vec<std::ffi::OsString>,
    },
}

#[derive(clap::Args)]
struct DaemonArgs {
    /// Name of the virtio-serial port to serve (from /sys/class/virtio-ports/*/name).
    #[arg(long, default_value = "mayfly.0")]
    port_name: String,
    /// Serve on this Unix socket instead of the virtio port (one connection at a time; tests).
    #[arg(long, value_name = "PATH")]
    unix_listen: Option<PathBuf>,
    /// Address of the egress proxy programs in the VM use (`http_proxy`); `off` disables it.
    #[arg(long, default_value = mayfly_guest::egress::DEFAULT_LISTEN)]
    egress_listen: String,
    /// Seconds a detached persistent terminal lives before it is hung up.
    #[arg(long, default_value_t = 3600, hide = true)]
    terminal_idle_secs: u64,
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
}

fn daemon(args: DaemonArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(32)
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async {
        let daemon = Daemon::new(Duration::from_secs(args.terminal_idle_secs));
        let listener = match &args.unix_listen {
            Some(path) => Listener::unix(path)?,
            None => Listener::Port(Port::open(&args.port_name).await?),
        };
        if args.egress_listen != "off" {
            let addr = args.egress_listen.parse().context("--egress-listen")?;
            match mayfly_guest::egress::bind(addr).await {
                Ok(l) => {
                    if let Ok(a) = l.local_addr() {
                        mayfly_guest::ports::hide(a.port());
                    }
                    tokio::spawn(mayfly_guest::egress::run(l, daemon.host.subscribe()));
                }
                // Programs then get "connection refused" from the proxy address; everything else works.
                Err(e) => tracing::error!("cannot listen for egress on {addr}: {e}"),
            }
        }
        if args.unix_listen.is_none() {
            let path = std::path::Path::new(mayfly_guest::credential::SOCKET);
            match mayfly_guest::credential::bind(path) {
                Ok(l) => {
                    tokio::spawn(mayfly_guest::credential::run(l, daemon.host.subscribe()));
                }
                Err(e) => tracing::error!("cannot listen on {}: {e}", path.display()),
            }
        }
        tracing::info!(version = env!("CARGO_PKG_VERSION"), "daemon ready");
        serve::run(listener, daemon).await;
        Ok(())
    })
}

fn main() -> ExitCode {
    let socket = std::path::Path::new(mayfly_guest::credential::SOCKET);
    let mut argv = std::env::args_os();
    if mayfly_guest::with_token::invoked_as_gh(argv.next().as_ref()) {
        let e = mayfly_guest::with_token::gh(socket, argv.collect());
        return report(e.map_err(anyhow::Error::from));
    }
    let cli = Cli::parse();
    init_logging();
    let res = match cli.mode {
        Mode::Init { no_resize } => mayfly_guest::init::run(!no_resize).map(|_| ()).map_err(anyhow::Error::from),
        Mode::Daemon(args) => daemon(args),
        Mode::Credential { action } => mayfly_guest::credential::helper(&action, socket).map_err(anyhow::Error::from),
        Mode::WithToken { host, vars, cmd } => mayfly_guest::with_token::run(socket, &host, &vars, &cmd).map_err(anyhow::Error::from),
    };
    report(res)
}

fn report(res: anyhow::Result<()>) -> ExitCode {
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mayfly-guest: {e:#}");
            ExitCode::FAILURE
        }
    }
}
