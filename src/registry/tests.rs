//! The registry's tests: loading, unloading, creating, one game's slow
//! load against another's.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::{Duration, Instant};

use super::*;
use crate::backend::local::{self, Catalog, LocalLog};
use crate::backend::{BoxFuture, Replayer, Restored};
use crate::domain::{Event, RawEvent};
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
    fan_shards: 2,
    inline_fans: 32,
};

/// A single-node registry over a fresh log whose idle announcements the
/// test handles itself.
fn fixture() -> Fixture {
    fixture_with(|log| log)
}

/// [`fixture`] with the log wrapped by `wrap`.
fn fixture_with(wrap: impl FnOnce(Arc<dyn EventLog>) -> Arc<dyn EventLog>) -> Fixture {
    fixture_over(Catalog::default(), wrap)
}

/// [`fixture_with`] over `catalog`.
fn fixture_over(
    catalog: Catalog,
    wrap: impl FnOnce(Arc<dyn EventLog>) -> Arc<dyn EventLog>,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let file =
        Arc::new(FileLog::open(dir.path(), FileLogOptions { fsync: false }, |_| Ok(())).unwrap());
    let backend = local::backend(LocalLog::new(file.clone(), catalog));
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
    NewGame::between("Home", "Away")
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

async fn apply(handle: &Game, event: Event) -> Result<Applied, ApplyError> {
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
async fn game_with_events(f: &Fixture, id: &GameId, n: u64) -> Game {
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
    assert!(stale.actor_stopped(), "the actor stopped");

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
    assert!(handle.actor_stopped(), "the actor agreed to stop");
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
    fn health(&self) -> Result<(), crate::backend::Unready> {
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

thread_local! {
    /// The time of [`test_clock`] on this test's thread; 0: the real time.
    static NOW: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

fn test_clock() -> i64 {
    match NOW.with(std::cell::Cell::get) {
        0 => unix_ms(),
        now => now,
    }
}

/// Inside its retention a finished game answers retried events as
/// duplicates (and a reused id with another body as a conflict); past it,
/// the actor still loaded is dropped and the game answers as never created.
#[tokio::test]
async fn a_finished_game_keeps_idempotency_inside_retention_and_is_dropped_past_it() {
    let retention = crate::domain::Retention::new(Duration::from_secs(60));
    let f = fixture_over(Catalog::with_clock(retention, test_clock), |log| log);
    let id = gid("nba:fin");
    let game = game_with_events(&f, &id, 2).await;
    let whistle = || {
        Event::try_from(RawEvent {
            event_id: "fin".into(),
            kind: "status".into(),
            status: Some("final".into()),
            ..RawEvent::default()
        })
        .unwrap()
    };
    assert_eq!(apply(&game, whistle()).await.unwrap().seq, 3);
    let finished_at = f.registry.log().summary(&id).unwrap().finished_at.unwrap();

    NOW.with(|n| n.set(finished_at + 59_999));
    for (event, seq) in [(score("e1", 1), 1), (whistle(), 3)] {
        assert_eq!(
            apply(&game, event).await,
            Ok(Applied {
                seq,
                duplicate: true
            })
        );
    }
    assert!(matches!(
        apply(&game, score("e2", 5)).await,
        Err(ApplyError::Conflict { seq: 2, .. })
    ));
    assert!(f.registry.is_loaded(&id));
    assert_eq!(f.registry.find(&id).await.unwrap().unwrap().state().seq, 3);

    NOW.with(|n| n.set(finished_at + 60_000));
    assert!(f.registry.get(&id).is_none(), "past retention");
    assert!(!f.registry.is_loaded(&id));
    assert_eq!(f.registry.len(), 0, "the actor was dropped");
    assert!(f.registry.find(&id).await.unwrap().is_none());
    assert!(f.registry.load(&id).await.unwrap().is_none());
    let page = f.registry.list(None, None, 10, None).await.unwrap();
    assert!(page.games.is_empty());
    assert!(matches!(
        f.registry.create(id.clone(), new_game(), "t").await,
        Err(CreateError::Retired(_))
    ));
}
