//! Client addresses behind reverse proxies, pure: `serve.trusted_proxies` lists the addresses
//! and CIDR ranges of the proxies in front of the server. A request whose TCP peer is one of
//! them comes from the rightmost address of its `X-Forwarded-For` that is not itself trusted
//! (each proxy appends the address it received the request from, so everything left of that
//! was written by the client and proves nothing). A peer that is not trusted is the client,
//! whatever header it sends. The login's per-address limit and its log use this address.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The header proxies append the client's address to.
pub const FORWARDED_FOR: &str = "x-forwarded-for";

/// The most `X-Forwarded-For` entries read from the right before giving up on finding an
/// untrusted one: more proxies than this in a row is a header written to waste time.
const MAX_HOPS: usize = 32;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// Where a request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client's address: the peer, or what a trusted proxy forwarded.
    pub addr: IpAddr,
    /// The trusted proxy it came through, when the address is a forwarded one.
    pub via: Option<IpAddr>,
}

impl TrustedProxies {
    /// Reads `serve.trusted_proxies`: each entry an address (`10.0.0.7`, `::1`) or a CIDR
    /// range (`10.0.0.0/8`, `fd00::/8`). The error names the entry and says what it should be.
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        let mut nets = Vec::with_capacity(entries.len());
        for (i, text) in entries.iter().enumerate() {
            let at = format!("serve.trusted_proxies[{i}] = '{text}'");
            let t = text.trim();
            let net = if t.contains('/') {
                let net: IpNet = t.parse().map_err(|_| {
                    format!(
                        "{at} is not a CIDR range: write an address and a prefix length, like \
                         10.0.0.0/8 or fd00::/8"
                    )
                })?;
                if net.prefix_len() == 0 {
                    return Err(format!(
                        "{at} trusts every address: anyone could then choose the address the \
                         login limit counts by sending X-Forwarded-For; list the proxies' \
                         addresses or their network"
                    ));
                }
                if net.trunc() != net {
                    return Err(format!(
                        "{at} has bits set past its /{} prefix; write the network's address, \
                         {}",
                        net.prefix_len(),
                        net.trunc()
                    ));
                }
                IpNet::new(canonical(net.addr()), prefix_of(net)).unwrap_or(net)
            } else {
                let ip: IpAddr = t.parse().map_err(|_| {
                    format!(
                        "{at} is not an IP address or a CIDR range; write a proxy's address \
                         (10.0.0.7, ::1) or its network (10.0.0.0/8)"
                    )
                })?;
                IpNet::from(canonical(ip))
            };
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }

    /// Whether none is trusted (the peer is always the client).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// Where a request from TCP peer `peer` with `headers` comes from: the peer unless it is a
    /// trusted proxy; then the rightmost `X-Forwarded-For` address that is not trusted (every
    /// entry trusted: the leftmost). No header, an entry that is not an address where the
    /// client's would be, or more than 32 trusted entries: the peer (logged at debug).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Client {
        let peer = canonical(peer);
        let direct = Client {
            addr: peer,
            via: None,
        };
        if !self.trusts(peer) {
            return direct;
        }
        let values: Vec<&str> = match headers
            .get_all(FORWARDED_FOR)
            .iter()
            .map(|v| v.to_str())
            .collect::<Result<_, _>>()
        {
            Ok(v) => v,
            Err(_) => {
                tracing::debug!(peer = %peer, "X-Forwarded-For from a trusted proxy is not text; using the proxy's address");
                return direct;
            }
        };
        if values.iter().all(|v| v.trim().is_empty()) {
            return direct;
        }
        // Several header lines are one list, in order; read from the right.
        let mut leftmost = None;
        for (n, entry) in values.iter().rev().flat_map(|v| v.rsplit(',')).enumerate() {
            if n == MAX_HOPS {
                tracing::debug!(peer = %peer, "X-Forwarded-For from a trusted proxy names more than {MAX_HOPS} trusted proxies; using the proxy's address");
                return direct;
            }
            let entry = entry.trim();
            let Some(ip) = parse_hop(entry) else {
                tracing::debug!(peer = %peer, entry = %truncated(entry), "X-Forwarded-For from a trusted proxy holds an entry that is not an address; using the proxy's address");
                return direct;
            };
            if !self.trusts(ip) {
                return Client {
                    addr: ip,
                    via: Some(peer),
                };
            }
            leftmost = Some(ip);
        }
        match leftmost {
            Some(ip) => Client {
                addr: ip,
                via: Some(peer),
            },
            None => direct,
        }
    }
}

