//! Forking a running VM: a new VM that starts from the source's memory, devices and disk at one
//! instant, while the source carries on.
//!
//! 1. Launch the fork while the source still runs: a copy of the source's overlay (same
//!    backing chain: template disk or image base), the source's RAM layout (anonymous, or the
//!    template's RAM file mapped private) and `-incoming defer`. With `-incoming` QEMU opens its
//!    disk inactive and re-reads it when the migration completes. The two QEMUs get one end
//!    each of a socket pair (`getfd` over QMP: they run under different uids and neither may
//!    enter the other's run dir), and the fork listens on its end.
//! 2. Pause the source (`stop`). QEMU drains and flushes its disk, so its overlay file is now
//!    exactly the disk the paused guest sees; it is copied again into the fork's overlay,
//!    through the descriptor kept from step 1.
//! 3. Migrate the paused source into the fork over the socket pair (the whole RAM: a clone's
//!    RAM is private, so `x-ignore-shared` skips nothing); the stream does not pass through the
//!    control plane.
//! 4. `cont` both: the source goes on at once, its clock set again since it stood still. While
//!    it runs, the fork's guest answers and gets a fresh identity (hostname, machine id, clock,
//!    RNG seed).
//!
//! The source is resumed on every path, success or failure. Its guest pauses for the length of
//! steps 2–3, which grows with the RAM the guest uses and the disk it has written.

use crate::qemu::{Launch, QemuBackend, QemuVm};
use crate::snapshot::{fresh_identity, launched_qmp, qmp, qmp_exec, wait_migration};
use crate::{Vm, VmError, VmSpec};
use mayfly_proto::msg::Identity;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Migration bandwidth for forks: local and the source is paused, so no throttling.
const FORK_BANDWIDTH_BYTES: u64 = 64 << 30;
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(120);
/// What QEMU calls the two ends of the migration stream (`getfd` names, one per monitor).
const FD_OUT: &str = "mayfly-fork-out";
const FD_IN: &str = "mayfly-fork-in";

impl QemuBackend {
    pub(crate) async fn fork_vm(&self, source: &QemuVm, id: &str) -> Result<Arc<dyn Vm>, VmError> {
        if source.exited() {
            return Err(VmError::Snapshot {
                dir: source.id().to_string(),
                reason: "the source VM is not running".into(),
            });
        }
        let t0 = Instant::now();
        let mut src = qmp(source.id(), &source.run().qmp()).await?;
        // Everything that does not need the source paused happens first: the fork's QEMU starts
        // and waits for the stream on its end of a socket pair.
        let mut fork = self.prepare_fork(source, &mut src, id).await?;
        if let Err(e) = qmp_exec(&mut src, source.id(), "stop", None).await {
            // Whatever state the failed command left the source in, it runs on.
            let _ = qmp_exec(&mut src, source.id(), "cont", None).await;
            return Err(self.boot_error(&fork.spec, &fork.launched, format!("cannot pause the source: {e}")).await);
        }
        let paused = Instant::now();
        let migrated = match self.migrate_paused(source, &mut src, &mut fork).await {
            Ok(()) => Ok((fork.spec, fork.launched, fork.cleanup)),
            Err(e) => Err(self.boot_error(&fork.spec, &fork.launched, format!("fork failed: {e}")).await),
        };
        // The source goes on as soon as its state is in the fork; the fork's own start-up
        // (its guest answering, its identity) runs while the source is live again.
        let resumed = qmp_exec(&mut src, source.id(), "cont", None).await;
        let pause_ms = paused.elapsed().as_millis() as u64;
        if let Err(e) = &resumed {
            tracing::error!(vm = source.id(), "cannot resume the VM after forking it: {e}");
        }
        // The source's clock stood still while it was paused.
        let clock = async {
            let clock = Identity { unix_time_ns: fresh_identity("").unix_time_ns, ..Default::default() };
            if let Err(e) = source.channel().set_identity(clock).await {
                tracing::warn!(vm = source.id(), "cannot reset the clock after the fork: {e}");
            }
        };
        let start = async {
            let (spec, launched, cleanup) = migrated?;
            self.ready(&spec, &launched).await?;
            tracing::debug!(vm = id, ms = launched.started.elapsed().as_millis() as u64, "fork: guest answered");
            if let Err(e) = crate::snapshot::refresh_identity(&launched.channel, id).await {
                return Err(self.boot_error(&spec, &launched, format!("identity refresh failed: {e}")).await);
            }
            tracing::debug!(vm = id, ms = launched.started.elapsed().as_millis() as u64, "fork: identity set");
            Ok(self.finish(launched, cleanup))
        };
        let ((), vm) = tokio::join!(clock, start);
        let vm = vm?;
        resumed?;
        tracing::info!(
            source = source.id(),
            fork = id,
            pause_ms,
            total_ms = t0.elapsed().as_millis() as u64,
            "VM forked"
        );
        Ok(vm)
    }

