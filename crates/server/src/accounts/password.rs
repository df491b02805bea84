//! Passwords: argon2id (the `argon2` crate's defaults: 19 MiB, 2 passes), hashed and checked on
//! the blocking pool so a sign-in never stalls the runtime. Passwords are never logged.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Shortest password an admin may set.
pub const MIN_LENGTH: usize = 10;

pub fn validate(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_LENGTH {
        return Err(format!("the password must have at least {MIN_LENGTH} characters"));
    }
    if password.len() > 1024 {
        return Err("the password must have at most 1024 bytes".into());
    }
    Ok(())
}

pub async fn hash(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
    })
    .await?
}

/// True when `password` matches the PHC string `hash`; false for a malformed hash too.
pub async fn verify(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
    })
    .await
    .unwrap_or(false)
}

/// A hash to check against when the user does not exist, so both answers take the same time.
pub fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default().hash_password(b"decoy-password", &salt).map(|h| h.to_string()).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_checked() {
        let a = super::hash("correct horse battery".into()).await.unwrap();
        let b = super::hash("correct horse battery".into()).await.unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(super::verify("correct horse battery".into(), a.clone()).await);
        assert!(!super::verify("correct horse batterY".into(), a).await);
        assert!(!super::verify("x".into(), "not a hash".into()).await);
        assert!(super::validate("short").is_err());
        assert!(super::validate("long enough!").is_ok());
        assert!(super::decoy().starts_with("$argon2id$"));
    }
}
