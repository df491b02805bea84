//! The local end of an interactive terminal: raw mode, keys in, screen out, resize on SIGWINCH.
//! Transport-agnostic: the caller bridges [`TermInput`] and output bytes to a guest PTY stream or
//! a PTY WebSocket.

use bytes::Bytes;
use std::io::Write;
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

pub enum TermInput {
    Data(Vec<u8>),
    Resize { cols: u16, rows: u16 },
}

/// Current size of the local terminal (80x24 when not a terminal).
/// The terminal's size; 80×24 when it has none (a pipe, or a pseudo-terminal that reports 0×0,
/// which the server would refuse).
pub fn size() -> (u16, u16) {
    match crossterm::terminal::size() {
        Ok((cols, rows)) if cols > 0 && rows > 0 => (cols, rows),
        _ => (80, 24),
    }
}

/// Restores the terminal mode on drop, even on error paths.
struct RawGuard(bool);

impl Drop for RawGuard {
    fn drop(&mut self) {
        if self.0 {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}

/// Runs until `output` ends. Keys and resizes go to `input`.
pub async fn run(input: mpsc::Sender<TermInput>, mut output: mpsc::Receiver<Bytes>) -> std::io::Result<()> {
    let is_tty = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let _guard = RawGuard(is_tty && crossterm::terminal::enable_raw_mode().is_ok());
    let mut winch = signal(SignalKind::window_change())?;
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 4096];
    let mut stdin_open = true;
    let mut stdout = std::io::stdout();
    loop {
        tokio::select! {
            out = output.recv() => match out {
                Some(b) => {
                    stdout.write_all(&b)?;
                    stdout.flush()?;
                }
                None => break,
            },
            n = stdin.read(&mut buf), if stdin_open => match n {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    if input.send(TermInput::Data(buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            },
            _ = winch.recv() => {
                let (cols, rows) = size();
                let _ = input.send(TermInput::Resize { cols, rows }).await;
            }
        }
    }
    Ok(())
}
