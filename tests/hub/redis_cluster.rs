//! Nodes over a real Redis Cluster (`redis.cluster`): 6 `redis-server`
//! processes (3 primaries, 3 replicas, [`RedisCluster`]), 3 hubs, fans on
//! every hub and scorekeepers posting through every hub. Broadcasts use
//! sharded pub/sub (`SPUBLISH` on the game's shard only); slot migration
//! and the death of a primary lose no acknowledged event.

use scorehub::config::Config;
use scorehub::testing::RedisCluster;

use crate::cluster::{assert_saw_each_once, audit_trail, converged, drain, event, watch};
use crate::common::{Api, Fan, FanState, TestHub, WAIT, eventually};

/// Games spread over the shards (their hash tags land on different slots).
const GAMES: [&str; 4] = [
    "nba:2026-11-22-lal-bos",
    "nba:2026-11-22-nyk-mia",
    "nhl:2026-11-22-tor-mtl",
    "mlb:2026-11-22-nyy-bos",
];

/// A hub over the cluster's nodes (all of them as seeds).
async fn node(cluster: &RedisCluster) -> TestHub {
    let seeds = cluster.urls();
    let first = seeds[0].clone();
    TestHub::start_cluster_with(&first, move |c: &mut Config| {
        c.redis.url = None;
        c.redis.cluster = seeds;
    })
    .await
}

