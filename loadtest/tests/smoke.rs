//! `loadtest --hub-bin PATH --smoke`: the load test starts the hub itself (and
//! for two nodes a private redis-server), runs its small fixed load, and
//! reports the hub's CPU and memory with every correctness counter at 0 (the
//! one-hub run with two clients that never read, `--stalled 2`; a churn run
//! whose games end after 20 events, `--game-events 20`; three hubs on a
//! 3-shard Redis Cluster, `--scenario cluster`).
//!
//! The hub binary is `HUB_BIN` when set, else the `scorehub` built next to
//! this test's `loadtest` (as `cargo test --workspace` builds it). These tests
//! fail, never skip, when it, redis-server or redis-cli is missing.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use serde_json::Value;

/// The scorehub binary to start.
fn hub_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("HUB_BIN") {
        return PathBuf::from(path);
    }
    let loadtest = PathBuf::from(env!("CARGO_BIN_EXE_loadtest"));
    let hub = loadtest.with_file_name("scorehub");
    assert!(
        hub.is_file(),
        "no scorehub binary at {}: build it first (`cargo build -p scorehub`, or run \
         `cargo test --workspace`), or set HUB_BIN to its path",
        hub.display()
    );
    hub
}

/// Runs the load test with `args` after `--hub-bin <hub> --smoke --json`,
/// with no inherited hub settings in the way.
fn smoke(args: &[&str]) -> (Output, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .arg("--hub-bin")
        .arg(hub_bin())
        .args(["--smoke", "--json"])
        .args(args)
        .env_remove("SCOREHUB_TOKEN")
        .output()
        .expect("the loadtest binary runs");
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); exit {}; stderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output, report)
}

/// Asserts a correct run that measured the hub it started.
fn assert_measured(output: &Output, report: &Value, hubs: usize) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {}; report {report:#}; stderr:\n{stderr}",
        output.status
    );
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["correctness_failures"], 0, "{report:#}");
    assert_eq!(report["hub"]["started"], true);
    assert_eq!(report["hub"]["nodes"], hubs);
    assert!(
        report["deliveries"].as_u64().is_some_and(|d| d > 0),
        "{report:#}"
    );
    let measured_hubs = report["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .filter(|p| p["kind"] == "hub" && p["cpu_s"].is_number())
        .count();
    assert_eq!(measured_hubs, hubs, "{report:#}");
    for key in [
        "hub_cpu_s",
        "hub_rss_idle_bytes",
        "bytes_per_idle_connection",
        "loadtest_cpu_s",
    ] {
        assert!(report[key].is_number(), "{key} missing: {report:#}");
    }
    assert!(
        report["send_latency_us"]["count"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{report:#}"
    );
    // The hubs' own histograms, read from their /metrics at the window's edges.
    for key in ["hub_fanout_ms", "hub_post_ms"] {
        assert!(
            report[key]["count"].as_u64().is_some_and(|n| n > 0),
            "{key}: {report:#}"
        );
        assert!(report[key]["p50_le"].is_number(), "{key}: {report:#}");
    }
    assert!(
        report["notes"].as_array().is_some_and(Vec::is_empty),
        "the hubs did not stop cleanly: {report:#}"
    );
}

#[test]
fn smoke_against_a_hub_it_starts() {
    // Two clients that never read ride along: the fans' counters must stay 0.
    let (output, report) = smoke(&["--stalled", "2"]);
    assert_measured(&output, &report, 1);
    let stalled = &report["stalled"];
    assert_eq!(stalled["asked"], 2, "{report:#}");
    assert_eq!(stalled["connected"], 2, "{report:#}");
    let (disconnected, open) = (stalled["disconnected"].as_u64(), stalled["open"].as_u64());
    assert_eq!(
        disconnected.zip(open).map(|(d, o)| d + o),
        Some(2),
        "each stalled client is either disconnected or open: {report:#}"
    );
    assert_eq!(report["fans_connected"], 30, "stalled clients are not fans");
    let samples = report["hub_rss_samples"].as_array().expect("samples");
    assert!(samples.len() >= 2, "{report:#}");
    assert!(report["hub_rss_max_bytes"].is_number(), "{report:#}");
}

#[test]
fn smoke_with_games_that_end() {
    // 50 events/s over 3 slots, 20 events per game: each slot goes through
    // a few games while fans churn, and every check stays exact.
    let (output, report) = smoke(&["--scenario", "churn", "--game-events", "20"]);
    assert_measured(&output, &report, 1);
    assert_eq!(report["game_events"], 20, "{report:#}");
    let created = report["games_created"].as_u64().expect("games_created");
    let retired = report["games_retired"].as_u64().expect("games_retired");
    assert!(created > 3 && retired > 0, "{report:#}");
    assert!(retired <= created, "{report:#}");
    assert!(
        report["churn_checks"].as_u64().is_some_and(|n| n > 0),
        "{report:#}"
    );
}

#[test]
fn smoke_across_two_hubs_sharing_a_redis_it_starts() {
    let (output, report) = smoke(&["--scenario", "two-nodes"]);
    assert_measured(&output, &report, 2);
    assert_eq!(report["hub"]["redis"], true);
    let redis = report["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .any(|p| p["kind"] == "redis");
    assert!(redis, "{report:#}");
}

#[test]
fn smoke_across_three_hubs_on_a_redis_cluster_it_starts() {
    let (output, report) = smoke(&["--scenario", "cluster"]);
    assert_measured(&output, &report, 3);
    assert_eq!(report["hub"]["cluster_replicas"], 0, "{report:#}");
    let redis = report["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .filter(|p| p["kind"] == "redis" && p["cpu_s"].is_number())
        .count();
    assert_eq!(redis, 3, "one process per primary: {report:#}");
    assert!(
        report["deliveries_per_hub_and_redis_cpu_s"].is_number(),
        "{report:#}"
    );
    assert!(
        report["cross_node_send_latency_us"]["count"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "fans on other hubs than the one posted to: {report:#}"
    );
    let shards = report["cluster"]["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 3, "{report:#}");
    for shard in shards {
        // The smoke's 3 games land on 3 shards.
        assert_eq!(shard["games"], 1, "{report:#}");
        assert!(shard["commands_per_event"].is_number(), "{report:#}");
        assert!(shard["per_event"]["evalsha"].is_number(), "{report:#}");
    }
    assert_eq!(report["events_lost"], 0, "{report:#}");
    assert!(
        report["cluster"]["losses"]["acknowledged"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{report:#}"
    );
}
