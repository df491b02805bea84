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
    if now >= s.expires_at {
        Some("max lifetime reached")
    } else if idle_for >= s.idle_timeout {
        Some("idle timeout")
    } else {
        None
    }
}

impl SessionManager {
    /// One pass: deletes every due session (concurrently) and waits for them.
    pub async fn reap_due(&self) {
        let now = OffsetDateTime::now_utc();
        let now_ms = self.epoch.elapsed().as_millis() as u64;
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
            if let Err(e) = self.delete(id, why).await {
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
                }
                _ = self.shutdown.cancelled() => return,
            }
        }
    }
}
