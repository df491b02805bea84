//! One `session` channel: its set-up requests (`pty-req`, `env`), then what it runs (`shell`,
//! `exec`, the `sftp` subsystem) as a guest stream, relayed both ways until the program exits.
//!
//! States: [`Setup`] collects the terminal and environment until a start request; then the
//! channel relays (client → guest: stdin, window changes, signals; guest → client: stdout,
//! stderr, the exit status) and closes when the program ends.

use crate::agent::AgentSocket;
use bytes::Bytes;
use mayfly_proto::msg::{Ctrl, ExecRequest, PtyRequest};
use mayfly_proto::mux::Event;
use mayfly_server::access::SessionRef;
use mayfly_server::manager::{Activity, SessionManager};
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The guest program serving the `sftp` subsystem (Debian's `openssh-sftp-server`).
pub const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";
const MAX_ENV: usize = 64;
const MAX_ENV_VALUE: usize = 4096;

/// What the channel was asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Shell,
    Exec(String),
    Sftp,
}

/// What a channel collects before it starts.
#[derive(Debug, Default)]
struct Setup {
    /// `TERM`, columns, rows.
    pty: Option<(String, u16, u16)>,
    env: BTreeMap<String, String>,
}

/// What every channel of one connection shares.
#[derive(Clone)]
pub struct ChannelCtx {
    pub manager: Arc<SessionManager>,
    pub sref: SessionRef,
    /// The forwarded agent's socket in the guest, once the client asked for forwarding.
    pub agent: AgentSocket,
}

/// True for an environment variable name a client may set.
pub fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128
}

fn dims(cols: u32, rows: u32) -> (u16, u16) {
    let clamp = |v: u32, default: u16| if v == 0 { default } else { v.min(u16::MAX as u32) as u16 };
    (clamp(cols, 80), clamp(rows, 24))
}

/// The guest's number for a signal an SSH client names.
pub fn signal_number(sig: &Sig) -> Option<i32> {
    Some(match sig {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::Custom(_) => return None,
    })
}

/// Serves one accepted `session` channel to its end.
pub async fn run(channel: Channel<Msg>, ctx: ChannelCtx) {
    let (mut rd, wr) = channel.split();
    let mut setup = Setup::default();
    let start = loop {
        match rd.wait().await {
            None | Some(ChannelMsg::Close) => return,
            Some(ChannelMsg::RequestPty { term, col_width, row_height, .. }) => {
                let (c, r) = dims(col_width, row_height);
                setup.pty = Some((term, c, r));
            }
            Some(ChannelMsg::WindowChange { col_width, row_height, .. }) => {
                if let Some(p) = setup.pty.as_mut() {
                    (p.1, p.2) = dims(col_width, row_height);
                }
            }
            Some(ChannelMsg::SetEnv { variable_name, variable_value, .. }) => {
                if valid_env_name(&variable_name) && variable_value.len() <= MAX_ENV_VALUE && setup.env.len() < MAX_ENV {
                    setup.env.insert(variable_name, variable_value);
                } else {
                    tracing::debug!(session = ctx.sref.id(), "ignored env request {variable_name:?}");
                }
            }
            Some(ChannelMsg::RequestShell { .. }) => break Start::Shell,
            Some(ChannelMsg::Exec { command, .. }) => break Start::Exec(String::from_utf8_lossy(&command).into_owned()),
            Some(ChannelMsg::RequestSubsystem { name, .. }) if name == "sftp" => break Start::Sftp,
            Some(_) => {}
        }
    };
    tracing::info!(session = ctx.sref.id(), ?start, pty = setup.pty.is_some(), "ssh channel starts");
    match open(&ctx, &start, setup).await {
        Ok(p) => relay(rd, wr, p.stream, p.activity).await,
        Err(message) => {
            let _ = wr.extended_data_bytes(1, Bytes::from(format!("mayfly: {message}\r\n"))).await;
            let _ = wr.exit_status(127).await;
            let _ = wr.eof().await;
            let _ = wr.close().await;
        }
    }
}

