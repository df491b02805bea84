//! PLACEHOLDER until wt-fwd merges.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub from: String,
    pub client_ip: std::net::IpAddr,
}
