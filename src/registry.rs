//! Game id → actor handle, and league → its games and league watchers.
//!
//! The registry also rebuilds every game from the event log at start and
//! creates games (idempotently) at run time.
//!
//! ## Loaded and unloaded games
//!
//! A game's actor holds everything needed to take events: its idempotency
//! record (every `event_id` ever applied) and a window of encoded diffs. That
//! grows with every event, so a game nobody uses is unloaded after
//! `games.idle_unload` (the actor announces it, [`Registry::unload_if_idle`]
//! stops it) and loaded again on its next use.
//!
//! - **Single node**: an unloaded game keeps only its last state (and the
//!   digest of its creating body) here, enough to list it, read it and
//!   answer a repeated `PUT` without loading. [`Registry::find`] gives a
//!   *dormant* handle for it; the handle's first event or subscription loads
//!   the game through [`Registry`]'s [`Loader`]: the log's per-game index
//!   yields just that game's records, folded by the same [`Replayer`] as at
//!   start into state, idempotency record and history. At start the whole
//!   log is folded once (states only) and every game starts unloaded.
//! - **Cluster**: an unloaded game is forgotten; Redis holds it and `find`
//!   loads it again.
//!
//! Loads and unloads of single-node games take `load_lock`, and a stopping
//! actor first applies what was queued for it, so a game never has two
//! actors (two writers of its log records).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};

use dashmap::DashMap;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::cluster::Bus;
use crate::codec;
use crate::domain::event::fingerprint_of;
use crate::domain::{Fingerprint, GameId, GameState, InvalidState, League, NewGame, Status, patch};
use crate::fanout::outbox::Outbox;
use crate::game::{
    ActorConfig, GameHandle, IdleUnload, Loader, Loading, Restored, Seen, SeenIds, unix_ms,
};
use crate::metrics as m;
use crate::store::redis::CreateOutcome;
use crate::store::{FileLog, Record, Store, StoreError};

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
/// Single node: every game of the log is here, loaded (an actor) or not (its
/// last state); see the module docs.
/// Cluster: games are loaded from Redis on first use (`find`), their channel
/// subscribed before their state is read so no frame is missed.
#[derive(Debug)]
pub struct Registry {
    games: DashMap<GameId, Slot>,
    /// How many games of `games` are loaded.
    loaded: AtomicUsize,
    /// Single node: every game id; cluster: the loaded ones. Ordered, for listing.
    ids: RwLock<BTreeSet<GameId>>,
    watchers: DashMap<League, HashMap<u64, Arc<Outbox>>>,
    create_lock: tokio::sync::Mutex<()>,
    load_lock: tokio::sync::Mutex<()>,
    store: Store,
    bus: Option<Arc<Bus>>,
    cfg: ActorConfig,
    idle: Option<IdleUnload>,
    /// This registry, for the handles it gives out (single node).
    me: Weak<Registry>,
}

/// One game of the registry.
#[derive(Debug, Clone)]
enum Slot {
    /// Its actor runs.
    Loaded(GameHandle),
    /// Single node: not in memory but for what listing and reading need.
    Unloaded {
        /// The state when it was unloaded (exact: only its actor changes it).
        state: Arc<GameState>,
        /// Digest of the body that created it (for idempotent `PUT`).
        created_fingerprint: Fingerprint,
    },
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
    /// An empty single-node registry writing to `log`. With `idle`, games
    /// without fans or requests for `idle.after` are announced there, for
    /// [`unload_idle_games`] to unload.
    pub fn new(log: Arc<FileLog>, cfg: ActorConfig, idle: Option<IdleUnload>) -> Arc<Registry> {
        Arc::new_cyclic(|me| Registry::build(Store::File(log), None, cfg, idle, me.clone()))
    }

    /// A cluster registry (`bus` links the nodes); for a single node use
    /// [`Registry::new`], whose unloaded games can load again.
    pub fn with_store(
        store: Store,
        bus: Option<Arc<Bus>>,
        cfg: ActorConfig,
        idle: Option<IdleUnload>,
    ) -> Registry {
        Registry::build(store, bus, cfg, idle, Weak::new())
    }

