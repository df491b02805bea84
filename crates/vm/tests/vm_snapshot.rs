//! Template snapshots and clones with the real `minimal` image.

mod common;

use mayfly_proto::msg::ExecRequest;
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
