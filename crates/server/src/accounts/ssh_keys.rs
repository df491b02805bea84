//! A user's SSH public keys: registered through the API, the CLI or the IDE, and looked up by
//! the SSH door (`mayfly-ssh`) to turn a verified key into that user's [`Principal`]. A key
//! signs in exactly one user (its fingerprint is unique); the server token has no keys.

use super::store::SshKeyRecord;
use super::{AccountError, Accounts, Caller, Principal};
use base64::Engine;
use mayfly_proto::accounts::{AddSshKey, SshKey};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// Algorithms accepted at registration (what OpenSSH 9 offers by default, plus RSA).
const ALGORITHMS: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];
const MAX_NAME: usize = 100;
const MAX_KEY_LINE: usize = 16 * 1024;

/// A parsed public key line: algorithm, the key blob, the comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyLine {
    pub algorithm: String,
    pub blob: Vec<u8>,
    pub comment: Option<String>,
}

impl PublicKeyLine {
    /// `SHA256:<base64>`, the fingerprint `ssh-keygen -lf` prints.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.blob)
    }

    /// `<algorithm> <base64>`.
    pub fn openssh(&self) -> String {
        format!("{} {}", self.algorithm, base64::engine::general_purpose::STANDARD.encode(&self.blob))
    }
}

/// The OpenSSH SHA-256 fingerprint of a public key blob (wire encoding).
pub fn fingerprint_of(blob: &[u8]) -> String {
    format!("SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(blob)))
}

/// Parses one line of an OpenSSH public key file (`<algorithm> <base64> [comment]`); the blob
/// must name the same algorithm it is listed under.
pub fn parse_public_key(line: &str) -> Result<PublicKeyLine, AccountError> {
    let invalid = |why: &str| AccountError::Invalid(format!("not an OpenSSH public key: {why}"));
    let line = line.trim();
    if line.len() > MAX_KEY_LINE {
        return Err(invalid("too long"));
    }
    if line.contains("PRIVATE KEY") {
        return Err(AccountError::Invalid("this is a private key; register the public key (the .pub file)".into()));
    }
    let mut parts = line.splitn(3, char::is_whitespace);
    let algorithm = parts.next().unwrap_or_default().to_string();
    if !ALGORITHMS.contains(&algorithm.as_str()) {
        return Err(invalid(&format!("unsupported key type {algorithm:?} (use one of {})", ALGORITHMS.join(", "))));
    }
    let b64 = parts.next().ok_or_else(|| invalid("no key data after the key type"))?;
    let blob = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| invalid("the key data is not base64"))?;
    // The blob starts with the algorithm as an SSH string (u32 length, bytes).
    let named = blob
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
        .and_then(|n| blob.get(4..4 + n))
        .ok_or_else(|| invalid("the key data is truncated"))?;
    if named != algorithm.as_bytes() {
        return Err(invalid("the key data does not match its type"));
    }
    if blob.len() < 4 + named.len() + 8 {
        return Err(invalid("the key data is truncated"));
    }
    let comment = parts.next().map(|c| c.trim().to_string()).filter(|c| !c.is_empty());
    Ok(PublicKeyLine { algorithm, blob, comment })
}

fn view(r: &SshKeyRecord) -> SshKey {
    SshKey {
        id: r.id.clone(),
        name: r.name.clone(),
        algorithm: r.algorithm.clone(),
        fingerprint: r.fingerprint.clone(),
        public_key: r.public_key.clone(),
        created_at: crate::manager::rfc3339(r.created_at),
        last_used_at: r.last_used_at.map(crate::manager::rfc3339),
    }
}

