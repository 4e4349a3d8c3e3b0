//! # loadtest
//!
//! Drives scorehub only through its public contract (HTTP API and WebSocket
//! frames) and reports throughput, latency, the hub's cost (CPU-seconds per
//! delivery, memory per connection) and correctness: every fan checks that
//! each game's diffs arrive with consecutive sequence numbers, rebuilds the
//! state from snapshot + diffs, and at the end compares it with
//! `GET /v1/games/{id}`.
//!
//! The target is either a running hub (`--url`, plus `--fan-url` nodes of a
//! cluster, plus `--hub-pid` to measure its CPU and memory), or hubs the run
//! starts itself (`--hub-bin`: own ports, storage, secret and token, and with
//! `--redis` its own redis-server), so that anyone can reproduce a figure with
//! one command.
//!
//! A run: raise the open-file limit → start or check the hubs → create games →
//! sample hub memory → connect fans (bounded concurrency, source addresses
//! spread over 127.0.0.0/8) → wait for their snapshots → sample memory with
//! every fan idle → connect the stalled clients, if any → post events (and
//! churn fans) during warm-up and the measured window, sampling CPU at the
//! window's edges (and the hubs' latency histograms from `/metrics`) and hub
//! memory through it → read and close the stalled
//! clients → wait for fans to catch up → compare states → report → stop the
//! hubs. The whole run is bounded in time; exit code 0 when correct, 1 when a
//! correctness counter is non-zero, 2 when the run could not be carried out.
//!
//! ## Layout
//!
//! - `main.rs`: command line, validation into a [`Plan`], the process's edges.
//! - `run`: the phases of a run, in order.
//! - `launch`: starting hubs and redis-server for `--hub-bin`.
//! - `cluster`: a private Redis Cluster (`--scenario cluster`), its shards,
//!   slots and command counts.
//! - `resp`: the few Redis commands the run sends itself (RESP2).
//! - `failover`: acknowledged events checked against the histories, and
//!   the failover figures (`--kill-primary-at`).
//! - `nodes`: `--url` and `--fan-url` checked (loopback rule) into HTTP and
//!   WebSocket bases.
//! - `scenario`: traffic shapes (who follows what, where events go).
//! - `api`: the HTTP calls of the contract.
//! - `dial`: fans' TCP connections, from spread source addresses.
//! - `fan`: one WebSocket fan and its per-game bookkeeping.
//! - `frames`: what fans share: each distinct frame decoded once, each patch
//!   applied once per distinct state.
//! - `stalled`: clients that never read (`--stalled`), and what became of them.
//! - `poster`: events at a steady rate from a few concurrent posters.
//! - `rotation`: games with a bounded life (`--game-events`): which game of a
//!   slot is current, creating the next.
//! - `sent`: when each event was sent, for send → receive latency.
//! - `churn`: fans leaving and joining, and the check of their lifetimes.
//! - `merge`: JSON Merge Patch (RFC 7386), independent of the hub's.
//! - `check`: catching up and the final state comparison.
//! - `hub_metrics`: the hubs' own fan-out and event-route latency histograms,
//!   read from `GET /metrics` at the window's edges.
//! - `system`: open-file limit, CPU time and RSS from `/proc`.
//! - `report`: the result as a table or JSON, and the verdict.

mod api;
mod check;
mod churn;
mod cluster;
mod dial;
mod failover;
mod fan;
mod frames;
mod hub_metrics;
mod launch;
mod merge;
mod nodes;
mod poster;
mod report;
mod resp;
mod rotation;
mod run;
mod scenario;
mod sent;
mod stalled;
mod system;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;

use crate::{
    launch::{LaunchPlan, LogFormat},
    nodes::HubUrls,
    scenario::Scenario,
};

/// Most connections one run may open (fans plus reference fans): the machine
/// allows 20k open files per process, and the run needs a few for itself.
const MAX_FANS: usize = 19_000;

/// Most clients `--stalled` may open.
const MAX_STALLED: usize = 1000;

/// Most hub processes `--nodes` may start.
const MAX_NODES: usize = 4;

/// Shards (primaries) of the Redis Cluster of `--scenario cluster`.
const CLUSTER_SHARDS: usize = 3;

/// Most games (over all generations) a `--game-events` run may name.
const MAX_GAME_IDS: u64 = 20_000;

/// How long posting may go on past warm-up and window, for naming games.
const POSTING_SLACK: Duration = Duration::from_secs(30);

