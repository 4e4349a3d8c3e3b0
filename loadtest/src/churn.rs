//! The churn scenario: fans leaving and new fans connecting and subscribing at
//! a steady rate while events flow, and the check that every churned fan was
//! right for its whole lifetime.
//!
//! A fan that left cannot be compared with the hub's final state, so churning
//! fans keep [`Checkpoint`]s — the hash of every snapshot they got and of their
//! last state — and one reference fan per game, connected before the first
//! event and never churned, keeps the hash of every state of its game
//! ([`History`]). A checkpoint must equal the reference's state at the same
//! `seq` (with `--game-events`, the reference fan of a slot follows the
//! slot's games in turn: see [`crate::rotation`]; checkpoints are matched by
//! game). The reference fans themselves are compared with `GET` at the end like
//! every fan still connected, so the chain of trust ends at the hub's own word.
//! Sequence checks (gaps, duplicates, order) count for every fan as usual.

use std::{
    collections::{HashMap, VecDeque, hash_map::DefaultHasher},
    hash::{Hash, Hasher},
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
};

use crate::{
    fan::{self, FanKind, FanOutcome, FanShared, FanSpec, Leave, Progress},
    scenario::Scenario,
};

/// How often the churner wakes up.
const TICK: Duration = Duration::from_millis(10);

/// How many mismatches are described in the report.
const MAX_SAMPLES: usize = 5;

/// A hash of a game state that does not depend on the order of object keys
/// (a snapshot and a state rebuilt from diffs may list them differently).
pub(crate) fn state_hash(state: &Value) -> u64 {
    let mut hasher = DefaultHasher::new();
    hash_value(state, &mut hasher);
    hasher.finish()
}

/// Feeds `value` to `hasher`, object keys in sorted order.
fn hash_value(value: &Value, hasher: &mut DefaultHasher) {
    match value {
        Value::Null => 0u8.hash(hasher),
        Value::Bool(b) => (1u8, b).hash(hasher),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                (2u8, u).hash(hasher);
            } else if let Some(i) = n.as_i64() {
                (3u8, i).hash(hasher);
            } else {
                (4u8, n.as_f64().map(f64::to_bits)).hash(hasher);
            }
        }
        Value::String(s) => (5u8, s).hash(hasher),
        Value::Array(items) => {
            (6u8, items.len()).hash(hasher);
            for item in items {
                hash_value(item, hasher);
            }
        }
        Value::Object(map) => {
            (7u8, map.len()).hash(hasher);
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for key in keys {
                key.hash(hasher);
                if let Some(v) = map.get(key) {
                    hash_value(v, hasher);
                }
            }
        }
    }
}

/// A churning fan's view of a game at one `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Index of the game.
    pub(crate) game: usize,
    /// Its `seq`.
    pub(crate) seq: u64,
    /// [`state_hash`] of the fan's state at that seq.
    pub(crate) hash: u64,
    /// The fan's last state (else: a snapshot it received).
    pub(crate) last: bool,
}

/// Every state of one game a reference fan saw, by `seq`.
#[derive(Clone, Debug)]
pub(crate) struct History {
    /// Index of the game.
    pub(crate) game: usize,
    /// The seq of `hashes[0]`.
    first: u64,
    /// State hashes from `first` on; `None` for seqs skipped by a snapshot.
    hashes: Vec<Option<u64>>,
}

impl History {
    /// An empty history of `game`.
    pub(crate) fn new(game: usize) -> Self {
        Self {
            game,
            first: 0,
            hashes: Vec::new(),
        }
    }

    /// Records the state hash at `seq`. Seqs before the first are ignored.
    pub(crate) fn set(&mut self, seq: u64, hash: u64) {
        if self.hashes.is_empty() {
            self.first = seq;
        }
        let Some(offset) = seq
            .checked_sub(self.first)
            .and_then(|o| usize::try_from(o).ok())
        else {
            return;
        };
        if offset >= self.hashes.len() {
            self.hashes.resize(offset + 1, None);
        }
        self.hashes[offset] = Some(hash);
    }

    /// The state hash at `seq`, if it was seen.
    pub(crate) fn get(&self, seq: u64) -> Option<u64> {
        let offset = usize::try_from(seq.checked_sub(self.first)?).ok()?;
        self.hashes.get(offset).copied().flatten()
    }
}

