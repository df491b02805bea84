//! envd's `process.Process` service over the guest's exec and terminal streams: Start (server
//! stream of start / data / end events, keepalives while quiet), Connect (attach to a running
//! process by pid or tag), List, SendInput, StreamInput, SendSignal, CloseStdin, Update (PTY
//! resize). The door keeps each running process's guest stream in a [`Registry`], so a process
//! outlives the request that started it (a background command) until it exits, is killed or its
//! sandbox ends.

use crate::auth::Peer;
use crate::connect::{self, Incoming, Item};
use crate::error::{connect_error, ApiError};
use crate::Shared;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use mayfly_proto::msg::{Ctrl, ExecRequest, PtyRequest};
use mayfly_proto::mux::{Event, StreamReceiver, StreamSender};
use mayfly_server::access::Action;
use mayfly_server::manager::Activity;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc, watch};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, Deserialize, Default, Clone)]
pub struct ProcessConfig {
    #[serde(default)]
    cmd: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    envs: BTreeMap<String, String>,
    #[serde(default)]
    cwd: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct Size {
    #[serde(default)]
    cols: u16,
    #[serde(default)]
    rows: u16,
}

#[derive(Debug, Deserialize, Default)]
struct Pty {
    #[serde(default)]
    size: Option<Size>,
}

#[derive(Debug, Deserialize, Default)]
struct StartRequest {
    #[serde(default)]
    process: Option<ProcessConfig>,
    #[serde(default)]
    pty: Option<Pty>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    stdin: Option<bool>,
}

#[derive(Debug, Deserialize, Default, Clone)]
struct Selector {
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default)]
    tag: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct Input {
    #[serde(default)]
    stdin: Option<String>,
    #[serde(default)]
    pty: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct Selected {
    #[serde(default)]
    process: Option<Selector>,
    #[serde(default)]
    input: Option<Input>,
    #[serde(default)]
    signal: Option<Value>,
    #[serde(default)]
    pty: Option<Pty>,
}

#[derive(Debug, Deserialize, Default)]
struct StreamInputRequest {
    #[serde(default)]
    start: Option<Selected>,
    #[serde(default)]
    data: Option<Selected>,
}

/// One running process.
pub struct Proc {
    session: String,
    pid: u32,
    tag: Option<String>,
    config: ProcessConfig,
    pty: bool,
    input: StreamSender,
    events: broadcast::Sender<Value>,
    /// The end event once it came.
    ended: watch::Sender<Option<Value>>,
    _attached: Activity,
}

impl Proc {
    fn info(&self) -> Value {
        let mut v = json!({
            "pid": self.pid,
            "config": { "cmd": self.config.cmd, "args": self.config.args, "envs": self.config.envs },
        });
        if let Some(cwd) = &self.config.cwd {
            v["config"]["cwd"] = json!(cwd);
        }
        if let Some(t) = &self.tag {
            v["tag"] = json!(t);
        }
        v
    }
}

/// The door's running processes, by sandbox and pid.
#[derive(Default)]
pub struct Registry {
    procs: Mutex<HashMap<(String, u32), Arc<Proc>>>,
}

impl Registry {
    fn insert(&self, p: Arc<Proc>) {
        self.procs.lock().expect("procs lock").insert((p.session.clone(), p.pid), p);
    }

    fn remove(&self, session: &str, pid: u32) {
        self.procs.lock().expect("procs lock").remove(&(session.to_string(), pid));
    }

    fn find(&self, session: &str, sel: &Selector) -> Result<Arc<Proc>, ApiError> {
        let procs = self.procs.lock().expect("procs lock");
        let found = match (sel.pid, &sel.tag) {
            (Some(pid), _) => procs.get(&(session.to_string(), pid)).cloned(),
            (None, Some(tag)) => procs.values().find(|p| p.session == session && p.tag.as_deref() == Some(tag)).cloned(),
            (None, None) => return Err(ApiError::bad_request("a process selector needs a pid or a tag")),
        };
        found.ok_or_else(|| ApiError::not_found(format!("process {} not found", sel.pid.map(|p| p.to_string()).or(sel.tag.clone()).unwrap_or_default())))
    }

    fn of(&self, session: &str) -> Vec<Arc<Proc>> {
        let mut v: Vec<_> = self.procs.lock().expect("procs lock").values().filter(|p| p.session == session).cloned().collect();
        v.sort_by_key(|p| p.pid);
        v
    }

    /// Forgets a sandbox's processes (it is being deleted: the VM takes them along).
    pub fn end_session(&self, session: &str) {
        let gone: Vec<Arc<Proc>> = {
            let mut procs = self.procs.lock().expect("procs lock");
            let keys: Vec<_> = procs.keys().filter(|(s, _)| s == session).cloned().collect();
            keys.iter().filter_map(|k| procs.remove(k)).collect()
        };
        for p in gone {
            p.input.reset("the sandbox was killed");
            let _ = p.ended.send(Some(end_event(None, None, Some("the sandbox was killed".into()))));
        }
    }

    /// Forgets every process (the door stops).
    pub fn end_all(&self) {
        let all: Vec<Arc<Proc>> = self.procs.lock().expect("procs lock").drain().map(|(_, p)| p).collect();
        for p in all {
            p.input.reset("the server is stopping");
        }
    }
}

fn end_event(code: Option<i32>, signal: Option<i32>, error: Option<String>) -> Value {
    let status = match (code, signal) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("signal: {}", signal_name(s)),
        (None, None) => "unknown".to_string(),
    };
    let mut end = json!({ "exitCode": code.unwrap_or(-1), "exited": code.is_some(), "status": status });
    if let Some(e) = error {
        end["error"] = json!(e);
    }
    json!({ "event": { "end": end } })
}

