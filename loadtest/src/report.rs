//! The run's result: one flat record, printed as a human table or as one JSON
//! object with the same fields (`--json`), and the exit-code decision.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::scenario::Scenario;

/// Percentiles of a latency histogram recorded in microseconds, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct Latency {
    /// Number of samples.
    pub(crate) count: u64,
    /// Median.
    pub(crate) p50: f64,
    /// 90th percentile.
    pub(crate) p90: f64,
    /// 99th percentile.
    pub(crate) p99: f64,
    /// 99.9th percentile.
    pub(crate) p999: f64,
    /// Largest sample.
    pub(crate) max: f64,
}

impl Latency {
    /// Summarises `hist` (values in µs) in milliseconds.
    pub(crate) fn from_micros(hist: &Histogram<u64>) -> Self {
        if hist.is_empty() {
            return Self::default();
        }
        // µs → ms; histogram values are far below f64's exact-integer range.
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: hist.len(),
            p50: ms(hist.value_at_quantile(0.50)),
            p90: ms(hist.value_at_quantile(0.90)),
            p99: ms(hist.value_at_quantile(0.99)),
            p999: ms(hist.value_at_quantile(0.999)),
            max: ms(hist.max()),
        }
    }

    /// `p50 … max` on one line.
    fn line(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (n={})",
            self.p50, self.p90, self.p99, self.p999, self.max, self.count
        )
    }
}

/// Everything a run measured. Rates are per second of the measured window.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// The traffic shape.
    pub(crate) scenario: Scenario,
    /// The hub's base URL.
    pub(crate) url: String,
    /// Games created.
    pub(crate) games: usize,
    /// Fans asked for.
    pub(crate) fans: usize,
    /// Games each fan follows.
    pub(crate) subs_per_fan: usize,
    /// Events per second asked for.
    pub(crate) target_rate: f64,
    /// Warm-up before measuring, seconds.
    pub(crate) warmup_s: f64,
    /// Measured window, seconds (shorter than asked when interrupted).
    pub(crate) measured_s: f64,

    /// Fans whose handshake succeeded.
    pub(crate) fans_connected: u64,
    /// Fans whose handshake failed.
    pub(crate) connect_errors: u64,
    /// Time to connect all fans, seconds.
    pub(crate) connect_s: f64,
    /// Fans whose connection ended before the run stopped it.
    pub(crate) fans_dropped: u64,
    /// Error frames received.
    pub(crate) error_frames: u64,

    /// Events posted while measuring.
    pub(crate) events_posted: u64,
    /// Of those, answered `200`.
    pub(crate) events_accepted: u64,
    /// Accepted events per second.
    pub(crate) events_accepted_per_s: f64,
    /// Events that got another answer or none (includes rate-limited ones).
    pub(crate) events_failed: u64,
    /// Events answered `429`.
    pub(crate) events_rate_limited: u64,
    /// `200` answers marked `duplicate` (ids are unique, so never expected).
    pub(crate) events_duplicate_replies: u64,
    /// Events due that were not sent because every poster was busy.
    pub(crate) events_skipped: u64,
    /// Round trip of `POST /v1/games/{id}/events`, ms.
    pub(crate) post_latency_ms: Latency,

    /// Diff frames received while measuring, over all fans.
    pub(crate) deliveries: u64,
    /// Deliveries per second.
    pub(crate) deliveries_per_s: f64,
    /// Snapshot frames received over the run.
    pub(crate) snapshots: u64,
    /// Delivery latency, `receive time - ts`, ms. `ts` has ms resolution, so each
    /// sample reads up to 1 ms high.
    pub(crate) latency_ms: Latency,
    /// Diffs stamped in the future by the local clock (hub on another clock).
    pub(crate) clock_skew: u64,

    /// Diffs that skipped sequence numbers.
    pub(crate) gaps: u64,
    /// Diffs repeating the last sequence number.
    pub(crate) duplicates: u64,
    /// Diffs (or snapshots) going backwards.
    pub(crate) out_of_order: u64,
    /// Diffs for a game before its snapshot.
    pub(crate) diffs_without_snapshot: u64,
    /// Frames not of the contract's shapes.
    pub(crate) bad_frames: u64,
    /// (fan, game) pairs compared with `GET /v1/games/{id}` at the end.
    pub(crate) states_checked: u64,
    /// Of those, different from the hub's state.
    pub(crate) state_mismatches: u64,
    /// Every fan had caught up with the hub's last seq before the comparison.
    pub(crate) caught_up: bool,
    /// Time waited for fans to catch up, seconds.
    pub(crate) catch_up_s: f64,

    /// The first connect error, if any.
    pub(crate) first_connect_error: Option<String>,
    /// The first failed post (also during warm-up), if any.
    pub(crate) first_post_failure: Option<String>,
    /// The first error frame, malformed frame or dropped connection, if any.
    pub(crate) first_fan_problem: Option<String>,
    /// A few state mismatches, described.
    pub(crate) mismatch_samples: Vec<String>,

    /// Sum of the correctness counters; non-zero fails the run.
    pub(crate) correctness_failures: u64,
    /// `correctness_failures == 0`.
    pub(crate) ok: bool,
}

