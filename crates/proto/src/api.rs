//! REST DTOs of the public API (`/api/v1`), shared by the server and the CLI.
//! The contract is documented in docs/API.md and served as OpenAPI at `/api/v1/openapi.json`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Creating,
    Ready,
    Stopping,
    Destroyed,
    Failed,
    /// Its node stopped renewing its lease (crashed, cut off or switched off): the session may
    /// still run there. The node re-adopts it when it comes back (→ `ready`) or fails it; a
    /// delete ends it from any node.
    Lost,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Ready => "ready",
            Self::Stopping => "stopping",
            Self::Destroyed => "destroyed",
            Self::Failed => "failed",
            Self::Lost => "lost",
        }
    }
    /// True once nothing runs for the session any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Destroyed | Self::Failed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    #[serde(default)]
    pub idle_timeout_seconds: Option<u64>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Network policy; default: the server's `egress` settings.
    #[serde(default)]
    pub network: Option<Network>,
    /// A repository cloned into the workspace once the VM is ready.
    #[serde(default)]
    pub repo: Option<RepoSpec>,
    /// Git tokens for this session, handed to git in the VM on demand (never stored).
    #[serde(default)]
    pub git_credentials: Vec<GitCredential>,
    /// Push the work (commits, changes, new files) to `mayfly/<session>` on `origin` when the
    /// session is deleted or reaped; default: the server's `auto_push`.
    #[serde(default)]
    pub auto_push: Option<bool>,
    /// vCPUs of the VM; default: the image's (or the server's `vm_vcpus`). At most `max_vcpus`.
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// Guest RAM in MiB; default: the image's (or `vm_memory_mib`). At most `max_memory_mib`.
    #[serde(default)]
    pub memory_mib: Option<u32>,
    /// Disk size in GiB; default: the image's. At least the image's, at most `max_disk_gib`.
    #[serde(default)]
    pub disk_gib: Option<u32>,
    /// Free-form key/value labels kept with the session (at most 64; keys 1–64 characters,
    /// values up to 512); shown in `Session.labels`. The E2B door keeps a sandbox's metadata here.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The size of a session's VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSize {
    pub vcpus: u32,
    pub memory_mib: u32,
    pub disk_gib: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoSpec {
    /// `https://` or `http://` URL, without credentials in it.
    pub url: String,
    /// Branch, tag or commit; default: the remote's default branch.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
}

/// A token for one git host. Its `token` is write-only: never shown by the API.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitCredential {
    /// Host as git names it: `github.com`, or `host:port` for a non-default port.
    pub host: String,
    /// Default `x-access-token` (GitHub's convention; most servers ignore the user name).
    #[serde(default)]
    pub username: Option<String>,
    pub token: String,
}

impl std::fmt::Debug for GitCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitCredential").field("host", &self.host).field("username", &self.username).field("token", &"<redacted>").finish()
    }
}

/// Where the session's repository stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoStatus {
    pub url: String,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// Directory in the VM.
    pub path: String,
    pub state: RepoState,
    /// Latest progress line while cloning; git's error when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepoState {
    Cloning,
    Ready,
    Failed,
}

/// What a session's VM may connect to. The VM has no network device: programs reach the
/// network only through the egress proxy inside the guest (`http_proxy`/`https_proxy`), and the
/// host decides per connection. The host's own addresses, loopback and private ranges are never
/// reachable, whatever the mode, unless the operator lists them in `egress_private_allow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub egress: EgressMode,
    /// `allowlist` entries: `host`, `*.domain`, `IP` or `CIDR`, each optionally `:port`
    /// (`[v6]:port` for IPv6); without a port, 80 and 443.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EgressMode {
    /// No outbound connections at all.
    None,
    /// Only the `allow` entries.
    Allowlist,
    /// The public internet.
    #[default]
    Open,
}

