//! One SSE fan, from its first `sub` to teardown: the task that drains the
//! fan's outbox into the response body.
//!
//! The fan's parts are the WebSocket session's (`crate::ws::Conn`: an
//! [`Outbox`](crate::fanout::outbox::Outbox) game actors push to, the
//! subscriptions, the teardown), so the guarantees are the same code: a
//! snapshot (or the missed diffs) first, consecutive diffs, conflation and
//! one fresh snapshot for a fan that falls behind. The outbox never gets a
//! socket: every frame queues, and this task takes them in batches, turns
//! each into an event (`event`) and hands the text to the response body
//! through a small bounded channel ([`BODY_CHUNKS`] chunks of at most
//! [`CHUNK_BYTES`] each).
//!
//! A slow reader fills the channel, then hyper's buffer and the kernel's;
//! the task then waits in `send` while its outbox fills and conflates, as a
//! WebSocket writer waits on its socket. A send waiting longer than
//! `ws.write_timeout`, or an outbox conflated for `ws.stuck_timeout`, ends
//! the stream (after an error event `slow_consumer`, when it fits). It also
//! ends when the client goes (the body is dropped) and at shutdown (the
//! body ends cleanly, so the HTTP drain can finish). Keep-alive comments
//! go out every `ws.ping_interval`.
//!
//! The task runs on the hub's session tracker, so shutdown waits for its
//! teardown; a guard keeps `scorehub_sse_connections` right and closes the
//! outbox however it ends.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::event::{self, KEEP_ALIVE};
use super::position::Positions;
use crate::codec::{self, ClientMsg};
use crate::fanout::outbox::{Item, Outbox, Take};
use crate::limits::Slot;
use crate::metrics as m;
use crate::ws::{
    Conn, FrameCounts, Subscriptions, handle_msg, request_resyncs, teardown, until_stuck,
};

/// Chunks of event text waiting for the response body.
pub(crate) const BODY_CHUNKS: usize = 8;

/// A chunk is handed to the body once it holds this many bytes (or the
/// batch ends); one large frame makes one larger chunk.
pub(crate) const CHUNK_BYTES: usize = 64 * 1024;

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client went away (the body was dropped).
    ClientGone,
    /// The client did not take a chunk within `ws.write_timeout`.
    WriteStalled,
    /// The outbox stayed conflated for `ws.stuck_timeout`.
    Stuck,
    /// The outbox overflowed its byte cap.
    SlowConsumer,
    /// The outbox was closed from elsewhere.
    OutboxClosed,
    /// The hub is shutting down.
    Shutdown,
}

impl End {
    /// The `scorehub_sse_closed_total{reason}` label.
    fn label(self) -> &'static str {
        match self {
            End::ClientGone => "client_gone",
            End::WriteStalled => "write_timeout",
            End::Stuck => "stuck",
            End::SlowConsumer => "slow_consumer",
            End::OutboxClosed => "closed",
            End::Shutdown => "shutdown",
        }
    }
}

/// Keeps `scorehub_sse_connections` right and closes the outbox, panics included.
struct Guard(Arc<Outbox>);

impl Guard {
    fn new(outbox: Arc<Outbox>) -> Guard {
        metrics::gauge!(m::SSE_CONNECTIONS).increment(1.0);
        Guard(outbox)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.close();
        metrics::gauge!(m::SSE_CONNECTIONS).decrement(1.0);
    }
}

/// Runs one stream: subscribes (`initial`, resuming at `resume`), then
/// drains frames into `body` until the stream ends, then tears down. The
/// slots are held until then.
pub(crate) async fn run(
    conn: Conn,
    initial: ClientMsg,
    resume: Positions,
    body: mpsc::Sender<Bytes>,
    slots: (Slot, Slot),
    retry_ms: u64,
) {
    let _guard = Guard::new(conn.outbox.clone());
    let mut subs = Subscriptions::default();
    // The hint goes first, on its own; the channel is empty, so it fits.
    let _ = body.try_send(Bytes::from(event::retry_hint(retry_ms)));
    handle_msg(&conn, &mut subs, initial).await;
    // Games resumed without a missed diff get no frame; their positions
    // stay in the id. Positions of games not followed are dropped.
    let mut positions = resume;
    positions.retain(|g| subs.games.contains(g) || subs.leagues.contains(&g.league()));
    let end = if conn.ctx.shutdown.is_cancelled() {
        End::Shutdown
    } else {
        tokio::select! {
            end = pump(&conn, &mut positions, &body) => end,
            () = until_stuck(&conn) => End::Stuck,
            () = body.closed() => End::ClientGone,
        }
    };
    goodbye(&conn, &body, end);
    conn.outbox.close();
    teardown(&conn, &subs).await;
    drop(body);
    drop(slots);
}

