//! The host going away and coming back, against the real daemon binary.

mod common;
use common::*;
use mayfly_proto::msg::{Ctrl, OpenRequest};
use mayfly_proto::mux::Event;

#[tokio::test]
async fn host_reconnects_and_finds_its_terminal() {
    let g = Guest::start();
    let mux = g.connect().await;
    let mut t = open(&mux, pty_req(Some("keep"), Some(&["/bin/sh"]))).await;
    let pid = started_pid(&mut t).await;
    type_keys(&t, "V=persist; echo mark$((6*7))\r").await;
    read_until(&mut t, "mark42").await;
    // An exec that is still running when the host goes away is killed.
    let mut e = open(&mux, OpenRequest::Exec(exec_req(&["sleep", "30"]))).await;
    let sleeper = started_pid(&mut e).await;

    mux.close("host restarts");
    drop(mux);
    while !matches!(next(&mut t).await, Event::Reset(_)) {} // after any output still queued
    wait_gone(sleeper).await;

    // A new connection: the daemon accepts it with a new Mux; the terminal is still there.
    let (mux, socket) = g.connect_abortable().await;
    let mut t = open(&mux, pty_req(Some("keep"), Some(&["/bin/sh"]))).await;
    assert_eq!(started_pid(&mut t).await, pid);
    read_until(&mut t, "mark42").await; // scrollback replay
    type_keys(&t, "echo $V-after$((1+2))\r").await;
    read_until(&mut t, "persist-after3").await;
    let r = call(&mux, OpenRequest::Exec(exec_req(&["echo", "ok"]))).await;
    assert_eq!(r.stdout(), "ok\n");

    // And once more, abruptly: the socket just drops.
    socket.abort();
    let _ = socket.await;
    while !matches!(next(&mut t).await, Event::Reset(_)) {} // after any output still queued
    let mux = g.connect().await;
    let mut t = open(&mux, pty_req(Some("keep"), None)).await;
    assert_eq!(started_pid(&mut t).await, pid);
    read_until(&mut t, "persist-after3").await;
    type_keys(&t, "exit\r").await;
    let r = collect(&mut t).await;
    assert!(matches!(r.last(), Ctrl::Exit { .. }));
}

/// Reads frames from a raw socket until one matches.
async fn frame_until(
    r: &mut tokio::net::unix::OwnedReadHalf,
    buf: &mut bytes::BytesMut,
    want: impl Fn(&mayfly_proto::frame::Frame) -> bool,
) -> mayfly_proto::frame::Frame {
    use tokio::io::AsyncReadExt;
    loop {
        while let Some(f) = mayfly_proto::frame::decode(buf).unwrap() {
            if want(&f) {
                return f;
            }
        }
        let n = tokio::time::timeout(T, r.read_buf(buf)).await.expect("timed out").unwrap();
        assert!(n > 0, "guest closed the connection");
    }
}

#[tokio::test]
async fn host_restart_on_a_live_connection_resets_streams() {
    // A second HELLO on the same byte stream means the host restarted without the transport
    // noticing (as over virtio-serial): the guest resets the old streams and keeps serving.
    use mayfly_proto::frame::{Frame, FrameType};
    use mayfly_proto::msg::Hello;
    use tokio::io::AsyncWriteExt;
    let g = Guest::start();
    g.connect().await.close("make room"); // waits until the daemon listens
    let sock = tokio::net::UnixStream::connect(&g.sock).await.unwrap();
    let (mut r, mut w) = sock.into_split();
    let mut buf = bytes::BytesMut::new();
    let hello =
        Hello { protocol: mayfly_proto::PROTOCOL_VERSION, version: "test".into(), role: "host".into(), ack: false };
    let hello = Frame::new(FrameType::Hello, 0, serde_json::to_vec(&hello).unwrap()).to_bytes();
    let exec = |cmd: &[&str]| {
        let req = OpenRequest::Exec(exec_req(cmd));
        Frame::new(FrameType::Open, 1, serde_json::to_vec(&req).unwrap()).to_bytes()
    };
    w.write_all(&hello).await.unwrap();
    frame_until(&mut r, &mut buf, |f| f.kind == FrameType::Hello).await;
    w.write_all(&exec(&["sleep", "30"])).await.unwrap();
    let started = frame_until(&mut r, &mut buf, |f| f.kind == FrameType::Ctrl && f.stream == 1).await;
    let Ctrl::Started { pid } = serde_json::from_slice(&started.payload).unwrap() else { panic!("{started:?}") };

    w.write_all(&hello).await.unwrap(); // "restarted"
    let ack = frame_until(&mut r, &mut buf, |f| f.kind == FrameType::Hello).await;
    assert!(serde_json::from_slice::<Hello>(&ack.payload).unwrap().ack);
    wait_gone(pid).await;

    // Stream id 1 is free again and the connection still serves.
    w.write_all(&exec(&["echo", "again"])).await.unwrap();
    let data = frame_until(&mut r, &mut buf, |f| f.kind == FrameType::Data && f.stream == 1).await;
    assert_eq!(&data.payload[..], b"again\n");
}
