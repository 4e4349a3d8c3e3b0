//! Metric names and the Prometheus recorder.
//!
//! Labels are low-cardinality by rule: kinds, outcomes, routes (the matched
//! path template), status codes; never game ids or users.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Gauge: open WebSocket connections.
pub(crate) const WS_CONNECTIONS: &str = "scorehub_ws_connections";
/// Gauge: open Server-Sent Events streams (fans on `GET /v1/sse`).
pub(crate) const SSE_CONNECTIONS: &str = "scorehub_sse_connections";
/// Counter `{reason}`: SSE streams ended by the server.
pub(crate) const SSE_CLOSED: &str = "scorehub_sse_closed_total";
/// Gauge: game subscriptions over all connections (WebSocket and SSE).
pub(crate) const WS_SUBSCRIPTIONS: &str = "scorehub_ws_subscriptions";
/// Gauge: games held in memory.
pub(crate) const GAMES_ACTIVE: &str = "scorehub_games_active";
/// Counter `{outcome}`: `applied`, `duplicate`, `rejected`.
pub(crate) const EVENTS_TOTAL: &str = "scorehub_events_total";
/// Counter `{kind}`: frames written to sockets.
pub(crate) const FRAMES_SENT: &str = "scorehub_frames_sent_total";
/// Histogram: event accepted → frame handed to every local socket writer.
pub(crate) const FANOUT_SECONDS: &str = "scorehub_fanout_seconds";
/// Counter `{action}`: `conflated`, `disconnected`.
pub(crate) const SLOW_CONSUMER: &str = "scorehub_slow_consumer_total";
/// Gauge: 1 when connected to Redis.
pub(crate) const REDIS_UP: &str = "scorehub_redis_up";
/// Counter `{route,status}`.
pub(crate) const HTTP_REQUESTS: &str = "scorehub_http_requests_total";
/// Histogram `{route}`: request latency.
pub(crate) const HTTP_SECONDS: &str = "scorehub_http_request_duration_seconds";
/// Gauge: open HTTP connections (not counting those upgraded to WebSocket).
pub(crate) const HTTP_CONNECTIONS: &str = "scorehub_http_connections";
/// Counter `{reason}`: HTTP connections the hub closed before the client
/// did: `header_timeout`, `idle_timeout`, `body_timeout`, `evicted`.
pub(crate) const HTTP_CLOSED: &str = "scorehub_http_closed_total";
/// Gauge: 1 while `/readyz` would answer 200 (events accepted), else 0.
pub(crate) const READY: &str = "scorehub_ready";
/// Counter `{reason}`: WebSocket connections closed by the server.
pub(crate) const WS_CLOSED: &str = "scorehub_ws_closed_total";
/// Counter `{kind}`: requests refused by an abuse limit: `events` (per-token
/// event rate), `ws_connect` (per-address connect rate), `ws_capacity`
/// (fan connection cap), `sse_capacity` (SSE stream cap), `http_capacity` (HTTP connection cap, every
/// connection busy).
pub(crate) const RATE_LIMITED: &str = "scorehub_rate_limited_total";
/// Counter: times a game's replica found that the shared log no longer holds
/// the history it applied (a Redis failover or restart lost writes); its
/// fans got a fresh snapshot.
pub(crate) const LOST_WRITES: &str = "scorehub_lost_writes_total";

/// Counter `{outcome}`: occupancy ticks that reported this node's fan counts
/// and read the totals back (`ok`), or could not (`failed`: fans then see
/// this node's own count until the backend answers again).
pub(crate) const OCCUPANCY_REPORTS: &str = "scorehub_occupancy_reports_total";
/// Counter: occupancy frames handed to game actors (one per game whose
/// count changed in a tick; each reaches every local fan of the game).
pub(crate) const OCCUPANCY_UPDATES: &str = "scorehub_occupancy_updates_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// `scorehub_frames_sent_total{kind}` handles, resolved once (after the
/// recorder is installed) instead of a registry lookup per socket flush.
static FRAMES_SENT_BY_KIND: OnceLock<[metrics::Counter; 5]> = OnceLock::new();

/// The frames-sent counter of one kind.
pub(crate) fn frames_sent(kind: crate::codec::FrameKind) -> &'static metrics::Counter {
    use crate::codec::FrameKind;
    let all = FRAMES_SENT_BY_KIND.get_or_init(|| {
        [
            FrameKind::Snapshot,
            FrameKind::Diff,
            FrameKind::Error,
            FrameKind::Pong,
            FrameKind::Occupancy,
        ]
        .map(|k| metrics::counter!(FRAMES_SENT, "kind" => k.label()))
    });
    &all[match kind {
        FrameKind::Snapshot => 0,
        FrameKind::Diff => 1,
        FrameKind::Error => 2,
        FrameKind::Pong => 3,
        FrameKind::Occupancy => 4,
    }]
}