    fn build(
        store: Store,
        bus: Option<Arc<Bus>>,
        cfg: ActorConfig,
        idle: Option<IdleUnload>,
        me: Weak<Registry>,
    ) -> Registry {
        Registry {
            games: DashMap::new(),
            loaded: AtomicUsize::new(0),
            ids: RwLock::new(BTreeSet::new()),
            watchers: DashMap::new(),
            create_lock: tokio::sync::Mutex::new(()),
            load_lock: tokio::sync::Mutex::new(()),
            store,
            bus,
            cfg,
            idle,
            me,
        }
    }

    /// A folder for log replay: feed it every record in order with
    /// [`Replayer::record`]; it keeps each game's whole idempotency record
    /// and its last `history` diffs.
    pub fn replayer(history: usize) -> Replayer {
        Replayer {
            games: HashMap::new(),
            history,
            keep_seen: true,
        }
    }

    /// A replayer keeping only each game's state and creation digest, all
    /// [`Registry::restore`] needs: games load lazily after start.
    pub fn state_replayer() -> Replayer {
        Replayer {
            games: HashMap::new(),
            history: 0,
            keep_seen: false,
        }
    }

    /// Registers every game rebuilt by `replayer`, unloaded: each loads from
    /// the log on first use. Returns how many there are.
    pub fn restore(&self, replayer: Replayer) -> Result<usize, String> {
        let mut n = 0;
        let mut ids = self.ids.write().unwrap_or_else(|p| p.into_inner());
        for (id, rb) in replayer.games {
            let state = replayed_state(&id, rb.state)?;
            ids.insert(id.clone());
            self.games.insert(
                id,
                Slot::Unloaded {
                    state: Arc::new(state),
                    created_fingerprint: rb.created_fingerprint,
                },
            );
            n += 1;
        }
        Ok(n)
    }