impl Report {
    /// Fills in `correctness_failures` and `ok` from the counters. The
    /// correctness counters are gaps, duplicates, out-of-order frames, diffs
    /// without a snapshot, malformed frames and state mismatches.
    pub(crate) fn judge(&mut self) {
        self.correctness_failures = self.gaps
            + self.duplicates
            + self.out_of_order
            + self.diffs_without_snapshot
            + self.bad_frames
            + self.state_mismatches;
        self.ok = self.correctness_failures == 0;
    }

    /// The report as a human-readable table.
    pub(crate) fn table(&self) -> String {
        let mut rows: Vec<(&str, String)> = vec![
            (
                "run",
                format!(
                    "{:?} against {}: {} games, {} fans x {} sub(s), {:.0} events/s target",
                    self.scenario,
                    self.url,
                    self.games,
                    self.fans,
                    self.subs_per_fan,
                    self.target_rate
                ),
            ),
            (
                "window",
                format!(
                    "{:.1} s measured after {:.1} s warm-up",
                    self.measured_s, self.warmup_s
                ),
            ),
            (
                "connections",
                format!(
                    "{} connected in {:.2} s, {} connect errors, {} dropped, {} error frames",
                    self.fans_connected,
                    self.connect_s,
                    self.connect_errors,
                    self.fans_dropped,
                    self.error_frames
                ),
            ),
            (
                "events",
                format!(
                    "{} posted, {} accepted ({:.1}/s), {} failed ({} rate limited), {} skipped, {} duplicate replies",
                    self.events_posted,
                    self.events_accepted,
                    self.events_accepted_per_s,
                    self.events_failed,
                    self.events_rate_limited,
                    self.events_skipped,
                    self.events_duplicate_replies
                ),
            ),
            ("post ms", self.post_latency_ms.line()),
            (
                "deliveries",
                format!(
                    "{} diffs ({:.1}/s), {} snapshots",
                    self.deliveries, self.deliveries_per_s, self.snapshots
                ),
            ),
            ("latency ms", self.latency_ms.line()),
            (
                "sequence",
                format!(
                    "{} gaps, {} duplicates, {} out of order, {} without snapshot, {} bad frames",
                    self.gaps,
                    self.duplicates,
                    self.out_of_order,
                    self.diffs_without_snapshot,
                    self.bad_frames
                ),
            ),
            (
                "state",
                format!(
                    "{} mismatches of {} checked ({} after {:.2} s)",
                    self.state_mismatches,
                    self.states_checked,
                    if self.caught_up {
                        "all fans caught up"
                    } else {
                        "NOT all fans caught up"
                    },
                    self.catch_up_s
                ),
            ),
        ];
        if self.clock_skew > 0 {
            rows.push((
                "clock skew",
                format!(
                    "{} diffs stamped in the future: latency is unreliable",
                    self.clock_skew
                ),
            ));
        }
        let notes = [
            ("connect error", &self.first_connect_error),
            ("post failure", &self.first_post_failure),
            ("fan problem", &self.first_fan_problem),
        ];
        for (label, note) in notes {
            if let Some(note) = note {
                rows.push((label, note.clone()));
            }
        }
        for sample in &self.mismatch_samples {
            rows.push(("mismatch", sample.clone()));
        }
        rows.push((
            "result",
            if self.ok {
                "OK".to_string()
            } else {
                format!("FAILED: {} correctness failures", self.correctness_failures)
            },
        ));

        let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (label, value) in rows {
            // Writing into a String cannot fail.
            let _ = writeln!(out, "{label:<width$}  {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Latency;
    use crate::poster::latency_histogram;

    #[test]
    fn latency_is_reported_in_milliseconds() {
        let mut hist = latency_histogram().expect("bounds are valid");
        for us in [1_000, 2_000, 3_000, 4_000] {
            hist.record(us).expect("in range");
        }
        let summary = Latency::from_micros(&hist);
        assert_eq!(summary.count, 4);
        assert!((summary.p50 - 2.0).abs() < 0.01, "p50 {}", summary.p50);
        assert!((summary.max - 4.0).abs() < 0.01, "max {}", summary.max);
    }
}
