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
//! `nba:x`, with the default prefix `sh` and database 0 (see [`names`]:
//! `redis.prefix` replaces `sh`; another database shows in the channel
//! names, `sh@3:`):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `sh:{nba:x}:state` | string | the state as JSON (with its `seq`) |
//! | `sh:{nba:x}:meta` | hash | `seq`, `created_fp` (hex), `created` (the `Record::Created`, MessagePack), `dups` (see Durability), `lost` (the highest seq a node applied that Redis lost), `expires` (while finished: when its keys expire, Unix ms) |
//! | `sh:{nba:x}:ids` | hash | `event_id` → `<fingerprint hex>:<seq>` (idempotency) |
//! | `sh:{nba:x}:log` | stream | entry `0-<seq>`: `f` = diff frame bytes, `r` = `Record::Event` (MessagePack); trimmed to about `redis.stream_max_len` entries (never fewer) |
//! | `sh:{nba:x}:occ` | hash | occupancy: node id → `<fans>:<expires, Unix ms by Redis's clock>`; each node rewrites its field every `occupancy.interval`, a field past its expiry is ignored and removed, and the key expires with its longest-lived field ([`RedisStore::occupancy`]) |
//! | `sh:games` | sorted set | every game id, score 0, read lexicographically |
//! | `sh:expiring` | sorted set | finished games' ids, scored by their expiry (Unix ms), until swept |
//!
//! A league's games are the range `[nba:` … `(nba;` of `sh:games` (`;` follows
//! `:`, and league names cannot contain either), so no per-league index is kept.
//!
//! Channels: `sh:g:{nba:x}` carries the diff frames of the game (the payload is
//! exactly the bytes fans get); `sh:l:nba` carries the id of a game just created
//! in the league.
//!
//! ## Retention
//!
//! A finished game (`final` or `cancelled`) is kept for `games.retention`
//! after the commit that last left it finished (the time of its last
//! event's record): the commit script `PEXPIREAT`s the game's four keys to
//! that moment, each commit leaving it finished moves them, and one that
//! reopens it `PERSIST`s them, all inside the one script call on the
//! game's slot. Once they expire the game is gone (`load` finds nothing,
//! a commit answers `missing`) and its id can be created anew. Its id then
//! leaves `sh:games` when a listing sweeps `sh:expiring`
//! ([`RedisStore::sweep_expired`]); see [`RedisStore::note_expiry`] for
//! why that set is written by a command of its own. The expiry is this
//! node's clock plus the retention; Redis's clock applies it.
//!
//! ## Durability
//!
//! A commit (or create) is answered once the primary has it. With
//! `redis.min_replicas_acked = N`, the script and a `WAIT N timeout`
//! go in one pipeline on the same connection, and it is answered
//! only when `N` replicas confirmed it (else the caller gets
//! [`StoreError::Unavailable`]: the event may be applied, and a retry with
//! the same `event_id` waits for the replicas again). A duplicate answered
//! from Redis (a repeated event or create) waits the same way: the script
//! then writes a counter (`dups` in the meta hash), so `WAIT` covers the
//! original write even when another node made it; a duplicate a node
//! answers without a commit is confirmed the same way
//! ([`RedisStore::confirm`]).
//!
//! ## Topology
//!
//! One server (`redis.url`), a Redis Cluster (`redis.cluster`: commands go
//! to the shard of their key, broadcasts are `SPUBLISH`ed; see [`conn`]),
//! or a primary found through Sentinels (`redis.sentinels`). A cluster's
//! connection is rebuilt from the seeds, and a Sentinel's primary asked for
//! again, when the server a call needed stopped answering: the clients
//! follow `MOVED` by themselves but not the death of a primary.
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
use std::sync::{Arc, LazyLock, Mutex, PoisonError, RwLock};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::sentinel::{SentinelClient, SentinelServerType};
use ::redis::{Client, RedisError, RedisResult, Script, Value};
use bytes::Bytes;
use tokio::time::Instant;

pub(crate) mod conn;
pub(crate) mod names;
#[cfg(test)]
mod tests;

use self::conn::Conn;
pub(crate) use self::names::Names;
use super::{Commit, CreateOutcome, Record, StoreError};
use crate::config::{RedisConfig, RedisTls, redact_url};
use crate::domain::{Fingerprint, GameId, GameState, League, Retention, Status};
/// Each TCP connect attempt gives up after this long.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A command without an answer after this long fails.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Least time between two rebuilds of a cluster connection.
const REBUILD_INTERVAL: Duration = Duration::from_millis(500);
/// No call (reconnect attempts and one retry included) takes longer.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Reconnect attempts after the first one, per reconnect.
pub(crate) const RECONNECT_RETRIES: usize = 2;
/// Ids read per round trip by [`RedisStore::list`].
const LIST_CHUNK_MIN: usize = 100;
/// Most ids read per round trip by [`RedisStore::list`].
const LIST_CHUNK_MAX: usize = 1_000;
/// Most ids one [`RedisStore::list`] call examines before it returns a short
/// page with a cursor (so a rare status filter over many games stays cheap).
const LIST_SCAN_BUDGET: usize = 5_000;
/// Most due entries of `<prefix>:expiring` one [`RedisStore::sweep_expired`]
/// examines.
const SWEEP_BATCH: usize = 100;

