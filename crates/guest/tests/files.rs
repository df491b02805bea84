//! File ops against the real daemon binary.

mod common;
use common::*;
use mayfly_proto::msg::{Ctrl, ErrorKind, FileType, OpenRequest};
use mayfly_proto::mux::{Event, Mux};
use sha2::{Digest, Sha256};
use std::path::Path;

const BIG: usize = 50 * 1024 * 1024 + 12345;

/// Deterministic, incompressible-looking bytes.
fn pattern(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

fn p(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

async fn ok(mux: &Mux, req: OpenRequest) {
    let r = call(mux, req).await;
    assert_eq!(r.last(), &Ctrl::Ok);
}

#[tokio::test]
async fn fifty_mib_round_trip() {
    let g = Guest::start();
    let mux = g.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("new/sub/big.bin");

    let mut s = open(&mux, OpenRequest::WriteFile { path: p(&target), mode: Some(0o600) }).await;
    let mut sent = Sha256::new();
    let mut off = 0;
    while off < BIG {
        let chunk = pattern(off, (BIG - off).min(1 << 20));
        sent.update(&chunk);
        s.send_data(0, &chunk).await.unwrap();
        off += chunk.len();
    }
    s.send_eof().await.unwrap();
    let r = collect(&mut s).await;
    assert_eq!(r.ctrls, vec![Ctrl::Ok]);
    let sent = sent.finalize();
    assert_eq!(Sha256::digest(std::fs::read(&target).unwrap()), sent);

    let mut s = open(&mux, OpenRequest::ReadFile { path: p(&target) }).await;
    assert_eq!(next(&mut s).await, Event::Ctrl(Ctrl::File { size: BIG as u64, mode: 0o600 }));
    let mut got = Sha256::new();
    let mut n = 0;
    loop {
        match next(&mut s).await {
            Event::Data { fd: 0, data } => {
                assert!(data.len() <= 64 * 1024);
                n += data.len();
                got.update(&data);
            }
            Event::Eof => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(n, BIG);
    assert_eq!(got.finalize(), sent);
    let leftovers: Vec<_> = std::fs::read_dir(target.parent().unwrap()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temp files left behind");
}

#[tokio::test]
async fn stat_list_mkdir_rename_remove() {
    let g = Guest::start();
    let mux = g.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&mux, OpenRequest::Mkdir { path: p(&d.join("zdir/inner")) }).await;
    ok(&mux, OpenRequest::Mkdir { path: p(&d.join("adir")) }).await;
    std::fs::write(d.join("b.txt"), "hello").unwrap();
    std::os::unix::fs::symlink("/", d.join("a-link")).unwrap();

    let r = call(&mux, OpenRequest::List { path: p(d) }).await;
    let entries: Vec<_> = r
        .ctrls
        .iter()
        .flat_map(|c| match c {
            Ctrl::List { entries } => entries.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    let names: Vec<_> = entries.iter().map(|e| (e.name.as_str(), e.kind)).collect();
    assert_eq!(
        names,
        [("adir", FileType::Dir), ("zdir", FileType::Dir), ("a-link", FileType::Symlink), ("b.txt", FileType::File)]
    );
    assert_eq!(entries[3].path, p(&d.join("b.txt")));
    assert_eq!(entries[3].size, 5);

    let r = call(&mux, OpenRequest::Stat { path: p(&d.join("b.txt")) }).await;
    match r.last() {
        Ctrl::Stat(info) => {
            assert_eq!((info.name.as_str(), info.kind, info.size), ("b.txt", FileType::File, 5));
            assert!(info.modified > 1_600_000_000);
            assert_eq!(
                info.mode,
                std::fs::metadata(d.join("b.txt"))
                    .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
                    .unwrap()
            );
        }
        other => panic!("{other:?}"),
    }

    ok(&mux, OpenRequest::Rename { from: p(&d.join("b.txt")), to: p(&d.join("adir/c.txt")) }).await;
    assert_eq!(std::fs::read_to_string(d.join("adir/c.txt")).unwrap(), "hello");

    let r = call(&mux, OpenRequest::Remove { path: p(&d.join("zdir")), recursive: false }).await;
    assert!(matches!(r.last(), Ctrl::Error { .. }), "non-empty dir needs recursive");
    ok(&mux, OpenRequest::Remove { path: p(&d.join("zdir")), recursive: true }).await;
    ok(&mux, OpenRequest::Remove { path: p(&d.join("a-link")), recursive: false }).await;
    assert!(Path::new("/").exists(), "removing a link leaves its target");
    ok(&mux, OpenRequest::Remove { path: p(&d.join("adir/c.txt")), recursive: false }).await;
    assert_eq!(std::fs::read_dir(d).unwrap().count(), 1);

    let r = call(&mux, OpenRequest::Stat { path: p(&d.join("gone")) }).await;
    assert!(matches!(r.last(), Ctrl::Error { kind: ErrorKind::NotFound, message } if message.contains("gone")));
}

#[tokio::test]
async fn bad_paths_are_rejected() {
    let g = Guest::start();
    let mux = g.connect().await;
    let dir = tempfile::tempdir().unwrap();
    for req in [
        OpenRequest::Stat { path: "etc/passwd".into() },
        OpenRequest::List { path: "".into() },
        OpenRequest::ReadFile { path: "./x".into() },
        OpenRequest::WriteFile { path: "x".into(), mode: None },
        OpenRequest::Mkdir { path: "a/b".into() },
        OpenRequest::Rename { from: p(dir.path()), to: "rel".into() },
        OpenRequest::Remove { path: "rel".into(), recursive: true },
    ] {
        let r = call(&mux, req.clone()).await;
        assert!(matches!(r.last(), Ctrl::Error { kind: ErrorKind::InvalidInput, .. }), "{req:?}: {:?}", r.ctrls);
    }
    let r = call(&mux, OpenRequest::ReadFile { path: p(dir.path()) }).await;
    assert!(matches!(r.last(), Ctrl::Error { kind: ErrorKind::IsADirectory, .. }), "{:?}", r.ctrls);
    let r = call(&mux, OpenRequest::WriteFile { path: p(dir.path()), mode: None }).await;
    assert!(matches!(r.last(), Ctrl::Error { kind: ErrorKind::IsADirectory, .. }), "{:?}", r.ctrls);
}

#[tokio::test]
async fn write_keeps_mode_follows_links_and_cleans_up_on_reset() {
    let g = Guest::start();
    let mux = g.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("run.sh");
    std::fs::write(&script, "old").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o751)).unwrap();
    let link = dir.path().join("link.sh");
    std::os::unix::fs::symlink(&script, &link).unwrap();

    let mut s = open(&mux, OpenRequest::WriteFile { path: p(&link), mode: None }).await;
    s.send_data(0, b"new").await.unwrap();
    s.send_eof().await.unwrap();
    assert_eq!(collect(&mut s).await.ctrls, vec![Ctrl::Ok]);
    assert_eq!(std::fs::read_to_string(&script).unwrap(), "new");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link survives");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&script).unwrap().permissions());
    assert_eq!(mode & 0o7777, 0o751);

    // Reset half way: the target is untouched and no temp file remains.
    let s = open(&mux, OpenRequest::WriteFile { path: p(&script), mode: None }).await;
    s.send_data(0, &vec![b'x'; 300_000]).await.unwrap();
    drop(s);
    // A later op on the same connection proves the guest processed the reset.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let _ = call(&mux, OpenRequest::Stat { path: p(&script) }).await;
    assert_eq!(std::fs::read_to_string(&script).unwrap(), "new");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[tokio::test]
async fn large_directory_is_listed_in_several_messages() {
    let g = Guest::start();
    let mux = g.connect().await;
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3000 {
        std::fs::write(dir.path().join(format!("file-with-a-longish-name-{i:05}.txt")), "").unwrap();
    }
    let r = call(&mux, OpenRequest::List { path: p(dir.path()) }).await;
    assert!(r.ctrls.len() > 1);
    let n: usize = r.ctrls.iter().map(|c| if let Ctrl::List { entries } = c { entries.len() } else { 0 }).sum();
    assert_eq!(n, 3000);
    assert!(!mux.is_closed());
}
