//! A real server on port 0 in this process, with a temp data dir whose images come from
//! `MAYFLY_DATA_DIR` (where the test script built `minimal`), and HTTP/WebSocket helpers.

#![allow(dead_code)]

pub mod external;
pub mod users;
pub mod leaks;
pub mod postgres;

use futures::{SinkExt, StreamExt};
use mayfly_server::{Server, ServerConfig};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const TOKEN: &str = "e2e-token-0123456789abcdef";
/// Generous bound for anything involving a boot or a teardown (TCG, parallel tests).
pub const SLOW: Duration = Duration::from_secs(120);

/// For a suite that needs this test process to itself (it counts the process's open sockets,
/// or installs the process's log subscriber): panics, saying how to run it, unless the test
/// filter names only `suite`'s tests — as `scripts/run-tests` runs every suite of the `suites`
/// binary (`--exact` with the suite's test names) or `cargo test --test suites -- load::` does.
pub fn alone_in_this_process(suite: &str) {
    let prefix = format!("{suite}::");
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            // libtest options that take a value in the next argument
            "--test-threads" | "--color" | "--format" | "--logfile" | "--skip" | "-Z" | "--shuffle-seed" => {
                args.next();
            }
            a if a.starts_with('-') => {}
            a => filters.push(a.to_string()),
        }
    }
    assert!(
        !filters.is_empty() && filters.iter().all(|f| f.starts_with(&prefix)),
        "the `{suite}` suite needs this test process to itself; run it alone: \
         cargo test --release -p mayfly-server --test suites -- {prefix} (scripts/run-tests does)"
    );
}

pub fn image_data_dir() -> PathBuf {
    let dir = std::env::var_os("MAYFLY_DATA_DIR").map(PathBuf::from).expect(
        "MAYFLY_DATA_DIR must point at a data dir with the `minimal` image built; run the README's test command (scripts/test)",
    );
    assert!(dir.join("images/minimal/current").exists(), "the minimal image is not built in {}", dir.display());
    dir
}

/// A temp dir is 0700; QEMU's per-VM uids must be able to enter the data dir (the server
/// refuses to start otherwise).
pub fn open_to_vm_uids(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).expect("chmod data dir");
}

