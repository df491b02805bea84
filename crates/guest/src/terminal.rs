//! Terminals: a shell on a PTY, its scrollback, and the streams attached to it.
//!
//! A terminal opened with a client-chosen id lives in [`Terminals`] (in [`crate::pty`]) and
//! outlives its streams
//! (host disconnect, page reload); opening the id again re-attaches: the scrollback is replayed,
//! then live output follows. Several attachments may share a terminal; output fans out to each,
//! keys from any of them reach the shell. A terminal without an id dies with its stream. A
//! detached terminal is hung up after the idle timeout. When the shell exits every attachment
//! gets CTRL `exit` and the registry entry is removed.
//!
//! One task per terminal reads the PTY master (appending to the scrollback, then handing chunks to
//! each attachment's bounded queue, so a slow viewer slows the shell rather than growing memory).
//! Attachments write keys to the master themselves. The stream side lives in [`crate::pty`].

use crate::exec::{send_signal, signal_group};
use crate::pty::Terminals;
use crate::scrollback::Scrollback;
use bytes::Bytes;
use mayfly_proto::msg::{Ctrl, PtyRequest};
use nix::pty::Winsize;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Output chunks queued per attachment before the terminal waits for it.
const ATTACH_QUEUE: usize = 32;
const READ_CHUNK: usize = 16 * 1024;
/// After the shell exited, output still readable (background jobs holding the PTY) is forwarded
/// while it keeps coming within this gap, for at most [`DRAIN_LIMIT`].
const OUTPUT_GRACE: Duration = Duration::from_millis(200);
const DRAIN_LIMIT: Duration = Duration::from_secs(1);
/// How long held keys wait for the shell's output at most (then they go in anyway).
const KEYS_HELD_LIMIT: Duration = Duration::from_secs(10);
/// A hung-up shell that is still alive after this is killed.
const KILL_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error("cannot open a pty")]
    Open(#[source] nix::Error),
    #[error("cannot set up the pty")]
    Setup(#[source] io::Error),
    #[error("{program}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
}

impl PtyError {
    pub fn to_ctrl(&self) -> Ctrl {
        match self {
            PtyError::Spawn { program, source } => Ctrl::io_error(program, source),
            PtyError::Setup(e) => Ctrl::io_error("pty", e),
            PtyError::Open(e) => Ctrl::io_error("pty", &io::Error::from(*e)),
        }
    }
}

/// What a terminal hands to an attachment.
#[derive(Debug)]
pub enum Output {
    Data(Bytes),
    /// The shell exited; nothing follows.
    Exit(Ctrl),
}

/// A shell on a PTY.
pub struct Terminal {
    /// Registry id; a spare shell gets its id when it is adopted.
    id: Mutex<Option<String>>,
    pid: u32,
    master: AsyncFd<OwnedFd>,
    state: Mutex<State>,
    next_key: AtomicU64,
    shell_exited: AtomicBool,
    hung_up: AtomicBool,
    /// Set (and notified) when the shell printed something for the first time.
    printed: AtomicBool,
    printed_notify: tokio::sync::Notify,
    /// Set while keys must wait for the shell's next output (see [`Terminal::hold_keys_until_printed`]).
    keys_held: AtomicBool,
}

struct State {
    scrollback: Scrollback,
    attached: HashMap<u64, mpsc::Sender<Output>>,
    detached_since: Instant,
    /// Set once the shell exited; no attachments are accepted after that.
    exit: Option<Ctrl>,
}

/// One stream's hold on a terminal. Dropping it detaches.
pub struct Attachment {
    pub terminal: Arc<Terminal>,
    key: u64,
    /// Scrollback at the moment of attaching; live output in `output` continues exactly after it.
    pub replay: Vec<u8>,
    pub output: mpsc::Receiver<Output>,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.terminal.detach(self.key);
    }
}

