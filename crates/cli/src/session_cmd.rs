//! Session verbs over the API: new, ls, rm, exec, shell, ports.

use crate::client::Client;
use crate::terminal::{self, TermInput};
use anyhow::Context;
use futures::{SinkExt, StreamExt};
use mayfly_proto::api::{ExecBody, PtyControl, PtyNotice};
use std::io::Write;
use std::process::ExitCode;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Repository, credentials and network of a new session.
#[derive(clap::Args)]
pub struct NewOpts {
    /// Clone this repository into the workspace: `URL[@REF]` (REF: branch, tag or commit).
    #[arg(long, value_name = "URL[@REF]")]
    repo: Option<String>,
    /// A git token for a host: `[USER@]HOST=TOKEN` (repeatable; USER default `x-access-token`).
    /// Given to git in the VM on demand.
    #[arg(long, value_name = "[USER@]HOST=TOKEN")]
    git_token: Vec<String>,
    /// Network: none, allowlist or open (default: the server's setting).
    #[arg(long)]
    egress: Option<String>,
    /// An allowlist entry (with --egress allowlist; repeatable): host, *.domain, IP or CIDR[:port].
    #[arg(long, value_name = "RULE")]
    allow: Vec<String>,
    /// vCPUs of the VM (default: the image's; at most the server's max_vcpus).
    #[arg(long)]
    vcpus: Option<u32>,
    /// Guest memory in MiB (default: the image's; at most the server's max_memory_mib).
    #[arg(long, value_name = "MIB")]
    memory: Option<u32>,
    /// Disk size in GiB (default: the image's; at most the server's max_disk_gib).
    #[arg(long, value_name = "GIB")]
    disk: Option<u32>,
    /// Push the repository's work to `mayfly/<id>` on origin when the session ends (default:
    /// the server's `auto_push`).
    #[arg(long)]
    auto_push: Option<bool>,
}

/// `URL@REF` → (URL, REF): the `@` must follow the start of the URL's path.
fn split_repo(arg: &str) -> (String, Option<String>) {
    let path_start = arg.find("://").map(|i| i + 3).and_then(|h| arg[h..].find('/').map(|p| h + p)).unwrap_or(arg.len());
    match arg[path_start..].rfind('@') {
        Some(at) => (arg[..path_start + at].to_string(), Some(arg[path_start + at + 1..].to_string())),
        None => (arg.to_string(), None),
    }
}

/// `[USER@]HOST=TOKEN` → a `git_credentials` entry.
fn git_token(arg: &str) -> Option<serde_json::Value> {
    let (who, token) = arg.split_once('=')?;
    let mut c = match who.rsplit_once('@') {
        Some((user, host)) => serde_json::json!({ "host": host, "username": user }),
        None => serde_json::json!({ "host": who }),
    };
    c["token"] = token.into();
    Some(c)
}

