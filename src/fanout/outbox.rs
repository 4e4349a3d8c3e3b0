//! A fan connection's bounded outgoing queue, with conflation, and the
//! direct path to its socket.
//!
//! Game actors push frames here without ever waiting. When nothing is queued
//! and no writer task holds the socket, a push writes the frame straight to
//! the socket with one non-blocking `writev` (see `fanout::wire`):
//! the common delivery costs no task wake-up at all. Otherwise, or when the
//! socket cannot take the whole frame, the frame (or its unsent rest) is
//! queued and the connection's writer task is woken; it takes the socket,
//! drains the queue waiting for the socket as needed, and parks the socket
//! here again once the queue is empty. Order is kept: a frame is written
//! directly only when nothing is queued before it.
//!
//! When a fan falls behind and its queue is full, the diffs queued for that
//! game are dropped, the game is marked *stale*, and further diffs for it
//! are skipped until the game actor sends one fresh snapshot (requested by
//! the writer once the queue has drained). Applying the frames in order
//! therefore always yields the exact state.
//!
//! The outbox remembers when its current conflation episode began (the first
//! game went stale while none was), so the session can disconnect a fan that
//! stays behind for `ws.stuck_timeout`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::pressure::Pressure;
use super::wire::{Socket, Wire, Written};
use crate::codec::FrameKind;
use crate::domain::GameId;
use crate::metrics as m;

/// One queued frame.
#[derive(Debug, Clone)]
pub struct Item {
    /// The game it belongs to (`None` for control frames and connection errors).
    pub game: Option<GameId>,
    /// What it is (for the frames-sent metric).
    pub kind: Option<FrameKind>,
    /// Its bytes: an encoded MessagePack frame shared with other fans, or
    /// bytes already framed.
    pub wire: Wire,
}

impl AsRef<Wire> for Item {
    fn as_ref(&self) -> &Wire {
        &self.wire
    }
}

/// Drops the frames of `game` still queued, except the unsent rest of a frame
/// already begun.
fn drop_queued(inner: &mut Inner, game: &GameId) {
    if !inner.queue.iter().any(|it| it.game.as_ref() == Some(game)) {
        return;
    }
    let begun = inner.begun;
    let mut i = 0;
    inner.queue.retain(|it| {
        let keep = (i == 0 && begun) || it.game.as_ref() != Some(game);
        i += 1;
        keep
    });
    inner.bytes = inner.queue.iter().map(|it| it.wire.wire_len()).sum();
}

/// What [`Outbox::close`] leaves to send before a close frame.
#[derive(Debug, Default)]
pub struct Leftovers {
    /// In order: the rest of a frame already begun, if any, then queued
    /// control frames.
    pub frames: Vec<Wire>,
    /// `frames` starts with what the socket was in the middle of (the rest
    /// of a cut-short frame), so a socket mid-frame (`Socket::is_mid_frame`)
    /// can still be finished cleanly.
    pub begun: bool,
}

/// What happened to a pushed diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Written to the socket or queued for the writer.
    Queued,
    /// The queue was full: this game's queued diffs were dropped and a fresh
    /// snapshot will follow. Reported once per episode.
    Conflated,
    /// Skipped: the game is already waiting for a fresh snapshot.
    Skipped,
    /// The connection is gone (or over its hard byte cap); drop the subscriber.
    Closed,
}

/// How a diff may reach the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Written by the pusher when nothing is queued before it: the fastest
    /// way for a fan that gets a frame now and then.
    Direct,
    /// Always queued for the writer task, which runs a little later and
    /// writes everything queued by then at once: fewer, larger writes for a
    /// fan many busy games write to. Direct pushes to a fan of several games
    /// take this route while the hub is saturated.
    Deferred,
}

/// The route of a push: deferred when asked, or when the hub is `busy` and
/// the fan follows `many_games`.
fn route_for(asked: Route, many_games: bool, busy: bool) -> Route {
    if asked == Route::Deferred || (many_games && busy) {
        Route::Deferred
    } else {
        Route::Direct
    }
}