fn signal_name(s: i32) -> &'static str {
    match s {
        9 => "killed",
        15 => "terminated",
        2 => "interrupt",
        1 => "hangup",
        _ => "signal",
    }
}

fn data_event(fd: u8, pty: bool, data: &[u8]) -> Value {
    let key = if pty { "pty" } else if fd == 1 { "stderr" } else { "stdout" };
    json!({ "event": { "data": { key: B64.encode(data) } } })
}

const KEEPALIVE: &str = r#"{"event":{"keepalive":{}}}"#;

fn keepalive() -> Value {
    serde_json::from_str(KEEPALIVE).expect("keepalive json")
}

/// Entry point: `POST /process.Process/{method}`.
pub async fn rpc(
    State(door): State<Shared>,
    peer: Peer,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match dispatch(&door, peer, &method, &headers, body).await {
        Ok(r) => r,
        Err(e) => connect_error(&e),
    }
}

async fn dispatch(door: &Shared, peer: Peer, method: &str, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    connect::check_codec(headers)?;
    let sref = crate::auth::open_sandbox(door, headers, peer, Action::Exec).await?;
    let id = sref.id().to_string();
    if method == "StreamInput" {
        return Ok(connect::client_stream_answer(stream_input(door, &id, Incoming::new(body)).await));
    }
    let bytes = axum::body::to_bytes(body, connect::MAX_MESSAGE).await.map_err(|e| ApiError::bad_request(format!("cannot read the request: {e}")))?;
    match method {
        "Start" => start(door, &sref, headers, connect::request(headers, &bytes)?).await,
        "Connect" => {
            let req: Selected = connect::request(headers, &bytes)?;
            let p = door.processes.find(&id, &req.process.unwrap_or_default())?;
            Ok(attach(&p, headers, Some(p.pid)))
        }
        "List" => {
            let procs: Vec<Value> = door.processes.of(&id).iter().map(|p| p.info()).collect();
            Ok(connect::unary(Ok(json!({ "processes": procs }))))
        }
        "SendInput" => {
            let req: Selected = connect::request(headers, &bytes)?;
            Ok(connect::unary(send_input(door, &id, &req).await.map(|()| json!({}))))
        }
        "SendSignal" => {
            let req: Selected = connect::request(headers, &bytes)?;
            let p = door.processes.find(&id, &req.process.unwrap_or_default())?;
            let signal = parse_signal(req.signal.as_ref())?;
            p.input.send_ctrl(&Ctrl::Signal { signal }).await.map_err(|e| ApiError::not_found(format!("process {} is gone: {e}", p.pid)))?;
            Ok(connect::unary(Ok(json!({}))))
        }
        "CloseStdin" => {
            let req: Selected = connect::request(headers, &bytes)?;
            let p = door.processes.find(&id, &req.process.unwrap_or_default())?;
            let _ = p.input.send_eof().await;
            Ok(connect::unary(Ok(json!({}))))
        }
        "Update" => {
            let req: Selected = connect::request(headers, &bytes)?;
            let p = door.processes.find(&id, &req.process.unwrap_or_default())?;
            if let Some(size) = req.pty.and_then(|p| p.size) {
                if !p.pty {
                    return Err(ApiError::bad_request(format!("process {} has no terminal", p.pid)));
                }
                p.input.send_ctrl(&Ctrl::Resize { cols: size.cols.max(1), rows: size.rows.max(1) }).await.map_err(|e| ApiError::not_found(format!("process {} is gone: {e}", p.pid)))?;
            }
            Ok(connect::unary(Ok(json!({}))))
        }
        other => Err(ApiError::new(StatusCode::NOT_FOUND, format!("process.Process has no method {other:?}"))),
    }
}

