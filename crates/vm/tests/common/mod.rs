//! Shared set-up for real-VM tests: the `minimal` image must have been built into the data dir
//! (`MAYFLY_DATA_DIR`, as the README's test command does).

#![allow(dead_code)]

use mayfly_vm::accel::AccelSetting;
use mayfly_vm::qemu::{QemuBackend, QemuConfig};
use mayfly_vm::{Vm, VmBackend, VmSpec};
use std::path::PathBuf;
use std::sync::Arc;

pub fn data_dir() -> PathBuf {
    std::env::var_os("MAYFLY_DATA_DIR").map(PathBuf::from).expect(
        "MAYFLY_DATA_DIR must point at a data dir with the `minimal` image built; run the README's test command (scripts/test)",
    )
}

/// A temp state dir that VM uids can enter (a temp dir is 0700; the backend refuses those).
pub fn state_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::Builder::new().prefix("mayfly-vmtest-").tempdir().expect("temp dir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod temp dir");
    d
}

pub fn backend(state: &std::path::Path) -> QemuBackend {
    let mut cfg = QemuConfig::new(state);
    cfg.accel = std::env::var("MAYFLY_ACCEL").ok().and_then(|a| a.parse().ok()).unwrap_or(AccelSetting::Auto);
    QemuBackend::new(cfg).expect("QEMU backend")
}

pub fn spec(id: &str) -> VmSpec {
    let store = mayfly_image::ImageStore::new(data_dir());
    let image = store.get("minimal").expect("minimal image built");
    VmSpec {
        id: id.to_string(),
        image: image.name.clone(),
        kernel: image.kernel.clone(),
        initrd: image.initrd.clone(),
        cmdline: image.manifest.kernel_cmdline.clone(),
        base_disk: image.rootfs.clone(),
        disk_size_bytes: None,
        vcpus: 1,
        memory_mib: 512,
    }
}

pub async fn boot(backend: &QemuBackend, id: &str) -> Arc<dyn Vm> {
    backend.create(spec(id)).await.unwrap_or_else(|e| panic!("boot {id}: {e}"))
}

/// Every process whose command line names `mayfly-<id>`.
pub fn qemu_pids_for(id: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if mayfly_vm::rundir::pid_is_vm(pid, id) {
            pids.push(pid);
        }
    }
    pids
}
