//! Boots the real `minimal` image under QEMU and exercises the guest daemon end to end.

mod common;

use mayfly_proto::msg::{Ctrl, ExecRequest, OpenRequest, PtyRequest};
use mayfly_proto::mux::Event;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

fn exec(cmd: &[&str]) -> ExecRequest {
    ExecRequest { cmd: cmd.iter().map(|s| s.to_string()).collect(), ..Default::default() }
}

/// Reads PTY output until `needle` shows up (or panics after `secs`).
async fn read_until(rx: &mut mayfly_proto::mux::StreamReceiver, needle: &str, secs: u64) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !seen.contains(needle) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Event::Data { data, .. }) => seen.push_str(&String::from_utf8_lossy(&data)),
            Ok(Event::Ctrl(_)) => {}
            Ok(other) => panic!("pty ended ({other:?}) before {needle:?}; output so far: {seen}"),
            Err(_) => panic!("timed out waiting for {needle:?}; output so far: {seen}"),
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_daemon_in_a_real_vm() {
    let state = common::state_dir();
    let backend = common::backend(state.path());
    let vm = common::boot(&backend, "t-guest").await;
    let ch = vm.channel();

    // It is a VM: its kernel is not the host's.
    let out = ch.exec(exec(&["uname", "-r"]), 1 << 20).await.unwrap();
    let guest_kernel = String::from_utf8(out.stdout).unwrap();
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(out.exit_code, Some(0));
    assert_ne!(guest_kernel.trim(), host_kernel.trim());
    assert!(guest_kernel.contains("cloud-amd64"), "{guest_kernel}");

    // exec: stdout, stderr, exit code, env, cwd.
    let mut req = exec(&["sh", "-c", "echo out; echo err >&2; echo $GREETING; pwd; exit 7"]);
    req.env = BTreeMap::from([("GREETING".to_string(), "hello from env".to_string())]);
    req.cwd = Some("/tmp".into());
    let out = ch.exec(req, 1 << 20).await.unwrap();
    assert_eq!(out.exit_code, Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\nhello from env\n/tmp\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    // A missing binary is a clear error, and the channel lives on.
    let err = ch.exec(exec(&["/no/such/binary"]), 1024).await.unwrap_err();
    assert!(err.to_string().contains("/no/such/binary"), "{err}");
    // A timeout kills the command.
    let mut req = exec(&["sleep", "30"]);
    req.timeout_ms = Some(300);
    let out = ch.exec(req, 1024).await.unwrap();
    assert!(out.timed_out, "{out:?}");

    // User processes get normal signal handling (not init's blocked mask or Rust's ignored
    // SIGPIPE): `kill` terminates, and a closed pipe ends the writer.
    let out = ch.exec(exec(&["sh", "-c", "sleep 30 & p=$!; kill $p; wait $p; echo $?; yes | head -n 1"]), 1024).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "143\ny\n", "{out:?}");

    // Files: a 50 MiB round trip with checksums, then list/stat/rename/remove.
    let big: Vec<u8> = (0..50u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let want = hex::encode(Sha256::digest(&big));
    let n = ch.write_file("/root/data/big.bin", None, &big[..]).await.unwrap();
    assert_eq!(n, big.len() as u64);
    let out = ch.exec(exec(&["sha256sum", "/root/data/big.bin"]), 1024).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&want), "guest checksum differs");
    let back = ch.read_to_vec("/root/data/big.bin").await.unwrap();
    assert_eq!(back.len(), big.len());
    assert_eq!(hex::encode(Sha256::digest(&back)), want);
    let entries = ch.list("/root/data").await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].name, "big.bin");
    assert_eq!(entries[0].size, 50 << 20);
    ch.rename("/root/data/big.bin", "/root/data/moved.bin").await.unwrap();
    assert!(ch.stat("/root/data/big.bin").await.is_err());
    ch.remove("/root/data", true).await.unwrap();
    assert!(ch.stat("/root/data").await.unwrap_err().to_string().contains("/root/data"));
    assert!(ch.stat("relative/path").await.is_err());

    // Ports: a listener started in the guest is reported, then disappears.
    let mut ports = ch.open(&OpenRequest::WatchPorts).await.unwrap();
    let initial = match ports.recv().await {
        Event::Ctrl(Ctrl::Ports { ports }) => ports,
        other => panic!("expected ports, got {other:?}"),
    };
    assert!(initial.iter().all(|p| p.port != 8123), "{initial:?}");
    let server = ch
        .open(&OpenRequest::Exec(exec(&["python3", "-c", "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('127.0.0.1',8123))\ns.listen()\nwhile True:\n c,_=s.accept()\n d=c.recv(100)\n c.sendall(b'echo:'+d)\n c.close()"])))
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Event::Ctrl(Ctrl::Ports { ports }) = ports.recv().await {
                if let Some(p) = ports.iter().find(|p| p.port == 8123) {
                    return *p;
                }
            }
        }
    })
    .await
    .expect("port 8123 reported");
    assert!(seen.loopback && !seen.ipv6, "{seen:?}");

    // Tunnel to the guest port: bytes go through the guest daemon, no guest network.
    let mut t = ch.open(&OpenRequest::Tunnel { port: 8123 }).await.unwrap();
    assert_eq!(t.recv().await, Event::Ctrl(Ctrl::Connected));
    t.send_data(0, b"ping").await.unwrap();
    let mut got = Vec::new();
    loop {
        match t.recv().await {
            Event::Data { data, .. } => got.extend_from_slice(&data),
            Event::Eof => break,
            other => panic!("tunnel: {other:?}"),
        }
    }
    assert_eq!(got, b"echo:ping");
    // A tunnel to a closed port fails clearly.
    let mut t = ch.open(&OpenRequest::Tunnel { port: 8999 }).await.unwrap();
    assert!(matches!(t.recv().await, Event::Ctrl(Ctrl::Error { .. })));

    server.send_ctrl(&Ctrl::Signal { signal: 9 }).await.unwrap();
    drop(server);
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Event::Ctrl(Ctrl::Ports { ports }) = ports.recv().await {
                if ports.iter().all(|p| p.port != 8123) {
                    return;
                }
            }
        }
    })
    .await
    .expect("port 8123 closed");

    // PTY: type a command, read its output, resize.
    let pty = ch.open(&OpenRequest::Pty(PtyRequest { cols: 100, rows: 30, terminal: Some("t1".into()), ..Default::default() })).await.unwrap();
    let (tx, mut rx) = pty.split();
    tx.send_data(0, b"stty size; echo $((6*7))\r").await.unwrap();
    let out = read_until(&mut rx, "42", 30).await;
    assert!(out.contains("30 100"), "{out}");
    tx.send_ctrl(&Ctrl::Resize { cols: 120, rows: 40 }).await.unwrap();
    tx.send_data(0, b"stty size\r").await.unwrap();
    read_until(&mut rx, "40 120", 30).await;
    // Ctrl-C interrupts the foreground job.
    tx.send_data(0, b"sleep 60; echo not-$((2+3))-interrupted\r").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    tx.send_data(0, b"\x03").await.unwrap();
    tx.send_data(0, b"echo after-$((1+1))-ctrl-c\r").await.unwrap();
    let out = read_until(&mut rx, "after-2-ctrl-c", 20).await;
    assert!(!out.contains("not-5-interrupted"), "{out}");
    // Detach and re-attach: the shell survives and its scrollback is replayed.
    drop((tx, rx));
    let pty = ch.open(&OpenRequest::Pty(PtyRequest { cols: 120, rows: 40, terminal: Some("t1".into()), ..Default::default() })).await.unwrap();
    let (tx, mut rx) = pty.split();
    read_until(&mut rx, "42", 30).await;
    tx.send_data(0, b"exit\r").await.unwrap();

    // Reconnect: the host side drops the channel and connects again.
    ch.disconnect().await;
    let info = ch.info().await.unwrap();
    assert_eq!(info.protocol, mayfly_proto::PROTOCOL_VERSION);

    let run_dir = state.path().join("t-guest");
    assert!(run_dir.join("overlay.qcow2").exists());
    vm.stop().await.unwrap();
    assert!(!run_dir.exists(), "run dir removed");
    assert!(common::qemu_pids_for("t-guest").is_empty(), "QEMU gone");
}
