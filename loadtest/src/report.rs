//! The run's result: one flat record, printed as a human table or as one JSON
//! object with the same fields (`--json`), and the exit-code decision.

use std::{collections::BTreeMap, fmt::Write as _};

use hdrhistogram::Histogram;
use serde::{Serialize, Serializer, ser::SerializeMap};

use crate::{
    failover::{FailoverReport, LossCheck},
    hub_metrics::HubLatency,
    scenario::Scenario,
    stalled,
    system::{FdLimit, MachineReport, ProcessKind, ProcessReport, RssSeries},
};

/// Percentiles of a latency histogram recorded in microseconds, in
/// milliseconds ([`Latency::from_micros`]) or microseconds ([`Latency::in_micros`]).
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
        Self::scaled(hist, 1000.0)
    }

    /// Summarises `hist` (values in µs) in microseconds.
    pub(crate) fn in_micros(hist: &Histogram<u64>) -> Self {
        Self::scaled(hist, 1.0)
    }

    /// Summarises `hist`, dividing every value by `per_unit`.
    fn scaled(hist: &Histogram<u64>, per_unit: f64) -> Self {
        if hist.is_empty() {
            return Self::default();
        }
        // Histogram values are far below f64's exact-integer range.
        let unit = |us: u64| us as f64 / per_unit;
        Self {
            count: hist.len(),
            p50: unit(hist.value_at_quantile(0.50)),
            p90: unit(hist.value_at_quantile(0.90)),
            p99: unit(hist.value_at_quantile(0.99)),
            p999: unit(hist.value_at_quantile(0.999)),
            max: unit(hist.max()),
        }
    }

    /// `p50 … max` on one line, with two decimals (milliseconds).
    fn line(&self) -> String {
        self.line_with(2)
    }

    /// `p50 … max` on one line, with `decimals` decimals.
    fn line_with(&self, decimals: usize) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        let d = decimals;
        format!(
            "p50 {:.d$}  p90 {:.d$}  p99 {:.d$}  p99.9 {:.d$}  max {:.d$}  (n={})",
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
    /// Send → receive latency of its fans, µs (same definition as the total).
    pub(crate) send_latency_us: Latency,
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

/// How the hub under test was run.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct HubInfo {
    /// Started by the load test (`--hub-bin`), else given by `--url`.
    pub(crate) started: bool,
    /// The binary, when started.
    pub(crate) bin: Option<String>,
    /// Hub processes started.
    pub(crate) nodes: usize,
    /// A private redis-server was started.
    pub(crate) redis: bool,
    /// A private Redis Cluster was started: replicas per primary.
    pub(crate) cluster_replicas: Option<usize>,
    /// The hubs' log format, when started.
    pub(crate) log_format: Option<String>,
    /// `--hub-env` settings.
    pub(crate) env: Vec<String>,
    /// The temporary directory, when kept (`--keep-hub-dir`).
    pub(crate) dir: Option<String>,
}

/// What one shard of the Redis Cluster did in the measured window.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct ShardReport {
    /// Its primary's port at the window's start.
    pub(crate) primary_port: u16,
    /// Its replicas' ports.
    pub(crate) replica_ports: Vec<u16>,
    /// Its slot ranges, e.g. `0-5460`.
    pub(crate) slots: String,
    /// Games of the run whose keys hash to it.
    pub(crate) games: usize,
    /// Events answered `200` on those games while measuring.
    pub(crate) events_applied: u64,
    /// Commands its primary ran in the window (`INFO commandstats` after −
    /// before), the run's own `info` calls left out.
    pub(crate) commands: Option<u64>,
    /// `commands / events_applied`.
    pub(crate) commands_per_event: Option<f64>,
    /// Per command: calls in the window divided by events applied.
    pub(crate) per_event: BTreeMap<String, f64>,
    /// Why the figures are missing (the primary was killed, say).
    pub(crate) problem: Option<String>,
}

impl ShardReport {
    /// One line for the table.
    fn line(&self) -> String {
        let mut line = format!(
            "primary :{} (replicas {:?}), slots {}, {} games, {} events applied",
            self.primary_port, self.replica_ports, self.slots, self.games, self.events_applied
        );
        match (self.commands, self.commands_per_event) {
            (Some(commands), Some(per_event)) => {
                let mut split: Vec<(&String, &f64)> = self.per_event.iter().collect();
                split.sort_by(|a, b| b.1.total_cmp(a.1));
                let top: Vec<String> = split
                    .iter()
                    .take(6)
                    .map(|(name, n)| format!("{name} {n:.2}"))
                    .collect();
                let _ = write!(
                    line,
                    ": {commands} commands, {per_event:.2} per event ({})",
                    top.join(", ")
                );
            }
            (Some(commands), None) => {
                let _ = write!(line, ": {commands} commands");
            }
            _ => {}
        }
        if let Some(problem) = &self.problem {
            let _ = write!(line, " ({problem})");
        }
        line
    }
}

