//! Folding log records back into games: the same fold at start-up (every
//! game's state) and when one game loads (its state, idempotency record and
//! recent diffs).

use std::collections::{HashMap, VecDeque};

use serde_json::Value;

use super::{Restored, Summary};
use crate::codec;
use crate::domain::{Fingerprint, GameId, GameState, Retention, Seen, SeenIds, Status, patch};
use crate::store::Record;

/// The log contradicts itself: it cannot be folded into games.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// A second creation record for one game.
    #[error("game {0} is created twice")]
    CreatedTwice(GameId),
    /// An event record before its game's creation.
    #[error("an event of game {0} comes before the game is created")]
    UnknownGame(GameId),
    /// An event whose seq does not follow its game's.
    #[error("game {game}: event seq {seq} follows seq {previous} (a gap or a repeat)")]
    OutOfOrder {
        /// The game.
        game: GameId,
        /// The event's seq.
        seq: u64,
        /// The game's seq before it.
        previous: u64,
    },
    /// The folded state is not a valid game.
    #[error("game {game}: the replayed state is invalid: {reason}")]
    InvalidState {
        /// The game.
        game: GameId,
        /// What is wrong with it.
        reason: String,
    },
    /// A record of another game where only `expected`'s were asked for.
    #[error("a record of game {found} among the records of game {expected}")]
    ForeignRecord {
        /// The game whose records were read.
        expected: GameId,
        /// The game the record belongs to.
        found: GameId,
    },
    /// No creation record among a game's records.
    #[error("game {0} has no creation record")]
    NotCreated(GameId),
}

/// A game being rebuilt from log records.
#[derive(Debug)]
struct Rebuild {
    state: Value,
    seq: u64,
    created_fingerprint: Fingerprint,
    seen: SeenIds,
    tail: VecDeque<(u64, Value, i64)>,
    /// See [`Summary::finished_at`].
    finished_at: Option<i64>,
    /// Records folded: the creation and every event.
    records: u64,
}

/// Folds log records, in log order, into games.
#[derive(Debug)]
pub struct Replayer {
    games: HashMap<GameId, Rebuild>,
    /// Diffs kept per game.
    history: usize,
    /// Keep each game's idempotency record (not needed at start-up).
    keep_seen: bool,
}

impl Replayer {
    /// A replayer keeping each game's whole idempotency record and its last
    /// `history` diffs: what an actor needs.
    pub fn full(history: usize) -> Replayer {
        Replayer {
            games: HashMap::new(),
            history,
            keep_seen: true,
        }
    }

    /// A replayer keeping only each game's state and creation digest: what
    /// start-up needs (games load lazily afterwards).
    pub fn states() -> Replayer {
        Replayer {
            games: HashMap::new(),
            history: 0,
            keep_seen: false,
        }
    }

