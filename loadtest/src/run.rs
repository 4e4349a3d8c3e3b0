//! The phases of one run, in order: hubs → games → memory before → fans →
//! snapshots → memory idle → stalled clients → events (and churn) with CPU
//! and the hubs' `/metrics` sampled at the window's edges and memory through
//! it → memory at the end → stalled clients read and closed → catch-up →
//! comparison → report → hubs stopped.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use futures_util::{StreamExt, TryStreamExt, stream};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::{
    Plan, Target,
    api::Api,
    check,
    churn::{self, ChurnPlan, Churner},
    cluster, dial,
    failover::{self, Acks, FailoverReport, FailoverWatch},
    fan::{self, FanCounters, FanKind, FanNode, FanOutcome, FanShared, FanSpec, Leave, Progress},
    hub_metrics::{self, Histogram},
    launch::{self, Launched},
    nodes::HubUrls,
    poster::{self, PosterPlan, latency_histogram},
    report::{ClusterReport, HubInfo, Latency, NodeReport, Report, StalledReport},
    rotation::Rotation,
    sent::SentTimes,
    stalled::Stalled,
    system::{self, FdLimit, Meter, Phase, ProcessKind, RssSampler},
};

/// How many `PUT /v1/games/{id}` run at once.
const CREATE_CONCURRENCY: usize = 16;

/// How long fans may take to get their first snapshots after connecting.
pub(crate) const SNAPSHOT_WAIT: Duration = Duration::from_secs(10);

/// A pause after every fan has its snapshots, before the hub's idle memory
/// is read, so that handshake buffers freed late are not counted.
pub(crate) const IDLE_SETTLE: Duration = Duration::from_secs(1);

/// How long after a cluster run's state mismatches the hubs are read again.
const RECHECK_AFTER: Duration = Duration::from_secs(5);

/// How long a hub the run started may take to become ready.
const READY_WAIT: Duration = Duration::from_secs(15);

/// The hubs of a run, ready to be measured.
struct Hubs {
    /// Where games are created and events posted.
    scorekeeper: HubUrls,
    /// Where fans connect.
    fan_nodes: Vec<HubUrls>,
    /// Where events are posted, round-robin (cluster: every hub; else `--url`).
    posters: Vec<HubUrls>,
    /// The Redis Cluster's nodes `(port, pid)`, when the run started one.
    cluster: Vec<(u16, u32)>,
    /// Bearer token.
    token: String,
    /// Processes to measure: `(role, kind, pid)`.
    processes: Vec<(String, ProcessKind, u32)>,
    /// How the hub was run, for the report.
    info: HubInfo,
}

/// Carries out one run: starts the hubs when asked, measures, stops them.
pub(crate) async fn run(plan: &Plan, fd_limit: FdLimit) -> Result<Report> {
    let mut interrupted = watch_interrupts();
    let (hubs, launched) = prepare(plan).await?;
    let result = measure(plan, &hubs, fd_limit, &mut interrupted).await;
    let notes = match launched {
        Some(launched) => {
            progress(format_args!("stopping the processes it started"));
            launched.stop().await
        }
        None => Vec::new(),
    };
    let mut report = result?;
    report.notes.extend(notes);
    Ok(report)
}

