//! Posting events at a steady total rate: one ticker hands out permits on a
//! schedule, a few concurrent posters spend them.
//!
//! The ticker computes how many events are due since the start (not "one per
//! interval"), so timer coarseness does not bend the rate. When the posters
//! cannot keep up (the hub is slow), at most a small backlog of permits is
//! kept and the rest are counted as skipped instead of piling up.
//!
//! Each accepted event's send time is noted by game and `seq` in
//! [`SentTimes`], where fans look it up for the send → receive latency.
//!
//! The ticker and the posters run on the control thread ([`api::control`]),
//! as every request does: with thousands of fans in this process, a reply on
//! the fans' runtime would wait behind every fan task with a frame to read,
//! and the measured post time would be mostly this process's own queueing.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::{
    sync::{Semaphore, watch},
    task::JoinHandle,
};

use crate::{
    api::{self, Api, PostReply},
    failover::{Acks, FailoverWatch},
    rotation::{self, Rotation},
    scenario::Scenario,
    sent::SentTimes,
};

/// How often the ticker wakes up to hand out permits.
const TICK: Duration = Duration::from_millis(5);

/// Permits kept per poster when the posters fall behind.
const BACKLOG_PER_POSTER: usize = 4;

/// What to post, how fast, and from how many concurrent posters.
#[derive(Clone, Debug)]
pub(crate) struct PosterPlan {
    /// Events per second over all games.
    pub(crate) rate: f64,
    /// Concurrent posters (each keeps one request in flight).
    pub(crate) posters: usize,
    /// Prefix making this run's `event_id`s unique, also across runs.
    pub(crate) run_id: String,
    /// All game ids of the run.
    pub(crate) game_ids: Arc<[String]>,
    /// Which slot each event goes to.
    pub(crate) scenario: Scenario,
    /// Which game of its slot (`--game-events`), created when first needed.
    pub(crate) rotation: Arc<Rotation>,
    /// Where send times are noted.
    pub(crate) sent: Arc<SentTimes>,
    /// Per game index: events answered `200` (not duplicates) while measuring.
    pub(crate) accepted_per_game: Arc<[AtomicU64]>,
    /// Where every `200` is noted, for the loss check (cluster runs).
    pub(crate) acks: Option<Arc<Acks>>,
    /// Told about every answer, for the failover figures (`--kill-primary-at`).
    pub(crate) failover: Option<Arc<FailoverWatch>>,
}

/// One counter per game, for [`PosterPlan::accepted_per_game`].
pub(crate) fn per_game_counters(games: usize) -> Arc<[AtomicU64]> {
    (0..games).map(|_| AtomicU64::new(0)).collect()
}

/// Posting results over the measured window.
#[derive(Debug)]
pub(crate) struct PosterTotals {
    /// Events sent.
    pub(crate) posted: u64,
    /// `200` answers.
    pub(crate) accepted: u64,
    /// `200` answers with `duplicate: true` (never expected: ids are unique).
    pub(crate) duplicate_replies: u64,
    /// `429` answers.
    pub(crate) rate_limited: u64,
    /// Any other answer, or no answer at all (including `429`).
    pub(crate) failed: u64,
    /// Events due by the schedule that were never sent because the posters were
    /// all busy (the hub answered too slowly for the rate).
    pub(crate) skipped: u64,
    /// Request round trip in microseconds, for answered requests.
    pub(crate) latency: Histogram<u64>,
    /// The first failure of the whole run (also during warm-up), for the report.
    pub(crate) first_failure: Option<String>,
}

impl PosterTotals {
    /// Empty totals.
    pub(crate) fn new() -> Result<Self> {
        Ok(Self {
            posted: 0,
            accepted: 0,
            duplicate_replies: 0,
            rate_limited: 0,
            failed: 0,
            skipped: 0,
            latency: latency_histogram()?,
            first_failure: None,
        })
    }

    /// Adds `other` into `self`.
    fn absorb(&mut self, other: PosterTotals) -> Result<()> {
        self.posted += other.posted;
        self.accepted += other.accepted;
        self.duplicate_replies += other.duplicate_replies;
        self.rate_limited += other.rate_limited;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.latency
            .add(&other.latency)
            .context("merging post latency histograms")?;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
        Ok(())
    }
}

