//! Raw guest streams for doors that relay bytes themselves (the SSH gateway, the E2B door's
//! processes): a command with streamed stdin/stdout/stderr, and a terminal running a given
//! command. Both count their client as attached (the session does not pause under it) and touch
//! the session as bytes flow through the returned [`Activity`].

use super::guest::channel_error;
use super::{Activity, SessionError, SessionManager};
use mayfly_proto::msg::{Ctrl, ExecRequest, OpenRequest, PtyRequest};
use mayfly_proto::mux::{Event, Stream};
use std::time::Duration;

/// How long the guest may take to start a command or a terminal.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A started guest program: its stream (after CTRL `started`), its pid in the guest, and the
/// activity that keeps the session from pausing while held.
pub struct GuestProcess {
    pub stream: Stream,
    pub pid: u32,
    pub activity: Activity,
}

impl SessionManager {
    /// Starts `req` in session `sref` and hands over its stream once the guest reported the
    /// start: DATA to the stream is stdin, EOF closes it; DATA from it is stdout (fd 0) and
    /// stderr (fd 1), then CTRL `exit`. The session's environment comes first, `req.env` over it.
    /// No timeout unless `req` sets one.
    pub async fn open_exec(&self, sref: &crate::access::SessionRef, mut req: ExecRequest) -> Result<GuestProcess, SessionError> {
        let id = sref.id();
        if req.cmd.is_empty() {
            return Err(SessionError::Invalid("cmd must not be empty".into()));
        }
        check_cwd(req.cwd.as_deref())?;
        let (s, vm) = self.ready_vm(id).await?;
        let mut env = s.env.clone();
        env.append(&mut req.env);
        req.env = env;
        let program = req.cmd[0].clone();
        let (stream, pid) = started(id, "exec", vm.channel().open(&OpenRequest::Exec(req))).await.map_err(|e| match e {
            SessionError::Guest { message, .. } => SessionError::Exec { command: program, message },
            other => other,
        })?;
        Ok(GuestProcess { stream, pid, activity: self.client_activity(&s) })
    }

    /// A new terminal (no id: it ends with its stream) running `req.cmd` (default: the login
    /// shell), with the session's environment under `req.env`.
    pub async fn open_terminal(&self, sref: &crate::access::SessionRef, mut req: PtyRequest) -> Result<GuestProcess, SessionError> {
        let id = sref.id();
        check_cwd(req.cwd.as_deref())?;
        let (s, vm) = self.ready_vm(id).await?;
        let mut env = s.env.clone();
        env.append(&mut req.env);
        req.env = env;
        req.terminal = None;
        let (stream, pid) = started(id, "pty", vm.channel().open(&OpenRequest::Pty(req))).await?;
        Ok(GuestProcess { stream, pid, activity: self.client_activity(&s) })
    }
}

fn check_cwd(cwd: Option<&str>) -> Result<(), SessionError> {
    match cwd {
        Some(c) if !c.starts_with('/') => Err(SessionError::Invalid(format!("cwd must be an absolute path, got {c:?}"))),
        _ => Ok(()),
    }
}

/// Waits for CTRL `started` on a just opened stream; the stream and the program's pid.
async fn started(
    id: &str,
    what: &'static str,
    open: impl std::future::Future<Output = Result<Stream, mayfly_vm::ChannelError>>,
) -> Result<(Stream, u32), SessionError> {
    let vm_error = |source: Box<dyn std::error::Error + Send + Sync>| SessionError::Vm { id: id.into(), what, source };
    let run = async {
        let mut stream = open.await.map_err(|e| channel_error(id, what, e))?;
        match stream.recv().await {
            Event::Ctrl(Ctrl::Started { pid }) => Ok((stream, pid)),
            Event::Ctrl(Ctrl::Error { kind, message }) => Err(SessionError::Guest { kind, message }),
            other => Err(vm_error(format!("unexpected reply {other:?}").into())),
        }
    };
    tokio::time::timeout(START_TIMEOUT, run).await.unwrap_or_else(|_| Err(vm_error(format!("no answer within {START_TIMEOUT:?}").into())))
}
