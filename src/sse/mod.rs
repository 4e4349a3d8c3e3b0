//! Fans over Server-Sent Events, `GET /v1/sse?games=..&leagues=..`: the
//! fallback for networks that block WebSocket, with the WebSocket's
//! guarantees because it runs the same fan machinery.
//!
//! **Why it reuses the WebSocket session's parts.** A stream is a fan
//! connection (`crate::ws::Conn`) whose outbox never gets a socket: the
//! `sub` machinery (`ws.max_subscriptions`, league watches, `since` resumes
//! inside the history window, a snapshot otherwise), the actors' fan-out,
//! conflation and the teardown are the WebSocket's own code, so the
//! guarantees cannot drift apart. Only the last step differs: instead of
//! writing MessagePack frames to a socket, a task (`stream`) drains the
//! outbox and turns each frame into a JSON event (`event`).
//!
//! **Wire.** `text/event-stream`; first `retry: 2000`, then one event per
//! frame, all of the default type `message` (so `EventSource.onmessage` gets
//! them all; `t` inside says what it is), `data:` the frame's map as JSON:
//! snapshot `{"t":"s","g","q","d"}`, diff `{"t":"d","g","q","d","ts"}`,
//! error `{"t":"e","code","msg","g"?}`, occupancy `{"t":"o","g","n"}`.
//! Snapshots and diffs carry an `id:`
//! with the position of every followed game (`nba:a:17,nhl:b:4`; see
//! `position`), so a browser's own reconnect resumes them all. Comments
//! (`: keep-alive`) every `ws.ping_interval` keep proxies from cutting an
//! idle stream.
//!
//! **Resume.** The `Last-Event-ID` header, or the `last_event_id` query
//! parameter for clients that cannot set headers (the header wins: a
//! browser's reconnect sends the newer one), becomes the `sub`'s `since`.
//! Positions of games the query does not follow are ignored. A malformed id
//! is refused before the stream starts: `400 bad_last_event_id`.
//!
//! **Bad input** in `games`/`leagues` is answered as on the WebSocket: the
//! stream starts, and each invalid or unknown id gets an error event
//! (`invalid_game_id`, `game_not_found`, `invalid_league`,
//! `too_many_subscriptions`); the valid rest is followed. A stream cannot
//! change its subscriptions: a client reopens it with the new set (and its
//! positions, so it resumes). A query naming no game and no league is a
//! `400 bad_request`: such a stream would never send anything.
//!
//! **Admission and limits**, as for a WebSocket upgrade (`crate::ws`):
//! `503` while shutting down, the per-address connect rate (`429`), a fan
//! slot of `limits.max_connections` (`503`), and one of
//! `limits.max_sse_streams` (`503`): a stream is a response that never
//! ends, holding an HTTP connection the HTTP table cannot evict.
//! At shutdown every stream ends cleanly, so the HTTP drain finishes.
//!
//! - `position`: the stream's event id, parsed from `Last-Event-ID`.
//! - `event`: a frame → one SSE event of JSON.
//! - `stream`: the task draining the fan's outbox into the body.

mod event;
mod position;
mod stream;

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::codec::ClientMsg;
use crate::error::ApiError;
use crate::extract::{ClientIp, Query};
use crate::ws::{Conn, Context, WsQuery};
use position::Positions;

/// The `retry:` hint of every stream: a browser reconnects by itself after
/// this many ms.
pub(crate) const RETRY_MS: u64 = 2000;

/// Query of `GET /v1/sse`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct SseQuery {
    /// Game ids, comma-separated.
    pub games: Option<String>,
    /// League names, comma-separated.
    pub leagues: Option<String>,
    /// Positions to resume at, as in `Last-Event-ID` (which wins when both
    /// are sent).
    pub last_event_id: Option<String>,
}

/// `GET /v1/sse`: admits the fan, then streams its frames as events.
pub(crate) async fn sse_handler(
    State(ctx): State<Context>,
    ClientIp(client): ClientIp,
    Query(query): Query<SseQuery>,
    headers: HeaderMap,
) -> Response {
    if ctx.shutdown.is_cancelled() {
        return ApiError::NotReady("the hub is shutting down; fans should reconnect".into())
            .into_response();
    }
    let resume = match resume_at(&headers, &query, ctx.config.max_subscriptions) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let initial = WsQuery {
        games: query.games,
        leagues: query.leagues,
    }
    .initial_sub()
    .map(|msg| match msg {
        ClientMsg::Sub { games, leagues, .. } => ClientMsg::Sub {
            games,
            leagues,
            since: resume.since(),
        },
        other => other,
    });
    let Some(initial) = initial else {
        // A stream cannot subscribe later: one that follows nothing never
        // sends anything.
        return ApiError::BadRequest(
            "name what to follow: GET /v1/sse?games=league:game,...&leagues=league,... (a stream's subscriptions are fixed)".into(),
        )
        .into_response();
    };
    let slots = match ctx.admit_sse_fan(client) {
        Ok(slots) => slots,
        Err(refusal) => return refusal.into_response(),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(stream::BODY_CHUNKS);
    let conn_id = ctx.next_conn_id();
    let sessions = ctx.sessions.clone();
    let conn = Conn::new(conn_id, ctx);
    let span = tracing::debug_span!("sse", conn_id, client = %client);
    sessions.spawn(stream::run(conn, initial, resume, tx, slots, RETRY_MS).instrument(span));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    });
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // nginx: pass events on at once instead of buffering them.
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// The positions to resume at: `Last-Event-ID`, else `last_event_id`.
fn resume_at(headers: &HeaderMap, query: &SseQuery, max: usize) -> Result<Positions, ApiError> {
    let raw = match headers.get("last-event-id") {
        Some(v) => v.to_str().map_err(|_| {
            ApiError::BadLastEventId(
                "Last-Event-ID is not visible ASCII; send `game:seq` pairs such as `nba:a:17`"
                    .into(),
            )
        })?,
        None => query.last_event_id.as_deref().unwrap_or_default(),
    };
    Positions::parse(raw, max).map_err(|e| ApiError::BadLastEventId(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_wins_over_the_query_and_bad_ids_are_400() {
        let query = SseQuery {
            last_event_id: Some("nba:a:1".into()),
            ..SseQuery::default()
        };
        let mut headers = HeaderMap::new();
        let got = resume_at(&headers, &query, 10).unwrap();
        assert_eq!(got.since().get("nba:a"), Some(&1));
        headers.insert("last-event-id", HeaderValue::from_static("nba:a:5"));
        let got = resume_at(&headers, &query, 10).unwrap();
        assert_eq!(got.since().get("nba:a"), Some(&5));
        headers.insert("last-event-id", HeaderValue::from_static("nba:a"));
        let err = resume_at(&headers, &query, 10).unwrap_err();
        assert_eq!(err.code(), "bad_last_event_id");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }
}
