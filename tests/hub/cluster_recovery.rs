//! Cluster mode when things go wrong: a retry that reaches another node
//! (idempotency across nodes, also with `expected_seq`), Redis losing
//! acknowledged writes (a node ahead of Redis must start over from it, not
//! serve a state Redis never held), and a commit stuck behind a busy
//! script. Each test states the contract clause it checks and failed
//! before its fix. Real `redis-server`s and real hubs only.

use std::time::Duration;

use reqwest::Method;
use scorehub::testing::RedisServer;
use serde_json::{Value, json};

use crate::cluster::{RECOVERY, redis_conn, watch};
use crate::common::{Body, Fan, TestHub, WAIT, eventually, sample, score};

const G: &str = "nba:recovery";

fn with_expected(mut ev: Value, expected: u64) -> Value {
    ev["expected_seq"] = json!(expected);
    ev
}

// ---------------------------------------------------------------------------
// 1. A retry carrying `expected_seq` that reaches another node (or a
//    restarted one) is answered 412 instead of `200 duplicate`.

/// Contract §2: "posting an event_id again with the same body returns 200
/// with the original seq and duplicate: true ... also when the retry
/// reaches a different node, and after a restart."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_with_expected_seq_on_other_node_is_duplicate() {
    let redis = RedisServer::start();
    let a = TestHub::start_cluster(&redis.url()).await;
    let b = TestHub::start_cluster(&redis.url()).await;
    a.put_game(G).await;
    let e1 = with_expected(score("e1", "home", 2), 0);

    let first = a.post_event(G, e1.clone()).await.ok_json();
    assert_eq!(first, json!({"game": G, "seq": 1, "duplicate": false}));

    // The same retry through A (the node that applied it) is a duplicate...
    let on_a = a.post_event(G, e1.clone()).await;
    assert_eq!(on_a.status, 200, "retry through A: {}", on_a.text);
    // ...and must be one through B too.
    let on_b = b.post_event(G, e1.clone()).await;
    assert_eq!(
        (on_b.status, on_b.json()),
        (200, json!({"game": G, "seq": 1, "duplicate": true})),
        "the same retry through B must be `200 duplicate` (contract §2), got {}: {}",
        on_b.status,
        on_b.text
    );
}

/// Same, in a batch (`POST /v1/events`) through the other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_retry_with_expected_seq_on_other_node_is_duplicate() {
    let redis = RedisServer::start();
    let a = TestHub::start_cluster(&redis.url()).await;
    let b = TestHub::start_cluster(&redis.url()).await;
    a.put_game(G).await;
    let e1 = with_expected(score("e1", "home", 2), 0);
    assert_eq!(a.post_ok(G, e1.clone()).await, 1);
    let mut item = e1.clone();
    item["game"] = json!(G);
    let token = b.writer(G);
    let batch = b
        .call(
            Method::POST,
            "/v1/events",
            Some(&token),
            Body::Json(json!({"events": [item]})),
            &[],
        )
        .await
        .ok_json();
    assert_eq!(
        batch["results"],
        json!([{"game": G, "seq": 1, "duplicate": true}]),
        "a batch retry through B: {batch}"
    );
}

// ---------------------------------------------------------------------------
// 2. Redis comes back *behind* a node's replica (it lost its last writes:
//    restart from an older RDB/AOF, failover to a lagging replica). The
//    node never notices: `Stale { current }` with current < local seq just
//    triggers a catch-up that reads nothing, so every event through that
//    node is 503 forever, and remote frames are applied on top of the
//    divergent replica (wrong state served by GET and to fans).

