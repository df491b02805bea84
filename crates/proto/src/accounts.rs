//! Wire contracts of users, sign-in, API tokens, quotas and the audit log (`/api/v1/me`,
//! `/api/v1/users`, `/api/v1/tokens`, `/api/v1/audit`, `/api/v1/auth/*`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

/// Limits of one user; `None` is "no limit". A user's own values override their role's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Live sessions (creating, ready or stopping) at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<u32>,
    /// vCPUs summed over the live sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vcpus: Option<u32>,
    /// Guest memory summed over the live sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mib: Option<u32>,
    /// Agent runs started in the last 24 hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_runs_per_day: Option<u32>,
}

impl Quotas {
    /// `self`'s values where set, else `base`'s.
    pub fn over(self, base: Quotas) -> Quotas {
        Quotas {
            max_sessions: self.max_sessions.or(base.max_sessions),
            max_vcpus: self.max_vcpus.or(base.max_vcpus),
            max_memory_mib: self.max_memory_mib.or(base.max_memory_mib),
            agent_runs_per_day: self.agent_runs_per_day.or(base.agent_runs_per_day),
        }
    }
}

/// What a user has in use, against their effective quotas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaUsage {
    pub sessions: u32,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub agent_runs_today: u32,
}

/// A user of this install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    /// `password` (made by an admin) or `oidc` (made at first sign-in).
    pub source: String,
    /// RFC 3339.
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sign_in_at: Option<String>,
    /// The user's own quota values (their role's apply where unset).
    #[serde(default)]
    pub quotas: Quotas,
}

/// `GET /api/v1/me`: who the credential belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    /// `None` for the server token (the bootstrap admin credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    pub role: Role,
    /// True when the server token was used.
    pub bootstrap: bool,
    /// Effective quotas (role defaults with the user's own values on top).
    pub quotas: Quotas,
    pub usage: QuotaUsage,
    /// The port of the server's SSH gateway (`ssh <session-id>@<server host> -p PORT`), when
    /// one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_port: Option<u16>,
}

/// `POST /api/v1/users` (admin).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Default `member`.
    #[serde(default)]
    pub role: Option<Role>,
    /// Sign-in password (at least 10 characters); without one the user signs in with OpenID Connect only.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub quotas: Option<Quotas>,
}

/// `PATCH /api/v1/users/{id}` (admin); absent fields stay.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub password: Option<String>,
    /// Replaces the user's own quota values.
    #[serde(default)]
    pub quotas: Option<Quotas>,
}

/// `POST /api/v1/auth/password`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordLogin {
    pub email: String,
    pub password: String,
}

impl std::fmt::Debug for PasswordLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordLogin").field("email", &self.email).field("password", &"<redacted>").finish()
    }
}

/// `GET /api/v1/auth/providers`: the ways to sign in that the login page offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthProviders {
    /// Users with a password exist or may be made.
    pub password: bool,
    /// "Sign in with <name>", when OpenID Connect is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<String>,
}

/// An API token as listed (the secret is shown once, at creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
}

/// A public key that signs its user in over SSH (`GET /api/v1/me/ssh-keys`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshKey {
    pub id: String,
    pub name: String,
    /// `ssh-ed25519`, `ssh-rsa`, `ecdsa-sha2-nistp256`…
    pub algorithm: String,
    /// `SHA256:<base64>`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    /// The key as registered (`<algorithm> <base64>`, no comment).
    pub public_key: String,
    /// RFC 3339.
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
}

/// `POST /api/v1/me/ssh-keys`: one line of an OpenSSH public key file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddSshKey {
    /// `<algorithm> <base64> [comment]`, e.g. the content of `~/.ssh/id_ed25519.pub`.
    pub public_key: String,
    /// Default: the key's comment, else its algorithm.
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    /// Days until it expires (default 90; at most the server's `max_token_days`).
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

/// The answer to `POST /api/v1/tokens`: the only time `token` is shown.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    pub token: String,
    #[serde(flatten)]
    pub info: ApiToken,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken").field("token", &"<redacted>").field("info", &self.info).finish()
    }
}

/// A saved git token of the user, as listed (the token is never shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedGitCredential {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// RFC 3339.
    pub updated_at: String,
}

/// `PUT /api/v1/me/git-credentials/{host}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaveGitCredential {
    pub token: String,
    #[serde(default)]
    pub username: Option<String>,
}

impl std::fmt::Debug for SaveGitCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaveGitCredential").field("username", &self.username).field("token", &"<redacted>").finish()
    }
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    /// RFC 3339.
    pub at: String,
    /// The acting user's id; absent for the server token and the server itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Who acted, readable: an email, `server token` or `system`.
    pub actor: String,
    /// `sign_in`, `sign_in_failed`, `sign_out`, `token_create`, `token_revoke`, `session_create`,
    /// `session_fork`, `session_delete`, `visibility_change`, `agent_run`, `admin_access`,
    /// `user_create`, `user_update`, `user_delete`, `git_credential_save`, `git_credential_delete`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Action details (never a secret).
    #[serde(default)]
    pub detail: serde_json::Value,
    /// The client's address, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// `GET /api/v1/audit`: one page, newest first; `next_before` continues it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}