/// What the churn check found.
#[derive(Debug, Default)]
pub(crate) struct ChurnCheck {
    /// Checkpoints compared with a reference.
    pub(crate) checked: u64,
    /// Checkpoints at a seq no reference saw (it got a snapshot past it).
    pub(crate) unverified: u64,
    /// Checkpoints that differ from the reference: a correctness failure.
    pub(crate) mismatches: u64,
    /// A few mismatches, described.
    pub(crate) samples: Vec<String>,
}

/// Compares every fan's checkpoints with the reference fans' histories.
pub(crate) fn verify(outcomes: &[FanOutcome], game_ids: &[String]) -> ChurnCheck {
    let mut references: HashMap<usize, Vec<&History>> = HashMap::new();
    for outcome in outcomes {
        if outcome.kind == FanKind::Reference && outcome.dropped.is_none() {
            for history in &outcome.history {
                references.entry(history.game).or_default().push(history);
            }
        }
    }
    let mut check = ChurnCheck::default();
    for outcome in outcomes {
        for point in &outcome.checkpoints {
            let known: Vec<u64> = references
                .get(&point.game)
                .into_iter()
                .flatten()
                .filter_map(|h| h.get(point.seq))
                .collect();
            if known.is_empty() {
                check.unverified += 1;
                continue;
            }
            check.checked += 1;
            if known.iter().all(|&h| h == point.hash) {
                continue;
            }
            check.mismatches += 1;
            if check.samples.len() < MAX_SAMPLES {
                let id = game_ids.get(point.game).map_or("?", String::as_str);
                check.samples.push(format!(
                    "churned fan {} game {id}: its {} at seq {} differs from the reference fan's state",
                    outcome.index,
                    if point.last { "last state" } else { "snapshot" },
                    point.seq
                ));
            }
        }
    }
    check
}

/// A fan started by the churner: its spec, progress and task.
pub(crate) type Spawned = (FanSpec, Arc<Progress>, JoinHandle<FanOutcome>);

/// What the churner needs to place and start new fans.
#[derive(Clone, Debug)]
pub(crate) struct ChurnPlan {
    /// Fans replaced per second.
    pub(crate) rate: f64,
    /// Traffic shape (placement of new fans).
    pub(crate) scenario: Scenario,
    /// Fan nodes.
    pub(crate) nodes: usize,
    /// Games posted to at once: the slots (`--games`).
    pub(crate) games: usize,
    /// Games per fan.
    pub(crate) subs_per_fan: usize,
    /// The number of the first new fan (after every fan started before).
    pub(crate) first_index: usize,
}

/// The churner, running; [`Churner::stop`] ends it.
#[derive(Debug)]
pub(crate) struct Churner {
    /// Tells the churner to stop.
    stop: oneshot::Sender<()>,
    /// The churner task, returning the fans it started and how many left.
    task: JoinHandle<(Vec<Spawned>, u64)>,
}

/// What the churn did.
#[derive(Debug)]
pub(crate) struct ChurnTotals {
    /// Fans started by the churner (some have left again).
    pub(crate) spawned: Vec<Spawned>,
    /// Fans told to leave.
    pub(crate) left: u64,
}

impl Churner {
    /// Starts churning: at `plan.rate` per second, the longest-connected fan of
    /// `churnable` is told to leave (alternately closing politely and
    /// vanishing) and a new fan connects and subscribes by message. New fans
    /// stop with `fans_stop` like every other fan.
    pub(crate) fn start(
        plan: ChurnPlan,
        shared: Arc<FanShared>,
        churnable: VecDeque<oneshot::Sender<Leave>>,
        fans_stop: watch::Receiver<bool>,
    ) -> Self {
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run_churner(plan, shared, churnable, fans_stop, stop_rx));
        Self { stop, task }
    }

    /// Stops churning (fans keep running) and returns what it did.
    pub(crate) async fn stop(self) -> anyhow::Result<ChurnTotals> {
        let _ = self.stop.send(());
        let (spawned, left) = self
            .task
            .await
            .map_err(|e| anyhow::anyhow!("the churn task failed: {e}"))?;
        Ok(ChurnTotals { spawned, left })
    }
}

