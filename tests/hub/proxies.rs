//! The client's address behind reverse proxies (issue 13, item 3):
//! `http.trusted_proxies` and `http.proxy_header`, seen through the
//! per-address WebSocket connect limit and the request logs. The real
//! binary on 127.0.0.1, so the test client is the "proxy" (trusted or not);
//! the loopback exemption is off, so every connect counts.

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite};

/// An open fan connection, held so it keeps its slot.
type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

use crate::common::{BinaryHub, WAIT, eventually};

/// Small connect budgets: 3 at once, then 1 per second.
const TIGHT: [(&str, &str); 3] = [
    ("SCOREHUB_LIMITS__WS_CONNECT_BURST", "3"),
    ("SCOREHUB_LIMITS__WS_CONNECTS_PER_IP_PER_SECOND", "1"),
    ("SCOREHUB_LIMITS__EXEMPT_LOOPBACK", "false"),
];

/// The hub with [`TIGHT`] limits and `more` settings.
fn hub(dir: &std::path::Path, more: &[(&str, &str)]) -> BinaryHub {
    let mut env = TIGHT.to_vec();
    env.extend_from_slice(more);
    BinaryHub::spawn(dir, &env)
}

/// Opens a WebSocket to `hub` with `header: value` (none when `header` is
/// empty); the HTTP status of a refused handshake, or 101.
async fn connect(hub: &BinaryHub, header: &str, value: &str) -> (u16, Option<Ws>) {
    let mut request = hub
        .ws_url("")
        .into_client_request()
        .expect("a WebSocket request");
    if !header.is_empty() {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(header.as_bytes()).expect("a header name"),
            value.parse().expect("a header value"),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, response)) => (response.status().as_u16(), Some(ws)),
        Err(tungstenite::Error::Http(response)) => (response.status().as_u16(), None),
        Err(e) => panic!("WebSocket handshake failed: {e}"),
    }
}

/// Opens connections with `header: value` until one is refused; how many
/// were admitted (at most `max`), keeping them open in `held`.
async fn admitted(
    hub: &BinaryHub,
    header: &str,
    value: &str,
    max: usize,
    held: &mut Vec<Option<Ws>>,
) -> usize {
    for n in 0..max {
        let (status, ws) = connect(hub, header, value).await;
        match status {
            101 => held.push(ws),
            429 => return n,
            other => panic!("unexpected handshake status {other}"),
        }
    }
    max
}

/// Behind a trusted proxy, two clients each get their own connect budget:
/// the address comes from `X-Forwarded-For`. Before `http.trusted_proxies`,
/// both were the proxy's address and shared one budget: the second client
/// was refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_client_has_its_own_connect_budget() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = hub(
        dir.path(),
        &[
            ("SCOREHUB_HTTP__TRUSTED_PROXIES", "127.0.0.1"),
            (
                "SCOREHUB_LOG__LEVEL",
                "scorehub=debug,tower_http=debug,info",
            ),
        ],
    );
    let mut held = Vec::new();
    let a = admitted(&hub, "x-forwarded-for", "203.0.113.7", 10, &mut held).await;
    let b = admitted(
        &hub,
        "x-forwarded-for",
        "198.51.100.4, 127.0.0.1",
        10,
        &mut held,
    )
    .await;
    assert_eq!(
        (a, b),
        (3, 3),
        "each forwarded client has a burst of 3 (with the proxy's own hop skipped)"
    );
    // The proxy's own requests (no header) have a budget of their own.
    assert_eq!(admitted(&hub, "", "", 10, &mut held).await, 3);
    // The request spans name the client, not the proxy.
    let r = hub
        .call(
            reqwest::Method::GET,
            "/healthz",
            None,
            crate::common::Body::None,
            &[("x-forwarded-for", "192.0.2.33")],
        )
        .await;
    assert_eq!(r.status, 200);
    eventually("the request's log line names the client", WAIT, || async {
        hub.stderr().contains("client=192.0.2.33")
    })
    .await;
}

/// `Forwarded: for=` (RFC 7239) is believed when `http.proxy_header =
/// "forwarded"`, and `X-Forwarded-For` is then ignored (a client could have
/// written it, and such a proxy passes it along untouched).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rfc_7239_header_is_read_when_configured_and_only_then() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = hub(
        dir.path(),
        &[
            ("SCOREHUB_HTTP__TRUSTED_PROXIES", "127.0.0.0/8"),
            ("SCOREHUB_HTTP__PROXY_HEADER", "forwarded"),
        ],
    );
    let mut held = Vec::new();
    let a = admitted(
        &hub,
        "forwarded",
        "for=\"[2001:db8::7]:4711\";proto=https",
        10,
        &mut held,
    )
    .await;
    let b = admitted(&hub, "forwarded", "for=203.0.113.8", 10, &mut held).await;
    assert_eq!((a, b), (3, 3));
    // X-Forwarded-For is not the configured header: every one of these is
    // the proxy's own address.
    let mut spoofs = 0;
    for i in 0..10 {
        let (status, ws) =
            connect(&hub, "x-forwarded-for", &format!("203.0.113.{}", 100 + i)).await;
        if status == 429 {
            break;
        }
        spoofs += 1;
        held.push(ws);
    }
    assert_eq!(spoofs, 3, "X-Forwarded-For ignored: one budget");
}

/// From a peer outside `http.trusted_proxies`, forwarding headers are
/// ignored: a client cannot dodge its per-address limit by making up
/// addresses. (This held before the fix too, since the header was never
/// read; it guards that trusting proxies did not open a hole.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peer_cannot_spoof_its_address() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = hub(
        dir.path(),
        &[("SCOREHUB_HTTP__TRUSTED_PROXIES", "10.0.0.0/8")],
    );
    let mut held = Vec::new();
    let mut admitted = 0;
    for i in 0..10 {
        let header = if i % 2 == 0 {
            "x-forwarded-for"
        } else {
            "forwarded"
        };
        let value = if i % 2 == 0 {
            format!("203.0.113.{i}")
        } else {
            format!("for=203.0.113.{i}")
        };
        let (status, ws) = connect(&hub, header, &value).await;
        if status == 429 {
            break;
        }
        admitted += 1;
        held.push(ws);
    }
    assert_eq!(admitted, 3, "every made-up address counted as the peer's");
}

/// From a trusted proxy, a header that is not an address list falls back to
/// the proxy's own address: all of them share its budget, while a
/// well-formed one still gets the client's own. Before the fix the last
/// client was refused too (everything was the proxy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_forwarding_header_falls_back_to_the_peer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = hub(
        dir.path(),
        &[("SCOREHUB_HTTP__TRUSTED_PROXIES", "127.0.0.1")],
    );
    let mut held = Vec::new();
    let mut admitted = 0;
    for bad in [
        "garbage",
        "203.0.113.9, nonsense",
        "unknown",
        "1.2.3.4.5",
        "203.0.113.300",
    ] {
        let (status, ws) = connect(&hub, "x-forwarded-for", bad).await;
        if status == 429 {
            continue;
        }
        assert_eq!(status, 101, "{bad}");
        admitted += 1;
        held.push(ws);
    }
    assert_eq!(admitted, 3, "malformed headers all count as the proxy");
    let (status, ws) = connect(&hub, "x-forwarded-for", "198.51.100.77").await;
    assert_eq!(
        status, 101,
        "a well-formed client address has its own budget"
    );
    drop(ws);
}
