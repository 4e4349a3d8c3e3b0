//! Fans over Server-Sent Events (`GET /v1/sse`), the fallback for networks
//! that block WebSocket: the WebSocket's guarantees (snapshot, consecutive
//! diffs, resume, conflation, limits, shutdown) read from a real stream by a
//! real HTTP client (hyper's, over a socket whose receive buffer a test may
//! shrink), frames applied with the same [`FanState`] as the WebSocket's.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use scorehub::codec::DecodedFrame;
use serde_json::{Value, json};
use tokio::net::TcpSocket;

use crate::common::{Api, BinaryHub, Fan, FanState, TestHub, WAIT, eventually, score};

const G: &str = "nba:2026-11-22-lal-bos";
const G2: &str = "nba:second";

/// One SSE event as the stream carried it.
#[derive(Debug, Clone)]
struct Event {
    /// The `id:` field, if the event had one.
    id: Option<String>,
    /// The `data:` field, parsed as JSON.
    data: Value,
}

impl Event {
    /// The data as a frame, for [`FanState`].
    fn frame(&self) -> DecodedFrame {
        serde_json::from_value(self.data.clone())
            .unwrap_or_else(|e| panic!("event data is no frame ({e}): {}", self.data))
    }

    fn t(&self) -> &str {
        self.data["t"].as_str().unwrap_or_default()
    }
}

/// A response to `GET /v1/sse`, read event by event.
struct Stream {
    status: u16,
    headers: hyper::HeaderMap,
    body: Incoming,
    buf: Vec<u8>,
    /// The `retry:` hints seen.
    retries: Vec<u64>,
    /// Keep-alive comments seen.
    comments: usize,
    /// The task driving the connection (aborted on drop: the client leaves).
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// The hub's address from its API base URL.
fn addr_of(api: &Api) -> SocketAddr {
    api.base
        .trim_start_matches("http://")
        .parse()
        .expect("the base URL holds ip:port")
}

impl Stream {
    /// Opens `/v1/sse?{query}` with `headers`.
    async fn open(api: &Api, query: &str, headers: &[(&str, &str)]) -> Stream {
        Stream::open_with_recv_buffer(api, query, headers, None).await
    }

    /// Opens it over a socket whose receive buffer is `recv_buffer` bytes
    /// (a reader that falls behind fills it quickly).
    async fn open_with_recv_buffer(
        api: &Api,
        query: &str,
        headers: &[(&str, &str)],
        recv_buffer: Option<u32>,
    ) -> Stream {
        let socket = TcpSocket::new_v4().expect("a TCP socket");
        if let Some(bytes) = recv_buffer {
            socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        }
        let tcp = socket.connect(addr_of(api)).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("HTTP/1 handshake");
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = hyper::Request::get(format!("/v1/sse?{query}")).header("host", "scorehub");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Empty::<Bytes>::new()).expect("a request");
        let resp = tokio::time::timeout(WAIT, sender.send_request(req))
            .await
            .expect("the response head arrives")
            .expect("a response");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        Stream {
            status,
            headers,
            body: resp.into_body(),
            buf: Vec::new(),
            retries: Vec::new(),
            comments: 0,
            conn,
        }
    }

    /// The whole body of a refusal, as JSON.
    async fn error_body(mut self) -> Value {
        let mut bytes = Vec::new();
        let read = async {
            while let Some(frame) = self.body.frame().await {
                if let Ok(data) = frame.expect("a body").into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("the refusal's body arrives");
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {bytes:?}"))
    }

    /// The next event within `timeout`; `None` when the stream ended.
    /// Panics when nothing arrives in time.
    async fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        match tokio::time::timeout(timeout, self.read_event()).await {
            Ok(event) => event,
            Err(_) => panic!("no event within {timeout:?}"),
        }
    }

    /// Reads until one whole event (comments and hints are noted, skipped).
    async fn read_event(&mut self) -> Option<Event> {
        loop {
            while let Some(end) = find(&self.buf, b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8(block).expect("events are UTF-8");
                if let Some(event) = self.parse(&text) {
                    return Some(event);
                }
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) | None => return None,
            }
        }
    }

