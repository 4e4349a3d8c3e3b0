//! Opening fans' TCP connections so that tens of thousands fit on one machine.
//!
//! Every connection from this machine to one hub address needs its own
//! (source address, source port) pair, and one source address has only about
//! 28,000 ephemeral ports — fewer once closed connections linger in
//! `TIME_WAIT`. On Linux all of 127.0.0.0/8 is loopback, so fans bound to
//! 127.0.0.1 … 127.0.0.250 (round-robin by fan number) have 250 times the
//! ports. Hubs on other addresses (`[::1]`, or remote with `--allow-remote`)
//! are dialled plainly.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context, Result};
use tokio::net::{TcpSocket, TcpStream};

/// Source addresses used: 127.0.0.1 ..= 127.0.0.SOURCE_ADDRESSES.
pub(crate) const SOURCE_ADDRESSES: usize = 250;

/// The address fan number `index` connects from when dialling `target`: one
/// of 127.0.0.1 … 127.0.0.250 (any port) when the target is IPv4 loopback,
/// else `None` (let the system choose).
pub(crate) fn source_for(target: SocketAddr, index: usize) -> Option<SocketAddr> {
    match target.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            // `index % 250 + 1` is at most 250, so it fits a u8.
            let host = u8::try_from(index % SOURCE_ADDRESSES + 1).unwrap_or(1);
            Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)),
                0,
            ))
        }
        _ => None,
    }
}

/// Connects to `target`, from `source` when given.
pub(crate) async fn connect(
    target: SocketAddr,
    source: Option<SocketAddr>,
) -> std::io::Result<TcpStream> {
    open(target, source, None).await
}

/// Connects to `target`, from `source` when given, with a receive buffer of
/// about `recv_buffer` bytes (Linux doubles it for bookkeeping). Set before
/// connecting, so that the window offered to the peer is small from the
/// start: a client that then stops reading makes the peer's writes back up
/// after a few KiB instead of the usual hundreds.
pub(crate) async fn connect_small_window(
    target: SocketAddr,
    source: Option<SocketAddr>,
    recv_buffer: u32,
) -> std::io::Result<TcpStream> {
    open(target, source, Some(recv_buffer)).await
}

/// Opens the connection of [`connect`] and [`connect_small_window`].
async fn open(
    target: SocketAddr,
    source: Option<SocketAddr>,
    recv_buffer: Option<u32>,
) -> std::io::Result<TcpStream> {
    let stream = if source.is_none() && recv_buffer.is_none() {
        TcpStream::connect(target).await?
    } else {
        let socket = if target.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        if let Some(source) = source {
            socket.bind(source)?;
        }
        socket.connect(target).await?
    };
    // Fans send little (a subscription, pongs); do not delay it.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The socket address of a `ws://host:port` base, resolved once (IPv4
/// preferred) so that fans do not each ask the resolver.
pub(crate) async fn resolve(ws_base: &str) -> Result<SocketAddr> {
    let url = reqwest::Url::parse(ws_base).with_context(|| format!("{ws_base:?} is not a URL"))?;
    let host = url
        .host_str()
        .with_context(|| format!("{ws_base:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("resolving {host}:{port}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .with_context(|| format!("{host}:{port} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::{connect, connect_small_window, resolve, source_for};
    use std::net::SocketAddr;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("a socket address")
    }

    #[test]
    fn loopback_targets_get_sources_spread_over_127_0_0_x() {
        let hub = addr("127.0.0.1:8080");
        assert_eq!(source_for(hub, 0), Some(addr("127.0.0.1:0")));
        assert_eq!(source_for(hub, 249), Some(addr("127.0.0.250:0")));
        assert_eq!(source_for(hub, 250), Some(addr("127.0.0.1:0")));
        assert_eq!(source_for(addr("[::1]:8080"), 3), None);
        assert_eq!(source_for(addr("192.0.2.1:8080"), 3), None);
    }

    #[tokio::test]
    async fn a_connection_comes_from_its_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let target = listener.local_addr().expect("local address");
        let stream = connect(target, source_for(target, 41))
            .await
            .expect("connects");
        let (_accepted, peer) = listener.accept().await.expect("accepts");
        assert_eq!(peer.ip(), addr("127.0.0.42:0").ip());
        assert_eq!(stream.local_addr().expect("local").ip(), peer.ip());
    }

    #[tokio::test]
    async fn a_small_window_connection_keeps_its_small_receive_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let target = listener.local_addr().expect("local address");
        let stream = connect_small_window(target, source_for(target, 3), 4096)
            .await
            .expect("connects");
        let (_accepted, peer) = listener.accept().await.expect("accepts");
        assert_eq!(peer.ip(), addr("127.0.0.4:0").ip());
        let socket = tokio::net::TcpSocket::from_std_stream(stream.into_std().expect("std"));
        let size = socket.recv_buffer_size().expect("SO_RCVBUF");
        // Linux doubles the size asked for; the default is 128 KiB or more.
        assert!((4096..=8192).contains(&size), "SO_RCVBUF {size}");
    }

    #[tokio::test]
    async fn ws_bases_resolve_once() {
        assert_eq!(
            resolve("ws://127.0.0.1:8081").await.expect("resolves"),
            addr("127.0.0.1:8081")
        );
        assert_eq!(
            resolve("ws://[::1]:8082").await.expect("resolves"),
            addr("[::1]:8082")
        );
    }
}
