//! The game actor's loop: sequence events, make them durable, encode each diff
//! once, fan it out.
//!
//! Events are handled in groups: the actor takes every `Apply` waiting in its
//! mailbox (up to [`MAX_GROUP`]), *plans* them one after another against a
//! tentative state (idempotency, `expected_seq`, domain rules), makes all
//! resulting records durable in one step, and only then commits the state,
//! answers the scorekeepers and fans the diffs out. If storage fails, the
//! tentative state is thrown away and every event of the group gets `503`:
//! nothing is half-applied.
//!
//! Making a group durable is one [`EventLog::commit`], whatever the backend:
//! it lands only if the game is still at the seq the plan started from and
//! none of the event ids was applied before. With an exclusive log (single
//! node) it always lands. With a shared one (cluster), when another node got
//! there first (`Stale`, or an `event_id` it already applied), the actor
//! catches up from the log and plans again; the replica side (frames other
//! nodes committed, catch-up, reload) is in `game::replica`.
//!
//! Unloading: after `games.idle_unload` without subscribers or requests the
//! actor announces itself idle; the registry then sends `Stop`, which the
//! actor accepts only if it is still idle. It then closes its mailbox,
//! applies whatever was already queued, answers, and ends: only after that
//! may the registry load the game again for a new actor (with an exclusive
//! log, the actor is its game's only writer).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use super::plan::{self, Pending, Plan};
use super::{
    Applied, ApplyError, ApplyReq, Audience, Cmd, IdleUnload, Restored, Seen, SeenIds, Subscriber,
    unix_ms,
};
use crate::backend::{Commit, Committing, EventLog};
use crate::codec;
use crate::domain::GameState;
use crate::fanout::fans::{Fans, First};
use crate::fanout::wire::Wire;
use crate::metrics as m;

/// Most events applied in one group (one durable step).
pub(crate) const MAX_GROUP: usize = 128;

/// How many times a group is re-planned after losing a race to another node.
const MAX_ATTEMPTS: usize = 8;

/// How long an idle actor waits before announcing itself again when the
/// registry's queue of idle games is full.
const ANNOUNCE_RETRY: Duration = Duration::from_millis(250);

/// Tunables of a game actor.
#[derive(Debug, Clone, Copy)]
pub struct ActorConfig {
    /// Mailbox capacity.
    pub mailbox: usize,
    /// Diffs kept for resume.
    pub history: usize,
    /// Shards a game with many fans spreads them over (see
    /// [`crate::fanout::fans`]); at least 1.
    pub fan_shards: usize,
    /// Most fans pushed by the actor itself (`games.inline_fans`).
    pub inline_fans: usize,
}

/// One game's actor: its state, idempotency record, history and fans.
pub(crate) struct GameActor {
    pub(super) state: GameState,
    pub(super) seen: SeenIds,
    pub(super) history: VecDeque<(u64, Bytes)>,
    fans: Fans,
    /// Who watches: shared with the handles and the occupancy task.
    audience: Arc<Audience>,
    pub(super) snapshot_cache: Option<Bytes>,
    /// The `n` (fans watching) the cached snapshot carries.
    snapshot_n: u64,
    /// Remote frames applied but not yet fanned out (a shared log).
    pub(super) outgoing: Vec<Wire>,
    rx: mpsc::Receiver<Cmd>,
    pub(super) latest: watch::Sender<Arc<GameState>>,
    pub(super) log: Arc<dyn EventLog>,
    /// The log has one writer, this actor: nothing to catch up with.
    exclusive: bool,
    pub(super) cfg: ActorConfig,
    /// The replica may be behind the log (a failed or lost commit, a gap, a
    /// reconnect): catch up before the next plan.
    pub(super) needs_repair: bool,
    /// The highest seq of this game some node applied that the log then
    /// lost ([`Restored::lost`]): fans may hold other content for seqs up to
    /// it, so a resume at or below it gets a snapshot.
    pub(super) lost: u64,
    /// When to announce this game as idle (so it can be unloaded).
    idle: Option<IdleUnload>,
    /// Last local request or subscription.
    last_local: tokio::time::Instant,
    /// Idleness announced since the last local activity.
    announced: bool,
    /// The announcement did not fit the registry's queue: try again then.
    announce_retry: Option<tokio::time::Instant>,
    /// Agreed to be unloaded: refuses new subscribers.
    stopping: bool,
}

