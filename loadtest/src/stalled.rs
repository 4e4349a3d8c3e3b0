//! Stalled clients (`--stalled N`): fans that connect and subscribe like the
//! others, get their snapshots, and then never read their socket again.
//!
//! They show what one slow consumer costs everybody else: the other fans'
//! latency (compare a run with `--stalled` and one without) and the hub's
//! memory while its queue for them is full (the RSS samples of the window).
//! Their sockets have a small receive buffer ([`RECV_BUFFER`]), set before
//! connecting, so that the hub's writes to them back up after a few KiB.
//!
//! Nothing polls a stalled client: the run holds its socket until the window
//! ends. Only then can it tell whether the hub gave up on the client, by
//! reading: whatever the hub sent last (a close frame, or the end of the
//! connection after it dropped it) waits behind the data the client never
//! read. [`drain`] reads until one of those, or until the hub has been silent
//! for [`QUIET`] (still open); then the client is closed.

use std::{collections::BTreeMap, time::Duration};

use futures_util::{Stream, StreamExt, future::join_all, stream};
use serde::Deserialize;
use tokio::{
    net::TcpStream,
    time::{Instant, timeout, timeout_at},
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{self, Message, error::ProtocolError, protocol::WebSocketConfig},
};

use crate::{
    dial,
    fan::{self, FanShared, FanSpec},
    report::StalledReport,
};

/// The receive buffer a stalled client asks for (`SO_RCVBUF`; Linux doubles
/// it).
pub(crate) const RECV_BUFFER: u32 = 4096;

/// How long the hub must stay silent, while a stalled client is read at the
/// end, for its connection to count as still open.
pub(crate) const QUIET: Duration = Duration::from_millis(500);

/// The longest one stalled client is read at the end. A hub still sending
/// then is still connected to it.
pub(crate) const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// How long a stalled client's close handshake may take.
pub(crate) const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// How a connection ended without the hub's close frame.
const NO_CLOSE_FRAME: &str = "connection ended without a close frame";

/// A stalled client's WebSocket.
type Socket = WebSocketStream<TcpStream>;

/// The stalled clients of a run, connected and left alone.
#[derive(Debug)]
pub(crate) struct Stalled {
    /// The connected clients' sockets, not read until [`Stalled::finish`].
    sockets: Vec<Socket>,
    /// Clients asked for.
    asked: usize,
    /// Clients that could not connect or did not get their snapshots.
    pub(crate) connect_errors: u64,
    /// The first such failure.
    pub(crate) first_error: Option<String>,
}

impl Stalled {
    /// Connects one stalled client per spec (within the fans' limit on
    /// handshakes in flight) and reads each one's snapshots, the last frames
    /// it reads before the end.
    pub(crate) async fn connect(shared: &FanShared, specs: &[FanSpec]) -> Self {
        let results: Vec<Result<Socket, String>> = stream::iter(specs)
            .map(|spec| connect_one(shared, spec))
            .buffer_unordered(specs.len().max(1))
            .collect()
            .await;
        let mut stalled = Self {
            sockets: Vec::with_capacity(specs.len()),
            asked: specs.len(),
            connect_errors: 0,
            first_error: None,
        };
        for result in results {
            match result {
                Ok(socket) => stalled.sockets.push(socket),
                Err(reason) => {
                    stalled.connect_errors += 1;
                    stalled.first_error.get_or_insert(reason);
                }
            }
        }
        stalled
    }

    /// Clients asked for.
    pub(crate) fn asked(&self) -> usize {
        self.asked
    }

    /// Reads what the hub sent every client (all at once, each for at most
    /// [`DRAIN_LIMIT`]), closes them, and says how each connection stood.
    pub(crate) async fn finish(self) -> StalledReport {
        let drained = join_all(self.sockets.into_iter().map(|mut socket| async move {
            let drained = drain(&mut socket, QUIET, DRAIN_LIMIT).await;
            // Open: a polite goodbye. Closed by the hub: this only flushes the
            // reply to its close frame, or fails at once.
            let _ = timeout(CLOSE_WAIT, socket.close(None)).await;
            drained
        }))
        .await;
        tally(self.asked, self.connect_errors, self.first_error, &drained)
    }
}

