//! The transport of the Redis Cluster backend: sharded pub/sub.
//!
//! Frames are published with `SPUBLISH` from the commit script, on the
//! shard that owns the game's slot (its channel shares the game's hash tag),
//! and reach only the nodes of that shard; this node `SSUBSCRIBE`s a game's
//! channel, on that shard, while the game is loaded here, and a league's
//! channel while a local fan watches the league.
//!
//! The [`ShardBus`] holds one cluster connection used for nothing but
//! subscriptions (RESP3; every push comes through one channel). The client
//! resubscribes a node's channels after it reconnects, but when a slot
//! moves (resharding, failover) the server *drops* its subscribers with an
//! unsolicited `SUNSUBSCRIBE`, and the client forgets the channel. So the
//! bus subscribes again every channel it still routes that the server
//! dropped, one per call (the client then follows `MOVED` to the new
//! owner), and asks the game to repair from its stream whatever was
//! published in between. After a lost connection, every game repairs; and
//! for a few seconds after any such disturbance every game repairs each
//! second, as the client's idea of which node owns a channel can lag the
//! cluster's while a failover settles.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use ::redis::cluster_async::ClusterConnection;
use ::redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::health::Pinging;
use super::routes::Routes;
use crate::backend::{BoxFuture, FrameSink, Transport, Unready};
use crate::domain::{GameId, League};
use crate::metrics as m;
use crate::store::StoreError;
use crate::store::redis::RedisStore;

/// Longest wait for one `SSUBSCRIBE` (redirects included).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after a disturbance of the subscriptions every game repairs
/// each second.
const SETTLE: Duration = Duration::from_secs(15);
/// Rounds of one resync before it gives up (the health task starts
/// another while the cluster answers pings).
const RESYNC_ATTEMPTS: u32 = 8;
/// Most attempts to subscribe a channel again after the server dropped it.
const RESUBSCRIBE_ATTEMPTS: u32 = 20;

/// This node's sharded pub/sub link to the other nodes.
pub(crate) struct ShardBus {
    store: Arc<RedisStore>,
    /// Replaced when the cluster changed under it (a primary died).
    conn: RwLock<ClusterConnection>,
    /// Where the pushes of every connection go.
    push: mpsc::UnboundedSender<PushInfo>,
    routes: Routes,
    /// Set while a resync runs (one at a time).
    resyncing: AtomicBool,
    /// When the subscriptions were last disturbed (a dropped connection or
    /// channel): for [`SETTLE`] after it, every game repairs each second.
    disturbed: Mutex<Option<Instant>>,
    /// False from a lost connection until every channel is subscribed again.
    subscribed: AtomicBool,
    pinging: Pinging,
}

impl std::fmt::Debug for ShardBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardBus")
            .field("store", &self.store)
            .field("channels", &self.routes.len())
            .finish_non_exhaustive()
    }
}

