//! The session lifecycle as a table: [`transition`] is the one check every state change passes.
//!
//! ```text
//! creating ──▶ ready ──▶ stopping ──▶ destroyed
//!    │  └────────────────────▲  │          ▲
//!    │ (DELETE while booting)   │          │ (DELETE dismisses a failed session)
//!    └──────▶ failed ◀──────────┴── from creating, ready or stopping
//!
//!   ready ──▶ lost ──▶ ready | failed | destroyed
//! ```
//! `destroyed` is final. `failed` only moves on to `destroyed`, when a user deletes it. `lost`
//! is written by another node when the session's node stops renewing its lease
//! ([`crate::cluster::sweep`]); the node takes it back (`ready`) or fails it when it returns, and
//! a delete from any node ends it.

use mayfly_proto::api::SessionState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal session transition {} -> {}", .from.as_str(), .to.as_str())]
pub struct IllegalTransition {
    pub from: SessionState,
    pub to: SessionState,
}

/// Ok when a session may move from `from` to `to`.
pub fn transition(from: SessionState, to: SessionState) -> Result<(), IllegalTransition> {
    use SessionState::*;
    let legal = matches!(
        (from, to),
        (Creating, Ready)
            | (Creating, Stopping)
            | (Creating, Failed)
            | (Ready, Stopping)
            | (Ready, Failed)
            | (Stopping, Destroyed)
            | (Stopping, Failed)
            | (Failed, Destroyed)
            | (Ready, Lost)
            | (Lost, Ready)
            | (Lost, Failed)
            | (Lost, Destroyed)
    );
    if legal {
        Ok(())
    } else {
        Err(IllegalTransition { from, to })
    }
}

/// States in which a session holds (or is acquiring) a VM; these count against `max_sessions`.
/// A lost session may still run on its node, so it counts there too.
pub fn is_live(state: SessionState) -> bool {
    matches!(state, SessionState::Creating | SessionState::Ready | SessionState::Stopping | SessionState::Lost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ALL_STATES;
    use SessionState::*;

    #[test]
    fn transition_table() {
        // (from, to, legal): every pair of states is listed once.
        let table = [
            (Creating, Creating, false),
            (Creating, Ready, true),
            (Creating, Stopping, true),
            (Creating, Destroyed, false),
            (Creating, Failed, true),
            (Ready, Creating, false),
            (Ready, Ready, false),
            (Ready, Stopping, true),
            (Ready, Destroyed, false),
            (Ready, Failed, true),
            (Stopping, Creating, false),
            (Stopping, Ready, false),
            (Stopping, Stopping, false),
            (Stopping, Destroyed, true),
            (Stopping, Failed, true),
            (Destroyed, Creating, false),
            (Destroyed, Ready, false),
            (Destroyed, Stopping, false),
            (Destroyed, Destroyed, false),
            (Destroyed, Failed, false),
            (Failed, Creating, false),
            (Failed, Ready, false),
            (Failed, Stopping, false),
            (Failed, Destroyed, true),
            (Failed, Failed, false),
            (Creating, Lost, false),
            (Ready, Lost, true),
            (Stopping, Lost, false),
            (Destroyed, Lost, false),
            (Failed, Lost, false),
            (Lost, Creating, false),
            (Lost, Ready, true),
            (Lost, Stopping, false),
            (Lost, Destroyed, true),
            (Lost, Failed, true),
            (Lost, Lost, false),
        ];
        assert_eq!(table.len(), ALL_STATES.len() * ALL_STATES.len());
        for (from, to, legal) in table {
            assert_eq!(transition(from, to).is_ok(), legal, "{from:?} -> {to:?}");
        }
        let e = transition(Destroyed, Ready).unwrap_err();
        assert_eq!(e.to_string(), "illegal session transition destroyed -> ready");
    }

    #[test]
    fn live_states_are_the_non_terminal_ones() {
        for s in ALL_STATES {
            assert_eq!(is_live(s), !s.is_terminal(), "{s:?}");
        }
    }
}