/// What [`Outbox::take`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Frames were moved out; write them with the socket now held.
    Frames,
    /// Nothing queued: the socket (if held) was parked for direct writes.
    Idle,
    /// The connection is closed.
    Closed,
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Item>,
    bytes: usize,
    stale: Vec<GameId>,
    /// When `stale` last went from empty to non-empty; `None` while empty.
    conflated_since: Option<Instant>,
    closed: bool,
    overflowed: bool,
    /// The queue's first item is the unsent rest of a frame a direct write
    /// cut short: it must go out before anything else, whatever happens.
    begun: bool,
    /// The socket, while no writer task holds it (then the queue is empty).
    socket: Option<Socket>,
    /// The fan follows more than one game (or a league): its frames from
    /// different games can share a write.
    many_games: bool,
}

/// The bounded queue between game actors and one fan's socket.
#[derive(Debug)]
pub struct Outbox {
    conn_id: u64,
    max_frames: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
    notify: Notify,
    /// Woken when a conflation episode begins.
    behind: Notify,
    /// The hub's saturation signal, read on every direct push.
    pressure: Arc<Pressure>,
}

/// Whether the writer task must be woken after a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    No,
    Writer,
}

impl Outbox {
    /// A queue for connection `conn_id`, conflating above `max_frames` queued
    /// diffs and closing the connection above `max_bytes` queued in total.
    /// Frames are only queued until a socket is [attached](Outbox::attach).
    /// `pressure` is the hub's saturation signal (see [`Route`]).
    pub fn new(
        conn_id: u64,
        max_frames: usize,
        max_bytes: usize,
        pressure: Arc<Pressure>,
    ) -> Outbox {
        Outbox {
            conn_id,
            max_frames: max_frames.max(1),
            max_bytes: max_bytes.max(1),
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            behind: Notify::new(),
            pressure,
        }
    }

