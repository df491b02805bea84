//! What a stopped or idle server must not leave behind: QEMU processes, run dirs (overlays,
//! QMP and channel sockets, logs), host-side Unix socket descriptors, live store rows.

use mayfly_proto::api::SessionState;
use mayfly_server::store::{SessionStore, SqliteStore};
use std::collections::BTreeMap;
use std::path::Path;

/// QEMU processes whose command line points into `data_dir` (every VM of that server).
pub fn qemu_pids_in(data_dir: &Path) -> Vec<u32> {
    let needle = data_dir.join("vms").to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

/// Files under `dir` (recursively) whose name ends with one of `suffixes`.
pub fn files_ending(dir: &Path, suffixes: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p);
            } else if suffixes.iter().any(|s| p.to_string_lossy().ends_with(s)) {
                found.push(p.display().to_string());
            }
        }
    }
    found
}

/// Unix sockets this process holds open, by inode, each with its `/proc/net/unix` line. The
/// server's QMP and guest channel connections are among them; TCP connections are not.
pub fn unix_sockets() -> BTreeMap<String, String> {
    let unix: BTreeMap<String, String> = std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(6).map(|inode| (inode.to_string(), l.to_string())))
        .collect();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_string_lossy().strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')).map(str::to_string)
        })
        .filter_map(|inode| unix.get(&inode).map(|line| (inode, line.clone())))
        .collect()
}

/// The Unix sockets open before a server starts. Spawning a child first makes tokio create its
/// process-wide SIGCHLD socket pair, which is no server's and stays for the process's life.
pub async fn baseline() -> BTreeMap<String, String> {
    let _ = tokio::process::Command::new("true").status().await;
    unix_sockets()
}

/// Sockets open now that were not in `baseline`.
pub fn new_unix_sockets(baseline: &BTreeMap<String, String>) -> Vec<String> {
    unix_sockets().into_iter().filter(|(inode, _)| !baseline.contains_key(inode)).map(|(_, line)| line).collect()
}

/// Sessions in the store that are not in a final state (destroyed; failed with its VM gone).
pub async fn live_rows(data_dir: &Path) -> Vec<String> {
    let store = SqliteStore::open(&data_dir.join("sessions.db")).await.unwrap();
    store
        .list(&[SessionState::Creating, SessionState::Ready, SessionState::Stopping])
        .await
        .unwrap()
        .into_iter()
        .map(|r| format!("{} {:?}", r.id, r.state))
        .collect()
}

/// Asserts a stopped server's data dir holds no VM, run dir, overlay, socket file or live row.
pub async fn assert_no_leftovers(data_dir: &Path) {
    assert!(qemu_pids_in(data_dir).is_empty(), "QEMU left running: {:?}", qemu_pids_in(data_dir));
    let run_dirs: Vec<_> = std::fs::read_dir(data_dir.join("vms")).into_iter().flatten().flatten().map(|e| e.path()).collect();
    assert!(run_dirs.is_empty(), "run dirs left: {run_dirs:?}");
    let files = files_ending(data_dir, &[".qcow2", ".sock"]);
    assert!(files.is_empty(), "overlays or sockets left: {files:?}");
    let rows = live_rows(data_dir).await;
    assert!(rows.is_empty(), "live sessions left in the store: {rows:?}");
    let cgroups = vm_cgroups_of(data_dir);
    assert!(cgroups.is_empty(), "VM cgroups left: {cgroups:?}");
}

/// VM cgroups of the server with `data_dir` that exist now (none where cgroups are unusable).
pub fn vm_cgroups_of(data_dir: &Path) -> Vec<String> {
    let tag = mayfly_vm::confine::state_tag(&data_dir.join("vms"));
    let Ok(layout) = mayfly_vm::confine::cgroup::Cgroups::locate(&tag) else { return Vec::new() };
    layout
        .parents()
        .iter()
        .flat_map(|p| std::fs::read_dir(p).into_iter().flatten().flatten())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path().display().to_string())
        .collect()
}

/// [`assert_no_leftovers`], and this process holds no Unix socket that was not open before the
/// server (`baseline`). Only for tests that run alone in their process (see `SERIAL`).
pub async fn assert_nothing_left(data_dir: &Path, baseline: &BTreeMap<String, String>) {
    assert_no_leftovers(data_dir).await;
    // Descriptors close when the tasks holding them end; give them a moment (hang guard only).
    for _ in 0..50 {
        if new_unix_sockets(baseline).is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("Unix sockets opened since the server started are still open: {:#?}", new_unix_sockets(baseline));
}
