//! A MessagePack frame → one SSE event of JSON text.
//!
//! Every frame is one event of the default type (`message`, so a browser's
//! `EventSource.onmessage` gets them all) whose `data:` line is the frame's
//! map as compact JSON: `{"t":"d","g":"nba:a","q":17,"d":{..},"ts":..}`,
//! the same keys as over the WebSocket. Compact JSON has no raw line break,
//! so the data is always one line. Snapshots and diffs carry an `id:` with
//! the stream's positions (see `position`); errors carry none.
//!
//! The frame is decoded and re-encoded for each SSE fan: frames are encoded
//! once as MessagePack for the WebSocket fans, and a JSON copy per SSE fan
//! is the price of the fallback (it is for the few fans whose network blocks
//! WebSocket, not for the crowd).

use serde_json::Value;

use super::position::Positions;
use crate::domain::GameId;

/// The comment sent at `ws.ping_interval` so proxies keep an idle stream.
pub(crate) const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Why a frame could not become an event (a bug: frames are our own maps).
#[derive(Debug, thiserror::Error)]
pub(crate) enum EventError {
    /// The bytes are not MessagePack.
    #[error("frame is not MessagePack: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// The map cannot be written as JSON.
    #[error("frame cannot be written as JSON: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The `retry:` hint opening every stream: how long a browser waits before
/// reconnecting by itself, in ms.
pub(crate) fn retry_hint(ms: u64) -> String {
    format!("retry: {ms}\n\n")
}

/// Appends the event for MessagePack `frame` to `out`, first noting a
/// snapshot's or diff's seq in `positions` (so its id includes it). Returns
/// the frame's `t`.
pub(crate) fn append(
    out: &mut Vec<u8>,
    frame: &[u8],
    positions: &mut Positions,
) -> Result<String, EventError> {
    let value: Value = rmp_serde::from_slice(frame)?;
    let t = value
        .get("t")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let position = match (t.as_str(), value.get("g"), value.get("q")) {
        ("s" | "d", Some(Value::String(g)), Some(q)) => GameId::parse(g).ok().zip(q.as_u64()),
        _ => None,
    };
    if let Some((game, seq)) = position {
        positions.set(game, seq);
        let mut id = String::from("id: ");
        positions.write_id(&mut id);
        id.push('\n');
        out.extend_from_slice(id.as_bytes());
    }
    out.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut *out, &value)?;
    out.extend_from_slice(b"\n\n");
    Ok(t)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::codec;

    #[test]
    fn frames_become_one_line_json_events_with_cumulative_ids() {
        let mut positions = Positions::parse("nhl:b:4", 10).unwrap();
        let mut out = Vec::new();
        let g = GameId::parse("nba:a").unwrap();
        let patch = json!({"home": {"score": 3}, "extra": {"note": "two\nlines"}});
        let t = append(&mut out, &codec::diff(&g, 17, &patch, 1234), &mut positions).unwrap();
        assert_eq!(t, "d");
        let text = String::from_utf8(out).unwrap();
        let (id, rest) = text.split_once('\n').unwrap();
        assert_eq!(id, "id: nba:a:17,nhl:b:4");
        let data = rest.strip_prefix("data: ").unwrap();
        assert!(data.ends_with("\n\n") && !data.trim_end().contains('\n'));
        let value: Value = serde_json::from_str(data.trim_end()).unwrap();
        assert_eq!(
            value,
            json!({"t": "d", "g": "nba:a", "q": 17, "d": patch, "ts": 1234})
        );

        let mut out = Vec::new();
        let err = codec::error("game_not_found", "no such game", Some("nba:x"));
        assert_eq!(append(&mut out, &err, &mut positions).unwrap(), "e");
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("data: {"), "errors carry no id: {text}");
        let value: Value = serde_json::from_str(text["data: ".len()..].trim_end()).unwrap();
        assert_eq!(
            value,
            json!({"t": "e", "code": "game_not_found", "msg": "no such game", "g": "nba:x"})
        );
        assert!(append(&mut Vec::new(), b"\xc1", &mut positions).is_err());
    }
}
