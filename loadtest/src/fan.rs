//! One fan: a WebSocket subscribed to a few games, checking every frame the hub
//! sends against the contract's guarantees.
//!
//! The bookkeeping ([`Book`]) is pure and tested without a socket; [`run_fan`]
//! is the connection around it. Per game a fan keeps the last sequence number
//! and the state rebuilt from the snapshot plus every diff (JSON Merge Patch), so
//! that at the end it can be compared with what `GET /v1/games/{id}` says.
//!
//! Two latencies are measured per diff: from the frame's `ts` (the hub's
//! ingest time, whole milliseconds, the hub's clock) to receipt, and from the
//! moment the poster sent the event to receipt ([`SentTimes`], microseconds,
//! this process's monotonic clock).
//!
//! In the churn scenario fans also leave on request ([`Leave`]), and record
//! what they can be checked by after they are gone: [`FanKind::Churning`] fans
//! keep a hash of each snapshot and of their last state ([`Checkpoint`]s),
//! [`FanKind::Reference`] fans keep a hash of every state of their game
//! ([`History`]), and [`crate::churn`] compares the two at the end.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::{Message, protocol::WebSocketConfig};

use crate::{
    churn::{Checkpoint, History, state_hash},
    dial,
    frames::{Frame, FrameCache},
    rotation::Rotation,
    sent::{Sent, SentTimes},
};

/// How long one WebSocket handshake may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many latency samples a fan buffers before adding them to the shared
/// histogram (one lock per batch instead of one per frame).
const LATENCY_BATCH: usize = 256;

/// Diffs received before their send time was known, kept per fan to be
/// matched later; beyond this many they count as unmatched.
const MAX_UNMATCHED: usize = 64;

/// Read buffer per fan connection. Frames are small; tungstenite's default
/// (128 KiB) is zero-filled on every read, which costs more than the rest of
/// a fan's work together.
pub(crate) const READ_BUFFER: usize = 4096;

/// A hub fans connect to, and what its fans measured.
#[derive(Debug)]
pub(crate) struct FanNode {
    /// `ws://host:port`, without a trailing slash.
    pub(crate) ws_base: String,
    /// Its resolved address.
    pub(crate) addr: SocketAddr,
    /// Delivery latency of this node's fans in microseconds, `now - ts` for
    /// every measured diff.
    pub(crate) latency: Mutex<Histogram<u64>>,
    /// Send → receive latency of this node's fans in microseconds.
    pub(crate) send_latency: Mutex<Histogram<u64>>,
    /// The same, only for events posted to another hub than this node.
    pub(crate) cross_latency: Mutex<Histogram<u64>>,
    /// The index of this node among the hubs events are posted to, when
    /// events are posted to it.
    pub(crate) poster: Option<u8>,
}

/// What every fan of a run shares.
#[derive(Debug)]
pub(crate) struct FanShared {
    /// The nodes fans connect to; fans refer to them by index.
    pub(crate) nodes: Vec<FanNode>,
    /// All game ids of the run; fans refer to games by index into this list.
    pub(crate) game_ids: Arc<[String]>,
    /// Set during the measured window: deliveries and latencies count then.
    pub(crate) measuring: Arc<AtomicBool>,
    /// Rebuild each game's state from the frames (off only for raw throughput runs).
    pub(crate) check_state: bool,
    /// Bounds how many handshakes run at the same time.
    pub(crate) connect_limit: Semaphore,
    /// When each event was posted.
    pub(crate) sent: Arc<SentTimes>,
    /// Which game of each slot is current (`--game-events`).
    pub(crate) rotation: Arc<Rotation>,
    /// Frames decoded once for every fan (see [`crate::frames`]).
    pub(crate) frames: Arc<FrameCache>,
}

/// What a fan is for, beyond counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FanKind {
    /// Subscribes in the URL and stays until the run ends.
    Steady,
    /// Stays until the run ends and keeps the hash of every state of its game,
    /// the reference churning fans are checked against.
    Reference,
    /// May be told to leave; keeps checkpoints. `by_message`: subscribes with
    /// a `sub` message after connecting instead of in the URL.
    Churning {
        /// Subscribe with `{"op":"sub",...}` rather than `?games=`.
        by_message: bool,
    },
}

/// How a churning fan leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Leave {
    /// With a close frame, politely.
    Close,
    /// By dropping the TCP connection, as a phone going into a tunnel does.
    Vanish,
}

/// Where one fan connects and which games it follows.
#[derive(Clone, Debug)]
pub(crate) struct FanSpec {
    /// The fan's number, from 0.
    pub(crate) index: usize,
    /// Index into [`FanShared::nodes`].
    pub(crate) node: usize,
    /// Indexes into [`FanShared::game_ids`].
    pub(crate) games: Vec<usize>,
    /// What it is for.
    pub(crate) kind: FanKind,
}

/// A fan's progress, readable by the orchestrator while the fan runs: it waits
/// for every fan to catch up with the hub before comparing states.
#[derive(Debug)]
pub(crate) struct Progress {
    /// False once the fan's connection ended (failed, closed, left or stopped).
    alive: AtomicBool,
    /// Per followed game, in the order it was followed (the fan's track
    /// order): its index. Room for every game the fan may follow.
    games: Box<[AtomicUsize]>,
    /// Per followed game: last seq + 1, or 0 before the first snapshot.
    seqs: Box<[AtomicU64]>,
    /// How many of `games` are followed.
    following: AtomicUsize,
}

