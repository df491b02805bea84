//! Sign-in through an OpenID Connect provider (Keycloak, Dex, Authentik, Google, GitLab...):
//! Mayfly is the relying party of the authorization code flow, with PKCE (S256) and a nonce.
//!
//! [`Oidc::start`] gives the provider URL to send the browser to and a [`PendingLogin`] for the
//! caller to keep (server-side or in a sealed cookie) until the browser comes back to the
//! redirect URL; [`Oidc::finish`] checks the `state`, exchanges the code, verifies the ID token,
//! reads userinfo and applies the domain and group restrictions, giving an [`Identity`].
//!
//! The provider is not contacted before the first sign-in (see `discovery`), so a provider that
//! is down does not stop the server, and password sign-in keeps working.
//!
//! * `discovery` — the provider's metadata and keys, fetched lazily and cached.
//! * `claims` — the claims used (email, name, groups) and the sign-in restrictions.
//! * `error` — [`OidcError`].

mod claims;
mod discovery;
mod error;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openidconnect::core::{
    CoreAuthenticationFlow, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AccessToken, AccessTokenHash, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    IdTokenClaims, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    SignatureVerificationError, TokenResponse, UserInfoClaims,
};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use claims::ExtraClaims;
use discovery::{Discovered, Discovery};
pub use error::OidcError;

/// A [`PendingLogin`] older than this is refused ([`OidcError::Expired`]).
pub const PENDING_LOGIN_TTL: Duration = Duration::from_secs(600);
/// The clock difference with the provider tolerated by default when checking an ID token's
/// expiry and issue time ([`Oidc::with_clock_skew`]).
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Always requested; [`OidcSettings::scopes`] adds to them.
const BASE_SCOPES: [&str; 3] = ["openid", "email", "profile"];

/// How to reach the provider and who may sign in (the `[oidc]` settings).
#[derive(Clone, Deserialize, Serialize)]
pub struct OidcSettings {
    /// The issuer URL, exactly as the provider spells it (`<issuer>/.well-known/openid-configuration`
    /// must serve its metadata).
    pub issuer: String,
    pub client_id: String,
    /// None for a public client (PKCE alone).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// The sign-in button says "Sign in with <display_name>".
    #[serde(default = "default_display_name")]
    pub display_name: String,
    /// Scopes to request besides `openid email profile` (e.g. `groups` for Dex).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Only verified email addresses at these domains may sign in; empty = any.
    #[serde(default)]
    pub allowed_email_domains: Vec<String>,
    /// Only members of at least one of these groups may sign in; empty = any.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// The claim listing the account's groups (userinfo first, else the ID token).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
}

fn default_display_name() -> String {
    "OpenID Connect".to_string()
}

fn default_groups_claim() -> String {
    "groups".to_string()
}

impl OidcSettings {
    /// Settings with no restrictions and the defaults for everything but the provider.
    pub fn new(issuer: &str, client_id: &str) -> OidcSettings {
        OidcSettings {
            issuer: issuer.to_string(),
            client_id: client_id.to_string(),
            client_secret: None,
            display_name: default_display_name(),
            scopes: Vec::new(),
            allowed_email_domains: Vec::new(),
            allowed_groups: Vec::new(),
            groups_claim: default_groups_claim(),
        }
    }
}

impl std::fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "<redacted>"))
            .field("display_name", &self.display_name)
            .field("scopes", &self.scopes)
            .field("allowed_email_domains", &self.allowed_email_domains)
            .field("allowed_groups", &self.allowed_groups)
            .field("groups_claim", &self.groups_claim)
            .finish()
    }
}

/// A sign-in between [`Oidc::start`] and [`Oidc::finish`]. Its fields are secrets of this one
/// sign-in: keep it server-side or in a sealed (encrypted) cookie.
#[derive(Clone, Serialize, Deserialize)]
pub struct PendingLogin {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// Where to send the browser after signing in: a path on this server.
    pub next: String,
    pub created_at_unix: u64,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("next", &self.next)
            .field("created_at_unix", &self.created_at_unix)
            .finish_non_exhaustive()
    }
}

/// Who signed in, as the provider vouches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The ID token's `iss`; with `subject`, the account's stable key.
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub groups: Vec<String>,
}