/// Creates a game if absent.
///
/// KEYS: state, meta. ARGV: state JSON, created fingerprint (hex), the
/// `Record::Created` (MessagePack), `1` to write when the game exists (so a
/// `WAIT` after it covers the original create), the game's expiry (Unix ms)
/// when it is created finished, else empty.
/// Reply: `{"created"}` or `{"exists", <fingerprint hex>}`.
const CREATE_LUA: &str = r#"
local fp = redis.call('HGET', KEYS[2], 'created_fp')
if fp then
  if ARGV[4] == '1' then
    redis.call('HINCRBY', KEYS[2], 'dups', 1)
  end
  return {'exists', fp}
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'seq', '0', 'created_fp', ARGV[2], 'created', ARGV[3])
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[2], 'expires', ARGV[5])
  redis.call('PEXPIREAT', KEYS[1], ARGV[5])
  redis.call('PEXPIREAT', KEYS[2], ARGV[5])
end
return {'created'}
"#;

/// Applies a run of events to a game if none of their ids was seen and the
/// game is at the expected seq.
///
/// KEYS: state, meta, ids, log. ARGV: expected seq, final state JSON, game
/// channel, n, stream length to keep, `1` to write on a duplicate (so a
/// `WAIT` after it covers the original), the publish command (`PUBLISH`, or
/// `SPUBLISH` on a cluster), the game's expiry (Unix ms) when the final
/// state is finished, else empty; then for each event: event_id,
/// fingerprint (hex), diff frame, `Record::Event` (MessagePack).
/// Reply: `{"missing"}`, `{"seen", <index>, "<fp hex>:<seq>"}`,
/// `{"stale", "<current seq>"}` or `{"applied", "<last seq>"}`.
///
/// Retention: a finished game's four keys expire together at its expiry
/// (`PEXPIREAT`, restarted by each commit that leaves it finished; `SET`
/// clears the state's TTL, so it is set again), which the meta hash keeps
/// as `expires`; a commit that reopens the game `PERSIST`s them. A game
/// that stays unfinished costs nothing more (`expires` is read with `seq`).
const COMMIT_LUA: &str = r#"
local meta = redis.call('HMGET', KEYS[2], 'seq', 'expires')
local cur = meta[1]
if not cur then
  return {'missing'}
end
local n = tonumber(ARGV[4])
for i = 0, n - 1 do
  local seen = redis.call('HGET', KEYS[3], ARGV[9 + 4 * i])
  if seen then
    if ARGV[6] == '1' then
      redis.call('HINCRBY', KEYS[2], 'dups', 1)
    end
    return {'seen', i, seen}
  end
end
if cur ~= ARGV[1] then
  return {'stale', cur}
end
local seq = tonumber(cur)
for i = 0, n - 1 do
  local a = 9 + 4 * i
  seq = seq + 1
  local s = string.format('%d', seq)
  redis.call('HSET', KEYS[3], ARGV[a], ARGV[a + 1] .. ':' .. s)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '0-' .. s, 'f', ARGV[a + 2], 'r', ARGV[a + 3])
end
local last = string.format('%d', seq)
redis.call('SET', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], 'seq', last)
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[2], 'expires', ARGV[8])
  for k = 1, 4 do
    redis.call('PEXPIREAT', KEYS[k], ARGV[8])
  end
elseif meta[2] then
  redis.call('HDEL', KEYS[2], 'expires')
  for k = 1, 4 do
    redis.call('PERSIST', KEYS[k])
  end
end
for i = 0, n - 1 do
  redis.call(ARGV[7], ARGV[3], ARGV[11 + 4 * i])
end
return {'applied', last}
"#;

/// Raises the game's `lost` mark (meta hash) to ARGV[1] if it is lower:
/// the highest seq some node applied that Redis then lost. A game whose
/// meta hash is gone (expired) is left alone.
const NOTE_LOST_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local had = tonumber(redis.call('HGET', KEYS[1], 'lost') or '0')
if tonumber(ARGV[1]) > had then
  redis.call('HSET', KEYS[1], 'lost', ARGV[1])
end
return 1
"#;

/// KEYS[1] the meta hash: counts one more duplicate answered from a node's
/// memory (`dups`), a write for the `WAIT` after it to cover: once a replica
/// has it, it has every earlier write of the game too. A game whose meta
/// hash is gone is left alone (`missing`).
const CONFIRM_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'missing'}
end
redis.call('HINCRBY', KEYS[1], 'dups', 1)
return 1
"#;

/// Removes each member ARGV[2i+1] of the sorted set KEYS[1] whose score is
/// still ARGV[2i+2] (so an entry a commit just moved is kept).
const ZREM_IF_SCORE_LUA: &str = r#"
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
"#;

/// Occupancy of one game: writes this node's fan count (or, for 0, removes
/// it), drops the reports of nodes past their expiry, answers the sum of the
/// live ones. Times are Redis's (`TIME`), so node clocks do not matter.
/// KEYS: occ hash. ARGV: node id, fans, ttl (ms).
const OCCUPANCY_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fans = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
if fans > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], string.format('%d:%d', fans, now + ttl))
  -- The key outlives its longest-lived report (nodes may differ in ttl).
  if redis.call('PTTL', KEYS[1]) < ttl then
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local total = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local n, expires = string.match(all[i + 1], '^(%d+):(%d+)$')
  if n and tonumber(expires) > now then
    total = total + tonumber(n)
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return total
"#;

static OCCUPANCY: LazyLock<Script> = LazyLock::new(|| Script::new(OCCUPANCY_LUA));
static CREATE: LazyLock<Script> = LazyLock::new(|| Script::new(CREATE_LUA));
static ZREM_IF_SCORE: LazyLock<Script> = LazyLock::new(|| Script::new(ZREM_IF_SCORE_LUA));
static NOTE_LOST: LazyLock<Script> = LazyLock::new(|| Script::new(NOTE_LOST_LUA));
/// Sent whole (`EVAL`, a few bytes): no `NOSCRIPT` round, whose `WAIT`
/// would double the wait while replicas are missing.
static CONFIRM: LazyLock<Script> = LazyLock::new(|| Script::new(CONFIRM_LUA));
static COMMIT: LazyLock<Script> = LazyLock::new(|| Script::new(COMMIT_LUA));

