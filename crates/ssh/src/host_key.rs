//! The gateway's persistent host key: ed25519, OpenSSH format, in the data dir, made at the
//! first start with mode 0600 (clients pin it in `known_hosts`; a new key makes them warn).

use anyhow::Context;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{HashAlg, PrivateKey};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Reads the key at `path`, or makes and saves one when there is none.
pub fn load_or_generate(path: &Path) -> anyhow::Result<PrivateKey> {
    if path.exists() {
        let mode = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.permissions().mode();
        if mode & 0o077 != 0 {
            anyhow::bail!("SSH host key {} is readable by others (mode {:o}); chmod 600 it", path.display(), mode & 0o777);
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read SSH host key {}", path.display()))?;
        return PrivateKey::from_openssh(text).with_context(|| format!("{} is not an OpenSSH private key", path.display()));
    }
    let seed: [u8; 32] = rand::random();
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let text = key.to_openssh(LineEnding::LF).context("cannot encode the SSH host key")?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot create {}", path.display()))?;
    tracing::info!(path = %path.display(), fingerprint = %key.fingerprint(HashAlg::Sha256), "generated the SSH host key");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh_host_ed25519_key");
        let a = load_or_generate(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let b = load_or_generate(&path).unwrap();
        assert_eq!(a.public_key(), b.public_key(), "the same key at the next start");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_generate(&path).unwrap_err().to_string().contains("readable by others"));
    }
}
