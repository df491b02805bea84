//! CPU time from `/proc`, for per-process and host-wide CPU figures over a window.
//!
//! Per-process figures (utime + stime of one QEMU) are what the density benchmark trusts: on a
//! shared machine other people's builds inflate the host's busy % but not a QEMU's own CPU time.

/// Clock ticks per second of `/proc` times: `USER_HZ`, 100 on every Linux ABI Mayfly runs on.
const USER_HZ: f64 = 100.0;

/// CPU time (user + system) a process has used, in seconds; None once it is gone.
pub fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_process_ticks(&stat).map(|t| t as f64 / USER_HZ)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted after its last `)`.
fn parse_process_ticks(stat: &str) -> Option<u64> {
    let rest = stat.rsplit_once(')')?.1;
    let mut f = rest.split_whitespace().skip(11);
    Some(f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?)
}

/// Host CPU ticks from the `cpu` line of `/proc/stat`: (busy, total). Idle and iowait are not busy.
pub fn host_ticks() -> Option<(u64, u64)> {
    parse_host_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_host_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).map(|x| x.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Host busy % between two [`host_ticks`] samples (0–100, all CPUs together).
pub fn busy_pct(before: (u64, u64), after: (u64, u64)) -> f64 {
    let total = after.1.saturating_sub(before.1);
    if total == 0 {
        return 0.0;
    }
    100.0 * after.0.saturating_sub(before.0) as f64 / total as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_ticks_skip_odd_command_names() {
        let stat = "4242 (qemu) x (y)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 5 0 1000 0 0";
        assert_eq!(parse_process_ticks(stat), Some(325));
        assert_eq!(parse_process_ticks("garbage"), None);
    }

    #[test]
    fn host_ticks_and_busy() {
        let a = parse_host_ticks("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(a, (150, 1000));
        let b = parse_host_ticks("cpu  130 0 70 1130 70 0 0 0 0 0\n").unwrap();
        assert_eq!(busy_pct(a, b), 12.5);
        assert_eq!(busy_pct(a, a), 0.0);
    }
}