impl EgressMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Allowlist => "allowlist",
            Self::Open => "open",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub state: SessionState,
    pub image: String,
    /// RFC 3339.
    pub created_at: String,
    pub expires_at: String,
    pub idle_timeout_seconds: u64,
    pub ide_url: String,
    pub network: Network,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<RepoStatus>,
    /// Hosts this session has git tokens for (the tokens themselves are never shown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub git_credential_hosts: Vec<String>,
    /// The repository's work is pushed to `mayfly/<session>` when the session ends.
    #[serde(default)]
    pub auto_push: bool,
    /// Why the session failed (state `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The VM's size (absent for sessions stored before sizes were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_gib: Option<u32>,
    /// Caps of the VM's QEMU besides its size (server-wide settings): tasks (`vm_pids_max`),
    /// disk bandwidth in MiB/s and disk operations per second (`vm_disk_mib_per_second`,
    /// `vm_disk_iops`); absent when not capped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_processes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mib_per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_iops: Option<u32>,
    /// The session this one was forked from (while it is live).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<String>,
    /// The VM is paused because nobody used it for a while (state stays `ready`); the next
    /// request of any kind resumes it.
    #[serde(default)]
    pub paused: bool,
    /// The user who created the session (absent: made with the server token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The owner's email, shown to admins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_email: Option<String>,
    /// The labels it was created with (a fork has its source's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The node whose VM runs it (absent for sessions stored before nodes were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// `POST /api/v1/sessions/{id}/fork`: the new session's lifetime (defaults as for a create).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkSession {
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    #[serde(default)]
    pub idle_timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    pub cmd: Vec<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default)]
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    #[serde(default)]
    pub truncated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// The session's owner (and admins).
    Private,
    /// Any signed-in user of this install.
    Team,
    /// Anyone with the URL.
    Public,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub port: u16,
    pub url: String,
    pub visibility: Visibility,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchPort {
    pub visibility: Visibility,
}

/// `{"error":{"code":"not_found","message":"..."}}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// One item of the events stream (`/sessions/{id}/events`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SessionEvent {
    State {
        session: String,
        from: Option<SessionState>,
        to: SessionState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        at: String,
    },
    PortOpened { session: String, port: Port },
    PortClosed { session: String, port: u16 },
    /// A path in the session's workspace changed (created from a terminal, saved, deleted…).
    /// `from` is the old path of a rename. A `modified` event on the workspace root means
    /// "too much changed to tell": rescan.
    FileChanged {
        session: String,
        path: String,
        kind: FileChangeKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
    },
    /// The repository clone started, progressed, finished or failed.
    Repo { session: String, repo: RepoStatus },
    /// The session's end pushed its work to `branch` (the commit `sha`), or could not (`error`,
    /// git's words); the session is deleted either way.
    RepoPush {
        session: String,
        branch: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A coding-agent run changed status (`running` first, then one final status).
    AgentStatus {
        session: String,
        run: String,
        status: AgentRunStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        summary: Option<String>,
    },
    /// A piece of the agent's reply, as the model streams it.
    AgentText { session: String, run: String, delta: String },
    /// The agent called a tool; `arguments` is the model's raw JSON text.
    AgentToolCall { session: String, run: String, call_id: String, name: String, arguments: String },
    /// A tool call's result (as the model sees it, truncated). `paths` are files the call
    /// wrote, for editors to reload.
    AgentToolResult {
        session: String,
        run: String,
        call_id: String,
        name: String,
        output: String,
        is_error: bool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        paths: Vec<String>,
    },
    /// A model request failed and is retried after `delay_ms`.
    AgentRetry { session: String, run: String, attempt: u32, delay_ms: u64, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileChangeKind {
    Created,
    Modified,
    Deleted,
    Renamed,
}

/// `POST /api/v1/sessions/{id}/files/rename`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenamePath {
    pub from: String,
    pub to: String,
}

/// Text control frame on the PTY WebSocket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PtyControl {
    Resize { cols: u16, rows: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub token: String,
}

/// Text frame the server sends on the PTY WebSocket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PtyNotice {
    /// The terminal's process ended; the server closes the socket next.
    Exit {
        code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
    },
    /// A control frame was refused, or the terminal stream failed.
    Error { message: String },
}

/// One built image (`GET /api/v1/images`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub name: String,
    pub description: String,
    /// RFC 3339.
    pub built_at: String,
    /// Bytes on disk (kernel, initrd, base disk).
    pub size_bytes: u64,
}

/// Status of a coding-agent run: `running`, then exactly one of the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentRunStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// The server stopped (or crashed) during the run; the session itself goes on.
    Interrupted,
}

impl AgentRunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
        }
    }
    pub fn is_final(self) -> bool {
        self != Self::Running
    }
}

/// `POST /api/v1/sessions/{id}/agent/runs`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartAgentRun {
    pub prompt: String,
}

/// One coding-agent run of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRun {
    pub id: String,
    pub session: String,
    pub status: AgentRunStatus,
    pub prompt: String,
    /// RFC 3339.
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The agent's closing summary (succeeded runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Why the run failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub steps: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
}
