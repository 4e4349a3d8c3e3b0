//! One game's fans, and how an encoded frame reaches all of them without
//! holding up the game's actor.
//!
//! A game starts with its fans *inline*: the actor pushes each frame into
//! every fan's [`Outbox`] itself, which costs one non-blocking write per fan
//! and is the cheapest way for a game a few hundred fans watch. Once the game
//! has more than `games.inline_fans` fans (default [`INLINE_FANS`]; a pass
//! over that many costs the actor a few milliseconds) it switches, for the
//! rest of its actor's life, to *shards*: its fans are spread over `shards`
//! tasks (one per worker thread by default, `games.fan_shards`), a fan
//! always on the shard `conn_id % shards`. The actor then hands each batch of frames to every
//! shard (one channel send each, the frames shared, never copied) and goes
//! on with the next event at once; the shards write to their fans on every
//! core at the same time. A scorekeeper's answer therefore never waits for
//! the fans' writes, and one event's fan-out takes about
//! `fans × write cost / cores`.
//!
//! Order per fan is kept because everything for a fan (its first frames on
//! subscribing, diffs, snapshots, its removal) travels through one shard's
//! channel, in the order the actor sent it. The switch from inline to shards
//! is safe for the same reason: an inline push is complete when it returns,
//! so whatever a shard writes afterwards comes after it. Fans never move
//! back.
//!
//! A shard that falls behind finds several batches waiting: it takes all of
//! them (up to [`MAX_DRAIN`] commands) and pushes their frames to each fan
//! in one call, so each fan gets them in one write. The cost of a pass is
//! about one write per fan whatever the number of frames, so a shard catches
//! up at any event rate, and its channel holds at most the frames of about
//! one pass. A fan that still cannot keep up is conflated by its outbox as
//! before: its diffs are dropped and a fresh snapshot follows.
//!
//! The number of fans is kept in a [`FanCount`] shared with the node's
//! occupancy task: it changes when a fan joins or leaves, never when a frame
//! is pushed, so counting who watches costs nothing per delivery.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::outbox::{Outbox, Push, Route};
use super::wire::Wire;
use crate::domain::GameId;
use crate::metrics as m;

/// Most fans a game pushes to from its actor by default
/// (`games.inline_fans`); above, its fans go to shards.
pub const INLINE_FANS: usize = 512;

/// Fans a shard writes to before it lets other tasks run: 0.1–0.3 ms of
/// loopback writes here, so a scorekeeper's request and the game's actor
/// wait at most that long for a worker while a big fan-out runs. (128 fans
/// per slice gave a POST p50 twice as long in hot-10k; 8 and 16 gave no
/// more than 32. docs/PERFORMANCE.md.)
pub const FANS_PER_SLICE: usize = 32;

/// Most commands a shard takes from its channel in one pass.
pub const MAX_DRAIN: usize = 256;

/// How many fans one game has on this node: written by its [`Fans`] when
/// a fan joins or leaves, read by whoever reports occupancy. Cheap to clone
/// (clones share the count).
#[derive(Debug, Clone, Default)]
pub struct FanCount(Arc<AtomicU64>);

impl FanCount {
    /// The number of fans now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, n: usize) {
        self.0.store(n as u64, Ordering::Relaxed);
    }
}

/// What a fan gets first on subscribing.
#[derive(Debug, Clone)]
pub enum First {
    /// A snapshot of the game.
    Snapshot(Bytes),
    /// The diffs after the seq it resumes from (possibly none).
    Diffs(Vec<Bytes>),
}

/// Consecutive frames handed to every shard once.
#[derive(Debug)]
struct Batch {
    frames: Vec<Wire>,
    /// When each frame's event was received (for the fan-out histogram).
    received: Vec<Instant>,
    /// Shards that have not written this batch yet; the last one records
    /// the batch's fan-out time.
    pending: AtomicUsize,
}

impl Batch {
    fn done(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            record_fanout(&self.received);
        }
    }
}

fn record_fanout(received: &[Instant]) {
    for at in received {
        metrics::histogram!(m::FANOUT_SECONDS).record(at.elapsed().as_secs_f64());
    }
}