impl Accounts {
    pub async fn add_ssh_key(&self, by: &Caller, req: AddSshKey) -> Result<SshKey, AccountError> {
        let Some(user_id) = by.who.user_id() else {
            return Err(AccountError::Invalid("the server token has no SSH keys; sign in as a user to add one".into()));
        };
        let key = parse_public_key(&req.public_key)?;
        let name = req.name.or(key.comment.clone()).unwrap_or_else(|| key.algorithm.clone()).trim().to_string();
        if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
            return Err(AccountError::Invalid(format!("name must be 1 to {MAX_NAME} printable characters")));
        }
        let rec = SshKeyRecord {
            id: format!("k{}", super::secret::random(11)),
            user_id: user_id.to_string(),
            name,
            algorithm: key.algorithm.clone(),
            fingerprint: key.fingerprint(),
            public_key: key.openssh(),
            created_at: OffsetDateTime::now_utc(),
            last_used_at: None,
        };
        self.store.insert_ssh_key(&rec).await.map_err(|e| match e {
            crate::store::StoreError::Duplicate(_) => AccountError::Conflict(format!("SSH key {}", rec.fingerprint)),
            other => other.into(),
        })?;
        self.audit(by, "ssh_key_add", None, serde_json::json!({"id": rec.id, "fingerprint": rec.fingerprint})).await;
        Ok(view(&rec))
    }

    pub async fn ssh_keys(&self, by: &Caller) -> Result<Vec<SshKey>, AccountError> {
        let Some(user_id) = by.who.user_id() else { return Ok(Vec::new()) };
        Ok(self.store.ssh_keys_of(user_id).await?.iter().map(view).collect())
    }

    pub async fn remove_ssh_key(&self, by: &Caller, id: &str) -> Result<(), AccountError> {
        let removed = match by.who.user_id() {
            Some(u) => self.store.delete_ssh_key(u, id).await?,
            None => false,
        };
        if !removed {
            return Err(AccountError::NotFound(format!("SSH key {id}")));
        }
        self.audit(by, "ssh_key_remove", None, serde_json::json!({"id": id})).await;
        Ok(())
    }

    /// The user a verified SSH key (by fingerprint) signs in, recording its use; `None` for an
    /// unknown key or a deleted user.
    pub async fn ssh_principal(&self, fingerprint: &str) -> Result<Option<Principal>, AccountError> {
        let Some(key) = self.store.ssh_key_by_fingerprint(fingerprint).await? else { return Ok(None) };
        let Some(user) = self.store.user(&key.user_id).await? else { return Ok(None) };
        if let Err(e) = self.store.touch_ssh_key(&key.id, OffsetDateTime::now_utc()).await {
            tracing::warn!("cannot record an SSH key's use: {}", mayfly_proto::error_chain(&e));
        }
        Ok(Some(Principal::User { id: user.id, email: user.email, role: user.role }))
    }

    /// Records a refused SSH sign-in (unknown key, or a session the key may not open).
    pub async fn audit_ssh_refusal(&self, who: Option<&Principal>, ip: Option<&str>, detail: serde_json::Value) {
        let actor = who.map(Principal::label).unwrap_or_else(|| "unknown SSH key".into());
        self.audit_as(who.and_then(Principal::user_id), &actor, "ssh_refused", None, detail, ip).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `ssh-keygen -t ed25519` output (public half only).
    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILECrozYiomYf/UgrsSDB/VVYfqsVyTmHZNScEr+R4WZ me@laptop";

    #[test]
    fn parses_and_fingerprints_openssh_lines() {
        let k = parse_public_key(ED).unwrap();
        assert_eq!(k.algorithm, "ssh-ed25519");
        assert_eq!(k.comment.as_deref(), Some("me@laptop"));
        assert_eq!(k.blob.len(), 51);
        assert_eq!(k.fingerprint(), "SHA256:l4oqtJ1zhgJ/KsaCwxJmXDmbfJd3M+VnZIJHksZyzKc", "what ssh-keygen -lf prints");
        assert_eq!(k.openssh(), ED.rsplit_once(' ').unwrap().0);
    }

    #[test]
    fn refuses_what_is_not_a_public_key() {
        for bad in [
            "",
            "ssh-ed25519",
            "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
            "ssh-ed25519 !!!notbase64",
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAILECrozYiomYf/UgrsSDB/VVYfqsVyTmHZNScEr+R4WZ",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5",
            "-----BEGIN OPENSSH PRIVATE KEY-----",
        ] {
            assert!(parse_public_key(bad).is_err(), "{bad:?}");
        }
    }
}
