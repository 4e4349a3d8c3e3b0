//! One fan connection on `GET /v1/ws`.
//!
//! [`ws_handler`] upgrades the request and runs the session on the hub's
//! session tracker, so shutdown waits for it. The connection is split: its
//! write half is parked in the connection's [`Outbox`], where game actors
//! write frames straight to it while nothing is queued (see
//! [`wire`]); its read half goes to tungstenite. A session polls,
//! concurrently in one task:
//!
//! - the **reader**: decodes control messages (`sub`, `unsub`, `ping`), keeps
//!   the connection's subscriptions and enforces the flood limit;
//!   tungstenite's own replies (pongs, the close reply) go out through the
//!   outbox;
//! - the **writer**: when frames queue up (the socket was full), takes the
//!   socket and drains the queue in vectored batches, then parks the socket
//!   again; it also pings the client, drops dead peers, and asks game actors
//!   for one fresh snapshot once a conflated queue has drained.
//!
//! Whichever half stops first says why the connection ends (`End`); a third
//! branch ends a fan that has stayed conflated for `ws.stuck_timeout` (it
//! cannot keep up: its writer makes no real progress). The session then
//! sends the matching close frame and tears down: the outbox is closed, every
//! game subscription and league watch is removed. A guard keeps the
//! connection gauge right even if the session panics.
//!
//! Before upgrading, [`ws_handler`] asks the hub's limits for a connection
//! slot (per-address connect rate: 429; connection cap: 503); the slot is
//! held until the session ends.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::Instrument;

use super::limiter::TokenBucket;
use super::upgrade::{Upgrade, WsUpgrade};
use crate::app::AppState;
use crate::codec::{self, ClientMsg, FrameKind};
use crate::config::WsConfig;
use crate::domain::{GameId, League};
use crate::error::ApiError;
use crate::extract::Query;
use crate::fanout::outbox::{Item, Leftovers, Outbox, Take};
use crate::fanout::wire::{self, Socket, Wire};
use crate::game::GameHandle;
use crate::metrics as m;
use crate::registry::Registry;

/// Bytes tungstenite reserves to read client frames. Fans send little (a few
/// control messages), so a small buffer keeps idle connections cheap; larger
/// messages (up to `ws.max_message_bytes`) still arrive, in several reads.
const READ_BUFFER_BYTES: usize = 512;

/// Longest wait for the closing handshake (our close frame out, the client's
/// reply in) once a session has decided to end.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Query of `GET /v1/ws`: what to subscribe to at once, comma-separated.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WsQuery {
    /// Game ids, e.g. `nba:a,nba:b`.
    pub games: Option<String>,
    /// League names, e.g. `nba,nhl`.
    pub leagues: Option<String>,
}

impl WsQuery {
    /// The `sub` message this query stands for (handled before anything the
    /// client sends), or `None` when it names nothing.
    pub fn initial_sub(&self) -> Option<ClientMsg> {
        let games = split_list(self.games.as_deref());
        let leagues = split_list(self.leagues.as_deref());
        if games.is_empty() && leagues.is_empty() {
            return None;
        }
        Some(ClientMsg::Sub {
            games,
            leagues,
            since: BTreeMap::new(),
        })
    }
}

