//! Whether the guest's CPUs were busy since the last look, from the aggregate `cpu` line of
//! `/proc/stat`. A program on its way to listening (a dev server compiling, an interpreter
//! loading) keeps them busy; an idle VM does not. The port watcher polls fast while they are.
//!
//! Line grammar (the first line of `/proc/stat`; counts in clock ticks since boot):
//!
//! ```text
//! "cpu" user nice system idle iowait irq softirq steal guest guest_nice
//! ```
//!
//! `guest` and `guest_nice` are already counted in `user` and `nice`; older kernels print fewer
//! fields. Busy = total − idle − iowait.

/// (busy, total) clock ticks since boot, or None when the line is not as above.
fn parse_ticks(stat: &str) -> Option<(u64, u64)> {
    let fields = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = fields.split_whitespace().take(8).map(|w| w.parse().ok()).collect::<Option<_>>()?;
    if ticks.len() < 4 {
        return None;
    }
    let total: u64 = ticks.iter().sum();
    let idle = ticks[3] + ticks.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

fn read_ticks() -> Option<(u64, u64)> {
    parse_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The share of CPU time spent busy between two looks.
pub struct BusyMeter {
    last: Option<(u64, u64)>,
}

impl BusyMeter {
    pub(crate) fn new() -> BusyMeter {
        BusyMeter { last: read_ticks() }
    }

    /// The busy share (0.0 ..= 1.0) since the previous call (or since `new`); 0.0 when no tick
    /// passed or `/proc/stat` cannot be read.
    pub(crate) fn share(&mut self) -> f64 {
        let now = read_ticks();
        let share = match (self.last, now) {
            (Some(a), Some(b)) => busy_share(a, b),
            _ => 0.0,
        };
        self.last = now;
        share
    }
}

/// Busy ticks over all ticks between two samples of [`parse_ticks`].
fn busy_share((busy0, total0): (u64, u64), (busy1, total1): (u64, u64)) -> f64 {
    let total = total1.saturating_sub(total0);
    if total == 0 {
        return 0.0;
    }
    busy1.saturating_sub(busy0) as f64 / total as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_aggregate_line() {
        let stat = "cpu  100 5 50 1000 20 1 2 3 7 0\ncpu0 100 5 50 1000 20 1 2 3 7 0\nintr 1\n";
        // total = 100+5+50+1000+20+1+2+3 (guest fields not added again); idle = 1000 + 20.
        assert_eq!(parse_ticks(stat), Some((161, 1181)));
        // An old kernel's four fields.
        assert_eq!(parse_ticks("cpu 1 2 3 4\n"), Some((6, 10)));
        assert_eq!(parse_ticks("cpu0 1 2 3 4\n"), None, "not the aggregate line");
        assert_eq!(parse_ticks("cpu 1 2 x 4\n"), None);
        assert_eq!(parse_ticks("cpu 1 2\n"), None);
        assert_eq!(parse_ticks(""), None);
    }

    #[test]
    fn share_between_samples() {
        assert_eq!(busy_share((10, 100), (60, 200)), 0.5);
        assert_eq!(busy_share((10, 100), (10, 100)), 0.0, "no tick passed");
        assert_eq!(busy_share((10, 100), (5, 90)), 0.0, "a counter went back");
    }

    #[test]
    fn reads_this_machine() {
        let mut m = BusyMeter::new();
        let s = m.share();
        assert!((0.0..=1.0).contains(&s), "{s}");
    }
}
