//! The official E2B Python SDK (from PyPI, in a venv under `.tools/`) against a real
//! `mayfly serve` with the E2B door on loopback and real VMs: `tests/sdk/python_sdk.py` runs the
//! issue's whole list (commands, pty, files, watch, ports, lifecycle, timeout, wrong key).
//! Needs `cargo build --release --workspace --bins` and `MAYFLY_DATA_DIR` with `minimal` built.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "mfy_e2b_sdk_test_server_token_0123456789";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace dir")
}

/// The venv with the `e2b` SDK, made once and kept in `.tools/e2b-venv`.
fn venv_python() -> PathBuf {
    let venv = workspace().join(".tools/e2b-venv");
    let python = venv.join("bin/python");
    let ok = python.exists() && Command::new(&python).args(["-c", "import e2b"]).status().is_ok_and(|s| s.success());
    if !ok {
        let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().expect("python3 -m venv (install python3-venv)");
        assert!(made.success(), "python3 -m venv failed");
        let pip = Command::new(venv.join("bin/pip")).args(["install", "-q", "e2b"]).status().expect("pip install e2b");
        assert!(pip.success(), "pip install e2b failed");
    }
    python
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

struct Server {
    child: Child,
    /// The main API (`mayfly listening on …`).
    base: String,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM: a graceful stop deletes the sessions and their VMs.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(e2b_port: u16) -> Server {
    let images = std::env::var_os("MAYFLY_DATA_DIR").expect("MAYFLY_DATA_DIR must point at a data dir with `minimal` built");
    let data = tempfile::tempdir().expect("temp data dir");
    let mut child = Command::new(workspace().join("target/release/mayfly"))
        .arg("serve")
        .env("MAYFLY_DATA_DIR", data.path())
        .env("MAYFLY_BIND", "127.0.0.1:0")
        .env("MAYFLY_TOKEN", TOKEN)
        .env("MAYFLY_IMAGE_DATA_DIR", &images)
        .env("MAYFLY_DEFAULT_IMAGE", "minimal")
        .env("MAYFLY_POOL_SIZE", "1")
        .env("MAYFLY_E2B_LISTEN", format!("127.0.0.1:{e2b_port}"))
        .env("MAYFLY_LOG", std::env::var("MAYFLY_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start target/release/mayfly (cargo build --release --workspace --bins)");
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let mut base = String::new();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("mayfly e2b api on") => break,
            Some(Ok(l)) => {
                if let Some(url) = l.strip_prefix("mayfly listening on ") {
                    base = url.trim().to_string();
                }
            }
            _ => panic!("mayfly serve ended before the E2B door listened"),
        }
    }
    assert!(!base.is_empty(), "mayfly serve printed no main API address");
    std::thread::spawn(move || for _ in lines {});
    Server { child, base, _data: data }
}

#[test]
fn python_sdk_drives_mayfly() {
    let python = venv_python();
    let port = free_port();
    let server = start_server(port);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/python_sdk.py");
    let out = Command::new(python)
        .arg(&script)
        .env("E2B_URL", format!("http://127.0.0.1:{port}"))
        .env("E2B_KEY", TOKEN)
        // The script makes a second user there, whose key must not reach the first's sandboxes.
        .env("MAYFLY_URL", &server.base)
        .output()
        .expect("run the SDK script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(out.status.success() && stdout.contains("ALL OK"), "the SDK script failed:\n{stdout}\n{stderr}");

    // The npm SDK's smoke test, on the same server.
    let npm_dir = npm_sdk();
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/js_sdk.mjs");
    let out = Command::new("node")
        .arg(&js)
        .env("E2B_SDK_DIR", &npm_dir)
        .env("E2B_URL", format!("http://127.0.0.1:{port}"))
        .env("E2B_KEY", TOKEN)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(out.status.success() && stdout.contains("JS OK"), "the JS SDK smoke test failed:\n{stdout}\n{stderr}");
}

/// A directory with the npm `e2b` SDK installed, made once in `.tools/e2b-npm`.
fn npm_sdk() -> PathBuf {
    let dir = workspace().join(".tools/e2b-npm");
    if !dir.join("node_modules/e2b/package.json").exists() {
        std::fs::create_dir_all(&dir).expect("create .tools/e2b-npm");
        let ok = Command::new("npm").args(["install", "--no-audit", "--no-fund", "e2b"]).current_dir(&dir).status().expect("npm install e2b");
        assert!(ok.success(), "npm install e2b failed");
    }
    dir
}
