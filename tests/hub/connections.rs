//! HTTP connections under abuse (issue 13, item 2): clients that trickle
//! their headers or their body, thousands of idle keep-alive connections,
//! more connections than the cap. Each runs the real binary with short
//! timeouts and real TCP clients over loopback, and asserts outcomes
//! (closed by the server within a generous deadline), never elapsed times.
//! Each failed before the hub had its own accept loop: `axum::serve` ran
//! hyper without a timer, so no connection was ever closed by the hub.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use scorehub::auth::Scope;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::common::{Api, BinaryHub, WAIT, eventually, score};

const G: &str = "nba:conns";

/// A generous bound on "the server closes it soon": the timeouts in these
/// tests are 1–3 s.
const CUT: Duration = Duration::from_secs(30);

/// The hub's resident memory in KiB (`VmRSS` of /proc/PID/status).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

fn addr(api: &Api) -> String {
    api.base.trim_start_matches("http://").to_owned()
}

/// Reads one HTTP/1.1 response (with `Content-Length`) from `tcp`: status
/// and body; `None` when the connection ends first.
async fn read_response(tcp: &mut TcpStream) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status = head.split(' ').nth(1)?.parse().ok()?;
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let l = l.to_ascii_lowercase();
                    l.strip_prefix("content-length:")
                        .and_then(|v| v.trim().parse().ok())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                return Some((status, body));
            }
        }
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A keep-alive connection that has been answered one `GET /healthz`.
async fn kept_alive(addr: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
        .await
        .expect("write");
    let (status, _) = read_response(&mut tcp).await.expect("an answer");
    assert_eq!(status, 200);
    tcp
}

/// Opens `n` keep-alive connections, `batch` at a time.
async fn open_kept_alive(addr: &str, n: usize, batch: usize) -> Vec<TcpStream> {
    let mut open = Vec::with_capacity(n);
    while open.len() < n {
        let mut set = JoinSet::new();
        for _ in 0..batch.min(n - open.len()) {
            let addr = addr.to_owned();
            set.spawn(async move { kept_alive(&addr).await });
        }
        while let Some(tcp) = set.join_next().await {
            open.push(tcp.expect("a client task"));
        }
    }
    open
}

