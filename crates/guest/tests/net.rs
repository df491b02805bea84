//! Port watching, TCP tunnels, info and identity against the real daemon binary.

mod common;
use common::*;
use mayfly_proto::msg::{Ctrl, ErrorKind, Identity, ListenPort, OpenRequest};
use mayfly_proto::mux::{Event, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads `ports` updates until one satisfies `want`.
async fn ports_until(s: &mut Stream, want: impl Fn(&[ListenPort]) -> bool) -> Vec<ListenPort> {
    loop {
        match next(s).await {
            Event::Ctrl(Ctrl::Ports { ports }) => {
                let mut sorted = ports.clone();
                sorted.sort();
                sorted.dedup();
                assert_eq!(ports, sorted, "sorted and deduplicated");
                if want(&ports) {
                    return ports;
                }
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn watch_ports_sees_listeners_come_and_go() {
    let g = Guest::start();
    let mux = g.connect().await;
    let mut s = open(&mux, OpenRequest::WatchPorts).await;
    ports_until(&mut s, |_| true).await; // the full set arrives at once

    let v4 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let v6 = tokio::net::TcpListener::bind("[::]:0").await.unwrap();
    let (p4, p6) = (v4.local_addr().unwrap().port(), v6.local_addr().unwrap().port());
    let lo4 = ListenPort { port: p4, ipv6: false, loopback: true };
    let any6 = ListenPort { port: p6, ipv6: true, loopback: false };
    ports_until(&mut s, |p| p.contains(&lo4) && p.contains(&any6)).await;

    drop(v4);
    drop(v6);
    ports_until(&mut s, |p| !p.iter().any(|x| x.port == p4 || x.port == p6)).await;
}

async fn echo_server(addr: &str) -> (u16, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind(addr).await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut sock, _) = l.accept().await.unwrap();
        let (mut r, mut w) = sock.split();
        tokio::io::copy(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
    });
    (port, task)
}

#[tokio::test]
async fn tunnel_echoes_and_half_closes() {
    let g = Guest::start();
    let mux = g.connect().await;
    for addr in ["127.0.0.1:0", "[::1]:0"] {
        let (port, server) = echo_server(addr).await;
        let mut s = open(&mux, OpenRequest::Tunnel { port }).await;
        assert_eq!(next(&mut s).await, Event::Ctrl(Ctrl::Connected), "{addr}");
        let payload: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        s.send_data(0, &payload).await.unwrap();
        s.send_eof().await.unwrap(); // → shutdown(Write) → the server finishes → EOF back
        let r = collect(&mut s).await;
        assert!(r.out == payload, "{addr}: echoed {} bytes", r.out.len());
        server.await.unwrap();
    }
}

#[tokio::test]
async fn tunnel_to_a_closed_port_is_refused() {
    let g = Guest::start();
    let mux = g.connect().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let r = call(&mux, OpenRequest::Tunnel { port }).await;
    assert!(matches!(r.last(), Ctrl::Error { kind: ErrorKind::ConnectionRefused, .. }), "{:?}", r.ctrls);
}

#[tokio::test]
async fn tunnel_carries_a_real_http_exchange() {
    let g = Guest::start();
    let mux = g.connect().await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut sock, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let n = sock.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"GET / HTTP/1.1"));
        sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
    });
    let mut s = open(&mux, OpenRequest::Tunnel { port }).await;
    assert_eq!(next(&mut s).await, Event::Ctrl(Ctrl::Connected));
    s.send_data(0, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let r = collect(&mut s).await; // the server closes after answering
    assert!(r.stdout().ends_with("\r\n\r\nok"), "{}", r.stdout());
}

#[tokio::test]
async fn info_and_identity() {
    let g = Guest::start();
    let mux = g.connect().await;
    let r = call(&mux, OpenRequest::Info).await;
    match r.last() {
        Ctrl::Info(i) => {
            assert_eq!(i.protocol, mayfly_proto::PROTOCOL_VERSION);
            assert_eq!(i.version, env!("CARGO_PKG_VERSION"));
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
            assert_eq!(i.hostname, host.trim());
            let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
            assert_eq!(i.kernel, kernel.trim());
            assert!(i.uptime_ms > 0);
        }
        other => panic!("{other:?}"),
    }
    // Changing this host's clock or hostname is not for a test: only the no-op and refusals.
    let r = call(&mux, OpenRequest::Identity(Identity::default())).await;
    assert_eq!(r.ctrls, vec![Ctrl::Ok]);
    for bad in [
        Identity { rng_seed_hex: Some("not hex".into()), ..Default::default() },
        Identity { hostname: Some("bad name!".into()), ..Default::default() },
        Identity { machine_id: Some("short".into()), ..Default::default() },
    ] {
        let r = call(&mux, OpenRequest::Identity(bad.clone())).await;
        assert!(matches!(r.last(), Ctrl::Error { kind: ErrorKind::InvalidInput, .. }), "{bad:?}: {:?}", r.ctrls);
    }
}
