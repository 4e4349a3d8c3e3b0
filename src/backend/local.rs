//! Single node: the embedded file log, and no one to link to.
//!
//! The [`FileLog`] on local disk is the source of truth and this node its
//! only writer, so the log is *exclusive*: every commit is planned against
//! the game's true state and always lands (or fails without writing). At
//! start the log is folded once into a [`Catalog`] of every game's last state;
//! each commit keeps it current, so listing games, reading one or answering a
//! repeated `PUT` needs no actor and no IO. A game's actor loads from the
//! log's per-game index: its records only, folded by the same [`Replayer`].
//!
//! ## Retention
//!
//! A finished game past `games.retention` ([`Retention`]) is unknown to the
//! catalog: reads, listing, events and loads answer as for a game never
//! created, and the registry drops an actor it still has for it. Its
//! records stay in the file until a start-up finds that expired games hold
//! at least a quarter of the log's records ([`COMPACT_SHARE`]); that start
//! rewrites the log without them ([`FileLog::compact`]), so start-up replay
//! follows the games still kept, not every game ever logged. Until then its
//! id cannot be created again ([`CreateOutcome::Retired`]): the log can
//! hold one life per game.

use std::collections::{BTreeSet, HashSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::mpsc;

use super::{
    Backend, BoxFuture, Commit, Committing, CreateOutcome, EventLog, FrameSink, Occupancy, Page,
    Replayer, Restored, Summary, Transport, Unready,
};
use crate::domain::{Fingerprint, GameId, GameState, League, Retention, Seen, Status};
use crate::store::file::{FileLog, FileLogOptions};
use crate::store::{Record, StoreError};

/// The share of the log's records that expired games must hold for a
/// start-up to compact the log (a quarter: compaction costs about one more
/// replay of the log, so it runs when it saves at least that much later).
pub const COMPACT_SHARE: (u64, u64) = (1, 4);

/// Opens (creating if needed) the log under `dir`, folds it into the
/// catalog of every game kept by `retention`, and compacts the log first
/// when enough of it belongs to expired games (see the module docs).
/// Answers the backend and the number of games kept. Blocking: disk IO.
pub fn open(
    dir: &Path,
    options: FileLogOptions,
    retention: Retention,
) -> Result<(Backend, usize), StoreError> {
    let mut replayer = Replayer::states();
    let log = FileLog::open(dir, options, |record| {
        replayer.record(record).map_err(|e| e.to_string())
    })?;
    let mut summaries = replayer.into_summaries().map_err(|e| {
        StoreError::Unavailable(format!("cannot rebuild games from the event log: {e}"))
    })?;
    let now = now_ms();
    let expired: HashSet<GameId> = summaries
        .iter()
        .filter(|(_, s)| retention.expired(s.finished_at, now))
        .map(|(id, _)| id.clone())
        .collect();
    let records: u64 = summaries.iter().map(|(_, s)| s.records).sum();
    let expired_records: u64 = summaries
        .iter()
        .filter(|(id, _)| expired.contains(id))
        .map(|(_, s)| s.records)
        .sum();
    let log = if compaction_pays(expired_records, records) {
        // The summaries are those of the records kept: no second fold.
        let (log, done) = log.compact(&expired, |_| Ok(()))?;
        if let Some(c) = done {
            tracing::info!(
                games_dropped = c.games_dropped,
                records_before = c.records_before,
                records_after = c.records_after,
                bytes_before = c.bytes_before,
                bytes_after = c.bytes_after,
                "compacted the event log: dropped the records of games past games.retention"
            );
            summaries.retain(|(id, _)| !expired.contains(id));
        }
        log
    } else {
        log
    };
    let catalog = Catalog::new(retention);
    let games = summaries.len()
        - summaries
            .iter()
            .filter(|(id, _)| expired.contains(id))
            .count();
    for (id, summary) in summaries {
        catalog.insert(id, summary);
    }
    Ok((backend(LocalLog::new(Arc::new(log), catalog)), games))
}

/// Whether dropping `expired` of `total` records is worth a compaction
/// ([`COMPACT_SHARE`]).
fn compaction_pays(expired: u64, total: u64) -> bool {
    let (part, whole) = COMPACT_SHARE;
    expired > 0 && expired.saturating_mul(whole) >= total.saturating_mul(part)
}

/// The server's time, Unix ms (what records' `at` hold).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The backend of `log`.
pub fn backend(log: LocalLog) -> Backend {
    // Nobody else creates games: the announcements end at once.
    let (_, announced) = mpsc::channel(1);
    Backend {
        log: Arc::new(log),
        transport: Arc::new(Alone),
        occupancy: Arc::new(Alone),
        announced,
    }
}

/// Every game of the log: its last state and creating digest, and the ids
/// in order (for listing). A game past its retention is in it (its records
/// are still in the log) but every lookup skips it.
#[derive(Debug)]
pub struct Catalog {
    games: DashMap<GameId, Summary>,
    ids: RwLock<BTreeSet<GameId>>,
    retention: Retention,
    /// The time, Unix ms (the system clock; tests set another).
    clock: fn() -> i64,
}

impl Default for Catalog {
    /// An empty catalog with the default retention.
    fn default() -> Self {
        Catalog::new(Retention::default())
    }
}

impl Catalog {
    /// An empty catalog keeping finished games for `retention`.
    pub fn new(retention: Retention) -> Catalog {
        Catalog {
            games: DashMap::new(),
            ids: RwLock::new(BTreeSet::new()),
            retention,
            clock: now_ms,
        }
    }

    /// The same, telling the time with `clock` (Unix ms).
    #[cfg(test)]
    pub(crate) fn with_clock(retention: Retention, clock: fn() -> i64) -> Catalog {
        Catalog {
            clock,
            ..Catalog::new(retention)
        }
    }

    fn insert(&self, id: GameId, summary: Summary) {
        self.ids
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone());
        self.games.insert(id, summary);
    }

    /// Whether `summary`'s game is past retention at `now`.
    fn expired(&self, summary: &Summary, now: i64) -> bool {
        self.retention.expired(summary.finished_at, now)
    }

    /// The game, unless the log has none or it is past retention.
    fn get(&self, id: &GameId) -> Option<Summary> {
        let now = (self.clock)();
        self.games
            .get(id)
            .filter(|s| !self.expired(s.value(), now))
            .map(|s| s.value().clone())
    }

    /// Whether the log holds `id` past its retention (it cannot be created
    /// again until a compaction drops it).
    fn retired(&self, id: &GameId) -> bool {
        let now = (self.clock)();
        self.games.get(id).is_some_and(|s| self.expired(&s, now))
    }

    /// `records` more records took the game to `state`, the last of them
    /// at `at` (Unix ms).
    fn update(&self, state: &Arc<GameState>, at: i64, records: u64) {
        if let Some(mut s) = self.games.get_mut(&state.game) {
            s.state = state.clone();
            s.finished_at = Retention::finished_at(state.status, at);
            s.records += records;
        }
    }

    /// One page of games ordered by id, optionally of one league and status.
    fn list(
        &self,
        league: Option<&League>,
        status: Option<Status>,
        limit: usize,
        cursor: Option<&GameId>,
    ) -> Page {
        let prefix = league.map(|l| format!("{}:", l.as_str()));
        let ids = self.ids.read().unwrap_or_else(|p| p.into_inner());
        let now = (self.clock)();
        let start = match cursor {
            Some(c) => Bound::Excluded(c.clone()),
            None => Bound::Unbounded,
        };
        let mut games: Vec<Arc<GameState>> = Vec::new();
        let mut next_cursor = None;
        for id in ids.range((start, Bound::Unbounded)) {
            if let Some(p) = prefix.as_deref().filter(|p| !id.as_str().starts_with(p)) {
                if id.as_str() > p {
                    break;
                }
                continue;
            }
            let Some(state) = self
                .games
                .get(id)
                .filter(|s| !self.expired(s.value(), now))
                .map(|s| s.state.clone())
            else {
                continue;
            };
            if status.is_some_and(|s| s != state.status) {
                continue;
            }
            if games.len() == limit {
                next_cursor = games.last().map(|g| g.game.as_str().to_string());
                break;
            }
            games.push(state);
        }
        Page { games, next_cursor }
    }

    /// The ids of `league`'s games, in order.
    fn league_ids(&self, league: &League) -> Vec<GameId> {
        let now = (self.clock)();
        let mut ids =
            super::league_ids(&self.ids.read().unwrap_or_else(|p| p.into_inner()), league);
        ids.retain(|id| {
            self.games
                .get(id)
                .is_some_and(|s| !self.expired(s.value(), now))
        });
        ids
    }
}

