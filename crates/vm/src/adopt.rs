//! Taking over a VM that an earlier control plane started (after a crash, restart or upgrade of
//! `mayfly serve`): QEMU outlives the server by design, and its run directory says what it is.
//!
//! Adoption checks, in order: the record (`vm.json`) parses and names the spec; the recorded pid
//! is still this VM's QEMU (its command line names the VM, so a reused pid is never taken); QMP
//! answers and the VM is whole (a paused one, idle or left mid-fork, is continued for the check;
//! one that never finished an incoming migration is refused); the guest daemon answers a HELLO in
//! the protocol this binary speaks. A VM found paused then gets its clock set and is paused again
//! ([`Vm::adopted_paused`](crate::Vm::adopted_paused)). Any failure leaves the VM for the caller
//! to reap.
//!
//! An adopted QEMU is not our child, so its exit is observed through a pidfd: the exit status is
//! unknown (its new parent reaps it), only the fact of the exit.

use crate::channel::GuestChannel;
use crate::confine::cgroup;
use crate::qemu::{QemuBackend, QemuVm};
use crate::qmp::Qmp;
use crate::rundir::{pid_is_vm, RunDir, VmRecord};
use crate::{ExitInfo, Vm, VmError};
use mayfly_proto::error_chain;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

/// Limit for QMP and the guest's HELLO on an adopted VM (a healthy guest answers in milliseconds).
const ADOPT_TIMEOUT: Duration = Duration::from_secs(10);

impl QemuBackend {
    /// Takes over VM `id` left running by an earlier control plane. On error nothing was
    /// changed: the caller decides (normally: reap it and fail its session with the reason).
    pub async fn adopt(&self, id: &str) -> Result<Arc<dyn Vm>, VmError> {
        let refuse = |reason: String| VmError::Adopt { vm: id.to_string(), reason };
        if !crate::valid_id(id) {
            return Err(VmError::InvalidId(id.to_string()));
        }
        let run = RunDir::new(&self.cfg.state_dir, id);
        let rec = match VmRecord::load(&run.record()) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(refuse("its run directory has no vm.json".into())),
            Err(e) => return Err(refuse(format!("its vm.json is unreadable ({e})"))),
        };
        if rec.id != id {
            return Err(refuse(format!("its vm.json names VM {:?}", rec.id)));
        }
        let (Some(spec), Some(memory)) = (rec.spec.clone(), rec.memory.clone()) else {
            return Err(refuse("its vm.json was written by a Mayfly without re-adoption".into()));
        };
        let exited = watch_exit(id, rec.pid, self.own_cgroups(id, &rec.cgroups))?;
        let stop_requested = exited.1;
        let exit_rx = exited.0;
        let was_paused = resume_if_paused(id, &run).await?;
        let channel = GuestChannel::new(id, &run.channel(), ADOPT_TIMEOUT);
        // The handshake's own limit is ADOPT_TIMEOUT; this one only guards the connect.
        match tokio::time::timeout(ADOPT_TIMEOUT * 2, channel.connect()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(refuse(format!("its guest daemon does not answer: {}", error_chain(&e)))),
            Err(_) => return Err(refuse(format!("its guest daemon did not answer within {} s", ADOPT_TIMEOUT.as_secs()))),
        }
        let mut vm = QemuVm {
            id: id.to_string(),
            pid: rec.pid,
            run,
            channel,
            exit_rx,
            stop_requested,
            boot_time: Duration::ZERO,
            spec,
            memory,
            detached: AtomicBool::new(false),
            adopted_paused: false,
        };
        // A VM found paused (an idle session's, or a fork's source the old control plane left
        // mid-fork) goes back to sleep once its guest has answered, with its clock set: a
        // restart must not wake every idle session. The next request resumes it.
        if was_paused {
            vm.adopted_paused = vm.pause_again().await;
        }
        tracing::info!(vm = id, pid = rec.pid, image = %rec.image, paused = vm.adopted_paused, "VM adopted");
        Ok(Arc::new(vm))
    }
}

/// Continues a paused VM so that its guest can answer; returns whether it was paused. Refuses one
/// that is not a whole VM.
async fn resume_if_paused(id: &str, run: &RunDir) -> Result<bool, VmError> {
    let refuse = |reason: String| VmError::Adopt { vm: id.to_string(), reason };
    let status = async {
        let mut qmp = Qmp::connect(&run.qmp()).await?;
        let status = qmp.execute("query-status", None).await?;
        let name = status.get("status").and_then(|s| s.as_str()).unwrap_or("").to_string();
        if matches!(name.as_str(), "paused" | "postmigrate") {
            tracing::info!(vm = id, status = %name, "adopted VM is paused; continuing it until its guest answers");
            qmp.execute("cont", None).await?;
        }
        Ok::<_, crate::qmp::QmpError>(name)
    };
    match tokio::time::timeout(ADOPT_TIMEOUT, status).await {
        Ok(Ok(s)) if matches!(s.as_str(), "paused" | "postmigrate") => Ok(true),
        Ok(Ok(s)) if s == "running" => Ok(false),
        Ok(Ok(s)) => Err(refuse(format!("QEMU reports status {s:?} (not a running VM)"))),
        Ok(Err(e)) => Err(refuse(format!("QMP: {}", error_chain(&e)))),
        Err(_) => Err(refuse(format!("QMP did not answer within {} s", ADOPT_TIMEOUT.as_secs()))),
    }
}

type ExitWatch = (watch::Receiver<Option<ExitInfo>>, Arc<AtomicBool>);

/// Watches QEMU `pid` (not our child) through a pidfd; on exit removes its cgroups, then reports.
fn watch_exit(id: &str, pid: u32, cgroups: Vec<std::path::PathBuf>) -> Result<ExitWatch, VmError> {
    let refuse = |reason: String| VmError::Adopt { vm: id.to_string(), reason };
    // SAFETY: plain syscall with no pointers; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(refuse(if e.raw_os_error() == Some(libc::ESRCH) { "QEMU is no longer running".into() } else { format!("pidfd_open: {e}") }));
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // Checked after the pidfd exists: the pidfd refers to this very process, so a pid reused
    // between the two checks cannot be mistaken for the VM.
    if !pid_is_vm(pid, id) {
        return Err(refuse(if exited(pid) {
            "QEMU is no longer running".into()
        } else {
            format!("pid {pid} is no longer this VM's QEMU (another program has it)")
        }));
    }
    // SAFETY: `PidFd` owns the descriptor and returns the same one for its whole life.
    let fd = unsafe { AsyncFd::register_with_interest(PidFd(fd), tokio::io::Interest::READABLE) }
        .map_err(|e| refuse(format!("watching pid {pid}: {e}")))?;
    let (tx, rx) = watch::channel(None::<ExitInfo>);
    let requested = Arc::new(AtomicBool::new(false));
    let req = requested.clone();
    let vm = id.to_string();
    tokio::spawn(async move {
        // A pidfd becomes readable when the process exits.
        let _ = fd.readable().await;
        tokio::task::spawn_blocking(move || cgroup::remove_vm(&cgroups)).await.ok();
        let info = ExitInfo { code: None, signal: None, requested: req.load(Ordering::SeqCst) };
        tracing::info!(vm = %vm, requested = info.requested, "adopted VM process exited");
        let _ = tx.send(Some(info));
    });
    Ok((rx, requested))
}

/// True when `pid` is gone or a zombie (exited, not yet reaped by its new parent).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S …`: the state follows the last ')'.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('Z' | 'X'))),
        Err(_) => true,
    }
}

struct PidFd(OwnedFd);

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}
