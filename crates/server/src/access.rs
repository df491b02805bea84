//! The one place that decides who may touch a session.
//!
//! A [`SessionRef`] is a capability: only this module can make one, and every session operation
//! of the manager that a door (REST, WebSocket, previews, the agent) reaches takes one instead of
//! a bare id. [`SessionManager::open`] makes it for a caller: a member gets their own sessions,
//! an admin (or the server token) gets every session and, for someone else's, an audit entry;
//! anyone else gets exactly the answer a missing session gives ([`SessionError::NotFound`]), so
//! nobody learns which ids exist. The server's own background work uses [`system`], easy to find
//! with grep.

use crate::accounts::{Caller, Principal};
use crate::manager::{SessionError, SessionManager};
use mayfly_proto::api::Visibility;

/// What a preview cookie proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviewPass {
    /// Minted for the owner or an admin: opens private, team and public ports.
    Owner,
    /// Minted for another signed-in user: opens team and public ports.
    Team,
    None,
}

/// Why a preview request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviewDenied {
    /// Nobody is signed in: a browser goes through the sign-in exchange.
    SignIn,
    /// The session or port is gone, or not the caller's (the same answer).
    Gone,
}

/// What the caller is about to do (recorded with an admin's access).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Exec,
    Files,
    Terminal,
    Events,
    Ports,
    Preview,
    Fork,
    Agent,
    Delete,
    Visibility,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Exec => "exec",
            Action::Files => "files",
            Action::Terminal => "terminal",
            Action::Events => "events",
            Action::Ports => "ports",
            Action::Preview => "preview",
            Action::Fork => "fork",
            Action::Agent => "agent",
            Action::Delete => "delete",
            Action::Visibility => "visibility",
        }
    }
}

/// Permission to act on one session, granted to one caller.
#[derive(Debug, Clone)]
pub struct SessionRef {
    id: String,
    owner: Option<String>,
    caller: Caller,
}

impl SessionRef {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The session's owner (`None`: made with the server token).
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    pub fn caller(&self) -> &Caller {
        &self.caller
    }
}

/// A reference for the server's own work on session `id` (`part`: reaper, pool, agent…).
pub fn system(id: &str, part: &'static str) -> SessionRef {
    SessionRef { id: id.to_string(), owner: None, caller: Caller::system(part) }
}

/// True when `who` may use a session owned by `owner` without being an admin.
pub fn owns(who: &Principal, owner: Option<&str>) -> bool {
    matches!((who.user_id(), owner), (Some(u), Some(o)) if u == o)
}

impl SessionManager {
    /// `caller`'s access to session `id` for `action`, or "not found" (also when it exists but
    /// is not theirs).
    pub async fn open(&self, caller: &Caller, id: &str, action: Action) -> Result<SessionRef, SessionError> {
        let owner = self.owner_of(id).await?.ok_or_else(|| SessionError::NotFound(id.to_string()))?;
        let sref = SessionRef { id: id.to_string(), owner: owner.clone(), caller: caller.clone() };
        if owns(&caller.who, owner.as_deref()) {
            return Ok(sref);
        }
        if !caller.who.is_admin() {
            return Err(SessionError::NotFound(id.to_string()));
        }
        if owner.is_some() {
            self.accounts().audit_admin_access(caller, id, owner.as_deref(), action.as_str()).await;
        }
        Ok(sref)
    }

    /// Access to port `port` of session `id` through a preview, by its visibility:
    /// `public` — anyone; `team` — any signed-in caller, or a preview cookie of either scope;
    /// `private` — the owner or an admin (`caller`), or an owner-scope preview cookie.
    pub async fn open_preview(
        &self,
        caller: Option<&Caller>,
        pass: PreviewPass,
        id: &str,
        port: u16,
    ) -> Result<SessionRef, PreviewDenied> {
        let visibility = self.port_visibility(id, port).ok_or(PreviewDenied::Gone)?;
        let owner = self.owner_of(id).await.ok().flatten().ok_or(PreviewDenied::Gone)?;
        let anyone = || SessionRef { id: id.to_string(), owner: owner.clone(), caller: Caller::system("preview") };
        match visibility {
            Visibility::Public => Ok(anyone()),
            Visibility::Team if pass != PreviewPass::None => Ok(anyone()),
            Visibility::Private if pass == PreviewPass::Owner => Ok(anyone()),
            Visibility::Team => match caller {
                Some(c) => Ok(SessionRef { id: id.to_string(), owner, caller: c.clone() }),
                None => Err(PreviewDenied::SignIn),
            },
            Visibility::Private => match caller {
                Some(c) => self.open(c, id, Action::Preview).await.map_err(|_| PreviewDenied::Gone),
                None => Err(PreviewDenied::SignIn),
            },
        }
    }

    /// Which preview cookie a signed-in caller gets for a port: owner scope for the owner or an
    /// admin, team scope for anyone else on a team or public port; none ("not found") otherwise.
    pub async fn preview_pass(&self, caller: &Caller, id: &str, port: u16) -> Result<PreviewPass, SessionError> {
        if self.open(caller, id, Action::Preview).await.is_ok() {
            return Ok(PreviewPass::Owner);
        }
        match self.port_visibility(id, port) {
            Some(Visibility::Team | Visibility::Public) => Ok(PreviewPass::Team),
            _ => Err(SessionError::NotFound(id.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mayfly_proto::accounts::Role;

    #[test]
    fn ownership() {
        let alice = Principal::User { id: "ua".into(), email: "a@x.y".into(), role: Role::Member };
        assert!(owns(&alice, Some("ua")));
        assert!(!owns(&alice, Some("ub")));
        assert!(!owns(&alice, None), "server-token sessions belong to no member");
        assert!(!owns(&Principal::ServerToken, None), "admins pass by role, not ownership");
    }
}