impl Progress {
    /// Progress for a fan following `games`, with room for `room` games in
    /// all (a reference fan of a rotating run follows its slot's games in
    /// turn).
    pub(crate) fn new(games: &[usize], room: usize) -> Self {
        let room = room.max(games.len());
        Self {
            alive: AtomicBool::new(true),
            games: (0..room)
                .map(|n| AtomicUsize::new(games.get(n).copied().unwrap_or(0)))
                .collect(),
            seqs: (0..room).map(|_| AtomicU64::new(0)).collect(),
            following: AtomicUsize::new(games.len()),
        }
    }

    /// Adds `game` to the followed games; false when there is no room.
    fn follow(&self, game: usize) -> bool {
        let n = self.following.load(Ordering::Relaxed);
        let Some(slot) = self.games.get(n) else {
            return false;
        };
        slot.store(game, Ordering::Relaxed);
        // Release: a reader that sees the new count sees the game too.
        self.following.store(n + 1, Ordering::Release);
        true
    }

    /// True when the fan is gone or has seen at least `targets[g]` for each game
    /// `g` it follows.
    pub(crate) fn caught_up(&self, targets: &[u64]) -> bool {
        if !self.alive.load(Ordering::Relaxed) {
            return true;
        }
        let following = self.following.load(Ordering::Acquire);
        self.games
            .iter()
            .zip(self.seqs.iter())
            .take(following)
            .all(|(game, seen)| {
                let target = targets
                    .get(game.load(Ordering::Relaxed))
                    .copied()
                    .unwrap_or(0);
                // `seen` is seq + 1, so "seq >= target" reads "seen > target".
                seen.load(Ordering::Relaxed) > target
            })
    }
}

/// Counters of one fan; summed over all fans for the report.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FanCounters {
    /// Snapshot frames received.
    pub(crate) snapshots: u64,
    /// Diff frames received while measuring.
    pub(crate) deliveries: u64,
    /// Diff frames received over the whole run.
    pub(crate) diffs_total: u64,
    /// Diffs whose `q` skipped ahead of `last + 1`.
    pub(crate) gaps: u64,
    /// Diffs with `q == last`.
    pub(crate) duplicates: u64,
    /// Diffs with `q < last`, and snapshots that went backwards.
    pub(crate) out_of_order: u64,
    /// Diffs for a game before any snapshot of it.
    pub(crate) diffs_without_snapshot: u64,
    /// Frames that are not a MessagePack map of the contract's shapes, text
    /// frames, and frames for games the fan did not subscribe to.
    pub(crate) bad_frames: u64,
    /// Error frames (`t: "e"`).
    pub(crate) error_frames: u64,
    /// Diffs stamped later than the local clock (clocks of two machines disagree).
    pub(crate) clock_skew: u64,
    /// Measured diffs whose send time never became known (posted by someone
    /// else, or more pending than [`MAX_UNMATCHED`]).
    pub(crate) send_unmatched: u64,
}

impl std::ops::AddAssign for FanCounters {
    fn add_assign(&mut self, o: Self) {
        self.snapshots += o.snapshots;
        self.deliveries += o.deliveries;
        self.diffs_total += o.diffs_total;
        self.gaps += o.gaps;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        self.diffs_without_snapshot += o.diffs_without_snapshot;
        self.bad_frames += o.bad_frames;
        self.error_frames += o.error_frames;
        self.clock_skew += o.clock_skew;
        self.send_unmatched += o.send_unmatched;
    }
}

/// What a fan knows about one game it follows.
#[derive(Debug)]
pub(crate) struct Track {
    /// Index into [`FanShared::game_ids`].
    pub(crate) game: usize,
    /// Last sequence number seen, `None` before the first snapshot.
    pub(crate) seq: Option<u64>,
    /// The state rebuilt from the frames (`None` before the first snapshot, or
    /// when state checking is off).
    pub(crate) state: Option<Arc<Value>>,
}

/// When a frame arrived, and whether it counts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Receipt {
    /// Wall clock, Unix µs (compared with the frame's `ts`).
    pub(crate) wall_us: u64,
    /// Monotonic clock, [`SentTimes::now_ns`].
    pub(crate) mono_ns: u64,
    /// Inside the measured window.
    pub(crate) measuring: bool,
}

/// What a fan records for the churn check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// Nothing.
    Nothing,
    /// A checkpoint per snapshot, and one of the last state at the end.
    Checkpoints,
    /// The hash of every state of every followed game.
    History,
}

/// A fan's bookkeeping: sequence checks, state rebuilding, latency samples.
/// No IO, so it is tested with hand-made frames.
#[derive(Debug)]
pub(crate) struct Book {
    /// One track per followed game, in [`FanSpec::games`] order.
    tracks: Vec<Track>,
    /// Game id → index into `tracks`.
    by_id: HashMap<Box<str>, usize>,
    /// Rebuild states (see [`FanShared::check_state`]).
    check_state: bool,
    /// What to record for the churn check (needs `check_state`).
    record: Record,
    /// Counters so far.
    counters: FanCounters,
    /// `ts` latency samples (µs) not yet added to the shared histogram.
    pending_latency: Vec<u64>,
    /// Send → receive samples (µs) not yet added to the shared histogram.
    pending_send_latency: Vec<u64>,
    /// Of those, the events posted to another hub than the fan's.
    pending_cross_latency: Vec<u64>,
    /// The fan's node's index among the hubs events are posted to (`None`:
    /// no event is posted to it; every event comes from another node).
    own_poster: Option<u8>,
    /// Measured diffs whose send time was not known yet: (game, seq, mono_ns).
    unmatched: Vec<(usize, u64, u64)>,
    /// Checkpoints so far ([`Record::Checkpoints`]).
    checkpoints: Vec<Checkpoint>,
    /// Per track, every state's hash ([`Record::History`]).
    history: Vec<History>,
    /// The first error frame or malformed frame, for the report.
    first_problem: Option<String>,
    /// Frames decoded (and patches applied) by other fans too.
    frames: Arc<FrameCache>,
}

