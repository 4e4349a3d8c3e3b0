//! The embedded event log: one append-only, checksummed file on local disk.
//!
//! In single-node mode this file is the source of truth. It is replayed once at
//! start to rebuild every game, then only appended to.
//!
//! ## On-disk format
//!
//! ```text
//! "SCOREHUB-LOG-1\n"                          15-byte magic header
//! repeated:
//!   u32 LE  payload length (1..=1 MiB)
//!   u32 LE  crc32 of the payload
//!   payload = MessagePack (named fields) of a `Record`
//! ```
//!
//! ## Why it is built this way
//!
//! - **Group commit.** Every append must be durable before a scorekeeper gets
//!   `200`, and an `fsync` costs milliseconds. Callers encode their records on
//!   their own task and hand the bytes to one writer thread over a bounded
//!   channel; the writer takes everything pending, writes it with one call and
//!   syncs once for the whole group. Throughput grows with concurrency instead
//!   of being capped at one sync per event.
//! - **Torn tails are expected, corruption is not.** A crash mid-write can leave
//!   the last record incomplete; that record was never acknowledged, so replay
//!   drops it (with a warning) and truncates the file. A bad record with intact
//!   records after it means the disk or someone else damaged the file: opening
//!   stops with [`StoreError::Corrupt`] rather than guess.
//! - **Failed writes leave no trace.** After a failed write or sync the file is
//!   truncated back to its last good length, so a later retry (once the disk has
//!   room again) continues a clean log.
//! - **Readiness heals by itself.** After a failed write, [`FileLog::health`]
//!   reports the reason and asks the writer to probe: write as many zero bytes
//!   as the failed write needed past the last record, sync, cut them off. A node
//!   taken out of rotation because its disk was full comes back once space
//!   returns, without waiting for an event to get through. (A crash mid-probe
//!   leaves a zeroed tail, which replay drops like any torn tail.)
//! - **Bodies and offsets stay on disk.** A per-game index beside the log
//!   (module `index`) says where each of a game's records is; memory keeps only
//!   each game's last seq. [`FileLog::events`] and [`FileLog::game_records`]
//!   read just the records asked for with positional reads, so an idle game
//!   unloaded from memory is rebuilt without scanning the log, and memory
//!   grows with games, not with events.
//! - **Compaction, at start-up only.** [`FileLog::compact`] rewrites the log
//!   without the records of games it is given (the backend gives it the
//!   games past their retention), beside the log, then renames it over
//!   (module `compact`): one append-only writer at run time, and start-up
//!   replay that follows the games kept.
//! - **Checks that change nothing.** [`scan`] (module `verify`) reads the
//!   log and its index without writing, locking or repairing anything, and
//!   reports every damaged place with its byte offset instead of stopping at
//!   the first: what `scorehub log verify` and `scorehub games list` run,
//!   beside a stopped hub.

mod compact;
mod error;
mod format;
mod index;
mod read;
mod replay;
#[cfg(test)]
mod tests;
mod verify;
mod writer;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use self::format::*;
use self::index::{Entry, IndexDir, IndexWriter, Verdict};
use self::read::*;
use self::replay::*;
use self::writer::*;
use super::{Record, StoreError};
use crate::domain::GameId;

pub use self::compact::{COMPACT_FILE_NAME, Compaction};
pub use self::format::MAGIC;
pub use self::index::INDEX_DIR_NAME;
pub use self::verify::{Problem, ProblemKind, Scan, ScanError, ScanOptions, log_in_use, scan};

/// Name of the log file inside the storage directory.
pub const LOG_FILE_NAME: &str = "events.log";

/// Append calls that may wait for the writer before callers are slowed down.
const CHANNEL_CAPACITY: usize = 1024;
/// How a [`FileLog`] behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLogOptions {
    /// Sync every group to disk before acknowledging it. Only tests and
    /// benchmarks turn this off: without it an acknowledged event can be lost
    /// on power failure.
    pub fsync: bool,
}

impl Default for FileLogOptions {
    fn default() -> Self {
        FileLogOptions { fsync: true }
    }
}

/// The embedded append-only event log. `Send + Sync`; share it in an `Arc`.
pub struct FileLog {
    shared: Arc<Shared>,
    /// How it was opened (a compaction opens the new file the same way).
    opts: FileLogOptions,
    tx: mpsc::Sender<Cmd>,
    closed: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// State shared by callers and the writer thread.
struct Shared {
    path: PathBuf,
    /// The log file, for positional reads.
    file: Arc<File>,
    /// Where each game's records are.
    index: IndexDir,
    /// Per game, what the log holds of it.
    games: RwLock<HashMap<GameId, Tail>>,
    /// The reason the last write failed, until one succeeds.
    health: Mutex<Option<String>>,
    /// A probe is queued for the writer; set by `health`, cleared by the writer.
    probe_queued: AtomicBool,
}

/// What the log holds of one game: its records are seqs `0..=last_seq`
/// (0 being the creation, when `created`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tail {
    created: bool,
    last_seq: u64,
}

