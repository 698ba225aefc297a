//! The one place a vendor's HTTP answer, or a failure to get one, becomes the stored failure
//! envelope: 408, 429 and 5xx are retryable and honour `Retry-After`; other statuses
//! are permanent; a send that may have reached the vendor is `outcome_unknown` for actions that
//! must not act twice.

use std::error::Error as _;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use switchboard_runtime::action::{ActionError, Delivery};

use crate::Error;

/// The longest body snippet quoted in a failure message, in characters.
const SNIPPET_CHARS: usize = 300;

/// Maps a vendor's HTTP answer to the failure envelope, or `None` for a 2xx.
///
/// 408, 429 and 5xx are retryable with code `http_<status>` and the vendor's `Retry-After`
/// (seconds or an HTTP date); every other status (other 4xx, a 3xx that was not followed) is
/// permanent. The message quotes the status and at most 300 characters of `body_snippet`.
pub fn classify_response(status: StatusCode, headers: &HeaderMap, body_snippet: &str) -> Option<ActionError> {
    if status.is_success() {
        return None;
    }
    let code = format!("http_{}", status.as_u16());
    let message = describe(status, body_snippet);
    let retryable = status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
    Some(if retryable {
        ActionError::retryable(code, message).with_retry_after(retry_after(headers, SystemTime::now()))
    } else {
        ActionError::permanent(code, message)
    })
}

/// Maps a failure to send a request or read its answer to the failure envelope.
///
/// - An address the client refused (see [`crate::http::client`]) is permanent
///   `address_not_allowed`, and the message tells the operator about
///   `SWITCHBOARD_HTTP_ALLOW_PRIVATE`; a refused redirect is permanent too.
/// - A failure to connect (DNS, TCP, TLS) happened before the request was written: retryable
///   `connect_error`.
/// - Anything later (a timeout, a broken connection, a body error) may have come after the
///   vendor received the request: `outcome_unknown` for an action whose `delivery` is
///   [`Delivery::AtMostOnce`] (pass the action's `Self::DELIVERY`), else retryable; the code is
///   `timeout` or `transport_error`.
///
/// The message leaves out the request's URL, which may carry credentials (webhook URLs do).
pub fn classify_send_error(err: &reqwest::Error, delivery: Delivery) -> ActionError {
    if let Some(ours) = own_error(err) {
        match ours {
            Error::AddressNotAllowed { .. } => return ActionError::permanent("address_not_allowed", ours.to_string()),
            Error::TooManyRedirects { .. } => return ActionError::permanent("too_many_redirects", ours.to_string()),
            Error::RedirectScheme { .. } => return ActionError::permanent("redirect_not_allowed", ours.to_string()),
            // A resolver failure is a connect error, handled below.
            Error::Resolve { .. } | Error::Build(_) | Error::Config(_) | Error::Sealed(_) => {}
        }
    }
    let cause = causes(err);
    if err.is_builder() {
        return ActionError::permanent("invalid_request", format!("the request could not be built: {cause}"));
    }
    // Checked before the timeout: a connect timeout is both, and nothing was sent.
    if err.is_connect() {
        return ActionError::retryable("connect_error", format!("could not connect: {cause}"));
    }
    let code = if err.is_timeout() { "timeout" } else { "transport_error" };
    let what = if err.is_timeout() { "timed out" } else { "failed" };
    if delivery == Delivery::AtMostOnce {
        ActionError::outcome_unknown(
            code,
            format!(
                "the request {what} after it may have been delivered ({cause}); it is not resent \
                 automatically"
            ),
        )
    } else {
        ActionError::retryable(code, format!("the request {what}: {cause}"))
    }
}

/// One of this crate's errors inside a reqwest error (from the resolver or redirect policy).
fn own_error(err: &reqwest::Error) -> Option<&Error> {
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(ours) = e.downcast_ref::<Error>() {
            return Some(ours);
        }
        source = e.source();
    }
    None
}

/// The causes of a reqwest error, joined; the top level is skipped because it quotes the URL.
fn causes(err: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = err.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    if parts.is_empty() {
        // Only the top level: say what kind of failure without quoting it.
        let kind = if err.is_timeout() {
            "timed out"
        } else if err.is_body() {
            "body error"
        } else if err.is_decode() {
            "decode error"
        } else {
            "transport error"
        };
        return kind.to_owned();
    }
    parts.join(": ")
}