/// The scorekeeper node when neither `--url` nor `--hub-bin` is given.
const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Load generator for scorehub: many WebSocket fans, events at a steady rate; \
             reports throughput, latency, hub CPU and memory, and correctness.",
    after_help = "Examples:\n  \
                  Start the hub itself, one hot game, 10k fans, 20 events/s:\n    \
                  loadtest --hub-bin target/release/scorehub --scenario hot-game --fans 10000 \
                  --rate 20 --duration 10s\n\n  \
                  10k fans over 500 games, 20 games each, 2000 events/s:\n    \
                  loadtest --hub-bin target/release/scorehub --scenario many-games --games 500 \
                  --fans 10000 --subs-per-fan 20 --rate 2000\n\n  \
                  What one fan that never reads costs the others (compare p99 with the run \
                  without --stalled) and the hub's memory:\n    \
                  loadtest --hub-bin target/release/scorehub --scenario hot-game --fans 2000 \
                  --rate 20 --duration 30s --stalled 1\n\n  \
                  Memory per idle connection:\n    \
                  loadtest --hub-bin target/release/scorehub --idle --fans 10000 --duration 5s\n\n  \
                  Two hubs sharing a private Redis, events on one, fans on the other:\n    \
                  loadtest --hub-bin target/release/scorehub --scenario two-nodes --redis --nodes 2\n\n  \
                  Three hubs on a 3-shard Redis Cluster; then a primary killed 5 s into the \
                  window, with 2 replicas each and every event confirmed by a replica:\n    \
                  loadtest --hub-bin target/release/scorehub --scenario cluster --fans 2000\n    \
                  loadtest --hub-bin target/release/scorehub --scenario cluster --replicas 2 \
                  --kill-primary-at 5s --posters 64 --hub-env SCOREHUB_REDIS__MIN_REPLICAS_ACKED=1\n\n  \
                  A hub someone else started (pid for CPU and memory figures):\n    \
                  TOKEN=$(scorehub token --sub loadtest --games 'lt:*' --scope admin --ttl 1h)\n    \
                  loadtest --url http://127.0.0.1:8080 --token \"$TOKEN\" --hub-pid \"$(pgrep -x scorehub)\"\n\n\
                  Exit codes: 0 correct, 1 a correctness counter is non-zero, 2 the run failed."
)]
struct Cli {
    /// Base URL of a running hub (plain http; ws:// is derived from it). Games
    /// are created, events posted and states read here; fans connect here too
    /// unless `--fan-url` is given. [default: http://127.0.0.1:8080]
    #[arg(long, conflicts_with = "hub_bin")]
    url: Option<String>,

    /// Base URL of a hub node fans connect to (ws:// or http://), for a cluster
    /// sharing Redis with `--url`. Repeat it to spread fans round-robin over
    /// several nodes (include `--url`'s own to have fans there too). The report
    /// then shows deliveries and latency per node, and each fan's final state
    /// is checked against both `--url` and its own node.
    #[arg(long = "fan-url", value_name = "URL", conflicts_with = "hub_bin")]
    fan_urls: Vec<String>,

    /// Token allowed to write `<league>:*`, e.g. from
    /// `scorehub token --sub loadtest --games 'lt:*' --scope admin --ttl 1h`
    /// (admin tokens skip the hub's per-token event limit; a scorekeeper token
    /// gets 429 above it). Not needed (and ignored) with `--hub-bin`, which
    /// mints its own.
    #[arg(long, env = "SCOREHUB_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Process id of the hub at `--url` (repeat for each node), to report its
    /// CPU-seconds and memory from /proc. Must run on this machine.
    #[arg(long = "hub-pid", value_name = "PID", conflicts_with = "hub_bin")]
    hub_pids: Vec<u32>,

    /// Start the hub for the run: runs `PATH serve` on a free loopback port
    /// with its own temporary storage and secret, mints its own admin token,
    /// measures it, and stops it at the end.
    #[arg(long, value_name = "PATH")]
    hub_bin: Option<PathBuf>,

    /// With `--hub-bin`: also start a private redis-server (free port, no
    /// persistence) and run the hubs in cluster mode on it.
    #[arg(long, requires = "hub_bin")]
    redis: bool,

    /// The redis-server binary for `--redis`.
    #[arg(long, value_name = "PATH", default_value = "redis-server")]
    redis_bin: PathBuf,

    /// With `--hub-bin --redis`: hub processes to start (at most 4). Events go
    /// to the first; fans connect to the others.
    #[arg(long, default_value_t = 1, requires = "hub_bin")]
    nodes: usize,

    /// `--scenario cluster`: replicas per primary of the Redis Cluster (3
    /// primaries). A failover run (`--kill-primary-at`) needs at least 1.
    #[arg(long, default_value_t = 0, requires = "hub_bin")]
    replicas: usize,

    /// The redis-cli binary, for `--scenario cluster` (`redis-cli --cluster
    /// create`).
    #[arg(long, value_name = "PATH", default_value = "redis-cli")]
    redis_cli_bin: PathBuf,

    /// `--scenario cluster --replicas 1`: this far into the measured window,
    /// `kill -9` the primary of the shard holding most of the games, and
    /// report the time until that shard's games get `200` again, the posts
    /// refused meanwhile, and acknowledged events lost (give
    /// `--hub-env SCOREHUB_REDIS__MIN_REPLICAS_ACKED=1` for none).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    kill_primary_at: Option<Duration>,

