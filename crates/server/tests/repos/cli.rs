//! `mayfly new --repo` as users run it: the release binary (`target/release/mayfly`, built by
//! `cargo build --release --bins` before the tests) against a test server and the git server. It
//! waits for the clone, reports it, and exits 0; with a wrong token it reports git's message,
//! exits 1 and leaves a usable session.

use super::*;
use std::path::PathBuf;

fn mayfly_bin() -> PathBuf {
    let bin = std::env::var_os("MAYFLY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/mayfly"));
    assert!(bin.exists(), "{} is missing: cargo build --release --bins", bin.display());
    bin
}

/// Runs `mayfly new …` against `f`'s server → (exit code, stdout, stderr).
async fn mayfly_new(f: &Fixture, token: &str) -> (i32, String, String) {
    let out = tokio::process::Command::new(mayfly_bin())
        .env("MAYFLY_URL", &f.srv.base)
        .env("MAYFLY_TOKEN", TOKEN)
        .args(["new", "--image", "minimal", "--repo", &format!("{}@main", f.url)])
        .args(["--git-token", &format!("{USER}@{}={token}", f.remote), "--egress", "allowlist", "--allow", &f.remote])
        .stdin(std::process::Stdio::null())
        .output();
    let out = tokio::time::timeout(SLOW, out).await.expect("mayfly new finished").unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mayfly_new_with_a_repo_waits_for_the_clone() {
    let _ = captured_logs();
    let f = Fixture::start(|_| {}).await;
    let (code, stdout, stderr) = mayfly_new(&f, TOKEN_SECRET).await;
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let id = stdout.split('\t').next().unwrap().to_string();
    assert!(stdout.trim_end().ends_with(&format!("/s/{id}")), "{stdout}");
    assert!(stderr.trim_end().ends_with("cloned into /root/app"), "{stderr}");
    // It returned only once the clone was done.
    let (_, s) = f.srv.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!((&s["state"], &s["repo"]["state"], &s["repo"]["ref"]), (&json!("ready"), &json!("ready"), &json!("main")), "{s}");
    assert_eq!(sh(&f.srv, &id, "cat /root/app/app.py").await["stdout"], "print('v1')\n");
    assert_eq!(f.srv.delete(&id).await, 204);

    // A wrong token: git's message, exit 1, and the session is still there to use.
    let (code, stdout, stderr) = mayfly_new(&f, "wrong-token").await;
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("Authentication failed"), "{stderr}");
    assert!(stderr.trim_end().ends_with("clone failed; the session is usable"), "{stderr}");
    assert!(!stderr.contains("wrong-token") && !stdout.contains("wrong-token"), "the token is not echoed");
    let id = stdout.split('\t').next().unwrap().to_string();
    assert_eq!(sh(&f.srv, &id, "echo usable").await["stdout"], "usable\n");
    assert_eq!(f.srv.delete(&id).await, 204);
    f.srv.stop().await;
}
