//! `scripts/install-deps` must produce an `apt-get install` that apt can resolve on a fresh
//! Debian 12 machine: its `--check` mode simulates (apt-get -s) the plan for a machine with none
//! of the packages, whatever this machine has installed. Issue 12: the QEMU packages were all
//! pinned to qemu-system-x86's version, which qemu-system-data (Architecture: all, no +bN binNMU
//! suffix) does not have, so a fresh `scripts/run` failed in apt.

use std::path::PathBuf;
use std::process::Command;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install-deps")
}

/// apt's candidate for a package on a machine with nothing installed (an empty dpkg status).
fn fresh_candidate(pkg: &str) -> String {
    let empty = std::env::temp_dir().join(format!("mayfly-empty-status-{}-{pkg}", std::process::id()));
    std::fs::write(&empty, "").unwrap();
    let out = Command::new("apt-cache")
        .env("LC_ALL", "C")
        .args(["-o", &format!("Dir::State::status={}", empty.display())])
        .args(["-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=", "policy", pkg])
        .output()
        .expect("apt-cache runs (the project targets Debian 12)");
    let _ = std::fs::remove_file(&empty);
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate: "))
        .unwrap_or_else(|| panic!("no candidate for {pkg} in:\n{text}"))
        .to_string();
    assert_ne!(v, "(none)", "apt has no version of {pkg}");
    v
}

#[test]
fn the_fresh_machine_plan_resolves_in_apt() {
    let out = Command::new(script()).args(["--check", "--test"]).output().expect("run install-deps --check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "install-deps --check failed:\n{stderr}");
    assert!(stderr.contains("ok: apt resolves the plan"), "{stderr}");
}

#[test]
fn the_plan_pins_each_qemu_package_to_its_own_candidate_and_installs_the_toolchains() {
    let out = Command::new(script()).args(["--print-plan", "--test"]).output().expect("run install-deps --print-plan");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = plan.split_whitespace().collect();
    assert_eq!(&words[..2], ["apt-get", "install"], "{plan}");
    for pkg in ["qemu-system-x86", "qemu-system-common", "qemu-system-data", "qemu-utils"] {
        let pinned = format!("{pkg}={}", fresh_candidate(pkg));
        assert!(words.contains(&pinned.as_str()), "plan lacks {pinned}: {plan}");
    }
    // A fresh machine has neither cargo nor Node 20+: Debian's Rust, and npm to fetch Node 22.
    for pkg in ["rustc-web", "cargo-web", "rust-web-clippy", "npm", "mmdebstrap", "busybox-static", "chromium", "git", "systemd"] {
        assert!(words.contains(&pkg), "plan lacks {pkg}: {plan}");
    }
    // Only the QEMU packages are pinned: the rest resolve the way apt resolves them.
    for w in words.iter().filter(|w| w.contains('=')) {
        assert!(w.starts_with("qemu-"), "unexpected pin {w}: {plan}");
    }
}
