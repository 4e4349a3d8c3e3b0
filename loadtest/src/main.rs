//! # loadtest
//!
//! Drives a running scorehub only through its public contract (HTTP API and
//! WebSocket frames) and reports throughput, delivery latency and correctness:
//! every fan checks that each game's diffs arrive with consecutive sequence
//! numbers, rebuilds the state from snapshot + diffs, and at the end compares it
//! with `GET /v1/games/{id}`.
//!
//! A cluster (several hubs sharing Redis) is measured by naming its nodes with
//! `--fan-url`: games are created and events posted through `--url` (the
//! scorekeeper node) while fans are spread round-robin over the `--fan-url`
//! nodes; the report then breaks deliveries and latency down per node, and the
//! final check compares each fan with both `--url` and its own node.
//!
//! A run: check health → create games → connect fans (bounded concurrency) →
//! wait for their snapshots → post events during warm-up and the measured
//! window → wait for fans to catch up → compare states → report. The whole run
//! is bounded in time; exit code 0 when correct, 1 when a correctness counter
//! is non-zero, 2 when the run could not be carried out.
//!
//! ## Layout
//!
//! - `main.rs`: command line, validation into a [`Plan`], orchestration.
//! - `nodes`: `--url` and `--fan-url` checked (loopback rule) into HTTP and
//!   WebSocket bases.
//! - `scenario`: traffic shapes (who follows what, where events go).
//! - `api`: the HTTP calls of the contract.
//! - `fan`: one WebSocket fan and its per-game bookkeeping.
//! - `poster`: events at a steady rate from a few concurrent posters.
//! - `merge`: JSON Merge Patch (RFC 7386), independent of the hub's.
//! - `check`: catching up and the final state comparison.
//! - `report`: the result as a table or JSON, and the verdict.
//!
//! Room to grow: more [`Scenario`] variants, and a `Target` that starts the hub
//! itself (today the target is always a hub someone else started).

mod api;
mod check;
mod fan;
mod merge;
mod nodes;
mod poster;
mod report;
mod scenario;

use std::{
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use futures_util::{StreamExt, TryStreamExt, stream};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::{
    api::Api,
    fan::{FanCounters, FanNode, FanOutcome, FanShared, FanSpec, Progress},
    nodes::HubUrls,
    poster::{PosterPlan, latency_histogram},
    report::{Latency, NodeReport, Report},
    scenario::Scenario,
};

/// Most fans one run may open: the machine allows 20k open files per process,
/// and the run needs a few for itself.
const MAX_FANS: usize = 19_000;

/// How many `PUT /v1/games/{id}` run at once.
const CREATE_CONCURRENCY: usize = 16;

/// How long fans may take to get their first snapshots after connecting.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(10);

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Load generator for scorehub: many WebSocket fans, events at a steady rate, \
             latency and correctness report.",
    after_help = "Example:\n  TOKEN=$(scorehub token --sub loadtest --games 'lt:*' --ttl 1h)\n  \
                  loadtest --url http://127.0.0.1:8080 --token \"$TOKEN\" --games 10 --fans 1000 \
                  --rate 200 --duration 20s\n\n\
                  Two nodes sharing Redis (events through :8080, fans on both nodes):\n  \
                  loadtest --scenario two-nodes --url http://127.0.0.1:8080 \
                  --fan-url ws://127.0.0.1:8080 --fan-url ws://127.0.0.1:8081 --token \"$TOKEN\"\n\n\
                  Exit codes: 0 correct, 1 a correctness counter is non-zero, 2 the run failed."
)]
struct Cli {
    /// Base URL of a running hub (plain http; ws:// is derived from it). Games
    /// are created, events posted and states read here; fans connect here too
    /// unless `--fan-url` is given.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,

    /// Base URL of a hub node fans connect to (ws:// or http://), for a cluster
    /// sharing Redis with `--url`. Repeat it to spread fans round-robin over
    /// several nodes (include `--url`'s own to have fans there too). The report
    /// then shows deliveries and latency per node, and each fan's final state
    /// is checked against both `--url` and its own node.
    #[arg(long = "fan-url", value_name = "URL")]
    fan_urls: Vec<String>,

