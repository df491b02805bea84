//! Hostile input on the host↔guest channel: property tests of the frame decoder and of the
//! multiplexer facing a peer that writes garbage, malformed frames, floods of OPENs, or DATA
//! beyond its flow-control window. Fixed case counts and a fixed seed keep CI runs identical;
//! `PROPTEST_CASES` raises the budget locally.

use bytes::{Bytes, BytesMut};
use mayfly_proto::frame::{self, Frame, FrameError, FrameType, HEADER_LEN, MAGIC, MAX_PAYLOAD};
use mayfly_proto::msg::Hello;
use mayfly_proto::msg::{Ctrl, ExecRequest, OpenRequest};
use mayfly_proto::mux::{Event, Mux, Role, INITIAL_WINDOW};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// Hang guard: every wait here finishes in milliseconds when the code is right.
const GUARD: Duration = Duration::from_secs(10);

fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(cases);
    Config { cases, rng_seed: RngSeed::Fixed(0x6d61_7966), failure_persistence: None, ..Config::default() }
}

fn kind() -> impl Strategy<Value = FrameType> {
    prop_oneof![
        Just(FrameType::Hello),
        Just(FrameType::Open),
        Just(FrameType::Data),
        Just(FrameType::Ctrl),
        Just(FrameType::Eof),
        Just(FrameType::Reset),
        Just(FrameType::Window),
    ]
}

fn any_frame(max_payload: usize) -> impl Strategy<Value = Frame> {
    (kind(), any::<u8>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..=max_payload))
        .prop_map(|(k, flags, stream, p)| Frame::new(k, stream, p).with_flags(flags))
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_bytes_never_panic_and_always_make_progress(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut buf = BytesMut::from(&bytes[..]);
        loop {
            let before = buf.len();
            match frame::decode(&mut buf) {
                Ok(Some(f)) => prop_assert!(buf.len() < before && f.payload.len() <= MAX_PAYLOAD),
                Ok(None) => { prop_assert_eq!(buf.len(), before, "nothing consumed while waiting"); break }
                Err(_) => break,
            }
        }
        let mut buf = BytesMut::from(&bytes[..]);
        let dropped = frame::resync_to_hello(&mut buf);
        prop_assert_eq!(dropped + buf.len(), bytes.len());
    }

    #[test]
    fn encode_decode_round_trip_at_any_split(frames in proptest::collection::vec(any_frame(2048), 1..6), split in any::<prop::sample::Index>()) {
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode(&mut wire);
        }
        // Bytes arrive in two reads, cut anywhere: the decoder waits, then yields the same frames.
        let cut = split.index(wire.len() + 1);
        let mut buf = BytesMut::from(&wire[..cut]);
        let mut got = Vec::new();
        while let Some(f) = frame::decode(&mut buf).unwrap() {
            got.push(f);
        }
        buf.extend_from_slice(&wire[cut..]);
        while let Some(f) = frame::decode(&mut buf).unwrap() {
            got.push(f);
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn oversized_lengths_are_rejected_from_the_header_alone(len in (MAX_PAYLOAD as u32 + 1)..=u32::MAX, k in 0u8..7, stream in any::<u32>()) {
        let mut head = BytesMut::new();
        head.extend_from_slice(&MAGIC);
        head.extend_from_slice(&[k, 0]);
        head.extend_from_slice(&stream.to_le_bytes());
        head.extend_from_slice(&len.to_le_bytes());
        prop_assert_eq!(head.len(), HEADER_LEN);
        prop_assert_eq!(frame::decode(&mut head), Err(FrameError::TooLarge(len as usize)));
    }

    #[test]
    fn unknown_types_are_rejected(k in 7u8..=255) {
        let mut b = BytesMut::from(&Frame::new(FrameType::Data, 1, Bytes::new()).to_bytes()[..]);
        b[2] = k;
        prop_assert_eq!(frame::decode(&mut b), Err(FrameError::UnknownType(k)));
    }
}

