//! The run's result: one flat record, printed as a human table or as one JSON
//! object with the same fields (`--json`), and the exit-code decision.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Serialize, Serializer, ser::SerializeMap};

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

/// What the fans of one node measured.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct NodeReport {
    /// The node's WebSocket base (the key of this entry in JSON).
    #[serde(skip)]
    pub(crate) url: String,
    /// Where its states were read for the final check.
    pub(crate) http: String,
    /// The node is `--url`, where events are posted.
    pub(crate) scorekeeper: bool,
    /// Fans placed on this node.
    pub(crate) fans: usize,
    /// Of those, connected.
    pub(crate) fans_connected: u64,
    /// Of those, dropped before the run stopped them.
    pub(crate) fans_dropped: u64,
    /// Diff frames its fans received while measuring.
    pub(crate) deliveries: u64,
    /// Deliveries per second.
    pub(crate) deliveries_per_s: f64,
    /// Ingest-to-fan latency of its fans, ms (same definition as the total).
    pub(crate) latency_ms: Latency,
    /// (fan, game) pairs of its fans that differ from `--url` or this node.
    pub(crate) state_mismatches: u64,
}

impl NodeReport {
    /// One line for the table.
    fn line(&self) -> String {
        format!(
            "{} ({}): {} fans ({} connected, {} dropped), {} diffs ({:.1}/s), {} state mismatches",
            self.url,
            if self.scorekeeper {
                "the --url node"
            } else {
                "another node"
            },
            self.fans,
            self.fans_connected,
            self.fans_dropped,
            self.deliveries,
            self.deliveries_per_s,
            self.state_mismatches
        )
    }
}

/// Writes the nodes as one JSON object keyed by their URL, in run order.
fn nodes_by_url<S: Serializer>(nodes: &[NodeReport], serializer: S) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(nodes.len()))?;
    for node in nodes {
        map.serialize_entry(&node.url, node)?;
    }
    map.end()
}

/// Everything a run measured. Rates are per second of the measured window.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    /// The traffic shape.
    pub(crate) scenario: Scenario,
    /// The base URL of the hub games are created on and events posted to.
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
    /// Fans, deliveries and latency per node fans connect to, keyed by the
    /// node's `ws://` base (just `--url`'s without `--fan-url`).
    #[serde(serialize_with = "nodes_by_url")]
    pub(crate) nodes: Vec<NodeReport>,

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
    /// (fan, game) pairs compared with `GET /v1/games/{id}` at the end, on
    /// `--url` and on the fan's own node.
    pub(crate) states_checked: u64,
    /// Of those, different from either hub state.
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
                    "{} against {}: {} games, {} fans x {} sub(s), {:.0} events/s target",
                    self.scenario.name(),
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
        ];
        // Fans only on `--url`: the totals above say it all.
        let only_url = matches!(self.nodes.as_slice(), [node] if node.scorekeeper);
        if !only_url {
            for node in &self.nodes {
                rows.push(("node", node.line()));
                rows.push(("  latency ms", node.latency_ms.line()));
            }
        }
        rows.extend([
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
        ]);
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
    use super::{Latency, NodeReport, Report};
    use crate::{poster::latency_histogram, scenario::Scenario};

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

    fn node(port: u16, scorekeeper: bool, p50: f64) -> NodeReport {
        NodeReport {
            url: format!("ws://127.0.0.1:{port}"),
            http: format!("http://127.0.0.1:{port}"),
            scorekeeper,
            fans: 5,
            fans_connected: 5,
            deliveries: 100,
            latency_ms: Latency {
                count: 100,
                p50,
                p99: 2.0 * p50,
                ..Latency::default()
            },
            ..NodeReport::default()
        }
    }

    #[test]
    fn nodes_are_keyed_by_their_url_in_json_and_listed_in_the_table() {
        let report = Report {
            scenario: Scenario::TwoNodes,
            url: "http://127.0.0.1:9000".into(),
            nodes: vec![node(9000, true, 1.5), node(8081, false, 3.25)],
            ..Report::default()
        };
        let json = serde_json::to_value(&report).expect("encodes");
        assert_eq!(json["scenario"], "two-nodes");
        let nodes = json["nodes"].as_object().expect("an object keyed by URL");
        let mut keys: Vec<&String> = nodes.keys().collect();
        keys.sort();
        assert_eq!(keys, ["ws://127.0.0.1:8081", "ws://127.0.0.1:9000"]);
        let text = serde_json::to_string(&report).expect("encodes");
        let first = text.find("\"ws://127.0.0.1:9000\"");
        assert!(first.is_some() && first < text.find("\"ws://127.0.0.1:8081\""));
        let other = &nodes["ws://127.0.0.1:8081"];
        assert_eq!(other["scorekeeper"], false);
        assert_eq!(other["http"], "http://127.0.0.1:8081");
        assert_eq!(other["deliveries"], 100);
        assert_eq!(other["latency_ms"]["p50"], 3.25);
        assert_eq!(other["latency_ms"]["p99"], 6.5);
        for key in ["p999", "max"] {
            assert!(other["latency_ms"].get(key).is_some(), "{key}");
        }

        let table = report.table();
        assert!(
            table.contains("two-nodes against http://127.0.0.1:9000"),
            "{table}"
        );
        let scorekeeper = table.find("ws://127.0.0.1:9000 (the --url node)");
        let other = table.find("ws://127.0.0.1:8081 (another node)");
        assert!(scorekeeper.is_some() && other.is_some(), "{table}");
        assert!(scorekeeper < other, "run order kept: {table}");
        assert!(table.contains("p50 3.25"), "{table}");
    }

    #[test]
    fn fans_only_on_the_url_add_no_node_rows() {
        let report = Report {
            url: "http://127.0.0.1:9000".into(),
            nodes: vec![node(9000, true, 1.5)],
            ..Report::default()
        };
        assert!(!report.table().contains("ws://"), "{}", report.table());
        let json = serde_json::to_value(&report).expect("encodes");
        assert!(json["nodes"]["ws://127.0.0.1:9000"].is_object());
    }
}