    /// Token allowed to write `<league>:*`, e.g. from
    /// `scorehub token --sub loadtest --games 'lt:*' --ttl 1h`.
    #[arg(long, env = "SCOREHUB_TOKEN", hide_env_values = true)]
    token: String,

    /// Traffic shape.
    #[arg(long, value_enum, default_value_t = Scenario::Steady)]
    scenario: Scenario,

    /// Games to create, named `<league>:g1` … `<league>:gN`.
    #[arg(long, default_value_t = 10)]
    games: usize,

    /// WebSocket fans to open (at most 19000).
    #[arg(long, default_value_t = 1000)]
    fans: usize,

    /// Games each fan subscribes to.
    #[arg(long, default_value_t = 1)]
    subs_per_fan: usize,

    /// Events per second to post, over all games.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,

    /// Measured window, e.g. `20s`, `2m`.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,

    /// Posting before measuring starts (not counted).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,

    /// Longest wait, after posting stops, for fans to catch up with the hub
    /// before states are compared.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    settle: Duration,

    /// League of the created games.
    #[arg(long, default_value = "lt")]
    league: String,

    /// Concurrent posters (each keeps one request in flight).
    #[arg(long, default_value_t = 8)]
    posters: usize,

    /// WebSocket handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,

    /// Fans allowed to fail connecting before the run is abandoned.
    #[arg(long, default_value_t = 0)]
    max_connect_errors: usize,

    /// Do not rebuild states from diffs (saves CPU; the end check then compares
    /// sequence numbers only).
    #[arg(long)]
    no_state_check: bool,

    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    json: bool,

    /// Small fixed run for the test suite: 3 games, 30 fans, 50 events/s, 3 s.
    #[arg(
        long,
        conflicts_with_all = ["games", "fans", "subs_per_fan", "rate", "duration", "warmup"]
    )]
    smoke: bool,

    /// Allow hubs that are not on this machine (loopback) as targets, for
    /// `--url` and every `--fan-url`.
    #[arg(long)]
    allow_remote: bool,
}

/// A validated run: every number in range, URLs derived.
#[derive(Debug)]
struct Plan {
    /// Traffic shape.
    scenario: Scenario,
    /// The hub games are created on and events posted to (`--url`).
    scorekeeper: HubUrls,
    /// The hubs fans are spread over, round-robin (`--fan-url`, or `--url`).
    fan_nodes: Vec<HubUrls>,
    /// Bearer token.
    token: String,
    /// Game ids, `<league>:g1` ….
    game_ids: Arc<[String]>,
    /// Fans to open.
    fans: usize,
    /// Games per fan.
    subs_per_fan: usize,
    /// Events per second.
    rate: f64,
    /// Measured window.
    duration: Duration,
    /// Warm-up.
    warmup: Duration,
    /// Longest catch-up wait.
    settle: Duration,
    /// Concurrent posters.
    posters: usize,
    /// Concurrent handshakes.
    connect_concurrency: usize,
    /// Tolerated connect failures.
    max_connect_errors: usize,
    /// Rebuild states from diffs.
    check_state: bool,
}

