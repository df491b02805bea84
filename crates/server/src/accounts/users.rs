//! Users: made by an admin (with a password) or at their first OpenID Connect sign-in; changed
//! and deleted by an admin. Deleting a user revokes their tokens, sign-ins and git tokens here;
//! ending their sessions is the caller's part (it holds the session manager).

use super::store::UserRecord;
use super::{new_user_id, normalize_email, password, AccountError, Accounts, Caller};
use mayfly_proto::accounts::{CreateUser, Role, UpdateUser};
use std::time::Instant;
use time::OffsetDateTime;

/// What an identity provider says about a user who signed in.
#[derive(Debug, Clone)]
pub struct ExternalIdentity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub groups: Vec<String>,
}

impl Accounts {
    pub async fn create_user(&self, by: &Caller, req: CreateUser) -> Result<UserRecord, AccountError> {
        let email = normalize_email(&req.email)?;
        let password_hash = match req.password {
            Some(p) => {
                password::validate(&p).map_err(AccountError::Invalid)?;
                Some(password::hash(p).await.map_err(|e| AccountError::Internal(e.to_string()))?)
            }
            None => None,
        };
        let name = req.name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).unwrap_or_else(|| default_name(&email));
        check_name(&name)?;
        let user = UserRecord {
            id: new_user_id(),
            email,
            name,
            role: req.role.unwrap_or(Role::Member),
            password_hash,
            oidc: None,
            quotas: req.quotas.unwrap_or_default(),
            created_at: OffsetDateTime::now_utc(),
            last_sign_in_at: None,
        };
        self.store.insert_user(&user).await.map_err(conflict)?;
        self.audit(by, "user_create", None, serde_json::json!({"user": user.id, "email": user.email, "role": user.role.as_str()})).await;
        Ok(user)
    }

    pub async fn update_user(&self, by: &Caller, id: &str, req: UpdateUser) -> Result<UserRecord, AccountError> {
        let mut user = self.store.user(id).await?.ok_or_else(|| AccountError::NotFound(format!("user {id}")))?;
        let mut changed = Vec::new();
        if let Some(n) = req.name {
            let n = n.trim().to_string();
            check_name(&n)?;
            user.name = n;
            changed.push("name");
        }
        if let Some(r) = req.role {
            user.role = r;
            changed.push("role");
        }
        if let Some(p) = req.password {
            password::validate(&p).map_err(AccountError::Invalid)?;
            user.password_hash = Some(password::hash(p).await.map_err(|e| AccountError::Internal(e.to_string()))?);
            changed.push("password");
        }
        if let Some(q) = req.quotas {
            user.quotas = q;
            changed.push("quotas");
        }
        self.store.update_user(&user).await?;
        self.audit(by, "user_update", None, serde_json::json!({"user": id, "changed": changed, "role": user.role.as_str(), "quotas": user.quotas})).await;
        Ok(user)
    }

    /// Marks the user deleted and revokes every credential they had.
    pub async fn delete_user(&self, by: &Caller, id: &str) -> Result<UserRecord, AccountError> {
        let user = self.store.user(id).await?.ok_or_else(|| AccountError::NotFound(format!("user {id}")))?;
        if !self.store.delete_user(id, OffsetDateTime::now_utc()).await? {
            return Err(AccountError::NotFound(format!("user {id}")));
        }
        self.audit(by, "user_delete", None, serde_json::json!({"user": id, "email": user.email})).await;
        Ok(user)
    }

    /// Password sign-in: the user, or a refusal that does not tell which part was wrong.
    /// Failures count against the address and the account ([`super::limiter`]).
    pub async fn sign_in_password(&self, email: &str, password_text: String, ip: Option<&str>) -> Result<UserRecord, AccountError> {
        let email = email.trim().to_lowercase();
        let ip_key = format!("ip:{}", ip.unwrap_or("?"));
        let acct_key = format!("acct:{email}");
        let keys = [ip_key.as_str(), acct_key.as_str()];
        if let Err(wait) = self.limiter.check(&keys, Instant::now()) {
            self.audit_as(None, &email, "sign_in_failed", None, serde_json::json!({"method": "password", "reason": "rate limited"}), ip).await;
            return Err(AccountError::RateLimited(wait));
        }
        let user = self.store.user_by_email(&email).await?;
        let hash = user.as_ref().and_then(|u| u.password_hash.clone());
        // The same work whether or not the user exists.
        let ok = password::verify(password_text, hash.clone().unwrap_or_else(|| password::decoy().to_string())).await && hash.is_some();
        match user {
            Some(mut u) if ok => {
                self.limiter.clear(&acct_key);
                u.last_sign_in_at = Some(OffsetDateTime::now_utc());
                self.store.update_user(&u).await?;
                self.audit_as(Some(&u.id), &u.email, "sign_in", None, serde_json::json!({"method": "password"}), ip).await;
                Ok(u)
            }
            _ => {
                self.limiter.failed(&keys, Instant::now());
                self.audit_as(None, &email, "sign_in_failed", None, serde_json::json!({"method": "password", "reason": "wrong email or password"}), ip).await;
                Err(AccountError::BadCredentials)
            }
        }
    }

    /// OpenID Connect sign-in: the user with this identity, made at the first sign-in (or the
    /// password user with the same verified email, who is linked to it). The domain and group
    /// restrictions were applied by [`crate::users::oidc`] before the identity got here.
    pub async fn sign_in_external(&self, id: ExternalIdentity, ip: Option<&str>) -> Result<UserRecord, AccountError> {
        let now = OffsetDateTime::now_utc();
        let admin = id.groups.iter().any(|g| self.settings.oidc_admin_groups.contains(g));
        let existing = match self.store.user_by_oidc(&id.issuer, &id.subject).await? {
            Some(u) => Some(u),
            None => match &id.email {
                Some(e) => self.store.user_by_email(e).await?.filter(|u| u.oidc.is_none()),
                None => None,
            },
        };
        let user = match existing {
            Some(mut u) => {
                u.last_sign_in_at = Some(now);
                if let Some(n) = id.name.clone().filter(|n| !n.trim().is_empty()) {
                    u.name = n;
                }
                if admin {
                    u.role = Role::Admin;
                }
                self.store.update_user(&u).await?;
                u
            }
            None => {
                let email = normalize_email(id.email.as_deref().unwrap_or(""))
                    .map_err(|_| AccountError::Refused("the identity provider did not give an email address".into()))?;
                let u = UserRecord {
                    id: new_user_id(),
                    name: id.name.clone().filter(|n| !n.trim().is_empty()).unwrap_or_else(|| default_name(&email)),
                    email,
                    role: if admin { Role::Admin } else { Role::Member },
                    password_hash: None,
                    oidc: Some((id.issuer.clone(), id.subject.clone())),
                    quotas: Default::default(),
                    created_at: now,
                    last_sign_in_at: Some(now),
                };
                self.store.insert_user(&u).await.map_err(conflict)?;
                u
            }
        };
        self.audit_as(Some(&user.id), &user.email, "sign_in", None, serde_json::json!({"method": "oidc", "issuer": id.issuer}), ip).await;
        Ok(user)
    }
}

fn default_name(email: &str) -> String {
    email.split('@').next().unwrap_or(email).to_string()
}

fn check_name(name: &str) -> Result<(), AccountError> {
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(AccountError::Invalid("a name has 1 to 100 characters and no control characters".into()));
    }
    Ok(())
}

fn conflict(e: crate::store::StoreError) -> AccountError {
    match e {
        crate::store::StoreError::Duplicate(what) => AccountError::Conflict(what),
        other => other.into(),
    }
}
