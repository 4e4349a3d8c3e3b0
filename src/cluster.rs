//! Links nodes through Redis pub/sub (cluster mode).
//!
//! The [`Bus`] holds this node's one pub/sub connection. Subscriptions follow
//! interest: a game's channel is subscribed while the game is loaded here (a
//! fan watches it or it was used recently), a league's channel while a local
//! fan watches the league; nothing is pattern-subscribed. Published frames are
//! routed to the game's actor mailbox without waiting; a full mailbox turns
//! into a repair request (the actor catches up from the game's stream).
//!
//! When the connection drops, the bus reconnects with jittered backoff,
//! subscribes every channel again and asks every local game to repair any gap.
//! A health task pings Redis every second and drives `scorehub_redis_up` and
//! readiness.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use futures_util::StreamExt;
use redis::aio::PubSubSink;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use crate::domain::{GameId, League};
use crate::game::Mailbox;
use crate::metrics as m;
use crate::store::StoreError;
use crate::store::redis::RedisStore;

/// Where a channel's messages go.
#[derive(Debug, Clone)]
enum Route {
    /// Diff frames of one game → its actor; the flag is set while a repair
    /// request waits for room in the mailbox (one is enough).
    Game(Mailbox, Arc<AtomicBool>),
    /// Ids of games created in a league → the registry.
    League,
}

/// This node's pub/sub link to the other nodes.
#[derive(Debug)]
pub struct Bus {
    store: Arc<RedisStore>,
    sink: Mutex<Option<PubSubSink>>,
    routes: DashMap<String, Route>,
    subscribed: AtomicBool,
    pinging: AtomicBool,
    created: mpsc::Sender<GameId>,
}

impl Bus {
    /// Starts the pub/sub connection task and the health task. Ids of games
    /// created in watched leagues are sent to `created`.
    pub fn start(
        store: Arc<RedisStore>,
        created: mpsc::Sender<GameId>,
        shutdown: CancellationToken,
    ) -> Arc<Bus> {
        let bus = Arc::new(Bus {
            store,
            sink: Mutex::new(None),
            routes: DashMap::new(),
            subscribed: AtomicBool::new(false),
            pinging: AtomicBool::new(true),
            created,
        });
        tokio::spawn(run_pubsub(Arc::downgrade(&bus), shutdown.clone()));
        tokio::spawn(run_health(Arc::downgrade(&bus), shutdown));
        bus
    }

    /// `Ok` when events can be accepted: Redis answers pings and the pub/sub
    /// link is up.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.pinging.load(Ordering::Relaxed) {
            return Err("Redis is unreachable".into());
        }
        if !self.subscribed.load(Ordering::Relaxed) {
            return Err("the Redis pub/sub link is down; reconnecting".into());
        }
        Ok(())
    }

    /// Routes `id`'s frames to `mailbox` and subscribes its channel. Returns
    /// once Redis confirmed the subscription (or the link is down: then the
    /// reconnect subscribes it).
    pub async fn subscribe_game(&self, id: &GameId, mailbox: Mailbox) -> Result<(), StoreError> {
        let channel = RedisStore::game_channel(id);
        self.routes.insert(
            channel.clone(),
            Route::Game(mailbox, Arc::new(AtomicBool::new(false))),
        );
        self.subscribe(channel).await
    }

    /// Stops routing and unsubscribes `id`'s channel.
    pub async fn unsubscribe_game(&self, id: &GameId) {
        self.unsubscribe(RedisStore::game_channel(id)).await;
    }

    /// Subscribes the channel announcing games created in `league`.
    pub async fn subscribe_league(&self, league: &League) -> Result<(), StoreError> {
        let channel = RedisStore::league_channel(league);
        self.routes.insert(channel.clone(), Route::League);
        self.subscribe(channel).await
    }

    /// Unsubscribes `league`'s channel.
    pub async fn unsubscribe_league(&self, league: &League) {
        self.unsubscribe(RedisStore::league_channel(league)).await;
    }

    async fn subscribe(&self, channel: String) -> Result<(), StoreError> {
        let mut sink = self.sink.lock().await;
        if let Some(s) = sink.as_mut()
            && let Err(e) = s.subscribe(&channel).await
        {
            return Err(StoreError::Unavailable(format!(
                "redis: cannot subscribe {channel}: {e}"
            )));
        }
        Ok(())
    }

    async fn unsubscribe(&self, channel: String) {
        self.routes.remove(&channel);
        let mut sink = self.sink.lock().await;
        if let Some(s) = sink.as_mut()
            && let Err(e) = s.unsubscribe(&channel).await
        {
            tracing::debug!(%channel, "unsubscribe failed (the link is resubscribed from the routes on reconnect): {e}");
        }
    }

    /// Delivers one published message.
    fn route(&self, channel: &str, payload: &[u8]) {
        let Some(route) = self.routes.get(channel).map(|r| r.clone()) else {
            return;
        };
        match route {
            Route::Game(mailbox, repairing) => {
                if !mailbox.remote(Bytes::copy_from_slice(payload)) {
                    if mailbox.is_closed() {
                        self.routes.remove(channel);
                    } else if !repairing.swap(true, Ordering::AcqRel) {
                        // Mailbox full: the frame is dropped and the actor
                        // repairs from the stream once the request is queued
                        // (it covers every frame dropped until then).
                        tokio::spawn(async move {
                            mailbox.repair().await;
                            repairing.store(false, Ordering::Release);
                        });
                    }
                }
            }
            Route::League => {
                let id = std::str::from_utf8(payload)
                    .ok()
                    .and_then(|s| GameId::parse(s).ok());
                match id {
                    Some(id) => {
                        if self.created.try_send(id).is_err() {
                            tracing::warn!(%channel, "league notification dropped: registry busy");
                        }
                    }
                    None => tracing::warn!(%channel, "bad game id on league channel"),
                }
            }
        }
    }

    /// After a reconnect: subscribe every routed channel again, then ask
    /// every local game to repair what it may have missed.
    async fn resubscribe(&self, mut sink: PubSubSink) -> Result<(), redis::RedisError> {
        let mut guard = self.sink.lock().await;
        let channels: Vec<String> = self.routes.iter().map(|r| r.key().clone()).collect();
        if !channels.is_empty() {
            tokio::time::timeout(PUBSUB_CONNECT_TIMEOUT, sink.subscribe(&channels))
                .await
                .map_err(|_| {
                    redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer to SUBSCRIBE within {PUBSUB_CONNECT_TIMEOUT:?}"),
                    ))
                })??;
        }
        *guard = Some(sink);
        drop(guard);
        let mailboxes: Vec<Mailbox> = self
            .routes
            .iter()
            .filter_map(|r| match r.value() {
                Route::Game(m, _) => Some(m.clone()),
                Route::League => None,
            })
            .collect();
        for mailbox in mailboxes {
            mailbox.repair().await;
        }
        Ok(())
    }
}

