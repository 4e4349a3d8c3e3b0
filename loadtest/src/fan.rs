//! One fan: a WebSocket subscribed to a few games, checking every frame the hub
//! sends against the contract's guarantees.
//!
//! The bookkeeping ([`Book`]) is pure and tested without a socket; [`run_fan`]
//! is the connection around it. Per game a fan keeps the last sequence number
//! and the state rebuilt from the snapshot plus every diff (JSON Merge Patch), so
//! that at the end it can be compared with what `GET /v1/games/{id}` says.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::merge::merge_patch;

/// How long one WebSocket handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many latency samples a fan buffers before adding them to the shared
/// histogram (one lock per batch instead of one per frame).
const LATENCY_BATCH: usize = 256;

/// A hub fans connect to, and what its fans measured.
#[derive(Debug)]
pub(crate) struct FanNode {
    /// `ws://host:port`, without a trailing slash.
    pub(crate) ws_base: String,
    /// Delivery latency of this node's fans in microseconds, `now - ts` for
    /// every measured diff.
    pub(crate) latency: Mutex<Histogram<u64>>,
}

/// What every fan of a run shares.
#[derive(Debug)]
pub(crate) struct FanShared {
    /// The nodes fans connect to; fans refer to them by index.
    pub(crate) nodes: Vec<FanNode>,
    /// All game ids of the run; fans refer to games by index into this list.
    pub(crate) game_ids: Arc<[String]>,
    /// Set once the warm-up is over: deliveries and latencies count from then on.
    pub(crate) measuring: Arc<AtomicBool>,
    /// Rebuild each game's state from the frames (off only for raw throughput runs).
    pub(crate) check_state: bool,
    /// Bounds how many handshakes run at the same time.
    pub(crate) connect_limit: Semaphore,
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
}

/// A fan's progress, readable by the orchestrator while the fan runs: it waits
/// for every fan to catch up with the hub before comparing states.
#[derive(Debug)]
pub(crate) struct Progress {
    /// False once the fan's connection ended (failed, closed, or stopped).
    alive: AtomicBool,
    /// Per followed game (same order as [`FanSpec::games`]): last seq + 1, or 0
    /// before the first snapshot.
    seqs: Box<[AtomicU64]>,
}