    fn parse(&mut self, block: &str) -> Option<Event> {
        let mut id = None;
        let mut data = None;
        for line in block.lines() {
            if line.starts_with(':') {
                self.comments += 1;
            } else if let Some(ms) = line.strip_prefix("retry: ") {
                self.retries.push(ms.parse().expect("retry is ms"));
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("data: ") {
                assert!(data.is_none(), "one data line per event: {block:?}");
                data = Some(serde_json::from_str(v).expect("data is JSON"));
            } else if !line.is_empty() {
                panic!("unexpected line {line:?} in {block:?}");
            }
        }
        // Occupancy events (`t:"o"`, about once a second while the count
        // moves) are skipped, as `Fan` skips them on the WebSocket.
        data.filter(|d: &Value| d["t"] != "o")
            .map(|data| Event { id, data })
    }

    /// Reads events into `state` until it holds `game` at `seq`; the id of
    /// the last event.
    async fn follow(
        &mut self,
        state: &mut FanState,
        game: &str,
        seq: u64,
        timeout: Duration,
    ) -> Option<String> {
        let mut last_id = None;
        while state.seq(game) != Some(seq) {
            let event = self
                .next_event(timeout)
                .await
                .unwrap_or_else(|| panic!("the stream ended before {game} reached {seq}"));
            assert!(matches!(event.t(), "s" | "d"), "{event:?}");
            assert!(event.id.is_some(), "state events carry an id: {event:?}");
            state.apply(&event.frame());
            last_id = event.id;
        }
        last_id
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_consecutive_diffs_with_cumulative_ids() {
    let hub = TestHub::start().await;
    hub.put_game(G).await;
    hub.put_game(G2).await;
    let mut s = Stream::open(&hub, &format!("games={G},{G2}"), &[]).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.headers["content-type"], "text/event-stream");
    assert_eq!(s.headers["cache-control"], "no-cache");
    let mut state = FanState::default();
    for _ in 0..2 {
        let e = s.next_event(WAIT).await.expect("a snapshot");
        assert_eq!((e.t(), e.data["q"].as_u64()), ("s", Some(0)), "{e:?}");
        state.apply(&e.frame());
    }
    assert_eq!(s.retries, [2000], "the stream opens with a retry hint");
    assert_eq!(state.state(G), Some(&hub.get_game(G).await));

    for i in 1..=3 {
        hub.post_ok(G, score(&format!("e{i}"), "home", 1)).await;
    }
    hub.post_ok(G2, score("f1", "away", 2)).await;
    s.follow(&mut state, G, 3, WAIT).await;
    let id = s.follow(&mut state, G2, 1, WAIT).await;
    assert_eq!(state.state(G), Some(&hub.get_game(G).await));
    assert_eq!(state.state(G2), Some(&hub.get_game(G2).await));
    // The last event was G2's diff (posted last, after G's, and G's are
    // all in already): its id holds both games' positions, sorted.
    assert_eq!(id.as_deref(), Some(format!("{G}:3,{G2}:1").as_str()));
    assert_eq!(
        state.log.len(),
        2 + 4,
        "two snapshots, then one diff per event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_with_exactly_the_missed_diffs() {
    let hub = TestHub::start().await;
    hub.put_game(G).await;
    hub.put_game(G2).await;
    let query = format!("games={G},{G2}");
    let mut s = Stream::open(&hub, &query, &[]).await;
    let mut state = FanState::default();
    s.follow(&mut state, G, 0, WAIT).await;
    s.follow(&mut state, G2, 0, WAIT).await;
    hub.post_ok(G, score("e1", "home", 1)).await;
    let id = s.follow(&mut state, G, 1, WAIT).await.expect("an id");
    assert_eq!(id, format!("{G}:1,{G2}:0"));
    drop(s);

    for i in 2..=4 {
        hub.post_ok(G, score(&format!("e{i}"), "home", 1)).await;
    }
    // The header, as a browser's EventSource sends it on reconnect.
    let mut s = Stream::open(&hub, &query, &[("last-event-id", &id)]).await;
    assert_eq!(s.status, 200);
    for q in 2..=4 {
        let e = s.next_event(WAIT).await.expect("a missed diff");
        assert_eq!(
            (e.t(), e.data["g"].as_str(), e.data["q"].as_u64()),
            ("d", Some(G), Some(q))
        );
        state.apply(&e.frame());
        // G2 sent nothing, yet its position stays in the id.
        assert_eq!(e.id, Some(format!("{G}:{q},{G2}:0")));
    }
    hub.post_ok(G2, score("f1", "away", 1)).await;
    let e = s
        .next_event(WAIT)
        .await
        .expect("G2's diff, no snapshot first");
    assert_eq!((e.t(), e.data["q"].as_u64()), ("d", Some(1)), "{e:?}");
    state.apply(&e.frame());
    assert_eq!(state.state(G), Some(&hub.get_game(G).await));
    drop(s);

    // The query parameter, for clients that cannot set headers; a position
    // outside the game's history (here: ahead of it) gets a snapshot.
    let mut s = Stream::open(&hub, &format!("{query}&last_event_id={G}:4,{G2}:99"), &[]).await;
    let e = s.next_event(WAIT).await.expect("G2's fresh snapshot");
    assert_eq!(
        (e.t(), e.data["g"].as_str(), e.data["q"].as_u64()),
        ("s", Some(G2), Some(1))
    );
    assert_eq!(e.id, Some(format!("{G}:4,{G2}:1")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_older_than_the_history_gets_a_snapshot() {
    let hub = TestHub::start_with(|c| {
        c.games.history = 2;
        c.redis.stream_max_len = 2;
    })
    .await;
    hub.put_game(G).await;
    for i in 1..=5 {
        hub.post_ok(G, score(&format!("e{i}"), "home", 1)).await;
    }
    let mut s = Stream::open(
        &hub,
        &format!("games={G}"),
        &[("last-event-id", &format!("{G}:1"))],
    )
    .await;
    let e = s.next_event(WAIT).await.expect("a snapshot");
    assert_eq!((e.t(), e.data["q"].as_u64()), ("s", Some(5)), "{e:?}");
    assert_eq!(e.data["d"], hub.get_game(G).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_last_event_id_is_refused_before_the_stream() {
    let hub = TestHub::start().await;
    hub.put_game(G).await;
    for bad in [
        "17",
        "nba:a:",
        "nba:a:x",
        "nba:17",
        "nba:a:1,,nba:b:2",
        "nba:a:1,nba:a:2",
    ] {
        let s = Stream::open(&hub, &format!("games={G}"), &[("last-event-id", bad)]).await;
        assert_eq!(s.status, 400, "{bad}");
        assert_eq!(s.headers["content-type"], "application/json", "{bad}");
        let body = s.error_body().await;
        assert_eq!(body["error"]["code"], "bad_last_event_id", "{bad}: {body}");
        let msg = body["error"]["message"].as_str().expect("a message");
        assert!(msg.contains("Last-Event-ID"), "{msg}");
    }
    let s = Stream::open(&hub, &format!("games={G}&last_event_id=nonsense"), &[]).await;
    assert_eq!(s.status, 400);
    assert_eq!(s.error_body().await["error"]["code"], "bad_last_event_id");
    // A stream cannot subscribe later: one naming nothing is refused.
    for query in ["", "games=&leagues=", "games=,%20,"] {
        let s = Stream::open(&hub, query, &[]).await;
        assert_eq!(s.status, 400, "{query:?}");
        let body = s.error_body().await;
        assert_eq!(body["error"]["code"], "bad_request", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("games="),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_invalid_games_get_error_events_as_on_the_websocket() {
    let hub = TestHub::start().await;
    hub.put_game(G).await;
    let mut s = Stream::open(
        &hub,
        &format!("games=nba:missing,no%20colon,{G}&leagues=NBA!"),
        &[],
    )
    .await;
    assert_eq!(s.status, 200);
    let mut errors = Vec::new();
    let mut snapshot = None;
    while errors.len() < 3 || snapshot.is_none() {
        let e = s.next_event(WAIT).await.expect("an event");
        match e.t() {
            "e" => {
                assert!(e.id.is_none(), "errors carry no id: {e:?}");
                assert!(e.data["msg"].as_str().is_some_and(|m| !m.is_empty()));
                errors.push((
                    e.data["code"].as_str().unwrap_or_default().to_owned(),
                    e.data["g"].as_str().map(str::to_owned),
                ));
            }
            "s" => snapshot = Some(e),
            other => panic!("unexpected {other}: {e:?}"),
        }
    }
    errors.sort();
    assert_eq!(
        errors,
        [
            ("game_not_found".to_owned(), Some("nba:missing".to_owned())),
            ("invalid_game_id".to_owned(), Some("no colon".to_owned())),
            ("invalid_league".to_owned(), None),
        ]
    );
    assert_eq!(
        snapshot.expect("G's snapshot").data["g"],
        G,
        "the valid rest is followed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_league_stream_gets_every_game_and_games_created_later() {
    let hub = TestHub::start().await;
    hub.put_game("nhl:a").await;
    hub.put_game("nhl:b").await;
    hub.put_game("nba:elsewhere").await;
    let mut s = Stream::open(&hub, "leagues=nhl", &[]).await;
    let mut state = FanState::default();
    s.follow(&mut state, "nhl:a", 0, WAIT).await;
    s.follow(&mut state, "nhl:b", 0, WAIT).await;
    hub.put_game("nhl:c").await;
    let id = s.follow(&mut state, "nhl:c", 0, WAIT).await;
    assert_eq!(id.as_deref(), Some("nhl:a:0,nhl:b:0,nhl:c:0"));
    hub.post_ok("nba:elsewhere", score("x1", "home", 1)).await;
    hub.post_ok("nhl:b", score("b1", "home", 1)).await;
    let e = s.next_event(WAIT).await.expect("nhl:b's diff");
    assert_eq!(
        (e.t(), e.data["g"].as_str()),
        ("d", Some("nhl:b")),
        "other leagues stay out: {e:?}"
    );
    state.apply(&e.frame());
    assert_eq!(state.log.len(), 4);
}

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
async fn a_slow_reader_is_conflated_and_ends_exact() {
    let hub = TestHub::start_with(|c| {
        c.ws.queue_frames = 16;
        // The slow reader does not read for a while: it must not be dropped for that.
        c.ws.write_timeout = Duration::from_secs(300);
        c.ws.stuck_timeout = Duration::from_secs(300);
        c.ws.ping_interval = Duration::from_secs(150);
        c.ws.idle_timeout = Duration::from_secs(300);
    })
    .await;
    hub.put_game(G).await;
    hub.put_game(G2).await;
    let query = format!("games={G},{G2}");
    let per_game: u64 = 1000;
    let mut slow = Stream::open_with_recv_buffer(&hub, &query, &[], Some(4096)).await;
    let mut state = FanState::default();
    slow.follow(&mut state, G, 0, WAIT).await;
    slow.follow(&mut state, G2, 0, WAIT).await;
    // Nothing is read while the events go in.
    for i in 1..=per_game as usize {
        hub.post_ok(G, bulky_event(i)).await;
        hub.post_ok(G2, bulky_event(i)).await;
    }
    let expected = hub.get_game(G).await;
    let expected2 = hub.get_game(G2).await;
    let patience = Duration::from_secs(120);
    slow.follow(&mut state, G, per_game, patience).await;
    slow.follow(&mut state, G2, per_game, patience).await;
    assert_eq!(state.state(G), Some(&expected));
    assert_eq!(state.state(G2), Some(&expected2));
    assert!(
        state.snapshots(G) + state.snapshots(G2) >= 3,
        "the slow reader should have been conflated (got {} events, {}+{} snapshots)",
        state.log.len(),
        state.snapshots(G),
        state.snapshots(G2)
    );
    assert!(
        (state.log.len() as u64) < 2 * (per_game + 1),
        "conflation drops queued diffs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_share_the_fan_limits_and_have_their_own_cap() {
    let hub = TestHub::start_with(|c| {
        c.limits.max_sse_streams = 1;
        // A client that left is noticed at the next keep-alive at the latest.
        c.ws.ping_interval = Duration::from_millis(100);
    })
    .await;
    hub.put_game(G).await;
    let query = format!("games={G}");
    let mut first = Stream::open(&hub, &query, &[]).await;
    assert_eq!(first.next_event(WAIT).await.expect("a snapshot").t(), "s");
    let refused = Stream::open(&hub, &query, &[]).await;
    assert_eq!(refused.status, 503);
    assert!(refused.headers.contains_key("retry-after"));
    let body = refused.error_body().await;
    assert_eq!(body["error"]["code"], "too_many_connections");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("limits.max_sse_streams"), "{body}");
    // The WebSocket has its own connections: it is not refused.
    let mut ws = Fan::connect(&hub.ws_url(&query)).await;
    assert_eq!(ws.next_frame(WAIT).await.t, "s");
    // Once the first stream's client leaves, its slot is free again.
    drop(first);
    let api = &*hub;
    eventually("the stream's slot is freed", WAIT, || async {
        let mut s = Stream::open(api, &query, &[]).await;
        s.status == 200 && s.next_event(WAIT).await.is_some_and(|e| e.t() == "s")
    })
    .await;

    // The fan cap (limits.max_connections) counts WebSockets and streams together.
    let hub = TestHub::start_with(|c| c.limits.max_connections = 1).await;
    hub.put_game(G).await;
    let mut ws = Fan::connect(&hub.ws_url(&query)).await;
    assert_eq!(ws.next_frame(WAIT).await.t, "s");
    let refused = Stream::open(&hub, &query, &[]).await;
    assert_eq!(refused.status, 503);
    let body = refused.error_body().await;
    assert_eq!(body["error"]["code"], "too_many_connections");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("1 fan connections"), "{body}");
    ws.close().await;
    let api = &*hub;
    eventually("the WebSocket's slot is freed", WAIT, || async {
        Stream::open(api, &query, &[]).await.status == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_and_the_binary_exits_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut hub = BinaryHub::spawn(
        dir.path(),
        &[
            ("SCOREHUB_WS__PING_INTERVAL", "200ms"),
            ("SCOREHUB_WS__IDLE_TIMEOUT", "1s"),
        ],
    );
    hub.put_game(G).await;
    let mut s = Stream::open(&hub, &format!("games={G}"), &[]).await;
    assert_eq!(s.next_event(WAIT).await.expect("a snapshot").t(), "s");
    let metrics = hub.get("/metrics").await.text;
    assert!(metrics.contains("scorehub_sse_connections 1"), "{metrics}");
    // Keep-alive comments arrive while nothing happens.
    hub.post_ok(G, score("e1", "home", 1)).await;
    let e = s.next_event(WAIT).await.expect("a diff");
    assert_eq!(e.t(), "d");
    tokio::time::sleep(Duration::from_millis(500)).await;
    hub.post_ok(G, score("e2", "home", 1)).await;
    assert_eq!(s.next_event(WAIT).await.expect("a diff").t(), "d");
    assert!(s.comments >= 1, "keep-alive comments between events");

    hub.sigterm();
    let end = s.next_event(Duration::from_secs(10)).await;
    assert!(end.is_none(), "the stream ends at shutdown: {end:?}");
    let status = hub.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", hub.stderr());
}
