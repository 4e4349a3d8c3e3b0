//! Leagues: fans watching a league get every game of it, including games
//! created later, on this node or (announced through the transport) on
//! another.

use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use super::{Game, Registry};
use crate::backend;
use crate::domain::{GameId, League};
use crate::fanout::outbox::Outbox;
use crate::store::StoreError;

impl Registry {
    /// Subscribes the local watchers of `game`'s league to it (they get a
    /// snapshot first; subscribing twice is harmless).
    pub(super) async fn notify_watchers(&self, game: &Game) {
        let watchers: Vec<Arc<Outbox>> = self
            .watchers
            .get(&game.id().league())
            .map(|w| w.values().cloned().collect())
            .unwrap_or_default();
        for outbox in watchers {
            game.subscribe(outbox, None).await;
        }
    }

    /// A game was created on some node (see [`Backend::announced`](crate::backend::Backend::announced)): load it
    /// if a local fan watches its league.
    pub async fn on_created(&self, id: &GameId) {
        if !self.watchers.contains_key(&id.league()) {
            return;
        }
        match self.find(id).await {
            Ok(Some(game)) => self.notify_watchers(&game).await,
            Ok(None) => tracing::warn!(game = %id, "announced game is missing from the log"),
            Err(e) => tracing::warn!(game = %id, "cannot load announced game: {e}"),
        }
    }

    /// The games of `league` loaded on this node (no IO).
    pub fn loaded_league_games(&self, league: &League) -> Vec<Game> {
        let ids = backend::league_ids(&self.ids.read().unwrap_or_else(|p| p.into_inner()), league);
        ids.iter()
            .filter_map(|id| self.get(id))
            .map(|actor| self.game(actor))
            .collect()
    }

    /// Every game of `league` (without an actor where the log knows a game
    /// without IO; they load when subscribed).
    pub async fn league_games(&self, league: &League) -> Result<Vec<Game>, StoreError> {
        let mut out = Vec::new();
        for id in self.log.league_games(league).await? {
            if let Some(h) = self.find(&id).await? {
                out.push(h);
            }
        }
        Ok(out)
    }

    /// Registers `outbox` as a watcher of `league` (it will be subscribed to
    /// games created later) and returns the league's current games.
    pub async fn watch_league(
        &self,
        league: &League,
        outbox: Arc<Outbox>,
    ) -> Result<Vec<Game>, StoreError> {
        let first = {
            let mut w = self.watchers.entry(league.clone()).or_default();
            let first = w.is_empty();
            w.insert(outbox.conn_id(), outbox);
            first
        };
        if first {
            self.transport.follow_league(league).await?;
        }
        self.league_games(league).await
    }

    /// Stops `conn_id` watching `league`.
    pub async fn unwatch_league(&self, league: &League, conn_id: u64) {
        if let Some(mut w) = self.watchers.get_mut(league) {
            w.remove(&conn_id);
        }
        if self
            .watchers
            .remove_if(league, |_, w| w.is_empty())
            .is_some()
        {
            self.transport.unfollow_league(league).await;
        }
    }
}

/// Hands the games other nodes created (a
/// [`Backend::announced`](crate::backend::Backend::announced) stream) to the
/// registry until either is gone.
pub async fn follow_announcements(registry: Weak<Registry>, mut announced: mpsc::Receiver<GameId>) {
    while let Some(id) = announced.recv().await {
        let Some(registry) = registry.upgrade() else {
            return;
        };
        registry.on_created(&id).await;
    }
}
