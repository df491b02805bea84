//! What the session manager needs from a VM backend beyond booting: finding and destroying VMs
//! that no live session owns (after a crash or restart of the control plane), and templates.
//!
//! These are inherent methods of `QemuBackend` today; they belong on `mayfly_vm::VmBackend`
//! once a second backend exists.

use async_trait::async_trait;
use mayfly_vm::qemu::QemuBackend;
use mayfly_vm::snapshot::Template;
use mayfly_vm::{VmBackend, VmError, VmSpec};
use std::path::Path;

#[async_trait]
pub trait VmHost: VmBackend {
    /// Ids of the VMs that have state on this host (live or left over).
    fn vm_ids(&self) -> Vec<String>;
    /// Destroys VM `id` that no live object owns: kills its process, deletes its state.
    async fn reap(&self, id: &str);
    /// Takes over VM `id`, left running by an earlier control plane; on error it is untouched.
    async fn adopt(&self, id: &str) -> Result<std::sync::Arc<dyn mayfly_vm::Vm>, VmError> {
        Err(VmError::Adopt { vm: id.to_string(), reason: format!("the {} backend cannot adopt VMs", self.name()) })
    }
    /// The template snapshot in `dir` for an image with `image_key`: the existing one if it is
    /// compatible, else a new one made by booting `spec` (under a lock, so concurrent servers
    /// sharing an image dir build it once).
    /// The `(uid, gid)` VM `id`'s process runs as, when it is not the control plane's own.
    fn vm_account(&self, id: &str) -> Option<(u32, u32)> {
        let _ = id;
        None
    }
    async fn template(&self, spec: VmSpec, image_key: &str, dir: &Path) -> Result<Template, VmError> {
        let _ = (spec, image_key);
        Err(VmError::Snapshot { dir: dir.display().to_string(), reason: "this backend has no templates".into() })
    }
}

#[async_trait]
impl VmHost for QemuBackend {
    fn vm_ids(&self) -> Vec<String> {
        self.run_dir_ids()
    }
    async fn reap(&self, id: &str) {
        QemuBackend::reap(self, id).await
    }
    fn vm_account(&self, id: &str) -> Option<(u32, u32)> {
        self.confiner().account_of(id).map(|a| (a.uid, a.gid))
    }
    async fn adopt(&self, id: &str) -> Result<std::sync::Arc<dyn mayfly_vm::Vm>, VmError> {
        QemuBackend::adopt(self, id).await
    }
    async fn template(&self, spec: VmSpec, image_key: &str, dir: &Path) -> Result<Template, VmError> {
        self.ensure_template(spec, image_key, dir).await
    }
}
