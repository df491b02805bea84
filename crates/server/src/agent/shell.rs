//! The `shell` tool: commands run in the session's persistent terminal `agent`, which the human
//! can open in the IDE (terminal id [`TERMINAL`]) and watch live.
//!
//! A terminal gives no exit code and mixes echo, prompt and output, so each call:
//! 1. writes the command to `/tmp/.mayfly-agent/<n>.sh` (after a `cd /root`);
//! 2. types one line into the terminal:
//!    `{ sh <n>.sh </dev/null; echo $? > <n>.rc; } 2>&1 | tee <n>.out; printf '\036%s\036\n' <n>`
//!    so the human sees the output live while `tee` keeps a clean copy;
//! 3. waits for the marker `RS <n> RS` in the terminal output (`<n>` is random per call; the
//!    echoed command line holds only the printf format, never the expanded marker; the
//!    pattern `<n>[.]sh` likewise matches the script's process but not the probes' own lines);
//! 4. reads `<n>.out` and `<n>.rc` through the file API.
//!
//! At the timeout, or when the run is cancelled mid-command, it types Ctrl-C (SIGINT to the
//! foreground job; background jobs started by the command ignore it, as `sh` arranges); if the
//! script still runs after a grace period, its process group is SIGKILLed. A cancelled call hands
//! the terminal to a task that does this before letting the terminal go, and the run ends only
//! when that task is done ([`AgentShell::settle`]). The terminal is drained continuously by a
//! reader task, so the shell never blocks on us.

