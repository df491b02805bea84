//! Auto-push at session end with the real git server: a deleted session's commits, changes and
//! new files land on `mayfly/<id>`; so do a reaped session's; a failing push is reported on the
//! events stream and the session is deleted anyway; without the setting nothing is pushed.

use super::*;

/// `git --git-dir app.git ARGS` on the server side.
fn served(f: &Fixture, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(f.git_root.path().join("app.git"))
        .args(args)
        .output()
        .unwrap();
    out.status.success().then(|| String::from_utf8(out.stdout).unwrap())
}

/// Events of session `id` from now until it is destroyed.
async fn events_to_the_end(srv: &TestServer, id: &str) -> Ws {
    let mut ws = srv.ws(&format!("/api/v1/sessions/{id}/events")).await;
    // The history replay ends with the current state.
    events_until(&mut ws, state_is("ready")).await;
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_is_pushed_to_a_session_branch_at_the_end() {
    let _ = captured_logs();
    let f = Fixture::start(|_| {}).await;
    let srv = &f.srv;
    let create = |auto_push: Option<bool>, idle: u64| {
        let mut body = json!({ "image": "minimal", "network": f.network(), "repo": { "url": f.url }, "git_credentials": f.cred(TOKEN_SECRET), "idle_timeout_seconds": idle });
        if let Some(a) = auto_push {
            body["auto_push"] = a.into();
        }
        body
    };

    // Deleted: one commit, an uncommitted change, a staged new file, an untracked file and an
    // ignored one.
    let id = srv.ready_session(create(Some(true), 900)).await;
    let s = cloned(srv, &id).await;
    assert_eq!((&s["repo"]["state"], &s["auto_push"]), (&json!("ready"), &json!(true)), "{s}");
    let out = sh(
        srv,
        &id,
        "cd /root/app && echo '*.log' > .gitignore && echo \"print('v2')\" > app.py && git add -A && \
         git -c user.name=t -c user.email=t@example.com commit -qm v2 && echo \"print('v3')\" > app.py && \
         echo staged > staged.txt && git add staged.txt && echo notes > notes.txt && echo noise > debug.log && git status --porcelain",
    )
    .await;
    assert_eq!(out["stdout"], " M app.py\nA  staged.txt\n?? notes.txt\n", "{out}");
    let mut ws = events_to_the_end(srv, &id).await;
    assert_eq!(srv.delete(&id).await, 204);
    let seen = events_until(&mut ws, state_is("destroyed")).await;
    let push = seen.iter().find(|e| e["type"] == "repo_push").unwrap_or_else(|| panic!("no repo_push event: {seen:?}"));
    let branch = format!("mayfly/{id}");
    assert_eq!(push["branch"], branch, "{push}");
    let sha = served(&f, &["rev-parse", &branch]).expect("the branch is on the server");
    assert_eq!(push["sha"].as_str(), Some(sha.trim()), "{push}");
    assert_eq!(served(&f, &["log", "--format=%s", &branch]).unwrap(), format!("Mayfly: work left in session {id}\nv2\nv1\n"));
    assert_eq!(served(&f, &["show", &format!("{branch}:app.py")]).unwrap(), "print('v3')\n");
    let files = served(&f, &["ls-tree", "--name-only", &branch]).unwrap();
    assert_eq!(files, ".gitignore\napp.py\nnotes.txt\nstaged.txt\n", "ignored files stay behind");
    assert_eq!(gitserver::head_subject(f.git_root.path(), "main").as_deref(), Some("v1"), "the user's branch was not pushed");

    // Reaped for idleness: pushed too (a clean tree pushes HEAD itself).
    let idle = srv.ready_session(create(Some(true), 8)).await;
    assert_eq!(cloned(srv, &idle).await["repo"]["state"], "ready");
    let out = sh(srv, &idle, "cd /root/app && git -c user.name=t -c user.email=t@example.com commit -q --allow-empty -m idle && git rev-parse HEAD").await;
    let head = out["stdout"].as_str().unwrap().trim().to_string();
    let mut ws = srv.ws(&format!("/api/v1/sessions/{idle}/events")).await;
    let seen = events_until(&mut ws, state_is("destroyed")).await;
    assert!(seen.iter().any(|e| e["type"] == "state" && e["reason"] == "idle timeout"), "{seen:?}");
    let push = seen.iter().find(|e| e["type"] == "repo_push").unwrap_or_else(|| panic!("no repo_push event: {seen:?}"));
    assert_eq!(push["sha"].as_str(), Some(head.as_str()), "{push}");
    assert_eq!(served(&f, &["rev-parse", &format!("mayfly/{idle}")]).unwrap().trim(), head);

    // A push that fails: git's words on the events stream, and the session is deleted anyway.
    let broken = srv.ready_session(create(Some(true), 900)).await;
    assert_eq!(cloned(srv, &broken).await["repo"]["state"], "ready");
    let url = f.url.replace("app.git", "missing.git");
    sh(srv, &broken, &format!("cd /root/app && git remote set-url origin {url} && echo x > x.txt")).await;
    let mut ws = events_to_the_end(srv, &broken).await;
    assert_eq!(srv.delete(&broken).await, 204);
    let seen = events_until(&mut ws, state_is("destroyed")).await;
    let push = seen.iter().find(|e| e["type"] == "repo_push").unwrap_or_else(|| panic!("no repo_push event: {seen:?}"));
    assert!(push["sha"].is_null(), "{push}");
    assert!(push["error"].as_str().unwrap().contains("missing.git"), "git's message: {push}");
    assert!(served(&f, &["rev-parse", "--verify", "-q", &format!("mayfly/{broken}")]).is_none());
    assert_eq!(srv.get(&format!("/api/v1/sessions/{broken}")).await.0, 404, "deleted");

    // The server's default (off): nothing is pushed.
    let off = srv.ready_session(create(None, 900)).await;
    let s = cloned(srv, &off).await;
    assert_eq!(s["auto_push"], false, "{s}");
    sh(srv, &off, "echo x > /root/app/x.txt").await;
    assert_eq!(srv.delete(&off).await, 204);
    assert!(served(&f, &["rev-parse", "--verify", "-q", &format!("mayfly/{off}")]).is_none());
    f.srv.stop().await;
}
