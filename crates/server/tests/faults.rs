//! Faults and limits with a real server: idle reaping, a VM killed under a session, the session
//! limit, shutdown with sessions running, and a restart after a crash that left VMs behind.

use crate::common;

use common::*;
use mayfly_proto::api::SessionState;
use mayfly_server::store::{SessionRecord, SessionStore, SqliteStore};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_reaped_and_shutdown_stops_the_rest() {
    let server = TestServer::start(|_| {}).await;
    let busy = server.ready_session(json!({})).await;
    // Not waiting for ready: the event stream replays what happened before it connected.
    let (status, created) = server.create(json!({"idle_timeout_seconds": 3}), false).await;
    assert_eq!(status, 201, "{created}");
    let idle = created["id"].as_str().unwrap().to_string();
    let mut events = server.ws(&format!("/api/v1/sessions/{idle}/events")).await;
    let seen = events_until(&mut events, state_is("destroyed")).await;
    let stopping = seen.iter().find(|e| state_is("stopping")(e)).expect("stopping event");
    assert_eq!(stopping["reason"], "idle timeout", "{seen:?}");
    assert_eq!(server.get(&format!("/api/v1/sessions/{idle}")).await.0, 404);
    assert_vm_gone(&server, &idle).await;

    assert_eq!(server.get(&format!("/api/v1/sessions/{busy}")).await.1["state"], "ready");
    // Shutdown with a terminal and an event stream open: both end, every VM stops.
    let mut busy_events = server.ws(&format!("/api/v1/sessions/{busy}/events")).await;
    events_until(&mut busy_events, state_is("ready")).await;
    let mut pty = server.ws(&format!("/api/v1/sessions/{busy}/pty")).await;
    type_keys(&mut pty, "echo up$((2+3))\r").await;
    read_until(&mut pty, "up5").await;
    let data = server.stop().await;
    let seen = events_until(&mut busy_events, state_is("destroyed")).await;
    assert_eq!(seen[0]["reason"], "server shutting down", "{seen:?}");
    assert!(common::qemu_pids_for(&busy).is_empty(), "shutdown stopped the VM");
    assert!(!data.path().join("vms").join(&busy).exists(), "shutdown removed the run dir");
    let store = SqliteStore::open(&data.path().join("sessions.db")).await.unwrap();
    let rec = store.get(&busy).await.unwrap().unwrap();
    assert_eq!(rec.state, SessionState::Destroyed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_vm_fails_its_session_and_the_limit_holds() {
    let server = TestServer::start(|c| c.max_sessions = 1).await;
    let id = server.ready_session(json!({})).await;

    let (status, body) = server.create(json!({}), false).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "too_many_sessions");
    assert_eq!(body["error"]["message"], "max_sessions (1) reached");

    let mut events = server.ws(&format!("/api/v1/sessions/{id}/events")).await;
    let pids = qemu_pids_for(&id);
    assert_eq!(pids.len(), 1, "one QEMU for {id}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pids[0] as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let seen = events_until(&mut events, state_is("failed")).await;
    let reason = seen.last().unwrap()["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("signal 9"), "{reason}");
    let (status, s) = server.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(s["state"], "failed");
    assert!(s["failure"].as_str().unwrap().contains("signal 9"), "{s}");
    assert_vm_gone(&server, &id).await;

    // A failed session no longer counts against the limit; deleting it dismisses it.
    let (status, body) = server.create(json!({"image": "nosuch"}), false).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("minimal"), "names the built images: {body}");
    assert_eq!(server.delete(&id).await, 204);
    assert_eq!(server.get(&format!("/api/v1/sessions/{id}")).await.0, 404);
    assert_eq!(server.delete(&id).await, 404);

    // Deleting a session while its VM boots cancels the boot and leaves nothing behind.
    let (status, created) = server.create(json!({}), false).await;
    assert_eq!(status, 201, "{created}");
    let booting = created["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.delete(&booting).await, 204);
    assert_eq!(server.get(&format!("/api/v1/sessions/{booting}")).await.0, 404);
    assert_vm_gone(&server, &booting).await;
    let data = server.stop().await;
    common::leaks::assert_no_leftovers(data.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_fails_orphaned_sessions_and_reaps_their_vms() {
    let data = tempfile::Builder::new().prefix("mayfly-e2e-").tempdir().unwrap();
    open_to_vm_uids(data.path());
    let orphan = "sorphan000001";
    // What a killed server leaves: a live session in the store, its "QEMU" still running, a
    // run dir naming it, and a stray run dir nobody owns.
    let store = SqliteStore::open(&data.path().join("sessions.db")).await.unwrap();
    let now = time::OffsetDateTime::now_utc();
    store
        .insert(&SessionRecord {
            id: orphan.into(),
            image: "minimal".into(),
            state: SessionState::Creating,
            created_at: now,
            expires_at: now + Duration::from_secs(3600),
            idle_timeout_seconds: 900,
            failure: None,
            network: mayfly_proto::api::Network { egress: mayfly_proto::api::EgressMode::None, allow: vec![] },
            size: None,
            runtime: Default::default(),
            last_active_at: None,
            owner: None,
            node: None,
        })
        .await
        .unwrap();
    store.transition(orphan, SessionState::Creating, SessionState::Ready, None, now).await.unwrap();
    drop(store);
    let mut fake_qemu = std::process::Command::new("bash")
        .args(["-c", &format!("exec -a mayfly-{orphan} sleep 600")])
        .spawn()
        .unwrap();
    let pid = fake_qemu.id();
    for _ in 0..500 {
        if mayfly_vm::rundir::pid_is_vm(pid, orphan) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(mayfly_vm::rundir::pid_is_vm(pid, orphan));
    let run = data.path().join("vms").join(orphan);
    std::fs::create_dir_all(&run).unwrap();
    let record = json!({"id": orphan, "pid": pid, "image": "minimal", "started_at_unix": 0});
    std::fs::write(run.join("vm.json"), record.to_string()).unwrap();
    std::fs::create_dir_all(data.path().join("vms/sstray0000001")).unwrap();

    let server = TestServer::start_in(data, |_| {}).await;
    let status = fake_qemu.wait().unwrap();
    assert!(status.code().is_none(), "the orphan was killed: {status:?}");
    assert!(!server.run_dir(orphan).exists());
    assert!(!server.run_dir("sstray0000001").exists());
    let (code, s) = server.get(&format!("/api/v1/sessions/{orphan}")).await;
    assert_eq!(code, 200);
    assert_eq!(s["state"], "failed");
    // The stand-in's record has no spec: adoption refuses it and says why.
    assert_eq!(s["failure"], "control plane restarted: its vm.json was written by a Mayfly without re-adoption", "{s}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_low_on_memory_refuses_new_sessions_and_keeps_nothing() {
    // A floor no host meets: every create must be refused before a VM is taken or booted.
    let server = TestServer::start(|c| c.min_free_memory_mib = 1 << 40).await;
    let (status, body) = server.create(json!({}), false).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "host_memory_low", "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("MiB available") && msg.contains("min_free_memory_mib"), "{msg}");
    let (status, list) = server.get("/api/v1/sessions").await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(0), "a refused create leaves no session: {list}");
}
