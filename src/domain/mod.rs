//! The pure core: game ids, state, events and merge-patch diffs. No IO, no clocks:
//! callers pass the time in, so replays and tests are deterministic.

pub mod event;
pub mod id;
pub mod patch;
pub mod retention;
pub mod seen;
pub mod state;

#[cfg(test)]
mod proptests;

pub use event::{Action, Event, EventError, Fingerprint, RawEvent, Side, apply};
pub use id::{GameId, IdError, League};
pub use retention::Retention;
pub use seen::{Seen, SeenIds};
pub use state::{Clock, GameState, InvalidState, NewGame, NewTeam, Scalar, Status, Team};
