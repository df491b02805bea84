//! What this host can hold: the `max_sessions` default and the free-memory floor at each create.
//!
//! Memory, not CPU, bounds an install since idle sessions pause (`pause_idle_seconds`): a paused
//! `minimal` session costs ≈ 45 MiB and no CPU (`scripts/bench-paused`, README). So
//! `max_sessions = 0` (the default) means [`auto_max_sessions`]: the host's memory less a
//! [`HOST_RESERVE_MIB`] reserve, at [`SESSION_BUDGET_MIB`] per session — about 2.8 times a paused
//! session, headroom for sessions that are in use. A session can still grow to its VM's memory
//! size, so every create also checks that the host has `min_free_memory_mib` available after
//! setting that VM's memory aside ([`check_free_memory`]).

use super::SessionError;

/// Memory kept for the host itself (control plane, page cache, QEMU's own overhead spikes).
pub const HOST_RESERVE_MIB: u64 = 2048;
/// Memory counted per session for the automatic `max_sessions`.
pub const SESSION_BUDGET_MIB: u64 = 128;

/// `cfg` with `max_sessions = 0` replaced by [`auto_max_sessions`] for this host.
pub fn resolve(cfg: std::sync::Arc<crate::config::ServerConfig>) -> std::sync::Arc<crate::config::ServerConfig> {
    if cfg.max_sessions != 0 {
        return cfg;
    }
    let total = host_memory_mib().map_or(0, |(t, _)| t);
    let mut cfg = std::sync::Arc::unwrap_or_clone(cfg);
    cfg.max_sessions = auto_max_sessions(total);
    tracing::info!(max_sessions = cfg.max_sessions, host_memory_mib = total, "max_sessions sized from the host's memory");
    std::sync::Arc::new(cfg)
}

/// `MemTotal` and `MemAvailable` of `/proc/meminfo`, MiB.
pub fn host_memory_mib() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&text)
}

fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib / 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

/// The automatic `max_sessions` for a host with `total_mib` of memory (at least 1).
pub fn auto_max_sessions(total_mib: u64) -> usize {
    (total_mib.saturating_sub(HOST_RESERVE_MIB) / SESSION_BUDGET_MIB).max(1) as usize
}

/// Refuses a new session of `memory_mib` when the host would be left with less than
/// `floor_mib` available (0 turns the check off; so does a host without `/proc/meminfo`).
pub fn check_free_memory(memory_mib: u64, floor_mib: u64) -> Result<(), SessionError> {
    if floor_mib == 0 {
        return Ok(());
    }
    let Some((_, available)) = host_memory_mib() else { return Ok(()) };
    check_against(available, memory_mib, floor_mib)
}

fn check_against(available_mib: u64, memory_mib: u64, floor_mib: u64) -> Result<(), SessionError> {
    if available_mib < memory_mib.saturating_add(floor_mib) {
        return Err(SessionError::HostMemoryLow { available_mib, needed_mib: memory_mib + floor_mib });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_total_and_available() {
        let text = "MemTotal:       24576000 kB\nMemFree:         1000 kB\nMemAvailable:   12288000 kB\n";
        assert_eq!(parse_meminfo(text), Some((24000, 12000)));
        assert_eq!(parse_meminfo("MemTotal: 10 kB\n"), None, "no MemAvailable: no figure");
        assert!(host_memory_mib().is_some_and(|(t, a)| t > 0 && a <= t), "this host's /proc/meminfo");
    }

    #[test]
    fn auto_limit_follows_memory() {
        assert_eq!(auto_max_sessions(24 * 1024), 176);
        assert_eq!(auto_max_sessions(4096), 16);
        assert_eq!(auto_max_sessions(1024), 1, "a tiny host still runs one session");
    }

    #[test]
    fn free_memory_floor() {
        assert!(check_against(4096, 512, 1024).is_ok());
        let e = check_against(1400, 512, 1024).unwrap_err();
        assert!(matches!(e, SessionError::HostMemoryLow { available_mib: 1400, needed_mib: 1536 }), "{e}");
        assert!(e.to_string().contains("1400 MiB"), "{e}");
        assert!(check_free_memory(u64::MAX / 2, 0).is_ok(), "0 turns the check off");
    }
}
