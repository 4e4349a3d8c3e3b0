//! Why writing the log or its index failed. Each names the file and carries
//! the IO error as its source; the health reason and the `503` detail are
//! their messages.

use std::io;
use std::path::PathBuf;

use crate::domain::GameId;

/// Why writing to the log failed; nothing of the write stays in the log.
#[derive(Debug, thiserror::Error)]
pub(super) enum WriteError {
    /// Writing or syncing the log file failed (disk full, read-only, IO error).
    #[error("writing {} failed: {source}", path.display())]
    Log {
        /// The log file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: io::Error,
    },
    /// The bytes of a failed write or a probe could not be cut off again.
    #[error("cannot cut {} back to {len} bytes after {after}: {source}", path.display())]
    CutBack {
        /// The log file.
        path: PathBuf,
        /// The length of its acknowledged records.
        len: u64,
        /// What wrote the bytes.
        after: &'static str,
        /// The IO error.
        #[source]
        source: io::Error,
    },
    /// Writing a game's index entries failed.
    #[error("writing the index of {} ({}) failed: {source}", log.display(), index.display())]
    Index {
        /// The log file.
        log: PathBuf,
        /// The game's index file.
        index: PathBuf,
        /// The IO error.
        #[source]
        source: io::Error,
    },
}

/// Why the per-game index could not be checked or rebuilt from the log.
#[derive(Debug, thiserror::Error)]
pub(super) enum IndexError {
    /// A game's index file could not be read.
    #[error("cannot check the index {} of game {game}: {source}", path.display())]
    Check {
        /// The game.
        game: GameId,
        /// Its index file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: io::Error,
    },
    /// Reading the log to rebuild the index failed at `offset`.
    #[error("cannot rebuild the index: reading the event log at byte {offset} failed: {reason}")]
    Read {
        /// Where in the log.
        offset: u64,
        /// The IO or decoding error.
        reason: String,
    },
    /// A game's rebuilt index could not be written.
    #[error("cannot write the index {} of game {game}: {source}", path.display())]
    Write {
        /// The game.
        game: GameId,
        /// Its index file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: io::Error,
    },
    /// The log closed before the index was rebuilt.
    #[error("the event log is closed (the server is shutting down)")]
    Closed,
}

/// Why a compaction failed. Every failure before the new file takes the
/// log's name leaves the log as it was.
#[derive(Debug, thiserror::Error)]
pub(super) enum CompactError {
    /// Reading a record of the log failed.
    #[error("cannot read {} at byte {offset} to compact it: {source}", path.display())]
    Read {
        /// The log file.
        path: PathBuf,
        /// Where in the log.
        offset: u64,
        /// The IO error.
        #[source]
        source: io::Error,
    },
    /// A record of the log could not be decoded (it replayed a moment ago).
    #[error("cannot decode the record of {} at byte {offset} to compact it: {source}", path.display())]
    Decode {
        /// The log file.
        path: PathBuf,
        /// Where in the log.
        offset: u64,
        /// The decoding error.
        #[source]
        source: rmp_serde::decode::Error,
    },
    /// Writing or syncing the new file failed (disk full, IO error).
    #[error("cannot write the compacted event log {}: {source}", path.display())]
    Write {
        /// The new file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: io::Error,
    },
    /// The new file could not be renamed over the log.
    #[error("cannot put the compacted event log in place of {}: {source}", path.display())]
    Rename {
        /// The log file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: io::Error,
    },
    /// An unfinished compaction left by a crash could not be removed.
    #[error(
        "cannot remove {} (an unfinished compaction left by a crash; the event log itself is intact): {source}. Delete it by hand",
        path.display()
    )]
    Leftover {
        /// The leftover file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: io::Error,
    },
}
