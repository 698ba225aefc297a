//! `http.request`: an outbound webhook to a URL the workflow author chooses.
//!
//! Input `{method, url, headers?, body?}`, already rendered by the runtime; output
//! `{status, headers, body}`. A 2xx is success; other statuses and transport failures go through
//! the shared classification of `switchboard_integrations`. Delivery is at most once: a webhook
//! is not idempotent in general, so a request that may have left is never resent blindly. The
//! step's idempotency key travels as `Idempotency-Key` for receivers that can dedupe.
//! Private addresses are refused by the client itself (see `switchboard_integrations::http`).

use async_trait::async_trait;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Response, Url};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use switchboard_integrations::http::read_limited;
use switchboard_integrations::{classify_response, classify_send_error};
use switchboard_runtime::action::{Action, ActionContext, ActionError, Delivery, Done};
use switchboard_runtime::metering::{Unit, Usage};

/// The methods `http.request` sends.
const METHODS: [Method; 6] = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::HEAD];

/// The most of a response body kept in the step's output; the rest is dropped.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The header receivers dedupe on.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The `http.request` action module.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    client: reqwest::Client,
}

impl HttpRequest {
    /// Sends with `client`, which should come from [`switchboard_integrations::client`] so that
    /// the operator's address policy applies.
    pub fn new(client: reqwest::Client) -> Self {
        Self { client }
    }
}

/// The input of `http.request`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestInput {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE` or `HEAD`.
    pub method: String,
    /// An http(s) URL.
    pub url: String,
    /// Request headers, `{name: value}`; numbers and booleans are written as text.
    pub headers: Option<Map<String, Value>>,
    /// The body: a string is sent as written (`text/plain` unless a `Content-Type` is given),
    /// anything else as JSON.
    pub body: Option<Value>,
}

/// The output of `http.request`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RequestOutput {
    /// The HTTP status.
    pub status: u16,
    /// The response headers, `{name: value}` (repeated ones joined with `, `).
    pub headers: Value,
    /// The body: JSON when it parses, else text (at most 64 KiB kept).
    pub body: Value,
}

#[async_trait]
impl Action for HttpRequest {
    const KIND: &'static str = "http.request";
    const DELIVERY: Delivery = Delivery::AtMostOnce;
    const UNITS: &'static [Unit] = &[Unit::HttpRequest];
    type Input = RequestInput;
    type Output = RequestOutput;

    /// Checks what is literal (strings without `{{`): the method, the URL, header names and
    /// values. Interpolated parts are checked when the step runs.
    fn validate(&self, input: &Map<String, Value>) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if let Some(Value::String(method)) = input.get("method")
            && is_literal(method)
            && let Err(e) = parse_method(method)
        {
            problems.push(("method".to_owned(), e));
        }
        if let Some(Value::String(url)) = input.get("url")
            && is_literal(url)
            && let Err(e) = parse_url(url)
        {
            problems.push(("url".to_owned(), e));
        }
        if let Some(Value::Object(headers)) = input.get("headers") {
            for (name, value) in headers {
                let literal = match value {
                    Value::String(s) => is_literal(s),
                    _ => true,
                };
                if is_literal(name)
                    && literal
                    && let Err(e) = header(name, value)
                {
                    problems.push((format!("headers.{name}"), e));
                }
            }
        }
        problems
    }

    fn estimate(&self, _input: &RequestInput) -> Vec<Usage> {
        vec![Unit::HttpRequest.times(1)]
    }

    async fn execute(&self, ctx: &ActionContext, input: RequestInput) -> Result<Done<RequestOutput>, ActionError> {
        let invalid = |message: String| ActionError::permanent("invalid_input", message);
        let method = parse_method(&input.method).map_err(|e| invalid(format!("method: {e}")))?;
        let url = parse_url(&input.url).map_err(|e| invalid(format!("url: {e}")))?;
        let mut headers = HeaderMap::new();
        for (name, value) in input.headers.iter().flatten() {
            let (name, value) = header(name, value).map_err(|e| invalid(format!("headers.{name}: {e}")))?;
            headers.append(name, value);
        }
        if !headers.contains_key(IDEMPOTENCY_KEY) {
            let key = HeaderValue::from_str(&ctx.idempotency_key)
                .map_err(|_| ActionError::permanent("invalid_idempotency_key", "the step's idempotency key is not a valid header value"))?;
            headers.insert(IDEMPOTENCY_KEY, key);
        }

        let body = input.body.as_ref().filter(|b| !b.is_null());
        if let Some(Value::String(_)) = body
            && !headers.contains_key(CONTENT_TYPE)
        {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        }
        let request = self.client.request(method, url).timeout(ctx.timeout).headers(headers);
        let request = match body {
            None => request,
            // Sent as written: the author may have rendered JSON or a form themselves and set
            // their own Content-Type.
            Some(Value::String(text)) => request.body(text.clone()),
            // Keeps a Content-Type the author set, else adds application/json.
            Some(json) => request.json(json),
        };
        let mut response = request.send().await.map_err(|e| classify_send_error(&e, Self::DELIVERY))?;

        let status = response.status();
        if let Some(error) = classify_failure(&mut response).await {
            return Err(error);
        }
        let response_headers = header_map_json(response.headers());
        let body = read_body(&mut response).await.map_err(|e| classify_send_error(&e, Self::DELIVERY))?;
        Ok(Done { output: RequestOutput { status: status.as_u16(), headers: response_headers, body }, usage: vec![Unit::HttpRequest.times(1)] })
    }
}

