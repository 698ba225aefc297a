//! The crate's error type. Some variants travel inside `reqwest::Error`s (from the resolver and
//! the redirect policy), which is how [`crate::http::classify_send_error`] recognises them.

use std::net::IpAddr;

/// What can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The destination resolved to an address outbound requests may not reach.
    #[error("{}", not_allowed_message(host, addr))]
    AddressNotAllowed {
        /// The host as written in the URL.
        host: String,
        /// The refused address.
        addr: IpAddr,
    },
    /// The host name could not be resolved.
    #[error("could not resolve {host}: {source}")]
    Resolve {
        /// The host name.
        host: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A redirect chain longer than the client follows.
    #[error("more than {max} redirects (last to {url})")]
    TooManyRedirects {
        /// How many redirects are followed.
        max: usize,
        /// The redirect that was not followed.
        url: String,
    },
    /// A redirect to something other than an http or https URL.
    #[error("redirect to {url} refused: only http and https are followed")]
    RedirectScheme {
        /// The redirect target.
        url: String,
    },
    /// The HTTP client could not be built (e.g. no TLS provider installed).
    #[error("could not build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    /// A setting is unusable (e.g. a secret key that is not 64 hex characters).
    #[error("{0}")]
    Config(String),
    /// Sealed credentials that do not open.
    #[error("{0}")]
    Sealed(String),
}

fn not_allowed_message(host: &str, addr: &IpAddr) -> String {
    let what = if host == addr.to_string() { format!("{addr} is") } else { format!("{host} resolves to {addr},") };
    format!(
        "{what} a private, loopback, link-local or otherwise non-public address, which outbound \
         requests may not reach; the operator can allow such addresses with \
         SWITCHBOARD_HTTP_ALLOW_PRIVATE=true"
    )
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