/// A command to one shard, in the order the actor sent it.
#[derive(Debug)]
enum ShardCmd {
    Frames(Arc<Batch>),
    /// A fan joins (or, already there, gets `first` again: a resume).
    Subscribe {
        outbox: Arc<Outbox>,
        first: First,
    },
    /// A fan that was inline moves here, with nothing to send first.
    Adopt(Arc<Outbox>),
    Unsubscribe(u64),
    /// An occupancy frame for every fan of the shard.
    Occupancy(Bytes),
    /// A fresh snapshot for one fan (`Some`) or all of them.
    Snapshot {
        conn_id: Option<u64>,
        frame: Bytes,
    },
    /// Answered once everything sent before has been pushed.
    Flush(oneshot::Sender<()>),
}

/// One game's fans: inline, or spread over shards.
#[derive(Debug)]
pub struct Fans {
    game: GameId,
    /// How many shards the game spreads its fans over once it has many.
    shards: usize,
    /// Most fans pushed inline; above, the game moves to shards.
    inline_fans: usize,
    /// Every fan, wherever it is pushed from.
    members: HashSet<u64>,
    /// `members.len()`, shared with the occupancy task.
    count: FanCount,
    /// Inline mode: the fans the actor pushes to itself.
    inline: Vec<Arc<Outbox>>,
    inline_index: HashMap<u64, usize>,
    /// Shard mode: a channel per shard, the shard started on its first fan.
    sharded: Option<Vec<Option<mpsc::UnboundedSender<ShardCmd>>>>,
}

impl Fans {
    /// No fans yet; `shards` (at least 1) once the game has more than
    /// `inline_fans`.
    pub fn new(game: GameId, shards: usize, inline_fans: usize) -> Fans {
        Fans {
            game,
            shards: shards.max(1),
            inline_fans,
            members: HashSet::new(),
            count: FanCount::default(),
            inline: Vec::new(),
            inline_index: HashMap::new(),
            sharded: None,
        }
    }

    /// Number of fans.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The number of fans, as a count others can read while it changes.
    pub fn count(&self) -> FanCount {
        self.count.clone()
    }

    /// Whether the game has no fan.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether connection `conn_id` follows the game.
    pub fn contains(&self, conn_id: u64) -> bool {
        self.members.contains(&conn_id)
    }

    /// Whether the fans are spread over shards (no longer pushed inline).
    pub fn is_sharded(&self) -> bool {
        self.sharded.is_some()
    }

    /// Sends `first` to the fan and, unless it already follows the game,
    /// adds it. `false` when the fan is not (or no longer) a member: its
    /// connection is closed.
    pub fn subscribe(&mut self, outbox: Arc<Outbox>, first: First) -> bool {
        let conn_id = outbox.conn_id();
        if self.sharded.is_some() {
            self.send(conn_id, ShardCmd::Subscribe { outbox, first });
            return self.join(conn_id);
        }
        if !push_first(&self.game, &outbox, first) {
            return self.contains(conn_id);
        }
        if !self.inline_index.contains_key(&conn_id) {
            self.inline_index.insert(conn_id, self.inline.len());
            self.inline.push(outbox);
        }
        let joined = self.join(conn_id);
        if self.inline.len() > self.inline_fans {
            self.spread();
        }
        joined
    }

    /// Counts a fan in; `true` (it is a member now).
    fn join(&mut self, conn_id: u64) -> bool {
        if self.members.insert(conn_id) {
            metrics::gauge!(m::WS_SUBSCRIPTIONS).increment(1.0);
            self.count.set(self.members.len());
        }
        true
    }

    /// Removes a fan.
    pub fn unsubscribe(&mut self, conn_id: u64) {
        if !self.members.remove(&conn_id) {
            return;
        }
        metrics::gauge!(m::WS_SUBSCRIPTIONS).decrement(1.0);
        self.count.set(self.members.len());
        if self.sharded.is_some() {
            self.send(conn_id, ShardCmd::Unsubscribe(conn_id));
        } else {
            self.remove_inline(conn_id);
        }
    }

    fn remove_inline(&mut self, conn_id: u64) {
        let Some(i) = self.inline_index.remove(&conn_id) else {
            return;
        };
        self.inline.swap_remove(i);
        if let Some(moved) = self.inline.get(i) {
            self.inline_index.insert(moved.conn_id(), i);
        }
    }

    /// Sends one fan a fresh snapshot (after it was conflated).
    pub fn resync(&mut self, conn_id: u64, frame: Bytes) {
        if !self.contains(conn_id) {
            return;
        }
        if self.sharded.is_some() {
            let conn = Some(conn_id);
            self.send(
                conn_id,
                ShardCmd::Snapshot {
                    conn_id: conn,
                    frame,
                },
            );
            return;
        }
        let pushed = self
            .inline_index
            .get(&conn_id)
            .map(|&i| self.inline[i].push_snapshot(&self.game, frame));
        if pushed == Some(false) {
            self.unsubscribe(conn_id);
        }
    }

