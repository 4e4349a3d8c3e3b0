//! Game id → its live actor, and league → the fans watching it.
//!
//! The registry is the one place that follows a game to its live actor:
//! [`Registry::find`] gives a [`Game`] without loading when it can,
//! [`Registry::load`] makes sure an actor runs, and every [`Game`] it gives
//! out comes back here when its actor has stopped, so callers never see an
//! unload.
//!
//! - `game`: [`Game`], what requests and fan sessions hold.
//! - `leagues`: league watchers and games created on other nodes.
//! - `occupancy`: the node's one task counting who watches each loaded
//!   game, over every node ([`report_occupancy`]).
//!
//! ## Loaded and unloaded games
//!
//! A game's actor holds everything needed to take events: its idempotency
//! record and a window of encoded diffs. That grows with every event, so a
//! game nobody uses is unloaded after `games.idle_unload` (the actor
//! announces it, [`Registry::unload_if_idle`] stops it) and loaded again from
//! the [`EventLog`] on its next use.
//!
//! When the log knows a game without IO (an exclusive log's
//! [`EventLog::summary`]), an unloaded game is read, listed and re-`PUT`
//! without loading: [`Registry::find`] gives a [`Game`] without an actor,
//! which loads the game on its first event or subscription. Otherwise
//! `find` loads it.
//!
//! ## Loading
//!
//! Loads, creates and unloads of one game take that game's own lock (held
//! across the log's IO, never across another game's), so a slow load
//! delays nobody else, and a game never has two actors: a stopping actor
//! first applies what was queued for it, and a load waits for it to end.
//! With a shared log the game is followed on the [`Transport`] before its
//! state is read: frames committed meanwhile wait in the mailbox and are
//! skipped by seq if the state already has them.

mod game;
mod leagues;
mod occupancy;

pub use game::Game;
pub use leagues::follow_announcements;
pub use occupancy::report_occupancy;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock, Weak};

use dashmap::DashMap;
use tokio::sync::{Mutex, mpsc};

use crate::backend::{Backend, CreateOutcome, EventLog, Page, Transport, Unready};
use crate::domain::event::fingerprint_of;
use crate::domain::{GameId, InvalidState, League, NewGame, Status};
use crate::fanout::outbox::Outbox;
use crate::game::{ActorConfig, GameHandle, IdleUnload, unix_ms};
use crate::metrics as m;
use crate::store::{Record, StoreError};

/// Why a game could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The game exists with a different creating body (409).
    #[error("game {0} already exists with a different body; GET it, or choose another id")]
    Exists(GameId),
    /// A game of this id finished and passed `games.retention`; its records
    /// are still in the event log, so the id cannot be used again yet (409).
    #[error(
        "game {0} finished longer ago than games.retention; its id can be used again once a restart has compacted the event log; choose another id"
    )]
    Retired(GameId),
    /// The body is well-formed but not acceptable (422).
    #[error(transparent)]
    Invalid(#[from] InvalidState),
    /// Storage failed (503).
    #[error(transparent)]
    Unavailable(#[from] StoreError),
    /// The creating task ended before it answered (503).
    #[error("creating the game failed: {0}")]
    Interrupted(String),
}

/// Whether `create` made a new game.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// A new game (201).
    New,
    /// It existed with the same body (200).
    Existing,
}

/// Every game this node serves: the loaded ones here, the rest in the log.
#[derive(Debug)]
pub struct Registry {
    /// Running actors.
    games: DashMap<GameId, GameHandle>,
    /// The ids of `games`, ordered (a league's loaded games).
    ids: RwLock<BTreeSet<GameId>>,
    /// One lock per game being loaded, created or unloaded.
    locks: DashMap<GameId, Arc<Mutex<()>>>,
    watchers: DashMap<League, HashMap<u64, Arc<Outbox>>>,
    log: Arc<dyn EventLog>,
    transport: Arc<dyn Transport>,
    cfg: ActorConfig,
    idle: Option<IdleUnload>,
    /// This registry, for the handles it gives out.
    me: Weak<Registry>,
}

impl Registry {
    /// A registry over `log` and `transport` (a [`Backend`]'s). With `idle`,
    /// games without fans or requests for `idle.after` are announced there,
    /// for [`unload_idle_games`] to unload.
    pub fn new(
        log: Arc<dyn EventLog>,
        transport: Arc<dyn Transport>,
        cfg: ActorConfig,
        idle: Option<IdleUnload>,
    ) -> Arc<Registry> {
        Arc::new_cyclic(|me| Registry {
            games: DashMap::new(),
            ids: RwLock::new(BTreeSet::new()),
            locks: DashMap::new(),
            watchers: DashMap::new(),
            log,
            transport,
            cfg,
            idle,
            me: me.clone(),
        })
    }

    /// A registry over `backend`'s log and transport; its announcements of
    /// games created elsewhere are the caller's to hand to
    /// [`Registry::on_created`].
    pub fn over(backend: &Backend, cfg: ActorConfig, idle: Option<IdleUnload>) -> Arc<Registry> {
        Registry::new(backend.log.clone(), backend.transport.clone(), cfg, idle)
    }

