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

static BUSY: AtomicBool = AtomicBool::new(false);
static LAG_US: AtomicU64 = AtomicU64::new(0);

/// Whether the workers were saturated at the last probe tick.
pub fn busy() -> bool {
    BUSY.load(Ordering::Relaxed)
}

/// The smoothed scheduling lag, in microseconds.
pub fn lag_us() -> u64 {
    LAG_US.load(Ordering::Relaxed)
}

/// Folds one tick's lateness into the smoothed lag; returns whether that
/// means busy.
fn observe(smoothed_us: u64, late: Duration) -> (u64, bool) {
    let late_us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
    let next = (smoothed_us * (SMOOTHING - 1) + late_us) / SMOOTHING;
    (next, next > BUSY_LAG.as_micros() as u64)
}

/// Runs the probe until `shutdown` (one per process is enough; more are
/// harmless).
pub async fn probe(shutdown: CancellationToken) {
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
        LAG_US.store(smoothed, Ordering::Relaxed);
        BUSY.store(busy, Ordering::Relaxed);
    }
    BUSY.store(false, Ordering::Relaxed);
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
}
