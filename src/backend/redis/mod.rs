//! Cluster: Redis is the log, Redis pub/sub the transport.
//!
//! Every node may commit to every game, so the log is *shared*: each node's
//! game actors are replicas that commit through an atomic compare-and-set
//! script ([`RedisStore::commit`]) and learn other nodes' events from the
//! game's channel (`bus::Bus` on one server, `shards::ShardBus` with
//! sharded pub/sub on a Redis Cluster), catching up from its stream after a
//! gap. [`connect`] builds the log and its bus together: a Redis log without
//! the link that keeps its replicas current cannot be built.

pub(crate) mod bus;
mod health;
mod occupancy;
mod routes;
pub(crate) mod shards;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::bus::Bus;
use self::occupancy::RedisOccupancy;
use self::shards::ShardBus;
use super::{
    Backend, BoxFuture, Commit, Committing, CreateOutcome, EventLog, Page, Restored, Summary,
    Transport, Unready,
};
use crate::config::RedisConfig;
use crate::domain::{Fingerprint, GameId, GameState, League, Retention, Seen, SeenIds, Status};
use crate::store::redis::{CommitEvent, RedisStore};
use crate::store::{Record, StoreError};

/// Announcements of created games that may wait for the registry.
const ANNOUNCED_QUEUE: usize = 1024;

/// Connects to Redis at `config.url`, or to the Redis Cluster of
/// `config.cluster` (it must answer now), and starts the pub/sub link
/// (classic, or sharded on a cluster), whose tasks run on `tasks` until
/// `shutdown`. Finished games expire after `retention`; this node's fan
/// counts are reported to live `occupancy_ttl`.
pub async fn connect(
    config: &RedisConfig,
    retention: Retention,
    occupancy_ttl: Duration,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> Result<Backend, StoreError> {
    let store = Arc::new(
        RedisStore::connect_with(config)
            .await?
            .with_retention(retention),
    );
    let (created, announced) = mpsc::channel(ANNOUNCED_QUEUE);
    let bus: Arc<dyn Transport> = if store.is_cluster() {
        ShardBus::start(store.clone(), created, shutdown, tasks).await?
    } else {
        Bus::start(store.clone(), created, shutdown, tasks)
    };
    Ok(Backend {
        occupancy: Arc::new(RedisOccupancy::new(store.clone(), occupancy_ttl)),
        log: Arc::new(RedisLog { store }),
        transport: bus,
        announced,
    })
}

/// The Redis store as an [`EventLog`].
#[derive(Debug)]
pub struct RedisLog {
    store: Arc<RedisStore>,
}

impl EventLog for RedisLog {
    fn exclusive(&self) -> bool {
        false
    }

    fn create<'a>(
        &'a self,
        state: &'a GameState,
        fingerprint: Fingerprint,
        record: &'a Record,
    ) -> BoxFuture<'a, Result<CreateOutcome, StoreError>> {
        Box::pin(async move { self.store.create(state, fingerprint, record).await })
    }

    fn commit<'a>(
        &'a self,
        game: &'a GameId,
        base_seq: u64,
        events: &'a [Committing<'a>],
        state: &'a Arc<GameState>,
    ) -> BoxFuture<'a, Result<Commit, StoreError>> {
        Box::pin(async move {
            let events = events
                .iter()
                .map(|e| {
                    Ok(CommitEvent {
                        event_id: e.event_id.to_string(),
                        fingerprint: e.fingerprint,
                        frame: e.frame.clone(),
                        record: rmp_serde::to_vec_named(e.record)?,
                        at: e.record.at(),
                    })
                })
                .collect::<Result<Vec<_>, rmp_serde::encode::Error>>()
                .map_err(|e| {
                    StoreError::Unavailable(format!("cannot encode an event of game {game}: {e}"))
                })?;
            self.store.commit(game, base_seq, &events, state).await
        })
    }

    fn load<'a>(
        &'a self,
        game: &'a GameId,
        history: usize,
    ) -> BoxFuture<'a, Result<Option<Restored>, StoreError>> {
        Box::pin(async move {
            let Some(loaded) = self.store.load(game).await? else {
                return Ok(None);
            };
            // Frames committed after the state was read come by pub/sub.
            let seq = loaded.state.seq;
            let history = self
                .store
                .last_frames(game, history)
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|(q, _)| *q <= seq)
                .collect();
            Ok(Some(Restored {
                state: loaded.state,
                created_fingerprint: loaded.created_fingerprint,
                seen: SeenIds::new(),
                history,
                lost: loaded.lost,
            }))
        })
    }

    fn summary(&self, _game: &GameId) -> Option<Summary> {
        // Other nodes change games any time: only Redis knows.
        None
    }

    fn frames_after<'a>(
        &'a self,
        game: &'a GameId,
        seq: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(u64, Bytes)>, StoreError>> {
        Box::pin(self.store.frames_after(game, seq, limit))
    }

    fn last_frames<'a>(
        &'a self,
        game: &'a GameId,
        n: usize,
    ) -> BoxFuture<'a, Result<Vec<(u64, Bytes)>, StoreError>> {
        Box::pin(self.store.last_frames(game, n))
    }

    fn seen_ids<'a>(
        &'a self,
        game: &'a GameId,
        event_ids: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<Option<Seen>>, StoreError>> {
        Box::pin(async move {
            Ok(self
                .store
                .seen_ids(game, event_ids)
                .await?
                .into_iter()
                .map(|s| s.map(|(fingerprint, seq)| Seen { fingerprint, seq }))
                .collect())
        })
    }

    fn events<'a>(
        &'a self,
        game: &'a GameId,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Record>, StoreError>> {
        Box::pin(self.store.events(game, since, limit))
    }

    fn list<'a>(
        &'a self,
        league: Option<&'a League>,
        status: Option<Status>,
        limit: usize,
        cursor: Option<&'a GameId>,
    ) -> BoxFuture<'a, Result<Page, StoreError>> {
        Box::pin(async move {
            let (games, next_cursor) = self.store.list(league, status, limit, cursor).await?;
            Ok(Page {
                games: games.into_iter().map(Arc::new).collect(),
                next_cursor,
            })
        })
    }

    fn league_games<'a>(
        &'a self,
        league: &'a League,
    ) -> BoxFuture<'a, Result<Vec<GameId>, StoreError>> {
        Box::pin(self.store.league_games(league))
    }

    fn note_lost<'a>(
        &'a self,
        game: &'a GameId,
        seq: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.store.note_lost(game, seq))
    }

    fn confirm<'a>(&'a self, game: &'a GameId) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.store.confirm(game))
    }

    fn health(&self) -> Result<(), Unready> {
        // The bus pings Redis and reports it with the link (readiness).
        Ok(())
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        // Every commit is answered only once Redis has it: nothing to flush.
        Box::pin(async {})
    }
}

/// Awaits `call`, a `command` (`SUBSCRIBE` or `SSUBSCRIBE`) of `channel`,
/// for at most `limit`; both transports' errors name the command and channel.
async fn subscribe_within(
    command: &str,
    channel: &str,
    limit: std::time::Duration,
    call: impl std::future::Future<Output = ::redis::RedisResult<()>>,
) -> Result<(), StoreError> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(StoreError::Unavailable(format!(
            "redis: cannot {command} {channel}: {e}"
        ))),
        Err(_) => Err(StoreError::Unavailable(format!(
            "redis: no answer to {command} {channel} within {limit:?}"
        ))),
    }
}
