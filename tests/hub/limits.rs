//! Abuse and limits (issue 6): per-token event rates, per-address connect
//! rates, the connection cap, fans stuck behind, and hostile control
//! messages. Every limit is set small through `TestHub::start_with`; waits
//! are deadlines on observable facts, never timing assertions.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use scorehub::auth::Scope;
use scorehub::codec::decode_frame;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::{BinaryHub, Body, Fan, FanState, Reply, TestHub, WAIT, eventually, score};

const G: &str = "nba:limits";

/// A raw client connection, for what [`Fan`] does not let a test see.
type Raw = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `POST /v1/events` with `events` (each `score` event of [`G`]) as `token`.
async fn post_batch(hub: &TestHub, token: &str, prefix: &str, n: usize) -> Reply {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            let mut e = score(&format!("{prefix}-{i}"), "home", 1);
            e["game"] = json!(G);
            e
        })
        .collect();
    hub.call(
        Method::POST,
        "/v1/events",
        Some(token),
        Body::Json(json!({ "events": events })),
        &[],
    )
    .await
}

/// Asserts a 429 with the contract's body and a whole `Retry-After` ≥ 1.
fn assert_rate_limited(r: &Reply) {
    let message = r.assert_error(429, "rate_limited");
    assert!(message.contains("retry after"), "{message}");
    let retry: u64 = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("429 without Retry-After: {}", r.text))
        .parse()
        .expect("Retry-After is whole seconds");
    assert!(retry >= 1, "Retry-After {retry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_its_event_rate_gets_429_and_another_token_is_unaffected() {
    let hub = TestHub::start_with(|c| {
        c.limits.events_per_second = 1;
        c.limits.events_burst = 5;
    })
    .await;
    hub.put_game(G).await;
    let alice = hub.token_for("alice", &["nba:*"], Scope::Scorekeeper);
    let bob = hub.token_for("bob", &["nba:*"], Scope::Scorekeeper);
    let limited_before = hub
        .metric("scorehub_rate_limited_total", "kind=\"events\"")
        .await;

    // A batch of 5 spends alice's whole burst; it is applied.
    let r = post_batch(&hub, &alice, "a", 5).await;
    let results = r.ok_json()["results"].as_array().expect("results").clone();
    assert!(results.iter().all(|x| x["seq"].is_u64()), "{results:?}");
    // Her next event, and her next batch, are refused whole: nothing applied.
    let r = hub
        .post_event_as(G, &alice, score("a-single", "home", 1))
        .await;
    assert_rate_limited(&r);
    assert_rate_limited(&post_batch(&hub, &alice, "a2", 3).await);
    assert_eq!(hub.get_game(G).await["seq"], 5, "a 429 applies nothing");

    // Bob has his own budget, and an admin token is exempt by default.
    let r = hub.post_event_as(G, &bob, score("b-1", "away", 2)).await;
    assert_eq!(r.ok_json()["seq"], 6);
    let admin = hub.token_for("ops", &["*"], Scope::Admin);
    assert_eq!(post_batch(&hub, &admin, "ops", 20).await.status, 200);

    // A batch larger than the burst could never fit: 400 naming the limit.
    let r = post_batch(&hub, &bob, "b-big", 6).await;
    let message = r.assert_error(400, "bad_request");
    assert!(message.contains("limits.events_burst"), "{message}");

    // Alice's bucket refills at 1/s: a retry eventually goes through, and the
    // retried event is applied once.
    eventually(
        "alice's retry is accepted",
        Duration::from_secs(10),
        || async {
            let r = hub
                .post_event_as(G, &alice, score("a-single", "home", 1))
                .await;
            match r.status {
                200 => true,
                429 => false,
                other => panic!("unexpected {other}: {}", r.text),
            }
        },
    )
    .await;
    assert_eq!(hub.get_game(G).await["home"]["score"], 26);
    let limited_after = hub
        .metric("scorehub_rate_limited_total", "kind=\"events\"")
        .await;
    assert!(
        limited_after >= limited_before + 2.0,
        "refusals are counted: {limited_before} -> {limited_after}"
    );
}

