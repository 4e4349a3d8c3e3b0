//! How a fan's session ends on the wire: whatever ends it (the client's
//! close, an oversized message, a slow consumer, a stuck fan) while frames
//! are half-written, the client never sees a close frame inside a data
//! frame, nor a data frame after a close frame. Each test failed before the
//! fix it guards (the socket tracks whether it stopped inside a frame; the
//! outbox keeps a begun frame's rest through an overflow; the goodbye takes
//! the socket away from the game actors before the close reply; an
//! unsubscribed game no longer counts as conflated).
#![allow(clippy::unwrap_used)]
#![allow(missing_docs, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message as WsMsg;

use super::session::Stage;
use super::testkit::{PATIENCE, Stages, TestHub, start, start_watched};
use crate::codec;
use crate::config::WsConfig;
use crate::domain::{Action, Event, GameId, NewGame, NewTeam, Scalar};
use crate::fanout::outbox::Outbox;
use crate::fanout::pressure::Pressure;
use crate::fanout::wire::{self, Socket, Wire};
use crate::registry::Game;

// ------------------------------------------------------------------ helpers

/// `extra` as large as the domain allows (~10 KiB encoded), varying with `n`.
fn big_extra(n: u64) -> BTreeMap<String, Scalar> {
    (0..32)
        .map(|k| (format!("{k:0>60}"), Scalar::Str(format!("{n:0>256}"))))
        .collect()
}

impl TestHub {
    /// A game whose snapshot is about 10 KiB.
    async fn big_game(&self, id: &str) -> Game {
        let body = NewGame {
            home: NewTeam {
                name: "H".repeat(256),
            },
            away: NewTeam {
                name: "A".repeat(256),
            },
            status: None,
            period: None,
            extra: Some(big_extra(0)),
        };
        let id = GameId::parse(id).unwrap();
        self.state
            .registry
            .create(id, body, "test")
            .await
            .unwrap()
            .0
    }
}

/// Posts an event whose diff is about 10 KiB.
async fn big_diff(game: &Game, n: u64) {
    let extra: serde_json::Map<String, serde_json::Value> = big_extra(n)
        .into_iter()
        .map(|(k, v)| {
            let Scalar::Str(s) = v else { unreachable!() };
            (k, s.into())
        })
        .collect();
    let event = Event {
        event_id: format!("big-{n}"),
        expected_seq: None,
        action: Action::Set {
            patch: serde_json::json!({ "extra": extra }),
        },
    };
    game.apply(event, Arc::from("test"), std::time::Instant::now())
        .await
        .unwrap();
}

/// A TCP connection whose receive buffer is as small as the kernel allows,
/// so the server's socket fills after a few KiB.
async fn small_window_tcp(addr: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(2048).unwrap();
    sock.connect(addr).await.unwrap()
}

/// Connects with a raw WebSocket handshake on a small-window socket; the
/// bytes read past the `101` head are returned too.
async fn raw_connect(addr: SocketAddr, query: &str) -> (TcpStream, Vec<u8>) {
    let mut tcp = small_window_tcp(addr).await;
    let request = format!(
        "GET /v1/ws{query} HTTP/1.1\r\nHost: hub\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the hub closed the connection during the handshake");
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..i]).to_lowercase();
            assert!(head.starts_with("http/1.1 101"), "{head}");
            return (tcp, got[i + 4..].to_vec());
        }
    }
}

/// Reads until the server ends the connection (EOF or reset).
async fn read_to_eof(tcp: &mut TcpStream, got: &mut Vec<u8>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
            .await
            .expect("the server ends the connection in time")
        {
            Ok(0) | Err(_) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// The server's byte stream, split into (unmasked) frames.
#[derive(Debug)]
struct Parsed {
    /// Complete frames: first byte (FIN + opcode) and payload.
    frames: Vec<(u8, Vec<u8>)>,
    /// A frame the stream ended inside: first byte, declared payload length,
    /// and the bytes of it that arrived.
    truncated: Option<(u8, u64, Vec<u8>)>,
}

fn parse_frames(mut b: &[u8]) -> Parsed {
    let mut frames = Vec::new();
    while !b.is_empty() {
        if b.len() < 2 {
            return Parsed {
                frames,
                truncated: Some((b[0], u64::MAX, Vec::new())),
            };
        }
        assert_eq!(b[1] & 0x80, 0, "server frames are never masked");
        let (len, head) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()), 10),
            126 | 127 => {
                return Parsed {
                    frames,
                    truncated: Some((b[0], u64::MAX, Vec::new())),
                };
            }
            n => (u64::from(n), 2),
        };
        let total = head + usize::try_from(len).unwrap();
        if b.len() < total {
            return Parsed {
                frames,
                truncated: Some((b[0], len, b[head..].to_vec())),
            };
        }
        frames.push((b[0], b[head..total].to_vec()));
        b = &b[total..];
    }
    Parsed {
        frames,
        truncated: None,
    }
}

