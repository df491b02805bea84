//! PID 1 for real: `mayfly-guest init` inside fresh PID, mount, UTS and network namespaces, with
//! a file bind-mounted over /dev/console. Needs root and `unshare`; skipped otherwise.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (pid, state) of every process whose parent is `parent`.
fn children_of(parent: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let mut rest = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace()).into_iter().flatten();
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if rest.next().and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            out.push((pid, state));
        }
    }
    out
}

fn live_children(parent: u32) -> Vec<u32> {
    children_of(parent).into_iter().filter(|(_, s)| *s != 'Z').map(|(p, _)| p).collect()
}

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && Command::new("unshare")
        .args(["--pid", "--fork", "--mount", "--uts", "--net", "--mount-proc", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Kills the whole namespace if the test fails half way (SIGKILL to its init ends it).
struct Namespace {
    unshare: std::process::Child,
    init: Option<u32>,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Some(init) = self.init {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(init as i32, libc::SIGKILL) };
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

#[test]
fn init_supervises_reaps_and_powers_off() {
    if !can_run() {
        eprintln!("skipped: needs root and unshare");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("console");
    std::fs::write(&console, "").unwrap();
    let console_text = || std::fs::read_to_string(&console).unwrap();
    let script = format!(
        "mount --bind {} /dev/console && exec {} init --no-resize",
        console.display(),
        env!("CARGO_BIN_EXE_mayfly-guest")
    );
    let unshare = Command::new("unshare")
        .args(["--pid", "--fork", "--mount", "--uts", "--net", "--mount-proc", "/bin/sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ns = Namespace { unshare, init: None };
    let init = wait_for("init", || live_children(ns.unshare.id()).first().copied());
    ns.init = Some(init);
    wait_for("the started line", || console_text().contains("mayfly-init: daemon started").then_some(()));
    let daemon = wait_for("the daemon", || live_children(init).first().copied());
    let comm = std::fs::read_to_string(format!("/proc/{daemon}/cmdline")).unwrap();
    assert!(comm.ends_with("daemon\0"), "{comm:?}");

    // Set up by init: hostname in its UTS namespace, lo up in its network namespace (::1 appears).
    let host = Command::new("nsenter").args(["-t", &init.to_string(), "-u", "hostname"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&host.stdout).trim(), "mayfly");
    let inet6 = std::fs::read_to_string(format!("/proc/{init}/net/if_inet6")).unwrap_or_default();
    assert!(inet6.contains(" lo"), "lo is not up: {inet6:?}");
    let environ = std::fs::read(format!("/proc/{daemon}/environ")).unwrap();
    assert!(String::from_utf8_lossy(&environ).contains("LANG=C.UTF-8"));

    // kill -9 the daemon: it comes back.
    signal(daemon, libc::SIGKILL);
    let respawned = wait_for("a new daemon", || live_children(init).into_iter().find(|&p| p != daemon));
    assert_ne!(respawned, daemon);
    wait_for("a second started line", || (console_text().matches("daemon started").count() >= 2).then_some(()));

    // An orphan inside the namespace is reparented to init and reaped when it exits.
    let status = Command::new("nsenter")
        .args(["-t", &init.to_string(), "-p", "--", "/bin/sh", "-c", "sleep 0.3 & exit 0"])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for("the orphan to reach init", || (live_children(init).len() >= 2).then_some(()));
    wait_for("the orphan to be reaped", || {
        let kids = children_of(init);
        (kids.len() == 1 && kids.iter().all(|(_, s)| *s != 'Z')).then_some(())
    });

    // SIGTERM: everything stops and the namespace powers off (reboot() ends a PID namespace).
    signal(init, libc::SIGTERM);
    let status = wait_for("init to power off", || ns.unshare.try_wait().unwrap());
    assert!(!Path::new(&format!("/proc/{respawned}")).exists() || live_children(init).is_empty());
    assert!(console_text().contains("mayfly-init: shutting down"), "{status:?}: {}", console_text());
}
