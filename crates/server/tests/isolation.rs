//! The VM is the blast radius (issue 19), with one real server and two real sessions:
//! * each QEMU runs under its own uid from `vm_uid_range`; a process running as one VM's uid can
//!   neither signal nor read the memory of the other VM's QEMU;
//! * the template's files (RAM, device state, disk) cannot be opened for writing as any VM uid,
//!   and a clone's QEMU holds no descriptor of the RAM file (it maps a sealed memfd);
//! * per-VM caps (`pids.max`, disk bandwidth/IOPS) are in the session's size and in its cgroup;
//! * a guest fork bomb (as an unprivileged guest user, up to the guest's process cap) and a guest
//!   disk flood leave the host and the other session responsive;
//!   the other session's disk throughput during the flood is printed;
//! * afterwards nothing is left (processes, run dirs, cgroups).

use crate::common;

use common::*;
use serde_json::json;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The test server's disk cap, small enough that a guest's `dd` meets it.
const DISK_MIB_PER_SECOND: u32 = 20;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Real, effective, saved and filesystem uid of `pid`.
fn uids(pid: u32) -> Vec<u32> {
    mayfly_vm::confine::uids::uids_of(std::path::Path::new(&format!("/proc/{pid}"))).expect("the process is alive")
}

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find(|l| l.starts_with(field)).map(|l| l[field.len()..].trim().to_string()).unwrap_or_default()
}

/// Runs `script` with `sh` as `uid:uid` without supplementary groups; (success, stderr).
fn sh_as(uid: u32, script: &str, args: &[&str]) -> (bool, String) {
    let mut cmd = std::process::Command::new("sh");
    // std drops the supplementary groups when root sets a uid.
    cmd.arg("-c").arg(script).arg("sh").args(args).uid(uid).gid(uid);
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).trim().to_string())
}

async fn sh(server: &TestServer, id: &str, script: &str) -> String {
    let (status, out) = server.exec(id, &["sh", "-c", script]).await;
    assert_eq!(status, 200, "{out}");
    let text = format!("{}{}", out["stdout"].as_str().unwrap_or(""), out["stderr"].as_str().unwrap_or(""));
    text.trim().to_string()
}