/// Whether the server closes `tcp` (end of stream or reset) within
/// `within`; anything it sends first is skipped.
async fn closed_by_server(tcp: &mut TcpStream, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// How many of `conns` the server closes within `within` (all watched at once).
async fn count_closed(conns: Vec<TcpStream>, within: Duration) -> (usize, Vec<TcpStream>) {
    let mut set = JoinSet::new();
    for mut tcp in conns {
        set.spawn(async move {
            let closed = closed_by_server(&mut tcp, within).await;
            (closed, tcp)
        });
    }
    let mut closed = 0;
    let mut open = Vec::new();
    while let Some(done) = set.join_next().await {
        let (was_closed, tcp) = done.expect("a watcher task");
        if was_closed {
            closed += 1;
        } else {
            open.push(tcp);
        }
    }
    (closed, open)
}

/// A scorekeeper's event is answered while the hub is under attack.
async fn scorekeeper_posts(hub: &BinaryHub, event_id: &str) {
    let r = hub.post_event(G, score(event_id, "home", 1)).await;
    assert_eq!(r.status, 200, "a scorekeeper's POST: {}", r.text);
}

/// Slowloris: 50 clients send a request head one byte per second. Each is
/// cut at `http.header_read_timeout` (1 s here) after its first byte, long
/// before its head is complete; meanwhile the hub stays ready and answers a
/// scorekeeper. Before the fix every one of them was held forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_sending_headers_a_byte_a_second_are_cut_at_the_header_timeout() {
    const CLIENTS: usize = 50;
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = BinaryHub::spawn(
        dir.path(),
        &[
            ("SCOREHUB_HTTP__HEADER_READ_TIMEOUT", "1s"),
            ("SCOREHUB_HTTP__IDLE_TIMEOUT", "60s"),
        ],
    );
    hub.put_game(G).await;
    let head = b"GET /healthz HTTP/1.1\r\nHost: hub\r\nUser-Agent: slowloris\r\n\r\n";
    let mut clients = JoinSet::new();
    for _ in 0..CLIENTS {
        let addr = addr(&hub);
        clients.spawn(async move {
            let tcp = TcpStream::connect(&addr).await.expect("connect");
            let (mut read, mut write) = tcp.into_split();
            let started = Instant::now();
            let mut cut = std::pin::pin!(async move {
                let mut buf = [0u8; 256];
                loop {
                    match read.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            });
            let mut sent = 0;
            loop {
                if sent < head.len() && write.write_all(&head[sent..=sent]).await.is_ok() {
                    sent += 1;
                }
                tokio::select! {
                    () = &mut cut => return Some((sent, started.elapsed())),
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if started.elapsed() > CUT {
                    return None;
                }
            }
        });
    }
    // While they trickle, the hub is ready and scorekeepers are answered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hub.get("/readyz").await.status, 200);
    scorekeeper_posts(&hub, "during-slowloris").await;

    let mut held = Vec::new();
    while let Some(client) = clients.join_next().await {
        match client.expect("a client task") {
            Some(cut) => held.push(cut),
            None => panic!(
                "a client sending its headers a byte a second was still connected after {CUT:?}; \
                 the hub has no header-read timeout"
            ),
        }
    }
    let most_bytes = held.iter().map(|(sent, _)| *sent).max().unwrap_or(0);
    assert!(
        most_bytes < head.len(),
        "every head was cut before it was complete ({most_bytes} of {} bytes sent)",
        head.len()
    );
    let (fastest, slowest) = (
        held.iter().map(|(_, t)| *t).min().unwrap_or_default(),
        held.iter().map(|(_, t)| *t).max().unwrap_or_default(),
    );
    eprintln!(
        "slowloris: {CLIENTS} clients held, each cut after at most {most_bytes} bytes, \
         {fastest:.1?}..{slowest:.1?} after connecting (header_read_timeout = 1s)"
    );
    let cuts = hub
        .metric("scorehub_http_closed_total", "reason=\"header_timeout\"")
        .await;
    assert!(cuts >= CLIENTS as f64, "counted: {cuts}");
    assert_eq!(hub.get("/readyz").await.status, 200);
    scorekeeper_posts(&hub, "after-slowloris").await;
}

/// A body that stops arriving is answered `408 request_timeout` in the
/// hub's JSON error format once `http.body_timeout` passes, and the
/// connection is closed. Before the fix the request waited forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_gets_408_at_the_body_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = BinaryHub::spawn(dir.path(), &[("SCOREHUB_HTTP__BODY_TIMEOUT", "1s")]);
    hub.put_game(G).await;
    let token = hub.writer(G);
    let mut tcp = TcpStream::connect(addr(&hub)).await.expect("connect");
    let head = format!(
        "POST /v1/games/{G}/events HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"event_id\":"
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    let answer = tokio::time::timeout(CUT, read_response(&mut tcp))
        .await
        .unwrap_or_else(|_| panic!("no answer within {CUT:?} to a body that stopped arriving"))
        .expect("an answer before the connection ends");
    assert_eq!(answer.0, 408, "{}", answer.1);
    let body: serde_json::Value = serde_json::from_str(&answer.1).expect("a JSON body");
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("http.body_timeout")),
        "{body}"
    );
    assert!(
        closed_by_server(&mut tcp, CUT).await,
        "closed after the 408"
    );
    assert_eq!(hub.get_game(G).await["seq"], 0, "nothing was applied");
    let cuts = hub
        .metric("scorehub_http_closed_total", "reason=\"body_timeout\"")
        .await;
    assert!(cuts >= 1.0, "counted: {cuts}");
}

