//! Whether the hub's workers are saturated, for the fan-out to choose
//! between latency and throughput.
//!
//! A fan's frame is cheapest to deliver *now*, straight from the game actor
//! (one `writev`, no task wake-up), as long as the hub keeps up. When every
//! worker is busy, a fan that several games write to is better served by
//! letting its frames gather for a moment and go out in one write: on
//! loopback a small write costs about 4 µs whatever its size, so sharing it
//! is the only way to deliver more frames per CPU-second.
//!
//! The signal is scheduling lag: a probe task asks to wake every
//! millisecond and measures how late it runs. Late ticks mean tasks wait for
//! a worker. The lag is smoothed, so one slow tick does not flip the mode.
//!
//! The state is an owned [`Pressure`], one per hub (shared as
//! `Arc<Pressure>` by its outboxes, its fan sessions and its probe), so two
//! hubs in one process (tests) do not see each other's load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// How often the probe wakes.
const TICK: Duration = Duration::from_millis(1);

/// Smoothed lag above which the hub counts as busy. Timer granularity alone
/// makes a tick up to about a millisecond late.
const BUSY_LAG: Duration = Duration::from_millis(3);

/// Weight of the newest sample in the smoothed lag, as 1/N.
const SMOOTHING: u64 = 8;

/// One hub's saturation signal: written by its [probe](Pressure::probe),
/// read (one relaxed atomic load) on every fan-out push.
#[derive(Debug, Default)]
pub struct Pressure {
    busy: AtomicBool,
    lag_us: AtomicU64,
}

impl Pressure {
    /// A signal that reads "not busy" until a probe runs.
    pub fn new() -> Pressure {
        Pressure::default()
    }

    /// Whether the workers were saturated at the last probe tick.
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }

    /// Sets the signal by hand, for tests of what reads it.
    #[cfg(test)]
    pub(crate) fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::Relaxed);
    }

    /// Runs the probe until `shutdown` (one per hub; more are harmless),
    /// then reads "not busy" again.
    pub async fn probe(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut smoothed = 0;
        loop {
            let due = tokio::select! {
                due = tick.tick() => due,
                () = shutdown.cancelled() => break,
            };
            let (next, busy) = observe(smoothed, Instant::now().saturating_duration_since(due));
            smoothed = next;
            self.lag_us.store(smoothed, Ordering::Relaxed);
            self.busy.store(busy, Ordering::Relaxed);
        }
        self.busy.store(false, Ordering::Relaxed);
    }
}

/// Folds one tick's lateness into the smoothed lag; returns whether that
/// means busy.
fn observe(smoothed_us: u64, late: Duration) -> (u64, bool) {
    let late_us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
    let next = (smoothed_us * (SMOOTHING - 1) + late_us) / SMOOTHING;
    (next, next > BUSY_LAG.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_late_tick_is_not_busy_but_a_run_of_them_is() {
        let (s, busy) = observe(0, Duration::from_millis(10));
        assert!(!busy, "one 10 ms tick: smoothed {s} µs");
        let mut s = s;
        let mut turned = None;
        for i in 0..20 {
            let (next, busy) = observe(s, Duration::from_millis(10));
            s = next;
            if busy && turned.is_none() {
                turned = Some(i);
            }
        }
        assert!(turned.is_some(), "sustained 10 ms lag counts as busy");
        let mut calm = 0;
        while observe(s, Duration::ZERO).1 {
            s = observe(s, Duration::ZERO).0;
            calm += 1;
            assert!(calm < 100, "on-time ticks end the busy spell");
        }
    }

    #[test]
    fn timer_granularity_is_not_busy() {
        let mut s = 0;
        for _ in 0..1000 {
            let (next, busy) = observe(s, Duration::from_micros(1_100));
            s = next;
            assert!(!busy);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_hub_has_its_own_signal_and_a_stopped_probe_clears_it() {
        let (a, b) = (Arc::new(Pressure::new()), Arc::new(Pressure::new()));
        a.set_busy(true);
        assert!(a.busy() && !b.busy(), "one hub's load is not another's");
        let stop = CancellationToken::new();
        let probe = tokio::spawn(a.clone().probe(stop.clone()));
        // Paused time: every tick is on time, so the probe reads calm.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!a.busy(), "on-time ticks are not busy");
        a.set_busy(true);
        stop.cancel();
        probe.await.expect("the probe ends");
        assert!(!a.busy(), "a stopped probe leaves the signal calm");
    }
}
