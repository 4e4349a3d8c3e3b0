//! One fan connection, from upgrade to teardown: the session that runs the
//! reader, the writer and the goodbye together.
//!
//! The connection is split: its write half is parked in the connection's
//! [`Outbox`], where game actors write frames straight to it while nothing
//! is queued (see [`wire`](crate::fanout::wire)); its read half goes to
//! tungstenite. A session polls, concurrently in one task:
//!
//! - the **reader** (`reader`, `subscriptions`): decodes control messages
//!   (`sub`, `unsub`, `ping`), keeps the connection's subscriptions and
//!   enforces the flood limit; tungstenite's own replies (pongs, the close
//!   reply) go out through the outbox;
//! - the **writer** (`writer`): when frames queue up (the socket was full),
//!   takes the socket and drains the queue in vectored batches, then parks
//!   the socket again; it also pings the client, drops dead peers, and asks
//!   game actors for one fresh snapshot once a conflated queue has drained.
//!
//! Whichever half stops first says why the connection ends (`End`); a third
//! branch ends a fan that has stayed conflated for `ws.stuck_timeout` (it
//! cannot keep up: its writer makes no real progress). The session then
//! says goodbye (`goodbye`): the matching close frame, and teardown (the
//! outbox is closed, every game subscription and league watch is removed).
//! A guard keeps the connection gauge right even if the session panics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::context::Context;
use super::games::Games;
use super::goodbye::{self, ConnGuard, End};
use super::reader;
use super::subscriptions::Subscriptions;
use super::upgrade::Upgrade;
use super::writer;
use crate::codec::{self, ClientMsg, FrameKind};
use crate::config::WsConfig;
use crate::fanout::outbox::Outbox;
use crate::fanout::wire::Socket;

/// How far a session got: tests wait on these instead of sleeping. Outside
/// tests nothing listens and [`Conn::reached`] does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// A control message (the query's `sub` included) was handled.
    Handled,
    /// The initial subscription is done; reader and writer run.
    Running,
    /// The writer holds the socket and starts writing a batch.
    Writing,
    /// The session decided to end and starts its goodbye.
    Ending,
}

/// What both halves of a session share.
pub(crate) struct Conn {
    /// The connection id (unique within the hub).
    pub(crate) id: u64,
    /// What the session may use of the hub.
    pub(crate) ctx: Context,
    /// The queue game actors write through, and where the socket parks.
    pub(crate) outbox: Arc<Outbox>,
    started: Instant,
    /// When the client was last heard from, in ms since `started`.
    last_seen_ms: AtomicU64,
}

impl Conn {
    /// Connection `id`'s shared parts, with a fresh outbox sized by `[ws]`.
    pub(crate) fn new(id: u64, ctx: Context) -> Conn {
        let ws = &ctx.config;
        let outbox = Arc::new(Outbox::new(
            id,
            ws.queue_frames,
            ws.max_queue_bytes,
            ctx.pressure.clone(),
        ));
        Conn {
            id,
            ctx,
            outbox,
            started: Instant::now(),
            last_seen_ms: AtomicU64::new(0),
        }
    }

    /// The `[ws]` config section.
    pub(crate) fn cfg(&self) -> &WsConfig {
        &self.ctx.config
    }

    /// The games, for subscribing and unsubscribing.
    pub(crate) fn games(&self) -> &Games {
        &self.ctx.games
    }

    /// Tells a listening test that the session reached `stage`.
    #[inline]
    pub(super) fn reached(&self, stage: Stage) {
        #[cfg(test)]
        if let Some(stages) = &self.ctx.stages {
            let _ = stages.send(stage);
        }
        #[cfg(not(test))]
        let _ = stage;
    }

