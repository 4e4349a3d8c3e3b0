//! Tests of the Redis store against a real `redis-server`.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use super::names::Channel;
use super::*;
use crate::codec;
use crate::domain::{Action, Event, NewGame, NewTeam, Side};
use crate::testing::RedisServer;

fn gid(s: &str) -> GameId {
    GameId::parse(s).unwrap()
}

fn initial(id: &GameId, status: Status) -> GameState {
    NewGame {
        home: NewTeam {
            name: "Home".into(),
        },
        away: NewTeam {
            name: "Away".into(),
        },
        status: Some(status),
        period: None,
        extra: None,
    }
    .into_state(id.clone(), 1_000)
    .unwrap()
}

/// The creation of `state`, now (a game created finished is inside its
/// retention).
fn created(state: &GameState, fingerprint: Fingerprint) -> Record {
    Record::Created {
        game: state.game.clone(),
        state: state.clone(),
        fingerprint,
        by: "tester".into(),
        at: unix_now_ms(),
    }
}

/// The event `event_id` (home scores `points`) on top of `state`, and the
/// state after it.
fn scored(state: &GameState, event_id: &str, points: i64) -> (CommitEvent, GameState) {
    let mut next = state.clone();
    next.seq += 1;
    next.home.score += points;
    let diff = json!({"seq": next.seq, "home": {"score": next.home.score}});
    let event = Event {
        event_id: event_id.into(),
        expected_seq: None,
        action: Action::Score {
            team: Side::Home,
            points,
        },
    };
    let fingerprint = event.fingerprint();
    let at = unix_now_ms();
    let record = Record::Event {
        game: state.game.clone(),
        seq: next.seq,
        event,
        fingerprint,
        by: "tester".into(),
        at,
        diff: diff.clone(),
    };
    let event = CommitEvent {
        event_id: event_id.into(),
        fingerprint,
        frame: codec::diff(&state.game, next.seq, &diff, at),
        record: rmp_serde::to_vec_named(&record).unwrap(),
        at,
    };
    (event, next)
}

/// A run of events `ids` (1 point each) on top of `state`.
fn run(state: &GameState, ids: &[&str]) -> (Vec<CommitEvent>, GameState) {
    let mut state = state.clone();
    let mut events = Vec::new();
    for id in ids {
        let (event, next) = scored(&state, id, 1);
        events.push(event);
        state = next;
    }
    (events, state)
}

async fn setup() -> (RedisServer, RedisStore) {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    (server, store)
}

async fn create(store: &RedisStore, id: &str, status: Status) -> GameState {
    let state = initial(&gid(id), status);
    let fp = [7; 16];
    let outcome = store.create(&state, fp, &created(&state, fp)).await;
    assert_eq!(outcome.unwrap(), CreateOutcome::Created);
    state
}

/// Commits `ids` on top of `state`, expecting success.
async fn apply(store: &RedisStore, state: &GameState, ids: &[&str]) -> GameState {
    let (events, next) = run(state, ids);
    let outcome = store.commit(&state.game, state.seq, &events, &next).await;
    assert_eq!(outcome.unwrap(), Commit::Applied { last_seq: next.seq });
    next
}

async fn command_calls(store: &RedisStore) -> HashMap<String, u64> {
    let mut conn = store
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let info: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.strip_prefix("calls=")?.split(',').next()?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn create_is_idempotent_by_fingerprint_and_announced() {
    let (_server, store) = setup().await;
    let mut pubsub = store.client().get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(store.names().league_channel(&League::parse("nba").unwrap()))
        .await
        .unwrap();
    let id = gid("nba:x");
    assert_eq!(store.load(&id).await.unwrap(), None);

    let state = initial(&id, Status::Scheduled);
    let fp = [1; 16];
    let record = created(&state, fp);
    assert_eq!(
        store.create(&state, fp, &record).await.unwrap(),
        CreateOutcome::Created
    );
    // The same body again, and another body: both find it, neither changes it.
    assert_eq!(
        store.create(&state, fp, &record).await.unwrap(),
        CreateOutcome::Exists { fingerprint: fp }
    );
    let mut other = state.clone();
    other.home.name = "Other".into();
    assert_eq!(
        store
            .create(&other, [2; 16], &created(&other, [2; 16]))
            .await
            .unwrap(),
        CreateOutcome::Exists { fingerprint: fp }
    );
    let loaded = store.load(&id).await.unwrap().unwrap();
    assert_eq!(
        loaded,
        Loaded {
            state: state.clone(),
            created_fingerprint: fp,
            lost: 0,
        }
    );

    // Announced on the league channel: on creation, and again on the
    // same-body retry (which heals a create that failed half-way).
    let mut messages = pubsub.on_message();
    for _ in 0..2 {
        let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            store
                .names()
                .parse_channel(msg.get_channel_name().as_bytes()),
            Some(Channel::League(id.league()))
        );
        assert_eq!(msg.get_payload_bytes(), b"nba:x");
    }
    drop(messages);
    assert_eq!(
        store.league_games(&id.league()).await.unwrap(),
        vec![id.clone()]
    );
}