    /// Sends every fan an occupancy frame (see [`Outbox::push_occupancy`]).
    pub fn occupancy(&mut self, frame: Bytes) {
        if self.sharded.is_some() {
            self.broadcast(|| ShardCmd::Occupancy(frame.clone()));
            return;
        }
        let closed: Vec<u64> = self
            .inline
            .iter()
            .filter(|o| !o.push_occupancy(&self.game, frame.clone()))
            .map(|o| o.conn_id())
            .collect();
        for conn_id in closed {
            self.unsubscribe(conn_id);
        }
    }

    /// Sends every fan a fresh snapshot.
    pub fn snapshot_all(&mut self, frame: Bytes) {
        if self.sharded.is_some() {
            self.broadcast(|| ShardCmd::Snapshot {
                conn_id: None,
                frame: frame.clone(),
            });
            return;
        }
        let closed: Vec<u64> = self
            .inline
            .iter()
            .filter(|o| !o.push_snapshot(&self.game, frame.clone()))
            .map(|o| o.conn_id())
            .collect();
        for conn_id in closed {
            self.unsubscribe(conn_id);
        }
    }

    /// Hands consecutive diffs to every fan without waiting for any; each
    /// fan gets them in one write when its socket is idle. `received` (when
    /// each frame's event arrived) feeds the fan-out histogram once every
    /// fan has them.
    pub fn fan_out(&mut self, frames: Vec<Wire>, received: Vec<Instant>) {
        if frames.is_empty() {
            return;
        }
        if let Some(shards) = &self.sharded {
            let started = shards.iter().flatten().count();
            if started == 0 {
                record_fanout(&received);
                return;
            }
            let batch = Arc::new(Batch {
                frames,
                received,
                pending: AtomicUsize::new(started),
            });
            self.broadcast(|| ShardCmd::Frames(batch.clone()));
            return;
        }
        let closed = push_all(&self.game, &self.inline, &frames);
        record_fanout(&received);
        for conn_id in closed {
            self.unsubscribe(conn_id);
        }
    }

    /// Receivers answered once every shard has pushed everything sent to it
    /// so far (empty when inline: nothing is in flight then).
    pub fn flush(&self) -> Vec<oneshot::Receiver<()>> {
        let Some(shards) = &self.sharded else {
            return Vec::new();
        };
        shards
            .iter()
            .flatten()
            .filter_map(|tx| {
                let (done, rx) = oneshot::channel();
                tx.send(ShardCmd::Flush(done)).ok().map(|()| rx)
            })
            .collect()
    }

    /// Moves every inline fan to its shard.
    fn spread(&mut self) {
        self.sharded = Some((0..self.shards).map(|_| None).collect());
        self.inline_index.clear();
        for outbox in std::mem::take(&mut self.inline) {
            let conn_id = outbox.conn_id();
            self.send(conn_id, ShardCmd::Adopt(outbox));
        }
    }

    /// Sends `cmd` to the shard of `conn_id`, starting it if need be.
    fn send(&mut self, conn_id: u64, cmd: ShardCmd) {
        let n = self.shards;
        let game = &self.game;
        let Some(shards) = self.sharded.as_mut() else {
            return;
        };
        let at = (conn_id % n as u64) as usize;
        let tx = shards[at].get_or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_shard(game.clone(), rx));
            tx
        });
        // A shard ends only when its sender is dropped, so this cannot fail.
        let _ = tx.send(cmd);
    }

    /// Sends a command made by `cmd` to every started shard.
    fn broadcast(&self, cmd: impl Fn() -> ShardCmd) {
        for tx in self.sharded.iter().flatten().flatten() {
            let _ = tx.send(cmd());
        }
    }
}

/// Pushes what a fan gets on subscribing; `false` when its connection is closed.
fn push_first(game: &GameId, outbox: &Outbox, first: First) -> bool {
    match first {
        First::Snapshot(frame) => outbox.push_snapshot(game, frame),
        First::Diffs(frames) => {
            for frame in &frames {
                match outbox.push_diff(game, frame) {
                    Push::Queued | Push::Skipped => {}
                    Push::Conflated => conflated(),
                    Push::Closed => return false,
                }
            }
            true
        }
    }
}

