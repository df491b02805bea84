//! envd's `filesystem.Filesystem` service over the manager's file operations: Stat, ListDir
//! (with depth), MakeDir, Move, Remove, WatchDir (server stream) and the polling watcher
//! (CreateWatcher, GetWatcherEvents, RemoveWatcher) over the guest's inotify watcher.

use crate::auth::Peer;
use crate::connect::{self, Item};
use crate::error::{connect_error, ApiError};
use crate::Shared;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mayfly_proto::msg::{Ctrl, FileEvent, FileEventKind, FileInfo, FileType};
use mayfly_proto::mux::Event;
use mayfly_server::access::{Action, SessionRef};
use mayfly_server::manager::SessionError;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Entries a recursive ListDir returns at most.
const MAX_ENTRIES: usize = 10_000;
/// Events a polling watcher holds between two polls at most (older ones are dropped).
const MAX_PENDING: usize = 10_000;
/// Polling watchers one sandbox may hold.
const MAX_WATCHERS: usize = 64;

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Req {
    #[serde(default)]
    path: String,
    #[serde(default)]
    depth: Option<u32>,
    #[serde(default)]
    source: String,
    #[serde(default)]
    destination: String,
    #[serde(default)]
    recursive: Option<bool>,
    #[serde(default, alias = "watcher_id")]
    watcher_id: String,
}

/// Polling watchers, by id.
#[derive(Default)]
pub struct Watchers {
    map: Mutex<HashMap<String, Watcher>>,
}

struct Watcher {
    session: String,
    events: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watchers {
    /// Ends a sandbox's watchers.
    pub fn end_session(&self, session: &str) {
        self.map.lock().expect("watchers lock").retain(|_, w| {
            let keep = w.session != session;
            if !keep {
                w.task.abort();
            }
            keep
        });
    }
}

fn file_type(k: FileType) -> &'static str {
    match k {
        FileType::File => "FILE_TYPE_FILE",
        FileType::Dir => "FILE_TYPE_DIRECTORY",
        FileType::Symlink => "FILE_TYPE_SYMLINK",
        FileType::Other => "FILE_TYPE_UNSPECIFIED",
    }
}

fn permissions(kind: FileType, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        FileType::Dir => 'd',
        FileType::Symlink => 'l',
        _ => '-',
    });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn entry(f: &FileInfo) -> Value {
    let modified = time::OffsetDateTime::from_unix_timestamp(f.modified).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    json!({
        "name": f.name,
        "type": file_type(f.kind),
        "path": f.path,
        "size": f.size.to_string(),
        "mode": f.mode & 0o7777,
        "permissions": permissions(f.kind, f.mode),
        "owner": "root",
        "group": "root",
        "modifiedTime": mayfly_server::manager::rfc3339(modified),
    })
}

fn path_arg(p: &str) -> Result<String, ApiError> {
    if p.is_empty() {
        return Err(ApiError::bad_request("path is required"));
    }
    // envd resolves relative paths against the user's home.
    Ok(if p.starts_with('/') { p.to_string() } else { format!("/root/{p}") })
}

fn not_found_is(e: SessionError, path: &str) -> ApiError {
    match &e {
        SessionError::Guest { kind: mayfly_proto::msg::ErrorKind::NotFound, .. } => ApiError::not_found(format!("path not found: {path}")),
        _ => ApiError::from(e),
    }
}

/// Entry point: `POST /filesystem.Filesystem/{method}`.
pub async fn rpc(State(door): State<Shared>, peer: Peer, Path(method): Path<String>, headers: HeaderMap, body: Body) -> Response {
    match dispatch(&door, peer, &method, &headers, body).await {
        Ok(r) => r,
        Err(e) => connect_error(&e),
    }
}

