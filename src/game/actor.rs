//! The game actor's loop: sequence events, make them durable, encode each diff
//! once, fan it out.
//!
//! Events are handled in groups: the actor takes every `Apply` waiting in its
//! mailbox (up to [`MAX_GROUP`]), applies them one after another to a
//! tentative state, appends all resulting records to the log in one call (one
//! fsync), and only then commits the state, answers the scorekeepers and fans
//! the diffs out. If the log fails, the tentative state is thrown away and
//! every event of the group gets `503`: nothing half-applied.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use super::{Applied, ApplyError, Cmd, Restored, Seen, Subscriber, unix_ms};
use crate::codec;
use crate::domain::{self, Event, Fingerprint, GameState, patch};
use crate::metrics as m;
use crate::store::{FileLog, Record};
use crate::ws::outbox::Push;

/// Most events applied in one group (one log append).
pub const MAX_GROUP: usize = 128;

/// Tunables of a game actor.
#[derive(Debug, Clone, Copy)]
pub struct ActorConfig {
    /// Mailbox capacity.
    pub mailbox: usize,
    /// Diffs kept for resume.
    pub history: usize,
}

pub(crate) struct GameActor {
    state: GameState,
    seen: HashMap<Box<str>, Seen>,
    history: VecDeque<(u64, Bytes)>,
    subs: Vec<Subscriber>,
    index: HashMap<u64, usize>,
    snapshot_cache: Option<Bytes>,
    rx: mpsc::Receiver<Cmd>,
    latest: watch::Sender<Arc<GameState>>,
    log: Arc<FileLog>,
    cfg: ActorConfig,
}

struct ApplyReq {
    event: Event,
    fingerprint: Fingerprint,
    by: Arc<str>,
    received: Instant,
    reply: oneshot::Sender<Result<Applied, ApplyError>>,
}

/// The outcome of one request inside a group, before the group is durable.
enum Pending {
    /// Final whatever the log does (a duplicate of a committed event, or an error).
    Final(Result<Applied, ApplyError>),
    /// Valid only if the group's append succeeds.
    Tentative(Applied),
}

impl GameActor {
    pub(crate) fn new(
        restored: Restored,
        rx: mpsc::Receiver<Cmd>,
        latest: watch::Sender<Arc<GameState>>,
        log: Arc<FileLog>,
        cfg: ActorConfig,
    ) -> GameActor {
        GameActor {
            state: restored.state,
            seen: restored.seen,
            history: restored.history,
            subs: Vec::new(),
            index: HashMap::new(),
            snapshot_cache: None,
            rx,
            latest,
            log,
            cfg,
        }
    }

    fn snapshot_frame(&mut self) -> Bytes {
        self.snapshot_cache
            .get_or_insert_with(|| codec::snapshot(&self.state))
            .clone()
    }

    fn subscribe(&mut self, sub: Subscriber, since: Option<u64>) {
        let conn_id = sub.outbox.conn_id();
        let already = self.index.contains_key(&conn_id);
        if already && since.is_none() {
            return;
        }
        let game = self.state.game.clone();
        // A conflated fan waiting for a snapshot cannot resume from diffs.
        let waiting = sub.outbox.is_stale(&game);
        let resumable = since.filter(|_| !waiting).filter(|&s| {
            s <= self.state.seq
                && (s == self.state.seq || self.history.front().is_some_and(|(q, _)| *q <= s + 1))
        });
        match resumable {
            Some(s) => {
                for (_, frame) in self.history.iter().filter(|(q, _)| *q > s) {
                    match sub.outbox.push_diff(&game, frame) {
                        Push::Queued | Push::Skipped => {}
                        Push::Conflated => {
                            metrics::counter!(m::SLOW_CONSUMER, "action" => "conflated")
                                .increment(1);
                        }
                        Push::Closed => return,
                    }
                }
            }
            None => {
                let frame = self.snapshot_frame();
                if !sub.outbox.push_snapshot(&game, frame) {
                    return;
                }
            }
        }
        if !already {
            self.index.insert(conn_id, self.subs.len());
            self.subs.push(sub);
            metrics::gauge!(m::WS_SUBSCRIPTIONS).increment(1.0);
        }
    }

    fn unsubscribe(&mut self, conn_id: u64) {
        let Some(i) = self.index.remove(&conn_id) else {
            return;
        };
        self.subs.swap_remove(i);
        if let Some(moved) = self.subs.get(i) {
            self.index.insert(moved.outbox.conn_id(), i);
        }
        metrics::gauge!(m::WS_SUBSCRIPTIONS).decrement(1.0);
    }

    fn resync(&mut self, conn_id: u64) {
        let Some(&i) = self.index.get(&conn_id) else {
            return;
        };
        let frame = self.snapshot_frame();
        let outbox = self.subs[i].outbox.clone();
        if !outbox.push_snapshot(&self.state.game, frame) {
            self.unsubscribe(conn_id);
        }
    }

