//! VM backends. The control plane sees [`VmBackend`] and [`Vm`], never a QEMU command line.
//!
//! * [`qemu`] — the QEMU implementation (q35 + virtio-pci, TCG or KVM, qcow2 overlays, QMP).
//! * [`channel`] — host side of the guest channel with typed operations.
//! * [`accel`] — picks KVM only where the host really has hardware virtualisation.
//!
//! Firecracker fits behind the same trait later (vsock instead of virtio-serial).

pub mod accel;
mod adopt;
pub mod channel;
mod cleanup;
pub mod cmdline;
mod fork;
pub mod pause;
pub mod confine;
pub mod qemu;
mod overlay;
pub mod qmp;
pub mod rundir;
pub mod snapshot;

use async_trait::async_trait;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use channel::{ChannelError, ExecOutput, GuestChannel};

/// What to boot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VmSpec {
    /// Lowercase DNS label, unique among live VMs (it names the run directory).
    pub id: String,
    /// Image name, for records and messages.
    pub image: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    /// Read-only qcow2 base disk; the VM writes to its own overlay on top.
    pub base_disk: PathBuf,
    /// Virtual size of the VM's disk; `None` keeps the base's size.
    pub disk_size_bytes: Option<u64>,
    pub vcpus: u32,
    pub memory_mib: u32,
}

/// How a VM process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// True when the control plane asked for the stop.
    pub requested: bool,
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (_, Some(s)) => write!(f, "QEMU killed by signal {s}"),
            (Some(c), _) => write!(f, "QEMU exited with status {c}"),
            _ => write!(f, "QEMU exited"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("invalid VM id {0:?}: use 1-63 lowercase letters, digits and '-', not starting or ending with '-'")]
    InvalidId(String),
    #[error("{what} not found at {path}; {hint}")]
    Missing { what: String, path: String, hint: String },
    #[error("VM {0} already exists")]
    Exists(String),
    #[error("{step} failed for VM {vm}")]
    Io {
        vm: String,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("qemu-img failed for VM {vm}: {stderr}")]
    QemuImg { vm: String, stderr: String },
    #[error("VM {vm} did not boot: {reason}\n--- console (tail) ---\n{console}")]
    Boot { vm: String, reason: String, console: String },
    #[error("VM {vm}: {source}")]
    Qmp {
        vm: String,
        #[source]
        source: qmp::QmpError,
    },
    #[error("confinement: {0}")]
    Confine(String),
    #[error("accelerator: {0}")]
    Accel(String),
    #[error("snapshot {dir}: {reason}")]
    Snapshot { dir: String, reason: String },
    /// A VM left by an earlier control plane cannot be taken over; the reason says why.
    #[error("cannot adopt VM {vm}: {reason}")]
    Adopt { vm: String, reason: String },
}

#[async_trait]
pub trait VmBackend: Send + Sync {
    /// Backend name for logs and metrics (`qemu`).
    fn name(&self) -> &'static str;

    /// Boots a fresh VM and returns once its guest daemon answered.
    async fn create(&self, spec: VmSpec) -> Result<Arc<dyn Vm>, VmError>;

    /// Starts a clone of a template snapshot (memory and disk) and returns once its guest daemon
    /// answered and its identity (clock, RNG, hostname, machine id) was refreshed.
    async fn restore(&self, spec: VmSpec, template: &snapshot::Template) -> Result<Arc<dyn Vm>, VmError>;

    /// Starts VM `id` as a copy of running VM `source` (memory, devices and disk at one
    /// instant), with a fresh identity; `source` is paused meanwhile and then continues.
    async fn fork(&self, source: &dyn Vm, id: &str) -> Result<Arc<dyn Vm>, VmError>;
}

#[async_trait]
pub trait Vm: Send + Sync {
    fn id(&self) -> &str;
    /// Host process id of the VM monitor, if it runs.
    fn pid(&self) -> Option<u32>;
    fn channel(&self) -> &GuestChannel;
    /// Time from spawn to the guest daemon's first answer.
    fn boot_time(&self) -> Duration;
    /// Stops the VM and releases everything it holds (process, overlay, sockets). Idempotent.
    async fn stop(&self) -> Result<(), VmError>;
    /// Resolves once the VM process has exited (for any reason).
    async fn wait_exit(&self) -> ExitInfo;
    /// The last bytes of the guest console, for error messages.
    fn console_tail(&self, max_bytes: usize) -> String;
    /// Stops the guest's CPUs (memory, devices and disk stay); see [`pause`].
    async fn pause(&self) -> Result<(), VmError>;
    /// Continues a paused guest and sets its clock; returns the time it took.
    async fn resume(&self) -> Result<Duration, VmError>;
    /// CPU time the VM process has used so far (`None` once it is gone).
    fn cpu_time(&self) -> Option<Duration>;
    /// True for an adopted VM that was found paused and was paused again once its guest had
    /// answered: the caller must [`resume`](Vm::resume) it before use.
    fn adopted_paused(&self) -> bool {
        false
    }
    /// Leaves the VM running for a later control plane to adopt ([`qemu::QemuBackend::adopt`]):
    /// the channel is closed and dropping this object no longer stops the VM.
    async fn detach(&self);
    /// For backends that need their own VM type back (fork).
    fn as_any(&self) -> &dyn std::any::Any;
}

/// True when `id` is a valid lowercase DNS label.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-')
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_dns_labels() {
        for ok in ["a", "abc-123", "x9"] {
            assert!(super::valid_id(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "../x", &"a".repeat(64)] {
            assert!(!super::valid_id(bad), "{bad}");
        }
    }
}
