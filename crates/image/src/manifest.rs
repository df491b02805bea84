//! `manifest.json`: what an image directory holds and how it was built. Written last, so an image
//! directory with a manifest is complete; read by the store and by the VM layer (kernel command
//! line, default sizing).

use std::path::Path;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{ImageError, IoContext};
use crate::recipe::Recipe;

pub const MANIFEST_FILE: &str = "manifest.json";
pub const VMLINUX_FILE: &str = "vmlinux";
pub const INITRD_FILE: &str = "initrd.img";
pub const ROOTFS_FILE: &str = "rootfs.qcow2";

/// Sizes in bytes of the image's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSizes {
    pub vmlinux: u64,
    pub initrd: u64,
    /// Allocated size of the qcow2 file (not the virtual disk size).
    pub rootfs: u64,
}

impl FileSizes {
    pub fn total(&self) -> u64 {
        self.vmlinux + self.initrd + self.rootfs
    }
}

/// The contents of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    /// Image key: the name of the image's directory.
    pub key: String,
    #[serde(with = "time::serde::rfc3339")]
    pub built_at: OffsetDateTime,
    pub build_seconds: f64,
    /// [`crate::BUILDER_VERSION`] of the builder that made it.
    pub builder_version: u32,
    /// Kernel release (`uname -r`), e.g. `6.1.0-56-cloud-amd64`.
    pub kernel_version: String,
    /// Debian package and version the kernel came from.
    pub kernel_package: String,
    pub kernel_package_version: String,
    /// Command line to boot `vmlinux` + `initrd.img` with.
    pub kernel_cmdline: String,
    /// Virtual size of the root disk.
    pub disk_size_bytes: u64,
    /// `qcow2`.
    pub rootfs_format: String,
    /// sha256 of the installed `/usr/local/sbin/mayfly-guest`.
    pub guest_sha256: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub files: FileSizes,
    pub recipe: Recipe,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Manifest, ImageError> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).ctx(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|source| ImageError::Manifest { path, source })
    }

    pub fn write(&self, dir: &Path) -> Result<(), ImageError> {
        let path = dir.join(MANIFEST_FILE);
        let mut json = serde_json::to_vec_pretty(self).expect("manifest serialises");
        json.push(b'\n');
        std::fs::write(&path, json).ctx(|| format!("cannot write {}", path.display()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(name: &str, key: &str) -> Manifest {
        Manifest {
            name: name.into(),
            key: key.into(),
            built_at: time::macros::datetime!(2025-05-20 12:00:00 UTC),
            build_seconds: 42.5,
            builder_version: crate::BUILDER_VERSION,
            kernel_version: "6.1.0-56-cloud-amd64".into(),
            kernel_package: "linux-image-6.1.0-56-cloud-amd64".into(),
            kernel_package_version: "6.1.192-2".into(),
            kernel_cmdline: crate::KERNEL_CMDLINE.into(),
            disk_size_bytes: 2 << 30,
            rootfs_format: "qcow2".into(),
            guest_sha256: "ab".repeat(32),
            memory_mib: 512,
            vcpus: 1,
            files: FileSizes {
                vmlinux: 30,
                initrd: 2,
                rootfs: 100,
            },
            recipe: crate::Recipe::builtin("minimal").unwrap(),
        }
    }

    #[test]
    fn round_trips_through_json() {
        let dir = tempfile::tempdir().unwrap();
        let m = sample("minimal", "0123456789abcdef");
        m.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(MANIFEST_FILE)).unwrap();
        assert!(
            text.contains("\"built_at\": \"2025-05-20T12:00:00Z\""),
            "{text}"
        );
        assert_eq!(Manifest::read(dir.path()).unwrap(), m);
        assert_eq!(m.files.total(), 132);
    }

    #[test]
    fn corrupt_manifest_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), "{").unwrap();
        let e = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(
            e.starts_with("invalid manifest ") && e.ends_with("manifest.json"),
            "{e}"
        );
    }
}
