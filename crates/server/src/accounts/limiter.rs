//! Failed sign-in attempts, limited per client address and per account: after `max` failures
//! within `window`, further attempts are refused until the oldest failure leaves the window.
//! A success clears the account's count (not the address's).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct FailureLimiter {
    max: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl FailureLimiter {
    pub fn new(max: usize, window: Duration) -> Self {
        Self { max: max.max(1), window, failures: Mutex::new(HashMap::new()) }
    }

    /// `Err(retry_after)` when any of `keys` is over the limit.
    pub fn check(&self, keys: &[&str], now: Instant) -> Result<(), Duration> {
        let mut map = self.failures.lock().expect("limiter lock");
        let mut wait = Duration::ZERO;
        for k in keys {
            if let Some(q) = map.get_mut(*k) {
                while q.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
                    q.pop_front();
                }
                if q.len() >= self.max {
                    let oldest = *q.front().expect("non-empty");
                    wait = wait.max(self.window.saturating_sub(now.duration_since(oldest)));
                }
            }
        }
        map.retain(|_, q| !q.is_empty());
        if wait > Duration::ZERO {
            Err(wait.max(Duration::from_secs(1)))
        } else {
            Ok(())
        }
    }

    pub fn failed(&self, keys: &[&str], now: Instant) {
        let mut map = self.failures.lock().expect("limiter lock");
        for k in keys {
            map.entry(k.to_string()).or_default().push_back(now);
        }
    }

    pub fn clear(&self, key: &str) {
        self.failures.lock().expect("limiter lock").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key_within_the_window() {
        let l = FailureLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(l.check(&["ip:1", "acct:a"], t0).is_ok(), "attempt {i}");
            l.failed(&["ip:1", "acct:a"], t0);
        }
        let wait = l.check(&["ip:1", "acct:b"], t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50), "the address is limited whatever the account");
        assert!(l.check(&["ip:2", "acct:a"], t0).is_err(), "the account is limited from any address");
        assert!(l.check(&["ip:2", "acct:c"], t0).is_ok());
        assert!(l.check(&["ip:1"], t0 + Duration::from_secs(60)).is_ok(), "failures leave the window");
        l.clear("acct:a");
        assert!(l.check(&["acct:a"], t0).is_ok());
    }
}
