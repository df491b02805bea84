//! The HTTP door's authentication: turns a request's credential into a [`Caller`].
//!
//! | credential | principal |
//! |---|---|
//! | `Authorization: Bearer <server token>` | the bootstrap admin ([`Principal::ServerToken`]) |
//! | `Authorization: Bearer mfy_…` (an API token) | its user |
//! | cookie `mayfly_session` (a browser sign-in) | its user, or the bootstrap admin |
//! | cookie `mayfly_token` holding the server token (wave 1 browsers) | the bootstrap admin |
//!
//! The server token comes from the config (`MAYFLY_TOKEN`), else from `<data_dir>/token`,
//! generated (mode 0600) at first start; it is compared in constant time. A request
//! authenticated by cookie must come from this origin: one that names another origin is refused,
//! and a state-changing one must name its origin (`Origin`, or `Sec-Fetch-Site: same-origin`).

use crate::accounts::{Accounts, Principal};
use axum::http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN};
use axum::http::HeaderMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use subtle::ConstantTimeEq;

/// The wave 1 cookie (the server token itself); still read, no longer set.
pub const COOKIE_NAME: &str = "mayfly_token";
/// A browser sign-in.
pub const SESSION_COOKIE: &str = "mayfly_session";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the token file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the token file {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the token file {0} is empty; delete it to generate a new token")]
    Empty(String),
}

pub struct Auth {
    token: String,
}

impl Auth {
    pub fn new(token: impl Into<String>) -> Self {
        Self { token: token.into() }
    }

    /// The configured token, else the one in `path`, else a new one written there.
    /// The flag is true when the token was generated now.
    pub fn load_or_generate(configured: Option<&str>, path: &Path) -> Result<(Self, bool), TokenError> {
        if let Some(t) = configured.filter(|t| !t.is_empty()) {
            return Ok((Self::new(t), false));
        }
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let t = text.trim();
                if t.is_empty() {
                    return Err(TokenError::Empty(shown));
                }
                // Tighten permissions a hand-made file may have been given.
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
                return Ok((Self::new(t), false));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(TokenError::Read { path: shown, source }),
        }
        let token = generate();
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
            f.write_all(format!("{token}\n").as_bytes())?;
            f.sync_all()
        };
        write().map_err(|source| TokenError::Write { path: shown, source })?;
        Ok((Self::new(token), true))
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn check(&self, candidate: &str) -> bool {
        // Length is not secret (every generated token has the same); the content is.
        candidate.len() == self.token.len() && bool::from(candidate.as_bytes().ct_eq(self.token.as_bytes()))
    }

    /// True when the request carries the server token (header or wave 1 cookie).
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        bearer(headers).is_some_and(|t| self.check(t)) || cookies(headers, COOKIE_NAME).any(|t| self.check(t))
    }

    /// The principal of the request's bearer token, if it has a valid one; `Err` when it
    /// carries a bearer token that is not valid.
    pub async fn bearer_principal(&self, accounts: &Accounts, headers: &HeaderMap) -> Result<Option<Principal>, ()> {
        let Some(t) = bearer(headers) else { return Ok(None) };
        if self.check(t) {
            return Ok(Some(Principal::ServerToken));
        }
        match accounts.principal_for_token(t).await {
            Ok(Some(p)) => Ok(Some(p)),
            Ok(None) => Err(()),
            Err(e) => {
                tracing::error!("cannot check an API token: {e}");
                Err(())
            }
        }
    }

    /// The principal of the request's cookies (a sign-in, or the wave 1 server-token cookie).
    pub async fn cookie_principal(&self, accounts: &Accounts, headers: &HeaderMap) -> Option<Principal> {
        for v in cookies(headers, SESSION_COOKIE) {
            match accounts.principal_for_cookie(v).await {
                Ok(Some(p)) => return Some(p),
                Ok(None) => {}
                Err(e) => tracing::error!("cannot check a sign-in cookie: {e}"),
            }
        }
        cookies(headers, COOKIE_NAME).any(|t| self.check(t)).then_some(Principal::ServerToken)
    }

    /// Whoever the request's credential (bearer first, then cookies) belongs to.
    pub async fn principal(&self, accounts: &Accounts, headers: &HeaderMap) -> Option<Principal> {
        match self.bearer_principal(accounts, headers).await {
            Ok(Some(p)) => Some(p),
            Err(()) => None,
            Ok(None) => self.cookie_principal(accounts, headers).await,
        }
    }
}

