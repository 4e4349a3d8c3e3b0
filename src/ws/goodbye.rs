//! How a fan session ends: why (`End`), what the client is told (its close
//! code), and the teardown.
//!
//! The goodbye takes the socket away from the game actors first, so no
//! diff can follow the close frame (or tungstenite's close reply), then
//! sends what the outbox still holds and the close frame, and waits briefly
//! for the client's reply. The socket tracks whether it stopped inside a
//! frame: when a write the session's end cancelled left half a frame on the
//! wire, anything written now would land inside that frame, so the
//! connection is dropped without a close frame instead. Teardown removes
//! every game subscription and league watch of the connection; a guard
//! closes the outbox and keeps the connection gauge right, panics included.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::reader::Reader;
use super::session::{Conn, Stage};
use super::subscriptions::Subscriptions;
use super::writer::timed;
use crate::fanout::outbox::{Leftovers, Outbox};
use crate::fanout::wire::{self, Socket, Wire};
use crate::metrics as m;

/// Longest wait for the closing handshake (our close frame out, the client's
/// reply in) once a session has decided to end.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// The client sent a close frame.
    ClientClosed,
    /// The stream ended or failed without a close frame.
    ClientGone,
    /// A message above `ws.max_message_bytes`.
    TooBig,
    /// A text frame that is not valid UTF-8 (RFC 6455 requires failing the
    /// connection; tungstenite refuses the frame).
    BadUtf8,
    /// More messages than the token bucket allows.
    Flood,
    /// The outbox overflowed its byte cap: the client stopped reading.
    SlowConsumer,
    /// The outbox stayed conflated for `ws.stuck_timeout`: the client cannot
    /// keep up.
    Stuck,
    /// A socket write took longer than `ws.write_timeout`.
    WriteStalled,
    /// A socket write failed.
    WriteFailed,
    /// Nothing heard from the client for `ws.idle_timeout`.
    Idle,
    /// The hub is shutting down.
    Shutdown,
    /// The outbox was closed from elsewhere.
    OutboxClosed,
}

impl End {
    /// Short name for logs and the `scorehub_ws_closed_total{reason}` label.
    fn label(self) -> &'static str {
        match self {
            End::ClientClosed => "client_closed",
            End::ClientGone => "client_gone",
            End::TooBig => "too_big",
            End::BadUtf8 => "bad_utf8",
            End::Flood => "flood",
            End::SlowConsumer => "slow_consumer",
            End::Stuck => "stuck",
            End::WriteStalled => "write_timeout",
            End::WriteFailed => "write_failed",
            End::Idle => "idle",
            End::Shutdown => "shutdown",
            End::OutboxClosed => "closed",
        }
    }

    /// Whether the server, not the client or the network, ended it.
    fn by_server(self) -> bool {
        matches!(
            self,
            End::TooBig
                | End::BadUtf8
                | End::Flood
                | End::SlowConsumer
                | End::Stuck
                | End::WriteStalled
                | End::Idle
                | End::Shutdown
        )
    }

    /// The close frame the client gets, when the socket can still take one.
    fn close_frame(self) -> Option<(CloseCode, &'static str)> {
        match self {
            End::TooBig => Some((CloseCode::Size, "message too big")),
            End::Flood => Some((CloseCode::Policy, "message rate exceeded")),
            End::BadUtf8 => Some((CloseCode::Invalid, "invalid UTF-8 in a text frame")),
            End::SlowConsumer | End::Stuck => Some((CloseCode::Policy, "slow consumer")),
            End::Idle => Some((CloseCode::Away, "idle timeout")),
            End::Shutdown => Some((CloseCode::Away, "server shutting down")),
            End::ClientClosed
            | End::ClientGone
            | End::WriteStalled
            | End::WriteFailed
            | End::OutboxClosed => None,
        }
    }
}

/// Keeps `scorehub_ws_connections` right and closes the outbox however the
/// session ends, panics included.
pub(super) struct ConnGuard {
    outbox: Arc<Outbox>,
}

