//! The audit log: who did what to which session or account, when and from where. Writing never
//! fails the action it records (a store error is logged); entries never hold secrets.

use super::store::{AuditFilter, AuditRecord};
use super::{AccountError, Accounts, Caller, Principal};
use mayfly_proto::accounts::{AuditEntry, AuditPage};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// An admin's access to one session of someone else is recorded at most this often.
const ADMIN_ACCESS_EVERY: Duration = Duration::from_secs(3600);

impl Accounts {
    pub async fn audit(&self, by: &Caller, action: &str, session: Option<&str>, detail: serde_json::Value) {
        self.audit_as(by.who.user_id(), &by.who.label(), action, session, detail, by.ip.as_deref()).await;
    }

    pub(super) async fn audit_as(
        &self,
        user_id: Option<&str>,
        actor: &str,
        action: &str,
        session: Option<&str>,
        detail: serde_json::Value,
        ip: Option<&str>,
    ) {
        let rec = AuditRecord {
            at: OffsetDateTime::now_utc(),
            user_id: user_id.map(str::to_string),
            actor: actor.to_string(),
            action: action.to_string(),
            session: session.map(str::to_string),
            detail,
            ip: ip.map(str::to_string),
        };
        tracing::info!(target: "mayfly::audit", actor, action, session = session.unwrap_or(""), ip = ip.unwrap_or(""), "audit");
        if let Err(e) = self.store.append_audit(&rec).await {
            tracing::error!("cannot write the audit log: {}", mayfly_proto::error_chain(&e));
        }
    }

    /// Records an admin's access to a session owned by someone else (once an hour per admin and
    /// session; the server's own work is not recorded).
    pub async fn audit_admin_access(&self, by: &Caller, session: &str, owner: Option<&str>, action: &str) {
        if matches!(by.who, Principal::System(_)) {
            return;
        }
        let key = (by.who.label(), session.to_string());
        {
            let mut seen = self.admin_seen.lock().expect("admin_seen lock");
            let now = Instant::now();
            if seen.get(&key).is_some_and(|t| now.duration_since(*t) < ADMIN_ACCESS_EVERY) {
                return;
            }
            seen.retain(|_, t| now.duration_since(*t) < ADMIN_ACCESS_EVERY);
            seen.insert(key, now);
        }
        self.audit(by, "admin_access", Some(session), serde_json::json!({"owner": owner, "action": action})).await;
    }

    pub async fn audit_page(&self, mut filter: AuditFilter) -> Result<AuditPage, AccountError> {
        filter.limit = filter.limit.clamp(1, 1000);
        let rows = self.store.audit(&filter).await?;
        let next_before = (rows.len() as u32 == filter.limit).then(|| rows.last().map(|(s, _)| *s)).flatten();
        let entries = rows
            .into_iter()
            .map(|(seq, r)| AuditEntry {
                seq,
                at: crate::manager::rfc3339(r.at),
                user: r.user_id,
                actor: r.actor,
                action: r.action,
                session: r.session,
                detail: r.detail,
                ip: r.ip,
            })
            .collect();
        Ok(AuditPage { entries, next_before })
    }
}
