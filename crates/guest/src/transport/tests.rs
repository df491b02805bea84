use super::*;
use std::os::fd::OwnedFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A port whose "device" is one end of a socket pair; the other end plays the host.
fn socket_port() -> (Port, std::os::unix::net::UnixStream) {
    let (guest, host) = std::os::unix::net::UnixStream::pair().unwrap();
    guest.set_nonblocking(true).unwrap();
    (Port::start(File::from(OwnedFd::from(guest))), host)
}

/// A port fed by hand, to script hangups.
fn scripted_port() -> (Port, mpsc::Sender<PortEvent>) {
    let (tx, rx) = mpsc::channel(16);
    let (wtx, _wrx) = std_mpsc::channel();
    let shared = PortShared { generation: Arc::new(AtomicU64::new(0)), rx: Mutex::new(rx), writes: wtx };
    (Port { shared: Arc::new(shared) }, tx)
}

#[tokio::test]
async fn hangup_before_host_spoke_is_ignored_after_is_eof() {
    let (port, tx) = scripted_port();
    let (mut r, _w) = port.connection();
    tx.send(PortEvent::Hangup).await.unwrap();
    tx.send(PortEvent::Data(Bytes::from_static(b"hello"))).await.unwrap();
    tx.send(PortEvent::Hangup).await.unwrap();
    let mut buf = Vec::new();
    r.read_to_end(&mut buf).await.unwrap();
    assert_eq!(buf, b"hello");
}

#[tokio::test]
async fn the_hangup_of_a_host_already_replaced_does_not_end_the_connection() {
    let (port, tx) = scripted_port();
    let (mut r, _w) = port.connection();
    let replaced = r.peer_restart_hook();
    // The new host's HELLO arrives before the old host's hangup is read; the multiplexer,
    // seeing a HELLO on a live connection, calls the hook.
    tx.send(PortEvent::Data(Bytes::from_static(b"hello"))).await.unwrap();
    let mut first = [0u8; 5];
    r.read_exact(&mut first).await.unwrap();
    replaced();
    tx.send(PortEvent::Hangup).await.unwrap();
    tx.send(PortEvent::Data(Bytes::from_static(b" again"))).await.unwrap();
    // A later hangup is a real one again.
    tx.send(PortEvent::Hangup).await.unwrap();
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b" again");
}

#[tokio::test]
async fn new_connection_kills_the_old_one() {
    let (port, tx) = scripted_port();
    let (mut old_r, mut old_w) = port.connection();
    let (mut new_r, _new_w) = port.connection();
    tx.send(PortEvent::Data(Bytes::from_static(b"x"))).await.unwrap();
    assert_eq!(old_r.read_u8().await.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    assert_eq!(old_w.write_all(b"late").await.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    assert_eq!(new_r.read_u8().await.unwrap(), b'x', "the old reader consumed nothing");
}

#[tokio::test]
async fn bytes_flow_both_ways_over_a_real_fd() {
    let (port, mut host) = socket_port();
    let (mut r, mut w) = port.connection();
    w.write_all(b"from guest").await.unwrap();
    w.flush().await.unwrap();
    let mut got = [0u8; 10];
    host.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"from guest");
    host.write_all(b"from host").unwrap();
    let mut got = [0u8; 9];
    r.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"from host");
    // The host goes away: read() returns 0, which ends this connection.
    host.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(r.read(&mut [0u8; 8]).await.unwrap(), 0);
}

#[test]
fn stale_write_is_abandoned() {
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let f = File::from(OwnedFd::from(a));
    assert_eq!(write_all(&f, b"data", || true).unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    assert!(write_all(&f, b"data", || false).is_ok());
}

#[test]
fn finds_port_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (node, name) in [("vport1p1", "org.qemu.guest_agent.0\n"), ("vport2p1", "mayfly.0\n")] {
        std::fs::create_dir(dir.path().join(node)).unwrap();
        std::fs::write(dir.path().join(node).join("name"), name).unwrap();
    }
    std::fs::create_dir(dir.path().join("vport3p1")).unwrap(); // no name file
    assert_eq!(find_port(dir.path(), "mayfly.0"), Some(PathBuf::from("/dev/vport2p1")));
    assert_eq!(find_port(dir.path(), "mayfly.1"), None);
    assert_eq!(find_port(&dir.path().join("missing"), "mayfly.0"), None);
}

#[test]
fn away_poll_backs_off_to_a_cap() {
    let ms = Duration::from_millis;
    let table = [
        (ms(0), ms(10)),
        (ms(50), ms(10)),
        (ms(100), ms(10)),
        (ms(400), ms(40)),
        (ms(1000), ms(100)),
        (ms(2500), ms(250)),
        (Duration::from_secs(600), ms(250)),
    ];
    for (away, want) in table {
        assert_eq!(away_poll(away), want, "after {away:?} away");
    }
}