impl Plan {
    /// Validates the command line.
    fn from_cli(cli: Cli) -> Result<Self> {
        let (games, fans, subs_per_fan, rate, duration, warmup) = if cli.smoke {
            (
                3,
                30,
                1,
                50.0,
                Duration::from_secs(3),
                Duration::from_millis(500),
            )
        } else {
            (
                cli.games,
                cli.fans,
                cli.subs_per_fan,
                cli.rate,
                cli.duration,
                cli.warmup,
            )
        };
        let scorekeeper = nodes::scorekeeper_url(&cli.url, cli.allow_remote)?;
        let fan_nodes = nodes::fan_nodes(&cli.fan_urls, &scorekeeper, cli.allow_remote)?;
        ensure!(
            !cli.scenario.needs_another_node() || fan_nodes.iter().any(|n| *n != scorekeeper),
            "--scenario {} needs fans on another node than --url ({}): add --fan-url with the \
             address of a second hub sharing its Redis, e.g. --fan-url ws://127.0.0.1:8081",
            cli.scenario.name(),
            scorekeeper.http
        );
        ensure!(
            !cli.token.trim().is_empty(),
            "--token is empty: mint one with `scorehub token --sub loadtest --games '{}:*' --ttl 1h`",
            cli.league
        );
        ensure!(
            valid_league(&cli.league),
            "--league {:?} is not a league name ([a-z0-9][a-z0-9_-]{{0,31}})",
            cli.league
        );
        ensure!(
            (1..=10_000).contains(&games),
            "--games must be 1..=10000, got {games}"
        );
        ensure!(
            (1..=MAX_FANS).contains(&fans),
            "--fans must be 1..={MAX_FANS} (each fan is one open file; the limit is 20k), got {fans}"
        );
        ensure!(
            (1..=games).contains(&subs_per_fan),
            "--subs-per-fan must be 1..=--games ({games}), got {subs_per_fan}"
        );
        ensure!(
            rate.is_finite() && (0.0..=100_000.0).contains(&rate),
            "--rate must be 0..=100000 events/s, got {rate}"
        );
        ensure!(
            !duration.is_zero() && duration <= Duration::from_secs(3600),
            "--duration must be more than 0 and at most 1h, got {duration:?}"
        );
        ensure!(
            warmup <= Duration::from_secs(600),
            "--warmup must be at most 10m, got {warmup:?}"
        );
        ensure!(
            cli.settle <= Duration::from_secs(120),
            "--settle must be at most 2m, got {:?}",
            cli.settle
        );
        ensure!(
            (1..=256).contains(&cli.posters),
            "--posters must be 1..=256, got {}",
            cli.posters
        );
        ensure!(
            (1..=2000).contains(&cli.connect_concurrency),
            "--connect-concurrency must be 1..=2000, got {}",
            cli.connect_concurrency
        );
        ensure!(
            fans >= fan_nodes.len(),
            "--fans {fans} is fewer than the {} --fan-url nodes: every node needs a fan",
            fan_nodes.len()
        );
        check_open_files(fans)?;
        let game_ids: Arc<[String]> = (1..=games)
            .map(|n| format!("{}:g{n}", cli.league))
            .collect();
        Ok(Self {
            scenario: cli.scenario,
            scorekeeper,
            fan_nodes,
            token: cli.token,
            game_ids,
            fans,
            subs_per_fan,
            rate,
            duration,
            warmup,
            settle: cli.settle,
            posters: cli.posters,
            connect_concurrency: cli.connect_concurrency,
            max_connect_errors: cli.max_connect_errors,
            check_state: !cli.no_state_check,
        })
    }

    /// The longest a run may take before it is abandoned: every phase's own
    /// bound, plus slack.
    fn hard_bound(&self) -> Duration {
        let waves = self.fans.div_ceil(self.connect_concurrency);
        let connect = Duration::from_secs(10) * u32::try_from(waves).unwrap_or(u32::MAX);
        Duration::from_secs(60)
            + connect
            + SNAPSHOT_WAIT
            + self.warmup
            + self.duration
            + self.settle
    }
}

/// True for a league name as the contract defines it.
fn valid_league(league: &str) -> bool {
    let bytes = league.as_bytes();
    let Some((first, rest)) = bytes.split_first() else {
        return false;
    };
    let lower_or_digit = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    bytes.len() <= 32
        && lower_or_digit(first)
        && rest
            .iter()
            .all(|b| lower_or_digit(b) || *b == b'_' || *b == b'-')
}

/// Refuses a run whose fans would not fit under this process's open-file
/// limit (Linux only; elsewhere nothing is checked).
fn check_open_files(fans: usize) -> Result<()> {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return Ok(());
    };
    let soft = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse::<usize>().ok());
    let needed = fans + 64;
    if let Some(soft) = soft
        && soft < needed
    {
        bail!(
            "--fans {fans} needs about {needed} open files but this process may open {soft}; \
             raise the limit first (e.g. `ulimit -n 20000`) or lower --fans"
        );
    }
    Ok(())
}

