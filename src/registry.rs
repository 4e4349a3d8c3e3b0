//! Game id → actor handle, and league → its games and league watchers.
//!
//! The registry also rebuilds every game from the event log at start and
//! creates games (idempotently) at run time.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use dashmap::DashMap;
use serde_json::Value;

use crate::cluster::Bus;
use crate::codec;
use crate::domain::event::fingerprint_of;
use crate::domain::{GameId, GameState, InvalidState, League, NewGame, Status, patch};
use crate::game::{ActorConfig, GameHandle, IdleUnload, Restored, Seen, SeenIds, unix_ms};
use crate::metrics as m;
use crate::store::redis::CreateOutcome;
use crate::store::{FileLog, Record, Store, StoreError};
use crate::ws::outbox::Outbox;

/// Why a game could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The game exists with a different creating body (409).
    #[error("game {0} already exists with a different body; GET it, or choose another id")]
    Exists(GameId),
    /// The body is well-formed but not acceptable (422).
    #[error(transparent)]
    Invalid(#[from] InvalidState),
    /// Storage failed (503).
    #[error("{0}")]
    Unavailable(String),
}

/// Whether `create` made a new game.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// A new game (201).
    New,
    /// It existed with the same body (200).
    Existing,
}

/// One page of `list`.
#[derive(Debug, Clone)]
pub struct Page {
    /// The games, ordered by id.
    pub games: Vec<Arc<GameState>>,
    /// Pass as `cursor` for the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// Every game on this node.
///
/// Single node: every game is loaded at start (log replay) and lives here.
/// Cluster: games are loaded from Redis on first use (`find`), their channel
/// subscribed before their state is read so no frame is missed.
#[derive(Debug)]
pub struct Registry {
    games: DashMap<GameId, GameHandle>,
    ids: RwLock<BTreeSet<GameId>>,
    watchers: DashMap<League, HashMap<u64, Arc<Outbox>>>,
    create_lock: tokio::sync::Mutex<()>,
    load_lock: tokio::sync::Mutex<()>,
    store: Store,
    bus: Option<Arc<Bus>>,
    cfg: ActorConfig,
    idle: Option<IdleUnload>,
}

/// A game being rebuilt from log records.
struct Rebuild {
    state: Value,
    seq: u64,
    created_fingerprint: crate::domain::Fingerprint,
    seen: SeenIds,
    tail: VecDeque<(u64, Value, i64)>,
}

fn unavailable(e: StoreError) -> CreateError {
    CreateError::Unavailable(e.to_string())
}

impl Registry {
    /// An empty single-node registry writing to `log`.
    pub fn new(log: Arc<FileLog>, cfg: ActorConfig) -> Registry {
        Registry::with_store(Store::File(log), None, cfg, None)
    }

    /// A registry over any store; `bus` links nodes in cluster mode.
    pub fn with_store(
        store: Store,
        bus: Option<Arc<Bus>>,
        cfg: ActorConfig,
        idle: Option<IdleUnload>,
    ) -> Registry {
        Registry {
            games: DashMap::new(),
            ids: RwLock::new(BTreeSet::new()),
            watchers: DashMap::new(),
            create_lock: tokio::sync::Mutex::new(()),
            load_lock: tokio::sync::Mutex::new(()),
            store,
            bus,
            cfg,
            idle,
        }
    }

    /// A folder for log replay: feed it every record in order with
    /// [`Replayer::record`], then [`Registry::restore`] the result.
    pub fn replayer(history: usize) -> Replayer {
        Replayer {
            games: HashMap::new(),
            history,
        }
    }

    /// Starts an actor for every game rebuilt by `replayer`.
    pub fn restore(&self, replayer: Replayer) -> Result<usize, String> {
        let mut n = 0;
        for (id, rb) in replayer.games {
            let state: GameState = serde_json::from_value(rb.state)
                .map_err(|e| format!("game {id}: replayed state is invalid: {e}"))?;
            let history = rb
                .tail
                .iter()
                .map(|(seq, diff, at)| (*seq, codec::diff(&id, *seq, diff, *at)))
                .collect();
            let handle = GameHandle::spawn(
                Restored {
                    state,
                    created_fingerprint: rb.created_fingerprint,
                    seen: rb.seen,
                    history,
                },
                self.store.clone(),
                self.cfg,
            );
            self.insert(handle);
            n += 1;
        }
        Ok(n)
    }

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