use crate::manager::{PtyParams, SessionError, SessionManager};
use bytes::Bytes;
use mayfly_proto::msg::Ctrl;
use mayfly_proto::mux::{Event, StreamSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

pub const TERMINAL: &str = "agent";
const DIR: &str = "/tmp/.mayfly-agent";
/// Terminal output kept for marker search.
const TAIL: usize = 64 * 1024;
/// After Ctrl-C, and again after the kill, how long the command may take to go.
const GRACE: Duration = Duration::from_secs(5);

/// What a finished command left.
pub struct ShellResult {
    pub exit_code: Option<i32>,
    pub output: String,
    pub timed_out: bool,
}

struct Attached {
    tx: StreamSender,
    tail: Arc<Mutex<Vec<u8>>>,
    notify: Arc<Notify>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The agent's terminal in one session, attached on first use.
pub struct AgentShell {
    manager: Arc<SessionManager>,
    session: String,
    attached: tokio::sync::Mutex<Option<Attached>>,
    /// Commands being stopped after their run let go of them mid-command.
    stopping: TaskTracker,
}

impl AgentShell {
    pub fn new(manager: Arc<SessionManager>, session: String) -> Self {
        Self { manager, session, attached: tokio::sync::Mutex::new(None), stopping: TaskTracker::new() }
    }

    fn sref(&self) -> crate::access::SessionRef {
        agent_ref(&self.session)
    }

    async fn attach(&self) -> Result<Attached, SessionError> {
        let params = PtyParams { cols: 160, rows: 40, terminal: Some(TERMINAL.into()) };
        let pty = self.manager.open_pty(&self.sref(), params).await?;
        let (tx, mut rx) = pty.stream.split();
        let tail = Arc::new(Mutex::new(Vec::new()));
        let notify = Arc::new(Notify::new());
        let (t, n) = (tail.clone(), notify.clone());
        let mut first = pty.first;
        let reader = tokio::spawn(async move {
            loop {
                let ev = match first.take() {
                    Some(ev) => ev,
                    None => rx.recv().await,
                };
                match ev {
                    Event::Data { data, .. } => {
                        let mut buf = t.lock().expect("tail lock");
                        buf.extend_from_slice(&data);
                        let excess = buf.len().saturating_sub(TAIL);
                        buf.drain(..excess);
                        n.notify_waiters();
                    }
                    Event::Ctrl(_) => {}
                    Event::Eof | Event::Reset(_) => {
                        n.notify_waiters();
                        return;
                    }
                }
                pty.activity.touch();
            }
        });
        Ok(Attached { tx, tail, notify, reader })
    }

    /// Runs `command`; waits up to `timeout` before killing it.
    pub async fn run(&self, command: &str, timeout: Duration) -> Result<ShellResult, SessionError> {
        let n = format!("{:016x}", rand::random::<u64>());
        let script = format!("cd /root || exit 1\n{command}\n");
        self.manager.write_file(&self.sref(), &format!("{DIR}/{n}.sh"), script.as_bytes()).await?;
        let mut guard = self.attached.lock().await;
        if guard.as_ref().is_none_or(|a| a.reader.is_finished()) {
            *guard = Some(self.attach().await?);
        }
        let a = guard.take().expect("attached above");
        a.tail.lock().expect("tail lock").clear();
        let line = format!(
            " {{ sh {DIR}/{n}.sh </dev/null; echo $? > {DIR}/{n}.rc; }} 2>&1 | tee {DIR}/{n}.out; printf '\\036%s\\036\\n' {n}\r"
        );
        let marker = format!("\x1e{n}\x1e");
        send(&a.tx, line.as_bytes(), &self.session).await?;
        // A run cancelled mid-command drops this future: the guard then owns the terminal and
        // interrupts the command before letting the terminal go.
        let mut pending = Pending {
            attached: Some(a),
            manager: self.manager.clone(),
            session: self.session.clone(),
            n: n.clone(),
            tracker: self.stopping.clone(),
        };
        let a = pending.attached.as_ref().expect("set above");
        let timed_out = !wait_for(a, &marker, timeout).await;
        if timed_out {
            tracing::info!(session = %self.session, "agent shell command timed out; interrupting");
            stop_command(&self.manager, &self.session, &a.tx, &n).await;
        }
        *guard = pending.attached.take();
        drop(guard);
        let output = self.read(&format!("{DIR}/{n}.out")).await.unwrap_or_default();
        let exit_code = self.read(&format!("{DIR}/{n}.rc")).await.ok().and_then(|s| s.trim().parse().ok());
        let cleanup = vec!["rm".into(), "-f".into(), format!("{DIR}/{n}.sh"), format!("{DIR}/{n}.out"), format!("{DIR}/{n}.rc")];
        let _ = self.manager.exec(&self.sref(), exec_body(cleanup)).await;
        Ok(ShellResult { exit_code: if timed_out { None } else { exit_code }, output, timed_out })
    }

    /// Waits until every command a cancelled call left running is gone (or was given up on).
    /// The run ends only after this, so a cancelled run's command does not outlive it.
    pub async fn settle(&self) {
        self.stopping.close();
        self.stopping.wait().await;
    }

    async fn read(&self, path: &str) -> Result<String, SessionError> {
        read_text(&self.manager, &self.sref(), path, 1 << 20).await
    }
}

/// The agent acts as the server on the run's session (access was checked when it started).
fn agent_ref(session: &str) -> crate::access::SessionRef {
    crate::access::system(session, "agent")
}

fn exec_body(cmd: Vec<String>) -> mayfly_proto::api::ExecBody {
    mayfly_proto::api::ExecBody { cmd, cwd: None, env: Default::default(), timeout_seconds: Some(10) }
}

/// A command typed into the terminal whose marker has not come yet. Dropped with the terminal
/// still inside (the run was cancelled or ran out of time mid-command), it interrupts the command
/// on a task of its own and only then lets the terminal go: dropping the terminal's stream first
/// would reset it, and a Ctrl-C sent after that never reaches the shell.
struct Pending {
    attached: Option<Attached>,
    manager: Arc<SessionManager>,
    session: String,
    n: String,
    tracker: TaskTracker,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(a) = self.attached.take() else { return };
        let (manager, session, n) = (self.manager.clone(), self.session.clone(), std::mem::take(&mut self.n));
        self.tracker.spawn(async move {
            tracing::info!(%session, "agent run ended mid-command; interrupting it");
            stop_command(&manager, &session, &a.tx, &n).await;
            drop(a);
        });
    }
}

/// Types Ctrl-C (SIGINT to the foreground job); if script `n` still runs after [`GRACE`], kills
/// its process group, and waits up to [`GRACE`] again for it to go.
async fn stop_command(manager: &SessionManager, session: &str, tx: &StreamSender, n: &str) {
    if let Err(e) = send(tx, b"\x03", session).await {
        tracing::warn!(%session, error = %e, "cannot interrupt the agent's command");
    }
    // An interrupted job also stops bash from printing the marker: watch the process.
    if wait_gone(manager, session, n).await {
        return;
    }
    // The command ignores SIGINT: kill its whole process group.
    let script = format!("for p in $(pgrep -f '{n}[.]sh'); do kill -KILL -- -$(ps -o pgid= -p $p | tr -d ' '); done");
    let sref = agent_ref(session);
    let _ = manager.exec(&sref, exec_body(vec!["sh".into(), "-c".into(), script])).await;
    if !wait_gone(manager, session, n).await {
        tracing::warn!(%session, "the agent's command is still running after SIGKILL");
    }
}

/// True once no process runs script `n` (polled for up to [`GRACE`]).
async fn wait_gone(manager: &SessionManager, session: &str, n: &str) -> bool {
    let sref = agent_ref(session);
    let deadline = tokio::time::Instant::now() + GRACE;
    while tokio::time::Instant::now() < deadline {
        let probe = exec_body(vec!["pgrep".into(), "-f".into(), format!("{n}[.]sh")]);
        match manager.exec(&sref, probe).await {
            Ok(r) if r.exit_code == Some(1) => return true,
            // The session ended: nothing is left to stop.
            Err(SessionError::NotFound(_) | SessionError::NotReady { .. } | SessionError::Elsewhere { .. }) => return true,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

async fn send(tx: &StreamSender, data: &[u8], session: &str) -> Result<(), SessionError> {
    tx.send_data(0, data)
        .await
        .map_err(|e| SessionError::Vm { id: session.to_string(), what: "agent terminal", source: Box::new(e) })
}

/// True once the terminal output holds `marker`; false at the timeout or if the terminal ends.
async fn wait_for(a: &Attached, marker: &str, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let notified = a.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if contains(&a.tail.lock().expect("tail lock"), marker.as_bytes()) {
            return true;
        }
        if a.reader.is_finished() {
            return false;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return false;
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A guest file as text (lossy UTF-8), at most `limit` bytes.
pub async fn read_text(manager: &SessionManager, session: &crate::access::SessionRef, path: &str, limit: usize) -> Result<String, SessionError> {
    match manager.read_path(session, path).await? {
        crate::manager::FileEntry::Dir(_) => Err(SessionError::Invalid(format!("{path} is a directory"))),
        crate::manager::FileEntry::File { mut body, .. } => {
            let mut out: Vec<u8> = Vec::new();
            loop {
                match body.recv().await {
                    Event::Data { data, .. } => {
                        if out.len() < limit {
                            out.extend_from_slice(&data[..data.len().min(limit - out.len())]);
                        }
                    }
                    Event::Eof => break,
                    Event::Ctrl(Ctrl::Error { kind, message }) => return Err(SessionError::Guest { kind, message }),
                    Event::Ctrl(_) => {}
                    Event::Reset(r) => return Err(SessionError::Invalid(format!("reading {path}: stream reset: {r}"))),
                }
            }
            Ok(String::from_utf8_lossy(&Bytes::from(out)).into_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn marker_search() {
        assert!(super::contains(b"abc\x1e12\x1e\r\n", b"\x1e12\x1e"));
        assert!(!super::contains(b"printf '\\036%s\\036\\n' 12", b"\x1e12\x1e"));
    }
}
