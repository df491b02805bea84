//! What the session manager needs from a VM backend beyond booting: finding and destroying VMs
//! that no live session owns (after a crash or restart of the control plane).
//!
//! These are inherent methods of `QemuBackend` today; they belong on `mayfly_vm::VmBackend`
//! once a second backend exists.

use async_trait::async_trait;
use mayfly_vm::qemu::QemuBackend;
use mayfly_vm::VmBackend;

#[async_trait]
pub trait VmHost: VmBackend {
    /// Ids of the VMs that have state on this host (live or left over).
    fn vm_ids(&self) -> Vec<String>;
    /// Destroys VM `id` that no live object owns: kills its process, deletes its state.
    async fn reap(&self, id: &str);
}

#[async_trait]
impl VmHost for QemuBackend {
    fn vm_ids(&self) -> Vec<String> {
        self.run_dir_ids()
    }
    async fn reap(&self, id: &str) {
        QemuBackend::reap(self, id).await
    }
}
