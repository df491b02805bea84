//! What `mayfly` says about itself: the data dir its help names, and logs without terminal
//! colour codes when stderr is a file or a pipe.

use std::process::Command;

fn mayfly() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mayfly"));
    c.env_remove("MAYFLY_DATA_DIR").env_remove("MAYFLY_LOG");
    c
}

/// The effective uid is 0 (read from /proc: no extra dependency for the test).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap()
}

fn serve_help(env: &[(&str, Option<&str>)]) -> String {
    let mut c = mayfly();
    for (k, v) in env {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let out = c.args(["serve", "--help"]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn serve_help_names_the_data_dir_really_used() {
    // Root uses /var/lib/mayfly even with XDG_DATA_HOME set (QEMU's account can reach it).
    let help = serve_help(&[("XDG_DATA_HOME", Some("/tmp/xdg-test"))]);
    let expected = if is_root() { "/var/lib/mayfly" } else { "/tmp/xdg-test/mayfly" };
    assert!(help.contains(&format!("Default: {expected} ")), "help does not name {expected}:\n{help}");
    assert!(!is_root() || !help.contains("xdg-test"), "{help}");

    let help = serve_help(&[("XDG_DATA_HOME", None), ("HOME", Some("/home/someone"))]);
    let expected = if is_root() { "/var/lib/mayfly" } else { "/home/someone/.local/share/mayfly" };
    assert!(help.contains(&format!("Default: {expected} ")), "help does not name {expected}:\n{help}");
    // And the rule, for other users and environments.
    assert!(help.contains("/var/lib/mayfly as root, else $XDG_DATA_HOME/mayfly, else ~/.local/share/mayfly"), "{help}");
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    // A client command against a closed port logs (at debug) while it connects and fails.
    let data = std::env::temp_dir().join(format!("mayfly-cli-output-{}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    let out = mayfly()
        .env("MAYFLY_LOG", "debug")
        .env("MAYFLY_URL", "http://127.0.0.1:1")
        .env("MAYFLY_TOKEN", "x")
        .arg("--data-dir")
        .arg(&data)
        .arg("ls")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&data);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DEBUG"), "expected debug log lines on stderr:\n{stderr}");
    assert!(!stderr.contains('\u{1b}'), "colour codes in piped logs:\n{stderr:?}");
}
