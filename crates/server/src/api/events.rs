//! `GET /api/v1/sessions/{id}/events`: the session's [`SessionEvent`]s, as a WebSocket (one JSON
//! text frame per event) when the request asks for an upgrade, else as Server-Sent Events (one
//! `data:` JSON line per event; state changes carry their sequence number as `id:`).
//!
//! The stream starts with the stored state history and the open ports, then follows live
//! events, and ends after the session reaches `destroyed` or `failed`.

use super::{ApiPath, ApiWs, AppState, Routes};
use crate::access::Action;
use crate::accounts::Caller;
use crate::error::ApiError;
use crate::manager::Envelope;
use axum::extract::ws::{Message, WebSocket};
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use std::convert::Infallible;
use tokio_stream::wrappers::ReceiverStream;

pub fn routes() -> Routes {
    Routes::new().get("/api/v1/sessions/{id}/events", events)
}

async fn events(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ws: Option<ApiWs>,
) -> Result<Response, ApiError> {
    let s = st.manager.open(&caller, &id, Action::Events).await?;
    let stream = st.manager.subscribe(&s).await?;
    // A watcher (an open IDE page) keeps the session from pausing while it is connected.
    let attached = st.manager.attach(&id);
    Ok(match ws {
        Some(ApiWs(ws)) => ws
            .on_upgrade(move |socket| async move {
                let _attached = attached;
                send_all(socket, stream).await
            })
            .into_response(),
        None => {
            let sse = stream.map(move |env| {
                let _ = &attached;
                let mut ev = Event::default().data(serde_json::to_string(&env.event).expect("event serialises"));
                if let Some(seq) = env.seq {
                    ev = ev.id(seq.to_string());
                }
                Ok::<_, Infallible>(ev)
            });
            Sse::new(sse).keep_alive(KeepAlive::default()).into_response()
        }
    })
}

async fn send_all(socket: WebSocket, mut events: ReceiverStream<Envelope>) {
    let (mut tx, mut rx) = socket.split();
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(env) => {
                    let text = serde_json::to_string(&env.event).expect("event serialises");
                    if tx.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            // The client sends nothing we use; this notices it leaving.
            msg = rx.next() => if matches!(msg, None | Some(Err(_)) | Some(Ok(Message::Close(_)))) {
                return;
            },
        }
    }
    let _ = tx.send(Message::Close(None)).await;
}