fn parse_signal(v: Option<&Value>) -> Result<i32, ApiError> {
    match v {
        Some(Value::String(s)) => match s.as_str() {
            "SIGNAL_SIGKILL" | "SIGKILL" => Ok(9),
            "SIGNAL_SIGTERM" | "SIGTERM" => Ok(15),
            "SIGNAL_SIGINT" | "SIGINT" => Ok(2),
            "SIGNAL_SIGHUP" | "SIGHUP" => Ok(1),
            other => Err(ApiError::bad_request(format!("unknown signal {other:?}"))),
        },
        Some(Value::Number(n)) => match n.as_i64() {
            Some(9) => Ok(9),
            Some(15) => Ok(15),
            Some(2) => Ok(2),
            Some(1) => Ok(1),
            _ => Err(ApiError::bad_request(format!("unknown signal {n}"))),
        },
        _ => Err(ApiError::bad_request("a signal is required")),
    }
}

async fn send_input(door: &Shared, id: &str, req: &Selected) -> Result<(), ApiError> {
    let p = door.processes.find(id, &req.process.clone().unwrap_or_default())?;
    let input = req.input.as_ref().ok_or_else(|| ApiError::bad_request("input is required"))?;
    let data = input.stdin.as_ref().or(input.pty.as_ref()).ok_or_else(|| ApiError::bad_request("input needs stdin or pty"))?;
    let bytes = B64.decode(data).map_err(|e| ApiError::bad_request(format!("input is not base64: {e}")))?;
    p.input.send_data(0, &bytes).await.map_err(|e| ApiError::not_found(format!("process {} is gone: {e}", p.pid)))
}

async fn stream_input(door: &Shared, id: &str, mut incoming: Incoming) -> Result<Value, ApiError> {
    let mut selector: Option<Selector> = None;
    while let Some(msg) = incoming.next::<StreamInputRequest>().await? {
        if let Some(start) = msg.start {
            selector = start.process;
        } else if let Some(data) = msg.data {
            let sel = selector.clone().ok_or_else(|| ApiError::bad_request("StreamInput must start with a start event"))?;
            send_input(door, id, &Selected { process: Some(sel), input: data.input, ..Default::default() }).await?;
        }
    }
    Ok(json!({}))
}