    /// Adds or replaces a game's running actor.
    fn insert(&self, handle: GameHandle) {
        let id = handle.id().clone();
        self.ids
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone());
        if !matches!(
            self.games.insert(id, Slot::Loaded(handle)),
            Some(Slot::Loaded(_))
        ) {
            self.loaded.fetch_add(1, Ordering::Relaxed);
            metrics::gauge!(m::GAMES_ACTIVE).increment(1.0);
        }
    }

    /// Counts a game that was loaded and is not anymore.
    fn count_unloaded(&self, was: Option<Slot>) {
        if matches!(was, Some(Slot::Loaded(_))) {
            self.loaded.fetch_sub(1, Ordering::Relaxed);
            metrics::gauge!(m::GAMES_ACTIVE).decrement(1.0);
        }
    }

    /// For the handles this registry gives out: where they load their game again.
    fn loader(&self) -> Weak<dyn Loader> {
        self.me.clone()
    }

    /// The handle of a game loaded on this node (no IO).
    pub fn get(&self, id: &GameId) -> Option<GameHandle> {
        match self.games.get(id)?.value() {
            Slot::Loaded(h) => Some(h.clone()),
            Slot::Unloaded { .. } => None,
        }
    }

    /// The handle of any game in this registry: the actor's, or a dormant
    /// one for an unloaded game (no IO).
    fn handle(&self, id: &GameId) -> Option<GameHandle> {
        match self.games.get(id)?.value() {
            Slot::Loaded(h) => Some(h.clone()),
            Slot::Unloaded {
                state,
                created_fingerprint,
            } => Some(GameHandle::dormant(
                state.clone(),
                *created_fingerprint,
                self.loader(),
            )),
        }
    }

    /// Whether the game's actor is in memory (no IO).
    pub fn is_loaded(&self, id: &GameId) -> bool {
        self.get(id).is_some()
    }

    /// The handle of a game. Single node: without IO; for an unloaded game a
    /// dormant handle, which reads its last state and loads the game on its
    /// first event or subscription. Cluster: loads the game from Redis.
    pub async fn find(&self, id: &GameId) -> Result<Option<GameHandle>, StoreError> {
        if let Some(h) = self.get(id).filter(|h| !h.is_closed()) {
            return Ok(Some(h));
        }
        match (&self.store, &self.bus) {
            // A stopped actor's handle also loads the game again when used.
            (Store::File(_), _) => Ok(self.handle(id)),
            (Store::Redis(redis), Some(bus)) => self.load_redis(redis, bus, id).await,
            (Store::Redis(_), None) => Ok(None),
        }
    }

    /// The live handle of a game, loading it if needed: what a dormant or
    /// stopped handle asks for (through [`Loader`]).
    pub async fn load(&self, id: &GameId) -> Result<Option<GameHandle>, StoreError> {
        if let Some(h) = self.get(id).filter(|h| !h.is_closed()) {
            return Ok(Some(h));
        }
        let Store::File(log) = &self.store else {
            return self.find(id).await;
        };
        if !self.games.contains_key(id) {
            return Ok(None);
        }
        let _guard = self.load_lock.lock().await;
        let slot = self.games.get(id).map(|s| s.value().clone());
        let last = match slot {
            None => return Ok(None),
            Some(Slot::Loaded(h)) if !h.is_closed() => return Ok(Some(h)),
            // Unloading holds the lock, so this actor ended otherwise (it
            // panicked): rebuild the game from the log all the same.
            Some(Slot::Loaded(h)) => h.state(),
            Some(Slot::Unloaded { state, .. }) => state,
        };
        let records = log.game_records(id).await?;
        let restored = self.rebuild(id, records)?;
        if restored.state.seq < last.seq {
            // Never start a writer that would hand out seqs a second time.
            return Err(StoreError::Unavailable(format!(
                "game {id}: the event log holds seq {} but the game was at seq {}; not loading it",
                restored.state.seq, last.seq
            )));
        }
        let handle = self.start_local(restored);
        tracing::debug!(game = %id, seq = last.seq, "game loaded from the event log");
        Ok(Some(handle))
    }

    /// Starts a single-node game's actor (its handles load the game again
    /// after an unload) and registers it.
    fn start_local(&self, restored: Restored) -> GameHandle {
        let (mailbox, rx) = GameHandle::mailbox(&self.cfg);
        let handle = GameHandle::spawn_on(
            restored,
            self.store.clone(),
            self.cfg,
            mailbox,
            rx,
            self.idle.clone(),
        )
        .with_loader(self.loader());
        self.insert(handle.clone());
        handle
    }

    /// Folds one game's log records into a game ready to become an actor,
    /// with the same [`Replayer`] as start-up.
    fn rebuild(&self, id: &GameId, records: Vec<Record>) -> Result<Restored, StoreError> {
        let bad = |reason: String| {
            StoreError::Unavailable(format!(
                "cannot rebuild game {id} from the event log: {reason}"
            ))
        };
        let mut replayer = Registry::replayer(self.cfg.history);
        for record in records {
            if record.game() != id {
                return Err(bad(format!(
                    "the index points at a record of {}",
                    record.game()
                )));
            }
            replayer.record(record).map_err(bad)?;
        }
        let rb = replayer
            .games
            .remove(id)
            .ok_or_else(|| bad("it has no creation record".into()))?;
        let state = replayed_state(id, rb.state).map_err(bad)?;
        let history = rb
            .tail
            .iter()
            .map(|(seq, diff, at)| (*seq, codec::diff(id, *seq, diff, *at)))
            .collect();
        Ok(Restored {
            state,
            created_fingerprint: rb.created_fingerprint,
            seen: rb.seen,
            history,
        })
    }

    /// Cluster: loads `id` from Redis under the load lock.
    async fn load_redis(
        &self,
        redis: &crate::store::RedisStore,
        bus: &Bus,
        id: &GameId,
    ) -> Result<Option<GameHandle>, StoreError> {
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
    /// unloaded (or the game is), loads a fresh actor and retries.
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
            match self.load(handle.id()).await {
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

    /// Unloads `id` if its actor is still idle. Single node: keeps its last
    /// state; cluster: forgets it and unsubscribes its channel. Holds the
    /// load lock so no concurrent lookup gets the old actor.
    pub async fn unload_if_idle(&self, id: &GameId) {
        let _guard = self.load_lock.lock().await;
        let Some(handle) = self.get(id) else { return };
        // Single node: once this answers, the actor has applied all it had
        // queued and takes nothing more; its state is final.
        if !handle.stop_if_idle().await {
            return;
        }
        match &self.store {
            Store::File(_) => {
                let slot = Slot::Unloaded {
                    state: handle.state(),
                    created_fingerprint: handle.created_fingerprint(),
                };
                self.count_unloaded(self.games.insert(id.clone(), slot));
            }
            Store::Redis(_) => {
                self.count_unloaded(self.games.remove(id).map(|(_, slot)| slot));
                self.ids
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(id);
                if let Some(bus) = &self.bus {
                    bus.unsubscribe_game(id).await;
                }
            }
        }
        tracing::debug!(game = %id, "idle game unloaded");
    }

    /// Number of games loaded on this node (actors in memory).
    pub fn len(&self) -> usize {
        self.loaded.load(Ordering::Relaxed)
    }

    /// Whether no game is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    ) -> Result<(GameHandle, Created), CreateError> {
        let registry = Arc::clone(self);
        let by = by.to_string();
        tokio::spawn(async move { registry.create_now(id, body, &by).await })
            .await
            .map_err(|e| CreateError::Unavailable(format!("creating the game failed: {e}")))?
    }

    /// The body of [`Registry::create`], cancelled if its caller is.
    async fn create_now(
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
                self.start_local(Restored {
                    state,
                    created_fingerprint: fingerprint,
                    seen: SeenIds::new(),
                    history: VecDeque::new(),
                })
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

    /// The ids of `league`'s games in this registry.
    fn league_ids(&self, league: &League) -> Vec<GameId> {
        let prefix = format!("{}:", league.as_str());
        let ids = self.ids.read().unwrap_or_else(|p| p.into_inner());
        ids.iter()
            .skip_while(|id| !id.as_str().starts_with(&prefix) && id.as_str() < prefix.as_str())
            .take_while(|id| id.as_str().starts_with(&prefix))
            .cloned()
            .collect()
    }

    /// Handles of the games of `league` loaded on this node (no IO).
    pub fn loaded_league_games(&self, league: &League) -> Vec<GameHandle> {
        self.league_ids(league)
            .iter()
            .filter_map(|id| self.get(id))
            .collect()
    }

    /// Handles of every game of `league`. Single node: dormant handles for
    /// unloaded games (they load when subscribed); cluster: loads them.
    pub async fn league_games(&self, league: &League) -> Result<Vec<GameHandle>, StoreError> {
        let Store::Redis(redis) = &self.store else {
            return Ok(self
                .league_ids(league)
                .iter()
                .filter_map(|id| self.handle(id))
                .collect());
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
        Ok(self.list_local(league, status, limit, cursor))
    }

    /// One page of the games in this registry, loaded or not (single node).
    fn list_local(
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
            let state = match self.games.get(id).as_deref() {
                Some(Slot::Loaded(h)) => h.state(),
                Some(Slot::Unloaded { state, .. }) => state.clone(),
                None => continue,
            };
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

impl Loader for Registry {
    fn load<'a>(&'a self, id: &'a GameId) -> Loading<'a> {
        Box::pin(Registry::load(self, id))
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

/// A replayed game's state, checked.
fn replayed_state(id: &GameId, state: Value) -> Result<GameState, String> {
    serde_json::from_value(state).map_err(|e| format!("game {id}: replayed state is invalid: {e}"))
}

/// Folds log records into games (see [`Registry::replayer`]).
pub struct Replayer {
    games: HashMap<GameId, Rebuild>,
    history: usize,
    /// Keep each game's idempotency record (not needed at start-up).
    keep_seen: bool,
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
                if self.keep_seen {
                    rb.seen.insert(&event.event_id, Seen { fingerprint, seq });
                }
                if self.history > 0 {
                    rb.tail.push_back((seq, diff, at));
                    while rb.tail.len() > self.history {
                        rb.tail.pop_front();
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::domain::{Event, NewTeam, RawEvent};
    use crate::game::{Applied, ApplyError};
    use crate::store::file::FileLogOptions;

    const IDLE: Duration = Duration::from_millis(50);
    const WAIT: Duration = Duration::from_secs(5);

    struct Fixture {
        registry: Arc<Registry>,
        idle: mpsc::Receiver<GameId>,
        _dir: tempfile::TempDir,
    }

    /// A single-node registry over a fresh log whose idle announcements the
    /// test handles itself.
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let log = FileLog::open(dir.path(), FileLogOptions { fsync: false }, |_| Ok(())).unwrap();
        let (announce, idle) = mpsc::channel(16);
        let cfg = ActorConfig {
            mailbox: 64,
            history: 3,
        };
        let registry = Registry::new(
            Arc::new(log),
            cfg,
            Some(IdleUnload {
                after: IDLE,
                announce,
            }),
        );
        Fixture {
            registry,
            idle,
            _dir: dir,
        }
    }

    fn gid(s: &str) -> GameId {
        GameId::parse(s).unwrap()
    }

    fn new_game() -> NewGame {
        NewGame {
            home: NewTeam {
                name: "Home".into(),
            },
            away: NewTeam {
                name: "Away".into(),
            },
            status: None,
            period: None,
            extra: None,
        }
    }

    fn score(event_id: &str, points: i64) -> Event {
        Event::try_from(RawEvent {
            event_id: event_id.into(),
            kind: "score".into(),
            team: Some("home".into()),
            points: Some(points),
            ..RawEvent::default()
        })
        .unwrap()
    }

    async fn apply(handle: &GameHandle, event: Event) -> Result<Applied, ApplyError> {
        handle
            .apply(event, Arc::from("tester"), Instant::now())
            .await
    }

    /// Waits for the actor of `id` to announce itself idle (unloading any
    /// other game announced meanwhile).
    async fn announced(f: &mut Fixture, id: &GameId) {
        loop {
            let announced = tokio::time::timeout(WAIT, f.idle.recv())
                .await
                .unwrap_or_else(|_| panic!("{id} is announced idle within {WAIT:?}"))
                .unwrap();
            if &announced == id {
                return;
            }
            f.registry.unload_if_idle(&announced).await;
        }
    }

    /// Waits for the actor of `id` to announce itself idle, then unloads it.
    async fn unload(f: &mut Fixture, id: &GameId) {
        announced(f, id).await;
        f.registry.unload_if_idle(id).await;
        assert!(!f.registry.is_loaded(id), "{id} is unloaded");
    }

    /// A game with events 1..=n (`e1` scores 1 point, `e2` 2, ...).
    async fn game_with_events(f: &Fixture, id: &GameId, n: u64) -> GameHandle {
        let (handle, created) = f
            .registry
            .create(id.clone(), new_game(), "t")
            .await
            .unwrap();
        assert_eq!(created, Created::New);
        for i in 1..=n {
            let applied = apply(&handle, score(&format!("e{i}"), i as i64)).await;
            assert_eq!(
                applied,
                Ok(Applied {
                    seq: i,
                    duplicate: false
                })
            );
        }
        handle
    }

    #[tokio::test]
    async fn an_unloaded_game_keeps_its_state_and_reloads_with_its_idempotency_record() {
        let mut f = fixture();
        let id = gid("nba:a");
        let stale = game_with_events(&f, &id, 5).await;
        let before = stale.state();
        assert_eq!(f.registry.len(), 1);
        unload(&mut f, &id).await;
        assert_eq!(f.registry.len(), 0);
        assert!(stale.is_closed(), "the actor stopped");

        // Reading, listing and a repeated create need no actor.
        let dormant = f.registry.find(&id).await.unwrap().unwrap();
        assert_eq!(dormant.state(), before);
        let page = f
            .registry
            .list(Some(&id.league()), Some(before.status), 10, None)
            .await
            .unwrap();
        assert_eq!(page.games, vec![before.clone()]);
        let (_, again) = f
            .registry
            .create(id.clone(), new_game(), "t")
            .await
            .unwrap();
        assert_eq!(again, Created::Existing);
        let mut other = new_game();
        other.home.name = "Other".into();
        assert!(matches!(
            f.registry.create(id.clone(), other, "t").await,
            Err(CreateError::Exists(_))
        ));
        assert!(!f.registry.is_loaded(&id));

        // The handle of the stopped actor follows the game to a new one.
        let dup = apply(&stale, score("e2", 2)).await;
        assert_eq!(
            dup,
            Ok(Applied {
                seq: 2,
                duplicate: true
            })
        );
        assert!(f.registry.is_loaded(&id), "using the game loaded it");
        assert!(matches!(
            apply(&dormant, score("e3", 99)).await,
            Err(ApplyError::Conflict { seq: 3, .. })
        ));
        let next = apply(&dormant, score("e6", 6)).await;
        assert_eq!(
            next,
            Ok(Applied {
                seq: 6,
                duplicate: false
            })
        );
        let live = f.registry.get(&id).unwrap();
        assert_eq!(live.state().seq, 6);
        assert_eq!(live.state().home.score, before.home.score + 6);
        assert_eq!(f.registry.len(), 1);

        // Unloaded again, the summary follows the new events.
        unload(&mut f, &id).await;
        assert_eq!(f.registry.find(&id).await.unwrap().unwrap().state().seq, 6);
        assert!(f.registry.find(&gid("nba:none")).await.unwrap().is_none());
        assert!(f.registry.load(&gid("nba:none")).await.unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_first_uses_load_one_actor() {
        let mut f = fixture();
        let id = gid("nba:a");
        game_with_events(&f, &id, 3).await;
        unload(&mut f, &id).await;
        let mut tasks = Vec::new();
        for i in 0..20 {
            let registry = f.registry.clone();
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                let handle = registry.find(&id).await.unwrap().unwrap();
                apply(&handle, score(&format!("c{i}"), 1)).await.unwrap()
            }));
        }
        let mut seqs = Vec::new();
        for t in tasks {
            let applied = t.await.unwrap();
            assert!(!applied.duplicate);
            seqs.push(applied.seq);
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (4..=23).collect::<Vec<_>>());
        assert_eq!(f.registry.len(), 1, "one actor for the game");
        assert_eq!(f.registry.get(&id).unwrap().state().seq, 23);
    }

    #[tokio::test]
    async fn events_queued_behind_an_unload_are_applied_before_it_completes() {
        let mut f = fixture();
        // Several rounds: how the log writer's timing interleaves varies.
        for round in 0..5 {
            queued_behind_unload(&mut f, &gid(&format!("nba:g{round}"))).await;
        }
    }

    async fn queued_behind_unload(f: &mut Fixture, id: &GameId) {
        let id = id.clone();
        let handle = game_with_events(f, &id, 1).await;
        announced(f, &id).await;
        // One thread, tasks run in spawn order: the stop is queued first, the
        // events behind it; the stopping actor applies them before it answers.
        let unloading = {
            let registry = f.registry.clone();
            let id = id.clone();
            tokio::spawn(async move { registry.unload_if_idle(&id).await })
        };
        let racing: Vec<_> = (0..5)
            .map(|i| {
                let handle = handle.clone();
                tokio::spawn(async move { apply(&handle, score(&format!("q{i}"), 1)).await })
            })
            .collect();
        unloading.await.unwrap();
        assert!(handle.is_closed(), "the actor agreed to stop");
        assert!(!f.registry.is_loaded(&id));
        let summary = f.registry.find(&id).await.unwrap().unwrap().state();
        assert_eq!(summary.seq, 6, "the summary holds the queued events");
        let mut seqs = Vec::new();
        for t in racing {
            seqs.push(t.await.unwrap().unwrap().seq);
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (2..=6).collect::<Vec<_>>());
        // Later events through the old handle reach a new actor.
        let late = apply(&handle, score("late", 1)).await.unwrap();
        assert_eq!(late.seq, 7);
        let state = f.registry.find(&id).await.unwrap().unwrap().state();
        assert_eq!(state.seq, 7);
        assert_eq!(state.home.score, 1 + 6);
        // Whichever actor took them, the log replays to the same game.
        let records = match f.registry.store() {
            Store::File(log) => log.game_records(&id).await.unwrap(),
            Store::Redis(_) => unreachable!("a file registry"),
        };
        assert_eq!(records.len(), 8);
        let rebuilt = f.registry.rebuild(&id, records).unwrap();
        assert_eq!(rebuilt.state, *state);
        assert_eq!(rebuilt.seen.len(), 7);
        assert_eq!(rebuilt.history.len(), 3, "the last `history` diffs");
        assert_eq!(rebuilt.history.front().map(|(q, _)| *q), Some(5));
    }
}
