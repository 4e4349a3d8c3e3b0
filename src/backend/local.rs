//! Single node: the embedded file log, and no one to link to.
//!
//! The [`FileLog`] on local disk is the source of truth and this node its
//! only writer, so the log is *exclusive*: every commit is planned against
//! the game's true state and always lands (or fails without writing). At
//! start the log is folded once into a [`Catalog`] of every game's last state;
//! each commit keeps it current, so listing games, reading one or answering a
//! repeated `PUT` needs no actor and no IO. A game's actor loads from the
//! log's per-game index: its records only, folded by the same [`Replayer`].

use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::mpsc;

use super::{
    Backend, BoxFuture, Commit, Committing, CreateOutcome, EventLog, FrameSink, Page, Replayer,
    Restored, Summary, Transport, Unready,
};
use crate::domain::{Fingerprint, GameId, GameState, League, Seen, Status};
use crate::store::file::{FileLog, FileLogOptions};
use crate::store::{Record, StoreError};

/// Opens (creating if needed) the log under `dir` and folds it into the
/// catalog of every game. Blocking: disk IO.
pub fn open(dir: &Path, options: FileLogOptions) -> Result<(Backend, usize), StoreError> {
    let mut replayer = Replayer::states();
    let log = FileLog::open(dir, options, |record| {
        replayer.record(record).map_err(|e| e.to_string())
    })?;
    let summaries = replayer.into_summaries().map_err(|e| {
        StoreError::Unavailable(format!("cannot rebuild games from the event log: {e}"))
    })?;
    let games = summaries.len();
    let catalog = Catalog::default();
    for (id, summary) in summaries {
        catalog.insert(id, summary);
    }
    Ok((backend(LocalLog::new(Arc::new(log), catalog)), games))
}

/// The backend of `log`.
pub fn backend(log: LocalLog) -> Backend {
    // Nobody else creates games: the announcements end at once.
    let (_, announced) = mpsc::channel(1);
    Backend {
        log: Arc::new(log),
        transport: Arc::new(Alone),
        announced,
    }
}

/// Every game of the log: its last state and creating digest, and the ids
/// in order (for listing).
#[derive(Debug, Default)]
pub struct Catalog {
    games: DashMap<GameId, Summary>,
    ids: RwLock<BTreeSet<GameId>>,
}

impl Catalog {
    fn insert(&self, id: GameId, summary: Summary) {
        self.ids
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone());
        self.games.insert(id, summary);
    }

    fn get(&self, id: &GameId) -> Option<Summary> {
        self.games.get(id).map(|s| s.value().clone())
    }

    fn update(&self, state: &Arc<GameState>) {
        if let Some(mut s) = self.games.get_mut(&state.game) {
            s.state = state.clone();
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
            let Some(state) = self.games.get(id).map(|s| s.state.clone()) else {
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
        super::league_ids(&self.ids.read().unwrap_or_else(|p| p.into_inner()), league)
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
            self.log.append(vec![record.clone()]).await?;
            self.catalog.insert(
                state.game.clone(),
                Summary {
                    state: Arc::new(state.clone()),
                    created_fingerprint: fingerprint,
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
            let records = events.iter().map(|e| e.record.clone()).collect();
            self.log.append(records).await?;
            self.catalog.update(state);
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
        Box::pin(self.log.events(game, since, limit))
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

/// No other node: nothing to follow, always linked.
#[derive(Debug)]
struct Alone;

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
    use super::*;
    use crate::domain::{NewGame, NewTeam};

    /// A log holding the creation of `nba:x` (seq 0), and its state.
    async fn one_game(dir: &Path) -> (Arc<FileLog>, GameState) {
        let file =
            Arc::new(FileLog::open(dir, FileLogOptions { fsync: false }, |_| Ok(())).unwrap());
        let id = GameId::parse("nba:x").unwrap();
        let state = NewGame {
            home: NewTeam { name: "H".into() },
            away: NewTeam { name: "A".into() },
            status: None,
            period: None,
            extra: None,
        }
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
        let (backend, games) = open(dir.path(), FileLogOptions { fsync: false }).unwrap();
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