    /// The connection this queue belongs to.
    pub fn conn_id(&self) -> u64 {
        self.conn_id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave `Inner` inconsistent
        // (every update is a single push/retain), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parks the connection's socket here: pushes to an empty queue write
    /// straight to it from now on. Anything queued before wakes the writer.
    pub fn attach(&self, socket: Socket) {
        let queued = {
            let mut inner = self.lock();
            inner.socket = Some(socket);
            !inner.queue.is_empty()
        };
        if queued {
            self.notify.notify_one();
        }
    }

    /// Takes the socket back if it is parked here (to say goodbye).
    pub fn detach(&self) -> Option<Socket> {
        self.lock().socket.take()
    }

    /// Delivers `item`: straight to the parked socket when nothing is queued,
    /// else to the end of the queue. Caller checked `closed`.
    fn deliver(&self, inner: &mut Inner, item: Item) -> Wake {
        match self.write_direct(inner, std::slice::from_ref(&item.wire)) {
            Err(()) => Wake::Writer,
            Ok(Written { done: 1, .. }) => {
                if let Some(kind) = item.kind {
                    m::frames_sent(kind).increment(1);
                }
                Wake::No
            }
            // Not written, or cut short: the writer finishes it first.
            Ok(Written { rest, .. }) => {
                let Item { game, kind, wire } = item;
                let begun = rest.is_some();
                let wire = rest.unwrap_or(wire);
                let wake = self.enqueue(inner, Item { game, kind, wire });
                inner.begun |= begun && !inner.closed;
                wake
            }
        }
    }

    fn enqueue(&self, inner: &mut Inner, item: Item) -> Wake {
        inner.bytes += item.wire.wire_len();
        if inner.bytes > self.max_bytes {
            inner.overflowed = true;
            inner.closed = true;
            // The rest of a frame already begun stays: the goodbye finishes
            // it before its close frame.
            let begun = if inner.begun {
                inner.queue.pop_front()
            } else {
                None
            };
            inner.queue.clear();
            inner.bytes = begun.as_ref().map_or(0, |it| it.wire.wire_len());
            inner.queue.extend(begun);
            return Wake::Writer;
        }
        let was_empty = inner.queue.is_empty();
        inner.queue.push_back(item);
        if was_empty { Wake::Writer } else { Wake::No }
    }

    fn wake(&self, wake: Wake) {
        if wake == Wake::Writer {
            self.notify.notify_one();
        }
    }

    /// Queues a diff of `game`, never waiting. See [`Push`].
    pub fn push_diff(&self, game: &GameId, frame: &Bytes) -> Push {
        self.push_diffs(game, &[Wire::Binary(frame.clone())], Route::Direct)
    }

    /// Queues consecutive diffs of `game` (MessagePack payloads, as
    /// `Wire::Binary`), never waiting: with `Route::Direct` and nothing
    /// queued they go out in one non-blocking `writev`. See [`Push`].
    pub fn push_diffs(&self, game: &GameId, frames: &[Wire], route: Route) -> Push {
        let wake;
        {
            let mut inner = self.lock();
            if inner.closed {
                return Push::Closed;
            }
            if inner.stale.iter().any(|g| g == game) {
                return Push::Skipped;
            }
            if inner.queue.len() + frames.len() > self.max_frames {
                drop_queued(&mut inner, game);
                let episode_starts = inner.stale.is_empty();
                if episode_starts {
                    inner.conflated_since = Some(Instant::now());
                }
                inner.stale.push(game.clone());
                // Wake the writer in case it is idle: it requests the snapshot
                // once the queue has drained.
                drop(inner);
                self.notify.notify_one();
                if episode_starts {
                    self.behind.notify_one();
                }
                return Push::Conflated;
            }
            let mut sent = 0;
            let mut rest = None;
            if self.route(&inner, route) == Route::Direct {
                match self.write_direct(&mut inner, frames) {
                    Ok(written) => {
                        sent = written.done;
                        rest = written.rest;
                    }
                    Err(()) => {
                        drop(inner);
                        self.notify.notify_one();
                        return Push::Closed;
                    }
                }
            }
            if sent > 0 {
                m::frames_sent(FrameKind::Diff).increment(sent as u64);
            }
            // The frame cut short is queued as its rest, not again whole.
            let unsent = &frames[(sent + usize::from(rest.is_some())).min(frames.len())..];
            wake = self.enqueue_diffs(&mut inner, game, rest, unsent);
            if inner.closed {
                drop(inner);
                self.notify.notify_one();
                return Push::Closed;
            }
        }
        self.wake(wake);
        Push::Queued
    }

    /// How this push travels: `Route::Direct` becomes deferred while the
    /// hub is saturated and the fan follows several games, so its frames
    /// from different games gather into shared writes. A fan of one game
    /// gains nothing from waiting: its frames of one commit already share a
    /// write.
    fn route(&self, inner: &Inner, asked: Route) -> Route {
        route_for(asked, inner.many_games, self.pressure.busy())
    }

    /// Tells the outbox whether its fan follows more than one game (or any
    /// league); see [`Route`].
    pub fn set_many_games(&self, many: bool) {
        self.lock().many_games = many;
    }

    /// Writes `frames` straight to the parked socket when nothing is queued
    /// before them; how far it got. `Err` when the socket failed (the
    /// connection is closed then).
    fn write_direct(&self, inner: &mut Inner, frames: &[Wire]) -> Result<Written, ()> {
        let none = Written {
            done: 0,
            rest: None,
        };
        if !inner.queue.is_empty() {
            return Ok(none);
        }
        let Some(socket) = inner.socket.as_mut() else {
            return Ok(none);
        };
        match socket.try_write_batch(frames) {
            Ok(written) => Ok(written),
            Err(e) => {
                tracing::debug!(error = %e, "direct write failed");
                inner.closed = true;
                inner.queue.clear();
                inner.bytes = 0;
                inner.begun = false;
                Err(())
            }
        }
    }

    /// Queues the rest of a frame cut short (it goes first) and `frames`.
    fn enqueue_diffs(
        &self,
        inner: &mut Inner,
        game: &GameId,
        rest: Option<Wire>,
        frames: &[Wire],
    ) -> Wake {
        let mut wake = Wake::No;
        let begun = rest.is_some();
        for (i, wire) in rest.into_iter().chain(frames.iter().cloned()).enumerate() {
            let item = Item {
                game: Some(game.clone()),
                kind: Some(FrameKind::Diff),
                wire,
            };
            if self.enqueue(inner, item) == Wake::Writer {
                wake = Wake::Writer;
            }
            if inner.closed {
                break;
            }
            if i == 0 && begun {
                inner.begun = true;
            }
        }
        wake
    }

    /// Queues a snapshot of `game` (not subject to the frame limit) and clears
    /// the game's stale mark: diffs after it flow again. `false` when closed.
    pub fn push_snapshot(&self, game: &GameId, frame: Bytes) -> bool {
        let item = Item {
            game: Some(game.clone()),
            kind: Some(FrameKind::Snapshot),
            wire: Wire::Binary(frame),
        };
        self.push_with(item, |inner| {
            inner.stale.retain(|g| g != game);
            if inner.stale.is_empty() {
                inner.conflated_since = None;
            }
            // Anything still queued for this game is superseded by the snapshot.
            drop_queued(inner, game);
        })
    }

    /// Queues an occupancy frame of `game` (how many fans watch it). It is
    /// worth less than the game's state, so it is skipped, not queued, while
    /// the game waits for a fresh snapshot (which carries the count) or
    /// when the queue holds `max_frames` already: the next change sends a
    /// newer one. Like a snapshot it is not counted as a diff and a
    /// conflation of the game drops it. `false` when closed.
    pub fn push_occupancy(&self, game: &GameId, frame: Bytes) -> bool {
        {
            let inner = self.lock();
            if inner.closed {
                return false;
            }
            if inner.queue.len() >= self.max_frames || inner.stale.iter().any(|g| g == game) {
                return true;
            }
        }
        self.push(Item {
            game: Some(game.clone()),
            kind: Some(FrameKind::Occupancy),
            wire: Wire::Binary(frame),
        })
    }

    /// Queues a pong or error frame. `false` when closed.
    pub fn push_control(&self, kind: FrameKind, game: Option<GameId>, frame: Bytes) -> bool {
        self.push(Item {
            game,
            kind: Some(kind),
            wire: Wire::Binary(frame),
        })
    }

    /// Queues bytes that are already a complete WebSocket frame (a ping, a
    /// pong or close reply). `false` when closed.
    pub fn push_framed(&self, bytes: Bytes) -> bool {
        self.push(Item {
            game: None,
            kind: None,
            wire: Wire::Framed(bytes),
        })
    }

    fn push(&self, item: Item) -> bool {
        self.push_with(item, |_| {})
    }

    /// Delivers `item` after `prepare` has updated the queue under the same
    /// lock; wakes the writer if needed. `false` when closed.
    fn push_with(&self, item: Item, prepare: impl FnOnce(&mut Inner)) -> bool {
        let wake;
        {
            let mut inner = self.lock();
            if inner.closed {
                return false;
            }
            prepare(&mut inner);
            wake = self.deliver(&mut inner, item);
            if inner.closed {
                drop(inner);
                self.notify.notify_one();
                return false;
            }
        }
        self.wake(wake);
        true
    }

    /// Marks the connection closed; later pushes report [`Push::Closed`].
    /// Returns what must still go out before a close frame can: the unsent
    /// rest of a frame already begun, and queued control frames (a close
    /// reply, say). The session sends them, then its goodbye, if it can.
    pub fn close(&self) -> Leftovers {
        let mut inner = self.lock();
        inner.closed = true;
        let begun = std::mem::take(&mut inner.begun);
        let frames = inner
            .queue
            .drain(..)
            .enumerate()
            .filter(|(i, it)| (*i == 0 && begun) || it.kind.is_none())
            .map(|(_, it)| it.wire)
            .collect();
        inner.bytes = 0;
        drop(inner);
        self.notify.notify_one();
        Leftovers { frames, begun }
    }

    /// Forgets `game` (the fan unsubscribed): its queued frames go (except
    /// the rest of a frame already begun), and it no longer waits for a
    /// fresh snapshot, so a fan that has caught up is not taken for stuck.
    pub fn forget(&self, game: &GameId) {
        let mut inner = self.lock();
        drop_queued(&mut inner, game);
        inner.stale.retain(|g| g != game);
        if inner.stale.is_empty() {
            inner.conflated_since = None;
        }
    }

    /// Whether `game` waits for a fresh snapshot (its diffs are being skipped).
    pub fn is_stale(&self, game: &GameId) -> bool {
        self.lock().stale.iter().any(|g| g == game)
    }

    /// Since when at least one game has been waiting for a fresh snapshot
    /// without a break; `None` when no game is.
    pub fn conflated_since(&self) -> Option<Instant> {
        self.lock().conflated_since
    }

    /// Waits until a conflation episode may have begun (spurious wake-ups
    /// possible: check [`Outbox::conflated_since`]). For one waiter.
    pub async fn conflation_started(&self) {
        self.behind.notified().await;
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Whether the queue was closed because it exceeded its byte cap (a fan
    /// that stopped reading).
    pub fn overflowed(&self) -> bool {
        self.lock().overflowed
    }

    /// The writer's step: moves every queued frame into `out` (appending)
    /// and makes sure the writer holds the socket (`held`); or, with nothing
    /// queued, parks the held socket here for direct writes. See [`Take`].
    pub fn take(&self, out: &mut Vec<Item>, held: &mut Option<Socket>) -> Take {
        let mut inner = self.lock();
        if inner.closed {
            return Take::Closed;
        }
        if inner.queue.is_empty() {
            if let Some(socket) = held.take() {
                inner.socket = Some(socket);
            }
            return Take::Idle;
        }
        if held.is_none() {
            *held = inner.socket.take();
        }
        out.extend(inner.queue.drain(..));
        inner.bytes = 0;
        // The writer finishes a begun frame first; its socket knows.
        inner.begun = false;
        Take::Frames
    }

    /// Games waiting for a fresh snapshot, when the queue is empty (the fan
    /// has caught up). Empty otherwise.
    pub fn stale_when_drained(&self) -> Vec<GameId> {
        let inner = self.lock();
        if inner.queue.is_empty() {
            inner.stale.clone()
        } else {
            Vec::new()
        }
    }

    /// Waits until something may have been queued (or the queue closed).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str) -> GameId {
        GameId::parse(s).unwrap()
    }

    /// The saturation signal of a hub that keeps up.
    fn calm() -> Arc<Pressure> {
        Arc::new(Pressure::new())
    }

    #[test]
    fn conflates_one_game_and_resumes_after_snapshot() {
        let ob = Outbox::new(1, 3, 1 << 20, calm());
        let (a, b) = (g("x:a"), g("x:b"));
        let f = Bytes::from_static(b"diff");
        assert_eq!(ob.push_diff(&a, &f), Push::Queued);
        assert_eq!(ob.push_diff(&b, &f), Push::Queued);
        assert_eq!(ob.push_diff(&a, &f), Push::Queued);
        // Full: a's diffs are dropped, b's stay.
        assert_eq!(ob.push_diff(&a, &f), Push::Conflated);
        assert_eq!(ob.push_diff(&a, &f), Push::Skipped);
        assert!(ob.stale_when_drained().is_empty(), "queue not drained yet");
        let mut out = Vec::new();
        assert_eq!(ob.take(&mut out, &mut None), Take::Frames);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].game.as_ref(), Some(&b));
        assert_eq!(ob.stale_when_drained(), vec![a.clone()]);
        assert!(ob.push_snapshot(&a, Bytes::from_static(b"snap")));
        assert!(ob.stale_when_drained().is_empty());
        assert_eq!(ob.push_diff(&a, &f), Push::Queued);
    }