/// Connects stalled client `spec` with a small receive buffer and reads its
/// first snapshots, all within [`fan::CONNECT_TIMEOUT`].
async fn connect_one(shared: &FanShared, spec: &FanSpec) -> Result<Socket, String> {
    let _permit = shared
        .connect_limit
        .acquire()
        .await
        .map_err(|_| "the run was aborted before this client connected".to_string())?;
    let node = shared.nodes.get(spec.node).ok_or_else(|| {
        format!(
            "stalled client {} is placed on node {}, which does not exist",
            spec.index, spec.node
        )
    })?;
    let url = fan::ws_url(&node.ws_base, &shared.game_ids, spec);
    let source = dial::source_for(node.addr, spec.index);
    let config = WebSocketConfig::default()
        .read_buffer_size(fan::READ_BUFFER)
        .write_buffer_size(0);
    let attempt = async {
        let stream = dial::connect_small_window(node.addr, source, RECV_BUFFER)
            .await
            .map_err(|e| format!("stalled client: connecting {url} from {source:?}: {e}"))?;
        let (mut ws, _response) =
            tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config))
                .await
                .map_err(|e| format!("stalled client: handshake with {url}: {e}"))?;
        let mut snapshots = 0;
        while snapshots < spec.games.len() {
            match ws.next().await {
                Some(Ok(Message::Binary(bytes))) => match frame_kind(&bytes) {
                    Some(FrameKind::Snapshot) => snapshots += 1,
                    Some(FrameKind::Error) => {
                        return Err(format!(
                            "stalled client on {url}: an error frame instead of a snapshot"
                        ));
                    }
                    Some(FrameKind::Other) | None => {}
                },
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("stalled client on {url}: {e}")),
                None => {
                    return Err(format!(
                        "stalled client on {url}: the hub closed before the snapshots"
                    ));
                }
            }
        }
        Ok(ws)
    };
    match timeout(fan::CONNECT_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "stalled client: no handshake and snapshots from {url} within {:?}",
            fan::CONNECT_TIMEOUT
        )),
    }
}

/// The kind of a server frame, as far as a stalled client cares.
#[derive(Debug, PartialEq, Eq)]
enum FrameKind {
    /// `t: "s"`.
    Snapshot,
    /// `t: "e"`.
    Error,
    /// Anything else.
    Other,
}

/// Just the `t` of a server frame.
#[derive(Deserialize)]
struct Kind<'a> {
    /// `s`, `d`, `e` or `p`.
    #[serde(borrow)]
    t: &'a str,
}

/// The kind of a MessagePack frame, `None` when it is not one.
fn frame_kind(bytes: &[u8]) -> Option<FrameKind> {
    let kind: Kind<'_> = rmp_serde::from_slice(bytes).ok()?;
    Some(match kind.t {
        "s" => FrameKind::Snapshot,
        "e" => FrameKind::Error,
        _ => FrameKind::Other,
    })
}

/// How a stalled client's connection stood at the end of the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Standing {
    /// The hub was silent for [`QUIET`] (or still sending at
    /// [`DRAIN_LIMIT`]): it had not given up on the client.
    Open,
    /// The hub had ended the connection; why, as far as the client can tell
    /// (e.g. `close 1008 slow consumer`).
    Disconnected(String),
}

/// What reading a stalled client at the end found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Drained {
    /// Open or not.
    pub(crate) standing: Standing,
    /// Data frames read (sent by the hub, never read until now).
    pub(crate) frames: u64,
    /// Their payload bytes.
    pub(crate) bytes: u64,
}

/// Reads `socket` until the hub's close frame, the connection's end, `quiet`
/// without a message, or `limit` in all.
pub(crate) async fn drain<S>(socket: &mut S, quiet: Duration, limit: Duration) -> Drained
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let deadline = Instant::now() + limit;
    let (mut frames, mut bytes) = (0, 0);
    let standing = loop {
        let wait = (Instant::now() + quiet).min(deadline);
        match timeout_at(wait, socket.next()).await {
            Err(_) => break Standing::Open,
            Ok(Some(Ok(Message::Close(frame)))) => {
                break Standing::Disconnected(match frame {
                    Some(f) => format!("close {} {}", u16::from(f.code), f.reason),
                    None => "close frame without a code".into(),
                });
            }
            Ok(Some(Ok(message @ (Message::Binary(_) | Message::Text(_))))) => {
                frames += 1;
                bytes += message.len() as u64;
            }
            // Pings (answered by tungstenite), pongs, raw frames.
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => break Standing::Disconnected(error_reason(&e)),
            Ok(None) => break Standing::Disconnected(NO_CLOSE_FRAME.into()),
        }
    };
    Drained {
        standing,
        frames,
        bytes,
    }
}

