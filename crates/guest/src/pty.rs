//! `pty` streams: one attachment to a terminal ([`crate::terminal`]), and the registry of
//! persistent terminals ([`Terminals`]) they attach to.
//!
//! Guest → host: CTRL `started {pid}`, the scrollback replay as DATA (re-attach only), live
//! output as DATA, and CTRL `exit` + EOF when the shell exits. Host → guest: DATA (keys), CTRL
//! `resize`, CTRL `signal` (delivered to the foreground job). Output and input run as two
//! independent halves, so a shell blocked on output never stops keys (and the reverse), which
//! would otherwise deadlock a large paste.

use crate::exec::resolve_cwd;
use crate::park::{self, Parking, Step};
use crate::serve::finish;
use crate::terminal::{Attachment, Output, PtyError, Terminal};
use mayfly_proto::msg::{Ctrl, PtyRequest};
use mayfly_proto::mux::{Event, MuxError, Stream};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Registry of persistent terminals, by client-chosen id, and the spare shell.
pub struct Terminals {
    map: Mutex<HashMap<String, Arc<Terminal>>>,
    spare: Mutex<Option<Spare>>,
    idle: Duration,
}

/// A login shell started before anyone asked, so the first terminal shows a prompt at once.
///
/// A plain spare printed its prompt under `hostname`: after an identity change that prompt would
/// lie, so then it is discarded instead of adopted. A *parked* spare (made in a template) has run
/// its start-up files and readline's set-up but shows nothing: it waits (see [`crate::park`]) for
/// the host name to put in its prompt, which adoption hands it, so it fits whatever identity the
/// clone got.
struct Spare {
    terminal: Arc<Terminal>,
    hostname: String,
    parked: bool,
}

/// How long a spare shell may take to print its prompt (or to park).
const SPARE_PROMPT_LIMIT: Duration = Duration::from_secs(30);
/// How often a parking shell is looked at (see [`crate::park`]).
const PARK_POLL: Duration = Duration::from_millis(5);

fn hostname() -> String {
    nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
}

impl Terminals {
    pub fn new(idle: Duration) -> Arc<Self> {
        Arc::new(Terminals { map: Mutex::new(HashMap::new()), spare: Mutex::new(None), idle })
    }

    /// Attaches to terminal `req.terminal` (starting it if needed), or starts a private one.
    /// A new terminal with the default command, cwd and environment adopts the spare shell.
    pub fn open(self: &Arc<Self>, req: &PtyRequest, cwd: PathBuf) -> Result<Attachment, PtyError> {
        let Some(id) = &req.terminal else {
            if let Some(a) = self.adopt_spare(req, None) {
                return Ok(a);
            }
            return Ok(Terminal::spawn(req, cwd, None, Weak::new())?.1);
        };
        let mut map = self.map.lock().expect("terminals lock");
        if let Some(t) = map.get(id) {
            if let Some(a) = t.attach() {
                t.resize(req.cols, req.rows);
                return Ok(a);
            }
        }
        if let Some(a) = self.adopt_spare(req, Some(id)) {
            map.insert(id.clone(), a.terminal.clone());
            return Ok(a);
        }
        let (t, a) = Terminal::spawn(req, cwd, Some(id.clone()), Arc::downgrade(self))?;
        map.insert(id.clone(), t);
        Ok(a)
    }

    /// The spare shell, attached and named `id`, if `req` asks for exactly what it is.
    fn adopt_spare(&self, req: &PtyRequest, id: Option<&String>) -> Option<Attachment> {
        if req.cmd.is_some() || req.cwd.is_some() || !req.env.is_empty() {
            return None;
        }
        let spare = self.spare.lock().expect("spare lock").take()?;
        if !spare.parked && spare.hostname != hostname() {
            spare.terminal.hang_up();
            return None;
        }
        spare.terminal.set_id(id.cloned());
        let a = spare.terminal.attach()?;
        spare.terminal.resize(req.cols, req.rows);
        if spare.parked {
            park::release(&spare.terminal, &hostname());
        }
        tracing::debug!(
            terminal = id.map(String::as_str).unwrap_or(""),
            pid = spare.terminal.pid(),
            parked = spare.parked,
            "adopted the spare shell"
        );
        Some(a)
    }

    /// Readies a spare shell and waits for its prompt. A parked spare (a clone's, from its
    /// template) is released under the current host name; otherwise a new one is started,
    /// replacing an older one.
    async fn prepare_spare(self: &Arc<Self>, cols: u16, rows: u16) -> Result<bool, PtyError> {
        let parked = {
            let mut spare = self.spare.lock().expect("spare lock");
            match spare.as_mut() {
                Some(s) if s.parked && !s.terminal.exited() => {
                    s.parked = false;
                    s.hostname = hostname();
                    Some(s.terminal.clone())
                }
                _ => None,
            }
        };
        if let Some(t) = parked {
            t.resize(cols, rows);
            park::release(&t, &hostname());
            return Ok(t.printed(SPARE_PROMPT_LIMIT).await);
        }
        let req = PtyRequest { cols, rows, ..Default::default() };
        let t = Terminal::start(&req, crate::default_cwd(), None, Arc::downgrade(self))?;
        self.keep_spare(Spare { terminal: t.clone(), hostname: hostname(), parked: false });
        Ok(t.printed(SPARE_PROMPT_LIMIT).await)
    }

