//! The entry of `GET /v1/ws`: admission, then the upgrade.
//!
//! [`ws_handler`] refuses a fan while the hub shuts down (503), asks the
//! hub's limits for a connection slot for the client's address (the
//! forwarded one behind a trusted proxy; per-address connect rate: 429;
//! connection cap: 503), upgrades, and runs the session on the hub's
//! session tracker, so shutdown waits for it. The slot is held until the
//! session ends. The query (`?games=..&leagues=..`) becomes the session's
//! first `sub`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing::Instrument;

use super::context::Context;
use super::session;
use super::upgrade::WsUpgrade;
use crate::codec::ClientMsg;
use crate::error::ApiError;
use crate::extract::{ClientIp, Query};

/// Query of `GET /v1/ws`: what to subscribe to at once, comma-separated.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct WsQuery {
    /// Game ids, e.g. `nba:a,nba:b`.
    pub games: Option<String>,
    /// League names, e.g. `nba,nhl`.
    pub leagues: Option<String>,
}

impl WsQuery {
    /// The `sub` message this query stands for (handled before anything the
    /// client sends), or `None` when it names nothing.
    pub(crate) fn initial_sub(&self) -> Option<ClientMsg> {
        let games = split_list(self.games.as_deref());
        let leagues = split_list(self.leagues.as_deref());
        if games.is_empty() && leagues.is_empty() {
            return None;
        }
        Some(ClientMsg::Sub {
            games,
            leagues,
            since: BTreeMap::new(),
        })
    }
}

/// Splits `a, b,,c` into `["a", "b", "c"]`.
fn split_list(list: Option<&str>) -> Vec<String> {
    list.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `GET /v1/ws`: upgrades to a fan session (503 while the hub shuts down or
/// every connection slot is taken, 429 when the address connects too fast).
pub(crate) async fn ws_handler(
    ws: WsUpgrade,
    State(ctx): State<Context>,
    ClientIp(client): ClientIp,
    Query(query): Query<WsQuery>,
) -> Response {
    if ctx.shutdown.is_cancelled() {
        return shutting_down();
    }
    let slot = match ctx.admit_fan(client) {
        Ok(slot) => slot,
        Err(refusal) => return refusal.into_response(),
    };
    let initial = query.initial_sub();
    // Counted by the tracker from now, so a shutdown starting before the
    // upgrade completes still waits for this session.
    let tracked = ctx.sessions.token();
    let send_buffer = ctx.config.send_buffer_bytes;
    ws.accept(send_buffer, move |io| async move {
        let conn_id = ctx.next_conn_id();
        // Debug level: entered on every poll, so free when debug is off.
        let span = tracing::debug_span!("ws", conn_id, client = %client);
        session::run(io, conn_id, ctx, initial)
            .instrument(span)
            .await;
        drop(slot);
        drop(tracked);
    })
}

fn shutting_down() -> Response {
    ApiError::NotReady("the hub is shutting down; fans should reconnect".into()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WsConfig;
    use crate::ws::testkit::{next_frame, start};

    #[test]
    fn query_lists_split_on_commas_and_skip_blanks() {
        let q = WsQuery {
            games: Some("nba:a, nba:b,,".into()),
            leagues: Some("nhl".into()),
        };
        assert_eq!(
            q.initial_sub(),
            Some(ClientMsg::Sub {
                games: vec!["nba:a".into(), "nba:b".into()],
                leagues: vec!["nhl".into()],
                since: BTreeMap::new(),
            })
        );
    }

    #[test]
    fn empty_query_subscribes_to_nothing() {
        assert_eq!(WsQuery::default().initial_sub(), None);
        let q = WsQuery {
            games: Some(" , ".into()),
            leagues: Some(String::new()),
        };
        assert_eq!(q.initial_sub(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn query_subscribes_games_and_leagues_at_once() {
        let hub = start(WsConfig::default()).await;
        hub.game("nba:g1").await;
        hub.game("nhl:h1").await;
        let mut fan = hub.connect("?games=nba:g1&leagues=nhl").await;
        let mut seen = [next_frame(&mut fan).await, next_frame(&mut fan).await];
        seen.sort_by(|a, b| a.g.cmp(&b.g));
        let games: Vec<_> = seen
            .iter()
            .map(|f| (f.t.as_str(), f.g.as_deref()))
            .collect();
        assert_eq!(games, [("s", Some("nba:g1")), ("s", Some("nhl:h1"))]);
        // A game created later in the watched league arrives by itself.
        hub.game("nhl:h2").await;
        let late = next_frame(&mut fan).await;
        assert_eq!((late.t.as_str(), late.g.as_deref()), ("s", Some("nhl:h2")));
    }
}
