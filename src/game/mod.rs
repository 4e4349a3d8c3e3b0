//! The per-game actor and its handle (Alice Ryhl's actor shape).
//!
//! Each game has one `actor` task that owns its state, its `seq`, the
//! idempotency record of every `event_id` it ever applied, a window of recent
//! encoded diffs for resume, and its subscribers. Everyone else talks to it
//! through a cloneable [`GameHandle`] over a bounded mailbox. The actor never
//! awaits a fan: frames go into each fan's [`Outbox`]
//! without blocking.
//!
//! A game without fans or requests for `games.idle_unload` is unloaded: its
//! actor stops and its memory (idempotency record, history) is freed. A
//! handle of a stopped actor hands back what it was given
//! ([`GameHandle::try_submit`], [`GameHandle::try_subscribe`]); following the
//! game to its next actor is the registry's job (`registry::Game`), so this
//! module never calls up.
//!
//! Who watches: each actor shares an [`Audience`] with its handles: the
//! number of its fans on this node (kept on subscribe and unsubscribe, never
//! on a push) and the latest total over every node that the node's occupancy
//! task (`registry::occupancy`) learned. The task hands a changed total to
//! the actor ([`GameHandle::set_watching`]), which sends its fans one
//! occupancy frame; snapshots carry the latest total as `n`.

pub(crate) mod actor;
mod plan;
mod replica;

pub use crate::domain::{Seen, SeenIds};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::backend::{BoxFuture, EventLog, FrameSink};
use crate::domain::{Event, EventError, Fingerprint, GameId, GameState};
use crate::fanout::fans::FanCount;
use crate::fanout::outbox::Outbox;

pub use crate::backend::Restored;

pub use actor::ActorConfig;

/// Server time as Unix milliseconds.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A successfully handled event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The seq the event produced (the original one for a duplicate).
    pub seq: u64,
    /// True when this `event_id` was applied before with the same body.
    pub duplicate: bool,
}

/// Why an event was not applied. Nothing changed in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The `event_id` was used before with another body (409).
    #[error(
        "event_id {event_id:?} was already used for a different event (seq {seq}); use a new event_id for a new event"
    )]
    Conflict {
        /// The reused id.
        event_id: String,
        /// The seq of the original event.
        seq: u64,
    },
    /// `expected_seq` did not match (412).
    #[error(
        "expected_seq is {expected} but the game is at seq {current}; re-read the game and retry"
    )]
    SeqMismatch {
        /// What the client expected.
        expected: u64,
        /// Where the game is.
        current: u64,
    },
    /// The event is malformed (400) or cannot apply (422).
    #[error(transparent)]
    Invalid(#[from] EventError),
    /// Storage failed or the node is shutting down (503).
    #[error("{0}")]
    Unavailable(String),
}

/// After `after` without local fans or requests, the actor announces its
/// game on `announce` so the registry can unload it (both modes).
#[derive(Debug, Clone)]
pub struct IdleUnload {
    /// How long a game may sit idle.
    pub after: std::time::Duration,
    /// Where idle games are announced.
    pub announce: mpsc::Sender<GameId>,
}

/// No total known yet (see [`Audience`]).
const UNKNOWN: u64 = u64::MAX;

/// How many fans watch one game, shared by its actor, its handles and the
/// occupancy task (see the module docs).
#[derive(Debug)]
pub struct Audience {
    /// Fans of the actor on this node.
    here: FanCount,
    /// The latest total over every node; [`UNKNOWN`] before the first.
    total: AtomicU64,
    /// The total the actor last sent its fans; [`UNKNOWN`] before the first.
    told: AtomicU64,
}

impl Audience {
    fn new(here: FanCount) -> Audience {
        Audience {
            here,
            total: AtomicU64::new(UNKNOWN),
            told: AtomicU64::new(UNKNOWN),
        }
    }

    /// Fans on this node now.
    pub fn here(&self) -> u64 {
        self.here.get()
    }

    /// Fans on every node: the latest total reported, or this node's own
    /// count before the first report.
    pub fn watching(&self) -> u64 {
        match self.total.load(Ordering::Relaxed) {
            UNKNOWN => self.here(),
            total => total,
        }
    }
}

/// A subscriber of one game: a fan connection's queue.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// The outbox of the connection.
    pub outbox: Arc<Outbox>,
}

/// One event waiting for its game actor, with where to send the outcome.
#[derive(Debug)]
pub(crate) struct ApplyReq {
    pub(crate) event: Event,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) by: Arc<str>,
    pub(crate) received: Instant,
    pub(crate) reply: oneshot::Sender<Result<Applied, ApplyError>>,
}