impl Book {
    /// Bookkeeping for a fan following `games` (indexes into `game_ids`).
    /// Recording needs states, so it is off when `check_state` is.
    pub(crate) fn new(
        games: &[usize],
        game_ids: &[String],
        check_state: bool,
        record: Record,
    ) -> Self {
        let tracks = games
            .iter()
            .map(|&game| Track {
                game,
                seq: None,
                state: None,
            })
            .collect();
        let by_id = games
            .iter()
            .enumerate()
            .filter_map(|(slot, &g)| Some((game_ids.get(g)?.as_str().into(), slot)))
            .collect();
        let record = if check_state { record } else { Record::Nothing };
        let history = if record == Record::History {
            games.iter().map(|&g| History::new(g)).collect()
        } else {
            Vec::new()
        };
        Self {
            tracks,
            by_id,
            check_state,
            record,
            counters: FanCounters::default(),
            pending_latency: Vec::with_capacity(LATENCY_BATCH),
            pending_send_latency: Vec::with_capacity(LATENCY_BATCH),
            pending_cross_latency: Vec::new(),
            own_poster: None,
            unmatched: Vec::new(),
            checkpoints: Vec::new(),
            history,
            first_problem: None,
            frames: Arc::default(),
        }
    }

    /// Shares decoded frames and patched states with the other fans of
    /// `frames` (see [`crate::frames`]).
    pub(crate) fn sharing(mut self, frames: Arc<FrameCache>) -> Self {
        self.frames = frames;
        self
    }

    /// Says which of the hubs events are posted to is the fan's own node,
    /// so that send → receive samples of events posted elsewhere are also
    /// kept apart (cross-node latency).
    pub(crate) fn posted_here(mut self, poster: Option<u8>) -> Self {
        self.own_poster = poster;
        self
    }

    /// One send → receive sample of an event sent at `sent`, received at
    /// `received_ns`.
    fn send_sample(&mut self, sent: Sent, received_ns: u64) {
        let us = received_ns.saturating_sub(sent.ns) / 1000;
        self.pending_send_latency.push(us);
        if self.own_poster != Some(sent.node) {
            self.pending_cross_latency.push(us);
        }
    }

    /// Adds game `game` (an index into `game_ids`) to the followed games;
    /// returns its track.
    pub(crate) fn follow(&mut self, game: usize, game_ids: &[String]) -> usize {
        let slot = self.tracks.len();
        self.tracks.push(Track {
            game,
            seq: None,
            state: None,
        });
        if let Some(id) = game_ids.get(game) {
            self.by_id.insert(id.as_str().into(), slot);
        }
        if self.record == Record::History {
            self.history.push(History::new(game));
        }
        slot
    }

    /// Handles one binary frame received at `at`. Returns the slot and new
    /// sequence number when a game's seq moved.
    pub(crate) fn on_frame(
        &mut self,
        bytes: &[u8],
        at: &Receipt,
        sent: &SentTimes,
    ) -> Option<(usize, u64)> {
        if !self.unmatched.is_empty() {
            self.match_sends(sent);
        }
        let frame = match self.frames.decode(bytes) {
            Ok(frame) => frame,
            Err(e) => {
                self.problem(format!("undecodable frame: {e}"));
                return None;
            }
        };
        match &*frame.t {
            "s" => self.on_snapshot(&frame),
            "d" => self.on_diff(&frame, at, sent),
            "e" => {
                self.counters.error_frames += 1;
                if self.first_problem.is_none() {
                    self.first_problem = Some(format!(
                        "error frame: code={} msg={} game={}",
                        frame.code.as_deref().unwrap_or("?"),
                        frame.msg.as_deref().unwrap_or("?"),
                        frame.g.as_deref().unwrap_or("-")
                    ));
                }
                None
            }
            // Occupancy: how many fans watch the game; no state in it.
            "p" | "o" => None,
            other => {
                self.problem(format!("frame with unknown t={other:?}"));
                None
            }
        }
    }

    /// Counts a frame that breaks the contract's shapes, remembering the first.
    pub(crate) fn problem(&mut self, what: String) {
        self.counters.bad_frames += 1;
        if self.first_problem.is_none() {
            self.first_problem = Some(what);
        }
    }

    /// The slot of the game a frame names, counting a bad frame when it names
    /// none or one this fan does not follow.
    fn slot(&mut self, frame: &Frame) -> Option<usize> {
        let Some(g) = frame.g.as_deref() else {
            self.problem(format!("frame t={} without g", frame.t));
            return None;
        };
        let slot = self.by_id.get(g).copied();
        if slot.is_none() {
            self.problem(format!(
                "frame for game {g}, which this fan did not subscribe to"
            ));
        }
        slot
    }

    /// A snapshot resets the game's seq and state.
    fn on_snapshot(&mut self, frame: &Frame) -> Option<(usize, u64)> {
        let slot = self.slot(frame)?;
        let (Some(q), Some(d)) = (frame.q, frame.d.clone()) else {
            self.problem("snapshot without q or d".into());
            return None;
        };
        self.counters.snapshots += 1;
        let track = self.tracks.get_mut(slot)?;
        if track.seq.is_some_and(|last| q < last) {
            self.counters.out_of_order += 1;
        }
        track.seq = Some(q);
        if self.check_state {
            match self.record {
                Record::Nothing => {}
                Record::Checkpoints => self.checkpoints.push(Checkpoint {
                    game: track.game,
                    seq: q,
                    hash: state_hash(&d),
                    last: false,
                }),
                Record::History => {
                    if let Some(history) = self.history.get_mut(slot) {
                        history.set(q, state_hash(&d));
                    }
                }
            }
            track.state = Some(self.frames.intern(&d));
        }
        Some((slot, q))
    }

