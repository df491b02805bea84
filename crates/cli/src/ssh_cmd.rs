//! `mayfly ssh-key`, `mayfly ssh` and `mayfly ssh-config`: your SSH keys on the server, an SSH
//! shell in a session through the system's `ssh`, and `Host` entries so that `ssh <id>.mayfly`
//! (and VS Code's Remote-SSH host list) reach your sessions through the server's SSH gateway.

use crate::cells;
use crate::client::Client;
use anyhow::Context;
use mayfly_proto::accounts::AddSshKey;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const BEGIN: &str = "# ------------START-MAYFLY-----------";
const END: &str = "# ------------END-MAYFLY------------";

#[derive(clap::Subcommand)]
pub enum SshKeyCmd {
    /// Register a public key (default: ~/.ssh/id_ed25519.pub, else id_ecdsa.pub, else id_rsa.pub;
    /// `-` reads stdin).
    Add {
        file: Option<PathBuf>,
        /// Default: the key's comment.
        #[arg(long)]
        name: Option<String>,
    },
    /// List your registered keys.
    Ls,
    /// Remove a key: it stops signing you in at once.
    Rm { id: String },
}

/// Where the SSH gateway is, from the flags, the environment or the server.
#[derive(clap::Args, Clone)]
pub struct Gateway {
    /// Gateway host (default: the server URL's host).
    #[arg(long, env = "MAYFLY_SSH_HOST")]
    pub ssh_host: Option<String>,
    /// Gateway port (default: what the server reports).
    #[arg(long, env = "MAYFLY_SSH_PORT")]
    pub ssh_port: Option<u16>,
}

pub async fn key(client: &Client, cmd: SshKeyCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        SshKeyCmd::Add { file, name } => {
            let (path, text) = read_public_key(file.as_deref())?;
            let k = client.add_ssh_key(&AddSshKey { public_key: text, name }).await.with_context(|| format!("registering {path}"))?;
            println!("added SSH key {} ({}) {}", k.id, k.name, k.fingerprint);
        }
        SshKeyCmd::Ls => {
            println!("{:<14} {:<24} {:<52} {:<21} LAST USED", "ID", "NAME", "FINGERPRINT", "ADDED");
            for k in client.ssh_keys().await? {
                println!(
                    "{:<14} {:<24} {:<52} {:<21} {}",
                    k.id,
                    k.name,
                    k.fingerprint,
                    cells::time(&k.created_at),
                    cells::opt_time(k.last_used_at.as_deref())
                );
            }
        }
        SshKeyCmd::Rm { id } => {
            client.remove_ssh_key(&id).await?;
            println!("removed SSH key {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_public_key(file: Option<&Path>) -> anyhow::Result<(String, String)> {
    if file == Some(Path::new("-")) {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        return Ok(("stdin".into(), s));
    }
    let candidates: Vec<PathBuf> = match file {
        Some(f) => vec![f.to_path_buf()],
        None => {
            let home = std::env::var_os("HOME").map(PathBuf::from).context("HOME is not set; name the .pub file")?;
            ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"].iter().map(|n| home.join(".ssh").join(n)).collect()
        }
    };
    for p in &candidates {
        if let Ok(text) = std::fs::read_to_string(p) {
            return Ok((p.display().to_string(), text));
        }
    }
    anyhow::bail!("no public key at {} (make one with ssh-keygen -t ed25519, or name the .pub file)", candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))
}

/// The gateway's host and port.
async fn endpoint(client: &Client, gw: &Gateway) -> anyhow::Result<(String, u16)> {
    let host = match &gw.ssh_host {
        Some(h) => h.clone(),
        None => reqwest::Url::parse(client.base())?.host_str().context("the server URL has no host")?.trim_matches(['[', ']']).to_string(),
    };
    let port = match gw.ssh_port {
        Some(p) => p,
        None => client.me().await?.ssh_port.context("the server has no SSH gateway (set ssh_listen in its config), or pass --ssh-port")?,
    };
    Ok((host, port))
}

/// `args` split into ssh options (before the destination) and the remote command (after it).
pub fn split_ssh_args(args: &[String]) -> (&[String], &[String]) {
    // ssh's options that take a value (ssh(1) SYNOPSIS).
    const WITH_VALUE: &str = "BbcDEeFIiJLlmOoPpRSWw";
    let mut i = 0;
    while let Some(a) = args.get(i) {
        if a == "--" {
            return (&args[..i], &args[i + 1..]);
        }
        let Some(flags) = a.strip_prefix('-').filter(|f| !f.is_empty()) else { break };
        i += 1;
        // `-L 8080:…` takes the next word; `-L8080:…` and `-tt` do not.
        if let Some(pos) = flags.find(|c| WITH_VALUE.contains(c)) {
            if pos == flags.len() - 1 {
                i += 1;
            }
        }
    }
    let i = i.min(args.len());
    (&args[..i], &args[i..])
}

/// Runs the system `ssh` into session `id` (replacing this process): `args` are ssh options,
/// then the remote command, if any.
pub async fn ssh(client: &Client, gw: &Gateway, id: &str, args: &[String]) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let (host, port) = endpoint(client, gw).await?;
    let (opts, command) = split_ssh_args(args);
    let mut cmd = std::process::Command::new("ssh");
    cmd.args(["-p", &port.to_string(), "-o", &format!("HostKeyAlias={}", alias(&host, port))]).args(opts).arg(format!("{id}@{host}")).args(command);
    let err = cmd.exec();
    Err(anyhow::anyhow!("cannot run ssh: {err} (install the OpenSSH client)"))
}

