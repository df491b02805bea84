//! Repositories and credentials with real VMs and a real git server on the host (git's
//! `http-backend` behind basic auth): a session clones a private repo with its injected token,
//! commits and pushes a branch from the VM; the token is nowhere on the guest's disk, in the
//! snapshot files, in the API or in the server's logs; wrong or missing tokens fail fast with
//! git's message; a remote the egress policy refuses fails naming the policy. `push` covers
//! auto-push at session end, `token` the token-in-the-environment helper (`gh`), `cli` the
//! `mayfly new --repo` binary.

mod cli;
mod push;
mod token;

use crate::common;
use crate::gitserver;

use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const USER: &str = "alice";
const TOKEN_SECRET: &str = "tok-7f3a9c1e5b2d4068";

/// Everything the server logs (debug level), to look for the token in.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

/// The process-wide log capture. Every test of this file calls it before starting a server, so
/// whichever runs first installs it (the servers' own `init_logs` then finds one in place).
fn captured_logs() -> LogBuf {
    static LOGS: std::sync::OnceLock<LogBuf> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        common::alone_in_this_process("repos");
        let logs = LogBuf::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter("mayfly_server=debug,mayfly_vm=debug,info")
            .with_writer(move || writer.clone())
            .try_init()
            .expect("no other log subscriber was installed first");
        logs
    })
    .clone()
}

impl Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A git server with the `app` repo, and a Mayfly server whose sessions may reach it.
struct Fixture {
    git_root: tempfile::TempDir,
    git: gitserver::GitServer,
    srv: TestServer,
    /// `host:port` of the git server as the VM reaches it.
    remote: String,
    url: String,
}

impl Fixture {
    async fn start(tune: impl FnOnce(&mut mayfly_server::config::ServerConfig)) -> Fixture {
        let git_root = tempfile::tempdir().unwrap();
        gitserver::make_repo(git_root.path());
        let git = gitserver::start(git_root.path().to_path_buf(), USER, TOKEN_SECRET).await;
        let remote = git.vm_addr();
        let r = remote.clone();
        let srv = TestServer::start(move |c| {
            c.egress_private_allow = vec![r];
            tune(c)
        })
        .await;
        let url = format!("http://{remote}/git/app.git");
        Fixture { git_root, git, srv, remote, url }
    }

    fn network(&self) -> Value {
        json!({ "egress": "allowlist", "allow": [self.remote] })
    }

    fn cred(&self, token: &str) -> Value {
        json!([{ "host": self.remote, "username": USER, "token": token }])
    }
}

