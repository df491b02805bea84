//! The Connect protocol with the JSON codec, as envd speaks it: unary calls (`application/json`
//! bodies), server streams (`application/connect+json`: each message in a 5-byte envelope —
//! flags, big-endian length — and a final end-of-stream envelope, flag `0x02`, carrying `{}` or
//! `{"error": …}`), and client streams (enveloped request messages, chunked).

use crate::error::{connect_error, ApiError};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::mpsc;

/// Largest single message accepted (a SendInput chunk, a request).
pub const MAX_MESSAGE: usize = 8 << 20;
const END_STREAM: u8 = 0x02;
const COMPRESSED: u8 = 0x01;
/// Keepalive period when the client names none (`Keepalive-Ping-Interval`, seconds).
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(50);

/// True when the request is a streaming one (enveloped body).
pub fn is_streaming(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("application/connect+json"))
}

/// Refuses codecs other than JSON.
pub fn check_codec(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let base = ct.split(';').next().unwrap_or("").trim();
    match base {
        "application/json" | "application/connect+json" => Ok(()),
        other => Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("only the JSON codec is served, not {other:?}"))),
    }
}

/// A message's JSON, decoded.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes = if bytes.is_empty() { b"{}".as_slice() } else { bytes };
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("invalid request message: {e}")))
}

/// Splits one envelope off the front of `buf`: `Ok(None)` when it is not complete yet.
pub fn take_envelope(buf: &mut Vec<u8>) -> Result<Option<(u8, Vec<u8>)>, ApiError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let flags = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if flags & COMPRESSED != 0 {
        return Err(ApiError::bad_request("compressed messages are not accepted"));
    }
    if len > MAX_MESSAGE {
        return Err(ApiError::bad_request(format!("message of {len} bytes exceeds {MAX_MESSAGE}")));
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    let msg = buf[5..5 + len].to_vec();
    buf.drain(..5 + len);
    Ok(Some((flags, msg)))
}

/// The request of a unary call or of a server stream (its single enveloped message).
pub fn request<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ApiError> {
    check_codec(headers)?;
    if !is_streaming(headers) {
        return decode(body);
    }
    let mut buf = body.to_vec();
    match take_envelope(&mut buf)? {
        Some((_, msg)) if buf.is_empty() => decode(&msg),
        Some(_) => Err(ApiError::bad_request("a server-streaming call takes exactly one message")),
        None => Err(ApiError::bad_request("truncated message envelope")),
    }
}

/// Reads a client stream's messages one by one.
pub struct Incoming {
    body: axum::body::BodyDataStream,
    buf: Vec<u8>,
    done: bool,
}

impl Incoming {
    pub fn new(body: Body) -> Self {
        Incoming { body: body.into_data_stream(), buf: Vec::new(), done: false }
    }

    /// The next message, `None` at the end of the stream.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ApiError> {
        loop {
            if let Some((flags, msg)) = take_envelope(&mut self.buf)? {
                if flags & END_STREAM != 0 {
                    self.done = true;
                    return Ok(None);
                }
                return decode(&msg).map(Some);
            }
            if self.done {
                return Ok(None);
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(ApiError::bad_request(format!("request body failed: {e}"))),
                None if self.buf.is_empty() => return Ok(None),
                None => return Err(ApiError::bad_request("truncated message envelope")),
            }
        }
    }
}

fn envelope(flags: u8, json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + json.len());
    out.push(flags);
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(json);
    out.into()
}

/// A unary answer.
pub fn unary(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(v) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response(),
        Err(e) => connect_error(&e),
    }
}

/// What a server stream's producer sends.
pub enum Item {
    Msg(Value),
    /// The stream's end: `None` ends it well.
    End(Option<ApiError>),
}

/// How often to send keepalives (the client's `Keepalive-Ping-Interval`, seconds).
pub fn keepalive_interval(headers: &HeaderMap) -> Duration {
    headers
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| (1..=3600).contains(s))
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_KEEPALIVE)
}

/// A server-stream response fed by `rx`, with `keepalive` sent every `every` while quiet.
/// When the client goes away, the body (and `rx`) is dropped: producers see their sends fail.
pub fn server_stream(rx: mpsc::Receiver<Item>, keepalive: Value, every: Duration) -> Response {
    let body = stream_body(rx, keepalive, every);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/connect+json")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn stream_body(rx: mpsc::Receiver<Item>, keepalive: Value, every: Duration) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let ka = keepalive.to_string();
    futures::stream::unfold(Some(rx), move |rx| {
        let ka = ka.clone();
        async move {
            let mut rx = rx?;
            match tokio::time::timeout(every, rx.recv()).await {
                Err(_) => Some((Ok(envelope(0, ka.as_bytes())), Some(rx))),
                Ok(Some(Item::Msg(v))) => Some((Ok(envelope(0, v.to_string().as_bytes())), Some(rx))),
                Ok(Some(Item::End(err))) => Some((Ok(end(err)), None)),
                Ok(None) => Some((Ok(end(Some(ApiError::new(StatusCode::BAD_GATEWAY, "the stream ended unexpectedly")))), None)),
            }
        }
    })
}

fn end(err: Option<ApiError>) -> Bytes {
    let body = match err {
        None => serde_json::json!({}),
        Some(e) => serde_json::json!({ "error": { "code": e.connect_code(), "message": e.message } }),
    };
    envelope(END_STREAM, body.to_string().as_bytes())
}

/// A client-stream answer: one message, then the end of the stream.
pub fn client_stream_answer(result: Result<Value, ApiError>) -> Response {
    let mut out = Vec::new();
    let err = match result {
        Ok(v) => {
            out.extend_from_slice(&envelope(0, v.to_string().as_bytes()));
            None
        }
        Err(e) => Some(e),
    };
    out.extend_from_slice(&end(err));
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/connect+json")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(flags: u8, body: &[u8]) -> Vec<u8> {
        envelope(flags, body).to_vec()
    }

    #[test]
    fn envelopes_split_only_when_whole() {
        let mut buf = env(0, br#"{"a":1}"#);
        buf.extend_from_slice(&env(END_STREAM, b"{}")[..3]);
        assert_eq!(take_envelope(&mut buf).unwrap(), Some((0, br#"{"a":1}"#.to_vec())));
        assert_eq!(take_envelope(&mut buf).unwrap(), None, "a partial envelope waits");
    }

    #[test]
    fn bad_envelopes_are_refused() {
        let mut compressed = env(COMPRESSED, b"{}");
        assert!(take_envelope(&mut compressed).is_err());
        let mut huge = vec![0, 0xff, 0xff, 0xff, 0xff];
        assert!(take_envelope(&mut huge).is_err());
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/connect+json".parse().unwrap());
        assert!(request::<Value>(&headers, &[0, 0, 0]).is_err(), "truncated");
        let mut two = env(0, b"{}");
        two.extend_from_slice(&env(0, b"{}"));
        assert!(request::<Value>(&headers, &two).is_err(), "two messages for a server stream");
        assert!(request::<Value>(&headers, &env(0, b"{nope")).is_err(), "malformed JSON");
        headers.insert(header::CONTENT_TYPE, "application/proto".parse().unwrap());
        assert!(check_codec(&headers).is_err(), "binary codec");
    }
}
