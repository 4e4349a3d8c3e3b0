//! The replica side of a game actor, for a shared log (cluster): other nodes
//! commit to the same game, so this actor's state is a replica that
//!
//! - applies the frames other nodes committed, in seq order, as the
//!   transport delivers them ([`GameActor::on_remote`]), and fans them out
//!   like its own;
//! - catches up from the log after a gap, a dropped frame or a reconnect
//!   ([`GameActor::catch_up`]), diff by diff;
//! - reloads the whole game and snapshots every fan when diffs cannot bring
//!   it up to date or the log went back in its history
//!   ([`GameActor::reload`]); in the latter case it also raises the game's
//!   `lost` mark in the log, so that no node resumes a fan from a seq the
//!   log lost (the fan gets a snapshot);
//! - asks the log about event ids it has not seen before refusing an event
//!   ([`GameActor::learn_ids`]).
//!
//! With an exclusive log none of this runs: nothing is delivered, and the
//! actor never needs a repair.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::actor::GameActor;
use super::plan::{Pending, Plan};
use super::{ApplyError, ApplyReq, unix_ms};
use crate::codec;
use crate::domain::{GameId, GameState, SeenIds, patch};
use crate::fanout::wire::Wire;
use crate::metrics as m;
use crate::store::StoreError;

/// Frames read from the log per catch-up request.
const CATCH_UP_PAGE: usize = 512;

impl GameActor {
    /// Looks up in the log the ids of the events `plan` refused against this
    /// replica's state (a wrong `expected_seq`, an event invalid for the
    /// state), which this replica has not seen; records those another node
    /// applied. `true` when it learnt one (plan again).
    pub(super) async fn learn_ids(
        &mut self,
        reqs: &[&ApplyReq],
        plan: &Plan,
    ) -> Result<bool, StoreError> {
        let refused: Vec<&str> = plan
            .outcomes
            .iter()
            .zip(reqs)
            .filter(|(o, _)| {
                matches!(
                    o,
                    Pending::Final(Err(ApplyError::SeqMismatch { .. } | ApplyError::Invalid(_)))
                        | Pending::Tentative(Err(
                            ApplyError::SeqMismatch { .. } | ApplyError::Invalid(_)
                        ))
                )
            })
            .map(|(_, r)| r.event.event_id.as_str())
            .filter(|id| self.seen.get(id).is_none())
            .collect();
        let log = self.log.clone();
        let found = log.seen_ids(&self.state.game, &refused).await?;
        let mut learnt = false;
        for (id, seen) in refused.iter().zip(found) {
            if let Some(seen) = seen {
                self.seen.insert(id, seen);
                learnt = true;
            }
        }
        Ok(learnt)
    }

