//! Redis as the source of truth in cluster mode.
//!
//! Every node commits a game's events through one atomic Lua script that checks
//! idempotency and the expected `seq`, appends to the game's history stream,
//! stores the new state and `PUBLISH`es each encoded diff frame once. Nodes
//! subscribe to the channels of the games their fans watch and forward the
//! published bytes as they are.
//!
//! ## Key layout
//!
//! All keys of one game share the hash tag `{<game id>}`, so the scripts run
//! unchanged on Redis Cluster (the keys of a game live in one slot). For game
//! `nba:x`:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `sh:{nba:x}:state` | string | the state as JSON (with its `seq`) |
//! | `sh:{nba:x}:meta` | hash | `seq`, `created_fp` (hex), `created` (the `Record::Created`, MessagePack) |
//! | `sh:{nba:x}:ids` | hash | `event_id` → `<fingerprint hex>:<seq>` (idempotency) |
//! | `sh:{nba:x}:log` | stream | entry `0-<seq>`: `f` = diff frame bytes, `r` = `Record::Event` (MessagePack) |
//! | `sh:games` | sorted set | every game id, score 0, read lexicographically |
//!
//! A league's games are the range `[nba:` … `(nba;` of `sh:games` (`;` follows
//! `:`, and league names cannot contain either), so no per-league index is kept.
//!
//! Channels: `sh:g:{nba:x}` carries the diff frames of the game (the payload is
//! exactly the bytes fans get); `sh:l:nba` carries the id of a game just created
//! in the league. Pub/sub is not scoped by database number: two deployments
//! must not share one Redis server.
//!
//! ## Failure
//!
//! Connection, IO and timeout errors become [`StoreError::Unavailable`]
//! (`redis: …`, never a password). Every call is bounded in time, so a caller
//! learns within seconds that Redis is gone. Both scripts are atomic, so a
//! failed call applied all or nothing.
//!
//! Every call is retried once after a dropped connection, so the first call
//! after Redis comes back succeeds instead of failing on the dead socket. For
//! the writes this is safe because both are idempotent: when the first attempt
//! landed and only its answer was lost, the retry answers [`Commit::Seen`]
//! (with this call's own fingerprint: report it as a duplicate, as the
//! contract promises a retrying scorekeeper) or [`CreateOutcome::Exists`], and
//! publishes nothing. When a write times out, its outcome is unknown; the
//! scorekeeper's retry resolves it the same way.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisError, RedisResult, Script, Value};
use bytes::Bytes;
use tokio::time::Instant;

use super::{Commit, CreateOutcome, Record, StoreError};
use crate::config::redact_url;
use crate::domain::{Fingerprint, GameId, GameState, League, Status};

/// Prefix of every key and channel.
pub const PREFIX: &str = "sh";
/// The sorted set of every game id.
const GAMES_KEY: &str = "sh:games";
/// Each TCP connect attempt gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A command without an answer after this long fails.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// No call (reconnect attempts and one retry included) takes longer.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Reconnect attempts after the first one, per reconnect.
const RECONNECT_RETRIES: usize = 2;
/// Ids read per round trip by [`RedisStore::list`].
const LIST_CHUNK_MIN: usize = 100;
/// Most ids read per round trip by [`RedisStore::list`].
const LIST_CHUNK_MAX: usize = 1_000;
/// Most ids one [`RedisStore::list`] call examines before it returns a short
/// page with a cursor (so a rare status filter over many games stays cheap).
const LIST_SCAN_BUDGET: usize = 5_000;

/// Creates a game if absent.
///
/// KEYS: state, meta. ARGV: state JSON, created fingerprint (hex), the
/// `Record::Created` (MessagePack).
/// Reply: `{"created"}` or `{"exists", <fingerprint hex>}`.
const CREATE_LUA: &str = r#"
local fp = redis.call('HGET', KEYS[2], 'created_fp')
if fp then
  return {'exists', fp}
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'seq', '0', 'created_fp', ARGV[2], 'created', ARGV[3])
return {'created'}
"#;

/// Applies a run of events to a game if none of their ids was seen and the
/// game is at the expected seq.
///
/// KEYS: state, meta, ids, log. ARGV: expected seq, final state JSON, game
/// channel, n, then for each event: event_id, fingerprint (hex), diff frame,
/// `Record::Event` (MessagePack).
/// Reply: `{"missing"}`, `{"seen", <index>, "<fp hex>:<seq>"}`,
/// `{"stale", "<current seq>"}` or `{"applied", "<last seq>"}`.
const COMMIT_LUA: &str = r#"
local cur = redis.call('HGET', KEYS[2], 'seq')
if not cur then
  return {'missing'}
end
local n = tonumber(ARGV[4])
for i = 0, n - 1 do
  local seen = redis.call('HGET', KEYS[3], ARGV[5 + 4 * i])
  if seen then
    return {'seen', i, seen}
  end
end
if cur ~= ARGV[1] then
  return {'stale', cur}
end
local seq = tonumber(cur)
for i = 0, n - 1 do
  local a = 5 + 4 * i
  seq = seq + 1
  local s = string.format('%d', seq)
  redis.call('HSET', KEYS[3], ARGV[a], ARGV[a + 1] .. ':' .. s)
  redis.call('XADD', KEYS[4], '0-' .. s, 'f', ARGV[a + 2], 'r', ARGV[a + 3])
end
local last = string.format('%d', seq)
redis.call('SET', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], 'seq', last)
for i = 0, n - 1 do
  redis.call('PUBLISH', ARGV[3], ARGV[7 + 4 * i])
end
return {'applied', last}
"#;

static CREATE: LazyLock<Script> = LazyLock::new(|| Script::new(CREATE_LUA));
static COMMIT: LazyLock<Script> = LazyLock::new(|| Script::new(COMMIT_LUA));

/// The Redis store of cluster mode. Cheap to clone: clones share one
/// auto-reconnecting multiplexed connection.
#[derive(Clone)]
pub struct RedisStore {
    client: Client,
    conn: ConnectionManager,
    /// The URL with any password replaced, for messages.
    shown_url: String,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.shown_url)
            .finish_non_exhaustive()
    }
}

