//! A real git server for the tests: `git http-backend` (smart HTTP, clone and push) behind a
//! small HTTP server on the host that demands basic auth with one user and token.

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::{HeaderMap, Response, StatusCode};
use base64::Engine;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

pub struct GitServer {
    pub port: u16,
    /// Requests refused for a missing or wrong token.
    #[allow(dead_code)] // read by the repos tests, not by every includer
    pub refused: Arc<AtomicUsize>,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git").current_dir(dir).args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A bare repo `<root>/app.git` with one commit (`app.py` printing v1) on `main`.
pub fn make_repo(root: &Path) {
    let work = root.join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("app.py"), "print('v1')\n").unwrap();
    git(&work, &["add", "app.py"]);
    git(&work, &["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "v1"]);
    git(root, &["clone", "-q", "--bare", "work", "app.git"]);
}

/// The subject of the newest commit on `branch` in the served repo, if the branch exists.
#[allow(dead_code)] // used by the repos and adopt tests, not by every includer
pub fn head_subject(root: &Path, branch: &str) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["--git-dir", root.join("app.git").to_str().unwrap(), "log", "-1", "--format=%s", branch, "--"])
        .output()
        .unwrap();
    out.status.success().then(|| String::from_utf8(out.stdout).unwrap().trim().to_string())
}

impl GitServer {
    /// `host:port` of this server as a VM reaches it: the host's own (non-loopback) address,
    /// through the VM's egress proxy, which the test's server must allow as a private destination.
    pub fn vm_addr(&self) -> String {
        let host_ip = mayfly_server::egress::addrs::host_addresses()
            .into_iter()
            .find(|a| matches!(a, std::net::IpAddr::V4(v4) if !v4.is_loopback()))
            .expect("the host has a non-loopback IPv4 address");
        format!("{host_ip}:{}", self.port)
    }
}

pub async fn start(root: PathBuf, user: &'static str, token: &'static str) -> GitServer {
    // All addresses: the VM reaches it at the host's own (private) address, through its egress
    // proxy, with an operator exception — its 127.0.0.1 would be the VM itself.
    let l = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let refused = Arc::new(AtomicUsize::new(0));
    let (r, rf) = (root, refused.clone());
    let app = axum::Router::new().fallback(move |req: Request| {
        let (root, refused) = (r.clone(), rf.clone());
        async move { serve(req, &root, user, token, &refused).await }
    });
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    GitServer { port, refused }
}

fn authorized(h: &HeaderMap, user: &str, token: &str) -> bool {
    let want = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Basic {want}"))
}

async fn serve(req: Request, root: &Path, user: &str, token: &str, refused: &AtomicUsize) -> Response<Body> {
    if !authorized(req.headers(), user, token) {
        refused.fetch_add(1, Ordering::SeqCst);
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("WWW-Authenticate", "Basic realm=\"git\"")
            .body(Body::from("auth required"))
            .unwrap();
    }
    let (parts, body) = req.into_parts();
    let body = to_bytes(body, 64 << 20).await.unwrap();
    let header = |k: &str| parts.headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let path = parts.uri.path().strip_prefix("/git").unwrap_or(parts.uri.path()).to_string();
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REMOTE_USER", user)
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", path)
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&body).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    // CGI: headers, a blank line, the body.
    let split = out.stdout.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    let split = split.or_else(|| out.stdout.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (end, sep) = split.expect("CGI output has headers");
    let mut resp = Response::builder().status(200);
    for line in String::from_utf8_lossy(&out.stdout[..end]).lines() {
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("status") {
                resp = resp.status(v.trim()[..3].parse::<u16>().unwrap());
            } else {
                resp = resp.header(k.trim(), v.trim());
            }
        }
    }
    resp.body(Body::from(out.stdout[end + sep..].to_vec())).unwrap()
}
