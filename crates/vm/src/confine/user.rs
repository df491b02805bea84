//! The unprivileged account QEMU runs as when the control plane is root.

use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
}

/// Looks `name` up; when it does not exist, creates it as a system account without a home or
/// login shell (`useradd --system`).
pub fn resolve_or_create(name: &str) -> Result<Account, String> {
    if let Some(a) = lookup(name)? {
        return Ok(a);
    }
    tracing::info!(user = name, "creating the system user QEMU runs as");
    let out = std::process::Command::new("useradd")
        .args(["--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"])
        .arg(name)
        .output()
        .map_err(|e| format!("cannot run useradd to create user {name:?}: {e}"))?;
    // A concurrent start may have created it first (exit status 9: already exists).
    if !out.status.success() && out.status.code() != Some(9) {
        return Err(format!("useradd {name} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    lookup(name)?.ok_or_else(|| format!("user {name:?} still missing after useradd"))
}

fn lookup(name: &str) -> Result<Option<Account>, String> {
    nix::unistd::User::from_name(name)
        .map(|u| u.map(|u| Account { uid: u.uid.as_raw(), gid: u.gid.as_raw() }))
        .map_err(|e| format!("cannot look up user {name:?}: {e}"))
}

/// The first directory on the way to `path` (itself included) that `account` may not enter, by
/// mode bits (ACLs are not consulted, so this errs towards "not reachable").
pub fn unreachable_dir(path: &Path, account: Account) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut dirs: Vec<&Path> = path.ancestors().collect();
    dirs.reverse();
    for d in dirs {
        let Ok(m) = std::fs::metadata(d) else { continue };
        let bit = if m.uid() == account.uid {
            0o100
        } else if m.gid() == account.gid {
            0o010
        } else {
            0o001
        };
        if m.mode() & bit == 0 {
            return Some(d.to_path_buf());
        }
    }
    None
}

/// Gives `path` to `account` (owner and group), leaving its mode alone. A symlink is given
/// itself, never followed: paths inside a VM's run dir are the VM uid's to replace.
pub fn give(path: &Path, account: Account) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(account.uid), Some(account.gid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_private_directory_on_the_way_blocks_another_account() {
        let tmp = tempfile::tempdir().unwrap();
        let private = tmp.path().join("home");
        let inner = private.join("data");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let other = Account { uid: 65534, gid: 65534 };
        let blocked = unreachable_dir(&inner, other).map(|p| std::fs::canonicalize(p).unwrap());
        assert_eq!(blocked, Some(std::fs::canonicalize(&private).unwrap()));
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o711)).unwrap();
        assert_eq!(unreachable_dir(&inner, other), None);
    }
}