    /// The handle of a game loaded on this node (no IO).
    pub fn get(&self, id: &GameId) -> Option<GameHandle> {
        self.games.get(id).map(|h| h.clone())
    }

    /// The handle of a game, loading it from Redis in cluster mode.
    pub async fn find(&self, id: &GameId) -> Result<Option<GameHandle>, StoreError> {
        if let Some(h) = self.get(id).filter(|h| !h.is_closed()) {
            return Ok(Some(h));
        }
        let (Store::Redis(redis), Some(bus)) = (&self.store, &self.bus) else {
            return Ok(None);
        };
        let _guard = self.load_lock.lock().await;
        if let Some(h) = self.get(id) {
            return Ok(Some(h));
        }
        // Route and subscribe first, then read: frames published meanwhile
        // wait in the mailbox and are skipped by seq if already included.
        let (mailbox, rx) = GameHandle::mailbox(&self.cfg);
        bus.subscribe_game(id, mailbox.clone()).await?;
        let loaded = match redis.load(id).await {
            Ok(Some(l)) => l,
            Ok(None) => {
                bus.unsubscribe_game(id).await;
                return Ok(None);
            }
            Err(e) => {
                bus.unsubscribe_game(id).await;
                return Err(e);
            }
        };
        let history = redis
            .last_frames(id, self.cfg.history)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|(q, _)| *q <= loaded.state.seq)
            .collect();
        let handle = GameHandle::spawn_on(
            Restored {
                state: loaded.state,
                created_fingerprint: loaded.created_fingerprint,
                seen: SeenIds::new(),
                history,
            },
            self.store.clone(),
            self.cfg,
            mailbox,
            rx,
            self.idle.clone(),
        );
        self.insert(handle.clone());
        Ok(Some(handle))
    }

    /// Subscribes `outbox` to `handle`'s game; if that actor is being
    /// unloaded, looks the game up again (loading a fresh actor) and retries.
    pub async fn subscribe(
        &self,
        handle: &GameHandle,
        outbox: Arc<Outbox>,
        since: Option<u64>,
    ) -> bool {
        if handle.subscribe(outbox.clone(), since).await {
            return true;
        }
        for _ in 0..3 {
            match self.find(handle.id()).await {
                Ok(Some(fresh)) => {
                    if fresh.subscribe(outbox.clone(), since).await {
                        return true;
                    }
                }
                _ => return false,
            }
        }
        false
    }

    /// Cluster mode: unloads `id` if its actor is still idle, and
    /// unsubscribes its channel. Holds the load lock so no concurrent lookup
    /// gets the old actor.
    pub async fn unload_if_idle(&self, id: &GameId) {
        let _guard = self.load_lock.lock().await;
        let Some(handle) = self.get(id) else { return };
        if !handle.stop_if_idle().await {
            return;
        }
        if self.games.remove(id).is_some() {
            metrics::gauge!(m::GAMES_ACTIVE).decrement(1.0);
        }
        self.ids
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(bus) = &self.bus {
            bus.unsubscribe_game(id).await;
        }
        tracing::debug!(game = %id, "idle game unloaded");
    }

    /// Number of games loaded on this node.
    pub fn len(&self) -> usize {
        self.games.len()
    }

    /// Whether no game is loaded.
    pub fn is_empty(&self) -> bool {
        self.games.is_empty()
    }

    /// The store games write to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// `Ok` when events can be accepted, else the reason.
    pub fn health(&self) -> Result<(), String> {
        match (&self.store, &self.bus) {
            (Store::File(log), _) => log.health(),
            (Store::Redis(_), Some(bus)) => bus.readiness(),
            (Store::Redis(_), None) => Err("no Redis pub/sub link".into()),
        }
    }

    /// Flushes and closes storage (graceful shutdown).
    pub async fn close(&self) {
        if let Store::File(log) = &self.store {
            log.close().await;
        }
    }

    /// The audit trail of `id`: events after `since`, oldest first.
    pub async fn events(
        &self,
        id: &GameId,
        since: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        match &self.store {
            Store::File(log) => log.events(id, since, limit).await,
            Store::Redis(redis) => redis.events(id, since, limit).await,
        }
    }