    /// A diff must follow the last seq by exactly one; it is applied when it
    /// moves forward (also across a gap, so that later frames keep being checked).
    fn on_diff(&mut self, frame: &Frame, at: &Receipt, sent: &SentTimes) -> Option<(usize, u64)> {
        let slot = self.slot(frame)?;
        let (Some(q), Some(_)) = (frame.q, &frame.d) else {
            self.problem("diff without q or d".into());
            return None;
        };
        self.counters.diffs_total += 1;
        let game = self.tracks.get(slot)?.game;
        if at.measuring {
            self.counters.deliveries += 1;
            match frame.ts {
                Some(ts) => {
                    let sent_us = ts.saturating_mul(1000);
                    if at.wall_us < sent_us {
                        self.counters.clock_skew += 1;
                    }
                    self.pending_latency
                        .push(at.wall_us.saturating_sub(sent_us));
                }
                None => self.problem("diff without ts".into()),
            }
            match sent.sent_at(game, q) {
                Some(when) => self.send_sample(when, at.mono_ns),
                None if self.unmatched.len() < MAX_UNMATCHED => {
                    self.unmatched.push((game, q, at.mono_ns));
                }
                None => self.counters.send_unmatched += 1,
            }
        }
        let track = self.tracks.get_mut(slot)?;
        let Some(last) = track.seq else {
            self.counters.diffs_without_snapshot += 1;
            return None;
        };
        if q == last + 1 {
            // In order: the normal case.
        } else if q > last + 1 {
            self.counters.gaps += 1;
        } else if q == last {
            self.counters.duplicates += 1;
            return None;
        } else {
            self.counters.out_of_order += 1;
            return None;
        }
        track.seq = Some(q);
        if let Some(state) = track.state.as_mut() {
            *state = frame.apply(state);
            if let Some(history) = self.history.get_mut(slot) {
                history.set(q, state_hash(state));
            }
        }
        Some((slot, q))
    }

    /// Matches the diffs received before their send time was known with the
    /// send times known now.
    fn match_sends(&mut self, sent: &SentTimes) {
        let mut matched = Vec::new();
        self.unmatched
            .retain(|&(game, seq, received)| match sent.sent_at(game, seq) {
                Some(when) => {
                    matched.push((when, received));
                    false
                }
                None => true,
            });
        for (when, received) in matched {
            self.send_sample(when, received);
        }
    }

    /// True when enough latency samples are buffered to be worth a lock.
    fn latency_batch_full(&self) -> bool {
        self.pending_latency.len() >= LATENCY_BATCH
            || self.pending_send_latency.len() >= LATENCY_BATCH
    }

    /// Moves the buffered latency samples into the node's histograms.
    fn flush_latency(&mut self, node: &FanNode) {
        record_all(&mut self.pending_latency, &node.latency);
        record_all(&mut self.pending_send_latency, &node.send_latency);
        record_all(&mut self.pending_cross_latency, &node.cross_latency);
    }

    /// Ends the bookkeeping: a last attempt at matching send times (every
    /// poster has its answers by now), the last-state checkpoints, and the
    /// samples flushed.
    fn finish(&mut self, node: &FanNode, sent: &SentTimes) {
        self.match_sends(sent);
        self.counters.send_unmatched += self.unmatched.len() as u64;
        self.unmatched.clear();
        if self.record == Record::Checkpoints {
            for track in &self.tracks {
                if let (Some(seq), Some(state)) = (track.seq, &track.state) {
                    self.checkpoints.push(Checkpoint {
                        game: track.game,
                        seq,
                        hash: state_hash(state),
                        last: true,
                    });
                }
            }
        }
        self.flush_latency(node);
    }
}

/// Adds `samples` (µs) to `hist` under its lock, and empties them.
fn record_all(samples: &mut Vec<u64>, hist: &Mutex<Histogram<u64>>) {
    if samples.is_empty() {
        return;
    }
    // A poisoned lock only means another fan panicked mid-record; the
    // histogram itself is still usable.
    let mut hist = hist.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for &v in samples.iter() {
        hist.saturating_record(v.max(1));
    }
    samples.clear();
}

/// How a fan ended.
#[derive(Debug)]
pub(crate) struct FanOutcome {
    /// Which fan.
    pub(crate) index: usize,
    /// Index of its node in [`FanShared::nodes`].
    pub(crate) node: usize,
    /// What it was for.
    pub(crate) kind: FanKind,
    /// The handshake failed (with this reason); nothing else happened.
    pub(crate) connect_error: Option<String>,
    /// The connection ended before the run stopped it (with this reason).
    pub(crate) dropped: Option<String>,
    /// It left when told to (churn); its state is not compared with the hub's
    /// final one, its checkpoints are checked instead.
    pub(crate) left: bool,
    /// Counters over the run.
    pub(crate) counters: FanCounters,
    /// The fan's last view of each followed game.
    pub(crate) tracks: Vec<Track>,
    /// Checkpoints ([`FanKind::Churning`]).
    pub(crate) checkpoints: Vec<Checkpoint>,
    /// State hashes by seq ([`FanKind::Reference`]).
    pub(crate) history: Vec<History>,
    /// The first error frame or malformed frame seen.
    pub(crate) first_problem: Option<String>,
}

