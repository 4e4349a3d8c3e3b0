//! Frames ↔ MessagePack bytes.
//!
//! Server frames are MessagePack maps, encoded **once** per event and shared as
//! [`Bytes`] by every subscriber. Client control messages arrive as JSON text
//! or MessagePack binary with the same shape.

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
}

impl FrameKind {
    /// The label used in `scorehub_frames_sent_total{kind}`.
    pub fn label(self) -> &'static str {
        match self {
            FrameKind::Snapshot => "snapshot",
            FrameKind::Diff => "diff",
            FrameKind::Error => "error",
            FrameKind::Pong => "pong",
        }
    }
}

#[derive(Serialize)]
struct SnapshotFrame<'a> {
    t: &'static str,
    g: &'a str,
    q: u64,
    d: &'a GameState,
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
    to_bytes(&SnapshotFrame {
        t: "s",
        g: state.game.as_str(),
        q: state.seq,
        d: state,
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

/// Decodes a text (JSON) control message. The error is a sentence for the client.
pub fn decode_text(text: &str) -> Result<ClientMsg, String> {
    serde_json::from_str(text).map_err(|e| format!("bad message: {e}"))
}

/// Decodes a binary (MessagePack) control message.
pub fn decode_binary(bytes: &[u8]) -> Result<ClientMsg, String> {
    rmp_serde::from_slice(bytes).map_err(|e| format!("bad message: {e}"))
}

/// A decoded server frame, for tests, benches and tools.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DecodedFrame {
    /// `s`, `d`, `e` or `p`.
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
}

/// Decodes a server frame.
pub fn decode_frame(bytes: &[u8]) -> Result<DecodedFrame, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{NewGame, NewTeam};
    use serde_json::json;

    #[test]
    fn frames_round_trip() {
        let id = GameId::parse("nba:x").unwrap();
        let state = NewGame {
            home: NewTeam { name: "H".into() },
            away: NewTeam { name: "A".into() },
            status: None,
            period: None,
            extra: None,
        }
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
