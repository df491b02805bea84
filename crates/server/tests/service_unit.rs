//! The shipped systemd unit (`dist/systemd/mayfly.service`) is valid for this machine's systemd
//! (`systemd-analyze verify`, with no complaint either) and keeps the VMs alive across a stop:
//! only the server process is signalled.

use crate::common;

use std::process::Command;

#[test]
fn the_systemd_unit_verifies_and_stops_only_the_server() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../dist/systemd/mayfly.service")).unwrap();
    let setting = |key: &str| unit.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).map(str::trim);
    assert_eq!(setting("KillMode"), Some("process"), "a stop must not signal the QEMU processes");
    assert_eq!(setting("ExecStart"), Some("/usr/local/bin/mayfly serve"));
    assert_eq!(setting("Delegate"), Some("yes"), "the server makes the VMs' cgroups below its own");

    // verify checks that ExecStart's program exists: point it at the binary just built.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mayfly.service");
    let bin = common::external::mayfly_binary();
    std::fs::write(&path, unit.replace("/usr/local/bin/mayfly", &bin.to_string_lossy())).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs (package systemd; scripts/install-deps --test installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed: {stderr}");
    // verify only warns about unknown or malformed settings: any line about the unit is a defect.
    let own: Vec<&str> = stderr.lines().filter(|l| l.contains("mayfly.service")).collect();
    assert!(own.is_empty(), "systemd-analyze verify complained: {own:?}");
}