async fn dispatch(door: &Shared, peer: Peer, method: &str, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    connect::check_codec(headers)?;
    let sref = crate::auth::open_sandbox(door, headers, peer, Action::Files).await?;
    let id = sref.id().to_string();
    let bytes = axum::body::to_bytes(body, connect::MAX_MESSAGE).await.map_err(|e| ApiError::bad_request(format!("cannot read the request: {e}")))?;
    let req: Req = connect::request(headers, &bytes)?;
    let m = &door.app.manager;
    let answer = match method {
        "Stat" => {
            let path = path_arg(&req.path)?;
            let f = m.stat_path(&sref, &path).await.map_err(|e| not_found_is(e, &path))?;
            json!({ "entry": entry(&f) })
        }
        "ListDir" => {
            let path = path_arg(&req.path)?;
            json!({ "entries": list(door, &sref, &path, req.depth.unwrap_or(1).max(1)).await? })
        }
        "MakeDir" => {
            let path = path_arg(&req.path)?;
            if m.stat_path(&sref, &path).await.is_ok() {
                return Err(ApiError::new(StatusCode::CONFLICT, format!("directory {path} already exists")));
            }
            m.make_dir(&sref, &path).await?;
            json!({ "entry": entry(&m.stat_path(&sref, &path).await?) })
        }
        "Move" => {
            let (from, to) = (path_arg(&req.source)?, path_arg(&req.destination)?);
            m.rename_path(&sref, &from, &to).await.map_err(|e| not_found_is(e, &from))?;
            json!({ "entry": entry(&m.stat_path(&sref, &to).await?) })
        }
        "Remove" => {
            let path = path_arg(&req.path)?;
            m.stat_path(&sref, &path).await.map_err(|e| not_found_is(e, &path))?;
            m.remove_path(&sref, &path).await?;
            json!({})
        }
        "WatchDir" => return watch_dir(door, &sref, headers, &req).await,
        "CreateWatcher" => create_watcher(door, &sref, &req).await?,
        "GetWatcherEvents" => {
            let map = door.watchers.map.lock().expect("watchers lock");
            let w = map.get(&req.watcher_id).filter(|w| w.session == id).ok_or_else(|| ApiError::not_found(format!("watcher {} not found", req.watcher_id)))?;
            let events = std::mem::take(&mut *w.events.lock().expect("events lock"));
            json!({ "events": events })
        }
        "RemoveWatcher" => {
            let mut map = door.watchers.map.lock().expect("watchers lock");
            match map.get(&req.watcher_id) {
                Some(w) if w.session == id => {
                    if let Some(w) = map.remove(&req.watcher_id) {
                        w.task.abort();
                    }
                }
                _ => return Err(ApiError::not_found(format!("watcher {} not found", req.watcher_id))),
            }
            json!({})
        }
        other => return Err(ApiError::new(StatusCode::NOT_FOUND, format!("filesystem.Filesystem has no method {other:?}"))),
    };
    Ok(connect::unary(Ok(answer)))
}

async fn list(door: &Shared, sref: &SessionRef, path: &str, depth: u32) -> Result<Vec<Value>, ApiError> {
    let m = &door.app.manager;
    let root = m.stat_path(sref, path).await.map_err(|e| not_found_is(e, path))?;
    if root.kind != FileType::Dir {
        return Err(ApiError::bad_request(format!("path is not a directory: {path}")));
    }
    let mut out = Vec::new();
    let mut level = vec![path.to_string()];
    for _ in 0..depth {
        let mut next = Vec::new();
        for dir in level {
            let mut entries = m.list_dir(sref, &dir).await?;
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            for e in entries {
                if out.len() >= MAX_ENTRIES {
                    return Err(ApiError::bad_request(format!("more than {MAX_ENTRIES} entries; list with a smaller depth")));
                }
                if e.kind == FileType::Dir {
                    next.push(e.path.clone());
                }
                out.push(entry(&e));
            }
        }
        level = next;
    }
    Ok(out)
}

fn event_type(k: FileEventKind) -> &'static str {
    match k {
        FileEventKind::Created => "EVENT_TYPE_CREATE",
        FileEventKind::Modified => "EVENT_TYPE_WRITE",
        FileEventKind::Deleted => "EVENT_TYPE_REMOVE",
        FileEventKind::Renamed => "EVENT_TYPE_RENAME",
    }
}