/// The hubs as given, or started.
async fn prepare(plan: &Plan) -> Result<(Hubs, Option<Launched>)> {
    match &plan.target {
        Target::Given {
            scorekeeper,
            fan_nodes,
            token,
            hub_pids,
        } => {
            let mut processes = Vec::with_capacity(hub_pids.len());
            for (n, &pid) in hub_pids.iter().enumerate() {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .with_context(|| format!("--hub-pid {pid}: no such process on this machine"))?;
                let comm = comm.trim();
                if comm != "scorehub" {
                    progress(format_args!(
                        "warning: --hub-pid {pid} is `{comm}`, not scorehub; its CPU and memory \
                         are reported as the hub's"
                    ));
                }
                processes.push((format!("hub {} ({comm})", n + 1), ProcessKind::Hub, pid));
            }
            Ok((
                Hubs {
                    scorekeeper: scorekeeper.clone(),
                    fan_nodes: fan_nodes.clone(),
                    posters: vec![scorekeeper.clone()],
                    cluster: Vec::new(),
                    token: token.clone(),
                    processes,
                    info: HubInfo {
                        nodes: fan_nodes.len(),
                        ..HubInfo::default()
                    },
                },
                None,
            ))
        }
        Target::Launch(launch_plan) => {
            progress(format_args!(
                "starting {} hub{} from {}{}",
                launch_plan.nodes,
                if launch_plan.nodes == 1 { "" } else { "s" },
                launch_plan.hub_bin.display(),
                if launch_plan.redis_bin.is_some() {
                    " with a private redis-server"
                } else if launch_plan.cluster.is_some() {
                    " on a private Redis Cluster"
                } else {
                    ""
                }
            ));
            let launched = launch::start(launch_plan).await?;
            let urls = launched.urls();
            let scorekeeper = crate::nodes::scorekeeper_url(&urls[0], false)?;
            let in_cluster = launch_plan.cluster.is_some();
            // A cluster run has fans on, and posts to, every hub.
            let fan_urls = if in_cluster {
                urls.clone()
            } else if urls.len() > 1 {
                urls[1..].to_vec()
            } else {
                Vec::new()
            };
            let fan_nodes = crate::nodes::fan_nodes(&fan_urls, &scorekeeper, false)?;
            let posters = if in_cluster {
                fan_nodes.clone()
            } else {
                vec![scorekeeper.clone()]
            };
            let mut processes = launched.processes();
            if let Some(first) = processes.first_mut()
                && launch_plan.nodes > 1
            {
                first.0.push_str(" (scorekeeper)");
            }
            for (role, _, pid) in &processes {
                progress(format_args!("{role}: pid {pid}"));
            }
            let info = HubInfo {
                started: true,
                bin: Some(launch_plan.hub_bin.display().to_string()),
                nodes: launch_plan.nodes,
                redis: launch_plan.redis_bin.is_some(),
                cluster_replicas: launch_plan.cluster.as_ref().map(|c| c.replicas),
                log_format: Some(format!("{:?}", launch_plan.log_format).to_lowercase()),
                env: launch_plan
                    .hub_env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
                dir: launched.kept_dir().map(|d| d.display().to_string()),
            };
            Ok((
                Hubs {
                    scorekeeper,
                    fan_nodes,
                    posters,
                    cluster: launched.cluster_nodes(),
                    token: launched.token.clone(),
                    processes,
                    info,
                },
                Some(launched),
            ))
        }
    }
}

