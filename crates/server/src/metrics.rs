//! Prometheus metrics, kept in atomics and rendered as text at `/metrics`: sessions by state,
//! creations and failures, VM boot time (histogram), HTTP responses by status class.

use mayfly_proto::api::SessionState;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the boot-time histogram buckets.
const BOOT_BUCKETS: [f64; 10] = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BOOT_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    creations: AtomicU64,
    failures: AtomicU64,
    boot: Mutex<Histogram>,
    /// Responses by status class: index 0 = 1xx … 4 = 5xx.
    http: [AtomicU64; 5],
    resumes: AtomicU64,
    /// Microseconds spent resuming paused sessions, in total.
    resume_us: AtomicU64,
}

impl Metrics {
    pub fn session_created(&self) {
        self.creations.fetch_add(1, Ordering::Relaxed);
    }

    pub fn session_failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn vm_booted(&self, boot: Duration) {
        let secs = boot.as_secs_f64();
        let mut h = self.boot.lock().expect("metrics lock");
        for (i, le) in BOOT_BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    pub fn session_resumed(&self, took: Duration) {
        self.resumes.fetch_add(1, Ordering::Relaxed);
        self.resume_us.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn http_response(&self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.http[class].fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text; `sessions` counts the stored sessions by state.
    pub fn render(&self, sessions: &HashMap<SessionState, u64>) -> String {
        let mut out = String::new();
        out.push_str("# HELP mayfly_sessions Sessions by state.\n# TYPE mayfly_sessions gauge\n");
        for s in crate::store::ALL_STATES {
            let _ = writeln!(out, "mayfly_sessions{{state=\"{}\"}} {}", s.as_str(), sessions.get(&s).copied().unwrap_or(0));
        }
        let counters = [
            ("mayfly_session_creations_total", "Sessions created.", &self.creations),
            ("mayfly_session_failures_total", "Sessions that ended in state failed.", &self.failures),
            ("mayfly_session_resumes_total", "Paused sessions resumed by a request.", &self.resumes),
            ("mayfly_session_resume_microseconds_total", "Time spent resuming paused sessions.", &self.resume_us),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Ordering::Relaxed));
        }
        {
            let h = self.boot.lock().expect("metrics lock");
            out.push_str("# HELP mayfly_vm_boot_seconds Time from VM spawn to the guest daemon's first answer.\n");
            out.push_str("# TYPE mayfly_vm_boot_seconds histogram\n");
            for (i, le) in BOOT_BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "mayfly_vm_boot_seconds_bucket{{le=\"{le}\"}} {}", h.counts[i]);
            }
            let _ = writeln!(out, "mayfly_vm_boot_seconds_bucket{{le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "mayfly_vm_boot_seconds_sum {}", h.sum);
            let _ = writeln!(out, "mayfly_vm_boot_seconds_count {}", h.count);
        }
        out.push_str("# HELP mayfly_http_responses_total HTTP responses by status class.\n");
        out.push_str("# TYPE mayfly_http_responses_total counter\n");
        for (i, v) in self.http.iter().enumerate() {
            let _ = writeln!(out, "mayfly_http_responses_total{{class=\"{}xx\"}} {}", i + 1, v.load(Ordering::Relaxed));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cumulative_buckets() {
        let m = Metrics::default();
        m.vm_booted(Duration::from_millis(300));
        m.vm_booted(Duration::from_secs(5));
        m.session_created();
        m.http_response(201);
        m.http_response(404);
        let text = m.render(&HashMap::from([(SessionState::Ready, 2)]));
        for line in [
            "mayfly_sessions{state=\"ready\"} 2",
            "mayfly_sessions{state=\"failed\"} 0",
            "mayfly_session_creations_total 1",
            "mayfly_vm_boot_seconds_bucket{le=\"0.25\"} 0",
            "mayfly_vm_boot_seconds_bucket{le=\"0.5\"} 1",
            "mayfly_vm_boot_seconds_bucket{le=\"8\"} 2",
            "mayfly_vm_boot_seconds_bucket{le=\"+Inf\"} 2",
            "mayfly_vm_boot_seconds_count 2",
            "mayfly_http_responses_total{class=\"2xx\"} 1",
            "mayfly_http_responses_total{class=\"4xx\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