fn winsize(cols: u16, rows: u16) -> Winsize {
    Winsize { ws_row: rows.max(1), ws_col: cols.max(1), ws_xpixel: 0, ws_ypixel: 0 }
}

fn default_shell() -> Vec<String> {
    if Path::new("/bin/bash").exists() {
        vec!["/bin/bash".into(), "-l".into()]
    } else {
        vec!["/bin/sh".into()]
    }
}

/// Runs in the forked child before exec: new session, the PTY (already on fd 0) as its
/// controlling terminal.
fn child_setup() -> io::Result<()> {
    nix::unistd::setsid()?;
    crate::sigreset::reset_in_child()?;
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal); fd 0 is the PTY slave.
    // ioctl(2) is async-signal-safe.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_fd_flags(fd: &OwnedFd, nonblocking: bool) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    if nonblocking {
        let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    }
    Ok(())
}

impl Terminal {
    pub(crate) fn spawn(
        req: &PtyRequest,
        cwd: PathBuf,
        id: Option<String>,
        registry: Weak<Terminals>,
    ) -> Result<(Arc<Terminal>, Attachment), PtyError> {
        let t = Self::start(req, cwd, id, registry)?;
        let a = t.attach().expect("a new terminal accepts attachments");
        Ok((t, a))
    }

    /// Starts the shell with nobody attached (a spare).
    pub(crate) fn start(
        req: &PtyRequest,
        cwd: PathBuf,
        id: Option<String>,
        registry: Weak<Terminals>,
    ) -> Result<Arc<Terminal>, PtyError> {
        let pty = nix::pty::openpty(Some(&winsize(req.cols, req.rows)), None).map_err(PtyError::Open)?;
        // openpty does not set O_CLOEXEC: without it every later child would inherit every PTY.
        set_fd_flags(&pty.master, true).map_err(PtyError::Setup)?;
        set_fd_flags(&pty.slave, false).map_err(PtyError::Setup)?;
        let argv = match &req.cmd {
            Some(c) if !c.is_empty() => c.clone(),
            _ => default_shell(),
        };
        let slave = |fd: &OwnedFd| fd.try_clone().map(Stdio::from).map_err(PtyError::Setup);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env("TERM", "xterm-256color")
            .envs(&req.env)
            .current_dir(&cwd)
            .stdin(slave(&pty.slave)?)
            .stdout(slave(&pty.slave)?)
            .stderr(Stdio::from(pty.slave));
        // SAFETY: `child_setup` only calls setsid(2), ioctl(2) and the signal resets, all
        // async-signal-safe, and
        // touches no memory shared with the parent.
        unsafe {
            cmd.pre_exec(child_setup);
        }
        let child = cmd.spawn().map_err(|source| PtyError::Spawn { program: argv[0].clone(), source })?;
        // Close our copies of the slave so the master reports the hang-up when the shell is gone.
        drop(cmd);
        // SAFETY: `pty.master` is an owned, valid fd; it is neither replaced nor closed while the
        // AsyncFd holds it.
        let master = unsafe { AsyncFd::register(pty.master) }.map_err(|e| PtyError::Setup(e.into()))?;
        let t = Arc::new(Terminal {
            id: Mutex::new(id),
            pid: child.id().unwrap_or_default(),
            master,
            state: Mutex::new(State {
                scrollback: Scrollback::default(),
                attached: HashMap::new(),
                detached_since: Instant::now(),
                exit: None,
            }),
            next_key: AtomicU64::new(0),
            shell_exited: AtomicBool::new(false),
            hung_up: AtomicBool::new(false),
            printed: AtomicBool::new(false),
            printed_notify: tokio::sync::Notify::new(),
            keys_held: AtomicBool::new(false),
        });
        tokio::spawn(run_output(t.clone(), child, registry));
        Ok(t)
    }

    pub(crate) fn id(&self) -> Option<String> {
        self.id.lock().expect("terminal id lock").clone()
    }

