//! The per-VM run directory: everything a VM owns on the host lives in one folder, so tearing
//! a VM down (or cleaning up after a crash) is "kill the process, delete the folder".
//!
//! Layout: `<state_dir>/<vm-id>/`
//! - `overlay.qcow2` — copy-on-write disk on the read-only image base
//! - `qmp.sock` — QMP control socket (QEMU is the server)
//! - `channel.sock` — guest channel (virtio-serial port `mayfly.0`; QEMU is the server)
//! - `console.log` — the guest's serial console
//! - `vm.json` — [`VmRecord`]: pid, spec and cgroups, so a restarted control plane can re-adopt
//!   the VM (see [`crate::adopt`]) or reap it

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct RunDir {
    pub dir: PathBuf,
}

impl RunDir {
    pub fn new(state_dir: &Path, id: &str) -> Self {
        Self { dir: state_dir.join(id) }
    }
    pub fn overlay(&self) -> PathBuf {
        self.dir.join("overlay.qcow2")
    }
    pub fn qmp(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    pub fn channel(&self) -> PathBuf {
        self.dir.join("channel.sock")
    }
    pub fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    pub fn record(&self) -> PathBuf {
        self.dir.join("vm.json")
    }

    /// Last `max_bytes` of the console log, lossily decoded; empty if there is none.
    pub fn console_tail(&self, max_bytes: usize) -> String {
        console_tail(&self.console(), max_bytes)
    }
}

pub fn console_tail(path: &Path, max_bytes: usize) -> String {
    let Ok(data) = std::fs::read(path) else { return String::new() };
    let start = data.len().saturating_sub(max_bytes);
    String::from_utf8_lossy(&data[start..]).into_owned()
}

/// Written next to a running VM so a restarted control plane knows what the process is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmRecord {
    pub id: String,
    pub pid: u32,
    pub image: String,
    pub started_at_unix: u64,
    /// The VM's cgroup directories, removed when it is reaped.
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
    /// What was launched; a restarted control plane needs it to adopt (and later fork) the VM.
    /// Absent in records written before re-adoption existed: such VMs are reaped, not adopted.
    #[serde(default)]
    pub spec: Option<crate::VmSpec>,
    #[serde(default)]
    pub memory: Option<crate::cmdline::MemoryBacking>,
}

impl VmRecord {
    pub fn load(path: &Path) -> std::io::Result<Self> {
        let data = std::fs::read(path)?;
        serde_json::from_slice(&data).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

/// True when `pid` is alive and is a QEMU process started for VM `id` (guards against pid reuse).
pub fn pid_is_vm(pid: u32, id: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let want = format!("mayfly-{id}");
    cmdline.split(|b| *b == 0).any(|arg| arg.starts_with(want.as_bytes()) && {
        // `-name mayfly-<id>` or `mayfly-<id>,...`
        let rest = &arg[want.len()..];
        rest.is_empty() || rest[0] == b','
    })
}