    /// Applies a group of events: tentative state, one durable append, commit.
    async fn apply_group(&mut self, group: Vec<ApplyReq>) {
        let now = unix_ms();
        let mut state = self.state.clone();
        let mut fresh: HashMap<Box<str>, Seen> = HashMap::new();
        let mut records = Vec::new();
        let mut diffs: Vec<(u64, Value, Instant)> = Vec::new();
        let mut outcomes = Vec::with_capacity(group.len());

        for req in &group {
            let id = req.event.event_id.as_str();
            let seen = self
                .seen
                .get(id)
                .map(|s| (*s, false))
                .or_else(|| fresh.get(id).map(|s| (*s, true)));
            let outcome = match seen {
                Some((s, in_group)) if s.fingerprint == req.fingerprint => {
                    let applied = Applied {
                        seq: s.seq,
                        duplicate: true,
                    };
                    if in_group {
                        Pending::Tentative(applied)
                    } else {
                        Pending::Final(Ok(applied))
                    }
                }
                Some((s, _)) => Pending::Final(Err(ApplyError::Conflict {
                    event_id: id.to_string(),
                    seq: s.seq,
                })),
                None => match req.event.expected_seq {
                    Some(expected) if expected != state.seq => {
                        Pending::Final(Err(ApplyError::SeqMismatch {
                            expected,
                            current: state.seq,
                        }))
                    }
                    _ => match domain::apply(&state, &req.event.action, now) {
                        Err(e) => Pending::Final(Err(ApplyError::Invalid(e))),
                        Ok(next) => {
                            let diff = patch::diff(&state, &next);
                            records.push(Record::Event {
                                game: state.game.clone(),
                                seq: next.seq,
                                event: req.event.clone(),
                                fingerprint: req.fingerprint,
                                by: req.by.to_string(),
                                at: now,
                                diff: diff.clone(),
                            });
                            fresh.insert(
                                id.into(),
                                Seen {
                                    fingerprint: req.fingerprint,
                                    seq: next.seq,
                                },
                            );
                            diffs.push((next.seq, diff, req.received));
                            state = next;
                            Pending::Tentative(Applied {
                                seq: state.seq,
                                duplicate: false,
                            })
                        }
                    },
                },
            };
            outcomes.push(outcome);
        }

        let committed = if records.is_empty() {
            Ok(())
        } else {
            self.log.append(records).await.map_err(|e| e.to_string())
        };
        if committed.is_ok() && !diffs.is_empty() {
            self.state = state;
            self.seen.extend(fresh);
            self.snapshot_cache = None;
            self.latest.send_replace(Arc::new(self.state.clone()));
            for (seq, diff, received) in diffs {
                let frame = codec::diff(&self.state.game, seq, &diff, now);
                self.fan_out(&frame);
                metrics::histogram!(m::FANOUT_SECONDS).record(received.elapsed().as_secs_f64());
                self.history.push_back((seq, frame));
                while self.history.len() > self.cfg.history {
                    self.history.pop_front();
                }
            }
        }

        for (req, outcome) in group.into_iter().zip(outcomes) {
            let result = match (outcome, &committed) {
                (Pending::Final(r), _) => r,
                (Pending::Tentative(a), Ok(())) => Ok(a),
                (Pending::Tentative(_), Err(e)) => Err(ApplyError::Unavailable(e.clone())),
            };
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

    /// Hands one encoded diff to every subscriber's queue without waiting.
    fn fan_out(&mut self, frame: &Bytes) {
        let game = self.state.game.clone();
        let mut closed = Vec::new();
        for sub in &self.subs {
            match sub.outbox.push_diff(&game, frame) {
                Push::Queued | Push::Skipped => {}
                Push::Conflated => {
                    metrics::counter!(m::SLOW_CONSUMER, "action" => "conflated").increment(1);
                }
                Push::Closed => closed.push(sub.outbox.conn_id()),
            }
        }
        for conn_id in closed {
            self.unsubscribe(conn_id);
        }
    }
}

/// The actor loop: runs until every handle is dropped.
pub(crate) async fn run(mut actor: GameActor) {
    let mut next: Option<Cmd> = None;
    loop {
        let cmd = match next.take() {
            Some(cmd) => cmd,
            None => match actor.rx.recv().await {
                Some(cmd) => cmd,
                None => break,
            },
        };
        match cmd {
            Cmd::Apply {
                event,
                fingerprint,
                by,
                received,
                reply,
            } => {
                let mut group = vec![ApplyReq {
                    event,
                    fingerprint,
                    by,
                    received,
                    reply,
                }];
                while group.len() < MAX_GROUP {
                    match actor.rx.try_recv() {
                        Ok(Cmd::Apply {
                            event,
                            fingerprint,
                            by,
                            received,
                            reply,
                        }) => group.push(ApplyReq {
                            event,
                            fingerprint,
                            by,
                            received,
                            reply,
                        }),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                actor.apply_group(group).await;
            }
            Cmd::Subscribe { sub, since } => actor.subscribe(sub, since),
            Cmd::Unsubscribe { conn_id } => actor.unsubscribe(conn_id),
            Cmd::Resync { conn_id } => actor.resync(conn_id),
        }
    }
    metrics::gauge!(m::WS_SUBSCRIPTIONS).decrement(actor.subs.len() as f64);
}
