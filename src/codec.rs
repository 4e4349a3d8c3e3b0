//! Frames ↔ MessagePack bytes.
//!
//! Server frames are MessagePack maps, encoded **once** per event and shared as
//! [`Bytes`] by every subscriber. Client control messages arrive as JSON text
//! or MessagePack binary with the same shape.
//!
//! | frame | keys |
//! | --- | --- |
//! | snapshot | `t:"s"`, `g`, `q`, `d`, and `n` (fans watching) when known |
//! | diff | `t:"d"`, `g`, `q`, `d`, `ts` |
//! | occupancy | `t:"o"`, `g`, `n`: fans watching the game on every node (see `registry::occupancy`) |
//! | error | `t:"e"`, `code`, `msg`, `g?` |
//! | pong | `t:"p"` |

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{GameId, GameState};

/// The kind of a server frame, for metrics and queue policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Full state of a game.
    Snapshot,
    /// Merge patch from `q-1` to `q`.
    Diff,
    /// An error about a client message or a game.
    Error,
    /// Answer to a client ping.
    Pong,
    /// How many fans watch a game (at most one per game per
    /// `occupancy.interval`, only when it changed).
    Occupancy,
}

impl FrameKind {
    /// The label used in `scorehub_frames_sent_total{kind}`.
    pub fn label(self) -> &'static str {
        match self {
            FrameKind::Snapshot => "snapshot",
            FrameKind::Diff => "diff",
            FrameKind::Error => "error",
            FrameKind::Pong => "pong",
            FrameKind::Occupancy => "occupancy",
        }
    }
}

#[derive(Serialize)]
struct SnapshotFrame<'a> {
    t: &'static str,
    g: &'a str,
    q: u64,
    d: &'a GameState,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u64>,
}

#[derive(Serialize)]
struct OccupancyFrame<'a> {
    t: &'static str,
    g: &'a str,
    n: u64,
}

#[derive(Serialize)]
struct DiffFrame<'a> {
    t: &'static str,
    g: &'a str,
    q: u64,
    d: &'a Value,
    ts: i64,
}

#[derive(Serialize)]
struct ErrorFrame<'a> {
    t: &'static str,
    code: &'a str,
    msg: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    g: Option<&'a str>,
}

#[derive(Serialize)]
struct PongFrame {
    t: &'static str,
}

fn to_bytes<T: Serialize>(frame: &T) -> Bytes {
    // Serialising plain structs of strings, integers and JSON values into a
    // Vec cannot fail; an empty frame would only ever be a harmless no-op.
    Bytes::from(rmp_serde::to_vec_named(frame).unwrap_or_default())
}

/// `{t:"s", g, q, d}`: the full state.
pub fn snapshot(state: &GameState) -> Bytes {
    snapshot_watched(state, None)
}

/// `{t:"s", g, q, d, n}`: the full state and, when given, how many fans
/// watch the game (`n`).
pub fn snapshot_watched(state: &GameState, watching: Option<u64>) -> Bytes {
    to_bytes(&SnapshotFrame {
        t: "s",
        g: state.game.as_str(),
        q: state.seq,
        d: state,
        n: watching,
    })
}

/// `{t:"o", g, n}`: `watching` fans watch `game`, over every node.
pub fn occupancy(game: &GameId, watching: u64) -> Bytes {
    to_bytes(&OccupancyFrame {
        t: "o",
        g: game.as_str(),
        n: watching,
    })
}

/// `{t:"d", g, q, d, ts}`: the merge patch to `seq`, ingested at `ts` (Unix ms).
pub fn diff(game: &GameId, seq: u64, patch: &Value, ts: i64) -> Bytes {
    to_bytes(&DiffFrame {
        t: "d",
        g: game.as_str(),
        q: seq,
        d: patch,
        ts,
    })
}

/// `{t:"e", code, msg, g?}`.
pub fn error(code: &str, msg: &str, game: Option<&str>) -> Bytes {
    to_bytes(&ErrorFrame {
        t: "e",
        code,
        msg,
        g: game,
    })
}

/// `{t:"p"}`.
pub fn pong() -> Bytes {
    to_bytes(&PongFrame { t: "p" })
}

/// A control message from a fan.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum ClientMsg {
    /// Subscribe to games and leagues; `since` asks to resume after a seq.
    Sub {
        /// Game ids.
        #[serde(default)]
        games: Vec<String>,
        /// League names.
        #[serde(default)]
        leagues: Vec<String>,
        /// Game id → last seq the client holds.
        #[serde(default)]
        since: BTreeMap<String, u64>,
    },
    /// Unsubscribe.
    Unsub {
        /// Game ids.
        #[serde(default)]
        games: Vec<String>,
        /// League names.
        #[serde(default)]
        leagues: Vec<String>,
    },
    /// Answered with a pong frame.
    Ping,
}

