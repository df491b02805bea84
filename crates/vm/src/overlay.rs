//! qcow2 overlays: every VM's disk is a fresh overlay on a read-only backing file (the image's
//! base, or a template's frozen disk).
//!
//! `qemu-img create` is a process start (≈ 10 ms here) on the path of every restore. An empty
//! overlay holds only the backing file's name, its size and empty tables, so a template keeps
//! one (`blank-<hash of the backing path>.qcow2`, made at its first clone) and each clone's
//! overlay is a copy of it (≈ 0.2 ms). It goes with the template's directory when the
//! template is rebuilt.

use crate::VmError;
use std::path::Path;
use tokio::process::Command;

/// Makes `dest`, an empty qcow2 overlay on `backing` of `size` bytes (`None`: the backing's).
/// With `blank`, a copy of that file, made first if it is not there yet; if it cannot be made,
/// `qemu-img` makes `dest` directly.
pub async fn create(
    qemu_img: &Path,
    vm: &str,
    backing: &Path,
    size: Option<u64>,
    dest: &Path,
    blank: Option<&Path>,
) -> Result<(), VmError> {
    let Some(blank) = blank else {
        return qemu_img_create(qemu_img, vm, backing, size, dest).await;
    };
    if !blank.exists() {
        let tmp = blank.with_extension(format!("tmp-{}-{vm}", std::process::id()));
        let made = async {
            qemu_img_create(qemu_img, vm, backing, size, &tmp).await?;
            std::fs::rename(&tmp, blank)
                .map_err(|source| VmError::Io { vm: vm.to_string(), step: "keeping the blank overlay", source })
        };
        if let Err(e) = made.await {
            let _ = std::fs::remove_file(&tmp);
            tracing::info!(vm, blank = %blank.display(), "no blank overlay ({e}); qemu-img for this VM");
            return qemu_img_create(qemu_img, vm, backing, size, dest).await;
        }
    }
    let copied = std::fs::copy(blank, dest).and_then(|_| {
        // What qemu-img would have made; the launch then hands it to QEMU's account.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o644))
    });
    copied.map_err(|source| VmError::Io { vm: vm.to_string(), step: "copying the blank overlay", source })
}

async fn qemu_img_create(qemu_img: &Path, vm: &str, backing: &Path, size: Option<u64>, dest: &Path) -> Result<(), VmError> {
    let mut cmd = Command::new(qemu_img);
    cmd.args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"]).arg(backing).arg(dest);
    if let Some(size) = size {
        cmd.arg(size.to_string());
    }
    let out = cmd.output().await.map_err(|source| VmError::Io { vm: vm.to_string(), step: "running qemu-img", source })?;
    if !out.status.success() {
        return Err(VmError::QemuImg { vm: vm.to_string(), stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(path: &Path) -> serde_json::Value {
        let out = std::process::Command::new("qemu-img").args(["info", "--output=json", "-U"]).arg(path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    #[tokio::test]
    async fn overlays_are_copies_of_one_blank() {
        let tmp = tempfile::tempdir().unwrap();
        let (base, blank) = (tmp.path().join("base.qcow2"), tmp.path().join("blank.qcow2"));
        let made = std::process::Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&base).arg("64M").status().unwrap();
        assert!(made.success());
        let img = Path::new("qemu-img");
        let (a, b) = (tmp.path().join("a.qcow2"), tmp.path().join("b.qcow2"));
        create(img, "a", &base, None, &a, Some(&blank)).await.unwrap();
        assert!(blank.exists(), "the blank is kept");
        create(img, "b", &base, None, &b, Some(&blank)).await.unwrap();
        let bytes = std::fs::read(&blank).unwrap();
        assert!(std::fs::read(&a).unwrap() == bytes && std::fs::read(&b).unwrap() == bytes, "copies of the blank");
        for p in [&a, &b] {
            let i = info(p);
            assert_eq!(i["virtual-size"], 64u64 << 20, "{i}");
            assert_eq!(i["backing-filename"], base.display().to_string(), "{i}");
            assert_eq!(i["backing-filename-format"], "qcow2", "{i}");
        }
        // Without a blank, qemu-img makes it, with the size asked for.
        let c = tmp.path().join("c.qcow2");
        create(img, "c", &base, Some(128 << 20), &c, None).await.unwrap();
        assert_eq!(info(&c)["virtual-size"], 128u64 << 20);
        // A blank that cannot be kept (its directory is missing): the overlay is made anyway.
        let d = tmp.path().join("d.qcow2");
        create(img, "d", &base, None, &d, Some(&tmp.path().join("no/such/dir/blank.qcow2"))).await.unwrap();
        assert_eq!(info(&d)["backing-filename"], base.display().to_string());
        // A missing backing file is qemu-img's clear error, and no blank is left behind.
        let missing = tmp.path().join("missing.qcow2");
        let blank2 = tmp.path().join("blank2.qcow2");
        let e = create(img, "e", &missing, None, &tmp.path().join("e.qcow2"), Some(&blank2)).await.unwrap_err();
        assert!(e.to_string().contains("missing.qcow2"), "{e}");
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(!names.iter().any(|n| n.to_string_lossy().starts_with("blank2")), "{names:?}");
    }
}
