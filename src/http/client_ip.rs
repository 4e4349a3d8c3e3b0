//! The client's address behind reverse proxies.
//!
//! A proxy connects to the hub itself, so without help every fan behind it
//! has the proxy's address: one bucket for the per-address connect limit,
//! one address in the logs. Proxies append the address they received a
//! request from to a header (`X-Forwarded-For: client, proxy1`, or RFC 7239
//! `Forwarded: for=client, for=proxy1`), but anyone can send that header,
//! so it is believed only from a peer inside `http.trusted_proxies`, and
//! only the one header `http.proxy_header` names (a proxy maintaining
//! `X-Forwarded-For` passes a client's own `Forwarded` along untouched).
//!
//! The header is read from the right, where the nearest proxy appended its
//! peer: each trusted hop is skipped, and the first address that is not a
//! trusted proxy is the client. Whatever the client wrote further left is
//! never looked at, so it cannot choose its own address. When every hop is
//! trusted, the leftmost is the client. When the peer is trusted but the
//! header is missing, or a hop on the way is not an address (malformed,
//! `unknown`, an obfuscated RFC 7239 identifier), the peer's own address is
//! used: that is what the hub sees for sure.
//!
//! The result is the [`ClientIp`] of the request: the per-address
//! WebSocket connect limit counts it, and the request's span carries it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, header};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

use crate::config::{HttpConfig, ProxyHeader};
use crate::extract::ClientIp;

/// The proxies whose forwarding header the hub believes.
#[derive(Debug, Clone)]
pub(crate) struct Proxies {
    trusted: Vec<IpNet>,
    header: ProxyHeader,
}

impl Proxies {
    /// `http.trusted_proxies` and `http.proxy_header`.
    pub(crate) fn new(config: &HttpConfig) -> Proxies {
        Proxies {
            trusted: config.trusted_proxies.clone(),
            header: config.proxy_header,
        }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a request from `peer` with `headers`.
    pub(crate) fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if self.trusted.is_empty() || !self.trusts(peer) {
            return peer;
        }
        let name = match self.header {
            ProxyHeader::XForwardedFor => HeaderName::from_static("x-forwarded-for"),
            ProxyHeader::Forwarded => header::FORWARDED,
        };
        let Some(hops) = elements(headers, &name) else {
            tracing::debug!(%peer, header = %name, "a trusted proxy sent a forwarding header that is not text; using the peer's address");
            return peer;
        };
        let mut client = None;
        for hop in hops.iter().rev() {
            let parsed = match self.header {
                ProxyHeader::XForwardedFor => parse_xff_hop(hop),
                ProxyHeader::Forwarded => parse_forwarded_hop(hop),
            };
            let Some(ip) = parsed.map(canonical) else {
                tracing::debug!(%peer, header = %name, "a trusted proxy forwarded a hop that is not an address; using the peer's address");
                return peer;
            };
            if !self.trusts(ip) {
                return ip;
            }
            client = Some(ip);
        }
        // Every hop is a trusted proxy: the leftmost is as far as it goes.
        client.unwrap_or(peer)
    }
}