/// Fails when the stream ended inside a data frame whose received bytes end
/// with `close`: the close frame was written in the middle of that frame.
fn assert_no_close_inside_a_frame(got: &[u8], close: &[u8]) {
    let parsed = parse_frames(got);
    if let Some((first, declared, bytes)) = &parsed.truncated {
        assert!(
            !bytes.ends_with(close),
            "the close frame {close:02x?} was written inside a data frame: frame 0x{first:02x} \
             declares {declared} payload bytes, {} arrived and the last {} of them are the \
             close frame ({} whole frames before it)",
            bytes.len(),
            close.len(),
            parsed.frames.len()
        );
    }
}

/// A masked client frame header announcing a text frame of `len` bytes
/// (payload not sent).
fn masked_text_header(len: u64) -> Vec<u8> {
    let mut h = vec![0x81, 0x80 | 127];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[1, 2, 3, 4]);
    h
}

/// A masked client close frame with code 1000.
fn masked_close() -> Vec<u8> {
    let mask = [9u8, 8, 7, 6];
    let payload = 1000u16.to_be_bytes();
    let mut f = vec![0x88, 0x80 | 2];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

fn g(s: &str) -> GameId {
    GameId::parse(s).unwrap()
}

/// A connected TCP pair over loopback; the server side's send buffer is
/// small and the client does not read until told.
async fn tcp_pair() -> (Socket, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = small_window_tcp(listener.local_addr().unwrap()).await;
    let (server, _) = listener.accept().await.unwrap();
    socket2::SockRef::from(&server)
        .set_send_buffer_size(4096)
        .unwrap();
    let (_read, write) = server.into_split();
    (Socket::tcp(write), client)
}

// ------------------------------------------------------------------- tests

/// A hub with `ws` limits and eight games of ~10 KiB snapshots, and a raw
/// small-window fan subscribed to all of them (with the bytes read past the
/// handshake, and the session's reports): ~80 KiB of snapshots head for a
/// socket that takes ~10 KiB.
async fn fan_of_big_games(ws: WsConfig) -> (TestHub, TcpStream, Vec<u8>, Stages) {
    let (hub, stages) = start_watched(ws).await;
    let mut ids = Vec::new();
    for i in 0..8 {
        let id = format!("nba:big{i}");
        hub.big_game(&id).await;
        ids.push(id);
    }
    let (tcp, got) = raw_connect(hub.addr, &format!("?games={}", ids.join(","))).await;
    (hub, tcp, got, stages)
}

/// Outbox level. A direct write cuts a frame short and queues its rest at the
/// front; before the writer takes it, the byte cap overflows. The overflow
/// drops the queue but keeps that rest, so `close()` returns it and the
/// goodbye's close frame follows a whole frame. (It used to be dropped with
/// the queue, and the close frame followed half a frame.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflow_keeps_the_begun_rest_so_the_close_frame_follows_whole_frames() {
    let (socket, mut client) = tcp_pair().await;
    let ob = Outbox::new(1, 1024, 16 * 1024, Arc::new(Pressure::new()));
    ob.attach(socket);
    let a = g("x:a");
    let frame = Bytes::from(vec![7u8; 10_000]);
    // The client does not read: the socket fills, a direct write is cut
    // short (its rest queued first), and further pushes queue behind it
    // until the 16 KiB cap overflows. No writer task runs meanwhile.
    let mut pushes = 0;
    while !ob.is_closed() {
        let _ = ob.push_diff(&a, &frame);
        pushes += 1;
        assert!(pushes < 1000, "the byte cap never overflowed");
    }
    assert!(ob.overflowed());
    // What `say_goodbye` does next.
    let mut socket = ob.detach().expect("the socket is still parked");
    let leftovers = ob.close();
    assert!(leftovers.begun, "the rest of the begun frame survives");
    let mut last = leftovers.frames;
    let finish_len = last.len();
    last.push(Wire::Framed(wire::close(1008, "slow consumer")));
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        read_to_eof(&mut client, &mut got).await;
        got
    });
    socket.write_all(&last).await.unwrap();
    socket.shutdown().await.unwrap();
    drop(socket);
    let got = reader.await.unwrap();
    let parsed = parse_frames(&got);
    assert_no_close_inside_a_frame(&got, &wire::close(1008, "slow consumer"));
    assert!(
        parsed.truncated.is_none() || finish_len > 0,
        "close() must return the begun frame's rest after an overflow"
    );
}

