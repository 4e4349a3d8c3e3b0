//! `games.retention`: a finished game (`final` or `cancelled`) is kept that
//! long after the last event that left it finished, then it is gone like a
//! game never created. Single node: the running hub stops serving it and
//! the next start compacts it out of the event log, so replay skips it.
//! Cluster: its Redis keys expire and listing sweeps it out of the games
//! index. Inside retention, retries are duplicates as always.
//!
//! Retentions here are a few seconds; every wait is a bounded poll.

use std::time::Duration;

use reqwest::Method;
use scorehub::config::Config;
use scorehub::testing::{RedisCluster, RedisServer};
use serde_json::{Value, json};

use crate::cluster::redis_conn;
use crate::common::{Api, BinaryHub, Body, TestHub, WAIT, eventually, new_game, score};

const OLD: &str = "nba:2026-11-22-lal-bos";
const LIVE: &str = "nba:2026-11-23-nyk-mia";

/// Long enough to post a retry inside it on a busy machine.
const RETENTION: &str = "3s";
/// How long a test waits for a game to pass its retention.
const EXPIRY: Duration = Duration::from_secs(20);

fn status(event_id: &str, status: &str) -> Value {
    json!({"event_id": event_id, "kind": "status", "status": status})
}

fn log_len(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join("events.log"))
        .expect("the event log exists")
        .len()
}

/// The ids `GET /v1/games` lists.
async fn listed(api: &Api) -> Vec<String> {
    let body = api.get("/v1/games?limit=500").await.ok_json();
    body["games"]
        .as_array()
        .expect("games")
        .iter()
        .map(|g| g["game"].as_str().expect("game id").to_owned())
        .collect()
}

