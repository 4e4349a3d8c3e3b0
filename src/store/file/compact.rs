//! Compaction: rewriting the log without the records of some games (those
//! past their retention), crash-safely.
//!
//! ## Why it cannot leave a mix
//!
//! The kept records are copied byte for byte (header, checksum, payload)
//! into a new file beside the log, [`COMPACT_FILE_NAME`], which is synced
//! and then renamed over `events.log`; then the directory is synced. The
//! rename is atomic, so a crash at any point leaves one complete log under
//! the log's name: before the rename the old one (and an unfinished new
//! file, which [`FileLog::open`] removes), after it the new one. The new
//! file is locked before it takes the log's name, so no other process can
//! open the log between the rename and the reopen.
//!
//! The per-game index is derived from the log: the reopen finds the index
//! files of games whose records moved out of date and rebuilds them, as
//! after any crash; the index files of dropped games are removed last (one
//! left by a crash there is never read: a new game of the same id writes
//! its entries over it).

use std::io::{BufWriter, Write};

use super::error::CompactError;
use super::*;

/// Name of the compacted log while it is being written, beside the log.
pub const COMPACT_FILE_NAME: &str = "events.log.compact";

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// Games whose records were dropped.
    pub games_dropped: usize,
    /// Records before.
    pub records_before: u64,
    /// Records kept.
    pub records_after: u64,
    /// Bytes of the log before.
    pub bytes_before: u64,
    /// Bytes of the log after.
    pub bytes_after: u64,
}

impl FileLog {
    /// Rewrites the log without any record of `games` and opens the result,
    /// replaying it through `on_record` like [`FileLog::open`] does.
    ///
    /// Meant for start-up, right after [`FileLog::open`] (nothing may be
    /// appending: the writer thread is stopped first). Crash-safe: see the
    /// module docs. When the new file cannot be written (disk full, IO
    /// error), the old log is kept and opened again, with a warning, and
    /// the answer's compaction is `None`. Blocking: disk IO.
    pub fn compact(
        self,
        games: &HashSet<GameId>,
        on_record: impl FnMut(Record) -> Result<(), String>,
    ) -> Result<(FileLog, Option<Compaction>), StoreError> {
        let path = self.shared.path.clone();
        let dir = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let opts = self.opts;
        let index = self.shared.index.clone();
        // Keeps the file, and so its lock, while the writer stops.
        let old = Arc::clone(&self.shared.file);
        drop(self);
        let rewritten = old
            .metadata()
            .map_err(|source| CompactError::Read {
                path: path.clone(),
                offset: 0,
                source,
            })
            .and_then(|meta| rewrite(&old, meta.len(), &path, games));
        match rewritten {
            Ok((fresh, compaction)) => {
                drop(old);
                forget_indexes(&index, games);
                let log = FileLog::start(&dir, &path, fresh, opts, on_record)?;
                Ok((log, Some(compaction)))
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot compact the event log; keeping it as it is");
                let old = Arc::try_unwrap(old).map_err(|_| StoreError::Open {
                    dir: dir.display().to_string(),
                    reason: format!(
                        "{} is still in use after its writer stopped (a bug)",
                        path.display()
                    ),
                })?;
                let log = FileLog::start(&dir, &path, old, opts, on_record)?;
                Ok((log, None))
            }
        }
    }
}

/// Removes what a compaction that never reached its rename left beside the
/// log at `path` (the log itself is the one from before it).
pub(super) fn remove_leftover(path: &Path) -> Result<(), CompactError> {
    let leftover = path.with_file_name(COMPACT_FILE_NAME);
    match std::fs::remove_file(&leftover) {
        Ok(()) => {
            tracing::warn!(file = %leftover.display(), "removed an unfinished compaction of the event log (left by a crash; the event log itself is intact)");
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CompactError::Leftover {
            path: leftover,
            source,
        }),
    }
}