#[tokio::test]
async fn commit_applies_records_and_publishes_the_frame() {
    let (_server, store) = setup().await;
    let state = create(&store, "nba:x", Status::Live).await;
    let id = state.game.clone();
    let mut pubsub = store.client().get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(store.names().game_channel(&id))
        .await
        .unwrap();

    let (event, next) = scored(&state, "e1", 3);
    let frame = event.frame.clone();
    let outcome = store.commit(&id, 0, &[event], &next).await.unwrap();
    assert_eq!(outcome, Commit::Applied { last_seq: 1 });

    let msg = tokio::time::timeout(Duration::from_secs(5), pubsub.on_message().next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.get_payload_bytes(), frame.as_ref());
    assert_eq!(
        store
            .names()
            .parse_channel(msg.get_channel_name().as_bytes()),
        Some(Channel::Game(id.clone()))
    );
    let loaded = store.load(&id).await.unwrap().unwrap();
    assert_eq!(loaded.state, next);
    assert_eq!(loaded.state.home.score, 3);
    assert_eq!(
        store.frames_after(&id, 0, 10).await.unwrap(),
        vec![(1, frame)]
    );
    let events = store.events(&id, 0, 10).await.unwrap();
    assert!(matches!(
        &events[..],
        [Record::Event { seq: 1, event, .. }] if event.event_id == "e1"
    ));
}

#[tokio::test]
async fn seen_returns_the_original_and_applies_nothing() {
    let (_server, store) = setup().await;
    let state = create(&store, "nba:x", Status::Live).await;
    let id = state.game.clone();
    let one = apply(&store, &state, &["e1"]).await;
    let original = scored(&state, "e1", 1).0.fingerprint;

    // e2 is new but e1 (second in the run) was applied at seq 1.
    let (events, after) = run(&one, &["e2", "e1"]);
    let outcome = store.commit(&id, 1, &events, &after).await.unwrap();
    assert_eq!(
        outcome,
        Commit::Seen {
            index: 1,
            fingerprint: original,
            seq: 1
        }
    );
    // Also when the caller's seq is behind: idempotency wins over staleness.
    let (events, after) = run(&state, &["e1"]);
    assert_eq!(
        store.commit(&id, 0, &events, &after).await.unwrap(),
        Commit::Seen {
            index: 0,
            fingerprint: original,
            seq: 1
        }
    );
    // Nothing of the refused runs was applied: e2 is still new.
    assert_eq!(store.load(&id).await.unwrap().unwrap().state, one);
    assert_eq!(store.frames_after(&id, 1, 10).await.unwrap(), vec![]);
    let two = apply(&store, &one, &["e2"]).await;
    assert_eq!(two.seq, 2);
}

#[tokio::test]
async fn stale_and_missing_apply_nothing() {
    let (_server, store) = setup().await;
    let state = create(&store, "nba:x", Status::Live).await;
    let id = state.game.clone();
    let two = apply(&store, &state, &["e1", "e2"]).await;

    let (events, after) = run(&state, &["e3"]);
    assert_eq!(
        store.commit(&id, 0, &events, &after).await.unwrap(),
        Commit::Stale { current: 2 }
    );
    assert_eq!(store.load(&id).await.unwrap().unwrap().state, two);

    let ghost = initial(&gid("nba:ghost"), Status::Live);
    let (events, after) = run(&ghost, &["e1"]);
    assert_eq!(
        store.commit(&ghost.game, 0, &events, &after).await.unwrap(),
        Commit::Missing
    );
    assert_eq!(store.load(&ghost.game).await.unwrap(), None);

    // Inconsistent calls are refused before reaching Redis.
    let (events, _) = run(&two, &["e3"]);
    assert!(store.commit(&id, 2, &events, &two).await.is_err());
    let (mut events, after) = run(&two, &["e3", "e4"]);
    events[1].event_id = "e3".into();
    assert!(store.commit(&id, 2, &events, &after).await.is_err());
    assert!(store.commit(&id, 2, &[], &two).await.is_err());
}

#[tokio::test]
async fn one_script_call_and_one_publish_per_event() {
    let (_server, store) = setup().await;
    let state = create(&store, "nba:x", Status::Live).await;
    let id = state.game.clone();
    let mut pubsub = store.client().get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(store.names().game_channel(&id))
        .await
        .unwrap();
    // Warm up: the first call loads the script (NOSCRIPT, SCRIPT LOAD).
    let mut state = apply(&store, &state, &["warm"]).await;
    let mut admin = store
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = ::redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut admin)
        .await
        .unwrap();

    for i in 0..3 {
        state = apply(&store, &state, &[&format!("single-{i}")]).await;
    }
    state = apply(&store, &state, &["b1", "b2", "b3", "b4"]).await;
    assert_eq!(state.seq, 8);

    let calls = command_calls(&store).await;
    assert_eq!(calls.get("evalsha"), Some(&4), "{calls:?}");
    assert_eq!(calls.get("publish"), Some(&7), "{calls:?}");
    assert_eq!(calls.get("xadd"), Some(&7), "{calls:?}");
    let expected = [
        "evalsha",
        "publish",
        "xadd",
        "hget",
        "hmget",
        "hset",
        "set",
        "config|resetstat",
    ];
    for name in calls.keys() {
        assert!(
            expected.contains(&name.as_str()),
            "unexpected {name}: {calls:?}"
        );
    }

    // Every frame arrived once, with consecutive seqs.
    let mut messages = pubsub.on_message();
    for seq in 1..=8 {
        let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .unwrap()
            .unwrap();
        let frame = codec::decode_frame(msg.get_payload_bytes()).unwrap();
        assert_eq!(frame.q, Some(seq));
    }
    let seqs: Vec<u64> = store
        .frames_after(&id, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
}