    // ----- lookups -----------------------------------------------------------

    /// The handle of a game whose actor runs on this node (no IO).
    ///
    /// With an exclusive log, which knows every game, an actor of a game
    /// the log no longer knows (past `games.retention`) is dropped here:
    /// the game answers as never created from then on.
    pub fn get(&self, id: &GameId) -> Option<GameHandle> {
        let handle = self
            .games
            .get(id)
            .map(|h| h.value().clone())
            .filter(|h| !h.is_closed())?;
        if self.log.exclusive() && self.log.summary(id).is_none() {
            self.remove(id);
            tracing::debug!(game = %id, "dropped the actor of a game past its retention");
            return None;
        }
        Some(handle)
    }

    /// The running actors of every loaded game (no IO).
    pub fn loaded(&self) -> Vec<GameHandle> {
        self.games
            .iter()
            .map(|g| g.value().clone())
            .filter(|h| !h.is_closed())
            .collect()
    }

    /// Whether the game's actor is in memory (no IO).
    pub fn is_loaded(&self, id: &GameId) -> bool {
        self.get(id).is_some()
    }

    /// The game, `None` if it does not exist: with its running actor; without
    /// one when the log knows the game without IO (it loads on first use);
    /// else the game is loaded.
    pub async fn find(&self, id: &GameId) -> Result<Option<Game>, StoreError> {
        if let Some(g) = self.known(id) {
            return Ok(Some(g));
        }
        self.load(id).await
    }

    /// The game with a running actor, loading it if needed; `None` if it
    /// does not exist.
    pub async fn load(&self, id: &GameId) -> Result<Option<Game>, StoreError> {
        Ok(self.load_actor(id).await?.map(|a| self.game(a)))
    }

    /// The running actor of a game, loading it if needed (what a [`Game`]
    /// whose actor stopped asks for).
    pub(crate) async fn load_actor(&self, id: &GameId) -> Result<Option<GameHandle>, StoreError> {
        if let Some(h) = self.get(id) {
            return Ok(Some(h));
        }
        let lock = self.lock_of(id);
        let loaded = {
            let _guard = lock.lock().await;
            self.load_locked(id).await
        };
        self.release(id, lock);
        loaded
    }

    /// [`Registry::find`] without IO: the game with its running actor, or
    /// without one from the log's summary.
    fn known(&self, id: &GameId) -> Option<Game> {
        match self.get(id) {
            Some(actor) => Some(self.game(actor)),
            None => self
                .log
                .summary(id)
                .map(|s| Game::unloaded(s.state, s.created_fingerprint, self.me.clone())),
        }
    }

    /// The [`Game`] of a running actor.
    fn game(&self, actor: GameHandle) -> Game {
        Game::live(actor, self.me.clone())
    }

    /// Loads `id` holding its lock.
    async fn load_locked(&self, id: &GameId) -> Result<Option<GameHandle>, StoreError> {
        if let Some(h) = self.get(id) {
            return Ok(Some(h));
        }
        // Follow first, then read: nothing committed in between is missed.
        let (mailbox, rx) = GameHandle::mailbox(&self.cfg);
        self.transport
            .follow_game(id, Arc::new(mailbox.clone()))
            .await?;
        let restored = match self.log.load(id, self.cfg.history).await {
            Ok(Some(restored)) => restored,
            other => {
                self.transport.unfollow_game(id).await;
                return other.map(|_| None);
            }
        };
        let seq = restored.state.seq;
        let handle = GameHandle::spawn_on(
            restored,
            self.log.clone(),
            self.cfg,
            mailbox,
            rx,
            self.idle.clone(),
        );
        self.insert(handle.clone());
        tracing::debug!(game = %id, seq, "game loaded");
        Ok(Some(handle))
    }

    /// The lock of game `id` (made if none is held).
    fn lock_of(&self, id: &GameId) -> Arc<Mutex<()>> {
        self.locks.entry(id.clone()).or_default().value().clone()
    }

    /// Gives back a lock from [`Registry::lock_of`]; the last one out
    /// removes it. (Clones are made under the map's shard lock, which
    /// `remove_if` holds too: a count of one means nobody else has it.)
    fn release(&self, id: &GameId, lock: Arc<Mutex<()>>) {
        drop(lock);
        self.locks.remove_if(id, |_, l| Arc::strong_count(l) == 1);
    }

