//! The scorekeeper API, read routes and operations routes (contract §2, §4).

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use scorehub::auth::Scope;
use serde_json::{Value, json};

use crate::common::{Body, Fan, TestHub, WAIT, encode_query, eventually, new_game, sample, score};

const GAME: &str = "nba:2026-11-22-lal-bos";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_game_creates_then_is_idempotent_then_conflicts() {
    let hub = TestHub::start().await;
    let body = json!({
        "home": {"name": "Lakers"},
        "away": {"name": "Celtics"},
        "status": "scheduled",
        "period": 0,
        "extra": {"venue": "Crypto.com Arena"}
    });
    let r = hub.put_game_with(GAME, body.clone()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let created = r.json();
    assert_eq!(created["game"], GAME);
    assert_eq!(created["seq"], 0);

    let r = hub.put_game_with(GAME, body.clone()).await;
    assert_eq!(r.status, 200, "same body again: {}", r.text);

    // Still the same body after the game moved on.
    hub.post_ok(GAME, score("e1", "home", 2)).await;
    let r = hub.put_game_with(GAME, body).await;
    assert_eq!(r.status, 200, "same body after an event: {}", r.text);

    let r = hub.put_game_with(GAME, new_game("Lakers", "Knicks")).await;
    r.assert_error(409, "game_exists");

    let state = hub.get_game(GAME).await;
    assert_eq!(state["game"], GAME);
    assert_eq!(state["seq"], 1);
    assert_eq!(state["status"], "scheduled");
    assert_eq!(state["period"], 0);
    assert_eq!(state["home"], json!({"name": "Lakers", "score": 2}));
    assert_eq!(state["away"], json!({"name": "Celtics", "score": 0}));
    assert_eq!(state["extra"], json!({"venue": "Crypto.com Arena"}));
    assert!(state["clock"]["ms"].is_u64(), "{state}");
    assert!(state["clock"]["running"].is_boolean(), "{state}");
    assert!(state["clock"]["at"].is_i64(), "{state}");
}

/// Sends `method path` with a JSON `body` and a league token over a raw
/// connection, then hangs up without reading the answer: what a
/// scorekeeper's client does when its connection drops or it times out.
async fn send_and_hang_up(hub: &TestHub, method: &str, path: &str, game: &str, body: &Value) {
    use tokio::io::AsyncWriteExt;
    let host = hub.url("").trim_start_matches("http://").to_string();
    let body = body.to_string();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        hub.writer(game),
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(&host)
        .await
        .expect("connecting to the hub");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("writing the request");
    drop(stream);
}

/// A client that hangs up while its game is being created must not leave
/// the game durable but unserved: the retry gets 200 or 201, and the game
/// is there. (Before the fix, the handler could be dropped between the
/// durable append and the start of the game's actor; the retry then got 503
/// and the game 404 until a restart. It showed within a few attempts.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_client_hangs_up_is_served_and_retries_succeed() {
    let hub = TestHub::start().await;
    let body = new_game("Home", "Away");
    for attempt in 0..40 {
        let id = format!("nba:hangup-{attempt}");
        send_and_hang_up(&hub, "PUT", &format!("/v1/games/{id}"), &id, &body).await;
        let retry = hub.put_game_with(&id, body.clone()).await;
        assert!(
            matches!(retry.status, 200 | 201),
            "attempt {attempt}: the retried PUT of {id} got {} {}",
            retry.status,
            retry.text
        );
        let read = hub.get(&format!("/v1/games/{id}")).await;
        assert_eq!(read.status, 200, "attempt {attempt}: {}", read.text);
        let seq = hub.post_ok(&id, score("e1", "home", 1)).await;
        assert_eq!(seq, 1, "attempt {attempt}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_apply_and_retries_are_idempotent() {
    let hub = TestHub::start().await;
    hub.put_game(GAME).await;

    let r = hub.post_event(GAME, score("e1", "home", 3)).await;
    assert_eq!(
        r.ok_json(),
        json!({"game": GAME, "seq": 1, "duplicate": false})
    );
    let r = hub.post_event(GAME, score("e2", "away", 2)).await;
    assert_eq!(r.ok_json()["seq"], 2);

    // The same event again: the original seq, flagged duplicate, nothing applied.
    let r = hub.post_event(GAME, score("e1", "home", 3)).await;
    assert_eq!(
        r.ok_json(),
        json!({"game": GAME, "seq": 1, "duplicate": true})
    );
    let state = hub.get_game(GAME).await;
    assert_eq!(state["seq"], 2);
    assert_eq!(state["home"]["score"], 3);
    assert_eq!(state["away"]["score"], 2);

    // The same id with another body is a conflict, still nothing applied.
    let r = hub.post_event(GAME, score("e1", "home", 2)).await;
    r.assert_error(409, "event_id_conflict");
    let after = hub.get_game(GAME).await;
    assert_eq!(after, state, "a conflicting retry changed the state");

    // Every kind applies.
    let seq = hub
        .post_ok(
            GAME,
            json!({"event_id": "c1", "kind": "clock", "period": 2, "ms": 720000, "running": true}),
        )
        .await;
    assert_eq!(seq, 3);
    hub.post_ok(
        GAME,
        json!({"event_id": "s1", "kind": "status", "status": "live"}),
    )
    .await;
    hub.post_ok(
        GAME,
        json!({"event_id": "p1", "kind": "set", "patch": {"extra": {"possession": "home", "fouls": 4}}}),
    )
    .await;
    let state = hub.get_game(GAME).await;
    assert_eq!(state["seq"], 5);
    assert_eq!(state["period"], 2);
    assert_eq!(state["clock"]["ms"], 720000);
    assert_eq!(state["clock"]["running"], true);
    assert_eq!(state["status"], "live");
    assert_eq!(state["extra"], json!({"possession": "home", "fouls": 4}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_seq_mismatch_is_412_and_applies_nothing() {
    let hub = TestHub::start().await;
    hub.put_game(GAME).await;
    hub.post_ok(GAME, score("e1", "home", 1)).await;
    let before = hub.get_game(GAME).await;

    let mut ev = score("e2", "home", 2);
    ev["expected_seq"] = json!(5);
    hub.post_event(GAME, ev)
        .await
        .assert_error(412, "seq_mismatch");
    assert_eq!(hub.get_game(GAME).await, before);

    let mut ev = score("e2", "home", 2);
    ev["expected_seq"] = json!(1);
    assert_eq!(hub.post_ok(GAME, ev).await, 2);
    assert_eq!(hub.get_game(GAME).await["home"]["score"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_game_is_404() {
    let hub = TestHub::start().await;
    hub.post_event("nba:nope", score("e1", "home", 1))
        .await
        .assert_error(404, "game_not_found");
    hub.get("/v1/games/nba:nope")
        .await
        .assert_error(404, "game_not_found");
}

/// An HS256 token signed with the right secret but expired an hour ago.
fn expired_token() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let claims = json!({
        "sub": "late",
        "exp": now - 3600,
        "iat": now - 7200,
        "scope": "scorekeeper",
        "games": ["nba:*"],
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(crate::common::SECRET.as_bytes()),
    )
    .expect("encoding a JWT")
}

/// A well-formed token signed with another secret.
fn foreign_token() -> String {
    let claims = json!({
        "sub": "mallory",
        "exp": 4_102_444_800u64,
        "scope": "admin",
        "games": ["*"],
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&[7u8; 64]),
    )
    .expect("encoding a JWT")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked() {
    let hub = TestHub::start().await;
    hub.put_game(GAME).await;
    let path = format!("/v1/games/{GAME}/events");
    let ev = score("e1", "home", 1);

    let r = hub
        .call(Method::POST, &path, None, Body::Json(ev.clone()), &[])
        .await;
    assert_eq!(r.status, 401, "no token: {}", r.text);
    r.assert_error_shape();

    for (what, token) in [
        ("garbage", "not-a-token".to_owned()),
        ("other secret", foreign_token()),
        ("expired", expired_token()),
    ] {
        let r = hub
            .call(
                Method::POST,
                &path,
                Some(&token),
                Body::Json(ev.clone()),
                &[],
            )
            .await;
        assert_eq!(r.status, 401, "{what} token: {}", r.text);
        r.assert_error_shape();
    }

    // Valid, but for another league (and another game of the same league).
    for games in [["nhl:*"], ["nba:other-game"]] {
        let token = hub.token(&games, Scope::Scorekeeper);
        let r = hub
            .call(
                Method::POST,
                &path,
                Some(&token),
                Body::Json(ev.clone()),
                &[],
            )
            .await;
        assert_eq!(r.status, 403, "token for {games:?}: {}", r.text);
        r.assert_error_shape();
        let r = hub
            .call(
                Method::PUT,
                "/v1/games/nba:another",
                Some(&token),
                Body::Json(new_game("A", "B")),
                &[],
            )
            .await;
        assert_eq!(r.status, 403, "PUT with token for {games:?}: {}", r.text);
        r.assert_error_shape();
    }

    // The exact game id in the token is enough; so is an admin token for `*`.
    let exact = hub.token(&[GAME], Scope::Scorekeeper);
    let r = hub
        .post_event_as(GAME, &exact, score("e1", "home", 1))
        .await;
    assert_eq!(r.ok_json()["seq"], 1);
    let admin = hub.token(&["*"], Scope::Admin);
    let r = hub
        .post_event_as(GAME, &admin, score("e2", "home", 1))
        .await;
    assert_eq!(r.ok_json()["seq"], 2);
    // Nothing the refused requests sent was applied.
    assert_eq!(hub.get_game(GAME).await["home"]["score"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_the_fitting_status() {
    let hub = TestHub::start().await;
    hub.put_game(GAME).await;
    let token = hub.writer(GAME);
    let path = format!("/v1/games/{GAME}/events");
    let post = |body: Body, headers: &'static [(&'static str, &'static str)]| {
        hub.call(Method::POST, &path, Some(&token), body, headers)
    };

    // Not JSON at all.
    let r = post(
        Body::Raw(Some("application/json"), b"{\"event_id\": ".to_vec()),
        &[],
    )
    .await;
    assert_eq!(r.status, 400, "invalid JSON: {}", r.text);
    r.assert_error_shape();

    // Missing fields: the message names them.
    let r = post(
        Body::Json(json!({"kind": "score", "team": "home", "points": 1})),
        &[],
    )
    .await;
    assert_eq!(r.status, 400, "missing event_id: {}", r.text);
    let (_, msg) = r.assert_error_shape();
    assert!(
        msg.contains("event_id"),
        "message should name event_id: {msg}"
    );

    let r = post(
        Body::Json(json!({"event_id": "e1", "kind": "score", "team": "home"})),
        &[],
    )
    .await;
    assert_eq!(r.status, 400, "missing points: {}", r.text);
    let (_, msg) = r.assert_error_shape();
    assert!(msg.contains("points"), "message should name points: {msg}");

    // Wrong type: the message names the field.
    let r = post(
        Body::Json(json!({"event_id": "e1", "kind": "score", "team": "home", "points": "three"})),
        &[],
    )
    .await;
    assert_eq!(r.status, 400, "points as a string: {}", r.text);
    let (_, msg) = r.assert_error_shape();
    assert!(msg.contains("points"), "message should name points: {msg}");

    // Well-formed but invalid: 422.
    let r = post(Body::Json(score("e1", "visitors", 1)), &[]).await;
    assert_eq!(r.status, 422, "unknown team: {}", r.text);
    r.assert_error_shape();

    // Too large: 413 (the limit is 64 KiB by default).
    let mut big = score("e1", "home", 1);
    big["padding"] = json!("x".repeat(70 * 1024));
    let r = post(Body::Json(big), &[]).await;
    assert_eq!(r.status, 413, "70 KiB body: {}", r.text);
    r.assert_error_shape();

    // Wrong content type: 415.
    let valid = serde_json::to_vec(&score("e1", "home", 1)).expect("JSON encodes");
    let r = post(Body::Raw(Some("text/plain"), valid.clone()), &[]).await;
    assert_eq!(r.status, 415, "text/plain: {}", r.text);
    r.assert_error_shape();
    let r = post(Body::Raw(None, valid.clone()), &[]).await;
    assert_eq!(r.status, 415, "no content type: {}", r.text);
    r.assert_error_shape();

    // None of that changed the game.
    let state = hub.get_game(GAME).await;
    assert_eq!(state["seq"], 0, "{state}");

    // The same event with the right type applies (parameters are fine).
    let r = post(
        Body::Raw(Some("application/json; charset=utf-8"), valid),
        &[],
    )
    .await;
    assert_eq!(r.ok_json()["seq"], 1);

    // History of an unknown game: 404.
    let r = hub
        .call(
            Method::GET,
            "/v1/games/nba:nope/events",
            Some(&token),
            Body::None,
            &[],
        )
        .await;
    r.assert_error(404, "game_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messagepack_bodies_are_accepted() {
    let hub = TestHub::start().await;
    let token = hub.writer(GAME);
    let r = hub
        .call(
            Method::PUT,
            &format!("/v1/games/{GAME}"),
            Some(&token),
            Body::Msgpack(new_game("Lakers", "Celtics")),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "PUT as MessagePack: {}", r.text);
    let r = hub
        .call(
            Method::POST,
            &format!("/v1/games/{GAME}/events"),
            Some(&token),
            Body::Msgpack(score("m1", "away", 2)),
            &[],
        )
        .await;
    assert_eq!(
        r.ok_json(),
        json!({"game": GAME, "seq": 1, "duplicate": false})
    );
    // The same event as JSON is recognised as the same body.
    let r = hub.post_event(GAME, score("m1", "away", 2)).await;
    assert_eq!(r.ok_json()["duplicate"], true);
    let state = hub.get_game(GAME).await;
    assert_eq!(state["away"], json!({"name": "Celtics", "score": 2}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_applies_in_order_with_per_item_results() {
    let hub = TestHub::start().await;
    let (a, b) = ("nba:a", "nba:b");
    hub.put_game(a).await;
    hub.put_game(b).await;
    hub.put_game("nhl:x").await;
    let token = hub.writer(a);

    let item = |game: &str, ev: Value| {
        let mut ev = ev;
        ev["game"] = json!(game);
        ev
    };
    let events = vec![
        item(a, score("e1", "home", 1)),
        item(b, score("e1", "away", 2)),
        item("nba:gone", score("bad", "home", 1)),
        item("nba:missing", score("e1", "home", 1)),
        item(a, score("e1", "home", 1)),
        item(a, score("e1", "home", 5)),
        item("nhl:x", score("e1", "home", 1)),
        item(a, score("e2", "away", 3)),
    ];
    let r = hub
        .call(
            Method::POST,
            "/v1/events",
            Some(&token),
            Body::Json(json!({"events": events})),
            &[],
        )
        .await;
    let body = r.ok_json();
    let results = body["results"].as_array().expect("results array");
    assert_eq!(results.len(), 8, "{body}");
    assert_eq!(results[0], json!({"game": a, "seq": 1, "duplicate": false}));
    assert_eq!(results[1], json!({"game": b, "seq": 1, "duplicate": false}));
    let code = |i: usize| -> String {
        let err = results[i]["error"]
            .as_object()
            .unwrap_or_else(|| panic!("item {i} should be an error: {body}"));
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        err["code"].as_str().expect("code").to_owned()
    };
    code(2); // unknown game (a malformed item would refuse the whole batch)
    assert_eq!(code(3), "game_not_found");
    assert_eq!(results[4], json!({"game": a, "seq": 1, "duplicate": true}));
    assert_eq!(code(5), "event_id_conflict");
    code(6); // the token may not write nhl
    assert_eq!(results[7], json!({"game": a, "seq": 2, "duplicate": false}));

    let state = hub.get_game(a).await;
    assert_eq!(
        (state["seq"].clone(), state["home"]["score"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(state["away"]["score"], 3);
    assert_eq!(hub.get_game("nhl:x").await["seq"], 0);

    // 500 items are fine, 501 are refused as a whole.
    let many: Vec<Value> = (0..500)
        .map(|i| item(b, score(&format!("n{i}"), "home", 1)))
        .collect();
    let r = hub
        .call(
            Method::POST,
            "/v1/events",
            Some(&token),
            Body::Json(json!({"events": many})),
            &[],
        )
        .await;
    let body = r.ok_json();
    assert_eq!(body["results"].as_array().map(Vec::len), Some(500));
    assert_eq!(body["results"][499]["seq"], 501);

    let too_many: Vec<Value> = (0..501)
        .map(|i| item(b, score(&format!("m{i}"), "home", 1)))
        .collect();
    let r = hub
        .call(
            Method::POST,
            "/v1/events",
            Some(&token),
            Body::Json(json!({"events": too_many})),
            &[],
        )
        .await;
    assert_eq!(r.status, 400, "501 items: {}", r.text);
    r.assert_error_shape();
    assert_eq!(
        hub.get_game(b).await["seq"],
        501,
        "a refused batch applied items"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_game_has_an_etag() {
    let hub = TestHub::start().await;
    hub.put_game(GAME).await;
    hub.post_ok(GAME, score("e1", "home", 1)).await;
    hub.post_ok(GAME, score("e2", "home", 1)).await;
    let path = format!("/v1/games/{GAME}");

    let r = hub.get(&path).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag").as_deref(), Some("\"2\""));
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        r.headers
    );

    let r = hub
        .call(
            Method::GET,
            &path,
            None,
            Body::None,
            &[("if-none-match", "\"2\"")],
        )
        .await;
    assert_eq!(r.status, 304, "{}", r.text);
    assert!(r.text.is_empty(), "304 with a body: {}", r.text);

    hub.post_ok(GAME, score("e3", "home", 1)).await;
    let r = hub
        .call(
            Method::GET,
            &path,
            None,
            Body::None,
            &[("if-none-match", "\"2\"")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag").as_deref(), Some("\"3\""));
    assert_eq!(r.json()["seq"], 3);
}

/// Every game id listed by following `next_cursor` from `query`; also checks
/// that no page is larger than `limit` and that ids never repeat.
async fn list_all(hub: &TestHub, query: &str, limit: usize) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/games?{query}&limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", encode_query(c)));
        }
        let body = hub.get(&path).await.ok_json();
        pages += 1;
        assert!(pages <= 50, "pagination does not end: {body}");
        let games = body["games"].as_array().expect("games array");
        assert!(
            games.len() <= limit,
            "page larger than limit {limit}: {body}"
        );
        for g in games {
            let id = g["game"].as_str().expect("state has game").to_owned();
            assert!(!ids.contains(&id), "{id} listed twice");
            ids.push(id);
        }
        match &body["next_cursor"] {
            Value::Null => return (ids, pages),
            Value::String(c) => cursor = Some(c.clone()),
            other => panic!("next_cursor must be a string or null, got {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_and_paginates() {
    let hub = TestHub::start().await;
    let nba: Vec<String> = (1..=7).map(|i| format!("nba:g{i}")).collect();
    for id in &nba {
        hub.put_game(id).await;
    }
    hub.put_game("nhl:h1").await;
    hub.put_game("nhl:h2").await;
    for id in ["nba:g2", "nba:g5", "nhl:h1"] {
        hub.post_ok(
            id,
            json!({"event_id": "go", "kind": "status", "status": "live"}),
        )
        .await;
    }

    let (ids, pages) = list_all(&hub, "league=nba", 3).await;
    assert_eq!(pages, 3, "7 games at 3 a page");
    let got: BTreeSet<_> = ids.into_iter().collect();
    assert_eq!(got, nba.iter().cloned().collect::<BTreeSet<_>>());

    let (ids, _) = list_all(&hub, "league=nba&status=live", 50).await;
    assert_eq!(
        ids.into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from(["nba:g2".to_owned(), "nba:g5".to_owned()])
    );

    let body = hub.get("/v1/games?league=nhl").await.ok_json();
    let games = body["games"].as_array().expect("games array");
    assert_eq!(games.len(), 2, "{body}");
    assert_eq!(body["next_cursor"], Value::Null);
    // Listed games are full states.
    let h1 = games
        .iter()
        .find(|g| g["game"] == "nhl:h1")
        .expect("nhl:h1");
    assert_eq!(*h1, hub.get_game("nhl:h1").await);

    let (all, _) = list_all(&hub, "status=scheduled", 4).await;
    assert_eq!(all.len(), 6, "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_history_pages_and_names_the_poster() {
    let hub = TestHub::start().await;
    hub.put_game(GAME).await;
    let alice = hub.token_for("alice", &["nba:*"], Scope::Scorekeeper);
    for i in 1..=5 {
        let r = hub
            .post_event_as(GAME, &alice, score(&format!("a{i}"), "home", i))
            .await;
        assert_eq!(r.ok_json()["seq"], i);
    }
    let path =
        |since: u64, limit: u64| format!("/v1/games/{GAME}/events?since={since}&limit={limit}");

    // No token: 401.
    let r = hub.get(&path(0, 2)).await;
    assert_eq!(r.status, 401, "history without a token: {}", r.text);
    r.assert_error_shape();

    // Any valid token may read, also one for another league.
    let reader = hub.token_for("reader", &["nhl:*"], Scope::Scorekeeper);
    let hub = &hub;
    let page = |since, limit| {
        let p = path(since, limit);
        let reader = reader.clone();
        async move {
            hub.call(Method::GET, &p, Some(&reader), Body::None, &[])
                .await
                .ok_json()
        }
    };
    let first = page(0, 2).await;
    let events = first["events"].as_array().expect("events array");
    assert_eq!(events.len(), 2, "{first}");
    let e1 = &events[0];
    assert_eq!(e1["seq"], 1);
    assert_eq!(e1["event_id"], "a1");
    assert_eq!(e1["kind"], "score");
    assert_eq!(e1["team"], "home");
    assert_eq!(e1["points"], 1);
    assert_eq!(e1["by"], "alice");
    assert!(
        e1["at"].as_i64().is_some_and(|at| at > 1_600_000_000_000),
        "{e1}"
    );
    assert_eq!(events[1]["seq"], 2);

    // Follow `next` to the end.
    let mut seqs = vec![1, 2];
    let mut next = first["next"].as_u64().expect("next is a number");
    for _ in 0..10 {
        let body = page(next, 2).await;
        let events = body["events"].as_array().expect("events array");
        if events.is_empty() {
            break;
        }
        seqs.extend(events.iter().map(|e| e["seq"].as_u64().expect("seq")));
        next = body["next"].as_u64().expect("next is a number");
    }
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);

    let body = page(3, 100).await;
    let seqs: Vec<_> = body["events"]
        .as_array()
        .expect("events array")
        .iter()
        .map(|e| e["seq"].clone())
        .collect();
    assert_eq!(seqs, vec![json!(4), json!(5)], "since=3 means after seq 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_3_1_and_lists_the_routes() {
    let hub = TestHub::start().await;
    let reply = hub.get("/v1/openapi.json").await;
    assert_eq!(
        reply.headers["content-type"], "application/json",
        "{:?}",
        reply.headers
    );
    // Served exactly as generated from the code (and as the snapshot in web/).
    assert_eq!(reply.text, scorehub::http::openapi::render());
    let doc = reply.ok_json();
    let version = doc["openapi"].as_str().expect("openapi is a string");
    assert!(version.starts_with("3.1"), "openapi version {version}");
    let paths = doc["paths"].as_object().expect("paths object");
    let keys: Vec<&String> = paths.keys().collect();
    let has = |pred: &dyn Fn(&str) -> bool| keys.iter().any(|k| pred(k));
    assert!(has(&|k| k == "/v1/games"), "{keys:?}");
    assert!(has(&|k| k == "/v1/events"), "{keys:?}");
    assert!(
        has(&|k| k.starts_with("/v1/games/{") && k.ends_with('}')),
        "{keys:?}"
    );
    assert!(
        has(&|k| k.starts_with("/v1/games/{") && k.ends_with("}/events")),
        "{keys:?}"
    );
    let game = paths
        .iter()
        .find(|(k, _)| k.starts_with("/v1/games/{") && k.ends_with('}'))
        .map(|(_, v)| v)
        .expect("the game path");
    assert!(
        game.get("put").is_some() && game.get("get").is_some(),
        "{game}"
    );
    // Writes: bearer auth, JSON and MessagePack bodies, 429 with Retry-After, 503.
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    let rate_limited = &doc["components"]["responses"]["RateLimited"];
    assert!(
        rate_limited["headers"].get("Retry-After").is_some(),
        "{rate_limited}"
    );
    for (path, method) in [
        ("/v1/games/{id}", "put"),
        ("/v1/games/{id}/events", "post"),
        ("/v1/events", "post"),
    ] {
        let op = &paths[path][method];
        assert!(
            op["security"][0].get("bearerAuth").is_some(),
            "{method} {path}"
        );
        let content = &op["requestBody"]["content"];
        assert!(
            content.get("application/json").is_some()
                && content.get("application/msgpack").is_some(),
            "{method} {path}: {content}"
        );
        for status in ["400", "401", "413", "415", "429", "503"] {
            assert!(
                op["responses"].get(status).is_some(),
                "{method} {path} lacks {status}"
            );
        }
    }
    for path in [
        "/v1/ws",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/openapi.json",
    ] {
        assert!(paths[path].get("get").is_some(), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_use_the_error_shape() {
    let hub = TestHub::start().await;
    let r = hub.get("/v1/nothing-here").await;
    assert_eq!(r.status, 404);
    r.assert_error_shape();
    let r = hub
        .call(
            Method::DELETE,
            &format!("/v1/games/{GAME}"),
            None,
            Body::None,
            &[],
        )
        .await;
    assert!(
        r.status == 405 || r.status == 401 || r.status == 404,
        "DELETE: {} {}",
        r.status,
        r.text
    );
    r.assert_error_shape();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let hub = TestHub::start().await;
    assert_eq!(hub.get("/healthz").await.status, 200);
    assert_eq!(hub.get("/readyz").await.status, 200);

    let before = hub.get("/metrics").await;
    assert_eq!(before.status, 200);
    let applied =
        |text: &str| sample(text, "scorehub_events_total", "outcome=\"applied\"").unwrap_or(0.0);
    let applied_before = applied(&before.text);

    // Some traffic: a game, a fan, events, a duplicate, a rejected event.
    hub.put_game(GAME).await;
    let mut fan = Fan::connect(&hub.ws_url(&format!("games={GAME}"))).await;
    assert_eq!(fan.next_frame(WAIT).await.t, "s");
    hub.post_ok(GAME, score("e1", "home", 1)).await;
    assert_eq!(fan.next_frame(WAIT).await.t, "d");
    hub.post_event(GAME, score("e1", "home", 1)).await;
    hub.post_event(GAME, score("e2", "visitors", 1)).await;
    fan.send_text("nonsense").await;
    assert_eq!(fan.next_frame(WAIT).await.t, "e");

    // Frames are counted when written; the fan may see them a moment before.
    eventually("frames_sent_total to count our frames", WAIT, || async {
        let text = hub.get("/metrics").await.text;
        ["snapshot", "diff", "error"].iter().all(|kind| {
            sample(
                &text,
                "scorehub_frames_sent_total",
                &format!("kind=\"{kind}\""),
            )
            .is_some_and(|v| v >= 1.0)
        })
    })
    .await;
    let r = hub.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        r.headers
    );
    let text = r.text;
    for name in [
        "scorehub_ws_connections",
        "scorehub_ws_subscriptions",
        "scorehub_games_active",
        "scorehub_events_total",
        "scorehub_frames_sent_total",
        "scorehub_fanout_seconds",
        "scorehub_slow_consumer_total",
        "scorehub_http_requests_total",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "/metrics lacks {name}:\n{text}"
        );
    }
    // Single node: redis_up is 0 or absent.
    if let Some(up) = sample(&text, "scorehub_redis_up", "") {
        assert_eq!(up, 0.0, "scorehub_redis_up in single-node mode");
    }
    for outcome in ["applied", "duplicate", "rejected"] {
        assert!(
            sample(
                &text,
                "scorehub_events_total",
                &format!("outcome=\"{outcome}\"")
            )
            .is_some(),
            "no events_total{{outcome=\"{outcome}\"}}:\n{text}"
        );
    }
    for kind in ["snapshot", "diff", "error"] {
        assert!(
            sample(
                &text,
                "scorehub_frames_sent_total",
                &format!("kind=\"{kind}\"")
            )
            .is_some_and(|v| v >= 1.0),
            "frames_sent_total{{kind=\"{kind}\"}} should count our frames:\n{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("scorehub_http_requests_total{")
                && l.contains("route=\"")
                && l.contains("status=\"")),
        "http_requests_total needs route and status labels:\n{text}"
    );
    assert!(
        !text.contains(GAME),
        "a game id leaked into metric labels:\n{text}"
    );
    assert!(
        sample(&text, "scorehub_ws_connections", "").is_some_and(|v| v >= 1.0),
        "our fan is connected:\n{text}"
    );
    assert!(
        applied(&text) > applied_before,
        "events_total{{outcome=\"applied\"}} did not grow ({applied_before} -> {})",
        applied(&text)
    );
    fan.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_returns() {
    let hub = TestHub::start().await;
    hub.put_game(GAME).await;
    let mut fan = Fan::connect(&hub.ws_url(&format!("games={GAME}"))).await;
    assert_eq!(fan.next_frame(WAIT).await.t, "s");
    let stop = tokio::spawn(hub.shutdown());
    assert_eq!(fan.expect_close(Duration::from_secs(10)).await, 1001);
    stop.await.expect("shutdown completes");
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_states_and_ids_are_refused() {
    let hub = TestHub::start().await;
    hub.put_game(GAME).await;
    let before = hub.get_game(GAME).await;

    // More than 32 `extra` keys: 422.
    let extra: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("k{i}"), json!(i))).collect();
    let r = hub
        .post_event(
            GAME,
            json!({"event_id": "x1", "kind": "set", "patch": {"extra": extra}}),
        )
        .await;
    assert_eq!(r.status, 422, "33 extra keys: {}", r.text);
    r.assert_error_shape();

    // `extra` holds scalars only.
    let r = hub
        .post_event(
            GAME,
            json!({"event_id": "x2", "kind": "set", "patch": {"extra": {"nested": {"a": 1}}}}),
        )
        .await;
    assert!(
        matches!(r.status, 400 | 422),
        "nested extra: {} {}",
        r.status,
        r.text
    );
    r.assert_error_shape();

    // A `set` may not touch `game` or `seq`.
    for patch in [json!({"seq": 99}), json!({"game": "nba:other"})] {
        let r = hub
            .post_event(
                GAME,
                json!({"event_id": "x3", "kind": "set", "patch": patch}),
            )
            .await;
        assert!(
            matches!(r.status, 400 | 422),
            "set {patch}: {} {}",
            r.status,
            r.text
        );
        r.assert_error_shape();
    }

    // Unknown kind and status.
    let r = hub
        .post_event(GAME, json!({"event_id": "x5", "kind": "teleport"}))
        .await;
    assert!(matches!(r.status, 400 | 422), "unknown kind: {}", r.text);
    r.assert_error_shape();
    let r = hub
        .post_event(
            GAME,
            json!({"event_id": "x6", "kind": "status", "status": "halftime"}),
        )
        .await;
    assert_eq!(r.status, 422, "unknown status: {}", r.text);
    r.assert_error_shape();

    assert_eq!(
        hub.get_game(GAME).await,
        before,
        "a refused event changed the game"
    );

    // The refused event ids are still free: a refusal records nothing.
    assert_eq!(hub.post_ok(GAME, score("x3", "home", 5)).await, 1);
    // Negative points correct a score.
    assert_eq!(hub.post_ok(GAME, score("x5", "home", -2)).await, 2);
    assert_eq!(hub.get_game(GAME).await["home"]["score"], 3);

    // PUT: a missing team name is a 400 naming it; a bad id is a 400.
    let r = hub
        .put_game_with("nba:new", json!({"home": {"name": "A"}, "away": {}}))
        .await;
    assert_eq!(r.status, 400, "missing away.name: {}", r.text);
    let (_, msg) = r.assert_error_shape();
    assert!(msg.contains("name"), "message should name the field: {msg}");
    let token = hub.token(&["*"], Scope::Admin);
    for id in ["NBA:x", "nba", "nba:has%20space", "nba:x:y"] {
        let r = hub
            .call(
                Method::PUT,
                &format!("/v1/games/{id}"),
                Some(&token),
                Body::Json(new_game("A", "B")),
                &[],
            )
            .await;
        assert_eq!(r.status, 400, "PUT /v1/games/{id}: {}", r.text);
        r.assert_error_shape();
    }
    let r = hub.get("/v1/games/NBA:x").await;
    assert_eq!(r.status, 400, "GET of an invalid id: {}", r.text);
    r.assert_error_shape();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_at_is_server_time() {
    let hub = TestHub::start().await;
    hub.put_game(GAME).await;
    let before = now_ms();
    hub.post_ok(
        GAME,
        json!({"event_id": "c1", "kind": "clock", "period": 1, "ms": 720000, "running": true}),
    )
    .await;
    let after = now_ms();
    let clock = hub.get_game(GAME).await["clock"].clone();
    assert_eq!(clock["ms"], 720000);
    assert_eq!(clock["running"], true);
    let at = clock["at"].as_i64().expect("clock.at");
    assert!(
        (before - 1000..=after + 1000).contains(&at),
        "clock.at {at} is not the server's time of the event ({before}..{after})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posters_get_gapless_seqs() {
    let hub = TestHub::start().await;
    hub.put_game(GAME).await;
    let hub = &hub;
    let posters = (0..4).map(|p| async move {
        let mut seqs = Vec::new();
        for i in 0..50 {
            let team = if p % 2 == 0 { "home" } else { "away" };
            seqs.push(
                hub.post_ok(GAME, score(&format!("p{p}-{i}"), team, 1))
                    .await,
            );
        }
        seqs
    });
    let mut seqs: Vec<u64> = futures_util::future::join_all(posters)
        .await
        .into_iter()
        .flatten()
        .collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=200).collect::<Vec<u64>>(),
        "seqs are 1..=200, each once"
    );
    let state = hub.get_game(GAME).await;
    assert_eq!(state["seq"], 200);
    assert_eq!(state["home"]["score"], 100);
    assert_eq!(state["away"]["score"], 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_apply_once() {
    let hub = TestHub::start().await;
    let hub = &hub;
    // Racing creations: one 201, the rest 200.
    let puts = (0..6).map(|_| hub.put_game_with(GAME, new_game("Home", "Away")));
    let mut statuses: Vec<u16> = futures_util::future::join_all(puts)
        .await
        .iter()
        .map(|r| r.status)
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 201]);

    // Racing retries of one event: applied once, every answer has its seq.
    let posts = (0..10).map(|_| hub.post_event(GAME, score("same", "home", 3)));
    let bodies: Vec<Value> = futures_util::future::join_all(posts)
        .await
        .iter()
        .map(|r| r.ok_json())
        .collect();
    let fresh = bodies.iter().filter(|b| b["duplicate"] == false).count();
    assert_eq!(fresh, 1, "exactly one retry applies: {bodies:?}");
    assert!(bodies.iter().all(|b| b["seq"] == 1), "{bodies:?}");
    let state = hub.get_game(GAME).await;
    assert_eq!(
        (state["seq"].clone(), state["home"]["score"].clone()),
        (json!(1), json!(3))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_served() {
    let hub = TestHub::start().await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/console", "text/html"),
        ("/scorehub.js", "javascript"),
    ] {
        let r = hub.get(path).await;
        assert_eq!(r.status, 200, "GET {path}");
        assert!(
            r.header("content-type").is_some_and(|c| c.contains(kind)),
            "GET {path} content type {:?}",
            r.header("content-type")
        );
        assert!(!r.text.trim().is_empty(), "GET {path} is empty");
    }
}

/// A body over the limit gets its `413` even while the client is still
/// sending (the hub reads the rest before answering, within bounds), and
/// the connection stays usable: no reset eats the answer.
#[tokio::test]
async fn an_oversized_body_gets_its_413_and_the_connection_lives_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let hub = TestHub::start().await;
    hub.put_game(GAME).await;
    let host = hub.base.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&host)
        .await
        .expect("connecting to the hub");
    let mut big = score("e1", "home", 1);
    big["padding"] = json!("x".repeat(200 * 1024));
    let body = serde_json::to_vec(&big).expect("JSON encodes");
    let token = hub.writer(GAME);
    let head = format!(
        "POST /v1/games/{GAME}/events HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes())
        .await
        .expect("sending the head");
    tcp.write_all(&body).await.expect("sending the body");
    // The same connection then asks for the game.
    let next = format!("GET /v1/games/{GAME} HTTP/1.1\r\nhost: {host}\r\n\r\n");
    tcp.write_all(next.as_bytes())
        .await
        .expect("sending the GET");
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let read_both = async {
        loop {
            let n = tcp
                .read(&mut buf)
                .await
                .expect("no reset: the answers arrive");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if text.matches("HTTP/1.1 ").count() >= 2 && text.ends_with('}') {
                break;
            }
        }
    };
    tokio::time::timeout(WAIT, read_both)
        .await
        .expect("both answers within the wait");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 413"), "first answer: {text}");
    assert!(text.contains("payload_too_large"), "{text}");
    assert!(
        text.contains("HTTP/1.1 200"),
        "the connection served the next request: {text}"
    );
}
