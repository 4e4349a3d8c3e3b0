//! The seam between the hub and where its games live.
//!
//! A [`Backend`] is one deployment mode: an [`EventLog`] that makes games
//! durable, paired with the [`Transport`] that links this node to the others
//! writing the same log. The pair is built by the mode's module, so a log
//! that needs a transport cannot be built without one:
//!
//! - [`local`]: the embedded file log on local disk; this node is the log's
//!   only writer, and there is no one to link to.
//! - [`redis`]: Redis is the log (an atomic compare-and-set script per
//!   commit, a stream per game); Redis pub/sub is the transport: classic
//!   (`redis::bus`) on one server, sharded (`redis::shards`) on a Redis
//!   Cluster, chosen by the config (`redis.url` or `redis.cluster`).
//!
//! Everything above (the registry, the game actors, the routes) sees only
//! these two traits. A new backend is one new module implementing them, plus
//! one arm where the server reads the config.
//!
//! What the traits promise:
//!
//! - [`EventLog::commit`] is all-or-nothing and checks, atomically, that the
//!   game is still at the seq the caller planned from and that none of the
//!   event ids was applied before; what it answers is final. An `Err` means
//!   the outcome is unknown unless the log is [`exclusive`](EventLog::exclusive)
//!   (then nothing was written); idempotent event ids make the retry safe.
//! - An *exclusive* log has one writer, this node: a commit never loses a race,
//!   a loaded game is never behind, and [`EventLog::summary`] knows every game
//!   without IO. A shared log may be ahead of this node's replica of a game
//!   (`Stale`), which then catches up with [`EventLog::frames_after`].
//! - [`Transport::follow_game`] routes every frame later committed to the game
//!   by any node to the given [`FrameSink`], from the moment it returns.
//!
//! A third, smaller seam counts who watches: [`Occupancy`], where a node
//! reports its fan count of each loaded game and reads back the count over
//! every node. Alone (`local`), that is its own count; over Redis, each
//! node's report lives for `occupancy.ttl`, so a node that dies stops being
//! counted within that time. It carries no events: its failures never touch
//! the log or the transport.

pub mod local;
pub mod redis;
mod replay;

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::domain::{Fingerprint, GameId, GameState, League, Seen, SeenIds, Status};
pub use crate::store::{Commit, CreateOutcome};
use crate::store::{Record, StoreError};

pub use replay::{ReplayError, Replayer};

/// Why this node cannot accept events now: the `reason` of a `503` from
/// `/readyz`. Each clears by itself once its cause is gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unready {
    /// SIGTERM arrived: the node drains and takes no new work.
    #[error("shutting down")]
    ShuttingDown,
    /// The embedded log's last write or sync failed (disk full, I/O error);
    /// a probe write each time readiness is asked clears it once the disk
    /// takes writes again.
    #[error("the event log cannot write: {0}")]
    LogUnwritable(String),
    /// Redis does not answer pings.
    #[error("{0} is unreachable")]
    RedisUnreachable(&'static str),
    /// The pub/sub link to the other nodes is down; it reconnects by itself.
    #[error("the Redis pub/sub link is down; reconnecting")]
    PubSubDown,
    /// The sharded pub/sub link lost its subscriptions (a reshard or a
    /// failover) and is subscribing again.
    #[error("the sharded pub/sub link is resubscribing")]
    Resubscribing,
}

/// A boxed future, so the traits stay object safe (`dyn EventLog`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A game read back from the log, ready to become an actor.
#[derive(Debug, Clone)]
pub struct Restored {
    /// Current state.
    pub state: GameState,
    /// Digest of the body that created the game (for idempotent `PUT`).
    pub created_fingerprint: Fingerprint,
    /// The applied `event_id`s this node knows (an exclusive log: all of them;
    /// a shared one: none, they are looked up when needed).
    pub seen: SeenIds,
    /// Recent diffs, oldest first: `(seq, encoded diff frame)`.
    pub history: VecDeque<(u64, Bytes)>,
    /// The highest seq some node applied that the log then lost (0: none):
    /// seqs up to it may have been seen by fans with other content, so a
    /// resume at or below it is answered with a snapshot.
    pub lost: u64,
}

