//! The transport of the Redis backend: nodes linked through Redis pub/sub.
//!
//! The [`Bus`] holds this node's one pub/sub connection. Subscriptions follow
//! interest: a game's channel is subscribed while the game is loaded here (a
//! fan watches it or it was used recently), a league's channel while a local
//! fan watches the league; nothing is pattern-subscribed. Published frames are
//! routed to the game's [`FrameSink`] (its actor's mailbox) without waiting;
//! a full mailbox turns into a repair request (the actor catches up from the
//! game's stream). No lock is held across a Redis round trip: the sink of the
//! connection is cloned out of its slot for each (un)subscribe.
//!
//! When the connection drops, the bus reconnects with jittered backoff,
//! subscribes every channel again and asks every local game to repair any gap.
//! A health task pings Redis every second and drives `scorehub_redis_up` and
//! readiness.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSubSink;
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

/// This node's pub/sub link to the other nodes.
#[derive(Debug)]
pub(crate) struct Bus {
    store: Arc<RedisStore>,
    sink: Mutex<Option<PubSubSink>>,
    routes: Routes,
    subscribed: AtomicBool,
    pinging: Pinging,
}

impl Bus {
    /// Starts the pub/sub connection task and the health task on `tasks`;
    /// both end on `shutdown`. Ids of games created in watched leagues are
    /// sent to `created`.
    pub(crate) fn start(
        store: Arc<RedisStore>,
        created: mpsc::Sender<GameId>,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Arc<Bus> {
        let bus = Arc::new(Bus {
            store,
            sink: Mutex::new(None),
            routes: Routes::new(created),
            subscribed: AtomicBool::new(false),
            pinging: Pinging::new(),
        });
        tasks.spawn(run_pubsub(Arc::downgrade(&bus), shutdown.clone()));
        tasks.spawn(run_health(Arc::downgrade(&bus), shutdown));
        bus
    }

    /// `Ok` when events can be accepted: Redis answers pings and the pub/sub
    /// link is up.
    pub(crate) fn readiness(&self) -> Result<(), Unready> {
        if !self.pinging.up() {
            return Err(Unready::RedisUnreachable("Redis"));
        }
        if !self.subscribed.load(Ordering::Relaxed) {
            return Err(Unready::PubSubDown);
        }
        Ok(())
    }

    /// The current connection's sink, if the link is up (cloned: no lock is
    /// held while it is used).
    fn sink(&self) -> Option<PubSubSink> {
        self.sink
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_sink(&self, sink: Option<PubSubSink>) {
        *self.sink.lock().unwrap_or_else(PoisonError::into_inner) = sink;
    }

    /// Subscribes a routed channel. Without a link, the reconnect
    /// subscribes it (it reads the routes after installing its sink).
    async fn subscribe(&self, channel: String) -> Result<(), StoreError> {
        let Some(mut sink) = self.sink() else {
            return Ok(());
        };
        super::subscribe_within(
            "SUBSCRIBE",
            &channel,
            PUBSUB_CONNECT_TIMEOUT,
            sink.subscribe(&channel),
        )
        .await
    }

    async fn unsubscribe(&self, channel: String) {
        self.routes.remove(&channel);
        let Some(mut sink) = self.sink() else { return };
        match tokio::time::timeout(PUBSUB_CONNECT_TIMEOUT, sink.unsubscribe(&channel)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(%channel, "unsubscribe failed (a reconnect subscribes only routed channels): {e}")
            }
            Err(_) => {
                tracing::debug!(%channel, "no answer to UNSUBSCRIBE (a reconnect subscribes only routed channels)")
            }
        }
    }

    /// After a reconnect: subscribe every routed channel again, then ask
    /// every local game to repair what it may have missed.
    ///
    /// The sink is installed first and the routes read after: a channel
    /// routed meanwhile is subscribed either here or by its own
    /// [`Bus::subscribe`], which then sees the new sink.
    async fn resubscribe(&self, mut sink: PubSubSink) -> Result<(), redis::RedisError> {
        self.set_sink(Some(sink.clone()));
        let channels = self.routes.channels();
        if !channels.is_empty() {
            let subscribed =
                tokio::time::timeout(PUBSUB_CONNECT_TIMEOUT, sink.subscribe(&channels))
                    .await
                    .map_err(|_| {
                        redis::RedisError::from(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no answer to SUBSCRIBE within {PUBSUB_CONNECT_TIMEOUT:?}"),
                        ))
                    })
                    .and_then(|r| r);
            if let Err(e) = subscribed {
                self.set_sink(None);
                return Err(e);
            }
        }
        for sink in self.routes.game_sinks() {
            sink.repair().await;
        }
        Ok(())
    }
}

impl Transport for Bus {
    fn follow_game<'a>(
        &'a self,
        game: &'a GameId,
        sink: Arc<dyn FrameSink>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let channel = self.store.names().game_channel(game);
        self.routes.follow_game(channel.clone(), sink);
        Box::pin(self.subscribe(channel))
    }

    fn unfollow_game<'a>(&'a self, game: &'a GameId) -> BoxFuture<'a, ()> {
        Box::pin(self.unsubscribe(self.store.names().game_channel(game)))
    }

    fn follow_league<'a>(&'a self, league: &'a League) -> BoxFuture<'a, Result<(), StoreError>> {
        let channel = self.store.names().league_channel(league);
        self.routes.follow_league(channel.clone());
        Box::pin(self.subscribe(channel))
    }

    fn unfollow_league<'a>(&'a self, league: &'a League) -> BoxFuture<'a, ()> {
        Box::pin(self.unsubscribe(self.store.names().league_channel(league)))
    }

    fn readiness(&self) -> Result<(), Unready> {
        Bus::readiness(self)
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
                                b.routes.deliver(msg.get_channel_name(), msg.get_payload_bytes());
                            }
                            () = shutdown.cancelled() => return,
                        }
                    }
                    let Some(b) = bus.upgrade() else { return };
                    b.subscribed.store(false, Ordering::Relaxed);
                    b.set_sink(None);
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
        let ok = b.pinging.check(&b.store, "Redis").await;
        let up = ok && b.subscribed.load(Ordering::Relaxed);
        metrics::gauge!(m::REDIS_UP).set(if up { 1.0 } else { 0.0 });
    }
}