/// An IPv4 address written as IPv6 (`::ffff:10.0.0.7`, what a dual-stack socket reports) as
/// the IPv4 address it is, so one rule matches both forms.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// A range's prefix length once its address is canonical (an IPv4-mapped range becomes IPv4).
fn prefix_of(net: IpNet) -> u8 {
    match (net.addr(), canonical(net.addr())) {
        (IpAddr::V6(_), IpAddr::V4(_)) => net.prefix_len().saturating_sub(96),
        _ => net.prefix_len(),
    }
}

/// One `X-Forwarded-For` entry: an address, with a port some proxies add (`10.0.0.7:5123`,
/// `[::1]:5123`), or `None`.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    entry
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|s| canonical(s.ip()))
}

/// At most 64 characters of a header entry, for a log line.
fn truncated(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn entries_parse_and_bad_ones_are_named() {
        let p = proxies(&[
            "10.0.0.0/8",
            "127.0.0.2",
            "::1",
            "fd00::/8",
            "::ffff:192.168.1.0/120",
        ]);
        assert!(p.trusts(ip("10.1.2.3")));
        assert!(p.trusts(ip("127.0.0.2")) && !p.trusts(ip("127.0.0.1")));
        assert!(p.trusts(ip("::1")) && p.trusts(ip("fd12::7")));
        assert!(p.trusts(ip("::ffff:10.9.9.9")), "an IPv4-mapped peer");
        assert!(p.trusts(ip("192.168.1.77")), "an IPv4-mapped range");
        assert!(TrustedProxies::parse(&[]).unwrap().is_empty());
        for (bad, want) in [
            (
                "proxy.local",
                "serve.trusted_proxies[0] = 'proxy.local' is not an IP address",
            ),
            ("10.0.0.0/33", "is not a CIDR range"),
            ("10.0.0.0/x", "is not a CIDR range"),
            ("0.0.0.0/0", "trusts every address"),
            ("::/0", "trusts every address"),
            (
                "10.0.0.1/8",
                "has bits set past its /8 prefix; write the network's address, 10.0.0.0/8",
            ),
        ] {
            let err = TrustedProxies::parse(&[bad.to_string()]).unwrap_err();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_forwarded_address() {
        let p = proxies(&["127.0.0.2", "10.0.0.0/8"]);
        let proxy = ip("127.0.0.2");
        let c = |h: &HeaderMap| p.client(proxy, h);
        let via = |a: &str| Client {
            addr: ip(a),
            via: Some(proxy),
        };
        assert_eq!(c(&xff(&["203.0.113.9"])), via("203.0.113.9"));
        // The client wrote the left part; the proxies appended the rest.
        assert_eq!(
            c(&xff(&["1.1.1.1, 203.0.113.9, 10.0.0.5"])),
            via("203.0.113.9")
        );
        assert_eq!(
            c(&xff(&["1.1.1.1", "203.0.113.9, 10.0.0.5"])),
            via("203.0.113.9")
        );
        assert_eq!(c(&xff(&["203.0.113.9:5123"])), via("203.0.113.9"));
        assert_eq!(c(&xff(&["[2001:db8::1]:443"])), via("2001:db8::1"));
        assert_eq!(c(&xff(&["::ffff:203.0.113.9"])), via("203.0.113.9"));
        // Garbage left of the client's entry is the client's own writing: ignored.
        assert_eq!(c(&xff(&["nonsense, 203.0.113.9"])), via("203.0.113.9"));
        // Every entry trusted: the leftmost.
        assert_eq!(c(&xff(&["10.0.0.9, 10.0.0.5"])), via("10.0.0.9"));
        // No header, or a malformed entry where the client's should be: the proxy itself.
        let direct = Client {
            addr: proxy,
            via: None,
        };
        assert_eq!(c(&HeaderMap::new()), direct);
        assert_eq!(c(&xff(&[""])), direct);
        assert_eq!(c(&xff(&["203.0.113.9, nonsense"])), direct);
        assert_eq!(c(&xff(&["203.0.113.9,"])), direct);
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(
            p.client(ip("198.51.100.4"), &xff(&["203.0.113.9"])),
            Client {
                addr: ip("198.51.100.4"),
                via: None
            }
        );
        // Nobody trusted (the default): always the peer.
        assert_eq!(
            TrustedProxies::default()
                .client(proxy, &xff(&["203.0.113.9"]))
                .addr,
            proxy
        );
        // A chain of trusted hops longer than any real one is not walked to its end.
        let long = vec!["10.0.0.1"; MAX_HOPS].join(", ");
        assert_eq!(c(&xff(&[&format!("203.0.113.9, {long}")])), direct);
        let long = vec!["10.0.0.1"; MAX_HOPS - 1].join(", ");
        assert_eq!(
            c(&xff(&[&format!("203.0.113.9, {long}")])),
            via("203.0.113.9")
        );
    }
}
