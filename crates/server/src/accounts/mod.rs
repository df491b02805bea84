//! Users and credentials: who a request comes from ([`Principal`]), and the account operations
//! (users, API tokens, browser sign-ins, saved git tokens, the audit log) behind
//! [`Accounts`]. Doors (HTTP, previews, later SSH and E2B) turn a credential into a
//! [`Caller`] here; what that caller may do with a session is decided in [`crate::access`].
//!
//! * [`store`] — [`store::AccountStore`], the durable side.
//! * [`secret`] — the shape, generation and hashing of tokens and sign-in cookies.
//! * [`password`] — argon2id.
//! * [`limiter`] — failed sign-in attempts per address and account.
//! * [`users`] — creating, changing and deleting users; sign-in by password or OpenID Connect.
//! * [`tokens`] — API tokens and browser sign-ins.
//! * [`audit`] — the audit log.
//! * [`git`] — saved git tokens.
//! * [`ssh_keys`] — SSH public keys (the SSH door signs users in with them).

pub mod audit;
pub mod git;
pub mod limiter;
pub mod password;
pub mod secret;
pub mod ssh_keys;
pub mod store;
pub mod tokens;
pub mod users;

use crate::secrets::Secrets;
use mayfly_proto::accounts::{Quotas, Role, User};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::{AccountStore, UserRecord};

/// Who acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A signed-in user or one of their API tokens.
    User { id: String, email: String, role: Role },
    /// The server token: the bootstrap admin credential of wave 1 installs.
    ServerToken,
    /// The server itself (reaper, pool, agent tools); the name says which part.
    System(&'static str),
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        match self {
            Principal::User { role, .. } => *role == Role::Admin,
            Principal::ServerToken | Principal::System(_) => true,
        }
    }

    pub fn role(&self) -> Role {
        if self.is_admin() {
            Role::Admin
        } else {
            Role::Member
        }
    }

    pub fn user_id(&self) -> Option<&str> {
        match self {
            Principal::User { id, .. } => Some(id),
            _ => None,
        }
    }

    /// Readable, for logs and the audit log.
    pub fn label(&self) -> String {
        match self {
            Principal::User { email, .. } => email.clone(),
            Principal::ServerToken => "server token".into(),
            Principal::System(part) => format!("system ({part})"),
        }
    }
}

/// A principal and where its request came from.
#[derive(Debug, Clone)]
pub struct Caller {
    pub who: Principal,
    pub ip: Option<String>,
}

impl Caller {
    pub fn system(part: &'static str) -> Caller {
        Caller { who: Principal::System(part), ip: None }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Conflict(String),
    /// Wrong credentials; the message never says which part was wrong.
    #[error("wrong email or password")]
    BadCredentials,
    #[error("too many failed sign-in attempts; try again in {} s", .0.as_secs())]
    RateLimited(Duration),
    /// Sign-in refused by policy (OpenID Connect restrictions); the message says why.
    #[error("{0}")]
    Refused(String),
    #[error("only an admin may do this")]
    Forbidden,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Internal(String),
}

/// Settings of accounts (from [`crate::config::ServerConfig`]).
#[derive(Debug, Clone)]
pub struct AccountSettings {
    pub sign_in_ttl: Duration,
    pub default_token_days: u32,
    pub max_token_days: u32,
    pub member_quotas: Quotas,
    pub admin_quotas: Quotas,
    /// Failed sign-ins allowed per address and per account within `failure_window`.
    pub max_failures: usize,
    pub failure_window: Duration,
    /// Members of these groups are made admins at sign-in.
    pub oidc_admin_groups: Vec<String>,
}

impl Default for AccountSettings {
    fn default() -> Self {
        Self {
            sign_in_ttl: Duration::from_secs(24 * 3600),
            default_token_days: 90,
            max_token_days: 365,
            member_quotas: Quotas::default(),
            admin_quotas: Quotas::default(),
            max_failures: 10,
            failure_window: Duration::from_secs(300),
            oidc_admin_groups: Vec::new(),
        }
    }
}

/// The account service.
pub struct Accounts {
    store: Arc<dyn AccountStore>,
    settings: AccountSettings,
    secrets: Arc<Secrets>,
    limiter: limiter::FailureLimiter,
    /// Failed token sign-ins (`POST /api/v1/login`) per address.
    token_limiter: limiter::FailureLimiter,
    /// When an admin last had access to someone else's session audited: (admin, session).
    admin_seen: Mutex<HashMap<(String, String), Instant>>,
}

impl Accounts {
    pub fn new(store: Arc<dyn AccountStore>, settings: AccountSettings, secrets: Arc<Secrets>) -> Arc<Self> {
        let limiter = limiter::FailureLimiter::new(settings.max_failures, settings.failure_window);
        let token_limiter = limiter::FailureLimiter::new(settings.max_failures, settings.failure_window);
        Arc::new(Self { store, settings, secrets, limiter, token_limiter, admin_seen: Mutex::new(HashMap::new()) })
    }

    pub fn token_limiter(&self) -> &limiter::FailureLimiter {
        &self.token_limiter
    }

    pub fn settings(&self) -> &AccountSettings {
        &self.settings
    }

    pub fn store(&self) -> &Arc<dyn AccountStore> {
        &self.store
    }

    /// The quotas that apply to `who` (`None`: no quotas, for the server token and the server).
    pub async fn quotas_of(&self, who: &Principal) -> Result<Option<Quotas>, AccountError> {
        let Principal::User { id, .. } = who else { return Ok(None) };
        let Some(u) = self.store.user(id).await? else { return Ok(Some(self.settings.member_quotas)) };
        Ok(Some(self.effective_quotas(&u)))
    }

    pub fn effective_quotas(&self, u: &UserRecord) -> Quotas {
        let base = match u.role {
            Role::Admin => self.settings.admin_quotas,
            Role::Member => self.settings.member_quotas,
        };
        u.quotas.over(base)
    }

    /// The email of user `id` (deleted users too), for showing owners.
    pub async fn email_of(&self, id: &str) -> Option<String> {
        self.store.email_of(id).await.ok().flatten()
    }
}

/// A user as the API shows it.
pub fn user_view(u: &UserRecord) -> User {
    User {
        id: u.id.clone(),
        email: u.email.clone(),
        name: u.name.clone(),
        role: u.role,
        source: if u.oidc.is_some() { "oidc".into() } else { "password".into() },
        created_at: crate::manager::rfc3339(u.created_at),
        last_sign_in_at: u.last_sign_in_at.map(crate::manager::rfc3339),
        quotas: u.quotas,
    }
}

/// A user id: `u` + 11 random base32 characters.
pub fn new_user_id() -> String {
    format!("u{}", secret::random(11))
}

/// Emails are compared in lowercase, without surrounding space.
pub fn normalize_email(email: &str) -> Result<String, AccountError> {
    let e = email.trim().to_lowercase();
    let valid = e.len() <= 254
        && e.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.') && !domain.starts_with('.'))
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if !valid {
        return Err(AccountError::Invalid(format!("{email:?} is not an email address")));
    }
    Ok(e)
}
