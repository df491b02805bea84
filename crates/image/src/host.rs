//! The host side of a build: finding the tools it shells out to (with the apt package that provides
//! each) and running them with their output captured to a log file and forwarded to the progress
//! reporter. Errors carry the tail of the output so the cause is visible without opening the log.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::error::{ImageError, IoContext};
use crate::progress::{Progress, Step};

/// How many lines of output an error message quotes.
const TAIL_LINES: usize = 25;

/// Absolute paths of the host tools a build uses.
#[derive(Debug, Clone)]
pub(crate) struct HostTools {
    pub mmdebstrap: PathBuf,
    pub mkfs_ext4: PathBuf,
    pub qemu_img: PathBuf,
    pub busybox: PathBuf,
    pub dpkg_deb: PathBuf,
    pub apt_get: PathBuf,
    pub apt_cache: PathBuf,
    pub cp: PathBuf,
}

impl HostTools {
    /// Find every tool, check the build can run here (root, static busybox), or say what is missing.
    pub fn check() -> Result<HostTools, ImageError> {
        let tools = HostTools {
            mmdebstrap: find("mmdebstrap", "mmdebstrap")?,
            mkfs_ext4: find("mkfs.ext4", "e2fsprogs")?,
            qemu_img: find("qemu-img", "qemu-utils")?,
            busybox: find("busybox", "busybox-static")?,
            dpkg_deb: find("dpkg-deb", "dpkg")?,
            apt_get: find("apt-get", "apt")?,
            apt_cache: find("apt-cache", "apt")?,
            cp: find("cp", "coreutils")?,
        };
        if !nix::unistd::geteuid().is_root() {
            return Err(ImageError::Host(
                "image builds must run as root (mmdebstrap root mode creates device nodes and \
                 root-owned files); run `sudo mayfly image build`"
                    .into(),
            ));
        }
        if !Path::new(crate::rootfs::MERGED_USR_HOOKS).is_dir() {
            return Err(ImageError::Host(format!(
                "{} is missing; reinstall it with `apt-get install --reinstall mmdebstrap`",
                crate::rootfs::MERGED_USR_HOOKS
            )));
        }
        let busybox = std::fs::read(&tools.busybox)
            .ctx(|| format!("cannot read {}", tools.busybox.display()))?;
        if !is_static_elf(&busybox) {
            return Err(ImageError::Host(format!(
                "{} is dynamically linked; the initramfs needs a static busybox: \
                 `apt-get install busybox-static`",
                tools.busybox.display()
            )));
        }
        Ok(tools)
    }
}

impl HostTools {
    /// Tools by bare name: for command lines that are only hashed or inspected, never run.
    pub fn named() -> HostTools {
        HostTools {
            mmdebstrap: "mmdebstrap".into(),
            mkfs_ext4: "mkfs.ext4".into(),
            qemu_img: "qemu-img".into(),
            busybox: "busybox".into(),
            dpkg_deb: "dpkg-deb".into(),
            apt_get: "apt-get".into(),
            apt_cache: "apt-cache".into(),
            cp: "cp".into(),
        }
    }
}

/// Look a tool up in `PATH` and the sbin directories (often missing from a non-login `PATH`).
fn find(tool: &'static str, package: &'static str) -> Result<PathBuf, ImageError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(tool))
        .find(|p| is_executable(p))
        .ok_or(ImageError::ToolMissing { tool, package })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// True for a 64-bit little-endian ELF executable with no `PT_INTERP` program header.
pub(crate) fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    if !bytes.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..phnum).all(|i| u32_at(phoff + i * phentsize).is_some_and(|t| t != PT_INTERP))
}

/// Run `cmd` for `step`, appending its stdout and stderr to `log` and forwarding each line to
/// `progress`. Fails with the last lines of output if the command does not exit 0.
pub(crate) fn run(
    step: Step,
    cmd: &mut Command,
    log: &Path,
    progress: &dyn Progress,
) -> Result<(), ImageError> {
    let program = program_name(cmd);
    tracing::debug!(%step, ?cmd, "running");
    let mut log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .ctx(|| format!("cannot open log {}", log.display()))?;
    let _ = writeln!(log_file, "$ {cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ctx(|| format!("cannot start {program}"))?;
    let sink = Mutex::new((log_file, VecDeque::with_capacity(TAIL_LINES)));
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    std::thread::scope(|s| {
        for stream in [
            stdout.map(|o| Box::new(o) as Box<dyn Read + Send>),
            stderr.map(|e| Box::new(e) as _),
        ]
        .into_iter()
        .flatten()
        {
            let sink = &sink;
            s.spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    progress.detail(step, &line);
                    let mut guard = sink.lock().unwrap_or_else(|e| e.into_inner());
                    let (file, tail) = &mut *guard;
                    let _ = writeln!(file, "{line}");
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            });
        }
    });
    let status = child.wait().ctx(|| format!("cannot wait for {program}"))?;
    if status.success() {
        return Ok(());
    }
    let (_, tail) = sink.into_inner().unwrap_or_else(|e| e.into_inner());
    Err(ImageError::Command {
        step: step.name(),
        program,
        status: status.to_string(),
        log: log.to_path_buf(),
        tail: tail.into_iter().collect::<Vec<_>>().join("\n"),
    })
}

/// Run a short query command and return its stdout; stderr goes into the error.
pub(crate) fn query(step: Step, cmd: &mut Command) -> Result<String, ImageError> {
    let program = program_name(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .ctx(|| format!("cannot start {program}"))?;
    if !out.status.success() {
        return Err(ImageError::Command {
            step: step.name(),
            program,
            status: out.status.to_string(),
            log: PathBuf::from("(not logged)"),
            tail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn program_name(cmd: &Command) -> String {
    Path::new(cmd.get_program())
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::LogProgress;

    #[test]
    fn host_busybox_is_static_and_sh_is_not() {
        if let Ok(bb) = std::fs::read("/bin/busybox") {
            assert!(is_static_elf(&bb));
        }
        if let Ok(cp) = std::fs::read("/bin/cp") {
            assert!(!is_static_elf(&cp));
        }
        assert!(!is_static_elf(b"#!/bin/sh"));
    }

    #[test]
    fn missing_tool_names_package() {
        let e = find("definitely-not-a-tool", "some-package").unwrap_err();
        assert!(e.to_string().contains("apt-get install some-package"));
    }

    #[test]
    fn run_logs_output_and_reports_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        run(
            Step::Check,
            Command::new("sh").args(["-c", "echo out; echo err >&2"]),
            &log,
            &LogProgress,
        )
        .unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("out\n") && text.contains("err\n"), "{text}");
        let e = run(
            Step::Rootfs,
            Command::new("sh").args(["-c", "echo boom >&2; exit 3"]),
            &log,
            &LogProgress,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("rootfs: `sh` failed (exit status: 3)"), "{e}");
        assert!(e.ends_with("boom"), "{e}");
    }
}