/// Contract §5: "when Redis returns, it repairs any gap (a subscriber may
/// see a fresh snapshot, never a wrong state)"; every node serves the same
/// state for the same seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_ahead_of_redis_after_it_lost_writes_serves_what_redis_holds() {
    let mut redis = RedisServer::start();
    let mut conn = redis_conn(&redis).await;
    let a = TestHub::start_cluster(&redis.url()).await;
    a.put_game(G).await;
    let (mut fan_a, mut state_a) = watch(&a, G).await;
    assert_eq!(a.post_ok(G, score("e1", "home", 1)).await, 1);
    // Redis persists this point (an RDB snapshot) ...
    let () = redis::cmd("SAVE")
        .query_async(&mut conn)
        .await
        .expect("SAVE");
    // ... and loses what follows when it restarts.
    assert_eq!(a.post_ok(G, score("e2", "home", 10)).await, 2);
    assert_eq!(a.post_ok(G, score("e3", "home", 10)).await, 3);
    state_a.follow(&mut fan_a, G, 3, WAIT).await;
    drop(conn);
    redis.restart();

    eventually("A ready again", RECOVERY, || async {
        a.get("/readyz").await.status == 200
    })
    .await;
    let c = TestHub::start_cluster(&redis.url()).await;
    assert_eq!(
        c.get_game(G).await["seq"],
        1,
        "Redis came back at seq 1 (precondition)"
    );

    // Another node takes three events: seq 2, 3, 4.
    for i in 2..=4 {
        assert_eq!(c.post_ok(G, score(&format!("x{i}"), "away", 1)).await, i);
    }
    let truth = c.get_game(G).await;
    assert_eq!(truth["seq"], 4);

    // A must end up serving what Redis holds (maybe via a fresh snapshot).
    let mut last;
    let deadline = std::time::Instant::now() + RECOVERY;
    loop {
        last = a.get_game(G).await;
        if last == truth || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        last, truth,
        "A serves a state Redis never had (same seq, other content)"
    );

    // A's fan held seqs 2 and 3 of the lost history: it must get a fresh
    // snapshot, never a diff of the new history applied to the old state.
    state_a.follow(&mut fan_a, G, 4, RECOVERY).await;
    assert_eq!(
        state_a.state(G),
        Some(&truth),
        "A's fan holds a state Redis never had: {:?}",
        state_a.log
    );
    assert!(
        state_a.snapshots(G) >= 2,
        "A's fan got no fresh snapshot after the rollback: {:?}",
        state_a.log
    );

    // A fan of the lost history that resumes (at 2 or 3, seqs it saw with
    // other content) gets a snapshot: on A, which saw the loss, and on a
    // node started afterwards, which learns it from Redis.
    let d = TestHub::start_cluster(&redis.url()).await;
    for (node, name) in [(&a, "A"), (&d, "D")] {
        for since in [2, 3] {
            let mut fan = Fan::connect(&node.ws_url("")).await;
            fan.send_json(&json!({"op": "sub", "games": [G], "since": {G: since}}))
                .await;
            let f = fan.next_frame(WAIT).await;
            assert_eq!(
                (f.t.as_str(), f.q),
                ("s", Some(4)),
                "a resume on {name} at {since}, a seq the log lost, must get a snapshot: {f:?}"
            );
            assert_eq!(f.d.as_ref(), Some(&truth), "{f:?}");
        }
    }
    // A resume at or after the loss point's end still gets diffs.
    let mut fan = Fan::connect(&d.ws_url("")).await;
    fan.send_json(&json!({"op": "sub", "games": [G], "since": {G: 4}}))
        .await;
    assert_eq!(c.post_ok(G, score("x5", "away", 1)).await, 5);
    let f = fan.next_frame(WAIT).await;
    assert_eq!((f.t.as_str(), f.q), ("d", Some(5)), "{f:?}");
    let lost = sample(
        &a.get("/metrics").await.text,
        "scorehub_lost_writes_total",
        "",
    );
    assert!(
        lost >= Some(1.0),
        "A counts the game whose history Redis lost: {lost:?}"
    );
}

/// Same situation: A must take events again (it starts over from Redis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_ahead_of_redis_after_it_lost_writes_takes_events_again() {
    let mut redis = RedisServer::start();
    let mut conn = redis_conn(&redis).await;
    let a = TestHub::start_cluster(&redis.url()).await;
    a.put_game(G).await;
    assert_eq!(a.post_ok(G, score("e1", "home", 1)).await, 1);
    let () = redis::cmd("SAVE")
        .query_async(&mut conn)
        .await
        .expect("SAVE");
    assert_eq!(a.post_ok(G, score("e2", "home", 1)).await, 2);
    drop(conn);
    redis.restart();
    eventually("A ready again", RECOVERY, || async {
        a.get("/readyz").await.status == 200
    })
    .await;

    // Ready, yet every new event is refused.
    let mut replies = Vec::new();
    for i in 0..5 {
        let r = a.post_event(G, score(&format!("n{i}"), "away", 1)).await;
        if r.status == 200 {
            return;
        }
        replies.push((r.status, r.text));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("A is ready but refuses every event: {replies:?}");
}

// ---------------------------------------------------------------------------
// 3. (Check, passes.) A commit whose answer times out is answered 503; the
//    script queued behind a busy Redis must then not apply it (it does not:
//    the timed-out connection is dropped before Redis reads it).