/// A histogram of microseconds from 1 µs to one hour, 3 significant digits.
pub(crate) fn latency_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).context("creating a latency histogram")
}

/// Posting in progress; [`Posting::stop`] ends it and returns the totals.
#[derive(Debug)]
pub(crate) struct Posting {
    /// Turned to `true` to stop the ticker and the posters.
    stop: watch::Sender<bool>,
    /// The permits; closed on stop so that waiting posters wake up.
    permits: Arc<Semaphore>,
    /// The ticker, returning how many due events it skipped.
    ticker: JoinHandle<u64>,
    /// The posters, each returning its totals.
    posters: Vec<JoinHandle<Result<PosterTotals>>>,
}

/// Starts the ticker and `plan.posters` posters, posting the `n`th event to
/// `apis[n % apis.len()]` (games are created through the first). Counting
/// happens only while `measuring` is set; events are posted from the start
/// (the warm-up).
pub(crate) fn start(apis: &[Api], plan: PosterPlan, measuring: Arc<AtomicBool>) -> Result<Posting> {
    let apis: Arc<[Api]> = apis.to_vec().into();
    let posting = api::control()?;
    let (stop, stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(0));
    let backlog = plan.posters.max(1) * BACKLOG_PER_POSTER;
    let ticker = posting.spawn(run_ticker(
        plan.rate,
        backlog,
        Arc::clone(&permits),
        Arc::clone(&measuring),
        stop_rx.clone(),
    ));
    let next_event = Arc::new(AtomicU64::new(0));
    let posters = (0..plan.posters.max(1))
        .map(|_| {
            posting.spawn(run_poster(
                Arc::clone(&apis),
                plan.clone(),
                Arc::clone(&permits),
                Arc::clone(&next_event),
                Arc::clone(&measuring),
                stop_rx.clone(),
            ))
        })
        .collect();
    Ok(Posting {
        stop,
        permits,
        ticker,
        posters,
    })
}

impl Posting {
    /// Stops handing out permits, lets in-flight requests finish (bounded by the
    /// HTTP timeout), and returns the totals.
    pub(crate) async fn stop(self) -> Result<PosterTotals> {
        // Send fails only when every receiver is gone, i.e. all tasks ended.
        let _ = self.stop.send(true);
        self.permits.close();
        let skipped = self.ticker.await.context("the ticker task failed")?;
        let mut totals = PosterTotals::new()?;
        totals.skipped = skipped;
        for poster in self.posters {
            let poster = poster.await.context("a poster task failed")??;
            totals.absorb(poster)?;
        }
        Ok(totals)
    }
}

/// Hands out `rate` permits per second until stopped; returns how many due
/// permits did not fit into the backlog while measuring.
async fn run_ticker(
    rate: f64,
    backlog: usize,
    permits: Arc<Semaphore>,
    measuring: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) -> u64 {
    let start = Instant::now();
    let mut issued: u64 = 0;
    let mut skipped: u64 = 0;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = tick.tick() => {
                // Float to integer: `as` saturates, and rate and elapsed are
                // both finite and non-negative here.
                let due = (rate * start.elapsed().as_secs_f64()).floor() as u64;
                let new = due.saturating_sub(issued);
                issued = due;
                let room = backlog.saturating_sub(permits.available_permits());
                let add = usize::try_from(new).unwrap_or(usize::MAX).min(room);
                if measuring.load(Ordering::Relaxed) {
                    skipped += new - u64::try_from(add).unwrap_or(new);
                }
                permits.add_permits(add);
            }
        }
    }
    skipped
}