impl GameActor {
    pub(crate) fn new(
        restored: Restored,
        rx: mpsc::Receiver<Cmd>,
        latest: watch::Sender<Arc<GameState>>,
        log: Arc<dyn EventLog>,
        cfg: ActorConfig,
        idle: Option<IdleUnload>,
    ) -> GameActor {
        let fans = Fans::new(restored.state.game.clone(), cfg.fan_shards, cfg.inline_fans);
        GameActor {
            audience: Arc::new(Audience::new(fans.count())),
            fans,
            snapshot_n: 0,
            state: restored.state,
            seen: restored.seen,
            history: restored.history,
            snapshot_cache: None,
            outgoing: Vec::new(),
            rx,
            latest,
            exclusive: log.exclusive(),
            log,
            cfg,
            needs_repair: false,
            lost: restored.lost,
            idle,
            last_local: tokio::time::Instant::now(),
            announced: false,
            announce_retry: None,
            stopping: false,
        }
    }

    /// Who watches this game (for its handles).
    pub(super) fn audience(&self) -> Arc<Audience> {
        self.audience.clone()
    }

    /// When to check for idleness next, if this game can be unloaded.
    fn idle_deadline(&self) -> Option<tokio::time::Instant> {
        let idle = self.idle.as_ref()?;
        let due = self.last_local + idle.after;
        (self.fans.is_empty() && !self.announced && !self.stopping)
            .then(|| self.announce_retry.map_or(due, |retry| retry.max(due)))
    }

    fn touch(&mut self) {
        self.last_local = tokio::time::Instant::now();
        self.announced = false;
        self.announce_retry = None;
    }

    fn announce_idle(&mut self) {
        if let Some(idle) = &self.idle
            && self.fans.is_empty()
            && self.last_local.elapsed() >= idle.after
        {
            self.announced = idle.announce.try_send(self.state.game.clone()).is_ok();
            self.announce_retry =
                (!self.announced).then(|| tokio::time::Instant::now() + ANNOUNCE_RETRY);
        }
    }

    fn stop_if_idle(&mut self) -> bool {
        let idle = self
            .idle
            .as_ref()
            .is_some_and(|i| self.last_local.elapsed() >= i.after);
        if self.fans.is_empty() && idle {
            self.stopping = true;
        }
        self.stopping
    }

    /// The snapshot for a fan, with the latest count of fans watching as
    /// `n` (at least 1: the fan it goes to watches), encoded again only
    /// when the state or the count changed.
    fn snapshot_frame(&mut self) -> Bytes {
        let n = self.audience.watching().max(1);
        if n != self.snapshot_n {
            self.snapshot_cache = None;
            self.snapshot_n = n;
        }
        self.snapshot_cache
            .get_or_insert_with(|| codec::snapshot_watched(&self.state, Some(n)))
            .clone()
    }

    /// Tells every fan that `total` fans watch the game (one frame, encoded
    /// once).
    fn occupancy(&mut self, total: u64) {
        metrics::counter!(m::OCCUPANCY_UPDATES).increment(1);
        if self.fans.is_empty() {
            return;
        }
        self.fans
            .occupancy(codec::occupancy(&self.state.game, total));
    }

    // ----- subscribers -------------------------------------------------------