/// The primary that owns `game`'s keys and channel.
fn owner(cluster: &RedisCluster, game: &str) -> u16 {
    cluster.primary_of_slot(RedisCluster::slot_of(format!("{{{game}}}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_a_redis_cluster_share_every_game_through_sharded_pubsub() {
    let cluster = RedisCluster::start();
    let nodes = [
        node(&cluster).await,
        node(&cluster).await,
        node(&cluster).await,
    ];
    for (i, n) in nodes.iter().enumerate() {
        eventually(&format!("node {i} ready"), WAIT, || async {
            n.get("/readyz").await.status == 200
        })
        .await;
    }
    for (i, game) in GAMES.iter().enumerate() {
        nodes[i % 3].put_game(game).await;
    }
    let owners: Vec<u16> = GAMES.iter().map(|g| owner(&cluster, g)).collect();
    assert!(
        owners
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            >= 2,
        "the games live on at least two shards: {owners:?}"
    );
    let mut fans = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for game in GAMES {
            let (fan, state) = watch(n, game).await;
            fans.push((i, game, fan, state));
        }
    }
    let before: Vec<_> = cluster
        .primaries()
        .into_iter()
        .map(|p| (p, cluster.commandstats(p)))
        .collect();

    const N: u64 = 12;
    for i in 1..=N {
        for (g, game) in GAMES.iter().enumerate() {
            let through = &nodes[(i as usize + g) % 3];
            assert_eq!(through.post_ok(game, event(i)).await, i, "{game} event {i}");
        }
    }
    for (i, game, fan, state) in &mut fans {
        state.follow(fan, game, N, WAIT).await;
        drain(fan, state).await;
        assert_saw_each_once(state, game, 0, N, &format!("the fan of {game} on node {i}"));
    }
    let apis: Vec<(&str, &Api)> = vec![("0", &nodes[0]), ("1", &nodes[1]), ("2", &nodes[2])];
    for game in GAMES {
        let expected = converged(&apis, game, N).await;
        for (i, g, _, state) in &fans {
            if *g == game {
                assert_eq!(state.state(game), Some(&expected), "fan on node {i}");
            }
        }
    }
    // Each game's broadcasts (one SPUBLISH per event, from its commit
    // script) ran on its own shard only: no classic PUBLISH anywhere.
    for (port, stats) in before {
        let after = cluster.commandstats(port);
        let count =
            |m: &std::collections::HashMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
        let published = count(&after, "spublish") - count(&stats, "spublish");
        let owned = owners.iter().filter(|&&o| o == port).count() as u64;
        assert_eq!(
            published,
            owned * N,
            "SPUBLISH calls on primary {port} (owner of {owned} of the games)"
        );
        assert_eq!(count(&after, "publish"), 0, "no PUBLISH on {port}");
    }
}

/// Posts event `i` to `game` through `node` until it is answered `200`
/// (resending the same `event_id`, as a scorekeeper does through a
/// failover), and returns its seq.
async fn post_until_ok(node: &TestHub, game: &str, i: u64) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = node.post_event(game, event(i)).await;
        if r.status == 200 {
            let body = r.ok_json();
            return body["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("no seq: {body}"));
        }
        assert!(
            r.status == 503 && std::time::Instant::now() < deadline,
            "event {i} of {game}: {} {}",
            r.status,
            r.text
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_live_games_slot_to_another_shard_loses_nothing() {
    let cluster = std::sync::Arc::new(RedisCluster::start());
    let nodes = [
        node(&cluster).await,
        node(&cluster).await,
        node(&cluster).await,
    ];
    let game = GAMES[0];
    nodes[0].put_game(game).await;
    let mut fans = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let (fan, state) = watch(n, game).await;
        fans.push((i, fan, state));
    }
    let slot = RedisCluster::slot_of(format!("{{{game}}}"));
    let from = cluster.primary_of_slot(slot);
    let to = cluster
        .primaries()
        .into_iter()
        .find(|&p| p != from)
        .expect("another primary");

    const N: u64 = 40;
    for i in 1..=10 {
        assert_eq!(post_until_ok(&nodes[i as usize % 3], game, i).await, i);
    }
    // The slot moves while events keep coming through every node.
    let mover = {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || cluster.migrate_slot(slot, to))
    };
    for i in 11..=N {
        assert_eq!(post_until_ok(&nodes[i as usize % 3], game, i).await, i);
    }
    mover.await.expect("the slot moved");
    assert_eq!(
        cluster.primary_of_slot(slot),
        to,
        "the game lives on {to} now"
    );
    // And after the move, on the new shard.
    for i in N + 1..=N + 5 {
        assert_eq!(post_until_ok(&nodes[i as usize % 3], game, i).await, i);
    }
    for (i, fan, state) in &mut fans {
        state.follow(fan, game, N + 5, WAIT).await;
        drain(fan, state).await;
        assert_saw_each_once(state, game, 0, N + 5, &format!("the fan on node {i}"));
    }
    let apis: Vec<(&str, &Api)> = vec![("0", &nodes[0]), ("1", &nodes[1]), ("2", &nodes[2])];
    let expected = converged(&apis, game, N + 5).await;
    for (i, _, state) in &fans {
        assert_eq!(state.state(game), Some(&expected), "fan on node {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_is_replaced_and_no_acknowledged_event_is_lost() {
    // Two replicas per primary: after the failover the promoted one still
    // has a replica to confirm events (min_replicas_acked = 1).
    let mut cluster = RedisCluster::start_with(3, 2);
    let seeds = cluster.urls();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let seeds = seeds.clone();
        let first = seeds[0].clone();
        nodes.push(
            TestHub::start_cluster_with(&first, move |c: &mut Config| {
                c.redis.url = None;
                c.redis.cluster = seeds;
                c.redis.min_replicas_acked = 1;
                c.redis.replica_ack_timeout = std::time::Duration::from_millis(1000);
            })
            .await,
        );
    }
    let game = GAMES[0];
    let victim = owner(&cluster, game);
    // Seeds of the hubs must not all be on the victim: they are all nodes.
    nodes[0].put_game(game).await;
    let mut fans = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let (fan, state) = watch(n, game).await;
        fans.push((i, fan, state));
    }
    const N: u64 = 30;
    for i in 1..=10 {
        assert_eq!(post_until_ok(&nodes[i as usize % 3], game, i).await, i);
    }
    cluster.kill9(victim);
    let killed = std::time::Instant::now();
    let mut first_ack = None;
    for i in 11..=N {
        assert_eq!(post_until_ok(&nodes[i as usize % 3], game, i).await, i);
        first_ack.get_or_insert_with(|| killed.elapsed());
    }
    let promoted = tokio::task::block_in_place(|| cluster.wait_for_failover(victim));
    assert_eq!(owner(&cluster, game), promoted);
    eprintln!("primary {victim} killed: first event acknowledged again after {first_ack:?}");
    for (i, fan, state) in &mut fans {
        state.follow(fan, game, N, WAIT).await;
        drain(fan, state).await;
        assert_saw_each_once(state, game, 0, N, &format!("the fan on node {i}"));
    }
    let apis: Vec<(&str, &Api)> = vec![("0", &nodes[0]), ("1", &nodes[1]), ("2", &nodes[2])];
    let expected = converged(&apis, game, N).await;
    for (i, _, state) in &fans {
        assert_eq!(state.state(game), Some(&expected), "fan on node {i}");
    }
    // The audit trail, now read from the promoted replica, holds every
    // acknowledged event, each once.
    let trail = audit_trail(&nodes[2], game).await;
    let seqs: Vec<u64> = trail.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>(), "{trail:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_league_fan_sees_new_games_of_the_league_on_every_shard() {
    let cluster = RedisCluster::start();
    let a = node(&cluster).await;
    let b = node(&cluster).await;
    // Games of one league whose slots are on at least two shards.
    let games: Vec<String> = (0..12).map(|i| format!("nba:game-{i}")).collect();
    let shards: std::collections::BTreeSet<u16> =
        games.iter().map(|g| owner(&cluster, g)).collect();
    assert!(shards.len() >= 2, "the games span shards: {shards:?}");

    let mut fan = Fan::connect(&b.ws_url("leagues=nba")).await;
    let mut state = FanState::default();
    assert!(fan.barrier().await.is_empty(), "no game yet");
    for (i, game) in games.iter().enumerate() {
        let through = if i % 2 == 0 { &a } else { &b };
        through.put_game(game).await;
    }
    for (i, game) in games.iter().enumerate() {
        let through = if i % 2 == 0 { &b } else { &a };
        assert_eq!(through.post_ok(game, event(1)).await, 1);
    }
    for game in &games {
        state.follow(&mut fan, game, 1, WAIT).await;
    }
    drain(&mut fan, &mut state).await;
    for game in &games {
        assert_saw_each_once(&state, game, 0, 1, "the league fan on B");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_follow_a_sentinel_failover_and_lose_no_acknowledged_event() {
    use scorehub::testing::RedisSentinels;
    let mut sentinels = RedisSentinels::start("scores");
    let urls = sentinels.sentinel_urls();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let urls = urls.clone();
        let first = urls[0].clone();
        nodes.push(
            TestHub::start_cluster_with(&first, move |c: &mut Config| {
                c.redis.url = None;
                c.redis.sentinels = urls;
                c.redis.sentinel_master = "scores".into();
                c.redis.min_replicas_acked = 1;
                c.redis.replica_ack_timeout = std::time::Duration::from_millis(1000);
            })
            .await,
        );
    }
    for (i, n) in nodes.iter().enumerate() {
        eventually(&format!("node {i} ready"), WAIT, || async {
            n.get("/readyz").await.status == 200
        })
        .await;
    }
    let game = GAMES[0];
    nodes[0].put_game(game).await;
    let mut fans = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let (fan, state) = watch(n, game).await;
        fans.push((i, fan, state));
    }
    const N: u64 = 20;
    for i in 1..=8 {
        assert_eq!(post_until_ok(&nodes[i as usize % 2], game, i).await, i);
    }
    let old = sentinels.kill9_primary();
    let killed = std::time::Instant::now();
    let mut first_ack = None;
    for i in 9..=N {
        assert_eq!(post_until_ok(&nodes[i as usize % 2], game, i).await, i);
        first_ack.get_or_insert_with(|| killed.elapsed());
    }
    let new = tokio::task::block_in_place(|| sentinels.wait_for_new_primary(old));
    assert_ne!(new, old);
    eprintln!(
        "primary {old} killed: first event acknowledged again after {first_ack:?} (new primary {new})"
    );
    for (i, fan, state) in &mut fans {
        state.follow(fan, game, N, WAIT).await;
        drain(fan, state).await;
        assert_saw_each_once(state, game, 0, N, &format!("the fan on node {i}"));
    }
    let apis: Vec<(&str, &Api)> = vec![("0", &nodes[0]), ("1", &nodes[1])];
    let expected = converged(&apis, game, N).await;
    for (i, _, state) in &fans {
        assert_eq!(state.state(game), Some(&expected), "fan on node {i}");
    }
    let trail = audit_trail(&nodes[1], game).await;
    let seqs: Vec<u64> = trail.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>(), "{trail:?}");
}
