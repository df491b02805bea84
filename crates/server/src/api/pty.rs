//! `GET /api/v1/sessions/{id}/pty?cols=80&rows=24&terminal=<id>` (WebSocket): a terminal.
//!
//! Binary frames carry terminal bytes both ways. Text frames from the client are JSON
//! [`PtyControl`] (resize); a text frame that does not parse is answered with a
//! [`PtyNotice::Error`] text frame and otherwise ignored, so the terminal keeps working. The
//! server sends [`PtyNotice::Exit`] when the terminal's process ends, then closes. The same
//! `terminal` id re-attaches to a running terminal, whose scrollback the guest replays.

use super::{ApiPath, ApiQuery, ApiWs, AppState, Routes};
use crate::access::Action;
use crate::accounts::Caller;
use crate::error::ApiError;
use crate::manager::{Activity, PtyAttach, PtyParams};
use axum::extract::ws::{Message, WebSocket};
use axum::extract::State;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use mayfly_proto::api::{PtyControl, PtyNotice};
use mayfly_proto::msg::Ctrl;
use mayfly_proto::mux::{Event, StreamSender};
use serde::Deserialize;

pub fn routes() -> Routes {
    Routes::new().get("/api/v1/sessions/{id}/pty", pty)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PtyQuery {
    cols: Option<u16>,
    rows: Option<u16>,
    terminal: Option<String>,
}

const MAX_DIMENSION: u16 = 1000;

fn dimension(name: &str, v: Option<u16>, default: u16) -> Result<u16, String> {
    match v.unwrap_or(default) {
        n @ 1..=MAX_DIMENSION => Ok(n),
        n => Err(format!("{name} must be 1-{MAX_DIMENSION}, got {n}")),
    }
}

/// Terminal ids are chosen by clients: 1-64 of `A-Za-z0-9._-`.
fn terminal_id(t: Option<String>) -> Result<Option<String>, String> {
    match t {
        None => Ok(None),
        Some(t)
            if !t.is_empty()
                && t.len() <= 64
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) =>
        {
            Ok(Some(t))
        }
        Some(t) => Err(format!("invalid terminal id {t:?}: use 1-64 of A-Z a-z 0-9 . _ -")),
    }
}

fn params(q: PtyQuery) -> Result<PtyParams, String> {
    Ok(PtyParams {
        cols: dimension("cols", q.cols, 80)?,
        rows: dimension("rows", q.rows, 24)?,
        terminal: terminal_id(q.terminal)?,
    })
}

async fn pty(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PtyQuery>,
    ApiWs(ws): ApiWs,
) -> Result<Response, ApiError> {
    let s = st.manager.open(&caller, &id, Action::Terminal).await?;
    let p = params(q).map_err(ApiError::bad_request)?;
    let attach = st.manager.open_pty(&s, p).await?;
    Ok(ws.on_upgrade(move |socket| pump(socket, attach, id)))
}

fn notice(n: &PtyNotice) -> Message {
    Message::Text(serde_json::to_string(n).expect("notice serialises").into())
}

/// Handles one client text frame; returns the notice to send back, if any.
async fn control(text: &str, tx: &StreamSender, session: &str) -> Option<PtyNotice> {
    match serde_json::from_str::<PtyControl>(text) {
        Ok(PtyControl::Resize { cols, rows }) => {
            let (Ok(cols), Ok(rows)) = (dimension("cols", Some(cols), 80), dimension("rows", Some(rows), 24)) else {
                return Some(PtyNotice::Error { message: format!("ignored resize to {cols}x{rows}") });
            };
            tx.send_ctrl(&Ctrl::Resize { cols, rows }).await.err().map(|e| PtyNotice::Error { message: e.to_string() })
        }
        Err(e) => {
            tracing::warn!(session, "ignoring a bad PTY control frame: {e}");
            Some(PtyNotice::Error { message: format!("ignored control frame: {e}") })
        }
    }
}

/// Copies bytes between the WebSocket and the guest terminal until either side ends.
async fn pump(socket: WebSocket, attach: PtyAttach, session: String) {
    let PtyAttach { stream, first, activity } = attach;
    let (mut ws_tx, mut ws_rx) = socket.split();
    let (guest_tx, mut guest_rx) = stream.split();
    let mut pending = first;
    loop {
        let ev = match pending.take() {
            Some(ev) => Some(ev),
            None => tokio::select! {
                ev = guest_rx.recv() => Some(ev),
                msg = ws_rx.next() => {
                    match msg {
                        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                        Some(Ok(Message::Binary(data))) => {
                            activity.touch();
                            if guest_tx.send_data(0, &data).await.is_err() {
                                break;
                            }
                        }
                        Some(Ok(Message::Text(text))) => {
                            if let Some(n) = control(&text, &guest_tx, &session).await {
                                if ws_tx.send(notice(&n)).await.is_err() {
                                    break;
                                }
                            }
                        }
                        Some(Ok(_)) => {} // ping/pong: answered by the WebSocket layer
                    }
                    None
                }
            },
        };
        let Some(ev) = ev else { continue };
        if !forward(ev, &mut ws_tx, &activity).await {
            break;
        }
    }
    let _ = ws_tx.send(Message::Close(None)).await;
    tracing::debug!(session, "terminal WebSocket closed");
}

/// Sends one guest event to the client; false once the terminal is over.
async fn forward(ev: Event, ws_tx: &mut futures::stream::SplitSink<WebSocket, Message>, activity: &Activity) -> bool {
    match ev {
        Event::Data { data, .. } => {
            activity.touch();
            ws_tx.send(Message::Binary(data)).await.is_ok()
        }
        Event::Ctrl(Ctrl::Exit { code, signal, .. }) => {
            let _ = ws_tx.send(notice(&PtyNotice::Exit { code, signal })).await;
            true // EOF follows
        }
        Event::Ctrl(Ctrl::Error { message, .. }) => {
            let _ = ws_tx.send(notice(&PtyNotice::Error { message })).await;
            false
        }
        Event::Ctrl(_) => true,
        Event::Eof => false,
        Event::Reset(reason) => {
            let _ = ws_tx.send(notice(&PtyNotice::Error { message: format!("terminal stream ended: {reason}") })).await;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        let q = |cols, rows, t: Option<&str>| PtyQuery { cols, rows, terminal: t.map(str::to_string) };
        assert_eq!(params(q(None, None, None)).unwrap(), PtyParams { cols: 80, rows: 24, terminal: None });
        assert_eq!(params(q(Some(120), Some(40), Some("main-1"))).unwrap().terminal.as_deref(), Some("main-1"));
        for bad in [q(Some(0), None, None), q(None, Some(5000), None), q(None, None, Some("a/b")), q(None, None, Some(""))] {
            assert!(params(bad).is_err());
        }
    }
}