    /// Creates a game, idempotently: the same body again is [`Created::Existing`].
    pub async fn create(
        &self,
        id: GameId,
        body: NewGame,
        by: &str,
    ) -> Result<(GameHandle, Created), CreateError> {
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
        let _guard = self.create_lock.lock().await;
        if let Some(h) = self.find(&id).await.map_err(unavailable)? {
            return if h.created_fingerprint() == fingerprint {
                if let Store::Redis(redis) = &self.store {
                    // Re-announces and re-indexes the game (the script finds it
                    // exists and changes nothing): heals a crash between the
                    // game's keys and its index.
                    redis
                        .create(&state, fingerprint, &record)
                        .await
                        .map_err(unavailable)?;
                }
                Ok((h, Created::Existing))
            } else {
                Err(CreateError::Exists(id))
            };
        }
        let handle = match &self.store {
            Store::File(log) => {
                log.append(vec![record]).await.map_err(unavailable)?;
                let handle = GameHandle::spawn(
                    Restored {
                        state,
                        created_fingerprint: fingerprint,
                        seen: SeenIds::new(),
                        history: VecDeque::new(),
                    },
                    self.store.clone(),
                    self.cfg,
                );
                self.insert(handle.clone());
                handle
            }
            Store::Redis(redis) => {
                match redis
                    .create(&state, fingerprint, &record)
                    .await
                    .map_err(unavailable)?
                {
                    CreateOutcome::Created => {}
                    CreateOutcome::Exists { fingerprint: fp } if fp == fingerprint => {
                        let h = self.find(&id).await.map_err(unavailable)?;
                        return h
                            .map(|h| (h, Created::Existing))
                            .ok_or_else(|| CreateError::Unavailable("game vanished".into()));
                    }
                    CreateOutcome::Exists { .. } => return Err(CreateError::Exists(id)),
                }
                self.find(&id)
                    .await
                    .map_err(unavailable)?
                    .ok_or_else(|| CreateError::Unavailable("game vanished after create".into()))?
            }
        };
        self.notify_watchers(&handle).await;
        Ok((handle, Created::New))
    }

    /// Subscribes the local watchers of `handle`'s league to it (they get a
    /// snapshot first; subscribing twice is harmless).
    async fn notify_watchers(&self, handle: &GameHandle) {
        let watchers: Vec<Arc<Outbox>> = self
            .watchers
            .get(&handle.id().league())
            .map(|w| w.values().cloned().collect())
            .unwrap_or_default();
        for outbox in watchers {
            self.subscribe(handle, outbox, None).await;
        }
    }

    /// A game was created on some node (cluster mode): load it if a local fan
    /// watches its league.
    pub async fn on_created(&self, id: &GameId) {
        if !self.watchers.contains_key(&id.league()) {
            return;
        }
        match self.find(id).await {
            Ok(Some(handle)) => self.notify_watchers(&handle).await,
            Ok(None) => tracing::warn!(game = %id, "announced game is missing from Redis"),
            Err(e) => tracing::warn!(game = %id, "cannot load announced game: {e}"),
        }
    }

    /// Handles of the games of `league` loaded on this node (no IO).
    pub fn loaded_league_games(&self, league: &League) -> Vec<GameHandle> {
        let prefix = format!("{}:", league.as_str());
        let ids = self.ids.read().unwrap_or_else(|p| p.into_inner());
        ids.iter()
            .skip_while(|id| !id.as_str().starts_with(&prefix) && id.as_str() < prefix.as_str())
            .take_while(|id| id.as_str().starts_with(&prefix))
            .filter_map(|id| self.get(id))
            .collect()
    }

    /// Handles of every game of `league`, loading them in cluster mode.
    pub async fn league_games(&self, league: &League) -> Result<Vec<GameHandle>, StoreError> {
        let Store::Redis(redis) = &self.store else {
            return Ok(self.loaded_league_games(league));
        };
        let mut out = Vec::new();
        for id in redis.league_games(league).await? {
            if let Some(h) = self.find(&id).await? {
                out.push(h);
            }
        }
        Ok(out)
    }

