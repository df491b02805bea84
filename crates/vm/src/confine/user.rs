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

/// Gives `path` to `account` (owner and group), leaving its mode alone.
pub fn give(path: &Path, account: Account) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(account.uid), Some(account.gid))
}