    pub(crate) fn set_id(&self, id: Option<String>) {
        *self.id.lock().expect("terminal id lock") = id;
    }

    /// Waits until the shell printed something (its prompt), or exited, for at most `limit`.
    pub(crate) async fn printed(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.printed_notify.notified();
            if self.printed.load(Ordering::SeqCst) {
                return true;
            }
            if self.shell_exited.load(Ordering::SeqCst) || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.printed.load(Ordering::SeqCst);
            }
        }
    }

    /// Whether the program on the terminal turned echo off (a password prompt, `read -s`).
    pub(crate) fn echo_off(&self) -> bool {
        use nix::sys::termios::{tcgetattr, LocalFlags};
        // On Linux the master reports the terminal's (the slave's) settings.
        tcgetattr(self.master.get_ref()).is_ok_and(|t| !t.local_flags.contains(LocalFlags::ECHO))
    }

    /// Everything the shell printed so far (as far as the reader task has read it).
    pub(crate) fn output(&self) -> Vec<u8> {
        self.state.lock().expect("terminal lock").scrollback.contents()
    }

    /// Makes client keys wait until the shell prints (or [`KEYS_HELD_LIMIT`] passed). For a
    /// released parked shell: between its `read -s` and readline's raw mode the terminal echoes,
    /// so a key typed then would show before the prompt and again after it.
    pub(crate) fn hold_keys_until_printed(&self) {
        self.keys_held.store(true, Ordering::SeqCst);
    }

    /// Forgets everything printed so far, as if the shell had printed nothing yet: the scrollback
    /// is emptied and [`Terminal::printed`] waits for new output.
    pub(crate) fn forget_output(&self) {
        self.state.lock().expect("terminal lock").scrollback = Scrollback::default();
        self.printed.store(false, Ordering::SeqCst);
    }

    /// Whether the shell exited.
    pub(crate) fn exited(&self) -> bool {
        self.shell_exited.load(Ordering::SeqCst)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn group(&self) -> Pid {
        Pid::from_raw(self.pid as i32)
    }

    pub(crate) fn attach(self: &Arc<Self>) -> Option<Attachment> {
        let (tx, output) = mpsc::channel(ATTACH_QUEUE);
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let mut st = self.state.lock().expect("terminal lock");
        if st.exit.is_some() {
            return None;
        }
        st.attached.insert(key, tx);
        let replay = st.scrollback.contents();
        drop(st);
        Some(Attachment { terminal: self.clone(), key, replay, output })
    }

    fn detach(self: &Arc<Self>, key: u64) {
        let mut st = self.state.lock().expect("terminal lock");
        st.attached.remove(&key);
        if st.attached.is_empty() {
            st.detached_since = Instant::now();
            if self.id().is_none() && st.exit.is_none() {
                drop(st);
                self.hang_up();
            }
        }
    }

    /// How long the terminal has had no attachment (zero while attached or after exit).
    pub(crate) fn idle_for(&self) -> Duration {
        let st = self.state.lock().expect("terminal lock");
        if st.attached.is_empty() && st.exit.is_none() {
            st.detached_since.elapsed()
        } else {
            Duration::ZERO
        }
    }

    /// Ends the terminal: SIGHUP to the shell's group, SIGKILL if it is still alive later.
    pub(crate) fn hang_up(self: &Arc<Self>) {
        if self.hung_up.swap(true, Ordering::SeqCst) {
            return;
        }
        signal_group(self.group(), Signal::SIGHUP);
        signal_group(self.group(), Signal::SIGCONT);
        let t = self.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                tokio::time::sleep(KILL_GRACE).await;
                if !t.shell_exited.load(Ordering::SeqCst) {
                    signal_group(t.group(), Signal::SIGKILL);
                }
            });
        }
    }

    /// Applies a new window size; the kernel sends SIGWINCH to the foreground job.
    pub fn resize(&self, cols: u16, rows: u16) {
        if cols == 0 || rows == 0 {
            return;
        }
        let ws = winsize(cols, rows);
        // SAFETY: TIOCSWINSZ reads one `winsize` through the pointer, which points to a live
        // local for the duration of the call; the fd is owned by `self.master`.
        unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }

    /// Signals the terminal's foreground process group (what is running), else the shell's.
    pub fn signal(&self, signal: i32) {
        let group = nix::unistd::tcgetpgrp(self.master.get_ref()).unwrap_or(self.group());
        send_signal(group, signal);
    }

    /// Writes keys to the shell.
    pub async fn write_input(&self, mut data: &[u8]) -> io::Result<()> {
        if self.keys_held.load(Ordering::SeqCst) {
            self.printed(KEYS_HELD_LIMIT).await;
            self.keys_held.store(false, Ordering::SeqCst);
        }
        while !data.is_empty() {
            let mut guard = self.master.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }

    /// Writes a few bytes to the shell now, without waiting: all of them or an error.
    pub(crate) fn write_now(&self, data: &[u8]) -> io::Result<()> {
        match nix::unistd::write(self.master.get_ref(), data).map_err(io::Error::from)? {
            n if n == data.len() => Ok(()),
            n => Err(io::Error::new(io::ErrorKind::WriteZero, format!("only {n} of {} bytes written", data.len()))),
        }
    }

    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.master.readable().await?;
            if let Ok(r) = guard.try_io(|fd| nix::unistd::read(fd.as_raw_fd(), buf).map_err(io::Error::from)) {
                return r;
            }
        }
    }

    async fn publish(&self, data: &[u8]) {
        let chunk = Bytes::copy_from_slice(data);
        let senders: Vec<_> = {
            let mut st = self.state.lock().expect("terminal lock");
            st.scrollback.push(data);
            st.attached.values().cloned().collect()
        };
        if !self.printed.swap(true, Ordering::SeqCst) {
            self.printed_notify.notify_waiters();
        }
        for s in senders {
            // A closed queue is an attachment on its way out; its Drop detaches it.
            let _ = s.send(Output::Data(chunk.clone())).await;
        }
    }
}