/// Messages to a game actor.
#[derive(Debug)]
pub(crate) enum Cmd {
    Apply(ApplyReq),
    Subscribe {
        sub: Subscriber,
        since: Option<u64>,
        accepted: oneshot::Sender<bool>,
    },
    /// The registry wants to unload this idle game. The actor agrees (and
    /// refuses new subscribers from then on) only if still idle. Single node:
    /// it then closes its mailbox, applies what was already queued and
    /// answers last, so the log has one writer per game at any time.
    Stop {
        reply: oneshot::Sender<bool>,
    },
    Unsubscribe {
        conn_id: u64,
    },
    Resync {
        conn_id: u64,
    },
    /// A diff frame committed by some node, from the transport (a shared log).
    Remote {
        frame: Bytes,
    },
    /// Catch up from the log (after a reconnect or a dropped frame).
    Repair,
    /// `total` fans watch the game now, over every node: tell its fans.
    Watching {
        total: u64,
    },
    /// Answers with receivers that complete once every frame handed to the
    /// game's fans so far has been pushed to them (shutdown drain).
    Flush {
        reply: oneshot::Sender<Vec<oneshot::Receiver<()>>>,
    },
}

/// The sending side of a game's mailbox: where the transport delivers the
/// frames other nodes commit.
#[derive(Debug, Clone)]
pub struct Mailbox(mpsc::Sender<Cmd>);

impl FrameSink for Mailbox {
    fn deliver(&self, frame: Bytes) -> bool {
        self.0.try_send(Cmd::Remote { frame }).is_ok()
    }

    fn repair(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move { self.0.send(Cmd::Repair).await.is_ok() })
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// The receiving side of a mailbox made by [`GameHandle::mailbox`].
#[derive(Debug)]
pub struct MailboxRx(mpsc::Receiver<Cmd>);

/// The outcome of a submitted event ([`GameHandle::try_submit`]), once it is known.
#[derive(Debug)]
pub struct Pending(oneshot::Receiver<Result<Applied, ApplyError>>);

impl Pending {
    /// Waits until the event is durable (or refused).
    pub async fn wait(self) -> Result<Applied, ApplyError> {
        self.0
            .await
            .map_err(|_| ApplyError::Unavailable("the game is shutting down".into()))?
    }
}

/// An event ready for a game's mailbox ([`GameHandle::try_submit`]); a
/// stopped actor hands it back untouched, for the next actor.
#[derive(Debug)]
pub struct Submission {
    cmd: Cmd,
    rx: oneshot::Receiver<Result<Applied, ApplyError>>,
}

impl Submission {
    /// `event`, posted by `by`, received at `received`.
    pub fn new(event: Event, by: Arc<str>, received: Instant) -> Submission {
        let (reply, rx) = oneshot::channel();
        let fingerprint = event.fingerprint();
        Submission {
            cmd: Cmd::Apply(ApplyReq {
                event,
                fingerprint,
                by,
                received,
                reply,
            }),
            rx,
        }
    }
}

/// A cloneable handle to one game's actor.
#[derive(Clone)]
pub struct GameHandle {
    id: GameId,
    created_fingerprint: Fingerprint,
    tx: mpsc::Sender<Cmd>,
    latest: watch::Receiver<Arc<GameState>>,
    audience: Arc<Audience>,
}

impl std::fmt::Debug for GameHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GameHandle")
            .field("id", &self.id)
            .field("closed", &self.tx.is_closed())
            .finish_non_exhaustive()
    }
}

impl GameHandle {
    /// Starts the actor for a restored or new game, committing to `log`.
    pub fn spawn(restored: Restored, log: Arc<dyn EventLog>, cfg: ActorConfig) -> GameHandle {
        let (tx, rx) = mpsc::channel(cfg.mailbox.max(1));
        GameHandle::spawn_with(restored, log, cfg, tx, rx, None)
    }

    /// A mailbox for a game about to be loaded: with a shared log the game
    /// is followed on the transport before its state is read, so no frame
    /// is missed.
    pub fn mailbox(cfg: &ActorConfig) -> (Mailbox, MailboxRx) {
        let (tx, rx) = mpsc::channel(cfg.mailbox.max(1));
        (Mailbox(tx), MailboxRx(rx))
    }

