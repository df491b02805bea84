//! When and how long to wait before asking the model server again.
//!
//! Retryable: 408, 409, 429, 5xx, connection failures, timeouts and garbage (a stream that does
//! not parse). Not retryable: other 4xx (a bad key or a bad request does not get better).
//! Delay of retry `n` (0-based) = uniform in [d/2, d] with d = min(base · 2ⁿ, max), but never
//! less than the server's `Retry-After`.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    pub fn from_config(c: &crate::AgentConfig) -> Self {
        Self {
            max_retries: c.max_retries,
            base: Duration::from_millis(c.retry_base_delay_ms),
            max: Duration::from_millis(c.retry_max_delay_ms.max(c.retry_base_delay_ms)),
        }
    }

    /// The wait before retry `attempt` (0 = the first retry).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self.base.saturating_mul(2u32.saturating_pow(attempt.min(20))).min(self.max);
        let half = exp / 2;
        let jitter = if half.is_zero() { Duration::ZERO } else { rand::Rng::gen_range(&mut rand::thread_rng(), Duration::ZERO..=half) };
        let backoff = half + jitter;
        match retry_after {
            Some(ra) => ra.max(backoff),
            None => backoff,
        }
    }
}

/// Whether an HTTP status is worth retrying.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429) || (500..600).contains(&status)
}

/// `Retry-After` (seconds; HTTP dates are ignored) or OpenAI's `retry-after-ms`.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    get("retry-after").and_then(|v| v.parse::<f64>().ok()).map(|s| Duration::from_secs_f64(s.max(0.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let p = RetryPolicy { max_retries: 5, base: Duration::from_millis(100), max: Duration::from_millis(1000) };
        for attempt in 0..8 {
            let full = Duration::from_millis((100u64 << attempt).min(1000));
            for _ in 0..50 {
                let d = p.delay(attempt, None);
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?} outside [{:?}, {full:?}]", full / 2);
            }
        }
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = RetryPolicy { max_retries: 5, base: Duration::from_millis(10), max: Duration::from_millis(20) };
        assert_eq!(p.delay(0, Some(Duration::from_secs(2))), Duration::from_secs(2));
    }

    #[test]
    fn retry_after_headers() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        let mut d = reqwest::header::HeaderMap::new();
        d.insert("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&d), None);
    }

    #[test]
    fn which_statuses_retry() {
        for s in [408, 409, 429, 500, 502, 503, 529] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 422] {
            assert!(!retryable_status(s), "{s}");
        }
    }
}