/// Why a client's control message was refused; its text is a sentence for
/// the client (sent back in an `error` frame).
#[derive(Debug, thiserror::Error)]
pub enum BadMessage {
    /// A text frame that is not a control message in JSON.
    #[error("bad message: {0}")]
    Json(#[source] serde_json::Error),
    /// A binary frame that is not a control message in MessagePack.
    #[error("bad message: {0}")]
    MessagePack(#[source] rmp_serde::decode::Error),
}

/// A MessagePack float that is NaN or infinite (see [`check_finite_floats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a float is NaN or infinite; numbers must be finite")]
pub struct NonFiniteFloat;

/// Decodes a text (JSON) control message.
pub fn decode_text(text: &str) -> Result<ClientMsg, BadMessage> {
    serde_json::from_str(text).map_err(BadMessage::Json)
}

/// Decodes a binary (MessagePack) control message.
pub fn decode_binary(bytes: &[u8]) -> Result<ClientMsg, BadMessage> {
    // Nesting is capped as for request bodies: serde buffers an unknown
    // field of a tagged enum recursively, and rmp-serde's own cap (1024)
    // leaves a worker's stack only a thin margin.
    let mut de = rmp_serde::Deserializer::new(bytes);
    de.set_max_depth(MAX_MSGPACK_DEPTH);
    ClientMsg::deserialize(&mut de).map_err(BadMessage::MessagePack)
}

/// Deepest nesting of arrays and maps accepted in a MessagePack body: the
/// same as serde_json's limit for JSON bodies. rmp-serde's own default (1024)
/// lets a body of a few KB recurse deep enough to overflow a 2 MiB thread
/// stack in a debug build (found by replaying the `event_body` fuzz corpus).
pub const MAX_MSGPACK_DEPTH: usize = 128;

/// Checks that MessagePack `bytes` hold no NaN or infinite float. Decoded
/// into JSON values they would become `null`, which reads as "absent" (an
/// `expected_seq` dropped) or "delete" (a patch removing a key). Walks the
/// encoding without recursion or allocation; what is not MessagePack at
/// all is left for the decoder to report.
pub fn check_finite_floats(mut bytes: &[u8]) -> Result<(), NonFiniteFloat> {
    /// Takes `n` bytes off the front; `None` past the end.
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (bytes.get(..n)?, bytes.get(n..)?);
        *bytes = rest;
        Some(head)
    }
    /// A big-endian length of `n` bytes.
    fn len(bytes: &mut &[u8], n: usize) -> Option<usize> {
        let raw = take(bytes, n)?;
        let v = raw.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
        usize::try_from(v).ok()
    }
    let mut values: u64 = 1;
    while values > 0 {
        values -= 1;
        let Some(marker) = take(&mut bytes, 1).map(|m| m[0]) else {
            return Ok(());
        };
        let skipped = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Some(()),
            0x80..=0x8f => {
                values += 2 * u64::from(marker & 0x0f);
                Some(())
            }
            0x90..=0x9f => {
                values += u64::from(marker & 0x0f);
                Some(())
            }
            0xa0..=0xbf => take(&mut bytes, usize::from(marker & 0x1f)).map(drop),
            0xc4 | 0xd9 => len(&mut bytes, 1)
                .and_then(|n| take(&mut bytes, n))
                .map(drop),
            0xc5 | 0xda => len(&mut bytes, 2)
                .and_then(|n| take(&mut bytes, n))
                .map(drop),
            0xc6 | 0xdb => len(&mut bytes, 4)
                .and_then(|n| take(&mut bytes, n))
                .map(drop),
            0xc7 => len(&mut bytes, 1)
                .and_then(|n| take(&mut bytes, n + 1))
                .map(drop),
            0xc8 => len(&mut bytes, 2)
                .and_then(|n| take(&mut bytes, n + 1))
                .map(drop),
            0xc9 => len(&mut bytes, 4)
                .and_then(|n| take(&mut bytes, n.saturating_add(1)))
                .map(drop),
            0xca => {
                let raw = take(&mut bytes, 4);
                if let Some(raw) = raw
                    && !f32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]).is_finite()
                {
                    return Err(NonFiniteFloat);
                }
                raw.map(drop)
            }
            0xcb => {
                let raw = take(&mut bytes, 8);
                if let Some(raw) = raw {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(raw);
                    if !f64::from_be_bytes(b).is_finite() {
                        return Err(NonFiniteFloat);
                    }
                }
                raw.map(drop)
            }
            0xcc | 0xd0 => take(&mut bytes, 1).map(drop),
            0xcd | 0xd1 => take(&mut bytes, 2).map(drop),
            0xce | 0xd2 => take(&mut bytes, 4).map(drop),
            0xcf | 0xd3 => take(&mut bytes, 8).map(drop),
            0xd4 => take(&mut bytes, 2).map(drop),
            0xd5 => take(&mut bytes, 3).map(drop),
            0xd6 => take(&mut bytes, 5).map(drop),
            0xd7 => take(&mut bytes, 9).map(drop),
            0xd8 => take(&mut bytes, 17).map(drop),
            0xdc => len(&mut bytes, 2).map(|n| values += n as u64),
            0xdd => len(&mut bytes, 4).map(|n| values += n as u64),
            0xde => len(&mut bytes, 2).map(|n| values += 2 * n as u64),
            0xdf => len(&mut bytes, 4).map(|n| values += 2 * n as u64),
            // 0xc1 is never used.
            _ => None,
        };
        if skipped.is_none() {
            // Truncated or not MessagePack: the decoder says which.
            return Ok(());
        }
    }
    Ok(())
}

