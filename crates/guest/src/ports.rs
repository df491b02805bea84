//! `watch_ports` streams: the set of listening TCP ports, sent in full at once and on every change.
//!
//! Source: `/proc/net/tcp` and `/proc/net/tcp6`, polled. The kernel has no notification for
//! "a socket started listening", so the poll is made cheap when nothing happens: the interval is
//! [`FAST`] right after activity and grows with quiet time up to [`SLOW`] ([`poll_interval`]).
//! Activity is a change in the port set, the stream's start, every [`crate::activity::poke`]
//! (an exec starts or ends, terminal input or a signal arrives), and busy CPUs: at least
//! [`BUSY_SHARE`] of the CPU time since the last poll (`crate::cpu_busy`). Those are when programs
//! start listening: a poke brings the next poll forward to at most [`FAST`] away, and a dev server
//! compiling or an interpreter loading keeps the polls [`FAST`] until it listens. Latency of
//! listen() → report: ≤ [`FAST`] plus one poll when the program listens soon after the command
//! that started it or while the VM is busy; at most a fifth of the time since the last activity
//! otherwise; never more than [`SLOW`] plus one poll (a program that starts listening with nobody
//! touching the VM and the VM idle).
//!
//! Line grammar of the tables (after a header line; whitespace separated):
//!
//! ```text
//! sl: local_address rem_address st tx_queue:rx_queue ...
//! local_address = ADDR ":" PORT      PORT: 4 hex digits
//! ADDR (tcp)    = 8 hex digits       one 32-bit word, printed in host byte order
//! ADDR (tcp6)   = 32 hex digits      four 32-bit words, each printed in host byte order
//! st            = 2 hex digits       0A = LISTEN
//! ```
//!
//! A port is `loopback` when bound only to 127.0.0.0/8, `::1` or `::ffff:127.x.x.x`.

use mayfly_proto::msg::{Ctrl, ListenPort};
use mayfly_proto::mux::{Event, Stream};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// Poll interval right after activity.
pub const FAST: Duration = Duration::from_millis(100);
/// Poll interval once the VM has been quiet for a while: the worst-case report delay.
pub const SLOW: Duration = Duration::from_secs(2);
/// The interval is this fraction of the quiet time, so a late listener costs at most ~20 % more
/// time than the program took to start.
const QUIET_DIVISOR: u32 = 5;
/// A poll that finds the CPUs busy for this share of the time since the previous one counts as
/// activity. Far above what the polls themselves cost (≈ 1 % at [`FAST`] under TCG).
const BUSY_SHARE: f64 = 0.25;
const TCP_LISTEN: &str = "0A";
/// Keeps one CTRL `ports` message well under the 64 KiB frame limit.
const MAX_PORTS: usize = 1000;

/// Listening sockets in one `/proc/net/tcp{,6}` table. Lines that do not parse are skipped.
pub fn parse_listeners(table: &str, ipv6: bool) -> Vec<ListenPort> {
    table.lines().filter_map(|l| parse_line(l, ipv6)).collect()
}

fn parse_line(line: &str, ipv6: bool) -> Option<ListenPort> {
    let mut fields = line.split_whitespace();
    let _slot = fields.next()?;
    let local = fields.next()?;
    let _remote = fields.next()?;
    if fields.next()? != TCP_LISTEN {
        return None;
    }
    let (addr, port) = local.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let loopback = if ipv6 {
        let a = parse_v6(addr)?;
        a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
    } else {
        parse_v4(addr)?.is_loopback()
    };
    Some(ListenPort { port, ipv6, loopback })
}

fn word(hex: &str) -> Option<[u8; 4]> {
    // The kernel prints each 32-bit word of the (network order) address as a host-order integer.
    Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
}

fn parse_v4(hex: &str) -> Option<Ipv4Addr> {
    (hex.len() == 8).then_some(())?;
    Some(Ipv4Addr::from(word(hex)?))
}

fn parse_v6(hex: &str) -> Option<Ipv6Addr> {
    (hex.len() == 32 && hex.is_ascii()).then_some(())?;
    let mut bytes = [0u8; 16];
    for i in 0..4 {
        bytes[i * 4..i * 4 + 4].copy_from_slice(&word(&hex[i * 8..i * 8 + 8])?);
    }
    Some(Ipv6Addr::from(bytes))
}

/// The daemon's own loopback listener (the egress proxy): not a user's port.
static HIDDEN: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);

/// Leaves the IPv4 loopback listener on `port` out of every report.
pub fn hide(port: u16) {
    HIDDEN.store(port, std::sync::atomic::Ordering::Relaxed);
}

/// The current sorted, deduplicated set of listening ports.
pub fn current_listeners() -> Vec<ListenPort> {
    let hidden = HIDDEN.load(std::sync::atomic::Ordering::Relaxed);
    let mut set = BTreeSet::new();
    for (file, ipv6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        // tcp6 is missing when IPv6 is disabled.
        if let Ok(table) = std::fs::read_to_string(file) {
            set.extend(parse_listeners(&table, ipv6).into_iter().filter(|p| !(p.port == hidden && !p.ipv6 && p.loopback)));
        }
    }
    set.into_iter().take(MAX_PORTS).collect()
}