/// Everything between "the hubs run" and "the report is written".
async fn measure(
    plan: &Plan,
    hubs: &Hubs,
    fd_limit: FdLimit,
    interrupted: &mut watch::Receiver<bool>,
) -> Result<Report> {
    let api = Api::new(
        &hubs.scorekeeper.http,
        &hubs.token,
        plan.posters + CREATE_CONCURRENCY,
    )?;
    api.health().await?;
    // Every fan node must answer before anything is created.
    let node_apis = hubs
        .fan_nodes
        .iter()
        .map(|node| Api::new(&node.http, &hubs.token, check::READ_CONCURRENCY))
        .collect::<Result<Vec<_>>>()?;
    for node_api in &node_apis {
        node_api.health().await?;
    }
    // Every hub once, for its own latency histograms at the window's edges.
    let metrics_apis = scraped_hubs(hubs)
        .iter()
        .map(|node| Api::new(&node.http, &hubs.token, 1))
        .collect::<Result<Vec<_>>>()?;
    if hubs.info.started {
        api.wait_ready(READY_WAIT).await?;
        for node_api in &node_apis {
            node_api.wait_ready(READY_WAIT).await?;
        }
    }

    progress(format_args!(
        "creating {} games at {}{}",
        plan.games,
        api.base(),
        match plan.game_events {
            Some(n) => format!(" (each retired after {n} events for a new one)"),
            None => String::new(),
        }
    ));
    let rotation = Arc::new(Rotation::new(
        Arc::clone(&plan.game_ids),
        plan.games,
        plan.game_events,
        plan.scenario.churns(),
    ));
    stream::iter((0..plan.games).map(|slot| rotation.ensure(&api, slot, 0)))
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<usize>>()
        .await?;

    let mut meter = Meter::new(hubs.processes.iter().cloned().chain([(
        "loadtest".to_string(),
        ProcessKind::Loadtest,
        std::process::id(),
    )]));
    meter.sample_rss(Phase::Before);

    let node_names: Vec<&str> = hubs.fan_nodes.iter().map(|n| n.ws.as_str()).collect();
    progress(format_args!(
        "connecting {} fans{} to {} ({} at a time)",
        plan.fans,
        if plan.reference_fans > 0 {
            format!(" and {} reference fans", plan.reference_fans)
        } else {
            String::new()
        },
        node_names.join(", "),
        plan.connect_concurrency
    ));
    let measuring = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(SentTimes::new(plan.game_ids.len()));
    let mut nodes = Vec::with_capacity(hubs.fan_nodes.len());
    for node in &hubs.fan_nodes {
        nodes.push(FanNode {
            ws_base: node.ws.clone(),
            addr: dial::resolve(&node.ws).await?,
            latency: Mutex::new(latency_histogram()?),
            send_latency: Mutex::new(latency_histogram()?),
            cross_latency: Mutex::new(latency_histogram()?),
            poster: hubs
                .posters
                .iter()
                .position(|p| p == node)
                .and_then(|i| u8::try_from(i).ok()),
        });
    }
    let shared = Arc::new(FanShared {
        nodes,
        game_ids: Arc::clone(&plan.game_ids),
        measuring: Arc::clone(&measuring),
        check_state: plan.check_state,
        connect_limit: Semaphore::new(plan.connect_concurrency),
        sent: Arc::clone(&sent),
        rotation: Arc::clone(&rotation),
        frames: Arc::default(),
    });
    let mut fans = connect_fans(plan, &shared).await?;
    if fans.failed > u64::try_from(plan.max_connect_errors).unwrap_or(u64::MAX) {
        let first = fans.first_error.clone().unwrap_or_default();
        let failed = fans.failed;
        let total = fans.tasks.len();
        fans.finish().await?;
        bail!(
            "{failed} of {total} fans could not connect (allowed: --max-connect-errors {}); first error: {first}",
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
    tokio::time::sleep(IDLE_SETTLE).await;
    meter.sample_rss(Phase::Idle);

    // After the idle sample, so that memory per idle connection is the fans'.
    let stalled = if plan.stalled > 0 {
        progress(format_args!(
            "connecting {} stalled clients (they stop reading after their snapshots)",
            plan.stalled
        ));
        let stalled = Stalled::connect(&shared, &stalled_specs(plan, shared.nodes.len())).await;
        if stalled.connect_errors > u64::try_from(plan.max_connect_errors).unwrap_or(u64::MAX) {
            let first = stalled.first_error.clone().unwrap_or_default();
            let failed = stalled.connect_errors;
            let total = stalled.asked();
            stalled.finish().await;
            fans.finish().await?;
            bail!(
                "{failed} of {total} stalled clients could not connect (allowed: \
                 --max-connect-errors {}); first error: {first}",
                plan.max_connect_errors
            );
        }
        Some(stalled)
    } else {
        None
    };

    // Cluster runs: the shards, where each game lives, the doomed primary.
    let probe = if hubs.cluster.is_empty() {
        None
    } else {
        Some(cluster::Probe::new(&hubs.cluster, &plan.game_ids).await?)
    };
    let acks = probe.as_ref().map(|_| Arc::new(Acks::default()));
    let doomed = match (&probe, plan.kill_primary_at) {
        (Some(probe), Some(_)) => {
            let shard = probe.busiest_shard();
            let port = probe
                .shards
                .get(shard)
                .map(|s| s.primary)
                .context("no shard")?;
            let pid = probe.pid_of(port).with_context(|| {
                format!("the primary on port {port} was not started by the run")
            })?;
            progress(format_args!(
                "the primary on port {port} ({} games) will be killed {:.1} s into the window",
                probe.games_on(shard),
                plan.kill_primary_at.unwrap_or_default().as_secs_f64()
            ));
            Some((
                shard,
                port,
                pid,
                Arc::new(FailoverWatch::new(probe.on_shard(shard))),
            ))
        }
        _ => None,
    };
    let accepted_per_game = poster::per_game_counters(plan.game_ids.len());
    let poster_apis = hubs
        .posters
        .iter()
        .map(|node| {
            if *node == hubs.scorekeeper {
                Ok(api.clone())
            } else {
                Api::new(&node.http, &hubs.token, plan.posters + CREATE_CONCURRENCY)
            }
        })
        .collect::<Result<Vec<_>>>()?;

    let mut churner = None;
    let posting = if plan.idle {
        progress(format_args!(
            "idle: measuring {:.1} s without events",
            plan.duration.as_secs_f64()
        ));
        None
    } else {
        progress(format_args!(
            "posting {} events/s{}; warm-up {:.1} s, then measuring {:.1} s",
            plan.rate,
            if plan.scenario.churns() {
                format!(", churning {} fans/s", plan.churn_rate)
            } else {
                String::new()
            },
            plan.warmup.as_secs_f64(),
            plan.duration.as_secs_f64()
        ));
        let posting = poster::start(
            &poster_apis,
            PosterPlan {
                rate: plan.rate,
                posters: plan.posters,
                run_id: run_id(),
                game_ids: Arc::clone(&plan.game_ids),
                scenario: plan.scenario,
                rotation: Arc::clone(&rotation),
                sent: Arc::clone(&sent),
                accepted_per_game: Arc::clone(&accepted_per_game),
                acks: acks.clone(),
                failover: doomed.as_ref().map(|(_, _, _, watch)| Arc::clone(watch)),
            },
            Arc::clone(&measuring),
        )?;
        if plan.scenario.churns() {
            churner = Some(Churner::start(
                ChurnPlan {
                    rate: plan.churn_rate,
                    scenario: plan.scenario,
                    nodes: hubs.fan_nodes.len(),
                    games: plan.games,
                    subs_per_fan: plan.subs_per_fan,
                    first_index: fans.tasks.len(),
                },
                Arc::clone(&shared),
                std::mem::take(&mut fans.churnable),
                fans.stop.subscribe(),
            ));
        }
        sleep_unless_interrupted(plan.warmup, interrupted).await;
        Some(posting)
    };
    let commands_before = match &probe {
        Some(probe) => probe.commandstats().await,
        None => Vec::new(),
    };
    let hub_pages_before = hub_metrics::scrape(&metrics_apis).await;
    meter.sample_cpu(false);
    let window_start_ns = sent.now_ns();
    measuring.store(true, Ordering::Relaxed);
    let killer = match (&doomed, plan.kill_primary_at) {
        (Some((_, port, pid, watch)), Some(at)) => Some(failover::kill_later(
            *pid,
            *port,
            at,
            Arc::clone(watch),
            Arc::clone(&sent),
        )),
        _ => None,
    };
    let hub_pids = hubs
        .processes
        .iter()
        .filter(|(_, kind, _)| *kind == ProcessKind::Hub)
        .map(|&(_, _, pid)| pid)
        .collect();
    let rss_sampler = RssSampler::start(hub_pids, system::RSS_EVERY);
    let measured = sleep_unless_interrupted(plan.duration, interrupted).await;
    measuring.store(false, Ordering::Relaxed);
    meter.sample_cpu(true);
    let hub_pages_after = hub_metrics::scrape(&metrics_apis).await;
    let commands_after = match &probe {
        Some(probe) => probe.commandstats().await,
        None => Vec::new(),
    };
    let mut kill_note = None;
    if let Some(killer) = killer {
        if killer.is_finished() {
            if let Ok(Err(e)) = killer.await {
                kill_note = Some(format!("killing the primary failed: {e:#}"));
            }
        } else {
            killer.abort();
            kill_note = Some("the window ended before the primary was killed".to_string());
        }
    }
    let rss_series = rss_sampler.stop().await;
    let churned = match churner {
        Some(churner) => Some(churner.stop().await?),
        None => None,
    };
    let posted = match posting {
        Some(posting) => Some(posting.stop().await?),
        None => None,
    };
    meter.sample_rss(Phase::End);
    let stalled = match stalled {
        Some(stalled) => {
            progress(format_args!(
                "reading what the hub sent the stalled clients, then closing them"
            ));
            stalled.finish().await
        }
        None => StalledReport::default(),
    };

    let (churn_left, churn_joined) = match churned {
        Some(totals) => {
            let joined = totals.spawned.len() as u64;
            for (spec, progress, task) in totals.spawned {
                fans.progress.push((spec, progress));
                fans.tasks.push(task);
            }
            (totals.left, joined)
        }
        None => (0, 0),
    };

    progress(format_args!(
        "{}; waiting for fans to catch up",
        if plan.idle {
            "window over"
        } else {
            "posting stopped"
        }
    ));
    let (hub, caught_up, catch_up) = if probe.is_some() {
        let (caught_up, waited) = check::wait_caught_up_with_all(
            &fans.progress,
            &node_apis,
            &plan.game_ids,
            &rotation,
            plan.settle,
        )
        .await?;
        let hub = check::hub_states(&api, &plan.game_ids, &rotation).await?;
        (hub, caught_up, waited)
    } else {
        let hub = check::hub_states(&api, &plan.game_ids, &rotation).await?;
        let targets = check::seqs(&hub, &plan.game_ids)?;
        let (caught_up, waited) =
            check::wait_caught_up(&fans.progress, &targets, plan.settle).await;
        (hub, caught_up, waited)
    };

    let connected = fans.connected;
    let connect_errors = fans.failed;
    let first_connect_error = fans.first_error.clone();
    let connect_took = fans.took;
    let outcomes = fans.finish().await?;
    let views = check::node_views(
        &hubs.fan_nodes,
        &node_apis,
        &hubs.scorekeeper,
        &plan.game_ids,
        &rotation,
    )
    .await?;
    let states = check::compare(&outcomes, &hub, &views, &plan.game_ids);
    // In a cluster, a mismatch may be hubs still repairing after a
    // failover: read the hubs again a little later and say whether it lasts.
    let recheck = if probe.is_some() && states.mismatches > 0 {
        progress(format_args!(
            "{} state mismatches; reading the hubs again in {RECHECK_AFTER:?}",
            states.mismatches
        ));
        tokio::time::sleep(RECHECK_AFTER).await;
        let hub = check::hub_states(&api, &plan.game_ids, &rotation).await?;
        let views = check::node_views(
            &hubs.fan_nodes,
            &node_apis,
            &hubs.scorekeeper,
            &plan.game_ids,
            &rotation,
        )
        .await?;
        let again = check::compare(&outcomes, &hub, &views, &plan.game_ids);
        Some((again.mismatches, again.samples.into_iter().next()))
    } else {
        None
    };
    let cluster_report = match &probe {
        Some(probe) => {
            let losses = match &acks {
                Some(acks) => failover::check_losses(&api, &plan.game_ids, acks).await,
                None => failover::LossCheck::default(),
            };
            let accepted: Vec<u64> = accepted_per_game
                .iter()
                .map(|n| n.load(Ordering::Relaxed))
                .collect();
            let failover = match &doomed {
                Some((shard, port, _, watch)) => {
                    let mut figures = FailoverReport::from_watch(watch, *port, window_start_ns);
                    figures.new_primary_port = probe.primary_now(*shard, *port).await;
                    Some(figures)
                }
                None => None,
            };
            Some(ClusterReport {
                replicas: hubs.info.cluster_replicas.unwrap_or(0),
                shards: probe.shard_reports(&accepted, &commands_before, &commands_after),
                failover,
                losses,
            })
        }
        None => None,
    };
    let churn_check = churn::verify(&outcomes, &plan.game_ids);

    let mut counters = FanCounters::default();
    let mut dropped = 0;
    let mut churn_connect_errors = 0;
    let mut first_fan_problem = None;
    for outcome in &outcomes {
        counters += outcome.counters;
        if let Some(reason) = &outcome.dropped {
            dropped += 1;
            first_fan_problem
                .get_or_insert_with(|| format!("fan {} dropped: {reason}", outcome.index));
        }
        if let Some(reason) = &outcome.connect_error
            && outcome.index >= plan.fans + plan.reference_fans
        {
            churn_connect_errors += 1;
            first_fan_problem.get_or_insert_with(|| {
                format!("churned fan {} could not connect: {reason}", outcome.index)
            });
        }
        if let Some(problem) = &outcome.first_problem {
            first_fan_problem.get_or_insert_with(|| format!("fan {}: {problem}", outcome.index));
        }
    }
    let secs = measured.as_secs_f64().max(f64::EPSILON);
    let (nodes, latency, send_latency, cross_latency) =
        by_node(hubs, &shared, &outcomes, &states.mismatches_per_node, secs)?;
    let posted = match posted {
        Some(posted) => posted,
        None => poster::PosterTotals::new()?,
    };
    let (hub_fanout, fanout_note) =
        hub_metrics::report(Histogram::Fanout, &hub_pages_before, &hub_pages_after);
    let (hub_post, post_note) =
        hub_metrics::report(Histogram::Post, &hub_pages_before, &hub_pages_after);
    let (hub_log_sync, log_sync_note) =
        hub_metrics::report(Histogram::LogSync, &hub_pages_before, &hub_pages_after);
    let mut mismatch_samples = states.samples;
    mismatch_samples.extend(churn_check.samples);
    let mut report = Report {
        scenario: plan.scenario,
        url: hubs.scorekeeper.http.clone(),
        games: plan.games,
        game_events: plan.game_events,
        games_created: rotation.games_created(),
        games_retired: rotation.games_retired(),
        fans: plan.fans,
        subs_per_fan: plan.subs_per_fan,
        target_rate: plan.rate,
        warmup_s: plan.warmup.as_secs_f64(),
        measured_s: measured.as_secs_f64(),
        idle: plan.idle,
        hub: hubs.info.clone(),
        fd_limit,
        clock_ticks_per_s: crate::system::ticks_per_second(),
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
        hub_post_ms: hub_post,
        hub_log_sync_ms: hub_log_sync,
        deliveries: counters.deliveries,
        deliveries_per_s: counters.deliveries as f64 / secs,
        snapshots: counters.snapshots,
        latency_ms: latency,
        send_latency_us: send_latency,
        cross_node_send_latency_us: cross_latency,
        hub_fanout_ms: hub_fanout,
        events_lost: cluster_report.as_ref().map_or(0, |c| c.losses.lost),
        cluster: cluster_report,
        send_unmatched: counters.send_unmatched,
        stalled,
        clock_skew: counters.clock_skew,
        nodes,
        gaps: counters.gaps,
        duplicates: counters.duplicates,
        out_of_order: counters.out_of_order,
        diffs_without_snapshot: counters.diffs_without_snapshot,
        bad_frames: counters.bad_frames,
        states_checked: states.checked,
        state_mismatches: states.mismatches,
        churn_rate: if plan.scenario.churns() {
            plan.churn_rate
        } else {
            0.0
        },
        reference_fans: plan.reference_fans,
        churn_left,
        churn_joined,
        churn_connect_errors,
        churn_checks: churn_check.checked,
        churn_unverified: churn_check.unverified,
        churn_mismatches: churn_check.mismatches,
        caught_up,
        catch_up_s: catch_up.as_secs_f64(),
        first_connect_error,
        first_post_failure: posted.first_failure,
        first_fan_problem,
        mismatch_samples,
        ..Report::default()
    };
    let processes = meter.reports(secs);
    let machine = meter.machine(secs, &processes);
    report.add_costs(processes, machine);
    report.add_rss_series(rss_series);
    if plan.scenario.churns() && !plan.check_state {
        report
            .notes
            .push("--no-state-check: churned fans' states were not checked".into());
    }
    report.notes.extend(kill_note);
    report.notes.extend(
        fanout_note
            .into_iter()
            .chain(post_note)
            .chain(log_sync_note),
    );
    if let Some((mismatches, sample)) = recheck {
        report.state_mismatches_rechecked = Some(mismatches);
        report.notes.push(format!(
            "the hubs read again {RECHECK_AFTER:?} later (fans' states as they ended): \
             {mismatches} mismatches{}",
            sample.map(|s| format!(", e.g. {s}")).unwrap_or_default()
        ));
    }
    if doomed.is_some() {
        report.notes.extend(replicas_note(&hubs.info));
    }
    report.judge();
    Ok(report)
}

/// Every hub of the run once (the scorekeeper, fan nodes and posters), in
/// that order: the hubs whose `/metrics` are read.
fn scraped_hubs(hubs: &Hubs) -> Vec<&HubUrls> {
    let mut all: Vec<&HubUrls> = Vec::new();
    for node in std::iter::once(&hubs.scorekeeper)
        .chain(&hubs.fan_nodes)
        .chain(&hubs.posters)
    {
        if !all.iter().any(|seen| seen.http == node.http) {
            all.push(node);
        }
    }
    all
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
    tasks: Vec<tokio::task::JoinHandle<FanOutcome>>,
    /// The leave signals of churning fans, oldest first (churn only).
    churnable: VecDeque<oneshot::Sender<Leave>>,
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
    async fn finish(self) -> Result<Vec<FanOutcome>> {
        let _ = self.stop.send(true);
        let mut outcomes = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            outcomes.push(task.await.context("a fan task failed")?);
        }
        Ok(outcomes)
    }
}

/// Spawns every fan (and, for churn, one reference fan per game) and waits
/// until each has connected or failed to.
async fn connect_fans(plan: &Plan, shared: &Arc<FanShared>) -> Result<Fans> {
    let started = Instant::now();
    let (stop, stop_rx) = watch::channel(false);
    let (connected_tx, mut connected_rx) = mpsc::channel(1024);
    let total = plan.fans + plan.reference_fans;
    let mut fans = Fans {
        progress: Vec::with_capacity(total),
        tasks: Vec::with_capacity(total),
        churnable: VecDeque::new(),
        stop,
        connected: 0,
        failed: 0,
        first_error: None,
        took: Duration::ZERO,
    };
    let node_count = shared.nodes.len();
    let games = plan.games;
    for index in 0..total {
        let spec = if index < plan.fans {
            let placed = plan
                .scenario
                .place_fan(index, node_count, games, plan.subs_per_fan);
            FanSpec {
                index,
                node: placed.node,
                games: placed
                    .games
                    .iter()
                    .map(|&slot| shared.rotation.current_game(slot))
                    .collect(),
                kind: if plan.scenario.churns() {
                    FanKind::Churning { by_message: false }
                } else {
                    FanKind::Steady
                },
            }
        } else {
            let slot = index - plan.fans;
            FanSpec {
                index,
                node: slot % node_count.max(1),
                games: vec![shared.rotation.current_game(slot)],
                kind: FanKind::Reference,
            }
        };
        let leave = if let FanKind::Churning { .. } = spec.kind {
            let (tx, rx) = oneshot::channel();
            fans.churnable.push_back(tx);
            Some(rx)
        } else {
            None
        };
        // A reference fan of a rotating run follows its slot's games in turn.
        let room = if spec.kind == FanKind::Reference {
            shared.rotation.generations()
        } else {
            spec.games.len()
        };
        let progress = Arc::new(Progress::new(&spec.games, room));
        fans.tasks.push(tokio::spawn(fan::run_fan(
            spec.clone(),
            Arc::clone(shared),
            Arc::clone(&progress),
            stop_rx.clone(),
            leave,
            Some(connected_tx.clone()),
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

/// Where each stalled client connects and what it follows: placed as the fan
/// of the same number is, so they follow the fans' games (hot-game: the one).
fn stalled_specs(plan: &Plan, nodes: usize) -> Vec<FanSpec> {
    (0..plan.stalled)
        .map(|index| {
            let placed = plan
                .scenario
                .place_fan(index, nodes, plan.games, plan.subs_per_fan);
            FanSpec {
                index,
                node: placed.node,
                games: placed.games,
                kind: FanKind::Steady,
            }
        })
        .collect()
}

/// Waits for the first Ctrl-C (turning `interrupted` on); a second one kills
/// the processes the run started and ends this one at once.
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
            launch::kill_all_now();
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

/// The per-node breakdown (fan node order), and the `ts`, send → receive
/// and cross-node send → receive latencies over all nodes. `mismatches[n]` is node `n`'s count of state
/// mismatches; rates are per `secs` of measuring.
fn by_node(
    hubs: &Hubs,
    shared: &FanShared,
    outcomes: &[FanOutcome],
    mismatches: &[u64],
    secs: f64,
) -> Result<(Vec<NodeReport>, Latency, Latency, Latency)> {
    let mut all = latency_histogram()?;
    let mut all_sent = latency_histogram()?;
    let mut all_cross = latency_histogram()?;
    let mut nodes = Vec::with_capacity(hubs.fan_nodes.len());
    for (index, (urls, node)) in hubs.fan_nodes.iter().zip(&shared.nodes).enumerate() {
        // Every fan task has ended, so nobody else holds the locks; a poisoned
        // one only means a fan panicked mid-record.
        let hist = node
            .latency
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let sent_hist = node
            .send_latency
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        all.add(&*hist)
            .context("merging the nodes' latency histograms")?;
        all_sent
            .add(&*sent_hist)
            .context("merging the nodes' send latency histograms")?;
        all_cross
            .add(
                &*node
                    .cross_latency
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            )
            .context("merging the nodes' cross-node latency histograms")?;
        nodes.push(NodeReport {
            url: urls.ws.clone(),
            http: urls.http.clone(),
            scorekeeper: *urls == hubs.scorekeeper,
            latency_ms: Latency::from_micros(&hist),
            send_latency_us: Latency::in_micros(&sent_hist),
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
    Ok((
        nodes,
        Latency::from_micros(&all),
        Latency::in_micros(&all_sent),
        Latency::in_micros(&all_cross),
    ))
}

/// A warning when a failover run cannot get `200`s back on the killed
/// shard: after the promotion its new primary has one replica fewer than
/// before, and `WAIT` needs `redis.min_replicas_acked` of them.
fn replicas_note(info: &HubInfo) -> Option<String> {
    let replicas = info.cluster_replicas?;
    let acked: usize = info
        .env
        .iter()
        .find_map(|kv| kv.strip_prefix("SCOREHUB_REDIS__MIN_REPLICAS_ACKED="))?
        .parse()
        .ok()?;
    (acked >= replicas).then(|| {
        format!(
            "min_replicas_acked = {acked} with {replicas} replica(s) per primary: once a replica \
             is promoted its shard has {} replica(s) left, so its events are answered 503 until \
             one is added; run with --replicas {} to see the shard recover",
            replicas - 1,
            acked + 1
        )
    })
}
