//! Coalescing file events of one `watch_files` batch: one entry per path, in the order of their
//! last change, split into CTRL messages that fit a frame.
//!
//! Merge rules for a path that changes twice in a batch (earlier, later → sent):
//!
//! | earlier | later | sent |
//! |---|---|---|
//! | created | modified | created |
//! | created | deleted | nothing (a temp file came and went) |
//! | deleted | created | modified |
//! | renamed (from F) | modified | renamed (from F) |
//! | renamed (from F) | deleted | deleted, and F deleted |
//! | any | other | the later one |
//!
//! More than [`MAX_BATCH`] paths, or an inotify overflow, is sent as one `modified` event on
//! the root: "too much changed to tell, rescan".

use mayfly_proto::frame::MAX_PAYLOAD;
use mayfly_proto::msg::{FileEvent, FileEventKind};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Paths per batch beyond which the batch collapses to "rescan".
pub const MAX_BATCH: usize = 500;
/// JSON budget of one CTRL `file_events` message, leaving room for the envelope.
const MESSAGE_BYTES: usize = MAX_PAYLOAD - 1024;

#[derive(Default)]
pub struct Batch {
    events: Vec<Option<(PathBuf, FileEventKind, Option<PathBuf>)>>,
    index: HashMap<PathBuf, usize>,
    overflowed: bool,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        !self.overflowed && self.index.is_empty()
    }

    /// Too much changed (kernel queue overflow): the batch becomes "rescan".
    pub fn overflow(&mut self) {
        self.overflowed = true;
    }

    pub fn push(&mut self, path: PathBuf, kind: FileEventKind, from: Option<PathBuf>) {
        use FileEventKind::*;
        if self.overflowed {
            return;
        }
        if let Some(&i) = self.index.get(&path) {
            let (_, old, old_from) = self.events[i].take().expect("indexed events are present");
            self.index.remove(&path);
            match (old, kind) {
                (Created, Modified) => self.insert(path, Created, None),
                (Created, Deleted) => {}
                (Deleted, Created) => self.insert(path, Modified, None),
                (Renamed, Modified) => self.insert(path, Renamed, old_from),
                (Renamed, Deleted) => {
                    if let Some(f) = old_from {
                        self.push(f, Deleted, None);
                    }
                    self.insert(path, Deleted, None);
                }
                _ => self.insert(path, kind, from),
            }
            return;
        }
        self.insert(path, kind, from);
    }

    fn insert(&mut self, path: PathBuf, kind: FileEventKind, from: Option<PathBuf>) {
        if self.index.len() >= MAX_BATCH {
            self.overflowed = true;
            return;
        }
        self.index.insert(path.clone(), self.events.len());
        self.events.push(Some((path, kind, from)));
    }

    /// The batch as CTRL `file_events` payloads, each under the frame limit.
    pub fn into_messages(self, root: &Path) -> Vec<Vec<FileEvent>> {
        let text = |p: &Path| p.to_string_lossy().into_owned();
        if self.overflowed {
            return vec![vec![FileEvent { path: text(root), kind: FileEventKind::Modified, from: None }]];
        }
        let mut out = Vec::new();
        let mut cur = Vec::new();
        let mut size = 0;
        for (path, kind, from) in self.events.into_iter().flatten() {
            let ev = FileEvent { path: text(&path), kind, from: from.as_deref().map(text) };
            let n = serde_json::to_vec(&ev).map(|v| v.len() + 1).unwrap_or(MESSAGE_BYTES);
            if size + n > MESSAGE_BYTES && !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
                size = 0;
            }
            size += n;
            cur.push(ev);
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FileEventKind::*;

    type Sent = (String, FileEventKind, Option<String>);
    type Pushed<'a> = (&'a str, FileEventKind, Option<&'a str>);

    fn sent(b: Batch) -> Vec<Sent> {
        b.into_messages(Path::new("/w")).into_iter().flatten().map(|e| (e.path, e.kind, e.from)).collect()
    }

    fn ev(p: &str, k: FileEventKind, from: Option<&str>) -> Sent {
        (p.into(), k, from.map(String::from))
    }

    #[test]
    fn merges_per_path() {
        let cases: Vec<(Vec<Pushed>, Vec<Sent>)> = vec![
            (vec![("/w/a", Created, None), ("/w/a", Modified, None)], vec![ev("/w/a", Created, None)]),
            (vec![("/w/a", Created, None), ("/w/a", Deleted, None)], vec![]),
            (vec![("/w/a", Deleted, None), ("/w/a", Created, None)], vec![ev("/w/a", Modified, None)]),
            (vec![("/w/a", Modified, None), ("/w/a", Modified, None)], vec![ev("/w/a", Modified, None)]),
            (vec![("/w/b", Renamed, Some("/w/a")), ("/w/b", Modified, None)], vec![ev("/w/b", Renamed, Some("/w/a"))]),
            (
                vec![("/w/b", Renamed, Some("/w/a")), ("/w/b", Deleted, None)],
                vec![ev("/w/a", Deleted, None), ev("/w/b", Deleted, None)],
            ),
            (
                vec![("/w/a", Modified, None), ("/w/b", Created, None), ("/w/a", Deleted, None)],
                vec![ev("/w/b", Created, None), ev("/w/a", Deleted, None)],
            ),
        ];
        for (input, want) in cases {
            let mut b = Batch::default();
            for (p, k, f) in &input {
                b.push(PathBuf::from(p), *k, f.map(PathBuf::from));
            }
            assert_eq!(sent(b), want, "{input:?}");
        }
    }

    #[test]
    fn too_many_paths_become_a_rescan() {
        let mut b = Batch::default();
        for i in 0..MAX_BATCH + 1 {
            b.push(PathBuf::from(format!("/w/f{i}")), Created, None);
        }
        assert_eq!(sent(b), vec![ev("/w", Modified, None)]);
        let mut b = Batch::default();
        b.push("/w/x".into(), Created, None);
        b.overflow();
        assert!(!b.is_empty());
        assert_eq!(sent(b), vec![ev("/w", Modified, None)]);
    }

    #[test]
    fn messages_fit_a_frame() {
        let mut b = Batch::default();
        let long = "x".repeat(3000);
        for i in 0..MAX_BATCH {
            b.push(PathBuf::from(format!("/w/{long}{i}")), Modified, None);
        }
        let msgs = b.into_messages(Path::new("/w"));
        assert!(msgs.len() > 1);
        assert_eq!(msgs.iter().map(Vec::len).sum::<usize>(), MAX_BATCH);
        for m in msgs {
            let json = serde_json::to_vec(&mayfly_proto::msg::Ctrl::FileEvents { events: m }).unwrap();
            assert!(json.len() <= MAX_PAYLOAD, "{}", json.len());
        }
    }
}