/// 32 random characters from a lowercase base32 alphabet (160 bits).
fn generate() -> String {
    use rand::Rng;
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::rngs::OsRng;
    (0..32).map(|_| ALPHABET[rng.gen_range(0..32)] as char).collect()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub(crate) fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// True when a browser sent the request from another origin than the one it addresses.
/// Cookies are sent by same-site pages, and preview hosts (`8000-s.localhost`) are same-site
/// with the main origin (`localhost`): without this check a preview page could drive the API
/// (and open terminals over WebSocket, which has no CORS) with the user's cookie.
pub(crate) fn cross_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    let host = headers.get(HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let authority = origin.split_once("://").map(|(_, a)| a).unwrap_or(origin);
    !authority.eq_ignore_ascii_case(host)
}

/// True when a cookie-authenticated request that changes state proves it comes from this
/// origin: an `Origin` of this host (checked by [`cross_origin`]) or `Sec-Fetch-Site: same-origin`.
pub(crate) fn names_own_origin(headers: &HeaderMap) -> bool {
    headers.contains_key(ORIGIN)
        || headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).is_some_and(|v| v == "same-origin")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generates_once_with_private_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let (a, generated) = Auth::load_or_generate(None, &path).unwrap();
        assert!(generated);
        assert_eq!(a.token().len(), 32);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (b, generated) = Auth::load_or_generate(None, &path).unwrap();
        assert!(!generated);
        assert_eq!(a.token(), b.token());
        let (c, _) = Auth::load_or_generate(Some("configured"), &path).unwrap();
        assert_eq!(c.token(), "configured");
    }

    #[test]
    fn header_and_cookie_forms() {
        let auth = Auth::new("tok123");
        let h = |name, v: &str| {
            let mut m = HeaderMap::new();
            m.insert(name, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(auth.allows(&h(AUTHORIZATION, "Bearer tok123")));
        assert!(auth.allows(&h(AUTHORIZATION, "bearer tok123")));
        assert!(!auth.allows(&h(AUTHORIZATION, "Bearer tok124")));
        assert!(!auth.allows(&h(AUTHORIZATION, "Basic tok123")));
        assert!(!auth.allows(&h(AUTHORIZATION, "Bearer tok1234")));
        assert!(auth.allows(&h(COOKIE, "a=b; mayfly_token=tok123")));
        assert!(!auth.allows(&h(COOKIE, "mayfly_token=nope; other=tok123")));
        assert!(!auth.allows(&HeaderMap::new()));
    }

    #[test]
    fn cross_origin_is_told_by_origin_and_host() {
        let h = |origin: Option<&str>, host: &str| {
            let mut m = HeaderMap::new();
            m.insert(HOST, HeaderValue::from_str(host).unwrap());
            if let Some(o) = origin {
                m.insert(ORIGIN, HeaderValue::from_str(o).unwrap());
            }
            m
        };
        assert!(!cross_origin(&h(None, "localhost:7070")), "no Origin: a navigation or a non-browser client");
        assert!(!cross_origin(&h(Some("http://localhost:7070"), "localhost:7070")));
        assert!(!cross_origin(&h(Some("http://LOCALHOST:7070"), "localhost:7070")));
        assert!(cross_origin(&h(Some("http://8000-sabc.localhost:7070"), "localhost:7070")), "a preview page");
        assert!(cross_origin(&h(Some("null"), "localhost:7070")));
        assert!(cross_origin(&h(Some("https://evil.example"), "localhost:7070")));
    }
}