/// Opens a WebSocket to `url`; the handshake's error when refused.
async fn try_connect(url: &str) -> Result<Raw, tungstenite::Error> {
    tokio_tungstenite::connect_async(url)
        .await
        .map(|(ws, _)| ws)
}

/// Asserts that a WebSocket handshake was refused with `status` and the JSON
/// error `code`, with a `Retry-After`.
fn assert_refused(result: Result<Raw, tungstenite::Error>, status: u16, code: &str) {
    let response = match result {
        Err(tungstenite::Error::Http(response)) => response,
        Err(other) => panic!("expected HTTP {status}, got {other}"),
        Ok(_) => panic!("expected HTTP {status}, the upgrade succeeded"),
    };
    assert_eq!(response.status().as_u16(), status);
    let retry: u64 = response
        .headers()
        .get("retry-after")
        .expect("Retry-After on a refused upgrade")
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("whole seconds");
    assert!(retry >= 1);
    let body: Value =
        serde_json::from_slice(response.body().as_deref().expect("a body")).expect("JSON body");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_over_the_per_address_rate_get_429() {
    let tight = |exempt: bool| {
        move |c: &mut scorehub::config::Config| {
            c.limits.ws_connects_per_ip_per_second = 1;
            c.limits.ws_connect_burst = 3;
            c.limits.exempt_loopback = exempt;
        }
    };
    let hub = TestHub::start_with(tight(false)).await;
    let url = hub.ws_url("");
    let before = hub
        .metric("scorehub_rate_limited_total", "kind=\"ws_connect\"")
        .await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(try_connect(&url).await.expect("inside the burst"));
    }
    assert_refused(try_connect(&url).await, 429, "rate_limited");
    let after = hub
        .metric("scorehub_rate_limited_total", "kind=\"ws_connect\"")
        .await;
    assert!(after > before, "counted: {before} -> {after}");
    // The connections already open are not affected.
    let mut fan = open.pop().expect("an open connection");
    fan.send(Message::text(r#"{"op":"ping"}"#))
        .await
        .expect("send");
    assert_eq!(next_data(&mut fan).await.expect("a pong")["t"], "p");

    // With the loopback exemption (the default), the same limits let a
    // local load test connect as fast as it likes.
    let local = TestHub::start_with(tight(true)).await;
    for _ in 0..10 {
        open.push(try_connect(&local.ws_url("")).await.expect("exempt"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_answers_503_until_a_slot_frees() {
    let hub = TestHub::start_with(|c| c.limits.max_connections = 2).await;
    let url = hub.ws_url("");
    let first = Fan::connect(&url).await;
    let mut second = Fan::connect(&url).await;
    assert_refused(try_connect(&url).await, 503, "too_many_connections");
    // The hub still serves what it holds.
    assert!(second.barrier().await.is_empty());
    first.close().await;
    // The slot is released when the session ends.
    let deadline = tokio::time::Instant::now() + WAIT;
    let _third = loop {
        match try_connect(&url).await {
            Ok(ws) => break ws,
            Err(tungstenite::Error::Http(r)) if r.status().as_u16() == 503 => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no slot freed within {WAIT:?} of a close"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("unexpected handshake error {e}"),
        }
    };
    assert_refused(try_connect(&url).await, 503, "too_many_connections");
}

/// With few file descriptors, fans get only what the open-file limit leaves
/// after the reserve: the next one gets 503, and the event log (a new index
/// file per game) and scorekeepers' requests still have descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fans_never_take_the_descriptors_the_event_log_needs() {
    const NOFILE: u64 = 530;
    let cap = usize::try_from(NOFILE - scorehub::limits::FD_RESERVE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hub = BinaryHub::spawn_with_nofile(dir.path(), NOFILE, &[]);
    assert!(
        hub.stderr()
            .contains("limits.max_connections is above what the open-file limit allows"),
        "the hub should say why it holds fewer fans than configured:\n{}",
        hub.stderr()
    );
    hub.put_game(G).await;
    let url = hub.ws_url(&format!("games={G}"));
    let mut fans = Vec::new();
    for _ in 0..cap {
        fans.push(Fan::connect(&url).await);
    }
    assert_refused(try_connect(&url).await, 503, "too_many_connections");

    // Scorekeepers still post, to games old and new.
    for i in 0..40 {
        let game = format!("nba:fd-{i}");
        hub.put_game(&game).await;
        assert_eq!(
            hub.post_ok(&game, score(&format!("e{i}"), "home", 2)).await,
            1
        );
    }
    for i in 1..=5 {
        assert_eq!(hub.post_ok(G, score(&format!("g{i}"), "home", 1)).await, i);
    }
    let mut last = FanState::default();
    let fan = fans.last_mut().unwrap();
    last.apply(&fan.next_frame(WAIT).await);
    last.follow(fan, G, 5, WAIT).await;
    assert_eq!(last.state(G).map(|s| s["seq"].clone()), Some(json!(5)));
}

/// Connects with a tiny receive buffer, so the hub's writes block soon once
/// this client stops reading.
async fn connect_small_buffer(url: &str) -> Raw {
    let host = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .expect("host");
    let addr: SocketAddr = host.parse().expect("ip:port");
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(addr).await.expect("connect");
    let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .expect("handshake");
    ws
}

/// The next data frame decoded to JSON, `None` when the connection ends
/// (close frame, error or end of stream).
async fn next_data(ws: &mut Raw) -> Option<Value> {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame or the end in time");
        match msg {
            Some(Ok(Message::Binary(bytes))) => {
                let f = decode_frame(&bytes).expect("a MessagePack frame");
                return Some(serde_json::to_value(FrameJson::from(f)).expect("JSON"));
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// A decoded frame as JSON (for uniform assertions).
#[derive(serde::Serialize)]
struct FrameJson {
    t: String,
    g: Option<String>,
    q: Option<u64>,
    code: Option<String>,
}

impl From<scorehub::codec::DecodedFrame> for FrameJson {
    fn from(f: scorehub::codec::DecodedFrame) -> Self {
        FrameJson {
            t: f.t,
            g: f.g,
            q: f.q,
            code: f.code,
        }
    }
}

/// A `set` event whose diff is a few KiB.
fn bulky_event(i: usize) -> Value {
    let extra: serde_json::Map<String, Value> = (0..16)
        .map(|k| {
            (
                format!("k{k}"),
                json!(format!("{i:06}-{k:02}-{}", "x".repeat(190))),
            )
        })
        .collect();
    json!({"event_id": format!("b{i}"), "kind": "set", "patch": {"extra": extra}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_that_never_reads_is_disconnected_once_stuck_and_others_get_everything() {
    let hub = TestHub::start_with(|c| {
        c.ws.queue_frames = 16;
        c.ws.stuck_timeout = Duration::from_millis(500);
        // Neither the write timeout nor the idle timeout may be what acts.
        c.ws.write_timeout = Duration::from_secs(300);
        c.ws.ping_interval = Duration::from_secs(150);
        c.ws.idle_timeout = Duration::from_secs(300);
    })
    .await;
    hub.put_game(G).await;
    let url = hub.ws_url(&format!("games={G}"));
    let stuck_before = hub
        .metric("scorehub_ws_closed_total", "reason=\"stuck\"")
        .await;
    let dropped_before = hub
        .metric("scorehub_slow_consumer_total", "action=\"disconnected\"")
        .await;

    let mut stuck = connect_small_buffer(&url).await;
    let first = next_data(&mut stuck).await.expect("the snapshot");
    assert_eq!(
        (first["t"].as_str(), first["q"].as_u64()),
        (Some("s"), Some(0))
    );
    // From here on, `stuck` reads nothing until the hub has given up on it.

    let mut reader = Fan::connect(&url).await;
    let mut reader_state = FanState::default();
    reader_state.follow(&mut reader, G, 0, WAIT).await;

    // Post until the hub disconnects the stuck fan (thousands of frames are
    // needed to fill the socket buffers first), with a generous cap.
    const MAX_EVENTS: usize = 20_000;
    let mut posted = 0;
    while hub
        .metric("scorehub_ws_closed_total", "reason=\"stuck\"")
        .await
        <= stuck_before
    {
        assert!(
            posted < MAX_EVENTS,
            "the stuck fan was not disconnected after {posted} events"
        );
        for _ in 0..100 {
            posted += 1;
            hub.post_ok(G, bulky_event(posted)).await;
        }
        // The reader keeps up meanwhile (the hub is not blocked by the stuck fan).
        reader_state
            .follow(&mut reader, G, posted as u64, Duration::from_secs(60))
            .await;
    }
    // The hub stays responsive after the disconnect too.
    for _ in 0..10 {
        posted += 1;
        hub.post_ok(G, bulky_event(posted)).await;
    }
    assert_eq!(hub.get("/healthz").await.status, 200);
    reader_state
        .follow(&mut reader, G, posted as u64, Duration::from_secs(60))
        .await;
    assert_eq!(reader_state.state(G), Some(&hub.get_game(G).await));
    assert_eq!(reader_state.snapshots(G), 1, "the reader got every diff");
    let dropped_after = hub
        .metric("scorehub_slow_consumer_total", "action=\"disconnected\"")
        .await;
    assert!(dropped_after > dropped_before, "counted as disconnected");

    // The stuck fan now reads: whatever reached its socket, then the end of
    // the connection (a 1008 close frame, or the stream cut mid-buffer), and
    // far fewer frames than were posted: the rest was dropped, not queued.
    let mut frames = 0usize;
    let mut last_q = 0u64;
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match stuck.next().await {
                Some(Ok(Message::Binary(bytes))) => {
                    let f = decode_frame(&bytes).expect("a complete frame decodes");
                    let q = f.q.expect("state frames carry q");
                    assert!(q > last_q, "frames stay in order: {q} after {last_q}");
                    last_q = q;
                    frames += 1;
                }
                Some(Ok(Message::Close(frame))) => {
                    return frame.map(|f| u16::from(f.code));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the stuck fan's connection has ended");
    if let Some(code) = ended {
        assert_eq!(code, 1008, "closed as a slow consumer");
    }
    assert!(
        frames < posted,
        "the stuck fan got {frames} of {posted} frames: the rest were dropped"
    );
}

/// Sends `text` and returns the frames the hub answers with before the pong
/// of a following ping (so the connection must still be open).
async fn answers(fan: &mut Fan, text: &str) -> Vec<scorehub::codec::DecodedFrame> {
    fan.send_text(text).await;
    fan.barrier().await
}

fn only_error(frames: &[scorehub::codec::DecodedFrame], code: &str, what: &str) {
    assert_eq!(frames.len(), 1, "{what}: one answer, got {frames:?}");
    assert_eq!(frames[0].t, "e", "{what}: {frames:?}");
    assert_eq!(frames[0].code.as_deref(), Some(code), "{what}: {frames:?}");
    assert!(frames[0].msg.as_deref().is_some_and(|m| !m.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_subscriptions_in_one_message_get_one_error() {
    // Such a message is ~120 KB: raise the message limit so it is read at all.
    let hub = TestHub::start_with(|c| c.ws.max_message_bytes = 1 << 20).await;
    hub.put_game(G).await;
    let mut fan = Fan::connect(&hub.ws_url("")).await;
    let games: Vec<String> = (0..10_000).map(|i| format!("nba:g{i}")).collect();
    let sub = json!({"op": "sub", "games": games});
    let frames = answers(&mut fan, &sub.to_string()).await;
    only_error(&frames, "too_many_subscriptions", "10,000 games");
    let leagues: Vec<String> = (0..10_000).map(|i| format!("l{i}")).collect();
    let frames = answers(
        &mut fan,
        &json!({"op": "sub", "leagues": leagues}).to_string(),
    )
    .await;
    only_error(&frames, "too_many_subscriptions", "10,000 leagues");
    fan.send_msgpack(&sub).await;
    only_error(
        &fan.barrier().await,
        "too_many_subscriptions",
        "MessagePack",
    );
    // The connection is intact and still subscribes.
    fan.send_json(&json!({"op": "sub", "games": [G]})).await;
    let mut state = FanState::default();
    state.follow(&mut fan, G, 0, WAIT).await;

    // With the default 16 KiB message limit the same message is refused as
    // too big, with close code 1009, and the hub carries on.
    let strict = TestHub::start().await;
    let mut fan = Fan::connect(&strict.ws_url("")).await;
    fan.send_text(&sub.to_string()).await;
    assert_eq!(fan.expect_close(WAIT).await, 1009);
    let mut fan = Fan::connect(&strict.ws_url("")).await;
    assert!(fan.barrier().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_text_frame_closes_with_1007_and_the_hub_stays_up() {
    let hub = TestHub::start().await;
    hub.put_game(G).await;
    let mut other = Fan::connect(&hub.ws_url(&format!("games={G}"))).await;
    let mut state = FanState::default();
    state.follow(&mut other, G, 0, WAIT).await;

    // RFC 6455 §8.1: a text frame that is not UTF-8 fails the connection;
    // tungstenite refuses it while reading, and the hub closes with 1007.
    let mut bad = try_connect(&hub.ws_url("")).await.expect("connect");
    let payload: &[u8] = b"{\"op\":\"ping\",\"x\":\"\xff\xfe\xc3\"}";
    bad.send(Message::Frame(Frame::message(
        payload.to_vec(),
        OpCode::Data(Data::Text),
        true,
    )))
    .await
    .expect("sending a raw frame");
    let code = loop {
        match tokio::time::timeout(WAIT, bad.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break None,
        }
    };
    assert_eq!(code, Some(1007));

    // Everyone else carries on.
    let seq = hub.post_ok(G, score("after-utf8", "home", 1)).await;
    state.follow(&mut other, G, seq, WAIT).await;
    assert!(
        Fan::connect(&hub.ws_url(""))
            .await
            .barrier()
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_json_and_msgpack_and_unknown_ops_get_bad_message() {
    let hub = TestHub::start().await;
    let mut fan = Fan::connect(&hub.ws_url("")).await;
    let deep = "[".repeat(10_000);
    only_error(&answers(&mut fan, &deep).await, "bad_message", "10,000 [");
    let deep_field = format!(r#"{{"op":"sub","games":{}"#, "[".repeat(10_000));
    only_error(
        &answers(&mut fan, &deep_field).await,
        "bad_message",
        "deep field",
    );
    let deep_objects = r#"{"a":"#.repeat(2_000);
    only_error(
        &answers(&mut fan, &deep_objects).await,
        "bad_message",
        "deep objects",
    );
    // MessagePack: 10,000 nested one-element arrays around nil.
    let mut raw = try_connect(&hub.ws_url("")).await.expect("connect");
    let mut bytes = vec![0x91u8; 10_000];
    bytes.push(0xc0);
    raw.send(Message::binary(bytes)).await.expect("send");
    let f = next_data(&mut raw).await.expect("an answer");
    assert_eq!(
        (f["t"].as_str(), f["code"].as_str()),
        (Some("e"), Some("bad_message"))
    );
    raw.send(Message::text(r#"{"op":"ping"}"#))
        .await
        .expect("send");
    assert_eq!(next_data(&mut raw).await.expect("a pong")["t"], "p");

    for unknown in [
        r#"{"op":"dance"}"#,
        r#"{"op":"SUB","games":[]}"#,
        r#"{"op":"sub","games":[],"extra":1}"#,
        r#"{"games":["nba:x"]}"#,
        r#"{"op":42}"#,
        "[]",
        "",
    ] {
        only_error(&answers(&mut fan, unknown).await, "bad_message", unknown);
    }
    // Still open and working.
    assert!(fan.barrier().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_fan_is_closed_with_1008_and_nobody_else_notices() {
    let hub = TestHub::start().await;
    hub.put_game(G).await;
    let url = hub.ws_url(&format!("games={G}"));
    let mut calm = Fan::connect(&url).await;
    let mut state = FanState::default();
    state.follow(&mut calm, G, 0, WAIT).await;

    let mut flood = Fan::connect(&hub.ws_url("")).await;
    for _ in 0..1000 {
        if !flood.feed_text(r#"{"op":"ping"}"#).await {
            break;
        }
    }
    flood.flush().await;
    assert_eq!(flood.expect_close(WAIT).await, 1008);

    let seq = hub.post_ok(G, score("after-flood", "away", 3)).await;
    state.follow(&mut calm, G, seq, WAIT).await;
    assert_eq!(state.snapshots(G), 1);
    assert!(calm.barrier().await.is_empty());
}