/// A prefix for `event_id`s that differs between runs, so that re-running
/// against the same hub and games never posts a duplicate.
fn run_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("lt{ms:x}p{:x}", std::process::id())
}

/// Prints a progress line to stderr (stdout is for the report).
fn progress(message: std::fmt::Arguments<'_>) {
    eprintln!("loadtest: {message}");
}

/// Connected fans and what the run needs to stop and inspect them.
struct Fans {
    /// Each fan's subscriptions and live progress.
    progress: Vec<(FanSpec, Arc<Progress>)>,
    /// The fan tasks.
    tasks: Vec<tokio::task::JoinHandle<fan::FanOutcome>>,
    /// Turned to `true` to stop every fan.
    stop: watch::Sender<bool>,
    /// Handshakes that succeeded.
    connected: u64,
    /// Handshakes that failed.
    failed: u64,
    /// The first handshake failure.
    first_error: Option<String>,
    /// Time it took to connect all fans.
    took: Duration,
}

impl Fans {
    /// Stops every fan and collects their outcomes.
    async fn finish(self) -> Result<Vec<fan::FanOutcome>> {
        let _ = self.stop.send(true);
        let mut outcomes = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            outcomes.push(task.await.context("a fan task failed")?);
        }
        Ok(outcomes)
    }
}

/// Spawns every fan and waits until each has connected or failed to.
async fn connect_fans(plan: &Plan, shared: &Arc<FanShared>) -> Result<Fans> {
    let started = Instant::now();
    let (stop, stop_rx) = watch::channel(false);
    let (connected_tx, mut connected_rx) = mpsc::channel(1024);
    let mut fans = Fans {
        progress: Vec::with_capacity(plan.fans),
        tasks: Vec::with_capacity(plan.fans),
        stop,
        connected: 0,
        failed: 0,
        first_error: None,
        took: Duration::ZERO,
    };
    for index in 0..plan.fans {
        let placed = plan.scenario.place_fan(
            index,
            plan.fan_nodes.len(),
            plan.game_ids.len(),
            plan.subs_per_fan,
        );
        let spec = FanSpec {
            index,
            node: placed.node,
            games: placed.games,
        };
        let progress = Arc::new(Progress::new(spec.games.len()));
        fans.tasks.push(tokio::spawn(fan::run_fan(
            spec.clone(),
            Arc::clone(shared),
            Arc::clone(&progress),
            stop_rx.clone(),
            connected_tx.clone(),
        )));
        fans.progress.push((spec, progress));
    }
    drop(connected_tx);
    while let Some(result) = connected_rx.recv().await {
        match result {
            Ok(()) => fans.connected += 1,
            Err(reason) => {
                fans.failed += 1;
                fans.first_error.get_or_insert(reason);
            }
        }
    }
    fans.took = started.elapsed();
    Ok(fans)
}

/// Waits for the first Ctrl-C (turning `interrupted` on); a second one ends
/// the process at once.
fn watch_interrupts() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        progress(format_args!(
            "interrupted: wrapping up (Ctrl-C again to quit now)"
        ));
        let _ = tx.send(true);
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
    rx
}

/// Sleeps for `duration`, or less when interrupted. Returns the time slept.
async fn sleep_unless_interrupted(
    duration: Duration,
    interrupted: &mut watch::Receiver<bool>,
) -> Duration {
    let start = Instant::now();
    if !*interrupted.borrow() {
        tokio::select! {
            _ = tokio::time::sleep(duration) => {}
            // A dropped sender (no Ctrl-C handler) disables this branch.
            Ok(_) = interrupted.wait_for(|on| *on) => {}
        }
    }
    start.elapsed()
}

