//! [`OidcError`]: what can go wrong in an OpenID Connect sign-in, worded for the sign-in page,
//! and the translations from `openidconnect`'s errors (whose own messages are terse).

use std::error::Error;

use openidconnect::{
    ClaimsVerificationError, DiscoveryError, ErrorResponse, HttpClientError, RequestTokenError,
    SignatureVerificationError, UserInfoError,
};

/// Why a sign-in through the OpenID Connect provider failed. The messages are meant for the
/// person signing in (the sign-in page shows them) and never contain tokens or codes.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The settings cannot work (bad issuer or redirect URL, empty client id...).
    #[error("OpenID Connect is misconfigured: {0}")]
    Config(String),
    /// No answer from the provider (connection refused, DNS, TLS, timeout).
    #[error(
        "the sign-in provider {issuer} cannot be reached ({reason}); try again later or use another way to sign in"
    )]
    ProviderUnreachable { issuer: String, reason: String },
    /// The provider answered, but its discovery document or key set is unusable.
    #[error("the sign-in provider {issuer} is not set up as expected: {reason}")]
    Discovery { issuer: String, reason: String },
    /// The `state` that came back is not the one this sign-in sent (another tab or a forged
    /// request).
    #[error(
        "this sign-in response does not belong to the sign-in started here (state mismatch); please sign in again"
    )]
    StateMismatch,
    /// The pending sign-in is older than [`super::PENDING_LOGIN_TTL`].
    #[error("this sign-in took too long and has expired; please sign in again")]
    Expired,
    /// The provider refused to exchange the authorization code (reused, expired, PKCE
    /// verifier mismatch...) or its answer had no usable tokens.
    #[error("the sign-in provider did not accept the sign-in: {0}")]
    Exchange(String),
    /// The ID token failed verification; the message says which check.
    #[error("the sign-in provider's ID token was rejected: {0}")]
    IdToken(String),
    /// The userinfo endpoint failed.
    #[error("could not read the account's profile from the sign-in provider: {0}")]
    UserInfo(String),
    /// The account signed in fine but is not allowed here (email domain or groups).
    #[error("this account may not sign in here: {0}")]
    NotAllowed(String),
}

/// An error and its sources, "outer: inner: innermost" (reqwest's own message alone says
/// little, e.g. "error sending request").
pub(super) fn describe(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text
}

type HttpError = HttpClientError<reqwest::Error>;

/// A failed request, without the wrapper's own words ("client error").
fn request(err: &HttpError) -> String {
    match err {
        HttpClientError::Reqwest(e) => describe(e.as_ref()),
        other => describe(other),
    }
}

pub(super) fn discovery(issuer: &str, err: DiscoveryError<HttpError>) -> OidcError {
    let issuer = issuer.to_string();
    match err {
        DiscoveryError::Request(e) => OidcError::ProviderUnreachable { issuer, reason: request(&e) },
        DiscoveryError::Response(status, _, msg) => OidcError::Discovery {
            issuer,
            reason: format!("its discovery document or key set answered HTTP {status}: {msg}"),
        },
        DiscoveryError::Parse(e) => OidcError::Discovery {
            issuer,
            reason: format!("unreadable discovery document or key set ({})", describe(&e)),
        },
        DiscoveryError::Validation(msg) => OidcError::Discovery { issuer, reason: msg },
        other => OidcError::Discovery { issuer, reason: describe(&other) },
    }
}

pub(super) fn exchange<T: ErrorResponse>(issuer: &str, err: RequestTokenError<HttpError, T>) -> OidcError {
    match err {
        RequestTokenError::ServerResponse(e) => OidcError::Exchange(e.to_string()),
        RequestTokenError::Request(e) => {
            OidcError::ProviderUnreachable { issuer: issuer.to_string(), reason: request(&e) }
        }
        RequestTokenError::Parse(e, _) => OidcError::Exchange(format!("unreadable token response ({})", describe(&e))),
        RequestTokenError::Other(msg) => OidcError::Exchange(msg),
    }
}

pub(super) fn userinfo(issuer: &str, err: UserInfoError<HttpError>) -> OidcError {
    match err {
        UserInfoError::Request(e) => {
            OidcError::ProviderUnreachable { issuer: issuer.to_string(), reason: request(&e) }
        }
        UserInfoError::ClaimsVerification(e) => OidcError::UserInfo(id_token_reason(&e)),
        UserInfoError::Response(status, _, msg) => OidcError::UserInfo(format!("HTTP {status}: {msg}")),
        other => OidcError::UserInfo(describe(&other)),
    }
}

/// Which ID token check failed, in words ([`OidcError::IdToken`]'s message).
pub(super) fn id_token_reason(err: &ClaimsVerificationError) -> String {
    match err {
        ClaimsVerificationError::Expired(m) if m.contains("in the future") => {
            format!("its issue time is in the future ({m}): check the clocks of this server and of the provider")
        }
        ClaimsVerificationError::Expired(m) => format!("it has expired ({m})"),
        ClaimsVerificationError::InvalidAudience(m) => {
            format!("wrong audience: it was issued for another client ({m})")
        }
        ClaimsVerificationError::InvalidIssuer(m) => format!("wrong issuer ({m})"),
        ClaimsVerificationError::InvalidNonce(m) => {
            format!("wrong nonce: it does not belong to this sign-in ({m})")
        }
        ClaimsVerificationError::InvalidSubject(m) => format!("wrong subject ({m})"),
        ClaimsVerificationError::SignatureVerification(e) => match e {
            SignatureVerificationError::NoMatchingKey => "bad signature: no key of the provider matches it".to_string(),
            other => format!("bad signature ({other})"),
        },
        other => other.to_string(),
    }
}
