//! Smoke test over a real virtio-serial port (TCG). The image is `MAYFLY_GUEST_VM_IMAGE` (a built
//! image directory: its `vmlinux` and `initrd.img`, the busybox initramfs with the virtio
//! modules), else the `minimal` image in `MAYFLY_DATA_DIR` (where scripts/test builds it); with
//! neither, or without `qemu-system-x86_64`, `cpio` and `ldd`, the tests fail saying so.
//!
//! The test repacks that initramfs with this build's `mayfly-guest` (plus the glibc it links)
//! and an `/init` that loads the modules and execs `mayfly-guest init` in place, so no root disk
//! is needed and the binary under test is the one that runs.

mod common;
use common::*;
use mayfly_proto::msg::{Ctrl, ListenPort, OpenRequest};
use mayfly_proto::mux::{Event, Mux, Role, Stream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Vm {
    qemu: Child,
    dir: tempfile::TempDir,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}

impl Vm {
    fn boot(kernel: &Path, initrd: &Path) -> Vm {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("ch.sock");
        let qemu = Command::new("qemu-system-x86_64")
            .args(["-M", "q35", "-nodefaults", "-no-user-config", "-m", "256", "-display", "none"])
            .args(["-accel", "tcg", "-cpu", "max"]) // nested KVM is not dependable on test hosts
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", "console=ttyS0 loglevel=4"])
            .arg("-serial")
            .arg(format!("file:{}", dir.path().join("console.log").display()))
            .args(["-device", "virtio-serial-pci"])
            .arg("-chardev")
            .arg(format!("socket,id=ch,path={},server=on,wait=off", sock.display()))
            .args(["-device", "virtserialport,chardev=ch,name=mayfly.0"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let vm = Vm { qemu, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "qemu did not create its socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        vm
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    async fn connect(&self) -> Mux {
        // QEMU creates the socket file at bind(), a moment before listen(), and its backlog is
        // short: a refused or full connect is retried (a loaded machine stretches both).
        let path = self.dir.path().join("ch.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        let s = loop {
            match tokio::net::UnixStream::connect(&path).await {
                Ok(s) => break s,
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::WouldBlock)
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("cannot connect to {}: {e}; console:\n{}", path.display(), self.console()),
            }
        };
        let (r, w) = s.into_split();
        match tokio::time::timeout(Duration::from_secs(90), Mux::connect(r, w, Role::Host)).await {
            Ok(m) => m.unwrap(),
            Err(_) => panic!("no HELLO from the guest; console:\n{}", self.console()),
        }
    }
}

const INIT: &str = r#"#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_console; do
    insmod "/lib/modules/$m.ko" 2>/dev/null
done
exec /mayfly-guest init --no-resize
"#;

fn sh(script: &str) {
    let st = Command::new("/bin/sh").args(["-ec", script]).status().unwrap();
    assert!(st.success(), "{script}");
}

/// Builds an initramfs from the image's one, with this build's binary as PID 1.
fn initramfs(image: &Path, out: &Path) {
    let root = out.with_extension("d");
    std::fs::create_dir_all(&root).unwrap();
    let base = image.join("initrd.img");
    sh(&format!(
        "cd {r}; (gzip -dc {b} 2>/dev/null || cat {b}) | cpio -id --quiet",
        r = root.display(),
        b = base.display()
    ));
    let bin = env!("CARGO_BIN_EXE_mayfly-guest");
    std::fs::copy(bin, root.join("mayfly-guest")).unwrap();
    std::fs::write(root.join("init"), INIT).unwrap();
    sh(&format!("chmod 755 {}/init", root.display()));
    let ldd = Command::new("ldd").arg(bin).output().unwrap();
    for lib in String::from_utf8_lossy(&ldd.stdout).split_whitespace().filter(|w| w.starts_with('/')) {
        let dst = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(lib, dst).unwrap();
    }
    sh(&format!("cd {}; mkdir -p root tmp run; find . | cpio -o -H newc --quiet > {}", root.display(), out.display()));
}

fn prerequisites() -> PathBuf {
    let image = match std::env::var_os("MAYFLY_GUEST_VM_IMAGE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("MAYFLY_DATA_DIR").expect(
            "set MAYFLY_GUEST_VM_IMAGE to a built image directory, or MAYFLY_DATA_DIR to a data dir with the minimal image (scripts/test does)",
        ))
        .join("images/minimal/current"),
    };
    assert!(image.join("vmlinux").is_file() && image.join("initrd.img").is_file(), "no built image in {}", image.display());
    let tools = ["qemu-system-x86_64", "cpio", "ldd"];
    for t in tools {
        let found = Command::new("sh").args(["-c", &format!("command -v {t}")]).output().is_ok_and(|o| o.status.success());
        assert!(found, "{t} is required (scripts/install-deps installs it)");
    }
    image
}

/// Boots a VM with this build's guest in the image's initramfs; the folder holds its initrd.
fn boot_vm() -> (tempfile::TempDir, Vm) {
    let image = prerequisites();
    let work = tempfile::tempdir().unwrap();
    let initrd = work.path().join("initrd.img");
    initramfs(&image, &initrd);
    let vm = Vm::boot(&image.join("vmlinux"), &initrd);
    (work, vm)
}

async fn echo(mux: &Mux, word: &str) -> String {
    call(mux, OpenRequest::Exec(exec_req(&["echo", word]))).await.stdout()
}

#[tokio::test]
async fn virtio_serial_survives_host_reconnects() {
    let (_work, vm) = boot_vm();
    let t0 = Instant::now();
    let mux = vm.connect().await;
    eprintln!("first HELLO after {:?}", t0.elapsed());
    assert_eq!(echo(&mux, "one").await, "one\n");
    assert!(vm.console().contains("mayfly-init: daemon started"));

    // A persistent terminal, then the host goes away (socket closed) and comes back.
    let mut t = open(&mux, pty_req(Some("keep"), Some(&["/bin/sh"]))).await;
    let pid = started_pid(&mut t).await;
    type_keys(&t, "echo mark$((6*7))\r").await;
    read_until(&mut t, "mark42").await;
    mux.close("host restart");
    drop((mux, t));
    for round in 0..3 {
        let t1 = Instant::now();
        let mux = vm.connect().await;
        eprintln!("reconnect {round} after {:?}", t1.elapsed());
        assert_eq!(echo(&mux, "again").await, "again\n");
        let mut t = open(&mux, pty_req(Some("keep"), None)).await;
        assert_eq!(started_pid(&mut t).await, pid);
        read_until(&mut t, "mark42").await;
        mux.close("host restart");
    }

    // Bulk both ways.
    let mux = vm.connect().await;
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
    let t1 = Instant::now();
    let mut s = open(&mux, OpenRequest::WriteFile { path: "/tmp/bulk".into(), mode: None }).await;
    s.send_data(0, &data).await.unwrap();
    s.send_eof().await.unwrap();
    assert_eq!(collect(&mut s).await.ctrls, vec![Ctrl::Ok]);
    let r = call(&mux, OpenRequest::ReadFile { path: "/tmp/bulk".into() }).await;
    assert!(r.out == data);
    eprintln!("16 MiB round trip in {:?}", t1.elapsed());

    // The host vanishes in the middle of a transfer; the next connection is clean.
    let mut s = open(&mux, OpenRequest::ReadFile { path: "/tmp/bulk".into() }).await;
    let _ = next(&mut s).await;
    mux.close("abrupt");
    drop((mux, s));
    let mux = vm.connect().await;
    assert_eq!(echo(&mux, "clean").await, "clean\n");

    // kill -9 the daemon: init respawns it, its HELLO resets the host's streams, work goes on.
    let mut s = open(&mux, OpenRequest::Exec(exec_req(&["/bin/sh", "-c", "kill -9 $PPID; sleep 5"]))).await;
    s.send_eof().await.unwrap();
    loop {
        match next(&mut s).await {
            Event::Reset(_) => break,
            Event::Eof => break,
            _ => {}
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut s = open(&mux, OpenRequest::Exec(exec_req(&["echo", "respawned"]))).await;
        let _ = s.send_eof().await;
        let mut out = Vec::new();
        let ok = loop {
            match tokio::time::timeout(Duration::from_secs(5), s.recv()).await {
                Ok(Event::Data { data, .. }) => out.extend_from_slice(&data),
                Ok(Event::Eof) => break out == b"respawned\n",
                Ok(Event::Ctrl(_)) => {}
                Ok(Event::Reset(_)) | Err(_) => break false,
            }
        };
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "daemon did not come back; console:\n{}", vm.console());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(vm.console().matches("mayfly-init: daemon started").count() >= 2, "{}", vm.console());
    // The terminal died with the old daemon; nothing else to check there.
}

/// Reads `ports` updates until one satisfies `want`; returns how long that took.
async fn ports_until(s: &mut Stream, want: impl Fn(&[ListenPort]) -> bool) -> Duration {
    let t = Instant::now();
    loop {
        match next(s).await {
            Event::Ctrl(Ctrl::Ports { ports }) if want(&ports) => return t.elapsed(),
            Event::Ctrl(Ctrl::Ports { .. }) => {}
            other => panic!("watch_ports ended: {other:?}"),
        }
    }
}

/// The port watcher backs off while the VM is quiet; a listener started by an exec or from a
/// terminal must still be reported (the exec and the keystrokes wake the watcher). The latencies
/// are printed, not asserted: this machine may be slow and loaded.
#[tokio::test]
async fn ports_opened_from_exec_and_terminal_are_reported() {
    let (_work, vm) = boot_vm();
    let mux = vm.connect().await;
    let mut w = open(&mux, OpenRequest::WatchPorts).await;
    ports_until(&mut w, |_| true).await; // the full set arrives at once
    let has = |port: u16| move |p: &[ListenPort]| p.iter().any(|x| x.port == port);

    // An exec that leaves a listener running in the background and returns at once.
    let t = Instant::now();
    let r = call(
        &mux,
        OpenRequest::Exec(exec_req(&["/bin/sh", "-c", "busybox nc -l -p 8123 </dev/null >/dev/null 2>&1 &"])),
    )
    .await;
    assert_eq!(r.last(), &Ctrl::Exit { code: Some(0), signal: None, timed_out: false }, "{r:?}");
    ports_until(&mut w, has(8123)).await;
    eprintln!("exec listener reported {:?} after the exec started", t.elapsed());

    // A dev server started from a terminal, then stopped with Ctrl-C.
    let mut term = open(&mux, pty_req(None, Some(&["/bin/sh"]))).await;
    started_pid(&mut term).await;
    let t = Instant::now();
    type_keys(&term, "busybox httpd -f -p 8124\r").await;
    ports_until(&mut w, has(8124)).await;
    eprintln!("terminal listener reported {:?} after the keystrokes", t.elapsed());
    let t = Instant::now();
    type_keys(&term, "\x03").await;
    ports_until(&mut w, |p| !has(8124)(p)).await;
    eprintln!("terminal listener's end reported {:?} after Ctrl-C", t.elapsed());
}
