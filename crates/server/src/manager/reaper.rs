//! The reaper: destroys ready sessions that have been idle longer than their idle timeout or
//! have outlived their maximum lifetime, and lost ones (their node gone) past the same limits,
//! then pauses idle ones (`pause`). Runs every
//! `reaper_interval_seconds` until shutdown.

use super::{LiveSession, SessionManager};
use crate::store::SessionRecord;
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
    over_limit(now, *s.expires_at.lock().expect("expiry lock"), idle_for, s.idle_timeout)
}

/// The limits every session has, live or lost: its lifetime, then its idle timeout.
fn over_limit(now: OffsetDateTime, expires_at: OffsetDateTime, idle_for: Duration, idle_timeout: Duration) -> Option<&'static str> {
    if now >= expires_at {
        Some("max lifetime reached")
    } else if idle_for >= idle_timeout {
        Some("idle timeout")
    } else {
        None
    }
}

/// Why a lost session (its node stopped renewing its lease) is due, if it is: the limits of a
/// live session, read from its row. Nobody can use a lost session, so it would otherwise stay
/// until its node came back, which may be never.
fn lost_due(rec: &SessionRecord, now: OffsetDateTime) -> Option<&'static str> {
    let idle_for = (now - rec.last_active_at.unwrap_or(rec.created_at)).try_into().unwrap_or(Duration::ZERO);
    over_limit(now, rec.expires_at, idle_for, Duration::from_secs(rec.idle_timeout_seconds))
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
        self.reap_lost(now).await;
    }

    /// Ends the lost sessions (of any node) that are due. Every node does it; the first one's
    /// transition wins. A node that comes back finds the row ended and reaps the VM.
    async fn reap_lost(&self, now: OffsetDateTime) {
        let lost = match self.store.list(&[SessionState::Lost]).await {
            Ok(l) => l,
            Err(e) => return tracing::debug!("reaper: cannot list lost sessions: {e}"),
        };
        for rec in lost {
            let Some(why) = lost_due(&rec, now) else { continue };
            tracing::info!(session = %rec.id, node = rec.node.as_deref().unwrap_or(""), reason = why, "reaping lost session");
            if let Err(e) = self.delete(&crate::access::system(&rec.id, "reaper"), why).await {
                tracing::debug!(session = %rec.id, "reaper: {e}");
            }
        }
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

#[cfg(test)]
mod tests {
    use super::lost_due;
    use time::{Duration, OffsetDateTime};

    #[test]
    fn a_lost_session_is_due_at_its_lifetime_or_idle_timeout() {
        let now = OffsetDateTime::now_utc();
        let mut rec = crate::store::suite::session("s1", Some("gone"));
        rec.created_at = now - Duration::minutes(10);
        rec.expires_at = now + Duration::hours(1);
        rec.idle_timeout_seconds = 900;
        assert_eq!(lost_due(&rec, now), None, "10 minutes idle, 15 allowed");
        rec.idle_timeout_seconds = 300;
        assert_eq!(lost_due(&rec, now), Some("idle timeout"), "idle since creation");
        rec.last_active_at = Some(now - Duration::minutes(1));
        assert_eq!(lost_due(&rec, now), None, "used a minute ago");
        rec.expires_at = now;
        assert_eq!(lost_due(&rec, now), Some("max lifetime reached"));
    }
}