/// The file log with its catalog.
#[derive(Debug)]
pub struct LocalLog {
    log: Arc<FileLog>,
    catalog: Catalog,
}

impl LocalLog {
    /// `log` with the games of `catalog` (an empty one for an empty log).
    pub fn new(log: Arc<FileLog>, catalog: Catalog) -> LocalLog {
        LocalLog { log, catalog }
    }
}

impl EventLog for LocalLog {
    fn exclusive(&self) -> bool {
        true
    }

    fn create<'a>(
        &'a self,
        state: &'a GameState,
        fingerprint: Fingerprint,
        record: &'a Record,
    ) -> BoxFuture<'a, Result<CreateOutcome, StoreError>> {
        Box::pin(async move {
            if let Some(existing) = self.catalog.get(&state.game) {
                return Ok(CreateOutcome::Exists {
                    fingerprint: existing.created_fingerprint,
                });
            }
            if self.catalog.retired(&state.game) {
                return Ok(CreateOutcome::Retired);
            }
            self.log.append(vec![record.clone()]).await?;
            let at = record.at();
            self.catalog.insert(
                state.game.clone(),
                Summary {
                    state: Arc::new(state.clone()),
                    created_fingerprint: fingerprint,
                    finished_at: Retention::finished_at(state.status, at),
                    records: 1,
                },
            );
            Ok(CreateOutcome::Created)
        })
    }

    fn commit<'a>(
        &'a self,
        _game: &'a GameId,
        base_seq: u64,
        events: &'a [Committing<'a>],
        state: &'a Arc<GameState>,
    ) -> BoxFuture<'a, Result<Commit, StoreError>> {
        Box::pin(async move {
            // The only writer planned against the true state: it lands.
            let records: Vec<Record> = events.iter().map(|e| e.record.clone()).collect();
            let at = records.last().map_or_else(now_ms, Record::at);
            self.log.append(records).await?;
            self.catalog.update(state, at, events.len() as u64);
            Ok(Commit::Applied {
                last_seq: base_seq + events.len() as u64,
            })
        })
    }

    fn load<'a>(
        &'a self,
        game: &'a GameId,
        history: usize,
    ) -> BoxFuture<'a, Result<Option<Restored>, StoreError>> {
        Box::pin(async move {
            let Some(last) = self.catalog.get(game) else {
                return Ok(None);
            };
            let records = self.log.game_records(game).await?;
            let restored = Replayer::rebuild(game, records, history).map_err(|e| {
                StoreError::Inconsistent {
                    game: game.clone(),
                    reason: e.to_string(),
                }
            })?;
            if restored.state.seq < last.state.seq {
                // Never start a writer that would hand out seqs a second time.
                return Err(StoreError::Inconsistent {
                    game: game.clone(),
                    reason: format!(
                        "its records end at seq {} but the game was served at seq {}; not loading it",
                        restored.state.seq, last.state.seq
                    ),
                });
            }
            Ok(Some(restored))
        })
    }

    fn summary(&self, game: &GameId) -> Option<Summary> {
        self.catalog.get(game)
    }

    fn frames_after<'a>(
        &'a self,
        _game: &'a GameId,
        _seq: u64,
        _limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(u64, Bytes)>, StoreError>> {
        // A loaded game is never behind its only writer.
        Box::pin(async { Ok(Vec::new()) })
    }

    fn last_frames<'a>(
        &'a self,
        game: &'a GameId,
        n: usize,
    ) -> BoxFuture<'a, Result<Vec<(u64, Bytes)>, StoreError>> {
        Box::pin(async move {
            Ok(self
                .load(game, n)
                .await?
                .map(|r| r.history.into_iter().collect())
                .unwrap_or_default())
        })
    }

    fn seen_ids<'a>(
        &'a self,
        _game: &'a GameId,
        event_ids: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<Option<Seen>>, StoreError>> {
        // A loaded game knows every id applied to it.
        Box::pin(async move { Ok(vec![None; event_ids.len()]) })
    }

    fn events<'a>(
        &'a self,
        game: &'a GameId,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Record>, StoreError>> {
        Box::pin(async move {
            if self.catalog.get(game).is_none() {
                // Never created, or past retention.
                return Ok(Vec::new());
            }
            self.log.events(game, since, limit).await
        })
    }

    fn list<'a>(
        &'a self,
        league: Option<&'a League>,
        status: Option<Status>,
        limit: usize,
        cursor: Option<&'a GameId>,
    ) -> BoxFuture<'a, Result<Page, StoreError>> {
        let page = self.catalog.list(league, status, limit, cursor);
        Box::pin(async move { Ok(page) })
    }

    fn league_games<'a>(
        &'a self,
        league: &'a League,
    ) -> BoxFuture<'a, Result<Vec<GameId>, StoreError>> {
        let ids = self.catalog.league_ids(league);
        Box::pin(async move { Ok(ids) })
    }

    fn health(&self) -> Result<(), Unready> {
        self.log.health().map_err(Unready::LogUnwritable)
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.log.close())
    }
}

