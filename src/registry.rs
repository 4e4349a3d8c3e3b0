//! Game id → actor handle, and league → its games and league watchers.
//!
//! The registry also rebuilds every game from the event log at start and
//! creates games (idempotently) at run time.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use dashmap::DashMap;
use serde_json::Value;

use crate::codec;
use crate::domain::event::fingerprint_of;
use crate::domain::{GameId, GameState, InvalidState, League, NewGame, Status, patch};
use crate::game::{ActorConfig, GameHandle, Restored, Seen, unix_ms};
use crate::metrics as m;
use crate::store::{FileLog, Record};
use crate::ws::outbox::Outbox;

/// Why a game could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The game exists with a different creating body (409).
    #[error("game {0} already exists with a different body; GET it, or choose another id")]
    Exists(GameId),
    /// The body is well-formed but not acceptable (422).
    #[error(transparent)]
    Invalid(#[from] InvalidState),
    /// Storage failed (503).
    #[error("{0}")]
    Unavailable(String),
}

/// Whether `create` made a new game.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// A new game (201).
    New,
    /// It existed with the same body (200).
    Existing,
}

/// One page of `list`.
#[derive(Debug, Clone)]
pub struct Page {
    /// The games, ordered by id.
    pub games: Vec<Arc<GameState>>,
    /// Pass as `cursor` for the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// Every game on this node.
#[derive(Debug)]
pub struct Registry {
    games: DashMap<GameId, GameHandle>,
    ids: RwLock<BTreeSet<GameId>>,
    watchers: DashMap<League, HashMap<u64, Arc<Outbox>>>,
    create_lock: tokio::sync::Mutex<()>,
    log: Arc<FileLog>,
    cfg: ActorConfig,
}

/// A game being rebuilt from log records.
struct Rebuild {
    state: Value,
    seq: u64,
    created_fingerprint: crate::domain::Fingerprint,
    seen: HashMap<Box<str>, Seen>,
    tail: VecDeque<(u64, Value, i64)>,
}

impl Registry {
    /// An empty registry writing to `log`.
    pub fn new(log: Arc<FileLog>, cfg: ActorConfig) -> Registry {
        Registry {
            games: DashMap::new(),
            ids: RwLock::new(BTreeSet::new()),
            watchers: DashMap::new(),
            create_lock: tokio::sync::Mutex::new(()),
            log,
            cfg,
        }
    }

    /// A folder for log replay: feed it every record in order with
    /// [`Replayer::record`], then [`Registry::restore`] the result.
    pub fn replayer(history: usize) -> Replayer {
        Replayer {
            games: HashMap::new(),
            history,
        }
    }

    /// Starts an actor for every game rebuilt by `replayer`.
    pub fn restore(&self, replayer: Replayer) -> Result<usize, String> {
        let mut n = 0;
        for (id, rb) in replayer.games {
            let state: GameState = serde_json::from_value(rb.state)
                .map_err(|e| format!("game {id}: replayed state is invalid: {e}"))?;
            let history = rb
                .tail
                .iter()
                .map(|(seq, diff, at)| (*seq, codec::diff(&id, *seq, diff, *at)))
                .collect();
            let handle = GameHandle::spawn(
                Restored {
                    state,
                    created_fingerprint: rb.created_fingerprint,
                    seen: rb.seen,
                    history,
                },
                self.log.clone(),
                self.cfg,
            );
            self.insert(handle);
            n += 1;
        }
        Ok(n)
    }

    fn insert(&self, handle: GameHandle) {
        let id = handle.id().clone();
        self.ids
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone());
        self.games.insert(id, handle);
        metrics::gauge!(m::GAMES_ACTIVE).increment(1.0);
    }

    /// The handle of a game, if it exists.
    pub fn get(&self, id: &GameId) -> Option<GameHandle> {
        self.games.get(id).map(|h| h.clone())
    }

    /// Number of games.
    pub fn len(&self) -> usize {
        self.games.len()
    }

    /// Whether there are no games.
    pub fn is_empty(&self) -> bool {
        self.games.is_empty()
    }

    /// The store games write to.
    pub fn log(&self) -> &Arc<FileLog> {
        &self.log
    }