/// The tokens of a code exchange ([`Oidc::exchange`]). Secrets: never log them.
pub struct Tokens {
    pub id_token: String,
    pub access_token: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(<redacted>)")
    }
}

type IdToken =
    openidconnect::IdToken<ExtraClaims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;
type VerifiedClaims = IdTokenClaims<ExtraClaims, CoreGenderClaim>;

/// The relying party for one provider. Cheap to clone.
#[derive(Clone)]
pub struct Oidc {
    inner: Arc<Inner>,
    clock_skew: Duration,
}

struct Inner {
    settings: OidcSettings,
    discovery: Discovery,
    http: reqwest::Client,
}

impl Oidc {
    /// Checks the settings; does not contact the provider (discovery happens at the first
    /// sign-in, and is retried after failures). `redirect_url` is where the provider sends the
    /// browser back: `<public_url>/auth/oidc/callback`.
    pub fn new(settings: OidcSettings, redirect_url: String) -> Result<Oidc, OidcError> {
        let issuer = IssuerUrl::new(settings.issuer.clone())
            .map_err(|e| OidcError::Config(format!("the issuer {:?} is not a URL ({e})", settings.issuer)))?;
        if !matches!(issuer.url().scheme(), "https" | "http") {
            return Err(OidcError::Config(format!("the issuer {:?} is not an http(s) URL", settings.issuer)));
        }
        let redirect = RedirectUrl::new(redirect_url.clone())
            .map_err(|e| OidcError::Config(format!("the redirect URL {redirect_url:?} is not a URL ({e})")))?;
        if settings.client_id.is_empty() {
            return Err(OidcError::Config("the client id is empty".to_string()));
        }
        if settings.groups_claim.is_empty() {
            return Err(OidcError::Config("the groups claim name is empty".to_string()));
        }
        // No redirects: following them would let the provider's metadata point us anywhere.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("mayfly/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OidcError::Config(format!("cannot create an HTTP client: {}", error::describe(&e))))?;
        let discovery = Discovery::new(
            issuer,
            ClientId::new(settings.client_id.clone()),
            settings.client_secret.clone().map(ClientSecret::new),
            redirect,
            http.clone(),
        );
        Ok(Oidc { inner: Arc::new(Inner { settings, discovery, http }), clock_skew: DEFAULT_CLOCK_SKEW })
    }

    /// The clock difference with the provider to tolerate in ID token expiry and issue times
    /// (default [`DEFAULT_CLOCK_SKEW`]).
    pub fn with_clock_skew(mut self, skew: Duration) -> Oidc {
        self.clock_skew = skew;
        self
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.inner.settings
    }

    /// Starts a sign-in: the provider URL to redirect the browser to, and the pending state to
    /// keep until it comes back. `next` is where to go afterwards; anything but a path on this
    /// server (`/...`, not `//host...`) becomes `/`.
    pub async fn start(&self, next: &str) -> Result<(url::Url, PendingLogin), OidcError> {
        let discovered = self.inner.discovery.get().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = discovered
            .client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .set_pkce_challenge(challenge);
        // `openid` is added by the library.
        for scope in BASE_SCOPES.iter().skip(1).copied().chain(self.inner.settings.scopes.iter().map(String::as_str)) {
            if scope != "openid" {
                request = request.add_scope(Scope::new(scope.to_string()));
            }
        }
        let (url, state, nonce) = request.url();
        let pending = PendingLogin {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            next: local_path(next),
            created_at_unix: unix_now(),
        };
        Ok((url, pending))
    }

