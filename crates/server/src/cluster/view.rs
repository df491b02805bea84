//! A node row as the API shows it.

use super::store::NodeRecord;
use mayfly_proto::nodes::Node;

fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(crate::manager::rfc3339)
        .unwrap_or_default()
}

/// `db_now`: the database's clock when the row was read.
pub fn node(n: &NodeRecord, db_now: i64) -> Node {
    Node {
        name: n.name.clone(),
        address: n.address.clone(),
        mode: n.mode,
        live: n.lease_until > db_now && !n.stopped,
        stopped: n.stopped,
        started_at: rfc3339_ms(n.started_at),
        heartbeat_at: rfc3339_ms(n.heartbeat_at),
        lease_until: rfc3339_ms(n.lease_until),
        clock_skew_ms: n.clock_skew_ms,
        version: n.version.clone(),
        capacity: n.capacity.clone(),
    }
}