    /// Adds or replaces a game's running actor.
    fn insert(&self, handle: GameHandle) {
        let id = handle.id().clone();
        self.ids
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone());
        if self.games.insert(id, handle).is_none() {
            metrics::gauge!(m::GAMES_ACTIVE).increment(1.0);
        }
    }

    /// Forgets a game's actor.
    fn remove(&self, id: &GameId) {
        if self.games.remove(id).is_some() {
            metrics::gauge!(m::GAMES_ACTIVE).decrement(1.0);
        }
        self.ids
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Unloads `id` if its actor is still idle, and stops following it. Its
    /// handles load it again on their next use.
    pub async fn unload_if_idle(&self, id: &GameId) {
        let lock = self.lock_of(id);
        {
            let _guard = lock.lock().await;
            self.unload_locked(id).await;
        }
        self.release(id, lock);
    }

    async fn unload_locked(&self, id: &GameId) {
        let Some(handle) = self.get(id) else { return };
        // Once this answers, the actor has applied all it had queued and
        // takes nothing more: a load after this starts from the whole log.
        if !handle.stop_if_idle().await {
            return;
        }
        self.remove(id);
        self.transport.unfollow_game(id).await;
        tracing::debug!(game = %id, "idle game unloaded");
    }

    /// Number of games loaded on this node (actors in memory).
    pub fn len(&self) -> usize {
        self.games.len()
    }

    /// Whether no game is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The log games commit to.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    /// `Ok` when events can be accepted, else the reason.
    pub fn health(&self) -> Result<(), Unready> {
        Backend::health(self.log.as_ref(), self.transport.as_ref())
    }

    /// Waits until every loaded game's fans have been handed every frame
    /// committed so far (graceful shutdown, before fans get their close).
    pub async fn flush_fanout(&self) {
        let handles: Vec<GameHandle> = self.games.iter().map(|g| g.value().clone()).collect();
        futures_util::future::join_all(handles.iter().map(GameHandle::flush_fanout)).await;
    }

    /// Flushes and closes the log (graceful shutdown).
    pub async fn close(&self) {
        self.log.close().await;
    }

    /// The audit trail of `id`: events after `since`, oldest first.
    pub async fn events(
        &self,
        id: &GameId,
        since: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        self.log.events(id, since, limit).await
    }

    /// One page of games, ordered by id, optionally filtered.
    pub async fn list(
        &self,
        league: Option<&League>,
        status: Option<Status>,
        limit: usize,
        cursor: Option<&GameId>,
    ) -> Result<Page, StoreError> {
        self.log.list(league, status, limit, cursor).await
    }

    // ----- creating ----------------------------------------------------------

    /// Creates a game, idempotently: the same body again is [`Created::Existing`].
    ///
    /// Runs on a task of its own: a client that hangs up must not cancel it
    /// between the durable append and the start of the game's actor, which
    /// would leave a game in the log that this hub does not serve (and
    /// refuse every retry, the log holding its creation already).
    pub async fn create(
        self: &Arc<Self>,
        id: GameId,
        body: NewGame,
        by: &str,
    ) -> Result<(Game, Created), CreateError> {
        let registry = Arc::clone(self);
        let by = by.to_string();
        tokio::spawn(async move {
            let lock = registry.lock_of(&id);
            let created = {
                let _guard = lock.lock().await;
                registry.create_locked(&id, body, &by).await
            };
            registry.release(&id, lock);
            created
        })
        .await
        .map_err(|e| CreateError::Interrupted(e.to_string()))?
    }

    /// The body of [`Registry::create`], holding the game's lock.
    async fn create_locked(
        &self,
        id: &GameId,
        body: NewGame,
        by: &str,
    ) -> Result<(Game, Created), CreateError> {
        let fingerprint = fingerprint_of(&body);
        let now = unix_ms();
        let state = body.into_state(id.clone(), now)?;
        let record = Record::Created {
            game: id.clone(),
            state: state.clone(),
            fingerprint,
            by: by.to_string(),
            at: now,
        };
        let existing = match self.known(id) {
            Some(g) => Some(g),
            None => self.load_locked(id).await?.map(|a| self.game(a)),
        };
        if let Some(h) = existing {
            if h.created_fingerprint() != fingerprint {
                return Err(CreateError::Exists(id.clone()));
            }
            // Asks the log again: with a shared log this re-announces and
            // re-indexes the game (it finds it exists and changes nothing),
            // healing a crash between the game's keys and its index.
            self.log.create(&state, fingerprint, &record).await?;
            return Ok((h, Created::Existing));
        }
        let created = match self.log.create(&state, fingerprint, &record).await? {
            CreateOutcome::Created => Created::New,
            CreateOutcome::Exists { fingerprint: fp } if fp == fingerprint => Created::Existing,
            CreateOutcome::Exists { .. } => return Err(CreateError::Exists(id.clone())),
            CreateOutcome::Retired => return Err(CreateError::Retired(id.clone())),
        };
        let actor = self.load_locked(id).await?.ok_or_else(|| {
            StoreError::Unavailable(format!("game {id} is missing right after its creation"))
        })?;
        let game = self.game(actor);
        if created == Created::New {
            self.notify_watchers(&game).await;
        }
        Ok((game, created))
    }
}

/// Unloads the games announced on `idle` (see [`IdleUnload`]) until the
/// registry is gone.
pub async fn unload_idle_games(registry: Weak<Registry>, mut idle: mpsc::Receiver<GameId>) {
    while let Some(id) = idle.recv().await {
        let Some(registry) = registry.upgrade() else {
            return;
        };
        registry.unload_if_idle(&id).await;
    }
}

#[cfg(test)]
mod tests;