/// End to end. A query subscription is handled before the writer loop
/// starts, so snapshots pile up in the outbox until the byte cap overflows;
/// the session's goodbye (close 1008) must not land behind half a snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_goodbye_follows_whole_frames() {
    let ws = WsConfig {
        max_queue_bytes: 16 * 1024,
        send_buffer_bytes: 4096,
        write_timeout: Duration::from_secs(60),
        ..WsConfig::default()
    };
    let (_hub, mut tcp, mut got, mut stages) = fan_of_big_games(ws).await;
    // The session pushes the snapshots into a socket nobody reads, until
    // the byte cap overflows and it says goodbye.
    stages.reach(Stage::Ending).await;
    read_to_eof(&mut tcp, &mut got).await;
    assert_no_close_inside_a_frame(&got, &wire::close(1008, "slow consumer"));
}

/// End to end. The writer task is blocked inside `write_all` with half a
/// frame written when the reader ends the session (here: an oversized
/// message). `select!` drops the writer's future and its batch; the socket
/// knows it stopped inside a frame, so the session drops the connection
/// instead of writing its close frame (1009) into that frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_end_during_a_blocked_write_never_puts_a_close_frame_inside_a_data_frame() {
    let ws = WsConfig {
        send_buffer_bytes: 4096,
        max_message_bytes: 256,
        write_timeout: Duration::from_secs(60),
        ..WsConfig::default()
    };
    let (_hub, mut tcp, mut got, mut stages) = fan_of_big_games(ws).await;
    // ~80 KiB of snapshots into a socket that takes ~10 KiB: the writer
    // takes what is queued and waits inside `write_all` (it starts the
    // write in the same poll as it reports, before the reader can see the
    // message sent below).
    stages.reach(Stage::Writing).await;
    tcp.write_all(&masked_text_header(100_000)).await.unwrap();
    // The reader ends the session while the write is blocked.
    stages.reach(Stage::Ending).await;
    read_to_eof(&mut tcp, &mut got).await;
    assert_no_close_inside_a_frame(&got, &wire::close(1009, "message too big"));
}

/// Same as above, with the client's close frame: tungstenite's close reply
/// must not go out in the middle of the frame the writer was writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_close_during_a_blocked_write_never_puts_the_reply_inside_a_data_frame() {
    let ws = WsConfig {
        send_buffer_bytes: 4096,
        write_timeout: Duration::from_secs(60),
        ..WsConfig::default()
    };
    let (_hub, mut tcp, mut got, mut stages) = fan_of_big_games(ws).await;
    stages.reach(Stage::Writing).await;
    tcp.write_all(&masked_close()).await.unwrap();
    stages.reach(Stage::Ending).await;
    read_to_eof(&mut tcp, &mut got).await;
    // tungstenite echoes the client's close code.
    let reply = [0x88u8, 0x02, 0x03, 0xe8];
    assert_no_close_inside_a_frame(&got, &reply);
}