impl Progress {
    /// Progress for a fan following `games` games.
    pub(crate) fn new(games: usize) -> Self {
        Self {
            alive: AtomicBool::new(true),
            seqs: (0..games).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// True when the fan is gone or has seen at least `targets[g]` for each game
    /// `g` it follows.
    pub(crate) fn caught_up(&self, spec: &FanSpec, targets: &[u64]) -> bool {
        if !self.alive.load(Ordering::Relaxed) {
            return true;
        }
        spec.games.iter().zip(self.seqs.iter()).all(|(&g, seen)| {
            // `seen` is seq + 1, so "seq >= target" reads "seen > target".
            seen.load(Ordering::Relaxed) > targets.get(g).copied().unwrap_or(0)
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
    pub(crate) state: Option<Value>,
}

/// A server frame, decoded with every key optional so that malformed frames are
/// counted instead of failing the fan.
#[derive(Debug, Deserialize)]
struct Frame<'a> {
    /// Kind: `s` snapshot, `d` diff, `e` error, `p` pong.
    #[serde(borrow)]
    t: &'a str,
    /// Game id.
    #[serde(borrow, default)]
    g: Option<&'a str>,
    /// Sequence number.
    #[serde(default)]
    q: Option<u64>,
    /// Full state (snapshot) or merge patch (diff).
    #[serde(default)]
    d: Option<Value>,
    /// Server ingest time of a diff, Unix ms.
    #[serde(default)]
    ts: Option<u64>,
    /// Error code.
    #[serde(borrow, default)]
    code: Option<&'a str>,
    /// Error message.
    #[serde(borrow, default)]
    msg: Option<&'a str>,
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
    /// Counters so far.
    counters: FanCounters,
    /// Latency samples (µs) not yet added to the shared histogram.
    pending_latency: Vec<u64>,
    /// The first error frame or malformed frame, for the report.
    first_problem: Option<String>,
}

impl Book {
    /// Bookkeeping for a fan following `games` (indexes into `game_ids`).
    pub(crate) fn new(games: &[usize], game_ids: &[String], check_state: bool) -> Self {
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
        Self {
            tracks,
            by_id,
            check_state,
            counters: FanCounters::default(),
            pending_latency: Vec::with_capacity(LATENCY_BATCH),
            first_problem: None,
        }
    }

    /// Handles one binary frame received at `now_us` (Unix µs). Returns the
    /// slot and new sequence number when a game's seq moved.
    pub(crate) fn on_frame(
        &mut self,
        bytes: &[u8],
        now_us: u64,
        measuring: bool,
    ) -> Option<(usize, u64)> {
        let frame: Frame<'_> = match rmp_serde::from_slice(bytes) {
            Ok(frame) => frame,
            Err(e) => {
                self.problem(format!("undecodable frame: {e}"));
                return None;
            }
        };
        match frame.t {
            "s" => self.on_snapshot(frame),
            "d" => self.on_diff(frame, now_us, measuring),
            "e" => {
                self.counters.error_frames += 1;
                if self.first_problem.is_none() {
                    self.first_problem = Some(format!(
                        "error frame: code={} msg={} game={}",
                        frame.code.unwrap_or("?"),
                        frame.msg.unwrap_or("?"),
                        frame.g.unwrap_or("-")
                    ));
                }
                None
            }
            "p" => None,
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
    fn slot(&mut self, frame: &Frame<'_>) -> Option<usize> {
        let Some(g) = frame.g else {
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
    fn on_snapshot(&mut self, frame: Frame<'_>) -> Option<(usize, u64)> {
        let slot = self.slot(&frame)?;
        let (Some(q), Some(d)) = (frame.q, frame.d) else {
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
            track.state = Some(d);
        }
        Some((slot, q))
    }

    /// A diff must follow the last seq by exactly one; it is applied when it
    /// moves forward (also across a gap, so that later frames keep being checked).
    fn on_diff(&mut self, frame: Frame<'_>, now_us: u64, measuring: bool) -> Option<(usize, u64)> {
        let slot = self.slot(&frame)?;
        let (Some(q), Some(d)) = (frame.q, frame.d) else {
            self.problem("diff without q or d".into());
            return None;
        };
        self.counters.diffs_total += 1;
        if measuring {
            self.counters.deliveries += 1;
            match frame.ts {
                Some(ts) => {
                    let sent_us = ts.saturating_mul(1000);
                    if now_us < sent_us {
                        self.counters.clock_skew += 1;
                    }
                    self.pending_latency.push(now_us.saturating_sub(sent_us));
                }
                None => self.problem("diff without ts".into()),
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
            merge_patch(state, &d);
        }
        Some((slot, q))
    }

    /// True when enough latency samples are buffered to be worth a lock.
    fn latency_batch_full(&self) -> bool {
        self.pending_latency.len() >= LATENCY_BATCH
    }

    /// Moves the buffered latency samples into `hist`.
    fn flush_latency(&mut self, hist: &Mutex<Histogram<u64>>) {
        if self.pending_latency.is_empty() {
            return;
        }
        // A poisoned lock only means another fan panicked mid-record; the
        // histogram itself is still usable.
        let mut hist = hist.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for &v in &self.pending_latency {
            hist.saturating_record(v.max(1));
        }
        self.pending_latency.clear();
    }
}

/// How a fan ended.
#[derive(Debug)]
pub(crate) struct FanOutcome {
    /// Which fan.
    pub(crate) index: usize,
    /// Index of its node in [`FanShared::nodes`].
    pub(crate) node: usize,
    /// The handshake failed (with this reason); nothing else happened.
    pub(crate) connect_error: Option<String>,
    /// The connection ended before the run stopped it (with this reason).
    pub(crate) dropped: Option<String>,
    /// Counters over the run.
    pub(crate) counters: FanCounters,
    /// The fan's last view of each followed game.
    pub(crate) tracks: Vec<Track>,
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
/// to its games.
pub(crate) fn ws_url(ws_base: &str, game_ids: &[String], spec: &FanSpec) -> String {
    let ids: Vec<&str> = spec
        .games
        .iter()
        .filter_map(|&g| game_ids.get(g).map(String::as_str))
        .collect();
    format!("{ws_base}/v1/ws?games={}", ids.join(","))
}

/// Runs one fan: connects (reporting the result on `connected`), then checks
/// every frame until `stop` turns true or the connection ends.
pub(crate) async fn run_fan(
    spec: FanSpec,
    shared: Arc<FanShared>,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
    connected: mpsc::Sender<Result<(), String>>,
) -> FanOutcome {
    let mut book = Book::new(&spec.games, &shared.game_ids, shared.check_state);
    // The orchestrator builds every spec from `shared.nodes`.
    let node = shared
        .nodes
        .get(spec.node)
        .expect("a fan's node index is within FanShared::nodes");
    let url = ws_url(&node.ws_base, &shared.game_ids, &spec);
    let mut outcome = FanOutcome {
        index: spec.index,
        node: spec.node,
        connect_error: None,
        dropped: None,
        counters: FanCounters::default(),
        tracks: Vec::new(),
        first_problem: None,
    };

    let handshake = async {
        let _permit = shared
            .connect_limit
            .acquire()
            .await
            .map_err(|_| "the run was aborted before this fan connected".to_string())?;
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(&url)).await {
            Ok(Ok((ws, _response))) => Ok(ws),
            Ok(Err(e)) => Err(format!("connecting {url}: {e}")),
            Err(_) => Err(format!(
                "connecting {url}: no handshake within {CONNECT_TIMEOUT:?}"
            )),
        }
    };
    let mut ws = match handshake.await {
        Ok(ws) => ws,
        Err(reason) => {
            progress.alive.store(false, Ordering::Relaxed);
            // The receiver only goes away when the run is aborting anyway.
            let _ = connected.send(Err(reason.clone())).await;
            outcome.connect_error = Some(reason);
            outcome.tracks = book.tracks;
            return outcome;
        }
    };
    let _ = connected.send(Ok(())).await;
    drop(connected);

    let stopped_already = *stop.borrow_and_update();
    if !stopped_already {
        loop {
            tokio::select! {
                biased;
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow_and_update() {
                        break;
                    }
                }
                message = ws.next() => match message {
                    Some(Ok(Message::Binary(bytes))) => {
                        let measuring = shared.measuring.load(Ordering::Relaxed);
                        if let Some((slot, q)) = book.on_frame(&bytes, now_us(), measuring)
                            && let Some(seen) = progress.seqs.get(slot)
                        {
                            seen.store(q.saturating_add(1), Ordering::Relaxed);
                        }
                        if book.latency_batch_full() {
                            book.flush_latency(&node.latency);
                        }
                    }
                    Some(Ok(Message::Text(text))) => {
                        let start: String = text.chars().take(80).collect();
                        book.problem(format!("text frame (the contract says binary): {start}"));
                    }
                    Some(Ok(Message::Close(frame))) => {
                        outcome.dropped = Some(match frame {
                            Some(f) => format!("closed by the hub: code {} {}", u16::from(f.code), f.reason),
                            None => "closed by the hub without a close frame".into(),
                        });
                        break;
                    }
                    Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
                    Some(Err(e)) => {
                        outcome.dropped = Some(format!("connection error: {e}"));
                        break;
                    }
                    None => {
                        outcome.dropped = Some("connection ended".into());
                        break;
                    }
                },
            }
        }
    }
    progress.alive.store(false, Ordering::Relaxed);
    if outcome.dropped.is_none() {
        // A polite goodbye; the hub must cope with fans that just vanish, too.
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    }
    book.flush_latency(&node.latency);
    outcome.counters = book.counters;
    outcome.first_problem = book.first_problem;
    outcome.tracks = book.tracks;
    outcome
}

#[cfg(test)]
mod tests {
    use super::{Book, FanSpec, ws_url};
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

    #[test]
    fn a_fan_connects_to_its_node_with_its_games() {
        let ids = vec![
            "lt:g1".to_string(),
            "lt:g2".to_string(),
            "lt:g3".to_string(),
        ];
        let spec = FanSpec {
            index: 7,
            node: 1,
            games: vec![2, 0],
        };
        assert_eq!(
            ws_url("ws://127.0.0.1:8081", &ids, &spec),
            "ws://127.0.0.1:8081/v1/ws?games=lt:g3,lt:g1"
        );
    }

    fn book() -> Book {
        let ids = vec!["lt:g1".to_string(), "lt:g2".to_string()];
        Book::new(&[0, 1], &ids, true)
    }

    #[test]
    fn in_order_diffs_rebuild_the_state() {
        let mut b = book();
        b.on_frame(
            &snapshot("lt:g1", 2, json!({"seq": 2, "home": {"score": 0}})),
            1_500_000,
            true,
        );
        b.on_frame(
            &diff("lt:g1", 3, json!({"seq": 3, "home": {"score": 1}})),
            1_500_000,
            true,
        );
        b.on_frame(
            &diff("lt:g1", 4, json!({"seq": 4, "home": {"score": 2}})),
            1_500_000,
            true,
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
            Some(json!({"seq": 4, "home": {"score": 2}}))
        );
        assert_eq!(b.pending_latency, vec![500_000, 500_000]);
    }

    #[test]
    fn gaps_duplicates_and_reordering_are_counted() {
        let mut b = book();
        b.on_frame(&diff("lt:g2", 1, json!({})), 0, false);
        b.on_frame(&snapshot("lt:g2", 1, json!({})), 0, false);
        b.on_frame(&diff("lt:g2", 3, json!({})), 0, false); // gap
        b.on_frame(&diff("lt:g2", 3, json!({})), 0, false); // duplicate
        b.on_frame(&diff("lt:g2", 2, json!({})), 0, false); // out of order
        b.on_frame(&diff("lt:g2", 4, json!({})), 0, false); // fine again
        let c = b.counters;
        assert_eq!(c.diffs_without_snapshot, 1);
        assert_eq!((c.gaps, c.duplicates, c.out_of_order), (1, 1, 1));
        assert_eq!(b.tracks[1].seq, Some(4));
        assert_eq!(c.deliveries, 0, "nothing counts before measuring starts");
    }

    #[test]
    fn malformed_and_foreign_frames_are_bad_frames() {
        let mut b = book();
        b.on_frame(b"\x01\x02", 0, true);
        b.on_frame(&snapshot("lt:other", 1, json!({})), 0, true);
        let error = rmp_serde::to_vec_named(&json!({"t": "e", "code": "bad_message", "msg": "no"}))
            .expect("encodes");
        b.on_frame(&error, 0, true);
        assert_eq!(b.counters.bad_frames, 2);
        assert_eq!(b.counters.error_frames, 1);
        assert!(b.first_problem.is_some());
    }
}