impl ConnGuard {
    pub(super) fn new(outbox: Arc<Outbox>) -> ConnGuard {
        metrics::gauge!(m::WS_CONNECTIONS).increment(1.0);
        ConnGuard { outbox }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.outbox.close();
        metrics::gauge!(m::WS_CONNECTIONS).decrement(1.0);
    }
}

/// Counts why the session ended, sends the close frame that says so, and
/// waits briefly for the client's reply (closing a socket with unread input
/// would reset it and could lose the close frame).
pub(super) async fn say_goodbye(held: Option<Socket>, reader: &mut Reader, conn: &Conn, end: End) {
    conn.reached(Stage::Ending);
    if end.by_server() {
        metrics::counter!(m::WS_CLOSED, "reason" => end.label()).increment(1);
    }
    if matches!(end, End::SlowConsumer | End::Stuck | End::WriteStalled) {
        metrics::counter!(m::SLOW_CONSUMER, "action" => "disconnected").increment(1);
    }
    tracing::debug!(reason = end.label(), "fan disconnected");
    let grace = CLOSE_GRACE.min(conn.cfg().write_timeout);
    // The socket leaves the outbox first: no game actor writes to it from
    // here on, so no diff can follow the close frame (or the close reply).
    let socket = held.or_else(|| conn.outbox.detach());
    if end == End::ClientClosed {
        // tungstenite answers a client's close frame; have it hand the reply
        // to the outbox, where it queues.
        let _ = tokio::time::timeout(grace, reader.flush()).await;
    }
    let Leftovers {
        frames: mut last,
        begun,
    } = conn.outbox.close();
    let Some(mut socket) = socket else { return };
    if socket.is_mid_frame() && !begun {
        // The socket stopped inside a frame whose rest went with a write
        // the session's end cancelled: anything written now would land
        // inside that frame. Drop the connection without a close frame.
        tracing::debug!(
            reason = end.label(),
            "closing without a close frame: the socket is inside a frame"
        );
        return;
    }
    let close = end.close_frame();
    if let Some((code, reason)) = close {
        last.push(Wire::Framed(wire::close(code.into(), reason)));
    }
    if last.is_empty() || matches!(end, End::WriteStalled | End::WriteFailed) {
        return;
    }
    if timed(grace, socket.write_all(&last)).await.is_ok() && close.is_some() {
        await_close_reply(reader, grace).await;
    }
}

/// Reads (and ignores) client frames until its close frame, the end of the
/// stream, or `limit`.
async fn await_close_reply(reader: &mut Reader, limit: Duration) {
    let reply = async {
        while let Some(Ok(msg)) = reader.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(limit, reply).await;
}

/// Removes every subscription and league watch of the connection.
pub(crate) async fn teardown(conn: &Conn, subs: &Subscriptions) {
    let registry = conn.games();
    let mut games = subs.games.clone();
    for league in &subs.leagues {
        // Unwatch first, so a game created meanwhile is not subscribed again.
        registry.unwatch_league(league, conn.id).await;
        games.extend(
            registry
                .loaded_league_games(league)
                .iter()
                .map(|h| h.id().clone()),
        );
    }
    for game in games {
        registry.unsubscribe_id(&game, conn.id).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_server_end_has_a_fitting_close_code() {
        assert_eq!(End::Flood.close_frame().map(|c| u16::from(c.0)), Some(1008));
        assert_eq!(
            End::SlowConsumer.close_frame().map(|c| u16::from(c.0)),
            Some(1008)
        );
        assert_eq!(End::Stuck.close_frame().map(|c| u16::from(c.0)), Some(1008));
        assert_eq!(
            End::BadUtf8.close_frame().map(|c| u16::from(c.0)),
            Some(1007)
        );
        assert_eq!(
            End::TooBig.close_frame().map(|c| u16::from(c.0)),
            Some(1009)
        );
        assert_eq!(
            End::Shutdown.close_frame().map(|c| u16::from(c.0)),
            Some(1001)
        );
        assert_eq!(End::WriteStalled.close_frame(), None);
        assert!(!End::ClientClosed.by_server());
    }
}
