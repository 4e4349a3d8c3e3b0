//! Fans over WebSocket (contract §3): subscribe, resume, leagues, order,
//! conflation of slow fans, flood and subscription limits.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Fan, FanState, TestHub, WAIT, score};

const G: &str = "nba:2026-11-22-lal-bos";

/// Reads the first frame of a fresh subscription and checks it is the snapshot of `game`.
async fn expect_snapshot(fan: &mut Fan, state: &mut FanState, game: &str) {
    let f = fan.next_frame(WAIT).await;
    assert_eq!(f.t, "s", "expected a snapshot of {game}, got {f:?}");
    assert_eq!(f.g.as_deref(), Some(game), "{f:?}");
    state.apply(&f);
}

/// A mix of every event kind, deterministic in `i`.
fn mixed_event(i: usize) -> Value {
    let id = format!("m{i}");
    match i % 6 {
        0 => score(&id, "home", (i % 3 + 1) as i64),
        1 => score(&id, "away", 2),
        2 => {
            json!({"event_id": id, "kind": "clock", "period": i / 6 + 1, "ms": 600_000 - i as u64 * 1000, "running": i.is_multiple_of(4)})
        }
        3 => {
            json!({"event_id": id, "kind": "status", "status": if i % 4 == 1 { "paused" } else { "live" }})
        }
        4 => {
            json!({"event_id": id, "kind": "set", "patch": {"extra": {"possession": if i.is_multiple_of(2) { "home" } else { "away" }, "ratio": i as f64 / 4.0, "bonus": i.is_multiple_of(3)}}})
        }
        _ => {
            json!({"event_id": id, "kind": "set", "patch": {"extra": {"ratio": null, "note": format!("n{i}")}}})
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_subscription_gets_snapshot_then_ordered_diffs() {
    let hub = TestHub::start().await;
    let other = "nba:other";
    hub.put_game(G).await;
    hub.put_game(other).await;
    let mut fan = Fan::connect(&hub.ws_url(&format!("games={G},{other}"))).await;
    let mut state = FanState::default();
    for _ in 0..2 {
        let f = fan.next_frame(WAIT).await;
        assert_eq!(f.t, "s", "{f:?}");
        assert_eq!(f.q, Some(0), "{f:?}");
        state.apply(&f);
    }
    assert_eq!(state.state(G), Some(&hub.get_game(G).await));
    assert_eq!(state.state(other), Some(&hub.get_game(other).await));

    for i in 1..=3 {
        hub.post_ok(G, score(&format!("e{i}"), "home", 1)).await;
    }
    for q in 1..=3 {
        let f = fan.next_frame(WAIT).await;
        assert_eq!(
            (f.t.as_str(), f.g.as_deref(), f.q),
            ("d", Some(G), Some(q)),
            "{f:?}"
        );
        let d = f.d.as_ref().expect("diff has d");
        assert_eq!(
            d["home"]["score"], q,
            "the diff carries the changed score: {f:?}"
        );
        assert!(
            d.get("away").is_none(),
            "the diff carries only changed fields: {f:?}"
        );
        assert!(
            d.get("game").is_none(),
            "the diff carries only changed fields: {f:?}"
        );
        let ts = f.ts.expect("diff has ts");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis() as i64;
        assert!(
            (now - 60_000..=now + 1000).contains(&ts),
            "ts {ts} is not the server's ingest time in Unix ms (now {now})"
        );
        state.apply(&f);
    }
    assert_eq!(state.state(G), Some(&hub.get_game(G).await));
    assert!(fan.barrier().await.is_empty());
    fan.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_msgpack_sub_messages_work() {
    let hub = TestHub::start().await;
    hub.put_game(G).await;
    hub.post_ok(G, score("e1", "away", 3)).await;

    let mut json_fan = Fan::connect(&hub.ws_url("")).await;
    json_fan
        .send_json(&json!({"op": "sub", "games": [G]}))
        .await;
    let mut msgpack_fan = Fan::connect(&hub.ws_url("")).await;
    msgpack_fan
        .send_msgpack(&json!({"op": "sub", "games": [G]}))
        .await;

    let expected = hub.get_game(G).await;
    for fan in [&mut json_fan, &mut msgpack_fan] {
        let mut state = FanState::default();
        expect_snapshot(fan, &mut state, G).await;
        assert_eq!(state.state(G), Some(&expected));
    }
    hub.post_ok(G, score("e2", "home", 1)).await;
    for fan in [&mut json_fan, &mut msgpack_fan] {
        let f = fan.next_frame(WAIT).await;
        assert_eq!((f.t.as_str(), f.q), ("d", Some(2)), "{f:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_gets_pong() {
    let hub = TestHub::start().await;
    let mut fan = Fan::connect(&hub.ws_url("")).await;
    fan.send_json(&json!({"op": "ping"})).await;
    assert_eq!(fan.next_frame(WAIT).await.t, "p");
    fan.send_msgpack(&json!({"op": "ping"})).await;
    assert_eq!(fan.next_frame(WAIT).await.t, "p");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_get_error_frames_and_the_connection_stays() {
    let hub = TestHub::start().await;
    hub.put_game(G).await;
    let mut fan = Fan::connect(&hub.ws_url("")).await;

    fan.send_text("this is not json").await;
    let f = fan.next_frame(WAIT).await;
    assert_eq!(
        (f.t.as_str(), f.code.as_deref()),
        ("e", Some("bad_message")),
        "{f:?}"
    );
    assert!(f.msg.as_deref().is_some_and(|m| !m.is_empty()), "{f:?}");

    fan.send_json(&json!({"op": "dance"})).await;
    let f = fan.next_frame(WAIT).await;
    assert_eq!(
        (f.t.as_str(), f.code.as_deref()),
        ("e", Some("bad_message")),
        "{f:?}"
    );

    fan.send_msgpack(&json!(["not", "a", "map"])).await;
    let f = fan.next_frame(WAIT).await;
    assert_eq!(
        (f.t.as_str(), f.code.as_deref()),
        ("e", Some("bad_message")),
        "{f:?}"
    );

    // Still usable.
    assert!(fan.barrier().await.is_empty());
    fan.send_json(&json!({"op": "sub", "games": [G]})).await;
    let mut state = FanState::default();
    expect_snapshot(&mut fan, &mut state, G).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_and_unknown_games_get_error_frames() {
    let hub = TestHub::start().await;
    hub.put_game(G).await;
    let mut fan = Fan::connect(&hub.ws_url("")).await;

    fan.send_json(&json!({"op": "sub", "games": ["NBA:bad id!"]}))
        .await;
    let f = fan.next_frame(WAIT).await;
    assert_eq!(
        (f.t.as_str(), f.code.as_deref()),
        ("e", Some("invalid_game_id")),
        "{f:?}"
    );

    fan.send_json(&json!({"op": "sub", "games": ["nba:ghost"]}))
        .await;
    let f = fan.next_frame(WAIT).await;
    assert_eq!(f.t, "e", "subscribing to an unknown game: {f:?}");
    assert!(f.code.as_deref().is_some_and(|c| !c.is_empty()), "{f:?}");
    if let Some(g) = &f.g {
        assert_eq!(g, "nba:ghost", "{f:?}");
    }

    // Still usable.
    fan.send_json(&json!({"op": "sub", "games": [G]})).await;
    let mut state = FanState::default();
    expect_snapshot(&mut fan, &mut state, G).await;
    assert!(fan.barrier().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_since_gets_exactly_the_missed_diffs() {
    let hub = TestHub::start().await;
    hub.put_game(G).await;
    let mut state = FanState::default();

    let mut fan = Fan::connect(&hub.ws_url(&format!("games={G}"))).await;
    expect_snapshot(&mut fan, &mut state, G).await;
    for i in 1..=3 {
        hub.post_ok(G, mixed_event(i)).await;
    }
    state.follow(&mut fan, G, 3, WAIT).await;
    fan.close().await;

    // Events go on while the fan is away.
    for i in 4..=7 {
        hub.post_ok(G, mixed_event(i)).await;
    }

    let mut fan = Fan::connect(&hub.ws_url("")).await;
    fan.send_json(&json!({"op": "sub", "games": [G], "since": {G: 3}}))
        .await;
    for q in 4..=7 {
        let f = fan.next_frame(WAIT).await;
        assert_eq!(
            (f.t.as_str(), f.q),
            ("d", Some(q)),
            "a resume inside the history window gets the missed diffs, no snapshot: {f:?}"
        );
        state.apply(&f);
    }
    hub.post_ok(G, mixed_event(8)).await;
    let f = fan.next_frame(WAIT).await;
    assert_eq!((f.t.as_str(), f.q), ("d", Some(8)), "{f:?}");
    state.apply(&f);
    assert_eq!(state.state(G), Some(&hub.get_game(G).await));
    assert!(fan.barrier().await.is_empty());
    fan.close().await;

    // Resuming at the current seq: nothing to send until the next event.
    let mut fan = Fan::connect(&hub.ws_url("")).await;
    fan.send_msgpack(&json!({"op": "sub", "games": [G], "since": {G: 8}}))
        .await;
    let early = fan.barrier().await;
    assert!(early.is_empty(), "resume at the current seq sent {early:?}");
    hub.post_ok(G, mixed_event(9)).await;
    let f = fan.next_frame(WAIT).await;
    assert_eq!((f.t.as_str(), f.q), ("d", Some(9)), "{f:?}");
    state.apply(&f);
    assert_eq!(state.state(G), Some(&hub.get_game(G).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_older_than_history_gets_a_snapshot() {
    let hub = TestHub::start_with(|c| c.games.history = 4).await;
    hub.put_game(G).await;
    for i in 1..=10 {
        hub.post_ok(G, mixed_event(i)).await;
    }
    let expected = hub.get_game(G).await;

    let mut fan = Fan::connect(&hub.ws_url("")).await;
    fan.send_json(&json!({"op": "sub", "games": [G], "since": {G: 1}}))
        .await;
    let mut state = FanState::default();
    let f = fan.next_frame(WAIT).await;
    assert_eq!((f.t.as_str(), f.q), ("s", Some(10)), "{f:?}");
    state.apply(&f);
    assert_eq!(state.state(G), Some(&expected));
    assert!(fan.barrier().await.is_empty());

    // Within the (small) window, diffs still work.
    let mut fan = Fan::connect(&hub.ws_url("")).await;
    fan.send_json(&json!({"op": "sub", "games": [G], "since": {G: 8}}))
        .await;
    let qs: Vec<_> = fan
        .barrier()
        .await
        .into_iter()
        .map(|f| (f.t, f.q))
        .collect();
    assert_eq!(
        qs,
        vec![("d".to_owned(), Some(9)), ("d".to_owned(), Some(10))],
        "since=8 with history 4"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn league_subscription_covers_existing_and_new_games() {
    let hub = TestHub::start().await;
    hub.put_game("nba:a").await;
    hub.put_game("nba:b").await;
    hub.put_game("nhl:x").await;
    hub.post_ok("nba:a", score("e1", "home", 2)).await;

    let mut fan = Fan::connect(&hub.ws_url("leagues=nba")).await;
    let mut state = FanState::default();
    for _ in 0..2 {
        let f = fan.next_frame(WAIT).await;
        assert_eq!(f.t, "s", "{f:?}");
        state.apply(&f);
    }
    assert_eq!(state.seq("nba:a"), Some(1));
    assert_eq!(state.seq("nba:b"), Some(0));

    hub.post_ok("nhl:x", score("e1", "home", 1)).await;
    hub.post_ok("nba:b", score("e1", "away", 1)).await;
    hub.post_ok("nba:a", score("e2", "away", 3)).await;
    state.follow(&mut fan, "nba:b", 1, WAIT).await;
    state.follow(&mut fan, "nba:a", 2, WAIT).await;

    // A game created later arrives as a snapshot, then its diffs.
    hub.put_game("nba:c").await;
    state.follow(&mut fan, "nba:c", 0, WAIT).await;
    hub.post_ok("nba:c", score("e1", "home", 1)).await;
    state.follow(&mut fan, "nba:c", 1, WAIT).await;
    for f in fan.barrier().await {
        state.apply(&f);
    }
    assert!(
        state.log.iter().all(|(_, g, _)| g.starts_with("nba:")),
        "frames of another league: {:?}",
        state.log
    );
    for g in ["nba:a", "nba:b", "nba:c"] {
        assert_eq!(state.state(g), Some(&hub.get_game(g).await), "{g}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fans_end_in_the_same_state_as_get() {
    let hub = TestHub::start().await;
    hub.put_game(G).await;
    let url = hub.ws_url(&format!("games={G}"));
    let (mut f1, mut f2) = (Fan::connect(&url).await, Fan::connect(&url).await);
    let (mut s1, mut s2) = (FanState::default(), FanState::default());
    expect_snapshot(&mut f1, &mut s1, G).await;
    expect_snapshot(&mut f2, &mut s2, G).await;
    let n = 60;
    for i in 1..=n {
        hub.post_ok(G, mixed_event(i)).await;
    }
    s1.follow(&mut f1, G, n as u64, WAIT).await;
    s2.follow(&mut f2, G, n as u64, WAIT).await;
    let expected = hub.get_game(G).await;
    assert_eq!(s1.state(G), Some(&expected));
    assert_eq!(s2.state(G), Some(&expected));
    assert_eq!(s1.log, s2.log, "both fans saw the same frames");
    assert_eq!(s1.snapshots(G), 1);
}

/// A `set` event whose diff is a few KiB, so a fan that stops reading fills
/// the socket buffers quickly.
fn bulky_event(i: usize) -> Value {
    let mut extra = serde_json::Map::new();
    for k in 0..16 {
        extra.insert(
            format!("k{k}"),
            json!(format!("{i:06}-{k:02}-{}", "x".repeat(190))),
        );
    }
    json!({"event_id": format!("b{i}"), "kind": "set", "patch": {"extra": extra}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_fan_is_conflated_and_still_exact_while_others_get_every_diff() {
    let hub = TestHub::start_with(|c| {
        c.ws.queue_frames = 64;
        // The slow fan does not read for a while: it must not be dropped for that.
        c.ws.write_timeout = Duration::from_secs(300);
        c.ws.stuck_timeout = Duration::from_secs(300);
        c.ws.ping_interval = Duration::from_secs(150);
        c.ws.idle_timeout = Duration::from_secs(300);
    })
    .await;
    const G2: &str = "nba:second";
    hub.put_game(G).await;
    hub.put_game(G2).await;
    let url = hub.ws_url(&format!("games={G},{G2}"));
    // Events alternate between the two games, `per_game` each.
    let per_game: u64 = 1000;

    let mut slow = Fan::connect_with_recv_buffer(&url, 4096).await;
    let mut slow_state = FanState::default();
    slow_state.follow(&mut slow, G, 0, WAIT).await;
    slow_state.follow(&mut slow, G2, 0, WAIT).await;

    let mut reader = Fan::connect(&url).await;
    let mut reader_state = FanState::default();
    reader_state.follow(&mut reader, G, 0, WAIT).await;
    reader_state.follow(&mut reader, G2, 0, WAIT).await;
    let reading = tokio::spawn(async move {
        let patience = Duration::from_secs(300);
        reader_state
            .follow(&mut reader, G, per_game, patience)
            .await;
        reader_state
            .follow(&mut reader, G2, per_game, patience)
            .await;
        reader_state
    });

    for i in 1..=per_game as usize {
        hub.post_ok(G, bulky_event(i)).await;
        hub.post_ok(G2, bulky_event(i)).await;
    }
    let expected = hub.get_game(G).await;
    let expected2 = hub.get_game(G2).await;
    assert_eq!(expected["seq"], per_game);

    let reader_state = reading.await.expect("the reading fan's task");
    assert_eq!(reader_state.state(G), Some(&expected));
    assert_eq!(reader_state.state(G2), Some(&expected2));
    assert_eq!(
        (reader_state.snapshots(G), reader_state.snapshots(G2)),
        (1, 1),
        "a fan that keeps up gets every diff, no extra snapshot"
    );
    assert_eq!(reader_state.log.len() as u64, 2 * (per_game + 1));

    // Now the slow fan reads: frames applied in order give the exact state.
    let patience = Duration::from_secs(120);
    slow_state.follow(&mut slow, G, per_game, patience).await;
    slow_state.follow(&mut slow, G2, per_game, patience).await;
    assert_eq!(slow_state.state(G), Some(&expected));
    assert_eq!(slow_state.state(G2), Some(&expected2));
    assert!(
        slow_state.snapshots(G) + slow_state.snapshots(G2) >= 3,
        "the slow fan should have been conflated (got {} frames, {}+{} snapshots)",
        slow_state.log.len(),
        slow_state.snapshots(G),
        slow_state.snapshots(G2)
    );
    assert!(
        (slow_state.log.len() as u64) < 2 * (per_game + 1),
        "conflation drops queued diffs"
    );
    assert!(slow.barrier().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_client_is_closed_with_1008() {
    let hub = TestHub::start().await;
    let mut fan = Fan::connect(&hub.ws_url("")).await;
    for _ in 0..500 {
        if !fan.feed_text(r#"{"op":"ping"}"#).await {
            break;
        }
    }
    fan.flush().await;
    assert_eq!(fan.expect_close(WAIT).await, 1008);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsub_stops_diffs() {
    let hub = TestHub::start().await;
    let (a, b) = ("nba:a", "nba:b");
    hub.put_game(a).await;
    hub.put_game(b).await;
    let mut fan = Fan::connect(&hub.ws_url(&format!("games={a},{b}"))).await;
    let mut state = FanState::default();
    for _ in 0..2 {
        let f = fan.next_frame(WAIT).await;
        state.apply(&f);
    }
    fan.send_json(&json!({"op": "unsub", "games": [a]})).await;
    assert!(fan.barrier().await.is_empty());

    hub.post_ok(a, score("e1", "home", 1)).await;
    hub.post_ok(b, score("e1", "home", 1)).await;
    let f = fan.next_frame(WAIT).await;
    assert_eq!((f.g.as_deref(), f.q), (Some(b), Some(1)), "{f:?}");
    hub.post_ok(a, score("e2", "home", 1)).await;
    let late = fan.barrier().await;
    assert!(late.is_empty(), "frames after unsub: {late:?}");

    // Leagues unsubscribe too.
    let mut fan = Fan::connect(&hub.ws_url("leagues=nba")).await;
    for _ in 0..2 {
        assert_eq!(fan.next_frame(WAIT).await.t, "s");
    }
    fan.send_msgpack(&json!({"op": "unsub", "leagues": ["nba"]}))
        .await;
    assert!(fan.barrier().await.is_empty());
    hub.post_ok(b, score("e2", "home", 1)).await;
    hub.put_game("nba:c").await;
    let late = fan.barrier().await;
    assert!(late.is_empty(), "frames after league unsub: {late:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_subscriptions_is_an_error_frame() {
    let hub = TestHub::start_with(|c| c.ws.max_subscriptions = 2).await;
    for g in ["nba:a", "nba:b", "nba:c"] {
        hub.put_game(g).await;
    }
    let mut fan = Fan::connect(&hub.ws_url("")).await;
    fan.send_json(&json!({"op": "sub", "games": ["nba:a", "nba:b"]}))
        .await;
    let mut state = FanState::default();
    for _ in 0..2 {
        let f = fan.next_frame(WAIT).await;
        state.apply(&f);
    }
    fan.send_json(&json!({"op": "sub", "games": ["nba:c"]}))
        .await;
    let f = fan.next_frame(WAIT).await;
    assert_eq!(
        (f.t.as_str(), f.code.as_deref()),
        ("e", Some("too_many_subscriptions")),
        "{f:?}"
    );
    // The existing subscriptions keep working.
    hub.post_ok("nba:a", score("e1", "home", 1)).await;
    state.follow(&mut fan, "nba:a", 1, WAIT).await;
    hub.post_ok("nba:c", score("e1", "home", 1)).await;
    let late = fan.barrier().await;
    assert!(
        late.is_empty(),
        "frames for a refused subscription: {late:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_rejections_broadcast_nothing() {
    let hub = TestHub::start().await;
    hub.put_game(G).await;
    let mut fan = Fan::connect(&hub.ws_url(&format!("games={G}"))).await;
    let mut state = FanState::default();
    expect_snapshot(&mut fan, &mut state, G).await;
    hub.post_ok(G, score("e1", "home", 1)).await;
    state.follow(&mut fan, G, 1, WAIT).await;

    let r = hub.post_event(G, score("e1", "home", 1)).await;
    assert_eq!(r.ok_json()["duplicate"], true);
    hub.post_event(G, score("e1", "home", 2))
        .await
        .assert_error(409, "event_id_conflict");
    let r = hub.post_event(G, score("e2", "visitors", 1)).await;
    assert_eq!(r.status, 422);
    let mut ev = score("e3", "home", 1);
    ev["expected_seq"] = json!(0);
    hub.post_event(G, ev)
        .await
        .assert_error(412, "seq_mismatch");

    hub.post_ok(G, score("e4", "away", 1)).await;
    let f = fan.next_frame(WAIT).await;
    assert_eq!(
        (f.t.as_str(), f.q),
        ("d", Some(2)),
        "only the applied event: {f:?}"
    );
    state.apply(&f);
    assert!(fan.barrier().await.is_empty());
    assert_eq!(state.state(G), Some(&hub.get_game(G).await));
}

/// Reads raw bytes of a WebSocket connection made by hand (so nothing answers
/// pings) until the server closes it; returns the opcodes of the frames seen.
async fn silent_client_opcodes(addr: &str, query: &str, timeout: Duration) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connecting");
    let request = format!(
        "GET /v1/ws?{query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("sending the handshake");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut header_end = None;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => panic!(
                "the server kept a silent connection open past {timeout:?} (got {} bytes)",
                buf.len()
            ),
            Ok(Ok(n)) => n,
            Ok(Err(_)) => 0, // a reset also ends the connection
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if header_end.is_none()
            && let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n")
        {
            let head = String::from_utf8_lossy(&buf[..i]).into_owned();
            assert!(head.starts_with("HTTP/1.1 101"), "handshake answer: {head}");
            header_end = Some(i + 4);
        }
    }
    let mut rest = &buf[header_end.expect("a complete handshake answer")..];
    let mut opcodes = Vec::new();
    while rest.len() >= 2 {
        opcodes.push(rest[0] & 0x0f);
        let (len, skip) = match rest[1] & 0x7f {
            126 if rest.len() >= 4 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
            127 if rest.len() >= 10 => (
                u64::from_be_bytes(rest[2..10].try_into().expect("8 bytes")) as usize,
                10,
            ),
            n if n < 126 => (n as usize, 2),
            _ => break,
        };
        rest = &rest[(skip + len).min(rest.len())..];
    }
    opcodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_pinged_then_dropped() {
    let hub = TestHub::start_with(|c| {
        c.ws.ping_interval = Duration::from_millis(200);
        c.ws.idle_timeout = Duration::from_secs(1);
    })
    .await;
    hub.put_game(G).await;
    let addr = hub.base.trim_start_matches("http://").to_owned();
    let opcodes =
        silent_client_opcodes(&addr, &format!("games={G}"), Duration::from_secs(15)).await;
    assert_eq!(
        opcodes.first(),
        Some(&0x2),
        "first a binary snapshot: {opcodes:?}"
    );
    assert!(opcodes.contains(&0x9), "the server pings: {opcodes:?}");

    // A fan that answers pings (tungstenite does, while reading) stays.
    let mut fan = Fan::connect(&hub.ws_url(&format!("games={G}"))).await;
    let mut state = FanState::default();
    expect_snapshot(&mut fan, &mut state, G).await;
    assert!(
        fan.try_next_frame(Duration::from_millis(2500))
            .await
            .is_none(),
        "no data frames while idle"
    );
    assert!(fan.barrier().await.is_empty());
    hub.post_ok(G, score("e1", "home", 1)).await;
    state.follow(&mut fan, G, 1, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn game_and_league_subscriptions_overlap_without_duplicates() {
    let hub = TestHub::start().await;
    hub.put_game("nba:a").await;
    hub.put_game("nba:b").await;
    let mut fan = Fan::connect(&hub.ws_url("games=nba:a&leagues=nba")).await;
    let mut state = FanState::default();
    state.follow(&mut fan, "nba:a", 0, WAIT).await;
    state.follow(&mut fan, "nba:b", 0, WAIT).await;
    // Also subscribing by message again changes nothing about the order.
    fan.send_json(&json!({"op": "sub", "games": ["nba:a"], "leagues": ["nba"]}))
        .await;
    for f in fan.barrier().await {
        state.apply(&f);
    }
    for i in 1..=5 {
        hub.post_ok("nba:a", score(&format!("e{i}"), "home", 1))
            .await;
        hub.post_ok("nba:b", score(&format!("e{i}"), "away", 1))
            .await;
    }
    state.follow(&mut fan, "nba:a", 5, WAIT).await;
    state.follow(&mut fan, "nba:b", 5, WAIT).await;
    for f in fan.barrier().await {
        state.apply(&f);
    }
    let diffs_a = state
        .log
        .iter()
        .filter(|(t, g, _)| t == "d" && g == "nba:a")
        .count();
    assert_eq!(diffs_a, 5, "each diff once: {:?}", state.log);
    assert_eq!(state.state("nba:a"), Some(&hub.get_game("nba:a").await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_from_a_seq_the_hub_never_had_gets_a_snapshot() {
    let hub = TestHub::start().await;
    hub.put_game(G).await;
    for i in 1..=3 {
        hub.post_ok(G, mixed_event(i)).await;
    }
    let mut fan = Fan::connect(&hub.ws_url("")).await;
    fan.send_json(&json!({"op": "sub", "games": [G], "since": {G: 50}}))
        .await;
    let f = fan.next_frame(WAIT).await;
    assert_eq!(
        (f.t.as_str(), f.q),
        ("s", Some(3)),
        "a client ahead of the hub must be reset by a snapshot: {f:?}"
    );
    let mut state = FanState::default();
    state.apply(&f);
    assert_eq!(state.state(G), Some(&hub.get_game(G).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_league_gets_an_error_frame() {
    let hub = TestHub::start().await;
    let mut fan = Fan::connect(&hub.ws_url("")).await;
    fan.send_json(&json!({"op": "sub", "leagues": ["Not A League!"]}))
        .await;
    let f = fan.next_frame(WAIT).await;
    assert_eq!(f.t, "e", "{f:?}");
    assert!(fan.barrier().await.is_empty());
}
