//! The real `mayfly serve` binary as a child process (for restart and upgrade tests): started on
//! a data dir, stopped by SIGTERM or SIGKILL, talked to over HTTP and WebSocket.

use super::{Ws, TOKEN};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// `target/<profile>/mayfly`, next to the directory of this test binary (`…/deps/`).
pub fn mayfly_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("mayfly");
    assert!(bin.is_file(), "{} is missing: build the binaries first (scripts/test does: cargo build --release --workspace --bins)", bin.display());
    bin
}

pub struct ExternalServer {
    pub child: Child,
    pub base: String,
    pub ws_base: String,
    pub http: reqwest::Client,
    /// Where its stderr (the log) goes.
    pub log: PathBuf,
}

impl ExternalServer {
    /// Starts `mayfly serve` on `data` with `MAYFLY_*` settings `env`; returns once it listens.
    pub fn start(data: &Path, env: &[(&str, String)], n: u32) -> ExternalServer {
        Self::try_start(data, env, n).unwrap_or_else(|(code, log)| panic!("mayfly serve exited ({code:?}):\n{log}"))
    }

    /// As [`ExternalServer::start`]; `Err((exit status, log))` if it exits before listening.
    pub fn try_start(data: &Path, env: &[(&str, String)], n: u32) -> Result<ExternalServer, (Option<i32>, String)> {
        super::open_to_vm_uids(data);
        let log = data.join(format!("serve-{n}.log"));
        let mut cmd = Command::new(mayfly_binary());
        cmd.arg("serve")
            .env("MAYFLY_DATA_DIR", data)
            .env("MAYFLY_BIND", "127.0.0.1:0")
            .env("MAYFLY_TOKEN", TOKEN)
            .env("MAYFLY_IMAGE_DATA_DIR", super::image_data_dir())
            .env("MAYFLY_DEFAULT_IMAGE", "minimal")
            .env("MAYFLY_LOG", std::env::var("MAYFLY_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut base = None;
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("mayfly listening on ") {
                base = Some(addr.trim().to_string());
                break;
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let Some(base) = base else {
            let status = child.wait().unwrap();
            return Err((status.code(), std::fs::read_to_string(&log).unwrap_or_default()));
        };
        let http = reqwest::Client::builder()
            .default_headers([(reqwest::header::AUTHORIZATION, format!("Bearer {TOKEN}").parse().unwrap())].into_iter().collect())
            .build()
            .unwrap();
        let ws_base = base.replacen("http://", "ws://", 1);
        Ok(ExternalServer { child, base, ws_base, http, log })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = tokio::time::timeout(super::SLOW, self.http.post(self.url(path)).json(&body).send())
            .await
            .expect("answer in time")
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Creates a session and waits until it is ready; returns its JSON.
    pub async fn ready_session(&self, body: Value) -> Value {
        let (status, s) = self.post("/api/v1/sessions", body).await;
        assert_eq!(status, 201, "{s}");
        assert_eq!(s["state"], "ready", "{s}");
        s
    }

    /// Runs `sh -c script` in session `id`; returns (exit code, stdout).
    pub async fn sh(&self, id: &str, script: &str) -> (i64, String) {
        let (status, out) = self.post(&format!("/api/v1/sessions/{id}/exec"), json!({"cmd": ["sh", "-c", script]})).await;
        assert_eq!(status, 200, "exec in {id}: {out}\nserver log:\n{}", self.log_text());
        (out["exit_code"].as_i64().unwrap_or(-1), out["stdout"].as_str().unwrap_or("").to_string())
    }

    pub async fn ws(&self, path: &str) -> Ws {
        let mut req = format!("{}{path}", self.ws_base).into_client_request().unwrap();
        req.headers_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(req).await.expect("WebSocket connects");
        ws
    }

    /// SIGKILL: no cleanup runs.
    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    pub async fn stop(mut self) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = tokio::time::Instant::now() + super::SLOW;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "mayfly serve exited with {status:?}:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "mayfly serve did not stop");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The log so far (for failure messages and measured figures).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ExternalServer {
    fn drop(&mut self) {
        // A test that panicked: the server goes; its VMs are killed by the test's own guard.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills every QEMU of `data_dir` when dropped (a failed test leaks no VM).
pub struct VmGuard(pub PathBuf);

impl Drop for VmGuard {
    fn drop(&mut self) {
        for pid in super::leaks::qemu_pids_in(&self.0) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}