/// The current time in Unix microseconds.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The WebSocket URL fan `spec` connects to: its node's `/v1/ws`, subscribing
/// to its games unless it subscribes by message.
pub(crate) fn ws_url(ws_base: &str, game_ids: &[String], spec: &FanSpec) -> String {
    if let FanKind::Churning { by_message: true } = spec.kind {
        return format!("{ws_base}/v1/ws");
    }
    format!(
        "{ws_base}/v1/ws?games={}",
        game_list(game_ids, spec).join(",")
    )
}

/// The ids of the games `spec` follows.
fn game_list<'a>(game_ids: &'a [String], spec: &FanSpec) -> Vec<&'a str> {
    spec.games
        .iter()
        .filter_map(|&g| game_ids.get(g).map(String::as_str))
        .collect()
}

/// The `sub` message subscribing to `spec`'s games.
pub(crate) fn sub_message(game_ids: &[String], spec: &FanSpec) -> String {
    serde_json::json!({"op": "sub", "games": game_list(game_ids, spec)}).to_string()
}

/// A reference fan's turns through its slot's games (`--game-events`): it
/// subscribes to each new game of its slot as soon as it exists, and
/// unsubscribes from an older one once that has had all its events, so that
/// a retired game without fans can be unloaded by the hub.
#[derive(Debug)]
struct Turns {
    /// The slot.
    slot: usize,
    /// The slot's current generation.
    current: watch::Receiver<usize>,
    /// The newest generation followed.
    newest: usize,
    /// Per track: unsubscribed.
    unsubscribed: Vec<bool>,
}

impl Turns {
    /// Turns for a reference fan of a rotating run; `None` for any other.
    fn of(spec: &FanSpec, rotation: &Rotation) -> Option<Self> {
        let &game = spec.games.first()?;
        if spec.kind != FanKind::Reference || !rotation.rotates() {
            return None;
        }
        let (slot, newest) = rotation.slot_generation(game);
        let mut current = rotation.watch(slot)?;
        // The slot may have moved on before this fan started.
        current.mark_changed();
        Some(Self {
            slot,
            current,
            newest,
            unsubscribed: vec![false; spec.games.len()],
        })
    }

    /// Follows every generation after the newest followed up to `newest`;
    /// returns the `sub` messages to send.
    fn follow(
        &mut self,
        newest: usize,
        book: &mut Book,
        progress: &Progress,
        shared: &FanShared,
    ) -> Vec<String> {
        let mut games = Vec::new();
        while self.newest < newest {
            let game = shared.rotation.index(self.slot, self.newest + 1);
            let Some(id) = shared.game_ids.get(game) else {
                break;
            };
            if !progress.follow(game) {
                break;
            }
            book.follow(game, &shared.game_ids);
            self.unsubscribed.push(false);
            games.push(id.as_str());
            self.newest += 1;
        }
        if games.is_empty() {
            return Vec::new();
        }
        vec![serde_json::json!({"op": "sub", "games": games}).to_string()]
    }

    /// After track `slot` moved to `q`: tells the rotation the reference has
    /// its game, and returns an `unsub` message when an older game is done.
    fn on_seq(&mut self, slot: usize, q: u64, book: &Book, shared: &FanShared) -> Vec<String> {
        let Some(track) = book.tracks.get(slot) else {
            return Vec::new();
        };
        shared.rotation.reference_saw(track.game);
        if shared.rotation.events_per_game().is_some_and(|n| q >= n) {
            self.unsubscribe_complete(book, shared)
        } else {
            Vec::new()
        }
    }

    /// The `unsub` message for every game older than the newest followed
    /// that has had all its events (no more frames can come for it).
    fn unsubscribe_complete(&mut self, book: &Book, shared: &FanShared) -> Vec<String> {
        let Some(per_game) = shared.rotation.events_per_game() else {
            return Vec::new();
        };
        let mut games = Vec::new();
        for (track, done) in book.tracks.iter().zip(self.unsubscribed.iter_mut()) {
            let (_, generation) = shared.rotation.slot_generation(track.game);
            if *done || generation >= self.newest || track.seq.is_none_or(|q| q < per_game) {
                continue;
            }
            *done = true;
            if let Some(id) = shared.game_ids.get(track.game) {
                games.push(id.as_str());
            }
        }
        if games.is_empty() {
            return Vec::new();
        }
        vec![serde_json::json!({"op": "unsub", "games": games}).to_string()]
    }
}

