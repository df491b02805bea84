//! Bearer secrets the server hands out: API tokens (`mfy_<id>_<secret>`) and browser sign-in
//! cookies (`<id>.<secret>`). The id finds the stored row; only a SHA-256 of the whole value is
//! stored and compared (constant time), so a copy of the database opens nothing.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of API tokens (so scanners and people can tell them apart).
pub const TOKEN_PREFIX: &str = "mfy_";

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// `n` random characters of lowercase base32 (5 bits each).
pub fn random(n: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rngs::OsRng;
    (0..n).map(|_| ALPHABET[rng.gen_range(0..32)] as char).collect()
}

pub fn hash(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

pub fn matches(value: &str, stored_hash: &str) -> bool {
    hash(value).as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// A new API token: (id, the token's text).
pub fn new_token() -> (String, String) {
    let id = random(12);
    let token = format!("{TOKEN_PREFIX}{id}_{}", random(40));
    (id, token)
}

/// The id of an API token's text, if it has the token's shape.
pub fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 12 && secret.len() == 40 && rest.bytes().all(|b| b == b'_' || ALPHABET.contains(&b))).then_some(id)
}

/// A new sign-in cookie value: (id, value).
pub fn new_cookie() -> (String, String) {
    let id = random(16);
    let value = format!("{id}.{}", random(40));
    (id, value)
}

/// The id of a sign-in cookie value, if it has the cookie's shape.
pub fn cookie_id(value: &str) -> Option<&str> {
    let (id, secret) = value.split_once('.')?;
    (id.len() == 16 && secret.len() == 40 && value.bytes().all(|b| b == b'.' || ALPHABET.contains(&b))).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_round_trip_and_malformed_values_are_refused() {
        let (id, token) = new_token();
        assert_eq!(token_id(&token), Some(id.as_str()));
        assert!(matches(&token, &hash(&token)));
        assert!(!matches(&format!("{token}x"), &hash(&token)));
        let (cid, cookie) = new_cookie();
        assert_eq!(cookie_id(&cookie), Some(cid.as_str()));
        for bad in ["", "mfy_", "mfy_short_x", &token[..token.len() - 1], &token.to_uppercase(), "mfy_aaaaaaaaaaaa_!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"] {
            assert_eq!(token_id(bad), None, "{bad:?}");
        }
        for bad in ["", ".", "a.b", &cookie.replace('.', "_")] {
            assert_eq!(cookie_id(bad), None, "{bad:?}");
        }
    }
}
