//! Input at the edges of what the HTTP surface and the control messages
//! accept: numbers at their limits, NaN and infinities in MessagePack,
//! nesting deep enough to threaten a worker's stack, tokens without the
//! optional `iat`, and the token and body edge cases that were checked
//! and found right. Each test of a fixed bug failed before its fix.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use scorehub::auth::Scope;
use scorehub::codec::decode_frame;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{Body, SECRET, TestHub, WAIT, new_game, score};

const GAME: &str = "nba:edges-1";

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn sign(header: jsonwebtoken::Header, claims: &Value) -> String {
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encoding a JWT")
}

/// `POST path` with a JSON body, returning `Err` (instead of panicking like
/// `Api::call`) when the server drops the connection without an answer.
async fn try_post(
    hub: &TestHub,
    path: &str,
    token: &str,
    body: &Value,
) -> Result<(u16, String), String> {
    let resp = hub
        .client
        .post(hub.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).expect("JSON encodes"))
        .send()
        .await
        .map_err(|e| format!("no HTTP answer at all: {e:?}"))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| format!("body: {e:?}"))?;
    Ok((status, text))
}

// ---------------------------------------------------------------------------
// 1. `points: i64::MIN` panics in `Event::try_from` (`points.abs()` overflows)

/// A score event with `points = -9223372036854775808` must get a JSON 4xx.
/// `src/domain/event.rs` computes `points.abs()`, which overflows for
/// `i64::MIN`: with overflow checks (debug, tests, fuzzing) the handler
/// panics and the client gets no answer at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_i64_min_gets_a_json_error_not_a_dropped_connection() {
    let hub = TestHub::start().await;
    hub.put_game(GAME).await;
    let token = hub.writer(GAME);
    let ev = json!({"event_id": "min", "kind": "score", "team": "home", "points": i64::MIN});
    let answer = try_post(&hub, &format!("/v1/games/{GAME}/events"), &token, &ev).await;
    let (status, text) = answer.unwrap_or_else(|e| {
        panic!("points = i64::MIN: the hub dropped the request instead of answering 400/422: {e}")
    });
    assert!(
        status == 400 || status == 422,
        "points = i64::MIN: expected 400/422, got {status}: {text}"
    );
    let game = hub.get_game(GAME).await;
    assert_eq!(game["seq"], 0, "{game}");
}

/// The same in a batch: such an item is refused as malformed, which refuses
/// the whole batch with an answer (it once killed the request after the items
/// before it were applied, so the client could not tell what happened), and
/// nothing of the batch is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_item_with_points_i64_min_does_not_lose_the_batch_answer() {
    let hub = TestHub::start().await;
    hub.put_game(GAME).await;
    let token = hub.writer(GAME);
    let mut ok = score("b1", "home", 2);
    ok["game"] = json!(GAME);
    let bad = json!({"game": GAME, "event_id": "b2", "kind": "score", "team": "away", "points": i64::MIN});
    let answer = try_post(&hub, "/v1/events", &token, &json!({"events": [ok, bad]})).await;
    let after = hub.get_game(GAME).await;
    let (status, text) = answer.unwrap_or_else(|e| {
        panic!(
            "batch with one points = i64::MIN item: no answer ({e}); game seq now {}",
            after["seq"]
        )
    });
    assert_eq!(status, 422, "{text}");
    let body: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(body["error"]["code"], "invalid_event", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("events[1]")),
        "{body}"
    );
    assert_eq!(
        after["seq"], 0,
        "nothing of a refused batch is applied: {after}"
    );
}

// ---------------------------------------------------------------------------
// 2. A MessagePack `set` patch with NaN silently deletes the key

#[derive(serde::Serialize)]
struct NanPatch {
    extra: BTreeMap<&'static str, f64>,
}

#[derive(serde::Serialize)]
struct NanSet {
    event_id: &'static str,
    kind: &'static str,
    patch: NanPatch,
}

/// `patch: {"extra": {"x": NaN}}` in MessagePack is not a valid value for
/// `extra` (finite numbers only). serde_json's `Value` turns a NaN float
/// into `null`, so the patch becomes `{"extra":{"x":null}}` and *deletes*
/// `extra.x`: a bad input is applied with another meaning instead of being
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgpack_nan_in_set_patch_is_refused_not_turned_into_a_delete() {
    let hub = TestHub::start().await;
    let mut body = new_game("Home", "Away");
    body["extra"] = json!({"x": 1});
    let r = hub.put_game_with(GAME, body).await;
    assert_eq!(r.status, 201, "{}", r.text);

    let ev = NanSet {
        event_id: "nan",
        kind: "set",
        patch: NanPatch {
            extra: [("x", f64::NAN)].into_iter().collect(),
        },
    };
    let bytes = rmp_serde::to_vec_named(&ev).expect("MessagePack encodes");
    let token = hub.writer(GAME);
    let r = hub
        .call(
            Method::POST,
            &format!("/v1/games/{GAME}/events"),
            Some(&token),
            Body::Raw(Some("application/msgpack"), bytes),
            &[],
        )
        .await;
    let game = hub.get_game(GAME).await;
    assert!(
        r.status == 400 || r.status == 422,
        "a NaN in a set patch got {} {} and the game is now {game}",
        r.status,
        r.text
    );
    assert_eq!(game["extra"]["x"], 1, "{game}");
}

