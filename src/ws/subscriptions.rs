//! What one connection follows: its games and leagues, and the `sub` and
//! `unsub` messages that change them, within `ws.max_subscriptions`.
//! Invalid or unknown ids get an error frame each; the connection stays.

use std::collections::{BTreeMap, HashSet};

use super::games::Games;
use super::session::Conn;
use crate::domain::{GameId, League};
use crate::registry::Game;

/// The games and leagues one connection asked for.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    /// Games subscribed by id.
    pub(crate) games: HashSet<GameId>,
    /// Leagues watched (their games are subscribed too).
    pub(crate) leagues: HashSet<League>,
}

impl Subscriptions {
    /// How many games the connection would hold with `games` and `leagues` added.
    async fn count_with(&self, registry: &Games, games: &[Game], leagues: &[League]) -> usize {
        let mut all: HashSet<GameId> = self.games.clone();
        all.extend(games.iter().map(|h| h.id().clone()));
        for league in self.leagues.iter().chain(leagues) {
            let handles = registry.league_games(league).await;
            all.extend(handles.iter().map(|h| h.id().clone()));
        }
        all.len()
    }
}

/// `sub`: refused as a whole when it would exceed `ws.max_subscriptions`;
/// invalid or unknown ids get an error frame each and are skipped. A message
/// naming more new games (or leagues) than the limit is refused before any
/// id is looked up, so one message cannot cost thousands of lookups or
/// thousands of error frames.
pub(super) async fn subscribe(
    conn: &Conn,
    subs: &mut Subscriptions,
    games: &[String],
    leagues: &[String],
    since: &BTreeMap<String, u64>,
) {
    let max = conn.cfg().max_subscriptions;
    let new_games: HashSet<&str> = games
        .iter()
        .map(String::as_str)
        .filter(|g| GameId::parse(g).map_or(true, |id| !subs.games.contains(&id)))
        .collect();
    let new_leagues: HashSet<&str> = leagues.iter().map(String::as_str).collect();
    if subs.games.len() + new_games.len() > max || new_leagues.len() > max {
        let msg = format!(
            "this subscription names {} new games and {} leagues; a connection may hold at most {max} games (unsubscribe some first)",
            new_games.len(),
            new_leagues.len()
        );
        conn.send_error("too_many_subscriptions", &msg, None);
        return;
    }
    let mut handles: Vec<Game> = Vec::with_capacity(games.len());
    for g in games {
        if let Some(h) = resolve_game(conn, g).await {
            handles.push(h);
        }
    }
    let games = handles;
    let mut leagues: Vec<League> = leagues
        .iter()
        .filter_map(|l| parse_league(conn, l))
        .filter(|l| !subs.leagues.contains(l))
        .collect();
    leagues.sort();
    leagues.dedup();
    let total = subs.count_with(conn.games(), &games, &leagues).await;
    if total > max {
        let msg = format!(
            "this subscription would hold {total} games; a connection may hold at most {max} (unsubscribe some first)"
        );
        conn.send_error("too_many_subscriptions", &msg, None);
        return;
    }
    let since_of = |h: &Game| since.get(h.id().as_str()).copied();
    for handle in games {
        subs.games.insert(handle.id().clone());
        conn.games()
            .subscribe(&handle, conn.outbox.clone(), since_of(&handle))
            .await;
    }
    for league in leagues {
        let handles = match conn
            .games()
            .watch_league(&league, conn.outbox.clone())
            .await
        {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(%league, "cannot load league: {e}");
                let msg = format!("league {league} cannot be loaded right now; retry shortly");
                conn.send_error("not_ready", &msg, None);
                conn.games().unwatch_league(&league, conn.id).await;
                continue;
            }
        };
        subs.leagues.insert(league);
        for handle in handles {
            conn.games()
                .subscribe(&handle, conn.outbox.clone(), since_of(&handle))
                .await;
        }
    }
}

/// `unsub`: a game named explicitly is unsubscribed; a league is unwatched
/// and its games unsubscribed, except those also subscribed by id.
pub(super) async fn unsubscribe(
    conn: &Conn,
    subs: &mut Subscriptions,
    games: &[String],
    leagues: &[String],
) {
    for id in games.iter().filter_map(|g| parse_game(conn, g)) {
        subs.games.remove(&id);
        conn.games().unsubscribe_id(&id, conn.id).await;
        conn.outbox.forget(&id);
    }
    for league in leagues.iter().filter_map(|l| parse_league(conn, l)) {
        if !subs.leagues.remove(&league) {
            continue;
        }
        conn.games().unwatch_league(&league, conn.id).await;
        for handle in conn.games().loaded_league_games(&league) {
            if !subs.games.contains(handle.id()) {
                conn.games().unsubscribe(&handle, conn.id).await;
                conn.outbox.forget(handle.id());
            }
        }
    }
}