/// What this node knows of a game without IO (see [`EventLog::summary`]).
#[derive(Debug, Clone)]
pub struct Summary {
    /// The last committed state.
    pub state: Arc<GameState>,
    /// Digest of the body that created the game.
    pub created_fingerprint: Fingerprint,
    /// Server time (Unix ms) of the last record that left the game finished
    /// (`final` or `cancelled`); `None` while it is not finished. Its
    /// retention runs from here ([`crate::domain::Retention`]).
    pub finished_at: Option<i64>,
    /// How many log records the game has (its creation and its events):
    /// what dropping it would save.
    pub records: u64,
}

/// One event of a commit, prepared by the caller for the seq it will get.
#[derive(Debug, Clone, Copy)]
pub struct Committing<'a> {
    /// The scorekeeper's `event_id` (idempotency key).
    pub event_id: &'a str,
    /// Digest of the event body.
    pub fingerprint: Fingerprint,
    /// The log record (a `Record::Event`).
    pub record: &'a Record,
    /// The encoded diff frame, exactly the bytes fans get.
    pub frame: &'a Bytes,
}

/// One page of [`EventLog::list`].
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The games, ordered by id.
    pub games: Vec<Arc<GameState>>,
    /// Pass as `cursor` for the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// Where games are made durable and read back.
pub trait EventLog: Send + Sync + fmt::Debug {
    /// Whether this node is the only writer of every game (see the module
    /// docs for what that guarantees).
    fn exclusive(&self) -> bool;

    /// Creates the game of `state` (seq 0) from `record` (its
    /// `Record::Created`), unless it exists.
    fn create<'a>(
        &'a self,
        state: &'a GameState,
        fingerprint: Fingerprint,
        record: &'a Record,
    ) -> BoxFuture<'a, Result<CreateOutcome, StoreError>>;

    /// Commits `events` to `game`, planned from seq `base_seq`; event `i`
    /// gets seq `base_seq + 1 + i`, and `state` is the state after the last.
    fn commit<'a>(
        &'a self,
        game: &'a GameId,
        base_seq: u64,
        events: &'a [Committing<'a>],
        state: &'a Arc<GameState>,
    ) -> BoxFuture<'a, Result<Commit, StoreError>>;

    /// The game, with its last `history` diffs; `None` if it does not exist.
    fn load<'a>(
        &'a self,
        game: &'a GameId,
        history: usize,
    ) -> BoxFuture<'a, Result<Option<Restored>, StoreError>>;

    /// What this node knows of `game` without IO, if anything (an exclusive
    /// log knows every game; a shared one nothing).
    fn summary(&self, game: &GameId) -> Option<Summary>;

    /// Up to `limit` diff frames after `seq`, oldest first: `(seq, frame)`
    /// (how a replica catches up; an exclusive log has none to give).
    fn frames_after<'a>(
        &'a self,
        game: &'a GameId,
        seq: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(u64, Bytes)>, StoreError>>;

    /// The last `n` diff frames, oldest first: a replica's resume window
    /// after it reloaded.
    fn last_frames<'a>(
        &'a self,
        game: &'a GameId,
        n: usize,
    ) -> BoxFuture<'a, Result<Vec<(u64, Bytes)>, StoreError>>;

    /// For each of `event_ids`, what applied it, if anything.
    fn seen_ids<'a>(
        &'a self,
        game: &'a GameId,
        event_ids: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<Option<Seen>>, StoreError>>;

    /// The audit trail: up to `limit` event records after `since`, oldest first.
    fn events<'a>(
        &'a self,
        game: &'a GameId,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Record>, StoreError>>;

    /// One page of games ordered by id, optionally filtered, after `cursor`.
    fn list<'a>(
        &'a self,
        league: Option<&'a League>,
        status: Option<Status>,
        limit: usize,
        cursor: Option<&'a GameId>,
    ) -> BoxFuture<'a, Result<Page, StoreError>>;

    /// The ids of every game of `league`.
    fn league_games<'a>(
        &'a self,
        league: &'a League,
    ) -> BoxFuture<'a, Result<Vec<GameId>, StoreError>>;

    /// Records that this node had applied `game` up to `seq` and the log
    /// no longer holds that history (it lost writes), so that every node
    /// answers resumes at or below `seq` with a snapshot
    /// ([`Restored::lost`]). An exclusive log never goes back: nothing to do.
    fn note_lost<'a>(
        &'a self,
        _game: &'a GameId,
        _seq: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// Returns once what this node answers as a duplicate without a commit
    /// (from the ids it knows) is as durable as a commit's answer promises
    /// (with Redis and `redis.min_replicas_acked`, on enough replicas); else
    /// an error, and the duplicate is refused like a commit would be. An
    /// exclusive log answers only what it made durable: nothing to do.
    fn confirm<'a>(&'a self, _game: &'a GameId) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// `Ok` while commits can succeed, else why not.
    fn health(&self) -> Result<(), Unready>;

    /// Flushes and stops accepting writes (graceful shutdown).
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// Where a followed game's frames, committed by any node, are delivered: the
/// game's actor mailbox.
pub trait FrameSink: Send + Sync + fmt::Debug {
    /// Hands over one frame without waiting; `false` when there is no room
    /// (the frame is dropped: ask for a [`FrameSink::repair`]) or the
    /// receiver is gone.
    fn deliver(&self, frame: Bytes) -> bool;

