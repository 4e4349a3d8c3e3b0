//! What a cluster run checks about acknowledged events, and the failover
//! measurement (`--kill-primary-at`): the poster notes every `200` in
//! [`Acks`] and tells a [`FailoverWatch`] about each answer on the doomed
//! shard's games; a task `kill -9`s that shard's primary at the chosen
//! moment of the window; at the end every game's history is read back
//! (`GET /v1/games/{id}/events`) and each acknowledged event looked up in it.
//!
//! "Lost" means: answered `200` (not a duplicate) with a `seq`, and absent
//! from the history afterwards, or present under another `seq`. With
//! `redis.min_replicas_acked = 1` the hub promises none (README, "What 200
//! promises in cluster mode").

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Result;
use futures_util::{StreamExt, stream};
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::{api::Api, launch, sent::SentTimes};

/// Entries per history page read (the hub's largest page).
const PAGE: usize = 1000;

/// Histories read at once.
const READ_CONCURRENCY: usize = 8;

/// How many lost events are described in the report.
const MAX_SAMPLES: usize = 5;

/// An acknowledged event: `(game index, seq, event_id)`.
type Ack = (usize, u64, String);

/// A refused event: `(game index, event_id)`.
type Refusal = (usize, String);

/// Every event the hub acknowledged with `200` (not a duplicate) during the
/// run, warm-up included: `(game index, seq, event_id)`.
#[derive(Debug, Default)]
pub(crate) struct Acks {
    /// The acknowledgements, in no particular order.
    list: Mutex<Vec<Ack>>,
    /// Events answered otherwise (not `429`) or not at all: `(game, event_id)`.
    refused: Mutex<Vec<Refusal>>,
}

impl Acks {
    /// Notes one acknowledgement.
    pub(crate) fn record(&self, game: usize, seq: u64, event_id: String) {
        self.list
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((game, seq, event_id));
    }

    /// Notes an event answered otherwise than `200` (or not at all).
    pub(crate) fn refused(&self, game: usize, event_id: String) {
        self.refused
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((game, event_id));
    }