// ---------------------------------------------------------------------------
// 3. Integers outside i64 in `extra` silently become floats

/// `extra` holds integers; `18446744073709551615` does not fit an i64. The
/// untagged `Scalar` falls through to `Float` and the hub stores
/// `1.8446744073709552e19`: neither refused nor kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_integer_in_extra_is_refused_or_kept_exactly() {
    let hub = TestHub::start().await;
    let mut body = new_game("Home", "Away");
    body["extra"] = json!({"big": u64::MAX});
    let r = hub.put_game_with(GAME, body).await;
    if r.status == 201 {
        let game = hub.get_game(GAME).await;
        assert_eq!(
            game["extra"]["big"],
            json!(u64::MAX),
            "u64::MAX in extra was accepted but stored as {}",
            game["extra"]["big"]
        );
    } else {
        r.assert_error_shape();
        assert!(r.status == 400 || r.status == 422, "{}", r.text);
    }
}

// ---------------------------------------------------------------------------
// 4. A token without `iat` is refused

/// The contract's token carries `sub`, `exp`, `scope`, `games`. `Claims`
/// requires `iat` too (`pub iat: u64`, not optional, never checked), so a
/// correctly signed, unexpired token minted by another tool without `iat`
/// is a 401 ("missing field `iat`").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_without_iat_is_accepted() {
    let hub = TestHub::start().await;
    hub.put_game(GAME).await;
    let claims = json!({
        "sub": "desk",
        "exp": now_secs() + 3600,
        "scope": "scorekeeper",
        "games": ["nba:*"],
    });
    let token = sign(jsonwebtoken::Header::default(), &claims);
    let r = hub
        .post_event_as(GAME, &token, score("iat1", "home", 1))
        .await;
    assert_eq!(
        r.status, 200,
        "a valid HS256 token with sub/exp/scope/games but no iat: {}",
        r.text
    );
}

// ---------------------------------------------------------------------------
// 5. Deep MessagePack control message (fans, no auth) overflows the stack

/// The WebSocket control message `{"op":"sub","x":[[[...1000 deep...]]]}`
/// in MessagePack. `codec::decode_binary` uses rmp-serde's default depth
/// limit (1024), and `ClientMsg` is internally tagged, so serde buffers the
/// unknown field `x` recursively as `Content` before `deny_unknown_fields`
/// refuses it. (HTTP bodies cap MessagePack depth at 128 for this reason;
/// control messages do not.)
fn deep_control_message(depth: usize) -> Vec<u8> {
    let mut out = vec![0x82]; // map of 2
    out.push(0xa2);
    out.extend_from_slice(b"op");
    out.push(0xa3);
    out.extend_from_slice(b"sub");
    out.push(0xa1);
    out.extend_from_slice(b"x");
    out.extend(std::iter::repeat_n(0x91u8, depth)); // array of 1, nested
    out.push(0xc0); // nil
    out
}

const CHILD_ENV: &str = "SCOREHUB_REVIEW_HTTP_CHILD";

/// Runs in a child process (an abort must not take down the test binary):
/// a hub on a multi-thread runtime (2 MiB worker stacks, as `serve` uses),
/// one fan sending the deep message. Expected: a `bad_message` error frame,
/// then a pong, connection open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by deep_msgpack_control_message_does_not_crash_the_hub in a child process"]
async fn child_deep_msgpack_control_message() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let hub = TestHub::start().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(hub.ws_url(""))
        .await
        .expect("WebSocket handshake");
    let bytes = deep_control_message(1000);
    assert!(bytes.len() < 16 * 1024, "within ws.max_message_bytes");
    ws.send(Message::binary(bytes)).await.expect("send");
    ws.send(Message::text(r#"{"op":"ping"}"#))
        .await
        .expect("send ping");
    let mut codes = Vec::new();
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("connection open")
            .expect("no WebSocket error");
        if let Message::Binary(b) = msg {
            let f = decode_frame(&b).expect("a frame");
            if f.t == "p" {
                break;
            }
            codes.push(f.code.unwrap_or_default());
        }
    }
    assert_eq!(codes, ["bad_message"]);
    println!("REVIEW-CHILD-OK");
}

