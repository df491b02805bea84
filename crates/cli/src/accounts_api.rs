//! Typed calls of the account routes: who am I, API tokens, users, the audit log, saved git tokens,
//! SSH keys.

use crate::client::Client;
use mayfly_proto::accounts::{
    AddSshKey, ApiToken, AuditPage, CreateToken, CreateUser, CreatedToken, Me, SaveGitCredential, SavedGitCredential, UpdateUser,
    SshKey, User,
};
use reqwest::Method;

/// The filters of `GET /api/v1/audit`.
#[derive(Debug, Default)]
pub struct AuditQuery {
    pub user: Option<String>,
    pub action: Option<String>,
    pub session: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub before: Option<i64>,
    pub limit: Option<u32>,
}

impl Client {
    pub async fn me(&self) -> anyhow::Result<Me> {
        self.json(Method::GET, "/api/v1/me", None).await
    }

    pub async fn tokens(&self) -> anyhow::Result<Vec<ApiToken>> {
        self.json(Method::GET, "/api/v1/tokens", None).await
    }

    pub async fn create_token(&self, req: &CreateToken) -> anyhow::Result<CreatedToken> {
        self.json(Method::POST, "/api/v1/tokens", Some(serde_json::to_value(req)?)).await
    }

    pub async fn revoke_token(&self, id: &str) -> anyhow::Result<()> {
        self.send(Method::DELETE, &format!("/api/v1/tokens/{}", segment(id)), None).await.map(drop)
    }

    pub async fn users(&self) -> anyhow::Result<Vec<User>> {
        self.json(Method::GET, "/api/v1/users", None).await
    }

    pub async fn user(&self, id: &str) -> anyhow::Result<User> {
        self.json(Method::GET, &format!("/api/v1/users/{}", segment(id)), None).await
    }

    pub async fn create_user(&self, req: &CreateUser) -> anyhow::Result<User> {
        self.json(Method::POST, "/api/v1/users", Some(serde_json::to_value(req)?)).await
    }

    pub async fn update_user(&self, id: &str, req: &UpdateUser) -> anyhow::Result<User> {
        self.json(Method::PATCH, &format!("/api/v1/users/{}", segment(id)), Some(serde_json::to_value(req)?)).await
    }

    pub async fn delete_user(&self, id: &str) -> anyhow::Result<()> {
        self.send(Method::DELETE, &format!("/api/v1/users/{}", segment(id)), None).await.map(drop)
    }

    pub async fn audit(&self, q: &AuditQuery) -> anyhow::Result<AuditPage> {
        let mut query: Vec<(&str, String)> = Vec::new();
        for (k, v) in [
            ("user", &q.user),
            ("action", &q.action),
            ("session", &q.session),
            ("since", &q.since),
            ("until", &q.until),
        ] {
            if let Some(v) = v {
                query.push((k, v.clone()));
            }
        }
        if let Some(b) = q.before {
            query.push(("before", b.to_string()));
        }
        if let Some(l) = q.limit {
            query.push(("limit", l.to_string()));
        }
        let resp = self.send_query(Method::GET, "/api/v1/audit", &query, None).await?;
        Ok(resp.json().await?)
    }

    pub async fn ssh_keys(&self) -> anyhow::Result<Vec<SshKey>> {
        self.json(Method::GET, "/api/v1/me/ssh-keys", None).await
    }

    pub async fn add_ssh_key(&self, req: &AddSshKey) -> anyhow::Result<SshKey> {
        self.json(Method::POST, "/api/v1/me/ssh-keys", Some(serde_json::to_value(req)?)).await
    }

    pub async fn remove_ssh_key(&self, id: &str) -> anyhow::Result<()> {
        self.send(Method::DELETE, &format!("/api/v1/me/ssh-keys/{}", segment(id)), None).await.map(drop)
    }

    pub async fn git_credentials(&self) -> anyhow::Result<Vec<SavedGitCredential>> {
        self.json(Method::GET, "/api/v1/me/git-credentials", None).await
    }

    pub async fn save_git_credential(&self, host: &str, req: &SaveGitCredential) -> anyhow::Result<SavedGitCredential> {
        self.json(
            Method::PUT,
            &format!("/api/v1/me/git-credentials/{}", segment(host)),
            Some(serde_json::to_value(req)?),
        )
        .await
    }

    pub async fn delete_git_credential(&self, host: &str) -> anyhow::Result<()> {
        self.send(Method::DELETE, &format!("/api/v1/me/git-credentials/{}", segment(host)), None).await.map(drop)
    }
}

/// `s` as one path segment: characters outside the unreserved set (and `:`) percent-encoded.
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(super::segment("git.example.com:8443"), "git.example.com:8443");
        assert_eq!(super::segment("a/b c"), "a%2Fb%20c");
    }
}
