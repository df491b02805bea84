//! envd's HTTP routes: `GET /health`, `GET /files` (download, streamed) and `POST /files`
//! (upload: `application/octet-stream`, or `multipart/form-data` with one `file` part per file,
//! streamed into the guest).

use crate::auth::Peer;
use crate::error::ApiError;
use crate::Shared;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::TryStreamExt;
use mayfly_server::access::{Action, SessionRef};
use mayfly_server::manager::{file_body, FileEntry, SessionError};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::io::StreamReader;

#[derive(Debug, Deserialize)]
pub struct FileQuery {
    path: Option<String>,
}


async fn open(door: &Shared, headers: &HeaderMap, peer: Peer, action: Action) -> Result<SessionRef, ApiError> {
    crate::auth::open_sandbox(door, headers, peer, action).await
}

fn resolve(p: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/root/{p}")
    }
}

fn guest_error(e: SessionError, path: &str) -> ApiError {
    match &e {
        SessionError::Guest { kind: mayfly_proto::msg::ErrorKind::NotFound, .. } => ApiError::not_found(format!("path not found: {path}")),
        _ => ApiError::from(e),
    }
}

/// 204 while the sandbox is ready; 502 (what E2B's proxy answers for a gone sandbox) otherwise.
pub async fn health(State(door): State<Shared>, peer: Peer, headers: HeaderMap) -> Response {
    let ready = match open(&door, &headers, peer, Action::Read).await {
        Ok(sref) => door.app.manager.get(&sref).await.is_ok_and(|s| s.state == mayfly_proto::api::SessionState::Ready),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => return e.into_response(),
        Err(_) => false,
    };
    if ready {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ApiError::new(StatusCode::BAD_GATEWAY, "the sandbox is not running").into_response()
    }
}

pub async fn download(State(door): State<Shared>, peer: Peer, headers: HeaderMap, Query(q): Query<FileQuery>) -> Result<Response, ApiError> {
    let sref = open(&door, &headers, peer, Action::Files).await?;
    let path = resolve(q.path.as_deref().filter(|p| !p.is_empty()).ok_or_else(|| ApiError::bad_request("path is required"))?);
    match door.app.manager.read_path(&sref, &path).await.map_err(|e| guest_error(e, &path))? {
        FileEntry::Dir(_) => Err(ApiError::bad_request(format!("path is a directory: {path}"))),
        FileEntry::File { size, body } => Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, size)
            .body(Body::from_stream(file_body(body)))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())),
    }
}

fn written(path: &str) -> Value {
    let name = path.rsplit('/').next().unwrap_or(path);
    json!({ "name": name, "type": "file", "path": path })
}

pub async fn upload(State(door): State<Shared>, peer: Peer, Query(q): Query<FileQuery>, req: Request) -> Result<Response, ApiError> {
    let headers = req.headers().clone();
    let sref = open(&door, &headers, peer, Action::Files).await?;
    if headers.get(header::CONTENT_ENCODING).is_some_and(|v| v.as_bytes() != b"identity") {
        return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "compressed uploads are not accepted; upload without gzip"));
    }
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let query_path = q.path.filter(|p| !p.is_empty()).map(|p| resolve(&p));
    let m = &door.app.manager;
    if ct.starts_with("multipart/form-data") {
        let mut form = Multipart::from_request(req, &()).await.map_err(|e| ApiError::bad_request(format!("invalid multipart body: {e}")))?;
        let mut out = Vec::new();
        while let Some(field) = form.next_field().await.map_err(|e| ApiError::bad_request(format!("invalid multipart body: {e}")))? {
            let path = match (&query_path, field.file_name()) {
                (Some(p), _) => p.clone(),
                (None, Some(f)) if !f.is_empty() => resolve(f),
                _ => return Err(ApiError::bad_request("each file needs a path (query `path` or the part's filename)")),
            };
            let reader = StreamReader::new(field.map_err(std::io::Error::other));
            m.write_file(&sref, &path, reader).await.map_err(|e| guest_error(e, &path))?;
            out.push(written(&path));
        }
        if out.is_empty() {
            return Err(ApiError::bad_request("the multipart body holds no file"));
        }
        return Ok(Json(out).into_response());
    }
    let path = query_path.ok_or_else(|| ApiError::bad_request("path is required"))?;
    let reader = StreamReader::new(req.into_body().into_data_stream().map_err(std::io::Error::other));
    m.write_file(&sref, &path, reader).await.map_err(|e| guest_error(e, &path))?;
    Ok(Json(vec![written(&path)]).into_response())
}