pub async fn new(client: &Client, image: Option<String>, ttl: Option<u64>, opts: NewOpts) -> anyhow::Result<ExitCode> {
    let mut body = serde_json::json!({});
    if let Some(i) = image {
        body["image"] = i.into();
    }
    if let Some(t) = ttl {
        body["ttl_seconds"] = t.into();
    }
    for (field, v) in [("vcpus", opts.vcpus), ("memory_mib", opts.memory), ("disk_gib", opts.disk)] {
        if let Some(v) = v {
            body[field] = v.into();
        }
    }
    if let Some(r) = &opts.repo {
        let (url, git_ref) = split_repo(r);
        body["repo"] = serde_json::json!({ "url": url });
        if let Some(g) = git_ref {
            body["repo"]["ref"] = g.into();
        }
    }
    let mut creds = Vec::new();
    for t in &opts.git_token {
        creds.push(git_token(t).context("--git-token takes [USER@]HOST=TOKEN")?);
    }
    body["git_credentials"] = creds.into();
    if let Some(a) = opts.auto_push {
        body["auto_push"] = a.into();
    }
    if let Some(e) = &opts.egress {
        body["network"] = serde_json::json!({ "egress": e, "allow": opts.allow });
    }
    let s = client.create(body).await?;
    println!("{}\t{}", s.id, s.ide_url);
    if opts.repo.is_some() {
        return wait_for_clone(client, &s.id).await;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn fork(client: &Client, id: &str, ttl: Option<u64>) -> anyhow::Result<ExitCode> {
    let mut body = serde_json::json!({});
    if let Some(t) = ttl {
        body["ttl_seconds"] = t.into();
    }
    let s = client.fork(id, body).await?;
    println!("{}\t{}", s.id, s.ide_url);
    Ok(ExitCode::SUCCESS)
}

/// Shows the clone's progress on stderr until it finished; fails if the clone failed.
async fn wait_for_clone(client: &Client, id: &str) -> anyhow::Result<ExitCode> {
    use mayfly_proto::api::{RepoState, SessionState};
    let mut last = None;
    loop {
        let s = client.get(id).await?;
        if s.state == SessionState::Failed {
            anyhow::bail!("session {id} failed: {}", s.failure.unwrap_or_default());
        }
        if let Some(r) = s.repo {
            if r.message != last {
                if let Some(m) = &r.message {
                    eprintln!("{m}");
                }
                last = r.message.clone();
            }
            match r.state {
                RepoState::Ready => {
                    eprintln!("cloned into {}", r.path);
                    return Ok(ExitCode::SUCCESS);
                }
                RepoState::Failed => {
                    eprintln!("clone failed; the session is usable");
                    return Ok(ExitCode::FAILURE);
                }
                RepoState::Cloning => {}
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

pub async fn ls(client: &Client) -> anyhow::Result<ExitCode> {
    print!("{}", ls_table(&client.list().await?));
    Ok(ExitCode::SUCCESS)
}

/// The table of `mayfly ls`; with an OWNER column when the list names owners (admins see them).
fn ls_table(list: &[mayfly_proto::api::Session]) -> String {
    use std::fmt::Write;
    let owners = list.iter().any(|s| s.owner_email.is_some());
    let owner = |o: Option<&str>| if owners { format!("{:<26} ", o.unwrap_or("-")) } else { String::new() };
    let mut out = format!("{:<14} {:<10} {:<10} {:<22} {}IDE\n", "ID", "STATE", "IMAGE", "CREATED", owner(Some("OWNER")));
    for s in list {
        let state = if s.paused { "paused" } else { s.state.as_str() };
        let _ = writeln!(
            out,
            "{:<14} {:<10} {:<10} {:<22} {}{}",
            s.id,
            state,
            s.image,
            s.created_at,
            owner(s.owner_email.as_deref()),
            s.ide_url
        );
    }
    out
}

pub async fn rm(client: &Client, ids: &[String]) -> anyhow::Result<ExitCode> {
    for id in ids {
        client.delete(id).await.with_context(|| format!("removing {id}"))?;
        println!("{id}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn exec(client: &Client, id: &str, cmd: Vec<String>, cwd: Option<String>, timeout: Option<u64>) -> anyhow::Result<ExitCode> {
    let r = client.exec(id, &ExecBody { cmd, cwd, env: Default::default(), timeout_seconds: timeout }).await?;
    std::io::stdout().write_all(r.stdout.as_bytes())?;
    std::io::stderr().write_all(r.stderr.as_bytes())?;
    if r.timed_out {
        eprintln!("mayfly: command timed out");
    }
    Ok(exit_code(r.exit_code, r.signal))
}

pub async fn ports(client: &Client, id: &str) -> anyhow::Result<ExitCode> {
    let ports = client.ports(id).await?;
    if ports.is_empty() {
        println!("no listening ports in {id}");
    }
    for p in ports {
        println!("{:<6} {:<8} {}", p.port, format!("{:?}", p.visibility).to_lowercase(), p.url);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn shell(client: &Client, id: &str) -> anyhow::Result<ExitCode> {
    let (cols, rows) = terminal::size();
    let mut req = client.pty_url(id, cols, rows).into_client_request()?;
    req.headers_mut().insert("authorization", format!("Bearer {}", client.token()).parse()?);
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .with_context(|| format!("opening a terminal in session {id}"))?;
    let (mut sink, mut stream) = ws.split();
    let (in_tx, mut in_rx) = mpsc::channel::<TermInput>(64);
    let (out_tx, out_rx) = mpsc::channel(64);
    let pump_in = tokio::spawn(async move {
        while let Some(i) = in_rx.recv().await {
            let msg = match i {
                TermInput::Data(d) => Message::Binary(d),
                TermInput::Resize { cols, rows } => {
                    Message::Text(serde_json::to_string(&PtyControl::Resize { cols, rows }).expect("json"))
                }
            };
            if sink.send(msg).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let pump_out = tokio::spawn(async move {
        let mut exit = None;
        while let Some(Ok(msg)) = stream.next().await {
            let bytes = match msg {
                Message::Binary(b) => bytes::Bytes::from(b),
                Message::Text(t) => {
                    match serde_json::from_str::<PtyNotice>(&t) {
                        Ok(PtyNotice::Exit { code, signal }) => exit = Some((code, signal)),
                        Ok(PtyNotice::Error { message }) => eprintln!("\r\nmayfly: {message}\r"),
                        Err(_) => {}
                    }
                    continue;
                }
                Message::Close(_) => break,
                _ => continue,
            };
            if out_tx.send(bytes).await.is_err() {
                break;
            }
        }
        exit
    });
    terminal::run(in_tx, out_rx).await?;
    pump_in.abort();
    // The output ended: the pump has finished (with the exit notice, if the server sent one).
    let exit = pump_out.await.ok().flatten();
    Ok(match exit {
        Some((code, signal)) => exit_code(code, signal),
        // The connection ended without an exit notice (the session went away).
        None => {
            eprintln!("mayfly: the terminal connection ended without an exit status");
            ExitCode::from(255)
        }
    })
}

/// A remote process's end as this process's exit code: the code itself, 128 + the signal, or
/// 255 when neither is known.
fn exit_code(code: Option<i32>, signal: Option<i32>) -> ExitCode {
    match (code, signal) {
        (Some(c), _) => ExitCode::from(c.clamp(0, 255) as u8),
        (None, Some(s)) => ExitCode::from((128 + s).clamp(0, 255) as u8),
        _ => ExitCode::from(255),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn git_tokens_may_name_a_user() {
        use super::git_token;
        use serde_json::json;
        assert_eq!(git_token("github.com=t=x"), Some(json!({ "host": "github.com", "token": "t=x" })));
        assert_eq!(git_token("alice@git.example.com:8443=t"), Some(json!({ "host": "git.example.com:8443", "username": "alice", "token": "t" })));
        assert_eq!(git_token("github.com"), None);
    }

    #[test]
    fn ls_shows_owners_when_the_server_names_them() {
        let session = |id: &str, owner: Option<&str>| {
            let mut s = serde_json::json!({
                "id": id, "state": "ready", "image": "minimal", "created_at": "2025-01-01T00:00:00Z",
                "ide_url": format!("http://h/s/{id}"), "expires_at": "2025-01-01T01:00:00Z",
                "idle_timeout_seconds": 600, "network": { "egress": "none" },
            });
            if let Some(o) = owner {
                s["owner"] = "u1".into();
                s["owner_email"] = o.into();
            }
            serde_json::from_value::<mayfly_proto::api::Session>(s).unwrap()
        };
        let t = super::ls_table(&[session("s1", None)]);
        assert!(!t.contains("OWNER"), "{t}");
        let t = super::ls_table(&[session("s1", Some("ann@example.com")), session("s2", None)]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("OWNER"), "{t}");
        assert!(lines[1].contains("ann@example.com") && lines[2].contains(" - "), "{t}");
    }

    #[test]
    fn repo_refs_follow_the_path() {
        use super::split_repo;
        let s = |a: &str, b: Option<&str>| (a.to_string(), b.map(String::from));
        assert_eq!(split_repo("https://github.com/acme/app@main"), s("https://github.com/acme/app", Some("main")));
        assert_eq!(split_repo("https://github.com/acme/app@feature/x"), s("https://github.com/acme/app", Some("feature/x")));
        assert_eq!(split_repo("https://github.com/acme/app"), s("https://github.com/acme/app", None));
        assert_eq!(split_repo("https://me@host/r.git"), s("https://me@host/r.git", None), "user info is not a ref");
    }
}