async fn start(door: &Shared, sref: &mayfly_server::access::SessionRef, headers: &HeaderMap, req: StartRequest) -> Result<Response, ApiError> {
    let config = req.process.ok_or_else(|| ApiError::bad_request("process is required"))?;
    if config.cmd.is_empty() {
        return Err(ApiError::bad_request("process.cmd is required"));
    }
    let mut cmd = vec![config.cmd.clone()];
    cmd.extend(config.args.iter().cloned());
    let cwd = config.cwd.clone().filter(|c| !c.is_empty());
    let pty = req.pty.map(|p| p.size.map_or((80, 24), |s| (s.cols.max(1), s.rows.max(1))));
    let env = config.envs.clone();
    let started = match pty {
        None => door.app.manager.open_exec(sref, ExecRequest { cmd, env, cwd, timeout_ms: None }).await?,
        Some((cols, rows)) => {
            let req = PtyRequest { terminal: None, cols, rows, cmd: Some(cmd), env, cwd };
            door.app.manager.open_terminal(sref, req).await?
        }
    };
    let pid = started.pid;
    let (input, output) = started.stream.split();
    if pty.is_none() && !req.stdin.unwrap_or(false) {
        let _ = input.send_eof().await;
    }
    let (events, _) = broadcast::channel(1024);
    let proc_ = Arc::new(Proc {
        session: sref.id().to_string(),
        pid,
        tag: req.tag,
        config,
        pty: pty.is_some(),
        input,
        events,
        ended: watch::channel(None).0,
        _attached: started.activity,
    });
    let response = attach(&proc_, headers, Some(pid));
    door.processes.insert(proc_.clone());
    tokio::spawn(pump(door.clone(), proc_, output));
    Ok(response)
}

/// Forwards a process's guest events to its subscribers until it ends.
async fn pump(door: Shared, p: Arc<Proc>, mut output: StreamReceiver) {
    let end = loop {
        match output.recv().await {
            Event::Data { fd, data } => {
                let _ = p.events.send(data_event(fd, p.pty, &data));
            }
            Event::Ctrl(Ctrl::Exit { code, signal, .. }) => break end_event(code, signal, None),
            Event::Ctrl(Ctrl::Error { message, .. }) => break end_event(None, None, Some(message)),
            Event::Ctrl(_) | Event::Eof => continue,
            Event::Reset(r) => break end_event(None, None, Some(format!("the sandbox connection ended: {r}"))),
        }
    };
    door.processes.remove(&p.session, p.pid);
    let _ = p.ended.send(Some(end));
}

/// A server stream of `p`'s events from now on (with its start event first, for Start and Connect).
fn attach(p: &Arc<Proc>, headers: &HeaderMap, start_pid: Option<u32>) -> Response {
    let (tx, rx) = mpsc::channel(64);
    let mut events = p.events.subscribe();
    let mut ended = p.ended.subscribe();
    tokio::spawn(async move {
        if let Some(pid) = start_pid {
            if tx.send(Item::Msg(json!({ "event": { "start": { "pid": pid } } }))).await.is_err() {
                return;
            }
        }
        loop {
            tokio::select! {
                biased;
                ev = events.recv() => match ev {
                    Ok(v) => if tx.send(Item::Msg(v)).await.is_err() { return },
                    Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!("e2b: a process stream skipped {n} events"),
                    Err(broadcast::error::RecvError::Closed) => {
                        // The process is over and forgotten: its end is in `ended`.
                        let end = ended.borrow().clone();
                        if let Some(end) = end {
                            let _ = tx.send(Item::Msg(end)).await;
                        }
                        break;
                    }
                },
                end = async { ended.wait_for(|e| e.is_some()).await.ok().and_then(|r| (*r).clone()) } => {
                    // Output sent before the end is still queued: drain it first.
                    while let Ok(v) = events.try_recv() {
                        if tx.send(Item::Msg(v)).await.is_err() { return }
                    }
                    if let Some(end) = end {
                        let _ = tx.send(Item::Msg(end)).await;
                    }
                    break;
                }
            }
        }
        let _ = tx.send(Item::End(None)).await;
    });
    connect::server_stream(rx, keepalive(), connect::keepalive_interval(headers))
}
