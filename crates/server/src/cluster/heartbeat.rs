//! The heartbeat task: renews this node's lease with its capacity every third of the lease,
//! marks the sessions of nodes whose lease ran out as lost, takes back this node's own sessions
//! after it was cut off, and releases the lease at a clean stop.

use super::node::{now_ms, Cluster, LeaseState};
use super::store::Renewal;
use crate::manager::SessionManager;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

impl Cluster {
    /// Runs until `stop`, then releases the lease (the other nodes then see this node stopped,
    /// not crashed).
    pub async fn run_heartbeat(self: Arc<Self>, manager: Arc<SessionManager>, stop: CancellationToken) {
        let every = self.lease() / 3;
        let mut mode = None;
        let mut failures = 0u32;
        // The lease as last renewed (database ms): a renewal that finds it run out means this node
        // was seen lost meanwhile, even if no renewal failed (a long stall).
        let mut lease_until = i64::MAX;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => break,
            }
            self.beat(&manager, &mut mode, &mut failures, &mut lease_until).await;
            self.sweep().await;
        }
        if let Err(e) = self.store().release_node(self.name(), self.incarnation()).await {
            tracing::warn!(node = %self.name(), error = %e, "cannot release the node's lease; the others see it lost when it runs out");
        }
    }

    async fn beat(&self, manager: &Arc<SessionManager>, mode: &mut Option<mayfly_proto::nodes::NodeMode>, failures: &mut u32, lease_until: &mut i64) {
        if self.lease_state() == LeaseState::Superseded {
            return;
        }
        let capacity = manager.node_capacity();
        match self.store().renew_node(self.name(), self.incarnation(), self.lease_ms(), now_ms(), &capacity).await {
            Ok(Renewal::Renewed { node_mode, db_now, lease_until: until }) => {
                if *failures > 0 {
                    tracing::info!(node = %self.name(), failed_renewals = *failures, "the database answers again; lease renewed");
                }
                *failures = 0;
                let ran_out = db_now >= *lease_until;
                if ran_out {
                    tracing::warn!(node = %self.name(), late_ms = db_now - *lease_until, "this node's lease had run out before it was renewed (a stall?)");
                }
                *lease_until = until;
                let before = self.set_lease_state(LeaseState::Holding);
                if before == LeaseState::Lapsing || ran_out {
                    match manager.reclaim_lost().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(node = %self.name(), sessions = n, "took back sessions marked lost while cut off"),
                        Err(e) => tracing::warn!(error = %e, "cannot take back lost sessions"),
                    }
                }
                if *mode != Some(node_mode) {
                    if mode.is_some() || node_mode != mayfly_proto::nodes::NodeMode::Active {
                        tracing::info!(node = %self.name(), mode = node_mode.as_str(), "node mode");
                    }
                    self.apply_mode(node_mode, manager);
                    *mode = Some(node_mode);
                }
            }
            Ok(Renewal::Superseded) => {
                self.set_lease_state(LeaseState::Superseded);
                tracing::error!(
                    node = %self.name(),
                    "another process holds this node's name now (this node's lease ran out and it was claimed): this node no longer takes part in the cluster; stop it or the other one"
                );
            }
            Err(e) => {
                *failures += 1;
                self.set_lease_state(LeaseState::Lapsing);
                // Every failure at first, then once a minute or so.
                if *failures <= 3 || failures.is_multiple_of(12) {
                    tracing::warn!(node = %self.name(), failures = *failures, error = %e, "cannot renew the node's lease; retrying");
                }
            }
        }
    }

    /// Marks the sessions of nodes whose lease ran out. Every node does it; the store's
    /// conditional updates make concurrent sweeps harmless.
    async fn sweep(&self) {
        match self.store().mark_lost().await {
            Ok(events) => {
                for ev in events {
                    tracing::warn!(session = %ev.session, to = ev.to.as_str(), reason = ev.reason.as_deref().unwrap_or(""), "session of a lost node");
                }
            }
            Err(e) => tracing::debug!(error = %e, "sweeping lost nodes failed"),
        }
    }
}