/// Copies every record in the first `len` bytes of `src` whose game is not
/// in `games` into a new file, syncs it and renames it over `path`; returns
/// the new file, open and locked. An error leaves `path` as it was.
fn rewrite(
    src: &File,
    len: u64,
    path: &Path,
    games: &HashSet<GameId>,
) -> Result<(File, Compaction), CompactError> {
    let tmp = path.with_file_name(COMPACT_FILE_NAME);
    let written = write_kept(src, len, &tmp, games);
    let (fresh, compaction) = match written {
        Ok(done) => done,
        Err(e) => {
            // Best effort: a leftover is removed at the next open anyway.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Err(source) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(CompactError::Rename {
            path: path.to_path_buf(),
            source,
        });
    }
    // The new log is in place; syncing the directory makes the rename
    // survive a power failure (without it, the old log may come back:
    // complete, only not compacted).
    if let Some(dir) = path.parent()
        && let Err(e) = File::open(dir).and_then(|d| d.sync_all())
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot sync the storage directory after compacting the event log");
    }
    Ok((fresh, compaction))
}

/// Writes the new log at `tmp` (header, then the kept records), synced.
fn write_kept(
    src: &File,
    len: u64,
    tmp: &Path,
    games: &HashSet<GameId>,
) -> Result<(File, Compaction), CompactError> {
    let write_err = |source: io::Error| CompactError::Write {
        path: tmp.to_path_buf(),
        source,
    };
    let out = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(write_err)?;
    out.try_lock().map_err(|e| {
        write_err(match e {
            TryLockError::WouldBlock => io::Error::other("locked by another process"),
            TryLockError::Error(e) => e,
        })
    })?;
    let read_err = |offset: u64, source: io::Error| CompactError::Read {
        path: tmp.with_file_name(LOG_FILE_NAME),
        offset,
        source,
    };
    let mut reader = BufReader::with_capacity(256 << 10, src);
    reader
        .seek(SeekFrom::Start(MAGIC_LEN))
        .map_err(|e| read_err(MAGIC_LEN, e))?;
    let mut writer = BufWriter::with_capacity(1 << 20, &out);
    writer.write_all(MAGIC).map_err(write_err)?;
    let mut compaction = Compaction {
        games_dropped: 0,
        records_before: 0,
        records_after: 0,
        bytes_before: len,
        bytes_after: MAGIC_LEN,
    };
    let mut dropped = HashSet::new();
    let mut pos = MAGIC_LEN;
    let mut frame = Vec::new();
    while pos < len {
        frame.resize(HEADER_LEN, 0);
        reader
            .read_exact(&mut frame)
            .map_err(|e| read_err(pos, e))?;
        let (rec_len, _) = parse_header(&frame);
        frame.resize(HEADER_LEN + rec_len as usize, 0);
        reader
            .read_exact(&mut frame[HEADER_LEN..])
            .map_err(|e| read_err(pos, e))?;
        let key: RecordKey =
            rmp_serde::from_slice(&frame[HEADER_LEN..]).map_err(|source| CompactError::Decode {
                path: tmp.with_file_name(LOG_FILE_NAME),
                offset: pos,
                source,
            })?;
        compaction.records_before += 1;
        if games.contains(&key.game) {
            dropped.insert(key.game);
        } else {
            writer.write_all(&frame).map_err(write_err)?;
            compaction.records_after += 1;
            compaction.bytes_after += frame.len() as u64;
        }
        pos += frame.len() as u64;
    }
    writer.flush().map_err(write_err)?;
    drop(writer);
    out.sync_all().map_err(write_err)?;
    compaction.games_dropped = dropped.len();
    Ok((out, compaction))
}

/// Removes the index files of `games` (their records are gone from the
/// log). A file that cannot be removed is only a warning: nothing reads it.
fn forget_indexes(index: &IndexDir, games: &HashSet<GameId>) {
    for game in games {
        let path = index.path_of(game);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(game = %game, file = %path.display(), error = %e, "cannot remove the index file of a game dropped from the event log")
            }
        }
    }
}