/// The failure a non-2xx answer stands for, quoting the start of its body.
async fn classify_failure(response: &mut Response) -> Option<ActionError> {
    if response.status().is_success() {
        return None;
    }
    // The status decides; a body that cannot be read only costs the snippet.
    let snippet = match read_limited(response, MAX_BODY_BYTES).await {
        Ok((bytes, _)) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    };
    classify_response(response.status(), response.headers(), &snippet)
}

/// Whether a string has no `{{ … }}` interpolation, so it can be checked at save time.
fn is_literal(s: &str) -> bool {
    !s.contains("{{")
}

fn parse_method(method: &str) -> Result<Method, String> {
    let upper = method.trim().to_ascii_uppercase();
    METHODS.iter().find(|m| m.as_str() == upper).cloned().ok_or_else(|| format!("unsupported method {method:?}: use GET, POST, PUT, PATCH, DELETE or HEAD"))
}

fn parse_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url.trim()).map_err(|e| format!("not a valid URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} is not supported: use http or https", parsed.scheme()));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(parsed)
}

/// One header from the input; numbers and booleans are written as text.
fn header(name: &str, value: &Value) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| "not a valid header name".to_owned())?;
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return Err("a header value must be a string".into()),
    };
    let value = HeaderValue::from_str(&text).map_err(|_| "not a valid header value (control characters?)".to_owned())?;
    Ok((name, value))
}

/// Response headers as `{name: value}`; repeated headers are joined with `, `.
fn header_map_json(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for name in headers.keys() {
        let values: Vec<String> = headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        out.insert(name.as_str().to_owned(), Value::String(values.join(", ")));
    }
    Value::Object(out)
}

/// The response body: parsed JSON when the response says it is JSON (and it parses), else text;
/// at most [`MAX_BODY_BYTES`] are read.
async fn read_body(response: &mut Response) -> Result<Value, reqwest::Error> {
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .is_some_and(|mime| mime == "application/json" || mime.ends_with("+json"));
    let (mut bytes, truncated) = read_limited(response, MAX_BODY_BYTES).await?;
    if is_json
        && !truncated
        && let Ok(value) = serde_json::from_slice(&bytes)
    {
        return Ok(value);
    }
    if truncated
        && let Err(e) = std::str::from_utf8(&bytes)
        && e.error_len().is_none()
    {
        // The cut fell inside a character: drop its first bytes rather than mangle it.
        bytes.truncate(e.valid_up_to());
    }
    Ok(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn problems(input: Value) -> Vec<(String, String)> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let action = HttpRequest::new(reqwest::Client::new());
        Action::validate(&action, input.as_object().unwrap())
    }

    #[test]
    fn literal_method_and_url_are_checked() {
        assert!(problems(json!({"method": "post", "url": "https://example.com/hook"})).is_empty());
        assert!(problems(json!({"method": "Delete", "url": "http://example.com:8080/x?y=1"})).is_empty());
        let found = problems(json!({"method": "CONNECT", "url": "ftp://example.com/"}));
        let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["method", "url"]);
        assert_eq!(problems(json!({"method": "GET", "url": "not a url"}))[0].0, "url");
    }

    #[test]
    fn interpolated_parts_wait_for_run_time() {
        let input = json!({
            "method": "{{ vars.method }}",
            "url": "{{ vars.base }}/leads",
            "headers": {"Authorization": "Bearer {{ secrets.token }}"},
        });
        assert!(problems(input).is_empty());
    }

    #[test]
    fn literal_headers_are_checked() {
        let found = problems(json!({
            "method": "GET",
            "url": "https://example.com",
            "headers": {"X-Ok": "yes", "X-Count": 3, "bad name": "x", "X-Nested": {"a": 1}, "X-Bad": "a\nb"},
        }));
        let mut paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        paths.sort();
        assert_eq!(paths, ["headers.X-Bad", "headers.X-Nested", "headers.bad name"]);
    }
}
