//! `exec` streams: run one command with piped stdio to completion.
//!
//! The command gets its own session (`setsid`), so signals, the timeout and a host reset reach
//! the whole process group. Order on the stream: CTRL `started`, DATA (fd 0 stdout, fd 1 stderr),
//! CTRL `exit`, EOF. The exit is sent once the output pipes reached EOF — or, when a background
//! process keeps them open, once they stayed silent for [`OUTPUT_GRACE`] after the command exited;
//! such pipes are then drained in the background so the process does not die of `SIGPIPE`
//! (an agent starting `server &` expects it to keep running).

use crate::serve::finish;
use mayfly_proto::msg::{Ctrl, ErrorKind, ExecRequest};
use mayfly_proto::mux::{Event, Stream, StreamReceiver, StreamSender};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;

/// How long output pipes may stay silent after the command exited before the stream ends anyway.
const OUTPUT_GRACE: Duration = Duration::from_millis(300);
const READ_CHUNK: usize = 32 * 1024;

pub async fn serve(req: ExecRequest, stream: Stream) {
    let (tx, mut rx) = stream.split();
    // A started program may listen on a port soon; an ended one may have closed one.
    crate::activity::poke();
    let mut child = match spawn(&req) {
        Ok(c) => c,
        Err(reply) => return finish(&tx, &reply).await,
    };
    let pid = child.id().unwrap_or_default();
    let group = Pid::from_raw(pid as i32);
    if tx.send_ctrl(&Ctrl::Started { pid }).await.is_err() {
        signal_group(group, Signal::SIGKILL);
        let _ = child.wait().await;
        return;
    }
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (exited_tx, exited_rx) = watch::channel(false);
    let run = async {
        let outcome = tokio::select! {
            r = wait(&mut child, group, req.timeout_ms) => Some(r),
            () = host_input(&mut rx, stdin, group) => None,
        };
        if outcome.is_none() {
            // The host reset the stream (or went away): nobody wants the result.
            signal_group(group, Signal::SIGKILL);
            let _ = child.wait().await;
        }
        let _ = exited_tx.send(true);
        outcome
    };
    let (outcome, (), ()) = tokio::join!(run, pump(stdout, &tx, 0, exited_rx.clone()), pump(stderr, &tx, 1, exited_rx));
    crate::activity::poke();
    match outcome {
        Some(Ok((status, timed_out))) => {
            finish(&tx, &Ctrl::Exit { code: status.code(), signal: status.signal(), timed_out }).await
        }
        Some(Err(e)) => finish(&tx, &Ctrl::io_error("wait", &e)).await,
        None => {}
    }
}

fn spawn(req: &ExecRequest) -> Result<Child, Ctrl> {
    let Some(program) = req.cmd.first() else {
        return Err(Ctrl::error(ErrorKind::InvalidInput, "exec: empty command"));
    };
    let cwd = resolve_cwd(req.cwd.as_deref())?;
    let mut cmd = Command::new(program);
    cmd.args(&req.cmd[1..])
        .envs(&req.env)
        .current_dir(&cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    new_session(&mut cmd);
    cmd.spawn().map_err(|e| Ctrl::io_error(program, &e))
}

/// The working directory for a command: the requested one (which must be a directory) or the
/// default. Checked up front so a bad cwd is not reported as a missing binary.
pub(crate) fn resolve_cwd(cwd: Option<&str>) -> Result<PathBuf, Ctrl> {
    let Some(c) = cwd else { return Ok(crate::default_cwd()) };
    match std::fs::metadata(c) {
        Ok(m) if m.is_dir() => Ok(c.into()),
        Ok(_) => Err(Ctrl::error(ErrorKind::NotADirectory, format!("{c}: not a directory"))),
        Err(e) => Err(Ctrl::io_error(c, &e)),
    }
}

/// Makes the command a session (and process group) leader.
pub(crate) fn new_session(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2) and the
    // async-signal-safe calls of `reset_in_child`; it touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(io::Error::from)?;
            crate::sigreset::reset_in_child()
        });
    }
}

/// Sends `signal` to process group `group`. Never signals group 0/1 (this daemon's own group or
/// init) when a pid is unknown.
pub(crate) fn signal_group(group: Pid, signal: Signal) {
    if group.as_raw() > 1 {
        let _ = killpg(group, signal);
    }
}

/// Sends a host-supplied signal number to `group`; unknown numbers are ignored.
pub(crate) fn send_signal(group: Pid, signal: i32) {
    match Signal::try_from(signal) {
        Ok(s) => signal_group(group, s),
        Err(_) => tracing::debug!(signal, "ignoring unknown signal number"),
    }
}

async fn wait(child: &mut Child, group: Pid, timeout_ms: Option<u64>) -> io::Result<(ExitStatus, bool)> {
    if let Some(ms) = timeout_ms {
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(ms), child.wait()).await {
            return Ok((r?, false));
        }
        signal_group(group, Signal::SIGKILL);
        return Ok((child.wait().await?, true));
    }
    Ok((child.wait().await?, false))
}

/// Host → process: stdin bytes, EOF, signals. Returns only when the stream is reset.
async fn host_input(rx: &mut StreamReceiver, mut stdin: Option<ChildStdin>, group: Pid) {
    loop {
        match rx.recv().await {
            Event::Data { data, .. } => {
                if let Some(s) = stdin.as_mut() {
                    if s.write_all(&data).await.is_err() {
                        stdin = None; // the process closed its stdin; drop the rest
                    }
                }
            }
            Event::Eof => stdin = None,
            Event::Ctrl(Ctrl::Signal { signal }) => send_signal(group, signal),
            Event::Ctrl(_) => {}
            Event::Reset(_) => return,
        }
    }
}

/// Process → host on sub-channel `fd`, until EOF or the grace after exit runs out.
async fn pump<R>(out: Option<R>, tx: &StreamSender, fd: u8, mut exited: watch::Receiver<bool>)
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let Some(mut out) = out else { return };
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let read = tokio::select! {
            r = out.read(&mut buf) => Some(r),
            () = linger(&mut exited) => None,
        };
        match read {
            None => {
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut out, &mut tokio::io::sink()).await;
                });
                return;
            }
            Some(Ok(0) | Err(_)) => return,
            Some(Ok(n)) => {
                if tx.send_data(fd, &buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Resolves [`OUTPUT_GRACE`] after the command exited.
async fn linger(exited: &mut watch::Receiver<bool>) {
    let _ = exited.wait_for(|e| *e).await;
    tokio::time::sleep(OUTPUT_GRACE).await;
}