    fn subscribe(&mut self, sub: Subscriber, since: Option<u64>) {
        let conn_id = sub.outbox.conn_id();
        if self.fans.contains(conn_id) && since.is_none() {
            return;
        }
        let game = &self.state.game;
        // A conflated fan waiting for a snapshot cannot resume from diffs.
        let waiting = sub.outbox.is_stale(game);
        let resumable = since.filter(|_| !waiting).filter(|&s| {
            (self.lost == 0 || s > self.lost)
                && s <= self.state.seq
                && (s == self.state.seq || self.history.front().is_some_and(|(q, _)| *q <= s + 1))
        });
        let first = match resumable {
            Some(s) => First::Diffs(
                self.history
                    .iter()
                    .filter(|(q, _)| *q > s)
                    .map(|(_, frame)| frame.clone())
                    .collect(),
            ),
            None => First::Snapshot(self.snapshot_frame()),
        };
        self.fans.subscribe(sub.outbox, first);
    }

    fn unsubscribe(&mut self, conn_id: u64) {
        self.fans.unsubscribe(conn_id);
    }

    fn resync(&mut self, conn_id: u64) {
        if self.fans.contains(conn_id) {
            let frame = self.snapshot_frame();
            self.fans.resync(conn_id, frame);
        }
    }

    /// Hands consecutive encoded diffs to every subscriber without waiting
    /// (`received`: when each one's event arrived, for the fan-out metric).
    pub(super) fn fan_out(&mut self, frames: Vec<Wire>, received: Vec<Instant>) {
        self.fans.fan_out(frames, received);
    }

    /// Sends every subscriber a fresh snapshot (after a repair that could not
    /// be done diff by diff).
    pub(super) fn snapshot_all(&mut self) {
        let frame = self.snapshot_frame();
        self.fans.snapshot_all(frame);
    }

    // ----- the write path ----------------------------------------------------

    /// Makes a durable plan (whose final state is `next`) the current state
    /// and fans its diffs out.
    fn commit(&mut self, plan: &mut Plan, next: Arc<GameState>, received: &[Instant]) {
        if plan.applied.is_empty() {
            return;
        }
        self.state = GameState::clone(&next);
        self.seen.absorb(&mut plan.fresh);
        self.snapshot_cache = None;
        self.latest.send_replace(next);
        let applied = std::mem::take(&mut plan.applied);
        let frames: Vec<Wire> = applied
            .iter()
            .map(|(_, _, _, frame)| Wire::Binary(frame.clone()))
            .collect();
        let times: Vec<Instant> = applied
            .iter()
            .filter_map(|(i, _, _, _)| received.get(*i).copied())
            .collect();
        self.fan_out(frames, times);
        for (_, seq, _, frame) in applied {
            self.push_history(seq, frame);
        }
    }

    /// The diff frame kept for `seq`, if the history still holds it (its
    /// seqs are consecutive, so this is an index, not a search).
    pub(super) fn kept_frame(&self, seq: u64) -> Option<&Bytes> {
        let first = self.history.front()?.0;
        let at = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.history
            .get(at)
            .filter(|(s, _)| *s == seq)
            .map(|(_, f)| f)
    }

    pub(super) fn push_history(&mut self, seq: u64, frame: Bytes) {
        self.history.push_back((seq, frame));
        while self.history.len() > self.cfg.history {
            self.history.pop_front();
        }
    }

    /// Applies a group of events and answers each request.
    async fn apply_group(&mut self, group: Vec<ApplyReq>) {
        let results = self.commit_group(&group).await;
        for (req, result) in group.into_iter().zip(results) {
            let label = match &result {
                Ok(Applied {
                    duplicate: false, ..
                }) => "applied",
                Ok(Applied {
                    duplicate: true, ..
                }) => "duplicate",
                Err(_) => "rejected",
            };
            metrics::counter!(m::EVENTS_TOTAL, "outcome" => label).increment(1);
            let _ = req.reply.send(result);
        }
    }

