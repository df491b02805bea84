//! Secrets at rest: values the control plane must keep across a restart but never store in the
//! clear (a session's environment and git tokens, which re-adoption needs back).
//!
//! XChaCha20-Poly1305 with a random 192-bit nonce per value; the 256-bit key lives in
//! `<data_dir>/secret.key` (0600, created at first use). Sealed form: base64 of
//! `nonce (24 bytes) || ciphertext+tag`. A database copied without the key file reveals nothing;
//! the key file is as sensitive as the data dir itself (see docs/SECURITY.md).

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret key {path}")]
    Key {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("secret key {0} is not 32 bytes")]
    KeyLength(String),
    #[error("a sealed value is malformed or was sealed with another key")]
    Open,
}

/// Seals and opens values with the data dir's key, loaded (or created) on first use.
pub struct Secrets {
    path: PathBuf,
    cipher: OnceLock<XChaCha20Poly1305>,
    /// A cluster's key, derived from `cluster_secret`: seals, and opens first.
    shared: Option<XChaCha20Poly1305>,
}

impl Secrets {
    pub fn new(data_dir: &Path) -> Self {
        Self { path: data_dir.join("secret.key"), cipher: OnceLock::new(), shared: None }
    }

    /// Seals with `key` (every node of a cluster derives the same one from the cluster secret,
    /// so any node opens what another sealed); still opens what the data dir's own key sealed
    /// before the node joined a cluster.
    pub fn shared(key: [u8; 32], data_dir: &Path) -> Self {
        Self { shared: Some(XChaCha20Poly1305::new((&key).into())), ..Self::new(data_dir) }
    }

    fn cipher(&self) -> Result<&XChaCha20Poly1305, SecretError> {
        if let Some(c) = self.cipher.get() {
            return Ok(c);
        }
        let key = load_or_create(&self.path)?;
        Ok(self.cipher.get_or_init(|| XChaCha20Poly1305::new((&key).into())))
    }

    pub fn seal(&self, plain: &[u8]) -> Result<String, SecretError> {
        let cipher = match &self.shared {
            Some(c) => c,
            None => self.cipher()?,
        };
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = cipher.encrypt(&nonce, plain).map_err(|_| SecretError::Open)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SecretError> {
        let raw = base64::engine::general_purpose::STANDARD.decode(sealed).map_err(|_| SecretError::Open)?;
        if raw.len() < 24 {
            return Err(SecretError::Open);
        }
        let (nonce, body) = raw.split_at(24);
        if let Some(opened) = self.shared.as_ref().and_then(|c| c.decrypt(XNonce::from_slice(nonce), body).ok()) {
            return Ok(opened);
        }
        if self.shared.is_some() && !self.path.exists() {
            // A cluster node that never had a key of its own: nothing else to try.
            return Err(SecretError::Open);
        }
        self.cipher()?.decrypt(XNonce::from_slice(nonce), body).map_err(|_| SecretError::Open)
    }
}

fn load_or_create(path: &Path) -> Result<[u8; 32], SecretError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| SecretError::Key { path: path.display().to_string(), source };
    match std::fs::read(path) {
        Ok(bytes) => return bytes.try_into().map_err(|_| SecretError::KeyLength(path.display().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let key: [u8; 32] = XChaCha20Poly1305::generate_key(&mut OsRng).into();
    // create_new: a concurrent first use cannot replace a key another process already uses.
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut f) => {
            f.write_all(&key).and_then(|_| f.sync_all()).map_err(err)?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read(path).map_err(err)?.try_into().map_err(|_| SecretError::KeyLength(path.display().to_string()))
        }
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_with_the_same_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let a = Secrets::new(dir.path());
        let sealed = a.seal(b"ghp_token").unwrap();
        assert!(!sealed.contains("ghp_token"));
        assert_ne!(sealed, a.seal(b"ghp_token").unwrap(), "a fresh nonce every time");
        // A second instance (a restarted server) reads the same key file.
        assert_eq!(Secrets::new(dir.path()).open(&sealed).unwrap(), b"ghp_token");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.path().join("secret.key")).unwrap().permissions().mode() & 0o777, 0o600);

        let other = tempfile::tempdir().unwrap();
        assert!(matches!(Secrets::new(other.path()).open(&sealed), Err(SecretError::Open)));
        let mut tampered = base64::engine::general_purpose::STANDARD.decode(&sealed).unwrap();
        *tampered.last_mut().unwrap() ^= 1;
        let tampered = base64::engine::general_purpose::STANDARD.encode(tampered);
        assert!(matches!(a.open(&tampered), Err(SecretError::Open)));
        assert!(matches!(a.open("not base64!"), Err(SecretError::Open)));
        assert!(matches!(a.open("AAAA"), Err(SecretError::Open)));
    }

    #[test]
    fn a_key_file_of_the_wrong_length_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret.key"), b"short").unwrap();
        assert!(matches!(Secrets::new(dir.path()).seal(b"x"), Err(SecretError::KeyLength(_))));
    }
}
