//! Where a preview request goes: the pure parsers of preview host names and fallback paths.
//!
//! Host grammar (matched case-insensitively; `preview-domain` is the configured one):
//!
//! ```text
//! host        = label "." preview-domain ["."] [":" server-port]
//! label       = port "-" session-id
//! port        = 1*5DIGIT             no leading zero; 1024-65535; not the control plane's port
//! session-id  = [a-z0-9] *([a-z0-9-]) [a-z0-9]    a DNS label (the whole label ≤ 63 chars)
//! server-port = 1*5DIGIT             any; the port the browser used to reach us
//! ```
//!
//! A host that is not under `preview-domain` (the main origin, an IP address) is no preview:
//! [`parse_host`] returns `Ok(None)`. A host under it that does not follow the grammar is an
//! error, so the preview name space never falls through to the API.
//!
//! Path grammar of the fallback on the main origin (for hosts without wildcard DNS):
//!
//! ```text
//! path = "/preview/" session-id "/" port [ "/" rest ]
//! ```

/// One port of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub session: String,
    pub port: u16,
}

/// Why a preview host or path was refused (a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("malformed preview address {0:?}: expected <port>-<session>.<preview domain> or /preview/<session>/<port>/")]
    Malformed(String),
    #[error("port {0:?} is out of range: previews serve ports 1024-65535")]
    OutOfRange(String),
    #[error("port {0} is privileged (below 1024): previews serve ports 1024-65535")]
    Privileged(u16),
    #[error("port {0} is the control plane's own port")]
    ControlPlane(u16),
}

/// The fallback path prefix on the main origin.
pub const PATH_PREFIX: &str = "/preview/";

/// Parses a `Host` header value; `Ok(None)` when it is not under `domain`.
/// `control_port` (the server's own port) is refused as a preview port.
pub fn parse_host(host: &str, domain: &str, control_port: u16) -> Result<Option<Target>, HostError> {
    let lower = host.trim().to_ascii_lowercase();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let malformed = || HostError::Malformed(host.to_string());
    if lower.starts_with('[') {
        return Ok(None); // an IPv6 literal
    }
    let name = match lower.rsplit_once(':') {
        Some((name, port)) => {
            if name.contains(':') || port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                // Not a server port: garbage under our domain, or someone else's host.
                let ours = name.ends_with(&domain) || name.contains(&format!("{domain}:")) || name.contains(&format!("{domain}.:"));
                return if ours { Err(malformed()) } else { Ok(None) };
            }
            name
        }
        None => lower.as_str(),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name == domain {
        return Ok(None);
    }
    let Some(label) = name.strip_suffix(domain.as_str()).and_then(|l| l.strip_suffix('.')) else {
        return Ok(None);
    };
    let (port, session) = label.split_once('-').ok_or_else(malformed)?;
    if label.len() > 63 || label.contains('.') || !is_session_id(session) {
        return Err(malformed());
    }
    let port = check_port(port, control_port).map_err(|e| match e {
        HostError::Malformed(_) => malformed(),
        other => other,
    })?;
    Ok(Some(Target { session: session.to_string(), port }))
}

/// Parses a fallback path: `Some((target, rest))` for `/preview/<session>/<port>[/rest]`, where
/// `rest` is the path to forward (empty when the trailing slash is missing); `None` when the
/// path is not under [`PATH_PREFIX`].
pub fn parse_path(path: &str, control_port: u16) -> Option<Result<(Target, &str), HostError>> {
    let tail = path.strip_prefix(PATH_PREFIX)?;
    let malformed = || HostError::Malformed(path.to_string());
    let parsed = (|| {
        let (session, tail) = tail.split_once('/').ok_or_else(malformed)?;
        let (port, rest) = match tail.find('/') {
            Some(i) => (&tail[..i], &tail[i..]),
            None => (tail, ""),
        };
        if !is_session_id(session) || session.len() > 56 {
            return Err(malformed());
        }
        let port = check_port(port, control_port).map_err(|e| match e {
            HostError::Malformed(_) => malformed(),
            other => other,
        })?;
        Ok((Target { session: session.to_string(), port }, rest))
    })();
    Some(parsed)
}

/// A decimal port a preview may serve.
pub fn check_port(raw: &str, control_port: u16) -> Result<u16, HostError> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::Malformed(raw.to_string()));
    }
    if raw.starts_with('0') || raw.len() > 5 {
        return Err(HostError::OutOfRange(raw.to_string()));
    }
    let port: u32 = raw.parse().map_err(|_| HostError::OutOfRange(raw.to_string()))?;
    let port = u16::try_from(port).map_err(|_| HostError::OutOfRange(raw.to_string()))?;
    if port < 1024 {
        return Err(HostError::Privileged(port));
    }
    if port == control_port {
        return Err(HostError::ControlPlane(port));
    }
    Ok(port)
}

