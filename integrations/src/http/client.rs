//! Building the shared outbound client, with its address guard.
//!
//! When private addresses are not allowed, three hooks of reqwest together make sure no
//! connection is ever opened to a refused address:
//!
//! - **Host names** go through [`GuardedResolver`], which resolves with tokio and refuses the
//!   whole name if any of its addresses is refused. The addresses it returns are the ones
//!   connected to, so a name that resolves to a public address when checked and to a private one
//!   a moment later (DNS rebinding) cannot slip through: there is only one resolution.
//! - **Literal IP addresses** never reach a resolver (hyper connects to them directly), so a
//!   proxy rule ([`literal_gate`]) sends a refused literal to a "sink" host under the reserved
//!   `.invalid` domain, and the resolver answers that sink with [`Error::AddressNotAllowed`].
//!   This is the only reqwest hook that sees every destination, redirects included, before
//!   connecting.
//! - **Redirects** are followed by a custom policy (at most [`MAX_REDIRECTS`], http and https
//!   only) that refuses literal refused addresses with a clear error before any connection;
//!   redirected host names meet the resolver like any other.
//!
//! Environment proxies (`HTTP_PROXY`, …) are never used: a proxy resolves the destination
//! itself, which would bypass the guard.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect::Policy;
use reqwest::{Proxy, Url};

use super::address::is_allowed;
use crate::{Error, Result};

/// How many redirects one request follows.
pub const MAX_REDIRECTS: usize = 5;

/// How long establishing a connection (TCP and TLS) may take. A failure within this phase is
/// known not to have sent the request, so it is safely retryable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The reserved domain the literal-address gate sends refused destinations to (RFC 6761
/// guarantees `.invalid` never resolves, should anything ever bypass the resolver).
const SINK_SUFFIX: &str = ".address-not-allowed.invalid";

/// Settings of the outbound HTTP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Let requests reach private, loopback, link-local and other non-public addresses
    /// (`SWITCHBOARD_HTTP_ALLOW_PRIVATE`). Off by default.
    pub allow_private: bool,
    /// The `User-Agent` header of every request.
    pub user_agent: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { allow_private: false, user_agent: concat!("switchboard/", env!("CARGO_PKG_VERSION")).to_owned() }
    }
}

/// Builds the outbound client used for vendor calls and `http.request`.
///
/// It follows at most [`MAX_REDIRECTS`] redirects, and unless `cfg.allow_private` is set it
/// refuses to connect to non-public addresses (see [`super::is_allowed`]), whether written as
/// literal IPs, reached through host names or through redirects. A refusal surfaces as a
/// `reqwest::Error` that [`super::classify_send_error`] maps to `address_not_allowed`.
///
/// No request timeout is set here: callers set one per request from the step's timeout.
/// A rustls crypto provider must be installed in the process before calling this.
pub fn client(cfg: &HttpConfig) -> Result<reqwest::Client> {
    build(cfg, redirect_policy(cfg.allow_private))
}

/// The same client with redirects off, for requests that carry secrets a redirect must not
/// take elsewhere (OAuth token requests: the code, the verifier, the client secret).
pub fn client_without_redirects(cfg: &HttpConfig) -> Result<reqwest::Client> {
    build(cfg, Policy::none())
}

fn build(cfg: &HttpConfig, policy: Policy) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().user_agent(cfg.user_agent.clone()).connect_timeout(CONNECT_TIMEOUT).redirect(policy).no_proxy();
    if !cfg.allow_private {
        builder = builder.dns_resolver(GuardedResolver).proxy(literal_gate());
    }
    builder.build().map_err(Error::Build)
}