/// What the cluster scenario measures besides the common figures.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct ClusterReport {
    /// Replicas per primary.
    pub(crate) replicas: usize,
    /// Per shard, in slot order.
    pub(crate) shards: Vec<ShardReport>,
    /// The failover (`--kill-primary-at`).
    pub(crate) failover: Option<FailoverReport>,
    /// Acknowledged events looked up in the games' histories.
    pub(crate) losses: LossCheck,
}

/// What became of the `--stalled` clients, which never read after their
/// snapshots. Not part of the fans' figures.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct StalledReport {
    /// Clients asked for (`--stalled`).
    pub(crate) asked: usize,
    /// Of those, connected and got their snapshots.
    pub(crate) connected: u64,
    /// Of those, failed to.
    pub(crate) connect_errors: u64,
    /// Connected clients the hub had disconnected by the end of the window
    /// (its close frame, or the connection's end, found behind the data they
    /// had not read).
    pub(crate) disconnected: u64,
    /// Connected clients still open at the end of the window.
    pub(crate) open: u64,
    /// Why the hub ended them, with counts, e.g. `close 1008 slow consumer`
    /// or `connection ended without a close frame` (a write timeout).
    pub(crate) disconnect_reasons: BTreeMap<String, u64>,
    /// Data frames read from them at the end: what the hub had sent that
    /// waited unread in the kernel's buffers.
    pub(crate) frames_read_at_end: u64,
    /// Their payload bytes.
    pub(crate) bytes_read_at_end: u64,
    /// The first failure to connect, if any.
    pub(crate) first_connect_error: Option<String>,
}

impl StalledReport {
    /// The "stalled" row.
    fn line(&self) -> String {
        let mut line = format!(
            "{} clients never reading: {} disconnected by the hub, {} still open at the end",
            self.asked, self.disconnected, self.open
        );
        if self.connect_errors > 0 {
            let _ = write!(line, ", {} could not connect", self.connect_errors);
        }
        line
    }

    /// The "stalled" row and its details, when there were stalled clients.
    fn rows(&self) -> Vec<(&'static str, String)> {
        if self.asked == 0 {
            return Vec::new();
        }
        let mut rows = vec![("stalled", self.line())];
        if !self.disconnect_reasons.is_empty() {
            rows.push(("  why", stalled::reasons_line(&self.disconnect_reasons)));
        }
        if self.connected > 0 {
            rows.push((
                "  unread",
                format!(
                    "{} frames, {} bytes read from them at the end",
                    self.frames_read_at_end, self.bytes_read_at_end
                ),
            ));
        }
        if let Some(error) = &self.first_connect_error {
            rows.push(("  connect error", error.clone()));
        }
        rows
    }
}