    /// Plans the group, commits it in one durable step and, with a shared
    /// log, plans again after losing a race to another node.
    async fn commit_group(&mut self, group: &[ApplyReq]) -> Vec<Result<Applied, ApplyError>> {
        let mut results: Vec<Option<Result<Applied, ApplyError>>> = vec![None; group.len()];
        let mut looked_up = self.exclusive;
        for _ in 0..MAX_ATTEMPTS {
            if self.needs_repair
                && let Err(e) = self.catch_up().await
            {
                return fill(results, &e.to_string());
            }
            let open: Vec<usize> = (0..group.len()).filter(|&i| results[i].is_none()).collect();
            if open.is_empty() {
                break;
            }
            let reqs: Vec<&ApplyReq> = open.iter().map(|&i| &group[i]).collect();
            let received: Vec<Instant> = reqs.iter().map(|r| r.received).collect();
            let mut plan = plan::plan(&self.state, &self.seen, &reqs, unix_ms());
            if !looked_up {
                // A replica knows only the ids it applied or loaded: an
                // event refused against its state may be the retry of one
                // another node applied (a duplicate, not a 412 or 422). Ask
                // the log once, then plan again.
                looked_up = true;
                match self.learn_ids(&reqs, &plan).await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => return fill(results, &e.to_string()),
                }
            }
            if plan.applied.is_empty() {
                // Nothing to write: every outcome is already final (in-plan
                // duplicates need an applied event, so there are none). A
                // shared log may need to confirm duplicates answered from
                // memory (the first answer of one may have been an error):
                // unconfirmed, they are refused like a commit would be.
                let duplicate = |o: &Pending| {
                    matches!(
                        o,
                        Pending::Final(Ok(Applied {
                            duplicate: true,
                            ..
                        }))
                    )
                };
                if !self.exclusive
                    && plan.outcomes.iter().any(duplicate)
                    && let Err(e) = self.log.confirm(&self.state.game).await
                {
                    let reason = e.to_string();
                    for o in plan.outcomes.iter_mut().filter(|o| duplicate(o)) {
                        *o = Pending::Final(Err(ApplyError::Unavailable(reason.clone())));
                    }
                }
                settle(&mut results, &open, plan.outcomes, None);
                break;
            }
            let next = Arc::new(plan.state.clone());
            let events: Vec<Committing<'_>> = plan
                .applied
                .iter()
                .map(|(i, _, record, frame)| Committing {
                    event_id: reqs[*i].event.event_id.as_str(),
                    fingerprint: reqs[*i].fingerprint,
                    record,
                    frame,
                })
                .collect();
            let log = self.log.clone();
            let committed = log
                .commit(&self.state.game, self.state.seq, &events, &next)
                .await;
            drop(events);
            match committed {
                Ok(Commit::Applied { .. }) => {
                    self.commit(&mut plan, next, &received);
                    settle(&mut results, &open, plan.outcomes, None);
                    break;
                }
                Ok(Commit::Seen {
                    index,
                    fingerprint,
                    seq,
                }) => {
                    // Another node applied this event_id: answer it, catch up,
                    // and plan the rest again.
                    if let Some((i, _, _, _)) = plan.applied.get(index) {
                        let req = reqs[*i];
                        let id = req.event.event_id.clone();
                        self.seen.insert(&id, Seen { fingerprint, seq });
                        results[open[*i]] = Some(if fingerprint == req.fingerprint {
                            Ok(Applied {
                                seq,
                                duplicate: true,
                            })
                        } else {
                            Err(ApplyError::Conflict { event_id: id, seq })
                        });
                    }
                    self.needs_repair = true;
                }
                Ok(Commit::Stale { current }) if current < self.state.seq => {
                    // The log is behind this replica: it lost writes (a
                    // restart from an older snapshot, a failover). It is the
                    // source of truth, so this replica starts over from it.
                    if let Err(e) = self.reload(None).await {
                        return fill(results, &e.to_string());
                    }
                }
                Ok(Commit::Stale { .. }) => self.needs_repair = true,
                Ok(Commit::Missing) => {
                    return fill(results, "the game no longer exists in the event log");
                }
                Err(e) => {
                    // Final answers stand; the group's own did not happen.
                    // A shared log may have run the commit all the same:
                    // re-read before the next plan (retries are safe,
                    // event ids being idempotent).
                    self.needs_repair = !self.exclusive;
                    settle(&mut results, &open, plan.outcomes, Some(&e.to_string()));
                    break;
                }
            }
        }
        fill(results, "too much contention on this game; retry")
    }
}

