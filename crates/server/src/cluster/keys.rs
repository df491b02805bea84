//! Keys every node of a cluster derives from `cluster_secret`, so that what one node signs or
//! seals another accepts: preview tokens and cookies, and sealed secrets (session environments,
//! git tokens). A single node without a cluster secret keeps its keys in the data dir.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What a derived key is for; each purpose gets an unrelated key.
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    PreviewSigning,
    Sealing,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Purpose::PreviewSigning => "mayfly/v1/preview-signing",
            Purpose::Sealing => "mayfly/v1/sealing",
        }
    }
}

/// HMAC-SHA256(secret, label): a pseudo-random key per purpose (HKDF's extract step with the
/// secret as key; the secret is long and random, so no salt is needed).
pub fn derive(secret: &[u8], purpose: Purpose) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(purpose.label().as_bytes());
    mac.finalize().into_bytes().into()
}

/// The sealing keys of this node: derived from `cluster_secret` when set (the data dir's own key
/// still opens what it sealed before), else the data dir's.
pub fn secrets_for(cfg: &crate::config::ServerConfig) -> crate::secrets::Secrets {
    match &cfg.cluster_secret {
        Some(secret) => crate::secrets::Secrets::shared(derive(secret.expose().as_bytes(), Purpose::Sealing), &cfg.data_dir),
        None => crate::secrets::Secrets::new(&cfg.data_dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_and_secrets_give_different_keys() {
        let a = derive(b"0123456789abcdef0123456789abcdef", Purpose::PreviewSigning);
        assert_eq!(a, derive(b"0123456789abcdef0123456789abcdef", Purpose::PreviewSigning));
        assert_ne!(a, derive(b"0123456789abcdef0123456789abcdef", Purpose::Sealing));
        assert_ne!(a, derive(b"0123456789abcdef0123456789abcdeF", Purpose::PreviewSigning));
    }
}