/// Everything a run measured. Rates are per second of the measured window.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    /// The traffic shape.
    pub(crate) scenario: Scenario,
    /// The base URL of the hub games are created on and events posted to.
    pub(crate) url: String,
    /// Games posted to at once (`--games`): with `--game-events`, slots each
    /// going through games.
    pub(crate) games: usize,
    /// `--game-events`: events per game before it is retired (`None`: a
    /// game lives for the whole run).
    pub(crate) game_events: Option<u64>,
    /// Games created over the run (the first `games` included).
    pub(crate) games_created: u64,
    /// Games that got their last event (`--game-events`).
    pub(crate) games_retired: u64,
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
    /// `--idle`: no events were posted; the window measures what idle fans cost.
    pub(crate) idle: bool,

    /// How the hub was run.
    pub(crate) hub: HubInfo,
    /// This process's open-file limit.
    pub(crate) fd_limit: FdLimit,
    /// The unit of `/proc/<pid>/stat` CPU times (`sysconf(_SC_CLK_TCK)`).
    pub(crate) clock_ticks_per_s: u64,
    /// CPU and memory of every watched process (hubs, redis-server, this one).
    pub(crate) processes: Vec<ProcessReport>,
    /// The whole machine's CPU during the window, and how much of it went to
    /// processes the run does not watch.
    pub(crate) machine: MachineReport,
    /// CPU-seconds of all hub processes during the measured window (`None`
    /// when no hub pid is known: give `--hub-pid` or use `--hub-bin`).
    pub(crate) hub_cpu_s: Option<f64>,
    /// `hub_cpu_s` per second of the window: 1.0 is one core kept busy.
    pub(crate) hub_cores: Option<f64>,
    /// Deliveries per hub CPU-second, the efficiency figure.
    pub(crate) deliveries_per_hub_cpu_s: Option<f64>,
    /// Hub RSS (all hubs) before any fan connected, bytes.
    pub(crate) hub_rss_before_bytes: Option<u64>,
    /// Hub RSS with every fan connected, subscribed and idle, bytes.
    pub(crate) hub_rss_idle_bytes: Option<u64>,
    /// Hub RSS after the measured window, bytes.
    pub(crate) hub_rss_end_bytes: Option<u64>,
    /// Hub RSS (all hubs) through the measured window, bytes: one sample at
    /// its start, one every `hub_rss_every_s`, one at its end (empty when no
    /// hub pid is known).
    pub(crate) hub_rss_samples: Vec<u64>,
    /// Seconds between two of `hub_rss_samples`.
    pub(crate) hub_rss_every_s: f64,
    /// The largest of `hub_rss_samples`.
    pub(crate) hub_rss_max_bytes: Option<u64>,
    /// The last of `hub_rss_samples`, at the window's end.
    pub(crate) hub_rss_last_bytes: Option<u64>,
    /// `(hub_rss_idle - hub_rss_before) / fans connected`.
    pub(crate) bytes_per_idle_connection: Option<f64>,
    /// CPU-seconds of the redis-server (or Redis Cluster nodes) started for
    /// the run, during the window.
    pub(crate) redis_cpu_s: Option<f64>,
    /// Deliveries per CPU-second of the Redis processes.
    pub(crate) deliveries_per_redis_cpu_s: Option<f64>,
    /// Deliveries per CPU-second of the hubs and Redis processes together.
    pub(crate) deliveries_per_hub_and_redis_cpu_s: Option<f64>,
    /// CPU-seconds of this load generator during the window: when it nears
    /// the cores left by the hub, latency figures include its own queueing.
    pub(crate) loadtest_cpu_s: Option<f64>,

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
    /// The event route's request duration as the hubs measured it
    /// (`scorehub_http_request_duration_seconds{route="/v1/games/{id}/events"}`),
    /// summed over hubs, in the window; bucket upper bounds, ms. `None` when
    /// a hub's `/metrics` could not be read (see `notes`).
    pub(crate) hub_post_ms: Option<HubLatency>,
    /// The event log's group commits as the hubs measured them
    /// (`scorehub_log_sync_seconds`: one write plus, with `storage.fsync`,
    /// one fdatasync), in the window; bucket upper bounds, ms: the part of
    /// a post spent on the disk. No samples on hubs storing in Redis (they
    /// keep no local log); `None` as for `hub_post_ms`.
    pub(crate) hub_log_sync_ms: Option<HubLatency>,

    /// Diff frames received while measuring, over all fans.
    pub(crate) deliveries: u64,
    /// Deliveries per second.
    pub(crate) deliveries_per_s: f64,
    /// Snapshot frames received over the run.
    pub(crate) snapshots: u64,
    /// Delivery latency, `receive time - ts`, ms. `ts` has ms resolution, so each
    /// sample reads up to 1 ms high.
    pub(crate) latency_ms: Latency,
    /// Send → receive latency, µs: from just before the poster sent the event
    /// to the fan's receipt of its diff, on this process's monotonic clock
    /// (includes the HTTP request, the hub's commit and its fan-out).
    pub(crate) send_latency_us: Latency,
    /// Send → receive latency, µs, of events posted to another hub than the
    /// fan's (cluster: node A → a fan on node B ≠ A; two-nodes: every event).
    pub(crate) cross_node_send_latency_us: Latency,
    /// Fan-out time as the hubs measured it (`scorehub_fanout_seconds`: an
    /// event's receipt → its frame handed to every local fan), summed over
    /// hubs, in the window; bucket upper bounds, ms. `None` as for `hub_post_ms`.
    pub(crate) hub_fanout_ms: Option<HubLatency>,
    /// Measured diffs whose send time was not known (not posted by this run).
    pub(crate) send_unmatched: u64,
    /// Diffs stamped in the future by the local clock (hub on another clock).
    pub(crate) clock_skew: u64,
    /// The `--stalled` clients (never reading), apart from the fans above.
    pub(crate) stalled: StalledReport,
    /// Fans, deliveries and latency per node fans connect to, keyed by the
    /// node's `ws://` base (just `--url`'s without `--fan-url`).
    #[serde(serialize_with = "nodes_by_url")]
    pub(crate) nodes: Vec<NodeReport>,

    /// `--scenario cluster`: shards, failover, lost events.
    pub(crate) cluster: Option<ClusterReport>,
    /// Events acknowledged `200` and missing from the history afterwards
    /// (cluster runs; a correctness counter).
    pub(crate) events_lost: u64,

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
    /// Cluster runs with mismatches: mismatches when the hubs are read
    /// again a few seconds later (not a correctness counter: it tells a
    /// lasting disagreement from hubs still repairing).
    pub(crate) state_mismatches_rechecked: Option<u64>,
    /// Churn: fans replaced per second asked for.
    pub(crate) churn_rate: f64,
    /// Churn: fans that follow one game each and never leave, the reference
    /// churned fans are checked against (connected on top of `fans`).
    pub(crate) reference_fans: usize,
    /// Churn: fans told to leave during the run.
    pub(crate) churn_left: u64,
    /// Churn: fans that connected and subscribed during the run.
    pub(crate) churn_joined: u64,
    /// Churn: of those, handshakes that failed.
    pub(crate) churn_connect_errors: u64,
    /// Churn: snapshots and last states of churning fans compared with the
    /// reference fans' state at the same seq.
    pub(crate) churn_checks: u64,
    /// Churn: checkpoints at a seq no reference fan saw (not counted as wrong).
    pub(crate) churn_unverified: u64,
    /// Churn: checkpoints that differ from the reference.
    pub(crate) churn_mismatches: u64,
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
    /// A few state mismatches, described (churn checkpoints included).
    pub(crate) mismatch_samples: Vec<String>,
    /// What happened to processes the run started when they were stopped
    /// (only when something went wrong), and other warnings.
    pub(crate) notes: Vec<String>,

    /// Sum of the correctness counters; non-zero fails the run.
    pub(crate) correctness_failures: u64,
    /// `correctness_failures == 0`.
    pub(crate) ok: bool,
}