pub struct TestServer {
    pub base: String,
    pub ws_base: String,
    pub data_dir: PathBuf,
    data: Option<tempfile::TempDir>,
    pub http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("MAYFLY_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

impl TestServer {
    pub async fn start(tune: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let data = tempfile::Builder::new().prefix("mayfly-e2e-").tempdir().unwrap();
        Self::start_in(data, tune).await
    }

    pub async fn start_in(data: tempfile::TempDir, tune: impl FnOnce(&mut ServerConfig)) -> TestServer {
        init_logs();
        open_to_vm_uids(data.path());
        let mut cfg = ServerConfig::with_data_dir(data.path());
        cfg.bind = "127.0.0.1:0".parse().unwrap();
        cfg.token = Some(TOKEN.into());
        cfg.image_data_dir = Some(image_data_dir());
        cfg.default_image = "minimal".into();
        cfg.reaper_interval_seconds = 1;
        // Tests that are not about the warm pool keep it off: fewer VMs on a 2-core runner, and
        // a session's VM id is its session id.
        cfg.pool_size = 0;
        // `stop()` ends every session, so that each test can check nothing is left behind;
        // the restart tests opt into the default (`keep`) to prove VMs outlive the server.
        cfg.on_shutdown = mayfly_server::config::OnShutdown::End;
        if let Some(a) = std::env::var("MAYFLY_ACCEL").ok().and_then(|a| a.parse().ok()) {
            cfg.accel = a;
        }
        tune(&mut cfg);
        let server = Server::bind(cfg).await.expect("server starts");
        let addr = server.local_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        let http = reqwest::Client::builder()
            .default_headers(
                [(reqwest::header::AUTHORIZATION, format!("Bearer {TOKEN}").parse().unwrap())].into_iter().collect(),
            )
            .build()
            .unwrap();
        TestServer {
            base: format!("http://{addr}"),
            ws_base: format!("ws://{addr}"),
            data_dir: data.path().to_path_buf(),
            data: Some(data),
            http,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("vms").join(id)
    }

    /// `POST /api/v1/sessions` → (status, body).
    pub async fn create(&self, body: Value, wait: bool) -> (u16, Value) {
        let r = self.http.post(self.url(&format!("/api/v1/sessions?wait={wait}"))).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Creates a session and waits until it is ready; returns its id.
    pub async fn ready_session(&self, body: Value) -> String {
        let (status, s) = tokio::time::timeout(SLOW, self.create(body, true)).await.expect("boot in time");
        assert_eq!(status, 201, "{s}");
        assert_eq!(s["state"], "ready", "{s}");
        s["id"].as_str().unwrap().to_string()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn exec(&self, id: &str, cmd: &[&str]) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(&format!("/api/v1/sessions/{id}/exec")))
            .json(&json!({ "cmd": cmd }))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, id: &str) -> u16 {
        let r = tokio::time::timeout(SLOW, self.http.delete(self.url(&format!("/api/v1/sessions/{id}"))).send())
            .await
            .expect("delete in time")
            .unwrap();
        r.status().as_u16()
    }

    pub async fn ws(&self, path: &str) -> Ws {
        let mut req = format!("{}{path}", self.ws_base).into_client_request().unwrap();
        req.headers_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(req).await.expect("WebSocket connects");
        ws
    }

    /// Signals shutdown and waits for `serve` to return (every VM stopped).
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(SLOW, task).await.expect("shutdown in time").unwrap().expect("serve ends cleanly");
        }
        self.data.take().expect("data dir")
    }
}

impl Drop for TestServer {
    /// A test that panicked never reached `stop()`, and its runtime ends before a shutdown
    /// could finish: kill the QEMUs of this data dir so a failed test leaks no VM.
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if self.task.is_none() {
            return;
        }
        let needle = self.data_dir.join("vms").to_string_lossy().into_owned();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// Next JSON text frame of an events WebSocket (`None` once it closes).
pub async fn next_event(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(SLOW, ws.next()).await.expect("event in time") {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// Reads events until one satisfies `pred`; returns every event seen, that one last.
pub async fn events_until(ws: &mut Ws, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let ev = next_event(ws).await.unwrap_or_else(|| panic!("event stream ended; saw {seen:?}"));
        let done = pred(&ev);
        seen.push(ev);
        if done {
            return seen;
        }
    }
}

pub fn state_is(to: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["type"] == "state" && e["to"] == to
}

/// Collects terminal output until it contains `needle`; text frames are returned separately.
pub async fn read_until(ws: &mut Ws, needle: &str) -> (String, Vec<Value>) {
    let mut out = String::new();
    let mut notices = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !out.contains(needle) {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in terminal output: {out:?}"));
        match msg {
            Some(Ok(Message::Binary(b))) => out.push_str(&String::from_utf8_lossy(&b)),
            Some(Ok(Message::Text(t))) => notices.push(serde_json::from_str(&t).unwrap()),
            Some(Ok(_)) => {}
            other => panic!("terminal closed ({other:?}) before {needle:?}; output: {out:?}"),
        }
    }
    (out, notices)
}

pub async fn type_keys(ws: &mut Ws, keys: &str) {
    ws.send(Message::Binary(keys.as_bytes().to_vec())).await.unwrap();
}

/// Every process whose command line names `mayfly-<id>` (a VM's QEMU).
pub fn qemu_pids_for(id: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| mayfly_vm::rundir::pid_is_vm(*pid, id))
        .collect()
}

/// Waits until VM `id` left nothing behind: no QEMU, no run dir.
pub async fn assert_vm_gone(server: &TestServer, id: &str) {
    for _ in 0..100 {
        if qemu_pids_for(id).is_empty() && !server.run_dir(id).exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("VM {id} left QEMU {:?} or its run dir ({})", qemu_pids_for(id), server.run_dir(id).exists());
}

/// The next text frame of a terminal WebSocket, skipping terminal output.
pub async fn next_notice(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await.expect("notice in time") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("terminal closed before a notice: {other:?}"),
        }
    }
}

/// Waits until the server has the `minimal` template (built after the first cold boot).
pub async fn wait_template(server: &TestServer) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    loop {
        let (_, pools) = server.get("/api/v1/pool").await;
        let ready = pools.as_array().into_iter().flatten().any(|p| p["image"] == "minimal" && p["template"] == true);
        if ready {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no template: {pools}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
