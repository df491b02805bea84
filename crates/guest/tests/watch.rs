//! `watch_files` against the real daemon binary: files created, modified, renamed and deleted
//! under a temp dir (including new subdirectories and the daemon's own atomic writes) arrive as
//! coalesced `file_events`.

mod common;
use common::*;
use mayfly_proto::msg::{Ctrl, ErrorKind, FileEvent, FileEventKind, OpenRequest};
use mayfly_proto::mux::{Event, Stream};
use std::path::Path;
use FileEventKind::*;

fn p(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

async fn watch(mux: &mayfly_proto::mux::Mux, dir: &Path) -> Stream {
    let mut s = open(mux, OpenRequest::WatchFiles { path: p(dir) }).await;
    assert_eq!(next(&mut s).await, Event::Ctrl(Ctrl::Ok), "watching");
    s
}

/// Collects events until every `(path, kind)` of `want` was seen; returns them all.
async fn until(s: &mut Stream, want: &[(String, FileEventKind)]) -> Vec<FileEvent> {
    let mut seen: Vec<FileEvent> = Vec::new();
    while !want.iter().all(|(path, kind)| seen.iter().any(|e| &e.path == path && e.kind == *kind)) {
        match next(s).await {
            Event::Ctrl(Ctrl::FileEvents { events }) => {
                assert!(!events.is_empty(), "no empty batches");
                seen.extend(events);
            }
            other => panic!("{other:?}; seen so far {seen:?}"),
        }
    }
    seen
}

#[tokio::test]
async fn reports_changes_in_the_tree() {
    let g = Guest::start();
    let mux = g.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("old")).unwrap();
    let mut s = watch(&mux, d).await;

    // A file written from a shell: one batch (created then modified coalesce to created).
    std::fs::write(d.join("a.txt"), "hello").unwrap();
    let seen = until(&mut s, &[(p(&d.join("a.txt")), Created)]).await;
    assert_eq!(seen.len(), 1, "{seen:?}");

    // A nested tree made at once: the new directories are watched, their entries reported.
    std::fs::create_dir_all(d.join("x/y/z")).unwrap();
    std::fs::write(d.join("x/y/z/deep.rs"), "fn main() {}").unwrap();
    until(&mut s, &[(p(&d.join("x")), Created), (p(&d.join("x/y/z/deep.rs")), Created)]).await;
    std::fs::write(d.join("x/y/z/deep.rs"), "fn main() { }").unwrap();
    until(&mut s, &[(p(&d.join("x/y/z/deep.rs")), Modified)]).await;

    // Renames carry the old path; a renamed directory's watches follow it.
    std::fs::rename(d.join("x"), d.join("moved")).unwrap();
    let seen = until(&mut s, &[(p(&d.join("moved")), Renamed)]).await;
    let r = seen.iter().find(|e| e.kind == Renamed).unwrap();
    assert_eq!(r.from.as_deref(), Some(p(&d.join("x")).as_str()));
    std::fs::write(d.join("moved/y/z/deep.rs"), "changed").unwrap();
    until(&mut s, &[(p(&d.join("moved/y/z/deep.rs")), Modified)]).await;

    // The daemon's own atomic write shows as a modification, never its temp file.
    let mut w = open(&mux, OpenRequest::WriteFile { path: p(&d.join("a.txt")), mode: None }).await;
    w.send_data(0, b"saved").await.unwrap();
    w.send_eof().await.unwrap();
    assert_eq!(collect(&mut w).await.ctrls, vec![Ctrl::Ok]);
    let seen = until(&mut s, &[(p(&d.join("a.txt")), Modified)]).await;
    assert!(seen.iter().all(|e| !e.path.contains(".mayfly-write-")), "{seen:?}");

    // Deletions, and a move out of the tree reads as a deletion.
    std::fs::remove_file(d.join("a.txt")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::rename(d.join("old"), outside.path().join("old")).unwrap();
    until(&mut s, &[(p(&d.join("a.txt")), Deleted), (p(&d.join("old")), Deleted)]).await;

    // Skipped directories: their creation is reported, their contents are not watched.
    std::fs::create_dir(d.join("node_modules")).unwrap();
    until(&mut s, &[(p(&d.join("node_modules")), Created)]).await;
    std::fs::write(d.join("node_modules/pkg.json"), "{}").unwrap();
    std::fs::write(d.join("marker"), "").unwrap();
    let seen = until(&mut s, &[(p(&d.join("marker")), Created)]).await;
    assert!(seen.iter().all(|e| !e.path.contains("pkg.json")), "{seen:?}");
}

#[tokio::test]
async fn many_changes_are_all_accounted_for() {
    let g = Guest::start();
    let mux = g.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = watch(&mux, dir.path()).await;
    let n = 2000;
    for i in 0..n {
        std::fs::write(dir.path().join(format!("f{i}")), "").unwrap();
    }
    // How the creations fall into batches depends on the writer's speed: a batch of more than
    // MAX_BATCH paths collapses to "rescan the root" (unit-tested in watch_batch), smaller ones
    // are itemised. Either way the host must learn of every file, and of nothing else.
    let root = p(dir.path());
    let mut created = std::collections::HashSet::new();
    let mut rescans = 0;
    while rescans == 0 && created.len() < n {
        match next(&mut s).await {
            Event::Ctrl(Ctrl::FileEvents { events }) => {
                for e in events {
                    if e.path == root && e.kind == Modified {
                        rescans += 1;
                    } else {
                        // A file whose creation and close fall in different batches shows
                        // as Created, then Modified: both name a file the writer made.
                        assert!(matches!(e.kind, Created | Modified), "{e:?}");
                        assert!(e.path.starts_with(&format!("{root}/f")), "{e:?}");
                        created.insert(e.path);
                    }
                }
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn root_problems_end_the_stream() {
    let g = Guest::start();
    let mux = g.connect().await;
    let r = call(&mux, OpenRequest::WatchFiles { path: "/nonexistent/dir".into() }).await;
    assert!(matches!(r.last(), Ctrl::Error { kind: ErrorKind::NotFound, .. }), "{r:?}");
    let r = call(&mux, OpenRequest::WatchFiles { path: "relative".into() }).await;
    assert!(matches!(r.last(), Ctrl::Error { kind: ErrorKind::InvalidInput, .. }), "{r:?}");

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ws");
    std::fs::create_dir(&root).unwrap();
    let mut s = watch(&mux, &root).await;
    std::fs::remove_dir(&root).unwrap();
    until(&mut s, &[(p(&root), Deleted)]).await;
    assert_eq!(next(&mut s).await, Event::Eof);
}