    /// Registers `outbox` as a watcher of `league` (it will be subscribed to
    /// games created later) and returns the league's current games.
    pub async fn watch_league(
        &self,
        league: &League,
        outbox: Arc<Outbox>,
    ) -> Result<Vec<GameHandle>, StoreError> {
        let first = {
            let mut w = self.watchers.entry(league.clone()).or_default();
            let first = w.is_empty();
            w.insert(outbox.conn_id(), outbox);
            first
        };
        if first && let Some(bus) = &self.bus {
            bus.subscribe_league(league).await?;
        }
        self.league_games(league).await
    }

    /// Stops `conn_id` watching `league`.
    pub async fn unwatch_league(&self, league: &League, conn_id: u64) {
        if let Some(mut w) = self.watchers.get_mut(league) {
            w.remove(&conn_id);
        }
        if self
            .watchers
            .remove_if(league, |_, w| w.is_empty())
            .is_some()
            && let Some(bus) = &self.bus
        {
            bus.unsubscribe_league(league).await;
        }
    }

    /// One page of games, ordered by id, optionally filtered.
    pub async fn list(
        &self,
        league: Option<&League>,
        status: Option<Status>,
        limit: usize,
        cursor: Option<&GameId>,
    ) -> Result<Page, StoreError> {
        if let Store::Redis(redis) = &self.store {
            let (games, next_cursor) = redis.list(league, status, limit, cursor).await?;
            return Ok(Page {
                games: games.into_iter().map(Arc::new).collect(),
                next_cursor,
            });
        }
        Ok(self.list_loaded(league, status, limit, cursor))
    }

    fn list_loaded(
        &self,
        league: Option<&League>,
        status: Option<Status>,
        limit: usize,
        cursor: Option<&GameId>,
    ) -> Page {
        let prefix = league.map(|l| format!("{}:", l.as_str()));
        let ids = self.ids.read().unwrap_or_else(|p| p.into_inner());
        let start = match cursor {
            Some(c) => Bound::Excluded(c.clone()),
            None => Bound::Unbounded,
        };
        let mut games = Vec::new();
        let mut next_cursor = None;
        for id in ids.range((start, Bound::Unbounded)) {
            if let Some(p) = prefix.as_deref().filter(|p| !id.as_str().starts_with(p)) {
                if id.as_str() > p {
                    break;
                }
                continue;
            }
            let Some(h) = self.get(id) else { continue };
            let state = h.state();
            if status.is_some_and(|s| s != state.status) {
                continue;
            }
            if games.len() == limit {
                next_cursor = games
                    .last()
                    .map(|g: &Arc<GameState>| g.game.as_str().to_string());
                break;
            }
            games.push(state);
        }
        Page { games, next_cursor }
    }
}

/// Folds log records into games (see [`Registry::replayer`]).
pub struct Replayer {
    games: HashMap<GameId, Rebuild>,
    history: usize,
}

impl Replayer {
    /// Applies one record; an error means the log contradicts itself.
    pub fn record(&mut self, record: Record) -> Result<(), String> {
        match record {
            Record::Created {
                game,
                state,
                fingerprint,
                ..
            } => {
                if self.games.contains_key(&game) {
                    return Err(format!("game {game} is created twice"));
                }
                let state = serde_json::to_value(&state).map_err(|e| e.to_string())?;
                self.games.insert(
                    game,
                    Rebuild {
                        state,
                        seq: 0,
                        created_fingerprint: fingerprint,
                        seen: SeenIds::new(),
                        tail: VecDeque::new(),
                    },
                );
            }
            Record::Event {
                game,
                seq,
                event,
                fingerprint,
                at,
                diff,
                ..
            } => {
                let rb = self
                    .games
                    .get_mut(&game)
                    .ok_or_else(|| format!("event for unknown game {game}"))?;
                if seq != rb.seq + 1 {
                    return Err(format!(
                        "game {game}: event seq {seq} follows seq {} (gap or repeat)",
                        rb.seq
                    ));
                }
                patch::merge(&mut rb.state, &diff);
                rb.seq = seq;
                rb.seen.insert(&event.event_id, Seen { fingerprint, seq });
                rb.tail.push_back((seq, diff, at));
                while rb.tail.len() > self.history {
                    rb.tail.pop_front();
                }
            }
        }
        Ok(())
    }
}
