//! Twilio's request signatures: the check a callback route makes before it believes a request
//! came from Twilio.
//!
//! Twilio signs every webhook and status callback it sends with `X-Twilio-Signature`:
//! base64(HMAC-SHA1(key = the account's auth token, data = the full URL Twilio requested,
//! query string included, followed by every form parameter sorted by name, each written as
//! name then value with no separators)). See
//! <https://www.twilio.com/docs/usage/webhooks/webhooks-security>.
//!
//! Only form-encoded callbacks are covered (status callbacks and TwiML webhooks are); Twilio's
//! JSON webhooks add a `bodySHA256` query parameter, which this check does not verify.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Whether `signature_header` (the `X-Twilio-Signature` value) is Twilio's signature of a request
/// to `url` carrying the form `params`, made with `auth_token`.
///
/// `url` must be exactly the URL Twilio requested (scheme, host, port if any, path and query
/// string as sent). Parameters are sorted by name, then by value for a repeated name, so their
/// order in `params` does not matter. The comparison runs in constant time; a header that is not
/// base64, or is empty, is simply invalid.
pub fn signature_is_valid(auth_token: &str, url: &str, params: &[(String, String)], signature_header: &str) -> bool {
    let Ok(expected) = STANDARD.decode(signature_header.trim()) else {
        return false;
    };
    if expected.is_empty() {
        return false;
    }
    signing_mac(auth_token, url, params).verify_slice(&expected).is_ok()
}

/// The HMAC over `url` followed by the sorted parameters, before finalisation.
fn signing_mac(auth_token: &str, url: &str, params: &[(String, String)]) -> Hmac<Sha1> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    // Byte order of UTF-8 equals code-point order, which is how Twilio's libraries sort.
    sorted.sort();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC accepts a key of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of Twilio's webhook-security documentation.
    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const SIGNATURE: &str = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";

    fn params() -> Vec<(String, String)> {
        [("CallSid", "CA1234567890ABCDE"), ("Caller", "+12349013030"), ("Digits", "1234"), ("From", "+12349013030"), ("To", "+18005551212")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn twilios_documented_example_verifies() {
        assert!(signature_is_valid(TOKEN, URL, &params(), SIGNATURE));
        let computed = STANDARD.encode(signing_mac(TOKEN, URL, &params()).finalize().into_bytes());
        assert_eq!(computed, SIGNATURE);
    }

    #[test]
    fn parameter_order_does_not_matter() {
        let mut reversed = params();
        reversed.reverse();
        assert!(signature_is_valid(TOKEN, URL, &reversed, SIGNATURE));
    }

    #[test]
    fn tampering_with_anything_signed_invalidates_it() {
        let mut tampered = params();
        tampered[2].1 = "9999".into();
        assert!(!signature_is_valid(TOKEN, URL, &tampered, SIGNATURE), "a changed value");
        let mut added = params();
        added.push(("Extra".into(), "1".into()));
        assert!(!signature_is_valid(TOKEN, URL, &added, SIGNATURE), "an added parameter");
        assert!(!signature_is_valid(TOKEN, URL, &params()[1..], SIGNATURE), "a dropped parameter");
        assert!(!signature_is_valid(TOKEN, "https://mycompany.com/myapp.php?foo=1&bar=3", &params(), SIGNATURE), "URL");
        assert!(!signature_is_valid("54321", URL, &params(), SIGNATURE), "another auth token");
    }

    #[test]
    fn malformed_headers_are_invalid() {
        for header in ["", "   ", "not base64!", "0/KCTR6DLpKmkAf8muzZqo1nDgQ", "AAAA"] {
            assert!(!signature_is_valid(TOKEN, URL, &params(), header), "{header:?}");
        }
    }
}
