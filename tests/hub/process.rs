//! The real `scorehub` binary (contract §1, §2 durability, §4 SIGTERM):
//! crash safety with `kill -9`, torn log tails, graceful stop, configuration
//! errors and the `token` command.

use std::io::Write;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::common::{BinaryHub, Body, Fan, FanState, SECRET, WAIT, run_cli, score};

const G: &str = "nba:2026-11-22-lal-bos";

/// Appends `bytes` to `<dir>/events.log`, as a crash in the middle of a write would leave them.
fn append_to_log(dir: &std::path::Path, bytes: &[u8]) {
    let path = dir.join("events.log");
    assert!(path.exists(), "no event log at {}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("opening the event log");
    file.write_all(bytes).expect("appending to the event log");
    file.sync_all().expect("syncing the event log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut hub = BinaryHub::spawn(dir.path(), &[]);
    hub.put_game(G).await;
    hub.put_game("nhl:x").await;
    for i in 1..=20 {
        let team = if i % 3 == 0 { "away" } else { "home" };
        assert_eq!(hub.post_ok(G, score(&format!("e{i}"), team, 2)).await, i);
    }
    hub.post_ok(
        G,
        json!({"event_id": "clk", "kind": "clock", "period": 2, "ms": 300000, "running": true}),
    )
    .await;
    hub.post_ok(
        "nhl:x",
        json!({"event_id": "st", "kind": "status", "status": "live"}),
    )
    .await;
    let before = hub.get_game(G).await;
    let before_x = hub.get_game("nhl:x").await;
    hub.kill9();

    let hub = BinaryHub::spawn(dir.path(), &[]);
    assert_eq!(
        hub.get_game(G).await,
        before,
        "state after kill -9 and restart"
    );
    assert_eq!(hub.get_game("nhl:x").await, before_x);

    // Idempotency survives the restart: the original seq, nothing applied.
    let r = hub.post_event(G, score("e5", "home", 2)).await;
    assert_eq!(r.ok_json(), json!({"game": G, "seq": 5, "duplicate": true}));
    let r = hub.post_event(G, score("e5", "home", 3)).await;
    r.assert_error(409, "event_id_conflict");
    assert_eq!(hub.get_game(G).await, before);

    // So does creation: the same body is 200, another is 409.
    let r = hub
        .put_game_with(G, crate::common::new_game("Home", "Away"))
        .await;
    assert_eq!(
        r.status, 200,
        "PUT with the creation body after restart: {}",
        r.text
    );
    let r = hub
        .put_game_with(G, crate::common::new_game("Home", "Other"))
        .await;
    r.assert_error(409, "game_exists");

    // A new event continues the sequence.
    assert_eq!(hub.post_ok(G, score("e22", "away", 1)).await, 22);

    // The audit trail survived too.
    let token = hub.writer(G);
    let r = hub
        .call(
            Method::GET,
            &format!("/v1/games/{G}/events?since=0&limit=500"),
            Some(&token),
            Body::None,
            &[],
        )
        .await;
    let events = r.ok_json()["events"].as_array().expect("events").clone();
    assert_eq!(events.len(), 22);
    assert_eq!(events[4]["event_id"], "e5");
    assert_eq!(events[4]["by"], "tester");

    // A fan on the restarted hub gets the recovered state.
    let mut fan = Fan::connect(&hub.ws_url(&format!("games={G}"))).await;
    let mut state = FanState::default();
    state.apply(&fan.next_frame(WAIT).await);
    assert_eq!(state.state(G), Some(&hub.get_game(G).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_log_tail_is_dropped_on_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut hub = BinaryHub::spawn(dir.path(), &[]);
    hub.put_game(G).await;
    for i in 1..=5 {
        hub.post_ok(G, score(&format!("e{i}"), "home", 1)).await;
    }
    let before = hub.get_game(G).await;
    hub.kill9();

    // A record header promising 200 bytes, then only part of the payload.
    let mut torn = Vec::new();
    torn.extend_from_slice(&200u32.to_le_bytes());
    torn.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    torn.extend_from_slice(&[0x85, 0xa1, 0x74, 0xff, 0x00, 0x13, 0x37]);
    append_to_log(dir.path(), &torn);

    let mut hub = BinaryHub::spawn(dir.path(), &[]);
    assert_eq!(hub.get_game(G).await, before, "state after a torn tail");
    assert_eq!(hub.post_ok(G, score("e6", "away", 1)).await, 6);
    let after = hub.get_game(G).await;
    hub.kill9();

    // A few stray bytes (less than a record header) this time.
    append_to_log(dir.path(), &[0x07, 0x00, 0x01]);
    let hub = BinaryHub::spawn(dir.path(), &[]);
    assert_eq!(
        hub.get_game(G).await,
        after,
        "the event appended after the first repair must survive the second"
    );
    let r = hub.post_event(G, score("e6", "away", 1)).await;
    assert_eq!(r.ok_json()["duplicate"], true);
    assert_eq!(hub.post_ok(G, score("e7", "away", 1)).await, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_fans_with_1001_and_exits_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut hub = BinaryHub::spawn(dir.path(), &[]);
    hub.put_game(G).await;
    hub.post_ok(G, score("e1", "home", 1)).await;
    let mut fan = Fan::connect(&hub.ws_url(&format!("games={G}"))).await;
    assert_eq!(fan.next_frame(WAIT).await.t, "s");

    hub.sigterm();
    assert_eq!(
        fan.expect_close(Duration::from_secs(10)).await,
        1001,
        "fans are told the server is going away"
    );
    let status = hub.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM; stderr:\n{}",
        hub.stderr()
    );

    // Everything acknowledged is still there.
    let hub = BinaryHub::spawn(dir.path(), &[]);
    assert_eq!(hub.get_game(G).await["home"]["score"], 1);
}

/// A game with more fans than it pushes to inline spreads them over fan
/// shards, which may run behind its actor: SIGTERM still hands every fan
/// every acknowledged diff before its close 1001. (The barrier itself is
/// proven where shards can be held behind: `fanout::fans` unit tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_every_fan_shard_before_closing_fans() {
    const FANS: usize = 80;
    const EVENTS: u64 = 60;
    let dir = tempfile::tempdir().expect("temp dir");
    // 80 fans: the inline limit lowered so that they are spread over shards.
    let mut hub = BinaryHub::spawn(
        dir.path(),
        &[
            ("SCOREHUB_GAMES__FAN_SHARDS", "4"),
            ("SCOREHUB_GAMES__INLINE_FANS", "32"),
        ],
    );
    hub.put_game(G).await;
    let mut fans = Vec::new();
    for _ in 0..FANS {
        let mut fan = Fan::connect(&hub.ws_url(&format!("games={G}"))).await;
        let mut state = FanState::default();
        state.apply(&fan.next_frame(WAIT).await);
        fans.push((fan, state));
    }
    // A batch acknowledges many events at once, so the shards are handed
    // them together just before the signal.
    for chunk in 0..EVENTS / 20 {
        let events: Vec<serde_json::Value> = (0..20)
            .map(|i| {
                let mut e = score(&format!("e{chunk}-{i}"), "home", 1);
                e["game"] = json!(G);
                e
            })
            .collect();
        let r = hub
            .call(
                Method::POST,
                "/v1/events",
                Some(&hub.writer(G)),
                Body::Json(json!({ "events": events })),
                &[],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    hub.sigterm();
    for (i, (fan, state)) in fans.iter_mut().enumerate() {
        let (code, frames) = fan.frames_until_close(Duration::from_secs(20)).await;
        assert_eq!(code, 1001, "fan {i}");
        for f in frames.iter().filter(|f| f.t == "s" || f.t == "d") {
            state.apply(f);
        }
        assert_eq!(
            state.seq(G),
            Some(EVENTS),
            "fan {i} was closed before it got every acknowledged diff"
        );
        assert_eq!(state.state(G).expect("state")["home"]["score"], EVENTS);
    }
    let status = hub.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", hub.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_is_the_default_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = BinaryHub::spawn_args(dir.path(), &[], &[]);
    assert_eq!(hub.get("/healthz").await.status, 200);
    hub.put_game(G).await;
}

#[test]
fn unknown_config_key_stops_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = dir.path().to_string_lossy().into_owned();
    let out = run_cli(
        &["serve"],
        &[
            ("SCOREHUB_HTTP__NOPE", "1"),
            ("SCOREHUB_HTTP__LISTEN", "127.0.0.1:0"),
            ("SCOREHUB_STORAGE__DIR", &storage),
            ("SCOREHUB_AUTH__SECRET", SECRET),
        ],
        dir.path(),
    );
    assert!(
        !out.status.success(),
        "started with an unknown key: {out:?}"
    );
    assert!(
        out.stderr.lines().any(|l| l.contains("http.nope")),
        "stderr should name http.nope: {}",
        out.stderr
    );
}

#[test]
fn wrong_type_stops_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_cli(
        &["serve"],
        &[
            ("SCOREHUB_WS__QUEUE_FRAMES", "lots"),
            ("SCOREHUB_HTTP__LISTEN", "127.0.0.1:0"),
            ("SCOREHUB_AUTH__SECRET", SECRET),
        ],
        dir.path(),
    );
    assert!(!out.status.success(), "started with a wrong type: {out:?}");
    assert!(
        out.stderr.contains("ws.queue_frames"),
        "stderr should name ws.queue_frames: {}",
        out.stderr
    );
}

#[test]
fn short_secret_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_cli(
        &["serve"],
        &[
            ("SCOREHUB_AUTH__SECRET", "hunter2-too-short"),
            ("SCOREHUB_HTTP__LISTEN", "127.0.0.1:0"),
        ],
        dir.path(),
    );
    assert!(
        !out.status.success(),
        "started with a short secret: {out:?}"
    );
    assert!(
        out.stderr.contains("auth.secret"),
        "stderr should name auth.secret: {}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("hunter2-too-short"),
        "the secret was echoed: {}",
        out.stderr
    );
}

#[test]
fn token_without_a_secret_fails_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_cli(
        &["token", "--sub", "bob", "--games", "nba:*", "--ttl", "1h"],
        &[],
        dir.path(),
    );
    assert!(!out.status.success(), "token without a secret: {out:?}");
    assert!(out.stdout.trim().is_empty(), "printed something: {out:?}");
    assert!(
        out.stderr.contains("secret"),
        "stderr should say the secret is missing: {}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_command_mints_a_token_the_hub_accepts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_cli(
        &["token", "--sub", "bob", "--games", "nba:*", "--ttl", "8h"],
        &[("SCOREHUB_AUTH__SECRET", SECRET)],
        dir.path(),
    );
    assert!(out.status.success(), "token: {out:?}");
    let token = out.stdout.trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token:?}");

    let hub = BinaryHub::spawn(dir.path(), &[]);
    let r = hub
        .call(
            Method::PUT,
            &format!("/v1/games/{G}"),
            Some(&token),
            Body::Json(crate::common::new_game("Lakers", "Celtics")),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "PUT with a CLI token: {}", r.text);
    let r = hub.post_event_as(G, &token, score("e1", "home", 3)).await;
    assert_eq!(r.ok_json()["seq"], 1);
    let r = hub
        .call(
            Method::GET,
            &format!("/v1/games/{G}/events"),
            Some(&token),
            Body::None,
            &[],
        )
        .await;
    assert_eq!(r.ok_json()["events"][0]["by"], "bob");
    // The token's games are enforced.
    let r = hub
        .post_event_as("nhl:x", &token, score("e1", "home", 3))
        .await;
    assert!(
        r.status == 403 || r.status == 404,
        "a token for nba:* writing nhl:x: {} {}",
        r.status,
        r.text
    );

    // An admin token works too.
    let out = run_cli(
        &[
            "token", "--sub", "root", "--games", "*", "--ttl", "30m", "--scope", "admin",
        ],
        &[("SCOREHUB_AUTH__SECRET", SECRET)],
        dir.path(),
    );
    assert!(out.status.success(), "admin token: {out:?}");
    let admin = out.stdout.trim().to_owned();
    let r = hub
        .call(
            Method::PUT,
            "/v1/games/nhl:x",
            Some(&admin),
            Body::Json(crate::common::new_game("A", "B")),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "PUT with an admin token: {}", r.text);
}