    /// With `--hub-bin`: a hub setting for every started hub, e.g.
    /// `SCOREHUB_STORAGE__FSYNC=false` (repeatable). Inherited SCOREHUB_*
    /// variables and RUST_LOG never reach the hub.
    #[arg(long = "hub-env", value_name = "KEY=VALUE", value_parser = launch::parse_hub_env, requires = "hub_bin")]
    hub_env: Vec<(String, String)>,

    /// With `--hub-bin`: the hubs' log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    hub_log_format: LogFormat,

    /// With `--hub-bin`: keep the temporary directory (hub logs, event log,
    /// redis log) and print its path.
    #[arg(long, requires = "hub_bin")]
    keep_hub_dir: bool,

    /// Traffic shape.
    #[arg(long, value_enum, default_value_t = Scenario::Steady)]
    scenario: Scenario,

    /// Games to create, named `<league>:g1` … `<league>:gN` [default: 1 for
    /// hot-game, 500 for many-games, else 10].
    #[arg(long)]
    games: Option<usize>,

    /// WebSocket fans to open (at most 19000, reference fans included).
    #[arg(long, default_value_t = 1000, conflicts_with = "fans_per_game")]
    fans: usize,

    /// Instead of `--fans`: fans following each game, so that
    /// fans = games × fans-per-game / subs-per-fan.
    #[arg(long)]
    fans_per_game: Option<usize>,

    /// Games each fan subscribes to.
    #[arg(long, default_value_t = 1)]
    subs_per_fan: usize,

    /// Events per second to post, over all games.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,

    /// Extra clients that connect and subscribe like the fans (the same games;
    /// hot-game: the one game), get their snapshots, then never read their
    /// socket again (4 KiB receive buffer). They show what a stalled fan
    /// costs the other fans' latency (compare with the same run without
    /// them) and the hub's memory. Not counted in the fans' figures; the
    /// report says how many the hub had disconnected by the end of the window.
    #[arg(long, value_name = "N", default_value_t = 0)]
    stalled: usize,

    /// Churn: fans leaving (and new fans joining) per second.
    #[arg(long, default_value_t = 20.0)]
    churn_rate: f64,

    /// Steady and churn: games have a bounded life. Each of the `--games`
    /// slots gets at most N events per game (the last a `status` `final`),
    /// then a new game `<league>:g<slot>-<generation>`, created before its
    /// first event. Fans joining later follow the slots' current games; fans
    /// of a retired game keep it. [default: unlimited]
    #[arg(long, value_name = "N", conflicts_with = "idle")]
    game_events: Option<u64>,

    /// Connect the fans, post nothing, and measure the idle window: memory per
    /// idle connection, CPU of keeping them.
    #[arg(long, conflicts_with_all = ["rate", "warmup"])]
    idle: bool,

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

    /// Concurrent posters (each keeps one request in flight) [default: one
    /// per 50 events/s of --rate, 8 to 64].
    #[arg(long)]
    posters: Option<usize>,

    /// WebSocket handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,

    /// Fans allowed to fail connecting before the run is abandoned.
    #[arg(long, default_value_t = 0)]
    max_connect_errors: usize,

    /// Do not rebuild states from diffs (saves CPU; the end check then compares
    /// sequence numbers only, and churned fans are not checked).
    #[arg(long)]
    no_state_check: bool,

    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    json: bool,

    /// Also write the report as JSON to this file (the table still goes to
    /// stdout).
    #[arg(long, value_name = "PATH")]
    json_out: Option<PathBuf>,

    /// Small fixed run for the test suite: 3 games (1 for hot-game), 30 fans,
    /// 50 events/s, 3 s (churn: 10 fans/s).
    #[arg(
        long,
        conflicts_with_all = ["games", "fans", "fans_per_game", "subs_per_fan", "rate", "duration", "warmup", "churn_rate"]
    )]
    smoke: bool,

    /// Allow hubs that are not on this machine (loopback) as targets, for
    /// `--url` and every `--fan-url`.
    #[arg(long)]
    allow_remote: bool,
}

/// Where the hubs come from.
#[derive(Debug)]
enum Target {
    /// Hubs someone else started.
    Given {
        /// The hub games are created on and events posted to (`--url`).
        scorekeeper: HubUrls,
        /// The hubs fans are spread over, round-robin (`--fan-url`, or `--url`).
        fan_nodes: Vec<HubUrls>,
        /// Bearer token.
        token: String,
        /// `--hub-pid`s.
        hub_pids: Vec<u32>,
    },
    /// Hubs this run starts (`--hub-bin`).
    Launch(LaunchPlan),
}

