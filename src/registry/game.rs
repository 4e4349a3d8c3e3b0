//! A game as requests and fan sessions hold it: a [`Game`] follows its game
//! to the live actor.
//!
//! An actor stops when its game is unloaded; a [`Game`] made before that
//! (or made for a game that was not loaded at all) asks the registry for the
//! game's live actor on its next event or subscription, and retries there
//! with what the stopped actor handed back. This is the one layer that
//! retries: the actor's [`GameHandle`] only reports that it has stopped.

use std::sync::{Arc, Weak};
use std::time::Instant;

use super::Registry;
use crate::domain::{Event, Fingerprint, GameId, GameState};
use crate::fanout::outbox::Outbox;
use crate::game::{Applied, ApplyError, GameHandle, Pending, Submission};

/// How many times a request follows a game to a freshly loaded actor before
/// giving up (each unload needs a full idle period, so one is nearly always
/// enough).
const RELOADS: usize = 3;

/// One game of the registry, loaded or not. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Game {
    id: GameId,
    created_fingerprint: Fingerprint,
    /// The actor when this was made, if the game was loaded.
    actor: Option<GameHandle>,
    /// The state when this was made (a game that was not loaded).
    summary: Arc<GameState>,
    registry: Weak<Registry>,
}

impl Game {
    /// The game of a running actor.
    pub(super) fn live(actor: GameHandle, registry: Weak<Registry>) -> Game {
        Game {
            id: actor.id().clone(),
            created_fingerprint: actor.created_fingerprint(),
            summary: actor.state(),
            actor: Some(actor),
            registry,
        }
    }

    /// A game that is not loaded, known by its last state.
    pub(super) fn unloaded(
        state: Arc<GameState>,
        created_fingerprint: Fingerprint,
        registry: Weak<Registry>,
    ) -> Game {
        Game {
            id: state.game.clone(),
            created_fingerprint,
            actor: None,
            summary: state,
            registry,
        }
    }

    /// The game id.
    pub fn id(&self) -> &GameId {
        &self.id
    }

    /// Digest of the body that created the game.
    pub fn created_fingerprint(&self) -> Fingerprint {
        self.created_fingerprint
    }

    /// The latest committed state this node knows, without asking an actor.
    pub fn state(&self) -> Arc<GameState> {
        if let Some(actor) = self.actor.as_ref().filter(|a| !a.is_closed()) {
            return actor.state();
        }
        let Some(registry) = self.registry.upgrade() else {
            return self.last_known();
        };
        if let Some(actor) = registry.get(&self.id) {
            return actor.state();
        }
        registry
            .log()
            .summary(&self.id)
            .map(|s| s.state)
            .unwrap_or_else(|| self.last_known())
    }

    /// Fans watching the game over every node, as this node last learned
    /// (0 for a game not loaded here: a game with local fans stays loaded,
    /// and single node, fans elsewhere there are none). A game loaded here
    /// since the occupancy task's last tick shows this node's own fans.
    pub fn watching(&self) -> u64 {
        self.running().map_or(0, |actor| actor.watching())
    }

    /// What this value saw last (its actor's final state, or the summary it
    /// was made with).
    fn last_known(&self) -> Arc<GameState> {
        match &self.actor {
            Some(actor) => actor.state(),
            None => self.summary.clone(),
        }
    }

    /// Applies one event; answers once it is durable (or refused).
    pub async fn apply(
        &self,
        event: Event,
        by: Arc<str>,
        received: Instant,
    ) -> Result<Applied, ApplyError> {
        self.submit(event, by, received).await?.wait().await
    }

    /// Queues one event for the game's live actor and returns without
    /// waiting for the outcome (see [`GameHandle::try_submit`]).
    pub async fn submit(
        &self,
        event: Event,
        by: Arc<str>,
        received: Instant,
    ) -> Result<Pending, ApplyError> {
        let mut submission = Submission::new(event, by, received);
        let mut actor = self.actor().await?;
        for attempt in 0..=RELOADS {
            match actor.try_submit(submission).await {
                Ok(pending) => return Ok(pending),
                Err(back) => submission = back,
            }
            if attempt < RELOADS {
                actor = self.reload().await?;
            }
        }
        Err(ApplyError::Unavailable(format!(
            "game {} was unloaded repeatedly while this event waited; retry",
            self.id
        )))
    }

    /// Subscribes a fan to the game's live actor: a snapshot first, or the
    /// diffs after `since` while the history holds them. `false` when the
    /// game cannot be loaded.
    pub async fn subscribe(&self, outbox: Arc<Outbox>, since: Option<u64>) -> bool {
        let mut actor = match self.actor().await {
            Ok(actor) => actor,
            Err(e) => {
                tracing::warn!(game = %self.id, "cannot load game for a subscriber: {e}");
                return false;
            }
        };
        for attempt in 0..=RELOADS {
            if actor.try_subscribe(outbox.clone(), since).await {
                return true;
            }
            if attempt < RELOADS {
                match self.reload().await {
                    Ok(fresh) => actor = fresh,
                    Err(e) => {
                        tracing::warn!(game = %self.id, "cannot load game for a subscriber: {e}");
                        return false;
                    }
                }
            }
        }
        false
    }

    /// Ends connection `conn_id`'s subscription (an unloaded game has none).
    pub async fn unsubscribe(&self, conn_id: u64) {
        if let Some(actor) = self.running() {
            actor.unsubscribe(conn_id).await;
        }
    }

    /// Asks the actor for one fresh snapshot for connection `conn_id` (after
    /// its queue conflated), if the game is loaded.
    pub async fn resync(&self, conn_id: u64) {
        if let Some(actor) = self.running() {
            actor.resync(conn_id).await;
        }
    }

    /// Whether the actor this value was made with has stopped.
    #[cfg(test)]
    pub(crate) fn actor_stopped(&self) -> bool {
        self.actor.as_ref().is_some_and(GameHandle::is_closed)
    }

    /// The running actor of the game, if any (no IO).
    fn running(&self) -> Option<GameHandle> {
        match self.actor.as_ref().filter(|a| !a.is_closed()) {
            Some(actor) => Some(actor.clone()),
            None => self.registry.upgrade()?.get(&self.id),
        }
    }

    /// The live actor: this value's, or a (re)loaded one.
    async fn actor(&self) -> Result<GameHandle, ApplyError> {
        match self.actor.as_ref().filter(|a| !a.is_closed()) {
            Some(actor) => Ok(actor.clone()),
            None => self.reload().await,
        }
    }

    /// The game's live actor from the registry, loading it if need be.
    async fn reload(&self) -> Result<GameHandle, ApplyError> {
        let gone = || ApplyError::Unavailable("the game is shutting down".into());
        let registry = self.registry.upgrade().ok_or_else(gone)?;
        match registry.load_actor(&self.id).await {
            Ok(Some(actor)) => Ok(actor),
            Ok(None) => Err(ApplyError::Unavailable(format!(
                "game {} is no longer in the event log",
                self.id
            ))),
            Err(e) => Err(ApplyError::Unavailable(e.to_string())),
        }
    }
}