fn conflated() {
    metrics::counter!(m::SLOW_CONSUMER, "action" => "conflated").increment(1);
}

/// Pushes `frames` to every fan; the connections found closed.
fn push_all(game: &GameId, fans: &[Arc<Outbox>], frames: &[Wire]) -> Vec<u64> {
    let mut closed = Vec::new();
    for outbox in fans {
        match outbox.push_diffs(game, frames, Route::Direct) {
            Push::Queued | Push::Skipped => {}
            Push::Conflated => conflated(),
            Push::Closed => closed.push(outbox.conn_id()),
        }
    }
    closed
}

/// One shard's fans of one game.
#[derive(Debug, Default)]
struct Shard {
    fans: Vec<Arc<Outbox>>,
    index: HashMap<u64, usize>,
}

impl Shard {
    fn add(&mut self, outbox: Arc<Outbox>) {
        let conn_id = outbox.conn_id();
        if !self.index.contains_key(&conn_id) {
            self.index.insert(conn_id, self.fans.len());
            self.fans.push(outbox);
        }
    }

    fn remove(&mut self, conn_id: u64) {
        let Some(i) = self.index.remove(&conn_id) else {
            return;
        };
        self.fans.swap_remove(i);
        if let Some(moved) = self.fans.get(i) {
            self.index.insert(moved.conn_id(), i);
        }
    }

    fn get(&self, conn_id: u64) -> Option<&Arc<Outbox>> {
        self.index.get(&conn_id).map(|&i| &self.fans[i])
    }

    /// Pushes `frames` to every fan, dropping those found closed (the
    /// actor forgets them when their session unsubscribes). Yields to the
    /// runtime after every [`FANS_PER_SLICE`] fans: a worker thread is never
    /// held longer than that many writes, so requests and the game's actor
    /// get a turn while a big fan-out runs.
    async fn push(&mut self, game: &GameId, frames: &[Wire]) {
        if frames.is_empty() {
            return;
        }
        let mut closed = Vec::new();
        let mut start = 0;
        while start < self.fans.len() {
            let end = (start + FANS_PER_SLICE).min(self.fans.len());
            closed.extend(push_all(game, &self.fans[start..end], frames));
            start = end;
            if start < self.fans.len() {
                tokio::task::yield_now().await;
            }
        }
        for conn_id in closed {
            self.remove(conn_id);
        }
    }