/// A validated run: every number in range, URLs derived.
#[derive(Debug)]
struct Plan {
    /// Traffic shape.
    scenario: Scenario,
    /// The hubs.
    target: Target,
    /// Games posted to at once (`--games`): the slots.
    games: usize,
    /// Every game id the run may use, `<league>:g1` … (with `--game-events`,
    /// `<league>:g1-0` …, generation after generation: see `rotation`).
    game_ids: std::sync::Arc<[String]>,
    /// `--game-events`.
    game_events: Option<u64>,
    /// Fans to open (besides reference fans).
    fans: usize,
    /// Reference fans (churn: one per game).
    reference_fans: usize,
    /// Clients that never read (`--stalled`), besides the fans.
    stalled: usize,
    /// Games per fan.
    subs_per_fan: usize,
    /// Events per second (0 when idle).
    rate: f64,
    /// Churn: fans replaced per second.
    churn_rate: f64,
    /// Post nothing; measure idle fans.
    idle: bool,
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
    /// `--kill-primary-at`.
    kill_primary_at: Option<Duration>,
}

impl Plan {
    /// Validates the command line.
    fn from_cli(cli: Cli) -> Result<Self> {
        let games_default = cli.scenario.default_games();
        let (games, fans, subs_per_fan, rate, duration, warmup, churn_rate) = if cli.smoke {
            (
                games_default.min(3),
                Some(30),
                1,
                50.0,
                Duration::from_secs(3),
                Duration::from_millis(500),
                10.0,
            )
        } else {
            let games = cli.games.unwrap_or(games_default);
            let fans = match cli.fans_per_game {
                Some(per_game) => {
                    let subs = cli.subs_per_fan.max(1);
                    games.checked_mul(per_game).map(|f| f.div_ceil(subs))
                }
                None => Some(cli.fans),
            };
            (
                games,
                fans,
                cli.subs_per_fan,
                cli.rate,
                cli.duration,
                cli.warmup,
                cli.churn_rate,
            )
        };
        let fans = fans.unwrap_or(usize::MAX);
        let (rate, warmup) = if cli.idle {
            (0.0, Duration::ZERO)
        } else {
            (rate, warmup)
        };
        ensure!(
            cli.scenario != Scenario::HotGame || games == 1,
            "--scenario hot-game is one game; drop --games {games} (or use many-games)"
        );
        if let Some(at) = cli.kill_primary_at {
            ensure!(
                cli.scenario == Scenario::Cluster && cli.replicas >= 1,
                "--kill-primary-at is for --scenario cluster with --replicas 1 (or more): \
                 a primary without a replica has nobody to take over"
            );
            ensure!(
                at < duration,
                "--kill-primary-at {at:?} is not inside the measured window (--duration \
                 {duration:?}); kill earlier or measure longer"
            );
        }
        ensure!(
            cli.replicas <= 2,
            "--replicas must be 0..=2, got {}",
            cli.replicas
        );
        ensure!(
            cli.replicas == 0 || cli.scenario == Scenario::Cluster,
            "--replicas is for --scenario cluster"
        );
        let target = target(&cli)?;
        let fan_node_count = match &target {
            Target::Given { fan_nodes, .. } => fan_nodes.len(),
            Target::Launch(launch) if launch.cluster.is_some() => launch.nodes,
            Target::Launch(launch) => launch.nodes.saturating_sub(1).max(1),
        };
        ensure!(
            valid_league(&cli.league),
            "--league {:?} is not a league name ([a-z0-9][a-z0-9_-]{{0,31}})",
            cli.league
        );
        ensure!(
            (1..=10_000).contains(&games),
            "--games must be 1..=10000, got {games}"
        );
        let reference_fans = if cli.scenario.churns() { games } else { 0 };
        ensure!(
            (1..=MAX_FANS).contains(&fans),
            "--fans must be 1..={MAX_FANS} (each fan is one open file; the limit is 20k), got {fans}"
        );
        ensure!(
            fans + reference_fans <= MAX_FANS,
            "--scenario churn adds one reference fan per game: {fans} fans + {reference_fans} \
             reference fans is more than {MAX_FANS}; lower --fans or --games"
        );
        ensure!(
            cli.stalled <= MAX_STALLED,
            "--stalled must be 0..={MAX_STALLED}, got {}",
            cli.stalled
        );
        ensure!(
            fans + reference_fans + cli.stalled <= MAX_FANS,
            "{fans} fans + {reference_fans} reference fans + {} stalled clients is more than \
             {MAX_FANS} connections (one open file each); lower --fans or --stalled",
            cli.stalled
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
            churn_rate.is_finite() && (0.0..=10_000.0).contains(&churn_rate),
            "--churn-rate must be 0..=10000 fans/s, got {churn_rate}"
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
        // Float to integer: `as` saturates; the rate is finite here.
        let posters = cli
            .posters
            .unwrap_or_else(|| ((rate / 50.0).ceil() as usize).clamp(8, 64));
        ensure!(
            (1..=256).contains(&posters),
            "--posters must be 1..=256, got {posters}"
        );
        ensure!(
            (1..=2000).contains(&cli.connect_concurrency),
            "--connect-concurrency must be 1..=2000, got {}",
            cli.connect_concurrency
        );
        ensure!(
            fans >= fan_node_count,
            "--fans {fans} is fewer than the {fan_node_count} fan nodes: every node needs a fan"
        );
        check_open_files(fans + reference_fans + cli.stalled)?;
        if let Some(n) = cli.game_events {
            ensure!(
                matches!(cli.scenario, Scenario::Steady | Scenario::Churn),
                "--game-events is for --scenario steady and churn, not {}",
                cli.scenario.name()
            );
            ensure!(n >= 1, "--game-events must be at least 1, got {n}");
        }
        // Every event the posters could send (they run a little past the
        // window while the run stops them), so that every game is named.
        // Float to integer: `as` saturates; the rate is finite here.
        let most_events =
            (rate * (warmup + duration + POSTING_SLACK).as_secs_f64()).ceil() as u64 + 1;
        let generations = rotation::generations(cli.game_events, most_events, games);
        ensure!(
            generations.saturating_mul(games as u64) <= MAX_GAME_IDS,
            "--game-events {} at {rate} events/s for {duration:?} needs {generations} games per              slot, more than {MAX_GAME_IDS} games in all; raise --game-events or lower --rate              or --duration",
            cli.game_events.unwrap_or(0)
        );
        let game_ids = rotation::game_ids(
            &cli.league,
            games,
            usize::try_from(generations).unwrap_or(usize::MAX),
            cli.game_events.is_some(),
        )
        .into();
        Ok(Self {
            scenario: cli.scenario,
            target,
            games,
            game_ids,
            game_events: cli.game_events,
            fans,
            reference_fans,
            stalled: cli.stalled,
            subs_per_fan,
            rate,
            churn_rate,
            idle: cli.idle,
            duration,
            warmup,
            settle: cli.settle,
            posters,
            connect_concurrency: cli.connect_concurrency,
            max_connect_errors: cli.max_connect_errors,
            check_state: !cli.no_state_check,
            kill_primary_at: cli.kill_primary_at,
        })
    }

    /// The longest a run may take before it is abandoned: every phase's own
    /// bound, plus slack.
    fn hard_bound(&self) -> Duration {
        let connections = self.fans + self.reference_fans + self.stalled;
        let waves = connections.div_ceil(self.connect_concurrency);
        let connect = Duration::from_secs(10) * u32::try_from(waves).unwrap_or(u32::MAX);
        let launch = match &self.target {
            Target::Launch(launch) => {
                Duration::from_secs(40) * u32::try_from(launch.nodes).unwrap_or(u32::MAX)
                    + Duration::from_secs(30)
            }
            Target::Given { .. } => Duration::ZERO,
        };
        // Forming the cluster, and reading every history back at the end.
        let cluster = match &self.target {
            Target::Launch(launch) if launch.cluster.is_some() => Duration::from_secs(90),
            _ => Duration::ZERO,
        };
        Duration::from_secs(60)
            + launch
            + cluster
            + connect
            + run::SNAPSHOT_WAIT
            + run::IDLE_SETTLE
            + self.warmup
            + self.duration
            + self.settle
            + stalled::DRAIN_LIMIT
            + stalled::CLOSE_WAIT
    }
}

/// The hubs of the run, from the command line.
fn target(cli: &Cli) -> Result<Target> {
    let Some(hub_bin) = &cli.hub_bin else {
        ensure!(
            cli.scenario != Scenario::Cluster,
            "--scenario cluster starts its own Redis Cluster and hubs: give --hub-bin PATH \
             (e.g. --hub-bin target/release/scorehub) instead of --url"
        );
        let url = cli.url.as_deref().unwrap_or(DEFAULT_URL);
        let scorekeeper = nodes::scorekeeper_url(url, cli.allow_remote)?;
        let fan_nodes = nodes::fan_nodes(&cli.fan_urls, &scorekeeper, cli.allow_remote)?;
        ensure!(
            !cli.scenario.needs_another_node() || fan_nodes.iter().any(|n| *n != scorekeeper),
            "--scenario {} needs fans on another node than --url ({}): add --fan-url with the \
             address of a second hub sharing its Redis, e.g. --fan-url ws://127.0.0.1:8081 \
             (or let the load test start both: --hub-bin PATH --redis --nodes 2)",
            cli.scenario.name(),
            scorekeeper.http
        );
        let token = cli.token.clone().unwrap_or_default();
        ensure!(
            !token.trim().is_empty(),
            "--token is missing: mint one with `scorehub token --sub loadtest --games '{}:*' \
             --scope admin --ttl 1h`, or let the load test start the hub with --hub-bin PATH",
            cli.league
        );
        return Ok(Target::Given {
            scorekeeper,
            fan_nodes,
            token,
            hub_pids: cli.hub_pids.clone(),
        });
    };
    // Two nodes means two hubs sharing a Redis, a cluster three hubs on a
    // Redis Cluster: start what that takes.
    let cluster = cli.scenario == Scenario::Cluster;
    ensure!(
        !(cluster && cli.redis),
        "--scenario cluster starts a Redis Cluster; drop --redis (a single redis-server)"
    );
    let (nodes, redis) = if cli.scenario.needs_another_node() {
        (cli.nodes.max(2), true)
    } else if cluster {
        (if cli.nodes > 1 { cli.nodes } else { 3 }, false)
    } else {
        (cli.nodes, cli.redis)
    };
    ensure!(
        (1..=MAX_NODES).contains(&nodes),
        "--nodes must be 1..={MAX_NODES}, got {nodes}"
    );
    if nodes > 1 && !redis && !cluster {
        bail!("--nodes {nodes} needs --redis: several hubs share their state through Redis");
    }
    // The hubs run in a temporary directory, where a relative path would be
    // looked up; a bare name (`redis-server`) is still looked up in PATH.
    let absolute = |path: &PathBuf, flag: &str| -> Result<PathBuf> {
        if path.components().count() > 1 {
            std::path::absolute(path)
                .with_context(|| format!("{flag} {}: cannot make it absolute", path.display()))
        } else {
            Ok(path.clone())
        }
    };
    Ok(Target::Launch(LaunchPlan {
        hub_bin: absolute(hub_bin, "--hub-bin")?,
        nodes,
        redis_bin: if redis {
            Some(absolute(&cli.redis_bin, "--redis-bin")?)
        } else {
            None
        },
        cluster: if cluster {
            Some(crate::cluster::ClusterPlan {
                redis_bin: absolute(&cli.redis_bin, "--redis-bin")?,
                cli_bin: absolute(&cli.redis_cli_bin, "--redis-cli-bin")?,
                primaries: CLUSTER_SHARDS,
                replicas: cli.replicas,
            })
        } else {
            None
        },
        log_format: cli.hub_log_format,
        hub_env: cli.hub_env.clone(),
        keep_dir: cli.keep_hub_dir,
    }))
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

/// Refuses a run whose connections would not fit under this process's
/// open-file limit (Linux only; elsewhere nothing is checked). The limit has
/// been raised to the hard limit already.
fn check_open_files(connections: usize) -> Result<()> {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return Ok(());
    };
    let soft = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse::<usize>().ok());
    let needed = connections + 64;
    if let Some(soft) = soft
        && soft < needed
    {
        bail!(
            "{connections} connections need about {needed} open files but this process may \
             open {soft} (its hard limit); raise it first (e.g. `ulimit -Hn 20000` as root) or \
             lower --fans"
        );
    }
    Ok(())
}

