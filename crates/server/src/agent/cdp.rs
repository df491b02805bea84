//! A Chrome DevTools Protocol connection over Chromium's `--remote-debugging-pipe`: commands go
//! in on the child's fd 3, answers and events come out of its fd 4, each message one JSON object
//! ended by a NUL byte (https://chromedevtools.github.io/devtools-protocol/). No debugging port
//! is opened, so no other program on the host can drive the browser.
//!
//! Why not a CDP crate: the `browser` tool sends eleven commands and reads four events, while the
//! crates generate bindings for the whole protocol (chromiumoxide's took ≈ 8 minutes of CPU to
//! compile on the 2-core CI machine, a fifth of a fresh build) and drive it over a WebSocket on
//! a loopback port.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// An event from the browser: its method, params and (for a page's) the attached session.
#[derive(Debug)]
pub struct Event {
    pub method: String,
    pub params: Value,
    pub session: Option<String>,
}

/// The connection. Dropping it stops its reader; the child is the caller's.
pub struct Cdp {
    writer: tokio::sync::Mutex<pipe::Sender>,
    next_id: AtomicU64,
    pending: Pending,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Cdp {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Cdp {
    /// Starts `cmd` (a Chromium with `--remote-debugging-pipe`) with the protocol's pipes as its
    /// fds 3 and 4. Events arrive on the returned receiver.
    pub fn spawn(cmd: &mut tokio::process::Command) -> std::io::Result<(Cdp, tokio::process::Child, mpsc::UnboundedReceiver<Event>)> {
        let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
        let (commands_r, commands_w) = nix::unistd::pipe2(cloexec)?;
        let (answers_r, answers_w) = nix::unistd::pipe2(cloexec)?;
        let (child_in, child_out) = (commands_r.as_raw_fd(), answers_w.as_raw_fd());
        // SAFETY: between fork and exec only async-signal-safe calls (fcntl, dup2), no allocation.
        unsafe {
            cmd.as_std_mut().pre_exec(move || place_fds(child_in, child_out));
        }
        let child = cmd.spawn()?;
        drop((commands_r, answers_w)); // the child's ends
        let writer = pipe::Sender::from_owned_fd(commands_w)?;
        let receiver = pipe::Receiver::from_owned_fd(answers_r)?;
        let pending: Pending = Arc::default();
        let (events_tx, events) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_messages(receiver, pending.clone(), events_tx));
        let cdp = Cdp { writer: tokio::sync::Mutex::new(writer), next_id: AtomicU64::new(1), pending, reader };
        Ok((cdp, child, events))
    }

    /// Sends `method` (to the page `session`, else to the browser) and waits for its result;
    /// the protocol's error message, or that the browser went away, as the error.
    pub async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(id, tx);
        let mut bytes = serde_json::to_vec(&msg).map_err(|e| e.to_string())?;
        bytes.push(0);
        let written = self.writer.lock().await.write_all(&bytes).await;
        if let Err(e) = written {
            self.pending.lock().expect("pending lock").remove(&id);
            return Err(format!("{method}: the browser's pipe is closed ({e})"));
        }
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("{method}: {e}")),
            Err(_) => Err(format!("{method}: the browser closed its pipe")),
        }
    }
}

/// In the child: the command pipe's read end becomes fd 3 and the answer pipe's write end fd 4
/// (first moved above both, so that neither is overwritten; `dup2` clears close-on-exec).
fn place_fds(child_in: RawFd, child_out: RawFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg};
    let high_in = fcntl(child_in, FcntlArg::F_DUPFD_CLOEXEC(10))?;
    let high_out = fcntl(child_out, FcntlArg::F_DUPFD_CLOEXEC(10))?;
    nix::unistd::dup2(high_in, 3)?;
    nix::unistd::dup2(high_out, 4)?;
    Ok(())
}

/// Splits the browser's output at NUL bytes: answers go to their callers, events to `events`.
/// At the end (the browser exited) every waiting caller is told so by its sender's drop.
async fn read_messages(receiver: pipe::Receiver, pending: Pending, events: mpsc::UnboundedSender<Event>) {
    let mut reader = BufReader::new(receiver);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(0, &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if buf.last() == Some(&0) {
            buf.pop();
        }
        let Ok(mut msg) = serde_json::from_slice::<Value>(&buf) else {
            tracing::debug!(bytes = buf.len(), "browser: a message that is not JSON");
            continue;
        };
        if let Some(id) = msg["id"].as_u64() {
            let answer = match msg.get("error") {
                Some(e) => Err(e["message"].as_str().unwrap_or("unknown error").to_string()),
                None => Ok(msg["result"].take()),
            };
            if let Some(tx) = pending.lock().expect("pending lock").remove(&id) {
                let _ = tx.send(answer);
            }
        } else if let Some(method) = msg["method"].as_str() {
            let session = msg["sessionId"].as_str().map(str::to_string);
            let event = Event { method: method.to_string(), params: msg["params"].take(), session };
            let _ = events.send(event);
        }
    }
    pending.lock().expect("pending lock").clear();
}