/// Counts why the stream ended and, for a slow consumer, tells it (when
/// the body has room; it is ending anyway).
fn goodbye(conn: &Conn, body: &mpsc::Sender<Bytes>, end: End) {
    if end != End::ClientGone {
        metrics::counter!(m::SSE_CLOSED, "reason" => end.label()).increment(1);
    }
    if matches!(end, End::SlowConsumer | End::Stuck | End::WriteStalled) {
        metrics::counter!(m::SLOW_CONSUMER, "action" => "disconnected").increment(1);
        let frame = codec::error(
            "slow_consumer",
            "this stream could not keep up and was closed; reconnect (Last-Event-ID resumes where it stopped)",
            None,
        );
        let mut out = Vec::new();
        if event::append(&mut out, &frame, &mut Positions::default()).is_ok() {
            let _ = body.try_send(Bytes::from(out));
        }
    }
    tracing::debug!(
        conn_id = conn.id,
        reason = end.label(),
        "SSE fan disconnected"
    );
}

/// Drains the outbox into the body, sends keep-alives, asks for fresh
/// snapshots after conflation, and stops at shutdown.
async fn pump(conn: &Conn, positions: &mut Positions, body: &mpsc::Sender<Bytes>) -> End {
    let cfg = conn.cfg();
    let every = cfg.ping_interval.max(Duration::from_millis(1));
    let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut batch = Vec::new();
    let mut resyncing = HashSet::new();
    let shutdown = conn.ctx.shutdown.cancelled();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return End::Shutdown,
            () = conn.outbox.notified() => {
                if let Err(end) = drain(conn, positions, body, &mut batch).await {
                    return end;
                }
                request_resyncs(conn, &mut resyncing).await;
            }
            _ = heartbeat.tick() => {
                if let Err(end) = send(conn, body, Bytes::from_static(KEEP_ALIVE)).await {
                    return end;
                }
                // Ask again: a request may have found the game between
                // unsubscribe and subscribe.
                resyncing.clear();
                request_resyncs(conn, &mut resyncing).await;
            }
        }
    }
}

/// Sends everything queued, as events, in chunks.
async fn drain(
    conn: &Conn,
    positions: &mut Positions,
    body: &mpsc::Sender<Bytes>,
    batch: &mut Vec<Item>,
) -> Result<(), End> {
    loop {
        batch.clear();
        match conn.outbox.take(batch, &mut None) {
            Take::Idle => return Ok(()),
            Take::Closed => {
                return Err(if conn.outbox.overflowed() {
                    End::SlowConsumer
                } else {
                    End::OutboxClosed
                });
            }
            Take::Frames => {}
        }
        let mut chunk = Vec::new();
        let mut sent = FrameCounts::default();
        for item in batch.iter() {
            match event::append(&mut chunk, item.wire.bytes(), positions) {
                Ok(_) => sent.add(item.kind),
                Err(e) => tracing::error!(error = %e, "frame skipped on an SSE stream"),
            }
            if chunk.len() >= CHUNK_BYTES {
                send(conn, body, Bytes::from(std::mem::take(&mut chunk))).await?;
            }
        }
        if !chunk.is_empty() {
            send(conn, body, Bytes::from(chunk)).await?;
        }
        sent.record();
    }
}

/// Hands one chunk to the body within `ws.write_timeout`.
async fn send(conn: &Conn, body: &mpsc::Sender<Bytes>, chunk: Bytes) -> Result<(), End> {
    match tokio::time::timeout(conn.cfg().write_timeout, body.send(chunk)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::ClientGone),
        Err(_) => Err(End::WriteStalled),
    }
}