    /// Completes a sign-in with what came back to the redirect URL (`code` and `state`):
    /// checks the state and the pending sign-in's age, exchanges the code (with the PKCE
    /// verifier), verifies the ID token (signature, issuer, audience, expiry, nonce), reads
    /// userinfo, and applies the email domain and group restrictions.
    pub async fn finish(&self, pending: &PendingLogin, code: &str, state: &str) -> Result<Identity, OidcError> {
        if !bool::from(pending.state.as_bytes().ct_eq(state.as_bytes())) {
            return Err(OidcError::StateMismatch);
        }
        if unix_now().saturating_sub(pending.created_at_unix) > PENDING_LOGIN_TTL.as_secs() {
            return Err(OidcError::Expired);
        }
        let tokens = self.exchange(pending, code).await?;
        let (claims, discovered, token) = self.verify(&tokens.id_token, &pending.nonce).await?;
        // The access token must be the one issued with this ID token (when the provider says).
        if let Some(expected) = claims.access_token_hash() {
            let access_token = AccessToken::new(tokens.access_token.clone());
            let verifier = discovered.client.id_token_verifier();
            let unverifiable =
                |e: &dyn std::fmt::Display| OidcError::IdToken(format!("cannot check its access token hash ({e})"));
            let alg = token.signing_alg().map_err(|e| unverifiable(&e))?;
            let key = token.signing_key(&verifier).map_err(|e| unverifiable(&e))?;
            let actual = AccessTokenHash::from_token(&access_token, alg, key).map_err(|e| unverifiable(&e))?;
            if actual != *expected {
                return Err(OidcError::IdToken("its access token hash does not match the access token".to_string()));
            }
        }
        let mut identity = self.identity_from(&claims);
        self.add_userinfo(&discovered, &mut identity, tokens.access_token).await?;
        if let Err(err) = claims::check_allowed(&self.inner.settings, &identity) {
            tracing::info!(issuer = %identity.issuer, subject = %identity.subject, error = %err, "OpenID Connect sign-in refused");
            return Err(err);
        }
        tracing::info!(issuer = %identity.issuer, subject = %identity.subject, "OpenID Connect sign-in");
        Ok(identity)
    }

    /// The code exchange step of [`finish`](Self::finish) (no state or age check): public for
    /// tests that need the raw tokens.
    pub async fn exchange(&self, pending: &PendingLogin, code: &str) -> Result<Tokens, OidcError> {
        let discovered = self.inner.discovery.get().await?;
        let issuer = self.inner.discovery.issuer();
        let response = discovered
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Discovery { issuer: issuer.to_string(), reason: e.to_string() })?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.inner.http)
            .await
            .map_err(|e| error::exchange(issuer, e))?;
        let id_token = response
            .id_token()
            .ok_or_else(|| OidcError::Exchange("the provider's token response has no ID token".to_string()))?;
        Ok(Tokens { id_token: id_token.to_string(), access_token: response.access_token().secret().clone() })
    }

    /// The ID token step of [`finish`](Self::finish): verifies `raw` (signature with the
    /// provider's keys, issuer, audience, expiry and issue time within the clock skew, `nonce`)
    /// and returns who it names, from its claims alone (no userinfo, no restrictions).
    pub async fn verify_id_token(&self, raw: &str, nonce: &str) -> Result<Identity, OidcError> {
        let (claims, _, _) = self.verify(raw, nonce).await?;
        Ok(self.identity_from(&claims))
    }

    async fn verify(&self, raw: &str, nonce: &str) -> Result<(VerifiedClaims, Arc<Discovered>, IdToken), OidcError> {
        let token: IdToken =
            raw.parse().map_err(|e| OidcError::IdToken(format!("it is not a well-formed JWT ({e})")))?;
        let nonce = Nonce::new(nonce.to_string());
        let mut discovered = self.inner.discovery.get().await?;
        let mut retried = false;
        loop {
            let verified = token.claims(&self.id_token_verifier(&discovered), &nonce).cloned();
            match verified {
                Ok(claims) => return Ok((claims, discovered, token)),
                // Keys rotated since discovery: fetch them again, once.
                Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey))
                    if !retried =>
                {
                    retried = true;
                    match self.inner.discovery.refresh_keys(&discovered).await {
                        Some(fresh) => discovered = fresh,
                        None => {
                            return Err(OidcError::IdToken(error::id_token_reason(
                                &ClaimsVerificationError::SignatureVerification(
                                    SignatureVerificationError::NoMatchingKey,
                                ),
                            )))
                        }
                    }
                }
                Err(e) => return Err(OidcError::IdToken(error::id_token_reason(&e))),
            }
        }
    }

    fn id_token_verifier<'a>(&self, discovered: &'a Discovered) -> openidconnect::core::CoreIdTokenVerifier<'a> {
        let skew = chrono::Duration::from_std(self.clock_skew).unwrap_or(chrono::Duration::MAX);
        discovered
            .client
            .id_token_verifier()
            .set_allowed_algs(discovered.id_token_algs.iter().cloned())
            // Expired only once `exp` is `skew` in the past.
            .set_time_fn(move || chrono::Utc::now() - skew)
            .set_issue_time_verifier_fn(move |iat| {
                if iat > chrono::Utc::now() + skew {
                    Err(format!("issued at {iat}, in the future"))
                } else {
                    Ok(())
                }
            })
    }

    fn identity_from(&self, claims: &VerifiedClaims) -> Identity {
        Identity {
            issuer: claims.issuer().to_string(),
            subject: claims.subject().to_string(),
            email: claims.email().map(|e| e.to_string()),
            email_verified: claims.email().is_some() && claims.email_verified().unwrap_or(false),
            name: claims.name().and_then(|n| n.get(None)).map(|n| n.to_string()),
            groups: claims.additional_claims().groups(&self.inner.settings.groups_claim).unwrap_or_default(),
        }
    }

    /// Completes `identity` from the userinfo endpoint, which wins over the ID token (many
    /// providers put email, name and groups only there), if the provider has one.
    async fn add_userinfo(
        &self,
        discovered: &Discovered,
        identity: &mut Identity,
        access_token: String,
    ) -> Result<(), OidcError> {
        let subject = openidconnect::SubjectIdentifier::new(identity.subject.clone());
        let Ok(request) = discovered.client.user_info(AccessToken::new(access_token), Some(subject)) else {
            return Ok(()); // no userinfo endpoint
        };
        let info: UserInfoClaims<ExtraClaims, CoreGenderClaim> = request
            .request_async(&self.inner.http)
            .await
            .map_err(|e| error::userinfo(self.inner.discovery.issuer(), e))?;
        if let Some(email) = info.email() {
            identity.email = Some(email.to_string());
            identity.email_verified = info.email_verified().unwrap_or(false);
        }
        if let Some(name) = info.name().and_then(|n| n.get(None)) {
            identity.name = Some(name.to_string());
        }
        if let Some(groups) = info.additional_claims().groups(&self.inner.settings.groups_claim) {
            identity.groups = groups;
        }
        Ok(())
    }
}