/// A lowercase DNS label: letters, digits and inner hyphens.
fn is_session_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    type HostCase<'a> = (&'a str, &'a str, Result<Option<Target>, HostError>);
    type PathCase<'a> = (&'a str, Option<Result<(Target, &'a str), HostError>>);

    fn t(session: &str, port: u16) -> Result<Option<Target>, HostError> {
        Ok(Some(Target { session: session.into(), port }))
    }

    #[test]
    fn hosts() {
        let m = |h: &str| Err(HostError::Malformed(h.into()));
        let cases: Vec<HostCase> = vec![
            // (host, preview domain, result); the control plane listens on 7070.
            ("8000-sabc.localhost:7070", "localhost", t("sabc", 8000)),
            ("8000-sabc.localhost", "localhost", t("sabc", 8000)),
            ("8000-SABC.LocalHost:7070", "localhost", t("sabc", 8000)),
            ("8000-sabc.localhost.:7070", "localhost", t("sabc", 8000)),
            ("3000-s-1.preview.example.com", "preview.example.com", t("s-1", 3000)),
            ("65535-x.localhost", "localhost", t("x", 65535)),
            ("1024-x.localhost", "localhost", t("x", 1024)),
            // Not previews: the main origin, IPs, other domains.
            ("localhost:7070", "localhost", Ok(None)),
            ("localhost", "localhost", Ok(None)),
            ("127.0.0.1:7070", "localhost", Ok(None)),
            ("[::1]:7070", "localhost", Ok(None)),
            ("8000-sabc.example.com", "localhost", Ok(None)),
            ("8000-sabcnotlocalhost", "localhost", Ok(None)),
            ("", "localhost", Ok(None)),
            // Under the preview domain but malformed.
            ("sabc.localhost", "localhost", m("sabc.localhost")),
            ("8000.localhost", "localhost", m("8000.localhost")),
            ("8000-.localhost", "localhost", m("8000-.localhost")),
            ("-sabc.localhost", "localhost", m("-sabc.localhost")),
            ("8000-sabc-.localhost", "localhost", m("8000-sabc-.localhost")),
            ("8000-s_bc.localhost", "localhost", m("8000-s_bc.localhost")),
            ("a.8000-sabc.localhost", "localhost", m("a.8000-sabc.localhost")),
            ("80a0-sabc.localhost", "localhost", m("80a0-sabc.localhost")),
            ("8000-sabc.localhost:", "localhost", m("8000-sabc.localhost:")),
            ("8000-sabc.localhost:70x", "localhost", m("8000-sabc.localhost:70x")),
            ("8000-sabc.localhost:7070:1", "localhost", m("8000-sabc.localhost:7070:1")),
            ("8000-sa bc.localhost", "localhost", m("8000-sa bc.localhost")),
            // Ports.
            ("0-sabc.localhost", "localhost", Err(HostError::OutOfRange("0".into()))),
            ("08000-sabc.localhost", "localhost", Err(HostError::OutOfRange("08000".into()))),
            ("65536-sabc.localhost", "localhost", Err(HostError::OutOfRange("65536".into()))),
            ("999999-sabc.localhost", "localhost", Err(HostError::OutOfRange("999999".into()))),
            ("80-sabc.localhost", "localhost", Err(HostError::Privileged(80))),
            ("1023-sabc.localhost", "localhost", Err(HostError::Privileged(1023))),
            ("7070-sabc.localhost:7070", "localhost", Err(HostError::ControlPlane(7070))),
        ];
        for (host, domain, want) in cases {
            assert_eq!(parse_host(host, domain, 7070), want, "{host:?} under {domain:?}");
        }
        let long = format!("8000-{}.localhost", "a".repeat(59));
        assert!(matches!(parse_host(&long, "localhost", 7070), Err(HostError::Malformed(_))));
    }

    #[test]
    fn paths() {
        let ok = |s: &str, p: u16, rest: &'static str| Some(Ok((Target { session: s.into(), port: p }, rest)));
        let m = |p: &str| Some(Err(HostError::Malformed(p.into())));
        let cases: Vec<PathCase> = vec![
            ("/preview/sabc/8000/", ok("sabc", 8000, "/")),
            ("/preview/sabc/8000/a/b.js", ok("sabc", 8000, "/a/b.js")),
            ("/preview/sabc/8000", ok("sabc", 8000, "")),
            ("/api/v1/sessions", None),
            ("/previewx/sabc/8000/", None),
            ("/preview/", m("/preview/")),
            ("/preview/sabc", m("/preview/sabc")),
            ("/preview/sabc/", m("/preview/sabc/")),
            ("/preview/SABC/8000/", m("/preview/SABC/8000/")),
            ("/preview/sabc/http/", m("/preview/sabc/http/")),
            ("/preview/sabc/80/", Some(Err(HostError::Privileged(80)))),
            ("/preview/sabc/70000/", Some(Err(HostError::OutOfRange("70000".into())))),
            ("/preview/sabc/7070/", Some(Err(HostError::ControlPlane(7070)))),
        ];
        for (path, want) in cases {
            assert_eq!(parse_path(path, 7070), want, "{path:?}");
        }
    }
}