/// A peer speaking raw bytes: it does the handshake by hand, then writes whatever it likes.
struct RawPeer {
    io: DuplexStream,
    buf: BytesMut,
}

impl RawPeer {
    async fn write(&mut self, bytes: &[u8]) {
        // The mux may already have hung up; a write error is then expected.
        let _ = self.io.write_all(bytes).await;
    }

    async fn send(&mut self, f: Frame) {
        self.write(&f.to_bytes()).await;
    }

    /// Next frame the mux sent; `None` once it closed its end.
    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = frame::decode(&mut self.buf).expect("the mux writes valid frames") {
                return Some(f);
            }
            let n =
                tokio::time::timeout(GUARD, self.io.read_buf(&mut self.buf)).await.expect("mux wrote in time").ok()?;
            if n == 0 {
                return None;
            }
        }
    }
}

/// A host-side mux connected to a raw peer that answered its HELLO.
async fn host_and_raw_peer() -> (Mux, RawPeer) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let (ar, aw) = tokio::io::split(a);
    let hello =
        Hello { protocol: mayfly_proto::PROTOCOL_VERSION, version: "raw".into(), role: "guest".into(), ack: true };
    let mut raw = RawPeer { io: b, buf: BytesMut::new() };
    raw.send(Frame::new(FrameType::Hello, 0, serde_json::to_vec(&hello).unwrap())).await;
    let mux = tokio::time::timeout(GUARD, Mux::connect(ar, aw, Role::Host)).await.expect("handshake in time").unwrap();
    let first = raw.next_frame().await.unwrap();
    assert_eq!(first.kind, FrameType::Hello);
    (mux, raw)
}

