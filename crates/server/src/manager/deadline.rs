//! Moving a session's end of life (the E2B door's `set_timeout`; the reaper enforces it).

use super::{SessionError, SessionManager};
use time::OffsetDateTime;

impl SessionManager {
    /// Sets when session `sref` ends (the reaper deletes it then), capped by `max_ttl_seconds`
    /// counted from its creation. Returns the new end of life.
    pub async fn set_expiry(&self, sref: &crate::access::SessionRef, at: OffsetDateTime) -> Result<OffsetDateTime, SessionError> {
        let id = sref.id();
        let record = self.record(id).await?;
        let cap = record.created_at + std::time::Duration::from_secs(self.cfg.max_ttl_seconds);
        let at = at.min(cap);
        let Some(live) = self.live(id) else { return Err(self.not_ready(id).await) };
        self.store.set_expires_at(id, at).await?;
        *live.expires_at.lock().expect("expiry lock") = at;
        tracing::info!(session = id, expires = %super::rfc3339(at), "end of life moved");
        Ok(at)
    }
}
