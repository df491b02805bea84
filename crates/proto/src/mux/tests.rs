use super::*;
use crate::msg::ExecRequest;
use tokio::io::duplex;

async fn pair() -> (Mux, Mux) {
    let (a, b) = duplex(64 * 1024);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let (h, g) = tokio::join!(Mux::connect(ar, aw, Role::Host), Mux::connect(br, bw, Role::Guest));
    (h.unwrap(), g.unwrap())
}

fn exec(cmd: &str) -> OpenRequest {
    OpenRequest::Exec(ExecRequest { cmd: vec![cmd.into()], ..Default::default() })
}

#[tokio::test]
async fn handshake_exchanges_roles() {
    let (h, g) = pair().await;
    assert_eq!(h.peer().role, "guest");
    assert_eq!(g.peer().role, "host");
}

#[tokio::test]
async fn open_accept_and_exchange() {
    let (h, g) = pair().await;
    let mut s = h.open(&exec("echo")).await.unwrap();
    let (req, mut gs) = g.accept().await.unwrap();
    assert_eq!(req, exec("echo"));
    s.send_data(0, b"ping").await.unwrap();
    s.send_eof().await.unwrap();
    assert_eq!(gs.recv().await, Event::Data { fd: 0, data: Bytes::from_static(b"ping") });
    assert_eq!(gs.recv().await, Event::Eof);
    gs.send_data(1, b"err").await.unwrap();
    gs.send_ctrl(&Ctrl::Ok).await.unwrap();
    gs.send_eof().await.unwrap();
    assert_eq!(s.recv().await, Event::Data { fd: 1, data: Bytes::from_static(b"err") });
    assert_eq!(s.recv().await, Event::Ctrl(Ctrl::Ok));
    assert_eq!(s.recv().await, Event::Eof);
}

