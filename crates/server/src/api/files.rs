//! `/api/v1/sessions/{id}/files?path=/abs`: GET a file (raw bytes, streamed, with
//! Content-Length) or a directory (JSON list), PUT a file (raw body streamed into the guest,
//! parents created, at most `max_upload_bytes`), DELETE a file or directory tree.
//! `POST .../files/mkdir?path=/abs` makes a directory (and parents); `POST .../files/rename`
//! `{"from","to"}` renames, refusing to replace an existing target (409).

use super::{guest_path, ApiJson, ApiPath, ApiQuery, AppState, Routes};
use crate::access::Action;
use crate::accounts::Caller;
use crate::error::ApiError;
use crate::manager::{FileEntry, SessionError};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use mayfly_proto::api::RenamePath;
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_util::io::StreamReader;

pub fn routes() -> Routes {
    Routes::new()
        .get("/api/v1/sessions/{id}/files", get)
        .put("/api/v1/sessions/{id}/files", put)
        .delete("/api/v1/sessions/{id}/files", delete)
        .post("/api/v1/sessions/{id}/files/mkdir", mkdir)
        .post("/api/v1/sessions/{id}/files/rename", rename)
}

#[derive(Deserialize)]
struct PathQuery {
    path: Option<String>,
}

async fn get(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
) -> Result<Response, ApiError> {
    let path = guest_path(q.path.as_deref())?;
    match st.manager.read_path(&st.manager.open(&caller, &id, Action::Files).await?, &path).await? {
        FileEntry::Dir(entries) => Ok(Json(entries).into_response()),
        FileEntry::File { size, body } => Ok((
            [(CONTENT_TYPE, "application/octet-stream".to_string()), (CONTENT_LENGTH, size.to_string())],
            Body::from_stream(crate::manager::file_body(body)),
        )
            .into_response()),
    }
}

async fn put(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
    req: Request,
) -> Response {
    match put_body(st, caller, id, q, req).await {
        Ok(status) => status.into_response(),
        // The body may be partly unread: the connection cannot carry another request, and a
        // client that reused it would see its next request cut off.
        Err(e) => {
            let mut r = e.into_response();
            r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            r
        }
    }
}

async fn put_body(st: AppState, caller: Caller, id: String, q: PathQuery, req: Request) -> Result<StatusCode, ApiError> {
    let path = guest_path(q.path.as_deref())?;
    let limit = st.manager.config().max_upload_bytes;
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::payload_too_large(limit));
    }
    let s = st.manager.open(&caller, &id, Action::Files).await?;
    let exceeded = Arc::new(AtomicBool::new(false));
    let flag = exceeded.clone();
    let mut seen = 0u64;
    let body = req.into_body().into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        seen += chunk.len() as u64;
        if seen > limit {
            flag.store(true, Ordering::SeqCst);
            return Err(std::io::Error::other("upload exceeds max_upload_bytes"));
        }
        Ok(chunk)
    });
    match st.manager.write_file(&s, &path, StreamReader::new(body)).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(_) if exceeded.load(Ordering::SeqCst) => Err(SessionError::UploadTooLarge(limit).into()),
        Err(e) => Err(e.into()),
    }
}

async fn delete(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
) -> Result<StatusCode, ApiError> {
    let path = guest_path(q.path.as_deref())?;
    st.manager.remove_path(&st.manager.open(&caller, &id, Action::Files).await?, &path).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn mkdir(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
) -> Result<StatusCode, ApiError> {
    let path = guest_path(q.path.as_deref())?;
    st.manager.make_dir(&st.manager.open(&caller, &id, Action::Files).await?, &path).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rename(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<RenamePath>,
) -> Result<StatusCode, ApiError> {
    let from = guest_path(Some(&body.from))?;
    let to = guest_path(Some(&body.to))?;
    st.manager.rename_path(&st.manager.open(&caller, &id, Action::Files).await?, &from, &to).await?;
    Ok(StatusCode::NO_CONTENT)
}