/// No other node: nothing to follow, always linked, nobody else's fans.
#[derive(Debug)]
struct Alone;

/// Alone, the fans of this node are every fan.
impl Occupancy for Alone {
    fn report<'a>(
        &'a self,
        counts: &'a [(GameId, u64)],
    ) -> BoxFuture<'a, Result<Vec<u64>, StoreError>> {
        Box::pin(async move { Ok(counts.iter().map(|(_, n)| *n).collect()) })
    }
}

impl Transport for Alone {
    fn follow_game<'a>(
        &'a self,
        _game: &'a GameId,
        _sink: Arc<dyn FrameSink>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn unfollow_game<'a>(&'a self, _game: &'a GameId) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    fn follow_league<'a>(&'a self, _league: &'a League) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn unfollow_league<'a>(&'a self, _league: &'a League) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    fn readiness(&self) -> Result<(), Unready> {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::cell::Cell;
    use std::time::Duration;

    use super::*;
    use crate::codec;
    use crate::domain::NewGame;
    use crate::testing::GameRecords;

    const NO_SYNC: FileLogOptions = FileLogOptions { fsync: false };

    thread_local! {
        /// The time of [`test_clock`], per test thread.
        static NOW: Cell<i64> = const { Cell::new(0) };
    }

    fn test_clock() -> i64 {
        NOW.with(Cell::get)
    }

