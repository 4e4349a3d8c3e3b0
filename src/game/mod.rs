//! The per-game actor and its handle (Alice Ryhl's actor shape).
//!
//! Each game has one [`actor`] task that owns its state, its `seq`, the
//! idempotency record of every `event_id` it ever applied, a window of recent
//! encoded diffs for resume, and its subscribers. Everyone else talks to it
//! through a cloneable [`GameHandle`] over a bounded mailbox. The actor never
//! awaits a fan: frames go into each fan's [`Outbox`]
//! without blocking.
//!
//! A game without fans or requests for `games.idle_unload` is unloaded: its
//! actor stops and its memory (idempotency record, history) is freed. A handle
//! whose actor is gone, or a *dormant* handle made for an unloaded game (it
//! only carries the last state), asks its [`Loader`] (the registry) for a
//! live actor on the next event or subscription, so callers never notice.

pub mod actor;
mod replica;

pub use crate::domain::{Seen, SeenIds};

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::backend::{BoxFuture, EventLog, FrameSink};
use crate::domain::{Event, EventError, Fingerprint, GameId, GameState};
use crate::fanout::outbox::Outbox;
use crate::store::StoreError;

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

/// The outcome of a [`GameHandle::submit`]ted event, once it is known.
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

/// What a [`Loader`] returns: the game's live handle, `None` if it does not exist.
pub type Loading<'a> =
    Pin<Box<dyn Future<Output = Result<Option<GameHandle>, StoreError>> + Send + 'a>>;

/// Where a handle whose actor has stopped (its game was unloaded) gets a live
/// one: the registry, which loads the game again if needed.
pub trait Loader: Send + Sync {
    /// The live handle of `id`, loading the game if it is not loaded.
    fn load<'a>(&'a self, id: &'a GameId) -> Loading<'a>;
}

/// How many times a request follows a game to a freshly loaded actor before
/// giving up (each unload needs a full idle period, so one is nearly always enough).
const RELOADS: usize = 3;

/// A cloneable handle to one game's actor.
#[derive(Clone)]
pub struct GameHandle {
    id: GameId,
    created_fingerprint: Fingerprint,
    tx: mpsc::Sender<Cmd>,
    latest: watch::Receiver<Arc<GameState>>,
    /// Loads the game again once this actor has stopped (single node).
    loader: Option<Weak<dyn Loader>>,
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
        tokio::spawn(actor::run(actor));
        GameHandle {
            id,
            created_fingerprint,
            tx,
            latest,
            loader: None,
        }
    }

    /// A handle of an unloaded game: it answers [`GameHandle::state`] and
    /// [`GameHandle::created_fingerprint`] from what it is given, and its
    /// first event or subscription asks `loader` for a live actor. Starts no
    /// task.
    pub fn dormant(
        state: Arc<GameState>,
        created_fingerprint: Fingerprint,
        loader: Weak<dyn Loader>,
    ) -> GameHandle {
        let id = state.game.clone();
        // Both channels are closed from the start: nothing runs behind them.
        let (tx, _) = mpsc::channel(1);
        let (_, latest) = watch::channel(state);
        GameHandle {
            id,
            created_fingerprint,
            tx,
            latest,
            loader: Some(loader),
        }
    }

    /// This handle, following its game to a new actor through `loader` once
    /// this one has stopped.
    pub fn with_loader(mut self, loader: Weak<dyn Loader>) -> GameHandle {
        self.loader = Some(loader);
        self
    }

    /// The game's live actor after this one stopped, from the loader.
    async fn reload(&self) -> Result<GameHandle, String> {
        let gone = || "the game is shutting down".to_string();
        let loader = self
            .loader
            .as_ref()
            .and_then(Weak::upgrade)
            .ok_or_else(gone)?;
        match loader.load(&self.id).await {
            Ok(Some(fresh)) => Ok(fresh),
            Ok(None) => Err(format!("game {} is no longer in the event log", self.id)),
            Err(e) => Err(e.to_string()),
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

    /// Applies one event; answers once it is durable (or refused).
    pub async fn apply(
        &self,
        event: Event,
        by: Arc<str>,
        received: Instant,
    ) -> Result<Applied, ApplyError> {
        self.submit(event, by, received).await?.wait().await
    }

    /// Queues one event in the game's mailbox and returns without waiting
    /// for the outcome, so a batch can keep several events in flight (they
    /// are applied in mailbox order and committed as one group).
    ///
    /// If the game was unloaded, the event goes to a freshly loaded actor.
    pub async fn submit(
        &self,
        event: Event,
        by: Arc<str>,
        received: Instant,
    ) -> Result<Pending, ApplyError> {
        let (reply, rx) = oneshot::channel();
        let fingerprint = event.fingerprint();
        let mut cmd = Cmd::Apply(ApplyReq {
            event,
            fingerprint,
            by,
            received,
            reply,
        });
        let mut tx = self.tx.clone();
        for attempt in 0..=RELOADS {
            // A closed mailbox hands the command back untouched.
            match tx.send(cmd).await {
                Ok(()) => return Ok(Pending(rx)),
                Err(mpsc::error::SendError(back)) => cmd = back,
            }
            if attempt == RELOADS {
                break;
            }
            tx = self.reload().await.map_err(ApplyError::Unavailable)?.tx;
        }
        Err(ApplyError::Unavailable(format!(
            "game {} was unloaded repeatedly while this event waited; retry",
            self.id
        )))
    }

    /// Subscribes a fan; it receives a snapshot, or the diffs after `since`
    /// when they are still in the history window. If the game was unloaded,
    /// subscribes to a freshly loaded actor. `false` when that fails too
    /// (without a loader: look the game up again and retry).
    pub async fn subscribe(&self, outbox: Arc<Outbox>, since: Option<u64>) -> bool {
        if self.subscribe_here(outbox.clone(), since).await {
            return true;
        }
        if self.loader.is_none() {
            return false;
        }
        for _ in 0..RELOADS {
            match self.reload().await {
                Ok(fresh) => {
                    if fresh.subscribe_here(outbox.clone(), since).await {
                        return true;
                    }
                }
                Err(e) => {
                    tracing::warn!(game = %self.id, "cannot load game for a subscriber: {e}");
                    return false;
                }
            }
        }
        false
    }

    /// Subscribes a fan to this very actor; `false` if it has stopped.
    async fn subscribe_here(&self, outbox: Arc<Outbox>, since: Option<u64>) -> bool {
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

    /// Whether the actor has stopped or this handle is from an unloaded game.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Removes a fan.
    pub async fn unsubscribe(&self, conn_id: u64) {
        let _ = self.tx.send(Cmd::Unsubscribe { conn_id }).await;
    }

    /// Asks the actor to send a fresh snapshot to a conflated fan.
    pub async fn resync(&self, conn_id: u64) {
        let _ = self.tx.send(Cmd::Resync { conn_id }).await;
    }
}