/// Installs the global Prometheus recorder once per process and returns its
/// handle (later calls, e.g. from tests running several servers, share it).
pub(crate) fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(FANOUT_SECONDS.to_string()),
                    &[
                        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
                        0.05, 0.1, 0.25, 1.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets(&[
                        0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ])
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding
            // program's); then ours only renders what it saw, which is fine.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(WS_CONNECTIONS, "Open WebSocket connections.");
    describe_gauge!(
        SSE_CONNECTIONS,
        "Open Server-Sent Events streams (GET /v1/sse)."
    );
    describe_counter!(SSE_CLOSED, "SSE streams ended by the server, by reason.");
    describe_gauge!(
        WS_SUBSCRIPTIONS,
        "Game subscriptions over all connections (WebSocket and SSE)."
    );
    describe_gauge!(GAMES_ACTIVE, "Games held in memory.");
    describe_counter!(
        EVENTS_TOTAL,
        "Events by outcome: applied, duplicate, rejected."
    );
    describe_counter!(FRAMES_SENT, "Frames written to sockets, by kind.");
    describe_histogram!(
        FANOUT_SECONDS,
        Unit::Seconds,
        "From event accepted to frame handed to every local socket writer."
    );
    describe_counter!(
        SLOW_CONSUMER,
        "Slow-consumer actions: conflated, disconnected."
    );
    describe_gauge!(REDIS_UP, "1 when connected to Redis.");
    describe_gauge!(
        READY,
        "1 while the hub accepts events (/readyz is 200), else 0."
    );
    describe_counter!(HTTP_REQUESTS, "HTTP requests by route template and status.");
    describe_histogram!(
        HTTP_SECONDS,
        Unit::Seconds,
        "HTTP request latency by route."
    );
    describe_gauge!(
        HTTP_CONNECTIONS,
        "Open HTTP connections, not counting those upgraded to WebSocket."
    );
    describe_counter!(
        HTTP_CLOSED,
        "HTTP connections closed by the hub, by reason: header_timeout, idle_timeout, body_timeout, evicted (to make room)."
    );
    describe_counter!(
        WS_CLOSED,
        "WebSocket connections closed by the server, by reason."
    );
    describe_counter!(
        RATE_LIMITED,
        "Requests refused by a limit: events (per token), ws_connect (per address), ws_capacity (fan connection cap), sse_capacity (SSE stream cap), http_capacity (HTTP connection cap)."
    );
    describe_counter!(
        LOST_WRITES,
        "Games whose shared log lost history this node had applied (a failover or restart lost writes); their fans got a fresh snapshot."
    );
    // Touch every series so it exists from the first scrape.
    let _ = metrics::histogram!(FANOUT_SECONDS);
    metrics::gauge!(WS_CONNECTIONS).set(0.0);
    metrics::gauge!(SSE_CONNECTIONS).set(0.0);
    metrics::gauge!(WS_SUBSCRIPTIONS).set(0.0);
    metrics::gauge!(GAMES_ACTIVE).set(0.0);
    metrics::gauge!(REDIS_UP).set(0.0);
    metrics::gauge!(HTTP_CONNECTIONS).set(0.0);
    for reason in ["header_timeout", "idle_timeout", "body_timeout", "evicted"] {
        metrics::counter!(HTTP_CLOSED, "reason" => reason).absolute(0);
    }
    metrics::counter!(LOST_WRITES).absolute(0);
    for outcome in ["applied", "duplicate", "rejected"] {
        metrics::counter!(EVENTS_TOTAL, "outcome" => outcome).absolute(0);
    }
    for kind in ["snapshot", "diff", "error"] {
        metrics::counter!(FRAMES_SENT, "kind" => kind).absolute(0);
    }
    for action in ["conflated", "disconnected"] {
        metrics::counter!(SLOW_CONSUMER, "action" => action).absolute(0);
    }
    for kind in ["events", "ws_connect", "ws_capacity", "http_capacity"] {
        metrics::counter!(RATE_LIMITED, "kind" => kind).absolute(0);
    }
    // From 0, so `increase()` sees the first failed write.
    metrics::counter!("scorehub_log_errors_total").absolute(0);
}