    async fn handle(&mut self, game: &GameId, cmd: ShardCmd) {
        match cmd {
            ShardCmd::Frames(batch) => {
                self.push(game, &batch.frames).await;
                batch.done();
            }
            ShardCmd::Subscribe { outbox, first } => {
                if push_first(game, &outbox, first) {
                    self.add(outbox);
                } else {
                    self.remove(outbox.conn_id());
                }
            }
            ShardCmd::Adopt(outbox) => self.add(outbox),
            ShardCmd::Unsubscribe(conn_id) => self.remove(conn_id),
            ShardCmd::Snapshot {
                conn_id: Some(conn_id),
                frame,
            } => {
                if let Some(outbox) = self.get(conn_id)
                    && !outbox.push_snapshot(game, frame)
                {
                    self.remove(conn_id);
                }
            }
            ShardCmd::Snapshot {
                conn_id: None,
                frame,
            } => {
                let closed: Vec<u64> = self
                    .fans
                    .iter()
                    .filter(|o| !o.push_snapshot(game, frame.clone()))
                    .map(|o| o.conn_id())
                    .collect();
                for conn_id in closed {
                    self.remove(conn_id);
                }
            }
            ShardCmd::Occupancy(frame) => {
                let closed: Vec<u64> = self
                    .fans
                    .iter()
                    .filter(|o| !o.push_occupancy(game, frame.clone()))
                    .map(|o| o.conn_id())
                    .collect();
                for conn_id in closed {
                    self.remove(conn_id);
                }
            }
            ShardCmd::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// A shard's loop: takes every command waiting, pushes the frames of
/// consecutive batches to each fan at once, handles the rest in order.
/// Ends when the game's actor drops its sender, after the last command.
async fn run_shard(game: GameId, mut rx: mpsc::UnboundedReceiver<ShardCmd>) {
    let mut shard = Shard::default();
    let mut cmds = Vec::with_capacity(MAX_DRAIN);
    let mut frames: Vec<Wire> = Vec::new();
    let mut batches: Vec<Arc<Batch>> = Vec::new();
    while rx.recv_many(&mut cmds, MAX_DRAIN).await > 0 {
        for cmd in cmds.drain(..) {
            match cmd {
                ShardCmd::Frames(batch) => {
                    frames.extend(batch.frames.iter().cloned());
                    batches.push(batch);
                }
                other => {
                    flush_batches(&mut shard, &game, &mut frames, &mut batches).await;
                    shard.handle(&game, other).await;
                }
            }
        }
        flush_batches(&mut shard, &game, &mut frames, &mut batches).await;
    }
}

/// Pushes the gathered frames of consecutive batches to every fan at once.
async fn flush_batches(
    shard: &mut Shard,
    game: &GameId,
    frames: &mut Vec<Wire>,
    batches: &mut Vec<Arc<Batch>>,
) {
    if batches.is_empty() {
        return;
    }
    shard.push(game, frames).await;
    frames.clear();
    for batch in batches.drain(..) {
        batch.done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::outbox::{Item, Take};
    use crate::fanout::pressure::Pressure;

    /// The inline limit of these tests (small, so that a few hundred fans
    /// are sharded).
    const TEST_INLINE: usize = 32;

    fn game() -> GameId {
        GameId::parse("nba:hot").unwrap()
    }

    fn outbox(conn_id: u64, max_frames: usize) -> Arc<Outbox> {
        Arc::new(Outbox::new(
            conn_id,
            max_frames,
            64 << 20,
            Arc::new(Pressure::new()),
        ))
    }

    fn diff(seq: u64) -> Wire {
        Wire::Binary(Bytes::from(format!("d{seq}")))
    }

    /// Everything queued in `outbox`, as strings ("s…" snapshots, "d<seq>").
    fn queued(outbox: &Outbox) -> Vec<String> {
        let mut out: Vec<Item> = Vec::new();
        assert_ne!(outbox.take(&mut out, &mut None), Take::Closed);
        out.iter()
            .map(|it| String::from_utf8_lossy(it.wire.bytes()).into_owned())
            .collect()
    }

    async fn flushed(fans: &Fans) {
        for rx in fans.flush() {
            rx.await.unwrap();
        }
    }

    fn snapshot(tag: &str) -> First {
        First::Snapshot(Bytes::from(format!("s{tag}")))
    }

    /// Diffs `from..=to`, as a fan should have them.
    fn diffs(from: u64, to: u64) -> Vec<String> {
        (from..=to).map(|q| format!("d{q}")).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_fan_gets_every_diff_in_order_across_concurrent_shards() {
        let mut fans = Fans::new(game(), 4, TEST_INLINE);
        let boxes: Vec<_> = (0..200).map(|c| outbox(c, 100_000)).collect();
        for (i, ob) in boxes.iter().enumerate() {
            assert!(fans.subscribe(ob.clone(), snapshot("0")));
            // Fans join while diffs flow; each starts from its own snapshot.
            if i % 50 == 49 {
                fans.fan_out(vec![diff(i as u64)], Vec::new());
            }
        }
        assert!(fans.is_sharded(), "200 fans are more than {TEST_INLINE}");
        assert_eq!(fans.len(), 200);
        for q in 1000..1500 {
            // Some batches of several frames, most of one.
            if q % 7 == 0 {
                fans.fan_out(vec![diff(q), diff(q + 1_000_000)], Vec::new());
            } else {
                fans.fan_out(vec![diff(q)], Vec::new());
            }
        }
        flushed(&fans).await;
        for (i, ob) in boxes.iter().enumerate() {
            let got = queued(ob);
            let mut want = vec!["s0".to_string()];
            want.extend(
                (i as u64..200)
                    .filter(|k| k % 50 == 49)
                    .map(|k| format!("d{k}")),
            );
            for q in 1000..1500 {
                want.push(format!("d{q}"));
                if q % 7 == 0 {
                    want.push(format!("d{}", q + 1_000_000));
                }
            }
            assert_eq!(got, want, "fan {i}");
        }
    }

    #[tokio::test]
    async fn inline_fans_move_to_their_shards_without_losing_order() {
        let mut fans = Fans::new(game(), 3, TEST_INLINE);
        let early: Vec<_> = (0..TEST_INLINE as u64).map(|c| outbox(c, 10_000)).collect();
        for ob in &early {
            fans.subscribe(ob.clone(), snapshot("0"));
        }
        fans.fan_out(vec![diff(1), diff(2)], Vec::new());
        assert!(!fans.is_sharded());
        // Pushed inline: already in the outboxes, nothing in flight.
        assert!(fans.flush().is_empty());
        assert_eq!(queued(&early[0]), ["s0", "d1", "d2"]);

        // One more fan: every fan moves to a shard.
        let late = outbox(1000, 10_000);
        fans.subscribe(late.clone(), snapshot("2"));
        assert!(fans.is_sharded());
        fans.fan_out(vec![diff(3)], Vec::new());
        // The current-thread runtime has not run the shards yet: the frame
        // is in flight until the flush.
        assert_eq!(queued(&early[1]), ["s0", "d1", "d2"]);
        flushed(&fans).await;
        assert_eq!(queued(&early[1]), ["d3"]);
        assert_eq!(queued(&early[0]), ["d3"]);
        assert_eq!(queued(&late), ["s2", "d3"]);
    }

    #[tokio::test]
    async fn a_fan_that_leaves_and_comes_back_resumes_in_order() {
        let mut fans = Fans::new(game(), 2, TEST_INLINE);
        let crowd: Vec<_> = (0..40).map(|c| outbox(c, 10_000)).collect();
        for ob in &crowd {
            fans.subscribe(ob.clone(), snapshot("0"));
        }
        let fan = crowd[7].clone();
        fans.fan_out(vec![diff(1)], Vec::new());
        fans.unsubscribe(7);
        assert!(!fans.contains(7));
        fans.fan_out(vec![diff(2)], Vec::new());
        fans.fan_out(vec![diff(3)], Vec::new());
        // Back, resuming after seq 1 with the diffs it missed.
        fans.subscribe(fan.clone(), First::Diffs(vec!["d2".into(), "d3".into()]));
        fans.fan_out(vec![diff(4)], Vec::new());
        flushed(&fans).await;
        let mut want = vec!["s0".to_string()];
        want.extend(diffs(1, 4));
        assert_eq!(queued(&fan), want);
        assert_eq!(fans.len(), 40);

        // A resume of a fan still subscribed sends its frames again, once.
        fans.subscribe(fan.clone(), First::Diffs(Vec::new()));
        fans.fan_out(vec![diff(5)], Vec::new());
        flushed(&fans).await;
        assert_eq!(queued(&fan), ["d5"]);
        assert_eq!(fans.len(), 40);
    }

    #[tokio::test]
    async fn a_shard_behind_coalesces_then_conflates_to_an_exact_snapshot() {
        let mut fans = Fans::new(game(), 2, TEST_INLINE);
        // Fans whose queues hold 16 frames: a shard that fell 100 frames
        // behind pushes them at once, which conflates them.
        let crowd: Vec<_> = (0..40).map(|c| outbox(c, 16)).collect();
        for ob in &crowd {
            fans.subscribe(ob.clone(), snapshot("0"));
        }
        // Nothing has run the shards yet: they are behind by every batch.
        for q in 1..=100 {
            fans.fan_out(vec![diff(q)], Vec::new());
        }
        flushed(&fans).await;
        for ob in &crowd {
            // The shard's one pass pushed 100 diffs: over the queue's limit,
            // so this game's queued frames are dropped and it waits for a
            // snapshot; further diffs are skipped.
            assert!(ob.is_stale(&game()));
            assert!(queued(ob).is_empty());
        }
        fans.fan_out(vec![diff(101)], Vec::new());
        fans.resync(3, Bytes::from_static(b"s101"));
        fans.fan_out(vec![diff(102)], Vec::new());
        flushed(&fans).await;
        assert_eq!(queued(&crowd[3]), ["s101", "d102"]);
        assert!(!crowd[3].is_stale(&game()));
        assert!(crowd[4].is_stale(&game()));

        // A shard a little behind coalesces without conflating.
        let mut fans = Fans::new(game(), 2, TEST_INLINE);
        let crowd: Vec<_> = (100..140).map(|c| outbox(c, 16)).collect();
        for ob in &crowd {
            fans.subscribe(ob.clone(), snapshot("0"));
        }
        for q in 1..=10 {
            fans.fan_out(vec![diff(q)], Vec::new());
        }
        flushed(&fans).await;
        let mut want = vec!["s0".to_string()];
        want.extend(diffs(1, 10));
        for ob in &crowd {
            assert_eq!(queued(ob), want);
        }
    }

    #[tokio::test]
    async fn snapshots_for_all_follow_the_diffs_before_them() {
        let mut fans = Fans::new(game(), 3, TEST_INLINE);
        let crowd: Vec<_> = (0..50).map(|c| outbox(c, 10_000)).collect();
        for ob in &crowd {
            fans.subscribe(ob.clone(), snapshot("0"));
        }
        fans.fan_out(vec![diff(1)], Vec::new());
        fans.snapshot_all(Bytes::from_static(b"s1"));
        fans.fan_out(vec![diff(2)], Vec::new());
        flushed(&fans).await;
        for ob in &crowd {
            // The snapshot supersedes what was still queued for the game.
            assert_eq!(queued(ob), ["s1", "d2"]);
        }
    }

    #[tokio::test]
    async fn the_count_follows_joins_and_leaves_and_occupancy_reaches_every_fan() {
        let mut fans = Fans::new(game(), 2, TEST_INLINE);
        let count = fans.count();
        assert_eq!(count.get(), 0);
        let crowd: Vec<_> = (0..40).map(|c| outbox(c, 10_000)).collect();
        for (i, ob) in crowd.iter().take(10).enumerate() {
            fans.subscribe(ob.clone(), snapshot("0"));
            assert_eq!(count.get(), i as u64 + 1);
        }
        // A resume of a fan already counted does not count it twice.
        fans.subscribe(crowd[3].clone(), First::Diffs(Vec::new()));
        assert_eq!(count.get(), 10);
        // Inline: pushed at once, after what was queued before.
        fans.fan_out(vec![diff(1)], Vec::new());
        fans.occupancy(Bytes::from_static(b"o10"));
        assert_eq!(queued(&crowd[0]), ["s0", "d1", "o10"]);
        // Pushing frames does not touch the count; leaving does.
        fans.unsubscribe(0);
        fans.unsubscribe(0);
        assert_eq!(count.get(), 9);
        // Sharded: the frame follows the diffs before it, to every fan.
        for ob in crowd.iter().skip(10) {
            fans.subscribe(ob.clone(), snapshot("1"));
        }
        assert!(fans.is_sharded());
        assert_eq!(count.get(), 39);
        fans.fan_out(vec![diff(2)], Vec::new());
        fans.occupancy(Bytes::from_static(b"o39"));
        flushed(&fans).await;
        assert_eq!(queued(&crowd[5]), ["s0", "d1", "o10", "d2", "o39"]);
        assert_eq!(queued(&crowd[20]), ["s1", "d2", "o39"]);
        assert!(queued(&crowd[0]).is_empty(), "a fan that left gets nothing");
    }

    #[tokio::test]
    async fn occupancy_is_skipped_for_a_fan_waiting_for_a_snapshot() {
        let mut fans = Fans::new(game(), 2, TEST_INLINE);
        let slow = outbox(1, 2);
        fans.subscribe(slow.clone(), snapshot("0"));
        // Two diffs fill its queue; the third conflates the game.
        fans.fan_out(vec![diff(1)], Vec::new());
        fans.fan_out(vec![diff(2)], Vec::new());
        fans.fan_out(vec![diff(3)], Vec::new());
        assert!(slow.is_stale(&game()));
        fans.occupancy(Bytes::from_static(b"o1"));
        assert!(
            queued(&slow).is_empty(),
            "the snapshot to come carries the count"
        );
        fans.resync(1, Bytes::from_static(b"s3"));
        fans.occupancy(Bytes::from_static(b"o2"));
        assert_eq!(queued(&slow), ["s3", "o2"]);
    }

    #[tokio::test]
    async fn a_closed_fan_is_dropped_by_its_shard_and_the_rest_go_on() {
        let mut fans = Fans::new(game(), 2, TEST_INLINE);
        let crowd: Vec<_> = (0..40).map(|c| outbox(c, 10_000)).collect();
        for ob in &crowd {
            fans.subscribe(ob.clone(), snapshot("0"));
        }
        let _ = crowd[5].close();
        fans.fan_out(vec![diff(1)], Vec::new());
        flushed(&fans).await;
        assert!(crowd[5].is_closed());
        assert_eq!(queued(&crowd[6]), ["s0", "d1"]);
        // Its session unsubscribes when it ends.
        fans.unsubscribe(5);
        assert_eq!(fans.len(), 39);
    }
}