/// Carries out one run.
async fn run(plan: &Plan) -> Result<Report> {
    let api = Api::new(
        &plan.scorekeeper.http,
        &plan.token,
        plan.posters + CREATE_CONCURRENCY,
    )?;
    api.health().await?;
    // Every fan node must answer before anything is created.
    let node_apis = plan
        .fan_nodes
        .iter()
        .map(|node| Api::new(&node.http, &plan.token, check::READ_CONCURRENCY))
        .collect::<Result<Vec<_>>>()?;
    for node_api in &node_apis {
        node_api.health().await?;
    }
    let mut interrupted = watch_interrupts();

    progress(format_args!(
        "creating {} games at {}",
        plan.game_ids.len(),
        api.base()
    ));
    stream::iter(plan.game_ids.iter().map(|id| api.create_game(id)))
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;

    let node_names: Vec<&str> = plan.fan_nodes.iter().map(|n| n.ws.as_str()).collect();
    progress(format_args!(
        "connecting {} fans to {} ({} at a time)",
        plan.fans,
        node_names.join(", "),
        plan.connect_concurrency
    ));
    let measuring = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(FanShared {
        nodes: plan
            .fan_nodes
            .iter()
            .map(|node| {
                Ok(FanNode {
                    ws_base: node.ws.clone(),
                    latency: Mutex::new(latency_histogram()?),
                })
            })
            .collect::<Result<_>>()?,
        game_ids: Arc::clone(&plan.game_ids),
        measuring: Arc::clone(&measuring),
        check_state: plan.check_state,
        connect_limit: Semaphore::new(plan.connect_concurrency),
    });
    let fans = connect_fans(plan, &shared).await?;
    if fans.failed > u64::try_from(plan.max_connect_errors).unwrap_or(u64::MAX) {
        let first = fans.first_error.clone().unwrap_or_default();
        let failed = fans.failed;
        fans.finish().await?;
        bail!(
            "{failed} of {} fans could not connect (allowed: --max-connect-errors {}); first error: {first}",
            plan.fans,
            plan.max_connect_errors
        );
    }
    progress(format_args!(
        "{} fans connected in {:.2} s; waiting for snapshots",
        fans.connected,
        fans.took.as_secs_f64()
    ));
    let no_events = vec![0; plan.game_ids.len()];
    let (snapshots_in, _) = check::wait_caught_up(&fans.progress, &no_events, SNAPSHOT_WAIT).await;
    if !snapshots_in {
        progress(format_args!(
            "warning: not every fan got its snapshots within {SNAPSHOT_WAIT:?}"
        ));
    }

    progress(format_args!(
        "posting {} events/s; warm-up {:.1} s, then measuring {:.1} s",
        plan.rate,
        plan.warmup.as_secs_f64(),
        plan.duration.as_secs_f64()
    ));
    let posting = poster::start(
        api.clone(),
        PosterPlan {
            rate: plan.rate,
            posters: plan.posters,
            run_id: run_id(),
            game_ids: Arc::clone(&plan.game_ids),
            scenario: plan.scenario,
        },
        Arc::clone(&measuring),
    );
    sleep_unless_interrupted(plan.warmup, &mut interrupted).await;
    measuring.store(true, Ordering::Relaxed);
    let measured = sleep_unless_interrupted(plan.duration, &mut interrupted).await;
    let posted = posting.stop().await?;

    progress(format_args!(
        "posting stopped; waiting for fans to catch up"
    ));
    let hub = check::hub_states(&api, &plan.game_ids).await?;
    let targets = check::seqs(&hub, &plan.game_ids)?;
    let (caught_up, catch_up) = check::wait_caught_up(&fans.progress, &targets, plan.settle).await;

    let connected = fans.connected;
    let connect_errors = fans.failed;
    let first_connect_error = fans.first_error.clone();
    let connect_took = fans.took;
    let outcomes = fans.finish().await?;
    let views = check::node_views(
        &plan.fan_nodes,
        &node_apis,
        &plan.scorekeeper,
        &plan.game_ids,
    )
    .await?;
    let states = check::compare(&outcomes, &hub, &views, &plan.game_ids);

    let mut counters = FanCounters::default();
    let mut dropped = 0;
    let mut first_fan_problem = None;
    for outcome in &outcomes {
        counters += outcome.counters;
        if let Some(reason) = &outcome.dropped {
            dropped += 1;
            first_fan_problem
                .get_or_insert_with(|| format!("fan {} dropped: {reason}", outcome.index));
        }
        if let Some(problem) = &outcome.first_problem {
            first_fan_problem.get_or_insert_with(|| format!("fan {}: {problem}", outcome.index));
        }
    }
    let secs = measured.as_secs_f64().max(f64::EPSILON);
    let (nodes, latency) = by_node(plan, &shared, &outcomes, &states.mismatches_per_node, secs)?;
    let mut report = Report {
        scenario: plan.scenario,
        url: plan.scorekeeper.http.clone(),
        games: plan.game_ids.len(),
        fans: plan.fans,
        subs_per_fan: plan.subs_per_fan,
        target_rate: plan.rate,
        warmup_s: plan.warmup.as_secs_f64(),
        measured_s: measured.as_secs_f64(),
        fans_connected: connected,
        connect_errors,
        connect_s: connect_took.as_secs_f64(),
        fans_dropped: dropped,
        error_frames: counters.error_frames,
        events_posted: posted.posted,
        events_accepted: posted.accepted,
        events_accepted_per_s: posted.accepted as f64 / secs,
        events_failed: posted.failed,
        events_rate_limited: posted.rate_limited,
        events_duplicate_replies: posted.duplicate_replies,
        events_skipped: posted.skipped,
        post_latency_ms: Latency::from_micros(&posted.latency),
        deliveries: counters.deliveries,
        deliveries_per_s: counters.deliveries as f64 / secs,
        snapshots: counters.snapshots,
        latency_ms: latency,
        clock_skew: counters.clock_skew,
        nodes,
        gaps: counters.gaps,
        duplicates: counters.duplicates,
        out_of_order: counters.out_of_order,
        diffs_without_snapshot: counters.diffs_without_snapshot,
        bad_frames: counters.bad_frames,
        states_checked: states.checked,
        state_mismatches: states.mismatches,
        caught_up,
        catch_up_s: catch_up.as_secs_f64(),
        first_connect_error,
        first_post_failure: posted.first_failure,
        first_fan_problem,
        mismatch_samples: states.samples,
        correctness_failures: 0,
        ok: false,
    };
    report.judge();
    Ok(report)
}