impl FileLog {
    /// Opens (creating dir and file if needed) `<dir>/events.log`, replays every record in order
    /// through `on_record`, and starts the writer thread.
    ///
    /// A torn last record (left by a crash mid-write) is dropped with a warning
    /// and the file truncated after the last good record. Damage followed by
    /// intact records, a wrong file header, or an `on_record` error stop with
    /// [`StoreError::Corrupt`]; an unusable directory with [`StoreError::Open`].
    /// Only one process may hold the log open. This call blocks on disk IO:
    /// run it at start-up, or inside `spawn_blocking` from async code.
    ///
    /// A compacted log left beside it by a compaction that never finished
    /// ([`COMPACT_FILE_NAME`]; see [`FileLog::compact`]) is removed: the
    /// log itself is still the one from before that compaction.
    pub fn open(
        dir: &Path,
        opts: FileLogOptions,
        on_record: impl FnMut(Record) -> Result<(), String>,
    ) -> Result<FileLog, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            dir: dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(format!("cannot create it: {e}")))?;
        let path = dir.join(LOG_FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| open_err(format!("cannot open {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(open_err(format!(
                    "{} is in use by another scorehub process; stop it or use another directory",
                    path.display()
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(open_err(format!("cannot lock {}: {e}", path.display())));
            }
        }
        compact::remove_leftover(&path).map_err(|e| open_err(e.to_string()))?;
        FileLog::start(dir, &path, file, opts, on_record)
    }

    /// Opens the log in `file` (at `path` in `dir`, locked by the caller):
    /// checks its header, replays it through `on_record`, checks the index
    /// and starts the writer thread (see [`FileLog::open`]).
    fn start(
        dir: &Path,
        path: &Path,
        file: File,
        opts: FileLogOptions,
        mut on_record: impl FnMut(Record) -> Result<(), String>,
    ) -> Result<FileLog, StoreError> {
        let path = path.to_path_buf();
        let open_err = |reason: String| StoreError::Open {
            dir: dir.display().to_string(),
            reason,
        };
        let io_err = |what: &str, e: io::Error| open_err(format!("{what} {}: {e}", path.display()));
        let file_len = file.metadata().map_err(|e| io_err("cannot stat", e))?.len();

        if file_len < MAGIC_LEN {
            start_new_file(&file, dir, &path, file_len).map_err(|e| match e {
                HeaderError::Io(e) => io_err("cannot write the header of", e),
                HeaderError::Wrong(found) => wrong_header(&path, &found),
            })?;
        } else {
            let mut found = [0u8; MAGIC.len()];
            file.read_exact_at(&mut found, 0)
                .map_err(|e| io_err("cannot read", e))?;
            if found != MAGIC {
                return Err(wrong_header(&path, &found));
            }
        }
        let file_len = file_len.max(MAGIC_LEN);

        let mut tails = HashMap::new();
        let end = replay(&file, &path, file_len, &mut tails, &mut on_record)?;
        if let Some(torn) = end.torn {
            tracing::warn!(
                file = %path.display(),
                offset = end.good_len,
                dropped_bytes = file_len - end.good_len,
                reason = %torn,
                "dropping the torn last record of the event log (left by a crash mid-write; it was never acknowledged)"
            );
            file.set_len(end.good_len)
                .and_then(|()| file.sync_all())
                .map_err(|e| io_err("cannot truncate the torn tail of", e))?;
        }

        let index = IndexDir::create(dir).map_err(|e| {
            open_err(format!(
                "cannot create its index directory {INDEX_DIR_NAME}: {e}"
            ))
        })?;
        reconcile_index(&file, end.good_len, &index, &tails)
            .map_err(|e| open_err(e.to_string()))?;
        let games = tails
            .into_iter()
            .map(|(game, t)| {
                let tail = Tail {
                    created: t.created.is_some(),
                    last_seq: t.last.map_or(0, |(seq, _)| seq),
                };
                (game, tail)
            })
            .collect();

        let file = Arc::new(file);
        let shared = Arc::new(Shared {
            path: path.clone(),
            file: Arc::clone(&file),
            index: index.clone(),
            games: RwLock::new(games),
            health: Mutex::new(None),
            probe_queued: AtomicBool::new(false),
        });
        let writer = Writer {
            shared: Arc::clone(&shared),
            file,
            len: end.good_len,
            dirty_tail: false,
            failed_bytes: None,
            fsync: opts.fsync,
            buf: Vec::new(),
            index: IndexWriter::new(index),
        };
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("scorehub-log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| open_err(format!("cannot start the log writer thread: {e}")))?;
        Ok(FileLog {
            shared,
            opts,
            tx,
            closed: AtomicBool::new(false),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Appends records in order, durably (fsync/fdatasync) before returning Ok. All-or-nothing per call.
    ///
    /// Records of concurrent calls never interleave; calls land in the order the
    /// writer accepted them. Fails with [`StoreError::Unavailable`] when the
    /// write or sync fails (nothing of the call stays in the log), when a record
    /// is larger than 1 MiB encoded, or after [`FileLog::close`].
    pub async fn append(&self, records: Vec<Record>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        let (req, answer) = AppendReq::new(&records)?;
        self.tx
            .send(Cmd::Append(req))
            .await
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// Event records (Record::Event) of `game` with seq > since, oldest first, at most `limit`.
    ///
    /// Only acknowledged appends are visible. Reads the records from disk;
    /// a record that no longer matches its checksum gives [`StoreError::Corrupt`].
    pub async fn events(
        &self,
        game: &GameId,
        since: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let Some(tail) = self.shared.tail(game) else {
            return Ok(Vec::new());
        };
        if limit == 0 || since >= tail.last_seq {
            return Ok(Vec::new());
        }
        let from = since + 1;
        let to = tail.last_seq.min(since.saturating_add(limit as u64));
        self.read_seqs(game, from, to).await
    }

    /// Every record of `game`, oldest first: its creation, then its events in
    /// seq order. Empty when the log holds no such game.
    ///
    /// Only acknowledged appends are visible. Reads just those records, with
    /// positional reads off the async workers (the whole log is never
    /// scanned); a record that no longer matches its checksum gives
    /// [`StoreError::Corrupt`].
    pub async fn game_records(&self, game: &GameId) -> Result<Vec<Record>, StoreError> {
        let Some(tail) = self.shared.tail(game) else {
            return Ok(Vec::new());
        };
        let from = if tail.created { 0 } else { 1 };
        self.read_seqs(game, from, tail.last_seq).await
    }

    /// The records of `game` for seqs `from..=to`, all of which the log holds.
    /// An index found wrong is rebuilt by the writer, then read again.
    async fn read_seqs(
        &self,
        game: &GameId,
        from: u64,
        to: u64,
    ) -> Result<Vec<Record>, StoreError> {
        let mut rebuilt = false;
        loop {
            let shared = Arc::clone(&self.shared);
            let id = game.clone();
            let read = tokio::task::spawn_blocking(move || shared.read_seqs(&id, from, to))
                .await
                .map_err(|e| {
                    StoreError::Unavailable(format!("reading the event log failed: {e}"))
                })?;
            match read {
                Ok(records) => return Ok(records),
                Err(ReadError::Store(e)) => return Err(e),
                Err(ReadError::Stale(why)) if rebuilt => {
                    return Err(StoreError::Corrupt {
                        file: self.shared.path.display().to_string(),
                        offset: 0,
                        reason: format!("{why}, even after rebuilding the index from the log"),
                    });
                }
                Err(ReadError::Stale(why)) => {
                    tracing::warn!(game = %game, reason = %why, "the event log's index of a game is wrong; rebuilding it from the log");
                    self.reindex(game).await?;
                    rebuilt = true;
                }
            }
        }
    }

    /// Has the writer rebuild `game`'s index from the log.
    async fn reindex(&self, game: &GameId) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let unavailable = |why: String| {
            StoreError::Unavailable(format!("cannot rebuild the index of game {game}: {why}"))
        };
        self.tx
            .send(Cmd::Reindex(game.clone(), reply))
            .await
            .map_err(|_| unavailable("the event log writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| unavailable("the event log writer has stopped".into()))?
            .map_err(|e| unavailable(e.to_string()))
    }

    /// Ok while the last write succeeded; Err(reason) after a failed write,
    /// until a later write or probe succeeds.
    ///
    /// While unhealthy, each call queues (at most one at a time) a probe on the
    /// writer thread: it clears the reason once a write of the failed size
    /// works again, so readiness recovers without an event getting through.
    pub fn health(&self) -> Result<(), String> {
        let reason = self
            .shared
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(reason) = reason else {
            return Ok(());
        };
        if !self.closed.load(Ordering::Acquire)
            && !self.shared.probe_queued.swap(true, Ordering::AcqRel)
            && self.tx.try_send(Cmd::Probe).is_err()
        {
            // The writer is busy or gone; a later call asks again.
            self.shared.probe_queued.store(false, Ordering::Release);
        }
        Err(reason)
    }

    /// Flushes, fsyncs and stops the writer thread (for graceful shutdown). Appends after close fail with Unavailable.
    ///
    /// Appends accepted before the call are still written and answered.
    /// Calling it again does nothing.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let (done, wait) = oneshot::channel();
        if self.tx.send(Cmd::Close(done)).await.is_ok() {
            // An error means the writer is already gone; nothing left to wait for.
            let _ = wait.await;
        }
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(())) => {}
                _ => {
                    tracing::error!(file = %self.shared.path.display(), "the event log writer thread panicked")
                }
            }
        }
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

impl Drop for FileLog {
    /// Without [`FileLog::close`]: lets the writer finish what it was given
    /// and waits for it, so the file's lock is released once the log is
    /// dropped (a new `open` of the same directory then succeeds).
    fn drop(&mut self) {
        let thread = self
            .thread
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            // The writer stops once no sender is left.
            let (gone, _) = mpsc::channel(1);
            drop(std::mem::replace(&mut self.tx, gone));
            if thread.join().is_err() {
                tracing::error!(file = %self.shared.path.display(), "the event log writer thread panicked");
            }
        }
    }
}

impl fmt::Debug for FileLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileLog")
            .field("path", &self.shared.path)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable("the event log is closed (the server is shutting down)".into())
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("the event log writer has stopped".into())
}
