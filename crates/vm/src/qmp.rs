//! A minimal QMP client: JSON lines over the VM's control socket.
//!
//! QMP is small enough that a dedicated crate buys little: greeting, `qmp_capabilities`, then one
//! command at a time with its `return` or `error`. Asynchronous events are skipped here (the VM's
//! lifecycle is observed through the process and the guest channel).

use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to QMP socket {path}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP I/O failed")]
    Io(#[from] std::io::Error),
    #[error("QMP connection closed")]
    Closed,
    #[error("QMP sent something that is not JSON: {0}")]
    BadJson(String),
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command { command: String, class: String, desc: String },
    #[error("QMP command {0} timed out")]
    Timeout(String),
}

pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Qmp {
    /// Connects, reads the greeting and negotiates capabilities.
    pub async fn connect(path: &Path) -> Result<Self, QmpError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Connect { path: path.display().to_string(), source })?;
        let (r, w) = stream.into_split();
        let mut qmp = Qmp { reader: BufReader::new(r), writer: w };
        let greeting = qmp.read_message().await?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::BadJson(format!("expected greeting, got {greeting}")));
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    async fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line).await? == 0 {
                return Err(QmpError::Closed);
            }
            let v: Value = serde_json::from_str(line.trim()).map_err(|_| QmpError::BadJson(line.trim().to_string()))?;
            if v.get("event").is_some() {
                tracing::debug!(event = %v, "qmp event");
                continue;
            }
            return Ok(v);
        }
    }

    /// Runs one command and returns its `return` value.
    pub async fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).await?;
        self.reply(command).await
    }

    /// The reply to the command just sent: its `return` value, or its `error`.
    async fn reply(&mut self, command: &str) -> Result<Value, QmpError> {
        let reply = tokio::time::timeout(Duration::from_secs(30), self.read_message())
            .await
            .map_err(|_| QmpError::Timeout(command.to_string()))??;
        if let Some(err) = reply.get("error") {
            return Err(QmpError::Command {
                command: command.to_string(),
                class: err["class"].as_str().unwrap_or("?").to_string(),
                desc: err["desc"].as_str().unwrap_or("?").to_string(),
            });
        }
        Ok(reply.get("return").cloned().unwrap_or(Value::Null))
    }

    /// Hands `fd` to QEMU under `name` (`getfd`: the command travels with the descriptor as
    /// `SCM_RIGHTS`); QEMU holds its own copy, usable as `fd:<name>` in a migration URI.
    pub async fn pass_fd(&mut self, name: &str, fd: std::os::fd::BorrowedFd<'_>) -> Result<(), QmpError> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        use std::os::fd::AsRawFd;
        let mut line = json!({ "execute": "getfd", "arguments": { "fdname": name } }).to_string();
        line.push('\n');
        let raw = [fd.as_raw_fd()];
        let stream: &UnixStream = self.writer.as_ref();
        loop {
            stream.writable().await?;
            let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
                let iov = [std::io::IoSlice::new(line.as_bytes())];
                sendmsg::<()>(stream.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&raw)], MsgFlags::MSG_NOSIGNAL, None)
                    .map_err(std::io::Error::from)
            });
            match sent {
                // A short send of a line this small would leave QEMU half a command: say so.
                Ok(n) if n == line.len() => break,
                Ok(n) => return Err(QmpError::Io(std::io::Error::other(format!("getfd: sent {n} of {} bytes", line.len())))),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            }
        }
        self.reply("getfd").await.map(drop)
    }

    /// `query-status` → e.g. "running", "paused", "inmigrate".
    pub async fn status(&mut self) -> Result<String, QmpError> {
        let v = self.execute("query-status", None).await?;
        Ok(v["status"].as_str().unwrap_or("unknown").to_string())
    }
}
