//! Per-session event streams: the stored state history first (so a subscriber that connects
//! after `created → ready` still sees it), the currently open ports, then live events until the
//! session reaches a final state (at shutdown, every session does).

use super::{Envelope, SessionError, SessionManager};
use mayfly_proto::api::SessionEvent;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

/// Events buffered per subscriber before the forwarder waits for it.
const SUBSCRIBER_BUFFER: usize = 64;
/// How long streams keep going after shutdown began.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

fn is_final(ev: &SessionEvent) -> bool {
    matches!(ev, SessionEvent::State { to, .. } if to.is_terminal())
}

impl SessionManager {
    /// The event stream of session `id`, each item with its store sequence number if any.
    pub async fn subscribe(&self, sref: &crate::access::SessionRef) -> Result<ReceiverStream<Envelope>, SessionError> {
        let id = sref.id();
        // Subscribe before reading history, so nothing falls between the two; events already in
        // the history are skipped by sequence number.
        let mut live = self.events.subscribe();
        let rec = self.record(id).await?;
        self.touch(id);
        let history = self.store.events(id).await?;
        let last_seq = history.last().map(|e| e.seq).unwrap_or(0);
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        let mut backlog: Vec<Envelope> = history
            .into_iter()
            .map(|e| Envelope {
                seq: Some(e.seq),
                event: SessionEvent::State {
                    session: e.session,
                    from: e.from,
                    to: e.to,
                    reason: e.reason,
                    at: super::rfc3339(e.at),
                },
            })
            .collect();
        backlog.extend(
            self.open_ports(id)
                .into_iter()
                .map(|port| Envelope { seq: None, event: SessionEvent::PortOpened { session: id.to_string(), port } }),
        );
        let finished = rec.state.is_terminal();
        let shutdown = self.shutdown.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            // At shutdown every session is destroyed, so streams end by themselves; the grace
            // bounds that for a session whose teardown goes wrong.
            let ended = async {
                shutdown.cancelled().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            };
            tokio::pin!(ended);
            for ev in backlog {
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            if finished {
                return;
            }
            loop {
                let ev = tokio::select! {
                    ev = live.recv() => ev,
                    _ = tx.closed() => return,
                    _ = &mut ended => return,
                };
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(session = %id, skipped = n, "event subscriber fell behind");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if ev.session() != id || ev.seq.is_some_and(|s| s <= last_seq) {
                    continue;
                }
                let last = is_final(&ev.event);
                if tx.send(ev).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}