/// Splits `a, b,,c` into `["a", "b", "c"]`.
fn split_list(list: Option<&str>) -> Vec<String> {
    list.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `GET /v1/ws`: upgrades to a fan session (503 while the hub shuts down or
/// every connection slot is taken, 429 when the address connects too fast).
pub async fn ws_handler(
    ws: WsUpgrade,
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Query(query): Query<WsQuery>,
) -> Response {
    if state.shutdown.is_cancelled() {
        return shutting_down();
    }
    let slot = match state.limits.admit_fan(addr.ip()) {
        Ok(slot) => slot,
        Err(refusal) => return refusal.into_response(),
    };
    let limit = state.config.ws.max_message_bytes;
    let initial = query.initial_sub();
    // Counted by the tracker from now, so a shutdown starting before the
    // upgrade completes still waits for this session.
    let tracked = state.sessions.token();
    let send_buffer = state.config.ws.send_buffer_bytes;
    ws.accept(send_buffer, move |io| async move {
        let conn_id = state.conn_ids.next();
        // Debug level: entered on every poll, so free when debug is off.
        let span = tracing::debug_span!("ws", conn_id, peer = %addr);
        run_session(io, Conn::new(conn_id, state), initial, limit)
            .instrument(span)
            .await;
        drop(slot);
        drop(tracked);
    })
}

fn shutting_down() -> Response {
    ApiError::NotReady("the hub is shutting down; fans should reconnect".into()).into_response()
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client sent a close frame.
    ClientClosed,
    /// The stream ended or failed without a close frame.
    ClientGone,
    /// A message above `ws.max_message_bytes`.
    TooBig,
    /// A text frame that is not valid UTF-8 (RFC 6455 requires failing the
    /// connection; tungstenite refuses the frame).
    BadUtf8,
    /// More messages than the token bucket allows.
    Flood,
    /// The outbox overflowed its byte cap: the client stopped reading.
    SlowConsumer,
    /// The outbox stayed conflated for `ws.stuck_timeout`: the client cannot
    /// keep up.
    Stuck,
    /// A socket write took longer than `ws.write_timeout`.
    WriteStalled,
    /// A socket write failed.
    WriteFailed,
    /// Nothing heard from the client for `ws.idle_timeout`.
    Idle,
    /// The hub is shutting down.
    Shutdown,
    /// The outbox was closed from elsewhere.
    OutboxClosed,
}

impl End {
    /// Short name for logs and the `scorehub_ws_closed_total{reason}` label.
    fn label(self) -> &'static str {
        match self {
            End::ClientClosed => "client_closed",
            End::ClientGone => "client_gone",
            End::TooBig => "too_big",
            End::BadUtf8 => "bad_utf8",
            End::Flood => "flood",
            End::SlowConsumer => "slow_consumer",
            End::Stuck => "stuck",
            End::WriteStalled => "write_timeout",
            End::WriteFailed => "write_failed",
            End::Idle => "idle",
            End::Shutdown => "shutdown",
            End::OutboxClosed => "closed",
        }
    }

    /// Whether the server, not the client or the network, ended it.
    fn by_server(self) -> bool {
        matches!(
            self,
            End::TooBig
                | End::BadUtf8
                | End::Flood
                | End::SlowConsumer
                | End::Stuck
                | End::WriteStalled
                | End::Idle
                | End::Shutdown
        )
    }

    /// The close frame the client gets, when the socket can still take one.
    fn close_frame(self) -> Option<(CloseCode, &'static str)> {
        match self {
            End::TooBig => Some((CloseCode::Size, "message too big")),
            End::Flood => Some((CloseCode::Policy, "message rate exceeded")),
            End::BadUtf8 => Some((CloseCode::Invalid, "invalid UTF-8 in a text frame")),
            End::SlowConsumer | End::Stuck => Some((CloseCode::Policy, "slow consumer")),
            End::Idle => Some((CloseCode::Away, "idle timeout")),
            End::Shutdown => Some((CloseCode::Away, "server shutting down")),
            End::ClientClosed
            | End::ClientGone
            | End::WriteStalled
            | End::WriteFailed
            | End::OutboxClosed => None,
        }
    }
}

/// What both halves of a session share.
struct Conn {
    id: u64,
    state: AppState,
    outbox: Arc<Outbox>,
    started: Instant,
    /// When the client was last heard from, in ms since `started`.
    last_seen_ms: AtomicU64,
}

impl Conn {
    fn new(id: u64, state: AppState) -> Conn {
        let ws = &state.config.ws;
        let outbox = Arc::new(Outbox::new(
            id,
            ws.queue_frames,
            ws.max_queue_bytes,
            state.pressure.clone(),
        ));
        Conn {
            id,
            state,
            outbox,
            started: Instant::now(),
            last_seen_ms: AtomicU64::new(0),
        }
    }

    fn cfg(&self) -> &WsConfig {
        &self.state.config.ws
    }

    fn registry(&self) -> &Registry {
        &self.state.registry
    }

    /// Records that the client sent something (any frame, pongs included).
    fn touch(&self) {
        let ms = self.started.elapsed().as_millis();
        self.last_seen_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// How long the client has been silent.
    fn silent_for(&self) -> Duration {
        let seen = Duration::from_millis(self.last_seen_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(seen)
    }

    /// Queues an error frame. Errors carry no queue game, so a snapshot of
    /// the game they mention never supersedes them.
    fn send_error(&self, code: &str, msg: &str, game: Option<&str>) {
        self.outbox
            .push_control(FrameKind::Error, None, codec::error(code, msg, game));
    }

    /// A valid, existing game, or an error frame for the client.
    async fn resolve_game(&self, raw: &str) -> Option<GameHandle> {
        let id = self.parse_game(raw)?;
        match self.registry().find(&id).await {
            Ok(Some(handle)) => Some(handle),
            Ok(None) => {
                let msg = format!(
                    "game {id} does not exist (yet); check the id or subscribe to its league"
                );
                self.send_error("game_not_found", &msg, Some(raw));
                None
            }
            Err(e) => {
                tracing::warn!(game = %id, "cannot load game: {e}");
                let msg = format!("game {id} cannot be loaded right now; retry shortly");
                self.send_error("not_ready", &msg, Some(raw));
                None
            }
        }
    }

    /// A valid game id, or an `invalid_game_id` error frame.
    fn parse_game(&self, raw: &str) -> Option<GameId> {
        GameId::parse(raw)
            .map_err(|e| self.send_error("invalid_game_id", &e.to_string(), Some(raw)))
            .ok()
    }

    /// A valid league name, or an `invalid_league` error frame.
    fn parse_league(&self, raw: &str) -> Option<League> {
        League::parse(raw)
            .map_err(|e| self.send_error("invalid_league", &e.to_string(), None))
            .ok()
    }
}

/// Keeps `scorehub_ws_connections` right and closes the outbox however the
/// session ends, panics included.
struct ConnGuard {
    outbox: Arc<Outbox>,
}

impl ConnGuard {
    fn new(outbox: Arc<Outbox>) -> ConnGuard {
        metrics::gauge!(m::WS_CONNECTIONS).increment(1.0);
        ConnGuard { outbox }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.outbox.close();
        metrics::gauge!(m::WS_CONNECTIONS).decrement(1.0);
    }
}

/// The games and leagues one connection asked for.
#[derive(Debug, Default)]
struct Subscriptions {
    /// Games subscribed by id.
    games: HashSet<GameId>,
    /// Leagues watched (their games are subscribed too).
    leagues: HashSet<League>,
}

impl Subscriptions {
    /// How many games the connection would hold with `games` and `leagues` added.
    async fn count_with(
        &self,
        registry: &Registry,
        games: &[GameHandle],
        leagues: &[League],
    ) -> usize {
        let mut all: HashSet<GameId> = self.games.clone();
        all.extend(games.iter().map(|h| h.id().clone()));
        for league in self.leagues.iter().chain(leagues) {
            let handles = match registry.league_games(league).await {
                Ok(h) => h,
                Err(_) => registry.loaded_league_games(league),
            };
            all.extend(handles.iter().map(|h| h.id().clone()));
        }
        all.len()
    }
}

/// The stream tungstenite reads client frames from: the connection's read
/// half. What tungstenite writes (pongs, its close reply) is already framed
/// and goes out through the outbox, in order with everything else.
struct ClientStream {
    read: Box<dyn AsyncRead + Send + Unpin>,
    outbox: Arc<Outbox>,
}

impl AsyncRead for ClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(if self.outbox.push_framed(Bytes::copy_from_slice(buf)) {
            Ok(buf.len())
        } else {
            Err(io::ErrorKind::BrokenPipe.into())
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Client frames, as tungstenite reads them.
type Reader = WebSocketStream<ClientStream>;

/// One connection from upgrade to teardown.
async fn run_session(io: Upgrade, conn: Conn, initial: Option<ClientMsg>, max_message: usize) {
    let _guard = ConnGuard::new(conn.outbox.clone());
    tracing::debug!(vectored = io.write.is_vectored(), "fan connected");
    let Upgrade {
        read,
        pre_read,
        write,
    } = io;
    conn.outbox.attach(write);
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let client = ClientStream {
        read,
        outbox: conn.outbox.clone(),
    };
    // `pre_read` may share the HTTP server's whole read buffer (kilobytes,
    // even when empty): copy what it holds and let it go now.
    let pre_read: Vec<u8> = {
        let shared = pre_read;
        shared.to_vec()
    };
    let mut reader = if pre_read.is_empty() {
        WebSocketStream::from_raw_socket(client, Role::Server, Some(config)).await
    } else {
        WebSocketStream::from_partially_read(client, pre_read, Role::Server, Some(config)).await
    };
    // The socket while the writer holds it (frames queued up); else parked
    // in the outbox.
    let mut held: Option<Socket> = None;
    let mut subs = Subscriptions::default();
    if let Some(msg) = initial {
        handle_msg(&conn, &mut subs, msg).await;
    }
    let end = if conn.state.shutdown.is_cancelled() {
        End::Shutdown
    } else {
        tokio::select! {
            end = write_loop(&conn, &mut held) => end,
            end = read_loop(&mut reader, &conn, &mut subs) => end,
            end = watch_stuck(&conn) => end,
        }
    };
    say_goodbye(held, &mut reader, &conn, end).await;
    teardown(&conn, &subs).await;
}

// ---------------------------------------------------------------- reader

/// Reads client frames until the client leaves or misbehaves.
async fn read_loop(stream: &mut Reader, conn: &Conn, subs: &mut Subscriptions) -> End {
    let mut bucket = TokenBucket::new(conn.cfg().messages_per_second, conn.cfg().message_burst);
    while let Some(frame) = stream.next().await {
        let msg = match frame {
            Ok(msg) => msg,
            Err(e) => return read_error(&e),
        };
        conn.touch();
        let decoded = match msg {
            Message::Text(text) => {
                if !bucket.try_take() {
                    return End::Flood;
                }
                codec::decode_text(text.as_str())
            }
            // A raw frame only comes out of tungstenite when writing.
            Message::Frame(_) => continue,
            Message::Binary(bytes) => {
                if !bucket.try_take() {
                    return End::Flood;
                }
                codec::decode_binary(&bytes)
            }
            Message::Close(_) => return End::ClientClosed,
            // Pings are answered by the WebSocket layer; pongs only count as life.
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        match decoded {
            Ok(msg) => handle_msg(conn, subs, msg).await,
            Err(e) => conn.send_error("bad_message", &e, None),
        }
    }
    End::ClientGone
}

/// Classifies a read error: a message or frame over the size limit is a
/// capacity error, a text frame that is not UTF-8 a UTF-8 error.
fn read_error(e: &WsError) -> End {
    match e {
        WsError::Capacity(_) => End::TooBig,
        WsError::Utf8(_) => End::BadUtf8,
        _ => {
            tracing::debug!(error = %e, "read failed");
            End::ClientGone
        }
    }
}

/// Handles one decoded control message.
async fn handle_msg(conn: &Conn, subs: &mut Subscriptions, msg: ClientMsg) {
    handle(conn, subs, msg).await;
    conn.outbox
        .set_many_games(subs.games.len() > 1 || !subs.leagues.is_empty());
}

/// Acts on one decoded control message.
async fn handle(conn: &Conn, subs: &mut Subscriptions, msg: ClientMsg) {
    match msg {
        ClientMsg::Sub {
            games,
            leagues,
            since,
        } => subscribe(conn, subs, &games, &leagues, &since).await,
        ClientMsg::Unsub { games, leagues } => unsubscribe(conn, subs, &games, &leagues).await,
        ClientMsg::Ping => {
            conn.outbox
                .push_control(FrameKind::Pong, None, codec::pong());
        }
    }
}

/// `sub`: refused as a whole when it would exceed `ws.max_subscriptions`;
/// invalid or unknown ids get an error frame each and are skipped. A message
/// naming more new games (or leagues) than the limit is refused before any
/// id is looked up, so one message cannot cost thousands of lookups or
/// thousands of error frames.
async fn subscribe(
    conn: &Conn,
    subs: &mut Subscriptions,
    games: &[String],
    leagues: &[String],
    since: &BTreeMap<String, u64>,
) {
    let max = conn.cfg().max_subscriptions;
    let new_games: HashSet<&str> = games
        .iter()
        .map(String::as_str)
        .filter(|g| GameId::parse(g).map_or(true, |id| !subs.games.contains(&id)))
        .collect();
    let new_leagues: HashSet<&str> = leagues.iter().map(String::as_str).collect();
    if subs.games.len() + new_games.len() > max || new_leagues.len() > max {
        let msg = format!(
            "this subscription names {} new games and {} leagues; a connection may hold at most {max} games (unsubscribe some first)",
            new_games.len(),
            new_leagues.len()
        );
        conn.send_error("too_many_subscriptions", &msg, None);
        return;
    }
    let mut handles: Vec<GameHandle> = Vec::with_capacity(games.len());
    for g in games {
        if let Some(h) = conn.resolve_game(g).await {
            handles.push(h);
        }
    }
    let games = handles;
    let mut leagues: Vec<League> = leagues
        .iter()
        .filter_map(|l| conn.parse_league(l))
        .filter(|l| !subs.leagues.contains(l))
        .collect();
    leagues.sort();
    leagues.dedup();
    let total = subs.count_with(conn.registry(), &games, &leagues).await;
    if total > max {
        let msg = format!(
            "this subscription would hold {total} games; a connection may hold at most {max} (unsubscribe some first)"
        );
        conn.send_error("too_many_subscriptions", &msg, None);
        return;
    }
    let since_of = |h: &GameHandle| since.get(h.id().as_str()).copied();
    for handle in games {
        subs.games.insert(handle.id().clone());
        conn.registry()
            .subscribe(&handle, conn.outbox.clone(), since_of(&handle))
            .await;
    }
    for league in leagues {
        let handles = match conn
            .registry()
            .watch_league(&league, conn.outbox.clone())
            .await
        {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(%league, "cannot load league: {e}");
                let msg = format!("league {league} cannot be loaded right now; retry shortly");
                conn.send_error("not_ready", &msg, None);
                conn.registry().unwatch_league(&league, conn.id).await;
                continue;
            }
        };
        subs.leagues.insert(league);
        for handle in handles {
            conn.registry()
                .subscribe(&handle, conn.outbox.clone(), since_of(&handle))
                .await;
        }
    }
}

/// `unsub`: a game named explicitly is unsubscribed; a league is unwatched
/// and its games unsubscribed, except those also subscribed by id.
async fn unsubscribe(conn: &Conn, subs: &mut Subscriptions, games: &[String], leagues: &[String]) {
    for id in games.iter().filter_map(|g| conn.parse_game(g)) {
        subs.games.remove(&id);
        if let Some(handle) = conn.registry().get(&id) {
            handle.unsubscribe(conn.id).await;
        }
        conn.outbox.forget(&id);
    }
    for league in leagues.iter().filter_map(|l| conn.parse_league(l)) {
        if !subs.leagues.remove(&league) {
            continue;
        }
        conn.registry().unwatch_league(&league, conn.id).await;
        for handle in conn.registry().loaded_league_games(&league) {
            if !subs.games.contains(handle.id()) {
                handle.unsubscribe(conn.id).await;
                conn.outbox.forget(handle.id());
            }
        }
    }
}

// ---------------------------------------------------------------- writer

/// Writes what queued up while the socket was full, pings, and watches for
/// shutdown and dead peers.
async fn write_loop(conn: &Conn, held: &mut Option<Socket>) -> End {
    let cfg = conn.cfg();
    let every = cfg.ping_interval.max(Duration::from_millis(1));
    let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut batch = Vec::new();
    let mut resyncing = HashSet::new();
    // Created once: a fresh `cancelled()` per wake would re-register with
    // the token on every wake.
    let shutdown = conn.state.shutdown.cancelled();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return End::Shutdown,
            () = conn.outbox.notified() => {
                if conn.state.pressure.busy() {
                    // Saturated: let other games add their frames first, so
                    // they share this write.
                    tokio::task::yield_now().await;
                }
                if let Err(end) = drain(conn, held, &mut batch).await {
                    return end;
                }
                request_resyncs(conn, &mut resyncing).await;
            }
            _ = heartbeat.tick() => {
                if let Err(end) = beat(conn, &mut resyncing).await {
                    return end;
                }
            }
        }
    }
}

/// One heartbeat: drops a silent peer, pings a live one, and asks again for
/// snapshots requested earlier (a request may have found the game between
/// unsubscribe and subscribe).
async fn beat(conn: &Conn, resyncing: &mut HashSet<GameId>) -> Result<(), End> {
    if conn.silent_for() >= conn.cfg().idle_timeout {
        return Err(End::Idle);
    }
    if !conn.outbox.push_framed(wire::ping()) {
        return Err(closed_end(conn));
    }
    resyncing.clear();
    request_resyncs(conn, resyncing).await;
    Ok(())
}

/// Why a closed outbox ends the session.
fn closed_end(conn: &Conn) -> End {
    if conn.outbox.overflowed() {
        End::SlowConsumer
    } else {
        End::OutboxClosed
    }
}

/// Writes everything queued, batch after batch, each within
/// `ws.write_timeout`, then parks the socket for direct writes again.
async fn drain(conn: &Conn, held: &mut Option<Socket>, batch: &mut Vec<Item>) -> Result<(), End> {
    loop {
        batch.clear();
        match conn.outbox.take(batch, held) {
            Take::Idle => return Ok(()),
            Take::Closed => return Err(closed_end(conn)),
            Take::Frames => {}
        }
        let Some(socket) = held.as_mut() else {
            // Frames queued before the socket was attached; it comes with
            // the next wake-up.
            return Ok(());
        };
        let mut sent = FrameCounts::default();
        for item in batch.iter() {
            sent.add(item.kind);
        }
        timed(conn.cfg().write_timeout, socket.write_all(batch)).await?;
        sent.record();
    }
}

/// Runs one socket write, bounded by `limit`.
async fn timed<E: std::fmt::Display>(
    limit: Duration,
    write: impl Future<Output = Result<(), E>>,
) -> Result<(), End> {
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "write failed");
            Err(End::WriteFailed)
        }
        Err(_) => Err(End::WriteStalled),
    }
}