/// The per-node breakdown (fan node order), and the delivery latency over all
/// nodes. `mismatches[n]` is node `n`'s count of state mismatches; rates are
/// per `secs` of measuring.
fn by_node(
    plan: &Plan,
    shared: &FanShared,
    outcomes: &[FanOutcome],
    mismatches: &[u64],
    secs: f64,
) -> Result<(Vec<NodeReport>, Latency)> {
    let mut all = latency_histogram()?;
    let mut nodes = Vec::with_capacity(plan.fan_nodes.len());
    for (index, (urls, node)) in plan.fan_nodes.iter().zip(&shared.nodes).enumerate() {
        // Every fan task has ended, so nobody else holds the lock; a poisoned
        // one only means a fan panicked mid-record.
        let hist = node
            .latency
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        all.add(&*hist)
            .context("merging the nodes' latency histograms")?;
        nodes.push(NodeReport {
            url: urls.ws.clone(),
            http: urls.http.clone(),
            scorekeeper: *urls == plan.scorekeeper,
            latency_ms: Latency::from_micros(&hist),
            state_mismatches: mismatches.get(index).copied().unwrap_or(0),
            ..NodeReport::default()
        });
    }
    for outcome in outcomes {
        if let Some(node) = nodes.get_mut(outcome.node) {
            node.fans += 1;
            node.fans_connected += u64::from(outcome.connect_error.is_none());
            node.fans_dropped += u64::from(outcome.dropped.is_some());
            node.deliveries += outcome.counters.deliveries;
        }
    }
    for node in &mut nodes {
        node.deliveries_per_s = node.deliveries as f64 / secs;
    }
    Ok((nodes, Latency::from_micros(&all)))
}

