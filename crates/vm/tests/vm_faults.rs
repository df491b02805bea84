//! Faults: QEMU dying mid-command, stop from any state, leftovers.

mod common;

use mayfly_proto::msg::ExecRequest;
use mayfly_vm::VmError;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_killed_mid_command_is_a_clear_error_and_leaves_nothing() {
    let state = common::state_dir();
    let backend = common::backend(state.path());
    let vm = common::boot(&backend, "t-kill").await;
    let pid = vm.pid().expect("running");
    let ch_task = {
        let vm = vm.clone();
        tokio::spawn(async move {
            vm.channel()
                .exec(ExecRequest { cmd: vec!["sleep".into(), "60".into()], ..Default::default() }, 1024)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // SAFETY: plain kill(2) of the QEMU child this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let err = tokio::time::timeout(Duration::from_secs(10), ch_task).await.expect("exec returns").unwrap().unwrap_err();
    assert!(err.to_string().contains("closed") || err.to_string().contains("reset"), "{err}");
    let exit = vm.wait_exit().await;
    assert_eq!(exit.signal, Some(9));
    assert!(!exit.requested);
    vm.stop().await.unwrap();
    assert!(!state.path().join("t-kill").exists());
    assert!(std::fs::read_dir(state.path()).unwrap().next().is_none(), "state dir empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_failure_names_the_vm_and_cleans_up() {
    let state = common::state_dir();
    let backend = common::backend(state.path());
    let mut spec = common::spec("t-badboot");
    // A kernel command line whose init does not exist: the guest never answers.
    spec.cmdline = format!("{} rdinit=/no-such-init panic=-1", spec.cmdline);
    let mut cfg = backend.config().clone();
    cfg.boot_timeout = Duration::from_secs(20);
    let backend = mayfly_vm::qemu::QemuBackend::new(cfg).unwrap();
    let err = mayfly_vm::VmBackend::create(&backend, spec).await.err().expect("boot must fail");
    match &err {
        VmError::Boot { vm, console, .. } => {
            assert_eq!(vm, "t-badboot");
            assert!(!console.is_empty(), "console tail included");
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(common::qemu_pids_for("t-badboot").is_empty());
    assert!(!state.path().join("t-badboot").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_image_files_are_reported() {
    let state = common::state_dir();
    let backend = common::backend(state.path());
    let mut spec = common::spec("t-missing");
    spec.kernel = "/nonexistent/vmlinux".into();
    let err = mayfly_vm::VmBackend::create(&backend, spec).await.err().expect("must fail");
    assert!(err.to_string().contains("mayfly image build minimal"), "{err}");
    assert!(!state.path().join("t-missing").exists());
}