    fn gid(s: &str) -> GameId {
        GameId::parse(s).unwrap()
    }

    /// Appends `records` to a fresh log under `dir`, then closes it.
    async fn write_log(dir: &Path, records: Vec<Record>) -> u64 {
        let file = FileLog::open(dir, NO_SYNC, |_| Ok(())).unwrap();
        file.append(records).await.unwrap();
        file.close().await;
        let len = std::fs::metadata(file.path()).unwrap().len();
        drop(file);
        len
    }

    /// A game created at `at` with `scores` events after it, each 1 ms later.
    fn game(id: &str, at: i64, scores: u64) -> (GameRecords, Vec<Record>) {
        let mut g = GameRecords::new(gid(id));
        let mut records = vec![g.created(at)];
        for i in 1..=scores {
            records.push(g.score(at + i as i64));
        }
        (g, records)
    }

    /// Commits `record` (an event of `state`'s game) to `log`.
    async fn commit_one(log: &LocalLog, record: &Record, state: Arc<GameState>) -> Commit {
        let Record::Event {
            game, seq, event, ..
        } = record
        else {
            panic!("not an event: {record:?}");
        };
        let frame = codec::diff(game, *seq, &serde_json::json!({}), record.at());
        let committing = [Committing {
            event_id: &event.event_id,
            fingerprint: event.fingerprint(),
            record,
            frame: &frame,
        }];
        log.commit(game, seq - 1, &committing, &state)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_game_past_retention_is_gone_after_restart_and_the_log_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_ms();
        // Finished long ago, with most of the log's records.
        let (mut old, mut records) = game("nba:old", 1_000, 30);
        records.push(old.status(Status::Final, 2_000));
        // Finished a moment ago, and live.
        let (mut recent, more) = game("nba:recent", now, 2);
        records.extend(more);
        records.push(recent.status(Status::Final, now));
        let (_, more) = game("nba:live", now, 5);
        records.extend(more);
        let before = write_log(dir.path(), records).await;

        let (backend, games) = open(dir.path(), NO_SYNC, Retention::default()).unwrap();
        assert_eq!(games, 2, "nba:old is not counted");
        let log = backend.log;
        let after = std::fs::metadata(dir.path().join(crate::store::file::LOG_FILE_NAME))
            .unwrap()
            .len();
        assert!(after < before / 2, "compacted: {before} -> {after} bytes");

        let old_id = gid("nba:old");
        assert!(log.summary(&old_id).is_none());
        assert!(log.load(&old_id, 4).await.unwrap().is_none());
        assert!(log.events(&old_id, 0, 100).await.unwrap().is_empty());
        let nba = League::parse("nba").unwrap();
        assert_eq!(
            log.league_games(&nba).await.unwrap(),
            vec![gid("nba:live"), gid("nba:recent")]
        );
        let page = log.list(None, None, 10, None).await.unwrap();
        let listed: Vec<&str> = page.games.iter().map(|g| g.game.as_str()).collect();
        assert_eq!(listed, ["nba:live", "nba:recent"]);

        // The games kept are intact, seqs and history included (their
        // index was rebuilt for the records' new offsets).
        let live = log.load(&gid("nba:live"), 3).await.unwrap().unwrap();
        assert_eq!((live.state.seq, live.state.home.score), (5, 5));
        assert_eq!(
            live.history.iter().map(|(q, _)| *q).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        let events = log.events(&gid("nba:live"), 0, 100).await.unwrap();
        assert_eq!(
            events.iter().map(|r| r.at()).collect::<Vec<_>>(),
            (1..=5).map(|i| now + i).collect::<Vec<_>>()
        );
        let recent_state = log.summary(&gid("nba:recent")).unwrap();
        assert_eq!(recent_state.state.status, Status::Final);
        assert_eq!(recent_state.finished_at, Some(now));

        // Compacted away, the id is free again.
        let fresh = GameRecords::new(old_id.clone()).created(now);
        let Record::Created {
            state, fingerprint, ..
        } = &fresh
        else {
            unreachable!()
        };
        assert_eq!(
            log.create(state, *fingerprint, &fresh).await.unwrap(),
            CreateOutcome::Created
        );
        log.close().await;
        drop(log);

        // A later start finds nothing to compact, and the new life of the id.
        let (backend, games) = open(dir.path(), NO_SYNC, Retention::default()).unwrap();
        assert_eq!(games, 3);
        assert_eq!(backend.log.summary(&old_id).unwrap().state.seq, 0);
        backend.log.close().await;
    }

    #[tokio::test]
    async fn below_a_quarter_an_expired_game_stays_in_the_log_unknown_and_its_id_retired() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_ms();
        let (mut old, mut records) = game("nba:old", 1_000, 0);
        records.push(old.status(Status::Cancelled, 2_000));
        let (_, more) = game("nba:live", now, 20);
        records.extend(more);
        let before = write_log(dir.path(), records).await;

        let (backend, games) = open(dir.path(), NO_SYNC, Retention::default()).unwrap();
        assert_eq!(games, 1);
        let after = std::fs::metadata(dir.path().join(crate::store::file::LOG_FILE_NAME))
            .unwrap()
            .len();
        assert_eq!(after, before, "2 of 23 records: not worth a compaction");
        let old_id = gid("nba:old");
        assert!(backend.log.summary(&old_id).is_none());
        assert!(backend.log.load(&old_id, 4).await.unwrap().is_none());
        let page = backend.log.list(None, None, 10, None).await.unwrap();
        assert_eq!(page.games.len(), 1);
        let again = GameRecords::new(old_id).created(now);
        let Record::Created {
            state, fingerprint, ..
        } = &again
        else {
            unreachable!()
        };
        assert_eq!(
            backend
                .log
                .create(state, *fingerprint, &again)
                .await
                .unwrap(),
            CreateOutcome::Retired,
            "the log holds one life per game"
        );
        // A longer retention keeps it.
        backend.log.close().await;
        drop(backend);
        let forever = Retention::new(crate::config::MAX_RETENTION);
        let (backend, games) = open(dir.path(), NO_SYNC, forever).unwrap();
        assert_eq!(games, 2);
        backend.log.close().await;
    }