    /// Records that the client sent something (any frame, pongs included).
    pub(super) fn touch(&self) {
        let ms = self.started.elapsed().as_millis();
        self.last_seen_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// How long the client has been silent.
    pub(super) fn silent_for(&self) -> Duration {
        let seen = Duration::from_millis(self.last_seen_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(seen)
    }

    /// Queues an error frame. Errors carry no queue game, so a snapshot of
    /// the game they mention never supersedes them.
    pub(crate) fn send_error(&self, code: &str, msg: &str, game: Option<&str>) {
        self.outbox
            .push_control(FrameKind::Error, None, codec::error(code, msg, game));
    }
}

/// One connection from upgrade to teardown: the reader, the writer and the
/// stuck watch run concurrently until one ends the session, then the
/// goodbye.
pub(super) async fn run(io: Upgrade, id: u64, ctx: Context, initial: Option<ClientMsg>) {
    let conn = Conn::new(id, ctx);
    let _guard = ConnGuard::new(conn.outbox.clone());
    tracing::debug!(vectored = io.write.is_vectored(), "fan connected");
    let Upgrade {
        read,
        pre_read,
        write,
    } = io;
    conn.outbox.attach(write);
    let mut reader = reader::open(read, pre_read, &conn).await;
    // The socket while the writer holds it (frames queued up); else parked
    // in the outbox.
    let mut held: Option<Socket> = None;
    let mut subs = Subscriptions::default();
    if let Some(msg) = initial {
        reader::handle_msg(&conn, &mut subs, msg).await;
    }
    conn.reached(Stage::Running);
    let end = if conn.ctx.shutdown.is_cancelled() {
        End::Shutdown
    } else {
        tokio::select! {
            end = writer::write_loop(&conn, &mut held) => end,
            end = reader::read_loop(&mut reader, &conn, &mut subs) => end,
            end = writer::watch_stuck(&conn) => end,
        }
    };
    goodbye::say_goodbye(held, &mut reader, &conn, end).await;
    goodbye::teardown(&conn, &subs).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::domain::{GameId, NewGame};
    use crate::server::Hub;
    use crate::ws::testkit::{PATIENCE, next_frame, read_until_close, score, send, start};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscriber_gets_a_snapshot_then_diffs() {
        let hub = start(WsConfig::default()).await;
        let game = hub.game("nba:g1").await;
        let mut fan = hub.connect("").await;
        send(&mut fan, r#"{"op":"sub","games":["nba:g1"]}"#).await;
        let snap = next_frame(&mut fan).await;
        assert_eq!(
            (snap.t.as_str(), snap.g.as_deref(), snap.q),
            ("s", Some("nba:g1"), Some(0))
        );
        score(&game, 1).await;
        let diff = next_frame(&mut fan).await;
        assert_eq!((diff.t.as_str(), diff.q), ("d", Some(1)));
        assert_eq!(diff.d.unwrap()["home"]["score"], 1);
        assert!(diff.ts.is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_closes_with_1001_and_refuses_new_fans() {
        let hub = start(WsConfig::default()).await;
        hub.game("nba:g1").await;
        let mut fan = hub.connect("?games=nba:g1").await;
        assert_eq!(next_frame(&mut fan).await.t, "s");
        hub.state.shutdown.cancel();
        let (code, _) = read_until_close(&mut fan).await;
        assert_eq!(code, Some(1001));
        let url = format!("ws://{}/v1/ws", hub.addr);
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 503)
            }
            other => panic!("expected 503, got {other:?}"),
        }
        hub.state.sessions.close();
        tokio::time::timeout(PATIENCE, hub.state.sessions.wait())
            .await
            .expect("every session ends");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_full_hub_serves_fans_and_drains_them_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.storage.dir = dir.path().to_path_buf();
        config.storage.fsync = false;
        let hub = Hub::open(config, &[7u8; 32]).unwrap();
        let state = hub.state().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(hub.serve(listener, async {
            let _ = stopped.await;
        }));
        let body = NewGame::between("Home", "Away");
        let id = GameId::parse("nba:full").unwrap();
        let (game, _) = state.registry.create(id, body, "test").await.unwrap();

        let url = format!("ws://{addr}/v1/ws?games=nba:full");
        let (mut fan, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        assert_eq!(next_frame(&mut fan).await.q, Some(0));
        score(&game, 1).await;
        let diff = next_frame(&mut fan).await;
        assert_eq!((diff.t.as_str(), diff.q), ("d", Some(1)));

        stop.send(()).unwrap();
        let (code, _) = read_until_close(&mut fan).await;
        assert_eq!(code, Some(1001));
        tokio::time::timeout(PATIENCE, server)
            .await
            .expect("serve returns once fans are gone")
            .unwrap()
            .unwrap();
    }
}