#[tokio::test]
async fn bulk_transfer_respects_flow_control() {
    let (h, g) = pair().await;
    let s = h.open(&exec("cat")).await.unwrap();
    let (_, gs) = g.accept().await.unwrap();
    let total = 8 * INITIAL_WINDOW as usize + 123;
    let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
    let want = data.clone();
    let sender = tokio::spawn(async move {
        s.send_data(0, &data).await.unwrap();
        s.send_eof().await.unwrap();
        s
    });
    let (_gtx, mut grx) = gs.split();
    let mut got = Vec::new();
    loop {
        match grx.recv().await {
            Event::Data { data, .. } => got.extend_from_slice(&data),
            Event::Eof => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    sender.await.unwrap();
    assert_eq!(got.len(), want.len());
    assert!(got == want);
}

#[tokio::test]
async fn slow_stream_does_not_block_others() {
    let (h, g) = pair().await;
    let slow = h.open(&exec("slow")).await.unwrap();
    let (_, _slow_g) = g.accept().await.unwrap(); // never read
    // Fill the slow stream's window completely.
    slow.send_data(0, &vec![0u8; INITIAL_WINDOW as usize]).await.unwrap();
    let mut fast = h.open(&exec("fast")).await.unwrap();
    let (_, fast_g) = g.accept().await.unwrap();
    fast_g.send_data(0, b"still flowing").await.unwrap();
    assert_eq!(fast.recv().await, Event::Data { fd: 0, data: Bytes::from_static(b"still flowing") });
}

#[tokio::test]
async fn dropping_receiver_resets_peer() {
    let (h, g) = pair().await;
    let s = h.open(&exec("x")).await.unwrap();
    let (_, mut gs) = g.accept().await.unwrap();
    drop(s);
    assert!(matches!(gs.recv().await, Event::Reset(_)));
    assert!(gs.send_data(0, b"late").await.is_err());
}

#[tokio::test]
async fn bad_open_payload_fails_only_that_stream() {
    let (a, b) = duplex(64 * 1024);
    let (ar, mut aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let guest = tokio::spawn(Mux::connect(br, bw, Role::Guest));
    // A raw "host": HELLO, then an OPEN whose JSON is garbage, then a good one.
    let hello = serde_json::to_vec(&own_hello(Role::Host, false)).unwrap();
    aw.write_all(&Frame::new(FrameType::Hello, 0, hello).to_bytes()).await.unwrap();
    aw.write_all(&Frame::new(FrameType::Open, 1, &b"{not json"[..]).to_bytes()).await.unwrap();
    let good = serde_json::to_vec(&exec("ok")).unwrap();
    aw.write_all(&Frame::new(FrameType::Open, 3, good).to_bytes()).await.unwrap();
    let g = guest.await.unwrap().unwrap();
    let (req, s) = g.accept().await.unwrap();
    assert_eq!(req, exec("ok"));
    assert_eq!(s.id(), 3);
    assert!(!g.is_closed());
    // The raw host receives HELLO, HELLO ack, then a CTRL error and RESET for stream 1.
    let mut r = ar;
    let mut buf = BytesMut::new();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        r.read_buf(&mut buf).await.unwrap();
        while let Some(f) = frame::decode(&mut buf).unwrap() {
            seen.push((f.kind, f.stream));
        }
    }
    assert!(seen.contains(&(FrameType::Ctrl, 1)), "{seen:?}");
    assert!(seen.contains(&(FrameType::Reset, 1)), "{seen:?}");
}

#[tokio::test]
async fn garbage_header_closes_connection_and_streams() {
    let (a, b) = duplex(64 * 1024);
    let (ar, mut aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let guest = tokio::spawn(Mux::connect(br, bw, Role::Guest));
    let hello = serde_json::to_vec(&own_hello(Role::Host, false)).unwrap();
    aw.write_all(&Frame::new(FrameType::Hello, 0, hello).to_bytes()).await.unwrap();
    aw.write_all(&Frame::new(FrameType::Open, 1, serde_json::to_vec(&exec("a")).unwrap()).to_bytes()).await.unwrap();
    let g = guest.await.unwrap().unwrap();
    let (_, mut s) = g.accept().await.unwrap();
    aw.write_all(b"this is not a frame at all").await.unwrap();
    let reason = g.closed().await;
    assert!(reason.contains("lost frame sync"), "{reason}");
    assert!(matches!(s.recv().await, Event::Reset(_)));
    drop(ar);
}

#[tokio::test]
async fn peer_restart_resets_streams_but_keeps_connection() {
    let (a, b) = duplex(64 * 1024);
    let (ar, mut aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let restarts = Arc::new(AtomicU32::new(0));
    let count = restarts.clone();
    let hook: PeerRestartHook = Box::new(move || {
        count.fetch_add(1, Ordering::SeqCst);
    });
    let guest = tokio::spawn(Mux::connect_with(br, bw, Role::Guest, Some(hook)));
    let hello = serde_json::to_vec(&own_hello(Role::Host, false)).unwrap();
    aw.write_all(&Frame::new(FrameType::Hello, 0, hello.clone()).to_bytes()).await.unwrap();
    aw.write_all(&Frame::new(FrameType::Open, 1, serde_json::to_vec(&exec("a")).unwrap()).to_bytes()).await.unwrap();
    let g = guest.await.unwrap().unwrap();
    let (_, mut s) = g.accept().await.unwrap();
    assert_eq!(restarts.load(Ordering::SeqCst), 0, "the handshake's HELLO is not a restart");
    // The host "restarts": a fresh HELLO on the same byte stream.
    aw.write_all(&Frame::new(FrameType::Hello, 0, hello).to_bytes()).await.unwrap();
    assert_eq!(s.recv().await, Event::Reset("peer restarted".into()));
    assert_eq!(restarts.load(Ordering::SeqCst), 1, "the hook ran before the streams were told");
    aw.write_all(&Frame::new(FrameType::Open, 1, serde_json::to_vec(&exec("b")).unwrap()).to_bytes()).await.unwrap();
    let (req, _) = g.accept().await.unwrap();
    assert_eq!(req, exec("b"));
    assert!(!g.is_closed());
    drop(ar);
}

#[tokio::test]
async fn handshake_skips_stale_bytes() {
    let (a, b) = duplex(64 * 1024);
    let (ar, mut aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    aw.write_all(b"\x00\x01stale bytes from a previous connection MF").await.unwrap();
    let guest = tokio::spawn(Mux::connect(br, bw, Role::Guest));
    let hello = serde_json::to_vec(&own_hello(Role::Host, false)).unwrap();
    aw.write_all(&Frame::new(FrameType::Hello, 0, hello).to_bytes()).await.unwrap();
    let g = guest.await.unwrap().unwrap();
    assert_eq!(g.peer().role, "host");
    drop(ar);
}

#[tokio::test]
async fn closing_ends_open_and_accept() {
    let (h, g) = pair().await;
    h.close("test");
    assert!(h.open(&exec("x")).await.is_err());
    assert!(g.accept().await.is_none(), "peer sees the connection end");
}

#[tokio::test]
async fn stale_receiver_does_not_close_a_reused_stream_id() {
    let (a, b) = duplex(64 * 1024);
    let (ar, mut aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let guest = tokio::spawn(Mux::connect(br, bw, Role::Guest));
    let hello = serde_json::to_vec(&own_hello(Role::Host, false)).unwrap();
    let open1 = |cmd| Frame::new(FrameType::Open, 1, serde_json::to_vec(&exec(cmd)).unwrap()).to_bytes();
    aw.write_all(&Frame::new(FrameType::Hello, 0, hello.clone()).to_bytes()).await.unwrap();
    aw.write_all(&open1("old")).await.unwrap();
    let g = guest.await.unwrap().unwrap();
    let (_, mut old) = g.accept().await.unwrap();
    // The host restarts and reuses stream id 1 before the old stream's task let go of it.
    aw.write_all(&Frame::new(FrameType::Hello, 0, hello).to_bytes()).await.unwrap();
    assert!(matches!(old.recv().await, Event::Reset(_)));
    aw.write_all(&open1("new")).await.unwrap();
    let (req, mut new) = g.accept().await.unwrap();
    assert_eq!(req, exec("new"));
    drop(old);
    aw.write_all(&Frame::new(FrameType::Data, 1, &b"still mine"[..]).to_bytes()).await.unwrap();
    assert_eq!(new.recv().await, Event::Data { fd: 0, data: Bytes::from_static(b"still mine") });
    drop(ar);
}