/// A decoded server frame, for tests, benches and tools.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DecodedFrame {
    /// `s`, `d`, `o`, `e` or `p`.
    pub t: String,
    /// Game id.
    #[serde(default)]
    pub g: Option<String>,
    /// Seq.
    #[serde(default)]
    pub q: Option<u64>,
    /// State or patch.
    #[serde(default)]
    pub d: Option<Value>,
    /// Ingest time.
    #[serde(default)]
    pub ts: Option<i64>,
    /// Error code.
    #[serde(default)]
    pub code: Option<String>,
    /// Error message.
    #[serde(default)]
    pub msg: Option<String>,
    /// Fans watching (occupancy frames; snapshots when known).
    #[serde(default)]
    pub n: Option<u64>,
}

/// Decodes a server frame.
pub fn decode_frame(bytes: &[u8]) -> Result<DecodedFrame, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NewGame;
    use serde_json::json;

    #[test]
    fn frames_round_trip() {
        let id = GameId::parse("nba:x").unwrap();
        let state = NewGame::between("H", "A")
            .into_state(id.clone(), 5)
            .unwrap();
        let f = decode_frame(&snapshot(&state)).unwrap();
        assert_eq!((f.t.as_str(), f.q), ("s", Some(0)));
        assert_eq!(f.d.unwrap(), serde_json::to_value(&state).unwrap());

        let patch = json!({"seq": 1, "home": {"score": 2}});
        let f = decode_frame(&diff(&id, 1, &patch, 99)).unwrap();
        assert_eq!(f.t, "d");
        assert_eq!(f.g.as_deref(), Some("nba:x"));
        assert_eq!(f.d, Some(patch));
        assert_eq!(f.ts, Some(99));

        let f = decode_frame(&error("bad_message", "nope", None)).unwrap();
        assert_eq!(
            (f.t.as_str(), f.code.as_deref()),
            ("e", Some("bad_message"))
        );
        assert_eq!(decode_frame(&pong()).unwrap().t, "p");
        // Without a count, a snapshot has no `n` key at all.
        assert_eq!(f_keys(&snapshot(&state)), ["d", "g", "q", "t"]);
    }

    /// The keys of an encoded frame map, sorted.
    fn f_keys(bytes: &[u8]) -> Vec<String> {
        let v: serde_json::Map<String, Value> = rmp_serde::from_slice(bytes).unwrap();
        let mut keys: Vec<String> = v.keys().cloned().collect();
        keys.sort();
        keys
    }

    #[test]
    fn occupancy_frames_and_snapshots_carry_the_count() {
        let id = GameId::parse("nba:x").unwrap();
        let bytes = occupancy(&id, 1234);
        let f = decode_frame(&bytes).unwrap();
        assert_eq!(
            (f.t.as_str(), f.g.as_deref(), f.n),
            ("o", Some("nba:x"), Some(1234))
        );
        assert_eq!(f_keys(&bytes), ["g", "n", "t"]);
        // The exact MessagePack map: {t:"o", g:"nba:x", n:1234}, named keys
        // in this order, the count as the smallest integer encoding.
        let mut want = vec![0x83, 0xa1, b't', 0xa1, b'o', 0xa1, b'g', 0xa5];
        want.extend_from_slice(b"nba:x");
        want.extend_from_slice(&[0xa1, b'n', 0xcd, 0x04, 0xd2]);
        assert_eq!(bytes.as_ref(), want.as_slice());

        let state = NewGame::between("H", "A")
            .into_state(id.clone(), 5)
            .unwrap();
        let f = decode_frame(&snapshot_watched(&state, Some(7))).unwrap();
        assert_eq!((f.t.as_str(), f.q, f.n), ("s", Some(0), Some(7)));
        assert_eq!(f.d.unwrap(), serde_json::to_value(&state).unwrap());
        assert_eq!(FrameKind::Occupancy.label(), "occupancy");
    }

    #[test]
    fn client_messages_decode_from_json_and_msgpack() {
        let m = decode_text(r#"{"op":"sub","games":["nba:a"],"since":{"nba:a":3}}"#).unwrap();
        assert_eq!(
            m,
            ClientMsg::Sub {
                games: vec!["nba:a".into()],
                leagues: vec![],
                since: [("nba:a".to_string(), 3)].into()
            }
        );
        let bin = rmp_serde::to_vec_named(&json!({"op":"unsub","leagues":["nba"]})).unwrap();
        assert_eq!(
            decode_binary(&bin).unwrap(),
            ClientMsg::Unsub {
                games: vec![],
                leagues: vec!["nba".into()]
            }
        );
        assert_eq!(decode_text(r#"{"op":"ping"}"#).unwrap(), ClientMsg::Ping);
        assert!(decode_text(r#"{"op":"dance"}"#).is_err());
        assert!(decode_text("not json").is_err());
        assert!(decode_binary(&[0xc1]).is_err());
    }
}
