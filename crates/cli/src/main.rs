//! `mayfly` — one binary for the control plane, images, sessions and developer VMs.

mod account_cmd;
mod accounts_api;
mod agent_cmd;
mod audit_cmd;
mod nodes_cmd;
mod bench;
mod cells;
mod client;
mod credentials;
mod git_token_cmd;
mod image_cmd;
mod paths;
mod secret;
mod serve_cmd;
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
    /// The nodes of the deployment (admins): `mayfly nodes [ls | cordon N | drain N | uncordon N]`.
    Nodes {
        #[command(subcommand)]
        cmd: Option<nodes_cmd::NodesCmd>,
    },
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
    // `shell` reads stdin on one of tokio's blocking threads, which cannot be cancelled: waiting
    // for it at the end would hang until the next key after the remote shell exited.
    let reads_stdin = matches!(cli.cmd, Cmd::Shell { .. });
    let result = rt.block_on(async move {
        let client = || client::Client::from_env(&data_dir);
        match cli.cmd {
            Cmd::Serve { config, bind } => serve_cmd::serve(config, bind, &data_dir).await,
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
            Cmd::Nodes { cmd } => nodes_cmd::run(&client()?, cmd).await,
            Cmd::Ssh { id, gateway, args } => ssh_cmd::ssh(&client()?, &gateway, &id, &args).await,
            Cmd::SshConfig { gateway, file, dry_run } => ssh_cmd::config(&client()?, &gateway, file, dry_run).await,
        }
    });
    if reads_stdin {
        rt.shutdown_background();
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
