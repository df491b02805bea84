//! Choosing a node for a new session: among the live, active nodes that have the image, the one
//! with the most free session slots, then the most free memory, then by name (so that equal
//! nodes fill evenly and the choice is reproducible). Pure: the store calls it inside its
//! placement transaction with the counts it read there.

use super::store::NodeLoad;
use mayfly_proto::nodes::NodeMode;

/// The index of the chosen candidate, or why each one was passed over.
pub fn choose(candidates: &[NodeLoad], image: &str, db_now: i64) -> Result<usize, Vec<String>> {
    let mut why = Vec::new();
    let mut best: Option<(usize, (u64, u64))> = None;
    for (i, c) in candidates.iter().enumerate() {
        let n = &c.node;
        let refuse = if n.lease_until <= db_now || n.stopped {
            Some("its lease ran out".to_string())
        } else if n.mode != NodeMode::Active {
            Some(format!("it is {}", n.mode.as_str()))
        } else if !n.capacity.images.iter().any(|i| i.name == image) {
            Some(format!("it has no image {image:?}"))
        } else if c.live_sessions >= n.capacity.max_sessions {
            Some(format!("it is full ({} of {} sessions)", c.live_sessions, n.capacity.max_sessions))
        } else {
            None
        };
        if let Some(r) = refuse {
            why.push(format!("{}: {r}", n.name));
            continue;
        }
        let score = (n.capacity.max_sessions - c.live_sessions, n.capacity.memory_mib_free);
        // Ties keep the first, and the candidates come sorted by name.
        if best.is_none_or(|(_, b)| score > b) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i).ok_or(why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::store::NodeRecord;
    use mayfly_proto::nodes::{NodeCapacity, NodeImage};

    fn node(name: &str, max: u64, live: u64, free_mib: u64) -> NodeLoad {
        NodeLoad {
            node: NodeRecord {
                name: name.into(),
                lease_until: 2_000,
                capacity: NodeCapacity {
                    max_sessions: max,
                    memory_mib_free: free_mib,
                    images: vec![NodeImage { name: "dev".into(), recipe_hash: "h".into() }],
                    ..Default::default()
                },
                ..Default::default()
            },
            live_sessions: live,
        }
    }

    #[test]
    fn most_free_slots_then_memory_then_name() {
        let c = [node("a", 10, 5, 9000), node("b", 10, 2, 1000), node("c", 10, 2, 2000)];
        assert_eq!(choose(&c, "dev", 1_000), Ok(2));
        let c = [node("a", 10, 2, 1000), node("b", 10, 2, 1000)];
        assert_eq!(choose(&c, "dev", 1_000), Ok(0));
    }

    #[test]
    fn full_cordoned_expired_and_imageless_nodes_are_passed_over_with_reasons() {
        let mut cordoned = node("b", 10, 0, 1);
        cordoned.node.mode = NodeMode::Cordoned;
        let mut expired = node("c", 10, 0, 1);
        expired.node.lease_until = 999;
        let mut stopped = node("d", 10, 0, 1);
        stopped.node.stopped = true;
        let mut no_image = node("e", 10, 0, 1);
        no_image.node.capacity.images.clear();
        let c = [node("a", 3, 3, 1), cordoned, expired, stopped, no_image];
        let why = choose(&c, "dev", 1_000).unwrap_err();
        assert_eq!(
            why,
            [
                "a: it is full (3 of 3 sessions)",
                "b: it is cordoned",
                "c: its lease ran out",
                "d: its lease ran out",
                "e: it has no image \"dev\""
            ]
        );
        assert_eq!(choose(&[], "dev", 0), Err(vec![]));
    }
}
