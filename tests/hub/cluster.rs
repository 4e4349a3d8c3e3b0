//! Several nodes over one Redis (contract §5): one sequence per game whichever
//! node a scorekeeper posts to, idempotency across nodes, fans on any node,
//! Redis outages, node restarts, league subscriptions, and the Redis commands
//! an event costs.
//!
//! Every test starts its own real `redis-server` (through
//! [`RedisServer`], which fails loudly when the binary is missing) and two or
//! three hubs over it: in-process ones, or the real binary where a test reads
//! per-process metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use scorehub::auth::Scope;
use scorehub::testing::RedisServer;
use serde_json::{Value, json};

use crate::common::{
    Api, BinaryHub, Body, Fan, FanState, Reply, TestHub, WAIT, eventually, new_game, run_cli,
    sample, score,
};

const G: &str = "nba:2026-11-22-lal-bos";

/// How long a node may take to notice that Redis died or came back (health
/// pings every second; reconnects back off up to a few seconds).
pub(crate) const RECOVERY: Duration = Duration::from_secs(30);

/// A mix of every event kind, deterministic in `i`.
pub(crate) fn event(i: u64) -> Value {
    let id = format!("c{i}");
    match i % 5 {
        0 => score(&id, "home", (i % 3 + 1) as i64),
        1 => score(&id, "away", 2),
        2 => {
            json!({"event_id": id, "kind": "clock", "period": i / 5 + 1, "ms": 600_000 - i * 1000, "running": i.is_multiple_of(2)})
        }
        3 => {
            json!({"event_id": id, "kind": "status", "status": if i % 4 == 3 { "paused" } else { "live" }})
        }
        _ => {
            json!({"event_id": id, "kind": "set", "patch": {"extra": {"possession": if i.is_multiple_of(2) { "home" } else { "away" }, "ratio": i as f64 / 4.0}}})
        }
    }
}

/// `event` with a `game` key, as an item of `POST /v1/events`.
fn batch_item(game: &str, event: &Value) -> Value {
    let mut item = event.clone();
    item["game"] = json!(game);
    item
}

/// Connects a fan to `node` subscribed to `game`; applies its first frame,
/// which must be the snapshot.
pub(crate) async fn watch(node: &Api, game: &str) -> (Fan, FanState) {
    let mut fan = Fan::connect(&node.ws_url(&format!("games={game}"))).await;
    let mut state = FanState::default();
    let f = fan.next_frame(WAIT).await;
    assert_eq!(
        (f.t.as_str(), f.g.as_deref()),
        ("s", Some(game)),
        "the first frame of a subscription is the snapshot: {f:?}"
    );
    state.apply(&f);
    (fan, state)
}

/// Asserts the fan saw `game` as one snapshot at `from`, then every diff up
/// to `to` exactly once, in order, and nothing else of that game.
pub(crate) fn assert_saw_each_once(state: &FanState, game: &str, from: u64, to: u64, who: &str) {
    let got: Vec<(&str, u64)> = state
        .log
        .iter()
        .filter(|(_, g, _)| g == game)
        .map(|(t, _, q)| (t.as_str(), *q))
        .collect();
    let want: Vec<(&str, u64)> = std::iter::once(("s", from))
        .chain((from + 1..=to).map(|q| ("d", q)))
        .collect();
    assert_eq!(
        got, want,
        "{who}: frames of {game} (t, q) should be one snapshot at {from} then every diff to {to} once"
    );
}

/// Reads every frame pending before a ping's pong into `state`.
pub(crate) async fn drain(fan: &mut Fan, state: &mut FanState) {
    for f in fan.barrier().await {
        state.apply(&f);
    }
}

/// `GET /v1/games/{id}/events` through `node` with a reader token.
pub(crate) async fn audit_trail(node: &Api, game: &str) -> Vec<Value> {
    let token = node.token(&[game], Scope::Scorekeeper);
    let r = node
        .call(
            Method::GET,
            &format!("/v1/games/{game}/events?since=0&limit=500"),
            Some(&token),
            Body::None,
            &[],
        )
        .await;
    let body = r.ok_json();
    body["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events array: {body}"))
        .clone()
}

/// Waits until every node serves `game` at `seq` (a node applies what
/// another node accepted a moment later), asserts they all serve the same
/// state, and returns it.
pub(crate) async fn converged(nodes: &[(&str, &Api)], game: &str, seq: u64) -> Value {
    let mut states: Vec<(&str, Value)> = Vec::new();
    for &(name, node) in nodes {
        eventually(
            &format!("{game} at seq {seq} on {name}"),
            RECOVERY,
            || async move { node.get_game(game).await["seq"].as_u64() == Some(seq) },
        )
        .await;
        states.push((name, node.get_game(game).await));
    }
    let (first_name, first) = &states[0];
    for (name, state) in &states[1..] {
        assert_eq!(
            state, first,
            "GET {game} on {name} agrees with GET on {first_name}"
        );
    }
    first.clone()
}