impl ShardBus {
    /// Opens the subscription connection and starts the push and health
    /// tasks on `tasks`, until `shutdown`. Ids of games created in followed
    /// leagues go to `created`.
    pub(crate) async fn start(
        store: Arc<RedisStore>,
        created: mpsc::Sender<GameId>,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Arc<ShardBus>, StoreError> {
        let (push, pushes) = mpsc::unbounded_channel();
        let conn = match store.cluster_pubsub(push.clone()).await {
            Some(Ok(conn)) => conn,
            Some(Err(e)) => {
                return Err(StoreError::Unavailable(format!(
                    "redis: cannot open the sharded pub/sub connection to {}: {e}",
                    store.url()
                )));
            }
            None => {
                return Err(StoreError::Unavailable(
                    "redis: sharded pub/sub needs redis.cluster (a bug: the cluster transport \
                     was built for one server)"
                        .into(),
                ));
            }
        };
        let bus = Arc::new(ShardBus {
            store,
            conn: RwLock::new(conn),
            push,
            routes: Routes::new(created),
            resyncing: AtomicBool::new(false),
            disturbed: Mutex::new(None),
            subscribed: AtomicBool::new(true),
            pinging: Pinging::new(),
        });
        tasks.spawn(run_pushes(
            Arc::downgrade(&bus),
            pushes,
            shutdown.clone(),
            tasks.clone(),
        ));
        tasks.spawn(run_health(Arc::downgrade(&bus), shutdown, tasks.clone()));
        Ok(bus)
    }

    /// Notes that subscriptions may have missed frames just now.
    fn disturb(&self) {
        *self
            .disturbed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// Whether the subscriptions were disturbed within [`SETTLE`].
    fn settling(&self) -> bool {
        self.disturbed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|t| t.elapsed() < SETTLE)
    }

    fn conn(&self) -> ClusterConnection {
        self.conn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Opens a new subscription connection from the seed nodes (the slot map
    /// read again) and uses it from now on; the old one's subscriptions die
    /// with it.
    async fn reconnect(&self) {
        match self.store.cluster_pubsub(self.push.clone()).await {
            Some(Ok(conn)) => {
                *self.conn.write().unwrap_or_else(PoisonError::into_inner) = conn;
                tracing::info!("sharded pub/sub reconnected from the seed nodes");
            }
            Some(Err(e)) => tracing::warn!("sharded pub/sub cannot reconnect yet: {e}"),
            None => {}
        }
    }

    async fn ssubscribe(&self, channel: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        super::subscribe_within(
            "SSUBSCRIBE",
            channel,
            SUBSCRIBE_TIMEOUT,
            conn.ssubscribe(channel),
        )
        .await
    }

    async fn sunsubscribe(&self, channel: String) {
        self.routes.remove(&channel);
        let mut conn = self.conn();
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, conn.sunsubscribe(&channel)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(%channel, "SUNSUBSCRIBE failed: {e}"),
            Err(_) => tracing::debug!(%channel, "no answer to SUNSUBSCRIBE"),
        }
    }

    /// The server dropped `channel` (its slot moved): subscribe it again
    /// while it is routed, then have its game repair the gap.
    async fn resubscribe(&self, channel: String) {
        let mut backoff = Duration::from_millis(50);
        for attempt in 1..=RESUBSCRIBE_ATTEMPTS {
            if !self.routes.contains(&channel) {
                return;
            }
            match self.ssubscribe(&channel).await {
                Ok(()) => {
                    tracing::info!(%channel, attempt, "shard channel subscribed again after its slot moved");
                    if let Some(sink) = self.routes.game_sink(&channel) {
                        sink.repair().await;
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(%channel, attempt, "cannot subscribe again yet: {e}");
                    if attempt % 3 == 0 {
                        self.reconnect().await;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        tracing::error!(%channel, "gave up subscribing again; the game repairs on its next event");
    }

    /// After a lost connection: subscribe every routed channel again (the
    /// client may have done so; twice is harmless), reconnecting from the
    /// seeds until that works (a dead primary's replica takes a few seconds
    /// to be promoted), then repair every game. Ready again once done.
    async fn resync(&self) {
        if self.resyncing.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut backoff = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut failed = None;
            for channel in self.routes.channels() {
                if let Err(e) = self.ssubscribe(&channel).await {
                    failed = Some(e);
                    break;
                }
            }
            let Some(e) = failed else { break };
            tracing::warn!(attempt, "sharded pub/sub cannot resubscribe yet: {e}");
            if attempt == RESYNC_ATTEMPTS {
                // The health task starts another round while Redis answers.
                self.resyncing.store(false, Ordering::Release);
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            self.reconnect().await;
        }
        for sink in self.routes.game_sinks() {
            sink.repair().await;
        }
        self.subscribed.store(true, Ordering::Relaxed);
        self.resyncing.store(false, Ordering::Release);
        tracing::info!(channels = self.routes.len(), "sharded pub/sub resubscribed");
    }
}

impl Transport for ShardBus {
    fn follow_game<'a>(
        &'a self,
        game: &'a GameId,
        sink: Arc<dyn FrameSink>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let channel = self.store.names().game_channel(game);
        self.routes.follow_game(channel.clone(), sink);
        Box::pin(async move { self.ssubscribe(&channel).await })
    }

    fn unfollow_game<'a>(&'a self, game: &'a GameId) -> BoxFuture<'a, ()> {
        Box::pin(self.sunsubscribe(self.store.names().game_channel(game)))
    }

    fn follow_league<'a>(&'a self, league: &'a League) -> BoxFuture<'a, Result<(), StoreError>> {
        let channel = self.store.names().league_channel(league);
        self.routes.follow_league(channel.clone());
        Box::pin(async move { self.ssubscribe(&channel).await })
    }

    fn unfollow_league<'a>(&'a self, league: &'a League) -> BoxFuture<'a, ()> {
        Box::pin(self.sunsubscribe(self.store.names().league_channel(league)))
    }

    fn readiness(&self) -> Result<(), Unready> {
        if !self.pinging.up() {
            return Err(Unready::RedisUnreachable("Redis Cluster"));
        }
        if !self.subscribed.load(Ordering::Relaxed) {
            return Err(Unready::Resubscribing);
        }
        Ok(())
    }
}

/// The bytes of a push's `i`-th value.
fn bytes_at(push: &PushInfo, i: usize) -> Option<&[u8]> {
    match push.data.get(i)? {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// Routes every push of the subscription connection.
async fn run_pushes(
    bus: std::sync::Weak<ShardBus>,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let push = tokio::select! {
            push = pushes.recv() => match push {
                Some(push) => push,
                None => return,
            },
            () = shutdown.cancelled() => return,
        };
        let Some(b) = bus.upgrade() else { return };
        match push.kind {
            PushKind::SMessage => {
                if let (Some(channel), Some(payload)) = (bytes_at(&push, 0), bytes_at(&push, 1))
                    && let Ok(channel) = std::str::from_utf8(channel)
                {
                    b.routes.deliver(channel, payload);
                }
            }
            PushKind::SUnsubscribe => {
                // Ours (unfollow) come for channels no longer routed; a
                // routed one was dropped by the server.
                let channel = bytes_at(&push, 0)
                    .and_then(|c| std::str::from_utf8(c).ok())
                    .map(str::to_owned);
                if let Some(channel) = channel.filter(|c| b.routes.contains(c)) {
                    b.disturb();
                    tracing::info!(%channel, "Redis dropped a shard channel (slot moved)");
                    let weak = bus.clone();
                    tasks.spawn(async move {
                        if let Some(b) = weak.upgrade() {
                            b.resubscribe(channel).await;
                        }
                    });
                }
            }
            PushKind::Disconnection => {
                tracing::warn!("a sharded pub/sub connection dropped; resubscribing");
                b.subscribed.store(false, Ordering::Relaxed);
                b.disturb();
                let weak = bus.clone();
                tasks.spawn(async move {
                    // Give the client a moment to reconnect the node.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if let Some(b) = weak.upgrade() {
                        b.resync().await;
                    }
                });
            }
            _ => {}
        }
    }
}

/// Pings the cluster every second; drives `scorehub_redis_up` and readiness.
async fn run_health(
    bus: std::sync::Weak<ShardBus>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let Some(b) = bus.upgrade() else { return };
        let ok = b.pinging.check(&b.store, "Redis Cluster").await;
        let subscribed = b.subscribed.load(Ordering::Relaxed);
        if subscribed && b.settling() {
            // While a failover or a slot move settles, the client's view of
            // who owns a channel can lag the cluster's: a frame published
            // meanwhile may reach no subscription, and no later frame may
            // reveal the gap. A repair finds it in the stream (cheap when
            // there is none).
            for sink in b.routes.game_sinks() {
                sink.repair().await;
            }
        }
        if !subscribed && ok && !b.resyncing.load(Ordering::Acquire) {
            let weak = bus.clone();
            tasks.spawn(async move {
                if let Some(b) = weak.upgrade() {
                    b.resync().await;
                }
            });
        }
        let up = ok && subscribed;
        metrics::gauge!(m::REDIS_UP).set(if up { 1.0 } else { 0.0 });
    }
}
