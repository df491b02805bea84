//! HTTP errors: `{"error":{"code","message"}}` with the matching status. Internal details (store
//! failures, VM and channel errors) are logged with their whole chain and not shown to clients.

use crate::images::CatalogError;
use crate::manager::SessionError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mayfly_proto::api::{ErrorBody, ErrorDetail};
use mayfly_proto::msg::ErrorKind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or invalid token")
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("request body exceeds {limit} bytes"))
    }
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error (see the server log)")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message } };
        (self.status, Json(body)).into_response()
    }
}

use mayfly_proto::error_chain as chain;

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        use SessionError as E;
        let msg = e.to_string();
        match &e {
            E::NotFound(_) => ApiError::not_found(msg),
            E::NotReady { .. } | E::StateChanged { .. } | E::Illegal(_) => ApiError::new(StatusCode::CONFLICT, "conflict", msg),
            E::Image(CatalogError::Unknown { .. }) | E::Invalid(_) => ApiError::bad_request(msg),
            E::TooManySessions(_) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_sessions", msg),
            E::HostMemoryLow { .. } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "host_memory_low", msg),
            E::Elsewhere { .. } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "node_unreachable", msg),
            // A standing limit is a refusal (403); a daily allowance is a rate (429).
            E::Quota { quota: "agent_runs_per_day", .. } => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", msg),
            E::Quota { .. } => ApiError::new(StatusCode::FORBIDDEN, "quota_exceeded", msg),
            E::LimitExceeded(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded", msg),
            E::UploadTooLarge(limit) => ApiError::payload_too_large(*limit),
            E::Exec { .. } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", msg),
            E::Guest { kind, .. } => {
                let (status, code) = match kind {
                    ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
                    ErrorKind::AlreadyExists => (StatusCode::CONFLICT, "conflict"),
                    ErrorKind::PermissionDenied
                    | ErrorKind::InvalidInput
                    | ErrorKind::NotADirectory
                    | ErrorKind::IsADirectory => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
                    ErrorKind::ConnectionRefused | ErrorKind::Io | ErrorKind::Protocol => (StatusCode::BAD_GATEWAY, "vm_error"),
                };
                ApiError::new(status, code, msg)
            }
            E::Vm { .. } | E::Failed { .. } => {
                tracing::warn!("{}", chain(&e));
                ApiError::new(StatusCode::BAD_GATEWAY, "vm_error", msg)
            }
            E::ShuttingDown => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", msg),
            E::Image(CatalogError::Broken { .. }) | E::Store(_) => {
                tracing::error!("{}", chain(&e));
                ApiError::internal()
            }
        }
    }
}

impl From<crate::accounts::AccountError> for ApiError {
    fn from(e: crate::accounts::AccountError) -> Self {
        use crate::accounts::AccountError as E;
        let msg = e.to_string();
        match &e {
            E::Invalid(_) => ApiError::bad_request(msg),
            E::NotFound(_) => ApiError::not_found(msg),
            E::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", msg),
            E::BadCredentials => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", msg),
            E::RateLimited(_) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", msg),
            E::Refused(_) | E::Forbidden => ApiError::new(StatusCode::FORBIDDEN, "forbidden", msg),
            E::Store(_) | E::Internal(_) => {
                tracing::error!("{}", chain(&e));
                ApiError::internal()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mayfly_proto::api::SessionState;

    #[test]
    fn session_errors_map_to_statuses() {
        let cases: Vec<(SessionError, u16, &str)> = vec![
            (SessionError::NotFound("sx".into()), 404, "not_found"),
            (SessionError::NotReady { id: "sx".into(), state: SessionState::Creating }, 409, "conflict"),
            (SessionError::TooManySessions(2), 429, "too_many_sessions"),
            (SessionError::HostMemoryLow { available_mib: 900, needed_mib: 1536 }, 503, "host_memory_low"),
            (SessionError::LimitExceeded("vcpus 9 exceeds max_vcpus (4)".into()), 422, "limit_exceeded"),
            (SessionError::Invalid("x".into()), 400, "bad_request"),
            (SessionError::UploadTooLarge(10), 413, "payload_too_large"),
            (SessionError::Exec { command: "nope".into(), message: "not found".into() }, 422, "unprocessable"),
            (SessionError::Guest { kind: ErrorKind::NotFound, message: "/x: gone".into() }, 404, "not_found"),
            (SessionError::Vm { id: "sx".into(), what: "exec", source: "secret detail".into() }, 502, "vm_error"),
            (SessionError::ShuttingDown, 503, "unavailable"),
            (SessionError::Quota { quota: "max_sessions", message: "quota max_sessions exceeded".into() }, 403, "quota_exceeded"),
            (SessionError::Quota { quota: "agent_runs_per_day", message: "quota agent_runs_per_day exceeded".into() }, 429, "quota_exceeded"),
        ];
        for (e, status, code) in cases {
            let a = ApiError::from(e);
            assert_eq!((a.status.as_u16(), a.code), (status, code), "{}", a.message);
            assert!(!a.message.contains("secret"), "source leaked: {}", a.message);
        }
        let a = ApiError::from(SessionError::TooManySessions(3));
        assert_eq!(a.message, "max_sessions (3) reached");
    }
}
