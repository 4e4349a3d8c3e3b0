//! The WebSocket opening handshake (RFC 6455 §4.2) over hyper's upgrade.
//!
//! The hub takes the upgraded connection itself instead of through axum's
//! `WebSocket`, because the session writes pre-encoded frames straight to
//! the socket (see [`wire`](crate::fanout::wire)) and reads client frames with
//! tungstenite from the read half only. Whenever the connection is the
//! hub's TCP stream (as [`crate::http::serve`] gives it, watched by
//! [`crate::net::Watched`]) it is unwrapped from hyper and from the watch
//! and split into owned halves, so a game actor writes to it with
//! `try_write_vectored`: no lock shared with the reader, no waker, and no
//! share of the actor's cooperative-scheduling budget (which would make all
//! but the first 128 writes of a fan-out wait for a later poll).

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Version, header};
use axum::response::Response;
use bytes::Bytes;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncRead;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::error::ApiError;
use crate::fanout::wire::Socket;
use crate::net::Watched;

/// A valid WebSocket upgrade request, ready to be accepted.
#[derive(Debug)]
pub(crate) struct WsUpgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// An upgraded connection, split.
pub(crate) struct Upgrade {
    /// Where client frames come from.
    pub read: Box<dyn AsyncRead + Send + Unpin>,
    /// Bytes the client sent right behind its upgrade request (already read
    /// by the HTTP server); they come before anything from `read`.
    pub pre_read: Bytes,
    /// Where server frames go.
    pub write: Socket,
}

impl Upgrade {
    fn new(upgraded: Upgraded, send_buffer_bytes: usize) -> Upgrade {
        match upgraded.downcast::<TokioIo<Watched>>() {
            Ok(parts) => {
                let tcp = parts.io.into_inner().into_tcp();
                limit_send_buffer(&tcp, send_buffer_bytes);
                let (read, write) = tcp.into_split();
                Upgrade {
                    read: Box::new(read),
                    pre_read: parts.read_buf,
                    write: Socket::tcp(write),
                }
            }
            Err(upgraded) => {
                // Not the hub's TCP stream: go through hyper's object.
                let (read, write) = tokio::io::split(TokioIo::new(upgraded));
                Upgrade {
                    read: Box::new(read),
                    pre_read: Bytes::new(),
                    write: Socket::new(write),
                }
            }
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let refuse = |why: &str| {
            ApiError::BadRequest(format!(
                "GET /v1/ws only takes WebSocket upgrades ({why}); connect with a WebSocket client"
            ))
        };
        if parts.version != Version::HTTP_11 {
            return Err(refuse("the upgrade needs HTTP/1.1"));
        }
        if parts.method != Method::GET {
            return Err(refuse("the method must be GET"));
        }
        if !has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(refuse("the Connection header must include `upgrade`"));
        }
        if !has_token(&parts.headers, header::UPGRADE, "websocket") {
            return Err(refuse("the Upgrade header must be `websocket`"));
        }
        if !has_token(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return Err(refuse("the Sec-WebSocket-Version header must be 13"));
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or_else(|| refuse("the Sec-WebSocket-Key header is missing"))?;
        if !is_websocket_key(key.as_bytes()) {
            return Err(refuse(
                "the Sec-WebSocket-Key header must be 16 bytes in base64, 24 characters",
            ));
        }
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or_else(|| refuse("this connection cannot be upgraded"))?;
        Ok(WsUpgrade { key, on_upgrade })
    }
}

impl WsUpgrade {
    /// Answers `101 Switching Protocols` and runs `session` on the upgraded
    /// connection once hyper hands it over (in a task of its own), its
    /// kernel send buffer set to `send_buffer_bytes` (0: left to the kernel).
    pub(crate) fn accept<F, Fut>(self, send_buffer_bytes: usize, session: F) -> Response
    where
        F: FnOnce(Upgrade) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => session(Upgrade::new(upgraded, send_buffer_bytes)).await,
                Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
            }
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(self.key.as_bytes())) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }
}

/// Asks the kernel for a send buffer of `bytes` (`SO_SNDBUF`; 0: leave
/// auto-tuning on). A fan that stops reading can then pin at most that much
/// kernel memory (twice it, as Linux counts) before its queue conflates.
fn limit_send_buffer(tcp: &TcpStream, bytes: usize) {
    if bytes == 0 {
        return;
    }
    if let Err(e) = socket2::SockRef::from(tcp).set_send_buffer_size(bytes) {
        tracing::debug!(error = %e, bytes, "cannot set the fan socket's send buffer");
    }
}

/// Whether the comma-separated header `name` holds `token` (any case).
/// Whether `key` is what RFC 6455 (4.1) asks of `Sec-WebSocket-Key`: 16
/// bytes in base64, so 22 base64 digits (the last one with its low four bits
/// zero) and `==`.
fn is_websocket_key(key: &[u8]) -> bool {
    let digit = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    matches!(key, [head @ .., last, b'=', b'='] if head.len() == 21
        && head.iter().all(digit)
        && matches!(last, b'A' | b'Q' | b'g' | b'w'))
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_the_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn only_16_bytes_in_base64_are_a_key() {
        assert!(is_websocket_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(is_websocket_key(b"AAAAAAAAAAAAAAAAAAAAAA=="));
        for bad in [
            &b""[..],
            b"x",
            b"dGhlIHNhbXBsZSBub25jZQ",
            b"dGhlIHNhbXBsZSBub25jZR==",
            b"dGhlIHNhbXBsZSBub25jZQ===",
            b"dGhlIHNhbXBsZSBub2 jZQ==",
        ] {
            assert!(!is_websocket_key(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[tokio::test]
    async fn the_send_buffer_is_limited_unless_zero() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let before = socket2::SockRef::from(&server).send_buffer_size().unwrap();
        limit_send_buffer(&server, 0);
        assert_eq!(
            socket2::SockRef::from(&server).send_buffer_size().unwrap(),
            before
        );
        limit_send_buffer(&server, 8 * 1024);
        let after = socket2::SockRef::from(&server).send_buffer_size().unwrap();
        // Linux doubles the value asked for, and keeps a minimum.
        assert!(
            after <= 2 * 8 * 1024 + 4096 && after != before,
            "{before} -> {after}"
        );
    }

    #[test]
    fn header_tokens_are_matched_in_lists_and_any_case() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(has_token(&h, header::CONNECTION, "upgrade"));
        assert!(!has_token(&h, header::CONNECTION, "close"));
        assert!(!has_token(&h, header::UPGRADE, "websocket"));
    }
}