/// The terminal's reader task: PTY output → scrollback and attachments; then the exit.
async fn run_output(t: Arc<Terminal>, mut child: Child, registry: Weak<Terminals>) {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut status = None;
    let mut drain_until = Instant::now();
    loop {
        let read = if status.is_none() {
            tokio::select! {
                r = t.read(&mut buf) => r,
                s = child.wait() => {
                    t.shell_exited.store(true, Ordering::SeqCst);
                    status = Some(s);
                    drain_until = Instant::now() + DRAIN_LIMIT;
                    continue;
                }
            }
        } else {
            let gap = OUTPUT_GRACE.min(drain_until.saturating_duration_since(Instant::now()));
            match tokio::time::timeout(gap, t.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => break,
            }
        };
        match read {
            // EIO: every slave fd is closed, i.e. the shell and its jobs are gone.
            Ok(0) | Err(_) => break,
            Ok(n) => t.publish(&buf[..n]).await,
        }
    }
    let status = match status {
        Some(s) => s,
        None => child.wait().await,
    };
    t.shell_exited.store(true, Ordering::SeqCst);
    let exit = match status {
        Ok(s) => Ctrl::Exit { code: s.code(), signal: s.signal(), timed_out: false },
        Err(e) => Ctrl::io_error("wait", &e),
    };
    let senders: Vec<_> = {
        let mut st = t.state.lock().expect("terminal lock");
        st.exit = Some(exit.clone());
        st.attached.drain().map(|(_, s)| s).collect()
    };
    if let (Some(id), Some(reg)) = (t.id(), registry.upgrade()) {
        reg.remove(&id, &t);
    }
    t.printed_notify.notify_waiters();
    for s in senders {
        let _ = s.send(Output::Exit(exit.clone())).await;
    }
}
