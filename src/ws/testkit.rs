//! What the fan session tests share: a hub serving `/v1/ws` on a free
//! port, games to follow, and a client that reads server frames.

use axum::Router;
use axum::routing::get;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMsg;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};

use axum::extract::FromRef;
use tokio::sync::mpsc::UnboundedReceiver;

use super::context::Context;
use super::session::Stage;
use super::ws_handler;
use crate::app::AppState;
use crate::codec;
use crate::codec::DecodedFrame;
use crate::config::Config;
use crate::config::WsConfig;
use crate::domain::GameId;
use crate::domain::{Action, Event, NewGame, Side};
use crate::registry::Game;
use crate::server::Hub;

pub(super) type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Generous bound on waiting for something that must happen.
pub(super) const PATIENCE: Duration = Duration::from_secs(20);

/// A hub serving only `/v1/ws` on 127.0.0.1:0.
pub(super) struct TestHub {
    /// Its shared state.
    pub(super) state: AppState,
    /// Where it listens.
    pub(super) addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// A hub on 127.0.0.1:0 serving only `/v1/ws`, with `ws` limits.
pub(super) async fn start(ws: WsConfig) -> TestHub {
    let (state, dir) = open(ws);
    let app = Router::new()
        .route("/v1/ws", get(ws_handler))
        .with_state(state.clone());
    serve(state, dir, app).await
}

/// Like [`start`], and its sessions report how far they got.
pub(super) async fn start_watched(ws: WsConfig) -> (TestHub, Stages) {
    let (state, dir) = open(ws);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut ctx = Context::from_ref(&state);
    ctx.stages = Some(tx);
    let app = Router::new()
        .route("/v1/ws", get(ws_handler))
        .with_state(ctx);
    (serve(state, dir, app).await, Stages(rx))
}

/// A single-node hub in a fresh directory.
fn open(ws: WsConfig) -> (AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.storage.dir = dir.path().to_path_buf();
    config.storage.fsync = false;
    config.ws = ws;
    let hub = Hub::open(config, &[7u8; 32]).unwrap();
    (hub.state().clone(), dir)
}

/// Serves `app` on 127.0.0.1:0 as the hub does (`crate::http::serve`).
async fn serve(state: AppState, dir: tempfile::TempDir, app: Router) -> TestHub {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = crate::http::serve::Settings::for_hub(&state);
    // Serving outlives the hub's shutdown token: the tests see what a fan
    // that connects while the hub stops gets.
    tokio::spawn(crate::http::serve::run(
        listener,
        app,
        settings,
        tokio_util::sync::CancellationToken::new(),
        tokio_util::sync::CancellationToken::new(),
    ));
    TestHub {
        state,
        addr,
        _dir: dir,
    }
}

/// What the sessions of a [`start_watched`] hub report, in order.
pub(super) struct Stages(UnboundedReceiver<Stage>);

impl Stages {
    /// Waits until a session reports `stage` (skipping other reports), or
    /// fails after [`PATIENCE`].
    pub(super) async fn reach(&mut self, stage: Stage) {
        let wait = async {
            while let Some(got) = self.0.recv().await {
                if got == stage {
                    return;
                }
            }
            panic!("no session can report {stage:?} any more");
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("no session reached {stage:?} in time"));
    }
}

impl TestHub {
    pub(super) async fn connect(&self, query: &str) -> Client {
        let url = format!("ws://{}/v1/ws{query}", self.addr);
        tokio_tungstenite::connect_async(url).await.unwrap().0
    }

    pub(super) async fn game(&self, id: &str) -> Game {
        let body = NewGame::between("Home", "Away");
        let id = GameId::parse(id).unwrap();
        self.state
            .registry
            .create(id, body, "test")
            .await
            .unwrap()
            .0
    }
}

pub(super) async fn post(game: &Game, event_id: String, action: Action) {
    let event = Event {
        event_id,
        expected_seq: None,
        action,
    };
    game.apply(event, Arc::from("test"), std::time::Instant::now())
        .await
        .unwrap();
}

pub(super) async fn score(game: &Game, n: u64) {
    let action = Action::Score {
        team: Side::Home,
        points: 1,
    };
    post(game, format!("score-{n}"), action).await;
}

pub(super) async fn send(client: &mut Client, text: &str) {
    client.send(WsMsg::text(text)).await.unwrap();
}

/// The next server frame, skipping pings and occupancy frames (they come
/// whenever a game's count of fans changes).
pub(super) async fn next_frame(client: &mut Client) -> DecodedFrame {
    loop {
        let msg = tokio::time::timeout(PATIENCE, client.next())
            .await
            .expect("a frame in time")
            .expect("connection open")
            .expect("readable frame");
        match msg {
            WsMsg::Binary(bytes) => {
                let frame = codec::decode_frame(&bytes).unwrap();
                if frame.t != "o" {
                    return frame;
                }
            }
            WsMsg::Ping(_) | WsMsg::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// Reads until the close frame; its code and every frame before it.
pub(super) async fn read_until_close(client: &mut Client) -> (Option<u16>, Vec<DecodedFrame>) {
    let mut frames = Vec::new();
    loop {
        let msg = tokio::time::timeout(PATIENCE, client.next())
            .await
            .expect("the server closes in time");
        match msg {
            Some(Ok(WsMsg::Binary(bytes))) => {
                let frame = codec::decode_frame(&bytes).unwrap();
                if frame.t != "o" {
                    frames.push(frame);
                }
            }
            Some(Ok(WsMsg::Close(frame))) => {
                // Keep polling so the client's close reply goes out.
                while let Ok(Some(Ok(_))) = tokio::time::timeout(PATIENCE, client.next()).await {}
                return (frame.map(|f| u16::from(f.code)), frames);
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return (None, frames),
        }
    }
}
