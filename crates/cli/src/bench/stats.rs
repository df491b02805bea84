//! Summary statistics for benchmark samples.

use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub n: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

pub fn summarize(samples: &[Duration]) -> Summary {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let pick = |q: f64| -> f64 {
        if ms.is_empty() {
            return 0.0;
        }
        let idx = ((ms.len() as f64 - 1.0) * q).round() as usize;
        ms[idx]
    };
    Summary {
        n: ms.len(),
        p50_ms: round(pick(0.5)),
        p95_ms: round(pick(0.95)),
        max_ms: round(ms.last().copied().unwrap_or(0.0)),
        mean_ms: round(if ms.is_empty() { 0.0 } else { ms.iter().sum::<f64>() / ms.len() as f64 }),
    }
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p50 {:>8.2} ms  p95 {:>8.2} ms  max {:>8.2} ms  (n={})", self.p50_ms, self.p95_ms, self.max_ms, self.n)
    }
}

/// Resident and proportional set size of a process, MiB.
pub fn rss_pss_mib(pid: u32) -> (f64, f64) {
    let read_kb = |file: &str, key: &str| -> f64 {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(key))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    };
    let rss = read_kb("status", "VmRSS:") / 1024.0;
    let pss = read_kb("smaps_rollup", "Pss:") / 1024.0;
    ((rss * 10.0).round() / 10.0, (pss * 10.0).round() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let sum = summarize(&s);
        assert_eq!(sum.n, 100);
        assert_eq!(sum.p50_ms, 51.0);
        assert_eq!(sum.p95_ms, 95.0);
        assert_eq!(sum.max_ms, 100.0);
        assert_eq!(summarize(&[]).n, 0);
    }
}