/// Records the answers of a plan's requests (`open` maps them to the
/// group): every one as planned, or, when the durable step failed with
/// `failed`, the tentative ones `503`.
fn settle(
    results: &mut [Option<Result<Applied, ApplyError>>],
    open: &[usize],
    outcomes: Vec<Pending>,
    failed: Option<&str>,
) {
    for (k, outcome) in outcomes.into_iter().enumerate() {
        results[open[k]] = Some(match (outcome, failed) {
            (Pending::Final(r), _) | (Pending::Tentative(r), None) => r,
            (Pending::Tentative(_), Some(reason)) => Err(ApplyError::Unavailable(reason.into())),
        });
    }
}

/// Answers every still-open request with `503` and `reason`.
pub(super) fn fill(
    results: Vec<Option<Result<Applied, ApplyError>>>,
    reason: &str,
) -> Vec<Result<Applied, ApplyError>> {
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(ApplyError::Unavailable(reason.to_string()))))
        .collect()
}

/// The actor loop: runs until every handle is dropped, or (single node)
/// until it agreed to be unloaded and drained its mailbox.
pub(crate) async fn run(mut actor: GameActor) {
    let mut next: Option<Cmd> = None;
    // Single node: the agreed unload, answered once the queue is drained.
    let mut unloading: Option<oneshot::Sender<bool>> = None;
    loop {
        let cmd = match next.take() {
            Some(cmd) => cmd,
            None => match actor.idle_deadline() {
                None => match actor.rx.recv().await {
                    Some(cmd) => cmd,
                    None => break,
                },
                Some(deadline) => tokio::select! {
                    cmd = actor.rx.recv() => match cmd {
                        Some(cmd) => cmd,
                        None => break,
                    },
                    () = tokio::time::sleep_until(deadline) => {
                        actor.announce_idle();
                        continue;
                    }
                },
            },
        };
        if matches!(cmd, Cmd::Apply(_) | Cmd::Subscribe { .. }) {
            actor.touch();
        }
        match cmd {
            Cmd::Apply(req) => {
                let mut group = vec![req];
                while group.len() < MAX_GROUP {
                    match actor.rx.try_recv() {
                        Ok(Cmd::Apply(req)) => group.push(req),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                actor.apply_group(group).await;
            }
            Cmd::Subscribe {
                sub,
                since,
                accepted,
            } => {
                if actor.stopping {
                    let _ = accepted.send(false);
                } else {
                    actor.subscribe(sub, since);
                    let _ = accepted.send(true);
                }
            }
            Cmd::Stop { reply } => {
                let agreed = actor.stop_if_idle();
                if agreed {
                    // Take nothing new (senders get their command back and
                    // follow the game to its next actor); finish what is queued.
                    actor.rx.close();
                    if let Some(earlier) = unloading.replace(reply) {
                        let _ = earlier.send(true);
                    }
                } else {
                    let _ = reply.send(agreed);
                }
            }
            Cmd::Unsubscribe { conn_id } => actor.unsubscribe(conn_id),
            Cmd::Resync { conn_id } => actor.resync(conn_id),
            Cmd::Remote { frame } => {
                // Take every remote frame already waiting: they go to each
                // fan in one write.
                let mut frames = vec![frame];
                while frames.len() < MAX_GROUP {
                    match actor.rx.try_recv() {
                        Ok(Cmd::Remote { frame }) => frames.push(frame),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                actor.on_remote(frames).await;
            }
            Cmd::Repair => actor.repair().await,
            Cmd::Watching { total } => actor.occupancy(total),
            Cmd::Flush { reply } => {
                let _ = reply.send(actor.fans.flush());
            }
        }
    }
    metrics::gauge!(m::WS_SUBSCRIPTIONS).decrement(actor.fans.len() as f64);
    if let Some(reply) = unloading {
        let _ = reply.send(true);
    }
}