/// Asks each conflated game's actor for one fresh snapshot, once the queue
/// has drained. `asked` remembers requests still in flight.
async fn request_resyncs(conn: &Conn, asked: &mut HashSet<GameId>) {
    let stale = conn.outbox.stale_when_drained();
    asked.retain(|g| stale.contains(g));
    for game in stale {
        if asked.contains(&game) {
            continue;
        }
        if let Some(handle) = conn.registry().get(&game) {
            handle.resync(conn.id).await;
        }
        asked.insert(game);
    }
}

/// Frames written in one batch, by kind, recorded once per batch.
#[derive(Debug, Default)]
struct FrameCounts([u64; 4]);

impl FrameCounts {
    const KINDS: [FrameKind; 4] = [
        FrameKind::Snapshot,
        FrameKind::Diff,
        FrameKind::Error,
        FrameKind::Pong,
    ];

    fn add(&mut self, kind: Option<FrameKind>) {
        if let Some(i) = Self::KINDS.iter().position(|k| Some(*k) == kind) {
            self.0[i] += 1;
        }
    }

    fn record(&self) {
        for (kind, n) in Self::KINDS.iter().zip(self.0) {
            if n > 0 {
                m::frames_sent(*kind).increment(n);
            }
        }
    }
}

/// Ends the session once its outbox has stayed conflated for
/// `ws.stuck_timeout`. Polled beside the writer, so it fires even while a
/// socket write is blocked on a fan that does not read.
async fn watch_stuck(conn: &Conn) -> End {
    let limit = conn.cfg().stuck_timeout;
    loop {
        match conn.outbox.conflated_since() {
            Some(since) if since.elapsed() >= limit => return End::Stuck,
            Some(since) => tokio::time::sleep_until(since + limit).await,
            None => conn.outbox.conflation_started().await,
        }
    }
}