/// Starts the guest side of `start`.
async fn open(ctx: &ChannelCtx, start: &Start, mut setup: Setup) -> Result<mayfly_server::manager::GuestProcess, String> {
    if let Some(sock) = ctx.agent.path() {
        setup.env.insert("SSH_AUTH_SOCK".into(), sock);
    }
    let shell_cmd = |c: &str| vec!["/bin/sh".to_string(), "-c".to_string(), c.to_string()];
    let r = match (start, setup.pty) {
        (Start::Sftp, _) => {
            let req = ExecRequest { cmd: vec![SFTP_SERVER.into()], env: setup.env, cwd: None, timeout_ms: None };
            ctx.manager.open_exec(&ctx.sref, req).await
        }
        (Start::Shell, Some((term, cols, rows))) | (Start::Exec(_), Some((term, cols, rows))) => {
            setup.env.insert("TERM".into(), term);
            let cmd = match start {
                Start::Exec(c) => Some(shell_cmd(c)),
                _ => None,
            };
            let req = PtyRequest { terminal: None, cols, rows, cmd, env: setup.env, cwd: None };
            ctx.manager.open_terminal(&ctx.sref, req).await
        }
        (Start::Shell, None) => {
            // A shell without a terminal reads its commands from stdin (`ssh host < script`).
            let req = ExecRequest { cmd: shell_cmd("exec \"${SHELL:-/bin/sh}\""), env: setup.env, cwd: None, timeout_ms: None };
            ctx.manager.open_exec(&ctx.sref, req).await
        }
        (Start::Exec(c), None) => {
            let req = ExecRequest { cmd: shell_cmd(c), env: setup.env, cwd: None, timeout_ms: None };
            ctx.manager.open_exec(&ctx.sref, req).await
        }
    };
    r.map_err(|e| {
        tracing::warn!(session = ctx.sref.id(), "ssh channel cannot start: {}", mayfly_proto::error_chain(&e));
        e.to_string()
    })
}

/// Relays until the guest program ends (then the channel closes with its exit status) or the
/// client closes the channel (then the program is stopped).
async fn relay(mut rd: ChannelReadHalf, wr: ChannelWriteHalf<Msg>, stream: mayfly_proto::mux::Stream, activity: Activity) {
    let (tx, mut rx) = stream.split();
    let inbound = async {
        loop {
            match rd.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    activity.touch();
                    // A program that ended reads no more; its exit status still follows.
                    let _ = tx.send_data(0, &data).await;
                }
                Some(ChannelMsg::Eof) => {
                    let _ = tx.send_eof().await;
                }
                Some(ChannelMsg::WindowChange { col_width, row_height, .. }) => {
                    let (cols, rows) = dims(col_width, row_height);
                    let _ = tx.send_ctrl(&Ctrl::Resize { cols, rows }).await;
                }
                Some(ChannelMsg::Signal { signal }) => {
                    if let Some(n) = signal_number(&signal) {
                        let _ = tx.send_ctrl(&Ctrl::Signal { signal: n }).await;
                    }
                }
                None | Some(ChannelMsg::Close) => {
                    tx.reset("the SSH client closed the channel");
                    return;
                }
                Some(_) => {}
            }
        }
    };
    let outbound = async {
        let mut status: u32 = 255;
        loop {
            match rx.recv().await {
                Event::Data { fd, data } => {
                    activity.touch();
                    let sent = if fd == 1 { wr.extended_data_bytes(1, data).await } else { wr.data_bytes(data).await };
                    if sent.is_err() {
                        return;
                    }
                }
                Event::Ctrl(Ctrl::Exit { code, signal, .. }) => {
                    status = code.map(|c| c as u32).or(signal.map(|s| 128 + s as u32)).unwrap_or(255);
                }
                Event::Ctrl(Ctrl::Error { message, .. }) => {
                    let _ = wr.extended_data_bytes(1, Bytes::from(format!("mayfly: {message}\r\n"))).await;
                    status = 127;
                }
                Event::Ctrl(_) => {}
                Event::Eof => break,
                Event::Reset(reason) => {
                    let _ = wr.extended_data_bytes(1, Bytes::from(format!("\r\nmayfly: the session's program was cut off ({reason})\r\n"))).await;
                    break;
                }
            }
        }
        let _ = wr.exit_status(status).await;
        let _ = wr.eof().await;
        let _ = wr.close().await;
    };
    tokio::select! {
        () = inbound => {}
        () = outbound => {}
        () = crate::keep_active(&activity) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_and_signals() {
        assert!(valid_env_name("LANG"));
        assert!(valid_env_name("LC_ALL"));
        assert!(valid_env_name("_x1"));
        assert!(!valid_env_name(""));
        assert!(!valid_env_name("1A"));
        assert!(!valid_env_name("A=B"));
        assert!(!valid_env_name("A B"));
        assert_eq!(signal_number(&Sig::INT), Some(2));
        assert_eq!(signal_number(&Sig::TERM), Some(15));
        assert_eq!(signal_number(&Sig::Custom("WINCH".into())), None);
        assert_eq!(dims(0, 0), (80, 24));
        assert_eq!(dims(100_000, 50), (u16::MAX, 50));
    }
}
