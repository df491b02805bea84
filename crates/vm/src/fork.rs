//! Forking a running VM: a new VM that starts from the source's memory, devices and disk at one
//! instant, while the source carries on.
//!
//! 1. Pause the source (`stop`). QEMU drains and flushes its disk, so its overlay file is now
//!    exactly the disk the paused guest sees.
//! 2. Launch the fork with a *copy* of that overlay (same backing chain: template disk or image
//!    base), the source's RAM layout (anonymous, or the template's RAM file mapped private) and
//!    `-incoming defer`.
//! 3. Migrate the paused source into the fork over the fork's migration socket (the whole RAM
//!    this time: a clone's RAM is private, so `x-ignore-shared` skips nothing), relayed by the
//!    control plane with 1 MiB buffers.
//! 4. `cont` both: the source goes on at once, its clock set again since it stood still. While
//!    it runs, the fork's guest answers and gets a fresh identity (hostname, machine id, clock,
//!    RNG seed).
//!
//! The source is resumed on every path, success or failure. Its guest pauses for the length of
//! steps 1–3, which grows with the RAM the guest uses and the disk it has written.

use crate::qemu::{Launch, QemuBackend, QemuVm};
use crate::snapshot::{fresh_identity, launched_qmp, qmp, qmp_exec, wait_migration};
use crate::{Vm, VmError, VmSpec};
use mayfly_proto::msg::Identity;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Migration bandwidth for forks: local and the source is paused, so no throttling.
const FORK_BANDWIDTH_BYTES: u64 = 64 << 30;
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(120);
/// The relay's buffer towards the fork: the migration stream is bulk, and tokio's default 8 KiB
/// costs a read and a write per two pages.
const RELAY_BUFFER: usize = 1 << 20;

/// A one-connection relay from a socket in the source's run dir to the fork's migration socket;
/// dropping it stops it and removes the socket.
struct Relay {
    path: std::path::PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl QemuBackend {
    fn relay(&self, source: &QemuVm, to: &std::path::Path) -> Result<Relay, VmError> {
        let io = |step: &'static str| move |source| VmError::Io { vm: "fork".into(), step, source };
        let path = source.run().dir.join("fork-relay.sock");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).map_err(io("binding the fork relay socket"))?;
        self.confiner.give(self.confiner.account_of(source.id()), source.id(), &path)?;
        let to = to.to_path_buf();
        let task = tokio::spawn(async move {
            let Ok((mut inbound, _)) = listener.accept().await else { return };
            match tokio::net::UnixStream::connect(&to).await {
                Ok(mut outbound) => {
                    if let Err(e) =
                        tokio::io::copy_bidirectional_with_sizes(&mut inbound, &mut outbound, RELAY_BUFFER, 4096).await
                    {
                        tracing::debug!("fork relay ended: {e}");
                    }
                }
                Err(e) => tracing::warn!(to = %to.display(), "fork relay cannot reach the fork: {e}"),
            }
        });
        Ok(Relay { path, task })
    }

    pub(crate) async fn fork_vm(&self, source: &QemuVm, id: &str) -> Result<Arc<dyn Vm>, VmError> {
        if source.exited() {
            return Err(VmError::Snapshot {
                dir: source.id().to_string(),
                reason: "the source VM is not running".into(),
            });
        }
        let t0 = Instant::now();
        let mut src = qmp(source.id(), &source.run().qmp()).await?;
        qmp_exec(&mut src, source.id(), "stop", None).await?;
        let paused = Instant::now();
        let migrated = self.fork_paused(source, &mut src, id).await;
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

    /// Launches the fork and migrates the paused source into it; the fork is left paused.
    async fn fork_paused(
        &self,
        source: &QemuVm,
        src: &mut crate::qmp::Qmp,
        id: &str,
    ) -> Result<(VmSpec, crate::qemu::Launched, crate::cleanup::Cleanup), VmError> {
        let spec = VmSpec { id: id.to_string(), ..source.spec.clone() };
        let mode = Launch::Fork { overlay: source.run().overlay(), memory: source.memory.clone() };
        let (launched, cleanup) = self.launch(&spec, &mode).await?;
        tracing::debug!(vm = id, ms = launched.started.elapsed().as_millis() as u64, "fork: launched");
        let migrate = async {
            let mut dst = launched_qmp(&launched).await?;
            // Both ends must agree on the capability (it changes the stream's format).
            let caps = serde_json::json!({ "capabilities": [ { "capability": "x-ignore-shared", "state": false } ] });
            qmp_exec(src, source.id(), "migrate-set-capabilities", Some(caps.clone())).await?;
            qmp_exec(&mut dst, id, "migrate-set-capabilities", Some(caps)).await?;
            let bw = serde_json::json!({ "max-bandwidth": FORK_BANDWIDTH_BYTES });
            qmp_exec(src, source.id(), "migrate-set-parameters", Some(bw)).await?;
            let dst_sock = launched.run.dir.join("migrate.sock");
            let uri = format!("unix:{}", dst_sock.display());
            qmp_exec(&mut dst, id, "migrate-incoming", Some(serde_json::json!({ "uri": uri }))).await?;
            // The two QEMUs run under different uids and neither may enter the other's run
            // dir: the control plane relays the stream through a socket in the source's.
            let relay = self.relay(source, &dst_sock)?;
            let uri = format!("unix:{}", relay.path.display());
            qmp_exec(src, source.id(), "migrate", Some(serde_json::json!({ "uri": uri }))).await?;
            wait_migration(src, source.id(), MIGRATION_TIMEOUT).await?;
            wait_migration(&mut dst, id, MIGRATION_TIMEOUT).await?;
            drop(relay);
            tracing::debug!(vm = id, ms = launched.started.elapsed().as_millis() as u64, "fork: migrated");
            qmp_exec(&mut dst, id, "cont", None).await?;
            Ok::<(), VmError>(())
        };
        if let Err(e) = migrate.await {
            return Err(self.boot_error(&spec, &launched, format!("fork failed: {e}")).await);
        }
        Ok((spec, launched, cleanup))
    }
}
