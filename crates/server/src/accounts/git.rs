//! A user's saved git tokens, one per host, sealed with the data dir's key
//! ([`crate::secrets`]). Sessions get them on demand (the VM's credential helper asks the host),
//! after the session's own tokens and before the operator's; the API never shows a token.

use super::store::GitCredentialRecord;
use super::{AccountError, Accounts, Caller};
use mayfly_proto::accounts::{SaveGitCredential, SavedGitCredential};
use mayfly_proto::api::GitCredential;
use time::OffsetDateTime;

impl Accounts {
    pub async fn save_git_credential(&self, by: &Caller, host: &str, req: SaveGitCredential) -> Result<SavedGitCredential, AccountError> {
        let Some(user_id) = by.who.user_id() else {
            return Err(AccountError::Invalid("the server token has no saved git tokens; use git_credentials in the config".into()));
        };
        let cred = GitCredential { host: host.to_string(), username: req.username.clone(), token: req.token };
        crate::manager::validate_credentials(std::slice::from_ref(&cred)).map_err(|e| AccountError::Invalid(e.to_string()))?;
        let sealed = self.secrets.seal(cred.token.as_bytes()).map_err(|e| AccountError::Internal(e.to_string()))?;
        let rec = GitCredentialRecord {
            user_id: user_id.to_string(),
            host: cred.host.clone(),
            username: cred.username.clone(),
            sealed_token: sealed,
            updated_at: OffsetDateTime::now_utc(),
        };
        self.store.put_git_credential(&rec).await?;
        self.audit(by, "git_credential_save", None, serde_json::json!({"host": rec.host})).await;
        Ok(view(&rec))
    }

    pub async fn saved_git_credentials(&self, by: &Caller) -> Result<Vec<SavedGitCredential>, AccountError> {
        let Some(user_id) = by.who.user_id() else { return Ok(Vec::new()) };
        Ok(self.store.git_credentials(user_id).await?.iter().map(view).collect())
    }

    pub async fn delete_git_credential(&self, by: &Caller, host: &str) -> Result<(), AccountError> {
        let removed = match by.who.user_id() {
            Some(u) => self.store.delete_git_credential(u, host).await?,
            None => false,
        };
        if !removed {
            return Err(AccountError::NotFound(format!("git token for {host}")));
        }
        self.audit(by, "git_credential_delete", None, serde_json::json!({"host": host})).await;
        Ok(())
    }

    /// The user's tokens, opened (for the credential helper of their sessions).
    pub async fn git_credentials_of(&self, user_id: &str) -> Vec<GitCredential> {
        let rows = match self.store.git_credentials(user_id).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(user = user_id, "cannot read saved git tokens: {}", mayfly_proto::error_chain(&e));
                return Vec::new();
            }
        };
        rows.into_iter()
            .filter_map(|r| {
                let token = self.secrets.open(&r.sealed_token).ok().and_then(|b| String::from_utf8(b).ok());
                if token.is_none() {
                    tracing::warn!(user = user_id, host = %r.host, "a saved git token cannot be opened (sealed with another key?)");
                }
                Some(GitCredential { host: r.host, username: r.username, token: token? })
            })
            .collect()
    }
}

fn view(r: &GitCredentialRecord) -> SavedGitCredential {
    SavedGitCredential { host: r.host.clone(), username: r.username.clone(), updated_at: crate::manager::rfc3339(r.updated_at) }
}
