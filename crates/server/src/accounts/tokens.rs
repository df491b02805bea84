//! API tokens (per user, named, expiring, revocable, shown once) and browser sign-ins (the
//! `mayfly_session` cookie: a new one at every sign-in, ended by sign-out or expiry).

use super::store::{TokenRecord, WebSessionRecord};
use super::{secret, AccountError, Accounts, Caller, Principal};
use mayfly_proto::accounts::{ApiToken, CreateToken, CreatedToken};
use std::time::Duration;
use time::OffsetDateTime;

/// `last_used_at` is written at most this often per token.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

impl Accounts {
    /// The user an API token belongs to, if the token is valid now.
    pub async fn principal_for_token(&self, token: &str) -> Result<Option<Principal>, AccountError> {
        let Some(id) = secret::token_id(token) else { return Ok(None) };
        let Some(t) = self.store.token(id).await? else { return Ok(None) };
        if !secret::matches(token, &t.hash) {
            return Ok(None);
        }
        let now = OffsetDateTime::now_utc();
        if t.expires_at.is_some_and(|e| e <= now) {
            return Ok(None);
        }
        let Some(u) = self.store.user(&t.user_id).await? else { return Ok(None) };
        if t.last_used_at.is_none_or(|l| now - l >= TOUCH_EVERY) {
            self.store.touch_token(&t.id, now).await?;
        }
        Ok(Some(Principal::User { id: u.id, email: u.email, role: u.role }))
    }

    pub async fn create_token(&self, by: &Caller, req: CreateToken) -> Result<CreatedToken, AccountError> {
        let Some(user_id) = by.who.user_id() else {
            return Err(AccountError::Invalid("the server token cannot make API tokens; sign in as a user".into()));
        };
        let name = req.name.trim().to_string();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(AccountError::Invalid("a token name has 1 to 100 characters and no control characters".into()));
        }
        let days = req.expires_in_days.unwrap_or(self.settings.default_token_days);
        if days == 0 || days > self.settings.max_token_days {
            return Err(AccountError::Invalid(format!(
                "expires_in_days must be between 1 and {} (max_token_days)",
                self.settings.max_token_days
            )));
        }
        let (id, token) = secret::new_token();
        let now = OffsetDateTime::now_utc();
        let rec = TokenRecord {
            id,
            user_id: user_id.to_string(),
            name,
            hash: secret::hash(&token),
            created_at: now,
            expires_at: Some(now + Duration::from_secs(u64::from(days) * 86_400)),
            last_used_at: None,
        };
        self.store.insert_token(&rec).await?;
        self.audit(by, "token_create", None, serde_json::json!({"token": rec.id, "name": rec.name, "expires_at": rec.expires_at.map(crate::manager::rfc3339)})).await;
        Ok(CreatedToken { token, info: token_view(&rec) })
    }

    pub async fn tokens(&self, by: &Caller) -> Result<Vec<ApiToken>, AccountError> {
        let Some(user_id) = by.who.user_id() else { return Ok(Vec::new()) };
        Ok(self.store.tokens_of(user_id).await?.iter().map(token_view).collect())
    }

    pub async fn revoke_token(&self, by: &Caller, id: &str) -> Result<(), AccountError> {
        let removed = match by.who.user_id() {
            Some(user_id) => self.store.delete_token(user_id, id).await?,
            None => false,
        };
        if !removed {
            return Err(AccountError::NotFound(format!("token {id}")));
        }
        self.audit(by, "token_revoke", None, serde_json::json!({"token": id})).await;
        Ok(())
    }

    /// Starts a browser sign-in for `user_id` (`None`: the server token); the cookie's value.
    pub async fn start_sign_in(&self, user_id: Option<&str>) -> Result<String, AccountError> {
        let (id, value) = secret::new_cookie();
        let now = OffsetDateTime::now_utc();
        let rec = WebSessionRecord {
            id,
            user_id: user_id.map(str::to_string),
            hash: secret::hash(&value),
            created_at: now,
            expires_at: now + self.settings.sign_in_ttl,
        };
        self.store.insert_web_session(&rec).await?;
        // Expired sign-ins go now and then (here: cheap, indexed by primary key scan).
        let _ = self.store.purge_web_sessions(now).await;
        Ok(value)
    }

    /// Who a sign-in cookie belongs to, if it is valid now.
    pub async fn principal_for_cookie(&self, value: &str) -> Result<Option<Principal>, AccountError> {
        let Some(id) = secret::cookie_id(value) else { return Ok(None) };
        let Some(s) = self.store.web_session(id).await? else { return Ok(None) };
        if !secret::matches(value, &s.hash) || s.expires_at <= OffsetDateTime::now_utc() {
            return Ok(None);
        }
        match s.user_id {
            None => Ok(Some(Principal::ServerToken)),
            Some(uid) => Ok(self.store.user(&uid).await?.map(|u| Principal::User { id: u.id, email: u.email, role: u.role })),
        }
    }

    /// Ends the sign-in of a cookie value (sign-out); unknown values are ignored.
    pub async fn end_sign_in(&self, value: &str) -> Result<(), AccountError> {
        if let Some(id) = secret::cookie_id(value) {
            if let Some(s) = self.store.web_session(id).await? {
                if secret::matches(value, &s.hash) {
                    self.store.delete_web_session(id).await?;
                }
            }
        }
        Ok(())
    }
}

fn token_view(t: &TokenRecord) -> ApiToken {
    ApiToken {
        id: t.id.clone(),
        name: t.name.clone(),
        created_at: crate::manager::rfc3339(t.created_at),
        expires_at: t.expires_at.map(crate::manager::rfc3339),
        last_used_at: t.last_used_at.map(crate::manager::rfc3339),
    }
}