    /// Starts a parked spare (see [`crate::park`]) and waits until it waits. `Ok(false)`: the
    /// shell printed something or exited instead, and is not kept.
    async fn park_spare(self: &Arc<Self>, cols: u16, rows: u16) -> Result<bool, PtyError> {
        let mut req = PtyRequest { cols, rows, ..Default::default() };
        req.env.insert("PROMPT_COMMAND".into(), park::HOOK.into());
        let t = Terminal::start(&req, crate::default_cwd(), None, Arc::downgrade(self))?;
        let deadline = tokio::time::Instant::now() + SPARE_PROMPT_LIMIT;
        let mut parking = Parking::default();
        let parked = loop {
            let output = t.output();
            let step = if t.exited() || tokio::time::Instant::now() >= deadline {
                Step::Refused
            } else {
                parking.step(&output, t.echo_off())
            };
            match step {
                Step::Parked => break true,
                Step::Wait => {}
                Step::TypeEmptyLine => {
                    if let Err(e) = t.write_now(b"\n") {
                        tracing::info!("the login shell cannot be parked: typing its warm-up line failed: {e}");
                        break false;
                    }
                }
                Step::Refused => {
                    tracing::info!(output = ?String::from_utf8_lossy(&output), "the login shell cannot be parked");
                    break false;
                }
            }
            tokio::time::sleep(PARK_POLL).await;
        };
        if !parked {
            t.hang_up();
            return Ok(false);
        }
        // The marks and the warm-up line are no output of the shell's: the adopting terminal
        // must not replay them.
        t.forget_output();
        self.keep_spare(Spare { terminal: t, hostname: hostname(), parked: true });
        Ok(true)
    }

    fn keep_spare(&self, spare: Spare) {
        if let Some(old) = self.spare.lock().expect("spare lock").replace(spare) {
            old.terminal.hang_up();
        }
    }

    pub(crate) fn remove(&self, id: &str, t: &Arc<Terminal>) {
        let mut map = self.map.lock().expect("terminals lock");
        if map.get(id).is_some_and(|x| Arc::ptr_eq(x, t)) {
            map.remove(id);
        }
    }

    /// Periodically hangs up terminals detached for longer than the idle timeout.
    pub fn start_reaper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let every = (self.idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(60));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(reg) = weak.upgrade() else { return };
                let idle: Vec<_> = reg
                    .map
                    .lock()
                    .expect("terminals lock")
                    .values()
                    .filter(|t| t.idle_for() > reg.idle)
                    .cloned()
                    .collect();
                for t in idle {
                    tracing::info!(terminal = t.id().unwrap_or_default(), "hanging up idle terminal");
                    t.hang_up();
                }
            }
        });
    }
}

/// `spare_shell`: readies the spare and answers `ok` once it printed its prompt (or, parked,
/// once it waits).
pub async fn serve_spare(cols: u16, rows: u16, parked: bool, stream: Stream, terminals: &Arc<Terminals>) {
    let (tx, _rx) = stream.split();
    let result =
        if parked { terminals.park_spare(cols, rows).await } else { terminals.prepare_spare(cols, rows).await };
    let reply = match result {
        Ok(true) => Ctrl::Ok,
        Ok(false) if parked => Ctrl::error(
            mayfly_proto::msg::ErrorKind::Io,
            "the login shell cannot be parked (not bash, or its start-up files print or set PROMPT_COMMAND)",
        ),
        Ok(false) => {
            Ctrl::error(mayfly_proto::msg::ErrorKind::Io, "the spare shell printed nothing (it exited or is slow)")
        }
        Err(e) => e.to_ctrl(),
    };
    finish(&tx, &reply).await
}

pub async fn serve(req: PtyRequest, stream: Stream, terminals: &Arc<Terminals>) {
    let (tx, mut rx) = stream.split();
    let cwd = match resolve_cwd(req.cwd.as_deref()) {
        Ok(c) => c,
        Err(reply) => return finish(&tx, &reply).await,
    };
    let mut attachment = match terminals.open(&req, cwd) {
        Ok(a) => a,
        Err(e) => return finish(&tx, &e.to_ctrl()).await,
    };
    let term = attachment.terminal.clone();
    let output = async {
        tx.send_ctrl(&Ctrl::Started { pid: term.pid() }).await?;
        let replay = std::mem::take(&mut attachment.replay);
        if !replay.is_empty() {
            tx.send_data(0, &replay).await?;
        }
        while let Some(out) = attachment.output.recv().await {
            match out {
                Output::Data(d) => tx.send_data(0, &d).await?,
                Output::Exit(c) => {
                    tx.send_ctrl(&c).await?;
                    tx.send_eof().await?;
                    break;
                }
            }
        }
        Ok::<(), MuxError>(())
    };
    let input = async {
        loop {
            match rx.recv().await {
                Event::Data { data, .. } => {
                    // Typing is how dev servers get started (and stopped): look at ports soon.
                    crate::activity::poke();
                    // A failed write means the shell is gone; the output half reports its exit.
                    let _ = term.write_input(&data).await;
                }
                Event::Ctrl(Ctrl::Resize { cols, rows }) => term.resize(cols, rows),
                Event::Ctrl(Ctrl::Signal { signal }) => {
                    crate::activity::poke();
                    term.signal(signal)
                }
                Event::Ctrl(_) | Event::Eof => {}
                Event::Reset(_) => return,
            }
        }
    };
    tokio::select! {
        _ = output => {}
        () = input => {}
    }
    // Dropping the attachment detaches; a terminal without an id is hung up with it.
}