/// One poster: takes a permit, posts the next event, counts the answer.
async fn run_poster(
    apis: Arc<[Api]>,
    plan: PosterPlan,
    permits: Arc<Semaphore>,
    next_event: Arc<AtomicU64>,
    measuring: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) -> Result<PosterTotals> {
    let mut totals = PosterTotals::new()?;
    let Some(creator) = apis.first() else {
        return Ok(totals);
    };
    loop {
        let permit = tokio::select! {
            biased;
            _ = stop.changed() => break,
            permit = permits.acquire() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        permit.forget();
        let n = next_event.fetch_add(1, Ordering::Relaxed);
        let slots = plan.rotation.slots();
        let slot = plan.scenario.event_game(n, slots);
        // Every scenario spreads events round-robin over the slots, so this
        // is the slot's turn.
        let turn = n / u64::try_from(slots).unwrap_or(u64::MAX);
        let (generation, last) = rotation::event_place(turn, plan.rotation.events_per_game());
        let Some(generation) = usize::try_from(generation)
            .ok()
            .filter(|&g| g < plan.rotation.generations())
        else {
            // Past the games named for the run (it ran long): not sent.
            if measuring.load(Ordering::Relaxed) {
                totals.skipped += 1;
            }
            continue;
        };
        let game_index = match plan.rotation.ensure(creator, slot, generation).await {
            Ok(game_index) => game_index,
            Err(e) => {
                totals
                    .first_failure
                    .get_or_insert_with(|| format!("creating the slot's next game: {e:#}"));
                if measuring.load(Ordering::Relaxed) {
                    totals.posted += 1;
                    totals.failed += 1;
                }
                continue;
            }
        };
        let Some(game) = plan.game_ids.get(game_index) else {
            continue;
        };
        let event_id = format!("{}-{n}", plan.run_id);
        let event = if last {
            json!({"event_id": &event_id, "kind": "status", "status": "final"})
        } else {
            let team = if n.is_multiple_of(2) { "home" } else { "away" };
            json!({"event_id": &event_id, "kind": "score", "team": team, "points": 1})
        };
        let counted = measuring.load(Ordering::Relaxed);
        let node = usize::try_from(n % apis.len() as u64).unwrap_or(0);
        let api = &apis[node];
        let sent_ns = plan.sent.now_ns();
        let sent = Instant::now();
        let reply = api.post_event(game, &event).await;
        let took_us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        if last {
            plan.rotation.retired();
        }
        if let Ok(PostReply::Accepted {
            duplicate: false,
            seq: Some(seq),
        }) = &reply
        {
            plan.sent.record(
                game_index,
                *seq,
                sent_ns,
                u8::try_from(node).unwrap_or(u8::MAX),
            );
            if let Some(acks) = &plan.acks {
                acks.record(game_index, *seq, event_id.clone());
            }
            if counted && let Some(count) = plan.accepted_per_game.get(game_index) {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        let accepted = matches!(reply, Ok(PostReply::Accepted { .. }));
        if let Some(watch) = &plan.failover {
            watch.on_answer(game_index, sent_ns, plan.sent.now_ns(), accepted);
        }
        if !accepted
            && !matches!(reply, Ok(PostReply::RateLimited))
            && let Some(acks) = &plan.acks
        {
            acks.refused(game_index, format!("{}-{n}", plan.run_id));
        }
        let failure = match &reply {
            Ok(PostReply::Accepted { .. }) => None,
            Ok(PostReply::RateLimited) => Some(format!(
                "POST to {game} answered 429: the hub limits events per token \
                 (limits.events_per_second); an admin-scope token is exempt"
            )),
            Ok(PostReply::Refused(why)) => Some(why.clone()),
            Err(e) => Some(format!("{e:#}")),
        };
        if totals.first_failure.is_none() {
            totals.first_failure = failure;
        }
        if !counted {
            continue;
        }
        totals.posted += 1;
        match reply {
            Ok(PostReply::Accepted { duplicate, .. }) => {
                totals.accepted += 1;
                totals.duplicate_replies += u64::from(duplicate);
                totals.latency.saturating_record(took_us.max(1));
            }
            Ok(PostReply::RateLimited) => {
                totals.rate_limited += 1;
                totals.failed += 1;
                totals.latency.saturating_record(took_us.max(1));
            }
            Ok(PostReply::Refused(_)) => {
                totals.failed += 1;
                totals.latency.saturating_record(took_us.max(1));
            }
            Err(_) => totals.failed += 1,
        }
    }
    Ok(totals)
}