    #[tokio::test]
    async fn a_game_expires_while_the_node_runs_and_reopening_stops_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(FileLog::open(dir.path(), NO_SYNC, |_| Ok(())).unwrap());
        let retention = Retention::new(Duration::from_millis(100));
        let log = LocalLog::new(file, Catalog::with_clock(retention, test_clock));
        NOW.with(|n| n.set(1_000));
        let mut g = GameRecords::new(gid("nba:x"));
        let created = g.created(1_000);
        let Record::Created {
            state, fingerprint, ..
        } = &created
        else {
            unreachable!()
        };
        log.create(state, *fingerprint, &created).await.unwrap();
        let mut state = state.clone();
        let mut step = |record: &Record, status: Status| {
            state.seq += 1;
            state.status = status;
            (record.clone(), Arc::new(state.clone()))
        };

        let (r, s) = step(&g.status(Status::Final, 1_000), Status::Final);
        assert!(matches!(
            commit_one(&log, &r, s).await,
            Commit::Applied { last_seq: 1 }
        ));
        NOW.with(|n| n.set(1_099));
        assert!(log.summary(&gid("nba:x")).is_some(), "inside retention");
        // Reopened just in time: the clock stops.
        let (r, s) = step(&g.status(Status::Live, 1_099), Status::Live);
        commit_one(&log, &r, s).await;
        NOW.with(|n| n.set(10_000));
        assert!(
            log.summary(&gid("nba:x")).is_some(),
            "a live game never expires"
        );
        // Finished again: the clock restarts from that event.
        let (r, s) = step(&g.status(Status::Final, 10_000), Status::Final);
        commit_one(&log, &r, s).await;
        NOW.with(|n| n.set(10_099));
        assert_eq!(
            log.summary(&gid("nba:x")).unwrap().finished_at,
            Some(10_000)
        );
        NOW.with(|n| n.set(10_100));
        assert!(log.summary(&gid("nba:x")).is_none(), "past retention");
        assert!(log.load(&gid("nba:x"), 4).await.unwrap().is_none());
        assert!(log.events(&gid("nba:x"), 0, 10).await.unwrap().is_empty());
        assert!(
            log.list(None, None, 10, None)
                .await
                .unwrap()
                .games
                .is_empty()
        );
        let nba = League::parse("nba").unwrap();
        assert!(log.league_games(&nba).await.unwrap().is_empty());
        assert_eq!(
            log.create(state_of(&created), *fingerprint, &created)
                .await
                .unwrap(),
            CreateOutcome::Retired
        );
        log.close().await;
    }

    fn state_of(record: &Record) -> &GameState {
        match record {
            Record::Created { state, .. } => state,
            Record::Event { .. } => panic!("not a creation"),
        }
    }

    /// A log holding the creation of `nba:x` (seq 0), and its state.
    async fn one_game(dir: &Path) -> (Arc<FileLog>, GameState) {
        let file = Arc::new(FileLog::open(dir, NO_SYNC, |_| Ok(())).unwrap());
        let id = GameId::parse("nba:x").unwrap();
        let state = NewGame::between("H", "A")
            .into_state(id.clone(), 1)
            .unwrap();
        let log = LocalLog::new(file.clone(), Catalog::default());
        let record = Record::Created {
            game: id,
            state: state.clone(),
            fingerprint: [7; 16],
            by: "t".into(),
            at: 1,
        };
        assert_eq!(
            log.create(&state, [7; 16], &record).await.unwrap(),
            CreateOutcome::Created
        );
        assert_eq!(
            log.create(&state, [7; 16], &record).await.unwrap(),
            CreateOutcome::Exists {
                fingerprint: [7; 16]
            },
            "a second create finds the first"
        );
        (file, state)
    }

    #[tokio::test]
    async fn a_game_loads_from_its_records_and_is_known_without_io() {
        let dir = tempfile::tempdir().unwrap();
        let (file, state) = one_game(dir.path()).await;
        file.close().await;
        drop(file);
        let (backend, games) = open(
            dir.path(),
            FileLogOptions { fsync: false },
            Retention::default(),
        )
        .unwrap();
        assert_eq!(games, 1);
        assert!(backend.log.exclusive());
        let summary = backend.log.summary(&state.game).unwrap();
        assert_eq!((*summary.state).clone(), state);
        let loaded = backend.log.load(&state.game, 4).await.unwrap().unwrap();
        assert_eq!(loaded.state, state);
        assert_eq!(loaded.created_fingerprint, [7; 16]);
        let missing = GameId::parse("nba:none").unwrap();
        assert!(backend.log.load(&missing, 4).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_log_behind_the_served_state_is_inconsistent_not_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let (file, state) = one_game(dir.path()).await;
        // The catalog says the game was served at seq 5; the log has seq 0.
        let catalog = Catalog::default();
        let mut served = state.clone();
        served.seq = 5;
        catalog.insert(
            state.game.clone(),
            Summary {
                state: Arc::new(served),
                created_fingerprint: [7; 16],
                finished_at: None,
                records: 1,
            },
        );
        let log = LocalLog::new(file, catalog);
        let err = log.load(&state.game, 4).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Inconsistent { game, reason } if *game == state.game && reason.contains("seq 5")),
            "{err:?}"
        );
    }
}