/// `GET /v1/games/{game}/events` with a writer's token.
async fn audit(api: &Api, game: &str) -> crate::common::Reply {
    let token = api.writer(game);
    api.call(
        Method::GET,
        &format!("/v1/games/{game}/events?since=0&limit=500"),
        Some(&token),
        Body::None,
        &[],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_game_past_retention_is_gone_after_a_restart_and_live_games_work() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = [("SCOREHUB_GAMES__RETENTION", RETENTION)];
    let hub = BinaryHub::spawn(dir.path(), &env);
    hub.put_game(OLD).await;
    for i in 1..=40 {
        assert_eq!(
            hub.post_ok(OLD, score(&format!("e{i}"), "home", 1)).await,
            i
        );
    }
    assert_eq!(hub.post_ok(OLD, status("fin", "final")).await, 41);
    // Inside retention a retry is a duplicate with its original seq.
    let r = hub.post_event(OLD, score("e5", "home", 1)).await;
    assert_eq!(
        r.ok_json(),
        json!({"game": OLD, "seq": 5, "duplicate": true})
    );
    hub.put_game(LIVE).await;
    for i in 1..=3 {
        hub.post_ok(LIVE, score(&format!("l{i}"), "away", 2)).await;
    }

    // Past retention the running hub answers as for a game never created.
    eventually("the finished game to be 404", EXPIRY, || async {
        hub.get(&format!("/v1/games/{OLD}")).await.status == 404
    })
    .await;
    hub.get(&format!("/v1/games/{OLD}"))
        .await
        .assert_error(404, "game_not_found");
    audit(&hub, OLD).await.assert_error(404, "game_not_found");
    hub.post_event(OLD, score("e42", "home", 1))
        .await
        .assert_error(404, "game_not_found");
    assert_eq!(listed(&hub).await, [LIVE]);
    // Its records are still in the log, which holds one life per id.
    let msg = hub
        .put_game_with(OLD, new_game("Home", "Away"))
        .await
        .assert_error(409, "game_exists");
    assert!(msg.contains("games.retention"), "{msg}");

    let before = log_len(dir.path());
    hub.sigterm();
    let mut hub = hub;
    assert!(hub.wait_exit(Duration::from_secs(10)).await.success());

    // The restart compacts the log (the finished game held 42 of its 46
    // records) and replays only what is kept.
    let hub = BinaryHub::spawn(dir.path(), &env);
    let after = log_len(dir.path());
    assert!(
        after * 4 < before,
        "the log shrank: {before} -> {after} bytes"
    );
    let stderr = hub.stderr();
    assert!(stderr.contains("compacted the event log"), "{stderr}");
    assert!(!dir.path().join("events.log.compact").exists());
    hub.get(&format!("/v1/games/{OLD}"))
        .await
        .assert_error(404, "game_not_found");
    assert_eq!(listed(&hub).await, [LIVE]);
    let live = hub.get_game(LIVE).await;
    assert_eq!(
        (live["seq"].as_u64(), live["away"]["score"].as_i64()),
        (Some(3), Some(6))
    );
    let r = hub.post_event(LIVE, score("l2", "away", 2)).await;
    assert_eq!(r.ok_json()["duplicate"], true, "idempotency of a kept game");
    assert_eq!(hub.post_ok(LIVE, score("l4", "away", 2)).await, 4);
    let events = audit(&hub, LIVE).await.ok_json();
    assert_eq!(events["events"].as_array().expect("events").len(), 4);

    // Gone from the log, the id can start a new game.
    let r = hub.put_game_with(OLD, new_game("Home", "Away")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(hub.post_ok(OLD, score("e1", "home", 1)).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_game_inside_retention_answers_retries_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut hub = BinaryHub::spawn(dir.path(), &[]);
    hub.put_game(OLD).await;
    hub.post_ok(OLD, score("e1", "home", 3)).await;
    hub.post_ok(OLD, status("fin", "final")).await;
    let before = hub.get_game(OLD).await;
    hub.kill9();

    let hub = BinaryHub::spawn(dir.path(), &[]);
    assert_eq!(hub.get_game(OLD).await, before);
    for (event, seq) in [(score("e1", "home", 3), 1), (status("fin", "final"), 2)] {
        let r = hub.post_event(OLD, event).await;
        assert_eq!(
            r.ok_json(),
            json!({"game": OLD, "seq": seq, "duplicate": true})
        );
    }
    hub.post_event(OLD, score("fin", "home", 1))
        .await
        .assert_error(409, "event_id_conflict");
    assert_eq!(hub.get_game(OLD).await, before, "nothing applied");
}

/// Cluster mode: two nodes over one `redis-server`. Once the finished game's
/// keys have expired (and each node's idle actor has left memory), every
/// node answers 404, listing sweeps the id out of the games index, and the
/// id can start a new game; the live game is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_finished_game_expires_from_redis_and_listing() {
    let redis = RedisServer::start();
    let tweak = |c: &mut Config| {
        c.games.retention = Duration::from_secs(2);
        c.games.idle_unload = Duration::from_millis(200);
    };
    let a = TestHub::start_cluster_with(&redis.url(), tweak).await;
    let b = TestHub::start_cluster_with(&redis.url(), tweak).await;
    a.put_game(OLD).await;
    a.post_ok(OLD, score("e1", "home", 1)).await;
    assert_eq!(b.post_ok(OLD, status("fin", "cancelled")).await, 2);
    a.put_game(LIVE).await;
    b.post_ok(LIVE, score("l1", "away", 1)).await;
    let r = a.post_event(OLD, score("e1", "home", 1)).await;
    assert_eq!(r.ok_json()["duplicate"], true, "a retry inside retention");

    let mut conn = redis_conn(&redis).await;
    let key = format!("sh:{{{OLD}}}:state");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("PTTL");
    assert!(ttl > 0, "the finished game's state key has a TTL: {ttl}");
    for node in [&a, &b] {
        eventually(
            "the finished game to be 404 on every node",
            EXPIRY,
            || async { node.get(&format!("/v1/games/{OLD}")).await.status == 404 },
        )
        .await;
    }
    assert_eq!(listed(&a).await, [LIVE]);
    let score_in = |set: &'static str| {
        let mut conn = conn.clone();
        async move {
            let s: Option<f64> = redis::cmd("ZSCORE")
                .arg(set)
                .arg(OLD)
                .query_async(&mut conn)
                .await
                .expect("ZSCORE");
            s
        }
    };
    assert_eq!(
        score_in("sh:games").await,
        None,
        "swept out of the games index"
    );
    assert_eq!(score_in("sh:expiring").await, None);
    assert_eq!(b.get_game(LIVE).await["seq"], 1);

    let r = b.put_game_with(OLD, new_game("Home", "Away")).await;
    assert_eq!(r.status, 201, "the id is free again: {}", r.text);
    assert_eq!(a.get_game(OLD).await["seq"], 0);
    let mut ids = listed(&b).await;
    ids.sort();
    assert_eq!(ids, [OLD, LIVE]);
}

/// The same over a Redis Cluster, where the games index and the expiring
/// set live on other slots than the game's keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_a_finished_game_expires_and_is_swept() {
    let cluster = RedisCluster::start();
    let seeds = cluster.urls();
    let first = seeds[0].clone();
    let hub = TestHub::start_cluster_with(&first, move |c: &mut Config| {
        c.redis.url = None;
        c.redis.cluster = seeds;
        c.games.retention = Duration::from_secs(2);
        c.games.idle_unload = Duration::from_millis(200);
    })
    .await;
    eventually("the node to be ready", WAIT, || async {
        hub.get("/readyz").await.status == 200
    })
    .await;
    hub.put_game(OLD).await;
    hub.put_game(LIVE).await;
    hub.post_ok(OLD, status("fin", "final")).await;
    hub.post_ok(LIVE, score("l1", "home", 1)).await;
    eventually("the finished game to be 404", EXPIRY, || async {
        hub.get(&format!("/v1/games/{OLD}")).await.status == 404
    })
    .await;
    assert_eq!(listed(&hub).await, [LIVE]);
    let r = hub.put_game_with(OLD, new_game("Home", "Away")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let mut ids = listed(&hub).await;
    ids.sort();
    assert_eq!(ids, [OLD, LIVE]);
}