/// How long to wait before the next poll after `quiet` without activity.
pub fn poll_interval(quiet: Duration) -> Duration {
    (quiet / QUIET_DIVISOR).clamp(FAST, SLOW)
}

pub async fn serve(stream: Stream) {
    use tokio::time::{sleep_until, Instant};
    let (tx, mut rx) = stream.split();
    let mut last: Option<Vec<ListenPort>> = None;
    let mut activity = crate::activity::subscribe();
    let mut cpu = crate::cpu_busy::BusyMeter::new();
    let mut pokes_open = true;
    let mut active_at = Instant::now();
    let mut next = Instant::now();
    loop {
        tokio::select! {
            () = sleep_until(next) => {}
            changed = activity.changed(), if pokes_open => {
                pokes_open = changed.is_ok();
                let now = Instant::now();
                active_at = now;
                next = next.min(now + FAST);
                continue;
            }
            ev = rx.recv() => match ev {
                Event::Reset(_) => return,
                _ => continue,
            },
        }
        let ports = current_listeners();
        let now = Instant::now();
        if last.as_ref() != Some(&ports) {
            if tx.send_ctrl(&Ctrl::Ports { ports: ports.clone() }).await.is_err() {
                return;
            }
            last = Some(ports);
            active_at = now;
        }
        if cpu.share() >= BUSY_SHARE {
            active_at = now;
        }
        next = now + poll_interval(now.saturating_duration_since(active_at));
    }
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;

    const HEADER: &str =
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";

    fn lp(port: u16, ipv6: bool, loopback: bool) -> ListenPort {
        ListenPort { port, ipv6, loopback }
    }

    #[test]
    fn parses_ipv4_table() {
        let table = [
            HEADER,
            "   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 21810 1 0000000000000000 100 0 0 10 0",
            "   1: 0100007F:1388 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 21811 1 0000000000000000 100 0 0 10 0",
            "   2: 0101007F:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000   101        0 15000 1 0000000000000000 100 0 0 10 5",
            "   3: 0F02000A:0016 0202000A:C5B4 01 00000000:00000000 02:00096C4F 00000000     0        0 21999 2 0000000000000000 20 4 30 10 -1",
            "   4: 0100007F:1388 0100007F:D2C6 01 00000000:00000000 00:00000000 00000000     0        0 22000 1 0000000000000000 20 4 30 10 -1",
            "   5: 0100007F:1F90 0100007F:9C40 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000",
            "garbage",
            "   6: XYZ:1F40 00000000:0000 0A",
        ]
        .join("\n");
        assert_eq!(
            parse_listeners(&table, false),
            vec![lp(8000, false, false), lp(5000, false, true), lp(53, false, true)],
            "ESTABLISHED (01) and TIME_WAIT (06) sockets are not listeners"
        );
    }

    #[test]
    fn parses_ipv6_table() {
        let table = [
            HEADER,
            "   0: 00000000000000000000000000000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 30000 1 0000000000000000 100 0 0 10 0",
            "   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 30001 1 0000000000000000 100 0 0 10 0",
            "   2: 0000000000000000FFFF00000100007F:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 30002 1 0000000000000000 100 0 0 10 0",
            "   3: 0000000000000000FFFF00000F02000A:2329 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 30003 1 0000000000000000 100 0 0 10 0",
            "   4: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:E2A4 01 00000000:00000000 00:00000000 00000000     0        0 30004 1 0000000000000000 20 4 30 10 -1",
        ]
        .join("\n");
        assert_eq!(
            parse_listeners(&table, true),
            vec![lp(3000, true, false), lp(8080, true, true), lp(9000, true, true), lp(9001, true, false)]
        );
    }

    #[test]
    fn addresses_decode_in_host_order() {
        assert_eq!(parse_v4("0100007F"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(parse_v4("0F02000A"), Some(Ipv4Addr::new(10, 0, 2, 15)));
        assert_eq!(parse_v4("7F"), None);
        assert_eq!(parse_v6("00000000000000000000000001000000"), Some(Ipv6Addr::LOCALHOST));
        assert_eq!(parse_v6("000080FE00000000FF0254520F0000FE").map(|a| a.segments()[0]), Some(0xfe80));
    }

    #[test]
    fn poll_interval_backs_off_with_quiet_time() {
        let ms = Duration::from_millis;
        let table = [
            (ms(0), FAST),
            (ms(300), FAST),
            (ms(500), FAST),
            (ms(1000), ms(200)),
            (ms(2500), ms(500)),
            (ms(5000), ms(1000)),
            (ms(10_000), SLOW),
            (Duration::from_secs(3600), SLOW),
        ];
        for (quiet, want) in table {
            assert_eq!(poll_interval(quiet), want, "after {quiet:?} of quiet");
        }
    }

    #[test]
    fn reads_the_live_tables() {
        // Whatever this machine listens on, the result is sorted and deduplicated.
        let ports = current_listeners();
        let mut sorted = ports.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(ports, sorted);
    }
}