fn exec() -> OpenRequest {
    OpenRequest::Exec(ExecRequest { cmd: vec!["true".into()], ..Default::default() })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Opens a stream from the host and answers it from the raw peer: the mux still works.
async fn still_serves(mux: &Mux, raw: &mut RawPeer) {
    let mut s = tokio::time::timeout(GUARD, mux.open(&exec())).await.expect("open in time").expect("mux is alive");
    let id = loop {
        let f = raw.next_frame().await.expect("mux still writes");
        if f.kind == FrameType::Open && f.stream == s.id() {
            break f.stream;
        }
    };
    raw.send(Frame::new(FrameType::Ctrl, id, serde_json::to_vec(&Ctrl::Ok).unwrap())).await;
    raw.send(Frame::new(FrameType::Data, id, &b"alive"[..])).await;
    assert_eq!(tokio::time::timeout(GUARD, s.recv()).await.unwrap(), Event::Ctrl(Ctrl::Ok));
    assert_eq!(
        tokio::time::timeout(GUARD, s.recv()).await.unwrap(),
        Event::Data { fd: 0, data: Bytes::from_static(b"alive") }
    );
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn garbage_closes_the_connection_with_an_error(mut junk in proptest::collection::vec(any::<u8>(), 2..4096)) {
        if junk[0] == MAGIC[0] {
            junk[0] ^= 0xff; // a frame header by chance is another test's business
        }
        runtime().block_on(async {
            let (mux, mut raw) = host_and_raw_peer().await;
            let mut pending = mux.open(&exec()).await.unwrap();
            raw.write(&junk).await;
            let reason = tokio::time::timeout(GUARD, mux.closed()).await.expect("closed in time");
            assert!(reason.contains("lost frame sync"), "{reason}");
            assert!(matches!(tokio::time::timeout(GUARD, pending.recv()).await.unwrap(), Event::Reset(_)));
            assert!(mux.open(&exec()).await.is_err(), "a closed mux opens nothing");
        });
    }

    #[test]
    fn malformed_frames_fail_at_most_their_stream(frames in proptest::collection::vec(any_frame(512), 1..24)) {
        runtime().block_on(async {
            let (mux, mut raw) = host_and_raw_peer().await;
            for f in frames {
                raw.send(f).await;
            }
            still_serves(&mux, &mut raw).await;
            assert!(!mux.is_closed());
        });
    }
}

#[tokio::test]
async fn an_open_flood_is_bounded_by_the_accept_backlog() {
    let (mux, mut raw) = host_and_raw_peer().await;
    let open = serde_json::to_vec(&exec()).unwrap();
    for i in 0..1000u32 {
        raw.send(Frame::new(FrameType::Open, 2 * i + 2, open.clone())).await;
    }
    still_serves(&mux, &mut raw).await;
    let count = mux.stream_count();
    assert!(count <= 65, "nobody accepts on the host, so at most the backlog is kept: {count} streams");
    // A second OPEN on a live id is refused, not swapped in.
    raw.send(Frame::new(FrameType::Open, 2, open.clone())).await;
    still_serves(&mux, &mut raw).await;
}

#[tokio::test]
async fn data_beyond_the_window_resets_the_stream() {
    let (mux, mut raw) = host_and_raw_peer().await;
    let mut s = mux.open(&exec()).await.unwrap();
    let id = s.id();
    // The host reads nothing meanwhile; an honest peer would stop at INITIAL_WINDOW bytes.
    let chunk = vec![7u8; MAX_PAYLOAD];
    for _ in 0..(INITIAL_WINDOW as usize / MAX_PAYLOAD + 4) {
        raw.send(Frame::new(FrameType::Data, id, chunk.clone())).await;
    }
    let reset = loop {
        let f = raw.next_frame().await.expect("mux still writes");
        if f.kind == FrameType::Reset && f.stream == id {
            break String::from_utf8_lossy(&f.payload).into_owned();
        }
    };
    assert!(reset.contains("flow-control window"), "{reset}");
    let mut got = 0usize;
    loop {
        match tokio::time::timeout(GUARD, s.recv()).await.unwrap() {
            Event::Data { data, .. } => got += data.len(),
            Event::Reset(r) => {
                assert!(r.contains("flow-control window"), "{r}");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(got <= INITIAL_WINDOW as usize, "buffered no more than the window: {got}");
    still_serves(&mux, &mut raw).await;
}

/// Across an upgrade the guest daemon in a running VM is the old binary: a peer that speaks
/// another protocol is refused at the handshake with both versions named (the server then fails
/// only that session's adoption), and an unknown request op from a newer peer fails only its
/// stream.
#[test]
fn another_protocol_is_refused_clearly_and_an_unknown_op_fails_one_stream() {
    runtime().block_on(async {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (ar, aw) = tokio::io::split(a);
        let newer = Hello { protocol: mayfly_proto::PROTOCOL_VERSION + 1, version: "9.9.9".into(), role: "guest".into(), ack: true };
        let mut raw = RawPeer { io: b, buf: BytesMut::new() };
        raw.send(Frame::new(FrameType::Hello, 0, serde_json::to_vec(&newer).unwrap())).await;
        let err = tokio::time::timeout(GUARD, Mux::connect(ar, aw, Role::Host)).await.expect("answer in time").err().expect("refused");
        let msg = err.to_string();
        assert!(msg.contains(&format!("protocol {}", mayfly_proto::PROTOCOL_VERSION + 1)) && msg.contains("9.9.9"), "{msg}");

        let (mux, mut raw) = host_and_raw_peer().await;
        let mut accepted = Box::pin(mux.accept());
        raw.send(Frame::new(FrameType::Open, 7, &br#"{"op":"from_the_future","x":1}"#[..])).await;
        let mut answers = Vec::new();
        while answers.last().map(|f: &Frame| f.kind) != Some(FrameType::Reset) {
            let f = raw.next_frame().await.expect("an answer to the unknown op");
            if f.stream == 7 {
                answers.push(f);
            }
        }
        assert_eq!(answers[0].kind, FrameType::Ctrl, "{answers:?}");
        let why = String::from_utf8_lossy(&answers[0].payload).into_owned();
        assert!(why.contains("bad OPEN request"), "the refusal says why: {why}");
        assert!(tokio::time::timeout(Duration::from_millis(200), &mut accepted).await.is_err(), "nothing was accepted");
        still_serves(&mux, &mut raw).await;
    });
}
