//! `mayfly_server::run` as its own process (this test binary re-executed): the lines it prints,
//! configuration from `MAYFLY_*`, SIGTERM shutdown, and `kill -9` of the server with a session
//! running, after which the next server adopts its VM (see `adopt.rs` for the whole story).

use crate::common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHILD_ENV: &str = "MAYFLY_TEST_CHILD_DATA_DIR";

/// Not a test of its own: the body of the re-executed server process.
#[test]
fn child_server_process() {
    let Some(data) = std::env::var_os(CHILD_ENV) else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = mayfly_server::ServerConfig::load(None, std::path::PathBuf::from(data)).expect("config");
        // Registered before the server prints its address: a SIGTERM sent right after that
        // line must be handled, not kill the process (seen under load).
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        let shutdown = async move {
            term.recv().await;
        };
        mayfly_server::run(cfg, shutdown).await.expect("server runs");
    });
}

struct ChildServer {
    child: Child,
    base: String,
    token_line: Option<String>,
}

/// Starts the server process on `data`, returns once it printed its address.
fn spawn_server(data: &std::path::Path, image_data: Option<&std::path::Path>) -> ChildServer {
    open_to_vm_uids(data);
    let had_token = data.join("token").exists();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    // The harness names a test by its module path without the crate: `restart::…` in the
    // `suites` binary.
    let name = match module_path!().split_once("::") {
        Some((_, module)) => format!("{module}::child_server_process"),
        None => "child_server_process".to_string(),
    };
    cmd.args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, data)
        .env("MAYFLY_BIND", "127.0.0.1:0")
        .env("MAYFLY_DEFAULT_IMAGE", "minimal")
        .env_remove("MAYFLY_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    match image_data {
        Some(d) => cmd.env("MAYFLY_IMAGE_DATA_DIR", d),
        None => cmd.env_remove("MAYFLY_IMAGE_DATA_DIR"),
    };
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut base = None;
    let mut token_line = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        // The test harness may print "test restart::child_server_process ... " just before.
        const LISTENING: &str = "mayfly listening on ";
        if let Some(i) = line.find(LISTENING) {
            base = Some(line[i + LISTENING.len()..].trim().to_string());
        } else if line.starts_with("mayfly token: ") {
            token_line = Some(line);
        }
        // A generated token is printed right after the address.
        if base.is_some() && (token_line.is_some() || had_token) {
            break;
        }
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    ChildServer { child, base: base.expect("the server printed its address"), token_line }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_prints_its_address_and_token_and_stops_on_sigterm() {
    let data = tempfile::Builder::new().prefix("mayfly-e2e-").tempdir().unwrap();
    let mut server = spawn_server(data.path(), None);
    assert!(server.base.starts_with("http://127.0.0.1:"), "{}", server.base);
    let token_file = std::fs::read_to_string(data.path().join("token")).unwrap();
    let token = token_file.trim();
    let line = server.token_line.clone().expect("a generated token is printed");
    assert!(line.contains(token), "{line}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(data.path().join("token")).unwrap().permissions().mode() & 0o777, 0o600);

    let http = reqwest::Client::new();
    let health = http.get(format!("{}/healthz", server.base)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let denied = http.get(format!("{}/api/v1/sessions", server.base)).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    let ok = http.get(format!("{}/api/v1/sessions", server.base)).bearer_auth(token).send().await.unwrap();
    assert_eq!(ok.status(), 200);

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let status = wait_child(&mut server.child, SLOW).await;
    assert!(status.success(), "{status:?}");

    // A second start reuses the token and does not print it.
    let mut again = spawn_server(data.path(), None);
    assert!(again.token_line.is_none());
    let _ = again.child.kill();
    let _ = again.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_server_leaves_the_vm_for_the_next_start_to_adopt() {
    let images = image_data_dir();
    let data = tempfile::Builder::new().prefix("mayfly-e2e-").tempdir().unwrap();
    let mut server = spawn_server(data.path(), Some(&images));
    let token = std::fs::read_to_string(data.path().join("token")).unwrap().trim().to_string();
    let http = reqwest::Client::new();
    let created: serde_json::Value = tokio::time::timeout(
        SLOW,
        http.post(format!("{}/api/v1/sessions", server.base)).bearer_auth(&token).json(&serde_json::json!({})).send(),
    )
    .await
    .expect("boot in time")
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(created["state"], "ready", "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(qemu_pids_for(&id).len(), 1);

    server.child.kill().unwrap(); // SIGKILL: no cleanup runs
    server.child.wait().unwrap();
    assert_eq!(qemu_pids_for(&id).len(), 1, "the VM outlives a killed server");
    let orphan_cgroups = common::leaks::vm_cgroups_of(data.path());
    assert!(orphan_cgroups.iter().any(|c| c.ends_with(&format!("/{id}"))), "the VM's cgroup outlives it too: {orphan_cgroups:?}");

    let pid = qemu_pids_for(&id)[0];
    // The next start adopts the session (its VM still runs); `end` at its stop ends it.
    let next = TestServer::start_in(data, |_| {}).await;
    assert_eq!(qemu_pids_for(&id), vec![pid], "the same QEMU runs on");
    let (status, s) = next.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(s["state"], "ready", "{s}");
    assert_eq!(next.exec(&id, &["echo", "adopted"]).await.1["stdout"], "adopted\n");
    let data = next.stop().await;
    assert!(qemu_pids_for(&id).is_empty(), "on_shutdown = end stopped it");
    common::leaks::assert_no_leftovers(data.path()).await;
}

async fn wait_child(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(tokio::time::Instant::now() < deadline, "the server did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
