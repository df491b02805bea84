//! E2B's error shapes: the control plane and envd's HTTP routes answer
//! `{"code": <HTTP status>, "message": …}` (an empty body crashes the SDK); Connect RPCs answer
//! `{"code": "<connect code>", "message": …}` with the status of that code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mayfly_server::manager::SessionError;
use mayfly_proto::msg::ErrorKind;

/// An error answered in E2B's REST shape.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid or missing API key (X-API-KEY must carry a Mayfly API token)")
    }
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, what)
    }
    /// The Connect code of this error's status.
    pub fn connect_code(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "invalid_argument",
            StatusCode::UNAUTHORIZED => "unauthenticated",
            StatusCode::FORBIDDEN => "permission_denied",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "already_exists",
            StatusCode::TOO_MANY_REQUESTS => "resource_exhausted",
            StatusCode::PAYLOAD_TOO_LARGE => "resource_exhausted",
            StatusCode::GATEWAY_TIMEOUT => "deadline_exceeded",
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY => "unavailable",
            StatusCode::NOT_IMPLEMENTED => "unimplemented",
            _ => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.status.as_u16(), "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        use SessionError as E;
        let status = match &e {
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::NotReady { .. } | E::StateChanged { .. } | E::Illegal(_) => StatusCode::CONFLICT,
            E::Image(_) => StatusCode::BAD_REQUEST,
            E::TooManySessions(_) | E::Quota { .. } => StatusCode::TOO_MANY_REQUESTS,
            E::LimitExceeded(_) | E::Invalid(_) | E::Exec { .. } => StatusCode::BAD_REQUEST,
            E::UploadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            E::Guest { kind, .. } => match kind {
                ErrorKind::NotFound => StatusCode::NOT_FOUND,
                ErrorKind::AlreadyExists => StatusCode::CONFLICT,
                ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
                ErrorKind::InvalidInput | ErrorKind::NotADirectory | ErrorKind::IsADirectory => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            E::Vm { .. } | E::Failed { .. } => StatusCode::BAD_GATEWAY,
            E::ShuttingDown | E::HostMemoryLow { .. } | E::Elsewhere { .. } => StatusCode::SERVICE_UNAVAILABLE,
            E::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if let E::Vm { source, .. } = &e {
            tracing::warn!("e2b: {e}: {source}");
        }
        ApiError::new(status, e.to_string())
    }
}

/// A Connect-protocol error response (unary RPCs, and streams refused before they start).
pub fn connect_error(e: &ApiError) -> Response {
    let body = serde_json::json!({ "code": e.connect_code(), "message": e.message });
    (e.status, Json(body)).into_response()
}