/// The Redis store of cluster mode. Cheap to clone: clones share one
/// auto-reconnecting multiplexed connection.
#[derive(Clone)]
pub struct RedisStore {
    /// One server: its client (pub/sub opens its own connection with it).
    /// A cluster: a client of the first seed node (for diagnostics).
    client: Arc<RwLock<Client>>,
    /// With Sentinels: what finds the current primary.
    sentinel: Option<Arc<tokio::sync::Mutex<SentinelClient>>>,
    /// Replaced when a cluster's topology changed under it (see
    /// [`RedisStore::rebuild_cluster`]).
    conn: Arc<RwLock<Conn>>,
    /// When the cluster connection was last rebuilt.
    rebuilt: Arc<Mutex<Option<Instant>>>,
    /// A cluster's seed nodes and certificates, for the pub/sub connection.
    cluster: Option<(Vec<String>, Option<::redis::TlsCertificates>)>,
    /// The URL with any password replaced, for messages.
    shown_url: String,
    names: Names,
    /// Replicas each commit waits for (`WAIT`), 0 for none.
    min_replicas_acked: u32,
    /// How long a `WAIT` may take.
    replica_ack_timeout: Duration,
    /// Entries kept per game stream.
    stream_max_len: usize,
    /// How long finished games are kept.
    retention: Retention,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.shown_url)
            .field("names", &self.names)
            .field("min_replicas_acked", &self.min_replicas_acked)
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
    /// The highest seq a node applied that Redis lost (0: none); see
    /// [`RedisStore::note_lost`].
    pub lost: u64,
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
    /// The record's server time, Unix ms (the last event's starts a
    /// finished game's retention).
    pub at: i64,
}

impl RedisStore {
    /// Connects to `url` with the default settings (prefix `sh`, no
    /// replica acknowledgements); see [`RedisStore::connect_with`].
    #[cfg(test)]
    pub async fn connect(url: &str) -> Result<RedisStore, StoreError> {
        RedisStore::connect_with(&RedisConfig {
            url: Some(url.to_owned()),
            ..RedisConfig::default()
        })
        .await
    }

    /// Connects to `config.url` and checks that Redis answers `PING`.
    ///
    /// The connection reconnects by itself later; every call is bounded in
    /// time. An unreachable server is an error naming the URL (password
    /// redacted) and the `redis.url` setting; an unreadable TLS file names
    /// its key and path.
    pub async fn connect_with(config: &RedisConfig) -> Result<RedisStore, StoreError> {
        let shown_url = config.shown();
        let key = if !config.cluster.is_empty() {
            "redis.cluster / SCOREHUB_REDIS__CLUSTER"
        } else if !config.sentinels.is_empty() {
            "redis.sentinels / SCOREHUB_REDIS__SENTINELS"
        } else {
            "redis.url / SCOREHUB_REDIS__URL"
        };
        let unreachable = |detail: String| {
            StoreError::Unavailable(format!("redis: cannot reach {shown_url} ({key}): {detail}"))
        };
        let first = config
            .url
            .as_deref()
            .or(config.cluster.first().map(String::as_str))
            .unwrap_or_default();
        let mut sentinel = None;
        let client = if config.sentinels.is_empty() {
            open_client(first, &config.tls)?
        } else {
            let mut found = SentinelClient::build(
                config.sentinels.clone(),
                &config.sentinel_master,
                None,
                SentinelServerType::Master,
            )
            .map_err(|e| unreachable(e.to_string()))?;
            let client = match tokio::time::timeout(CALL_TIMEOUT, found.async_get_client()).await {
                Ok(Ok(client)) => client,
                Ok(Err(e)) => {
                    return Err(unreachable(format!("no primary from the Sentinels: {e}")));
                }
                Err(_) => return Err(unreachable(format!("no answer within {CALL_TIMEOUT:?}"))),
            };
            sentinel = Some(Arc::new(tokio::sync::Mutex::new(found)));
            client
        };
        let (conn, cluster) = if config.cluster.is_empty() {
            let connected = tokio::time::timeout(
                CALL_TIMEOUT,
                ConnectionManager::new_with_config(client.clone(), manager_config()),
            )
            .await;
            match connected {
                Ok(Ok(conn)) => (Conn::Single(conn), None),
                Ok(Err(e)) => return Err(unreachable(e.to_string())),
                Err(_) => return Err(unreachable(format!("no answer within {CALL_TIMEOUT:?}"))),
            }
        } else {
            let certificates = certificates(first, &config.tls)?;
            let cluster = conn::cluster_builder(&config.cluster, certificates.clone())
                .build()
                .map_err(|e| unreachable(e.to_string()))?;
            match tokio::time::timeout(CALL_TIMEOUT, cluster.get_async_connection()).await {
                Ok(Ok(conn)) => (
                    Conn::Cluster(conn),
                    Some((config.cluster.clone(), certificates)),
                ),
                Ok(Err(e)) => return Err(unreachable(e.to_string())),
                Err(_) => return Err(unreachable(format!("no answer within {CALL_TIMEOUT:?}"))),
            }
        };
        let names = Names::new(
            &config.prefix,
            client.get_connection_info().redis_settings().db(),
        );
        let store = RedisStore {
            client: Arc::new(RwLock::new(client)),
            sentinel,
            conn: Arc::new(RwLock::new(conn)),
            rebuilt: Arc::new(Mutex::new(None)),
            cluster,
            shown_url: shown_url.clone(),
            names,
            min_replicas_acked: config.min_replicas_acked,
            replica_ack_timeout: config.replica_ack_timeout,
            stream_max_len: config.stream_max_len,
            retention: Retention::default(),
        };
        match store.ping().await {
            Ok(()) => Ok(store),
            Err(StoreError::Unavailable(detail)) => Err(unreachable(detail)),
            Err(e) => Err(e),
        }
    }

