//! One module per resource, each with its own `router()`.

pub mod accounts;
pub mod actions;
pub mod analytics;
pub mod callbacks;
pub mod connections;
pub mod contact;
pub mod events;
pub mod health;
pub mod hooks;
pub mod live;
pub mod numbers;
pub mod oauth;
pub mod outbox;
pub mod runs;
pub mod schedules;
pub mod templates;
pub mod usage;
pub mod workflows;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use switchboard_runtime::definition::Problem;
use utoipa::ToSchema;

use crate::error::ApiError;

/// The raw body, with the API's error format for a body over the limit (413) or unreadable.
#[derive(Debug)]
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("the body is larger than {} bytes", crate::app::MAX_BODY)))
            }
            Err(e) => Err(ApiError::bad_request(format!("could not read the body: {e}"))),
        }
    }
}

/// The media type of a request, lower-cased, without parameters.
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
}

/// A JSON body (`application/json`, or no content type), with our error format: 415
/// `unsupported_media_type` for another media type, 400 `bad_request` for malformed JSON, 422
/// `invalid_request` for well-formed JSON of the wrong shape, with the path of the field.
pub(crate) fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ApiError> {
    match media_type(headers).as_deref() {
        None | Some("application/json") => {}
        Some(other) => {
            return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", format!("expected application/json, got {other}")));
        }
    }
    let mut reader = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut reader).map_err(|e| match e.inner().classify() {
        // Well-formed JSON of the wrong shape (a missing or mistyped field) is a 422.
        serde_json::error::Category::Data => {
            let problem = Problem { path: problem_path(&e), message: e.inner().to_string() };
            ApiError::invalid("invalid_request", "the request body does not have the expected fields", vec![problem])
        }
        _ => ApiError::bad_request(format!("malformed JSON: {}", e.inner())),
    })?;
    // Characters after the value are malformed JSON, as `serde_json::from_slice` has it.
    reader.end().map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// Where a body's shape is wrong, in the paths of [`Problem`]s (`connections.twilio`,
/// `steps[2].id`); a missing field is named in the path of the object that lacks it.
fn problem_path(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let at = e.path().to_string();
    let at = if at == "." { String::new() } else { at };
    let message = e.inner().to_string();
    let missing = message.strip_prefix("missing field `").and_then(|rest| rest.split('`').next());
    match missing {
        Some(field) if at.is_empty() => field.to_string(),
        Some(field) => format!("{at}.{field}"),
        None => at,
    }
}

/// A JSON body of type `T` ([`json_body`]): the extractor for handlers whose body is one JSON
/// document. Its rejection is an [`ApiError`] in the API's format.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let Body(bytes) = Body::from_request(req, state).await?;
        json_body(&headers, &bytes).map(JsonBody)
    }
}

/// [`JsonBody`], or the type's default when the body is empty (a POST with nothing to say).
#[derive(Debug)]
pub struct JsonBodyOrDefault<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for JsonBodyOrDefault<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let Body(bytes) = Body::from_request(req, state).await?;
        if bytes.is_empty() { Ok(JsonBodyOrDefault(T::default())) } else { json_body(&headers, &bytes).map(JsonBodyOrDefault) }
    }
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

/// `{id, deleted: true}`: what a DELETE answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    /// The deleted resource.
    pub id: String,
    /// Always `true`.
    pub deleted: bool,
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
        page_limit(self.limit)
    }
}

/// A list's `limit` as asked, clamped: 50 when not given, 1 to 200.
pub(crate) fn page_limit(asked: Option<i64>) -> i64 {
    asked.unwrap_or(50).clamp(1, 200)
}