    #[tokio::test(start_paused = true)]
    async fn remembers_when_conflation_began_until_every_game_resyncs() {
        let ob = Outbox::new(1, 1, 1 << 20, calm());
        let (a, b) = (g("x:a"), g("x:b"));
        let f = Bytes::from_static(b"diff");
        assert_eq!(ob.conflated_since(), None);
        assert_eq!(ob.push_diff(&a, &f), Push::Queued);
        let began = Instant::now();
        assert_eq!(ob.push_diff(&a, &f), Push::Conflated);
        // The episode start wakes a waiter (its permit was stored).
        tokio::time::timeout(std::time::Duration::from_secs(1), ob.conflation_started())
            .await
            .unwrap();
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        assert_eq!(ob.push_diff(&b, &f), Push::Queued);
        assert_eq!(ob.push_diff(&b, &f), Push::Conflated);
        assert_eq!(ob.conflated_since(), Some(began), "one episode, two games");
        assert!(ob.push_snapshot(&a, Bytes::from_static(b"snap")));
        assert_eq!(ob.conflated_since(), Some(began), "b still waits");
        assert!(ob.push_snapshot(&b, Bytes::from_static(b"snap")));
        assert_eq!(ob.conflated_since(), None, "caught up");
    }

    #[test]
    fn closes_above_byte_cap_and_after_close() {
        let ob = Outbox::new(1, 1000, 10, calm());
        let a = g("x:a");
        assert_eq!(
            ob.push_diff(&a, &Bytes::from_static(b"12345")),
            Push::Queued
        );
        assert_eq!(
            ob.push_diff(&a, &Bytes::from_static(b"123456")),
            Push::Closed
        );
        assert!(ob.overflowed());
        let ob = Outbox::new(2, 10, 100, calm());
        ob.close();
        assert_eq!(ob.push_diff(&a, &Bytes::from_static(b"1")), Push::Closed);
        assert!(!ob.push_snapshot(&a, Bytes::from_static(b"1")));
        assert_eq!(ob.take(&mut Vec::new(), &mut None), Take::Closed);
    }

