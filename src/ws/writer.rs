//! The writer half of a fan session: what the game actors could not write
//! straight to the socket.
//!
//! Woken when frames queue up (the socket was full), it takes the socket
//! from the outbox, drains the queue in vectored batches (each bounded by
//! `ws.write_timeout`) and parks the socket again. It pings the client and
//! drops a silent one, ends the session at shutdown, and once a conflated
//! queue has drained asks each stale game's actor for one fresh snapshot.
//! Beside it, `watch_stuck` ends a fan that stays conflated for
//! `ws.stuck_timeout`.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use super::goodbye::End;
use super::session::{Conn, Stage};
use crate::codec::FrameKind;
use crate::domain::GameId;
use crate::fanout::outbox::{Item, Take};
use crate::fanout::wire::{self, Socket};
use crate::metrics as m;

/// Writes what queued up while the socket was full, pings, and watches for
/// shutdown and dead peers.
pub(super) async fn write_loop(conn: &Conn, held: &mut Option<Socket>) -> End {
    let cfg = conn.cfg();
    let every = cfg.ping_interval.max(Duration::from_millis(1));
    let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut batch = Vec::new();
    let mut resyncing = HashSet::new();
    // Created once: a fresh `cancelled()` per wake would re-register with
    // the token on every wake.
    let shutdown = conn.ctx.shutdown.cancelled();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return End::Shutdown,
            () = conn.outbox.notified() => {
                if conn.ctx.pressure.busy() {
                    // Saturated: let other games add their frames first, so
                    // they share this write.
                    tokio::task::yield_now().await;
                }
                if let Err(end) = drain(conn, held, &mut batch).await {
                    return end;
                }
                request_resyncs(conn, &mut resyncing).await;
            }
            _ = heartbeat.tick() => {
                if let Err(end) = beat(conn, &mut resyncing).await {
                    return end;
                }
            }
        }
    }
}

/// One heartbeat: drops a silent peer, pings a live one, and asks again for
/// snapshots requested earlier (a request may have found the game between
/// unsubscribe and subscribe).
async fn beat(conn: &Conn, resyncing: &mut HashSet<GameId>) -> Result<(), End> {
    if conn.silent_for() >= conn.cfg().idle_timeout {
        return Err(End::Idle);
    }
    if !conn.outbox.push_framed(wire::ping()) {
        return Err(closed_end(conn));
    }
    resyncing.clear();
    request_resyncs(conn, resyncing).await;
    Ok(())
}

/// Why a closed outbox ends the session.
fn closed_end(conn: &Conn) -> End {
    if conn.outbox.overflowed() {
        End::SlowConsumer
    } else {
        End::OutboxClosed
    }
}

/// Writes everything queued, batch after batch, each within
/// `ws.write_timeout`, then parks the socket for direct writes again.
async fn drain(conn: &Conn, held: &mut Option<Socket>, batch: &mut Vec<Item>) -> Result<(), End> {
    loop {
        batch.clear();
        match conn.outbox.take(batch, held) {
            Take::Idle => return Ok(()),
            Take::Closed => return Err(closed_end(conn)),
            Take::Frames => {}
        }
        let Some(socket) = held.as_mut() else {
            // Frames queued before the socket was attached; it comes with
            // the next wake-up.
            return Ok(());
        };
        let mut sent = FrameCounts::default();
        for item in batch.iter() {
            sent.add(item.kind);
        }
        conn.reached(Stage::Writing);
        timed(conn.cfg().write_timeout, socket.write_all(batch)).await?;
        sent.record();
    }
}

/// Runs one socket write, bounded by `limit`.
pub(super) async fn timed<E: std::fmt::Display>(
    limit: Duration,
    write: impl Future<Output = Result<(), E>>,
) -> Result<(), End> {
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "write failed");
            Err(End::WriteFailed)
        }
        Err(_) => Err(End::WriteStalled),
    }
}

/// Asks each conflated game's actor for one fresh snapshot, once the queue
/// has drained. `asked` remembers requests still in flight. (Also the SSE
/// stream's: it drains the same outbox.)
pub(crate) async fn request_resyncs(conn: &Conn, asked: &mut HashSet<GameId>) {
    let stale = conn.outbox.stale_when_drained();
    asked.retain(|g| stale.contains(g));
    for game in stale {
        if asked.contains(&game) {
            continue;
        }
        conn.games().resync(&game, conn.id).await;
        asked.insert(game);
    }
}

/// Frames written in one batch, by kind, recorded once per batch.
#[derive(Debug, Default)]
pub(crate) struct FrameCounts([u64; 5]);

