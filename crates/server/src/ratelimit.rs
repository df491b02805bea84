//! Per-client request limits on the API: one token bucket per client address.
//!
//! Every request under `/api/` takes one token from its client's bucket; a bucket holds at most
//! `rate_limit_burst` tokens and refills at `rate_limit_per_second`. An empty bucket answers
//! 429 `rate_limited` with `Retry-After` (whole seconds) and a message naming both settings.
//! A WebSocket (terminal, events) costs one token when it opens; its frames are free.
//!
//! Not limited: preview traffic (the preview proxy answers before this router, and a dev
//! server's page load is dozens of requests), the IDE's static files, `/healthz`, `/metrics`.
//! The client is the TCP peer address: behind a reverse proxy every user shares one bucket, so
//! raise the limits (or set `rate_limit_per_second = 0` to turn them off) there.

use crate::error::ApiError;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Buckets kept before full (idle) ones are forgotten; bounds memory against address churn.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second; 0 turns limiting off.
    pub per_second: u32,
    /// Bucket size: how many requests a client may make at once after being idle.
    pub burst: u32,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Arc<Self> {
        Arc::new(Self { limit, buckets: Mutex::new(HashMap::new()) })
    }

    /// Takes one token for `client` at `now`; `Err(wait)` says when the next one is there.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.limit.per_second == 0 {
            return Ok(());
        }
        let burst = f64::from(self.limit.burst.max(1));
        let rate = f64::from(self.limit.per_second);
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&client) {
            // A bucket that has refilled completely is the same as no bucket.
            buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = buckets.entry(client).or_insert(Bucket { tokens: burst, at: now });
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().unwrap().len()
    }
}

/// Middleware for the API router.
pub async fn limit(State(limiter): State<Arc<RateLimiter>>, req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/api/") {
        return next.run(req).await;
    }
    // No peer address only happens without a socket (`oneshot` in tests): one shared bucket.
    let client =
        req.extensions().get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    match limiter.check(client, Instant::now()) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            let l = limiter.limit();
            tracing::debug!(%client, path = req.uri().path(), "rate limited");
            let message = format!(
                "request rate limit reached for {client}: rate_limit_per_second = {}, rate_limit_burst = {}; retry in {secs} s",
                l.per_second, l.burst
            );
            let mut resp = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message).into_response();
            resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn burst_then_refill_per_client() {
        let l = RateLimiter::new(RateLimit { per_second: 2, burst: 3 });
        let t0 = Instant::now();
        for _ in 0..3 {
            l.check(ip(1), t0).unwrap();
        }
        let wait = l.check(ip(1), t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500), "one token at 2/s");
        l.check(ip(2), t0).expect("another client has its own bucket");
        l.check(ip(1), t0 + Duration::from_millis(500)).expect("refilled one token");
        assert!(l.check(ip(1), t0 + Duration::from_millis(500)).is_err());
        // Idle for long: back to the burst, never above it.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            l.check(ip(1), later).unwrap();
        }
        assert!(l.check(ip(1), later).is_err());
    }

    #[test]
    fn zero_rate_is_off() {
        let l = RateLimiter::new(RateLimit { per_second: 0, burst: 0 });
        let t0 = Instant::now();
        for _ in 0..10_000 {
            l.check(ip(1), t0).unwrap();
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn idle_buckets_are_forgotten_when_many_clients_came() {
        let l = RateLimiter::new(RateLimit { per_second: 1000, burst: 1 });
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED as u32 {
            l.check(IpAddr::V4(Ipv4Addr::from(i)), t0).unwrap();
        }
        assert_eq!(l.tracked(), MAX_TRACKED);
        l.check(ip(1), t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(l.tracked(), 1, "refilled buckets were dropped");
    }
}