/// E2B's events for one guest event: names relative to the watched directory; a non-recursive
/// watch sees direct children only. A rename is the old name's removal and the new name's creation.
fn events_of(root: &str, recursive: bool, ev: &FileEvent) -> Vec<Value> {
    let rel = |p: &str| -> Option<String> {
        let r = p.strip_prefix(root)?.trim_start_matches('/').to_string();
        (!r.is_empty() && (recursive || !r.contains('/'))).then_some(r)
    };
    let mut out = Vec::new();
    if ev.kind == FileEventKind::Renamed {
        if let Some(from) = ev.from.as_deref().and_then(rel) {
            out.push(json!({ "name": from, "type": "EVENT_TYPE_RENAME" }));
        }
        if let Some(to) = rel(&ev.path) {
            out.push(json!({ "name": to, "type": "EVENT_TYPE_CREATE" }));
        }
    } else if let Some(name) = rel(&ev.path) {
        out.push(json!({ "name": name, "type": event_type(ev.kind) }));
        if ev.kind == FileEventKind::Created {
            // A new file's content arrives as a write in envd's view.
            out.push(json!({ "name": name, "type": "EVENT_TYPE_WRITE" }));
        }
    }
    out
}

/// Opens the guest watch on `path` and waits for it to start.
async fn open_watch(door: &Shared, sref: &SessionRef, path: &str) -> Result<mayfly_proto::mux::Stream, ApiError> {
    let mut stream = door.app.manager.watch_path(sref, path).await?;
    match stream.recv().await {
        Event::Ctrl(Ctrl::Ok) => Ok(stream),
        Event::Ctrl(Ctrl::Error { kind: mayfly_proto::msg::ErrorKind::NotFound, .. }) => Err(ApiError::not_found(format!("path not found: {path}"))),
        Event::Ctrl(Ctrl::Error { message, .. }) => Err(ApiError::bad_request(message)),
        other => Err(ApiError::new(StatusCode::BAD_GATEWAY, format!("the watch did not start: {other:?}"))),
    }
}

async fn watch_dir(door: &Shared, sref: &SessionRef, headers: &HeaderMap, req: &Req) -> Result<Response, ApiError> {
    let path = path_arg(&req.path)?;
    let recursive = req.recursive.unwrap_or(false);
    let mut stream = open_watch(door, sref, &path).await?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        if tx.send(Item::Msg(json!({ "start": {} }))).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                () = tx.closed() => return,
                ev = stream.recv() => match ev {
                    Event::Ctrl(Ctrl::FileEvents { events }) => {
                        for e in events.iter().flat_map(|e| events_of(&path, recursive, e)) {
                            if tx.send(Item::Msg(json!({ "filesystem": e }))).await.is_err() {
                                return;
                            }
                        }
                    }
                    Event::Ctrl(_) | Event::Data { .. } => {}
                    Event::Eof => break,
                    Event::Reset(r) => {
                        let _ = tx.send(Item::End(Some(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("the watch ended: {r}"))))).await;
                        return;
                    }
                },
            }
        }
        let _ = tx.send(Item::End(None)).await;
    });
    Ok(connect::server_stream(rx, json!({ "keepalive": {} }), connect::keepalive_interval(headers)))
}

async fn create_watcher(door: &Shared, sref: &SessionRef, req: &Req) -> Result<Value, ApiError> {
    let path = path_arg(&req.path)?;
    let recursive = req.recursive.unwrap_or(false);
    {
        let map = door.watchers.map.lock().expect("watchers lock");
        if map.values().filter(|w| w.session == sref.id()).count() >= MAX_WATCHERS {
            return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, format!("a sandbox holds {MAX_WATCHERS} watchers at most")));
        }
    }
    let mut stream = open_watch(door, sref, &path).await?;
    let events: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = events.clone();
    let task = tokio::spawn(async move {
        loop {
            match stream.recv().await {
                Event::Ctrl(Ctrl::FileEvents { events }) => {
                    let mut pending = sink.lock().expect("events lock");
                    pending.extend(events.iter().flat_map(|e| events_of(&path, recursive, e)));
                    let over = pending.len().saturating_sub(MAX_PENDING);
                    pending.drain(..over);
                }
                Event::Ctrl(_) | Event::Data { .. } => {}
                Event::Eof | Event::Reset(_) => return,
            }
        }
    });
    let watcher_id = mayfly_server::manager::new_session_id();
    door.watchers.map.lock().expect("watchers lock").insert(watcher_id.clone(), Watcher { session: sref.id().to_string(), events, task });
    Ok(json!({ "watcherId": watcher_id }))
}