/// Sets the request's [`ClientIp`] from its peer and headers.
pub(crate) async fn client_ip(
    State(proxies): State<Arc<Proxies>>,
    mut req: Request,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
        let ip = proxies.client(peer.ip(), req.headers());
        req.extensions_mut().insert(ClientIp(ip));
    }
    next.run(req).await
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The comma-separated elements of every `name` header, in order (a list
/// may be split over several header lines); commas inside quoted strings do
/// not split. `None` when a value is not text.
fn elements(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for value in headers.get_all(name) {
        let text = value.to_str().ok()?;
        out.extend(
            split_outside_quotes(text, ',')
                .into_iter()
                .map(|e| e.trim().to_owned())
                .filter(|e| !e.is_empty()),
        );
    }
    Some(out)
}

/// Splits `text` at `sep`, except inside `"quoted strings"` (with `\`
/// escapes).
fn split_outside_quotes(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// One `X-Forwarded-For` hop: an IPv4 or IPv6 address, possibly with a
/// port (`192.0.2.1:4711`, `[2001:db8::1]:4711`) or in brackets.
fn parse_xff_hop(hop: &str) -> Option<IpAddr> {
    parse_address(hop.trim())
}

/// One RFC 7239 element (`for=192.0.2.60;proto=http;by=203.0.113.43`): its
/// `for` address. `None` without one, or when it is `unknown` or an
/// obfuscated identifier (`_hidden`).
fn parse_forwarded_hop(element: &str) -> Option<IpAddr> {
    let value = split_outside_quotes(element, ';')
        .into_iter()
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
        .map(|(_, value)| value.trim())?;
    let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(quoted) => quoted.replace('\\', ""),
        None => value.to_owned(),
    };
    parse_address(&value)
}

/// `ip`, `ip:port`, `[ipv6]` or `[ipv6]:port`.
fn parse_address(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    s.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<std::net::Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn proxies(trusted: &[&str], header: ProxyHeader) -> Proxies {
        Proxies {
            trusted: trusted.iter().map(|n| n.parse().unwrap()).collect(),
            header,
        }
    }

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const PROXY: &str = "10.0.0.2";

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let p = proxies(&["10.0.0.0/24"], ProxyHeader::XForwardedFor);
        let h = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(p.client(ip("198.51.100.1"), &h), ip("198.51.100.1"));
        // Nothing trusted at all: headers are never read.
        let none = proxies(&[], ProxyHeader::XForwardedFor);
        assert_eq!(none.client(ip(PROXY), &h), ip(PROXY));
    }

    #[test]
    fn x_forwarded_for_is_walked_from_the_right_skipping_trusted_hops() {
        let p = proxies(
            &["10.0.0.0/24", "192.168.7.7/32"],
            ProxyHeader::XForwardedFor,
        );
        // client -> 192.168.7.7 -> 10.0.0.2 -> hub
        let h = headers("x-forwarded-for", &["203.0.113.9, 192.168.7.7"]);
        assert_eq!(p.client(ip(PROXY), &h), ip("203.0.113.9"));
        // What the client wrote on the left is never believed.
        let h = headers("x-forwarded-for", &["6.6.6.6, 203.0.113.9"]);
        assert_eq!(p.client(ip(PROXY), &h), ip("203.0.113.9"));
        let h = headers("x-forwarded-for", &["garbage, 203.0.113.9"]);
        assert_eq!(p.client(ip(PROXY), &h), ip("203.0.113.9"));
        // Several header lines form one list.
        let h = headers("x-forwarded-for", &["6.6.6.6", "203.0.113.9, 10.0.0.5"]);
        assert_eq!(p.client(ip(PROXY), &h), ip("203.0.113.9"));
        // Ports and brackets.
        let h = headers("x-forwarded-for", &["[2001:db8::9]:4711"]);
        assert_eq!(p.client(ip(PROXY), &h), ip("2001:db8::9"));
        let h = headers("x-forwarded-for", &["203.0.113.9:5000"]);
        assert_eq!(p.client(ip(PROXY), &h), ip("203.0.113.9"));
        // Every hop trusted: the leftmost.
        let h = headers("x-forwarded-for", &["10.0.0.7, 10.0.0.8"]);
        assert_eq!(p.client(ip(PROXY), &h), ip("10.0.0.7"));
        // The Forwarded header is not the configured one: ignored.
        let h = headers("forwarded", &["for=203.0.113.9"]);
        assert_eq!(p.client(ip(PROXY), &h), ip(PROXY));
    }

    #[test]
    fn a_malformed_or_missing_header_falls_back_to_the_peer() {
        let p = proxies(&["10.0.0.0/24"], ProxyHeader::XForwardedFor);
        for bad in ["not-an-ip", "203.0.113.9, nonsense", "unknown", "1.2.3.4.5"] {
            let h = headers("x-forwarded-for", &[bad]);
            assert_eq!(p.client(ip(PROXY), &h), ip(PROXY), "{bad}");
        }
        assert_eq!(p.client(ip(PROXY), &HeaderMap::new()), ip(PROXY));
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"203.0.113.\xff").unwrap(),
        );
        assert_eq!(p.client(ip(PROXY), &h), ip(PROXY));
    }

    #[test]
    fn forwarded_for_is_read_per_rfc_7239() {
        let p = proxies(&["10.0.0.0/24"], ProxyHeader::Forwarded);
        let h = headers(
            "forwarded",
            &["for=6.6.6.6, For=\"[2001:db8:cafe::17]:4711\";proto=https;by=10.0.0.2"],
        );
        assert_eq!(p.client(ip(PROXY), &h), ip("2001:db8:cafe::17"));
        let h = headers("forwarded", &["for=192.0.2.60;proto=http, for=10.0.0.9"]);
        assert_eq!(p.client(ip(PROXY), &h), ip("192.0.2.60"));
        // A quoted comma does not split elements.
        let h = headers("forwarded", &["for=192.0.2.60;ext=\"a,b\""]);
        assert_eq!(p.client(ip(PROXY), &h), ip("192.0.2.60"));
        for unusable in ["for=unknown", "for=_hidden", "proto=https", "for="] {
            let h = headers("forwarded", &[unusable]);
            assert_eq!(p.client(ip(PROXY), &h), ip(PROXY), "{unusable}");
        }
        // X-Forwarded-For is not the configured header: ignored.
        let h = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(p.client(ip(PROXY), &h), ip(PROXY));
    }

    #[test]
    fn ipv4_mapped_peers_and_hops_are_ipv4() {
        let p = proxies(&["10.0.0.0/24"], ProxyHeader::XForwardedFor);
        let h = headers("x-forwarded-for", &["::ffff:203.0.113.9"]);
        assert_eq!(p.client(ip("::ffff:10.0.0.2"), &h), ip("203.0.113.9"));
    }
}