/// Waits until `id` answers an exec again (a guest recovering from a fork bomb).
async fn wait_responsive(server: &TestServer, id: &str) -> Duration {
    let t0 = Instant::now();
    loop {
        let r = tokio::time::timeout(Duration::from_secs(30), server.exec(id, &["echo", "alive"])).await;
        if let Ok((200, out)) = &r {
            if out["stdout"].as_str() == Some("alive\n") {
                return t0.elapsed();
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(240), "session {id} did not recover: {r:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn the_qemu(id: &str) -> u32 {
    let pids = qemu_pids_for(id);
    assert_eq!(pids.len(), 1, "one QEMU for {id}: {pids:?}");
    pids[0]
}

/// The template directories of the `minimal` image in use.
fn template_dirs() -> Vec<PathBuf> {
    let t = image_data_dir().join("images/minimal/current/templates");
    std::fs::read_dir(&t).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect()
}

/// MB/s as `dd` reports it on its last line (`…, 1.2 MB/s`), for printing.
fn dd_rate(out: &str) -> String {
    out.lines().last().and_then(|l| l.rsplit(',').next()).unwrap_or("?").trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_vm_is_its_own_blast_radius() {
    if !is_root() {
        eprintln!("not root: every QEMU runs as the test's own user; the isolation checks need root");
        return;
    }
    let server = TestServer::start(|c| {
        c.pool_size = 0;
        c.templates = true;
        c.vm_disk_mib_per_second = DISK_MIB_PER_SECOND;
    })
    .await;
    let cfg = mayfly_server::ServerConfig::default();
    let range = mayfly_vm::confine::UidRange::parse(&cfg.vm_uid_range).unwrap();
    // A is a cold boot (it also makes the image's template), B a clone of that template.
    let a = server.ready_session(json!({})).await;
    wait_template(&server).await;
    let b = server.ready_session(json!({})).await;
    let (pa, pb) = (the_qemu(&a), the_qemu(&b));

    // --- one uid per VM -------------------------------------------------------------------
    let (ua, ub) = (uids(pa), uids(pb));
    assert!(ua.iter().all(|u| *u == ua[0]) && ub.iter().all(|u| *u == ub[0]), "{ua:?} {ub:?}");
    let (ua, ub) = (ua[0], ub[0]);
    assert_ne!(ua, ub, "two VMs share a uid");
    assert!(range.contains(ua) && range.contains(ub), "uids {ua} {ub} outside {range}");
    assert_eq!(status_field(pa, "Groups:"), "", "no supplementary groups");
    assert_eq!(status_field(pa, "CapEff:"), "0000000000000000", "no capabilities");
    for (id, uid) in [(&a, ua), (&b, ub)] {
        let m = std::fs::metadata(server.run_dir(id)).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o777), (uid, 0o700), "run dir of {id}");
        assert_eq!(std::fs::metadata(server.run_dir(id).join("overlay.qcow2")).unwrap().uid(), uid);
    }

    // As A's uid: B's QEMU cannot be signalled or read; A's own can be signalled (the check works).
    let (ok, err) = sh_as(ua, "kill -0 \"$1\"", &[&pb.to_string()]);
    assert!(!ok && err.contains("not permitted"), "kill -0 of the other VM's QEMU: {ok} {err}");
    let (ok, _) = sh_as(ua, "kill -0 \"$1\"", &[&pa.to_string()]);
    assert!(ok, "the check itself: a uid may signal its own QEMU");
    let (ok, err) = sh_as(ua, "exec 3< /proc/\"$1\"/mem", &[&pb.to_string()]);
    assert!(!ok && err.contains("denied"), "open /proc/<other>/mem: {ok} {err}");
    let (ok, err) = sh_as(ua, "ls /proc/\"$1\"/fd", &[&pb.to_string()]);
    assert!(!ok, "list the other QEMU's descriptors: {err}");
    let (ok, err) = sh_as(ua, "ls \"$1\"", &[&server.run_dir(&b).display().to_string()]);
    assert!(!ok && err.contains("denied"), "enter the other VM's run dir: {err}");
    println!("uids: {a} runs as {ua}, {b} as {ub}; cross-VM kill, /proc/mem, run dir: refused");

    // --- templates are read-only to every QEMU ------------------------------------------------
    let dirs = template_dirs();
    assert!(!dirs.is_empty(), "the sessions were restored from a template");
    let mut checked = 0;
    for dir in &dirs {
        for f in ["mem", "state", "disk.qcow2"] {
            let p = dir.join(f);
            let m = std::fs::metadata(&p).unwrap();
            assert_eq!((m.uid(), m.mode() & 0o222), (0, 0), "{} is root's and read-only", p.display());
            for uid in [ua, ub, range.first, range.last] {
                let (ok, err) = sh_as(uid, "exec 3>> \"$1\"", &[&p.display().to_string()]);
                assert!(!ok, "uid {uid} opened {} for writing", p.display());
                assert!(err.contains("denied"), "{err}");
                checked += 1;
            }
        }
    }
    // The clone's QEMU maps the sealed memfd, and holds no descriptor of the RAM file.
    let maps = std::fs::read_to_string(format!("/proc/{pb}/maps")).unwrap();
    assert!(maps.contains("/memfd:mayfly-template-ram"), "clone RAM is the sealed memfd");
    let mems: Vec<PathBuf> = dirs.iter().map(|d| d.join("mem")).collect();
    for fd in std::fs::read_dir(format!("/proc/{pb}/fd")).unwrap().flatten() {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        assert!(!mems.contains(&target), "QEMU holds {}", target.display());
    }
    println!("template files: {checked} write opens as VM uids refused; clone RAM via sealed memfd");

    // --- caps, visible in the session -----------------------------------------------------------
    let (_, s) = server.get(&format!("/api/v1/sessions/{a}")).await;
    assert_eq!(s["max_processes"], cfg.vm_pids_max, "{s}");
    assert_eq!(s["disk_mib_per_second"], DISK_MIB_PER_SECOND, "{s}");
    assert_eq!(s["disk_iops"], cfg.vm_disk_iops, "{s}");
    let cgroups = common::leaks::vm_cgroups_of(&server.data_dir);
    let pids_max: Vec<String> = cgroups
        .iter()
        .filter(|c| c.ends_with(&format!("/{a}")))
        .filter_map(|c| std::fs::read_to_string(Path::new(c).join("pids.max")).ok())
        .collect();
    assert_eq!(pids_max.iter().map(|s| s.trim()).collect::<Vec<_>>(), vec![cfg.vm_pids_max.to_string()], "{cgroups:?}");
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pa}/cmdline")).unwrap()).replace('\0', " ");
    assert!(cmdline.contains(&format!("throttling.bps-total={}", u64::from(DISK_MIB_PER_SECOND) << 20)), "{cmdline}");

    // --- a fork bomb in A -----------------------------------------------------------------------
    let threads_before: u32 = status_field(pa, "Threads:").parse().unwrap();
    let bomb = {
        let (base, id) = (server.base.clone(), a.clone());
        let http = server.http.clone();
        tokio::spawn(async move {
            // `timeout` kills the bomb's whole process group after 40 s. The bomb runs as
            // `nobody` with the guest's own cap on its processes (RLIMIT_NPROC 1000), so it
            // exhausts its cap rather than guest RAM, and the guest's OOM killer never takes
            // `timeout` (which is shielded from it anyway).
            let bomb = "echo -1000 > /proc/self/oom_score_adj; \
                timeout -s KILL 40 prlimit --nproc=1000 setpriv --reuid=65534 --regid=65534 --clear-groups \
                sh -c 'echo 500 > /proc/self/oom_score_adj; b() { b & b & wait; }; b' 2>/dev/null; echo bomb-over";
            let body = json!({"cmd": ["sh", "-c", bomb], "timeout_seconds": 600});
            http.post(format!("{base}/api/v1/sessions/{id}/exec")).json(&body).send().await.map(|r| r.status().as_u16())
        })
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    // While it runs: the host's control plane and B answer.
    let t = Instant::now();
    assert_eq!(sh(&server, &b, "echo b-alive").await, "b-alive");
    let b_during = t.elapsed();
    let (status, _) = server.get("/api/v1/sessions").await;
    assert_eq!(status, 200);
    let threads_during: u32 = status_field(pa, "Threads:").parse().unwrap_or(0);
    assert!(threads_during <= cfg.vm_pids_max, "QEMU threads {threads_during} over pids.max");
    let bomb_status = tokio::time::timeout(Duration::from_secs(600), bomb).await.expect("bomb exec returns").unwrap();
    let recovered = wait_responsive(&server, &a).await;
    println!(
        "fork bomb in {a}: B answered in {} ms during it; QEMU threads {threads_before} -> {threads_during} (cap {}); bomb exec {bomb_status:?}; A answered again {} ms after",
        b_during.as_millis(),
        cfg.vm_pids_max,
        recovered.as_millis()
    );

    // --- a disk flood in A while B writes ----------------------------------------------------------
    let flood = {
        let (base, id) = (server.base.clone(), a.clone());
        let http = server.http.clone();
        tokio::spawn(async move {
            let body = json!({"cmd": ["sh", "-c", "dd if=/dev/zero of=/root/flood bs=1M count=200 oflag=direct 2>&1; rm -f /root/flood"], "timeout_seconds": 600});
            let r = http.post(format!("{base}/api/v1/sessions/{id}/exec")).json(&body).send().await.unwrap();
            r.json::<serde_json::Value>().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    let other = sh(&server, &b, "dd if=/dev/zero of=/root/build bs=1M count=20 oflag=direct 2>&1; rm -f /root/build").await;
    let flood = tokio::time::timeout(Duration::from_secs(600), flood).await.expect("flood ends").unwrap();
    let flood_out = flood["stdout"].as_str().unwrap_or("").trim().to_string();
    assert!(flood_out.contains("copied"), "{flood}");
    assert!(other.contains("copied"), "{other}");
    println!(
        "disk flood: A (cap {DISK_MIB_PER_SECOND} MiB/s) wrote at {}; B meanwhile at {}",
        dd_rate(&flood_out),
        dd_rate(&other)
    );
    // The cap is an upper bound whatever the machine's speed (200 MiB over 20 MiB/s: >= ~9 s).
    let secs: f64 = flood_out
        .lines()
        .last()
        .and_then(|l| l.split(',').nth(2))
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::MAX);
    assert!(secs >= 7.0, "A wrote 200 MiB in {secs} s despite a {DISK_MIB_PER_SECOND} MiB/s cap: {flood_out}");

    // --- nothing left ---------------------------------------------------------------------------
    assert_eq!(server.delete(&a).await, 204);
    assert_eq!(server.delete(&b).await, 204);
    let data = server.stop().await;
    common::leaks::assert_no_leftovers(data.path()).await;
    assert!(!std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        e.file_name().to_string_lossy().parse::<u32>().is_ok() && std::fs::metadata(e.path()).is_ok_and(|m| m.uid() == ua || m.uid() == ub)
    }), "a process of a VM uid outlived its VM");
}