/// A read error as a reason the connection ended: few distinct values, so
/// that the report can count them.
fn error_reason(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)
        | tungstenite::Error::ConnectionClosed
        | tungstenite::Error::AlreadyClosed => NO_CLOSE_FRAME.into(),
        tungstenite::Error::Io(io) => format!("connection error: {}", io.kind()),
        other => format!("connection error: {other}"),
    }
}

/// The report on `asked` stalled clients, of which `connect_errors` failed
/// to connect and the others were read at the end (`drained`).
pub(crate) fn tally(
    asked: usize,
    connect_errors: u64,
    first_connect_error: Option<String>,
    drained: &[Drained],
) -> StalledReport {
    let mut report = StalledReport {
        asked,
        connected: drained.len() as u64,
        connect_errors,
        first_connect_error,
        ..StalledReport::default()
    };
    for d in drained {
        match &d.standing {
            Standing::Open => report.open += 1,
            Standing::Disconnected(reason) => {
                report.disconnected += 1;
                *report.disconnect_reasons.entry(reason.clone()).or_default() += 1;
            }
        }
        report.frames_read_at_end += d.frames;
        report.bytes_read_at_end += d.bytes;
    }
    report
}

/// Counts of each reason, e.g. `2 × close 1008 slow consumer`.
pub(crate) fn reasons_line(reasons: &BTreeMap<String, u64>) -> String {
    reasons
        .iter()
        .map(|(reason, n)| format!("{n} × {reason}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::{Drained, FrameKind, Standing, drain, frame_kind, tally};
    use crate::{
        fan::{FanKind, FanNode, FanShared, FanSpec},
        poster::latency_histogram,
        sent::SentTimes,
    };
    use futures_util::{SinkExt, StreamExt, stream};
    use std::{
        sync::{Arc, Mutex, atomic::AtomicBool},
        time::Duration,
    };
    use tokio::sync::Semaphore;
    use tokio_tungstenite::tungstenite::{
        self, Message,
        error::ProtocolError,
        protocol::{CloseFrame, frame::coding::CloseCode},
    };

    type Item = Result<Message, tungstenite::Error>;

    const QUIET: Duration = Duration::from_millis(500);
    const LIMIT: Duration = Duration::from_secs(5);

    fn binary(n: usize) -> Item {
        Ok(Message::binary(vec![0u8; n]))
    }

    fn close(code: u16, reason: &'static str) -> Item {
        Ok(Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        })))
    }

    #[tokio::test(start_paused = true)]
    async fn a_close_frame_behind_the_unread_data_is_a_disconnect() {
        let mut socket = stream::iter(vec![binary(10), binary(20), close(1008, "slow consumer")])
            .chain(stream::pending());
        let drained = drain(&mut socket, QUIET, LIMIT).await;
        assert_eq!(
            drained,
            Drained {
                standing: Standing::Disconnected("close 1008 slow consumer".into()),
                frames: 2,
                bytes: 30,
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_ends_without_a_close_frame_is_a_disconnect() {
        let mut ended = stream::iter(vec![binary(5)]);
        let drained = drain(&mut ended, QUIET, LIMIT).await;
        assert_eq!(
            drained.standing,
            Standing::Disconnected("connection ended without a close frame".into())
        );
        let mut reset = stream::iter(vec![Err(tungstenite::Error::Protocol(
            ProtocolError::ResetWithoutClosingHandshake,
        ))]);
        let drained = drain(&mut reset, QUIET, LIMIT).await;
        assert_eq!(
            drained.standing,
            Standing::Disconnected("connection ended without a close frame".into())
        );
        let mut refused = stream::iter(vec![Err(tungstenite::Error::Io(
            std::io::ErrorKind::ConnectionReset.into(),
        ))]);
        let drained = drain(&mut refused, QUIET, LIMIT).await;
        assert_eq!(
            drained.standing,
            Standing::Disconnected("connection error: connection reset".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_hub_is_still_connected() {
        let start = tokio::time::Instant::now();
        let mut socket = stream::iter(vec![binary(7)]).chain(stream::pending());
        let drained = drain(&mut socket, QUIET, LIMIT).await;
        assert_eq!(drained.standing, Standing::Open);
        assert_eq!(drained.frames, 1);
        assert_eq!(start.elapsed(), QUIET);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hub_still_sending_at_the_limit_is_still_connected() {
        let start = tokio::time::Instant::now();
        let mut socket = Box::pin(stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((binary(1), ()))
        }));
        let drained = drain(&mut socket, QUIET, LIMIT).await;
        assert_eq!(drained.standing, Standing::Open);
        assert_eq!(start.elapsed(), LIMIT);
        assert!(drained.frames >= 49, "{drained:?}");
    }

    #[test]
    fn the_tally_counts_open_and_disconnected_clients_and_why() {
        let gone = |reason: &str, bytes| Drained {
            standing: Standing::Disconnected(reason.into()),
            frames: 1,
            bytes,
        };
        let drained = [
            gone("close 1008 slow consumer", 100),
            gone("connection ended without a close frame", 10),
            gone("close 1008 slow consumer", 1),
            Drained {
                standing: Standing::Open,
                frames: 2,
                bytes: 4,
            },
        ];
        let report = tally(5, 1, Some("refused".into()), &drained);
        assert_eq!(
            (report.asked, report.connected, report.connect_errors),
            (5, 4, 1)
        );
        assert_eq!((report.disconnected, report.open), (3, 1));
        assert_eq!(
            (report.frames_read_at_end, report.bytes_read_at_end),
            (5, 115)
        );
        assert_eq!(
            super::reasons_line(&report.disconnect_reasons),
            "2 × close 1008 slow consumer, 1 × connection ended without a close frame"
        );
    }

    #[test]
    fn frames_are_told_apart_by_their_kind() {
        let frame = |t: &str| rmp_serde::to_vec_named(&serde_json::json!({"t": t, "g": "lt:g1"}));
        assert_eq!(
            frame_kind(&frame("s").expect("encodes")),
            Some(FrameKind::Snapshot)
        );
        assert_eq!(
            frame_kind(&frame("e").expect("encodes")),
            Some(FrameKind::Error)
        );
        assert_eq!(
            frame_kind(&frame("d").expect("encodes")),
            Some(FrameKind::Other)
        );
        assert_eq!(frame_kind(b"\x01"), None);
    }

    /// A stalled client against a small WebSocket server on port 0: it gets
    /// its snapshot, reads nothing more, and at the end finds the server's
    /// 1008 close frame behind the diffs it never read.
    #[tokio::test]
    async fn a_stalled_client_finds_the_close_frame_behind_unread_diffs() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local address");
        let snapshot =
            rmp_serde::to_vec_named(&serde_json::json!({"t": "s", "g": "lt:g1", "q": 0, "d": {}}))
                .expect("encodes");
        let diff =
            rmp_serde::to_vec_named(&serde_json::json!({"t": "d", "g": "lt:g1", "q": 1, "d": {}}))
                .expect("encodes");
        let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accepts");
            let mut ws = tokio_tungstenite::accept_async(tcp)
                .await
                .expect("upgrades");
            ws.send(Message::binary(snapshot)).await.expect("sends");
            for _ in 0..3 {
                ws.send(Message::binary(diff.clone())).await.expect("sends");
            }
            ws.send(Message::Close(Some(CloseFrame {
                code: CloseCode::Policy,
                reason: "slow consumer".into(),
            })))
            .await
            .expect("sends");
            let _ = sent_tx.send(());
            // Wait for the client's reply, as a hub does.
            while let Some(Ok(_)) = ws.next().await {}
        });
        let shared = FanShared {
            nodes: vec![FanNode {
                ws_base: format!("ws://{addr}"),
                addr,
                latency: Mutex::new(latency_histogram().expect("histogram")),
                send_latency: Mutex::new(latency_histogram().expect("histogram")),
                cross_latency: Mutex::new(latency_histogram().expect("histogram")),
                poster: None,
            }],
            game_ids: vec!["lt:g1".to_string()].into(),
            measuring: Arc::new(AtomicBool::new(false)),
            check_state: true,
            connect_limit: Semaphore::new(4),
            sent: Arc::new(SentTimes::new(1)),
            rotation: Arc::new(crate::rotation::Rotation::new(
                vec!["lt:g1".to_string()].into(),
                1,
                None,
                false,
            )),
            frames: Arc::default(),
        };
        let spec = FanSpec {
            index: 0,
            node: 0,
            games: vec![0],
            kind: FanKind::Steady,
        };
        let stalled = super::Stalled::connect(&shared, &[spec]).await;
        assert_eq!(stalled.connect_errors, 0, "{:?}", stalled.first_error);
        sent_rx.await.expect("the server sent everything");
        let report = stalled.finish().await;
        assert_eq!(
            (report.connected, report.disconnected, report.open),
            (1, 1, 0)
        );
        assert_eq!(
            super::reasons_line(&report.disconnect_reasons),
            "1 × close 1008 slow consumer"
        );
        assert_eq!(report.frames_read_at_end, 3);
        server.await.expect("the server ends");
    }
}
