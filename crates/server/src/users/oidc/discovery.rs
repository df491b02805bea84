//! The provider's metadata and signing keys (OpenID Connect Discovery), fetched lazily and
//! cached: nothing is fetched before the first sign-in, a failed fetch is retried by the next
//! sign-in, and the cache is refreshed hourly (and early when an ID token names a key we do not
//! know, i.e. the provider rotated its keys).

use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{CoreClient, CoreClientAuthMethod, CoreJwsSigningAlgorithm, CoreProviderMetadata};
use openidconnect::{
    AuthType, ClientId, ClientSecret, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, RedirectUrl,
};
use tokio::sync::Mutex;

use super::error::{self, OidcError};

/// How long discovered metadata and keys are used before fetching them again.
const REFRESH_AFTER: Duration = Duration::from_secs(3600);
/// While the provider is down and an older copy is in use, how long before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(60);
/// An early refresh for an unknown signing key happens at most this often.
const MIN_KEY_REFRESH: Duration = Duration::from_secs(10);

/// The client built from discovery: authorization endpoint set, token and userinfo endpoints
/// if the provider has them.
pub(super) type ProviderClient =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

/// One successful discovery.
pub(super) struct Discovered {
    pub client: ProviderClient,
    /// The algorithms ID tokens may be signed with (the provider's list, never "none").
    pub id_token_algs: Vec<CoreJwsSigningAlgorithm>,
    fetched_at: Instant,
}

pub(super) struct Discovery {
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: Option<ClientSecret>,
    redirect_url: RedirectUrl,
    http: reqwest::Client,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    current: Option<Arc<Discovered>>,
    /// When to fetch again (None: right away).
    next_fetch: Option<Instant>,
}

impl Discovery {
    pub fn new(
        issuer: IssuerUrl,
        client_id: ClientId,
        client_secret: Option<ClientSecret>,
        redirect_url: RedirectUrl,
        http: reqwest::Client,
    ) -> Discovery {
        Discovery { issuer, client_id, client_secret, redirect_url, http, cache: Mutex::default() }
    }

    pub fn issuer(&self) -> &str {
        self.issuer.as_str()
    }

    /// The discovered client, fetching (or refreshing) it first if due. Fails only when there
    /// is no copy at all; a failed refresh keeps using the previous copy for a while.
    pub async fn get(&self) -> Result<Arc<Discovered>, OidcError> {
        let mut cache = self.cache.lock().await;
        if let (Some(current), Some(next)) = (&cache.current, cache.next_fetch) {
            if Instant::now() < next {
                return Ok(current.clone());
            }
        }
        self.fetch_into(&mut cache).await
    }

    /// Called when an ID token's key is not in `seen`'s key set: fetches the keys again unless
    /// that just happened. Returns the copy to retry with, or None if nothing changed.
    pub async fn refresh_keys(&self, seen: &Arc<Discovered>) -> Option<Arc<Discovered>> {
        let mut cache = self.cache.lock().await;
        if let Some(current) = &cache.current {
            if !Arc::ptr_eq(current, seen) {
                return Some(current.clone()); // someone refreshed meanwhile
            }
            if current.fetched_at.elapsed() < MIN_KEY_REFRESH {
                return None;
            }
        }
        tracing::info!(issuer = %self.issuer.as_str(), "an ID token is signed with an unknown key: fetching the provider's keys again");
        let before = cache.current.clone();
        match self.fetch_into(&mut cache).await {
            Ok(fresh) if before.as_ref().is_none_or(|b| !Arc::ptr_eq(b, &fresh)) => Some(fresh),
            _ => None,
        }
    }

    async fn fetch_into(&self, cache: &mut Cache) -> Result<Arc<Discovered>, OidcError> {
        match self.fetch().await {
            Ok(fresh) => {
                tracing::info!(issuer = %self.issuer.as_str(), "OpenID Connect provider discovered");
                let fresh = Arc::new(fresh);
                cache.current = Some(fresh.clone());
                cache.next_fetch = Some(Instant::now() + REFRESH_AFTER);
                Ok(fresh)
            }
            Err(err) => match &cache.current {
                Some(previous) => {
                    tracing::warn!(issuer = %self.issuer.as_str(), error = %err, "refreshing the OpenID Connect provider's metadata failed: using the previous copy");
                    cache.next_fetch = Some(Instant::now() + RETRY_AFTER);
                    Ok(previous.clone())
                }
                None => {
                    tracing::warn!(issuer = %self.issuer.as_str(), error = %err, "OpenID Connect discovery failed (retried at the next sign-in)");
                    Err(err)
                }
            },
        }
    }

    async fn fetch(&self) -> Result<Discovered, OidcError> {
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| error::discovery(self.issuer.as_str(), e))?;
        let id_token_algs: Vec<_> = metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter(|alg| **alg != CoreJwsSigningAlgorithm::None)
            .cloned()
            .collect();
        if id_token_algs.is_empty() {
            return Err(OidcError::Discovery {
                issuer: self.issuer.to_string(),
                reason: "it supports no signature algorithm for ID tokens".to_string(),
            });
        }
        if metadata.token_endpoint().is_none() {
            return Err(OidcError::Discovery {
                issuer: self.issuer.to_string(),
                reason: "it has no token endpoint (the authorization code flow needs one)".to_string(),
            });
        }
        // Client authentication: HTTP Basic unless the provider only takes the secret in the body.
        let post_only = metadata.token_endpoint_auth_methods_supported().is_some_and(|methods| {
            methods.contains(&CoreClientAuthMethod::ClientSecretPost)
                && !methods.contains(&CoreClientAuthMethod::ClientSecretBasic)
        });
        let client = CoreClient::from_provider_metadata(metadata, self.client_id.clone(), self.client_secret.clone())
            .set_redirect_uri(self.redirect_url.clone())
            .set_auth_type(if post_only { AuthType::RequestBody } else { AuthType::BasicAuth });
        Ok(Discovered { client, id_token_algs, fetched_at: Instant::now() })
    }
}
