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

/// Whether `signature_header` is Twilio's signature of a request to `url` in either of its
/// port forms: Twilio signs the URL as it was configured, which may or may not name the
/// scheme's default port (`https://host:443/…` or `https://host/…`), so both are tried.
pub fn signature_is_valid_any_port(auth_token: &str, url: &str, params: &[(String, String)], signature_header: &str) -> bool {
    port_forms(url).iter().any(|form| signature_is_valid(auth_token, form, params, signature_header))
}

/// `url` as written, and with its default port added or removed.
pub fn port_forms(url: &str) -> Vec<String> {
    let mut forms = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else { return forms };
    let default = match scheme.to_ascii_lowercase().as_str() {
        "https" => "443",
        "http" => "80",
        _ => return forms,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // The port follows the last ':' outside an IPv6 literal's brackets.
    let host_end = authority.rfind(']').map_or(0, |i| i + 1);
    match authority[host_end..].rfind(':') {
        Some(colon) => {
            let (host, port) = authority.split_at(host_end + colon);
            if &port[1..] == default {
                forms.push(format!("{scheme}://{host}{tail}"));
            }
        }
        None => forms.push(format!("{scheme}://{authority}:{default}{tail}")),
    }
    forms
}

/// Twilio's signature of a request to `url` with the form `params`, as `X-Twilio-Signature`
/// carries it: what a local fake of Twilio sends, and what tests sign with.
pub fn sign(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(signing_mac(auth_token, url, params).finalize().into_bytes())
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

    /// The vector of Twilio's request-validation documentation and SDK tests.
    #[test]
    fn twilios_published_vector_verifies() {
        let params: Vec<(String, String)> =
            [("CallSid", "CA1234567890ABCDE"), ("Caller", "+14158675309"), ("Digits", "1234"), ("From", "+14158675309"), ("To", "+18005551212")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        assert_eq!(sign(TOKEN, URL, &params), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        assert!(signature_is_valid(TOKEN, URL, &params, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        // Signed with the port, checked against the URL without it, and the reverse.
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        assert!(signature_is_valid_any_port(TOKEN, with_port, &params, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        assert!(signature_is_valid_any_port(TOKEN, URL, &params, &sign(TOKEN, with_port, &params)));
        assert!(!signature_is_valid_any_port(TOKEN, "https://mycompany.com:8443/myapp.php?foo=1&bar=2", &params, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
    }

    #[test]
    fn port_forms_add_or_drop_only_the_default_port() {
        assert_eq!(port_forms("https://a.test/x?y=1"), ["https://a.test/x?y=1", "https://a.test:443/x?y=1"]);
        assert_eq!(port_forms("http://a.test:80/x"), ["http://a.test:80/x", "http://a.test/x"]);
        assert_eq!(port_forms("http://127.0.0.1:8080/x"), ["http://127.0.0.1:8080/x"]);
        assert_eq!(port_forms("http://[::1]/x"), ["http://[::1]/x", "http://[::1]:80/x"]);
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