/// The churner's loop.
async fn run_churner(
    plan: ChurnPlan,
    shared: Arc<FanShared>,
    mut churnable: VecDeque<oneshot::Sender<Leave>>,
    fans_stop: watch::Receiver<bool>,
    mut stop: oneshot::Receiver<()>,
) -> (Vec<Spawned>, u64) {
    let start = Instant::now();
    let mut spawned: Vec<Spawned> = Vec::new();
    let mut left: u64 = 0;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        // Float to integer: `as` saturates; rate and elapsed are finite and
        // non-negative.
        let due = (plan.rate * start.elapsed().as_secs_f64()).floor() as u64;
        while left < due {
            let Some(oldest) = churnable.pop_front() else {
                break;
            };
            let how = if left.is_multiple_of(2) {
                Leave::Close
            } else {
                Leave::Vanish
            };
            // A fan that already ended has dropped its receiver; it still counts.
            let _ = oldest.send(how);
            left += 1;
            let index = plan.first_index + spawned.len();
            let placed = plan
                .scenario
                .place_fan(index, plan.nodes, plan.games, plan.subs_per_fan);
            let spec = FanSpec {
                index,
                node: placed.node,
                // Placement picks slots; a new fan follows their current games.
                games: placed
                    .games
                    .iter()
                    .map(|&slot| shared.rotation.current_game(slot))
                    .collect(),
                kind: FanKind::Churning { by_message: true },
            };
            let progress = Arc::new(Progress::new(&spec.games, spec.games.len()));
            let (leave_tx, leave_rx) = oneshot::channel();
            let task = tokio::spawn(fan::run_fan(
                spec.clone(),
                Arc::clone(&shared),
                Arc::clone(&progress),
                fans_stop.clone(),
                Some(leave_rx),
                None,
            ));
            churnable.push_back(leave_tx);
            spawned.push((spec, progress, task));
        }
    }
    (spawned, left)
}

#[cfg(test)]
mod tests {
    use super::{Checkpoint, History, state_hash, verify};
    use crate::fan::{FanCounters, FanKind, FanOutcome};
    use serde_json::json;

    #[test]
    fn the_state_hash_ignores_key_order_but_not_values() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"home":{"score":1,"name":"H"},"seq":3}"#).expect("JSON");
        let b: serde_json::Value =
            serde_json::from_str(r#"{"seq":3,"home":{"name":"H","score":1}}"#).expect("JSON");
        assert_eq!(state_hash(&a), state_hash(&b));
        assert_ne!(
            state_hash(&a),
            state_hash(&json!({"seq": 3, "home": {"name": "H", "score": 2}}))
        );
        assert_ne!(state_hash(&json!({"a": 1})), state_hash(&json!({"a": "1"})));
        assert_eq!(state_hash(&json!({"a": -1})), state_hash(&json!({"a": -1})));
    }

    #[test]
    fn a_history_keeps_states_by_seq_across_skips() {
        let mut h = History::new(0);
        h.set(5, 50);
        h.set(6, 60);
        h.set(9, 90); // a snapshot skipped 7 and 8
        h.set(4, 40); // before the first: ignored
        assert_eq!(
            [4, 5, 6, 7, 8, 9, 10].map(|s| h.get(s)),
            [None, Some(50), Some(60), None, None, Some(90), None]
        );
    }

    fn outcome(index: usize, kind: FanKind) -> FanOutcome {
        FanOutcome {
            index,
            node: 0,
            kind,
            connect_error: None,
            dropped: None,
            left: false,
            counters: FanCounters::default(),
            tracks: Vec::new(),
            checkpoints: Vec::new(),
            history: Vec::new(),
            first_problem: None,
        }
    }

    #[test]
    fn checkpoints_are_checked_against_the_reference() {
        let mut reference = outcome(0, FanKind::Reference);
        let mut h = History::new(0);
        h.set(1, 11);
        h.set(2, 22);
        reference.history.push(h);
        let mut churned = outcome(7, FanKind::Churning { by_message: true });
        churned.left = true;
        let point = |seq, hash, last| Checkpoint {
            game: 0,
            seq,
            hash,
            last,
        };
        churned.checkpoints = vec![
            point(1, 11, false), // right
            point(2, 99, true),  // wrong
            point(3, 33, true),  // no reference state: unverified
        ];
        let check = verify(&[reference, churned], &["lt:g1".to_string()]);
        assert_eq!(
            (check.checked, check.mismatches, check.unverified),
            (2, 1, 1)
        );
        assert_eq!(
            check.samples,
            [
                "churned fan 7 game lt:g1: its last state at seq 2 differs from the reference fan's state"
            ]
        );
    }
}
