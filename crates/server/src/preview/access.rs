//! Who may open a private preview: signed tokens and the preview cookie.
//!
//! A server secret (32 random bytes, hex, `<data_dir>/preview.key`, mode 0600, generated at
//! first start) signs two kinds of token with HMAC-SHA256, each bound to one session and port:
//!
//! ```text
//! token   = "v1." kind "." session "." port "." expires "." base64url(mac)
//! kind    = "x"  (exchange: minted by the main origin, 60 s, carried in a redirect URL)
//!         | "c"  (cookie: set by the preview origin, 12 h)
//!         | "tx" | "tc" (the same, team scope: minted for a signed-in user who is neither the
//!                 owner nor an admin; opens team and public ports only; the cookie lives 1 h)
//! mac     = HMAC-SHA256(secret, "mayfly-preview" | kind | session | port | expires)
//! expires = Unix seconds
//! ```
//!
//! The preview origin turns a valid exchange token into the host-only (no `Domain`) HttpOnly
//! cookie [`COOKIE`]; a cookie only opens the session and port it names, whatever host sends it.

use super::host::Target;
use axum::http::header::COOKIE as COOKIE_HEADER;
use axum::http::{HeaderMap, HeaderValue};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

/// The preview origin's own cookie.
pub const COOKIE: &str = "mayfly_preview";
/// Lifetime of an exchange token (it only has to survive one redirect).
pub const EXCHANGE_TTL: Duration = Duration::from_secs(60);
/// Lifetime of the preview cookie.
pub const COOKIE_TTL: Duration = Duration::from_secs(12 * 3600);
/// Lifetime of a team-scope preview cookie (it is not bound to its user, so a deleted user's
/// lasts at most this long).
pub const TEAM_COOKIE_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the preview key {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the preview key {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the preview key {0} is not 64 hex digits; delete it to generate a new one")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed preview token")]
    Malformed,
    #[error("preview token signature does not match")]
    BadSignature,
    #[error("preview token expired")]
    Expired,
    #[error("preview token is for another session or port")]
    WrongTarget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exchange,
    Cookie,
    TeamExchange,
    TeamCookie,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Exchange => "x",
            Kind::Cookie => "c",
            Kind::TeamExchange => "tx",
            Kind::TeamCookie => "tc",
        }
    }

    /// The exchange token kind for a pass, and the cookie it turns into.
    pub fn for_pass(pass: crate::access::PreviewPass) -> (Kind, Kind) {
        match pass {
            crate::access::PreviewPass::Team => (Kind::TeamExchange, Kind::TeamCookie),
            _ => (Kind::Exchange, Kind::Cookie),
        }
    }

    pub fn cookie_ttl(self) -> Duration {
        match self {
            Kind::TeamCookie | Kind::TeamExchange => TEAM_COOKIE_TTL,
            _ => COOKIE_TTL,
        }
    }
}

/// The signing secret.
pub struct Signer {
    key: [u8; 32],
}

impl Signer {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// The key in `path`, else a new one written there (mode 0600).
    pub fn load_or_generate(path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim()).map_err(|_| KeyError::Invalid(shown.clone()))?;
                let key: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Invalid(shown))?;
                return Ok(Self::new(key));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(KeyError::Read { path: shown, source }),
        }
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
            f.write_all(format!("{}\n", hex::encode(key)).as_bytes())?;
            f.sync_all()
        };
        write().map_err(|source| KeyError::Write { path: shown, source })?;
        Ok(Self::new(key))
    }

    fn mac(&self, kind: Kind, session: &str, port: u16, expires: u64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(format!("mayfly-preview|{}|{session}|{port}|{expires}", kind.tag()).as_bytes());
        mac
    }

    /// A token of `kind` for `target`, valid until `expires` (Unix seconds).
    pub fn sign(&self, kind: Kind, target: &Target, expires: u64) -> String {
        let mac = self.mac(kind, &target.session, target.port, expires).finalize().into_bytes();
        format!("v1.{}.{}.{}.{expires}.{}", kind.tag(), target.session, target.port, URL_SAFE_NO_PAD.encode(mac))
    }

    /// Checks a token of `kind` for `target` at time `now` (Unix seconds).
    pub fn verify(&self, token: &str, kind: Kind, target: &Target, now: u64) -> Result<(), TokenError> {
        let parts: Vec<&str> = token.split('.').collect();
        let [version, tag, session, port, expires, mac] = parts[..] else { return Err(TokenError::Malformed) };
        if version != "v1" || tag != kind.tag() {
            return Err(TokenError::Malformed);
        }
        let port: u16 = port.parse().map_err(|_| TokenError::Malformed)?;
        let expires: u64 = expires.parse().map_err(|_| TokenError::Malformed)?;
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| TokenError::Malformed)?;
        // Signature first (constant time), so nothing is learned from a forged token's fields.
        self.mac(kind, session, port, expires).verify_slice(&mac).map_err(|_| TokenError::BadSignature)?;
        if session != target.session || port != target.port {
            return Err(TokenError::WrongTarget);
        }
        if now >= expires {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `Set-Cookie` for the preview origin: host-only (no `Domain`), HttpOnly, Lax.
pub fn set_cookie(value: &str, secure: bool, ttl: Duration) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}", ttl.as_secs())
}