// ---------------------------------------------------------------- ending

/// Counts why the session ended, sends the close frame that says so, and
/// waits briefly for the client's reply (closing a socket with unread input
/// would reset it and could lose the close frame).
async fn say_goodbye(held: Option<Socket>, reader: &mut Reader, conn: &Conn, end: End) {
    if end.by_server() {
        metrics::counter!(m::WS_CLOSED, "reason" => end.label()).increment(1);
    }
    if matches!(end, End::SlowConsumer | End::Stuck | End::WriteStalled) {
        metrics::counter!(m::SLOW_CONSUMER, "action" => "disconnected").increment(1);
    }
    tracing::debug!(reason = end.label(), "fan disconnected");
    let grace = CLOSE_GRACE.min(conn.cfg().write_timeout);
    // The socket leaves the outbox first: no game actor writes to it from
    // here on, so no diff can follow the close frame (or the close reply).
    let socket = held.or_else(|| conn.outbox.detach());
    if end == End::ClientClosed {
        // tungstenite answers a client's close frame; have it hand the reply
        // to the outbox, where it queues.
        let _ = tokio::time::timeout(grace, reader.flush()).await;
    }
    let Leftovers {
        frames: mut last,
        begun,
    } = conn.outbox.close();
    let Some(mut socket) = socket else { return };
    if socket.is_mid_frame() && !begun {
        // The socket stopped inside a frame whose rest went with a write
        // the session's end cancelled: anything written now would land
        // inside that frame. Drop the connection without a close frame.
        tracing::debug!(
            reason = end.label(),
            "closing without a close frame: the socket is inside a frame"
        );
        return;
    }
    let close = end.close_frame();
    if let Some((code, reason)) = close {
        last.push(Wire::Framed(wire::close(code.into(), reason)));
    }
    if last.is_empty() || matches!(end, End::WriteStalled | End::WriteFailed) {
        return;
    }
    if timed(grace, socket.write_all(&last)).await.is_ok() && close.is_some() {
        await_close_reply(reader, grace).await;
    }
}