/// End to end. A fan falls behind on a game (conflated: the game is marked
/// stale and `conflated_since` is set), then unsubscribes from it before the
/// fresh snapshot arrives. The unsubscription clears the stale mark, so
/// `watch_stuck` does not disconnect a fan that has caught up and keeps
/// reading. (The mark used to stay: the actor ignores the resync of a fan
/// it no longer has.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_a_conflated_game_does_not_leave_the_fan_stuck() {
    let stuck = Duration::from_secs(3);
    let ws = WsConfig {
        queue_frames: 2,
        send_buffer_bytes: 4096,
        write_timeout: Duration::from_secs(60),
        stuck_timeout: stuck,
        ..WsConfig::default()
    };
    let (hub, mut stages) = start_watched(ws).await;
    let game = hub.big_game("nba:a").await;
    let tcp = small_window_tcp(hub.addr).await;
    let url = format!("ws://{}/v1/ws?games=nba:a", hub.addr);
    let (mut fan, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    // The fan does not read: ~400 KiB of diffs conflate its queue.
    const EVENTS: u64 = 40;
    for n in 1..=EVENTS - 10 {
        big_diff(&game, n).await;
    }
    // The writer holds the socket and writes into buffers that cannot take
    // ~300 KiB (the client still does not read); the actor handles any
    // snapshot asked for before the next diffs (its mailbox is in order):
    // the last diffs now conflate the game, and no snapshot can follow
    // until the fan reads. (The precondition is checked below.)
    stages.reach(Stage::Writing).await;
    for n in EVENTS - 9..=EVENTS {
        big_diff(&game, n).await;
    }
    fan.send(WsMsg::text(r#"{"op":"unsub","games":["nba:a"]}"#))
        .await
        .unwrap();
    fan.send(WsMsg::text(r#"{"op":"ping"}"#)).await.unwrap();
    // The reader handles both before the fan reads, so before the writer
    // can drain and ask for a snapshot.
    stages.reach(Stage::Handled).await;
    stages.reach(Stage::Handled).await;
    // Catch up: everything up to the pong.
    let mut qs = Vec::new();
    loop {
        let msg = tokio::time::timeout(PATIENCE, fan.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match msg {
            WsMsg::Binary(b) => {
                let f = codec::decode_frame(&b).unwrap();
                if f.t == "p" {
                    break;
                }
                qs.push((f.t, f.q));
            }
            WsMsg::Close(c) => panic!("closed while catching up: {c:?}"),
            _ => {}
        }
    }
    let diffs = qs.iter().filter(|(t, _)| t == "d").count() as u64;
    assert!(
        diffs < EVENTS,
        "precondition: the fan was conflated (got {qs:?})"
    );
    eprintln!("caught up with {qs:?}");
    // The fan has caught up and follows nothing: it must stay connected.
    let watch = async {
        loop {
            match fan.next().await {
                Some(Ok(WsMsg::Close(c))) => return Some(c),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    };
    match tokio::time::timeout(stuck * 3, watch).await {
        Err(_) => {}
        Ok(end) => panic!("a fan that caught up was disconnected: {end:?}"),
    }
}

/// End to end, a race. `say_goodbye` takes the socket away from the game
/// actors before tungstenite hands over its close reply, so no actor fanning
/// out meanwhile writes a data frame after the close frame (RFC 6455
/// §5.5.1: no data after Close). It used to detach the socket only after
/// the reply had gone out, and lost this race within tens of attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_data_frame_follows_the_close_reply() {
    let hub = start(WsConfig::default()).await;
    let game = {
        let body = NewGame::between("H", "A");
        hub.state
            .registry
            .create(g("nba:race"), body, "test")
            .await
            .unwrap()
            .0
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        let game = game.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let event = Event {
                    event_id: format!("race-{n}"),
                    expected_seq: None,
                    action: Action::Score {
                        team: crate::domain::Side::Home,
                        points: 1,
                    },
                };
                let _ = game
                    .apply(event, Arc::from("test"), std::time::Instant::now())
                    .await;
            }
        })
    };
    let started = std::time::Instant::now();
    let mut attempts = 0;
    let mut violation = None;
    while attempts < 300 && started.elapsed() < Duration::from_secs(20) {
        attempts += 1;
        let mut tcp = TcpStream::connect(hub.addr).await.unwrap();
        tcp.write_all(
            b"GET /v1/ws?games=nba:race HTTP/1.1\r\nHost: hub\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let head_end = loop {
            let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let mut got = got[head_end..].to_vec();
        // Wait for the snapshot, then close while diffs stream.
        while parse_frames(&got).frames.is_empty() {
            let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        tcp.write_all(&masked_close()).await.unwrap();
        read_to_eof(&mut tcp, &mut got).await;
        let parsed = parse_frames(&got);
        if let Some(i) = parsed.frames.iter().position(|(b, _)| b & 0x0f == 0x8)
            && parsed.frames[i + 1..].iter().any(|(b, _)| b & 0x0f == 0x2)
        {
            violation = Some((
                attempts,
                parsed.frames[i..]
                    .iter()
                    .map(|(b, p)| format!("0x{b:02x}+{}B", p.len()))
                    .collect::<Vec<_>>(),
                parsed.truncated.is_some(),
            ));
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flood.await.unwrap();
    assert_eq!(
        violation, None,
        "(attempt, frames from the close reply on, truncated) out of {attempts} attempts"
    );
}