/// Values of every cookie called `name` in the request.
pub fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(COOKIE_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// What the request's preview cookies prove for `target` now (several cookies of the name may
/// be present: one planted by a page under the same parent domain must not shadow ours).
pub fn cookie_pass(signer: &Signer, headers: &HeaderMap, target: &Target) -> crate::access::PreviewPass {
    use crate::access::PreviewPass;
    let now = unix_now();
    let mut pass = PreviewPass::None;
    for v in cookie_values(headers, COOKIE) {
        if signer.verify(v, Kind::Cookie, target, now).is_ok() {
            return PreviewPass::Owner;
        }
        if signer.verify(v, Kind::TeamCookie, target, now).is_ok() {
            pass = PreviewPass::Team;
        }
    }
    pass
}

/// True when a preview cookie of the owner's scope opens `target` now.
pub fn cookie_allows(signer: &Signer, headers: &HeaderMap, target: &Target) -> bool {
    cookie_pass(signer, headers, target) == crate::access::PreviewPass::Owner
}

/// Removes the cookies called `names` from the request (they are Mayfly's, not the app's).
pub fn strip_cookies(headers: &mut HeaderMap, names: &[&str]) {
    let kept: Vec<String> = headers
        .get_all(COOKIE_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| !kv.is_empty() && !names.iter().any(|n| kv.split_once('=').map(|(k, _)| k) == Some(*n)))
        .map(str::to_string)
        .collect();
    headers.remove(COOKIE_HEADER);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(COOKIE_HEADER, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(s: &str, p: u16) -> Target {
        Target { session: s.into(), port: p }
    }

    #[test]
    fn tokens_are_bound_to_kind_target_and_time() {
        let signer = Signer::new([7; 32]);
        let t = target("sabc", 8000);
        let tok = signer.sign(Kind::Exchange, &t, 1000);
        assert!(tok.starts_with("v1.x.sabc.8000.1000."), "{tok}");
        assert_eq!(signer.verify(&tok, Kind::Exchange, &t, 999), Ok(()));
        assert_eq!(signer.verify(&tok, Kind::Exchange, &t, 1000), Err(TokenError::Expired));
        assert_eq!(signer.verify(&tok, Kind::Cookie, &t, 0), Err(TokenError::Malformed), "kinds do not mix");
        assert_eq!(signer.verify(&tok, Kind::Exchange, &target("sabd", 8000), 0), Err(TokenError::WrongTarget));
        assert_eq!(signer.verify(&tok, Kind::Exchange, &target("sabc", 8001), 0), Err(TokenError::WrongTarget));
        // Any edited field breaks the signature.
        let forged = tok.replace(".1000.", ".9999.");
        assert_eq!(signer.verify(&forged, Kind::Exchange, &t, 0), Err(TokenError::BadSignature));
        let other_session = tok.replace(".sabc.", ".sabd.");
        assert_eq!(signer.verify(&other_session, Kind::Exchange, &target("sabd", 8000), 0), Err(TokenError::BadSignature));
        // Another server's secret.
        assert_eq!(Signer::new([8; 32]).verify(&tok, Kind::Exchange, &t, 0), Err(TokenError::BadSignature));
        for bad in ["", "v1", "v2.x.sabc.8000.1000.AAAA", "v1.x.sabc.port.1000.AAAA", "v1.x.sabc.8000.1000.!!", "a.b.c.d.e.f.g"] {
            assert_eq!(signer.verify(bad, Kind::Exchange, &t, 0), Err(TokenError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn key_is_generated_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("preview.key");
        let a = Signer::load_or_generate(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let b = Signer::load_or_generate(&path).unwrap();
        let t = target("s1", 3000);
        assert_eq!(b.verify(&a.sign(Kind::Cookie, &t, u64::MAX), Kind::Cookie, &t, 0), Ok(()), "same key after reload");
        std::fs::write(&path, "short\n").unwrap();
        assert!(matches!(Signer::load_or_generate(&path), Err(KeyError::Invalid(_))));
    }

    fn signer_for_scopes() -> bool {
        use crate::access::PreviewPass;
        let signer = Signer::new([3; 32]);
        let t = target("sq", 8000);
        let team = signer.sign(Kind::TeamCookie, &t, unix_now() + 60);
        let mut h = HeaderMap::new();
        h.insert(COOKIE_HEADER, HeaderValue::from_str(&format!("{COOKIE}={team}")).unwrap());
        let owner = signer.sign(Kind::Cookie, &t, unix_now() + 60);
        let mut h2 = HeaderMap::new();
        h2.insert(COOKIE_HEADER, HeaderValue::from_str(&format!("{COOKIE}={team}; {COOKIE}={owner}")).unwrap());
        cookie_pass(&signer, &h, &t) == PreviewPass::Team
            && !cookie_allows(&signer, &h, &t)
            && cookie_pass(&signer, &h2, &t) == PreviewPass::Owner
            && signer.verify(&team, Kind::Cookie, &t, 0) == Err(TokenError::Malformed)
    }

    #[test]
    fn cookie_scoping() {
        let c = set_cookie("v1.c.s.1.2.x", false, COOKIE_TTL);
        assert!(c.starts_with("mayfly_preview=v1.c.s.1.2.x; "), "{c}");
        assert!(c.contains("HttpOnly") && c.contains("Path=/") && c.contains("SameSite=Lax"), "{c}");
        assert!(!c.to_ascii_lowercase().contains("domain="), "host-only cookie: {c}");
        assert!(!c.contains("Secure"));
        assert!(set_cookie("v", true, COOKIE_TTL).ends_with("; Secure"));
        let team = signer_for_scopes();
        assert!(team, "team cookies open nothing private");

        let signer = Signer::new([1; 32]);
        let mine = target("sa", 8000);
        let good = signer.sign(Kind::Cookie, &mine, unix_now() + 60);
        let other = signer.sign(Kind::Cookie, &target("sb", 8000), unix_now() + 60);
        let mut h = HeaderMap::new();
        h.insert(COOKIE_HEADER, HeaderValue::from_str(&format!("app=1; {COOKIE}=planted; {COOKIE}={good}")).unwrap());
        assert!(cookie_allows(&signer, &h, &mine), "a planted cookie of the same name does not shadow ours");
        assert!(!cookie_allows(&signer, &h, &target("sa", 8001)), "another port of the session");
        let mut h2 = HeaderMap::new();
        h2.insert(COOKIE_HEADER, HeaderValue::from_str(&format!("{COOKIE}={other}")).unwrap());
        assert!(!cookie_allows(&signer, &h2, &mine), "another session's cookie");

        strip_cookies(&mut h, &[COOKIE, "mayfly_token"]);
        assert_eq!(h.get(COOKIE_HEADER).unwrap(), "app=1");
        let mut only_ours = HeaderMap::new();
        only_ours.insert(COOKIE_HEADER, HeaderValue::from_static("mayfly_token=t"));
        strip_cookies(&mut only_ours, &[COOKIE, "mayfly_token"]);
        assert!(only_ours.get(COOKIE_HEADER).is_none());
    }
}