impl FrameCounts {
    const KINDS: [FrameKind; 5] = [
        FrameKind::Snapshot,
        FrameKind::Diff,
        FrameKind::Error,
        FrameKind::Pong,
        FrameKind::Occupancy,
    ];

    /// Counts one frame of `kind` (none: not a frame we count).
    pub(crate) fn add(&mut self, kind: Option<FrameKind>) {
        if let Some(i) = Self::KINDS.iter().position(|k| Some(*k) == kind) {
            self.0[i] += 1;
        }
    }

    /// Adds the counts to `scorehub_frames_sent_total`.
    pub(crate) fn record(&self) {
        for (kind, n) in Self::KINDS.iter().zip(self.0) {
            if n > 0 {
                m::frames_sent(*kind).increment(n);
            }
        }
    }
}

/// Ends the session once its outbox has stayed conflated for
/// `ws.stuck_timeout`. Polled beside the writer, so it fires even while a
/// socket write is blocked on a fan that does not read.
pub(super) async fn watch_stuck(conn: &Conn) -> End {
    until_stuck(conn).await;
    End::Stuck
}

/// Returns once `conn`'s outbox has stayed conflated for `ws.stuck_timeout`
/// (the WebSocket session's and the SSE stream's stuck watch).
pub(crate) async fn until_stuck(conn: &Conn) {
    let limit = conn.cfg().stuck_timeout;
    loop {
        match conn.outbox.conflated_since() {
            Some(since) if since.elapsed() >= limit => return,
            Some(since) => tokio::time::sleep_until(since + limit).await,
            None => conn.outbox.conflation_started().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::WsConfig;
    use crate::domain::Action;
    use crate::ws::testkit::{PATIENCE, next_frame, post, read_until_close, start};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fan_that_never_reads_is_conflated_and_others_are_not_blocked() {
        let ws = WsConfig {
            queue_frames: 4,
            write_timeout: Duration::from_secs(120),
            stuck_timeout: Duration::from_secs(120),
            ..WsConfig::default()
        };
        let hub = start(ws).await;
        let game = hub.game("nba:big").await;
        let mut slow = hub.connect("?games=nba:big").await;
        let mut fast = hub.connect("?games=nba:big").await;
        assert_eq!(next_frame(&mut fast).await.q, Some(0));

        // ~8 KiB diffs, enough to fill every socket buffer between the hub
        // and a fan that does not read.
        const EVENTS: u64 = 2000;
        // The reading fan keeps flowing while the other one is stuck. With a
        // 4-frame queue a busy machine may conflate it too, so a snapshot is
        // allowed, but every diff must follow the frame before it.
        let reader = tokio::spawn(async move {
            let mut last = 0;
            while last < EVENTS {
                let f = next_frame(&mut fast).await;
                let q = f.q.expect("frames carry q");
                match f.t.as_str() {
                    "d" => assert_eq!(q, last + 1, "diffs are consecutive"),
                    "s" => assert!(q >= last, "a snapshot never goes back"),
                    other => panic!("unexpected frame {other}"),
                }
                last = q;
            }
        });
        for n in 1..=EVENTS {
            let extra: serde_json::Map<String, serde_json::Value> = (0..32)
                .map(|k| (format!("k{k}"), format!("{n:0>250}").into()))
                .collect();
            let patch = serde_json::json!({ "extra": extra });
            post(&game, format!("set-{n}"), Action::Set { patch }).await;
        }
        tokio::time::timeout(PATIENCE, reader)
            .await
            .unwrap()
            .unwrap();

        let mut last: Option<u64> = None;
        let (mut frames, mut snapshots) = (0, 0);
        while last != Some(EVENTS) {
            let f = next_frame(&mut slow).await;
            let q = f.q.unwrap();
            match (f.t.as_str(), last) {
                ("s", prev) => {
                    assert!(prev.is_none_or(|p| q >= p), "snapshots never go back");
                    snapshots += 1;
                }
                ("d", Some(p)) => assert_eq!(q, p + 1, "diffs stay consecutive"),
                other => panic!("unexpected frame {other:?}"),
            }
            last = Some(q);
            frames += 1;
        }
        assert!(
            snapshots >= 2,
            "the slow fan got a fresh snapshot after conflation"
        );
        assert!(
            frames < EVENTS,
            "diffs were dropped, not queued without bound"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_peer_is_dropped() {
        let ws = WsConfig {
            ping_interval: Duration::from_millis(50),
            idle_timeout: Duration::from_millis(200),
            ..WsConfig::default()
        };
        let hub = start(ws).await;
        let mut fan = hub.connect("").await;
        // Not polling the client means its pongs are never sent: silence.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (code, _) = read_until_close(&mut fan).await;
        assert_eq!(code, Some(1001));
    }
}
