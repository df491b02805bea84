//! Per-user quotas on live sessions: how many, and their vCPUs and memory summed. Counted by the
//! manager under the lock that registers a new session, so concurrent creates cannot overshoot.

use super::SessionError;
use mayfly_proto::accounts::{QuotaUsage, Quotas};
use mayfly_proto::api::SessionSize;

/// Whether one more session of size `new` fits `q`, given the owner's live sessions' sizes.
pub fn check(q: &Quotas, live: impl Iterator<Item = Option<SessionSize>>, new: Option<SessionSize>) -> Result<(), SessionError> {
    let (mut n, mut vcpus, mut mem) = (0u64, 0u64, 0u64);
    for z in live {
        n += 1;
        vcpus += z.map_or(0, |z| u64::from(z.vcpus));
        mem += z.map_or(0, |z| u64::from(z.memory_mib));
    }
    let (nv, nm) = new.map_or((0, 0), |z| (u64::from(z.vcpus), u64::from(z.memory_mib)));
    let over = |quota: &'static str, limit: u32, used: u64, adds: u64, unit: &str| SessionError::Quota {
        quota,
        message: format!("quota {quota} exceeded: the limit is {limit}{unit}, {used}{unit} in use, this session needs {adds}{unit} more"),
    };
    if let Some(limit) = q.max_sessions {
        if n + 1 > u64::from(limit) {
            return Err(over("max_sessions", limit, n, 1, ""));
        }
    }
    if let Some(limit) = q.max_vcpus {
        if vcpus + nv > u64::from(limit) {
            return Err(over("max_vcpus", limit, vcpus, nv, ""));
        }
    }
    if let Some(limit) = q.max_memory_mib {
        if mem + nm > u64::from(limit) {
            return Err(over("max_memory_mib", limit, mem, nm, " MiB"));
        }
    }
    Ok(())
}

impl super::SessionManager {
    /// What user `user` has live now (agent runs are the agent service's to count).
    pub fn usage_of(&self, user: &str) -> QuotaUsage {
        let live = self.live.lock().expect("live lock");
        let mut u = QuotaUsage::default();
        for s in live.values().filter(|s| s.owner.as_deref() == Some(user) && super::state::is_live(s.state())) {
            u.sessions += 1;
            u.vcpus += s.size.map_or(0, |z| z.vcpus);
            u.memory_mib += s.size.map_or(0, |z| z.memory_mib);
        }
        u
    }

    /// Ends every session of a deleted user (their work is pushed where the session asks).
    pub async fn end_sessions_of(&self, by: &crate::accounts::Caller, user: &str) {
        let ids: Vec<String> = {
            let live = self.live.lock().expect("live lock");
            live.values().filter(|s| s.owner.as_deref() == Some(user)).map(|s| s.id.clone()).collect()
        };
        let mut failed = self.store.list(&[mayfly_proto::api::SessionState::Failed]).await.unwrap_or_default();
        failed.retain(|r| r.owner.as_deref() == Some(user) && !ids.contains(&r.id));
        for id in ids.iter().chain(failed.iter().map(|r| &r.id)) {
            let sref = crate::access::system(id, "user deleted");
            match self.delete(&sref, "its owner was deleted").await {
                Ok(()) => self.accounts.audit(by, "session_delete", Some(id), serde_json::json!({"reason": "owner deleted", "owner": user})).await,
                Err(SessionError::NotFound(_)) => {}
                Err(e) => tracing::warn!(session = %id, "cannot end a deleted user's session: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn z(vcpus: u32, memory_mib: u32) -> Option<SessionSize> {
        Some(SessionSize { vcpus, memory_mib, disk_gib: 4 })
    }

    #[test]
    fn each_quota_is_named_when_exceeded() {
        let q = Quotas { max_sessions: Some(2), max_vcpus: Some(4), max_memory_mib: Some(2048), agent_runs_per_day: None };
        assert!(check(&q, [z(1, 512)].into_iter(), z(1, 512)).is_ok());
        let e = check(&q, [z(1, 512), z(1, 512)].into_iter(), z(1, 512)).unwrap_err();
        assert!(matches!(e, SessionError::Quota { quota: "max_sessions", .. }), "{e}");
        let e = check(&q, [z(3, 512)].into_iter(), z(2, 512)).unwrap_err();
        assert!(e.to_string().contains("max_vcpus") && e.to_string().contains("the limit is 4"), "{e}");
        let e = check(&q, [z(1, 1536)].into_iter(), z(1, 1024)).unwrap_err();
        assert!(matches!(e, SessionError::Quota { quota: "max_memory_mib", .. }), "{e}");
        assert!(check(&Quotas::default(), std::iter::repeat_n(z(8, 8192), 50), z(8, 8192)).is_ok(), "no quota, no limit");
    }
}
