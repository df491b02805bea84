//! Template snapshots and clones with the real `minimal` image.

mod common;

use mayfly_proto::msg::{ExecRequest, OpenRequest, PtyRequest};
use mayfly_proto::mux::Event;
use mayfly_vm::snapshot::Template;
use mayfly_vm::{Vm, VmBackend};
use std::sync::Arc;

async fn sh(vm: &Arc<dyn Vm>, script: &str) -> String {
    let out = vm
        .channel()
        .exec(ExecRequest { cmd: vec!["sh".into(), "-c".into(), script.into()], ..Default::default() }, 1 << 20)
        .await
        .unwrap();
    assert_eq!(out.exit_code, Some(0), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Opens the VM's first default terminal, types `keys`, and returns its output up to `until`.
async fn first_terminal(vm: &Arc<dyn Vm>, keys: &str, until: &str) -> String {
    let req = OpenRequest::Pty(PtyRequest { terminal: Some("t".into()), cols: 80, rows: 24, ..Default::default() });
    let mut s = vm.channel().open(&req).await.expect("pty");
    s.send_data(0, keys.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !String::from_utf8_lossy(&seen).contains(until) {
        assert!(std::time::Instant::now() < deadline, "no {until:?} in {:?}", String::from_utf8_lossy(&seen));
        let Ok(ev) = tokio::time::timeout(std::time::Duration::from_secs(120), s.recv()).await else {
            let ps = sh(vm, "ps -eo pid,ppid,stat,wchan:20,args; for p in $(pgrep bash); do echo $p; cat /proc/$p/stack 2>/dev/null; done").await;
            panic!("no terminal output after {:?}; the VM's processes:\n{ps}", String::from_utf8_lossy(&seen));
        };
        match ev {
            Event::Data { data, .. } => seen.extend_from_slice(&data),
            Event::Ctrl(_) => {}
            other => panic!("terminal ended: {other:?} after {:?}", String::from_utf8_lossy(&seen)),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_are_independent_restores_of_a_template() {
    let state = common::state_dir();
    let backend = common::backend(state.path());
    let tdir = state.path().join("templates").join("minimal");
    let mut spec = common::spec("t-tpl");
    spec.memory_mib = 256;
    let template = backend.create_template(spec, "key-1", &tdir).await.expect("template");
    assert!(template.meta.state_bytes < 8 << 20, "device state only: {}", template.meta.state_bytes);
    let reopened = Template::open(&tdir).unwrap();
    assert_eq!(reopened.meta, template.meta);
    assert!(reopened.incompatibility(&backend, "key-1").is_none());
    assert!(reopened.incompatibility(&backend, "key-2").unwrap().contains("key-2"));

    let a = backend.restore(common::spec("t-clone-a"), &template).await.expect("clone a");
    let b = backend.restore(common::spec("t-clone-b"), &template).await.expect("clone b");

    // Identity was refreshed per clone.
    assert_eq!(sh(&a, "hostname").await.trim(), "t-clone-a");
    assert_eq!(sh(&b, "hostname").await.trim(), "t-clone-b");
    assert_ne!(sh(&a, "cat /etc/machine-id").await, sh(&b, "cat /etc/machine-id").await);
    // RNG state differs.
    let ra = sh(&a, "head -c 32 /dev/urandom | od -An -tx1").await;
    let rb = sh(&b, "head -c 32 /dev/urandom | od -An -tx1").await;
    assert_ne!(ra, rb);
    // The template's parked login shell is each clone's first terminal: its prompt and
    // $HOSTNAME carry the clone's name, and its $RANDOM is its own.
    assert!(template.meta.parked_shell, "the template holds a parked shell");
    let script = "echo \"[$HOSTNAME $$ $RANDOM$RANDOM]\"\r";
    let ta = first_terminal(&a, script, "]\r\n").await;
    let tb = first_terminal(&b, script, "]\r\n").await;
    assert!(ta.contains("root@t-clone-a:"), "{ta:?}");
    assert!(tb.contains("root@t-clone-b:"), "{tb:?}");
    // The echo's output is the last "[…]\r\n"; the next prompt may have come in the same read,
    // and its escape sequences (bracketed paste, colours) hold '[' too.
    let line = |t: &str| {
        let end = t.rfind("]\r\n").unwrap_or(0);
        t[..end].rfind('[').map(|start| t[start + 1..end].to_string()).unwrap_or_default()
    };
    let (la, lb) = (line(&ta), line(&tb));
    assert!(la.starts_with("t-clone-a "), "{la:?}");
    assert!(lb.starts_with("t-clone-b "), "{lb:?}");
    // The same shell (same pid in both: it was started in the template), different random numbers.
    assert_eq!(la.split(' ').nth(1), lb.split(' ').nth(1), "both adopted the template's shell");
    assert_ne!(la.split(' ').nth(2), lb.split(' ').nth(2), "$RANDOM is reseeded per clone");
    // Clocks are right (the template was saved earlier; clones set the host's time).
    let host_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    for vm in [&a, &b] {
        let t: i64 = sh(vm, "date +%s").await.trim().parse().unwrap();
        assert!((t - host_now).abs() < 30, "guest clock {t} vs host {host_now}");
    }
    // Files written in one clone are absent in the other and in the template's disk.
    sh(&a, "echo secret-a > /root/only-a && sync").await;
    assert_eq!(sh(&b, "test -e /root/only-a && echo yes || echo no").await.trim(), "no");
    let c = backend.restore(common::spec("t-clone-c"), &template).await.expect("clone c");
    assert_eq!(sh(&c, "test -e /root/only-a && echo yes || echo no").await.trim(), "no");

    for vm in [a, b, c] {
        vm.stop().await.unwrap();
    }
    // Template files survive the clones; nothing else remains.
    assert!(Template::open(&tdir).is_ok());
    let left: Vec<_> = std::fs::read_dir(state.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("templates")], "only the template remains");
}

/// A fork starts from the source's memory and disk at one instant; both then go their own way.
async fn check_fork(backend: &mayfly_vm::qemu::QemuBackend, source: &Arc<dyn Vm>, fork_id: &str) {
    // State only in memory: a shell variable of a running loop, and a tmpfs file.
    sh(source, "head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /run/secret").await;
    sh(source, "v=$(cat /run/secret); (while :; do echo \"$v\" > /run/live; sleep 0.1; done) >/dev/null 2>&1 & echo $! > /run/loop.pid").await;
    sh(source, "echo before > /root/before && sync").await;
    // The disk is written and synced without a break up to the fork; /run/synced (memory) lists
    // each file only once it is on the disk. The fork must get the disk of the instant its
    // memory was taken, not of some moment before.
    sh(source, "mkdir -p /root/churn; (i=0; while :; do i=$((i+1)); echo $i > /root/churn/$i; sync; echo $i >> /run/synced; done) >/dev/null 2>&1 & echo $! > /run/churn.pid").await;
    sh(source, "for i in $(seq 100); do test $(wc -l < /run/synced) -ge 3 && break; sleep 0.1; done").await;
    let secret = sh(source, "cat /run/secret").await;

    let fork = backend.fork(source.as_ref(), fork_id).await.expect("fork");
    assert_eq!(sh(&fork, "hostname").await.trim(), fork_id);
    // (A cold-booted source never had one.)
    let machine_id = "cat /etc/machine-id 2>/dev/null || true";
    assert_ne!(sh(&fork, machine_id).await, sh(source, machine_id).await);
    assert_ne!(
        sh(&fork, "head -c 32 /dev/urandom | od -An -tx1").await,
        sh(source, "head -c 32 /dev/urandom | od -An -tx1").await
    );
    // The loop runs on in both, with its memory: a removed file comes back with the same value.
    for vm in [&fork, source] {
        let pid = sh(vm, "cat /run/loop.pid").await;
        sh(vm, &format!("kill -0 {}", pid.trim())).await;
        sh(vm, "rm -f /run/live; for i in $(seq 100); do test -s /run/live && break; sleep 0.1; done").await;
        assert_eq!(sh(vm, "cat /run/live").await.trim(), secret);
    }
    assert_eq!(sh(&fork, "cat /root/before").await.trim(), "before");
    // Every file the source had synced is on the fork's disk: read back from the disk itself.
    for vm in [&fork, source] {
        sh(vm, "kill $(cat /run/churn.pid)").await;
    }
    let check = sh(
        &fork,
        "sync; echo 3 > /proc/sys/vm/drop_caches; for i in $(cat /run/synced); do test \"$(cat /root/churn/$i 2>&1)\" = $i || echo \"$i: $(cat /root/churn/$i 2>&1)\"; done; echo checked $(wc -l < /run/synced)",
    )
    .await;
    assert!(check.starts_with("checked ") && !check.contains("checked 0"), "files synced before the fork, read from the fork's disk: {check}");
    // From here on their disks differ.
    sh(source, "echo s > /root/after-source && sync").await;
    sh(&fork, "echo f > /root/after-fork && sync").await;
    assert_eq!(sh(&fork, "test -e /root/after-source && echo yes || echo no").await.trim(), "no");
    assert_eq!(sh(source, "test -e /root/after-fork && echo yes || echo no").await.trim(), "no");
    // Both clocks are right (the source stood still while it was paused).
    let host_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    for vm in [&fork, source] {
        let t: i64 = sh(vm, "date +%s").await.trim().parse().unwrap();
        assert!((t - host_now).abs() < 30, "guest clock {t} vs host {host_now}");
    }
    fork.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_of_clones_and_of_cold_boots_keep_memory_and_disk() {
    let state = common::state_dir();
    let backend = common::backend(state.path());
    let tdir = state.path().join("templates").join("minimal");
    let mut spec = common::spec("f-tpl");
    spec.memory_mib = 256;
    let template = backend.create_template(spec, "key-1", &tdir).await.expect("template");
    let clone = backend.restore(common::spec("f-clone"), &template).await.expect("clone");
    check_fork(&backend, &clone, "f-clone-fork").await;
    // A fork of a fork.
    let again = backend.fork(clone.as_ref(), "f-again").await.expect("fork again");
    assert_eq!(sh(&again, "cat /root/after-source").await.trim(), "s");
    again.stop().await.unwrap();
    clone.stop().await.unwrap();

    let mut cold = common::spec("f-cold");
    cold.memory_mib = 256;
    let cold = backend.create(cold).await.expect("cold boot");
    check_fork(&backend, &cold, "f-cold-fork").await;
    cold.stop().await.unwrap();
    // A stopped VM cannot be forked, and the failure leaves nothing behind.
    let err = backend.fork(cold.as_ref(), "f-dead").await.err().expect("fork of a stopped VM fails");
    assert!(err.to_string().contains("not running"), "{err}");

    let left: Vec<_> = std::fs::read_dir(state.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("templates")], "only the template remains");
}