impl Report {
    /// Fills in `correctness_failures` and `ok` from the counters. The
    /// correctness counters are gaps, duplicates, out-of-order frames, diffs
    /// without a snapshot, malformed frames, state mismatches and churn
    /// checkpoint mismatches.
    pub(crate) fn judge(&mut self) {
        self.correctness_failures = self.gaps
            + self.duplicates
            + self.out_of_order
            + self.diffs_without_snapshot
            + self.bad_frames
            + self.state_mismatches
            + self.churn_mismatches
            + self.events_lost;
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
                if self.idle {
                    format!(
                        "{:.1} s measured with idle fans (--idle: no events)",
                        self.measured_s
                    )
                } else {
                    format!(
                        "{:.1} s measured after {:.1} s warm-up",
                        self.measured_s, self.warmup_s
                    )
                },
            ),
            ("hub", self.hub_line()),
            (
                "games",
                match self.game_events {
                    Some(n) => format!(
                        "{} created, {} retired after {n} events each",
                        self.games_created, self.games_retired
                    ),
                    None => format!("{} created, each for the whole run", self.games_created),
                },
            ),
            ("fd limit", fd_line(&self.fd_limit)),
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
            ("  hub side ms", hub_line(self.hub_post_ms.as_ref())),
            ("  log sync ms", hub_line(self.hub_log_sync_ms.as_ref())),
            (
                "deliveries",
                format!(
                    "{} diffs ({:.1}/s), {} snapshots",
                    self.deliveries, self.deliveries_per_s, self.snapshots
                ),
            ),
            ("latency ms", self.latency_ms.line()),
            ("send→recv µs", self.send_latency_us.line_with(0)),
        ];
        if self.nodes.len() > 1 || !matches!(self.nodes.as_slice(), [node] if node.scorekeeper) {
            rows.push((
                "  cross-node µs",
                self.cross_node_send_latency_us.line_with(0),
            ));
        }
        rows.push(("hub fan-out ms", hub_line(self.hub_fanout_ms.as_ref())));
        rows.extend(self.stalled.rows());
        if self.send_unmatched > 0 {
            rows.push((
                "  unmatched",
                format!(
                    "{} measured diffs without a known send time",
                    self.send_unmatched
                ),
            ));
        }
        rows.extend(self.cost_rows());
        // Fans only on `--url`: the totals above say it all.
        let only_url = matches!(self.nodes.as_slice(), [node] if node.scorekeeper);
        if !only_url {
            for node in &self.nodes {
                rows.push(("node", node.line()));
                rows.push(("  latency ms", node.latency_ms.line()));
                rows.push(("  send→recv µs", node.send_latency_us.line_with(0)));
            }
        }
        if let Some(cluster) = &self.cluster {
            rows.extend(cluster_rows(cluster));
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
        if self.scenario == Scenario::Churn {
            rows.push((
                "churn",
                format!(
                    "{:.1} fans/s asked: {} left, {} joined ({} connect errors), {} reference fans",
                    self.churn_rate,
                    self.churn_left,
                    self.churn_joined,
                    self.churn_connect_errors,
                    self.reference_fans
                ),
            ));
            rows.push((
                "churn check",
                format!(
                    "{} mismatches of {} checkpoints checked against the reference ({} unverifiable)",
                    self.churn_mismatches, self.churn_checks, self.churn_unverified
                ),
            ));
        }
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
        for note in &self.notes {
            rows.push(("note", note.clone()));
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

impl Report {
    /// Fills in the hub's CPU and memory figures from `processes`, over a
    /// measured window with `deliveries` and `fans` connected fans.
    pub(crate) fn add_costs(&mut self, processes: Vec<ProcessReport>, machine: MachineReport) {
        self.machine = machine;
        let of = |kind: ProcessKind| processes.iter().filter(move |p| p.kind == kind);
        let sum_f = |kind, get: fn(&ProcessReport) -> Option<f64>| -> Option<f64> {
            let values: Option<Vec<f64>> = of(kind).map(get).collect();
            values.filter(|v| !v.is_empty()).map(|v| v.iter().sum())
        };
        let sum_u = |get: fn(&ProcessReport) -> Option<u64>| -> Option<u64> {
            let values: Option<Vec<u64>> = of(ProcessKind::Hub).map(get).collect();
            values.filter(|v| !v.is_empty()).map(|v| v.iter().sum())
        };
        self.hub_cpu_s = sum_f(ProcessKind::Hub, |p| p.cpu_s);
        self.hub_cores = self
            .hub_cpu_s
            .map(|s| s / self.measured_s.max(f64::EPSILON));
        self.deliveries_per_hub_cpu_s = self
            .hub_cpu_s
            .filter(|&s| s > 0.0 && self.deliveries > 0)
            .map(|s| self.deliveries as f64 / s);
        self.redis_cpu_s = sum_f(ProcessKind::Redis, |p| p.cpu_s);
        let per = |cpu: Option<f64>| {
            cpu.filter(|&s| s > 0.0 && self.deliveries > 0)
                .map(|s| self.deliveries as f64 / s)
        };
        self.deliveries_per_redis_cpu_s = per(self.redis_cpu_s);
        self.deliveries_per_hub_and_redis_cpu_s = match (self.hub_cpu_s, self.redis_cpu_s) {
            (Some(hub), Some(redis)) => per(Some(hub + redis)),
            _ => None,
        };
        self.loadtest_cpu_s = sum_f(ProcessKind::Loadtest, |p| p.cpu_s);
        self.hub_rss_before_bytes = sum_u(|p| p.rss_before_bytes);
        self.hub_rss_idle_bytes = sum_u(|p| p.rss_idle_bytes);
        self.hub_rss_end_bytes = sum_u(|p| p.rss_end_bytes);
        self.bytes_per_idle_connection = match (self.hub_rss_before_bytes, self.hub_rss_idle_bytes)
        {
            (Some(before), Some(idle)) if self.fans_connected > 0 => {
                Some((idle as f64 - before as f64) / self.fans_connected as f64)
            }
            _ => None,
        };
        self.processes = processes;
    }

    /// Fills in the hub's RSS through the window from `series`.
    pub(crate) fn add_rss_series(&mut self, series: RssSeries) {
        self.hub_rss_every_s = series.every.as_secs_f64();
        self.hub_rss_max_bytes = series.samples.iter().copied().max();
        self.hub_rss_last_bytes = series.samples.last().copied();
        self.hub_rss_samples = series.samples;
        if let Some(problem) = series.problem {
            self.notes
                .push(format!("hub memory through the window: {problem}"));
        }
    }

    /// The "redis cpu" row, when Redis processes were measured.
    fn redis_row(&self) -> Option<(&'static str, String)> {
        let cpu = self.redis_cpu_s?;
        let d = |v: Option<f64>| v.map_or_else(|| "no".to_string(), |d| format!("{d:.0}"));
        Some((
            "redis cpu",
            format!(
                "{cpu:.2} s: {} deliveries per Redis CPU-second, {} per CPU-second of hubs + Redis",
                d(self.deliveries_per_redis_cpu_s),
                d(self.deliveries_per_hub_and_redis_cpu_s)
            ),
        ))
    }

    /// The "hub" row: how the hub was run.
    fn hub_line(&self) -> String {
        let hub = &self.hub;
        if !hub.started {
            let pids: Vec<String> = self
                .processes
                .iter()
                .filter(|p| p.kind == ProcessKind::Hub)
                .map(|p| p.pid.to_string())
                .collect();
            return if pids.is_empty() {
                "given by --url; pid unknown (add --hub-pid for CPU and memory figures)".into()
            } else {
                format!("given by --url, pid {}", pids.join(", "))
            };
        }
        let mut line = format!(
            "started {} ({} node{}{}, {} logs)",
            hub.bin.as_deref().unwrap_or("?"),
            hub.nodes,
            if hub.nodes == 1 { "" } else { "s" },
            match hub.cluster_replicas {
                Some(replicas) =>
                    format!(" + private Redis Cluster, 3 primaries with {replicas} replica(s) each"),
                None if hub.redis => " + private redis-server".to_string(),
                None => ", single node".to_string(),
            },
            hub.log_format.as_deref().unwrap_or("?")
        );
        if !hub.env.is_empty() {
            let _ = write!(line, ", {}", hub.env.join(" "));
        }
        if let Some(dir) = &hub.dir {
            let _ = write!(line, ", kept in {dir}");
        }
        line
    }

    /// The CPU and memory rows.
    fn cost_rows(&self) -> Vec<(&'static str, String)> {
        let mut rows = Vec::new();
        let window = self.measured_s;
        rows.push((
            "hub cpu",
            match (self.hub_cpu_s, self.hub_cores) {
                (Some(cpu), Some(cores)) => format!(
                    "{cpu:.2} s in the {window:.1} s window ({cores:.2} cores): {} deliveries per hub CPU-second",
                    self.deliveries_per_hub_cpu_s
                        .map_or_else(|| "no".to_string(), |d| format!("{d:.0}"))
                ),
                _ => "unknown (no hub pid)".into(),
            },
        ));
        rows.extend(self.redis_row());
        if let (Some(before), Some(idle)) = (self.hub_rss_before_bytes, self.hub_rss_idle_bytes) {
            rows.push((
                "hub memory",
                format!(
                    "RSS {} before fans, {} with {} idle fans, {} at the end: {} bytes per idle connection",
                    mib(Some(before)),
                    mib(Some(idle)),
                    self.fans_connected,
                    mib(self.hub_rss_end_bytes),
                    self.bytes_per_idle_connection
                        .map_or_else(|| "?".to_string(), |b| format!("{b:.0}"))
                ),
            ));
        }
        if let (Some(max), Some(last)) = (self.hub_rss_max_bytes, self.hub_rss_last_bytes) {
            rows.push((
                "  in window",
                format!(
                    "RSS max {}, last {} ({} samples, every {:.1} s)",
                    mib(Some(max)),
                    mib(Some(last)),
                    self.hub_rss_samples.len(),
                    self.hub_rss_every_s
                ),
            ));
        }
        if let (Some(busy), Some(other)) = (self.machine.busy_cores, self.machine.other_cores) {
            rows.push((
                "machine",
                format!(
                    "{busy:.2} of {} cores busy in the window; {other:.2} cores by other processes{}",
                    self.machine.cores,
                    if other > OTHER_CORES_WARNING {
                        let names: Vec<String> = self
                            .machine
                            .top_others
                            .iter()
                            .map(|p| format!("{} (pid {}) {:.2}", p.name, p.pid, p.cores))
                            .collect();
                        format!(
                            " (WARNING: something else ran, figures are disturbed; top: {})",
                            if names.is_empty() {
                                "no single process above 0.02 cores".to_string()
                            } else {
                                names.join(", ")
                            }
                        )
                    } else {
                        String::new()
                    }
                ),
            ));
            if busy >= self.machine.cores as f64 - SATURATED_SLACK {
                rows.push((
                    "  saturated",
                    "every core was busy: latency includes queueing in the load generator \
                     as well as in the hub"
                        .to_string(),
                ));
            }
        }
        for p in &self.processes {
            rows.push((
                "  process",
                format!(
                    "{} (pid {}): {} CPU-s ({} cores), RSS {} → {} → {}{}",
                    p.role,
                    p.pid,
                    p.cpu_s.map_or_else(|| "?".into(), |s| format!("{s:.2}")),
                    p.cores.map_or_else(|| "?".into(), |c| format!("{c:.2}")),
                    mib(p.rss_before_bytes),
                    mib(p.rss_idle_bytes),
                    mib(p.rss_end_bytes),
                    p.problem
                        .as_ref()
                        .map_or_else(String::new, |e| format!(" ({e})"))
                ),
            ));
        }
        rows
    }
}

/// A hub-side row: bucket bounds of p50, p90 and p99 with the count, like
/// [`Latency::line`]; "unknown" when the hubs' `/metrics` could not be read.
fn hub_line(latency: Option<&HubLatency>) -> String {
    let Some(latency) = latency else {
        return "unknown (the hubs' /metrics could not be read; see the notes)".into();
    };
    if latency.count == 0 {
        return "no samples (hub side)".into();
    }
    let bound = |value: Option<f64>, above: bool| match (value, above) {
        (Some(ms), _) => format!("≤ {}", short_ms(ms)),
        (None, true) => latency.last_le.map_or_else(
            || "> last bucket".into(),
            |ms| format!("> {}", short_ms(ms)),
        ),
        (None, false) => "?".into(),
    };
    let mean = latency
        .mean
        .map_or_else(String::new, |ms| format!("  mean {}", short_ms(ms)));
    format!(
        "p50 {}  p90 {}  p99 {}{mean}  (n={}, hub side, bucket bounds)",
        bound(latency.p50_le, latency.above[0]),
        bound(latency.p90_le, latency.above[1]),
        bound(latency.p99_le, latency.above[2]),
        latency.count
    )
}

/// Milliseconds without trailing zeros: `0.05`, `2.5`, `10`.
fn short_ms(ms: f64) -> String {
    let text = format!("{ms:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Cores used by unwatched processes above which the table warns.
const OTHER_CORES_WARNING: f64 = 0.1;

/// Idle cores below which the machine counts as saturated.
const SATURATED_SLACK: f64 = 0.05;

/// The "fd limit" row.
fn fd_line(limit: &FdLimit) -> String {
    let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_string(), |n| n.to_string());
    let mut line = format!("soft {} (hard {})", show(limit.soft), show(limit.hard));
    if limit.before != limit.soft {
        let _ = write!(line, ", raised from {}", show(limit.before));
    }
    if let Some(e) = &limit.error {
        let _ = write!(line, "; raising failed: {e}");
    }
    line
}

/// Bytes as MiB with one decimal, or `?`.
fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "?".to_string(),
        |b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    )
}

/// The cluster rows of the table: shards, failover, losses.
fn cluster_rows(cluster: &ClusterReport) -> Vec<(&'static str, String)> {
    let mut rows = Vec::new();
    for shard in &cluster.shards {
        rows.push(("shard", shard.line()));
    }
    if let Some(f) = &cluster.failover {
        rows.push((
            "failover",
            format!(
                "kill -9 of primary :{} at {} into the window ({} games on its shard); \
                 first 200 on them after the kill: {}; {} posts refused or failed before \
                 that, {} after the kill in all, {} accepted after the kill; new primary {}",
                f.killed_port,
                f.killed_at_s.map_or_else(
                    || "never (the run ended first)".to_string(),
                    |s| format!("{s:.2} s")
                ),
                f.games_on_shard,
                f.recovery_s.map_or_else(
                    || "NONE before posting stopped".to_string(),
                    |s| format!("{s:.2} s later")
                ),
                f.failed_before_recovery,
                f.failed_after_kill,
                f.acked_after_kill,
                f.new_primary_port
                    .map_or_else(|| "unknown".to_string(), |p| format!(":{p}"))
            ),
        ));
    }
    let l = &cluster.losses;
    rows.push((
        "events lost",
        format!(
            "{} of {} acknowledged events missing from the history; {} of {} refused \
             events applied all the same{}",
            l.lost,
            l.acknowledged,
            l.refused_but_applied,
            l.refused,
            if l.unreadable_games > 0 {
                format!(" ({} games' histories unreadable)", l.unreadable_games)
            } else {
                String::new()
            }
        ),
    ));
    for sample in &l.samples {
        rows.push(("  lost", sample.clone()));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::{Latency, NodeReport, Report, StalledReport};
    use crate::system::{MachineReport, ProcessKind, ProcessReport, RssSeries};
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

    fn process(kind: ProcessKind, cpu_s: f64, rss: [u64; 3]) -> ProcessReport {
        ProcessReport {
            role: format!("{kind:?}"),
            kind,
            pid: 1,
            cpu_s: Some(cpu_s),
            cores: Some(cpu_s / 10.0),
            rss_before_bytes: Some(rss[0]),
            rss_idle_bytes: Some(rss[1]),
            rss_end_bytes: Some(rss[2]),
            problem: None,
        }
    }

    #[test]
    fn hub_costs_sum_over_hubs_and_leave_the_rest_apart() {
        let mut report = Report {
            measured_s: 10.0,
            deliveries: 2_000_000,
            fans_connected: 1000,
            ..Report::default()
        };
        report.add_costs(
            vec![
                process(ProcessKind::Hub, 3.0, [1_000_000, 5_000_000, 6_000_000]),
                process(ProcessKind::Hub, 1.0, [1_000_000, 2_000_000, 2_000_000]),
                process(ProcessKind::Redis, 0.5, [9, 9, 9]),
                process(ProcessKind::Loadtest, 2.5, [9, 9, 9]),
            ],
            MachineReport {
                cores: 2,
                busy_cores: Some(0.75),
                other_cores: Some(0.05),
                top_others: Vec::new(),
            },
        );
        assert_eq!(report.hub_cpu_s, Some(4.0));
        assert_eq!(report.hub_cores, Some(0.4));
        assert_eq!(report.deliveries_per_hub_cpu_s, Some(500_000.0));
        assert_eq!(report.redis_cpu_s, Some(0.5));
        assert_eq!(report.loadtest_cpu_s, Some(2.5));
        assert_eq!(report.hub_rss_before_bytes, Some(2_000_000));
        assert_eq!(report.hub_rss_idle_bytes, Some(7_000_000));
        // (7 MB - 2 MB) over 1000 fans.
        assert_eq!(report.bytes_per_idle_connection, Some(5000.0));
        let table = report.table();
        assert!(
            table.contains("500000 deliveries per hub CPU-second"),
            "{table}"
        );
        assert!(table.contains("5000 bytes per idle connection"), "{table}");
        assert!(!table.contains("WARNING"), "{table}");
    }

    #[test]
    fn without_a_hub_pid_there_are_no_hub_figures() {
        let mut report = Report {
            measured_s: 10.0,
            deliveries: 100,
            ..Report::default()
        };
        report.add_costs(
            vec![process(ProcessKind::Loadtest, 1.0, [1, 2, 3])],
            MachineReport::default(),
        );
        assert_eq!(report.hub_cpu_s, None);
        assert_eq!(report.deliveries_per_hub_cpu_s, None);
        assert_eq!(report.bytes_per_idle_connection, None);
        assert!(report.table().contains("unknown (no hub pid)"));
        let json = serde_json::to_value(&report).expect("encodes");
        assert!(json["deliveries_per_hub_cpu_s"].is_null());
    }

    #[test]
    fn stalled_clients_get_their_own_row_and_json_object() {
        let report = Report {
            stalled: StalledReport {
                asked: 3,
                connected: 2,
                connect_errors: 1,
                disconnected: 1,
                open: 1,
                disconnect_reasons: [("close 1008 slow consumer".to_string(), 1)].into(),
                frames_read_at_end: 40,
                bytes_read_at_end: 4000,
                first_connect_error: Some("refused".into()),
            },
            ..Report::default()
        };
        let table = report.table();
        let row = table
            .lines()
            .find(|line| line.starts_with("stalled "))
            .expect("a stalled row");
        assert!(
            row.ends_with(
                "  3 clients never reading: 1 disconnected by the hub, 1 still open at the end, \
                 1 could not connect"
            ),
            "{table}"
        );
        assert!(table.contains("1 × close 1008 slow consumer"), "{table}");
        assert!(table.contains("40 frames, 4000 bytes"), "{table}");
        let json = serde_json::to_value(&report).expect("encodes");
        let stalled = &json["stalled"];
        assert_eq!(stalled["asked"], 3);
        assert_eq!(stalled["disconnected"], 1);
        assert_eq!(stalled["open"], 1);
        assert_eq!(stalled["disconnect_reasons"]["close 1008 slow consumer"], 1);

        let none = Report::default();
        assert!(!none.table().contains("stalled"), "{}", none.table());
        let json = serde_json::to_value(&none).expect("encodes");
        assert_eq!(json["stalled"]["asked"], 0);
    }

    #[test]
    fn hub_side_latency_gets_a_row_each_and_keeps_unknown_as_null() {
        use crate::hub_metrics::HubLatency;
        let report = Report {
            hub_fanout_ms: Some(HubLatency {
                count: 200,
                p50_le: Some(0.25),
                p90_le: Some(1.0),
                p99_le: None,
                mean: Some(12.5),
                last_le: Some(1000.0),
                above: [false, false, true],
            }),
            hub_post_ms: None,
            ..Report::default()
        };
        let table = report.table();
        let row = |label: &str| {
            table
                .lines()
                .find(|line| line.trim_start().starts_with(label))
                .unwrap_or_else(|| panic!("no {label} row: {table}"))
                .to_string()
        };
        assert!(
            row("hub fan-out ms").ends_with(
                "p50 ≤ 0.25  p90 ≤ 1  p99 > 1000  mean 12.5  (n=200, hub side, bucket bounds)"
            ),
            "{table}"
        );
        assert!(row("hub side ms").contains("unknown"), "{table}");
        assert!(row("log sync ms").contains("unknown"), "{table}");
        let json = serde_json::to_value(&report).expect("encodes");
        assert_eq!(
            json["hub_fanout_ms"],
            serde_json::json!({"count": 200, "p50_le": 0.25, "p90_le": 1.0, "p99_le": null, "mean": 12.5})
        );
        assert!(json["hub_post_ms"].is_null(), "{json:#}");
        // The fields the plotting scripts read are still there.
        for key in ["post_latency_ms", "latency_ms", "send_latency_us"] {
            assert!(json[key]["p99"].is_number(), "{key}");
        }

        let empty = Report {
            hub_post_ms: Some(HubLatency::default()),
            ..Report::default()
        };
        assert!(empty.table().contains("no samples (hub side)"));
    }

    #[test]
    fn hub_memory_through_the_window_reports_its_max_and_last_sample() {
        let mut report = Report::default();
        report.add_rss_series(RssSeries {
            every: std::time::Duration::from_secs(1),
            samples: vec![10 << 20, 30 << 20, 20 << 20],
            problem: None,
        });
        assert_eq!(report.hub_rss_max_bytes, Some(30 << 20));
        assert_eq!(report.hub_rss_last_bytes, Some(20 << 20));
        assert!(report.notes.is_empty());
        let table = report.table();
        assert!(
            table.contains("RSS max 30.0 MiB, last 20.0 MiB (3 samples, every 1.0 s)"),
            "{table}"
        );
        let json = serde_json::to_value(&report).expect("encodes");
        assert_eq!(json["hub_rss_max_bytes"], 30 << 20);
        assert_eq!(json["hub_rss_last_bytes"], 20 << 20);
        assert_eq!(json["hub_rss_every_s"], 1.0);
        assert_eq!(
            json["hub_rss_samples"],
            serde_json::json!([10 << 20, 30 << 20, 20 << 20])
        );

        let mut unknown = Report::default();
        unknown.add_rss_series(RssSeries {
            problem: Some("reading /proc/7/status: gone".into()),
            ..RssSeries::default()
        });
        assert_eq!(unknown.hub_rss_max_bytes, None);
        assert!(!unknown.table().contains("RSS max"));
        assert_eq!(unknown.notes.len(), 1, "{:?}", unknown.notes);
        let json = serde_json::to_value(&unknown).expect("encodes");
        assert!(json["hub_rss_max_bytes"].is_null());
        assert_eq!(json["hub_rss_samples"], serde_json::json!([]));
    }
}