#[test]
fn deep_msgpack_control_message_does_not_crash_the_hub() {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = std::process::Command::new(exe)
        .args([
            "input_edges::child_deep_msgpack_control_message",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning the child test");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("child test did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("child output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String = {
        let s = format!("{stdout}\n{stderr}");
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    };
    assert!(
        status.success() && stdout.contains("REVIEW-CHILD-OK"),
        "a ~1 KB MessagePack control message from an anonymous fan killed the hub process ({status}):\n{tail}"
    );
}

// ---------------------------------------------------------------------------
// Checked and found correct

/// Token and pattern edge cases: other algorithms, `nbf` in the future,
/// missing `exp`, `nba:*` vs `nbax:1`/`nba-x:1`, no secret in errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_edge_cases() {
    let hub = TestHub::start().await;
    for g in ["nba:a", "nbax:1", "nba-x:1", "nb:1"] {
        let r = hub.put_game_with(g, new_game("H", "A")).await;
        assert_eq!(r.status, 201, "{g}: {}", r.text);
    }
    let base = json!({"sub": "t", "exp": now_secs() + 3600, "iat": now_secs(), "scope": "scorekeeper", "games": ["nba:*"]});
    let mut cases: Vec<(&str, String)> = Vec::new();
    cases.push((
        "HS384",
        sign(
            jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
            &base,
        ),
    ));
    cases.push((
        "HS512",
        sign(
            jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
            &base,
        ),
    ));
    let mut nbf = base.clone();
    nbf["nbf"] = json!(now_secs() + 60);
    cases.push(("nbf +60 s", sign(jsonwebtoken::Header::default(), &nbf)));
    let mut no_exp = base.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    cases.push(("no exp", sign(jsonwebtoken::Header::default(), &no_exp)));
    let mut bad_scope = base.clone();
    bad_scope["scope"] = json!("root");
    cases.push((
        "scope root",
        sign(jsonwebtoken::Header::default(), &bad_scope),
    ));
    let mut bad_pattern = base.clone();
    bad_pattern["games"] = json!(["nba*"]);
    cases.push((
        "pattern nba*",
        sign(jsonwebtoken::Header::default(), &bad_pattern),
    ));
    // alg none: header {"alg":"none"} + claims + empty signature.
    let b64 = |v: &Value| {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = serde_json::to_vec(v).unwrap();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..chunk.len() + 1 {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    };
    cases.push((
        "alg none",
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&base)
        ),
    ));
    for (what, token) in &cases {
        let r = hub
            .post_event_as("nba:a", token, score("x", "home", 1))
            .await;
        let msg = r.assert_error(401, "unauthorized");
        assert!(
            !msg.contains(SECRET) && !msg.contains(token.as_str()),
            "{what}: {msg}"
        );
        assert!(r.header("www-authenticate").is_some(), "{what}");
    }
    // Within leeway (exp 2 s ago) still accepted.
    let mut late = base.clone();
    late["exp"] = json!(now_secs() - 2);
    let r = hub
        .post_event_as(
            "nba:a",
            &sign(jsonwebtoken::Header::default(), &late),
            score("late", "home", 1),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let token = hub.token(&["nba:*"], Scope::Scorekeeper);
    for g in ["nbax:1", "nba-x:1", "nb:1"] {
        hub.post_event_as(g, &token, score("x", "home", 1))
            .await
            .assert_error(403, "forbidden");
    }
    let exact = hub.token(&["nba:a"], Scope::Scorekeeper);
    hub.post_event_as("nbax:1", &exact, score("x", "home", 1))
        .await
        .assert_error(403, "forbidden");
}

/// Odd inputs that must be 4xx in the error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_inputs_are_client_errors() {
    let hub = TestHub::start().await;
    hub.put_game(GAME).await;
    let token = hub.writer(GAME);
    let path = format!("/v1/games/{GAME}/events");
    for (what, body) in [
        ("bad utf-8", Body::Raw(Some("application/json"), b"{\"event_id\":\"\xff\"}".to_vec())),
        ("deep json", Body::Raw(Some("application/json"), {
            let mut v = b"{\"event_id\":\"d\",\"kind\":\"set\",\"patch\":".to_vec();
            v.extend(std::iter::repeat_n(b'[', 5000));
            v
        })),
        ("huge number", Body::Raw(Some("application/json"), b"{\"event_id\":\"h\",\"kind\":\"score\",\"team\":\"home\",\"points\":1e999}".to_vec())),
        ("u64 overflow", Body::Raw(Some("application/json"), b"{\"event_id\":\"h\",\"kind\":\"score\",\"team\":\"home\",\"points\":99999999999999999999999}".to_vec())),
        ("trailing", Body::Raw(Some("application/json"), b"{\"event_id\":\"t\",\"kind\":\"status\",\"status\":\"live\"} x".to_vec())),
        ("empty", Body::Raw(Some("application/json"), Vec::new())),
        ("msgpack garbage", Body::Raw(Some("application/msgpack"), vec![0xc1, 0xc1])),
        ("msgpack huge str len", Body::Raw(Some("application/msgpack"), vec![0xdb, 0xff, 0xff, 0xff, 0xff])),
    ] {
        let r = hub.call(Method::POST, &path, Some(&token), body, &[]).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
        r.assert_error_shape();
    }
    let r = hub
        .call(
            Method::POST,
            &path,
            Some(&token),
            Body::Raw(Some("text/plain"), b"{}".to_vec()),
            &[],
        )
        .await;
    r.assert_error(415, "unsupported_media_type");
    for q in [
        "limit=0",
        "limit=501",
        "limit=-1",
        "limit=1&limit=2",
        "league=NBA",
        "cursor=x",
        "status=on",
    ] {
        hub.get(&format!("/v1/games?{q}"))
            .await
            .assert_error(400, "bad_request");
    }
    for q in ["since=-1", "since=18446744073709551616", "limit=1001"] {
        let r = hub
            .call(
                Method::GET,
                &format!("{path}?{q}"),
                Some(&token),
                Body::None,
                &[],
            )
            .await;
        r.assert_error(400, "bad_request");
    }
    let r = hub
        .call(
            Method::GET,
            &format!("{path}?since=18446744073709551615"),
            Some(&token),
            Body::None,
            &[],
        )
        .await;
    r.assert_error(400, "bad_request");
    let r = hub
        .call(
            Method::GET,
            &format!("{path}?since=9223372036854775807"),
            Some(&token),
            Body::None,
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    hub.get("/v1/games/nba:%FF")
        .await
        .assert_error(400, "bad_request");
    // ETag / If-None-Match.
    let r = hub.get(&format!("/v1/games/{GAME}")).await;
    assert_eq!(r.header("etag").as_deref(), Some("\"0\""));
    for inm in ["\"0\"", "W/\"0\"", "\"9\", \"0\"", "*"] {
        let r = hub
            .call(
                Method::GET,
                &format!("/v1/games/{GAME}"),
                None,
                Body::None,
                &[("if-none-match", inm)],
            )
            .await;
        assert_eq!(r.status, 304, "{inm}");
    }
    let r = hub
        .call(
            Method::GET,
            &format!("/v1/games/{GAME}"),
            None,
            Body::None,
            &[("if-none-match", "\"00\"")],
        )
        .await;
    assert_eq!(r.status, 200);
    // Security headers on an error and on a 304-less 404.
    let r = hub.get("/nope?token=abc").await;
    r.assert_error(404, "not_found");
    assert!(!r.text.contains("abc"));
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(r.header("x-frame-options").as_deref(), Some("DENY"));
}

#[derive(serde::Serialize)]
struct NanSeqItem {
    game: &'static str,
    event_id: &'static str,
    kind: &'static str,
    team: &'static str,
    points: i64,
    expected_seq: f64,
}

#[derive(serde::Serialize)]
struct NanSeqBatch {
    events: Vec<NanSeqItem>,
}

/// Same root cause in `POST /v1/events` (items are `serde_json::Value`): a
/// MessagePack item with `expected_seq: NaN` (not a seq) becomes
/// `expected_seq: null`, i.e. *no* precondition, and the event is applied.
/// The single-event route refuses the same item with 400 (typed field).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgpack_nan_expected_seq_in_batch_is_refused_not_dropped() {
    let hub = TestHub::start().await;
    hub.put_game(GAME).await;
    assert_eq!(hub.post_ok(GAME, score("first", "home", 1)).await, 1);
    let batch = NanSeqBatch {
        events: vec![NanSeqItem {
            game: GAME,
            event_id: "nan-seq",
            kind: "score",
            team: "away",
            points: 3,
            expected_seq: f64::NAN,
        }],
    };
    let bytes = rmp_serde::to_vec_named(&batch).expect("MessagePack encodes");
    let token = hub.writer(GAME);
    let r = hub
        .call(
            Method::POST,
            "/v1/events",
            Some(&token),
            Body::Raw(Some("application/msgpack"), bytes),
            &[],
        )
        .await;
    let game = hub.get_game(GAME).await;
    let refused =
        r.status == 400 || (r.status == 200 && r.json()["results"][0]["error"]["code"].is_string());
    assert!(
        refused && game["seq"] == 1,
        "expected_seq NaN: {} {}; game now at seq {}",
        r.status,
        r.text,
        game["seq"]
    );
}
