//! What this node tells the registry at every heartbeat: its sessions against its limit, the
//! vCPUs and memory they were given against the host's, the images it can start (with their
//! recipe hashes, which must match across nodes) and its warm pool.

use super::SessionManager;
use mayfly_proto::nodes::{NodeCapacity, NodeImage};

impl SessionManager {
    pub fn node_capacity(&self) -> NodeCapacity {
        let (sessions, vcpus_used, memory_mib_used) = {
            let live = self.live.lock().expect("live lock");
            live.values().filter(|s| super::state::is_live(s.state())).fold((0u64, 0u64, 0u64), |(n, c, m), s| {
                let (vc, mem) = s.size.map_or((0, 0), |z| (u64::from(z.vcpus), u64::from(z.memory_mib)));
                (n + 1, c + vc, m + mem)
            })
        };
        let (host_memory_mib, memory_mib_free) = super::capacity::host_memory_mib().unwrap_or((0, 0));
        let images = self
            .images
            .list()
            .into_iter()
            .filter_map(|i| self.images.get(&i.name).ok().map(|b| NodeImage { name: i.name, recipe_hash: b.key }))
            .collect();
        NodeCapacity {
            sessions,
            max_sessions: self.cfg.max_sessions as u64,
            vcpus_used,
            host_cpus: std::thread::available_parallelism().map_or(0, |n| n.get() as u64),
            memory_mib_used,
            host_memory_mib,
            memory_mib_free,
            images,
            pool_ready: self.pool_status().iter().map(|p| p.ready as u64).sum(),
        }
    }

    /// A draining node keeps no warm VMs (the pool comes back at the next start).
    pub async fn drain_pool(&self) {
        self.provisioner.drain().await;
    }
}