    /// This store keeping finished games for `retention` (default: 7 days).
    pub fn with_retention(mut self, retention: Retention) -> RedisStore {
        self.retention = retention;
        self
    }

    /// When `state`, reached by a record at `at`, expires (Unix ms): `None`
    /// when it is not finished.
    fn expiry(&self, state: &GameState, at: i64) -> Option<i64> {
        Retention::finished_at(state.status, at).map(|f| self.retention.expires_at(f))
    }

    /// Whether Redis is a cluster (sharded pub/sub: `SPUBLISH`).
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// A new cluster connection for sharded pub/sub (RESP3) that hands
    /// every push (messages, unsubscriptions, disconnections) to `push`;
    /// `None` when Redis is one server.
    pub async fn cluster_pubsub(
        &self,
        push: tokio::sync::mpsc::UnboundedSender<::redis::PushInfo>,
    ) -> Option<RedisResult<::redis::cluster_async::ClusterConnection>> {
        let (seeds, certificates) = self.cluster.as_ref()?;
        let built = conn::cluster_builder(seeds, certificates.clone())
            .use_protocol(::redis::ProtocolVersion::RESP3)
            .push_sender(push)
            .build();
        Some(match built {
            Ok(client) => client.get_async_connection().await,
            Err(e) => Err(e),
        })
    }

