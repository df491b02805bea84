//! PLACEHOLDER until wt-fwd merges.
pub struct NodeTarget {
    pub name: String,
    pub base_url: String,
}
pub struct Forwarder;
impl Forwarder {
    pub async fn forward(&self, _req: axum::extract::Request, _t: &NodeTarget, _ip: std::net::IpAddr) -> axum::response::Response {
        unimplemented!()
    }
}
