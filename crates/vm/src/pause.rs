//! Pausing and resuming a running VM (QMP `stop` / `cont`), for idle sessions: a paused guest
//! uses no CPU and keeps its memory, devices and disk as they are. Its clock stands still while
//! paused, so a resume sets the wall clock again through the guest channel.
//!
//! Also the VM process's CPU time (from `/proc/<pid>/stat`), which tells an idle guest from a
//! busy one.

use crate::qemu::QemuVm;
use crate::qmp::Qmp;
use crate::snapshot::fresh_identity;
use crate::VmError;
use mayfly_proto::msg::Identity;
use std::time::{Duration, Instant};

/// Limit for one QMP run-state change.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);

impl QemuVm {
    async fn run_state(&self, command: &'static str) -> Result<(), VmError> {
        let qmp_err = |source| VmError::Qmp { vm: self.id.clone(), source };
        let change = async {
            let mut qmp = Qmp::connect(&self.run.qmp()).await.map_err(qmp_err)?;
            qmp.execute(command, None).await.map_err(qmp_err)?;
            Ok(())
        };
        tokio::time::timeout(QMP_TIMEOUT, change)
            .await
            .unwrap_or_else(|_| Err(VmError::Qmp { vm: self.id.clone(), source: crate::qmp::QmpError::Timeout(command.into()) }))
    }

    pub(crate) async fn pause_vm(&self) -> Result<(), VmError> {
        self.run_state("stop").await
    }

    /// Continues the guest and sets its clock; returns how long the guest took to be usable.
    pub(crate) async fn resume_vm(&self) -> Result<Duration, VmError> {
        let t0 = Instant::now();
        self.run_state("cont").await?;
        self.set_clock().await;
        Ok(t0.elapsed())
    }

    /// For an adopted VM that was found paused and continued for its guest's HELLO: sets its
    /// clock and pauses it again. False (left running, which only costs CPU until the idle pauser
    /// takes it) when the pause fails.
    pub(crate) async fn pause_again(&self) -> bool {
        self.set_clock().await;
        match self.pause_vm().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(vm = %self.id, "cannot pause the adopted VM again: {e}");
                false
            }
        }
    }

    /// Sets the guest's wall clock from the host's (it stood still while paused).
    async fn set_clock(&self) {
        let clock = Identity { unix_time_ns: fresh_identity("").unix_time_ns, ..Default::default() };
        if let Err(e) = self.channel.set_identity(clock).await {
            // The guest runs; only its clock may be behind. Said, not fatal.
            tracing::warn!(vm = %self.id, "cannot set the guest's clock after a pause: {e}");
        }
    }

    pub(crate) fn process_cpu_time(&self) -> Option<Duration> {
        cpu_time(self.pid)
    }
}

/// User + system CPU time of process `pid` so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid … utime(14) stime(15)`: fields after the last ')' start at 3.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_millis(ticks * 1000 / hz))
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_a_cpu_time_that_grows() {
        let pid = std::process::id();
        let before = super::cpu_time(pid).expect("own stat");
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        while t0.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(super::cpu_time(pid).unwrap() > before);
        assert!(super::cpu_time(u32::MAX).is_none());
    }
}