fn alias(host: &str, port: u16) -> String {
    format!("mayfly-{host}-{port}")
}

/// The managed block for `sessions` (ids) behind the gateway at `host:port`.
pub fn render_block(server: &str, host: &str, port: u16, sessions: &[String]) -> String {
    let mut b = format!(
        "{BEGIN}\n# Written by `mayfly ssh-config` for {server}; run it again for new sessions.\n\
         # Edits inside this block are lost; put your own settings outside it.\n\
         Host *.mayfly\n  HostName {host}\n  Port {port}\n  HostKeyAlias {}\n  ServerAliveInterval 30\n",
        alias(host, port)
    );
    for s in sessions {
        b.push_str(&format!("Host {s}.mayfly\n  User {s}\n"));
    }
    b.push_str(END);
    b.push('\n');
    b
}

/// `config` with its managed block replaced by `block` (or `block` appended).
pub fn replace_block(config: &str, block: &str) -> String {
    match (config.find(BEGIN), config.find(END)) {
        (Some(a), Some(z)) if a < z => {
            let after = config[z + END.len()..].strip_prefix('\n').unwrap_or(&config[z + END.len()..]);
            format!("{}{block}{after}", &config[..a])
        }
        _ if config.is_empty() => block.to_string(),
        _ => format!("{}{}\n{block}", config, if config.ends_with('\n') { "" } else { "\n" }),
    }
}

pub async fn config(client: &Client, gw: &Gateway, file: Option<PathBuf>, dry_run: bool) -> anyhow::Result<ExitCode> {
    let (host, port) = endpoint(client, gw).await?;
    let sessions: Vec<String> = client.list().await?.into_iter().filter(|s| s.state.as_str() == "ready").map(|s| s.id).collect();
    let block = render_block(client.base(), &host, port, &sessions);
    if dry_run {
        print!("{block}");
        return Ok(ExitCode::SUCCESS);
    }
    let path = match file {
        Some(f) => f,
        None => std::env::var_os("HOME").map(PathBuf::from).context("HOME is not set; pass --file")?.join(".ssh/config"),
    };
    let old = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("mayfly-tmp");
    std::fs::write(&tmp, replace_block(&old, &block)).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot replace {}", path.display()))?;
    println!("wrote {} host entries to {} (ssh <id>.mayfly)", sessions.len(), path.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_options_go_before_the_destination() {
        let v = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let cases = [
            ("-L 8080:localhost:3000 -N", "-L 8080:localhost:3000 -N", ""),
            ("-tt -i key ls -la", "-tt -i key", "ls -la"),
            ("-L8080:localhost:3000 make test", "-L8080:localhost:3000", "make test"),
            ("uname -a", "", "uname -a"),
            ("-A -- -weird-command", "-A", "-weird-command"),
            ("-p", "-p", ""),
        ];
        for (args, opts, cmd) in cases {
            let all = v(args);
            let (o, c) = split_ssh_args(&all);
            assert_eq!((o.to_vec(), c.to_vec()), (v(opts), v(cmd)), "{args}");
        }
    }

    #[test]
    fn the_block_is_replaced_in_place_and_the_rest_kept() {
        let b1 = render_block("http://x:7070", "x", 2222, &["sa".into()]);
        assert!(b1.contains("Host sa.mayfly\n  User sa\n"), "{b1}");
        assert!(b1.contains("Host *.mayfly\n  HostName x\n  Port 2222\n"), "{b1}");
        let mine = "Host work\n  User me\n";
        let once = replace_block(mine, &b1);
        assert!(once.starts_with(mine) && once.ends_with(&b1), "{once}");
        let b2 = render_block("http://x:7070", "x", 2222, &["sb".into(), "sc".into()]);
        let twice = replace_block(&format!("{once}Host later\n"), &b2);
        assert_eq!(twice, format!("{mine}\n{b2}Host later\n"));
        assert!(!twice.contains("Host sa.mayfly"));
        assert_eq!(replace_block("", &b1), b1);
    }
}
