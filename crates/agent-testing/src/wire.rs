//! The two streaming wire formats, as the scripted server writes them. Text and tool arguments
//! are sent in small pieces, and every SSE event is written in two chunks split mid-line, so
//! clients must reassemble both.

use super::Reply;
use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};

fn pieces(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(n.max(1)).map(|c| c.iter().collect()).collect()
}

fn sse(events: Vec<(Option<&str>, String)>) -> Response {
    let mut chunks: Vec<Result<Bytes, std::io::Error>> = Vec::new();
    for (name, data) in events {
        let text = match name {
            Some(n) => format!("event: {n}\ndata: {data}\n\n"),
            None => format!("data: {data}\n\n"),
        };
        let mid = text.len() / 2;
        let mid = (0..=mid).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        chunks.push(Ok(Bytes::copy_from_slice(&text.as_bytes()[..mid])));
        chunks.push(Ok(Bytes::copy_from_slice(&text.as_bytes()[mid..])));
    }
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .expect("valid response")
}

fn error(status: u16, retry_after: Option<u64>, body: Value) -> Response {
    let mut r = (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), axum::Json(body)).into_response();
    if let Some(s) = retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, s.to_string().parse().expect("a number is a header value"));
    }
    r
}

fn garbage() -> Response {
    sse(vec![(None, "{this is not json".into())])
}

pub fn openai(reply: Option<Reply>, n: usize, input: usize) -> Response {
    let (text, calls) = match reply {
        None => return error(400, None, json!({"error": {"message": "scripted model: no reply left", "type": "invalid_request_error"}})),
        Some(Reply::Status { status, retry_after }) => {
            return error(status, retry_after, json!({"error": {"message": format!("scripted status {status}"), "type": "server_error"}}))
        }
        Some(Reply::Garbage) => return garbage(),
        Some(Reply::Text(t)) => (t, Vec::new()),
        Some(Reply::Tools { text, calls }) => (text, calls),
    };
    let chunk = |delta: Value, finish: Value| {
        json!({"id": format!("chatcmpl-{n}"), "object": "chat.completion.chunk", "created": 0, "model": "scripted",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    let mut ev = vec![(None, chunk(json!({"role": "assistant", "content": ""}), Value::Null))];
    for p in pieces(&text, 7) {
        ev.push((None, chunk(json!({"content": p}), Value::Null)));
    }
    for (i, (name, args)) in calls.iter().enumerate() {
        let id = format!("call_{n}_{i}");
        ev.push((None, chunk(json!({"tool_calls": [{"index": i, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}), Value::Null)));
        for p in pieces(args, 11) {
            ev.push((None, chunk(json!({"tool_calls": [{"index": i, "function": {"arguments": p}}]}), Value::Null)));
        }
    }
    let finish = if calls.is_empty() { "stop" } else { "tool_calls" };
    ev.push((None, chunk(json!({}), json!(finish))));
    let output = (text.len() + calls.iter().map(|c| c.1.len()).sum::<usize>()) / 4 + 1;
    ev.push((None, json!({"id": format!("chatcmpl-{n}"), "object": "chat.completion.chunk", "choices": [],
        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}}).to_string()));
    ev.push((None, "[DONE]".into()));
    sse(ev)
}

pub fn anthropic(reply: Option<Reply>, n: usize, input: usize) -> Response {
    let (text, calls) = match reply {
        None => return error(400, None, json!({"type": "error", "error": {"type": "invalid_request_error", "message": "scripted model: no reply left"}})),
        Some(Reply::Status { status, retry_after }) => {
            let kind = if status == 529 { "overloaded_error" } else { "api_error" };
            return error(status, retry_after, json!({"type": "error", "error": {"type": kind, "message": format!("scripted status {status}")}}));
        }
        Some(Reply::Garbage) => return garbage(),
        Some(Reply::Text(t)) => (t, Vec::new()),
        Some(Reply::Tools { text, calls }) => (text, calls),
    };
    let mut ev: Vec<(Option<&str>, String)> = vec![(
        Some("message_start"),
        json!({"type": "message_start", "message": {"id": format!("msg_{n}"), "type": "message", "role": "assistant", "content": [],
            "model": "scripted", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": input, "output_tokens": 1}}})
        .to_string(),
    )];
    let mut index = 0;
    if !text.is_empty() {
        ev.push((Some("content_block_start"), json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}).to_string()));
        ev.push((Some("ping"), json!({"type": "ping"}).to_string()));
        for p in pieces(&text, 7) {
            ev.push((Some("content_block_delta"), json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}).to_string()));
        }
        ev.push((Some("content_block_stop"), json!({"type": "content_block_stop", "index": 0}).to_string()));
        index = 1;
    }
    for (i, (name, args)) in calls.iter().enumerate() {
        let idx = index + i;
        let id = format!("toolu_{n}_{i}");
        ev.push((Some("content_block_start"), json!({"type": "content_block_start", "index": idx, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}).to_string()));
        for p in pieces(args, 11) {
            ev.push((Some("content_block_delta"), json!({"type": "content_block_delta", "index": idx, "delta": {"type": "input_json_delta", "partial_json": p}}).to_string()));
        }
        ev.push((Some("content_block_stop"), json!({"type": "content_block_stop", "index": idx}).to_string()));
    }
    let stop = if calls.is_empty() { "end_turn" } else { "tool_use" };
    let output = (text.len() + calls.iter().map(|c| c.1.len()).sum::<usize>()) / 4 + 1;
    ev.push((Some("message_delta"), json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": output}}).to_string()));
    ev.push((Some("message_stop"), json!({"type": "message_stop"}).to_string()));
    sse(ev)
}