    /// A socket over an in-memory pipe of `capacity` bytes, and its reader.
    fn pipe(capacity: usize) -> (Socket, tokio::io::DuplexStream) {
        let (client, server) = tokio::io::duplex(capacity);
        (Socket::new(server), client)
    }

    async fn read_available(client: &mut tokio::io::DuplexStream) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 16];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), client.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        buf.truncate(n);
        buf
    }

    #[tokio::test]
    async fn an_idle_socket_is_written_directly_without_queueing() {
        let ob = Outbox::new(1, 8, 1 << 20, calm());
        let (socket, mut client) = pipe(1 << 16);
        ob.attach(socket);
        let a = g("x:a");
        assert_eq!(ob.push_diff(&a, &Bytes::from_static(b"d1")), Push::Queued);
        // Nothing queued: the writer has nothing to do and keeps no socket.
        let mut held = None;
        assert_eq!(ob.take(&mut Vec::new(), &mut held), Take::Idle);
        assert!(held.is_none());
        assert_eq!(read_available(&mut client).await, [0x82, 2, b'd', b'1']);
    }

    #[tokio::test]
    async fn a_full_socket_hands_the_rest_to_the_writer_in_order() {
        let ob = Outbox::new(1, 8, 1 << 20, calm());
        // Room for the first frame's header and 3 payload bytes only.
        let (socket, mut client) = pipe(5);
        ob.attach(socket);
        let a = g("x:a");
        assert_eq!(
            ob.push_diff(&a, &Bytes::from_static(b"abcdef")),
            Push::Queued
        );
        assert_eq!(ob.push_diff(&a, &Bytes::from_static(b"gh")), Push::Queued);
        // A snapshot supersedes the queued diff but not the begun frame.
        assert!(ob.push_snapshot(&a, Bytes::from_static(b"S")));
        let mut out = Vec::new();
        let mut held = None;
        assert_eq!(ob.take(&mut out, &mut held), Take::Frames);
        let socket = held.as_mut().expect("the writer holds the socket");
        assert_eq!(out.len(), 2, "rest of the first diff, then the snapshot");
        let write = async {
            socket.write_all(&out).await.unwrap();
        };
        let read = async {
            let mut got = Vec::new();
            while got.len() < 8 + 3 {
                got.extend(read_available(&mut client).await);
            }
            got
        };
        let ((), got) = tokio::join!(write, read);
        assert_eq!(
            got,
            [0x82, 6, b'a', b'b', b'c', b'd', b'e', b'f', 0x82, 1, b'S']
        );
        // Drained: the writer parks the socket for direct writes again.
        assert_eq!(ob.take(&mut Vec::new(), &mut held), Take::Idle);
        assert!(held.is_none());
        assert_eq!(ob.push_diff(&a, &Bytes::from_static(b"z")), Push::Queued);
        assert_eq!(read_available(&mut client).await, [0x82, 1, b'z']);
    }

    #[tokio::test]
    async fn close_keeps_a_begun_frame_and_control_frames_only() {
        let ob = Outbox::new(1, 8, 1 << 20, calm());
        let (socket, _client) = pipe(3);
        ob.attach(socket);
        let a = g("x:a");
        assert_eq!(
            ob.push_diff(&a, &Bytes::from_static(b"abcdef")),
            Push::Queued
        );
        assert_eq!(ob.push_diff(&a, &Bytes::from_static(b"gh")), Push::Queued);
        assert!(ob.push_framed(Bytes::from_static(&[0x8a, 0])));
        let finish = ob.close();
        assert!(finish.begun);
        assert_eq!(
            finish.frames,
            vec![
                Wire::Framed(Bytes::from_static(b"bcdef")),
                Wire::Framed(Bytes::from_static(&[0x8a, 0]))
            ]
        );
        assert_eq!(ob.push_diff(&a, &Bytes::from_static(b"x")), Push::Closed);
    }

    #[tokio::test]
    async fn a_batch_cut_short_goes_out_once_and_in_order() {
        let ob = Outbox::new(1, 8, 1 << 20, calm());
        // Room for the first frame (2 + 3 bytes) and 2 bytes of the second.
        let (socket, mut client) = pipe(7);
        ob.attach(socket);
        let a = g("x:a");
        let frames = [
            Wire::Binary(Bytes::from_static(b"one")),
            Wire::Binary(Bytes::from_static(b"two")),
            Wire::Binary(Bytes::from_static(b"three")),
        ];
        assert_eq!(ob.push_diffs(&a, &frames, Route::Direct), Push::Queued);
        let mut out = Vec::new();
        let mut held = None;
        assert_eq!(ob.take(&mut out, &mut held), Take::Frames);
        assert_eq!(out.len(), 2, "the rest of `two`, then `three`");
        let socket = held.as_mut().expect("the writer holds the socket");
        let expected: &[u8] = b"\x82\x03one\x82\x03two\x82\x05three";
        let read = async {
            let mut got = Vec::new();
            while got.len() < expected.len() {
                got.extend(read_available(&mut client).await);
            }
            got
        };
        let (written, got) = tokio::join!(socket.write_all(&out), read);
        written.unwrap();
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn deferred_diffs_wait_for_the_writer_even_on_an_idle_socket() {
        let ob = Outbox::new(1, 8, 1 << 20, calm());
        let (socket, _client) = pipe(1 << 16);
        ob.attach(socket);
        let a = g("x:a");
        let frames = [Wire::Binary(Bytes::from_static(b"d"))];
        assert_eq!(ob.push_diffs(&a, &frames, Route::Deferred), Push::Queued);
        let mut out = Vec::new();
        let mut held = None;
        assert_eq!(ob.take(&mut out, &mut held), Take::Frames);
        assert_eq!(out.len(), 1);
        assert!(held.is_some(), "the writer took the socket");
    }

    #[test]
    fn only_a_fan_of_several_games_waits_and_only_while_the_hub_is_busy() {
        use Route::{Deferred, Direct};
        assert_eq!(route_for(Direct, false, false), Direct);
        assert_eq!(
            route_for(Direct, false, true),
            Direct,
            "one game: nothing to share"
        );
        assert_eq!(
            route_for(Direct, true, false),
            Direct,
            "not busy: latency first"
        );
        assert_eq!(route_for(Direct, true, true), Deferred);
        assert_eq!(route_for(Deferred, false, false), Deferred);
    }

    #[tokio::test]
    async fn only_the_outboxes_of_a_busy_hub_defer_direct_pushes() {
        let busy = calm();
        busy.set_busy(true);
        let a = g("x:a");
        let frames = [Wire::Binary(Bytes::from_static(b"d"))];
        let mut held = None;
        let mut out = Vec::new();
        // A fan of several games on the busy hub: queued for the writer.
        let ob = Outbox::new(1, 8, 1 << 20, busy);
        let (socket, _client) = pipe(1 << 16);
        ob.attach(socket);
        ob.set_many_games(true);
        assert_eq!(ob.push_diffs(&a, &frames, Route::Direct), Push::Queued);
        assert_eq!(ob.take(&mut out, &mut held), Take::Frames);
        // The same fan on another hub, which keeps up: written at once.
        let ob = Outbox::new(2, 8, 1 << 20, calm());
        let (socket, mut client) = pipe(1 << 16);
        ob.attach(socket);
        ob.set_many_games(true);
        assert_eq!(ob.push_diffs(&a, &frames, Route::Direct), Push::Queued);
        assert!(!read_available(&mut client).await.is_empty());
        out.clear();
        assert_eq!(ob.take(&mut out, &mut None), Take::Idle);
    }
}
