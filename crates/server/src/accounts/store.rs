//! Durable accounts: users, API tokens, browser sign-ins, saved git tokens and the audit log,
//! behind [`AccountStore`] (SQLite in [`crate::store::sqlite_accounts`]). Secrets are stored only
//! hashed (tokens, sign-in cookies) or sealed (git tokens); passwords only as argon2id hashes.

use crate::store::StoreError;
use async_trait::async_trait;
use mayfly_proto::accounts::{Quotas, Role};
use time::OffsetDateTime;

/// One user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    /// Lowercase; unique among users that are not deleted.
    pub email: String,
    pub name: String,
    pub role: Role,
    /// argon2id PHC string; `None`: no password sign-in.
    pub password_hash: Option<String>,
    /// `issuer subject` of the OpenID Connect identity; `None`: made by an admin.
    pub oidc: Option<(String, String)>,
    pub quotas: Quotas,
    pub created_at: OffsetDateTime,
    pub last_sign_in_at: Option<OffsetDateTime>,
}

/// An API token: `id` is public (in the token's text), only `hash` checks the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// SHA-256 of the whole token, hex.
    pub hash: String,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
}

/// A browser sign-in (the `mayfly_session` cookie).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSessionRecord {
    pub id: String,
    /// `None`: signed in with the server token.
    pub user_id: Option<String>,
    pub hash: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// A user's saved git token (sealed with the data dir's key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitCredentialRecord {
    pub user_id: String,
    pub host: String,
    pub username: Option<String>,
    pub sealed_token: String,
    pub updated_at: OffsetDateTime,
}

/// A user's SSH public key. `fingerprint` (SHA-256 of the key blob) is unique: one key signs in
/// one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshKeyRecord {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub algorithm: String,
    /// `SHA256:<base64, no padding>`.
    pub fingerprint: String,
    /// `<algorithm> <base64>`.
    pub public_key: String,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
}

/// One audit entry before it is stored (`seq` is the store's).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub at: OffsetDateTime,
    pub user_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub session: Option<String>,
    pub detail: serde_json::Value,
    pub ip: Option<String>,
}

/// Which audit entries to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub user_id: Option<String>,
    pub action: Option<String>,
    pub session: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    /// Entries with a smaller `seq` only (paging).
    pub before: Option<i64>,
    pub limit: u32,
}

#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Fails with [`StoreError::Duplicate`] when a live user has the email (or the identity).
    async fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    /// Live (not deleted) users only.
    async fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError>;
    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError>;
    async fn user_by_oidc(&self, issuer: &str, subject: &str) -> Result<Option<UserRecord>, StoreError>;
    async fn users(&self) -> Result<Vec<UserRecord>, StoreError>;
    /// Replaces name, role, password hash, quotas and last sign-in of a live user.
    async fn update_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    /// Marks the user deleted and removes their tokens, sign-ins, git tokens and SSH keys, atomically.
    /// False when there was no such live user.
    async fn delete_user(&self, id: &str, at: OffsetDateTime) -> Result<bool, StoreError>;
    /// Email of a user, deleted ones too (for showing owners and audit actors).
    async fn email_of(&self, id: &str) -> Result<Option<String>, StoreError>;

    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError>;
    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;
    async fn tokens_of(&self, user_id: &str) -> Result<Vec<TokenRecord>, StoreError>;
    /// False when the user has no such token.
    async fn delete_token(&self, user_id: &str, id: &str) -> Result<bool, StoreError>;
    async fn touch_token(&self, id: &str, at: OffsetDateTime) -> Result<(), StoreError>;

    async fn insert_web_session(&self, s: &WebSessionRecord) -> Result<(), StoreError>;
    async fn web_session(&self, id: &str) -> Result<Option<WebSessionRecord>, StoreError>;
    async fn delete_web_session(&self, id: &str) -> Result<(), StoreError>;
    /// Removes expired sign-ins; returns how many.
    async fn purge_web_sessions(&self, now: OffsetDateTime) -> Result<u64, StoreError>;

    async fn put_git_credential(&self, c: &GitCredentialRecord) -> Result<(), StoreError>;
    async fn git_credentials(&self, user_id: &str) -> Result<Vec<GitCredentialRecord>, StoreError>;
    async fn delete_git_credential(&self, user_id: &str, host: &str) -> Result<bool, StoreError>;

    /// Fails with [`StoreError::Duplicate`] when the key (its fingerprint) is registered already.
    async fn insert_ssh_key(&self, key: &SshKeyRecord) -> Result<(), StoreError>;
    async fn ssh_keys_of(&self, user_id: &str) -> Result<Vec<SshKeyRecord>, StoreError>;
    async fn ssh_key_by_fingerprint(&self, fingerprint: &str) -> Result<Option<SshKeyRecord>, StoreError>;
    /// False when the user has no such key.
    async fn delete_ssh_key(&self, user_id: &str, id: &str) -> Result<bool, StoreError>;
    async fn touch_ssh_key(&self, id: &str, at: OffsetDateTime) -> Result<(), StoreError>;

    async fn append_audit(&self, entry: &AuditRecord) -> Result<i64, StoreError>;
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<(i64, AuditRecord)>, StoreError>;
}
