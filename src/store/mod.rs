//! Durable storage of what happened to every game.
//!
//! In single-node mode the [`file::FileLog`] is the source of truth: an
//! append-only, checksummed log on local disk, fsynced (group commit) before a
//! scorekeeper gets `200`. On start it is replayed to rebuild every game.
//! In cluster mode [`redis::RedisStore`] is: scripts, keys and streams on a
//! shared Redis. The modes' behaviour around these engines is in
//! [`crate::backend`].

pub mod file;
pub(crate) mod redis;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{Event, Fingerprint, GameId, GameState};

pub use self::redis::RedisStore;
pub use file::FileLog;

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "lowercase")]
pub enum Record {
    /// A game was created with `state` (seq 0).
    Created {
        /// The game.
        game: GameId,
        /// Its initial state.
        state: GameState,
        /// Digest of the creating body, so a repeated `PUT` can be told apart.
        fingerprint: Fingerprint,
        /// Token subject that created it.
        by: String,
        /// Server time, Unix ms.
        at: i64,
    },
    /// An event was applied, giving the game `seq`.
    Event {
        /// The game.
        game: GameId,
        /// The seq this event produced.
        seq: u64,
        /// The event as posted.
        event: Event,
        /// Digest of the event body (idempotency).
        fingerprint: Fingerprint,
        /// Token subject that posted it.
        by: String,
        /// Server ingest time, Unix ms.
        at: i64,
        /// The merge patch from `seq - 1` to `seq`.
        diff: Value,
    },
}

impl Record {
    /// The game this record belongs to.
    pub fn game(&self) -> &GameId {
        match self {
            Record::Created { game, .. } | Record::Event { game, .. } => game,
        }
    }

    /// The server time of the record, Unix ms.
    pub fn at(&self) -> i64 {
        match self {
            Record::Created { at, .. } | Record::Event { at, .. } => *at,
        }
    }
}

/// Why storage refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Writing or syncing failed (disk full, read-only, IO error). The write did
    /// not happen as far as readers are concerned.
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    /// A record in the middle of the log does not match its checksum.
    #[error(
        "event log {file} is corrupt at byte offset {offset}: {reason}. Restore it from a backup or move it aside to start empty"
    )]
    Corrupt {
        /// The log file.
        file: String,
        /// Byte offset of the bad record.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// The log contradicts itself about one game (a gap in its seqs, a
    /// record of another game where its own were expected, fewer events than
    /// the game was served with). Not transient: that game cannot load until
    /// the log is repaired; the other games are served.
    #[error(
        "the event log contradicts itself about game {game}: {reason}. Restore storage.dir from a backup; the other games are served meanwhile"
    )]
    Inconsistent {
        /// The game.
        game: GameId,
        /// What contradicts what.
        reason: String,
    },
    /// The storage directory could not be opened.
    #[error(
        "cannot open storage dir {dir}: {reason} (set storage.dir / SCOREHUB_STORAGE__DIR to a writable directory)"
    )]
    Open {
        /// The directory.
        dir: String,
        /// What failed.
        reason: String,
    },
}

/// What creating a game found (a file or Redis log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The game did not exist and was created.
    Created,
    /// The game already existed (nothing changed); `fingerprint` is the digest
    /// of the body that created it.
    Exists {
        /// Digest of the creating body.
        fingerprint: Fingerprint,
    },
    /// A game of this id finished and passed its retention, but its records
    /// are still in the log (the file log, until a start-up compacts it):
    /// the id cannot be created again yet. Nothing changed.
    Retired,
}

/// What committing a run of events to a game did. Only `Applied` wrote
/// anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Every event was applied; the game is now at `last_seq`.
    Applied {
        /// The seq of the last event.
        last_seq: u64,
    },
    /// The event at `index` was applied before (with `fingerprint`, giving
    /// `seq`); nothing was applied.
    Seen {
        /// Position in the committed slice of the first already-seen event.
        index: usize,
        /// Digest of the body applied back then.
        fingerprint: Fingerprint,
        /// The seq it produced.
        seq: u64,
    },
    /// The game is not at the expected seq: another writer committed first
    /// (`current` above it) or the log lost writes (`current` below it).
    Stale {
        /// The game's seq.
        current: u64,
    },
    /// The game does not exist.
    Missing,
}
