//! One module per resource, each with its own `router()`.

pub mod accounts;
pub mod callbacks;
pub mod connections;
pub mod events;
pub mod health;
pub mod hooks;
pub mod live;
pub mod outbox;
pub mod runs;
pub mod templates;
pub mod usage;
pub mod workflows;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The raw body, with the API's error format for a body over the limit (413) or unreadable.
#[derive(Debug)]
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {} bytes", crate::app::MAX_BODY),
            )),
            Err(e) => Err(ApiError::bad_request(format!("could not read the body: {e}"))),
        }
    }
}

/// The media type of a request, lower-cased, without parameters.
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
}

/// A JSON body (`application/json`, or no content type), with our error format.
pub(crate) fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ApiError> {
    match media_type(headers).as_deref() {
        None | Some("application/json") => {}
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("expected application/json, got {other}"),
            ));
        }
    }
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        // Well-formed JSON of the wrong shape (a missing or mistyped field) is a 422.
        serde_json::error::Category::Data => ApiError::invalid(
            "invalid_request",
            "the request body does not have the expected fields",
            vec![switchboard_runtime::definition::Problem { path: String::new(), message: e.to_string() }],
        ),
        _ => ApiError::bad_request(format!("malformed JSON: {e}")),
    })
}

/// [`json_body`], or the type's default when the body is empty (a POST with nothing to say).
pub(crate) fn json_body_or_default<T: DeserializeOwned + Default>(headers: &HeaderMap, body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() { Ok(T::default()) } else { json_body(headers, body) }
}

/// Query parameters, with the API's error format when they do not parse.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))
    }
}

/// `?cursor=&limit=` of a list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Where the previous page ended.
    pub cursor: Option<String>,
    /// Items a page (default 50, at most 200).
    pub limit: Option<i64>,
}

impl PageQuery {
    /// The limit, clamped.
    pub fn limit(&self) -> i64 {
        self.limit.unwrap_or(50).clamp(1, 200)
    }
}
