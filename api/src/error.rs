//! The API's one error format: `{"error": {"code", "message", "details": [{path, message}]}}`.
//! Internal errors are logged and answered with a generic message, never their text.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use switchboard_runtime::Error;
use switchboard_runtime::definition::Problem;

/// `Retry-After` on a `503 database_unavailable`.
pub const DATABASE_RETRY_AFTER_SECS: u64 = 2;

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable snake_case code.
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// Problems with their paths (422).
    pub details: Vec<Problem>,
    /// `Retry-After`, seconds (429, 503).
    pub retry_after: Option<u64>,
    /// One more field of the error object, e.g. `workflow_id` of a `409 already_enabled`.
    pub extra: Option<Box<(&'static str, serde_json::Value)>>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: Vec::new(), retry_after: None, extra: None }
    }
    /// A 500 `internal`: `message` is logged, never answered.
    pub fn internal(message: impl Into<String>) -> Self {
        let message: String = message.into();
        tracing::error!(error = %message, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the server log")
    }

    /// 400: the body could not be parsed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    /// 404: no such thing in this account.
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }
    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    /// 422 with every problem.
    pub fn invalid(code: &'static str, message: impl Into<String>, details: Vec<Problem>) -> Self {
        Self { details, ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message) }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(what) => ApiError::not_found(what),
            Error::Invalid(problems) => ApiError::invalid("invalid_workflow", "the workflow is invalid", problems),
            Error::Conflict(message) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            other if other.is_unavailable() => {
                tracing::warn!(error = %other, "database unavailable");
                let mut error = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", "the database cannot be reached; retry shortly");
                error.retry_after = Some(DATABASE_RETRY_AFTER_SECS);
                error
            }
            other => {
                tracing::error!(error = %other, "internal error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the server log")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": { "code": self.code, "message": self.message, "details": self.details } });
        if let Some((name, value)) = self.extra.map(|e| *e) {
            body["error"][name] = value;
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The API's result alias.
pub type ApiResult<T> = Result<T, ApiError>;
