//! The reader half of a fan session: client frames in, through tungstenite.
//!
//! Decodes control messages (JSON text or MessagePack binary: `sub`,
//! `unsub`, `ping`) and acts on them (subscriptions in `subscriptions`),
//! answers a bad message with an error frame, enforces the flood limit (a
//! token bucket: close 1008) and the message size limit (close 1009), and
//! notes when the client was last heard from, for the writer's idle check.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::goodbye::End;
use super::limiter::TokenBucket;
use super::session::{Conn, Stage};
use super::subscriptions::{self, Subscriptions};
use crate::codec::{self, ClientMsg, FrameKind};
use crate::fanout::outbox::Outbox;

/// Bytes tungstenite reserves to read client frames. Fans send little (a few
/// control messages), so a small buffer keeps idle connections cheap; larger
/// messages (up to `ws.max_message_bytes`) still arrive, in several reads.
const READ_BUFFER_BYTES: usize = 512;

/// The stream tungstenite reads client frames from: the connection's read
/// half. What tungstenite writes (pongs, its close reply) is already framed
/// and goes out through the outbox, in order with everything else.
pub(super) struct ClientStream {
    read: Box<dyn AsyncRead + Send + Unpin>,
    outbox: Arc<Outbox>,
}

impl AsyncRead for ClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(if self.outbox.push_framed(Bytes::copy_from_slice(buf)) {
            Ok(buf.len())
        } else {
            Err(io::ErrorKind::BrokenPipe.into())
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Client frames, as tungstenite reads them.
pub(super) type Reader = WebSocketStream<ClientStream>;

/// The client's frames, read with tungstenite from the connection's read
/// half (and the bytes that came right behind the upgrade request), at most
/// `ws.max_message_bytes` a message.
pub(super) async fn open(
    read: Box<dyn AsyncRead + Send + Unpin>,
    pre_read: Bytes,
    conn: &Conn,
) -> Reader {
    let max_message = conn.cfg().max_message_bytes;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let client = ClientStream {
        read,
        outbox: conn.outbox.clone(),
    };
    // `pre_read` may share the HTTP server's whole read buffer (kilobytes,
    // even when empty): copy what it holds and let it go now.
    let pre_read: Vec<u8> = {
        let shared = pre_read;
        shared.to_vec()
    };
    if pre_read.is_empty() {
        WebSocketStream::from_raw_socket(client, Role::Server, Some(config)).await
    } else {
        WebSocketStream::from_partially_read(client, pre_read, Role::Server, Some(config)).await
    }
}

/// Reads client frames until the client leaves or misbehaves.
pub(super) async fn read_loop(stream: &mut Reader, conn: &Conn, subs: &mut Subscriptions) -> End {
    let mut bucket = TokenBucket::new(conn.cfg().messages_per_second, conn.cfg().message_burst);
    while let Some(frame) = stream.next().await {
        let msg = match frame {
            Ok(msg) => msg,
            Err(e) => return read_error(&e),
        };
        conn.touch();
        let decoded = match msg {
            Message::Text(text) => {
                if !bucket.try_take() {
                    return End::Flood;
                }
                codec::decode_text(text.as_str())
            }
            // A raw frame only comes out of tungstenite when writing.
            Message::Frame(_) => continue,
            Message::Binary(bytes) => {
                if !bucket.try_take() {
                    return End::Flood;
                }
                codec::decode_binary(&bytes)
            }
            Message::Close(_) => return End::ClientClosed,
            // Pings are answered by the WebSocket layer; pongs only count as life.
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        match decoded {
            Ok(msg) => handle_msg(conn, subs, msg).await,
            Err(e) => conn.send_error("bad_message", &e.to_string(), None),
        }
    }
    End::ClientGone
}

/// Classifies a read error: a message or frame over the size limit is a
/// capacity error, a text frame that is not UTF-8 a UTF-8 error.
fn read_error(e: &WsError) -> End {
    match e {
        WsError::Capacity(_) => End::TooBig,
        WsError::Utf8(_) => End::BadUtf8,
        _ => {
            tracing::debug!(error = %e, "read failed");
            End::ClientGone
        }
    }
}

/// Handles one decoded control message.
pub(crate) async fn handle_msg(conn: &Conn, subs: &mut Subscriptions, msg: ClientMsg) {
    handle(conn, subs, msg).await;
    conn.outbox
        .set_many_games(subs.games.len() > 1 || !subs.leagues.is_empty());
    conn.reached(Stage::Handled);
}

/// Acts on one decoded control message.
async fn handle(conn: &Conn, subs: &mut Subscriptions, msg: ClientMsg) {
    match msg {
        ClientMsg::Sub {
            games,
            leagues,
            since,
        } => subscriptions::subscribe(conn, subs, &games, &leagues, &since).await,
        ClientMsg::Unsub { games, leagues } => {
            subscriptions::unsubscribe(conn, subs, &games, &leagues).await
        }
        ClientMsg::Ping => {
            conn.outbox
                .push_control(FrameKind::Pong, None, codec::pong());
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpStream;

    use crate::codec;
    use crate::config::WsConfig;
    use crate::ws::testkit::{PATIENCE, read_until_close, send, start};

    /// A client frame sent in the same packet as the upgrade request is read
    /// by the HTTP server along with it; the session must still see it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frame_right_behind_the_upgrade_request_is_not_lost() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let hub = start(WsConfig::default()).await;
        let mut tcp = TcpStream::connect(hub.addr).await.unwrap();
        let mut bytes = b"GET /v1/ws HTTP/1.1\r\nHost: hub\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Sec-WebSocket-Version: 13\r\n\r\n"
            .to_vec();
        // A masked text frame {"op":"ping"}.
        let payload = br#"{"op":"ping"}"#;
        let mask = [1u8, 2, 3, 4];
        bytes.extend_from_slice(&[0x81, 0x80 | payload.len() as u8]);
        bytes.extend_from_slice(&mask);
        bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        tcp.write_all(&bytes).await.unwrap();

        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let head_end = loop {
            let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "the hub closed the connection");
            got.extend_from_slice(&buf[..n]);
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&got[..head_end]).to_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        // RFC 6455 §1.3's example key and accept value.
        assert!(
            head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        let mut rest = got[head_end..].to_vec();
        while rest.len() < 2 || rest.len() < 2 + usize::from(rest[1]) {
            let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "the hub closed the connection");
            rest.extend_from_slice(&buf[..n]);
        }
        assert_eq!(rest[0], 0x82, "a binary frame");
        let frame = codec::decode_frame(&rest[2..2 + usize::from(rest[1])]).unwrap();
        assert_eq!(frame.t, "p", "the pong answering the early ping");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_closes_with_1008() {
        let ws = WsConfig {
            messages_per_second: 1,
            message_burst: 3,
            ..WsConfig::default()
        };
        let hub = start(ws).await;
        let mut fan = hub.connect("").await;
        for _ in 0..10 {
            send(&mut fan, r#"{"op":"ping"}"#).await;
        }
        let (code, frames) = read_until_close(&mut fan).await;
        assert_eq!(code, Some(1008));
        assert!(frames.iter().all(|f| f.t == "p"));
        assert!(frames.len() <= 3, "no more than the burst is answered");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_oversized_message_closes_with_1009() {
        let ws = WsConfig {
            max_message_bytes: 256,
            ..WsConfig::default()
        };
        let hub = start(ws).await;
        let mut fan = hub.connect("").await;
        let big = format!(r#"{{"op":"sub","games":["{}"]}}"#, "x".repeat(1000));
        send(&mut fan, &big).await;
        let (code, _) = read_until_close(&mut fan).await;
        assert_eq!(code, Some(1009));
    }
}