/// `scorehub_redis_up` of `node`.
async fn redis_up(node: &Api) -> Option<f64> {
    let r = node.get("/metrics").await;
    assert_eq!(r.status, 200, "/metrics: {}", r.text);
    sample(&r.text, "scorehub_redis_up", "")
}

/// A call made while Redis may be down must still answer (with an error).
async fn bounded(what: &str, call: impl Future<Output = Reply>) -> Reply {
    tokio::time::timeout(RECOVERY, call)
        .await
        .unwrap_or_else(|_| panic!("{what} did not answer within {RECOVERY:?}"))
}

/// A plain connection to the test's Redis (for `INFO` and `CONFIG`).
pub(crate) async fn redis_conn(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .expect("the fixture's URL parses")
        .get_multiplexed_async_connection()
        .await
        .expect("connecting to the test's redis-server")
}

/// `calls` per command from `INFO commandstats` (`cmdstat_evalsha:calls=3,...`).
async fn commandstats(conn: &mut redis::aio::MultiplexedConnection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO commandstats");
    info.lines()
        .filter_map(|line| {
            let (name, fields) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = fields
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

async fn reset_stats(conn: &mut redis::aio::MultiplexedConnection) {
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(conn)
        .await
        .expect("CONFIG RESETSTAT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_is_shared_and_sequenced_across_three_nodes() {
    let redis = RedisServer::start();
    let a = TestHub::start_cluster(&redis.url()).await;
    let b = TestHub::start_cluster(&redis.url()).await;
    let c = TestHub::start_cluster(&redis.url()).await;
    let nodes: [(&str, &TestHub); 3] = [("A", &a), ("B", &b), ("C", &c)];

    a.put_game(G).await;
    let created = a.get_game(G).await;
    assert_eq!(created["seq"], 0, "{created}");
    for (name, node) in nodes {
        assert_eq!(
            node.get_game(G).await,
            created,
            "a game created on A is visible on {name}"
        );
    }
    let again = b.put_game_with(G, new_game("Home", "Away")).await;
    assert_eq!(
        again.status, 200,
        "the same PUT through B is idempotent: {}",
        again.text
    );
    let listed = c.get("/v1/games?league=nba").await.ok_json();
    assert!(
        listed["games"]
            .as_array()
            .is_some_and(|gs| gs.iter().any(|g| g["game"] == G)),
        "C lists the game created on A: {listed}"
    );

    let mut fans = Vec::new();
    for (name, node) in nodes {
        let (fan, state) = watch(node, G).await;
        assert_eq!(state.seq(G), Some(0), "{name}");
        fans.push((name, fan, state));
    }

    const N: u64 = 30;
    for i in 1..=N {
        let (name, node) = nodes[(i % 3) as usize];
        let seq = node.post_ok(G, event(i)).await;
        assert_eq!(seq, i, "event {i} posted through {name}");
    }

    for (name, fan, state) in &mut fans {
        state.follow(fan, G, N, WAIT).await;
        drain(fan, state).await;
        assert_saw_each_once(state, G, 0, N, &format!("the fan on {name}"));
    }
    let all: [(&str, &Api); 3] = [("A", &a), ("B", &b), ("C", &c)];
    let expected = converged(&all, G, N).await;
    for (name, node) in nodes {
        let r = node.get(&format!("/v1/games/{G}")).await;
        assert_eq!(
            r.header("etag").as_deref(),
            Some(format!("\"{N}\"").as_str()),
            "ETag on {name}"
        );
    }
    for (name, _, state) in &fans {
        assert_eq!(
            state.state(G),
            Some(&expected),
            "the fan on {name} ends in the state GET serves"
        );
    }

    let trail = audit_trail(&c, G).await;
    let seqs: Vec<u64> = trail.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(
        seqs,
        (1..=N).collect::<Vec<_>>(),
        "the audit trail through C: {trail:?}"
    );
    for e in &trail {
        let seq = e["seq"].as_u64().expect("seq");
        assert_eq!(e["event_id"], format!("c{seq}"), "{e}");
        assert_eq!(e["by"], "tester", "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_through_the_other_node_is_a_duplicate_and_broadcasts_nothing() {
    let redis = RedisServer::start();
    let a = TestHub::start_cluster(&redis.url()).await;
    let b = TestHub::start_cluster(&redis.url()).await;
    a.put_game(G).await;
    let (mut fan_a, mut state_a) = watch(&a, G).await;
    let (mut fan_b, mut state_b) = watch(&b, G).await;

    let e1 = score("e1", "home", 2);
    let e2 = score("e2", "away", 3);
    assert_eq!(a.post_ok(G, e1.clone()).await, 1);
    assert_eq!(b.post_ok(G, e2.clone()).await, 2);
    state_a.follow(&mut fan_a, G, 2, WAIT).await;
    state_b.follow(&mut fan_b, G, 2, WAIT).await;

    // Retries through the node that did not take the original.
    for (name, node, event, seq) in [("B", &b, &e1, 1), ("A", &a, &e2, 2)] {
        let body = node.post_event(G, event.clone()).await.ok_json();
        assert_eq!(
            body,
            json!({"game": G, "seq": seq, "duplicate": true}),
            "retry of {} through {name}",
            event["event_id"]
        );
    }
    let token = b.writer(G);
    let batch = b
        .call(
            Method::POST,
            "/v1/events",
            Some(&token),
            Body::Json(json!({"events": [batch_item(G, &e1), batch_item(G, &e2)]})),
            &[],
        )
        .await
        .ok_json();
    assert_eq!(
        batch["results"],
        json!([
            {"game": G, "seq": 1, "duplicate": true},
            {"game": G, "seq": 2, "duplicate": true},
        ]),
        "a batch retry through B: {batch}"
    );

    // The same ids with other bodies, through the other node.
    b.post_event(G, score("e1", "home", 3))
        .await
        .assert_error(409, "event_id_conflict");
    a.post_event(G, score("e2", "home", 3))
        .await
        .assert_error(409, "event_id_conflict");

    let both: [(&str, &Api); 2] = [("A", &a), ("B", &b)];
    let s = converged(&both, G, 2).await;
    assert_eq!(
        json!({"home": s["home"]["score"], "away": s["away"]["score"]}),
        json!({"home": 2, "away": 3}),
        "retries and conflicts changed nothing: {s}"
    );

    // Nothing was broadcast: nothing is pending now, and the next frame
    // either fan gets is the diff of the next new event.
    for (name, fan) in [("A", &mut fan_a), ("B", &mut fan_b)] {
        let extra = fan.barrier().await;
        assert!(
            extra.is_empty(),
            "retries or conflicts sent frames to the fan on {name}: {extra:?}"
        );
    }
    assert_eq!(b.post_ok(G, score("e3", "home", 1)).await, 3);
    for (name, fan, state) in [
        ("A", &mut fan_a, &mut state_a),
        ("B", &mut fan_b, &mut state_b),
    ] {
        let f = fan.next_frame(WAIT).await;
        assert_eq!(
            (f.t.as_str(), f.q),
            ("d", Some(3)),
            "the fan on {name} gets exactly the next event's diff: {f:?}"
        );
        state.apply(&f);
        drain(fan, state).await;
        assert_saw_each_once(state, G, 0, 3, &format!("the fan on {name}"));
    }
    let expected = converged(&both, G, 3).await;
    assert_eq!(state_a.state(G), Some(&expected), "the fan on A");
    assert_eq!(state_b.state(G), Some(&expected), "the fan on B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_scorekeepers_through_two_nodes_get_one_gapless_sequence() {
    const WRITERS: u64 = 4;
    const EACH: u64 = 50;
    const TOTAL: u64 = WRITERS * EACH;

    let redis = RedisServer::start();
    let a = Arc::new(TestHub::start_cluster(&redis.url()).await);
    let b = Arc::new(TestHub::start_cluster(&redis.url()).await);
    let mut conn = redis_conn(&redis).await;
    a.put_game(G).await;

    // The fans read while the events arrive, so none falls behind.
    let mut readers = Vec::new();
    for (name, node) in [("A", &a), ("B", &b)] {
        let (mut fan, mut state) = watch(node, G).await;
        readers.push((
            name,
            tokio::spawn(async move {
                state
                    .follow(&mut fan, G, TOTAL, Duration::from_secs(120))
                    .await;
                drain(&mut fan, &mut state).await;
                state
            }),
        ));
    }

    reset_stats(&mut conn).await;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let nodes = [("A", Arc::clone(&a)), ("B", Arc::clone(&b))];
        writers.push(tokio::spawn(async move {
            let team = if w % 2 == 0 { "home" } else { "away" };
            let mut seqs = Vec::new();
            for i in 0..EACH {
                let (name, node) = &nodes[((w + i) % 2) as usize];
                let id = format!("w{w}-{i}");
                let r = node.post_event(G, score(&id, team, 1)).await;
                assert_eq!(
                    r.status, 200,
                    "scorekeeper {w}, event {id} through {name}: {}",
                    r.text
                );
                let body = r.json();
                assert_eq!(body["duplicate"], false, "{id} through {name}: {body}");
                seqs.push(
                    body["seq"]
                        .as_u64()
                        .unwrap_or_else(|| panic!("no seq: {body}")),
                );
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for (w, writer) in writers.into_iter().enumerate() {
        let seqs = writer.await.expect("a scorekeeper task failed");
        assert!(
            seqs.windows(2).all(|p| p[0] < p[1]),
            "scorekeeper {w} posted in order, so its seqs increase: {seqs:?}"
        );
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=TOTAL).collect::<Vec<_>>(),
        "the returned seqs are exactly 1..={TOTAL}"
    );

    let both: [(&str, &Api); 2] = [("A", &a), ("B", &b)];
    let expected = converged(&both, G, TOTAL).await;
    assert_eq!(expected["home"]["score"], TOTAL / 2, "{expected}");
    assert_eq!(expected["away"]["score"], TOTAL / 2, "{expected}");
    for (name, reader) in readers {
        let state = reader.await.expect("a fan task failed");
        assert_saw_each_once(&state, G, 0, TOTAL, &format!("the fan on {name}"));
        assert_eq!(state.state(G), Some(&expected), "the fan on {name}");
    }
    // Lost races between the nodes are retried, but only applied events
    // are published.
    let stats = commandstats(&mut conn).await;
    println!("Redis commands for {TOTAL} contended events: {stats:?}");
    assert_eq!(
        stats.get("publish").copied(),
        Some(TOTAL),
        "one PUBLISH per applied event under contention; commandstats: {stats:?}"
    );
}

/// Runs on the real binary: each node has its own `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_makes_nodes_unready_and_they_recover_by_themselves() {
    let mut redis = RedisServer::start_with_aof();
    let dir_a = tempfile::tempdir().expect("temp dir");
    let dir_b = tempfile::tempdir().expect("temp dir");
    let a = BinaryHub::spawn_cluster(dir_a.path(), &redis.url());
    let b = BinaryHub::spawn_cluster(dir_b.path(), &redis.url());
    let nodes: [(&str, &BinaryHub); 2] = [("A", &a), ("B", &b)];
    for (name, node) in nodes {
        eventually(&format!("{name} ready"), RECOVERY, || async {
            node.get("/readyz").await.status == 200
        })
        .await;
        eventually(
            &format!("scorehub_redis_up 1 on {name}"),
            RECOVERY,
            || async { redis_up(node).await == Some(1.0) },
        )
        .await;
    }

    a.put_game(G).await;
    let (mut fan_a, mut state_a) = watch(&a, G).await;
    let (mut fan_b, mut state_b) = watch(&b, G).await;
    assert_eq!(b.post_ok(G, score("before", "home", 2)).await, 1);
    state_a.follow(&mut fan_a, G, 1, WAIT).await;
    state_b.follow(&mut fan_b, G, 1, WAIT).await;

    redis.kill9();

    for (name, node) in nodes {
        eventually(&format!("{name} not ready"), RECOVERY, || async {
            bounded("/readyz", node.get("/readyz")).await.status == 503
        })
        .await;
        let r = bounded("/readyz", node.get("/readyz")).await;
        assert_eq!(r.status, 503, "{name}: {}", r.text);
        let body = r.json();
        assert_eq!(body["status"], "not_ready", "{name}: {body}");
        let reason = body["reason"].as_str().unwrap_or_default();
        assert!(
            reason.to_ascii_lowercase().contains("redis"),
            "{name}: /readyz should give the reason (Redis): {body}"
        );
        eventually(
            &format!("scorehub_redis_up 0 on {name}"),
            RECOVERY,
            || async { redis_up(node).await == Some(0.0) },
        )
        .await;
        let r = bounded("a POST", node.post_event(G, score("during", "away", 5))).await;
        r.assert_error(503, "not_ready");
        let r = bounded(
            "a PUT",
            node.put_game_with("nba:during", new_game("H", "A")),
        )
        .await;
        r.assert_error(503, "not_ready");
    }

    // The fans stay connected through the outage.
    drain(&mut fan_a, &mut state_a).await;
    drain(&mut fan_b, &mut state_b).await;

    redis.restart();

    for (name, node) in nodes {
        eventually(&format!("{name} ready again"), RECOVERY, || async {
            bounded("/readyz", node.get("/readyz")).await.status == 200
        })
        .await;
        eventually(
            &format!("scorehub_redis_up 1 on {name}"),
            RECOVERY,
            || async { redis_up(node).await == Some(1.0) },
        )
        .await;
    }

    // The refused event left nothing behind: it applies now, as new, with
    // the next seq; the acknowledged one survived Redis' restart.
    assert_eq!(a.post_ok(G, score("during", "away", 5)).await, 2);
    let dup = b.post_event(G, score("before", "home", 2)).await.ok_json();
    assert_eq!(dup, json!({"game": G, "seq": 1, "duplicate": true}));
    assert_eq!(b.post_ok(G, score("after", "home", 1)).await, 3);
    let r = a.get("/v1/games/nba:during").await;
    assert_eq!(
        r.status, 404,
        "the PUT refused during the outage created nothing: {}",
        r.text
    );

    let both: [(&str, &Api); 2] = [("A", &a), ("B", &b)];
    let expected = converged(&both, G, 3).await;
    assert_eq!(
        (
            expected["seq"].as_u64(),
            expected["home"]["score"].as_u64(),
            expected["away"]["score"].as_u64()
        ),
        (Some(3), Some(3), Some(5)),
        "{expected}"
    );
    for (name, fan, state) in [
        ("A", &mut fan_a, &mut state_a),
        ("B", &mut fan_b, &mut state_b),
    ] {
        // A repair may send a fresh snapshot; FanState checks it is exact.
        state.follow(fan, G, 3, RECOVERY).await;
        drain(fan, state).await;
        assert_eq!(
            state.state(G),
            Some(&expected),
            "the fan on {name} after the outage"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_serves_the_state_from_redis_and_continues_the_sequence() {
    let redis = RedisServer::start();
    let a = TestHub::start_cluster(&redis.url()).await;
    let b = TestHub::start_cluster(&redis.url()).await;
    a.put_game(G).await;
    for i in 1..=5 {
        let node = if i % 2 == 1 { &a } else { &b };
        assert_eq!(node.post_ok(G, event(i)).await, i);
    }
    let before = a.get_game(G).await;
    let (mut fan_b, mut state_b) = watch(&b, G).await;
    assert_eq!(state_b.state(G), Some(&before));

    // Restart A, the node that created the game and took events.
    a.shutdown().await;
    let a = TestHub::start_cluster(&redis.url()).await;
    assert_eq!(
        a.get_game(G).await,
        before,
        "a restarted node serves the state from Redis"
    );
    let dup = a.post_event(G, event(1)).await.ok_json();
    assert_eq!(
        dup,
        json!({"game": G, "seq": 1, "duplicate": true}),
        "idempotency survives a node restart"
    );
    assert_eq!(a.post_ok(G, event(6)).await, 6);
    state_b.follow(&mut fan_b, G, 6, WAIT).await;
    drain(&mut fan_b, &mut state_b).await;
    assert_saw_each_once(&state_b, G, 5, 6, "the fan on B");
    fan_b.close().await;

    // Restart B too: no node that saw the events is left.
    b.shutdown().await;
    let b = TestHub::start_cluster(&redis.url()).await;
    let now = a.get_game(G).await;
    assert_eq!(now["seq"], 6, "{now}");
    assert_eq!(b.get_game(G).await, now, "the new B serves the same state");
    let (mut fan, mut state) = watch(&b, G).await;
    assert_eq!(state.state(G), Some(&now), "the snapshot on the new B");
    assert_eq!(b.post_ok(G, event(7)).await, 7);
    state.follow(&mut fan, G, 7, WAIT).await;
    assert_eq!(state.state(G), Some(&b.get_game(G).await));
    let seqs: Vec<u64> = audit_trail(&b, G)
        .await
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>(), "the audit trail on B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_league_fan_on_one_node_sees_games_created_through_another() {
    let redis = RedisServer::start();
    let a = TestHub::start_cluster(&redis.url()).await;
    let b = TestHub::start_cluster(&redis.url()).await;
    let old = "nba:old";
    let new = "nba:new";
    let other = "nhl:other";
    a.put_game(old).await;
    assert_eq!(a.post_ok(old, score("o1", "home", 1)).await, 1);

    let mut fan = Fan::connect(&b.ws_url("leagues=nba")).await;
    let mut state = FanState::default();
    let f = fan.next_frame(WAIT).await;
    assert_eq!(
        (f.t.as_str(), f.g.as_deref(), f.q),
        ("s", Some(old), Some(1)),
        "the league's existing game, created on A: {f:?}"
    );
    state.apply(&f);
    let early = fan.barrier().await;
    assert!(early.is_empty(), "only nba:old exists: {early:?}");

    a.put_game(new).await;
    a.put_game(other).await;
    let f = fan.next_frame(WAIT).await;
    assert_eq!(
        (f.t.as_str(), f.g.as_deref(), f.q),
        ("s", Some(new), Some(0)),
        "a snapshot of the game created on A: {f:?}"
    );
    state.apply(&f);

    assert_eq!(a.post_ok(new, score("n1", "away", 2)).await, 1);
    assert_eq!(b.post_ok(new, score("n2", "home", 3)).await, 2);
    assert_eq!(a.post_ok(old, score("o2", "away", 1)).await, 2);
    assert_eq!(a.post_ok(other, score("x1", "home", 1)).await, 1);
    state.follow(&mut fan, new, 2, WAIT).await;
    state.follow(&mut fan, old, 2, WAIT).await;
    drain(&mut fan, &mut state).await;

    assert_saw_each_once(&state, new, 0, 2, "the league fan on B");
    assert_saw_each_once(&state, old, 1, 2, "the league fan on B");
    assert!(
        state.log.iter().all(|(_, g, _)| g.starts_with("nba:")),
        "frames of another league: {:?}",
        state.log
    );
    let both: [(&str, &Api); 2] = [("A", &a), ("B", &b)];
    for game in [old, new] {
        let expected = converged(&both, game, 2).await;
        assert_eq!(state.state(game), Some(&expected), "{game}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_costs_one_publish() {
    let redis = RedisServer::start();
    let a = TestHub::start_cluster(&redis.url()).await;
    let b = TestHub::start_cluster(&redis.url()).await;
    let mut conn = redis_conn(&redis).await;
    a.put_game(G).await;
    let (mut fan_a, mut state_a) = watch(&a, G).await;
    let (mut fan_b, mut state_b) = watch(&b, G).await;

    // Creating a game: one league notification.
    reset_stats(&mut conn).await;
    b.put_game("nba:second").await;
    let created = commandstats(&mut conn).await;
    println!("Redis commands for creating one game: {created:?}");
    assert_eq!(
        created.get("publish").copied(),
        Some(1),
        "creating a game publishes one league notification; commandstats: {created:?}"
    );

    // N events, alternating nodes, each reaching both fans.
    const N: u64 = 40;
    reset_stats(&mut conn).await;
    for i in 1..=N {
        let node = if i % 2 == 1 { &a } else { &b };
        assert_eq!(node.post_ok(G, event(i)).await, i);
    }
    state_a.follow(&mut fan_a, G, N, WAIT).await;
    state_b.follow(&mut fan_b, G, N, WAIT).await;
    let stats = commandstats(&mut conn).await;
    // Health pings (one per node per second) and this test's own commands
    // do not depend on events.
    let background = ["ping", "info", "config|resetstat"];
    let per_event: BTreeMap<&str, f64> = stats
        .iter()
        .filter(|(name, _)| !background.contains(&name.as_str()))
        .map(|(name, calls)| (name.as_str(), *calls as f64 / N as f64))
        .collect();
    let total: f64 = per_event.values().sum();
    println!(
        "Redis commands per event over {N} events: {total:.2} in all, {per_event:?}; raw commandstats: {stats:?}"
    );
    assert_eq!(
        stats.get("publish").copied(),
        Some(N),
        "one PUBLISH per event; commandstats: {stats:?}"
    );
}

#[test]
fn the_binary_stops_clearly_when_redis_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = dir.path().to_string_lossy().into_owned();
    let out = run_cli(
        &["serve"],
        &[
            ("SCOREHUB_REDIS__URL", &url),
            ("SCOREHUB_HTTP__LISTEN", "127.0.0.1:0"),
            ("SCOREHUB_STORAGE__DIR", &storage),
            ("SCOREHUB_AUTH__SECRET", crate::common::SECRET),
        ],
        dir.path(),
    );
    assert!(
        !out.status.success(),
        "started with nothing listening at {url}: {out:?}"
    );
    assert!(
        !out.stderr.contains("listening addr=") && !out.stdout.contains("listening addr="),
        "it must not serve: {out:?}"
    );
    let last = out
        .stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    assert!(
        last.contains("redis.url") && last.contains(&port.to_string()),
        "the last stderr line should name redis.url and the address that did not answer: {:?}",
        out.stderr
    );
}

/// Ids of the pub/sub client connections Redis holds.
async fn pubsub_clients(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(conn)
        .await
        .expect("CLIENT LIST TYPE pubsub");
    list.lines()
        .filter_map(|line| {
            line.split(' ')
                .find_map(|kv| kv.strip_prefix("id="))
                .map(str::to_owned)
        })
        .collect()
}

/// `connected_clients` from `INFO clients`.
async fn connected_clients(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(conn)
        .await
        .expect("INFO clients");
    info.lines()
        .find_map(|l| l.trim().strip_prefix("connected_clients:"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no connected_clients in {info:?}"))
}

async fn config_set(conn: &mut redis::aio::MultiplexedConnection, key: &str, value: &str) {
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(key)
        .arg(value)
        .query_async(conn)
        .await
        .unwrap_or_else(|e| panic!("CONFIG SET {key} {value}: {e}"));
}

/// Waits until Redis holds `n` pub/sub links (each node opens its link in
/// the background at start), returns their ids.
async fn links(conn: &mut redis::aio::MultiplexedConnection, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + RECOVERY;
    loop {
        let ids = pubsub_clients(conn).await;
        if ids.len() == n {
            return ids;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {n} pub/sub links, Redis holds {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_published_frames_repairs_the_gap() {
    let redis = RedisServer::start();
    let mut conn = redis_conn(&redis).await;
    let a = TestHub::start_cluster(&redis.url()).await;
    a.put_game(G).await;
    let (mut fan_a, mut state_a) = watch(&a, G).await;
    let a_links = links(&mut conn, 1).await;
    let b = TestHub::start_cluster(&redis.url()).await;
    let (mut fan_b, mut state_b) = watch(&b, G).await;
    let b_links: Vec<String> = links(&mut conn, 2)
        .await
        .into_iter()
        .filter(|id| !a_links.contains(id))
        .collect();
    assert_eq!(b_links.len(), 1, "B holds one pub/sub link: {b_links:?}");
    assert_eq!(a.post_ok(G, event(1)).await, 1);
    state_b.follow(&mut fan_b, G, 1, WAIT).await;

    // Cut B's pub/sub link and keep it down (with `maxclients` one below
    // the open connections, Redis accepts no new one once the link is
    // gone); what A publishes meanwhile never reaches B.
    let open = connected_clients(&mut conn).await;
    config_set(&mut conn, "maxclients", &(open - 1).to_string()).await;
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&b_links[0])
        .query_async(&mut conn)
        .await
        .expect("CLIENT KILL ID");
    assert_eq!(killed, 1, "B's pub/sub link {} was cut", b_links[0]);
    eventually("B not ready without its pub/sub link", RECOVERY, || async {
        b.get("/readyz").await.status == 503
    })
    .await;
    const N: u64 = 20;
    for i in 2..=N {
        assert_eq!(a.post_ok(G, event(i)).await, i);
    }
    assert_eq!(
        pubsub_clients(&mut conn).await,
        a_links,
        "B stayed unsubscribed while A published"
    );
    config_set(&mut conn, "maxclients", "10000").await;
    eventually("B ready again", RECOVERY, || async {
        b.get("/readyz").await.status == 200
    })
    .await;
    let relinked = links(&mut conn, 2).await;
    assert!(
        !relinked.contains(&b_links[0]),
        "B reconnected with a new pub/sub link: {relinked:?}"
    );
    // B catches up by itself, with no further event to reveal the gap.
    let both: [(&str, &Api); 2] = [("A", &a), ("B", &b)];
    let expected = converged(&both, G, N).await;
    // Missed diffs come back as diffs or as one fresh snapshot; FanState
    // checks every frame follows the one before.
    state_b.follow(&mut fan_b, G, N, RECOVERY).await;
    assert_eq!(state_b.state(G), Some(&expected), "the fan on B caught up");

    // And the link works again both ways.
    assert_eq!(a.post_ok(G, event(N + 1)).await, N + 1);
    assert_eq!(b.post_ok(G, event(N + 2)).await, N + 2);
    let expected = converged(&both, G, N + 2).await;
    for (name, fan, state) in [
        ("A", &mut fan_a, &mut state_a),
        ("B", &mut fan_b, &mut state_b),
    ] {
        state.follow(fan, G, N + 2, WAIT).await;
        drain(fan, state).await;
        assert_eq!(state.state(G), Some(&expected), "the fan on {name}");
    }
    assert_saw_each_once(&state_a, G, 0, N + 2, "the fan on A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_with_different_prefixes_share_one_redis_and_see_nothing_of_each_other() {
    let redis = RedisServer::start();
    let prefixed = |prefix: &'static str| {
        move |c: &mut scorehub::config::Config| c.redis.prefix = prefix.to_owned()
    };
    let prod_a = TestHub::start_cluster_with(&redis.url(), prefixed("prod")).await;
    let prod_b = TestHub::start_cluster_with(&redis.url(), prefixed("prod")).await;
    let staging = TestHub::start_cluster_with(&redis.url(), prefixed("staging")).await;

    prod_a.put_game(G).await;
    let r = staging.get(&format!("/v1/games/{G}")).await;
    assert_eq!(
        r.status, 404,
        "staging does not know prod's game: {}",
        r.text
    );
    let created = staging
        .put_game_with(G, new_game("Staging Home", "Staging Away"))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);

    let (mut prod_fan, mut prod_state) = watch(&prod_b, G).await;
    let (mut staging_fan, mut staging_state) = watch(&staging, G).await;
    // The same event ids in both: idempotency is per deployment too.
    for i in 1..=5 {
        assert_eq!(prod_a.post_ok(G, event(i)).await, i);
    }
    for i in 1..=3 {
        assert_eq!(staging.post_ok(G, event(i)).await, i);
    }
    prod_state.follow(&mut prod_fan, G, 5, WAIT).await;
    staging_state.follow(&mut staging_fan, G, 3, WAIT).await;
    drain(&mut prod_fan, &mut prod_state).await;
    drain(&mut staging_fan, &mut staging_state).await;
    assert_saw_each_once(&prod_state, G, 0, 5, "the prod fan");
    assert_saw_each_once(&staging_state, G, 0, 3, "the staging fan");
    assert_eq!(
        staging.get_game(G).await["home"]["name"],
        "Staging Home",
        "staging keeps its own game"
    );
    assert_eq!(prod_b.get_game(G).await["seq"], 5);
    assert_eq!(staging.get_game(G).await["seq"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_a_game_over_redis_tls_with_client_certificates() {
    use scorehub::testing::tls::{ClientAuth, TlsRedis};
    let redis = TlsRedis::start(ClientAuth::Required);
    let tls = scorehub::config::RedisTls {
        ca_file: Some(redis.ca_file()),
        client_cert: Some(redis.client_cert()),
        client_key: Some(redis.client_key()),
    };
    let with_tls = |c: &mut scorehub::config::Config| c.redis.tls = tls.clone();
    let a = TestHub::start_cluster_with(&redis.url(), with_tls).await;
    let b = TestHub::start_cluster_with(&redis.url(), with_tls).await;
    for node in [&a, &b] {
        // Ready once the pub/sub link over TLS is up too.
        eventually("ready over TLS", WAIT, || async {
            node.get("/readyz").await.status == 200
        })
        .await;
    }
    a.put_game(G).await;
    let (mut fan, mut state) = watch(&b, G).await;
    for i in 1..=4 {
        assert_eq!(a.post_ok(G, event(i)).await, i);
    }
    state.follow(&mut fan, G, 4, WAIT).await;
    drain(&mut fan, &mut state).await;
    assert_saw_each_once(&state, G, 0, 4, "the fan on B");
    assert_eq!(state.state(G), Some(&b.get_game(G).await));
}

/// Makes `replica` a replica of `primary` and waits until the link is up.
async fn replicate(primary: &RedisServer, replica: &RedisServer) {
    let client = redis::Client::open(replica.url()).expect("replica url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("replica answers");
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(primary.port())
        .query_async(&mut conn)
        .await
        .expect("REPLICAOF");
    eventually("the replica's link up", Duration::from_secs(20), || {
        let mut conn = conn.clone();
        async move {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            info.contains("master_link_status:up")
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_min_replicas_acked_an_event_is_answered_once_a_replica_has_it() {
    let primary = RedisServer::start();
    let mut replica = RedisServer::start();
    replicate(&primary, &replica).await;
    let hub = TestHub::start_cluster_with(&primary.url(), |c| {
        c.redis.min_replicas_acked = 1;
        c.redis.replica_ack_timeout = Duration::from_millis(1500);
    })
    .await;
    hub.put_game(G).await;
    assert_eq!(hub.post_ok(G, event(1)).await, 1);

    // The replica is gone: the event is refused, with what to do (the
    // reason, naming redis.min_replicas_acked, is in the hub's log).
    replica.kill9();
    // (`expected_seq`, as a careful scorekeeper sends: see the resend below.)
    let mut two = event(2);
    two["expected_seq"] = json!(1);
    let r = hub.post_event(G, two.clone()).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(
        r.text.contains("not_ready") && r.text.contains("same event_id"),
        "{}",
        r.text
    );
    // Resent while the replica is still gone: refused too. The node catches
    // up from Redis (seq 2), its expected_seq no longer matches, and the id
    // lookup finds the event applied: a duplicate the node answers without a
    // commit, which would be a `200 duplicate` before any replica has it.
    let r = hub.post_event(G, two.clone()).await;
    assert_eq!(
        r.status, 503,
        "a duplicate answered before a replica has the event: {}",
        r.text
    );
    // Back: resending the same event is answered once the replica has it.
    replica.restart();
    replicate(&primary, &replica).await;
    let deadline = std::time::Instant::now() + WAIT;
    let answer = loop {
        let r = hub.post_event(G, two.clone()).await;
        if r.status == 200 {
            break r.ok_json();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the resent event never confirmed: {} {}",
            r.status,
            r.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answer["seq"], 2, "{answer}");
    assert_eq!(answer["duplicate"], true, "{answer}");
    let on_replica = redis::Client::open(replica.url()).expect("replica url");
    let mut conn = on_replica
        .get_multiplexed_async_connection()
        .await
        .expect("replica answers");
    let seq: Option<String> = redis::cmd("HGET")
        .arg(format!("sh:{{{G}}}:meta"))
        .arg("seq")
        .query_async(&mut conn)
        .await
        .expect("HGET");
    assert_eq!(
        seq.as_deref(),
        Some("2"),
        "the replica has event 2: {answer:?}"
    );
}