/// Resolves host names with tokio and refuses names with any non-public address.
#[derive(Debug, Clone, Copy)]
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            if let Some(addr) = sink_addr(&host) {
                return Err(Error::AddressNotAllowed { host: addr.to_string(), addr }.into());
            }
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await.map_err(|source| Error::Resolve { host: host.clone(), source })?.collect();
            // Refuse the whole name if any address is refused: connecting would try them in
            // turn, and a name that mixes public and private addresses is suspicious anyway.
            if let Some(bad) = addrs.iter().find(|a| !is_allowed(a.ip())) {
                return Err(Error::AddressNotAllowed { host, addr: bad.ip() }.into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The address of a URL whose host is a literal IP.
fn literal_ip(url: &Url) -> Option<IpAddr> {
    // `Url` has already normalised every IPv4 spelling (`2130706433`, `0x7f.1`) of http(s)
    // URLs to dotted form, and writes IPv6 in brackets.
    let host = url.host_str()?;
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host).parse().ok()
}

/// The proxy rule that routes refused literal addresses to a sink the resolver refuses.
fn literal_gate() -> Proxy {
    Proxy::custom(|url: &Url| literal_ip(url).filter(|ip| !is_allowed(*ip)).map(sink_url))
}

/// `http://<the address as 32 hex digits>.address-not-allowed.invalid`, so the resolver can name
/// the refused address in its error.
fn sink_url(ip: IpAddr) -> String {
    let v6 = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    format!("http://{:032x}{SINK_SUFFIX}", u128::from(v6))
}

/// The refused address a sink host name stands for.
fn sink_addr(host: &str) -> Option<IpAddr> {
    let label = host.strip_suffix(SINK_SUFFIX)?;
    if label.len() != 32 || !label.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bits = u128::from_str_radix(label, 16).ok()?;
    Some(Ipv6Addr::from(bits).to_canonical())
}

/// Follows at most [`MAX_REDIRECTS`] redirects to http(s) URLs, refusing literal refused
/// addresses up front (refused host names are caught by the resolver when connecting).
fn redirect_policy(allow_private: bool) -> Policy {
    Policy::custom(move |attempt| {
        // `previous` holds every URL requested so far, the original included.
        match check_redirect(attempt.url(), attempt.previous().len(), allow_private) {
            Ok(()) => attempt.follow(),
            Err(e) => attempt.error(e),
        }
    })
}

/// Whether to follow a redirect to `url` after `requested` requests of the chain.
fn check_redirect(url: &Url, requested: usize, allow_private: bool) -> Result<()> {
    if requested > MAX_REDIRECTS {
        return Err(Error::TooManyRedirects { max: MAX_REDIRECTS, url: url.to_string() });
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::RedirectScheme { url: url.to_string() });
    }
    if !allow_private && let Some(addr) = literal_ip(url).filter(|ip| !is_allowed(*ip)) {
        return Err(Error::AddressNotAllowed { host: addr.to_string(), addr });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_names_round_trip_their_address() {
        for ip in ["127.0.0.1", "169.254.169.254", "::1", "fd00::1", "fe80::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            let url = Url::parse(&sink_url(ip)).unwrap();
            assert_eq!(sink_addr(url.host_str().unwrap()), Some(ip));
        }
        assert_eq!(sink_addr("example.com"), None);
        assert_eq!(sink_addr("zz.address-not-allowed.invalid"), None);
    }

    #[test]
    fn redirects_are_limited_to_public_http_targets() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert!(check_redirect(&url("https://example.com/next"), 1, false).is_ok());
        assert!(check_redirect(&url("http://8.8.8.8/next"), MAX_REDIRECTS, false).is_ok());
        assert!(matches!(check_redirect(&url("https://example.com/next"), MAX_REDIRECTS + 1, false), Err(Error::TooManyRedirects { .. })));
        assert!(matches!(check_redirect(&url("ftp://example.com/x"), 1, true), Err(Error::RedirectScheme { .. })));
        let targets = ["http://127.0.0.1/", "http://169.254.169.254/latest/meta-data", "http://[::1]:8080/", "http://2130706433/"];
        for target in targets {
            assert!(matches!(check_redirect(&url(target), 1, false), Err(Error::AddressNotAllowed { .. })), "{target}");
            assert!(check_redirect(&url(target), 1, true).is_ok(), "{target}");
        }
    }
}
