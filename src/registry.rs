//! Game id → its live actor, and league → the fans watching it.
//!
//! The registry is the one place that follows a game to its live actor:
//! [`Registry::find`] gives a handle without loading when it can,
//! [`Registry::load`] makes sure an actor runs, and every handle it gives out
//! comes back here (through [`Loader`]) when its actor has stopped, so
//! callers never see an unload.
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
//! without loading: [`Registry::find`] gives a *dormant* handle that loads
//! the game on its first event or subscription. Otherwise `find` loads it.
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

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock, Weak};

use dashmap::DashMap;
use tokio::sync::{Mutex, mpsc};

use crate::backend::{self, Backend, CreateOutcome, EventLog, Page, Transport};
use crate::domain::event::fingerprint_of;
use crate::domain::{GameId, InvalidState, League, NewGame, Status};
use crate::fanout::outbox::Outbox;
use crate::game::{ActorConfig, GameHandle, IdleUnload, Loader, Loading, unix_ms};
use crate::metrics as m;
use crate::store::{Record, StoreError};

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
    pub fn get(&self, id: &GameId) -> Option<GameHandle> {
        self.games
            .get(id)
            .map(|h| h.value().clone())
            .filter(|h| !h.is_closed())
    }

    /// Whether the game's actor is in memory (no IO).
    pub fn is_loaded(&self, id: &GameId) -> bool {
        self.get(id).is_some()
    }

    /// A handle of the game, `None` if it does not exist: the running
    /// actor's; a dormant one when the log knows the game without IO (it
    /// loads the game on first use); else the game is loaded.
    pub async fn find(&self, id: &GameId) -> Result<Option<GameHandle>, StoreError> {
        if let Some(h) = self.known(id) {
            return Ok(Some(h));
        }
        self.load(id).await
    }

    /// The live handle of a game, loading it if needed; `None` if it does
    /// not exist. What a dormant or stopped handle asks for (as [`Loader`]).
    pub async fn load(&self, id: &GameId) -> Result<Option<GameHandle>, StoreError> {
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

    /// [`Registry::find`] without IO: the running actor's handle, or a
    /// dormant one from the log's summary.
    fn known(&self, id: &GameId) -> Option<GameHandle> {
        self.get(id).or_else(|| {
            self.log
                .summary(id)
                .map(|s| GameHandle::dormant(s.state, s.created_fingerprint, self.loader()))
        })
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
        )
        .with_loader(self.loader());
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

    /// For the handles this registry gives out: where they load their game again.
    fn loader(&self) -> Weak<dyn Loader> {
        self.me.clone()
    }

    /// Subscribes `outbox` to `handle`'s game (following it to a fresh
    /// actor if that one was unloaded); `false` if the game is gone.
    pub async fn subscribe(
        &self,
        handle: &GameHandle,
        outbox: Arc<Outbox>,
        since: Option<u64>,
    ) -> bool {
        handle.subscribe(outbox, since).await
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
    pub fn health(&self) -> Result<(), String> {
        Backend::health(self.log.as_ref(), self.transport.as_ref())
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
    ) -> Result<(GameHandle, Created), CreateError> {
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
        let existing = match self.known(id) {
            Some(h) => Some(h),
            None => self.load_locked(id).await?,
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
        };
        let handle = self.load_locked(id).await?.ok_or_else(|| {
            StoreError::Unavailable(format!("game {id} is missing right after its creation"))
        })?;
        if created == Created::New {
            self.notify_watchers(&handle).await;
        }
        Ok((handle, created))
    }

    // ----- leagues -----------------------------------------------------------

    /// Subscribes the local watchers of `handle`'s league to it (they get a
    /// snapshot first; subscribing twice is harmless).
    async fn notify_watchers(&self, handle: &GameHandle) {
        let watchers: Vec<Arc<Outbox>> = self
            .watchers
            .get(&handle.id().league())
            .map(|w| w.values().cloned().collect())
            .unwrap_or_default();
        for outbox in watchers {
            handle.subscribe(outbox, None).await;
        }
    }

    /// A game was created on some node (see [`Backend::announced`]): load it
    /// if a local fan watches its league.
    pub async fn on_created(&self, id: &GameId) {
        if !self.watchers.contains_key(&id.league()) {
            return;
        }
        match self.find(id).await {
            Ok(Some(handle)) => self.notify_watchers(&handle).await,
            Ok(None) => tracing::warn!(game = %id, "announced game is missing from the log"),
            Err(e) => tracing::warn!(game = %id, "cannot load announced game: {e}"),
        }
    }

    /// Handles of the games of `league` loaded on this node (no IO).
    pub fn loaded_league_games(&self, league: &League) -> Vec<GameHandle> {
        let ids = backend::league_ids(&self.ids.read().unwrap_or_else(|p| p.into_inner()), league);
        ids.iter().filter_map(|id| self.get(id)).collect()
    }

    /// Handles of every game of `league` (dormant ones where the log knows a
    /// game without IO; they load when subscribed).
    pub async fn league_games(&self, league: &League) -> Result<Vec<GameHandle>, StoreError> {
        let mut out = Vec::new();
        for id in self.log.league_games(league).await? {
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
        if first {
            self.transport.follow_league(league).await?;
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
        {
            self.transport.unfollow_league(league).await;
        }
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

/// Hands the games other nodes created (a [`Backend::announced`] stream) to
/// the registry until either is gone.
pub async fn follow_announcements(registry: Weak<Registry>, mut announced: mpsc::Receiver<GameId>) {
    while let Some(id) = announced.recv().await {
        let Some(registry) = registry.upgrade() else {
            return;
        };
        registry.on_created(&id).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::backend::local::{self, Catalog, LocalLog};
    use crate::backend::{BoxFuture, Replayer, Restored};
    use crate::domain::{Event, NewTeam, RawEvent};
    use crate::game::{Applied, ApplyError};
    use crate::store::FileLog;
    use crate::store::file::FileLogOptions;

    const IDLE: Duration = Duration::from_millis(50);
    const WAIT: Duration = Duration::from_secs(5);

    struct Fixture {
        registry: Arc<Registry>,
        file: Arc<FileLog>,
        idle: mpsc::Receiver<GameId>,
        _dir: tempfile::TempDir,
    }

    const CFG: ActorConfig = ActorConfig {
        mailbox: 64,
        history: 3,
    };

    /// A single-node registry over a fresh log whose idle announcements the
    /// test handles itself.
    fn fixture() -> Fixture {
        fixture_with(|log| log)
    }

    /// [`fixture`] with the log wrapped by `wrap`.
    fn fixture_with(wrap: impl FnOnce(Arc<dyn EventLog>) -> Arc<dyn EventLog>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(
            FileLog::open(dir.path(), FileLogOptions { fsync: false }, |_| Ok(())).unwrap(),
        );
        let backend = local::backend(LocalLog::new(file.clone(), Catalog::default()));
        let (announce, idle) = mpsc::channel(16);
        let registry = Registry::new(
            wrap(backend.log),
            backend.transport,
            CFG,
            Some(IdleUnload {
                after: IDLE,
                announce,
            }),
        );
        Fixture {
            registry,
            file,
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
        let records = f.file.game_records(&id).await.unwrap();
        assert_eq!(records.len(), 8);
        let rebuilt = Replayer::rebuild(&id, records, CFG.history).unwrap();
        assert_eq!(rebuilt.state, *state);
        assert_eq!(rebuilt.seen.len(), 7);
        assert_eq!(rebuilt.history.len(), 3, "the last `history` diffs");
        assert_eq!(rebuilt.history.front().map(|(q, _)| *q), Some(5));
    }

    /// A log whose loads of one game wait until the test lets them go.
    #[derive(Debug)]
    struct SlowLoads {
        inner: Arc<dyn EventLog>,
        slow: GameId,
        gate: Arc<tokio::sync::Semaphore>,
    }

    impl EventLog for SlowLoads {
        fn exclusive(&self) -> bool {
            self.inner.exclusive()
        }
        fn create<'a>(
            &'a self,
            state: &'a crate::domain::GameState,
            fingerprint: crate::domain::Fingerprint,
            record: &'a Record,
        ) -> BoxFuture<'a, Result<CreateOutcome, StoreError>> {
            self.inner.create(state, fingerprint, record)
        }
        fn commit<'a>(
            &'a self,
            game: &'a GameId,
            base_seq: u64,
            events: &'a [crate::backend::Committing<'a>],
            state: &'a Arc<crate::domain::GameState>,
        ) -> BoxFuture<'a, Result<crate::backend::Commit, StoreError>> {
            self.inner.commit(game, base_seq, events, state)
        }
        fn load<'a>(
            &'a self,
            game: &'a GameId,
            history: usize,
        ) -> BoxFuture<'a, Result<Option<Restored>, StoreError>> {
            Box::pin(async move {
                if *game == self.slow {
                    let _pass = self.gate.acquire().await.unwrap();
                }
                self.inner.load(game, history).await
            })
        }
        fn summary(&self, game: &GameId) -> Option<crate::backend::Summary> {
            self.inner.summary(game)
        }
        fn frames_after<'a>(
            &'a self,
            game: &'a GameId,
            seq: u64,
            limit: usize,
        ) -> BoxFuture<'a, Result<Vec<(u64, bytes::Bytes)>, StoreError>> {
            self.inner.frames_after(game, seq, limit)
        }
        fn last_frames<'a>(
            &'a self,
            game: &'a GameId,
            n: usize,
        ) -> BoxFuture<'a, Result<Vec<(u64, bytes::Bytes)>, StoreError>> {
            self.inner.last_frames(game, n)
        }
        fn seen_ids<'a>(
            &'a self,
            game: &'a GameId,
            event_ids: &'a [&'a str],
        ) -> BoxFuture<'a, Result<Vec<Option<crate::domain::Seen>>, StoreError>> {
            self.inner.seen_ids(game, event_ids)
        }
        fn events<'a>(
            &'a self,
            game: &'a GameId,
            since: u64,
            limit: usize,
        ) -> BoxFuture<'a, Result<Vec<Record>, StoreError>> {
            self.inner.events(game, since, limit)
        }
        fn list<'a>(
            &'a self,
            league: Option<&'a League>,
            status: Option<Status>,
            limit: usize,
            cursor: Option<&'a GameId>,
        ) -> BoxFuture<'a, Result<Page, StoreError>> {
            self.inner.list(league, status, limit, cursor)
        }
        fn league_games<'a>(
            &'a self,
            league: &'a League,
        ) -> BoxFuture<'a, Result<Vec<GameId>, StoreError>> {
            self.inner.league_games(league)
        }
        fn health(&self) -> Result<(), String> {
            self.inner.health()
        }
        fn close(&self) -> BoxFuture<'_, ()> {
            self.inner.close()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_load_of_one_game_delays_no_other() {
        let slow = gid("nba:slow");
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let mut f = fixture_with(|inner| {
            Arc::new(SlowLoads {
                inner,
                slow: slow.clone(),
                gate: gate.clone(),
            })
        });
        let fast = gid("nba:fast");
        game_with_events(&f, &fast, 2).await;
        unload(&mut f, &fast).await;
        // The slow game's creation loads it: it hangs at the gate, holding
        // its own lock.
        let creating = {
            let registry = f.registry.clone();
            let slow = slow.clone();
            tokio::spawn(async move { registry.create(slow, new_game(), "t").await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!creating.is_finished(), "the slow load waits at the gate");

        // Another game loads, takes an event and unloads meanwhile.
        let handle = f.registry.load(&fast).await.unwrap().unwrap();
        assert_eq!(apply(&handle, score("e3", 3)).await.unwrap().seq, 3);
        unload(&mut f, &fast).await;
        assert!(!creating.is_finished(), "still waiting at the gate");

        gate.add_permits(1);
        let (handle, created) = tokio::time::timeout(WAIT, creating)
            .await
            .expect("the slow load ends once let go")
            .unwrap()
            .unwrap();
        assert_eq!(created, Created::New);
        assert_eq!(handle.state().seq, 0);
        assert!(
            f.registry.locks.is_empty(),
            "every game lock was given back"
        );
    }
}
