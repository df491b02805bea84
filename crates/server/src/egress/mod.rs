//! Host side of a session's network: the VM has no network device, so every outbound
//! connection arrives here as an `egress` stream from the guest's proxy, and is decided here.
//!
//! Per connection ([`Egress::connect`]):
//! 1. `none` refuses everything.
//! 2. The host name is normalised, then resolved on the host (the guest never resolves).
//! 3. Each resolved address must be allowed by the session's mode (`open`: any; `allowlist`:
//!    a rule naming the host or containing the address, with a matching port) **and** must not
//!    be the host itself, loopback, private or otherwise non-public ([`addrs::forbidden`]),
//!    unless the operator lists it in `egress_private_allow`. The control plane's own port on
//!    this host is refused even then.
//! 4. The connection goes to the address that was checked (no second resolution: DNS
//!    rebinding cannot swap it), then bytes are relayed.
//!
//! Refusals name the policy and the reason; the guest's proxy returns them as `403`.

pub mod addrs;
pub mod rules;

use crate::manager::Activity;
use crate::preview::tunnel::pipe;
use mayfly_proto::api::{EgressMode, Network};
use mayfly_proto::msg::{Ctrl, ErrorKind};
use mayfly_proto::mux::Stream;
use rules::{normalize_name, Rule, RuleError};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;

const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A session's parsed policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub mode: EgressMode,
    pub allow: Vec<Rule>,
}

impl Policy {
    pub fn parse(n: &Network) -> Result<Policy, RuleError> {
        Ok(Policy { mode: n.egress, allow: rules::parse_all(&n.allow)? })
    }

    pub fn none() -> Policy {
        Policy { mode: EgressMode::None, allow: Vec::new() }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EgressError {
    /// The policy refuses the destination.
    #[error("{0}")]
    Denied(String),
    /// Allowed, but it could not be resolved or connected.
    #[error("{0}")]
    Failed(String),
}

/// Operator settings and counters shared by every session.
#[derive(Default)]
pub struct Egress {
    private_allow: Vec<Rule>,
    control_port: AtomicU16,
    pub allowed: AtomicU64,
    pub denied: AtomicU64,
}

impl Egress {
    pub fn new(private_allow: Vec<Rule>) -> Egress {
        Egress { private_allow, ..Default::default() }
    }

    /// The port the control plane listens on (refused as a destination on this host).
    pub fn set_control_port(&self, port: u16) {
        self.control_port.store(port, Ordering::Relaxed);
    }

    /// Decides and, if allowed, connects.
    pub async fn connect(&self, policy: &Policy, host: &str, port: u16) -> Result<TcpStream, EgressError> {
        let ok = self.decide(policy, host, port).await?;
        let mut last = None;
        for ip in ok {
            let addr = SocketAddr::new(ip, port);
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => return Ok(s),
                Ok(Err(e)) => last = Some(format!("cannot connect to {host}:{port} ({addr}): {e}")),
                Err(_) => last = Some(format!("cannot connect to {host}:{port} ({addr}): no answer within {CONNECT_TIMEOUT:?}")),
            }
        }
        Err(EgressError::Failed(last.unwrap_or_default()))
    }

    /// The addresses `host:port` may be reached at under `policy`, or why not.
    pub async fn decide(&self, policy: &Policy, host: &str, port: u16) -> Result<Vec<IpAddr>, EgressError> {
        let mode = policy.mode.as_str();
        let denied = |why: &str| EgressError::Denied(format!("egress to {host}:{port} denied by the session's `{mode}` policy: {why}"));
        if policy.mode == EgressMode::None {
            return Err(denied("this session has no network access"));
        }
        let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
        let name = match literal {
            Some(_) => None,
            None => Some(normalize_name(host).ok_or_else(|| denied("not a valid host name"))?),
        };
        let exempt_name = |n: &str| self.private_allow.iter().any(|r| r.matches_name(n, port));
        // RFC 6761: these always mean this host, whatever a resolver says.
        if let Some(n) = name.as_deref().filter(|n| *n == "localhost" || n.ends_with(".localhost")) {
            if !exempt_name(n) {
                return Err(denied("localhost names are this host, which sessions never reach"));
            }
        }
        let name_allowed = match (&name, policy.mode) {
            (_, EgressMode::Open) => true,
            (Some(n), _) => policy.allow.iter().any(|r| r.matches_name(n, port)),
            (None, _) => false,
        };
        if !name_allowed && name.is_some() && !policy.allow.iter().any(|r| r.is_network()) {
            return Err(denied("not in the allowlist"));
        }
        let addrs = match (literal, &name) {
            (Some(ip), _) => vec![ip],
            (None, Some(n)) => resolve(n, port).await?,
            (None, None) => unreachable!("a host is either an IP literal or a name"),
        };
        let host_addrs = addrs::host_addresses();
        let control = self.control_port.load(Ordering::Relaxed);
        let mut first_refusal = None;
        let mut ok = Vec::new();
        for ip in addrs {
            let refusal = if !name_allowed && !policy.allow.iter().any(|r| r.matches_ip(ip, port)) {
                Some("not in the allowlist".to_string())
            } else if port == control && addrs::is_this_host(ip, &host_addrs) {
                Some("that is the Mayfly control plane".to_string())
            } else if let Some(why) = addrs::forbidden(ip, &host_addrs) {
                let exempt = name.as_deref().is_some_and(exempt_name) || self.private_allow.iter().any(|r| r.matches_ip(ip, port));
                (!exempt).then(|| format!("{ip} is in {why}, which sessions never reach"))
            } else {
                None
            };
            match refusal {
                Some(r) => {
                    first_refusal.get_or_insert(r);
                }
                None => ok.push(ip),
            }
        }
        if ok.is_empty() {
            return Err(denied(first_refusal.as_deref().unwrap_or("no address")));
        }
        Ok(ok)
    }

    /// Decides one `egress` stream and relays it.
    pub async fn serve(&self, session: &str, policy: &Policy, host: &str, port: u16, stream: Stream) {
        match self.connect(policy, host, port).await {
            Ok(mut tcp) => {
                self.allowed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%session, %host, port, "egress connected");
                let _ = tcp.set_nodelay(true);
                if stream.send_ctrl(&Ctrl::Connected).await.is_err() {
                    return;
                }
                // Egress is the VM's own traffic, not user activity: it keeps no session alive.
                let mut io = pipe(stream, Activity::none());
                let _ = tokio::io::copy_bidirectional(&mut io, &mut tcp).await;
            }
            Err(EgressError::Denied(m)) => {
                self.denied.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%session, "{m}");
                crate::manager::answer(&stream, Ctrl::error(ErrorKind::PermissionDenied, m)).await;
            }
            Err(EgressError::Failed(m)) => {
                tracing::debug!(%session, "{m}");
                crate::manager::answer(&stream, Ctrl::error(ErrorKind::ConnectionRefused, m)).await;
            }
        }
    }
}

async fn resolve(name: &str, port: u16) -> Result<Vec<IpAddr>, EgressError> {
    let fail = |why: String| EgressError::Failed(format!("cannot resolve {name}: {why}"));
    let found = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port)))
        .await
        .map_err(|_| fail(format!("no answer within {RESOLVE_TIMEOUT:?}")))?
        .map_err(|e| fail(e.to_string()))?;
    let mut ips: Vec<IpAddr> = Vec::new();
    for a in found {
        if !ips.contains(&a.ip()) {
            ips.push(a.ip());
        }
    }
    if ips.is_empty() {
        return Err(fail("no addresses".into()));
    }
    Ok(ips)
}

#[cfg(test)]
mod tests;