    /// Starts the actor on a mailbox made by [`GameHandle::mailbox`].
    pub fn spawn_on(
        restored: Restored,
        log: Arc<dyn EventLog>,
        cfg: ActorConfig,
        mailbox: Mailbox,
        rx: MailboxRx,
        idle: Option<IdleUnload>,
    ) -> GameHandle {
        GameHandle::spawn_with(restored, log, cfg, mailbox.0, rx.0, idle)
    }

    fn spawn_with(
        restored: Restored,
        log: Arc<dyn EventLog>,
        cfg: ActorConfig,
        tx: mpsc::Sender<Cmd>,
        rx: mpsc::Receiver<Cmd>,
        idle: Option<IdleUnload>,
    ) -> GameHandle {
        let (latest_tx, latest) = watch::channel(Arc::new(restored.state.clone()));
        let id = restored.state.game.clone();
        let created_fingerprint = restored.created_fingerprint;
        let actor = actor::GameActor::new(restored, rx, latest_tx, log, cfg, idle);
        let audience = actor.audience();
        tokio::spawn(actor::run(actor));
        GameHandle {
            id,
            created_fingerprint,
            tx,
            latest,
            audience,
        }
    }

    /// The game id.
    pub fn id(&self) -> &GameId {
        &self.id
    }

    /// Digest of the body that created the game.
    pub fn created_fingerprint(&self) -> Fingerprint {
        self.created_fingerprint
    }

    /// The latest committed state, without asking the actor.
    pub fn state(&self) -> Arc<GameState> {
        self.latest.borrow().clone()
    }

    /// Fans of this actor on this node now (no IO, no message).
    pub fn fans_here(&self) -> u64 {
        self.audience.here()
    }

    /// Fans watching the game over every node, as last learned (this
    /// node's own count before the first report).
    pub fn watching(&self) -> u64 {
        self.audience.watching()
    }

    /// Records that `total` fans watch the game over every node and, when
    /// that is not what its fans were last told, asks the actor to send them
    /// one occupancy frame, without waiting. `true` when a frame was asked
    /// for; a full mailbox skips it, and the next call asks again.
    pub fn set_watching(&self, total: u64) -> bool {
        let total = total.min(UNKNOWN - 1);
        self.audience.total.store(total, Ordering::Relaxed);
        if self.audience.told.load(Ordering::Relaxed) == total {
            return false;
        }
        let sent = self.tx.try_send(Cmd::Watching { total }).is_ok();
        if sent {
            self.audience.told.store(total, Ordering::Relaxed);
        }
        sent
    }

    /// Queues one event in the game's mailbox and returns without waiting
    /// for the outcome, so a batch can keep several events in flight (they
    /// are applied in mailbox order and committed as one group). A stopped
    /// actor hands the submission back.
    pub async fn try_submit(&self, submission: Submission) -> Result<Pending, Submission> {
        let Submission { cmd, rx } = submission;
        match self.tx.send(cmd).await {
            Ok(()) => Ok(Pending(rx)),
            Err(mpsc::error::SendError(cmd)) => Err(Submission { cmd, rx }),
        }
    }

    /// Subscribes a fan to this actor; it receives a snapshot, or the diffs
    /// after `since` when they are still in the history window. `false` if
    /// the actor has stopped or is stopping.
    pub async fn try_subscribe(&self, outbox: Arc<Outbox>, since: Option<u64>) -> bool {
        let (accepted, rx) = oneshot::channel();
        let sent = self
            .tx
            .send(Cmd::Subscribe {
                sub: Subscriber { outbox },
                since,
                accepted,
            })
            .await;
        sent.is_ok() && rx.await.unwrap_or(false)
    }

    /// Asks an idle actor to stop accepting subscribers (unloading). `true`
    /// when it agreed; single node: once it has also applied every event
    /// already queued and stopped taking new ones.
    pub async fn stop_if_idle(&self) -> bool {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Stop { reply }).await.is_err() {
            return true;
        }
        rx.await.unwrap_or(true)
    }

    /// Whether the actor has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Removes a fan.
    pub async fn unsubscribe(&self, conn_id: u64) {
        let _ = self.tx.send(Cmd::Unsubscribe { conn_id }).await;
    }

    /// Waits until every frame the actor handed to its fans so far has been
    /// pushed into their outboxes (fan shards may run behind the actor).
    pub async fn flush_fanout(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Flush { reply }).await.is_err() {
            return;
        }
        for shard in rx.await.unwrap_or_default() {
            let _ = shard.await;
        }
    }

    /// Asks the actor to send a fresh snapshot to a conflated fan.
    pub async fn resync(&self, conn_id: u64) {
        let _ = self.tx.send(Cmd::Resync { conn_id }).await;
    }
}