    /// `SPUBLISH` on a cluster (the message reaches only the shard that owns
    /// the channel's slot), else `PUBLISH`.
    fn publish_command(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// How this deployment names its keys and channels.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The client of the current server, for opening a separate pub/sub
    /// connection (with Sentinels: of the primary they named last). On a
    /// cluster, a client of the first seed node.
    pub fn client(&self) -> Client {
        self.client
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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
        let expires = self.expiry(state, record.at());
        let record = rmp_serde::to_vec_named(record)
            .map_err(|e| bug(format!("game {id}: cannot encode the record: {e}")))?;
        // Listed first: a game that exists is always listed (`list` skips
        // listed ids without a state, left by a create that failed here).
        let mut zadd = ::redis::cmd("ZADD");
        zadd.arg(self.names.games()).arg(0).arg(id.as_str());
        let _: i64 = self
            .call(&format!("list game {id}"), |mut c| {
                let cmd = &zadd;
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        let mut eval = ::redis::cmd("EVALSHA");
        eval.arg(CREATE.get_hash())
            .arg(2)
            .arg(self.names.key(id, "state"))
            .arg(self.names.key(id, "meta"))
            .arg(state_json)
            .arg(hex(&fingerprint))
            .arg(record)
            .arg(if self.min_replicas_acked > 0 {
                "1"
            } else {
                "0"
            })
            .arg(expires.map(|e| e.to_string()).unwrap_or_default());
        let reply = self
            .eval_acked(id, &format!("create game {id}"), &CREATE, eval)
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
        if let (CreateOutcome::Created, Some(expires)) = (outcome, expires) {
            self.note_expiry(id, expires).await;
        }
        let announce = match outcome {
            CreateOutcome::Created => true,
            CreateOutcome::Exists { fingerprint: f } => f == fingerprint,
            CreateOutcome::Retired => false,
        };
        if announce {
            let mut publish = ::redis::cmd(self.publish_command());
            publish
                .arg(self.names.league_channel(&id.league()))
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
            .arg(self.names.key(id, "state"))
            .cmd("HMGET")
            .arg(self.names.key(id, "meta"))
            .arg("created_fp")
            .arg("lost");
        /// `created_fp` and `lost` of the meta hash.
        type Meta = (Option<Vec<u8>>, Option<u64>);
        let (state, (fp, lost)): (Option<Vec<u8>>, Meta) = self
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
            lost: lost.unwrap_or(0),
        }))
    }

    /// Records that a node had applied game `id` up to `seq` and Redis no
    /// longer holds that history (a failover or a restart lost writes):
    /// the game's `lost` mark becomes at least `seq`. Fans asking to resume
    /// at or below it get a snapshot, never diffs of the other history.
    pub async fn note_lost(&self, id: &GameId, seq: u64) -> Result<(), StoreError> {
        let mut eval = ::redis::cmd("EVALSHA");
        eval.arg(NOTE_LOST.get_hash())
            .arg(1)
            .arg(self.names.key(id, "meta"))
            .arg(seq);
        self.eval_acked(
            id,
            &format!("mark lost writes of game {id}"),
            &NOTE_LOST,
            eval,
        )
        .await
        .map(drop)
    }

    /// With `redis.min_replicas_acked = N`: returns once `N` replicas have
    /// everything written to game `id` so far, else
    /// [`StoreError::Unavailable`]. For duplicates a node answers from its
    /// own memory, without a commit (whose `WAIT` would cover them): the
    /// original may be on the primary only (its first answer was a `503`).
    /// Without `min_replicas_acked`, no command at all.
    pub async fn confirm(&self, id: &GameId) -> Result<(), StoreError> {
        if self.min_replicas_acked == 0 {
            return Ok(());
        }
        let mut eval = ::redis::cmd("EVAL");
        eval.arg(CONFIRM_LUA).arg(1).arg(self.names.key(id, "meta"));
        self.eval_acked(
            id,
            &format!("confirm duplicates of game {id}"),
            &CONFIRM,
            eval,
        )
        .await
        .map(drop)
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
        let expires = events.last().and_then(|e| self.expiry(state, e.at));
        let mut eval = ::redis::cmd("EVALSHA");
        eval.arg(COMMIT.get_hash())
            .arg(4)
            .arg(self.names.key(id, "state"))
            .arg(self.names.key(id, "meta"))
            .arg(self.names.key(id, "ids"))
            .arg(self.names.key(id, "log"))
            .arg(expected_seq)
            .arg(state_json)
            .arg(self.names.game_channel(id))
            .arg(events.len())
            .arg(self.stream_max_len)
            .arg(if self.min_replicas_acked > 0 {
                "1"
            } else {
                "0"
            })
            .arg(self.publish_command())
            .arg(expires.map(|e| e.to_string()).unwrap_or_default());
        for e in events {
            eval.arg(e.event_id.as_str())
                .arg(hex(&e.fingerprint))
                .arg(e.frame.as_ref())
                .arg(e.record.as_slice());
        }
        let reply = self
            .eval_acked(id, &format!("commit to game {id}"), &COMMIT, eval)
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
        let commit = parsed.ok_or_else(|| bad_reply(id, "commit", &reply))?;
        if let (Commit::Applied { .. }, Some(expires)) = (commit, expires) {
            self.note_expiry(id, expires).await;
        }
        Ok(commit)
    }

    /// Enters a finished game in `<prefix>:expiring` (score: its expiry), so
    /// [`RedisStore::sweep_expired`] takes it out of `<prefix>:games` once
    /// its keys are gone.
    ///
    /// A command of its own after the game's script: on a cluster the set
    /// lives in another slot than the game's keys. A node that dies (or a
    /// Redis that fails) in between leaves the game out of the set: its
    /// keys still expire on time, and only its id stays in the games index,
    /// where listing skips it (an id without a state key, like a create
    /// that failed half-way). So a failure here is logged, not returned:
    /// the commit itself is applied.
    async fn note_expiry(&self, id: &GameId, expires: i64) {
        let mut zadd = ::redis::cmd("ZADD");
        zadd.arg(self.names.expiring())
            .arg(expires)
            .arg(id.as_str());
        let added: Result<i64, StoreError> = self
            .call(&format!("note the expiry of game {id}"), |mut c| {
                let cmd = &zadd;
                async move { cmd.query_async(&mut c).await }
            })
            .await;
        if let Err(e) = added {
            tracing::warn!(game = %id, error = %e, "cannot enter a finished game in the expiring set; its keys still expire, its id stays listed (and skipped)");
        }
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
        cmd.arg(self.names.key(id, "ids"));
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
        cmd.arg(self.names.key(id, "log"))
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
        self.sweep_before_listing().await;
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
            let states = self.states_of(&ids).await?;
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

    /// Reports that node `node` has `fans` fans of each game of `counts`
    /// (0 withdraws its report), each report living `ttl`, and answers
    /// each game's count over every node whose report is still alive, in
    /// order. One pipeline on one server; on a cluster, where a pipeline
    /// stays within one slot, one script call per game (on the game's
    /// shard), all in flight at once over the cluster connection.
    pub async fn occupancy(
        &self,
        node: &str,
        ttl: Duration,
        counts: &[(GameId, u64)],
    ) -> Result<Vec<u64>, StoreError> {
        if counts.is_empty() {
            return Ok(Vec::new());
        }
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let eval = |id: &GameId, fans: u64| {
            let mut eval = ::redis::cmd("EVALSHA");
            eval.arg(OCCUPANCY.get_hash())
                .arg(1)
                .arg(self.names.key(id, "occ"))
                .arg(node)
                .arg(fans)
                .arg(ttl_ms);
            eval
        };
        if self.is_cluster() {
            let calls = counts.iter().map(|(id, fans)| {
                let eval = eval(id, *fans);
                async move {
                    self.call_script("report occupancy", &OCCUPANCY, |mut c| {
                        let eval = &eval;
                        async move { eval.query_async::<u64>(&mut c).await }
                    })
                    .await
                }
            });
            return futures_util::future::try_join_all(calls).await;
        }
        let mut pipe = ::redis::pipe();
        for (id, fans) in counts {
            pipe.add_command(eval(id, *fans));
        }
        self.call_script("report occupancy", &OCCUPANCY, |mut c| {
            let pipe = &pipe;
            async move { pipe.query_async::<Vec<u64>>(&mut c).await }
        })
        .await
    }

    /// The stored states of `ids` (read back from the games index), in
    /// order: one pipeline on one server; on a cluster, where a pipeline
    /// stays within one slot, one `GET` per game, all in flight at once.
    async fn states_of(&self, ids: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if self.is_cluster() {
            let gets = ids.iter().map(|id| {
                let mut get = ::redis::cmd("GET");
                get.arg(self.names.key_of(id, "state"));
                async move {
                    self.call("read game states", |mut c| {
                        let get = &get;
                        async move { get.query_async::<Option<Vec<u8>>>(&mut c).await }
                    })
                    .await
                }
            });
            return futures_util::future::try_join_all(gets).await;
        }
        let mut pipe = ::redis::pipe();
        for id in ids {
            pipe.cmd("GET").arg(self.names.key_of(id, "state"));
        }
        self.call("read game states", |mut c| {
            let pipe = &pipe;
            async move { pipe.query_async(&mut c).await }
        })
        .await
    }

    /// The ids of every game of `league`, in order. An id whose create failed
    /// half-way may be among them (its [`RedisStore::load`] gives `None`).
    pub async fn league_games(&self, league: &League) -> Result<Vec<GameId>, StoreError> {
        self.sweep_before_listing().await;
        let (lo, hi) = league_range(Some(league));
        let (lo, hi) = (lo.unwrap_or_default(), hi.unwrap_or_default());
        let mut cmd = ::redis::cmd("ZRANGE");
        cmd.arg(self.names.games()).arg(lo).arg(hi).arg("BYLEX");
        let ids: Vec<String> = self
            .call(&format!("list the games of league {league}"), |mut c| {
                let cmd = &cmd;
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        Ok(ids.iter().filter_map(|id| GameId::parse(id).ok()).collect())
    }

    /// [`RedisStore::sweep_expired`], whose failure only costs listing a few
    /// ids it skips anyway (their state keys are gone).
    async fn sweep_before_listing(&self) {
        if let Err(e) = self.sweep_expired().await {
            tracing::warn!(error = %e, "cannot sweep expired games out of the games index");
        }
    }

    /// Takes games whose keys have expired out of `<prefix>:games`, so the
    /// index follows the games kept, not every game ever created; answers
    /// how many. Examines at most `SWEEP_BATCH` (100) entries of
    /// `<prefix>:expiring` that are due by this node's clock; Redis's own
    /// clock decides (a game counts as gone once its state key is).
    ///
    /// Each due entry ends one of three ways: the game is gone (its id
    /// leaves both sets); it was reopened (no `expires` in its meta hash:
    /// the entry goes); or it expires later than the entry says (a commit
    /// finished it again: the entry moves). An entry is removed only while
    /// its score is the one read, so one a commit just moved stays. A game
    /// created again under the same id while its id is being removed is
    /// listed again at once, unless its creation lands between the check
    /// that finds it again and the removal; then it stays unlisted until
    /// its `PUT` is repeated (which lists it again).
    pub async fn sweep_expired(&self) -> Result<usize, StoreError> {
        let mut range = ::redis::cmd("ZRANGE");
        range
            .arg(self.names.expiring())
            .arg("-inf")
            .arg(unix_now_ms())
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(SWEEP_BATCH)
            .arg("WITHSCORES");
        let due: Vec<(String, String)> = self
            .call("read the expiring games", |mut c| {
                let cmd = &range;
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&str> = due.iter().map(|(id, _)| id.as_str()).collect();
        let found = self.expiry_of(&ids).await?;
        let mut gone = Vec::new();
        let mut settled = Vec::new();
        let mut moved = Vec::new();
        for ((id, score), (exists, expires)) in due.iter().zip(found) {
            match (exists, expires) {
                (false, _) => {
                    gone.push(id.as_str());
                    settled.push((id.as_str(), score.as_str()));
                }
                // Finished again later; or not yet expired by Redis's clock.
                (true, Some(expires)) if expires != *score => moved.push((id.as_str(), expires)),
                (true, Some(_)) => {}
                (true, None) => settled.push((id.as_str(), score.as_str())),
            }
        }
        if !gone.is_empty() {
            let mut zrem = ::redis::cmd("ZREM");
            zrem.arg(self.names.games()).arg(&gone);
            let _: i64 = self
                .call("unlist expired games", |mut c| {
                    let cmd = &zrem;
                    async move { cmd.query_async(&mut c).await }
                })
                .await?;
            // Created again under the same id meanwhile: list it again.
            let again = self.expiry_of(&gone).await?;
            let back: Vec<&str> = gone
                .iter()
                .zip(again)
                .filter(|(_, (exists, _))| *exists)
                .map(|(id, _)| *id)
                .collect();
            if !back.is_empty() {
                let mut zadd = ::redis::cmd("ZADD");
                zadd.arg(self.names.games());
                for id in &back {
                    zadd.arg(0).arg(*id);
                }
                let _: i64 = self
                    .call("list games created again", |mut c| {
                        let cmd = &zadd;
                        async move { cmd.query_async(&mut c).await }
                    })
                    .await?;
            }
        }
        if !moved.is_empty() {
            let mut zadd = ::redis::cmd("ZADD");
            zadd.arg(self.names.expiring());
            for (id, expires) in &moved {
                zadd.arg(expires.as_str()).arg(*id);
            }
            let _: i64 = self
                .call("move expiring games", |mut c| {
                    let cmd = &zadd;
                    async move { cmd.query_async(&mut c).await }
                })
                .await?;
        }
        if !settled.is_empty() {
            let mut eval = ::redis::cmd("EVALSHA");
            eval.arg(ZREM_IF_SCORE.get_hash())
                .arg(1)
                .arg(self.names.expiring());
            for (id, score) in &settled {
                eval.arg(*id).arg(*score);
            }
            let _: i64 = self
                .call_script("drop settled expiring entries", &ZREM_IF_SCORE, |mut c| {
                    let eval = &eval;
                    async move { eval.query_async(&mut c).await }
                })
                .await?;
        }
        Ok(gone.len())
    }

    /// For each of `ids` (read back from an index): whether its state key
    /// exists, and the `expires` of its meta hash. One pipeline on one
    /// server; on a cluster one per game (its keys share a slot), all in
    /// flight at once.
    async fn expiry_of(&self, ids: &[&str]) -> Result<Vec<(bool, Option<String>)>, StoreError> {
        let pipe_of = |pipe: &mut ::redis::Pipeline, id: &str| {
            pipe.cmd("EXISTS")
                .arg(self.names.key_of(id, "state"))
                .cmd("HGET")
                .arg(self.names.key_of(id, "meta"))
                .arg("expires");
        };
        if self.is_cluster() {
            let reads = ids.iter().map(|id| {
                let mut pipe = ::redis::pipe();
                pipe_of(&mut pipe, id);
                async move {
                    self.call("read game expiries", |mut c| {
                        let pipe = &pipe;
                        async move { pipe.query_async::<(bool, Option<String>)>(&mut c).await }
                    })
                    .await
                }
            });
            return futures_util::future::try_join_all(reads).await;
        }
        let mut pipe = ::redis::pipe();
        for id in ids {
            pipe_of(&mut pipe, id);
        }
        let flat: Vec<(bool, Option<String>)> = self
            .call("read game expiries", |mut c| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut c).await }
            })
            .await?;
        Ok(flat)
    }

    /// Up to `count` ids of `sh:games` in the lexicographic range `min`..`max`.
    async fn ids_in_range(
        &self,
        min: &str,
        max: &str,
        count: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut cmd = ::redis::cmd("ZRANGE");
        cmd.arg(self.names.games())
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

    /// The current connection (clones share its sockets).
    fn conn(&self) -> Conn {
        self.conn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Follows a change of who serves: on a cluster, [`RedisStore::rebuild_cluster`];
    /// with Sentinels, [`RedisStore::follow_primary`]; else nothing (the
    /// connection reconnects to its one address by itself).
    async fn follow_topology(&self) {
        if self.cluster.is_some() {
            self.rebuild_cluster().await;
        } else if self.sentinel.is_some() {
            self.follow_primary().await;
        }
    }

    /// Whether a rebuild may run now (at most one per [`REBUILD_INTERVAL`]).
    fn may_rebuild(&self) -> bool {
        let mut last = self.rebuilt.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < REBUILD_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// With Sentinels: asks them for the current primary and, when it moved
    /// (a failover), connects to the new one and uses it from now on (the
    /// pub/sub link follows through [`RedisStore::client`]). At most once
    /// per [`REBUILD_INTERVAL`].
    async fn follow_primary(&self) {
        let Some(sentinel) = &self.sentinel else {
            return;
        };
        if !self.may_rebuild() {
            return;
        }
        let asked = tokio::time::timeout(CONNECT_TIMEOUT * 2, async {
            sentinel.lock().await.async_get_client().await
        })
        .await;
        let client = match asked {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                tracing::warn!("redis sentinel: no primary named yet: {e}");
                return;
            }
            Err(_) => {
                tracing::warn!("redis sentinel: no answer within {:?}", CONNECT_TIMEOUT * 2);
                return;
            }
        };
        let addr = client.get_connection_info().addr().to_string();
        if self.client().get_connection_info().addr().to_string() == addr {
            return;
        }
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT * 2,
            ConnectionManager::new_with_config(client.clone(), manager_config()),
        )
        .await;
        match connected {
            Ok(Ok(conn)) => {
                *self.conn.write().unwrap_or_else(PoisonError::into_inner) = Conn::Single(conn);
                *self.client.write().unwrap_or_else(PoisonError::into_inner) = client;
                tracing::info!(primary = %addr, "redis sentinel: following the new primary");
            }
            Ok(Err(e)) => {
                tracing::warn!(primary = %addr, "redis sentinel: cannot reach the new primary yet: {e}")
            }
            Err(_) => {
                tracing::warn!(primary = %addr, "redis sentinel: the new primary does not answer yet")
            }
        }
    }

    /// On a cluster: connects anew from the seed nodes, which reads the slot
    /// map again, and uses that connection from now on. The client follows
    /// `MOVED` by itself, but when a primary dies it keeps reconnecting to
    /// the dead address and never learns that a replica took over. At most
    /// once per [`REBUILD_INTERVAL`]; a failed attempt keeps the old one.
    async fn rebuild_cluster(&self) {
        let Some((seeds, certificates)) = &self.cluster else {
            return;
        };
        if !self.may_rebuild() {
            return;
        }
        let client = match conn::cluster_builder(seeds, certificates.clone()).build() {
            Ok(client) => client,
            Err(e) => {
                tracing::warn!("redis cluster: cannot rebuild the client: {e}");
                return;
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, client.get_async_connection()).await {
            Ok(Ok(conn)) => {
                *self.conn.write().unwrap_or_else(PoisonError::into_inner) = Conn::Cluster(conn);
                tracing::info!("redis cluster: reconnected from the seed nodes (slot map reread)");
            }
            Ok(Err(e)) => tracing::warn!("redis cluster: cannot reconnect from the seeds yet: {e}"),
            Err(_) => tracing::warn!(
                "redis cluster: no answer from the seeds within {:?}",
                CONNECT_TIMEOUT * 2
            ),
        }
    }

    /// Runs `op` on the shared connection within [`CALL_TIMEOUT`], once more
    /// when the connection had dropped (the retry waits for the reconnect).
    ///
    /// Retrying a write is safe: when the first attempt landed and only its
    /// answer was lost, the scripts find the game or the events and change
    /// nothing.
    async fn call<T, F, Fut>(&self, what: &str, op: F) -> Result<T, StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = Instant::now() + CALL_TIMEOUT;
        let mut retried = false;
        loop {
            match tokio::time::timeout_at(deadline, op(self.conn())).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if !retried && dropped(&e) => {
                    retried = true;
                    self.follow_topology().await;
                }
                Ok(Err(e)) if self.is_cluster() && !retried && !answered(&e) => {
                    retried = true;
                    self.follow_topology().await;
                }
                Ok(Err(e)) if self.sentinel.is_some() && !retried && read_only(&e) => {
                    // A demoted primary: ask the Sentinels for the new one.
                    retried = true;
                    self.follow_topology().await;
                }
                Ok(Err(e)) => {
                    return Err(StoreError::Unavailable(format!(
                        "redis: {what} at {}: {e}",
                        self.shown_url
                    )));
                }
                Err(_) => {
                    if self.is_cluster() || self.sentinel.is_some() {
                        // A server that stopped answering may have been
                        // replaced: look again, off this call.
                        let store = self.clone();
                        tokio::spawn(async move { store.follow_topology().await });
                    }
                    return Err(StoreError::Unavailable(format!(
                        "redis: {what} at {}: no answer within {CALL_TIMEOUT:?}",
                        self.shown_url
                    )));
                }
            }
        }
    }
}

impl RedisStore {
    /// Runs `eval` (an `EVALSHA` of `script` that writes to `game`) and,
    /// with `redis.min_replicas_acked`, a `WAIT` in the same pipeline; a
    /// reply other than `missing` or `stale` that too few replicas confirmed
    /// is an error (what it wrote may be applied: the caller's retry, with
    /// the same ids, waits again).
    async fn eval_acked(
        &self,
        game: &GameId,
        what: &str,
        script: &Script,
        eval: ::redis::Cmd,
    ) -> Result<Value, StoreError> {
        if self.min_replicas_acked == 0 {
            return self
                .call_script(what, script, |mut c| {
                    let eval = &eval;
                    async move { eval.query_async::<Value>(&mut c).await }
                })
                .await;
        }
        let mut pipe = ::redis::pipe();
        pipe.add_command(eval)
            .cmd("WAIT")
            .arg(self.min_replicas_acked)
            .arg(self.replica_ack_timeout.as_millis() as u64);
        let (reply, acked): (Value, u64) = self
            .call_script(what, script, |mut c| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut c).await }
            })
            .await?;
        let wrote = !matches!(reply_tag(&reply), Some((b"missing" | b"stale", _)));
        if wrote && acked < u64::from(self.min_replicas_acked) {
            return Err(StoreError::Unavailable(format!(
                "redis: game {game}: only {acked} of the {} replicas required by \
                 redis.min_replicas_acked confirmed within {:?}; it may be applied, \
                 retry with the same event_id (or the same PUT)",
                self.min_replicas_acked, self.replica_ack_timeout
            )));
        }
        Ok(reply)
    }

