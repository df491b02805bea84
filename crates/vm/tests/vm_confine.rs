//! QEMU's confinement with real VMs: the account it runs as, what that account may write, its
//! cgroup caps (read back from the cgroup files), and that nothing of it outlives the VM —
//! including a VM whose control plane died (reap).

mod common;

use common::*;
use mayfly_proto::msg::ExecRequest;
use mayfly_vm::qemu::{QemuBackend, QemuConfig};
use mayfly_vm::{Vm, VmBackend};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Real, effective, saved and filesystem uid of `pid`.
fn uids(pid: u32) -> Vec<u32> {
    mayfly_vm::confine::uids::uids_of(std::path::Path::new(&format!("/proc/{pid}"))).expect("the process is alive")
}

/// True when a shell running as `uid:gid` may write `path` (`test -w`).
fn writable_by(uid: u32, gid: u32, path: &Path) -> bool {
    std::process::Command::new("sh").arg("-c").arg("test -w \"$1\"").arg("sh").arg(path).uid(uid).gid(gid).status().unwrap().success()
}

/// The cgroup directory of `pid` in the hierarchy mounted at `mount` for `controller` (v1).
fn v1_cgroup_of(pid: u32, controller: &str, mount: &str) -> PathBuf {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = cg
        .lines()
        .find_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, c, p) = (it.next()?, it.next()?, it.next()?);
            c.split(',').any(|x| x == controller).then(|| p.trim_start_matches('/').to_string())
        })
        .unwrap();
    Path::new(mount).join(path)
}

/// Where the v1 hierarchy with `controller` is mounted.
fn v1_mount(controller: &str) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[2] == "cgroup" && f[3].split(',').any(|o| o == controller))
        .map(|f| f[1].to_string())
        .unwrap()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).trim().to_string()
}

