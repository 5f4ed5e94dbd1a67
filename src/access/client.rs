//! The client a request comes from: the peer address, or, when the peer is a proxy we trust, the first
//! address in `X-Forwarded-For` that is not one of ours. A forged header from an untrusted peer changes
//! nothing, and a flood through a trusted proxy is charged to the addresses behind it, not to the proxy.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client of a request that reached us from `peer` with `headers`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&canonical(*ip)));
    if !is_trusted(&peer) {
        return canonical(peer);
    }
    // Each proxy appends the address it was reached from: read from the right, skipping our own proxies.
    let mut hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|hop| parse_hop(hop.trim()))
        .collect::<Option<Vec<_>>>()
        // An unreadable chain is not to be trusted: charge the proxy.
        .unwrap_or_default();
    hops.reverse();
    let mut client = canonical(peer);
    for hop in hops {
        client = canonical(hop);
        if !is_trusted(&client) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5678`, `[::1]:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

/// An IPv4 address mapped into IPv6 (`::ffff:1.2.3.4`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_trusted;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let trusted = parse_trusted("127.0.0.1").unwrap();
        assert_eq!(
            client_ip(ip("203.0.113.9"), &headers("198.51.100.1"), &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), &headers("198.51.100.1"), &[]),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_first_untrusted_hop_from_the_right_is_the_client() {
        let trusted = parse_trusted("127.0.0.1, 10.0.0.0/8").unwrap();
        // The client forged the first entry; the proxy appended what it saw.
        assert_eq!(
            client_ip(
                ip("127.0.0.1"),
                &headers("1.1.1.1, 198.51.100.7, 10.0.0.3"),
                &trusted
            ),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip(
                ip("::ffff:127.0.0.1"),
                &headers("[2001:db8::1]:443"),
                &trusted
            ),
            ip("2001:db8::1")
        );
        // No header: the proxy itself.
        assert_eq!(
            client_ip(ip("127.0.0.1"), &HeaderMap::new(), &trusted),
            ip("127.0.0.1")
        );
        // Garbage in the chain: charged to the proxy, never to a name the client chose.
        assert_eq!(
            client_ip(ip("127.0.0.1"), &headers("evil, 198.51.100.7"), &trusted),
            ip("127.0.0.1")
        );
    }
}