    /// Creates a game, idempotently: the same body again is [`Created::Existing`].
    pub async fn create(
        &self,
        id: GameId,
        body: NewGame,
        by: &str,
    ) -> Result<(GameHandle, Created), CreateError> {
        let fingerprint = fingerprint_of(&body);
        let _guard = self.create_lock.lock().await;
        if let Some(h) = self.get(&id) {
            return if h.created_fingerprint() == fingerprint {
                Ok((h, Created::Existing))
            } else {
                Err(CreateError::Exists(id))
            };
        }
        let now = unix_ms();
        let state = body.into_state(id.clone(), now)?;
        self.log
            .append(vec![Record::Created {
                game: id.clone(),
                state: state.clone(),
                fingerprint,
                by: by.to_string(),
                at: now,
            }])
            .await
            .map_err(|e| CreateError::Unavailable(e.to_string()))?;
        let handle = GameHandle::spawn(
            Restored {
                state,
                created_fingerprint: fingerprint,
                seen: HashMap::new(),
                history: VecDeque::new(),
            },
            self.log.clone(),
            self.cfg,
        );
        self.insert(handle.clone());
        // Fans watching the league get the new game (snapshot first).
        let watchers: Vec<Arc<Outbox>> = self
            .watchers
            .get(&id.league())
            .map(|w| w.values().cloned().collect())
            .unwrap_or_default();
        for outbox in watchers {
            handle.subscribe(outbox, None).await;
        }
        Ok((handle, Created::New))
    }

    /// Ids of the games of `league`, in order.
    pub fn league_games(&self, league: &League) -> Vec<GameHandle> {
        let prefix = format!("{}:", league.as_str());
        let ids = self.ids.read().unwrap_or_else(|p| p.into_inner());
        ids.iter()
            .skip_while(|id| !id.as_str().starts_with(&prefix) && id.as_str() < prefix.as_str())
            .take_while(|id| id.as_str().starts_with(&prefix))
            .filter_map(|id| self.get(id))
            .collect()
    }

    /// Registers `outbox` as a watcher of `league` (it will be subscribed to
    /// games created later) and returns the league's current games.
    pub fn watch_league(&self, league: &League, outbox: Arc<Outbox>) -> Vec<GameHandle> {
        self.watchers
            .entry(league.clone())
            .or_default()
            .insert(outbox.conn_id(), outbox);
        self.league_games(league)
    }

    /// Stops `conn_id` watching `league`.
    pub fn unwatch_league(&self, league: &League, conn_id: u64) {
        if let Some(mut w) = self.watchers.get_mut(league) {
            w.remove(&conn_id);
        }
        self.watchers.remove_if(league, |_, w| w.is_empty());
    }

    /// One page of games, ordered by id, optionally filtered.
    pub fn list(
        &self,
        league: Option<&League>,
        status: Option<Status>,
        limit: usize,
        cursor: Option<&GameId>,
    ) -> Page {
        let prefix = league.map(|l| format!("{}:", l.as_str()));
        let ids = self.ids.read().unwrap_or_else(|p| p.into_inner());
        let start = match cursor {
            Some(c) => Bound::Excluded(c.clone()),
            None => Bound::Unbounded,
        };
        let mut games = Vec::new();
        let mut next_cursor = None;
        for id in ids.range((start, Bound::Unbounded)) {
            if let Some(p) = prefix.as_deref().filter(|p| !id.as_str().starts_with(p)) {
                if id.as_str() > p {
                    break;
                }
                continue;
            }
            let Some(h) = self.get(id) else { continue };
            let state = h.state();
            if status.is_some_and(|s| s != state.status) {
                continue;
            }
            if games.len() == limit {
                next_cursor = games
                    .last()
                    .map(|g: &Arc<GameState>| g.game.as_str().to_string());
                break;
            }
            games.push(state);
        }
        Page { games, next_cursor }
    }
}

/// Folds log records into games (see [`Registry::replayer`]).
pub struct Replayer {
    games: HashMap<GameId, Rebuild>,
    history: usize,
}

impl Replayer {
    /// Applies one record; an error means the log contradicts itself.
    pub fn record(&mut self, record: Record) -> Result<(), String> {
        match record {
            Record::Created {
                game,
                state,
                fingerprint,
                ..
            } => {
                if self.games.contains_key(&game) {
                    return Err(format!("game {game} is created twice"));
                }
                let state = serde_json::to_value(&state).map_err(|e| e.to_string())?;
                self.games.insert(
                    game,
                    Rebuild {
                        state,
                        seq: 0,
                        created_fingerprint: fingerprint,
                        seen: HashMap::new(),
                        tail: VecDeque::new(),
                    },
                );
            }
            Record::Event {
                game,
                seq,
                event,
                fingerprint,
                at,
                diff,
                ..
            } => {
                let rb = self
                    .games
                    .get_mut(&game)
                    .ok_or_else(|| format!("event for unknown game {game}"))?;
                if seq != rb.seq + 1 {
                    return Err(format!(
                        "game {game}: event seq {seq} follows seq {} (gap or repeat)",
                        rb.seq
                    ));
                }
                patch::merge(&mut rb.state, &diff);
                rb.seq = seq;
                rb.seen
                    .insert(event.event_id.into_boxed_str(), Seen { fingerprint, seq });
                rb.tail.push_back((seq, diff, at));
                while rb.tail.len() > self.history {
                    rb.tail.pop_front();
                }
            }
        }
        Ok(())
    }
}