#[test]
fn help_works() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_cli(&["--help"], &[], dir.path());
    assert!(out.status.success(), "--help: {out:?}");
    assert!(
        out.stdout.contains("serve") && out.stdout.contains("token"),
        "--help lists the commands: {}",
        out.stdout
    );
    let out = run_cli(&["serve", "--help"], &[], dir.path());
    assert!(out.status.success(), "serve --help: {out:?}");
    assert!(out.stdout.contains("Usage"), "{}", out.stdout);
    let out = run_cli(&["token", "--help"], &[], dir.path());
    assert!(out.status.success(), "token --help: {out:?}");
    for flag in ["--sub", "--games", "--ttl", "--scope"] {
        assert!(
            out.stdout.contains(flag),
            "token --help lacks {flag}: {}",
            out.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_serve_prints_a_working_admin_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = BinaryHub::spawn(dir.path(), &[("SCOREHUB_AUTH__SECRET", "")]);
    // The token is printed around the time of the listening line.
    let mut token = None;
    crate::common::eventually("an admin token on stdout", WAIT, || {
        token = hub
            .stdout()
            .lines()
            .map(str::trim)
            .find(|l| l.split('.').count() == 3 && l.starts_with("ey"))
            .map(str::to_owned);
        std::future::ready(token.is_some())
    })
    .await;
    let token = token.expect("found above");
    let stdout = hub.stdout();
    assert!(
        stdout.contains("/console") && stdout.contains(&hub.base),
        "the page URLs are printed: {stdout}"
    );
    assert!(
        hub.stderr().to_lowercase().contains("secret"),
        "a warning about the generated secret: {}",
        hub.stderr()
    );
    let r = hub
        .call(
            Method::PUT,
            &format!("/v1/games/{G}"),
            Some(&token),
            Body::Json(crate::common::new_game("A", "B")),
            &[],
        )
        .await;
    assert_eq!(
        r.status, 201,
        "PUT with the printed admin token: {}",
        r.text
    );
    // Tokens made with another secret are refused.
    let r = hub.post_event(G, score("e1", "home", 1)).await;
    assert_eq!(r.status, 401, "a token from another secret: {}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_then_env_take_precedence() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("scorehub.toml");
    std::fs::write(
        &file,
        "[storage]\ndir = \"from-file\"\nfsync = false\n\n[http]\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("writing the config file");
    let file = file.to_string_lossy().into_owned();

    // --config FILE: the file's storage dir is used.
    let hub = BinaryHub::spawn_args(
        dir.path(),
        &["--config", &file, "serve"],
        &[("SCOREHUB_STORAGE__DIR", "")],
    );
    hub.put_game(G).await;
    assert!(
        dir.path().join("from-file").join("events.log").exists(),
        "the config file's storage.dir was not used"
    );
    drop(hub);

    // SCOREHUB_CONFIG names the file too; the environment beats the file.
    let from_env = dir.path().join("from-env");
    let from_env = from_env.to_string_lossy().into_owned();
    let hub = BinaryHub::spawn_args(
        dir.path(),
        &["serve"],
        &[
            ("SCOREHUB_CONFIG", &file),
            ("SCOREHUB_STORAGE__DIR", &from_env),
        ],
    );
    hub.put_game("nba:other").await;
    assert!(
        dir.path().join("from-env").join("events.log").exists(),
        "SCOREHUB_STORAGE__DIR did not win over the file"
    );
    assert_eq!(
        hub.get(&format!("/v1/games/{G}")).await.status,
        404,
        "the game from the file's dir should not be in the env's dir"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_format_writes_json_lines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = BinaryHub::spawn(dir.path(), &[("SCOREHUB_LOG__FORMAT", "json")]);
    hub.put_game(G).await;
    let stderr = hub.stderr();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        assert!(v.is_object(), "{line}");
    }
}

#[test]
fn unreachable_redis_stops_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = dir.path().to_string_lossy().into_owned();
    let out = run_cli(
        &["serve"],
        &[
            ("SCOREHUB_REDIS__URL", "redis://127.0.0.1:1/0"),
            ("SCOREHUB_HTTP__LISTEN", "127.0.0.1:0"),
            ("SCOREHUB_STORAGE__DIR", &storage),
            ("SCOREHUB_AUTH__SECRET", SECRET),
        ],
        dir.path(),
    );
    assert!(
        !out.status.success(),
        "started with an unreachable Redis: {out:?}"
    );
    assert!(
        out.stderr.contains("redis.url"),
        "stderr should name redis.url: {}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauges_follow_connections_and_subscriptions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = BinaryHub::spawn(dir.path(), &[]);
    for g in ["nba:a", "nba:b", "nhl:c"] {
        hub.put_game(g).await;
    }
    let gauge = |text: &str, name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let metrics = || async { hub.get("/metrics").await.text };
    assert_eq!(gauge(&metrics().await, "scorehub_games_active"), Some(3.0));

    let mut f1 = Fan::connect(&hub.ws_url("games=nba:a,nba:b")).await;
    let f2 = Fan::connect(&hub.ws_url("leagues=nhl")).await;
    let expect = |connections: f64, subscriptions: f64| async move {
        let what = format!("{connections} connections and {subscriptions} subscriptions");
        crate::common::eventually(&what, WAIT, || async {
            let text = metrics().await;
            gauge(&text, "scorehub_ws_connections") == Some(connections)
                && gauge(&text, "scorehub_ws_subscriptions") == Some(subscriptions)
        })
        .await;
    };
    expect(2.0, 3.0).await;

    f1.send_json(&json!({"op": "unsub", "games": ["nba:a"]}))
        .await;
    expect(2.0, 2.0).await;

    f1.close().await;
    drop(f2); // dropped without a close handshake
    expect(0.0, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fans_resume_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut hub = BinaryHub::spawn(dir.path(), &[]);
    hub.put_game(G).await;
    let mut fan = Fan::connect(&hub.ws_url(&format!("games={G}"))).await;
    let mut state = FanState::default();
    state.apply(&fan.next_frame(WAIT).await);
    hub.post_ok(
        G,
        json!({"event_id": "c1", "kind": "clock", "period": 1, "ms": 720000, "running": true}),
    )
    .await;
    hub.post_ok(G, score("e1", "home", 2)).await;
    state.follow(&mut fan, G, 2, WAIT).await;
    hub.kill9();

    let hub = BinaryHub::spawn(dir.path(), &[]);
    hub.post_ok(
        G,
        json!({"event_id": "c2", "kind": "clock", "ms": 700000, "running": false}),
    )
    .await;
    hub.post_ok(G, score("e2", "away", 3)).await;
    hub.post_ok(
        G,
        json!({"event_id": "s1", "kind": "set", "patch": {"extra": {"possession": "away"}}}),
    )
    .await;

    // Missed diffs (from the rebuilt history) or a snapshot: either way exact.
    let mut fan = Fan::connect(&hub.ws_url("")).await;
    fan.send_json(&json!({"op": "sub", "games": [G], "since": {G: 2}}))
        .await;
    state.follow(&mut fan, G, 5, WAIT).await;
    assert_eq!(state.state(G), Some(&hub.get_game(G).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_concurrent_load_keeps_every_acknowledged_event() {
    use std::sync::Mutex;

    let dir = tempfile::tempdir().expect("temp dir");
    let mut hub = BinaryHub::spawn(dir.path(), &[]);
    hub.put_game(G).await;
    let acked: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());
    let pid = hub.pid().to_string();
    let (hub_ref, acked_ref) = (&hub, &acked);
    let poster = |p: usize| async move {
        for i in 0.. {
            let id = format!("p{p}-{i}");
            let token = hub_ref.writer(G);
            let sent = hub_ref
                .client
                .post(hub_ref.url(&format!("/v1/games/{G}/events")))
                .bearer_auth(token)
                .json(&score(
                    &id,
                    if p.is_multiple_of(2) { "home" } else { "away" },
                    1,
                ))
                .send()
                .await;
            let Ok(resp) = sent else { break };
            if resp.status() != 200 {
                break;
            }
            let Ok(body) = resp.json::<serde_json::Value>().await else {
                break;
            };
            let seq = body["seq"].as_u64().expect("seq");
            acked_ref.lock().expect("lock").push((id, seq));
        }
    };
    let killer = async {
        crate::common::eventually("150 acknowledged events", Duration::from_secs(60), || {
            std::future::ready(acked_ref.lock().expect("lock").len() >= 150)
        })
        .await;
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .expect("kill -KILL");
        assert!(status.success());
    };
    futures_util::future::join(futures_util::future::join_all((0..4).map(poster)), killer).await;
    hub.wait_exit(WAIT).await;
    drop(hub);
    let acked = acked.into_inner().expect("lock");

    let hub = BinaryHub::spawn(dir.path(), &[]);
    let state = hub.get_game(G).await;
    let seq = state["seq"].as_u64().expect("seq");
    let max_acked = acked.iter().map(|(_, s)| *s).max().expect("some acks");
    assert!(
        seq >= max_acked,
        "seq {seq} after restart < acknowledged {max_acked}"
    );
    assert_eq!(
        state["home"]["score"].as_u64().expect("score")
            + state["away"]["score"].as_u64().expect("score"),
        seq,
        "every applied event scored 1"
    );
    for (id, s) in &acked {
        let p: usize = id[1..id.find('-').expect("dash")].parse().expect("poster");
        let team = if p.is_multiple_of(2) { "home" } else { "away" };
        let r = hub.post_event(G, score(id, team, 1)).await;
        assert_eq!(
            r.ok_json(),
            json!({"game": G, "seq": s, "duplicate": true}),
            "acknowledged {id} at {s}"
        );
    }
    assert_eq!(hub.get_game(G).await["seq"], seq, "retries applied nothing");
}