/// Raises the open-file limit, parses the command line, runs within the hard
/// time bound, prints the report.
fn main() -> ExitCode {
    let fd_limit = system::raise_fd_limit();
    let cli = Cli::parse();
    let json = cli.json;
    let json_out = cli.json_out.clone();
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
        match tokio::time::timeout(bound, run::run(&plan, fd_limit)).await {
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
            let text = match serde_json::to_string_pretty(&report) {
                Ok(text) => text,
                Err(e) => {
                    eprintln!("loadtest: error: encoding the report: {e}");
                    return ExitCode::from(2);
                }
            };
            if json {
                println!("{text}");
            } else {
                print!("{}", report.table());
            }
            if let Some(path) = json_out
                && let Err(e) = std::fs::write(&path, text + "\n")
            {
                eprintln!("loadtest: error: writing {}: {e}", path.display());
                return ExitCode::from(2);
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
    use super::{Cli, Plan, Target, valid_league};
    use crate::{nodes::HubUrls, scenario::Scenario};
    use clap::Parser;

    /// A plan from these arguments after `--token t` (and `--fans 10` unless
    /// they say how many).
    fn plan(args: &[&str]) -> anyhow::Result<Plan> {
        let mut argv = vec!["loadtest", "--token", "t"];
        if !["--fans", "--fans-per-game", "--smoke"]
            .iter()
            .any(|flag| args.contains(flag))
        {
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

    /// The given hubs of a plan.
    fn given(plan: &Plan) -> (&HubUrls, &[HubUrls]) {
        match &plan.target {
            Target::Given {
                scorekeeper,
                fan_nodes,
                ..
            } => (scorekeeper, fan_nodes),
            Target::Launch(_) => panic!("expected --url, got --hub-bin"),
        }
    }

    #[test]
    fn without_fan_urls_fans_go_to_the_url() {
        let one = plan(&["--url", "http://127.0.0.1:9000/"]).expect("valid");
        let (scorekeeper, fan_nodes) = given(&one);
        assert_eq!(*scorekeeper, hub(9000));
        assert_eq!(fan_nodes, [hub(9000)]);
        assert_eq!(one.scenario, Scenario::Steady);
        let default = plan(&[]).expect("valid");
        assert_eq!(*given(&default).0, hub(8080));
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
        let (scorekeeper, fan_nodes) = given(&plan);
        assert_eq!(*scorekeeper, hub(9000));
        assert_eq!(fan_nodes, [hub(9000), hub(9001)]);
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
    fn cluster_starts_three_hubs_on_a_redis_cluster() {
        let parse = |args: &[&str]| -> anyhow::Result<Plan> {
            let mut argv = vec!["loadtest", "--fans", "10", "--hub-bin", "/bin/true"];
            argv.extend_from_slice(args);
            Plan::from_cli(Cli::try_parse_from(argv)?)
        };
        let started = parse(&["--scenario", "cluster", "--replicas", "1"]).expect("valid");
        match &started.target {
            Target::Launch(launch) => {
                assert_eq!(launch.nodes, 3);
                assert!(launch.redis_bin.is_none(), "no single redis-server");
                let cluster = launch.cluster.as_ref().expect("a cluster");
                assert_eq!((cluster.primaries, cluster.replicas), (3, 1));
            }
            Target::Given { .. } => panic!("expected a launch"),
        }
        let failover = parse(&[
            "--scenario",
            "cluster",
            "--replicas",
            "2",
            "--kill-primary-at",
            "3s",
        ])
        .expect("valid");
        assert_eq!(
            failover.kill_primary_at,
            Some(std::time::Duration::from_secs(3))
        );
        let err = parse(&["--scenario", "cluster", "--kill-primary-at", "3s"])
            .expect_err("no replica to take over");
        assert!(err.to_string().contains("--replicas 1"), "{err}");
        let err = parse(&[
            "--scenario",
            "cluster",
            "--replicas",
            "1",
            "--kill-primary-at",
            "30s",
        ])
        .expect_err("after the window");
        assert!(err.to_string().contains("measured window"), "{err}");
        assert!(parse(&["--replicas", "1"]).is_err(), "cluster only");
        assert!(parse(&["--scenario", "cluster", "--redis"]).is_err());
        let err = plan(&["--scenario", "cluster", "--url", "http://127.0.0.1:1"])
            .expect_err("needs --hub-bin");
        assert!(err.to_string().contains("--hub-bin"), "{err}");
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

    #[test]
    fn scenarios_choose_their_games() {
        assert_eq!(
            plan(&["--scenario", "hot-game"])
                .expect("valid")
                .game_ids
                .len(),
            1
        );
        let many = plan(&["--scenario", "many-games"]).expect("valid");
        assert_eq!(many.game_ids.len(), 500);
        assert_eq!(many.game_ids[499], "lt:g500");
        let err = plan(&["--scenario", "hot-game", "--games", "3"]).expect_err("one game");
        assert!(err.to_string().contains("hot-game is one game"), "{err}");
        let smoke = plan(&["--scenario", "hot-game", "--smoke"]).expect("valid");
        assert_eq!((smoke.game_ids.len(), smoke.fans), (1, 30));
        assert!(
            plan(&["--smoke", "--fans", "5"]).is_err(),
            "--smoke sets --fans"
        );
    }

    #[test]
    fn fans_per_game_counts_each_fans_subscriptions() {
        let plan = plan(&[
            "--scenario",
            "many-games",
            "--games",
            "500",
            "--fans-per-game",
            "400",
            "--subs-per-fan",
            "20",
        ])
        .expect("valid");
        assert_eq!(plan.fans, 10_000);
    }

    #[test]
    fn churn_adds_one_reference_fan_per_game() {
        let plan = plan(&["--scenario", "churn", "--games", "4"]).expect("valid");
        assert_eq!((plan.fans, plan.reference_fans), (10, 4));
        let err = super::Plan::from_cli(
            Cli::try_parse_from([
                "loadtest",
                "--token",
                "t",
                "--scenario",
                "churn",
                "--fans",
                "19000",
            ])
            .expect("parses"),
        )
        .expect_err("too many with references");
        assert!(err.to_string().contains("reference fan"), "{err}");
    }

    #[test]
    fn game_events_names_every_generation_of_every_slot() {
        let rotating = plan(&[
            "--scenario",
            "churn",
            "--games",
            "4",
            "--game-events",
            "10",
            "--rate",
            "20",
            "--duration",
            "10s",
            "--warmup",
            "0s",
        ])
        .expect("valid");
        // At most 20/s × (10 s + 30 s slack) + 1 = 801 events: 201 per slot,
        // 21 games of 10 events each.
        assert_eq!((rotating.games, rotating.game_ids.len()), (4, 4 * 21));
        assert_eq!(rotating.game_events, Some(10));
        assert_eq!(rotating.game_ids[0], "lt:g1-0");
        assert_eq!(rotating.game_ids[5], "lt:g2-1");
        let fixed = plan(&["--games", "4"]).expect("valid");
        assert_eq!((fixed.games, fixed.game_ids.len()), (4, 4));
        assert_eq!(fixed.game_ids[3], "lt:g4");
        let err =
            plan(&["--scenario", "hot-game", "--game-events", "5"]).expect_err("steady/churn");
        assert!(err.to_string().contains("steady and churn"), "{err}");
        assert!(plan(&["--game-events", "0"]).is_err());
        let err = plan(&["--game-events", "1", "--rate", "1000", "--duration", "1h"])
            .expect_err("too many games");
        assert!(err.to_string().contains("raise --game-events"), "{err}");
        assert!(plan(&["--idle", "--game-events", "5"]).is_err());
    }

    #[test]
    fn stalled_clients_are_counted_apart_from_the_fans() {
        let none = plan(&["--scenario", "hot-game"]).expect("valid");
        assert_eq!(none.stalled, 0, "none unless asked for");
        let one = plan(&["--scenario", "hot-game", "--stalled", "1"]).expect("valid");
        assert_eq!((one.fans, one.stalled), (10, 1));
        let smoke = plan(&["--smoke", "--stalled", "2"]).expect("valid");
        assert_eq!((smoke.fans, smoke.stalled), (30, 2));
        let err = plan(&["--stalled", "1001"]).expect_err("too many");
        assert!(
            err.to_string().contains("--stalled must be 0..=1000"),
            "{err}"
        );
        let err = plan(&["--fans", "18500", "--stalled", "600"]).expect_err("too many in all");
        assert!(
            err.to_string().contains("lower --fans or --stalled"),
            "{err}"
        );
        assert!(plan(&["--stalled", "-1"]).is_err());
        // Each stalled client is a connection the run must be able to make.
        let wide = plan(&["--fans", "200", "--connect-concurrency", "200"]).expect("valid");
        let stalled = plan(&[
            "--fans",
            "200",
            "--connect-concurrency",
            "200",
            "--stalled",
            "1",
        ])
        .expect("valid");
        assert!(stalled.hard_bound() > wide.hard_bound());
    }

    #[test]
    fn idle_posts_nothing() {
        let idle = plan(&["--idle", "--duration", "5s"]).expect("valid");
        assert!(idle.idle);
        assert_eq!(idle.rate, 0.0);
        assert!(idle.warmup.is_zero());
        assert!(plan(&["--idle", "--rate", "5"]).is_err());
    }

    #[test]
    fn hub_bin_starts_what_the_scenario_needs() {
        let launch = |args: &[&str]| -> anyhow::Result<crate::launch::LaunchPlan> {
            let mut argv = vec!["loadtest", "--fans", "10", "--hub-bin", "/bin/true"];
            argv.extend_from_slice(args);
            match Plan::from_cli(Cli::try_parse_from(argv)?)?.target {
                Target::Launch(launch) => Ok(launch),
                Target::Given { .. } => panic!("expected a launch"),
            }
        };
        let one = launch(&[]).expect("valid");
        assert_eq!((one.nodes, one.redis_bin.is_some()), (1, false));
        // Hubs run in a temporary directory: relative paths are made absolute
        // here, bare names are left for PATH.
        let relative = launch(&["--redis", "--redis-bin", "bin/redis-server"]).expect("valid");
        let redis_bin = relative.redis_bin.expect("redis");
        assert!(redis_bin.is_absolute() && redis_bin.ends_with("bin/redis-server"));
        let hub = Plan::from_cli(
            Cli::try_parse_from(["loadtest", "--fans", "10", "--hub-bin", "target/scorehub"])
                .expect("parses"),
        )
        .expect("valid");
        match hub.target {
            Target::Launch(launch) => assert!(
                launch.hub_bin.is_absolute() && launch.hub_bin.ends_with("target/scorehub"),
                "{launch:?}"
            ),
            Target::Given { .. } => panic!("expected a launch"),
        }
        let bare = launch(&["--redis"]).expect("valid");
        assert_eq!(
            bare.redis_bin.as_deref(),
            Some(std::path::Path::new("redis-server"))
        );
        let two = launch(&["--scenario", "two-nodes"]).expect("valid");
        assert_eq!((two.nodes, two.redis_bin.is_some()), (2, true));
        let err = launch(&["--nodes", "2"]).expect_err("no redis");
        assert!(err.to_string().contains("needs --redis"), "{err}");
        assert!(launch(&["--redis", "--nodes", "5"]).is_err());
        let env = launch(&["--hub-env", "SCOREHUB_STORAGE__FSYNC=false"]).expect("valid");
        assert_eq!(
            env.hub_env,
            [("SCOREHUB_STORAGE__FSYNC".to_string(), "false".to_string())]
        );
        assert!(launch(&["--hub-env", "SCOREHUB_AUTH__SECRET=x"]).is_err());
        // --hub-bin conflicts with naming a hub.
        for extra in [
            &["--url", "http://127.0.0.1:1"][..],
            &["--fan-url", "ws://127.0.0.1:1"],
            &["--hub-pid", "1"],
        ] {
            assert!(launch(extra).is_err(), "{extra:?}");
        }
        // Without --hub-bin there is nothing to start Redis for.
        assert!(plan(&["--redis"]).is_err());
    }
}