/// A valid, existing game, or an error frame for the client.
async fn resolve_game(conn: &Conn, raw: &str) -> Option<Game> {
    let id = parse_game(conn, raw)?;
    match conn.games().find(&id).await {
        Ok(Some(handle)) => Some(handle),
        Ok(None) => {
            let msg =
                format!("game {id} does not exist (yet); check the id or subscribe to its league");
            conn.send_error("game_not_found", &msg, Some(raw));
            None
        }
        Err(e) => {
            tracing::warn!(game = %id, "cannot load game: {e}");
            let msg = format!("game {id} cannot be loaded right now; retry shortly");
            conn.send_error("not_ready", &msg, Some(raw));
            None
        }
    }
}

/// A valid game id, or an `invalid_game_id` error frame.
fn parse_game(conn: &Conn, raw: &str) -> Option<GameId> {
    GameId::parse(raw)
        .map_err(|e| conn.send_error("invalid_game_id", &e.to_string(), Some(raw)))
        .ok()
}

/// A valid league name, or an `invalid_league` error frame.
fn parse_league(conn: &Conn, raw: &str) -> Option<League> {
    League::parse(raw)
        .map_err(|e| conn.send_error("invalid_league", &e.to_string(), None))
        .ok()
}

#[cfg(test)]
mod tests {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message as WsMsg;

    use crate::config::WsConfig;
    use crate::ws::testkit::{next_frame, score, send, start};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resume_with_since_gets_only_the_missed_diffs() {
        let hub = start(WsConfig::default()).await;
        let game = hub.game("nba:g1").await;
        for n in 1..=3 {
            score(&game, n).await;
        }
        let mut fan = hub.connect("").await;
        send(
            &mut fan,
            r#"{"op":"sub","games":["nba:g1"],"since":{"nba:g1":1}}"#,
        )
        .await;
        for q in [2, 3] {
            let f = next_frame(&mut fan).await;
            assert_eq!((f.t.as_str(), f.q), ("d", Some(q)));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_messages_get_error_frames_and_the_connection_stays() {
        let ws = WsConfig {
            max_subscriptions: 1,
            ..WsConfig::default()
        };
        let hub = start(ws).await;
        hub.game("nba:g1").await;
        hub.game("nba:g2").await;
        let mut fan = hub.connect("").await;
        let cases = [
            (
                r#"{"op":"sub","games":["no colon"]}"#,
                "invalid_game_id",
                Some("no colon"),
            ),
            (
                r#"{"op":"sub","games":["nba:missing"]}"#,
                "game_not_found",
                Some("nba:missing"),
            ),
            (r#"{"op":"dance"}"#, "bad_message", None),
            ("not json", "bad_message", None),
            (r#"{"op":"sub","leagues":["NBA!"]}"#, "invalid_league", None),
            (
                r#"{"op":"sub","games":["nba:g1","nba:g2"]}"#,
                "too_many_subscriptions",
                None,
            ),
            (
                r#"{"op":"sub","leagues":["nba"]}"#,
                "too_many_subscriptions",
                None,
            ),
        ];
        for (msg, code, game) in cases {
            send(&mut fan, msg).await;
            let f = next_frame(&mut fan).await;
            assert_eq!(f.t, "e", "{msg}");
            assert_eq!(f.code.as_deref(), Some(code), "{msg}");
            assert_eq!(f.g.as_deref(), game, "{msg}");
            assert!(f.msg.is_some_and(|m| !m.is_empty()));
        }
        // A binary (MessagePack) ping still works: the connection is open.
        let ping = rmp_serde::to_vec_named(&serde_json::json!({"op": "ping"})).unwrap();
        fan.send(WsMsg::binary(ping)).await.unwrap();
        assert_eq!(next_frame(&mut fan).await.t, "p");
        // One game is within the limit.
        send(&mut fan, r#"{"op":"sub","games":["nba:g1"]}"#).await;
        assert_eq!(next_frame(&mut fan).await.t, "s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unsub_stops_the_diffs_of_that_game() {
        let hub = start(WsConfig::default()).await;
        let g1 = hub.game("nba:g1").await;
        let g2 = hub.game("nba:g2").await;
        let mut fan = hub.connect("?leagues=nba").await;
        next_frame(&mut fan).await;
        next_frame(&mut fan).await;
        send(&mut fan, r#"{"op":"unsub","leagues":["nba"]}"#).await;
        send(
            &mut fan,
            r#"{"op":"sub","games":["nba:g2"],"since":{"nba:g2":0}}"#,
        )
        .await;
        // The pong proves both messages were handled before the events.
        send(&mut fan, r#"{"op":"ping"}"#).await;
        assert_eq!(next_frame(&mut fan).await.t, "p");
        score(&g1, 1).await;
        score(&g2, 1).await;
        let f = next_frame(&mut fan).await;
        assert_eq!(
            (f.t.as_str(), f.g.as_deref(), f.q),
            ("d", Some("nba:g2"), Some(1))
        );
    }
}
