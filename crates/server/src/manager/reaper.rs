//! The reaper: destroys ready sessions that have been idle longer than their idle timeout or
//! have outlived their maximum lifetime, then pauses idle ones (`pause`). Runs every
//! `reaper_interval_seconds` until shutdown.

use super::{LiveSession, SessionManager};
use mayfly_proto::api::SessionState;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Why a session is due, if it is.
fn due(s: &LiveSession, now: OffsetDateTime, idle_for: Duration) -> Option<&'static str> {
    if s.state() != SessionState::Ready {
        return None;
    }
    if now >= *s.expires_at.lock().expect("expiry lock") {
        Some("max lifetime reached")
    } else if idle_for >= s.idle_timeout {
        Some("idle timeout")
    } else {
        None
    }
}

/// Activity newer than what the store holds by this much is written (one row update per active
/// session a minute at most), so a restarted server's idle timers go on from nearly where they were.
const ACTIVITY_STORE_EVERY: Duration = Duration::from_secs(60);

impl SessionManager {
    /// Writes each live session's last activity when it is `at_least` newer than the stored one
    /// (`Duration::ZERO`: every change, at a graceful stop).
    pub(super) async fn store_activity(&self, at_least: Duration) {
        let now_ms = self.now_ms();
        let now = OffsetDateTime::now_utc();
        let due: Vec<Arc<LiveSession>> = self.live.lock().expect("live lock").values().cloned().collect();
        for s in due {
            let active = s.last_active_ms.load(Ordering::Relaxed);
            let stored = s.stored_active_ms.load(Ordering::Relaxed);
            if active <= stored || active - stored < at_least.as_millis() as u64 && stored != 0 {
                continue;
            }
            let at = now - Duration::from_millis(now_ms.saturating_sub(active));
            match self.store.set_last_active(&s.id, at).await {
                Ok(()) => s.stored_active_ms.store(active, Ordering::Relaxed),
                Err(e) => tracing::debug!(session = %s.id, "cannot store the last activity: {e}"),
            }
        }
    }

    /// One pass: deletes every due session (concurrently) and waits for them.
    pub async fn reap_due(&self) {
        let now = OffsetDateTime::now_utc();
        let now_ms = self.now_ms();
        let due: Vec<(String, &'static str)> = {
            let live = self.live.lock().expect("live lock");
            live.values()
                .filter_map(|s| {
                    let idle = Duration::from_millis(now_ms.saturating_sub(s.last_active_ms.load(Ordering::Relaxed)));
                    due(s, now, idle).map(|why| (s.id.clone(), why))
                })
                .collect()
        };
        let deletes = due.iter().map(|(id, why)| async move {
            tracing::info!(session = %id, reason = why, "reaping session");
            if let Err(e) = self.delete(&crate::access::system(id, "reaper"), why).await {
                tracing::debug!(session = %id, "reaper: {e}");
            }
        });
        futures::future::join_all(deletes).await;
    }

    /// Runs [`SessionManager::reap_due`] every `interval` until shutdown.
    pub async fn run_reaper(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.reap_due().await;
                    self.pause_idle().await;
                    self.store_activity(ACTIVITY_STORE_EVERY).await;
                }
                _ = self.shutdown.cancelled() => return,
            }
        }
    }
}
