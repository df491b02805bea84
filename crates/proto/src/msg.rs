//! Typed messages carried as JSON inside OPEN, CTRL and HELLO frames.
//!
//! Every stream starts with one [`OpenRequest`] from the host. What follows depends on the op:
//!
//! | op | host → guest | guest → host |
//! |---|---|---|
//! | `exec` | DATA (stdin), EOF, CTRL `signal` | CTRL `started`, DATA fd 0/1, CTRL `exit`, EOF |
//! | `pty` | DATA (keys), CTRL `resize`/`signal` | CTRL `started`, DATA (screen), CTRL `exit`, EOF |
//! | `stat`/`list`/`mkdir`/`rename`/`remove`/`info`/`identity` | — | CTRL reply, EOF |
//! | `read_file` | — | CTRL `file` (metadata), DATA…, EOF |
//! | `write_file` | DATA…, EOF | CTRL `ok` |
//! | `watch_ports` | — | CTRL `ports` (full set) on every change |
//! | `watch_files` | — | CTRL `ok` once watching, then CTRL `file_events` batches (~100 ms apart) |
//! | `tunnel` | DATA, EOF | CTRL `connected`, DATA, EOF |
//! | `agent_listen` | (EOF or reset ends it) | CTRL `ok` once the socket listens; guest opens `agent_connect` per client |
//! | `agent_connect` (guest → host) | CTRL `connected`, DATA, EOF | DATA, EOF |
//!
//! `list` may answer with several CTRL `list` messages before its EOF (a frame carries at most
//! 64 KiB); the host concatenates their entries.
//!
//! Any failure is a CTRL `error` followed by EOF (or a RESET with a reason).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// First frame of every connection, sent by both ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    /// Software version of the sender (crate version).
    pub version: String,
    /// `host` or `guest`.
    pub role: String,
    /// True when this HELLO answers the peer's. A HELLO with `ack: false` arriving on a live
    /// connection means the peer restarted: every open stream is reset and an ack is sent back.
    #[serde(default)]
    pub ack: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// Kill the process (group) after this many milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PtyRequest {
    /// Client-chosen terminal id. Opening an existing id re-attaches to it and replays its
    /// scrollback; the shell keeps running while nobody is attached.
    #[serde(default)]
    pub terminal: Option<String>,
    pub cols: u16,
    pub rows: u16,
    /// Command to run; default is the user's login shell.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OpenRequest {
    Exec(ExecRequest),
    Pty(PtyRequest),
    Stat {
        path: String,
    },
    List {
        path: String,
    },
    ReadFile {
        path: String,
    },
    WriteFile {
        path: String,
        #[serde(default)]
        mode: Option<u32>,
    },
    Mkdir {
        path: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Remove {
        path: String,
        #[serde(default)]
        recursive: bool,
    },
    WatchPorts,
    /// Watch a directory tree for file changes (recursive, with a cap on watched directories).
    WatchFiles {
        path: String,
    },
    Tunnel {
        port: u16,
    },
    Info,
    /// Refresh per-VM identity after a clone: clock, RNG seed, hostname, machine id.
    Identity(Identity),
    /// Start a login shell nobody is attached to yet; the next terminal opened with the default
    /// command, cwd and environment adopts it (its prompt is already in the scrollback).
    /// Answers `ok` once the shell printed its first output.
    ///
    /// `parked`: the shell runs its start-up files, then waits before its first prompt (bash
    /// only; answers `ok` once it waits). It is made in a template, so every clone's first
    /// terminal adopts a shell that has started already: adopting it hands the shell the
    /// clone's host name, then it prints its prompt. A later non-parked request (a pool clone
    /// being named) releases a parked spare instead of starting another.
    SpareShell {
        cols: u16,
        rows: u16,
        #[serde(default)]
        parked: bool,
    },
    /// Guest → host: an outbound TCP connection to `host:port` for a program in the VM (the
    /// guest's egress proxy). The host applies the session's egress policy, then answers
    /// `connected` and relays bytes, or `error` (`permission_denied` when the policy refuses).
    Egress {
        host: String,
        port: u16,
    },
    /// Guest → host: git asks for a credential (git's credential helper protocol fields). The
    /// host answers `credential` from the session's tokens for exactly that host, or
    /// `not_found`. Nothing is stored in the guest: every git operation asks again.
    Credential {
        protocol: String,
        host: String,
        #[serde(default)]
        path: Option<String>,
    },
    /// SSH agent forwarding: listen on the Unix socket [`agent_socket_path`]`(id)` (in a
    /// directory only root can enter) while this stream lives; each client of it becomes an
    /// `agent_connect` stream to the host. The socket is removed when the stream ends.
    AgentListen {
        id: String,
    },
    /// Guest → host: a program connected to the agent socket of `agent_listen` `id`. The host
    /// answers `connected` and relays bytes to the SSH client's agent, or `error`. The agent's
    /// keys never enter the VM: only its requests and signatures pass.
    AgentConnect {
        id: String,
    },
}