/// Contract §2: "An event that got an error changed nothing".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_timeout_503_applies_nothing() {
    let redis = RedisServer::start();
    let mut admin = redis_conn(&redis).await;
    let a = TestHub::start_cluster(&redis.url()).await;
    a.put_game(G).await;
    let (mut fan, mut state) = watch(&a, G).await;

    // Commands sent while a long script runs wait for it (no BUSY reply).
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("busy-reply-threshold")
        .arg("60000")
        .query_async(&mut admin)
        .await
        .expect("CONFIG SET busy-reply-threshold");
    // A script that keeps Redis busy for 6 s (longer than the hub's 3 s
    // call limit), e.g. a slow command or a big Lua script of another
    // client.
    let mut busy_conn = redis::Client::open(redis.url())
        .expect("URL")
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new().set_response_timeout(None),
        )
        .await
        .expect("connecting");
    let mut probe = redis_conn(&redis).await;
    let busy = tokio::spawn(async move {
        let script = "local s = redis.call('TIME') \
             local t0 = s[1] * 1000000 + s[2] \
             while true do \
               local n = redis.call('TIME') \
               if n[1] * 1000000 + n[2] - t0 > 6000000 then break end \
             end \
             return 1";
        let r: i64 = redis::cmd("EVAL")
            .arg(script)
            .arg(0)
            .query_async(&mut busy_conn)
            .await
            .expect("the busy script");
        r
    });
    // Wait until Redis is really blocked (a PING gets no answer).
    loop {
        let ping = tokio::time::timeout(
            Duration::from_millis(200),
            redis::cmd("PING").query_async::<String>(&mut probe),
        )
        .await;
        if ping.is_err() {
            break;
        }
    }

    let r = a.post_event(G, score("e1", "home", 2)).await;
    assert_eq!(r.status, 503, "the event is refused: {}", r.text);
    assert_eq!(busy.await.expect("busy task"), 1);

    // Nothing may have changed: the retry is a new event at seq 1.
    let retry = a.post_event(G, score("e1", "home", 2)).await;
    let fan_frames = fan.barrier().await;
    for f in &fan_frames {
        state.apply(f);
    }
    assert_eq!(
        retry.json(),
        json!({"game": G, "seq": 1, "duplicate": false}),
        "the event that got 503 was applied anyway; fan frames meanwhile: {:?}",
        state.log
    );
}

/// Contract §5: when Redis returns, the node is ready again. Here what
/// answers on Redis's port for a while is a black hole (it accepts and never
/// speaks: a frozen Redis, a half-dead proxy) that keeps the connections it
/// took. The pub/sub connection opened to it must give up, or the node stays
/// unready after the real Redis is back on the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_accepts_and_never_answers_does_not_hold_the_node_unready() {
    let mut redis = RedisServer::start_with_aof();
    let hub = TestHub::start_cluster(&redis.url()).await;
    hub.put_game(G).await;
    let ready = || async { hub.get("/readyz").await.status == 200 };
    eventually("ready with Redis up", WAIT, ready).await;

    redis.kill9();
    let listener = std::net::TcpListener::bind(("127.0.0.1", redis.port()))
        .expect("binding the black hole on Redis's port");
    listener
        .set_nonblocking(true)
        .expect("a non-blocking black hole");
    let mut held = Vec::new();
    // The node notices Redis is gone and reconnects into the black hole.
    eventually("the node connects to the black hole", RECOVERY, || {
        while let Ok((conn, _)) = listener.accept() {
            held.push(conn);
        }
        std::future::ready(!held.is_empty())
    })
    .await;
    assert_ne!(
        hub.get("/readyz").await.status,
        200,
        "not ready without Redis"
    );
    // The real Redis comes back on the same port; the black hole keeps what
    // it took.
    drop(listener);
    redis.restart();
    // Generous: a connect into the black hole gives up after 5 s, then the
    // reconnect backoff (up to 7.5 s) runs, on a machine that may be busy.
    eventually("ready again once Redis is back", 2 * RECOVERY, ready).await;
    drop(held);
    // Events go through again (a 503 meanwhile is the retryable answer).
    eventually(
        "an event is applied once Redis is back",
        2 * RECOVERY,
        || async { hub.post_event(G, score("after", "home", 1)).await.status == 200 },
    )
    .await;
    assert_eq!(hub.get_game(G).await["seq"], 1);
}