    /// [`RedisStore::call`] for an `op` that runs `script` by its hash
    /// (`EVALSHA`): when Redis does not have the script, it is loaded and
    /// `op` runs once more.
    async fn call_script<T, F, Fut>(
        &self,
        what: &str,
        script: &Script,
        op: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.call(what, |c| {
            let op = &op;
            async move {
                let mut c = c;
                match op(c.clone()).await {
                    Err(e) if no_script(&e) => {
                        script.load_async(&mut c).await?;
                        op(c).await
                    }
                    other => other,
                }
            }
        })
        .await
    }
}

/// The client for `url`, with the certificates of `tls` for a `rediss://`
/// URL. Errors name the key to fix.
fn open_client(url: &str, tls: &RedisTls) -> Result<Client, StoreError> {
    let shown_url = redact_url(url);
    let bad_url = |e: RedisError| {
        StoreError::Unavailable(format!(
            "redis: {shown_url} is not a usable Redis URL ({e}); expected \
             redis://[:password@]host:port/db or rediss://… for TLS"
        ))
    };
    match certificates(url, tls)? {
        None => Client::open(url).map_err(bad_url),
        Some(certificates) => Client::build_with_tls(url, certificates).map_err(|e| {
            StoreError::Unavailable(format!(
                "redis: the TLS files of redis.ca_file / redis.client_cert / redis.client_key \
                 are not usable PEM ({e})"
            ))
        }),
    }
}