/// A game as read back from Redis.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The current state (its `seq` is the game's seq).
    pub state: GameState,
    /// Digest of the body that created the game.
    pub created_fingerprint: Fingerprint,
}

/// One event to commit, prepared by the caller for the seq it will get.
#[derive(Debug, Clone)]
pub struct CommitEvent {
    /// The scorekeeper's `event_id` (idempotency key).
    pub event_id: String,
    /// Digest of the event body.
    pub fingerprint: Fingerprint,
    /// The encoded diff frame (`q` already set to its seq), published as is.
    pub frame: Bytes,
    /// The `Record::Event` as MessagePack with field names (the audit trail).
    pub record: Vec<u8>,
}

/// A channel a node may be subscribed to (what tests read back from the
/// names messages arrive on).
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// Diff frames of one game.
    Game(GameId),
    /// Ids of games created in a league.
    League(League),
}

impl RedisStore {
    /// Connects to `url` and checks that Redis answers `PING`.
    ///
    /// The connection reconnects by itself later; every call is bounded in
    /// time. An unreachable server is an error naming the URL (password
    /// redacted) and the `redis.url` setting.
    pub async fn connect(url: &str) -> Result<RedisStore, StoreError> {
        let shown_url = redact_url(url);
        let unreachable = |detail: String| {
            StoreError::Unavailable(format!(
                "redis: cannot reach {shown_url} (redis.url / SCOREHUB_REDIS__URL): {detail}"
            ))
        };
        let client = Client::open(url).map_err(|e| {
            StoreError::Unavailable(format!(
                "redis: redis.url {shown_url} is not a usable Redis URL ({e}); expected redis://[:password@]host:port/db"
            ))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = match tokio::time::timeout(
            CALL_TIMEOUT,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(unreachable(format!("no answer within {CALL_TIMEOUT:?}"))),
        };
        let store = RedisStore {
            client,
            conn,
            shown_url: shown_url.clone(),
        };
        match store.ping().await {
            Ok(()) => Ok(store),
            Err(StoreError::Unavailable(detail)) => Err(unreachable(detail)),
            Err(e) => Err(e),
        }
    }

    /// The client, for opening a separate pub/sub connection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The URL with any password redacted, for logs and messages.
    pub fn url(&self) -> &str {
        &self.shown_url
    }

    /// Checks that Redis answers (the readiness probe).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let cmd = ::redis::cmd("PING");
        let _: String = self
            .call("PING", |mut c| {
                let cmd = &cmd;
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        Ok(())
    }

    /// Creates the game of `state` (at seq 0) if it does not exist, then lists
    /// it and announces it on its league channel.
    ///
    /// When the game exists with the same `fingerprint`, the listing and the
    /// announcement are repeated, so retrying a create that failed half-way
    /// heals it.
    pub async fn create(
        &self,
        state: &GameState,
        fingerprint: Fingerprint,
        record: &Record,
    ) -> Result<CreateOutcome, StoreError> {
        let id = &state.game;
        if state.seq != 0 {
            return Err(bug(format!(
                "create of game {id} with a state at seq {}",
                state.seq
            )));
        }
        let state_json = serde_json::to_vec(state)
            .map_err(|e| bug(format!("game {id}: cannot encode the state: {e}")))?;
        let record = rmp_serde::to_vec_named(record)
            .map_err(|e| bug(format!("game {id}: cannot encode the record: {e}")))?;
        // Listed first: a game that exists is always listed (`list` skips
        // listed ids without a state, left by a create that failed here).
        let mut zadd = ::redis::cmd("ZADD");
        zadd.arg(GAMES_KEY).arg(0).arg(id.as_str());
        let _: i64 = self
            .call(&format!("list game {id}"), |mut c| {
                let cmd = &zadd;
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        let mut invocation = CREATE.prepare_invoke();
        invocation
            .key(key(id, "state"))
            .key(key(id, "meta"))
            .arg(state_json)
            .arg(hex(&fingerprint))
            .arg(record);
        let reply: Value = self
            .call(&format!("create game {id}"), |mut c| {
                let invocation = &invocation;
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        let outcome = match reply_tag(&reply) {
            Some((b"created", _)) => CreateOutcome::Created,
            Some((b"exists", rest)) => CreateOutcome::Exists {
                fingerprint: rest
                    .first()
                    .and_then(as_bytes)
                    .and_then(unhex)
                    .ok_or_else(|| bad_reply(id, "create", &reply))?,
            },
            _ => return Err(bad_reply(id, "create", &reply)),
        };
        let announce = match outcome {
            CreateOutcome::Created => true,
            CreateOutcome::Exists { fingerprint: f } => f == fingerprint,
        };
        if announce {
            let mut publish = ::redis::cmd("PUBLISH");
            publish
                .arg(RedisStore::league_channel(&id.league()))
                .arg(id.as_str());
            let _: i64 = self
                .call(&format!("announce game {id}"), |mut c| {
                    let cmd = &publish;
                    async move { cmd.query_async(&mut c).await }
                })
                .await?;
        }
        Ok(outcome)
    }

    /// The current state of a game and the digest of its creating body, or
    /// `None` when it does not exist.
    pub async fn load(&self, id: &GameId) -> Result<Option<Loaded>, StoreError> {
        let mut pipe = ::redis::pipe();
        pipe.cmd("GET")
            .arg(key(id, "state"))
            .cmd("HGET")
            .arg(key(id, "meta"))
            .arg("created_fp");
        let (state, fp): (Option<Vec<u8>>, Option<Vec<u8>>) = self
            .call(&format!("load game {id}"), |mut c| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut c).await }
            })
            .await?;
        let Some(state) = state else {
            return Ok(None);
        };
        let state = decode_state(id, &state)?;
        let created_fingerprint = fp.as_deref().and_then(unhex).ok_or_else(|| {
            StoreError::Unavailable(format!(
                "redis: game {id} has a state but no readable created_fp in its meta hash"
            ))
        })?;
        Ok(Some(Loaded {
            state,
            created_fingerprint,
        }))
    }

    /// Applies `events` to the game, atomically, if none of their ids was
    /// applied before and the game is at `expected_seq`; `state` is the state
    /// after the last of them (seq `expected_seq + events.len()`), and event
    /// `i` gets seq `expected_seq + 1 + i`, its frame built for that seq.
    ///
    /// One script call: on success each frame is published once on the
    /// game's channel. Event ids within one call must be distinct.
    pub async fn commit(
        &self,
        id: &GameId,
        expected_seq: u64,
        events: &[CommitEvent],
        state: &GameState,
    ) -> Result<Commit, StoreError> {
        if events.is_empty() {
            return Err(bug(format!("commit to game {id} without events")));
        }
        if state.game != *id || state.seq != expected_seq + events.len() as u64 {
            return Err(bug(format!(
                "commit of {} events to game {id} at seq {expected_seq} with a state of game {} at seq {}",
                events.len(),
                state.game,
                state.seq
            )));
        }
        let mut ids = HashSet::with_capacity(events.len());
        if let Some(dup) = events.iter().find(|e| !ids.insert(e.event_id.as_str())) {
            return Err(bug(format!(
                "commit to game {id} carries event_id {:?} twice",
                dup.event_id
            )));
        }
        let state_json = serde_json::to_vec(state)
            .map_err(|e| bug(format!("game {id}: cannot encode the state: {e}")))?;
        let mut invocation = COMMIT.prepare_invoke();
        invocation
            .key(key(id, "state"))
            .key(key(id, "meta"))
            .key(key(id, "ids"))
            .key(key(id, "log"))
            .arg(expected_seq)
            .arg(state_json)
            .arg(RedisStore::game_channel(id))
            .arg(events.len());
        for e in events {
            invocation
                .arg(e.event_id.as_str())
                .arg(hex(&e.fingerprint))
                .arg(e.frame.as_ref())
                .arg(e.record.as_slice());
        }
        let reply: Value = self
            .call(&format!("commit to game {id}"), |mut c| {
                let invocation = &invocation;
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        let parsed = match reply_tag(&reply) {
            Some((b"applied", [last])) => as_u64(last).map(|last_seq| Commit::Applied { last_seq }),
            Some((b"stale", [current])) => as_u64(current).map(|current| Commit::Stale { current }),
            Some((b"missing", [])) => Some(Commit::Missing),
            Some((b"seen", [index, seen])) => {
                let index = as_u64(index).and_then(|i| usize::try_from(i).ok());
                let seen = as_bytes(seen).and_then(parse_seen);
                match (index, seen) {
                    (Some(index), Some((fingerprint, seq))) if index < events.len() => {
                        Some(Commit::Seen {
                            index,
                            fingerprint,
                            seq,
                        })
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        parsed.ok_or_else(|| bad_reply(id, "commit", &reply))
    }

    /// What the game's idempotency record holds for each of `event_ids`
    /// (in order): the digest of the body applied under it and its seq, or
    /// `None` for an id never applied.
    pub async fn seen_ids(
        &self,
        id: &GameId,
        event_ids: &[&str],
    ) -> Result<Vec<Option<(Fingerprint, u64)>>, StoreError> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = ::redis::cmd("HMGET");
        cmd.arg(key(id, "ids"));
        for event_id in event_ids {
            cmd.arg(*event_id);
        }
        let found: Vec<Option<Vec<u8>>> = self
            .call(&format!("look up event ids of game {id}"), |mut c| {
                let cmd = &cmd;
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        found
            .into_iter()
            .map(|v| match v {
                None => Ok(None),
                Some(b) => parse_seen(&b).map(Some).ok_or_else(|| {
                    StoreError::Unavailable(format!(
                        "redis: game {id}: an entry of its ids hash is unreadable"
                    ))
                }),
            })
            .collect()
    }

    /// Up to `limit` diff frames after `after_seq`, oldest first: `(seq, frame)`.
    pub async fn frames_after(
        &self,
        id: &GameId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Bytes)>, StoreError> {
        let entries = self
            .range(id, "XRANGE", &format!("(0-{after_seq}"), "+", limit)
            .await?;
        Ok(entries
            .into_iter()
            .map(|e| (e.seq, Bytes::from(e.frame)))
            .collect())
    }

    /// The last `n` diff frames, oldest first: `(seq, frame)`; seeds a resume
    /// window.
    pub async fn last_frames(
        &self,
        id: &GameId,
        n: usize,
    ) -> Result<Vec<(u64, Bytes)>, StoreError> {
        let mut entries = self.range(id, "XREVRANGE", "+", "-", n).await?;
        entries.reverse();
        Ok(entries
            .into_iter()
            .map(|e| (e.seq, Bytes::from(e.frame)))
            .collect())
    }

    /// Up to `limit` event records with seq above `since`, oldest first: the
    /// audit trail.
    pub async fn events(
        &self,
        id: &GameId,
        since: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let entries = self
            .range(id, "XRANGE", &format!("(0-{since}"), "+", limit)
            .await?;
        entries
            .into_iter()
            .map(|entry| {
                rmp_serde::from_slice(&entry.record).map_err(|e| {
                    StoreError::Unavailable(format!(
                        "redis: game {id}: the record of seq {} is unreadable: {e}",
                        entry.seq
                    ))
                })
            })
            .collect()
    }

    /// Reads entries of a game's history stream.
    async fn range(
        &self,
        id: &GameId,
        command: &str,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut cmd = ::redis::cmd(command);
        cmd.arg(key(id, "log"))
            .arg(from)
            .arg(to)
            .arg("COUNT")
            .arg(limit);
        let reply: Value = self
            .call(&format!("read the history of game {id}"), |mut c| {
                let cmd = &cmd;
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        parse_entries(&reply).ok_or_else(|| bad_reply(id, command, &reply))
    }

    /// One page of games ordered by id, optionally of one league and one
    /// status, starting after `cursor`; the second value is the cursor of the
    /// next page (`None` at the end).
    ///
    /// A call examines at most a few thousand ids: with a rare status the page
    /// may come back short with a cursor, and the next page continues the
    /// scan.
    pub async fn list(
        &self,
        league: Option<&League>,
        status: Option<Status>,
        limit: usize,
        cursor: Option<&GameId>,
    ) -> Result<(Vec<GameState>, Option<String>), StoreError> {
        if limit == 0 {
            return Ok((Vec::new(), None));
        }
        let (lo, hi) = league_range(league);
        let mut min = match cursor {
            Some(c) if lo.as_deref().is_none_or(|lo| c.as_str() >= &lo[1..]) => {
                format!("({c}")
            }
            _ => lo.unwrap_or_else(|| "-".to_string()),
        };
        let max = hi.unwrap_or_else(|| "+".to_string());
        let chunk = (limit + 1).clamp(LIST_CHUNK_MIN, LIST_CHUNK_MAX);
        let mut games: Vec<GameState> = Vec::new();
        let mut scanned = 0;
        loop {
            let ids = self.ids_in_range(&min, &max, chunk).await?;
            let Some(last) = ids.last().cloned() else {
                return Ok((games, None));
            };
            let mut pipe = ::redis::pipe();
            for id in &ids {
                pipe.cmd("GET").arg(state_key_of(id));
            }
            let states: Vec<Option<Vec<u8>>> = self
                .call("read game states", |mut c| {
                    let pipe = &pipe;
                    async move { pipe.query_async(&mut c).await }
                })
                .await?;
            for (id, state) in ids.iter().zip(states) {
                // An id without state: a create that failed half-way.
                let Some(state) = state else { continue };
                let Ok(game) = GameId::parse(id) else {
                    continue;
                };
                let state = decode_state(&game, &state)?;
                if status.is_some_and(|s| s != state.status) {
                    continue;
                }
                if games.len() == limit {
                    let next = games.last().map(|g| g.game.as_str().to_string());
                    return Ok((games, next));
                }
                games.push(state);
            }
            scanned += ids.len();
            if ids.len() < chunk {
                return Ok((games, None));
            }
            if scanned >= LIST_SCAN_BUDGET {
                // Everything up to `last` was examined.
                return Ok((games, Some(last)));
            }
            min = format!("({last}");
        }
    }

    /// The ids of every game of `league`, in order. An id whose create failed
    /// half-way may be among them (its [`RedisStore::load`] gives `None`).
    pub async fn league_games(&self, league: &League) -> Result<Vec<GameId>, StoreError> {
        let (lo, hi) = league_range(Some(league));
        let (lo, hi) = (lo.unwrap_or_default(), hi.unwrap_or_default());
        let mut cmd = ::redis::cmd("ZRANGE");
        cmd.arg(GAMES_KEY).arg(lo).arg(hi).arg("BYLEX");
        let ids: Vec<String> = self
            .call(&format!("list the games of league {league}"), |mut c| {
                let cmd = &cmd;
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        Ok(ids.iter().filter_map(|id| GameId::parse(id).ok()).collect())
    }

    /// Up to `count` ids of `sh:games` in the lexicographic range `min`..`max`.
    async fn ids_in_range(
        &self,
        min: &str,
        max: &str,
        count: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut cmd = ::redis::cmd("ZRANGE");
        cmd.arg(GAMES_KEY)
            .arg(min)
            .arg(max)
            .arg("BYLEX")
            .arg("LIMIT")
            .arg(0)
            .arg(count);
        self.call("list games", |mut c| {
            let cmd = &cmd;
            async move { cmd.query_async(&mut c).await }
        })
        .await
    }

    /// The channel of a game's diff frames: `sh:g:{<id>}`.
    pub fn game_channel(id: &GameId) -> String {
        format!("{PREFIX}:g:{{{id}}}")
    }

    /// The channel announcing games created in a league: `sh:l:<league>`.
    pub fn league_channel(league: &League) -> String {
        format!("{PREFIX}:l:{league}")
    }

    /// The inverse of [`RedisStore::game_channel`] and
    /// [`RedisStore::league_channel`] (tests check the names with it).
    #[cfg(test)]
    pub fn parse_channel(name: &[u8]) -> Option<Channel> {
        let name = std::str::from_utf8(name).ok()?;
        let rest = name.strip_prefix(PREFIX)?.strip_prefix(':')?;
        if let Some(game) = rest.strip_prefix("g:{") {
            return GameId::parse(game.strip_suffix('}')?)
                .ok()
                .map(Channel::Game);
        }
        League::parse(rest.strip_prefix("l:")?)
            .ok()
            .map(Channel::League)
    }

    /// Runs `op` on the shared connection within [`CALL_TIMEOUT`], once more
    /// when the connection had dropped (the retry waits for the reconnect).
    ///
    /// Retrying a write is safe: when the first attempt landed and only its
    /// answer was lost, the scripts find the game or the events and change
    /// nothing.
    async fn call<T, F, Fut>(&self, what: &str, op: F) -> Result<T, StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = Instant::now() + CALL_TIMEOUT;
        let mut retried = false;
        loop {
            match tokio::time::timeout_at(deadline, op(self.conn.clone())).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if !retried && dropped(&e) => retried = true,
                Ok(Err(e)) => {
                    return Err(StoreError::Unavailable(format!(
                        "redis: {what} at {}: {e}",
                        self.shown_url
                    )));
                }
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "redis: {what} at {}: no answer within {CALL_TIMEOUT:?}",
                        self.shown_url
                    )));
                }
            }
        }
    }
}

/// Whether `e` means the connection is gone (a retry reconnects).
fn dropped(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// `sh:{<id>}:<suffix>`.
fn key(id: &GameId, suffix: &str) -> String {
    format!("{PREFIX}:{{{id}}}:{suffix}")
}

/// The state key of an id read from `sh:games`.
fn state_key_of(id: &str) -> String {
    format!("{PREFIX}:{{{id}}}:state")
}

/// The `ZRANGE … BYLEX` bounds of a league's ids in `sh:games`:
/// `[nba:` … `(nba;`. `(None, None)` without a league.
fn league_range(league: Option<&League>) -> (Option<String>, Option<String>) {
    match league {
        Some(l) => (Some(format!("[{l}:")), Some(format!("({l};"))),
        None => (None, None),
    }
}

/// A caller broke a precondition: refuse rather than store something wrong.
fn bug(detail: String) -> StoreError {
    StoreError::Unavailable(format!(
        "redis: refused an inconsistent write (a bug): {detail}"
    ))
}

fn bad_reply(id: &GameId, what: &str, reply: &Value) -> StoreError {
    StoreError::Unavailable(format!(
        "redis: unexpected {what} reply for game {id}: {reply:?}"
    ))
}

fn decode_state(id: &GameId, json: &[u8]) -> Result<GameState, StoreError> {
    serde_json::from_slice(json).map_err(|e| {
        StoreError::Unavailable(format!(
            "redis: the stored state of game {id} is unreadable: {e}"
        ))
    })
}

/// Splits a script reply `{tag, rest...}`.
fn reply_tag(reply: &Value) -> Option<(&[u8], &[Value])> {
    let Value::Array(items) = reply else {
        return None;
    };
    let (tag, rest) = items.split_first()?;
    Some((as_bytes(tag)?, rest))
}

fn as_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => std::str::from_utf8(as_bytes(other)?).ok()?.parse().ok(),
    }
}

/// `<fingerprint hex>:<seq>` from the ids hash.
fn parse_seen(b: &[u8]) -> Option<(Fingerprint, u64)> {
    let s = std::str::from_utf8(b).ok()?;
    let (fp, seq) = s.split_once(':')?;
    Some((unhex(fp.as_bytes())?, seq.parse().ok()?))
}

/// One entry of a game's history stream.
struct Entry {
    seq: u64,
    /// Field `f`: the diff frame.
    frame: Vec<u8>,
    /// Field `r`: the `Record::Event`.
    record: Vec<u8>,
}

/// Stream entries `[[id, [field, value, ...]], ...]`.
fn parse_entries(reply: &Value) -> Option<Vec<Entry>> {
    let Value::Array(entries) = reply else {
        return None;
    };
    entries
        .iter()
        .map(|entry| {
            let Value::Array(parts) = entry else {
                return None;
            };
            let [id, Value::Array(fields)] = parts.as_slice() else {
                return None;
            };
            let id = std::str::from_utf8(as_bytes(id)?).ok()?;
            let seq = id.strip_prefix("0-")?.parse().ok()?;
            let (mut f, mut r) = (None, None);
            for pair in fields.chunks(2) {
                if let [name, value] = pair {
                    match as_bytes(name)? {
                        b"f" => f = Some(as_bytes(value)?.to_vec()),
                        b"r" => r = Some(as_bytes(value)?.to_vec()),
                        _ => {}
                    }
                }
            }
            Some(Entry {
                seq,
                frame: f?,
                record: r?,
            })
        })
        .collect()
}

fn hex(fp: &Fingerprint) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(fp.len() * 2);
    for b in fp {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn unhex(s: &[u8]) -> Option<Fingerprint> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Fingerprint::default();
    if s.len() != out.len() * 2 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(s.chunks(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use futures_util::StreamExt;
    use serde_json::json;

    use super::*;
    use crate::codec;
    use crate::domain::{Action, Event, NewGame, NewTeam, Side};
    use crate::testing::RedisServer;

    fn gid(s: &str) -> GameId {
        GameId::parse(s).unwrap()
    }

    fn initial(id: &GameId, status: Status) -> GameState {
        NewGame {
            home: NewTeam {
                name: "Home".into(),
            },
            away: NewTeam {
                name: "Away".into(),
            },
            status: Some(status),
            period: None,
            extra: None,
        }
        .into_state(id.clone(), 1_000)
        .unwrap()
    }

    fn created(state: &GameState, fingerprint: Fingerprint) -> Record {
        Record::Created {
            game: state.game.clone(),
            state: state.clone(),
            fingerprint,
            by: "tester".into(),
            at: 1_000,
        }
    }

    /// The event `event_id` (home scores `points`) on top of `state`, and the
    /// state after it.
    fn scored(state: &GameState, event_id: &str, points: i64) -> (CommitEvent, GameState) {
        let mut next = state.clone();
        next.seq += 1;
        next.home.score += points;
        let diff = json!({"seq": next.seq, "home": {"score": next.home.score}});
        let event = Event {
            event_id: event_id.into(),
            expected_seq: None,
            action: Action::Score {
                team: Side::Home,
                points,
            },
        };
        let fingerprint = event.fingerprint();
        let record = Record::Event {
            game: state.game.clone(),
            seq: next.seq,
            event,
            fingerprint,
            by: "tester".into(),
            at: 2_000,
            diff: diff.clone(),
        };
        let event = CommitEvent {
            event_id: event_id.into(),
            fingerprint,
            frame: codec::diff(&state.game, next.seq, &diff, 2_000),
            record: rmp_serde::to_vec_named(&record).unwrap(),
        };
        (event, next)
    }

    /// A run of events `ids` (1 point each) on top of `state`.
    fn run(state: &GameState, ids: &[&str]) -> (Vec<CommitEvent>, GameState) {
        let mut state = state.clone();
        let mut events = Vec::new();
        for id in ids {
            let (event, next) = scored(&state, id, 1);
            events.push(event);
            state = next;
        }
        (events, state)
    }

    async fn setup() -> (RedisServer, RedisStore) {
        let server = RedisServer::start();
        let store = RedisStore::connect(&server.url()).await.unwrap();
        (server, store)
    }

    async fn create(store: &RedisStore, id: &str, status: Status) -> GameState {
        let state = initial(&gid(id), status);
        let fp = [7; 16];
        let outcome = store.create(&state, fp, &created(&state, fp)).await;
        assert_eq!(outcome.unwrap(), CreateOutcome::Created);
        state
    }

    /// Commits `ids` on top of `state`, expecting success.
    async fn apply(store: &RedisStore, state: &GameState, ids: &[&str]) -> GameState {
        let (events, next) = run(state, ids);
        let outcome = store.commit(&state.game, state.seq, &events, &next).await;
        assert_eq!(outcome.unwrap(), Commit::Applied { last_seq: next.seq });
        next
    }

    async fn command_calls(store: &RedisStore) -> HashMap<String, u64> {
        let mut conn = store
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let info: String = ::redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .unwrap();
        info.lines()
            .filter_map(|line| {
                let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest.strip_prefix("calls=")?.split(',').next()?;
                Some((name.to_string(), calls.parse().ok()?))
            })
            .collect()
    }

    #[tokio::test]
    async fn create_is_idempotent_by_fingerprint_and_announced() {
        let (_server, store) = setup().await;
        let mut pubsub = store.client().get_async_pubsub().await.unwrap();
        pubsub
            .subscribe(RedisStore::league_channel(&League::parse("nba").unwrap()))
            .await
            .unwrap();
        let id = gid("nba:x");
        assert_eq!(store.load(&id).await.unwrap(), None);

        let state = initial(&id, Status::Scheduled);
        let fp = [1; 16];
        let record = created(&state, fp);
        assert_eq!(
            store.create(&state, fp, &record).await.unwrap(),
            CreateOutcome::Created
        );
        // The same body again, and another body: both find it, neither changes it.
        assert_eq!(
            store.create(&state, fp, &record).await.unwrap(),
            CreateOutcome::Exists { fingerprint: fp }
        );
        let mut other = state.clone();
        other.home.name = "Other".into();
        assert_eq!(
            store
                .create(&other, [2; 16], &created(&other, [2; 16]))
                .await
                .unwrap(),
            CreateOutcome::Exists { fingerprint: fp }
        );
        let loaded = store.load(&id).await.unwrap().unwrap();
        assert_eq!(
            loaded,
            Loaded {
                state: state.clone(),
                created_fingerprint: fp
            }
        );

        // Announced on the league channel: on creation, and again on the
        // same-body retry (which heals a create that failed half-way).
        let mut messages = pubsub.on_message();
        for _ in 0..2 {
            let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                RedisStore::parse_channel(msg.get_channel_name().as_bytes()),
                Some(Channel::League(id.league()))
            );
            assert_eq!(msg.get_payload_bytes(), b"nba:x");
        }
        drop(messages);
        assert_eq!(
            store.league_games(&id.league()).await.unwrap(),
            vec![id.clone()]
        );
    }

    #[tokio::test]
    async fn commit_applies_records_and_publishes_the_frame() {
        let (_server, store) = setup().await;
        let state = create(&store, "nba:x", Status::Live).await;
        let id = state.game.clone();
        let mut pubsub = store.client().get_async_pubsub().await.unwrap();
        pubsub
            .subscribe(RedisStore::game_channel(&id))
            .await
            .unwrap();

        let (event, next) = scored(&state, "e1", 3);
        let frame = event.frame.clone();
        let outcome = store.commit(&id, 0, &[event], &next).await.unwrap();
        assert_eq!(outcome, Commit::Applied { last_seq: 1 });

        let msg = tokio::time::timeout(Duration::from_secs(5), pubsub.on_message().next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(msg.get_payload_bytes(), frame.as_ref());
        assert_eq!(
            RedisStore::parse_channel(msg.get_channel_name().as_bytes()),
            Some(Channel::Game(id.clone()))
        );
        let loaded = store.load(&id).await.unwrap().unwrap();
        assert_eq!(loaded.state, next);
        assert_eq!(loaded.state.home.score, 3);
        assert_eq!(
            store.frames_after(&id, 0, 10).await.unwrap(),
            vec![(1, frame)]
        );
        let events = store.events(&id, 0, 10).await.unwrap();
        assert!(matches!(
            &events[..],
            [Record::Event { seq: 1, event, .. }] if event.event_id == "e1"
        ));
    }

    #[tokio::test]
    async fn seen_returns_the_original_and_applies_nothing() {
        let (_server, store) = setup().await;
        let state = create(&store, "nba:x", Status::Live).await;
        let id = state.game.clone();
        let one = apply(&store, &state, &["e1"]).await;
        let original = scored(&state, "e1", 1).0.fingerprint;

        // e2 is new but e1 (second in the run) was applied at seq 1.
        let (events, after) = run(&one, &["e2", "e1"]);
        let outcome = store.commit(&id, 1, &events, &after).await.unwrap();
        assert_eq!(
            outcome,
            Commit::Seen {
                index: 1,
                fingerprint: original,
                seq: 1
            }
        );
        // Also when the caller's seq is behind: idempotency wins over staleness.
        let (events, after) = run(&state, &["e1"]);
        assert_eq!(
            store.commit(&id, 0, &events, &after).await.unwrap(),
            Commit::Seen {
                index: 0,
                fingerprint: original,
                seq: 1
            }
        );
        // Nothing of the refused runs was applied: e2 is still new.
        assert_eq!(store.load(&id).await.unwrap().unwrap().state, one);
        assert_eq!(store.frames_after(&id, 1, 10).await.unwrap(), vec![]);
        let two = apply(&store, &one, &["e2"]).await;
        assert_eq!(two.seq, 2);
    }

    #[tokio::test]
    async fn stale_and_missing_apply_nothing() {
        let (_server, store) = setup().await;
        let state = create(&store, "nba:x", Status::Live).await;
        let id = state.game.clone();
        let two = apply(&store, &state, &["e1", "e2"]).await;

        let (events, after) = run(&state, &["e3"]);
        assert_eq!(
            store.commit(&id, 0, &events, &after).await.unwrap(),
            Commit::Stale { current: 2 }
        );
        assert_eq!(store.load(&id).await.unwrap().unwrap().state, two);

        let ghost = initial(&gid("nba:ghost"), Status::Live);
        let (events, after) = run(&ghost, &["e1"]);
        assert_eq!(
            store.commit(&ghost.game, 0, &events, &after).await.unwrap(),
            Commit::Missing
        );
        assert_eq!(store.load(&ghost.game).await.unwrap(), None);

        // Inconsistent calls are refused before reaching Redis.
        let (events, _) = run(&two, &["e3"]);
        assert!(store.commit(&id, 2, &events, &two).await.is_err());
        let (mut events, after) = run(&two, &["e3", "e4"]);
        events[1].event_id = "e3".into();
        assert!(store.commit(&id, 2, &events, &after).await.is_err());
        assert!(store.commit(&id, 2, &[], &two).await.is_err());
    }

    #[tokio::test]
    async fn one_script_call_and_one_publish_per_event() {
        let (_server, store) = setup().await;
        let state = create(&store, "nba:x", Status::Live).await;
        let id = state.game.clone();
        let mut pubsub = store.client().get_async_pubsub().await.unwrap();
        pubsub
            .subscribe(RedisStore::game_channel(&id))
            .await
            .unwrap();
        // Warm up: the first call loads the script (NOSCRIPT, SCRIPT LOAD).
        let mut state = apply(&store, &state, &["warm"]).await;
        let mut admin = store
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = ::redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut admin)
            .await
            .unwrap();

        for i in 0..3 {
            state = apply(&store, &state, &[&format!("single-{i}")]).await;
        }
        state = apply(&store, &state, &["b1", "b2", "b3", "b4"]).await;
        assert_eq!(state.seq, 8);

        let calls = command_calls(&store).await;
        assert_eq!(calls.get("evalsha"), Some(&4), "{calls:?}");
        assert_eq!(calls.get("publish"), Some(&7), "{calls:?}");
        assert_eq!(calls.get("xadd"), Some(&7), "{calls:?}");
        let expected = [
            "evalsha",
            "publish",
            "xadd",
            "hget",
            "hset",
            "set",
            "config|resetstat",
        ];
        for name in calls.keys() {
            assert!(
                expected.contains(&name.as_str()),
                "unexpected {name}: {calls:?}"
            );
        }

        // Every frame arrived once, with consecutive seqs.
        let mut messages = pubsub.on_message();
        for seq in 1..=8 {
            let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
                .await
                .unwrap()
                .unwrap();
            let frame = codec::decode_frame(msg.get_payload_bytes()).unwrap();
            assert_eq!(frame.q, Some(seq));
        }
        let seqs: Vec<u64> = store
            .frames_after(&id, 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|(seq, _)| seq)
            .collect();
        assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn history_pages_forward_and_from_the_end() {
        let (_server, store) = setup().await;
        let state = create(&store, "nba:x", Status::Live).await;
        let id = state.game.clone();
        let ids: Vec<String> = (1..=10).map(|i| format!("e{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let (events, last) = run(&state, &ids);
        let frames: Vec<Bytes> = events.iter().map(|e| e.frame.clone()).collect();
        store.commit(&id, 0, &events, &last).await.unwrap();

        let page = store.frames_after(&id, 3, 4).await.unwrap();
        assert_eq!(
            page,
            (4..=7)
                .map(|s| (s, frames[s as usize - 1].clone()))
                .collect::<Vec<_>>()
        );
        let seqs = |v: Vec<(u64, Bytes)>| v.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
        assert_eq!(seqs(store.frames_after(&id, 8, 10).await.unwrap()), [9, 10]);
        assert_eq!(
            seqs(store.frames_after(&id, 10, 10).await.unwrap()),
            [0u64; 0]
        );
        assert_eq!(
            seqs(store.frames_after(&id, 0, 0).await.unwrap()),
            [0u64; 0]
        );
        assert_eq!(seqs(store.last_frames(&id, 3).await.unwrap()), [8, 9, 10]);
        assert_eq!(seqs(store.last_frames(&id, 50).await.unwrap()).len(), 10);

        let record_seqs = |v: Vec<Record>| {
            v.into_iter()
                .map(|r| match r {
                    Record::Event { seq, .. } => seq,
                    Record::Created { .. } => 0,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            record_seqs(store.events(&id, 0, 5).await.unwrap()),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(
            record_seqs(store.events(&id, 5, 100).await.unwrap()),
            [6, 7, 8, 9, 10]
        );
        assert_eq!(
            store.last_frames(&gid("nba:none"), 3).await.unwrap(),
            vec![]
        );
    }

    #[tokio::test]
    async fn list_filters_by_league_and_status_and_paginates() {
        let (_server, store) = setup().await;
        for (id, status) in [
            ("nba:c", Status::Live),
            ("nba:a", Status::Live),
            ("nba:b", Status::Final),
            ("nhl:a", Status::Live),
            ("nba-x:a", Status::Live),
            ("nbaa:z", Status::Scheduled),
        ] {
            create(&store, id, status).await;
        }
        let ids = |page: &(Vec<GameState>, Option<String>)| {
            page.0
                .iter()
                .map(|g| g.game.to_string())
                .collect::<Vec<_>>()
        };
        let nba = League::parse("nba").unwrap();

        let p1 = store.list(None, None, 2, None).await.unwrap();
        assert_eq!(
            (ids(&p1), p1.1.as_deref()),
            (vec!["nba-x:a".into(), "nba:a".into()], Some("nba:a"))
        );
        let p2 = store
            .list(None, None, 2, Some(&gid("nba:a")))
            .await
            .unwrap();
        assert_eq!(
            (ids(&p2), p2.1.as_deref()),
            (vec!["nba:b".into(), "nba:c".into()], Some("nba:c"))
        );
        let p3 = store
            .list(None, None, 2, Some(&gid("nba:c")))
            .await
            .unwrap();
        assert_eq!(
            (ids(&p3), p3.1),
            (vec!["nbaa:z".into(), "nhl:a".into()], None)
        );

        let live = store
            .list(Some(&nba), Some(Status::Live), 10, None)
            .await
            .unwrap();
        assert_eq!(
            (ids(&live), live.1),
            (vec!["nba:a".into(), "nba:c".into()], None)
        );
        let first = store.list(Some(&nba), None, 1, None).await.unwrap();
        assert_eq!(
            (ids(&first), first.1.as_deref()),
            (vec!["nba:a".into()], Some("nba:a"))
        );
        let last = store
            .list(Some(&nba), None, 1, Some(&gid("nba:b")))
            .await
            .unwrap();
        assert_eq!((ids(&last), last.1), (vec!["nba:c".into()], None));
        // A cursor before the league starts at the league.
        let from_start = store
            .list(Some(&nba), None, 5, Some(&gid("aaa:x")))
            .await
            .unwrap();
        assert_eq!(ids(&from_start), ["nba:a", "nba:b", "nba:c"]);
        let none = store
            .list(None, Some(Status::Paused), 5, None)
            .await
            .unwrap();
        assert_eq!((ids(&none), none.1), (vec![], None));
        assert_eq!(
            store.league_games(&nba).await.unwrap(),
            vec![gid("nba:a"), gid("nba:b"), gid("nba:c")]
        );
        assert_eq!(
            store
                .league_games(&League::parse("mlb").unwrap())
                .await
                .unwrap(),
            vec![]
        );
    }

    #[tokio::test]
    async fn list_scans_a_bounded_number_of_ids_per_call() {
        let (_server, store) = setup().await;
        // Listed ids without a state (creates that failed half-way), sorting
        // before the one real game.
        let mut conn = store
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let mut zadd = ::redis::cmd("ZADD");
        zadd.arg(GAMES_KEY);
        for i in 0..LIST_SCAN_BUDGET + 500 {
            zadd.arg(0).arg(format!("aaa:g{i:05}"));
        }
        let _: i64 = zadd.query_async(&mut conn).await.unwrap();
        create(&store, "nba:a", Status::Live).await;

        let (games, cursor) = store.list(None, None, 10, None).await.unwrap();
        assert!(games.is_empty());
        let cursor = gid(&cursor.expect("a cursor to continue the scan"));
        let (games, cursor) = store.list(None, None, 10, Some(&cursor)).await.unwrap();
        assert_eq!(games.len(), 1);
        assert_eq!(games[0].game, gid("nba:a"));
        assert_eq!(cursor, None);
    }

    #[tokio::test]
    async fn outage_fails_fast_and_recovers_with_the_data() {
        let mut server = RedisServer::start_with_aof();
        let store = RedisStore::connect(&server.url()).await.unwrap();
        let state = create(&store, "nba:x", Status::Live).await;
        let id = state.game.clone();
        let one = apply(&store, &state, &["e1"]).await;

        server.kill9();
        // Three calls against a dead server, together faster than one call's
        // time limit: they fail on the refused reconnect, they do not hang.
        let bound = CALL_TIMEOUT + Duration::from_secs(1);
        let started = std::time::Instant::now();
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        ));
        let (events, two) = run(&one, &["e2"]);
        let err = store.commit(&id, 1, &events, &two).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Unavailable(m) if m.starts_with("redis: ")),
            "{err}"
        );
        assert!(matches!(
            store.load(&id).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(started.elapsed() < bound, "took {:?}", started.elapsed());

        // The first call after a restart (here a write) reconnects and succeeds.
        server.restart();
        assert_eq!(
            store.commit(&id, 1, &events, &two).await.unwrap(),
            Commit::Applied { last_seq: 2 }
        );
        // Again, with a read first; the data survived both kills (AOF).
        server.kill9();
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        ));
        server.restart();
        assert_eq!(store.load(&id).await.unwrap().unwrap().state, two);
        store.ping().await.unwrap();
        assert_eq!(
            store.frames_after(&id, 0, 10).await.unwrap().len(),
            2,
            "history survives"
        );
    }

    #[tokio::test]
    async fn connect_names_the_url_without_its_password() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let url = format!("redis://:hunter2@127.0.0.1:{port}/0");
        let started = std::time::Instant::now();
        let err = RedisStore::connect(&url).await.unwrap_err().to_string();
        assert!(started.elapsed() < CALL_TIMEOUT + Duration::from_secs(1));
        assert!(!err.contains("hunter2"), "{err}");
        assert!(
            err.contains(&format!("redis://<redacted>@127.0.0.1:{port}/0")),
            "{err}"
        );
        assert!(err.contains("redis.url"), "{err}");
        assert!(RedisStore::connect("http://nope").await.is_err());
    }

    #[test]
    fn channel_names_round_trip() {
        let id = gid("nba:2026-11-22-lal-bos");
        let name = RedisStore::game_channel(&id);
        assert_eq!(name, "sh:g:{nba:2026-11-22-lal-bos}");
        assert_eq!(
            RedisStore::parse_channel(name.as_bytes()),
            Some(Channel::Game(id))
        );
        let league = League::parse("nba").unwrap();
        let name = RedisStore::league_channel(&league);
        assert_eq!(name, "sh:l:nba");
        assert_eq!(
            RedisStore::parse_channel(name.as_bytes()),
            Some(Channel::League(league))
        );
        for bad in [
            &b"sh:g:{nba:x"[..],
            b"xx:g:{nba:x}",
            b"sh:l:NBA",
            b"sh:g:nba:x",
            b"sh:x:nba",
            b"\xff",
        ] {
            assert_eq!(RedisStore::parse_channel(bad), None);
        }
        assert_eq!(key(&gid("nba:x"), "log"), "sh:{nba:x}:log");
    }

    #[test]
    fn helpers() {
        let fp: Fingerprint = core::array::from_fn(|i| (i * 17) as u8);
        assert_eq!(unhex(hex(&fp).as_bytes()), Some(fp));
        assert_eq!(unhex(b"zz"), None);
        assert_eq!(
            parse_seen(format!("{}:42", hex(&fp)).as_bytes()),
            Some((fp, 42))
        );
    }
}
