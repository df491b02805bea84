//! Faults from inside a real VM: the guest daemon killed with SIGKILL (init restarts it), a
//! guest that writes garbage into its channel, and a full guest disk. Each test ends by
//! deleting its sessions, stopping the server and checking that nothing leaked.

use crate::common;

use common::leaks::assert_nothing_left;
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// The tests of this binary run one at a time: they count this process's Unix sockets, and
/// several VMs at once under TCG on a small runner only make each slower.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `POST .../exec` with a guest-side timeout; a hang guard bounds the HTTP call.
async fn exec_t(server: &TestServer, id: &str, cmd: &[&str], timeout_seconds: u64) -> (u16, Value) {
    let call = server
        .http
        .post(server.url(&format!("/api/v1/sessions/{id}/exec")))
        .json(&json!({ "cmd": cmd, "timeout_seconds": timeout_seconds }))
        .send();
    let r = tokio::time::timeout(Duration::from_secs(timeout_seconds + 60), call).await.expect("exec answered").unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn sh(server: &TestServer, id: &str, script: &str) -> Value {
    let (status, out) = exec_t(server, id, &["sh", "-c", script], 60).await;
    assert_eq!(status, 200, "{script}: {out}");
    out
}

/// Pid of the guest daemon (the `[d]` keeps pgrep from matching the shell running it).
const DAEMON_PID: &str = "pgrep -f 'mayfly-guest [d]aemon'";

/// Retries `exec` until it succeeds (the guest is back); hang guard 60 s.
async fn until_exec_works(server: &TestServer, id: &str, script: &str) -> Value {
    for _ in 0..300 {
        let (status, out) = exec_t(server, id, &["sh", "-c", script], 10).await;
        if status == 200 && out["exit_code"] == 0 {
            return out;
        }
        assert!(status < 500 || status == 502, "only a VM error while the guest is away: {status} {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{id}: exec never worked again");
}

async fn state(server: &TestServer, id: &str) -> Value {
    server.get(&format!("/api/v1/sessions/{id}")).await.1["state"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_guest_daemon_is_restarted_and_the_session_recovers() {
    common::alone_in_this_process("guest_faults");
    let _serial = SERIAL.lock().await;
    let baseline = common::leaks::baseline().await;
    let server = TestServer::start(|_| {}).await;
    let id = server.ready_session(json!({})).await;
    let before = sh(&server, &id, DAEMON_PID).await["stdout"].as_str().unwrap().trim().to_string();
    assert!(before.parse::<u32>().is_ok(), "one daemon pid: {before:?}");

    let mut pty = server.ws(&format!("/api/v1/sessions/{id}/pty?terminal=t1")).await;
    type_keys(&mut pty, "echo before$((1+1))\r").await;
    read_until(&mut pty, "before2").await;

    // Detached, so the kill does not take the exec stream that starts it down with it.
    sh(&server, &id, &format!("setsid sh -c 'sleep 0.5; kill -9 {before}' </dev/null >/dev/null 2>&1 &")).await;

    // The open terminal lived in the killed daemon: it says so and closes.
    let mut notices = Vec::new();
    loop {
        match tokio::time::timeout(SLOW, pty.next()).await.expect("terminal ends in time") {
            Some(Ok(Message::Text(t))) => notices.push(serde_json::from_str::<Value>(&t).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
    assert!(
        notices.iter().any(|n| n["type"] == "error" && n["message"].as_str().unwrap().contains("terminal stream ended")),
        "{notices:?}"
    );

    let after = until_exec_works(&server, &id, DAEMON_PID).await["stdout"].as_str().unwrap().trim().to_string();
    assert_ne!(after, before, "init started a new daemon");
    assert_eq!(state(&server, &id).await, "ready");
    // Re-attaching the same terminal id gives a working shell (the old one died with its daemon).
    let mut pty = server.ws(&format!("/api/v1/sessions/{id}/pty?terminal=t1")).await;
    type_keys(&mut pty, "echo after$((1+2))\r").await;
    read_until(&mut pty, "after3").await;
    drop(pty);
    let (status, files) = server.get(&format!("/api/v1/sessions/{id}/files?path=/root")).await;
    assert_eq!(status, 200, "{files}");

    assert_eq!(server.delete(&id).await, 204);
    assert_vm_gone(&server, &id).await;
    let data = server.stop().await;
    assert_nothing_left(data.path(), &baseline).await;
}

/// From inside the VM, as root: for `secs` seconds, keep killing the daemon and write random
/// bytes into the channel's port in its place. Detached, so it outlives the exec that starts it.
fn garbage_script(secs: u32) -> String {
    let inner = format!(
        "port=/dev/$(basename $(dirname $(grep -lx mayfly.0 /sys/class/virtio-ports/*/name))); \
         end=$(( $(date +%s) + {secs} )); \
         while [ $(date +%s) -lt $end ]; do \
           pkill -9 -f \"mayfly-guest [d]aemon\"; \
           timeout 1 head -c 262144 /dev/urandom > $port 2>/dev/null; \
         done; echo done > /root/garbage-done"
    );
    format!("setsid sh -c '{inner}' </dev/null >/dev/null 2>&1 &")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_writing_garbage_to_its_channel_cannot_stall_the_control_plane() {
    common::alone_in_this_process("guest_faults");
    let _serial = SERIAL.lock().await;
    let baseline = common::leaks::baseline().await;
    let server = TestServer::start(|_| {}).await;
    let victim = server.ready_session(json!({})).await;
    let bystander = server.ready_session(json!({})).await;

    sh(&server, &victim, &garbage_script(8)).await;
    // While the storm lasts: the API, the other session and this one's calls all answer
    // (the victim's with a VM error or, between bursts, a result — never a hang or a 500).
    let mut victim_errors = 0;
    for i in 0..6 {
        let (status, body) = exec_t(&server, &victim, &["true"], 5).await;
        assert!(status == 200 || status == 502 || status == 409, "victim call {i}: {status} {body}");
        if status != 200 {
            victim_errors += 1;
        }
        let out = sh(&server, &bystander, "echo fine").await;
        assert_eq!(out["stdout"], "fine\n");
        let (status, _) = server.get("/api/v1/sessions").await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("victim calls that failed during the storm: {victim_errors} of 6");

    // Once the guest stops, init's daemon takes the port back and the session recovers.
    until_exec_works(&server, &victim, "test -e /root/garbage-done").await;
    until_exec_works(&server, &victim, "echo back").await;
    assert_eq!(state(&server, &victim).await, "ready", "a garbage burst does not fail the session");
    assert_eq!(state(&server, &bystander).await, "ready");

    for id in [&victim, &bystander] {
        assert_eq!(server.delete(id).await, 204);
        assert_vm_gone(&server, id).await;
    }
    let data = server.stop().await;
    assert_nothing_left(data.path(), &baseline).await;
}

fn qemu_img_virtual_size(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("qemu-img")
        .args(["info", "--force-share", "--output=json"])
        .arg(path)
        .output()
        .expect("qemu-img runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    info["virtual-size"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_guest_disk_is_enospc_inside_and_bounded_outside() {
    common::alone_in_this_process("guest_faults");
    let _serial = SERIAL.lock().await;
    let baseline = common::leaks::baseline().await;
    let server = TestServer::start(|_| {}).await;
    // A disk bigger than the image's (2 GiB), chosen by the client: that is the size enforced.
    let id = server.ready_session(json!({"disk_gib": 3})).await;
    let overlay = server.run_dir(&id).join("overlay.qcow2");
    let virtual_size = qemu_img_virtual_size(&overlay);
    assert_eq!(virtual_size, 3 << 30, "the overlay has the requested size");
    let start_len = std::fs::metadata(&overlay).unwrap().len();

    // Reserve all but the last 192 MiB without writing (fast), unless MAYFLY_DISK_FILL=full;
    // then write non-zero data until the disk is full (the drive skips writes of zeros).
    let full = std::env::var("MAYFLY_DISK_FILL").is_ok_and(|v| v == "full");
    if !full {
        sh(&server, &id, "fallocate -l $(( $(df -B1 --output=avail / | tail -1) - (192 << 20) )) /root/prefill").await;
    }
    let fill = "yes mayflymayflymayflymayflymayflymayflymayflymayfly > /root/fill; echo rc=$?; sync";
    let (status, out) = exec_t(&server, &id, &["sh", "-c", fill], 900).await;
    assert_eq!(status, 200, "{out}");
    let stderr = out["stderr"].as_str().unwrap();
    assert!(stderr.contains("No space left on device"), "ENOSPC inside the VM: {out}");
    assert!(out["stdout"].as_str().unwrap().contains("rc=1"), "{out}");
    let written = sh(&server, &id, "stat -c %s /root/fill").await["stdout"].as_str().unwrap().trim().parse::<u64>().unwrap();

    let full_len = std::fs::metadata(&overlay).unwrap().len();
    println!(
        "disk full: guest wrote {} MiB; overlay {} → {} MiB on the host; virtual size {} MiB",
        written >> 20,
        start_len >> 20,
        full_len >> 20,
        virtual_size >> 20
    );
    assert!(full_len >= start_len + written / 2, "the writes reached the overlay (the test is real)");
    // qcow2 metadata for a disk this size is a few MiB; 2% is a generous ceiling.
    assert!(full_len <= virtual_size + virtual_size / 50, "overlay {full_len} B exceeds the disk's {virtual_size} B");

    // The session and the server carry on; a write through the API fails with a clear error.
    assert_eq!(state(&server, &id).await, "ready");
    let put = server
        .http
        .put(server.url(&format!("/api/v1/sessions/{id}/files?path=/root/more")))
        .body(vec![b'x'; 4 << 20])
        .send()
        .await
        .unwrap();
    let status = put.status().as_u16();
    let body: Value = put.json().await.unwrap_or(Value::Null);
    assert!(status != 204 && status < 500 || status == 502, "{status} {body}");
    assert!(body["error"]["message"].as_str().unwrap_or("").contains("space"), "{status} {body}");
    assert_eq!(sh(&server, &id, "echo alive").await["stdout"], "alive\n");

    // Space freed inside, writes work again.
    let again = sh(&server, &id, "rm -f /root/fill /root/prefill && sync && head -c 8388608 /dev/urandom > /root/small && sync && stat -c %s /root/small").await;
    assert_eq!(again["stdout"], "8388608\n", "{again}");
    assert!(std::fs::metadata(&overlay).unwrap().len() <= virtual_size + virtual_size / 50);

    assert_eq!(server.delete(&id).await, 204);
    assert_vm_gone(&server, &id).await;
    let data = server.stop().await;
    assert_nothing_left(data.path(), &baseline).await;
}
