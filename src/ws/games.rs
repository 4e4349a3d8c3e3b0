//! The fan session's one door to the games: every call a session makes to
//! the registry or to a game's handle (find, subscribe, watch a league,
//! unsubscribe, resync) is here, so a change of the registry's API is met
//! in this file alone.

use std::sync::Arc;

use crate::domain::{GameId, League};
use crate::fanout::outbox::Outbox;
use crate::registry::Game;
use crate::registry::Registry;
use crate::store::StoreError;

/// Why a game or a league could not be loaded (shown to the log only).
pub(super) type LoadError = StoreError;

/// The games, as a fan session uses them.
#[derive(Clone)]
pub(crate) struct Games {
    registry: Arc<Registry>,
}

impl Games {
    /// The games of `registry`.
    pub(super) fn new(registry: Arc<Registry>) -> Games {
        Games { registry }
    }

    /// The live handle of game `id` (loaded if need be), `None` when no such
    /// game exists.
    pub(super) async fn find(&self, id: &GameId) -> Result<Option<Game>, LoadError> {
        self.registry.find(id).await
    }

    /// Subscribes `outbox` to `game`: a snapshot first, or with `since` the
    /// diffs after it when the history still has them.
    pub(super) async fn subscribe(&self, game: &Game, outbox: Arc<Outbox>, since: Option<u64>) {
        game.subscribe(outbox, since).await;
    }

    /// Ends connection `conn_id`'s subscription to `game`.
    pub(super) async fn unsubscribe(&self, game: &Game, conn_id: u64) {
        game.unsubscribe(conn_id).await;
    }

    /// Ends connection `conn_id`'s subscription to game `id`, if it is
    /// loaded (an unloaded game has no subscribers).
    pub(super) async fn unsubscribe_id(&self, id: &GameId, conn_id: u64) {
        if let Some(game) = self.registry.get(id) {
            game.unsubscribe(conn_id).await;
        }
    }

    /// Asks game `id`'s actor for one fresh snapshot for connection
    /// `conn_id` (after its queue conflated), if the game is loaded.
    pub(crate) async fn resync(&self, id: &GameId, conn_id: u64) {
        if let Some(handle) = self.registry.get(id) {
            handle.resync(conn_id).await;
        }
    }

    /// Watches `league` for `outbox` (games created later are subscribed by
    /// the registry); the league's games now, for the caller to subscribe.
    pub(super) async fn watch_league(
        &self,
        league: &League,
        outbox: Arc<Outbox>,
    ) -> Result<Vec<Game>, LoadError> {
        self.registry.watch_league(league, outbox).await
    }

    /// Stops connection `conn_id`'s watch of `league`.
    pub(super) async fn unwatch_league(&self, league: &League, conn_id: u64) {
        self.registry.unwatch_league(league, conn_id).await;
    }

    /// Every game of `league`, to count a subscription against the limit;
    /// only the loaded ones when the rest cannot be listed right now.
    pub(super) async fn league_games(&self, league: &League) -> Vec<Game> {
        match self.registry.league_games(league).await {
            Ok(h) => h,
            Err(_) => self.registry.loaded_league_games(league),
        }
    }

    /// The loaded games of `league` (those a watch may have subscribed).
    pub(super) fn loaded_league_games(&self, league: &League) -> Vec<Game> {
        self.registry.loaded_league_games(league)
    }
}
