//! A session of a client-chosen size, with a real server and VM: the guest sees the vCPUs,
//! memory and disk it asked for; its QEMU runs unprivileged in a cgroup capped to that size; and
//! after the session nothing of it is left (process, run dir, cgroups).

use crate::common;

use common::*;
use serde_json::json;

async fn sh(server: &TestServer, id: &str, script: &str) -> String {
    let (status, out) = server.exec(id, &["sh", "-c", script]).await;
    assert_eq!(status, 200, "{out}");
    out["stdout"].as_str().unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_gets_the_size_it_asked_for_and_its_qemu_is_capped_to_it() {
    let server = TestServer::start(|c| {
        c.pool_size = 0;
        c.templates = false;
        c.max_vcpus = 2;
    })
    .await;
    let (status, refused) = server.create(json!({"vcpus": 3}), true).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["message"], "vcpus 3 exceeds max_vcpus (2)");

    let (status, s) = server.create(json!({"vcpus": 2, "memory_mib": 384, "disk_gib": 3}), true).await;
    assert_eq!(status, 201, "{s}");
    assert_eq!((s["vcpus"].as_u64(), s["memory_mib"].as_u64(), s["disk_gib"].as_u64()), (Some(2), Some(384), Some(3)), "{s}");
    let id = s["id"].as_str().unwrap().to_string();

    assert_eq!(sh(&server, &id, "nproc").await, "2");
    let mem_kib: u64 = sh(&server, &id, "awk '/MemTotal/ {print $2}' /proc/meminfo").await.parse().unwrap();
    assert!((300 * 1024..=384 * 1024).contains(&mem_kib), "MemTotal {mem_kib} KiB for 384 MiB");
    let disk: u64 = sh(&server, &id, "df -B1 --output=size / | tail -1").await.parse().unwrap();
    assert!(disk > (5 << 30) / 2 && disk <= 3 << 30, "root filesystem {disk} B on a 3 GiB disk");

    let pids = qemu_pids_for(&id);
    assert_eq!(pids.len(), 1, "{pids:?}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", pids[0])).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    if nix::unistd::geteuid().is_root() {
        assert!(uid_line.split_whitespace().skip(1).all(|u| u != "0"), "QEMU runs as root: {uid_line}");
    }
    let cgroups = common::leaks::vm_cgroups_of(&server.data_dir);
    assert!(!cgroups.is_empty() && cgroups.iter().all(|c| c.ends_with(&format!("/{id}"))), "{cgroups:?}");
    for dir in &cgroups {
        let dir = std::path::Path::new(dir);
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert!(procs.lines().any(|p| p == pids[0].to_string()), "QEMU in {}", dir.display());
        let limit = ["memory.limit_in_bytes", "memory.max"].iter().find_map(|f| std::fs::read_to_string(dir.join(f)).ok());
        if let Some(limit) = limit {
            let overhead = mayfly_server::ServerConfig::default().vm_memory_overhead_mib as u64;
            assert_eq!(limit.trim(), ((384 + overhead) << 20).to_string(), "{}", dir.display());
        }
        let quota = ["cpu.cfs_quota_us", "cpu.max"].iter().find_map(|f| std::fs::read_to_string(dir.join(f)).ok());
        if let Some(quota) = quota {
            assert!(quota.trim().starts_with("200000"), "{quota} in {}", dir.display());
        }
    }

    assert_eq!(server.delete(&id).await, 204);
    assert_vm_gone(&server, &id).await;
    assert!(common::leaks::vm_cgroups_of(&server.data_dir).is_empty(), "cgroups left after delete");
    let data = server.stop().await;
    common::leaks::assert_no_leftovers(data.path()).await;
}