    /// Asks the receiver to catch up from the log (frames were dropped or the
    /// link was down); waits for room. `false` when the receiver is gone.
    fn repair(&self) -> BoxFuture<'_, bool>;

    /// Whether the receiver is gone.
    fn is_closed(&self) -> bool;
}

/// How this node learns what other nodes commit.
pub trait Transport: Send + Sync + fmt::Debug {
    /// Routes `game`'s frames to `sink`; returns once they flow (or the link
    /// is down: then they flow once it is back, after a repair request).
    fn follow_game<'a>(
        &'a self,
        game: &'a GameId,
        sink: Arc<dyn FrameSink>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Stops routing `game`'s frames.
    fn unfollow_game<'a>(&'a self, game: &'a GameId) -> BoxFuture<'a, ()>;

    /// Announces games created in `league` (on [`Backend::announced`]).
    fn follow_league<'a>(&'a self, league: &'a League) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Stops announcing `league`'s new games.
    fn unfollow_league<'a>(&'a self, league: &'a League) -> BoxFuture<'a, ()>;

    /// `Ok` while the link to the other nodes is up, else why not.
    fn readiness(&self) -> Result<(), Unready>;
}

/// Where nodes report how many fans watch each game, and learn how many
/// watch over every node.
pub trait Occupancy: Send + Sync + fmt::Debug {
    /// Reports this node's fan count of each game of `counts` (0 withdraws
    /// the node's report) and answers the count over every live node, in
    /// the same order. An error leaves the caller with its own counts.
    fn report<'a>(
        &'a self,
        counts: &'a [(GameId, u64)],
    ) -> BoxFuture<'a, Result<Vec<u64>, StoreError>>;
}

/// One deployment mode: the log, its transport, and the announcements of
/// games other nodes created in followed leagues.
#[derive(Debug)]
pub struct Backend {
    /// Where games are durable.
    pub log: Arc<dyn EventLog>,
    /// The link to the other nodes writing `log`.
    pub transport: Arc<dyn Transport>,
    /// Where fan counts are reported and totals read.
    pub occupancy: Arc<dyn Occupancy>,
    /// Ids of games created elsewhere in a followed league. Closed at once
    /// when no other node can create games.
    pub announced: mpsc::Receiver<GameId>,
}

impl Backend {
    /// `Ok` when events can be accepted: the log and the link are up.
    pub fn health(log: &dyn EventLog, transport: &dyn Transport) -> Result<(), Unready> {
        log.health()?;
        transport.readiness()
    }
}

/// The ids of `league`'s games in `ids`, in order.
pub(crate) fn league_ids(ids: &BTreeSet<GameId>, league: &League) -> Vec<GameId> {
    let prefix = format!("{}:", league.as_str());
    ids.iter()
        .skip_while(|id| !id.as_str().starts_with(&prefix) && id.as_str() < prefix.as_str())
        .take_while(|id| id.as_str().starts_with(&prefix))
        .cloned()
        .collect()
}
