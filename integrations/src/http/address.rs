//! Which IP addresses an outbound request may reach when private addresses are not allowed.
//!
//! `http.request` takes its URL from a workflow author, so without this check a workflow could
//! reach the operator's own network: the cloud metadata service (169.254.169.254), a database on
//! 10.x, an admin port on loopback. Only globally routable unicast addresses pass.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `ip` is a publicly routable unicast address, i.e. one `http.request` may reach when
/// the operator has not set `SWITCHBOARD_HTTP_ALLOW_PRIVATE`.
///
/// Refused: private (RFC 1918), loopback, link-local, unspecified and "this network" (0/8),
/// multicast, broadcast, shared address space (CGNAT, 100.64/10), documentation, benchmarking
/// and reserved ranges, IPv6 unique-local (fc00::/7), link-local (fe80::/10) and site-local
/// (fec0::/10), and any IPv6 form that embeds an IPv4 address (mapped, compatible, NAT64, 6to4)
/// whose IPv4 address is refused.
pub fn is_allowed(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_allowed_v4(v4),
        IpAddr::V6(v6) => is_allowed_v6(v6),
    }
}

fn is_allowed_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let refused = ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        // 0.0.0.0/8 "this network": Linux connects 0.x.x.x to the local host.
        || a == 0
        // 100.64.0.0/10 shared address space (carrier-grade NAT).
        || (a == 100 && (b & 0xc0) == 64)
        // 192.0.0.0/24 IETF protocol assignments.
        || (a == 192 && b == 0 && c == 0)
        // 198.18.0.0/15 benchmarking.
        || (a == 198 && (b & 0xfe) == 18)
        // 240.0.0.0/4 reserved.
        || a >= 240;
    !refused
}

fn is_allowed_v6(ip: Ipv6Addr) -> bool {
    // IPv4-mapped (::ffff:a.b.c.d): the socket connects to the IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_allowed_v4(v4);
    }
    let segments = ip.segments();
    // 64:ff9b::/96 (NAT64): a translator forwards to the embedded IPv4 address.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_allowed_v4(embedded_v4(segments[6], segments[7]));
    }
    // 2002::/16 (6to4): the IPv4 address sits in the next 32 bits.
    if segments[0] == 0x2002 {
        return is_allowed_v4(embedded_v4(segments[1], segments[2]));
    }
    let refused = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        // ::/96, the deprecated IPv4-compatible form (also covers :: and ::1).
        || segments[..6] == [0; 6]
        // fec0::/10, deprecated site-local.
        || (segments[0] & 0xffc0) == 0xfec0
        // 2001:db8::/32, documentation.
        || (segments[0] == 0x2001 && segments[1] == 0x0db8);
    !refused
}

fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(high) << 16) | u32::from(low))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(s: &str) -> bool {
        is_allowed(s.parse().unwrap())
    }

    #[test]
    fn private_and_special_addresses_are_refused() {
        for ip in [
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "127.0.0.1",
            "127.8.9.10",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "::",
            "::1",
            "fe80::1",
            "fd00::1",
            "fc00::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "2001:db8::1",
        ] {
            assert!(!allowed(ip), "{ip} should be refused");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(allowed(ip), "{ip} should be allowed");
        }
    }
}