/// 5,000 idle keep-alive connections (each answered one request, then
/// silent): the hub holds them all, stays ready, answers a scorekeeper and
/// shows them in `scorehub_http_connections`; its memory stays bounded; and
/// `http.idle_timeout` closes every one of them. Before the fix none was
/// ever closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_idle_keep_alive_connections_are_held_then_closed() {
    const IDLE: usize = 5_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = BinaryHub::spawn(
        dir.path(),
        &[
            ("SCOREHUB_HTTP__IDLE_TIMEOUT", "15s"),
            ("SCOREHUB_HTTP__MAX_CONNECTIONS", "6000"),
        ],
    );
    hub.put_game(G).await;
    scorekeeper_posts(&hub, "before").await;
    let rss_before = rss_kib(hub.pid());
    let opened = Instant::now();
    let conns = open_kept_alive(&addr(&hub), IDLE, 100).await;
    let opening = opened.elapsed();
    eprintln!("idle keep-alive: {IDLE} connections opened in {opening:.1?}");

    // All held at once, and the hub is fine.
    let open_now = hub.metric("scorehub_http_connections", "").await;
    assert!(
        open_now >= IDLE as f64,
        "{open_now} HTTP connections open, expected at least {IDLE}"
    );
    assert_eq!(hub.get("/readyz").await.status, 200);
    scorekeeper_posts(&hub, "during-idle").await;
    let rss_with = rss_kib(hub.pid());
    let per_conn = (rss_with.saturating_sub(rss_before) * 1024) / IDLE as u64;
    eprintln!(
        "idle keep-alive: {IDLE} connections opened in {opening:.1?}; hub RSS {rss_before} KiB -> \
         {rss_with} KiB ({per_conn} B per connection, debug build)"
    );
    assert!(
        rss_with < rss_before + 200 * 1024,
        "5,000 idle connections grew the hub from {rss_before} KiB to {rss_with} KiB"
    );

    // http.idle_timeout closes every one of them.
    let (closed, still_open) = count_closed(conns, Duration::from_secs(15) + CUT).await;
    assert!(
        still_open.is_empty(),
        "{} of {IDLE} idle connections were still open {CUT:?} past http.idle_timeout ({closed} closed)",
        still_open.len()
    );
    eprintln!(
        "idle keep-alive: all {closed} closed by the hub within {:.1?} of opening the first",
        opened.elapsed()
    );
    eventually("the gauge falls back", WAIT, || async {
        hub.metric("scorehub_http_connections", "").await < 10.0
    })
    .await;
    let cuts = hub
        .metric("scorehub_http_closed_total", "reason=\"idle_timeout\"")
        .await;
    assert!(cuts >= IDLE as f64, "counted: {cuts}");
    assert_eq!(hub.get("/readyz").await.status, 200);
    scorekeeper_posts(&hub, "after-idle").await;
}

/// With `http.max_connections` (1,000) below the 5,000 idle connections
/// opened, the excess never adds up: each new connection closes the one
/// idle longest, so the hub holds at most the cap, stays ready, and a
/// scorekeeper's new connection is answered. Before the fix the hub held
/// all 5,000 (and would have held them until its file descriptors ran out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_cap_make_room_for_new_ones() {
    const CAP: usize = 1_000;
    const OPENED: usize = 5_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = BinaryHub::spawn(
        dir.path(),
        &[
            ("SCOREHUB_HTTP__MAX_CONNECTIONS", "1000"),
            ("SCOREHUB_HTTP__IDLE_TIMEOUT", "120s"),
        ],
    );
    hub.put_game(G).await;
    let rss_before = rss_kib(hub.pid());
    let conns = open_kept_alive(&addr(&hub), OPENED, 100).await;
    let open_now = hub.metric("scorehub_http_connections", "").await;
    assert!(
        open_now <= CAP as f64 + 5.0,
        "{open_now} HTTP connections open with http.max_connections = {CAP}"
    );
    assert_eq!(hub.get("/readyz").await.status, 200);
    scorekeeper_posts(&hub, "past-the-cap").await;
    let rss_with = rss_kib(hub.pid());
    // The hub closed the excess: at most the cap of them stays open.
    let (closed, still_open) = count_closed(conns, Duration::from_secs(3)).await;
    eprintln!(
        "cap {CAP}: {OPENED} idle connections opened, {closed} closed by the hub to make room, \
         {} still open; hub RSS {rss_before} KiB -> {rss_with} KiB",
        still_open.len()
    );
    assert!(
        still_open.len() <= CAP,
        "{} connections open past a cap of {CAP}",
        still_open.len()
    );
    assert!(closed >= OPENED - CAP, "{closed} closed");
    let evicted = hub
        .metric("scorehub_http_closed_total", "reason=\"evicted\"")
        .await;
    assert!(evicted >= (OPENED - CAP) as f64, "counted: {evicted}");
}