/// Waits until the session's repo is no longer cloning; returns the session JSON.
async fn cloned(srv: &TestServer, id: &str) -> Value {
    tokio::time::timeout(SLOW, async {
        loop {
            let (_, s) = srv.get(&format!("/api/v1/sessions/{id}")).await;
            if s["repo"]["state"] != "cloning" {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the clone finished")
}

async fn sh(srv: &TestServer, id: &str, script: &str) -> Value {
    let (status, out) = srv.exec(id, &["sh", "-c", script]).await;
    assert_eq!(status, 200, "{out}");
    out
}

/// True when `needle` occurs anywhere in the files under `dir`.
fn found_in_files(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            hits.extend(found_in_files(&p, needle));
        } else if let Ok(bytes) = std::fs::read(&p) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_commit_push_with_a_session_token() {
    let logs = captured_logs();
    let f = Fixture::start(|_| {}).await;
    let (srv, git, git_root, remote, url) = (&f.srv, &f.git, &f.git_root, f.remote.clone(), f.url.clone());
    let network = f.network();
    let cred = |token: &str| f.cred(token);

    // The right token: cloned, then a branch committed and pushed from inside the VM.
    let id = srv
        .ready_session(json!({ "image": "minimal", "network": network, "repo": { "url": url }, "git_credentials": cred(TOKEN_SECRET) }))
        .await;
    let s = cloned(srv, &id).await;
    assert_eq!(s["repo"]["state"], "ready", "{s}");
    assert_eq!(s["repo"]["path"], "/root/app");
    assert_eq!(s["git_credential_hosts"], json!([remote]));
    let out = sh(srv, &id, "cat /root/app/app.py && git -C /root/app log --format=%s").await;
    assert_eq!(out["stdout"], "print('v1')\nv1\n", "{out}");
    let out = sh(
        srv,
        &id,
        "cd /root/app && git checkout -q -b feature && echo \"print('v2')\" > app.py && \
         git -c user.name=t -c user.email=t@example.com commit -qam v2 && git push -q origin feature 2>&1",
    )
    .await;
    assert_eq!(out["exit_code"], 0, "{out}");
    assert_eq!(gitserver::head_subject(git_root.path(), "feature").as_deref(), Some("v2"), "the push reached the server");
    // Nothing about the token was written down in the VM (config, credential stores).
    let out = sh(srv, &id, &format!("sync; grep -rl '{TOKEN_SECRET}' /root /etc /tmp /var 2>/dev/null; echo done")).await;
    assert_eq!(out["stdout"], "done\n", "{out}");
    let overlay_hits = found_in_files(&srv.run_dir(&id), TOKEN_SECRET.as_bytes());
    assert!(overlay_hits.is_empty(), "token in the VM's disk overlay or run dir: {overlay_hits:?}");
    let image_hits = found_in_files(&image_data_dir().join("images/minimal/current"), TOKEN_SECRET.as_bytes());
    assert!(image_hits.is_empty(), "token in the image or its snapshot files: {image_hits:?}");
    assert!(!s.to_string().contains(TOKEN_SECRET), "the API never shows the token: {s}");
    assert_eq!(srv.delete(&id).await, 204);

    // A wrong token: the clone fails at once with git's words, the session stays usable.
    let refused_before = git.refused.load(Ordering::SeqCst);
    let bad = srv
        .ready_session(json!({ "image": "minimal", "network": network, "repo": { "url": url }, "git_credentials": cred("wrong-token") }))
        .await;
    let s = cloned(srv, &bad).await;
    assert_eq!(s["repo"]["state"], "failed", "{s}");
    assert!(s["repo"]["message"].as_str().unwrap().contains("Authentication failed"), "{s}");
    assert!(git.refused.load(Ordering::SeqCst) > refused_before, "the server saw and refused the wrong token");
    assert_eq!(sh(srv, &bad, "echo still here").await["stdout"], "still here\n");
    assert_eq!(srv.delete(&bad).await, 204);
    // No token at all: no prompt, no hang.
    let anon = srv.ready_session(json!({ "image": "minimal", "network": network, "repo": { "url": url } })).await;
    let s = cloned(srv, &anon).await;
    assert_eq!(s["repo"]["state"], "failed", "{s}");
    assert!(s["repo"]["message"].as_str().unwrap().contains("terminal prompts disabled"), "{s}");
    assert_eq!(srv.delete(&anon).await, 204);

    // A remote the policy refuses: the error names the policy.
    let blocked = srv
        .ready_session(json!({ "image": "minimal", "network": { "egress": "none" }, "repo": { "url": url }, "git_credentials": cred(TOKEN_SECRET) }))
        .await;
    let s = cloned(srv, &blocked).await;
    assert_eq!(s["repo"]["state"], "failed", "{s}");
    let msg = s["repo"]["message"].as_str().unwrap();
    assert!(msg.contains("403") && msg.contains("`none` policy"), "{msg}");
    assert_eq!(srv.delete(&blocked).await, 204);

    f.srv.stop().await;
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(text.contains("git credential requested"), "the logs were captured");
    assert!(!text.contains(TOKEN_SECRET), "the token is in the server's logs");
}

#[tokio::test]
async fn repo_urls_with_credentials_are_refused_and_not_echoed() {
    let _ = captured_logs();
    let srv = TestServer::start(|_| {}).await;
    let (status, body) = srv.create(json!({ "image": "minimal", "repo": { "url": "https://bob:hunter2@example.com/r.git" } }), false).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("credentials in the URL") && !body.to_string().contains("hunter2"), "{body}");
    let (status, body) = srv.create(json!({ "image": "minimal", "git_credentials": [{ "host": "https://github.com", "token": "x" }] }), false).await;
    assert_eq!(status, 400, "{body}");
    let (_, list) = srv.get("/api/v1/sessions").await;
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    srv.stop().await;
}
