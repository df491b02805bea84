//! Sessions outlive the control plane: the real `mayfly serve` binary is killed (`kill -9`) or
//! stopped (SIGTERM, `on_shutdown = "keep"`) with sessions of every kind running — a pool
//! clone, a cold boot, a fork, one with a cloned repository, an environment and git tokens, one
//! with an agent run in flight — and the next start adopts them all: state, exec, files, processes, terminals with
//! their scrollback, ports and their visibility, previews, git credentials, forks of adopted
//! sessions, deadlines. Then the fault cases: corrupt records, a pid that is another program's,
//! a guest daemon that does not answer, a VM gone while the server was down, a restart in the
//! middle of a create, a delete and a fork, and a second server on the same data dir.

use crate::common;
use crate::gitserver;

use common::external::{ExternalServer, VmGuard};
use common::*;
use mayfly_agent_testing::{call, tools, ScriptedModel};
use mayfly_agent::ProviderKind;
use serde_json::{json, Value};
use std::time::Duration;

/// Polls `GET path` until `pred` holds (generous deadline: TCG on a loaded machine).
async fn wait_for(server: &ExternalServer, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + SLOW;
    loop {
        let (status, v) = server.get(path).await;
        if status == 200 && pred(&v) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: last answer {status} {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn pool_ready(metrics: &str) -> bool {
    metrics.lines().any(|l| l.starts_with("mayfly_pool_ready{image=\"minimal\"}") && !l.ends_with(" 0"))
}

async fn wait_pool(server: &ExternalServer) {
    let deadline = tokio::time::Instant::now() + SLOW;
    loop {
        let text = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
        if pool_ready(&text) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the warm pool did not fill:\n{text}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

const GIT_USER: &str = "alice";
const GIT_TOKEN: &str = "tok-5e1f0a9d3c7b2468";

/// The repository server the session with a repo clones from (a real `git http-backend`).
struct Remote {
    root: tempfile::TempDir,
    /// `host:port` as the VM reaches it (the host's own address, allowed by the operator).
    addr: String,
    _server: gitserver::GitServer,
}

async fn remote() -> Remote {
    let root = tempfile::tempdir().unwrap();
    gitserver::make_repo(root.path());
    let server = gitserver::start(root.path().to_path_buf(), GIT_USER, GIT_TOKEN).await;
    Remote { addr: server.vm_addr(), root, _server: server }
}

/// Everything the adopted sessions must still do; `round` makes each pass's marks unique.
async fn check_adopted(server: &ExternalServer, ids: &Ids, repo: &Remote, round: u32) {
    for (id, kind) in ids.all() {
        let (status, s) = server.get(&format!("/api/v1/sessions/{id}")).await;
        assert_eq!(status, 200, "{kind} {id}: {s}");
        assert_eq!(s["state"], "ready", "{kind} {id} adopted: {s}");
        let (code, out) = server.sh(id, "echo alive-$((40+2))").await;
        assert_eq!((code, out.as_str()), (0, "alive-42\n"), "{kind} exec");
    }
    // Files and processes of the pool clone are untouched.
    let (_, out) = server.sh(&ids.pooled, "cat /root/kept.txt; pgrep -f 'sleep 4242' >/dev/null && echo proc-alive").await;
    assert_eq!(out, "written before the crash\nproc-alive\n");
    // The fork remembers where it came from; the cold boot its size.
    let (_, fork) = server.get(&format!("/api/v1/sessions/{}", ids.fork)).await;
    assert_eq!(fork["forked_from"], ids.pooled.as_str(), "{fork}");
    let (_, cold) = server.get(&format!("/api/v1/sessions/{}", ids.cold)).await;
    assert_eq!(cold["disk_gib"], 3, "{cold}");
    // Environment and git tokens came back sealed, not lost; the token is answered on demand.
    let (_, secret) = server.get(&format!("/api/v1/sessions/{}", ids.secret)).await;
    assert_eq!(secret["git_credential_hosts"], json!(["git.example.test", repo.addr]), "{secret}");
    assert_eq!((secret["repo"]["state"].as_str(), secret["repo"]["path"].as_str()), (Some("ready"), Some("/root/app")), "{secret}");
    // The clone is there, and a push through the egress proxy with the token from the
    // credential helper works after the restart.
    let branch = format!("after-{round}");
    let (code, out) = server
        .sh(&ids.secret, &format!("cd /root/app && git checkout -q -b {branch} && git -c user.name=t -c user.email=t@example.com commit -q --allow-empty -m adopted-{round} && git push -q origin {branch} 2>&1"))
        .await;
    assert_eq!(code, 0, "push after adoption: {out}");
    assert_eq!(gitserver::head_subject(repo.root.path(), &branch).as_deref(), Some(format!("adopted-{round}").as_str()));
    assert_eq!(secret["auto_push"], true, "{secret}");
    let (_, out) = server.sh(&ids.secret, "echo $MARK_ENV").await;
    assert_eq!(out, "kept-env\n");
    let (code, out) = server.sh(&ids.secret, "printf 'protocol=https\\nhost=git.example.test\\n\\n' | git credential fill").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("password=tok-4711"), "credential helper answers after the restart: {out}");

    // The terminal re-attaches by id: the scrollback is replayed and the shell kept its state.
    let mut pty = server.ws(&format!("/api/v1/sessions/{}/pty?terminal=t1", ids.pooled)).await;
    read_until(&mut pty, "set-before-crash").await;
    type_keys(&mut pty, &format!("echo round{round}-$KEEP\r")).await;
    read_until(&mut pty, &format!("round{round}-77")).await;

    // The port watcher is back, with the visibility set before; the preview answers.
    let ports = wait_for(server, &format!("/api/v1/sessions/{}/ports", ids.pooled), "port 8000 detected", |v| {
        v.as_array().is_some_and(|a| a.iter().any(|p| p["port"] == 8000))
    })
    .await;
    let p = ports.as_array().unwrap().iter().find(|p| p["port"] == 8000).unwrap();
    assert_eq!(p["visibility"], "public", "{p}");
    let page = server.http.get(server.url(&format!("/preview/{}/8000/served.txt", ids.pooled))).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.text().await.unwrap(), "served by the dev server\n");
    // A file written now shows up as a file event (the workspace watcher is back).
    let mut events = server.ws(&format!("/api/v1/sessions/{}/events", ids.pooled)).await;
    server.sh(&ids.pooled, &format!("echo x > /root/after-{round}.txt")).await;
    let want = format!("/root/after-{round}.txt");
    events_until(&mut events, |e| e["type"] == "file_changed" && e["path"] == want.as_str()).await;
}

/// The VM id of session `id` (a pool clone keeps the id it was made with), from the store.
async fn vm_of(data: &std::path::Path, id: &str) -> String {
    use mayfly_server::store::SessionStore;
    let rec = store_of(data).await.get(id).await.unwrap().expect("stored session");
    rec.runtime.vm.unwrap_or(rec.id)
}

struct Ids {
    pooled: String,
    cold: String,
    fork: String,
    secret: String,
    agent: String,
}

impl Ids {
    fn all(&self) -> Vec<(&String, &'static str)> {
        vec![(&self.pooled, "pool clone"), (&self.cold, "cold boot"), (&self.fork, "fork"), (&self.secret, "with secrets"), (&self.agent, "agent")]
    }
}

fn settings(model: &ScriptedModel) -> Vec<(&'static str, String)> {
    vec![
        ("MAYFLY_POOL_SIZE", "1".into()),
        ("MAYFLY_MAX_SESSIONS", "12".into()),
        ("MAYFLY_REAPER_INTERVAL_SECONDS", "1".into()),
        ("MAYFLY_AGENT_PROVIDER", "openai".into()),
        ("MAYFLY_AGENT_BASE_URL", model.base_url(ProviderKind::Openai)),
        ("MAYFLY_AGENT_API_KEY", "sk-test".into()),
        ("MAYFLY_AGENT_SHELL_TIMEOUT_SECONDS", "900".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_every_kind_survive_a_crash_and_a_planned_restart() {
    let data = tempfile::Builder::new().prefix("mayfly-adopt-").tempdir().unwrap();
    let _guard = VmGuard(data.path().to_path_buf());
    // The agent's one model turn starts a command that outlives both restarts.
    let model = ScriptedModel::start(vec![tools(vec![call("shell", json!({"command": "sleep 900"}))])]).await;
    let repo = remote().await;
    let mut env = settings(&model);
    env.push(("MAYFLY_EGRESS_PRIVATE_ALLOW", repo.addr.clone()));
    let a = ExternalServer::start(data.path(), &env, 1);

    wait_pool(&a).await;
    let pooled = a.ready_session(json!({})).await;
    let pooled = pooled["id"].as_str().unwrap().to_string();
    let cold = a.ready_session(json!({"disk_gib": 3})).await["id"].as_str().unwrap().to_string();
    let secret = a
        .ready_session(json!({
            "env": {"MARK_ENV": "kept-env"},
            "git_credentials": [
                {"host": "git.example.test", "token": "tok-4711"},
                {"host": repo.addr, "username": GIT_USER, "token": GIT_TOKEN},
            ],
            "repo": {"url": format!("http://{}/git/app.git", repo.addr)},
            "network": {"egress": "allowlist", "allow": [repo.addr]},
            "auto_push": true,
        }))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let agent = a.ready_session(json!({})).await["id"].as_str().unwrap().to_string();
    wait_for(&a, &format!("/api/v1/sessions/{secret}"), "the repository cloned", |s| s["repo"]["state"] == "ready").await;

    // State only the VM holds: a file, a background process, a shell variable, a dev server.
    let (code, _) = a.sh(&pooled, "echo 'written before the crash' > /root/kept.txt; (setsid sleep 4242 >/dev/null 2>&1 &)").await;
    assert_eq!(code, 0);
    let mut pty = a.ws(&format!("/api/v1/sessions/{pooled}/pty?terminal=t1")).await;
    type_keys(&mut pty, "export KEEP=77; echo set-before-crash\r").await;
    read_until(&mut pty, "set-before-crash").await;
    type_keys(&mut pty, "mkdir -p /srv && cd /srv && echo 'served by the dev server' > served.txt && (python3 -m http.server 8000 >/dev/null 2>&1 &)\r").await;
    wait_for(&a, &format!("/api/v1/sessions/{pooled}/ports"), "port 8000", |v| {
        v.as_array().is_some_and(|a| a.iter().any(|p| p["port"] == 8000))
    })
    .await;
    let r = a.http.patch(a.url(&format!("/api/v1/sessions/{pooled}/ports/8000"))).json(&json!({"visibility": "public"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    drop(pty);
    let fork = a.post(&format!("/api/v1/sessions/{pooled}/fork"), json!({})).await;
    assert_eq!(fork.0, 201, "{}", fork.1);
    let fork = fork.1["id"].as_str().unwrap().to_string();
    // An agent run in flight: its shell tool is running `sleep 900` in the VM.
    let (status, run) = a.post(&format!("/api/v1/sessions/{agent}/agent/runs"), json!({"prompt": "wait a while"})).await;
    assert_eq!(status, 201, "{run}");
    let run_id = run["id"].as_str().unwrap().to_string();
    let (_, out) = {
        let deadline = tokio::time::Instant::now() + SLOW;
        loop {
            let (c, out) = a.sh(&agent, "pgrep -f 'sleep 900' >/dev/null && echo running").await;
            if out == "running\n" || tokio::time::Instant::now() > deadline {
                break (c, out);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    assert_eq!(out, "running\n", "the agent's command runs in the VM");
    let ids = Ids { pooled, cold, fork, secret, agent };
    let mut pids: Vec<(String, Vec<u32>)> = Vec::new();
    for (id, _) in ids.all() {
        let vm = vm_of(data.path(), id).await;
        pids.push((vm.clone(), qemu_pids_for(&vm)));
    }
    for ((id, p), (_, kind)) in pids.iter().zip(ids.all()) {
        assert_eq!(p.len(), 1, "one QEMU for the {kind} session {id} before the crash; log:\n{}", a.log_text());
    }

    // 1. Crash.
    a.kill_9();
    for (id, p) in &pids {
        assert_eq!(p.len(), 1, "one QEMU for {id}");
        assert!(mayfly_vm::rundir::pid_is_vm(p[0], id), "QEMU of {id} outlives the killed server");
    }
    let b = ExternalServer::start(data.path(), &env, 2);
    check_adopted(&b, &ids, &repo, 1).await;
    for (id, p) in &pids {
        assert_eq!(&qemu_pids_for(id), p, "{id} keeps its very QEMU");
    }
    let (_, run) = b.get(&format!("/api/v1/sessions/{}/agent/runs/{run_id}", ids.agent)).await;
    assert_eq!(run["status"], "interrupted", "{run}");
    assert_eq!(run["reason"], "the server stopped during the run", "{run}");
    // An adopted session forks like any other (its VM's spec came back from its record).
    let (status, fork2) = b.post(&format!("/api/v1/sessions/{}/fork", ids.cold), json!({})).await;
    assert_eq!(status, 201, "{fork2}");
    let fork2 = fork2["id"].as_str().unwrap().to_string();
    assert_eq!(b.sh(&fork2, "echo forked-after-adoption").await.1, "forked-after-adoption\n");
    // A new agent run in the adopted session works; the pool refilled after the restart.
    wait_pool(&b).await;

    // 2. Planned stop (default on_shutdown = keep): VMs stay, the next binary adopts them.
    let mut events = b.ws(&format!("/api/v1/sessions/{}/events", ids.cold)).await;
    events_until(&mut events, state_is("ready")).await; // the replayed history
    b.stop().await;
    for (id, p) in &pids {
        assert_eq!(&qemu_pids_for(id), p, "{id} survives a planned stop");
    }
    {
        use mayfly_server::store::SessionStore;
        let rec = store_of(data.path()).await.get(&ids.cold).await.unwrap().unwrap();
        let at = rec.last_active_at.expect("a planned stop stores each session's last activity");
        assert!(time::OffsetDateTime::now_utc() - at < time::Duration::minutes(10), "{at}");
    }
    assert_eq!(qemu_pids_for(&fork2).len(), 1);
    // The event stream ended without a state change: nothing happened to the session.
    while let Some(ev) = next_event(&mut events).await {
        assert_ne!(ev["type"], "state", "no state change at a planned stop: {ev}");
    }
    let mut end = env.clone();
    end.push(("MAYFLY_ON_SHUTDOWN", "end".into()));
    let c = ExternalServer::start(data.path(), &end, 3);
    check_adopted(&c, &ids, &repo, 2).await;
    assert_eq!(c.get(&format!("/api/v1/sessions/{fork2}")).await.1["state"], "ready");
    // The figure, when the log level shows it (MAYFLY_LOG=info).
    if let Some(line) = c.log_text().lines().find(|l| l.contains("reconciled sessions with the host")) {
        println!("adoption after a planned stop: {line}");
    }

    // Deleting an adopted session ends its VM; `end` at stop ends the rest.
    let secret_vm = vm_of(data.path(), &ids.secret).await;
    assert_eq!(c.http.delete(c.url(&format!("/api/v1/sessions/{}", ids.secret))).send().await.unwrap().status(), 204);
    assert!(qemu_pids_for(&secret_vm).is_empty());
    // Its auto-push ran at the delete, with the tokens the adoption brought back.
    let pushed = format!("mayfly/{}", ids.secret);
    assert!(gitserver::head_subject(repo.root.path(), &pushed).is_some(), "auto-push to {pushed} after adoption");
    c.stop().await;
    assert!(common::leaks::qemu_pids_in(data.path()).is_empty(), "on_shutdown = end stops every VM");
    common::leaks::assert_no_leftovers(data.path()).await;
}

/// Stops `mayfly serve` by SIGKILL and returns the data dir's store, for tampering.
async fn store_of(data: &std::path::Path) -> mayfly_server::store::SqliteStore {
    mayfly_server::store::SqliteStore::open(&data.join("sessions.db")).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_around_a_restart_each_end_clearly_and_leave_nothing() {
    use mayfly_proto::api::SessionState::*;
    use mayfly_server::store::SessionStore;
    let data = tempfile::Builder::new().prefix("mayfly-adopt-").tempdir().unwrap();
    let _guard = VmGuard(data.path().to_path_buf());
    let env = vec![("MAYFLY_POOL_SIZE", "0".to_string()), ("MAYFLY_MAX_SESSIONS", "12".into())];
    let a = ExternalServer::start(data.path(), &env, 1);

    // A second server on the same data dir refuses clearly and touches nothing.
    let (code, log) = match ExternalServer::try_start(data.path(), &env, 9) {
        Ok(_) => panic!("a second server started on the same data dir"),
        Err(e) => e,
    };
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("another mayfly server uses data dir"), "{log}");

    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(a.ready_session(json!({})).await["id"].as_str().unwrap().to_string());
    }
    let [corrupt, reused, hung, gone, deleting, forking] = <[String; 6]>::try_from(ids).unwrap();
    // Idle timers go on across a restart: this one was last used long ago (as the store says).
    let stale = a.ready_session(json!({"idle_timeout_seconds": 60})).await["id"].as_str().unwrap().to_string();
    // Stop the guest daemon of `hung` (init only restarts a daemon that dies), just after this
    // exec has answered; the guest then says so on its console (a kernel message at a level the
    // console shows), which the test waits for.
    let (code, _) = a
        .sh(&hung, "(setsid sh -c 'sleep 1; pkill -STOP -f \"mayfly-guest [d]aemon\" && echo \"<2>mayfly-test: daemon stopped\" > /dev/kmsg' >/dev/null 2>&1 &)")
        .await;
    assert_eq!(code, 0);
    let console = data.path().join("vms").join(&hung).join("console.log");
    let deadline = tokio::time::Instant::now() + SLOW;
    while !std::fs::read_to_string(&console).unwrap_or_default().contains("mayfly-test: daemon stopped") {
        assert!(tokio::time::Instant::now() < deadline, "the guest daemon of {hung} was not stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A create in flight when the server dies: a custom size cold-boots (seconds under TCG);
    // the server is killed as soon as its QEMU has a run dir.
    let (status, creating) = a.post("/api/v1/sessions?wait=false", json!({"disk_gib": 3})).await;
    assert_eq!(status, 201);
    let creating = creating["id"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + SLOW;
    while !data.path().join("vms").join(&creating).join("vm.json").exists() {
        assert!(tokio::time::Instant::now() < deadline, "the create never spawned QEMU");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.get(&format!("/api/v1/sessions/{creating}")).await.1["state"], "creating");
    a.kill_9();

    // What the dead server left: a corrupt record, a pid now another program's, a VM gone, a
    // delete half done, a fork that paused its source and died.
    std::fs::write(data.path().join(format!("vms/{corrupt}/vm.json")), b"{not json").unwrap();
    let reused_pid = qemu_pids_for(&reused)[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(reused_pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let mut other = std::process::Command::new("sleep").arg("600").spawn().unwrap();
    let rec_path = data.path().join(format!("vms/{reused}/vm.json"));
    let mut rec: Value = serde_json::from_slice(&std::fs::read(&rec_path).unwrap()).unwrap();
    rec["pid"] = json!(other.id());
    std::fs::write(&rec_path, rec.to_string()).unwrap();
    for pid in qemu_pids_for(&gone) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    }
    let store = store_of(data.path()).await;
    store.transition(&deleting, Ready, Stopping, Some("deleted by the user"), time::OffsetDateTime::now_utc()).await.unwrap();
    store.set_last_active(&stale, time::OffsetDateTime::now_utc() - Duration::from_secs(3600)).await.unwrap();
    drop(store);
    let mut qmp = mayfly_vm::qmp::Qmp::connect(&data.path().join(format!("vms/{forking}/qmp.sock"))).await.unwrap();
    qmp.execute("stop", None).await.unwrap();
    drop(qmp);

    let b = ExternalServer::start(data.path(), &env, 2);
    let failure = |id: &str| {
        let id = id.to_string();
        let b = &b;
        async move {
            let (_, s) = b.get(&format!("/api/v1/sessions/{id}")).await;
            assert_eq!(s["state"], "failed", "{s}\nlog:\n{}", b.log_text());
            s["failure"].as_str().unwrap().to_string()
        }
    };
    assert!(failure(&corrupt).await.contains("vm.json is unreadable"));
    assert!(failure(&reused).await.contains("no longer this VM's QEMU (another program has it)"), "{}", failure(&reused).await);
    assert!(other.try_wait().unwrap().is_none(), "the program that got the pid was not killed");
    let _ = other.kill();
    let _ = other.wait();
    assert!(failure(&hung).await.contains("did not answer"), "{}", failure(&hung).await);
    assert!(failure(&gone).await.contains("QEMU is no longer running"), "{}", failure(&gone).await);
    assert_eq!(failure(&creating).await, "control plane restarted while the session was being created");
    assert_eq!(b.get(&format!("/api/v1/sessions/{deleting}")).await.0, 404, "the interrupted delete was finished");
    // The stale session's idle timeout ran out while the server was down: the reaper ends it.
    let deadline = tokio::time::Instant::now() + SLOW;
    // (Polled through the list: a GET of the session itself would count as activity.)
    while b.get("/api/v1/sessions").await.1.as_array().unwrap().iter().any(|s| s["id"] == stale.as_str()) {
        assert!(tokio::time::Instant::now() < deadline, "the stale session was not reaped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The paused source of the interrupted fork runs again.
    assert_eq!(b.sh(&forking, "echo resumed").await.1, "resumed\n");
    for id in [&corrupt, &reused, &hung, &gone, &deleting, &creating] {
        assert!(qemu_pids_for(id).is_empty(), "{id}'s QEMU was reaped");
        assert!(!data.path().join("vms").join(id).exists(), "{id}'s run dir was removed");
    }
    let mut end = env.clone();
    end.push(("MAYFLY_ON_SHUTDOWN", "end".into()));
    b.stop().await;
    // The `keep` stop left `forking`; a server with `end` adopts and then ends it.
    let c = ExternalServer::start(data.path(), &end, 3);
    assert_eq!(c.get(&format!("/api/v1/sessions/{forking}")).await.1["state"], "ready");
    c.stop().await;
    common::leaks::assert_no_leftovers(data.path()).await;
}