    /// Applies frames other nodes published, in order, and fans them out
    /// together (one write per fan for the lot); a gap or a bad frame is
    /// repaired from the stream.
    pub(super) async fn on_remote(&mut self, frames: Vec<Bytes>) {
        for frame in frames {
            let decoded = match codec::decode_frame(&frame) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(game = %self.state.game, "undecodable frame from the transport: {e}");
                    continue;
                }
            };
            let (Some(q), Some(d)) = (decoded.q, decoded.d.as_ref()) else {
                continue;
            };
            if q <= self.state.seq {
                // Our own echo, or already caught up: the frame this replica
                // kept for q has the same bytes. Other bytes mean the log went
                // back in time (it lost writes) and another node wrote a
                // different q: this replica has diverged and reloads.
                let diverged = self.kept_frame(q).is_some_and(|kept| *kept != frame);
                if diverged {
                    self.flush_remote();
                    if let Err(e) = self.reload(Some(self.state.seq)).await {
                        tracing::warn!(game = %self.state.game, "cannot reload from the event log yet: {e}");
                        self.needs_repair = true;
                    }
                }
                continue;
            }
            if q == self.state.seq + 1 && !self.needs_repair {
                match self.apply_remote(q, d, frame.clone(), decoded.ts) {
                    Ok(()) => continue,
                    Err(e) => {
                        tracing::warn!(game = %self.state.game, "{e}; repairing from the event log")
                    }
                }
            }
            self.needs_repair = true;
            if let Err(e) = self.catch_up().await {
                tracing::warn!(game = %self.state.game, "cannot repair from the event log yet: {e}");
            }
        }
        self.flush_remote();
    }

    /// Fans out the remote frames applied since the last flush.
    pub(super) fn flush_remote(&mut self) {
        // Their lag was recorded as each arrived (from the committing node's ts).
        let frames = std::mem::take(&mut self.outgoing);
        self.fan_out(frames, Vec::new());
    }

    /// Applies the diff `d` making `seq` = `q`; its frame waits in
    /// `outgoing` for [`GameActor::flush_remote`].
    fn apply_remote(
        &mut self,
        q: u64,
        d: &Value,
        frame: Bytes,
        ts: Option<i64>,
    ) -> Result<(), UnusableDiff> {
        let mut doc = serde_json::to_value(&self.state)?;
        patch::merge(&mut doc, d);
        let next: GameState = serde_json::from_value(doc)?;
        if next.seq != q || next.game != self.state.game {
            return Err(UnusableDiff::Elsewhere {
                q,
                seq: next.seq,
                game: next.game,
            });
        }
        self.state = next;
        self.snapshot_cache = None;
        self.latest.send_replace(Arc::new(self.state.clone()));
        self.outgoing.push(Wire::Binary(frame.clone()));
        if let Some(ts) = ts {
            let lag_ms = (unix_ms() - ts).max(0) as f64;
            metrics::histogram!(m::FANOUT_SECONDS).record(lag_ms / 1000.0);
        }
        self.push_history(q, frame);
        Ok(())
    }

    /// Brings the replica up to date from the log, diff by diff; if that
    /// fails, reloads the state and sends every fan a snapshot.
    pub(super) async fn catch_up(&mut self) -> Result<(), StoreError> {
        let caught_up = self.catch_up_pages().await;
        // Whatever was applied goes out before anything after it.
        self.flush_remote();
        caught_up
    }

    async fn catch_up_pages(&mut self) -> Result<(), StoreError> {
        let game = self.state.game.clone();
        let log = self.log.clone();
        // The log must still hold this replica's seq, with the same frame:
        // if it went back in its history (it lost writes) and another node
        // wrote that seq anew, the diffs after it would apply to a state the
        // log never had.
        if let Some(kept) = self.kept_frame(self.state.seq).cloned() {
            let at = self.state.seq;
            let first = log.frames_after(&game, at - 1, 1).await?;
            if !matches!(first.first(), Some((q, frame)) if *q == at && *frame == kept) {
                return self.reload(Some(at)).await;
            }
        }
        loop {
            let frames = log
                .frames_after(&game, self.state.seq, CATCH_UP_PAGE)
                .await?;
            let n = frames.len();
            for (q, frame) in frames {
                let decoded = codec::decode_frame(&frame).ok();
                let ok = match decoded
                    .as_ref()
                    .and_then(|f| f.d.as_ref().map(|d| (d, f.ts)))
                {
                    Some((d, ts)) if q == self.state.seq + 1 => {
                        match self.apply_remote(q, d, frame.clone(), ts) {
                            Ok(()) => true,
                            Err(e) => {
                                tracing::warn!(game = %self.state.game, "{e}; reloading the game");
                                false
                            }
                        }
                    }
                    _ => false,
                };
                if !ok {
                    self.flush_remote();
                    return self.reload(None).await;
                }
            }
            if n < CATCH_UP_PAGE {
                break;
            }
        }
        self.needs_repair = false;
        Ok(())
    }

    /// Re-reads the whole game from the log and snapshots every fan.
    /// `diverged_at`: this replica's seq, when its history up to there is
    /// known to differ from the log's (the log lost writes and another node
    /// wrote those seqs anew); a log behind this replica says so by itself.
    pub(super) async fn reload(&mut self, diverged_at: Option<u64>) -> Result<(), StoreError> {
        let game = self.state.game.clone();
        let log = self.log.clone();
        let Some(mut loaded) = log.load(&game, self.cfg.history).await? else {
            return Err(StoreError::Unavailable(format!(
                "game {game} is missing from the event log"
            )));
        };
        tracing::info!(%game, from = self.state.seq, to = loaded.state.seq, "replica reloaded from the event log");
        let applied = self.state.seq;
        if loaded.state.seq < applied || diverged_at.is_some() {
            // Ids this replica saw may be of events the log lost; the log's
            // own record (checked by every commit) is the truth.
            tracing::warn!(%game, from = applied, to = loaded.state.seq, "the event log does not hold the history this replica applied: it lost writes; fans get a fresh snapshot");
            metrics::counter!(m::LOST_WRITES).increment(1);
            self.seen = SeenIds::new();
            // Fans of any node may hold seqs up to `applied` with content
            // the log no longer has: none may resume from there.
            self.lost = self.lost.max(applied);
            if let Err(e) = log.note_lost(&game, applied).await {
                tracing::warn!(%game, "cannot record the lost writes in the event log: {e}; other nodes learn of them when they diverge themselves");
            }
        }
        self.lost = self.lost.max(loaded.lost);
        self.seen.absorb(&mut loaded.seen);
        self.state = loaded.state;
        // Frames committed after the state was read come by the transport.
        self.history = loaded.history;
        self.snapshot_cache = None;
        self.latest.send_replace(Arc::new(self.state.clone()));
        self.snapshot_all();
        self.needs_repair = false;
        Ok(())
    }

    /// Catches up after the transport dropped frames or reconnected.
    pub(super) async fn repair(&mut self) {
        self.needs_repair = true;
        if let Err(e) = self.catch_up().await {
            tracing::warn!(game = %self.state.game, "cannot repair from the event log yet: {e}");
        }
    }
}

/// Why a diff from the log or another node does not apply to this replica
/// (it is then repaired from the log, or the game reloaded).
#[derive(Debug, thiserror::Error)]
enum UnusableDiff {
    /// Merged into the state, it does not make a valid game state.
    #[error("a diff does not make a valid game state: {0}")]
    State(#[from] serde_json::Error),
    /// Merged, it names another seq or game than the frame it came in.
    #[error("the diff of seq {q} leads to seq {seq} of game {game}")]
    Elsewhere {
        /// The frame's seq.
        q: u64,
        /// The seq the merged state names.
        seq: u64,
        /// The game the merged state names.
        game: GameId,
    },
}
