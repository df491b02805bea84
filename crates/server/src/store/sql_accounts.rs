//! The SQL implementation of [`AccountStore`] (SQLite or PostgreSQL), in the sessions database. Queries use numbered
//! parameters (`$1`), which PostgreSQL reads the same way, and name their columns (never `*`,
//! which breaks pooled connections across a migration that adds one).

use super::sql::{backend, from_ms, ms, SqlStore};
use super::StoreError;
use crate::accounts::store::{
    AccountStore, AuditFilter, AuditRecord, GitCredentialRecord, SshKeyRecord, TokenRecord, UserRecord, WebSessionRecord,
};
use async_trait::async_trait;
use mayfly_proto::accounts::{Quotas, Role};
use sqlx::any::AnyRow;
use sqlx::Row;
use time::OffsetDateTime;


const SSH_KEY_COLUMNS: &str = "id, user_id, name, algorithm, fingerprint, public_key, created_at, last_used_at";

fn ssh_key(row: &AnyRow) -> Result<SshKeyRecord, StoreError> {
    Ok(SshKeyRecord {
        id: row.get("id"),
        user_id: row.get("user_id"),
        name: row.get("name"),
        algorithm: row.get("algorithm"),
        fingerprint: row.get("fingerprint"),
        public_key: row.get("public_key"),
        created_at: from_ms(row.get("created_at"))?,
        last_used_at: row.get::<Option<i64>, _>("last_used_at").map(from_ms).transpose()?,
    })
}

const USER_COLUMNS: &str =
    "id, email, name, role, password_hash, oidc_issuer, oidc_subject, quotas, created_at, last_sign_in_at";

fn user(row: &AnyRow) -> Result<UserRecord, StoreError> {
    let role: &str = row.get("role");
    let quotas: &str = row.get("quotas");
    let oidc = match (row.get::<Option<String>, _>("oidc_issuer"), row.get::<Option<String>, _>("oidc_subject")) {
        (Some(i), Some(s)) => Some((i, s)),
        _ => None,
    };
    Ok(UserRecord {
        id: row.get("id"),
        email: row.get("email"),
        name: row.get("name"),
        role: Role::parse(role).ok_or_else(|| StoreError::Corrupt { what: "role", value: role.to_string() })?,
        password_hash: row.get("password_hash"),
        oidc,
        quotas: serde_json::from_str::<Quotas>(quotas)
            .map_err(|_| StoreError::Corrupt { what: "quotas", value: quotas.to_string() })?,
        created_at: from_ms(row.get("created_at"))?,
        last_sign_in_at: row.get::<Option<i64>, _>("last_sign_in_at").map(from_ms).transpose()?,
    })
}

fn token(row: &AnyRow) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: row.get("id"),
        user_id: row.get("user_id"),
        name: row.get("name"),
        hash: row.get("hash"),
        created_at: from_ms(row.get("created_at"))?,
        expires_at: row.get::<Option<i64>, _>("expires_at").map(from_ms).transpose()?,
        last_used_at: row.get::<Option<i64>, _>("last_used_at").map(from_ms).transpose()?,
    })
}

fn duplicate_or(what: String, op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Duplicate(what),
        _ => backend(op)(e),
    }
}

fn quotas_json(q: &Quotas) -> String {
    serde_json::to_string(q).expect("quotas serialise")
}

#[async_trait]
impl AccountStore for SqlStore {
    async fn insert_user(&self, u: &UserRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (id, email, name, role, password_hash, oidc_issuer, oidc_subject, quotas, created_at, last_sign_in_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&u.id)
        .bind(&u.email)
        .bind(&u.name)
        .bind(u.role.as_str())
        .bind(&u.password_hash)
        .bind(u.oidc.as_ref().map(|o| o.0.as_str()))
        .bind(u.oidc.as_ref().map(|o| o.1.as_str()))
        .bind(quotas_json(&u.quotas))
        .bind(ms(u.created_at))
        .bind(u.last_sign_in_at.map(ms))
        .execute(self.pool())
        .await
        .map_err(duplicate_or(format!("a user with email {}", u.email), "inserting a user"))?;
        Ok(())
    }

