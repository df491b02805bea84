//! A session's VM size: what the client asked for, checked against the operator's maxima.
//!
//! Defaults: vCPUs and memory from the image's recipe (or the server-wide `vm_vcpus` /
//! `vm_memory_mib` overrides), disk from the image's disk size (rounded up to whole GiB). A
//! request beyond a maximum is refused with a message naming the setting and its value.

use super::SessionError;
use crate::config::ServerConfig;
use crate::images::BootImage;
use mayfly_proto::api::{CreateSession, SessionSize};

/// Smallest guest RAM a session may ask for: the guest kernel and daemon need about this much.
pub const MIN_MEMORY_MIB: u32 = 128;

/// The size a session of `image` gets for `req`.
pub fn resolve(req: &CreateSession, image: &BootImage, cfg: &ServerConfig) -> Result<SessionSize, SessionError> {
    let default = default_size(image, cfg);
    // The maxima bound what clients ask for; the defaults are the operator's own choice.
    if let Some(vcpus) = req.vcpus {
        if vcpus == 0 {
            return Err(SessionError::Invalid("vcpus must be at least 1".into()));
        }
        if vcpus > cfg.max_vcpus {
            return Err(SessionError::LimitExceeded(format!("vcpus {vcpus} exceeds max_vcpus ({})", cfg.max_vcpus)));
        }
    }
    if let Some(memory_mib) = req.memory_mib {
        if memory_mib < MIN_MEMORY_MIB {
            return Err(SessionError::Invalid(format!("memory_mib must be at least {MIN_MEMORY_MIB}")));
        }
        if memory_mib > cfg.max_memory_mib {
            return Err(SessionError::LimitExceeded(format!("memory_mib {memory_mib} exceeds max_memory_mib ({})", cfg.max_memory_mib)));
        }
    }
    if let Some(disk_gib) = req.disk_gib {
        // A disk cannot shrink below the image's filesystem.
        if disk_gib < default.disk_gib {
            return Err(SessionError::Invalid(format!(
                "disk_gib must be at least {} (the size of image {:?})",
                default.disk_gib, image.name
            )));
        }
        if disk_gib > cfg.max_disk_gib {
            return Err(SessionError::LimitExceeded(format!("disk_gib {disk_gib} exceeds max_disk_gib ({})", cfg.max_disk_gib)));
        }
    }
    let vcpus = req.vcpus.unwrap_or(default.vcpus);
    let memory_mib = req.memory_mib.unwrap_or(default.memory_mib);
    let disk_gib = req.disk_gib.unwrap_or(default.disk_gib);
    Ok(SessionSize { vcpus, memory_mib, disk_gib })
}

/// The size a session gets when it asks for nothing (the warm pool's and templates' size).
pub fn default_size(image: &BootImage, cfg: &ServerConfig) -> SessionSize {
    SessionSize {
        vcpus: cfg.vm_vcpus.unwrap_or(image.vcpus).max(1),
        memory_mib: cfg.vm_memory_mib.unwrap_or(image.memory_mib),
        disk_gib: image.disk_size_bytes.div_ceil(1 << 30) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> BootImage {
        BootImage {
            name: "minimal".into(),
            kernel: "/k".into(),
            initrd: "/i".into(),
            rootfs: "/r".into(),
            cmdline: String::new(),
            memory_mib: 512,
            vcpus: 1,
            disk_size_bytes: 2 << 30,
            key: "k".into(),
            dir: "/d".into(),
        }
    }

    fn req(vcpus: Option<u32>, memory_mib: Option<u32>, disk_gib: Option<u32>) -> CreateSession {
        CreateSession { vcpus, memory_mib, disk_gib, ..serde_json::from_str("{}").unwrap() }
    }

    #[test]
    fn sizes_and_limits() {
        let cfg = ServerConfig { max_vcpus: 2, max_memory_mib: 1024, max_disk_gib: 8, ..Default::default() };
        let ok = |r| resolve(&r, &image(), &cfg).map_err(|e| e.to_string());
        assert_eq!(ok(req(None, None, None)), Ok(SessionSize { vcpus: 1, memory_mib: 512, disk_gib: 2 }));
        assert_eq!(ok(req(Some(2), Some(1024), Some(8))), Ok(SessionSize { vcpus: 2, memory_mib: 1024, disk_gib: 8 }));
        for (r, want) in [
            (req(Some(3), None, None), "vcpus 3 exceeds max_vcpus (2)"),
            (req(Some(0), None, None), "vcpus must be at least 1"),
            (req(None, Some(1025), None), "memory_mib 1025 exceeds max_memory_mib (1024)"),
            (req(None, Some(64), None), "memory_mib must be at least 128"),
            (req(None, None, Some(9)), "disk_gib 9 exceeds max_disk_gib (8)"),
            (req(None, None, Some(1)), "disk_gib must be at least 2 (the size of image \"minimal\")"),
        ] {
            assert_eq!(ok(r), Err(want.to_string()));
        }
        let limit = resolve(&req(Some(3), None, None), &image(), &cfg).unwrap_err();
        assert!(matches!(limit, SessionError::LimitExceeded(_)));
    }

    #[test]
    fn server_overrides_set_the_default() {
        let cfg = ServerConfig { vm_vcpus: Some(2), vm_memory_mib: Some(768), ..Default::default() };
        assert_eq!(default_size(&image(), &cfg), SessionSize { vcpus: 2, memory_mib: 768, disk_gib: 2 });
    }
}