/// Longest wait for the pub/sub connection to open and subscribe: a Redis
/// that accepts but does not answer (frozen, or a half-dead proxy) must not
/// hold the node unready after the real one is back.
const PUBSUB_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps the pub/sub connection up and routes its messages.
async fn run_pubsub(bus: std::sync::Weak<Bus>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(b) = bus.upgrade() else { return };
        let connected =
            match tokio::time::timeout(PUBSUB_CONNECT_TIMEOUT, b.store.client().get_async_pubsub())
                .await
            {
                Ok(connected) => connected.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {PUBSUB_CONNECT_TIMEOUT:?}")),
            };
        match connected {
            Ok(pubsub) => {
                let (sink, mut stream) = pubsub.split();
                // SUBSCRIBE is bounded inside; the repairs that follow are not
                // (a node with many games must not loop on them).
                if let Err(e) = b.resubscribe(sink).await {
                    tracing::warn!("Redis pub/sub: cannot resubscribe: {e}");
                } else {
                    b.subscribed.store(true, Ordering::Relaxed);
                    tracing::info!(channels = b.routes.len(), "Redis pub/sub connected");
                    backoff = Duration::from_millis(100);
                    drop(b);
                    loop {
                        tokio::select! {
                            msg = stream.next() => {
                                let Some(msg) = msg else { break };
                                let Some(b) = bus.upgrade() else { return };
                                b.route(msg.get_channel_name(), msg.get_payload_bytes());
                            }
                            () = shutdown.cancelled() => return,
                        }
                    }
                    let Some(b) = bus.upgrade() else { return };
                    b.subscribed.store(false, Ordering::Relaxed);
                    *b.sink.lock().await = None;
                    tracing::warn!("Redis pub/sub connection lost; reconnecting");
                    continue;
                }
            }
            Err(e) => {
                b.subscribed.store(false, Ordering::Relaxed);
                tracing::warn!(
                    retry_ms = backoff.as_millis() as u64,
                    "Redis pub/sub unreachable: {e}"
                );
            }
        }
        let jitter = Duration::from_millis(rand::random_range(0..=backoff.as_millis() as u64 / 2));
        tokio::select! {
            () = tokio::time::sleep(backoff + jitter) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Pings Redis every second; drives `scorehub_redis_up` and readiness.
async fn run_health(bus: std::sync::Weak<Bus>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let Some(b) = bus.upgrade() else { return };
        let ok = b.store.ping().await.is_ok();
        let was = b.pinging.swap(ok, Ordering::Relaxed);
        if was != ok {
            if ok {
                tracing::info!("Redis reachable again");
            } else {
                tracing::warn!("Redis unreachable: refusing events until it returns");
            }
        }
        let up = ok && b.subscribed.load(Ordering::Relaxed);
        metrics::gauge!(m::REDIS_UP).set(if up { 1.0 } else { 0.0 });
    }
}