    /// Applies one record; an error means the log contradicts itself.
    pub fn record(&mut self, record: Record) -> Result<(), ReplayError> {
        match record {
            Record::Created {
                game,
                state,
                fingerprint,
                at,
                ..
            } => {
                if self.games.contains_key(&game) {
                    return Err(ReplayError::CreatedTwice(game));
                }
                let finished_at = Retention::finished_at(state.status, at);
                let state =
                    serde_json::to_value(&state).map_err(|e| ReplayError::InvalidState {
                        game: game.clone(),
                        reason: e.to_string(),
                    })?;
                self.games.insert(
                    game,
                    Rebuild {
                        state,
                        seq: 0,
                        created_fingerprint: fingerprint,
                        seen: SeenIds::new(),
                        tail: VecDeque::new(),
                        finished_at,
                        records: 1,
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
                let Some(rb) = self.games.get_mut(&game) else {
                    return Err(ReplayError::UnknownGame(game));
                };
                if seq != rb.seq + 1 {
                    return Err(ReplayError::OutOfOrder {
                        previous: rb.seq,
                        game,
                        seq,
                    });
                }
                patch::merge(&mut rb.state, &diff);
                rb.seq = seq;
                rb.records += 1;
                rb.finished_at = finished_status(&rb.state).then_some(at);
                if self.keep_seen {
                    rb.seen.insert(&event.event_id, Seen { fingerprint, seq });
                }
                if self.history > 0 {
                    rb.tail.push_back((seq, diff, at));
                    while rb.tail.len() > self.history {
                        rb.tail.pop_front();
                    }
                }
            }
        }
        Ok(())
    }

    /// Every game folded so far, as summaries.
    pub fn into_summaries(self) -> Result<Vec<(GameId, Summary)>, ReplayError> {
        self.into_each_summary()
            .map(|(id, summary)| Ok((id, summary?)))
            .collect()
    }

    /// Every game folded so far, each with its summary or why its state is
    /// not a valid game (`scorehub games list` and `log verify` report
    /// those and go on).
    pub fn into_each_summary(self) -> impl Iterator<Item = (GameId, Result<Summary, ReplayError>)> {
        self.games.into_iter().map(|(id, rb)| {
            let summary = replayed_state(&id, rb.state).map(|state| Summary {
                state: std::sync::Arc::new(state),
                created_fingerprint: rb.created_fingerprint,
                finished_at: rb.finished_at,
                records: rb.records,
            });
            (id, summary)
        })
    }

    /// Folds one game's records (all of them, in order) into a game ready to
    /// become an actor.
    pub fn rebuild(
        id: &GameId,
        records: Vec<Record>,
        history: usize,
    ) -> Result<Restored, ReplayError> {
        let mut replayer = Replayer::full(history);
        for record in records {
            if record.game() != id {
                return Err(ReplayError::ForeignRecord {
                    expected: id.clone(),
                    found: record.game().clone(),
                });
            }
            replayer.record(record)?;
        }
        let rb = replayer
            .games
            .remove(id)
            .ok_or_else(|| ReplayError::NotCreated(id.clone()))?;
        let state = replayed_state(id, rb.state)?;
        let history = rb
            .tail
            .iter()
            .map(|(seq, diff, at)| (*seq, codec::diff(id, *seq, diff, *at)))
            .collect();
        Ok(Restored {
            state,
            created_fingerprint: rb.created_fingerprint,
            seen: rb.seen,
            history,
            lost: 0,
        })
    }
}

/// Whether a state being folded (JSON) has a finished status. A status
/// that is missing or not a status is not finished: the fold's final check
/// ([`replayed_state`]) reports such a state.
fn finished_status(state: &Value) -> bool {
    state
        .get("status")
        .and_then(Value::as_str)
        .and_then(Status::parse)
        .is_some_and(Status::is_finished)
}

/// A replayed game's state, checked.
fn replayed_state(id: &GameId, state: Value) -> Result<GameState, ReplayError> {
    serde_json::from_value(state).map_err(|e| ReplayError::InvalidState {
        game: id.clone(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::domain::Status;
    use crate::testing::GameRecords;

    fn summary_of(records: Vec<Record>) -> Summary {
        let mut replayer = Replayer::states();
        for record in records {
            replayer.record(record).unwrap();
        }
        let mut summaries = replayer.into_summaries().unwrap();
        assert_eq!(summaries.len(), 1);
        summaries.pop().unwrap().1
    }

    #[test]
    fn finished_at_follows_the_last_event_that_leaves_the_game_finished() {
        let mut g = GameRecords::new(GameId::parse("nba:x").unwrap());
        let mut records = vec![g.created(10), g.score(20)];
        let s = summary_of(records.clone());
        assert_eq!((s.finished_at, s.records), (None, 2));

        records.push(g.status(Status::Final, 30));
        let s = summary_of(records.clone());
        assert_eq!((s.finished_at, s.records), (Some(30), 3));
        assert_eq!(s.state.status, Status::Final);

        // A correction after the final whistle restarts the clock.
        records.push(g.score(40));
        assert_eq!(summary_of(records.clone()).finished_at, Some(40));

        // Reopening clears it; cancelling finishes it again.
        records.push(g.status(Status::Live, 50));
        assert_eq!(summary_of(records.clone()).finished_at, None);
        records.push(g.status(Status::Postponed, 55));
        assert_eq!(
            summary_of(records.clone()).finished_at,
            None,
            "postponed is not finished"
        );
        records.push(g.status(Status::Cancelled, 60));
        let s = summary_of(records);
        assert_eq!((s.finished_at, s.records), (Some(60), 7));
    }
}