#[tokio::test]
async fn history_pages_forward_and_from_the_end() {
    let (_server, store) = setup().await;
    let state = create(&store, "nba:x", Status::Live).await;
    let id = state.game.clone();
    let ids: Vec<String> = (1..=10).map(|i| format!("e{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (events, last) = run(&state, &ids);
    let frames: Vec<Bytes> = events.iter().map(|e| e.frame.clone()).collect();
    store.commit(&id, 0, &events, &last).await.unwrap();

    let page = store.frames_after(&id, 3, 4).await.unwrap();
    assert_eq!(
        page,
        (4..=7)
            .map(|s| (s, frames[s as usize - 1].clone()))
            .collect::<Vec<_>>()
    );
    let seqs = |v: Vec<(u64, Bytes)>| v.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
    assert_eq!(seqs(store.frames_after(&id, 8, 10).await.unwrap()), [9, 10]);
    assert_eq!(
        seqs(store.frames_after(&id, 10, 10).await.unwrap()),
        [0u64; 0]
    );
    assert_eq!(
        seqs(store.frames_after(&id, 0, 0).await.unwrap()),
        [0u64; 0]
    );
    assert_eq!(seqs(store.last_frames(&id, 3).await.unwrap()), [8, 9, 10]);
    assert_eq!(seqs(store.last_frames(&id, 50).await.unwrap()).len(), 10);

    let record_seqs = |v: Vec<Record>| {
        v.into_iter()
            .map(|r| match r {
                Record::Event { seq, .. } => seq,
                Record::Created { .. } => 0,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        record_seqs(store.events(&id, 0, 5).await.unwrap()),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        record_seqs(store.events(&id, 5, 100).await.unwrap()),
        [6, 7, 8, 9, 10]
    );
    assert_eq!(
        store.last_frames(&gid("nba:none"), 3).await.unwrap(),
        vec![]
    );
}

#[tokio::test]
async fn list_filters_by_league_and_status_and_paginates() {
    let (_server, store) = setup().await;
    for (id, status) in [
        ("nba:c", Status::Live),
        ("nba:a", Status::Live),
        ("nba:b", Status::Final),
        ("nhl:a", Status::Live),
        ("nba-x:a", Status::Live),
        ("nbaa:z", Status::Scheduled),
    ] {
        create(&store, id, status).await;
    }
    let ids = |page: &(Vec<GameState>, Option<String>)| {
        page.0
            .iter()
            .map(|g| g.game.to_string())
            .collect::<Vec<_>>()
    };
    let nba = League::parse("nba").unwrap();

    let p1 = store.list(None, None, 2, None).await.unwrap();
    assert_eq!(
        (ids(&p1), p1.1.as_deref()),
        (vec!["nba-x:a".into(), "nba:a".into()], Some("nba:a"))
    );
    let p2 = store
        .list(None, None, 2, Some(&gid("nba:a")))
        .await
        .unwrap();
    assert_eq!(
        (ids(&p2), p2.1.as_deref()),
        (vec!["nba:b".into(), "nba:c".into()], Some("nba:c"))
    );
    let p3 = store
        .list(None, None, 2, Some(&gid("nba:c")))
        .await
        .unwrap();
    assert_eq!(
        (ids(&p3), p3.1),
        (vec!["nbaa:z".into(), "nhl:a".into()], None)
    );

    let live = store
        .list(Some(&nba), Some(Status::Live), 10, None)
        .await
        .unwrap();
    assert_eq!(
        (ids(&live), live.1),
        (vec!["nba:a".into(), "nba:c".into()], None)
    );
    let first = store.list(Some(&nba), None, 1, None).await.unwrap();
    assert_eq!(
        (ids(&first), first.1.as_deref()),
        (vec!["nba:a".into()], Some("nba:a"))
    );
    let last = store
        .list(Some(&nba), None, 1, Some(&gid("nba:b")))
        .await
        .unwrap();
    assert_eq!((ids(&last), last.1), (vec!["nba:c".into()], None));
    // A cursor before the league starts at the league.
    let from_start = store
        .list(Some(&nba), None, 5, Some(&gid("aaa:x")))
        .await
        .unwrap();
    assert_eq!(ids(&from_start), ["nba:a", "nba:b", "nba:c"]);
    let none = store
        .list(None, Some(Status::Paused), 5, None)
        .await
        .unwrap();
    assert_eq!((ids(&none), none.1), (vec![], None));
    assert_eq!(
        store.league_games(&nba).await.unwrap(),
        vec![gid("nba:a"), gid("nba:b"), gid("nba:c")]
    );
    assert_eq!(
        store
            .league_games(&League::parse("mlb").unwrap())
            .await
            .unwrap(),
        vec![]
    );
}

#[tokio::test]
async fn list_scans_a_bounded_number_of_ids_per_call() {
    let (_server, store) = setup().await;
    // Listed ids without a state (creates that failed half-way), sorting
    // before the one real game.
    let mut conn = store
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut zadd = ::redis::cmd("ZADD");
    zadd.arg(store.names().games());
    for i in 0..LIST_SCAN_BUDGET + 500 {
        zadd.arg(0).arg(format!("aaa:g{i:05}"));
    }
    let _: i64 = zadd.query_async(&mut conn).await.unwrap();
    create(&store, "nba:a", Status::Live).await;

    let (games, cursor) = store.list(None, None, 10, None).await.unwrap();
    assert!(games.is_empty());
    let cursor = gid(&cursor.expect("a cursor to continue the scan"));
    let (games, cursor) = store.list(None, None, 10, Some(&cursor)).await.unwrap();
    assert_eq!(games.len(), 1);
    assert_eq!(games[0].game, gid("nba:a"));
    assert_eq!(cursor, None);
}

#[tokio::test]
async fn outage_fails_fast_and_recovers_with_the_data() {
    let mut server = RedisServer::start_with_aof();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let state = create(&store, "nba:x", Status::Live).await;
    let id = state.game.clone();
    let one = apply(&store, &state, &["e1"]).await;

    server.kill9();
    // Three calls against a dead server, together faster than one call's
    // time limit: they fail on the refused reconnect, they do not hang.
    let bound = CALL_TIMEOUT + Duration::from_secs(1);
    let started = std::time::Instant::now();
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    let (events, two) = run(&one, &["e2"]);
    let err = store.commit(&id, 1, &events, &two).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.starts_with("redis: ")),
        "{err}"
    );
    assert!(matches!(
        store.load(&id).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(started.elapsed() < bound, "took {:?}", started.elapsed());

    // The first call after a restart (here a write) reconnects and succeeds.
    server.restart();
    assert_eq!(
        store.commit(&id, 1, &events, &two).await.unwrap(),
        Commit::Applied { last_seq: 2 }
    );
    // Again, with a read first; the data survived both kills (AOF).
    server.kill9();
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    server.restart();
    assert_eq!(store.load(&id).await.unwrap().unwrap().state, two);
    store.ping().await.unwrap();
    assert_eq!(
        store.frames_after(&id, 0, 10).await.unwrap().len(),
        2,
        "history survives"
    );
}

#[tokio::test]
async fn connect_names_the_url_without_its_password() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("redis://:hunter2@127.0.0.1:{port}/0");
    let started = std::time::Instant::now();
    let err = RedisStore::connect(&url).await.unwrap_err().to_string();
    assert!(started.elapsed() < CALL_TIMEOUT + Duration::from_secs(1));
    assert!(!err.contains("hunter2"), "{err}");
    assert!(
        err.contains(&format!("redis://<redacted>@127.0.0.1:{port}/0")),
        "{err}"
    );
    assert!(err.contains("redis.url"), "{err}");
    assert!(RedisStore::connect("http://nope").await.is_err());
}

#[test]
fn helpers() {
    let fp: Fingerprint = core::array::from_fn(|i| (i * 17) as u8);
    assert_eq!(unhex(hex(&fp).as_bytes()), Some(fp));
    assert_eq!(unhex(b"zz"), None);
    assert_eq!(
        parse_seen(format!("{}:42", hex(&fp)).as_bytes()),
        Some((fp, 42))
    );
}

/// A store on `url` with `config`'s other settings.
async fn connect_to(url: String, config: RedisConfig) -> Result<RedisStore, StoreError> {
    RedisStore::connect_with(&RedisConfig {
        url: Some(url),
        ..config
    })
    .await
}

#[tokio::test]
async fn tls_with_a_private_ca_and_a_client_certificate() {
    use crate::testing::tls::{ClientAuth, TlsRedis};
    let server = TlsRedis::start(ClientAuth::Required);
    let tls = RedisTls {
        ca_file: Some(server.ca_file()),
        client_cert: Some(server.client_cert()),
        client_key: Some(server.client_key()),
    };
    let config = RedisConfig {
        tls: tls.clone(),
        ..RedisConfig::default()
    };
    let store = connect_to(server.url(), config.clone()).await.unwrap();
    let state = create(&store, "nba:x", Status::Live).await;
    let id = state.game.clone();
    // Pub/sub runs over TLS too.
    let mut pubsub = store.client().get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(store.names().game_channel(&id))
        .await
        .unwrap();
    let (event, next) = scored(&state, "e1", 2);
    let frame = event.frame.clone();
    assert_eq!(
        store.commit(&id, 0, &[event], &next).await.unwrap(),
        Commit::Applied { last_seq: 1 }
    );
    let msg = tokio::time::timeout(Duration::from_secs(5), pubsub.on_message().next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.get_payload_bytes(), frame.as_ref());
    assert_eq!(store.load(&id).await.unwrap().unwrap().state, next);

    // The server wants a client certificate.
    let no_cert = RedisConfig {
        tls: RedisTls {
            ca_file: Some(server.ca_file()),
            ..RedisTls::default()
        },
        ..RedisConfig::default()
    };
    let err = connect_to(server.url(), no_cert).await.unwrap_err();
    assert!(err.to_string().contains("cannot reach"), "{err}");
    // A server certificate of another CA is refused by the client.
    let wrong_ca = RedisConfig {
        tls: RedisTls {
            ca_file: Some(server.other_ca_file()),
            ..tls.clone()
        },
        ..RedisConfig::default()
    };
    let err = connect_to(server.url(), wrong_ca).await.unwrap_err();
    assert!(err.to_string().contains("cannot reach"), "{err}");
    // The system roots do not know the test CA either.
    let err = connect_to(server.url(), RedisConfig::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot reach"), "{err}");
    // A missing file is named with its key.
    let missing = RedisConfig {
        tls: RedisTls {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..RedisTls::default()
        },
        ..RedisConfig::default()
    };
    let err = connect_to(server.url(), missing).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot read redis.ca_file /nonexistent/ca.pem"),
        "{err}"
    );
    // A PEM that is not a certificate is named too.
    let garbage = RedisConfig {
        tls: RedisTls {
            ca_file: Some(server.client_key()),
            ..tls
        },
        ..RedisConfig::default()
    };
    assert!(connect_to(server.url(), garbage).await.is_err());
}

#[tokio::test]
async fn tls_without_client_certificates() {
    use crate::testing::tls::{ClientAuth, TlsRedis};
    let server = TlsRedis::start(ClientAuth::Off);
    let config = RedisConfig {
        tls: RedisTls {
            ca_file: Some(server.ca_file()),
            ..RedisTls::default()
        },
        ..RedisConfig::default()
    };
    let store = connect_to(server.url(), config).await.unwrap();
    let state = create(&store, "nba:x", Status::Live).await;
    apply(&store, &state, &["e1"]).await;
    // The same data over the server's plain port: one server.
    let plain = RedisStore::connect(&server.plain_url()).await.unwrap();
    assert_eq!(plain.load(&state.game).await.unwrap().unwrap().state.seq, 1);
}

#[tokio::test]
async fn prefixes_and_databases_keep_deployments_apart() {
    let server = RedisServer::start();
    let with_prefix = |prefix: &str| RedisConfig {
        prefix: prefix.to_owned(),
        ..RedisConfig::default()
    };
    let prod = connect_to(server.url(), with_prefix("prod")).await.unwrap();
    let staging = connect_to(server.url(), with_prefix("staging"))
        .await
        .unwrap();
    // Same prefix, other databases.
    let db1 = connect_to(format!("{}1", server.url()), with_prefix("sh"))
        .await
        .unwrap();
    let db2 = connect_to(format!("{}2", server.url()), with_prefix("sh"))
        .await
        .unwrap();

    let mut listeners = Vec::new();
    for store in [&prod, &staging, &db1, &db2] {
        let state = create(store, "nba:x", Status::Live).await;
        let mut pubsub = store.client().get_async_pubsub().await.unwrap();
        pubsub
            .subscribe(store.names().game_channel(&state.game))
            .await
            .unwrap();
        listeners.push((store, state, pubsub));
    }
    // Each commits its own event (different scores) to the same game id.
    let mut frames = Vec::new();
    for (i, (store, state, _)) in listeners.iter().enumerate() {
        let (event, next) = scored(state, "e1", i as i64 + 1);
        frames.push(event.frame.clone());
        assert_eq!(
            store.commit(&state.game, 0, &[event], &next).await.unwrap(),
            Commit::Applied { last_seq: 1 },
            "the same event_id is new in every deployment"
        );
    }
    for (i, (store, state, pubsub)) in listeners.iter_mut().enumerate() {
        let loaded = store.load(&state.game).await.unwrap().unwrap();
        assert_eq!(loaded.state.home.score, i as i64 + 1);
        let page = store.list(None, None, 10, None).await.unwrap();
        assert_eq!(page.0.len(), 1);
        // The first (and only) frame on each channel is its own deployment's.
        let msg = tokio::time::timeout(Duration::from_secs(5), pubsub.on_message().next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(msg.get_payload_bytes(), frames[i].as_ref(), "listener {i}");
    }
    // Nothing is left under the default prefix in database 0.
    let default = RedisStore::connect(&server.url()).await.unwrap();
    assert_eq!(default.list(None, None, 10, None).await.unwrap().0, vec![]);
    assert_eq!(
        default.load(&gid("nba:x")).await.unwrap(),
        None,
        "no game under sh: in db 0"
    );
}

#[tokio::test]
async fn streams_are_trimmed_to_about_their_length_never_below() {
    let server = RedisServer::start();
    let store = connect_to(
        server.url(),
        RedisConfig {
            stream_max_len: 10,
            ..RedisConfig::default()
        },
    )
    .await
    .unwrap();
    let mut state = create(&store, "nba:x", Status::Live).await;
    let id = state.game.clone();
    for i in 0..30 {
        let ids: Vec<String> = (0..10).map(|j| format!("e{i}-{j}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        state = apply(&store, &state, &ids).await;
    }
    assert_eq!(state.seq, 300);
    let mut conn = store
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let len: usize = ::redis::cmd("XLEN")
        .arg(store.names().key(&id, "log"))
        .query_async(&mut conn)
        .await
        .unwrap();
    // `MAXLEN ~` drops whole stream nodes (100 entries each by default).
    assert!((10..=110).contains(&len), "XLEN {len}");
    let kept = store.frames_after(&id, 0, 1000).await.unwrap();
    assert_eq!(kept.len(), len);
    let seqs: Vec<u64> = kept.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, ((301 - len as u64)..=300).collect::<Vec<_>>());
    // Idempotency does not depend on the stream: the first event is still known.
    let seen = store.seen_ids(&id, &["e0-0"]).await.unwrap();
    assert_eq!(seen[0].map(|(_, seq)| seq), Some(1));
}

/// Makes `replica` a replica of `primary` and waits until the link is up.
async fn replicate(primary: &RedisServer, replica: &RedisServer) {
    let client = ::redis::Client::open(replica.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = ::redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(primary.port())
        .query_async(&mut conn)
        .await
        .unwrap();
    let primary = ::redis::Client::open(primary.url()).unwrap();
    let mut primary = primary.get_multiplexed_async_connection().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let info: String = ::redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut primary)
            .await
            .unwrap();
        let link: String = ::redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await
            .unwrap();
        if info.contains("connected_slaves:1") && link.contains("master_link_status:up") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica did not connect: {info} / {link}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn with_min_replicas_acked_a_commit_is_answered_once_the_replica_has_it() {
    let primary = RedisServer::start();
    let mut replica = RedisServer::start();
    replicate(&primary, &replica).await;
    let store = connect_to(
        primary.url(),
        RedisConfig {
            min_replicas_acked: 1,
            replica_ack_timeout: Duration::from_millis(1500),
            ..RedisConfig::default()
        },
    )
    .await
    .unwrap();
    let state = create(&store, "nba:x", Status::Live).await;
    let id = state.game.clone();
    let one = apply(&store, &state, &["e1"]).await;
    // Answered: the replica has it already.
    let on_replica = RedisStore::connect(&replica.url()).await.unwrap();
    assert_eq!(on_replica.load(&id).await.unwrap().unwrap().state, one);

    // No replica to confirm: the commit lands on the primary, but is refused.
    replica.kill9();
    let (events, two) = run(&one, &["e2"]);
    let err = store.commit(&id, 1, &events, &two).await.unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("only 0 of the 1 replicas"), "{shown}");
    assert!(shown.contains("retry with the same event_id"), "{shown}");
    // Its retry is a duplicate on the primary, still unconfirmed: refused too.
    assert!(store.commit(&id, 1, &events, &two).await.is_err());
    // And so is a node's own duplicate of it, confirmed without a commit.
    let err = store.confirm(&id).await.unwrap_err();
    assert!(
        err.to_string().contains("only 0 of the 1 replicas"),
        "{err}"
    );
    // So is a create, and its retry.
    let other = initial(&gid("nba:y"), Status::Live);
    let record = created(&other, [7; 16]);
    for _ in 0..2 {
        let err = store.create(&other, [7; 16], &record).await.unwrap_err();
        assert!(err.to_string().contains("retry with the same"), "{err}");
    }

    // The replica is back and catches up: a retry is confirmed (resent
    // until then, as a scorekeeper does; a loaded machine may need more
    // than one WAIT timeout for the first acknowledgement).
    replica.restart();
    replicate(&primary, &replica).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let confirmed = loop {
        match store.commit(&id, 1, &events, &two).await {
            Ok(outcome) => break outcome,
            Err(e) => assert!(std::time::Instant::now() < deadline, "never confirmed: {e}"),
        }
    };
    assert_eq!(
        confirmed,
        Commit::Seen {
            index: 0,
            fingerprint: events[0].fingerprint,
            seq: 2
        }
    );
    let on_replica = RedisStore::connect(&replica.url()).await.unwrap();
    assert_eq!(on_replica.load(&id).await.unwrap().unwrap().state, two);
    store.confirm(&id).await.unwrap();
}

#[tokio::test]
async fn without_min_replicas_acked_no_commit_waits() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let state = create(&store, "nba:x", Status::Live).await;
    apply(&store, &state, &["e1"]).await;
    store.confirm(&state.game).await.unwrap();
    let calls = command_calls(&store).await;
    // create and commit: each NOSCRIPT, SCRIPT LOAD, then the call.
    assert_eq!(calls.get("evalsha"), Some(&4), "{calls:?}");
    assert_eq!(calls.get("script|load"), Some(&2), "{calls:?}");
    assert_eq!(calls.get("wait"), None, "{calls:?}");
}

/// The `lost` mark only rises (two nodes may report different seqs, in any
/// order), and `load` hands it on.
#[tokio::test]
async fn the_lost_mark_only_rises_and_is_loaded() {
    let (_server, store) = setup().await;
    let state = create(&store, "nba:lost", Status::Live).await;
    let id = state.game.clone();
    assert_eq!(store.load(&id).await.unwrap().unwrap().lost, 0);
    store.note_lost(&id, 7).await.unwrap();
    store.note_lost(&id, 3).await.unwrap();
    assert_eq!(store.load(&id).await.unwrap().unwrap().lost, 7);
    store.note_lost(&id, 9).await.unwrap();
    assert_eq!(store.load(&id).await.unwrap().unwrap().lost, 9);
}

// ----- retention -------------------------------------------------------------

/// The event `event_id` setting `status` on top of `state` at `at`, and the
/// state after it.
fn status_at(
    state: &GameState,
    event_id: &str,
    status: Status,
    at: i64,
) -> (CommitEvent, GameState) {
    let mut next = state.clone();
    next.seq += 1;
    next.status = status;
    let diff = json!({"seq": next.seq, "status": status.as_str()});
    let event = Event {
        event_id: event_id.into(),
        expected_seq: None,
        action: Action::Status { status },
    };
    let fingerprint = event.fingerprint();
    let record = Record::Event {
        game: state.game.clone(),
        seq: next.seq,
        event,
        fingerprint,
        by: "tester".into(),
        at,
        diff: diff.clone(),
    };
    let event = CommitEvent {
        event_id: event_id.into(),
        fingerprint,
        frame: codec::diff(&state.game, next.seq, &diff, at),
        record: rmp_serde::to_vec_named(&record).unwrap(),
        at,
    };
    (event, next)
}

/// Commits one event, expecting success.
async fn commit_ok(store: &RedisStore, state: &GameState, event: CommitEvent, next: &GameState) {
    let outcome = store.commit(&state.game, state.seq, &[event], next).await;
    assert_eq!(outcome.unwrap(), Commit::Applied { last_seq: next.seq });
}

/// The four keys of a game.
fn game_keys(store: &RedisStore, id: &GameId) -> [String; 4] {
    ["state", "meta", "ids", "log"].map(|suffix| store.names().key(id, suffix))
}

async fn raw(store: &RedisStore) -> ::redis::aio::MultiplexedConnection {
    store
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// `PEXPIRETIME` of each of the game's keys (-1: none, -2: no key).
async fn expire_times(store: &RedisStore, id: &GameId) -> Vec<i64> {
    let mut conn = raw(store).await;
    let mut out = Vec::new();
    for key in game_keys(store, id) {
        let t: i64 = ::redis::cmd("PEXPIRETIME")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        out.push(t);
    }
    out
}

async fn zscore(store: &RedisStore, set: &str, id: &GameId) -> Option<i64> {
    let mut conn = raw(store).await;
    ::redis::cmd("ZSCORE")
        .arg(set)
        .arg(id.as_str())
        .query_async(&mut conn)
        .await
        .unwrap()
}

async fn meta_expires(store: &RedisStore, id: &GameId) -> Option<i64> {
    let mut conn = raw(store).await;
    ::redis::cmd("HGET")
        .arg(store.names().key(id, "meta"))
        .arg("expires")
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_finished_game_gets_ttls_that_move_with_its_events_and_reopening_persists_them() {
    let server = RedisServer::start();
    let hour = Duration::from_secs(3600);
    let store = RedisStore::connect(&server.url())
        .await
        .unwrap()
        .with_retention(Retention::new(hour));
    let state = create(&store, "nba:x", Status::Live).await;
    let id = state.game.clone();
    let state = apply(&store, &state, &["e1"]).await;
    assert_eq!(
        expire_times(&store, &id).await,
        [-1; 4],
        "a live game keeps its keys"
    );
    let expiring = store.names().expiring();
    assert_eq!(zscore(&store, &expiring, &id).await, None);

    let now = unix_now_ms();
    let (event, finished) = status_at(&state, "fin", Status::Final, now);
    commit_ok(&store, &state, event.clone(), &finished).await;
    let expires = now + 3_600_000;
    assert_eq!(expire_times(&store, &id).await, [expires; 4]);
    assert_eq!(meta_expires(&store, &id).await, Some(expires));
    assert_eq!(zscore(&store, &expiring, &id).await, Some(expires));

    // Inside retention a retry is still a duplicate, with its seq.
    let retry = store.commit(&id, state.seq, &[event], &finished).await;
    assert!(
        matches!(
            retry.unwrap(),
            Commit::Seen { index: 0, seq, .. } if seq == finished.seq
        ),
        "a retried event of a finished game is seen, with its seq"
    );

    // A correction after the final whistle restarts the clock.
    let (event, corrected) = status_at(&finished, "fin2", Status::Final, now + 5);
    commit_ok(&store, &finished, event, &corrected).await;
    assert_eq!(expire_times(&store, &id).await, [expires + 5; 4]);
    assert_eq!(zscore(&store, &expiring, &id).await, Some(expires + 5));

    // Reopened: the keys stay for good, the clock is cleared.
    let (event, reopened) = status_at(&corrected, "again", Status::Live, now + 9);
    commit_ok(&store, &corrected, event, &reopened).await;
    assert_eq!(expire_times(&store, &id).await, [-1; 4]);
    assert_eq!(meta_expires(&store, &id).await, None);
    assert_eq!(store.load(&id).await.unwrap().unwrap().state, reopened);

    // A game created finished expires too (it has a state and a meta hash).
    let cancelled = create(&store, "nba:off", Status::Cancelled).await;
    let times = expire_times(&store, &cancelled.game).await;
    assert_eq!(times[0], times[1]);
    assert!(times[0] > 0, "{times:?}");
    assert_eq!(&times[2..], [-2, -2], "no ids or log yet");
}

#[tokio::test]
async fn past_retention_a_finished_game_is_gone_from_its_keys_and_from_listing() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url())
        .await
        .unwrap()
        .with_retention(Retention::new(Duration::from_millis(300)));
    let done = create(&store, "nba:done", Status::Live).await;
    let live = create(&store, "nba:live", Status::Live).await;
    let back = create(&store, "nba:back", Status::Live).await;
    let (event, finished) = status_at(&done, "fin", Status::Final, unix_now_ms());
    commit_ok(&store, &done, event, &finished).await;
    // Finished, then reopened: its entry in the expiring set goes stale.
    let (event, back_finished) = status_at(&back, "fin", Status::Final, unix_now_ms());
    commit_ok(&store, &back, event, &back_finished).await;
    let (event, back_live) = status_at(&back_finished, "again", Status::Live, unix_now_ms());
    commit_ok(&store, &back_finished, event, &back_live).await;

    let id = done.game.clone();
    let keys = game_keys(&store, &id);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut conn = raw(&store).await;
        let left: i64 = ::redis::cmd("EXISTS")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} keys of {id} left after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.load(&id).await.unwrap(), None);
    let (event, next) = status_at(&finished, "late", Status::Live, unix_now_ms());
    assert_eq!(
        store
            .commit(&id, finished.seq, &[event], &next)
            .await
            .unwrap(),
        Commit::Missing
    );

    // Listing sweeps it out of the games index (the stale entry of the
    // reopened game goes, the game stays).
    let (games, _) = store.list(None, None, 10, None).await.unwrap();
    let listed: Vec<&str> = games.iter().map(|g| g.game.as_str()).collect();
    assert_eq!(listed, ["nba:back", "nba:live"]);
    let (games_set, expiring) = (store.names().games(), store.names().expiring());
    assert_eq!(zscore(&store, &games_set, &id).await, None, "unlisted");
    assert_eq!(zscore(&store, &expiring, &id).await, None);
    assert_eq!(zscore(&store, &expiring, &back.game).await, None);
    assert_eq!(zscore(&store, &games_set, &back.game).await, Some(0));
    assert_eq!(zscore(&store, &games_set, &live.game).await, Some(0));
    let nba = League::parse("nba").unwrap();
    assert_eq!(
        store.league_games(&nba).await.unwrap(),
        vec![back.game.clone(), live.game.clone()]
    );
    assert_eq!(
        store.sweep_expired().await.unwrap(),
        0,
        "nothing left to sweep"
    );

    // The id is free: a new game of it starts at seq 0 and is listed.
    let again = create(&store, "nba:done", Status::Scheduled).await;
    assert_eq!(store.load(&id).await.unwrap().unwrap().state, again);
    let (games, _) = store.list(Some(&nba), None, 10, None).await.unwrap();
    assert_eq!(games.len(), 3);
}

#[tokio::test]
async fn occupancy_sums_live_reports_and_forgets_expired_and_withdrawn_ones() {
    let (_server, store) = setup().await;
    let mut conn = store
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let (a, b) = (gid("nba:a"), gid("nba:b"));
    let long = Duration::from_secs(60);
    // Node x reports both games, node y one: the totals are the sums.
    assert_eq!(
        store
            .occupancy("x", long, &[(a.clone(), 3), (b.clone(), 0)])
            .await
            .unwrap(),
        [3, 0]
    );
    assert_eq!(
        store.occupancy("y", long, &[(a.clone(), 4)]).await.unwrap(),
        [7]
    );
    // A report again replaces the node's count; it is not added.
    assert_eq!(
        store.occupancy("y", long, &[(a.clone(), 2)]).await.unwrap(),
        [5]
    );
    let key = store.names().key(&a, "occ");
    let pttl: i64 = ::redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        pttl > 0 && pttl <= 60_000,
        "the key expires with the reports: {pttl}"
    );
    // No key for a game nobody watches.
    let exists: bool = ::redis::cmd("EXISTS")
        .arg(store.names().key(&b, "occ"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!exists);

    // A report that outlived its ttl (a dead node) is not counted, and goes.
    assert_eq!(
        store
            .occupancy("z", Duration::from_millis(100), &[(a.clone(), 10)])
            .await
            .unwrap(),
        [15]
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        store.occupancy("x", long, &[(a.clone(), 3)]).await.unwrap(),
        [5]
    );
    let fields: Vec<String> = ::redis::cmd("HKEYS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut fields = fields;
    fields.sort();
    assert_eq!(fields, ["x", "y"], "the expired report was removed");

    // 0 withdraws a node's report; the last one out removes the key.
    assert_eq!(
        store.occupancy("x", long, &[(a.clone(), 0)]).await.unwrap(),
        [2]
    );
    assert_eq!(
        store.occupancy("y", long, &[(a.clone(), 0)]).await.unwrap(),
        [0]
    );
    let exists: bool = ::redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!exists, "nothing is left behind");

    // The whole key expires when every node stops reporting.
    store
        .occupancy("x", Duration::from_millis(100), &[(a.clone(), 1)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let exists: bool = ::redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        !exists,
        "a deployment whose nodes all died leaves no occupancy key"
    );
}