/// Parses the command line, runs within the hard time bound, prints the report.
fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let plan = match Plan::from_cli(cli) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("loadtest: error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("loadtest: error: starting the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let bound = plan.hard_bound();
    let outcome = runtime.block_on(async {
        match tokio::time::timeout(bound, run(&plan)).await {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!(
                "the run did not finish within its hard bound of {bound:?}; the hub may be stuck"
            )),
        }
    });
    // Fan tasks that are still closing must not hold the process open.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(report) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("loadtest: error: encoding the report: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                print!("{}", report.table());
            }
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("loadtest: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Cli, Plan, valid_league};
    use crate::{nodes::HubUrls, scenario::Scenario};
    use clap::Parser;

    /// A plan from these arguments after `--token t` (and `--fans 10` unless
    /// they say how many).
    fn plan(args: &[&str]) -> anyhow::Result<Plan> {
        let mut argv = vec!["loadtest", "--token", "t"];
        if !args.contains(&"--fans") {
            argv.extend(["--fans", "10"]);
        }
        argv.extend_from_slice(args);
        Plan::from_cli(Cli::try_parse_from(argv)?)
    }

    fn hub(port: u16) -> HubUrls {
        HubUrls {
            http: format!("http://127.0.0.1:{port}"),
            ws: format!("ws://127.0.0.1:{port}"),
        }
    }

    #[test]
    fn without_fan_urls_fans_go_to_the_url() {
        let plan = plan(&["--url", "http://127.0.0.1:9000/"]).expect("valid");
        assert_eq!(plan.scorekeeper, hub(9000));
        assert_eq!(plan.fan_nodes, [hub(9000)]);
        assert_eq!(plan.scenario, Scenario::Steady);
    }

    #[test]
    fn fan_urls_repeat_and_keep_the_scorekeeper_apart() {
        let plan = plan(&[
            "--url",
            "http://127.0.0.1:9000",
            "--fan-url",
            "ws://127.0.0.1:9000",
            "--fan-url",
            "ws://127.0.0.1:9001",
            "--scenario",
            "two-nodes",
        ])
        .expect("valid");
        assert_eq!(plan.scorekeeper, hub(9000));
        assert_eq!(plan.fan_nodes, [hub(9000), hub(9001)]);
        assert_eq!(plan.scenario, Scenario::TwoNodes);
    }

    #[test]
    fn two_nodes_needs_a_fan_url_on_another_node() {
        for args in [
            &["--scenario", "two-nodes"][..],
            &[
                "--scenario",
                "two-nodes",
                "--url",
                "http://127.0.0.1:9000",
                "--fan-url",
                "ws://127.0.0.1:9000/",
            ],
        ] {
            let err = plan(args).expect_err("one node only");
            let text = err.to_string();
            assert!(
                text.contains("--scenario two-nodes needs fans on another node"),
                "{text}"
            );
            assert!(text.contains("--fan-url"), "{text}");
        }
        assert!(
            plan(&[
                "--scenario",
                "two-nodes",
                "--fan-url",
                "ws://127.0.0.1:8081"
            ])
            .is_ok()
        );
    }

    #[test]
    fn every_url_follows_the_loopback_rule() {
        let remote_fan = ["--fan-url", "ws://192.0.2.7:8080"];
        let err = plan(&remote_fan).expect_err("remote fan node");
        assert!(err.to_string().contains("--allow-remote"), "{err}");
        let mut allowed = remote_fan.to_vec();
        allowed.push("--allow-remote");
        assert!(plan(&allowed).is_ok());
        assert!(plan(&["--url", "http://192.0.2.7:8080"]).is_err());
    }

    #[test]
    fn every_fan_node_needs_a_fan() {
        let mut args = vec!["--fans", "2"];
        for url in ["ws://127.0.0.1:1", "ws://127.0.0.1:2", "ws://127.0.0.1:3"] {
            args.extend(["--fan-url", url]);
        }
        let err = plan(&args).expect_err("3 nodes, 2 fans");
        assert!(err.to_string().contains("every node needs a fan"), "{err}");
    }

    #[test]
    fn league_names_follow_the_contract() {
        assert!(valid_league("lt"));
        assert!(valid_league("nba-2_x"));
        assert!(!valid_league(""));
        assert!(!valid_league("-lt"));
        assert!(!valid_league("LT"));
        assert!(!valid_league(&"a".repeat(33)));
    }
}
