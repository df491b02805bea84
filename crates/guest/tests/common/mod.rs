//! Runs the real `mayfly-guest daemon --unix-listen` binary and talks to it as the host would.
#![allow(dead_code)] // each test file uses a different part

use bytes::Bytes;
use mayfly_proto::msg::{Ctrl, ExecRequest, OpenRequest, PtyRequest};
use mayfly_proto::mux::{Event, Mux, Role, Stream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;
use tokio::net::UnixStream;

/// Upper bound for any single wait in these tests.
pub const T: Duration = Duration::from_secs(60);

pub struct Guest {
    child: Child,
    _dir: tempfile::TempDir,
    pub sock: PathBuf,
}

impl Guest {
    pub fn start() -> Guest {
        Guest::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Guest {
        Guest::start_full(extra, &[])
    }

    /// A daemon with these environment variables set (inherited by what it starts).
    pub fn start_with_env(env: &[(&str, &str)]) -> Guest {
        Guest::start_full(&[], env)
    }

    fn start_full(extra: &[&str], env: &[(&str, &str)]) -> Guest {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("guest.sock");
        // An empty home, so the login shells it starts do not read this machine's start-up files
        // (a `~/.bashrc` that waits on a lock or prints would decide the tests); `env` may name another.
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mayfly-guest"))
            .arg("daemon")
            .args(["--egress-listen", "off"])
            .arg("--unix-listen")
            .arg(&sock)
            .args(extra)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .env("HOME", &home)
            .envs(env.iter().copied())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + T;
        while !sock.exists() {
            assert!(std::time::Instant::now() < deadline, "daemon did not create its socket");
            std::thread::sleep(Duration::from_millis(10));
        }
        Guest { child, _dir: dir, sock }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Processes the daemon started, with their command names.
    pub fn children(&self) -> Vec<(u32, String)> {
        children_of(self.pid())
    }

    /// A connection whose socket the test can drop abruptly (as a crashing host would) by
    /// aborting the returned task; the Mux itself never closes on drop.
    pub async fn connect_abortable(&self) -> (Mux, tokio::task::JoinHandle<()>) {
        let sock = UnixStream::connect(&self.sock).await.unwrap();
        let (near, far) = tokio::io::duplex(256 * 1024);
        let bridge = tokio::spawn(async move {
            let (mut a, mut b) = (sock, far);
            let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
        });
        let (r, w) = tokio::io::split(near);
        let mux = tokio::time::timeout(T, Mux::connect(r, w, Role::Host)).await.expect("handshake timed out").unwrap();
        (mux, bridge)
    }

    pub async fn connect(&self) -> Mux {
        // The socket file appears at bind(), a moment before listen().
        let mut tries = 0;
        let s = loop {
            match UnixStream::connect(&self.sock).await {
                Ok(s) => break s,
                Err(e) if tries < 200 => {
                    tries += 1;
                    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("cannot connect to the daemon: {e}"),
            }
        };
        let (r, w) = s.into_split();
        tokio::time::timeout(T, Mux::connect(r, w, Role::Host)).await.expect("handshake timed out").unwrap()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Processes whose parent is `parent`, with their command names.
pub fn children_of(parent: u32) -> Vec<(u32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // pid (comm) state ppid …; comm may contain spaces, so split at the last ')'.
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_string();
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent).then_some((pid, comm))
        })
        .collect()
}

pub async fn next(s: &mut Stream) -> Event {
    tokio::time::timeout(T, s.recv()).await.expect("timed out waiting for the guest")
}

pub async fn open(mux: &Mux, req: OpenRequest) -> Stream {
    mux.open(&req).await.unwrap()
}

/// Everything a finished stream sent: DATA per fd and CTRL messages, up to EOF.
#[derive(Debug, Default)]
pub struct Reply {
    pub out: Vec<u8>,
    pub err: Vec<u8>,
    pub ctrls: Vec<Ctrl>,
}

impl Reply {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err).into_owned()
    }
    pub fn last(&self) -> &Ctrl {
        self.ctrls.last().expect("a CTRL reply")
    }
}

pub async fn collect(s: &mut Stream) -> Reply {
    let mut r = Reply::default();
    loop {
        match next(s).await {
            Event::Data { fd: 0, data } => r.out.extend_from_slice(&data),
            Event::Data { data, .. } => r.err.extend_from_slice(&data),
            Event::Ctrl(c) => r.ctrls.push(c),
            Event::Eof => return r,
            Event::Reset(why) => panic!("stream reset: {why} (so far {r:?})"),
        }
    }
}

/// One request, no input, the whole reply.
pub async fn call(mux: &Mux, req: OpenRequest) -> Reply {
    let mut s = open(mux, req).await;
    s.send_eof().await.unwrap();
    collect(&mut s).await
}

pub fn exec_req(cmd: &[&str]) -> ExecRequest {
    ExecRequest { cmd: cmd.iter().map(|s| s.to_string()).collect(), ..Default::default() }
}

pub fn pty_req(terminal: Option<&str>, cmd: Option<&[&str]>) -> OpenRequest {
    OpenRequest::Pty(PtyRequest {
        terminal: terminal.map(String::from),
        cols: 80,
        rows: 24,
        cmd: cmd.map(|c| c.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    })
}

/// Reads the stream's DATA until it contains `needle`; returns everything read.
pub async fn read_until(s: &mut Stream, needle: &str) -> String {
    let mut seen = Vec::new();
    loop {
        let Ok(event) = tokio::time::timeout(T, s.recv()).await else {
            panic!("timed out waiting for {needle:?}; output so far {:?}", String::from_utf8_lossy(&seen));
        };
        match event {
            Event::Data { data, .. } => {
                seen.extend_from_slice(&data);
                if String::from_utf8_lossy(&seen).contains(needle) {
                    return String::from_utf8_lossy(&seen).into_owned();
                }
            }
            Event::Ctrl(_) => {}
            other => panic!("waiting for {needle:?}: {other:?}; output so far {:?}", String::from_utf8_lossy(&seen)),
        }
    }
}

pub async fn started_pid(s: &mut Stream) -> u32 {
    match next(s).await {
        Event::Ctrl(Ctrl::Started { pid }) => pid,
        other => panic!("expected started, got {other:?}"),
    }
}

pub async fn type_keys(s: &Stream, keys: &str) {
    s.send_data(0, keys.as_bytes()).await.unwrap();
}

/// Waits until process `pid` no longer exists.
pub async fn wait_gone(pid: u32) {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let deadline = tokio::time::Instant::now() + T;
    while proc_alive(&proc) {
        assert!(tokio::time::Instant::now() < deadline, "process {pid} still alive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn proc_alive(proc: &Path) -> bool {
    // A zombie still has a /proc entry; its state letter is Z.
    match std::fs::read_to_string(proc.join("stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

pub fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}
