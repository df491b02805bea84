//! A run ends `cancelled` with "the session ended" when its session leaves `ready` (a delete, the
//! reaper). Two paths lead there: a task that waits for the state change (a run waiting on the
//! model, or on a long command), and a check after every tool call. The check matters because
//! the end of the VM also ends the tool's command: without it the tool returns first and the run
//! takes another turn, racing the task (seen as a run `failed` on that turn's model request).

use mayfly_proto::api::SessionState;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub(crate) struct SessionEnd {
    state: watch::Receiver<SessionState>,
    cancel: CancellationToken,
    /// Why the run was cancelled; the first reason set wins (a user's cancel, or this).
    reason: Arc<Mutex<Option<String>>>,
}

impl SessionEnd {
    pub(crate) fn new(state: watch::Receiver<SessionState>, cancel: CancellationToken, reason: Arc<Mutex<Option<String>>>) -> Self {
        SessionEnd { state, cancel, reason }
    }

    /// Cancels the run if the session is no longer ready; true if so.
    pub(crate) fn check(&self) -> bool {
        if *self.state.borrow() == SessionState::Ready {
            return false;
        }
        self.fire();
        true
    }

    /// Waits for the session to leave `ready`, then cancels the run.
    pub(crate) async fn wait(mut self) {
        let _ = self.state.wait_for(|s| *s != SessionState::Ready).await;
        self.fire();
    }

    fn fire(&self) {
        self.reason.lock().expect("reason lock").get_or_insert_with(|| "the session ended".into());
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_that_left_ready_cancels_with_its_reason_unless_one_was_given() {
        let (tx, rx) = watch::channel(SessionState::Ready);
        let reason = Arc::new(Mutex::new(None));
        let end = SessionEnd::new(rx, CancellationToken::new(), reason.clone());
        assert!(!end.check());
        assert!(!end.cancel.is_cancelled());
        tx.send(SessionState::Stopping).unwrap();
        assert!(end.check());
        assert!(end.cancel.is_cancelled());
        assert_eq!(reason.lock().unwrap().as_deref(), Some("the session ended"));
        *reason.lock().unwrap() = Some("cancelled by the user".into());
        end.check();
        assert_eq!(reason.lock().unwrap().as_deref(), Some("cancelled by the user"), "the first reason stays");
    }
}