    /// The acknowledgements and refusals so far.
    fn take(&self) -> (Vec<Ack>, Vec<Refusal>) {
        let list = std::mem::take(
            &mut *self
                .list
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        let refused = std::mem::take(
            &mut *self
                .refused
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        (list, refused)
    }
}

/// Answers to posts on the doomed shard's games around the kill.
#[derive(Debug)]
pub(crate) struct FailoverWatch {
    /// Per game index: on the shard whose primary is killed.
    on_shard: Box<[bool]>,
    /// [`SentTimes::now_ns`] + 1 of the kill; 0 before.
    killed_at: AtomicU64,
    /// `now_ns` + 1 of the first `200` to an event sent after the kill.
    first_ack: AtomicU64,
    /// Events on the shard sent after the kill and answered otherwise (or
    /// not at all) before that first `200`.
    failed_before_ack: AtomicU64,
    /// The same, over the whole rest of the run.
    failed_after_kill: AtomicU64,
    /// `200`s on the shard to events sent after the kill.
    acked_after_kill: AtomicU64,
}

impl FailoverWatch {
    /// A watch for the games marked in `on_shard`.
    pub(crate) fn new(on_shard: Vec<bool>) -> Self {
        Self {
            on_shard: on_shard.into(),
            killed_at: AtomicU64::new(0),
            first_ack: AtomicU64::new(0),
            failed_before_ack: AtomicU64::new(0),
            failed_after_kill: AtomicU64::new(0),
            acked_after_kill: AtomicU64::new(0),
        }
    }

    /// Notes the answer to an event of game `game` sent at `sent_ns` and
    /// answered at `answered_ns` (`accepted`: `200`).
    pub(crate) fn on_answer(&self, game: usize, sent_ns: u64, answered_ns: u64, accepted: bool) {
        let killed = self.killed_at.load(Ordering::Acquire);
        if killed == 0 || sent_ns + 1 < killed || !self.on_shard.get(game).copied().unwrap_or(false)
        {
            return;
        }
        if accepted {
            self.acked_after_kill.fetch_add(1, Ordering::Relaxed);
            // Only the first one sets it.
            let _ = self.first_ack.compare_exchange(
                0,
                answered_ns + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        } else {
            self.failed_after_kill.fetch_add(1, Ordering::Relaxed);
            if self.first_ack.load(Ordering::Acquire) == 0 {
                self.failed_before_ack.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Kills `pid` (the doomed primary, on `port`) after `after`, noting the
/// moment in `watch`. Returns what happened, for the report.
pub(crate) fn kill_later(
    pid: u32,
    port: u16,
    after: Duration,
    watch: Arc<FailoverWatch>,
    sent: Arc<SentTimes>,
) -> JoinHandle<Result<()>> {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let at = sent.now_ns();
        watch.killed_at.store(at + 1, Ordering::Release);
        eprintln!("loadtest: kill -9 of the primary on port {port} (pid {pid})");
        launch::kill9(pid)
    })
}

/// The failover figures.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct FailoverReport {
    /// The killed primary's port.
    pub(crate) killed_port: u16,
    /// Seconds into the measured window it was killed (`None`: the run
    /// ended first).
    pub(crate) killed_at_s: Option<f64>,
    /// Games on its shard.
    pub(crate) games_on_shard: usize,
    /// From the kill to the first `200` to an event of the shard's games
    /// sent after it, seconds (`None`: none came before posting stopped).
    pub(crate) recovery_s: Option<f64>,
    /// Events on the shard sent after the kill and answered otherwise (503,
    /// error, no answer) before that first `200`.
    pub(crate) failed_before_recovery: u64,
    /// The same over the rest of the run.
    pub(crate) failed_after_kill: u64,
    /// `200`s on the shard to events sent after the kill.
    pub(crate) acked_after_kill: u64,
    /// The primary serving the shard's slots at the end (a promoted replica).
    pub(crate) new_primary_port: Option<u16>,
}

impl FailoverReport {
    /// The figures from `watch`, with `window_start_ns` the window's start
    /// on the [`SentTimes`] clock.
    pub(crate) fn from_watch(
        watch: &FailoverWatch,
        killed_port: u16,
        window_start_ns: u64,
    ) -> Self {
        let killed = watch.killed_at.load(Ordering::Acquire);
        let first = watch.first_ack.load(Ordering::Acquire);
        let secs = |ns: u64| ns as f64 / 1e9;
        Self {
            killed_port,
            killed_at_s: (killed > 0).then(|| secs((killed - 1).saturating_sub(window_start_ns))),
            games_on_shard: watch.on_shard.iter().filter(|on| **on).count(),
            recovery_s: (killed > 0 && first > 0).then(|| secs(first.saturating_sub(killed))),
            failed_before_recovery: watch.failed_before_ack.load(Ordering::Relaxed),
            failed_after_kill: watch.failed_after_kill.load(Ordering::Relaxed),
            acked_after_kill: watch.acked_after_kill.load(Ordering::Relaxed),
            new_primary_port: None,
        }
    }
}

/// Acknowledged events checked against the games' histories.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct LossCheck {
    /// Events acknowledged `200` over the run.
    pub(crate) acknowledged: u64,
    /// Of those, missing from the history, or there under another `seq`.
    pub(crate) lost: u64,
    /// Games whose history could not be read (their events are not checked).
    pub(crate) unreadable_games: u64,
    /// Events answered otherwise than `200` (or not at all, `429` aside).
    pub(crate) refused: u64,
    /// Of those, in the history all the same (the hub says a `503` may
    /// have been applied; a client's retry of the same id is a duplicate).
    pub(crate) refused_but_applied: u64,
    /// A few lost events, described; and why a history was unreadable.
    pub(crate) samples: Vec<String>,
}

/// Reads every game's history from `api` and looks up each acknowledged
/// event in it.
pub(crate) async fn check_losses(api: &Api, game_ids: &[String], acks: &Acks) -> LossCheck {
    let (acks, refused) = acks.take();
    let mut wanted: Vec<bool> = vec![false; game_ids.len()];
    for game in acks.iter().map(|a| a.0).chain(refused.iter().map(|r| r.0)) {
        if let Some(w) = wanted.get_mut(game) {
            *w = true;
        }
    }
    let histories: Vec<(usize, Result<HashMap<String, u64>>)> = stream::iter(
        wanted
            .iter()
            .enumerate()
            .filter(|(_, w)| **w)
            .map(|(game, _)| {
                let id = game_ids[game].clone();
                async move { (game, history(api, &id).await) }
            }),
    )
    .buffer_unordered(READ_CONCURRENCY)
    .collect()
    .await;
    let mut check = LossCheck {
        acknowledged: acks.len() as u64,
        refused: refused.len() as u64,
        ..LossCheck::default()
    };
    let mut by_game: HashMap<usize, HashMap<String, u64>> = HashMap::new();
    for (game, result) in histories {
        match result {
            Ok(history) => {
                by_game.insert(game, history);
            }
            Err(e) => {
                check.unreadable_games += 1;
                if check.samples.len() < MAX_SAMPLES {
                    check.samples.push(format!("history unreadable: {e:#}"));
                }
            }
        }
    }
    check.refused_but_applied = refused
        .iter()
        .filter(|(game, id)| by_game.get(game).is_some_and(|h| h.contains_key(id)))
        .count() as u64;
    for (game, seq, event_id) in acks {
        let Some(history) = by_game.get(&game) else {
            continue;
        };
        let found = history.get(&event_id).copied();
        if found != Some(seq) {
            check.lost += 1;
            if check.samples.len() < MAX_SAMPLES {
                check.samples.push(format!(
                    "{} seq {seq} ({event_id}) acknowledged 200, {}",
                    game_ids[game],
                    match found {
                        Some(other) => format!("but the history has it at seq {other}"),
                        None => "but it is not in the history".to_string(),
                    }
                ));
            }
        }
    }
    check
}

/// Game `id`'s whole history: `event_id` → `seq`.
async fn history(api: &Api, id: &str) -> Result<HashMap<String, u64>> {
    let mut all = HashMap::new();
    let mut since = 0;
    loop {
        let (entries, next) = api.events_page(id, since, PAGE).await?;
        if entries.is_empty() || next <= since {
            return Ok(all);
        }
        all.extend(entries.into_iter().map(|(seq, event_id)| (event_id, seq)));
        since = next;
    }
}

#[cfg(test)]
mod tests {
    use super::{FailoverReport, FailoverWatch};
    use std::sync::atomic::Ordering;

    #[test]
    fn only_answers_after_the_kill_on_the_shard_count() {
        let watch = FailoverWatch::new(vec![true, false]);
        watch.on_answer(0, 10, 20, false);
        assert_eq!(
            watch.failed_after_kill.load(Ordering::Relaxed),
            0,
            "not killed yet"
        );
        watch.killed_at.store(100 + 1, Ordering::Release);
        watch.on_answer(0, 50, 150, true); // sent before the kill
        watch.on_answer(1, 120, 130, false); // another shard
        watch.on_answer(0, 110, 400, false);
        watch.on_answer(0, 120, 500, false);
        watch.on_answer(0, 300, 1_100, true);
        watch.on_answer(0, 310, 1_200, false);
        let report = FailoverReport::from_watch(&watch, 7000, 0);
        assert_eq!(report.failed_before_recovery, 2);
        assert_eq!(report.failed_after_kill, 3);
        assert_eq!(report.acked_after_kill, 1);
        assert_eq!(report.games_on_shard, 1);
        let recovery = report.recovery_s.expect("recovered");
        assert!((recovery - 1e-6).abs() < 1e-12, "{recovery}");
    }
}