/// `next` if it is a path on this server, else `/` (no open redirects through sign-in).
fn local_path(next: &str) -> String {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control());
    if local {
        next.to_string()
    } else {
        "/".to_string()
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_must_be_a_local_path() {
        assert_eq!(local_path("/sessions/3?x=1"), "/sessions/3?x=1");
        for bad in ["https://evil.example/", "//evil.example", "/\\evil.example", "", "sessions", "/a\nb"] {
            assert_eq!(local_path(bad), "/", "{bad:?}");
        }
    }

    #[test]
    fn settings_need_urls_and_a_client_id() {
        let ok = OidcSettings::new("https://idp.example/realms/x", "mayfly");
        assert!(Oidc::new(ok.clone(), "https://mayfly.example/auth/oidc/callback".into()).is_ok());
        assert!(matches!(
            Oidc::new(OidcSettings::new("not a url", "c"), "https://m.example/cb".into()),
            Err(OidcError::Config(_))
        ));
        assert!(matches!(Oidc::new(ok.clone(), "relative/cb".into()), Err(OidcError::Config(_))));
        assert!(matches!(
            Oidc::new(OidcSettings::new("https://idp.example", ""), "https://m.example/cb".into()),
            Err(OidcError::Config(_))
        ));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let mut s = OidcSettings::new("https://idp.example", "c");
        s.client_secret = Some("hunter2".into());
        let pending = PendingLogin {
            state: "st4te".into(),
            nonce: "n0nce".into(),
            pkce_verifier: "v3rifier".into(),
            next: "/".into(),
            created_at_unix: 1,
        };
        let text = format!("{s:?} {pending:?} {:?}", Tokens { id_token: "idt".into(), access_token: "at".into() });
        for secret in ["hunter2", "st4te", "n0nce", "v3rifier", "idt", "\"at\""] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
}