/// `HTTP 404 Not Found: <snippet>`.
fn describe(status: StatusCode, body_snippet: &str) -> String {
    let mut message = format!("HTTP {status}");
    let snippet = body_snippet.trim();
    if !snippet.is_empty() {
        message.push_str(": ");
        if snippet.chars().count() > SNIPPET_CHARS {
            message.extend(snippet.chars().take(SNIPPET_CHARS - 1));
            message.push('…');
        } else {
            message.push_str(snippet);
        }
    }
    message
}

/// The delay a `Retry-After` header asks for: delta-seconds or an HTTP date (a date in the past
/// means now). Unparseable values are ignored.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Saturate absurd values rather than fail; the millisecond envelope must not overflow.
        let secs = value.parse::<u64>().unwrap_or(u64::MAX).min(u64::MAX / 1000);
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;
    use switchboard_runtime::action::FailureClass;

    use super::*;

    fn headers(retry_after: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(retry_after).unwrap());
        h
    }

    #[test]
    fn success_is_not_a_failure() {
        for status in [200, 201, 204] {
            assert_eq!(classify_response(StatusCode::from_u16(status).unwrap(), &HeaderMap::new(), "x"), None);
        }
    }

    #[test]
    fn server_errors_timeouts_and_throttling_are_retryable() {
        for status in [408, 429, 500, 502, 503, 504] {
            let err = classify_response(StatusCode::from_u16(status).unwrap(), &HeaderMap::new(), "busy").unwrap();
            assert_eq!(err.class, FailureClass::Retryable, "{status}");
            assert_eq!(err.code, format!("http_{status}"));
            assert_eq!(err.retry_after_ms, None);
        }
    }

    #[test]
    fn other_client_errors_and_unfollowed_redirects_are_permanent() {
        for status in [301, 400, 401, 403, 404, 409, 422] {
            let err = classify_response(StatusCode::from_u16(status).unwrap(), &HeaderMap::new(), "").unwrap();
            assert_eq!(err.class, FailureClass::Permanent, "{status}");
            assert_eq!(err.code, format!("http_{status}"));
        }
    }

    #[test]
    fn message_quotes_status_and_a_short_snippet() {
        let err = classify_response(StatusCode::NOT_FOUND, &HeaderMap::new(), "  no such lead \n").unwrap();
        assert_eq!(err.message, "HTTP 404 Not Found: no such lead");
        let long = "é".repeat(1000);
        let err = classify_response(StatusCode::BAD_REQUEST, &HeaderMap::new(), &long).unwrap();
        let snippet = err.message.strip_prefix("HTTP 400 Bad Request: ").unwrap();
        assert_eq!(snippet.chars().count(), SNIPPET_CHARS);
        assert!(snippet.ends_with('…'));
    }

    #[test]
    fn retry_after_in_seconds_is_kept() {
        let err = classify_response(StatusCode::TOO_MANY_REQUESTS, &headers("7"), "").unwrap();
        assert_eq!(err.retry_after_ms, Some(7_000));
        let err = classify_response(StatusCode::SERVICE_UNAVAILABLE, &headers(" 120 "), "").unwrap();
        assert_eq!(err.retry_after_ms, Some(120_000));
    }

    #[test]
    fn retry_after_as_an_http_date_counts_from_now() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let later = headers("Sun, 06 Nov 1994 08:50:07 GMT");
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(30)));
        let earlier = headers("Sun, 06 Nov 1994 08:00:00 GMT");
        assert_eq!(retry_after(&earlier, now), Some(Duration::ZERO));
    }

    #[test]
    fn unparseable_or_absurd_retry_after_is_harmless() {
        assert_eq!(retry_after(&headers("soon"), SystemTime::now()), None);
        assert_eq!(retry_after(&headers("-5"), SystemTime::now()), None);
        assert_eq!(retry_after(&HeaderMap::new(), SystemTime::now()), None);
        let huge = retry_after(&headers("99999999999999999999999"), SystemTime::now()).unwrap();
        assert_eq!(huge, Duration::from_secs(u64::MAX / 1000));
        assert!(u64::try_from(huge.as_millis()).is_ok());
    }
}