async fn guest(vm: &dyn Vm, cmd: &str) -> String {
    let out = vm
        .channel()
        .exec(ExecRequest { cmd: vec!["sh".into(), "-c".into(), cmd.into()], ..Default::default() }, 1 << 16)
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_runs_unprivileged_in_its_own_capped_cgroup() {
    let state = state_dir();
    let backend = backend(state.path());
    let mut s = spec("confined");
    s.vcpus = 2;
    s.memory_mib = 384;
    let vm = backend.create(s.clone()).await.unwrap();
    let pid = vm.pid().unwrap();

    if is_root() {
        let account = backend.confiner().account_of("confined").expect("root server: QEMU gets its own account");
        assert!(mayfly_vm::confine::DEFAULT_UID_RANGE.contains(account.uid), "{account:?}");
        let ids = uids(pid);
        assert!(ids.iter().all(|u| *u == account.uid && *u != 0), "QEMU uids {ids:?}, account {account:?}");
        let overlay = state.path().join("confined/overlay.qcow2");
        assert!(writable_by(account.uid, account.gid, &overlay), "QEMU's account must write its overlay");
        let groups = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let groups = groups.lines().find(|l| l.starts_with("Groups:")).unwrap();
        assert_eq!(groups.trim(), "Groups:", "no supplementary groups");
        for ro in [&s.base_disk, &s.kernel, &s.initrd] {
            assert!(!writable_by(account.uid, account.gid, ro), "QEMU's account can write {}", ro.display());
        }
    } else {
        eprintln!("not root: QEMU runs as the test's own user; account checks skipped");
    }

    let cgroups = backend.confiner().cgroups().cloned().expect("this host has usable cgroups");
    let dirs = cgroups.vm_dirs("confined");
    let limit = backend.confiner().memory_limit_bytes(384);
    match &cgroups {
        mayfly_vm::confine::cgroup::Cgroups::V1 { memory, cpu, pids, blkio, device } => {
            let mem_cg = v1_cgroup_of(pid, "memory", &v1_mount("memory"));
            let cpu_cg = v1_cgroup_of(pid, "cpu", &v1_mount("cpu"));
            assert_eq!(mem_cg, memory.join("confined"), "QEMU is in its own memory cgroup");
            assert_eq!(cpu_cg, cpu.join("confined"), "QEMU is in its own cpu cgroup");
            assert_eq!(read(&mem_cg.join("memory.limit_in_bytes")), limit.to_string());
            assert_eq!(read(&cpu_cg.join("cpu.cfs_quota_us")), "200000");
            assert_eq!(read(&cpu_cg.join("cpu.cfs_period_us")), "100000");
            assert!(read(&mem_cg.join("cgroup.procs")).lines().any(|l| l == pid.to_string()));
            let caps = backend.confiner().io_caps();
            if let Some(p) = pids {
                assert_eq!(v1_cgroup_of(pid, "pids", &v1_mount("pids")), p.join("confined"));
                assert_eq!(read(&p.join("confined/pids.max")), caps.pids_max.to_string());
            }
            if let (Some(b), Some(dev)) = (blkio, device) {
                assert_eq!(v1_cgroup_of(pid, "blkio", &v1_mount("blkio")), b.join("confined"));
                assert_eq!(read(&b.join("confined/blkio.throttle.write_bps_device")), format!("{dev} {}", caps.disk_bytes_per_second));
                assert_eq!(read(&b.join("confined/blkio.throttle.read_iops_device")), format!("{dev} {}", caps.disk_iops));
            }
            println!(
                "cold boot, 384 MiB guest: peak {} MiB of a {} MiB cap",
                read(&mem_cg.join("memory.max_usage_in_bytes")).parse::<u64>().unwrap() >> 20,
                limit >> 20
            );
        }
        mayfly_vm::confine::cgroup::Cgroups::V2 { parent, .. } => {
            let d = parent.join("confined");
            assert_eq!(read(&d.join("memory.max")), limit.to_string());
            assert_eq!(read(&d.join("cpu.max")), "200000 100000");
            assert!(read(&d.join("cgroup.procs")).lines().any(|l| l == pid.to_string()));
        }
    }

    // The guest sees the size it was given.
    assert_eq!(guest(vm.as_ref(), "nproc").await, "2");
    let kib: u64 = guest(vm.as_ref(), "awk '/MemTotal/ {print $2}' /proc/meminfo").await.parse().unwrap();
    assert!((300 * 1024..=384 * 1024).contains(&kib), "MemTotal {kib} KiB for a 384 MiB guest");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    assert!(core.split_whitespace().nth(4) == Some("0"), "{core}");

    vm.stop().await.unwrap();
    for d in &dirs {
        assert!(!d.exists(), "cgroup {} left after stop", d.display());
    }
    assert!(!state.path().join("confined").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reap_removes_the_cgroups_of_a_vm_whose_control_plane_died() {
    let state = state_dir();
    let first = backend(state.path());
    let vm = first.create(spec("orphan")).await.unwrap();
    let pid = vm.pid().unwrap();
    let Some(cgroups) = first.confiner().cgroups().cloned() else { panic!("this host has usable cgroups") };
    // A cgroup without a run dir (a crash between creating it and recording the VM).
    let stray = cgroups.vm_dirs("stray");
    for d in &stray {
        std::fs::create_dir(d).unwrap();
    }

    // A restarted control plane on the same state dir.
    let second = QemuBackend::new(QemuConfig { accel: first.config().accel, ..QemuConfig::new(state.path()) }).unwrap();
    // It never hands the live VM's uid to a new VM (the run dir's owner is the allocation).
    if is_root() {
        let newcomer = second.create(spec("newcomer")).await.unwrap();
        let (old, new) = (uids(pid)[0], uids(newcomer.pid().unwrap())[0]);
        assert_ne!(old, new, "a restarted backend reused the live VM's uid {old}");
        assert_eq!(first.confiner().account_of("orphan").map(|a| a.uid), Some(old));
        newcomer.stop().await.unwrap();
    }
    let ids = second.run_dir_ids();
    assert!(ids.contains(&"orphan".to_string()) && ids.contains(&"stray".to_string()), "{ids:?}");
    for id in &ids {
        second.reap(id).await;
    }
    assert!(!mayfly_vm::rundir::pid_is_vm(pid, "orphan"), "orphaned QEMU killed");
    for d in cgroups.vm_dirs("orphan").iter().chain(&stray) {
        assert!(!d.exists(), "cgroup {} left after reap", d.display());
    }
    assert!(second.run_dir_ids().is_empty());
    vm.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cgroups_the_memory_cap_is_an_rlimit() {
    let state = state_dir();
    let mut cfg = QemuConfig::new(state.path());
    cfg.accel = std::env::var("MAYFLY_ACCEL").ok().and_then(|a| a.parse().ok()).unwrap_or_default();
    cfg.confine.cgroups = false;
    let backend = QemuBackend::new(cfg).unwrap();
    assert!(backend.confiner().cgroups().is_none());
    let vm = backend.create(spec("rlimited")).await.unwrap();
    let pid = vm.pid().unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let data = limits.lines().find(|l| l.starts_with("Max data size")).unwrap();
    let want = backend.confiner().memory_limit_bytes(512).to_string();
    assert_eq!(data.split_whitespace().nth(3), Some(want.as_str()), "{data}");
    // It still works under that cap.
    assert_eq!(guest(vm.as_ref(), "echo ok").await, "ok");
    vm.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_that_outgrows_its_memory_cap_is_killed_alone() {
    let state = state_dir();
    let mut cfg = QemuConfig::new(state.path());
    cfg.accel = std::env::var("MAYFLY_ACCEL").ok().and_then(|a| a.parse().ok()).unwrap_or_default();
    // No allowance beyond guest RAM: QEMU's own memory plus a guest that fills its RAM exceed it.
    cfg.confine.memory_overhead_mib = 0;
    let backend = QemuBackend::new(cfg).unwrap();
    assert!(backend.confiner().cgroups().is_some(), "this host has usable cgroups");
    let vm = backend.create(spec("greedy")).await.unwrap();
    // Touch ~450 MiB of the 512 MiB guest: every page becomes a real page of QEMU's.
    let fill = vm.channel().exec(
        ExecRequest {
            cmd: vec!["python3".into(), "-c".into(), "b = bytearray(450 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('survived')".into()],
            ..Default::default()
        },
        1 << 16,
    );
    let exit = tokio::select! {
        e = vm.wait_exit() => e,
        r = fill => match r {
            Ok(out) => panic!("the guest filled its RAM and QEMU was not stopped: {out:?}"),
            // The channel dies with QEMU, sometimes before the exit is reported.
            Err(_) => tokio::time::timeout(std::time::Duration::from_secs(30), vm.wait_exit()).await.expect("QEMU exits"),
        },
    };
    println!("QEMU over its cap: {exit}");
    assert_eq!(exit.signal, Some(9), "killed by the OOM killer: {exit}");
    assert!(!exit.requested);
    vm.stop().await.unwrap();
    for d in backend.confiner().vm_cgroup_dirs("greedy") {
        assert!(!d.exists(), "cgroup {} left", d.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_the_vm_uids_cannot_enter_is_refused_not_run_as_root() {
    if !is_root() {
        eprintln!("not root: QEMU runs as the test's own user; nothing to refuse");
        return;
    }
    // A closed directory on the way (like /root, or a checkout under a 0700 home).
    let closed = tempfile::Builder::new().prefix("mayfly-closed-").tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(closed.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let state = closed.path().join("vms");
    let mut cfg = QemuConfig::new(&state);
    cfg.accel = std::env::var("MAYFLY_ACCEL").ok().and_then(|a| a.parse().ok()).unwrap_or_default();
    let err = QemuBackend::new(cfg).err().expect("refused").to_string();
    let dir = closed.path().display().to_string();
    assert!(err.contains(&dir) && err.contains("chmod o+x") && err.contains("never runs as root"), "{err}");
}