/// The next generation of a reference fan's slot (`None` when the rotation
/// is gone); never ready without turns.
async fn next_generation(turns: &mut Option<Turns>) -> Option<usize> {
    match turns {
        Some(turns) => match turns.current.changed().await {
            Ok(()) => Some(*turns.current.borrow_and_update()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

/// Sends each text message.
async fn send_all<S>(ws: &mut S, messages: Vec<String>) -> Result<(), String>
where
    S: SinkExt<Message> + Unpin,
    S::Error: std::fmt::Display,
{
    for text in messages {
        ws.send(Message::text(text))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// What woke a fan up.
enum Step {
    /// The run is over (`None`), or the fan was told to leave.
    End(Option<Leave>),
    /// The fan's slot has a new current generation (reference fans of a
    /// rotating run; `None`: no more will come).
    Generation(Option<usize>),
    /// Something from the socket.
    Message(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
}

/// Runs one fan: connects (reporting the result on `connected`, when given),
/// then checks every frame until `stop` turns true, `leave` says so, or the
/// connection ends.
pub(crate) async fn run_fan(
    spec: FanSpec,
    shared: Arc<FanShared>,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
    leave: Option<oneshot::Receiver<Leave>>,
    connected: Option<mpsc::Sender<Result<(), String>>>,
) -> FanOutcome {
    let record = match spec.kind {
        FanKind::Steady => Record::Nothing,
        FanKind::Reference => Record::History,
        FanKind::Churning { .. } => Record::Checkpoints,
    };
    // The orchestrator builds every spec from `shared.nodes`.
    let node = shared
        .nodes
        .get(spec.node)
        .expect("a fan's node index is within FanShared::nodes");
    let mut book = Book::new(&spec.games, &shared.game_ids, shared.check_state, record)
        .posted_here(node.poster)
        .sharing(Arc::clone(&shared.frames));
    let url = ws_url(&node.ws_base, &shared.game_ids, &spec);
    let mut outcome = FanOutcome {
        index: spec.index,
        node: spec.node,
        kind: spec.kind,
        connect_error: None,
        dropped: None,
        left: false,
        counters: FanCounters::default(),
        tracks: Vec::new(),
        checkpoints: Vec::new(),
        history: Vec::new(),
        first_problem: None,
    };

    let handshake = async {
        let _permit = shared
            .connect_limit
            .acquire()
            .await
            .map_err(|_| "the run was aborted before this fan connected".to_string())?;
        let source = dial::source_for(node.addr, spec.index);
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0);
        let attempt = async {
            let stream = dial::connect(node.addr, source)
                .await
                .map_err(|e| format!("connecting {url} from {source:?}: {e}"))?;
            let (mut ws, _response) =
                tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config))
                    .await
                    .map_err(|e| format!("handshake with {url}: {e}"))?;
            if let FanKind::Churning { by_message: true } = spec.kind {
                let sub = sub_message(&shared.game_ids, &spec);
                ws.send(Message::text(sub))
                    .await
                    .map_err(|e| format!("subscribing on {url}: {e}"))?;
            }
            Ok(ws)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "connecting {url}: no handshake within {CONNECT_TIMEOUT:?}"
            )),
        }
    };
    let mut ws = match handshake.await {
        Ok(ws) => ws,
        Err(reason) => {
            progress.alive.store(false, Ordering::Relaxed);
            if let Some(connected) = connected {
                // The receiver only goes away when the run is aborting anyway.
                let _ = connected.send(Err(reason.clone())).await;
            }
            outcome.connect_error = Some(reason);
            outcome.tracks = book.tracks;
            return outcome;
        }
    };
    if let Some(connected) = connected {
        let _ = connected.send(Ok(())).await;
    }

    // Stop and leave in one future, made once: building the watch and oneshot
    // futures afresh for every frame would re-register their wakers each time.
    let ended = async {
        let leave_signal = async {
            match leave {
                Some(rx) => match rx.await {
                    Ok(how) => how,
                    // The churner is gone without a word: stay until the end.
                    Err(_) => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            // An error means the sender is gone: the run is over too.
            _ = stop.wait_for(|stopped| *stopped) => None,
            how = leave_signal => Some(how),
        }
    };
    tokio::pin!(ended);
    let mut turns = Turns::of(&spec, &shared.rotation);
    let how_left = loop {
        let step = tokio::select! {
            biased;
            how = &mut ended => Step::End(how),
            newest = next_generation(&mut turns), if turns.is_some() => Step::Generation(newest),
            message = ws.next() => Step::Message(message),
        };
        match step {
            Step::End(how) => break how,
            Step::Generation(None) => turns = None,
            Step::Generation(Some(newest)) => {
                let Some(turns) = turns.as_mut() else {
                    continue;
                };
                let mut messages = turns.follow(newest, &mut book, &progress, &shared);
                messages.extend(turns.unsubscribe_complete(&book, &shared));
                if let Err(e) = send_all(&mut ws, messages).await {
                    outcome.dropped = Some(format!("(un)subscribing on {url}: {e}"));
                    break None;
                }
            }
            Step::Message(Some(Ok(Message::Binary(bytes)))) => {
                let at = Receipt {
                    wall_us: now_us(),
                    mono_ns: shared.sent.now_ns(),
                    measuring: shared.measuring.load(Ordering::Relaxed),
                };
                if let Some((slot, q)) = book.on_frame(&bytes, &at, &shared.sent) {
                    if let Some(seen) = progress.seqs.get(slot) {
                        seen.store(q.saturating_add(1), Ordering::Relaxed);
                    }
                    if let Some(turns) = turns.as_mut() {
                        let messages = turns.on_seq(slot, q, &book, &shared);
                        if let Err(e) = send_all(&mut ws, messages).await {
                            outcome.dropped = Some(format!("unsubscribing on {url}: {e}"));
                            break None;
                        }
                    }
                }
                if book.latency_batch_full() {
                    book.flush_latency(node);
                }
            }
            Step::Message(Some(Ok(Message::Text(text)))) => {
                let start: String = text.chars().take(80).collect();
                book.problem(format!("text frame (the contract says binary): {start}"));
            }
            Step::Message(Some(Ok(Message::Close(frame)))) => {
                outcome.dropped = Some(match frame {
                    Some(f) => {
                        format!("closed by the hub: code {} {}", u16::from(f.code), f.reason)
                    }
                    None => "closed by the hub without a close frame".into(),
                });
                break None;
            }
            // Ping/pong: tungstenite answers pings itself.
            Step::Message(Some(Ok(_))) => {}
            Step::Message(Some(Err(e))) => {
                outcome.dropped = Some(format!("connection error: {e}"));
                break None;
            }
            Step::Message(None) => {
                outcome.dropped = Some("connection ended".into());
                break None;
            }
        }
    };
    progress.alive.store(false, Ordering::Relaxed);
    outcome.left = how_left.is_some();
    match how_left {
        // Gone without a goodbye: the socket is dropped below.
        Some(Leave::Vanish) => {}
        // A polite goodbye; the hub must cope with fans that just vanish, too.
        _ if outcome.dropped.is_none() => {
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        }
        _ => {}
    }
    drop(ws);
    book.finish(node, &shared.sent);
    outcome.counters = book.counters;
    outcome.first_problem = book.first_problem;
    outcome.tracks = book.tracks;
    outcome.checkpoints = book.checkpoints;
    outcome.history = book.history;
    outcome
}

#[cfg(test)]
mod tests {
    use super::{Book, FanKind, FanSpec, Receipt, Record, sub_message, ws_url};
    use crate::{churn::state_hash, sent::SentTimes};
    use serde::Serialize;
    use serde_json::{Value, json};

    /// A frame as the hub would encode it (MessagePack map, named fields).
    #[derive(Serialize)]
    struct Out<'a> {
        t: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        g: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        q: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        d: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ts: Option<u64>,
    }

    fn snapshot(g: &str, q: u64, d: Value) -> Vec<u8> {
        let frame = Out {
            t: "s",
            g: Some(g),
            q: Some(q),
            d: Some(d),
            ts: None,
        };
        rmp_serde::to_vec_named(&frame).expect("encodes")
    }

    fn diff(g: &str, q: u64, d: Value) -> Vec<u8> {
        let frame = Out {
            t: "d",
            g: Some(g),
            q: Some(q),
            d: Some(d),
            ts: Some(1_000),
        };
        rmp_serde::to_vec_named(&frame).expect("encodes")
    }

    /// A receipt at wall time `wall_us` and monotonic time `mono_ns`.
    fn at(wall_us: u64, mono_ns: u64, measuring: bool) -> Receipt {
        Receipt {
            wall_us,
            mono_ns,
            measuring,
        }
    }

    fn ids() -> Vec<String> {
        vec!["lt:g1".to_string(), "lt:g2".to_string()]
    }

    fn book(record: Record) -> Book {
        Book::new(&[0, 1], &ids(), true, record)
    }

    #[test]
    fn a_fan_connects_to_its_node_with_its_games() {
        let ids = vec![
            "lt:g1".to_string(),
            "lt:g2".to_string(),
            "lt:g3".to_string(),
        ];
        let mut spec = FanSpec {
            index: 7,
            node: 1,
            games: vec![2, 0],
            kind: FanKind::Steady,
        };
        assert_eq!(
            ws_url("ws://127.0.0.1:8081", &ids, &spec),
            "ws://127.0.0.1:8081/v1/ws?games=lt:g3,lt:g1"
        );
        spec.kind = FanKind::Churning { by_message: true };
        assert_eq!(
            ws_url("ws://127.0.0.1:8081", &ids, &spec),
            "ws://127.0.0.1:8081/v1/ws"
        );
        let sub: Value = serde_json::from_str(&sub_message(&ids, &spec)).expect("JSON");
        assert_eq!(sub, json!({"op": "sub", "games": ["lt:g3", "lt:g1"]}));
    }

    #[test]
    fn in_order_diffs_rebuild_the_state() {
        let sent = SentTimes::new(2);
        let mut b = book(Record::Nothing);
        let now = at(1_500_000, 0, true);
        b.on_frame(
            &snapshot("lt:g1", 2, json!({"seq": 2, "home": {"score": 0}})),
            &now,
            &sent,
        );
        b.on_frame(
            &diff("lt:g1", 3, json!({"seq": 3, "home": {"score": 1}})),
            &now,
            &sent,
        );
        b.on_frame(
            &diff("lt:g1", 4, json!({"seq": 4, "home": {"score": 2}})),
            &now,
            &sent,
        );
        let c = b.counters;
        assert_eq!(
            (
                c.snapshots,
                c.deliveries,
                c.gaps,
                c.duplicates,
                c.out_of_order
            ),
            (1, 2, 0, 0, 0)
        );
        assert_eq!(b.tracks[0].seq, Some(4));
        assert_eq!(
            b.tracks[0].state,
            Some(std::sync::Arc::new(json!({"seq": 4, "home": {"score": 2}})))
        );
        assert_eq!(b.pending_latency, vec![500_000, 500_000]);
    }

    #[test]
    fn gaps_duplicates_and_reordering_are_counted() {
        let sent = SentTimes::new(2);
        let mut b = book(Record::Nothing);
        let now = at(0, 0, false);
        b.on_frame(&diff("lt:g2", 1, json!({})), &now, &sent);
        b.on_frame(&snapshot("lt:g2", 1, json!({})), &now, &sent);
        b.on_frame(&diff("lt:g2", 3, json!({})), &now, &sent); // gap
        b.on_frame(&diff("lt:g2", 3, json!({})), &now, &sent); // duplicate
        b.on_frame(&diff("lt:g2", 2, json!({})), &now, &sent); // out of order
        b.on_frame(&diff("lt:g2", 4, json!({})), &now, &sent); // fine again
        let c = b.counters;
        assert_eq!(c.diffs_without_snapshot, 1);
        assert_eq!((c.gaps, c.duplicates, c.out_of_order), (1, 1, 1));
        assert_eq!(b.tracks[1].seq, Some(4));
        assert_eq!(c.deliveries, 0, "nothing counts before measuring starts");
    }

    #[test]
    fn malformed_and_foreign_frames_are_bad_frames() {
        let sent = SentTimes::new(2);
        let mut b = book(Record::Nothing);
        let now = at(0, 0, true);
        b.on_frame(b"\x01\x02", &now, &sent);
        b.on_frame(&snapshot("lt:other", 1, json!({})), &now, &sent);
        let error = rmp_serde::to_vec_named(&json!({"t": "e", "code": "bad_message", "msg": "no"}))
            .expect("encodes");
        b.on_frame(&error, &now, &sent);
        assert_eq!(b.counters.bad_frames, 2);
        assert_eq!(b.counters.error_frames, 1);
        assert!(b.first_problem.is_some());
    }

    #[test]
    fn send_latency_is_matched_by_game_and_seq_also_when_the_answer_comes_late() {
        let sent = SentTimes::new(2);
        let mut b = book(Record::Nothing);
        b.on_frame(&snapshot("lt:g2", 0, json!({})), &at(0, 0, true), &sent);
        sent.record(1, 1, 1_000_000, 0);
        b.on_frame(&diff("lt:g2", 1, json!({})), &at(0, 1_250_000, true), &sent);
        assert_eq!(b.pending_send_latency, vec![250], "known at once: µs");
        // The diff of seq 2 arrives before the poster knows its seq.
        b.on_frame(&diff("lt:g2", 2, json!({})), &at(0, 3_000_000, true), &sent);
        assert_eq!(b.unmatched.len(), 1);
        sent.record(1, 2, 2_900_000, 1);
        b.on_frame(&diff("lt:g2", 3, json!({})), &at(0, 4_000_000, true), &sent);
        assert_eq!(b.pending_send_latency, vec![250, 100]);
        // The book has no own poster: every event counts as cross-node.
        assert_eq!(b.pending_cross_latency, vec![250, 100]);
        // Seq 3's send time never becomes known: unmatched at the end.
        let node = super::FanNode {
            ws_base: "ws://127.0.0.1:1".into(),
            addr: "127.0.0.1:1".parse().expect("addr"),
            latency: std::sync::Mutex::new(crate::poster::latency_histogram().expect("histogram")),
            send_latency: std::sync::Mutex::new(
                crate::poster::latency_histogram().expect("histogram"),
            ),
            cross_latency: std::sync::Mutex::new(
                crate::poster::latency_histogram().expect("histogram"),
            ),
            poster: None,
        };
        b.finish(&node, &sent);
        assert_eq!(b.counters.send_unmatched, 1);
        let hist = node.send_latency.lock().expect("not poisoned");
        assert_eq!(hist.len(), 2);
    }

    #[test]
    fn cross_node_latency_counts_only_events_posted_to_another_hub() {
        let sent = SentTimes::new(2);
        let mut b = book(Record::Nothing).posted_here(Some(1));
        b.on_frame(&snapshot("lt:g2", 0, json!({})), &at(0, 0, true), &sent);
        sent.record(1, 1, 1_000_000, 1);
        sent.record(1, 2, 1_000_000, 2);
        b.on_frame(&diff("lt:g2", 1, json!({})), &at(0, 1_100_000, true), &sent);
        b.on_frame(&diff("lt:g2", 2, json!({})), &at(0, 1_300_000, true), &sent);
        assert_eq!(b.pending_send_latency, vec![100, 300]);
        assert_eq!(b.pending_cross_latency, vec![300], "seq 1 was posted here");
    }

    #[test]
    fn churning_fans_keep_checkpoints_and_references_keep_every_state() {
        let sent = SentTimes::new(2);
        let now = at(0, 0, false);
        let start = json!({"seq": 0, "home": {"score": 0}});
        let one = json!({"seq": 1, "home": {"score": 1}});
        let two = json!({"seq": 2, "home": {"score": 2}});

        let mut reference = book(Record::History);
        reference.on_frame(&snapshot("lt:g1", 0, start.clone()), &now, &sent);
        reference.on_frame(&diff("lt:g1", 1, one.clone()), &now, &sent);
        reference.on_frame(&diff("lt:g1", 2, two.clone()), &now, &sent);
        let history = &reference.history[0];
        assert_eq!(history.get(0), Some(state_hash(&start)));
        assert_eq!(history.get(1), Some(state_hash(&one)));
        assert_eq!(history.get(2), Some(state_hash(&two)));

        let mut churning = book(Record::Checkpoints);
        churning.on_frame(&snapshot("lt:g1", 1, one.clone()), &now, &sent);
        churning.on_frame(
            &diff("lt:g1", 2, json!({"seq": 2, "home": {"score": 2}})),
            &now,
            &sent,
        );
        let node = super::FanNode {
            ws_base: "ws://127.0.0.1:1".into(),
            addr: "127.0.0.1:1".parse().expect("addr"),
            latency: std::sync::Mutex::new(crate::poster::latency_histogram().expect("histogram")),
            send_latency: std::sync::Mutex::new(
                crate::poster::latency_histogram().expect("histogram"),
            ),
            cross_latency: std::sync::Mutex::new(
                crate::poster::latency_histogram().expect("histogram"),
            ),
            poster: None,
        };
        churning.finish(&node, &sent);
        let marks: Vec<(u64, u64, bool)> = churning
            .checkpoints
            .iter()
            .map(|c| (c.seq, c.hash, c.last))
            .collect();
        assert_eq!(
            marks,
            [(1, state_hash(&one), false), (2, state_hash(&two), true)]
        );

        let unchecked = Book::new(&[0], &ids(), false, Record::History);
        assert!(unchecked.history.is_empty(), "no states, nothing to record");
    }
}
