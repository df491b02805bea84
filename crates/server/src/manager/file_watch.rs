//! Live file changes of ready sessions, for the IDE's file tree and its conflict warnings.
//!
//! One task per ready session holds a `watch_files` stream on the workspace ([`WORKSPACE`]);
//! each guest batch becomes `file_changed` events on the session's event stream. A batch larger
//! than [`MAX_EVENTS_PER_BATCH`] is sent as one `modified` event on the workspace ("rescan"),
//! so a burst (`npm install`, `git checkout`) never floods the shared event channel. File
//! events are live only: they are not stored or replayed to late subscribers.

use super::{Envelope, LiveSession, SessionManager};
use mayfly_proto::api::{FileChangeKind, SessionEvent};
use mayfly_proto::msg::{Ctrl, FileEvent, FileEventKind, OpenRequest};
use mayfly_proto::mux::Event;
use mayfly_vm::Vm;
use std::sync::Arc;
use std::time::Duration;

/// The directory the IDE shows and the watcher follows.
pub const WORKSPACE: &str = "/root";
/// Events of one guest batch beyond which a single "rescan" event is sent instead.
pub const MAX_EVENTS_PER_BATCH: usize = 64;
/// Pause before re-opening a watch that ended (guest daemon restart, channel reconnect).
const REWATCH_DELAY: Duration = Duration::from_secs(1);

fn change_kind(k: FileEventKind) -> FileChangeKind {
    match k {
        FileEventKind::Created => FileChangeKind::Created,
        FileEventKind::Modified => FileChangeKind::Modified,
        FileEventKind::Deleted => FileChangeKind::Deleted,
        FileEventKind::Renamed => FileChangeKind::Renamed,
    }
}

/// The session events for one guest batch.
pub fn file_changes(session: &str, events: Vec<FileEvent>) -> Vec<SessionEvent> {
    if events.len() > MAX_EVENTS_PER_BATCH {
        let rescan = FileEvent { path: WORKSPACE.into(), kind: FileEventKind::Modified, from: None };
        return file_changes(session, vec![rescan]);
    }
    events
        .into_iter()
        .map(|e| SessionEvent::FileChanged { session: session.to_string(), path: e.path, kind: change_kind(e.kind), from: e.from })
        .collect()
}

impl SessionManager {
    pub(super) async fn watch_files(self: Arc<Self>, s: Arc<LiveSession>, vm: Arc<dyn Vm>) {
        let req = OpenRequest::WatchFiles { path: WORKSPACE.into() };
        loop {
            let opened = tokio::select! {
                r = vm.channel().open(&req) => r,
                _ = s.cancel.cancelled() => return,
            };
            match opened {
                Err(e) => tracing::debug!(session = %s.id, "cannot watch files: {e}"),
                Ok(mut stream) => loop {
                    let ev = tokio::select! {
                        ev = stream.recv() => ev,
                        _ = s.cancel.cancelled() => return,
                    };
                    match ev {
                        Event::Ctrl(Ctrl::FileEvents { events }) => {
                            for event in file_changes(&s.id, events) {
                                // No receivers is fine: nobody is watching.
                                let _ = self.events.send(Envelope { seq: None, event });
                            }
                        }
                        Event::Ctrl(Ctrl::Error { message, .. }) => {
                            tracing::warn!(session = %s.id, "guest refused to watch {WORKSPACE}: {message}");
                            break;
                        }
                        Event::Eof | Event::Reset(_) => break,
                        Event::Ctrl(_) | Event::Data { .. } => {}
                    }
                },
            }
            tokio::select! {
                _ = tokio::time::sleep(REWATCH_DELAY) => {}
                _ = s.cancel.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_become_events() {
        let ev = |p: &str, kind, from: Option<&str>| FileEvent { path: p.into(), kind, from: from.map(String::from) };
        let got = file_changes("sx", vec![ev("/root/b", FileEventKind::Renamed, Some("/root/a"))]);
        let json = serde_json::to_string(&got[0]).unwrap();
        assert_eq!(json, r#"{"type":"file_changed","session":"sx","path":"/root/b","kind":"renamed","from":"/root/a"}"#);
        let many: Vec<_> = (0..=MAX_EVENTS_PER_BATCH).map(|i| ev(&format!("/root/{i}"), FileEventKind::Created, None)).collect();
        let got = file_changes("sx", many);
        assert_eq!(
            got,
            vec![SessionEvent::FileChanged { session: "sx".into(), path: WORKSPACE.into(), kind: FileChangeKind::Modified, from: None }]
        );
    }
}
