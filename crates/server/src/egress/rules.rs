//! Egress rules: `host`, `*.domain`, `IP`, `CIDR`, each optionally followed by `:port` or `:*`
//! (IPv6 in brackets when a port follows: `[2001:db8::/32]:443`). Without a port a rule covers
//! 80 and 443, the web.

use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// Exactly this host name.
    Name(String),
    /// Any name ending in `.suffix` (not the suffix itself).
    Suffix(String),
    Net(IpNet),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ports {
    Web,
    Any,
    One(u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pattern: Pattern,
    ports: Ports,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid egress rule {rule:?}: {why} (expected host, *.domain, IP or CIDR, optionally :port)")]
pub struct RuleError {
    rule: String,
    why: &'static str,
}

impl Rule {
    fn port_ok(&self, port: u16) -> bool {
        match self.ports {
            Ports::Web => port == 80 || port == 443,
            Ports::Any => true,
            Ports::One(p) => p == port,
        }
    }

    /// True when the rule names `host` (a normalised host name, not an IP literal).
    pub fn matches_name(&self, host: &str, port: u16) -> bool {
        self.port_ok(port)
            && match &self.pattern {
                Pattern::Name(n) => n == host,
                Pattern::Suffix(s) => host.len() > s.len() + 1 && host.ends_with(s.as_str()) && host.as_bytes()[host.len() - s.len() - 1] == b'.',
                Pattern::Net(_) => false,
            }
    }

    /// True for IP/CIDR rules (a name may resolve into them).
    pub fn is_network(&self) -> bool {
        matches!(self.pattern, Pattern::Net(_))
    }

    pub fn matches_ip(&self, ip: IpAddr, port: u16) -> bool {
        self.port_ok(port) && matches!(&self.pattern, Pattern::Net(n) if n.contains(&super::addrs::canonical(ip)))
    }
}

/// Lowercase, no trailing dot; `None` when it is not a plausible DNS name.
pub fn normalize_name(host: &str) -> Option<String> {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then_some(h)
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(raw: &str) -> Result<Rule, RuleError> {
        let err = |why| RuleError { rule: raw.to_string(), why };
        let s = raw.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(|| err("unclosed ["))?;
            match after {
                "" => (h, None),
                p => (h, Some(p.strip_prefix(':').ok_or_else(|| err("expected :port after ]"))?)),
            }
        } else if s.matches(':').count() > 1 {
            (s, None) // a bare IPv6 address or network
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let ports = match port {
            None => Ports::Web,
            Some("*") => Ports::Any,
            Some(p) => Ports::One(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| err("port must be 1-65535 or *"))?),
        };
        let pattern = if let Ok(net) = host.parse::<IpNet>() {
            Pattern::Net(net.trunc())
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            Pattern::Net(IpNet::from(ip))
        } else if let Some(suffix) = host.strip_prefix("*.") {
            Pattern::Suffix(normalize_name(suffix).ok_or_else(|| err("bad domain after *."))?)
        } else {
            Pattern::Name(normalize_name(host).ok_or_else(|| err("not a host name, IP or CIDR"))?)
        };
        Ok(Rule { pattern, ports })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.pattern {
            Pattern::Name(n) => n.clone(),
            Pattern::Suffix(s) => format!("*.{s}"),
            Pattern::Net(n) if n.prefix_len() == n.max_prefix_len() => n.addr().to_string(),
            Pattern::Net(n) => n.to_string(),
        };
        let v6 = host.contains(':');
        match self.ports {
            Ports::Web if v6 => write!(f, "[{host}]"),
            Ports::Web => write!(f, "{host}"),
            Ports::Any if v6 => write!(f, "[{host}]:*"),
            Ports::Any => write!(f, "{host}:*"),
            Ports::One(p) if v6 => write!(f, "[{host}]:{p}"),
            Ports::One(p) => write!(f, "{host}:{p}"),
        }
    }
}

/// Parses a list of rules; the first bad one is the error.
pub fn parse_all(rules: &[String]) -> Result<Vec<Rule>, RuleError> {
    rules.iter().map(|r| r.parse()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Rule {
        s.parse().unwrap()
    }

    #[test]
    fn rules_parse_and_print_back() {
        for (input, shown) in [
            ("pypi.org", "pypi.org"),
            ("PyPI.org.:443", "pypi.org:443"),
            ("*.npmjs.org", "*.npmjs.org"),
            ("10.1.2.0/24:22", "10.1.2.0/24:22"),
            ("10.1.2.9/24", "10.1.2.0/24"),
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("192.168.1.5:*", "192.168.1.5:*"),
            ("2001:db8::/32", "[2001:db8::/32]"),
            ("[2001:db8::1]:443", "[2001:db8::1]:443"),
            ("[::1]", "[::1]"),
        ] {
            assert_eq!(r(input).to_string(), shown, "{input}");
        }
        for bad in ["", "*.", "a b", "host:0", "host:70000", "host:x", "[::1", "[::1]x", "-bad.com", "a..b", "10.0.0.0/33"] {
            assert!(bad.parse::<Rule>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn names_match_exactly_or_by_suffix() {
        assert!(r("pypi.org").matches_name("pypi.org", 443));
        assert!(r("pypi.org").matches_name("pypi.org", 80));
        assert!(!r("pypi.org").matches_name("pypi.org", 22), "web ports only without a port");
        assert!(!r("pypi.org").matches_name("files.pypi.org", 443));
        assert!(!r("pypi.org").matches_name("evilpypi.org", 443));
        assert!(r("*.npmjs.org").matches_name("registry.npmjs.org", 443));
        assert!(!r("*.npmjs.org").matches_name("npmjs.org", 443));
        assert!(!r("*.npmjs.org").matches_name("evilnpmjs.org", 443));
        assert!(r("git.example:*").matches_name("git.example", 9418));
        assert!(!r("10.0.0.0/8").matches_name("pypi.org", 443));
    }

    #[test]
    fn networks_match_addresses_including_mapped_ones() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(r("10.0.0.0/8:22").matches_ip(ip("10.9.8.7"), 22));
        assert!(!r("10.0.0.0/8:22").matches_ip(ip("10.9.8.7"), 23));
        assert!(!r("10.0.0.0/8:22").matches_ip(ip("11.0.0.1"), 22));
        assert!(r("127.0.0.1:5000").matches_ip(ip("::ffff:127.0.0.1"), 5000));
        assert!(r("[2001:db8::/32]:*").matches_ip(ip("2001:db8::5"), 1));
        assert!(!r("pypi.org").matches_ip(ip("151.101.0.223"), 443));
    }
}