    async fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1 AND deleted_at IS NULL"))
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(backend("reading a user"))?;
        row.as_ref().map(user).transpose()
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1 AND deleted_at IS NULL"))
            .bind(email)
            .fetch_optional(self.pool())
            .await
            .map_err(backend("reading a user"))?;
        row.as_ref().map(user).transpose()
    }

    async fn user_by_oidc(&self, issuer: &str, subject: &str) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE oidc_issuer = $1 AND oidc_subject = $2 AND deleted_at IS NULL"
        ))
        .bind(issuer)
        .bind(subject)
        .fetch_optional(self.pool())
        .await
        .map_err(backend("reading a user"))?;
        row.as_ref().map(user).transpose()
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE deleted_at IS NULL ORDER BY created_at, id"))
            .fetch_all(self.pool())
            .await
            .map_err(backend("listing users"))?;
        rows.iter().map(user).collect()
    }

    async fn update_user(&self, u: &UserRecord) -> Result<(), StoreError> {
        let res = sqlx::query(
            "UPDATE users SET name = $1, role = $2, password_hash = $3, quotas = $4, last_sign_in_at = $5, email = $6
             WHERE id = $7 AND deleted_at IS NULL",
        )
        .bind(&u.name)
        .bind(u.role.as_str())
        .bind(&u.password_hash)
        .bind(quotas_json(&u.quotas))
        .bind(u.last_sign_in_at.map(ms))
        .bind(&u.email)
        .bind(&u.id)
        .execute(self.pool())
        .await
        .map_err(duplicate_or(format!("a user with email {}", u.email), "updating a user"))?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound(u.id.clone()));
        }
        Ok(())
    }

    async fn delete_user(&self, id: &str, at: OffsetDateTime) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await.map_err(backend("begin"))?;
        let res = sqlx::query("UPDATE users SET deleted_at = $1, password_hash = NULL WHERE id = $2 AND deleted_at IS NULL")
            .bind(ms(at))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend("deleting a user"))?;
        if res.rows_affected() == 0 {
            return Ok(false);
        }
        for table in ["api_tokens", "web_sessions", "user_git_credentials", "ssh_keys"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1"))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(backend("deleting a user's credentials"))?;
        }
        tx.commit().await.map_err(backend("commit"))?;
        Ok(true)
    }

    async fn email_of(&self, id: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(backend("reading a user"))
    }

    async fn insert_token(&self, t: &TokenRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, user_id, name, hash, created_at, expires_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&t.id)
        .bind(&t.user_id)
        .bind(&t.name)
        .bind(&t.hash)
        .bind(ms(t.created_at))
        .bind(t.expires_at.map(ms))
        .bind(t.last_used_at.map(ms))
        .execute(self.pool())
        .await
        .map_err(duplicate_or(format!("token {}", t.id), "inserting a token"))?;
        Ok(())
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query("SELECT id, user_id, name, hash, created_at, expires_at, last_used_at FROM api_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(backend("reading a token"))?;
        row.as_ref().map(token).transpose()
    }

    async fn tokens_of(&self, user_id: &str) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = sqlx::query("SELECT id, user_id, name, hash, created_at, expires_at, last_used_at FROM api_tokens WHERE user_id = $1 ORDER BY created_at, id")
            .bind(user_id)
            .fetch_all(self.pool())
            .await
            .map_err(backend("listing tokens"))?;
        rows.iter().map(token).collect()
    }

    async fn delete_token(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        let res = sqlx::query("DELETE FROM api_tokens WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(self.pool())
            .await
            .map_err(backend("revoking a token"))?;
        Ok(res.rows_affected() > 0)
    }

    async fn insert_ssh_key(&self, k: &SshKeyRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO ssh_keys (id, user_id, name, algorithm, fingerprint, public_key, created_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&k.id)
        .bind(&k.user_id)
        .bind(&k.name)
        .bind(&k.algorithm)
        .bind(&k.fingerprint)
        .bind(&k.public_key)
        .bind(ms(k.created_at))
        .bind(k.last_used_at.map(ms))
        .execute(self.pool())
        .await
        .map_err(duplicate_or(format!("SSH key {}", k.fingerprint), "inserting an SSH key"))?;
        Ok(())
    }

    async fn ssh_keys_of(&self, user_id: &str) -> Result<Vec<SshKeyRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {SSH_KEY_COLUMNS} FROM ssh_keys WHERE user_id = $1 ORDER BY created_at, id"))
            .bind(user_id)
            .fetch_all(self.pool())
            .await
            .map_err(backend("listing SSH keys"))?;
        rows.iter().map(ssh_key).collect()
    }

    async fn ssh_key_by_fingerprint(&self, fingerprint: &str) -> Result<Option<SshKeyRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {SSH_KEY_COLUMNS} FROM ssh_keys WHERE fingerprint = $1"))
            .bind(fingerprint)
            .fetch_optional(self.pool())
            .await
            .map_err(backend("reading an SSH key"))?;
        row.as_ref().map(ssh_key).transpose()
    }

    async fn delete_ssh_key(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        let res = sqlx::query("DELETE FROM ssh_keys WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(self.pool())
            .await
            .map_err(backend("removing an SSH key"))?;
        Ok(res.rows_affected() > 0)
    }

    async fn touch_ssh_key(&self, id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        sqlx::query("UPDATE ssh_keys SET last_used_at = $1 WHERE id = $2")
            .bind(ms(at))
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(backend("recording an SSH key's use"))?;
        Ok(())
    }

    async fn touch_token(&self, id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(ms(at))
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(backend("recording a token's use"))?;
        Ok(())
    }

    async fn insert_web_session(&self, s: &WebSessionRecord) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO web_sessions (id, user_id, hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&s.id)
            .bind(&s.user_id)
            .bind(&s.hash)
            .bind(ms(s.created_at))
            .bind(ms(s.expires_at))
            .execute(self.pool())
            .await
            .map_err(duplicate_or(format!("sign-in {}", s.id), "recording a sign-in"))?;
        Ok(())
    }

    async fn web_session(&self, id: &str) -> Result<Option<WebSessionRecord>, StoreError> {
        let row = sqlx::query("SELECT id, user_id, hash, created_at, expires_at FROM web_sessions WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(backend("reading a sign-in"))?;
        row.map(|r| {
            Ok(WebSessionRecord {
                id: r.get("id"),
                user_id: r.get("user_id"),
                hash: r.get("hash"),
                created_at: from_ms(r.get("created_at"))?,
                expires_at: from_ms(r.get("expires_at"))?,
            })
        })
        .transpose()
    }

    async fn delete_web_session(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM web_sessions WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(backend("ending a sign-in"))?;
        Ok(())
    }

    async fn purge_web_sessions(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let res = sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1")
            .bind(ms(now))
            .execute(self.pool())
            .await
            .map_err(backend("purging sign-ins"))?;
        Ok(res.rows_affected())
    }

    async fn put_git_credential(&self, c: &GitCredentialRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO user_git_credentials (user_id, host, username, sealed_token, updated_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (user_id, host) DO UPDATE SET username = excluded.username, sealed_token = excluded.sealed_token,
             updated_at = excluded.updated_at",
        )
        .bind(&c.user_id)
        .bind(&c.host)
        .bind(&c.username)
        .bind(&c.sealed_token)
        .bind(ms(c.updated_at))
        .execute(self.pool())
        .await
        .map_err(backend("saving a git token"))?;
        Ok(())
    }

    async fn git_credentials(&self, user_id: &str) -> Result<Vec<GitCredentialRecord>, StoreError> {
        let rows = sqlx::query("SELECT user_id, host, username, sealed_token, updated_at FROM user_git_credentials WHERE user_id = $1 ORDER BY host")
            .bind(user_id)
            .fetch_all(self.pool())
            .await
            .map_err(backend("reading git tokens"))?;
        rows.iter()
            .map(|r| {
                Ok(GitCredentialRecord {
                    user_id: r.get("user_id"),
                    host: r.get("host"),
                    username: r.get("username"),
                    sealed_token: r.get("sealed_token"),
                    updated_at: from_ms(r.get("updated_at"))?,
                })
            })
            .collect()
    }

    async fn delete_git_credential(&self, user_id: &str, host: &str) -> Result<bool, StoreError> {
        let res = sqlx::query("DELETE FROM user_git_credentials WHERE user_id = $1 AND host = $2")
            .bind(user_id)
            .bind(host)
            .execute(self.pool())
            .await
            .map_err(backend("deleting a git token"))?;
        Ok(res.rows_affected() > 0)
    }

    async fn append_audit(&self, e: &AuditRecord) -> Result<i64, StoreError> {
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO audit_log (at, user_id, actor, action, session_id, detail, ip) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq",
        )
        .bind(ms(e.at))
        .bind(&e.user_id)
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.session)
        .bind(e.detail.to_string())
        .bind(&e.ip)
        .fetch_one(self.pool())
        .await
        .map_err(backend("appending to the audit log"))?;
        Ok(seq)
    }

    async fn audit(&self, f: &AuditFilter) -> Result<Vec<(i64, AuditRecord)>, StoreError> {
        // Every filter is bound (NULL = no filter), so the statement is one text for all.
        let rows = sqlx::query(
            "SELECT seq, at, user_id, actor, action, session_id, detail, ip FROM audit_log
             WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR action = $2) AND ($3 IS NULL OR session_id = $3)
               AND ($4 IS NULL OR at >= $4) AND ($5 IS NULL OR at < $5) AND ($6 IS NULL OR seq < $6)
             ORDER BY seq DESC LIMIT $7",
        )
        .bind(&f.user_id)
        .bind(&f.action)
        .bind(&f.session)
        .bind(f.since.map(ms))
        .bind(f.until.map(ms))
        .bind(f.before)
        .bind(f.limit.clamp(1, 1000) as i64)
        .fetch_all(self.pool())
        .await
        .map_err(backend("reading the audit log"))?;
        rows.iter()
            .map(|r| {
                let detail: &str = r.get("detail");
                Ok((
                    r.get("seq"),
                    AuditRecord {
                        at: from_ms(r.get("at"))?,
                        user_id: r.get("user_id"),
                        actor: r.get("actor"),
                        action: r.get("action"),
                        session: r.get("session_id"),
                        detail: serde_json::from_str(detail)
                            .map_err(|_| StoreError::Corrupt { what: "audit detail", value: detail.to_string() })?,
                        ip: r.get("ip"),
                    },
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