/// The certificates of `tls` for a `rediss://` `url` (installing the TLS
/// crypto provider); `None` without TLS or without certificate files.
fn certificates(url: &str, tls: &RedisTls) -> Result<Option<::redis::TlsCertificates>, StoreError> {
    if !url.to_ascii_lowercase().starts_with("rediss://") {
        return Ok(None);
    }
    install_crypto_provider();
    if tls.ca_file.is_none() && tls.client_cert.is_none() {
        return Ok(None);
    }
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            StoreError::Unavailable(format!(
                "redis: cannot read redis.{key} {}: {e}",
                path.display()
            ))
        })
    };
    let root_cert = tls
        .ca_file
        .as_deref()
        .map(|p| read("ca_file", p))
        .transpose()?;
    let client_tls = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => Some(::redis::ClientTlsConfig {
            client_cert: read("client_cert", cert)?,
            client_key: read("client_key", key)?,
        }),
        _ => None,
    };
    Ok(Some(::redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// Makes `ring` the process's TLS crypto provider, unless one is set (the
/// Redis client asks rustls for the default one).
///
/// rustls deprecates `ring` for lacking post-quantum key exchange; its
/// alternative, aws-lc-rs, needs a C build that a bare machine with only
/// the Rust toolchain cannot do. Classical TLS 1.2/1.3 is what Redis
/// servers and managed services speak today.
#[allow(deprecated)]
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Whether `e` is Redis answering that it does not have a script loaded
/// (after a restart, a failover, or `SCRIPT FLUSH`).
fn no_script(e: &RedisError) -> bool {
    e.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::NoScript)
}

/// Whether `e` is a replica refusing a write (`READONLY`): the server was
/// a primary and is not any more.
fn read_only(e: &RedisError) -> bool {
    e.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::ReadOnly)
}

/// How the connection to one server reconnects and times out.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(RECONNECT_RETRIES)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
}

/// Whether `e` is an answer of a Redis server (as opposed to the client
/// failing to get one).
fn answered(e: &RedisError) -> bool {
    matches!(e.kind(), ::redis::ErrorKind::Server(_))
}

/// Whether `e` means the connection is gone (a retry reconnects).
fn dropped(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// The `ZRANGE … BYLEX` bounds of a league's ids in `sh:games`:
/// `[nba:` … `(nba;`. `(None, None)` without a league.
fn league_range(league: Option<&League>) -> (Option<String>, Option<String>) {
    match league {
        Some(l) => (Some(format!("[{l}:")), Some(format!("({l};"))),
        None => (None, None),
    }
}

/// This node's time, Unix ms.
fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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
