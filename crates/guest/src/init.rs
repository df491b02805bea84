//! PID 1: set the system up ([`crate::boot`]), then supervise `mayfly-guest daemon` and reap
//! every zombie.
//!
//! A plain synchronous loop, no async runtime: the signals PID 1 cares about are blocked and
//! taken with `sigtimedwait`, which also serves as the respawn timer. The kernel drops signals
//! to PID 1 that have no handler, but blocked ones stay pending, so nothing is lost.
//!
//! * `SIGCHLD` → `waitpid(-1)` until nothing is left; the daemon's exit schedules a respawn
//!   [`RESPAWN_DELAY`] later (so `kill -9` of the daemon recovers).
//! * `SIGTERM`/`SIGINT`/`SIGPWR` → terminate everything, `sync`, power off.

use crate::boot;
use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::convert::Infallible;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const RESPAWN_DELAY: Duration = Duration::from_millis(200);
/// Time processes get between SIGTERM and SIGKILL at shutdown.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// The line the host may look for in the console log.
pub const STARTED_LINE: &str = "mayfly-init: daemon started";

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("init must run as PID 1 (this is PID {0})")]
    NotPid1(i32),
}

/// Opens the console for writing. Appending changes nothing on the device, and keeps lines
/// from overwriting each other when a test puts a plain file there.
fn open_console() -> std::io::Result<std::fs::File> {
    OpenOptions::new().append(true).custom_flags(libc::O_NOCTTY).open("/dev/console")
}

/// stdout and stderr for children: the console, or whatever this process has.
pub fn console() -> (Stdio, Stdio) {
    match (open_console(), open_console()) {
        (Ok(a), Ok(b)) => (a.into(), b.into()),
        _ => (Stdio::inherit(), Stdio::inherit()),
    }
}

/// Writes one line to the console.
fn say(line: &str) {
    let written = open_console().and_then(|mut c| writeln!(c, "{line}"));
    if written.is_err() {
        eprintln!("{line}");
    }
}

struct Supervisor {
    daemon: Option<Pid>,
    respawn_at: Option<Instant>,
}

impl Supervisor {
    fn spawn_daemon(&mut self) {
        self.respawn_at = None;
        let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
        let (out, err) = console();
        let mut cmd = Command::new(exe);
        cmd.arg("daemon").stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: `reset_in_child` only makes async-signal-safe calls.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, crate::sigreset::reset_in_child);
        }
        match cmd.spawn() {
            Ok(child) => {
                self.daemon = Some(Pid::from_raw(child.id() as i32));
                say(STARTED_LINE);
            }
            Err(e) => {
                tracing::error!("cannot start the daemon: {e}");
                self.respawn_at = Some(Instant::now() + RESPAWN_DELAY);
            }
        }
    }

    /// Reaps every exited child; notes the daemon's exit.
    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(status) => {
                    if status.pid().is_some() && status.pid() == self.daemon {
                        tracing::warn!("daemon ended ({status:?}); restarting");
                        self.daemon = None;
                        self.respawn_at = Some(Instant::now() + RESPAWN_DELAY);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => {
                    tracing::warn!("waitpid: {e}");
                    return;
                }
            }
        }
    }
}

/// Waits up to `timeout` for one of `set`; returns its number.
fn wait_signal(set: &SigSet, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as _ };
    // SAFETY: `set` and `ts` are valid for the call; a null siginfo pointer is allowed.
    let sig = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

/// Runs PID 1. Returns only if this process is not PID 1. `grow_root`: see [`boot::prepare`].
pub fn run(grow_root: bool) -> Result<Infallible, InitError> {
    let me = nix::unistd::getpid().as_raw();
    if me != 1 {
        return Err(InitError::NotPid1(me));
    }
    boot::prepare(grow_root);
    // Ctrl-Alt-Del becomes SIGINT (orderly shutdown) instead of an immediate reboot.
    let _ = nix::sys::reboot::set_cad_enabled(false);
    let mut signals = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGPWR] {
        signals.add(s);
    }
    if let Err(e) = signals.thread_block() {
        tracing::error!("cannot block signals: {e}");
    }
    let mut sup = Supervisor { daemon: None, respawn_at: Some(Instant::now()) };
    loop {
        if sup.respawn_at.is_some_and(|t| t <= Instant::now()) {
            sup.spawn_daemon();
        }
        let timeout = sup.respawn_at.map_or(Duration::from_secs(3600), |t| t.saturating_duration_since(Instant::now()));
        match wait_signal(&signals, timeout).and_then(|s| Signal::try_from(s).ok()) {
            Some(Signal::SIGTERM | Signal::SIGINT | Signal::SIGPWR) => shutdown(),
            _ => sup.reap(),
        }
    }
}

fn reap_until(deadline: Instant) {
    while Instant::now() < deadline {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::ECHILD) => return,
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(50)),
            _ => {}
        }
    }
}

fn shutdown() -> ! {
    say("mayfly-init: shutting down");
    // From PID 1, pid -1 means every process but this one.
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    reap_until(Instant::now() + STOP_GRACE);
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    reap_until(Instant::now() + Duration::from_millis(500));
    nix::unistd::sync();
    let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    tracing::error!("power off failed: {e}");
    // PID 1 must never exit: that panics the kernel.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
