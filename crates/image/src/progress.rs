//! Build progress reporting. The pipeline calls a [`Progress`] at each step boundary and for each
//! line of tool output; the reporter decides how to show it.
//!
//! [`TerminalProgress`] draws an indicatif spinner per step (name, elapsed time, latest tool output)
//! when attached to a terminal, and prints one plain line per step otherwise (CI logs, pipes).
//! [`LogProgress`] only emits `tracing` events, for servers and tests.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::ImageError;

/// The build steps, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Host tools, permissions, guest binary.
    Check,
    /// Resolve, download and unpack the kernel package; extract vmlinux and modules.
    Kernel,
    /// Write the busybox initramfs.
    Initramfs,
    /// mmdebstrap the root filesystem tree.
    Rootfs,
    /// Install the guest daemon, make the ext4 filesystem, convert to qcow2.
    Assemble,
    /// Write the manifest and move the image into place.
    Publish,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Check => "check",
            Step::Kernel => "kernel",
            Step::Initramfs => "initramfs",
            Step::Rootfs => "rootfs",
            Step::Assemble => "assemble",
            Step::Publish => "publish",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a finished step went.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub elapsed: Duration,
    /// The step's result came from the cache.
    pub cached: bool,
    /// One short line, e.g. "6.1.0-56-cloud-amd64" or "412 MiB tree".
    pub summary: String,
}

/// Receives build progress. Called from the building thread and from tool-output reader threads.
pub trait Progress: Sync {
    fn started(&self, step: Step);
    /// One line of output from the step's external tool.
    fn detail(&self, _step: Step, _line: &str) {}
    fn finished(&self, step: Step, report: &StepReport);
    fn failed(&self, _step: Step, _error: &ImageError) {}
    /// Something the user should know that is not a step, e.g. waiting for a lock.
    fn note(&self, _message: &str) {}
}

/// Reports through `tracing` only.
#[derive(Debug, Default)]
pub struct LogProgress;

impl Progress for LogProgress {
    fn started(&self, step: Step) {
        tracing::info!(%step, "build step started");
    }
    fn detail(&self, step: Step, line: &str) {
        tracing::trace!(%step, "{line}");
    }
    fn finished(&self, step: Step, r: &StepReport) {
        tracing::info!(%step, elapsed_s = r.elapsed.as_secs_f64(), cached = r.cached, "{}", r.summary);
    }
    fn failed(&self, step: Step, error: &ImageError) {
        tracing::warn!(%step, "build step failed: {error}");
    }
    fn note(&self, message: &str) {
        tracing::info!("{message}");
    }
}

/// Spinners on a terminal, plain lines elsewhere. Writes to stderr so stdout stays for results.
pub struct TerminalProgress {
    fancy: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl TerminalProgress {
    /// Spinners if both stdout and stderr are terminals, plain lines otherwise.
    pub fn new() -> Self {
        Self::with_spinners(std::io::stdout().is_terminal() && std::io::stderr().is_terminal())
    }

    pub fn with_spinners(fancy: bool) -> Self {
        TerminalProgress {
            fancy,
            bar: Mutex::new(None),
        }
    }

    fn plain(&self, line: &str) {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    fn take_bar(&self) -> Option<ProgressBar> {
        self.bar.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Default for TerminalProgress {
    fn default() -> Self {
        Self::new()
    }
}

fn outcome(r: &StepReport) -> String {
    let cached = if r.cached { " (cached)" } else { "" };
    format!("{:.1}s{cached}  {}", r.elapsed.as_secs_f64(), r.summary)
}

impl Progress for TerminalProgress {
    fn started(&self, step: Step) {
        tracing::debug!(%step, "build step started");
        if !self.fancy {
            self.plain(&format!("image build: {step} ..."));
            return;
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner:.cyan} {prefix:<10.bold} {elapsed:>4} {wide_msg:.dim}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(step.name());
        bar.enable_steady_tick(Duration::from_millis(120));
        if let Some(old) = self
            .bar
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(bar)
        {
            old.finish_and_clear();
        }
    }

    fn detail(&self, step: Step, line: &str) {
        tracing::trace!(%step, "{line}");
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            bar.set_message(line.trim().to_string());
        }
    }

    fn finished(&self, step: Step, r: &StepReport) {
        tracing::debug!(%step, elapsed_s = r.elapsed.as_secs_f64(), cached = r.cached, "{}", r.summary);
        match self.take_bar() {
            Some(bar) => {
                bar.set_style(
                    ProgressStyle::with_template("{prefix:.green} {msg}").expect("valid template"),
                );
                bar.set_prefix(format!("✓ {:<10}", step.name()));
                bar.finish_with_message(outcome(r));
            }
            None => self.plain(&format!("image build: {step} done in {}", outcome(r))),
        }
    }

    fn failed(&self, step: Step, error: &ImageError) {
        match self.take_bar() {
            Some(bar) => {
                bar.set_style(
                    ProgressStyle::with_template("{prefix:.red} {msg}").expect("valid template"),
                );
                bar.set_prefix(format!("✗ {:<10}", step.name()));
                bar.finish_with_message("failed");
            }
            None => self.plain(&format!("image build: {step} FAILED: {error}")),
        }
    }

    fn note(&self, message: &str) {
        match self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(bar) => bar.println(message),
            None => self.plain(&format!("image build: {message}")),
        }
    }
}