/// True for an `agent_listen` id (a path component): 1 to 32 of `[a-z0-9]`.
pub fn valid_agent_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Where the guest listens for `agent_listen` `id` (what `SSH_AUTH_SOCK` is set to).
pub fn agent_socket_path(id: &str) -> String {
    format!("/run/mayfly/agent/{id}/agent.sock")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Identity {
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub machine_id: Option<String>,
    /// Wall clock to set, nanoseconds since the Unix epoch.
    #[serde(default)]
    pub unix_time_ns: Option<u64>,
    /// Hex-encoded entropy to credit to the kernel RNG.
    #[serde(default)]
    pub rng_seed_hex: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    pub name: String,
    pub path: String,
    #[serde(rename = "type")]
    pub kind: FileType,
    pub size: u64,
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub modified: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ListenPort {
    pub port: u16,
    /// True when bound to an IPv6 socket.
    pub ipv6: bool,
    /// True when bound only to a loopback address.
    pub loopback: bool,
}

/// What happened to a path, as seen by `watch_files`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileEventKind {
    Created,
    Modified,
    Deleted,
    /// Moved within the watched tree: `path` is the new name, `from` the old one.
    Renamed,
}

/// One change under a watched tree. A `modified` event on the watched root itself means
/// "too much changed to tell" (queue overflow, a huge batch): rescan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEvent {
    pub path: String,
    pub kind: FileEventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestInfo {
    pub version: String,
    pub protocol: u32,
    pub hostname: String,
    pub kernel: String,
    pub uptime_ms: u64,
}

/// Error kinds a guest reports; mapped to HTTP statuses by the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    PermissionDenied,
    AlreadyExists,
    InvalidInput,
    NotADirectory,
    IsADirectory,
    ConnectionRefused,
    Io,
    Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Ctrl {
    // guest → host
    Started {
        pid: u32,
    },
    Exit {
        code: Option<i32>,
        signal: Option<i32>,
        #[serde(default)]
        timed_out: bool,
    },
    Ok,
    /// On the wire `{"type":"stat","info":{…}}`: inlined, FileInfo's own `type` field would
    /// collide with this enum's tag and the message could not be decoded.
    Stat(#[serde(with = "stat_wire")] FileInfo),
    List {
        entries: Vec<FileInfo>,
    },
    File {
        size: u64,
        mode: u32,
    },
    Ports {
        ports: Vec<ListenPort>,
    },
    FileEvents {
        events: Vec<FileEvent>,
    },
    Connected,
    Credential {
        username: String,
        password: String,
    },
    Info(GuestInfo),
    Error {
        kind: ErrorKind,
        message: String,
    },
    // host → guest
    Resize {
        cols: u16,
        rows: u16,
    },
    Signal {
        signal: i32,
    },
}

mod stat_wire {
    use super::FileInfo;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Wire<T> {
        info: T,
    }

    pub fn serialize<S: Serializer>(info: &FileInfo, s: S) -> Result<S::Ok, S::Error> {
        Wire { info }.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<FileInfo, D::Error> {
        Ok(Wire::<FileInfo>::deserialize(d)?.info)
    }
}

impl Ctrl {
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Ctrl::Error { kind, message: message.into() }
    }

    /// Maps an I/O error to a guest error message, prefixed with `context` (e.g. the path).
    pub fn io_error(context: &str, e: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match e.kind() {
            K::NotFound => ErrorKind::NotFound,
            K::PermissionDenied => ErrorKind::PermissionDenied,
            K::AlreadyExists => ErrorKind::AlreadyExists,
            K::InvalidInput | K::InvalidData => ErrorKind::InvalidInput,
            K::ConnectionRefused => ErrorKind::ConnectionRefused,
            K::NotADirectory => ErrorKind::NotADirectory,
            K::IsADirectory => ErrorKind::IsADirectory,
            _ => ErrorKind::Io,
        };
        Ctrl::Error { kind, message: format!("{context}: {e}") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_requests_have_stable_json() {
        let cases = [
            (
                OpenRequest::Exec(ExecRequest { cmd: vec!["true".into()], ..Default::default() }),
                r#"{"op":"exec","cmd":["true"],"env":{},"cwd":null,"timeout_ms":null}"#,
            ),
            (OpenRequest::Tunnel { port: 8000 }, r#"{"op":"tunnel","port":8000}"#),
            (OpenRequest::WatchPorts, r#"{"op":"watch_ports"}"#),
            (OpenRequest::WatchFiles { path: "/root".into() }, r#"{"op":"watch_files","path":"/root"}"#),
        ];
        for (req, json) in cases {
            assert_eq!(serde_json::to_string(&req).unwrap(), json);
            assert_eq!(serde_json::from_str::<OpenRequest>(json).unwrap(), req);
        }
    }

    #[test]
    fn unknown_op_is_an_error() {
        assert!(serde_json::from_str::<OpenRequest>(r#"{"op":"format_disk"}"#).is_err());
        assert!(serde_json::from_str::<Ctrl>(r#"{"type":"started"}"#).is_err(), "missing fields");
    }

    #[test]
    fn ctrl_round_trip() {
        let c = Ctrl::Exit { code: Some(3), signal: None, timed_out: false };
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Ctrl>(&s).unwrap(), c);
        let stat = Ctrl::Stat(FileInfo {
            name: "a".into(),
            path: "/a".into(),
            kind: FileType::File,
            size: 1,
            mode: 0o644,
            modified: 2,
        });
        let s = serde_json::to_string(&stat).unwrap();
        assert_eq!(serde_json::from_str::<Ctrl>(&s).unwrap(), stat, "{s}");
        let fe = Ctrl::FileEvents {
            events: vec![FileEvent { path: "/r/b".into(), kind: FileEventKind::Renamed, from: Some("/r/a".into()) }],
        };
        let s = serde_json::to_string(&fe).unwrap();
        assert_eq!(s, r#"{"type":"file_events","events":[{"path":"/r/b","kind":"renamed","from":"/r/a"}]}"#);
        assert_eq!(serde_json::from_str::<Ctrl>(&s).unwrap(), fe);
        let e = Ctrl::io_error("/nope", &std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(matches!(e, Ctrl::Error { kind: ErrorKind::NotFound, .. }));
    }
}
