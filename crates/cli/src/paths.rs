//! Where Mayfly keeps its files.

use std::path::PathBuf;

/// `--data-dir`, else `$MAYFLY_DATA_DIR` (handled by clap), else `/var/lib/mayfly` for root
/// (QEMU's unprivileged account can reach it; root's home, where `$XDG_DATA_HOME` points, is
/// closed to it), else `$XDG_DATA_HOME/mayfly`, else `~/.local/share/mayfly`.
pub fn data_dir(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(d) = explicit {
        return d;
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/mayfly");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("mayfly");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".local/share/mayfly")
}

/// The guest daemon binary that goes into images: next to this executable.
pub fn guest_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MAYFLY_GUEST_BIN") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("mayfly-guest")))
        .unwrap_or_else(|| PathBuf::from("mayfly-guest"))
}