/// Reads (and ignores) client frames until its close frame, the end of the
/// stream, or `limit`.
async fn await_close_reply(reader: &mut Reader, limit: Duration) {
    let reply = async {
        while let Some(Ok(msg)) = reader.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(limit, reply).await;
}

/// Removes every subscription and league watch of the connection.
async fn teardown(conn: &Conn, subs: &Subscriptions) {
    let registry = conn.registry();
    let mut games = subs.games.clone();
    for league in &subs.leagues {
        // Unwatch first, so a game created meanwhile is not subscribed again.
        registry.unwatch_league(league, conn.id).await;
        games.extend(
            registry
                .loaded_league_games(league)
                .iter()
                .map(|h| h.id().clone()),
        );
    }
    for game in games {
        if let Some(handle) = registry.get(&game) {
            handle.unsubscribe(conn.id).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::IntoFuture;

    use axum::Router;
    use axum::routing::get;
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::Message as WsMsg;
    use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

    use super::*;
    use crate::codec::DecodedFrame;
    use crate::config::Config;
    use crate::domain::{Action, Event, NewGame, NewTeam, Side};
    use crate::server::Hub;

    type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

    /// Generous bound on waiting for something that must happen.
    const PATIENCE: Duration = Duration::from_secs(20);

    struct TestHub {
        state: AppState,
        addr: SocketAddr,
        _dir: tempfile::TempDir,
    }

    /// A hub on 127.0.0.1:0 serving only `/v1/ws`, with `ws` limits.
    async fn start(ws: WsConfig) -> TestHub {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.storage.dir = dir.path().to_path_buf();
        config.storage.fsync = false;
        config.ws = ws;
        let hub = Hub::open(config, &[7u8; 32]).unwrap();
        let state = hub.state().clone();
        let app = Router::new()
            .route("/v1/ws", get(ws_handler))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serve = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        );
        tokio::spawn(serve.into_future());
        TestHub {
            state,
            addr,
            _dir: dir,
        }
    }

    impl TestHub {
        async fn connect(&self, query: &str) -> Client {
            let url = format!("ws://{}/v1/ws{query}", self.addr);
            tokio_tungstenite::connect_async(url).await.unwrap().0
        }

        async fn game(&self, id: &str) -> GameHandle {
            let body = NewGame {
                home: NewTeam {
                    name: "Home".into(),
                },
                away: NewTeam {
                    name: "Away".into(),
                },
                status: None,
                period: None,
                extra: None,
            };
            let id = GameId::parse(id).unwrap();
            self.state
                .registry
                .create(id, body, "test")
                .await
                .unwrap()
                .0
        }
    }

    async fn post(game: &GameHandle, event_id: String, action: Action) {
        let event = Event {
            event_id,
            expected_seq: None,
            action,
        };
        game.apply(event, Arc::from("test"), std::time::Instant::now())
            .await
            .unwrap();
    }

    async fn score(game: &GameHandle, n: u64) {
        let action = Action::Score {
            team: Side::Home,
            points: 1,
        };
        post(game, format!("score-{n}"), action).await;
    }

    async fn send(client: &mut Client, text: &str) {
        client.send(WsMsg::text(text)).await.unwrap();
    }

    /// The next server frame, skipping pings.
    async fn next_frame(client: &mut Client) -> DecodedFrame {
        loop {
            let msg = tokio::time::timeout(PATIENCE, client.next())
                .await
                .expect("a frame in time")
                .expect("connection open")
                .expect("readable frame");
            match msg {
                WsMsg::Binary(bytes) => return codec::decode_frame(&bytes).unwrap(),
                WsMsg::Ping(_) | WsMsg::Pong(_) => continue,
                other => panic!("unexpected message {other:?}"),
            }
        }
    }

    /// Reads until the close frame; its code and every frame before it.
    async fn read_until_close(client: &mut Client) -> (Option<u16>, Vec<DecodedFrame>) {
        let mut frames = Vec::new();
        loop {
            let msg = tokio::time::timeout(PATIENCE, client.next())
                .await
                .expect("the server closes in time");
            match msg {
                Some(Ok(WsMsg::Binary(bytes))) => {
                    frames.push(codec::decode_frame(&bytes).unwrap());
                }
                Some(Ok(WsMsg::Close(frame))) => {
                    // Keep polling so the client's close reply goes out.
                    while let Ok(Some(Ok(_))) = tokio::time::timeout(PATIENCE, client.next()).await
                    {
                    }
                    return (frame.map(|f| u16::from(f.code)), frames);
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return (None, frames),
            }
        }
    }

    #[test]
    fn query_lists_split_on_commas_and_skip_blanks() {
        let q = WsQuery {
            games: Some("nba:a, nba:b,,".into()),
            leagues: Some("nhl".into()),
        };
        assert_eq!(
            q.initial_sub(),
            Some(ClientMsg::Sub {
                games: vec!["nba:a".into(), "nba:b".into()],
                leagues: vec!["nhl".into()],
                since: BTreeMap::new(),
            })
        );
    }

    #[test]
    fn empty_query_subscribes_to_nothing() {
        assert_eq!(WsQuery::default().initial_sub(), None);
        let q = WsQuery {
            games: Some(" , ".into()),
            leagues: Some(String::new()),
        };
        assert_eq!(q.initial_sub(), None);
    }

    #[test]
    fn every_server_end_has_a_fitting_close_code() {
        assert_eq!(End::Flood.close_frame().map(|c| u16::from(c.0)), Some(1008));
        assert_eq!(
            End::SlowConsumer.close_frame().map(|c| u16::from(c.0)),
            Some(1008)
        );
        assert_eq!(End::Stuck.close_frame().map(|c| u16::from(c.0)), Some(1008));
        assert_eq!(
            End::BadUtf8.close_frame().map(|c| u16::from(c.0)),
            Some(1007)
        );
        assert_eq!(
            End::TooBig.close_frame().map(|c| u16::from(c.0)),
            Some(1009)
        );
        assert_eq!(
            End::Shutdown.close_frame().map(|c| u16::from(c.0)),
            Some(1001)
        );
        assert_eq!(End::WriteStalled.close_frame(), None);
        assert!(!End::ClientClosed.by_server());
    }

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
    async fn query_subscribes_games_and_leagues_at_once() {
        let hub = start(WsConfig::default()).await;
        hub.game("nba:g1").await;
        hub.game("nhl:h1").await;
        let mut fan = hub.connect("?games=nba:g1&leagues=nhl").await;
        let mut seen = [next_frame(&mut fan).await, next_frame(&mut fan).await];
        seen.sort_by(|a, b| a.g.cmp(&b.g));
        let games: Vec<_> = seen
            .iter()
            .map(|f| (f.t.as_str(), f.g.as_deref()))
            .collect();
        assert_eq!(games, [("s", Some("nba:g1")), ("s", Some("nhl:h1"))]);
        // A game created later in the watched league arrives by itself.
        hub.game("nhl:h2").await;
        let late = next_frame(&mut fan).await;
        assert_eq!((late.t.as_str(), late.g.as_deref()), ("s", Some("nhl:h2")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resume_with_since_gets_only_the_missed_diffs() {
        let hub = start(WsConfig::default()).await;
        let game = hub.game("nba:g1").await;
        for n in 1..=3 {
            score(&game, n).await;
        }
        let mut fan = hub.connect("").await;
        send(
            &mut fan,
            r#"{"op":"sub","games":["nba:g1"],"since":{"nba:g1":1}}"#,
        )
        .await;
        for q in [2, 3] {
            let f = next_frame(&mut fan).await;
            assert_eq!((f.t.as_str(), f.q), ("d", Some(q)));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_messages_get_error_frames_and_the_connection_stays() {
        let ws = WsConfig {
            max_subscriptions: 1,
            ..WsConfig::default()
        };
        let hub = start(ws).await;
        hub.game("nba:g1").await;
        hub.game("nba:g2").await;
        let mut fan = hub.connect("").await;
        let cases = [
            (
                r#"{"op":"sub","games":["no colon"]}"#,
                "invalid_game_id",
                Some("no colon"),
            ),
            (
                r#"{"op":"sub","games":["nba:missing"]}"#,
                "game_not_found",
                Some("nba:missing"),
            ),
            (r#"{"op":"dance"}"#, "bad_message", None),
            ("not json", "bad_message", None),
            (r#"{"op":"sub","leagues":["NBA!"]}"#, "invalid_league", None),
            (
                r#"{"op":"sub","games":["nba:g1","nba:g2"]}"#,
                "too_many_subscriptions",
                None,
            ),
            (
                r#"{"op":"sub","leagues":["nba"]}"#,
                "too_many_subscriptions",
                None,
            ),
        ];
        for (msg, code, game) in cases {
            send(&mut fan, msg).await;
            let f = next_frame(&mut fan).await;
            assert_eq!(f.t, "e", "{msg}");
            assert_eq!(f.code.as_deref(), Some(code), "{msg}");
            assert_eq!(f.g.as_deref(), game, "{msg}");
            assert!(f.msg.is_some_and(|m| !m.is_empty()));
        }
        // A binary (MessagePack) ping still works: the connection is open.
        let ping = rmp_serde::to_vec_named(&serde_json::json!({"op": "ping"})).unwrap();
        fan.send(WsMsg::binary(ping)).await.unwrap();
        assert_eq!(next_frame(&mut fan).await.t, "p");
        // One game is within the limit.
        send(&mut fan, r#"{"op":"sub","games":["nba:g1"]}"#).await;
        assert_eq!(next_frame(&mut fan).await.t, "s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unsub_stops_the_diffs_of_that_game() {
        let hub = start(WsConfig::default()).await;
        let g1 = hub.game("nba:g1").await;
        let g2 = hub.game("nba:g2").await;
        let mut fan = hub.connect("?leagues=nba").await;
        next_frame(&mut fan).await;
        next_frame(&mut fan).await;
        send(&mut fan, r#"{"op":"unsub","leagues":["nba"]}"#).await;
        send(
            &mut fan,
            r#"{"op":"sub","games":["nba:g2"],"since":{"nba:g2":0}}"#,
        )
        .await;
        // The pong proves both messages were handled before the events.
        send(&mut fan, r#"{"op":"ping"}"#).await;
        assert_eq!(next_frame(&mut fan).await.t, "p");
        score(&g1, 1).await;
        score(&g2, 1).await;
        let f = next_frame(&mut fan).await;
        assert_eq!(
            (f.t.as_str(), f.g.as_deref(), f.q),
            ("d", Some("nba:g2"), Some(1))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fan_that_never_reads_is_conflated_and_others_are_not_blocked() {
        let ws = WsConfig {
            queue_frames: 4,
            write_timeout: Duration::from_secs(120),
            stuck_timeout: Duration::from_secs(120),
            ..WsConfig::default()
        };
        let hub = start(ws).await;
        let game = hub.game("nba:big").await;
        let mut slow = hub.connect("?games=nba:big").await;
        let mut fast = hub.connect("?games=nba:big").await;
        assert_eq!(next_frame(&mut fast).await.q, Some(0));

        // ~8 KiB diffs, enough to fill every socket buffer between the hub
        // and a fan that does not read.
        const EVENTS: u64 = 2000;
        // The reading fan keeps flowing while the other one is stuck. With a
        // 4-frame queue a busy machine may conflate it too, so a snapshot is
        // allowed, but every diff must follow the frame before it.
        let reader = tokio::spawn(async move {
            let mut last = 0;
            while last < EVENTS {
                let f = next_frame(&mut fast).await;
                let q = f.q.expect("frames carry q");
                match f.t.as_str() {
                    "d" => assert_eq!(q, last + 1, "diffs are consecutive"),
                    "s" => assert!(q >= last, "a snapshot never goes back"),
                    other => panic!("unexpected frame {other}"),
                }
                last = q;
            }
        });
        for n in 1..=EVENTS {
            let extra: serde_json::Map<String, serde_json::Value> = (0..32)
                .map(|k| (format!("k{k}"), format!("{n:0>250}").into()))
                .collect();
            let patch = serde_json::json!({ "extra": extra });
            post(&game, format!("set-{n}"), Action::Set { patch }).await;
        }
        tokio::time::timeout(PATIENCE, reader)
            .await
            .unwrap()
            .unwrap();

        let mut last: Option<u64> = None;
        let (mut frames, mut snapshots) = (0, 0);
        while last != Some(EVENTS) {
            let f = next_frame(&mut slow).await;
            let q = f.q.unwrap();
            match (f.t.as_str(), last) {
                ("s", prev) => {
                    assert!(prev.is_none_or(|p| q >= p), "snapshots never go back");
                    snapshots += 1;
                }
                ("d", Some(p)) => assert_eq!(q, p + 1, "diffs stay consecutive"),
                other => panic!("unexpected frame {other:?}"),
            }
            last = Some(q);
            frames += 1;
        }
        assert!(
            snapshots >= 2,
            "the slow fan got a fresh snapshot after conflation"
        );
        assert!(
            frames < EVENTS,
            "diffs were dropped, not queued without bound"
        );
    }

    /// A client frame sent in the same packet as the upgrade request is read
    /// by the HTTP server along with it; the session must still see it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frame_right_behind_the_upgrade_request_is_not_lost() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let hub = start(WsConfig::default()).await;
        let mut tcp = TcpStream::connect(hub.addr).await.unwrap();
        let mut bytes = b"GET /v1/ws HTTP/1.1\r\nHost: hub\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Sec-WebSocket-Version: 13\r\n\r\n"
            .to_vec();
        // A masked text frame {"op":"ping"}.
        let payload = br#"{"op":"ping"}"#;
        let mask = [1u8, 2, 3, 4];
        bytes.extend_from_slice(&[0x81, 0x80 | payload.len() as u8]);
        bytes.extend_from_slice(&mask);
        bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        tcp.write_all(&bytes).await.unwrap();

        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let head_end = loop {
            let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "the hub closed the connection");
            got.extend_from_slice(&buf[..n]);
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&got[..head_end]).to_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        // RFC 6455 §1.3's example key and accept value.
        assert!(
            head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        let mut rest = got[head_end..].to_vec();
        while rest.len() < 2 || rest.len() < 2 + usize::from(rest[1]) {
            let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "the hub closed the connection");
            rest.extend_from_slice(&buf[..n]);
        }
        assert_eq!(rest[0], 0x82, "a binary frame");
        let frame = codec::decode_frame(&rest[2..2 + usize::from(rest[1])]).unwrap();
        assert_eq!(frame.t, "p", "the pong answering the early ping");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_closes_with_1008() {
        let ws = WsConfig {
            messages_per_second: 1,
            message_burst: 3,
            ..WsConfig::default()
        };
        let hub = start(ws).await;
        let mut fan = hub.connect("").await;
        for _ in 0..10 {
            send(&mut fan, r#"{"op":"ping"}"#).await;
        }
        let (code, frames) = read_until_close(&mut fan).await;
        assert_eq!(code, Some(1008));
        assert!(frames.iter().all(|f| f.t == "p"));
        assert!(frames.len() <= 3, "no more than the burst is answered");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_oversized_message_closes_with_1009() {
        let ws = WsConfig {
            max_message_bytes: 256,
            ..WsConfig::default()
        };
        let hub = start(ws).await;
        let mut fan = hub.connect("").await;
        let big = format!(r#"{{"op":"sub","games":["{}"]}}"#, "x".repeat(1000));
        send(&mut fan, &big).await;
        let (code, _) = read_until_close(&mut fan).await;
        assert_eq!(code, Some(1009));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_peer_is_dropped() {
        let ws = WsConfig {
            ping_interval: Duration::from_millis(50),
            idle_timeout: Duration::from_millis(200),
            ..WsConfig::default()
        };
        let hub = start(ws).await;
        let mut fan = hub.connect("").await;
        // Not polling the client means its pongs are never sent: silence.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (code, _) = read_until_close(&mut fan).await;
        assert_eq!(code, Some(1001));
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
        let body = NewGame {
            home: NewTeam {
                name: "Home".into(),
            },
            away: NewTeam {
                name: "Away".into(),
            },
            status: None,
            period: None,
            extra: None,
        };
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
