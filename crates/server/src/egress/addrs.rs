//! Addresses a session may never reach on its own: the host itself, loopback, private and
//! otherwise non-public ranges. IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4) are
//! judged by the address inside.

use ipnet::{Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

/// IPv4-mapped and IPv4-compatible IPv6 addresses as the IPv4 address they stand for.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn v4_ranges() -> &'static [(Ipv4Net, &'static str)] {
    static R: OnceLock<Vec<(Ipv4Net, &'static str)>> = OnceLock::new();
    R.get_or_init(|| {
        [
            ("0.0.0.0/8", "\"this network\" addresses"),
            ("10.0.0.0/8", "private addresses (RFC 1918)"),
            ("100.64.0.0/10", "carrier-grade NAT addresses"),
            ("127.0.0.0/8", "loopback addresses"),
            ("169.254.0.0/16", "link-local addresses (incl. cloud metadata)"),
            ("172.16.0.0/12", "private addresses (RFC 1918)"),
            ("192.0.0.0/24", "IETF protocol addresses"),
            ("192.168.0.0/16", "private addresses (RFC 1918)"),
            ("198.18.0.0/15", "benchmarking addresses"),
            ("224.0.0.0/4", "multicast addresses"),
            ("240.0.0.0/4", "reserved addresses"),
        ]
        .into_iter()
        .map(|(n, why)| (n.parse().expect("static network"), why))
        .collect()
    })
}

fn v6_ranges() -> &'static [(Ipv6Net, &'static str)] {
    static R: OnceLock<Vec<(Ipv6Net, &'static str)>> = OnceLock::new();
    R.get_or_init(|| {
        [
            ("::/128", "the unspecified address"),
            ("::1/128", "loopback addresses"),
            ("::/96", "IPv4-compatible addresses"),
            ("fc00::/7", "unique local addresses"),
            ("fe80::/10", "link-local addresses"),
            ("fec0::/10", "site-local addresses"),
            ("ff00::/8", "multicast addresses"),
            ("100::/64", "discard addresses"),
        ]
        .into_iter()
        .map(|(n, why)| (n.parse().expect("static network"), why))
        .collect()
    })
}

/// The IPv4 address inside a NAT64 (64:ff9b::/96) or 6to4 (2002::/16) address.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let o = v6.octets();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// Why `ip` is never reachable from a session (without an operator exception), or `None` for
/// a public address. `host` are the host's own interface addresses.
pub fn forbidden(ip: IpAddr, host: &[IpAddr]) -> Option<&'static str> {
    let ip = canonical(ip);
    let range = match ip {
        IpAddr::V4(v4) if v4 == Ipv4Addr::BROADCAST => Some("the broadcast address"),
        IpAddr::V4(v4) => v4_ranges().iter().find(|(n, _)| n.contains(&v4)).map(|(_, why)| *why),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => return forbidden(IpAddr::V4(v4), host),
            None => v6_ranges().iter().find(|(n, _)| n.contains(&v6)).map(|(_, why)| *why),
        },
    };
    range.or_else(|| host.iter().any(|h| canonical(*h) == ip).then_some("addresses of the Mayfly host"))
}

/// The host's interface addresses (refreshed on every call: addresses come and go).
pub fn host_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

/// True when `ip` reaches this host (loopback, unspecified, or one of its addresses).
pub fn is_this_host(ip: IpAddr, host: &[IpAddr]) -> bool {
    let ip = canonical(ip);
    ip.is_loopback() || ip.is_unspecified() || host.iter().any(|h| canonical(*h) == ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn non_public_ranges_are_forbidden_with_a_reason() {
        let host = [ip("203.0.113.7"), ip("2001:db8:1::7")];
        for (addr, why) in [
            ("127.0.0.1", "loopback"),
            ("127.3.4.5", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("10.0.2.2", "private"),
            ("172.20.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.100.100.100", "carrier-grade"),
            ("0.0.0.0", "this network"),
            ("::", "unspecified"),
            ("fd00::1", "unique local"),
            ("fe80::1", "link-local"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("64:ff9b::a00:1", "private"),
            ("2002:7f00:1::", "loopback"),
            ("203.0.113.7", "Mayfly host"),
            ("::ffff:203.0.113.7", "Mayfly host"),
            ("2001:db8:1::7", "Mayfly host"),
        ] {
            let got = forbidden(ip(addr), &host).unwrap_or_else(|| panic!("{addr} should be forbidden"));
            assert!(got.contains(why), "{addr}: {got}");
        }
        for public in ["151.101.0.223", "1.1.1.1", "2a04:4e42::223", "64:ff9b::101:101"] {
            assert_eq!(forbidden(ip(public), &host), None, "{public}");
        }
    }

    #[test]
    fn this_host_includes_loopback_and_own_addresses() {
        let host = host_addresses();
        assert!(host.iter().any(|a| a.is_loopback()), "lo has an address: {host:?}");
        assert!(is_this_host(ip("127.0.0.1"), &host));
        assert!(is_this_host(ip("0.0.0.0"), &host));
        for a in &host {
            assert!(is_this_host(*a, &host));
            assert!(forbidden(*a, &host).is_some());
        }
        assert!(!is_this_host(ip("1.1.1.1"), &host));
    }
}