    /// Launches the fork (`-incoming`, a copy of the running source's overlay) and sets up the
    /// migration: the same capabilities on both ends, each holding one end of a socket pair
    /// (handed over QMP with `getfd`; the two QEMUs run under different uids and neither may
    /// enter the other's run dir), the fork listening on its end. The source keeps running.
    async fn prepare_fork(&self, source: &QemuVm, src: &mut crate::qmp::Qmp, id: &str) -> Result<Prepared, VmError> {
        let spec = VmSpec { id: id.to_string(), ..source.spec.clone() };
        let mode = Launch::Fork { overlay: source.run().overlay(), memory: source.memory.clone() };
        let (launched, cleanup) = self.launch(&spec, &mode).await?;
        tracing::debug!(vm = id, ms = launched.started.elapsed().as_millis() as u64, "fork: launched");
        let connect = async {
            let mut dst = launched_qmp(&launched).await?;
            // Both ends must agree on the capability (it changes the stream's format).
            let caps = serde_json::json!({ "capabilities": [ { "capability": "x-ignore-shared", "state": false } ] });
            qmp_exec(src, source.id(), "migrate-set-capabilities", Some(caps.clone())).await?;
            qmp_exec(&mut dst, id, "migrate-set-capabilities", Some(caps)).await?;
            let bw = serde_json::json!({ "max-bandwidth": FORK_BANDWIDTH_BYTES });
            qmp_exec(src, source.id(), "migrate-set-parameters", Some(bw)).await?;
            let (out, inbound) = std::os::unix::net::UnixStream::pair()
                .map_err(|source| VmError::Io { vm: id.to_string(), step: "creating the migration socket pair", source })?;
            dst.pass_fd(FD_IN, inbound.as_fd()).await.map_err(|e| VmError::Qmp { vm: id.to_string(), source: e })?;
            let uri = format!("fd:{FD_IN}");
            qmp_exec(&mut dst, id, "migrate-incoming", Some(serde_json::json!({ "uri": uri }))).await?;
            src.pass_fd(FD_OUT, out.as_fd()).await.map_err(|e| VmError::Qmp { vm: source.id().to_string(), source: e })?;
            Ok::<_, VmError>(dst)
        };
        match connect.await {
            Ok(dst) => Ok(Prepared { spec, launched, cleanup, dst }),
            Err(e) => Err(self.boot_error(&spec, &launched, format!("fork failed: {e}")).await),
        }
    }

    /// With the source paused: its overlay copied again (now consistent with its memory), its
    /// state migrated into the fork, the fork continued.
    async fn migrate_paused(&self, source: &QemuVm, src: &mut crate::qmp::Qmp, fork: &mut Prepared) -> Result<(), VmError> {
        let id = fork.spec.id.clone();
        let copy_err = |source| VmError::Io { vm: id.clone(), step: "copying the disk overlay", source };
        let mut file = fork.launched.overlay_copy.take().ok_or_else(|| copy_err(std::io::Error::other("no overlay copy")))?;
        let from = source.run().overlay();
        let file = tokio::task::spawn_blocking(move || crate::qemu::copy_into(&from, &mut file).map(|_| file))
            .await
            .map_err(|e| copy_err(std::io::Error::other(e)))?
            .map_err(copy_err)?;
        drop(file);
        let uri = format!("fd:{FD_OUT}");
        qmp_exec(src, source.id(), "migrate", Some(serde_json::json!({ "uri": uri }))).await?;
        wait_migration(src, source.id(), MIGRATION_TIMEOUT).await?;
        wait_migration(&mut fork.dst, &id, MIGRATION_TIMEOUT).await?;
        tracing::debug!(vm = %id, ms = fork.launched.started.elapsed().as_millis() as u64, "fork: migrated");
        qmp_exec(&mut fork.dst, &id, "cont", None).await.map(drop)
    }
}

/// A fork launched and waiting for the source's state.
struct Prepared {
    spec: VmSpec,
    launched: crate::qemu::Launched,
    cleanup: crate::cleanup::Cleanup,
    dst: crate::qmp::Qmp,
}