/// When every connection has a request in flight (here: bodies that stopped
/// arriving), a new connection is refused at once with `503
/// too_many_connections`; once `http.body_timeout` answers those requests,
/// connections are accepted again. Before the fix no connection was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_connection_is_busy_new_ones_are_refused_until_one_frees() {
    const CAP: usize = 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = BinaryHub::spawn(
        dir.path(),
        &[
            ("SCOREHUB_HTTP__MAX_CONNECTIONS", "20"),
            ("SCOREHUB_HTTP__BODY_TIMEOUT", "3s"),
        ],
    );
    hub.put_game(G).await;
    let token = hub.token(&["nba:*"], Scope::Admin);
    let answered = Arc::new(AtomicUsize::new(0));
    let mut stalled = JoinSet::new();
    for i in 0..CAP {
        let addr = addr(&hub);
        let token = token.clone();
        let answered = answered.clone();
        stalled.spawn(async move {
            let mut tcp = TcpStream::connect(&addr).await.expect("connect");
            let head = format!(
                "POST /v1/games/{G}/events HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"event_id\":\"s{i}\""
            );
            tcp.write_all(head.as_bytes()).await.expect("write");
            answered.fetch_add(1, Ordering::SeqCst);
            read_response(&mut tcp).await
        });
    }
    eventually("the stalled requests are in flight", WAIT, || async {
        answered.load(Ordering::SeqCst) == CAP
    })
    .await;
    // Give the hub a moment to hand the last heads to the router.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut refused = TcpStream::connect(addr(&hub)).await.expect("connect");
    refused
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: hub\r\n\r\n")
        .await
        .ok();
    match tokio::time::timeout(WAIT, read_response(&mut refused)).await {
        Ok(Some((status, body))) => {
            assert_eq!(status, 503, "{body}");
            assert!(body.contains("too_many_connections"), "{body}");
        }
        // The refusal is best effort: a reset may beat it.
        Ok(None) => {}
        Err(_) => {
            panic!("a connection past a full table of busy ones was neither refused nor answered")
        }
    }
    // The stalled requests get their 408; then the hub takes connections again.
    while let Some(done) = stalled.join_next().await {
        let answer = done.expect("a client task");
        assert_eq!(answer.map(|(s, _)| s), Some(408));
    }
    eventually("a new connection is served again", WAIT, || async {
        let mut tcp = TcpStream::connect(addr(&hub)).await.expect("connect");
        tcp.write_all(b"GET /readyz HTTP/1.1\r\nHost: hub\r\n\r\n")
            .await
            .ok();
        matches!(read_response(&mut tcp).await, Some((200, _)))
    })
    .await;
    let refusals = hub
        .metric("scorehub_rate_limited_total", "kind=\"http_capacity\"")
        .await;
    assert!(refusals >= 1.0, "counted: {refusals}");
}

/// A connection whose first request head is incomplete has no request the
/// hub accepted: SIGTERM closes it at once instead of waiting out the whole
/// drain. Before the fix hyper's graceful shutdown left it open (a first
/// request still counts as busy), so the drain ran to its deadline and
/// logged that requests were dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_a_half_sent_request_head() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut hub = BinaryHub::spawn(dir.path(), &[("SCOREHUB_HTTP__SHUTDOWN_TIMEOUT", "5s")]);
    assert_eq!(hub.get("/healthz").await.status, 200);
    let mut half = TcpStream::connect(addr(&hub)).await.expect("connect");
    half.write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .expect("write");
    let mut idle = kept_alive(&addr(&hub)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    hub.sigterm();
    let status = hub.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", hub.stderr());
    assert!(
        !hub.stderr().contains("dropped"),
        "the drain waited for a connection with no request in flight:\n{}",
        hub.stderr()
    );
    assert!(hub.stderr().contains("stopped"), "{}", hub.stderr());
    assert!(closed_by_server(&mut half, WAIT).await);
    assert!(closed_by_server(&mut idle, WAIT).await);
}
