//! Idle sessions pause: a ready session with no attached client (IDE page, terminal, exec,
//! file transfer, agent run, preview request) that nobody used for `pause_idle_seconds` and
//! whose guest is idle (its QEMU used less than [`BUSY_CPU_PERCENT`] of a core over the last
//! check) is paused (QMP `stop`): it costs memory only. The next request of any kind resumes it
//! transparently ([`SessionManager::ready_vm`] → [`SessionManager::resume_if_paused`]) and the
//! guest's clock is set again. The state stays `ready`; the session JSON says `paused`. Idle
//! timeout and lifetime keep counting while paused.
//!
//! Attachments are counted by [`Attached`] guards that the doors hold for as long as a client is
//! connected; activity timestamps alone cannot tell "an IDE page is open" from "nobody is here".

use super::{LiveSession, SessionManager};
use mayfly_proto::api::SessionState;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A guest whose QEMU used more than this share of one core since the last check is busy (a
/// build, a test run, a server handling requests) and is not paused. An idle TCG guest stays
/// well below it.
pub const BUSY_CPU_PERCENT: f64 = 10.0;

/// Pause state of one live session.
#[derive(Default)]
pub(crate) struct PauseState {
    /// True while the VM is paused.
    pub paused: std::sync::atomic::AtomicBool,
    /// Clients attached now.
    pub clients: std::sync::atomic::AtomicUsize,
    /// Serialises pause and resume of this session.
    pub lock: tokio::sync::Mutex<()>,
    /// The VM's CPU time at the last check, to tell a busy guest from an idle one.
    pub last_cpu: std::sync::Mutex<Option<(Instant, Duration)>>,
}

/// Whether a session should be paused now (a pure decision, table-tested).
pub fn should_pause(clients: usize, idle_for: Duration, pause_after: Duration, cpu_percent: Option<f64>) -> bool {
    !pause_after.is_zero()
        && clients == 0
        && idle_for >= pause_after
        // Unknown CPU use (first check) waits for a measurement.
        && cpu_percent.is_some_and(|p| p < BUSY_CPU_PERCENT)
}

/// Held by a door while a client is attached to a session; the session is not paused meanwhile.
pub struct Attached {
    session: Option<Arc<LiveSession>>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Some(s) = &self.session {
            s.pause.clients.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl SessionManager {
    /// Counts a client attached to session `id` until the guard is dropped (nothing if the
    /// session is not live).
    pub fn attach(&self, id: &str) -> Attached {
        let session = self.live(id);
        if let Some(s) = &session {
            s.pause.clients.fetch_add(1, Ordering::SeqCst);
        }
        Attached { session }
    }

    /// True when session `id`'s VM is paused.
    pub fn is_paused(&self, id: &str) -> bool {
        self.live(id).is_some_and(|s| s.pause.paused.load(Ordering::SeqCst))
    }

    /// Resumes the session's VM if it is paused (every operation on a session goes through
    /// here). A resume that fails leaves the session as it is; the operation then fails on its own.
    pub(super) async fn resume_if_paused(&self, s: &LiveSession) {
        if !s.pause.paused.load(Ordering::SeqCst) {
            return;
        }
        let _g = s.pause.lock.lock().await;
        if !s.pause.paused.load(Ordering::SeqCst) {
            return;
        }
        let Some(vm) = s.vm() else { return };
        match vm.resume().await {
            Ok(took) => {
                s.pause.paused.store(false, Ordering::SeqCst);
                *s.pause.last_cpu.lock().expect("cpu lock") = None;
                self.metrics.session_resumed(took);
                tracing::info!(session = %s.id, ms = took.as_secs_f64() * 1000.0, "session resumed");
            }
            Err(e) => tracing::warn!(session = %s.id, "cannot resume the VM: {e}"),
        }
    }

    /// One pass of the pauser (from the reaper's tick): pauses every session that qualifies.
    pub async fn pause_idle(&self) {
        let pause_after = Duration::from_secs(self.cfg.pause_idle_seconds);
        if pause_after.is_zero() {
            return;
        }
        let now_ms = self.now_ms();
        let candidates: Vec<Arc<LiveSession>> = self.live.lock().expect("live lock").values().cloned().collect();
        for s in candidates {
            if s.state() != SessionState::Ready || s.pause.paused.load(Ordering::SeqCst) {
                continue;
            }
            let Some(vm) = s.vm() else { continue };
            let cpu = cpu_percent(&s, vm.cpu_time());
            let idle_for = Duration::from_millis(now_ms.saturating_sub(s.last_active_ms.load(Ordering::Relaxed)));
            if !should_pause(s.pause.clients.load(Ordering::SeqCst), idle_for, pause_after, cpu) {
                continue;
            }
            let _g = s.pause.lock.lock().await;
            // Re-checked under the lock: a client may have arrived meanwhile.
            if s.pause.clients.load(Ordering::SeqCst) > 0 || s.state() != SessionState::Ready {
                continue;
            }
            match vm.pause().await {
                Ok(()) => {
                    s.pause.paused.store(true, Ordering::SeqCst);
                    tracing::info!(session = %s.id, idle_s = idle_for.as_secs(), cpu_percent = cpu.unwrap_or(0.0), "session paused (idle)");
                }
                Err(e) => tracing::warn!(session = %s.id, "cannot pause the VM: {e}"),
            }
        }
    }
}

/// The VM's CPU use (percent of one core) since the previous call; `None` on the first.
fn cpu_percent(s: &LiveSession, now_cpu: Option<Duration>) -> Option<f64> {
    let now_cpu = now_cpu?;
    let now = Instant::now();
    let prev = s.pause.last_cpu.lock().expect("cpu lock").replace((now, now_cpu));
    let (at, cpu) = prev?;
    let wall = now.duration_since(at).as_secs_f64();
    (wall > 0.0).then(|| now_cpu.saturating_sub(cpu).as_secs_f64() * 100.0 / wall)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_decisions() {
        let min = Duration::from_secs(60);
        let s = Duration::from_secs;
        // (clients, idle for, pause after, cpu %, pause?)
        let table = [
            (0, s(61), min, Some(1.0), true),
            (0, s(60), min, Some(9.9), true),
            (1, s(600), min, Some(0.0), false), // an IDE page is open
            (0, s(59), min, Some(0.0), false),  // used recently
            (0, s(600), min, Some(50.0), false), // a build runs
            (0, s(600), min, None, false),      // not measured yet
            (0, s(600), Duration::ZERO, Some(0.0), false), // pausing is off
        ];
        for (clients, idle, after, cpu, want) in table {
            assert_eq!(should_pause(clients, idle, after, cpu), want, "{clients} {idle:?} {after:?} {cpu:?}");
        }
    }
}
