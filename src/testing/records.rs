//! Log records of made-up games, valid for the replay: a creation, then
//! events whose diffs fold into the states the game actor would have
//! produced. For tests and the retention measurement
//! (`examples/retention_replay.rs`).

use serde_json::json;

use crate::domain::{Action, Event, GameId, NewGame, Side, Status};
use crate::store::Record;

/// Builds the records of one game in order: [`GameRecords::created`] first,
/// then each event gets the next seq.
#[derive(Debug, Clone)]
pub struct GameRecords {
    game: GameId,
    seq: u64,
    home: i64,
}

impl GameRecords {
    /// The records of `game`, none written yet.
    pub fn new(game: GameId) -> GameRecords {
        GameRecords {
            game,
            seq: 0,
            home: 0,
        }
    }

    /// The seq of the last record built (0: the creation).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The creation, `scheduled`, at `at` (Unix ms).
    pub fn created(&self, at: i64) -> Record {
        let body = NewGame::between("Home", "Away");
        let fingerprint = crate::domain::event::fingerprint_of(&body);
        let state = body
            .into_state(self.game.clone(), at)
            .expect("a plain two-team body is a valid game");
        Record::Created {
            game: self.game.clone(),
            state,
            fingerprint,
            by: "tester".into(),
            at,
        }
    }

    /// The next event: home scores 1 point, at `at`.
    pub fn score(&mut self, at: i64) -> Record {
        self.home += 1;
        let diff = json!({"seq": self.seq + 1, "home": {"score": self.home}});
        self.event(
            Action::Score {
                team: Side::Home,
                points: 1,
            },
            diff,
            at,
        )
    }

    /// The next event: the status becomes `status`, at `at`.
    pub fn status(&mut self, status: Status, at: i64) -> Record {
        let diff = json!({"seq": self.seq + 1, "status": status.as_str()});
        self.event(Action::Status { status }, diff, at)
    }

    fn event(&mut self, action: Action, diff: serde_json::Value, at: i64) -> Record {
        self.seq += 1;
        let event = Event {
            event_id: format!("e{}", self.seq),
            expected_seq: None,
            action,
        };
        Record::Event {
            game: self.game.clone(),
            seq: self.seq,
            fingerprint: event.fingerprint(),
            event,
            by: "tester".into(),
            at,
            diff,
        }
    }
}
