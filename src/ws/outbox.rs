//! A fan connection's bounded outgoing queue, with conflation.
//!
//! Game actors push frames here without ever waiting: a push takes a short
//! mutex, appends a shared [`Bytes`], and wakes the socket writer only when the
//! queue was empty. When a fan falls behind and its queue is full, the diffs
//! queued for that game are dropped, the game is marked *stale*, and further
//! diffs for it are skipped until the game actor sends one fresh snapshot
//! (requested by the writer once the queue has drained). Applying the frames
//! in order therefore always yields the exact state.
//!
//! The outbox remembers when its current conflation episode began (the first
//! game went stale while none was), so the session can disconnect a fan that
//! stays behind for `ws.stuck_timeout`.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::codec::FrameKind;
use crate::domain::GameId;

/// One queued frame.
#[derive(Debug, Clone)]
pub struct Item {
    /// The game it belongs to (`None` for pongs and connection errors).
    pub game: Option<GameId>,
    /// What it is.
    pub kind: FrameKind,
    /// The encoded MessagePack frame, shared with other fans.
    pub frame: Bytes,
}

/// What happened to a pushed diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued for the writer.
    Queued,
    /// The queue was full: this game's queued diffs were dropped and a fresh
    /// snapshot will follow. Reported once per episode.
    Conflated,
    /// Skipped: the game is already waiting for a fresh snapshot.
    Skipped,
    /// The connection is gone (or over its hard byte cap); drop the subscriber.
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
}

/// The bounded queue between game actors and one fan's socket writer.
#[derive(Debug)]
pub struct Outbox {
    conn_id: u64,
    max_frames: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
    notify: Notify,
    /// Woken when a conflation episode begins.
    behind: Notify,
}

impl Outbox {
    /// A queue for connection `conn_id`, conflating above `max_frames` queued
    /// diffs and closing the connection above `max_bytes` queued in total.
    pub fn new(conn_id: u64, max_frames: usize, max_bytes: usize) -> Outbox {
        Outbox {
            conn_id,
            max_frames: max_frames.max(1),
            max_bytes: max_bytes.max(1),
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            behind: Notify::new(),
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

    fn enqueue(&self, inner: &mut Inner, item: Item) -> bool {
        inner.bytes += item.frame.len();
        if inner.bytes > self.max_bytes {
            inner.overflowed = true;
            inner.closed = true;
            inner.queue.clear();
            inner.bytes = 0;
            return false;
        }
        let was_empty = inner.queue.is_empty();
        inner.queue.push_back(item);
        was_empty
    }

    /// Queues a diff of `game`, never waiting. See [`Push`].
    pub fn push_diff(&self, game: &GameId, frame: &Bytes) -> Push {
        let wake;
        {
            let mut inner = self.lock();
            if inner.closed {
                return Push::Closed;
            }
            if inner.stale.iter().any(|g| g == game) {
                return Push::Skipped;
            }
            if inner.queue.len() >= self.max_frames {
                inner.queue.retain(|it| it.game.as_ref() != Some(game));
                inner.bytes = inner.queue.iter().map(|it| it.frame.len()).sum();
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
            wake = self.enqueue(
                &mut inner,
                Item {
                    game: Some(game.clone()),
                    kind: FrameKind::Diff,
                    frame: frame.clone(),
                },
            );
            if inner.closed {
                drop(inner);
                self.notify.notify_one();
                return Push::Closed;
            }
        }
        if wake {
            self.notify.notify_one();
        }
        Push::Queued
    }

    /// Queues a snapshot of `game` (not subject to the frame limit) and clears
    /// the game's stale mark: diffs after it flow again. `false` when closed.
    pub fn push_snapshot(&self, game: &GameId, frame: Bytes) -> bool {
        let wake;
        {
            let mut inner = self.lock();
            if inner.closed {
                return false;
            }
            inner.stale.retain(|g| g != game);
            if inner.stale.is_empty() {
                inner.conflated_since = None;
            }
            // Anything still queued for this game is superseded by the snapshot.
            if inner.queue.iter().any(|it| it.game.as_ref() == Some(game)) {
                inner.queue.retain(|it| it.game.as_ref() != Some(game));
                inner.bytes = inner.queue.iter().map(|it| it.frame.len()).sum();
            }
            wake = self.enqueue(
                &mut inner,
                Item {
                    game: Some(game.clone()),
                    kind: FrameKind::Snapshot,
                    frame,
                },
            );
            if inner.closed {
                drop(inner);
                self.notify.notify_one();
                return false;
            }
        }
        if wake {
            self.notify.notify_one();
        }
        true
    }

    /// Queues a pong or error frame. `false` when closed.
    pub fn push_control(&self, kind: FrameKind, game: Option<GameId>, frame: Bytes) -> bool {
        let wake;
        {
            let mut inner = self.lock();
            if inner.closed {
                return false;
            }
            wake = self.enqueue(&mut inner, Item { game, kind, frame });
            if inner.closed {
                drop(inner);
                self.notify.notify_one();
                return false;
            }
        }
        if wake {
            self.notify.notify_one();
        }
        true
    }

    /// Marks the connection closed; later pushes report [`Push::Closed`].
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.queue.clear();
        inner.bytes = 0;
        drop(inner);
        self.notify.notify_one();
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

    /// Moves every queued frame into `out` (appending). Returns `false` when
    /// the connection is closed.
    pub fn take(&self, out: &mut Vec<Item>) -> bool {
        let mut inner = self.lock();
        if inner.closed {
            return false;
        }
        out.extend(inner.queue.drain(..));
        inner.bytes = 0;
        true
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

    #[test]
    fn conflates_one_game_and_resumes_after_snapshot() {
        let ob = Outbox::new(1, 3, 1 << 20);
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
        assert!(ob.take(&mut out));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].game.as_ref(), Some(&b));
        assert_eq!(ob.stale_when_drained(), vec![a.clone()]);
        assert!(ob.push_snapshot(&a, Bytes::from_static(b"snap")));
        assert!(ob.stale_when_drained().is_empty());
        assert_eq!(ob.push_diff(&a, &f), Push::Queued);
    }

    #[tokio::test(start_paused = true)]
    async fn remembers_when_conflation_began_until_every_game_resyncs() {
        let ob = Outbox::new(1, 1, 1 << 20);
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
        let ob = Outbox::new(1, 1000, 10);
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
        let ob = Outbox::new(2, 10, 100);
        ob.close();
        assert_eq!(ob.push_diff(&a, &Bytes::from_static(b"1")), Push::Closed);
        assert!(!ob.push_snapshot(&a, Bytes::from_static(b"1")));
        assert!(!ob.take(&mut Vec::new()));
    }
}
