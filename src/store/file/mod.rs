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

mod index;

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

use self::index::{Entry, IndexDir, IndexWriter, Verdict};
use super::{Record, StoreError};
use crate::domain::GameId;

pub use self::index::INDEX_DIR_NAME;

/// Name of the log file inside the storage directory.
pub const LOG_FILE_NAME: &str = "events.log";

/// The bytes every log file starts with; the digit is the format version.
const MAGIC: &[u8] = b"SCOREHUB-LOG-1\n";
/// Length of [`MAGIC`], as a file offset.
const MAGIC_LEN: u64 = MAGIC.len() as u64;
/// Per-record header: payload length and crc32, both `u32` little endian.
const HEADER_LEN: usize = 8;
/// Largest payload accepted; a length above it is damage, not a record.
const MAX_RECORD_BYTES: usize = 1 << 20;
/// Append calls that may wait for the writer before callers are slowed down.
const CHANNEL_CAPACITY: usize = 1024;
/// Most append calls the writer commits with one sync.
const MAX_GROUP_CALLS: usize = 1024;
/// Bytes after which the writer stops growing a group.
const MAX_GROUP_BYTES: usize = 8 << 20;
/// A group buffer grown above this is released after use.
const KEEP_BUFFER_BYTES: usize = 16 << 20;

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

/// What replay found of one game: enough to check its index file.
#[derive(Debug, Default, Clone, Copy)]
struct ReplayTail {
    created: Option<Entry>,
    last: Option<(u64, Entry)>,
}

/// A message to the writer thread.
enum Cmd {
    Append(AppendReq),
    /// Check whether writing works again after a failed write.
    Probe,
    /// Rebuild a game's index from the log: a read found it wrong.
    Reindex(GameId, oneshot::Sender<Result<(), String>>),
    Close(oneshot::Sender<()>),
}

/// One `append` call, already encoded.
struct AppendReq {
    bytes: Vec<u8>,
    records: usize,
    placed: Vec<PendingRecord>,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

impl AppendReq {
    /// Encodes `records` into one request, and where its answer arrives.
    fn new(
        records: &[Record],
    ) -> Result<(AppendReq, oneshot::Receiver<Result<(), StoreError>>), StoreError> {
        let (bytes, placed) = encode(records)?;
        let (reply, answer) = oneshot::channel();
        let req = AppendReq {
            bytes,
            records: records.len(),
            placed,
            reply,
        };
        Ok((req, answer))
    }
}

/// A record inside an [`AppendReq`], to index as it is written.
struct PendingRecord {
    game: GameId,
    /// Its seq; 0 for the creation.
    seq: u64,
    /// Offset of its header within the request's bytes.
    rel: u64,
    len: u32,
    crc: u32,
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
    pub fn open(
        dir: &Path,
        opts: FileLogOptions,
        mut on_record: impl FnMut(Record) -> Result<(), String>,
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
        reconcile_index(&file, end.good_len, &index, &tails).map_err(open_err)?;
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
            .map_err(unavailable)
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

fn wrong_header(path: &Path, found: &[u8]) -> StoreError {
    StoreError::Corrupt {
        file: path.display().to_string(),
        offset: 0,
        reason: format!(
            "it does not start with the header {:?} (found {:?}): it is not a scorehub event log, or was written by an incompatible version",
            String::from_utf8_lossy(MAGIC),
            String::from_utf8_lossy(found),
        ),
    }
}

/// Encodes records as consecutive frames, noting where each record sits.
fn encode(records: &[Record]) -> Result<(Vec<u8>, Vec<PendingRecord>), StoreError> {
    let mut bytes = Vec::with_capacity(records.len() * 256);
    let mut placed = Vec::new();
    for record in records {
        let start = bytes.len();
        bytes.extend_from_slice(&[0u8; HEADER_LEN]);
        rmp_serde::encode::write_named(&mut bytes, record).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot encode a record of game {}: {e}",
                record.game()
            ))
        })?;
        let payload_len = bytes.len() - start - HEADER_LEN;
        if payload_len > MAX_RECORD_BYTES {
            return Err(StoreError::Unavailable(format!(
                "a record of game {} is {payload_len} bytes encoded, above the event log's limit of {MAX_RECORD_BYTES}",
                record.game()
            )));
        }
        // Bounded by MAX_RECORD_BYTES just above.
        let len = payload_len as u32;
        let crc = crc32fast::hash(&bytes[start + HEADER_LEN..]);
        bytes[start..start + 4].copy_from_slice(&len.to_le_bytes());
        bytes[start + 4..start + HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        placed.push(PendingRecord {
            game: record.game().clone(),
            seq: seq_of(record),
            rel: start as u64,
            len,
            crc,
        });
    }
    Ok((bytes, placed))
}

/// A record's seq; 0 for the creation.
fn seq_of(record: &Record) -> u64 {
    match record {
        Record::Created { .. } => 0,
        Record::Event { seq, .. } => *seq,
    }
}

/// Why a read of a game's records failed.
enum ReadError {
    /// The log could not be read, or a record in it is damaged.
    Store(StoreError),
    /// The index does not match the log (why): rebuild it and read again.
    Stale(String),
}

impl Shared {
    /// What the log holds of `game`, if anything.
    fn tail(&self, game: &GameId) -> Option<Tail> {
        self.games
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(game)
            .copied()
    }

    /// Reads the records of `game` for seqs `from..=to` through its index,
    /// checking each entry against the record it points at (blocking).
    fn read_seqs(&self, game: &GameId, from: u64, to: u64) -> Result<Vec<Record>, ReadError> {
        let index_path = || self.index.path_of(game).display().to_string();
        let entries = self
            .index
            .read(game, from, to)
            .map_err(|e| {
                ReadError::Store(StoreError::Unavailable(format!(
                    "cannot read the event log's index {}: {e}",
                    index_path()
                )))
            })?
            .ok_or_else(|| {
                ReadError::Stale(format!(
                    "the index {} of game {game} lacks seqs {from}..={to}",
                    index_path()
                ))
            })?;
        let mut out = Vec::with_capacity(entries.len());
        let mut buf = Vec::new();
        for (seq, entry) in (from..).zip(entries) {
            let stale = || {
                ReadError::Stale(format!(
                    "the index {} has no record of game {game} seq {seq} at byte {}",
                    index_path(),
                    entry.offset
                ))
            };
            if entry.offset < MAGIC_LEN || entry.len == 0 || entry.len as usize > MAX_RECORD_BYTES {
                return Err(stale());
            }
            buf.resize(HEADER_LEN + entry.len as usize, 0);
            match self.file.read_exact_at(&mut buf, entry.offset) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(stale()),
                Err(e) => {
                    return Err(ReadError::Store(StoreError::Unavailable(format!(
                        "cannot read {} at byte {}: {e}",
                        self.path.display(),
                        entry.offset
                    ))));
                }
            }
            let (len, crc) = parse_header(&buf);
            if len != entry.len || crc != entry.crc {
                return Err(stale());
            }
            let corrupt = |reason: String| {
                ReadError::Store(StoreError::Corrupt {
                    file: self.path.display().to_string(),
                    offset: entry.offset,
                    reason,
                })
            };
            if crc32fast::hash(&buf[HEADER_LEN..]) != crc {
                return Err(corrupt(
                    "the record changed on disk since it was written (checksum mismatch)".into(),
                ));
            }
            let record: Record = rmp_serde::from_slice(&buf[HEADER_LEN..])
                .map_err(|e| corrupt(format!("cannot decode the record: {e}")))?;
            if record.game() != game || seq_of(&record) != seq {
                return Err(stale());
            }
            out.push(record);
        }
        Ok(out)
    }

    fn set_health(&self, state: Option<String>) {
        *self.health.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }
}

/// Payload length and crc32 from a record header.
fn parse_header(b: &[u8]) -> (u32, u32) {
    let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let crc = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    (len, crc)
}

/// Why the header of a short file could not be written.
enum HeaderError {
    Io(io::Error),
    Wrong(Vec<u8>),
}

/// Gives a new (or torn-at-creation) file its header, durably.
fn start_new_file(file: &File, dir: &Path, path: &Path, len: u64) -> Result<(), HeaderError> {
    let mut found = vec![0u8; len as usize];
    file.read_exact_at(&mut found, 0).map_err(HeaderError::Io)?;
    if !MAGIC.starts_with(&found) {
        return Err(HeaderError::Wrong(found));
    }
    if len > 0 {
        tracing::warn!(file = %path.display(), "completing the header of an event log that was cut short while being created");
    }
    file.write_all_at(MAGIC, 0).map_err(HeaderError::Io)?;
    file.sync_all().map_err(HeaderError::Io)?;
    // Make the new directory entry durable too.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(HeaderError::Io)
}

/// How replay ended.
struct ReplayEnd {
    /// End of the last good record.
    good_len: u64,
    /// Why the bytes after `good_len` were dropped, if any.
    torn: Option<String>,
}

/// Reads every record after the header, noting each game's first and last
/// records in `tails` and feeding `on_record`.
fn replay(
    file: &File,
    path: &Path,
    file_len: u64,
    tails: &mut HashMap<GameId, ReplayTail>,
    on_record: &mut impl FnMut(Record) -> Result<(), String>,
) -> Result<ReplayEnd, StoreError> {
    let corrupt = |offset: u64, reason: String| StoreError::Corrupt {
        file: path.display().to_string(),
        offset,
        reason,
    };
    let read_err = |offset: u64, e: io::Error| StoreError::Open {
        dir: path
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        reason: format!("cannot read {} at byte {offset}: {e}", path.display()),
    };
    let mut reader = BufReader::with_capacity(256 << 10, file);
    reader
        .seek(SeekFrom::Start(MAGIC_LEN))
        .map_err(|e| read_err(MAGIC_LEN, e))?;
    let mut pos = MAGIC_LEN;
    let mut header = [0u8; HEADER_LEN];
    let mut payload = Vec::new();
    let torn = |pos: u64, reason: String| {
        Ok(ReplayEnd {
            good_len: pos,
            torn: Some(reason),
        })
    };
    while pos < file_len {
        if file_len - pos < HEADER_LEN as u64 {
            return torn(pos, "incomplete record header".into());
        }
        reader
            .read_exact(&mut header)
            .map_err(|e| read_err(pos, e))?;
        let (len, crc) = parse_header(&header);
        let end = pos + HEADER_LEN as u64 + u64::from(len);
        if len == 0 || len as usize > MAX_RECORD_BYTES || end > file_len {
            // The length cannot be trusted, so neither can the next record's
            // position. It is a torn tail only if nothing intact follows.
            let why = if end > file_len && len as usize <= MAX_RECORD_BYTES && len != 0 {
                format!("the record ({len} bytes) extends past the end of the file")
            } else {
                format!("invalid record length {len}")
            };
            return match intact_record_after(file, pos + 1, file_len)
                .map_err(|e| read_err(pos, e))?
            {
                Some(next) => Err(corrupt(
                    pos,
                    format!("{why}, yet an intact record follows at byte {next}"),
                )),
                None => torn(pos, why),
            };
        }
        payload.resize(len as usize, 0);
        reader
            .read_exact(&mut payload)
            .map_err(|e| read_err(pos, e))?;
        if crc32fast::hash(&payload) != crc {
            if end == file_len {
                return torn(pos, "checksum mismatch in the last record".into());
            }
            return Err(corrupt(
                pos,
                format!(
                    "checksum mismatch in a record followed by {} more bytes",
                    file_len - end
                ),
            ));
        }
        let record: Record = rmp_serde::from_slice(&payload)
            .map_err(|e| corrupt(pos, format!("cannot decode the record: {e}")))?;
        let entry = Entry {
            offset: pos,
            len,
            crc,
        };
        let tail = match tails.get_mut(record.game()) {
            Some(t) => t,
            None => tails.entry(record.game().clone()).or_default(),
        };
        // The index places a record by its seq, so seqs must be what the
        // game's actor hands out: one creation first, then 1, 2, 3...
        let last_seq = tail.last.map_or(0, |(seq, _)| seq);
        match seq_of(&record) {
            0 if tail.created.is_none() && tail.last.is_none() => tail.created = Some(entry),
            0 => {
                return Err(corrupt(
                    pos,
                    format!("game {} is created a second time", record.game()),
                ));
            }
            seq if seq == last_seq + 1 => tail.last = Some((seq, entry)),
            seq => {
                return Err(corrupt(
                    pos,
                    format!(
                        "game {}: event seq {seq} follows seq {last_seq} (gap or repeat)",
                        record.game()
                    ),
                ));
            }
        }
        on_record(record).map_err(|e| corrupt(pos, format!("replaying the record failed: {e}")))?;
        pos = end;
    }
    Ok(ReplayEnd {
        good_len: pos,
        torn: None,
    })
}

/// Checks every game's index file against what replay found, rebuilding from
/// the log (the first `len` bytes of `file`) those that do not match.
fn reconcile_index(
    file: &File,
    len: u64,
    index: &IndexDir,
    tails: &HashMap<GameId, ReplayTail>,
) -> Result<(), String> {
    let mut stale = HashSet::new();
    let mut first_reason = None;
    for (game, tail) in tails {
        let verdict = index.check(game, tail.created, tail.last).map_err(|e| {
            format!(
                "cannot check the index {} of game {game}: {e}",
                index.path_of(game).display()
            )
        })?;
        if let Verdict::Stale(why) = verdict {
            tracing::debug!(game = %game, why, "the index of a game does not match the event log");
            first_reason.get_or_insert(why);
            stale.insert(game.clone());
        }
    }
    let Some(first_reason) = first_reason else {
        return Ok(());
    };
    let started = Instant::now();
    rebuild_index(file, len, index, &stale)?;
    tracing::info!(
        games = stale.len(),
        of = tails.len(),
        first_reason,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "rebuilt the event log's index of games whose index was missing or out of date"
    );
    Ok(())
}

/// The fields of a record that place it in its game's index.
#[derive(serde::Deserialize)]
struct RecordKey {
    game: GameId,
    /// Absent from the creation, which is seq 0.
    #[serde(default)]
    seq: u64,
}

/// Rewrites the index files of `games` from the records in the first `len`
/// bytes of the log (blocking; reads the whole log).
fn rebuild_index(
    file: &File,
    len: u64,
    index: &IndexDir,
    games: &HashSet<GameId>,
) -> Result<(), String> {
    let mut found: HashMap<&GameId, Vec<(u64, Entry)>> =
        games.iter().map(|g| (g, Vec::new())).collect();
    let read_err = |pos: u64, e: &dyn fmt::Display| {
        format!("cannot rebuild the index: reading the event log at byte {pos} failed: {e}")
    };
    let mut reader = BufReader::with_capacity(256 << 10, file);
    reader
        .seek(SeekFrom::Start(MAGIC_LEN))
        .map_err(|e| read_err(MAGIC_LEN, &e))?;
    let mut pos = MAGIC_LEN;
    let mut header = [0u8; HEADER_LEN];
    let mut payload = Vec::new();
    while pos < len {
        reader
            .read_exact(&mut header)
            .map_err(|e| read_err(pos, &e))?;
        let (rec_len, crc) = parse_header(&header);
        payload.resize(rec_len as usize, 0);
        reader
            .read_exact(&mut payload)
            .map_err(|e| read_err(pos, &e))?;
        let key: RecordKey = rmp_serde::from_slice(&payload).map_err(|e| read_err(pos, &e))?;
        if let Some(entries) = found.get_mut(&key.game) {
            let entry = Entry {
                offset: pos,
                len: rec_len,
                crc,
            };
            entries.push((key.seq, entry));
        }
        pos += (HEADER_LEN + payload.len()) as u64;
    }
    for (game, entries) in found {
        index.rewrite(game, &entries).map_err(|e| {
            format!(
                "cannot write the index {} of game {game}: {e}",
                index.path_of(game).display()
            )
        })?;
    }
    Ok(())
}

/// The offset of the first intact record (plausible length, within the file,
/// matching checksum) starting at or after `from`, if any.
fn intact_record_after(file: &File, from: u64, file_len: u64) -> io::Result<Option<u64>> {
    // Candidates are tested in steps of CHUNK offsets; each buffer also holds
    // the longest record that can start inside its step.
    const CHUNK: u64 = 4 << 20;
    let mut start = from;
    let mut buf = Vec::new();
    while start + HEADER_LEN as u64 <= file_len {
        let buf_end = file_len.min(start + CHUNK + (HEADER_LEN + MAX_RECORD_BYTES) as u64);
        buf.resize((buf_end - start) as usize, 0);
        file.read_exact_at(&mut buf, start)?;
        let step = buf.len().min(CHUNK as usize);
        for i in 0..step {
            let Some(head) = buf.get(i..i + HEADER_LEN) else {
                break;
            };
            let (len, crc) = parse_header(head);
            let len = len as usize;
            if len == 0 || len > MAX_RECORD_BYTES {
                continue;
            }
            // A record that does not fit the buffer runs past the end of the file.
            if let Some(payload) = buf.get(i + HEADER_LEN..i + HEADER_LEN + len)
                && crc32fast::hash(payload) == crc
            {
                return Ok(Some(start + i as u64));
            }
        }
        start += CHUNK;
    }
    Ok(None)
}

/// The writer thread's state: the only code that writes the file after open.
struct Writer {
    shared: Arc<Shared>,
    file: Arc<File>,
    /// Length of the file up to the last acknowledged record.
    len: u64,
    /// A failed write could not be truncated away; retry before writing again.
    dirty_tail: bool,
    /// Bytes of the last failed write, until a write or probe succeeds.
    failed_bytes: Option<usize>,
    fsync: bool,
    /// Reused buffer holding one group's bytes.
    buf: Vec<u8>,
    /// Writes the index entries of each group.
    index: IndexWriter,
}

impl Writer {
    /// Commits groups until closed or every sender is gone.
    fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut group = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut next = Some(first);
            let mut bytes = 0;
            let mut close = None;
            let mut probe = false;
            let mut reindex = Vec::new();
            while let Some(cmd) = next.take() {
                match cmd {
                    Cmd::Append(req) => {
                        bytes += req.bytes.len();
                        group.push(req);
                    }
                    Cmd::Probe => probe = true,
                    Cmd::Reindex(game, reply) => reindex.push((game, reply)),
                    Cmd::Close(done) => {
                        close = Some(done);
                        break;
                    }
                }
                if group.len() >= MAX_GROUP_CALLS || bytes >= MAX_GROUP_BYTES {
                    break;
                }
                next = rx.try_recv().ok();
            }
            if !group.is_empty() {
                self.commit(&mut group);
            }
            if probe {
                self.probe();
            }
            for (game, reply) in reindex {
                let _ = reply.send(self.reindex(game));
            }
            if let Some(done) = close {
                rx.close();
                while let Ok(cmd) = rx.try_recv() {
                    match cmd {
                        Cmd::Append(req) => {
                            let _ = req.reply.send(Err(closed()));
                        }
                        Cmd::Probe => {}
                        Cmd::Reindex(_, reply) => {
                            let _ = reply.send(Err("the event log is closed".into()));
                        }
                        Cmd::Close(done) => {
                            let _ = done.send(());
                        }
                    }
                }
                self.shutdown();
                let _ = done.send(());
                return;
            }
        }
        self.shutdown();
    }

    /// Answers and removes each request whose records would break their
    /// game's sequence (one creation, then seqs 1, 2, 3...): the index places
    /// records by seq, and replay would refuse such a log. The game actors
    /// never ask for that; this keeps a bug from writing a log that cannot
    /// be opened again.
    fn refuse_out_of_sequence(&self, group: &mut Vec<AppendReq>) {
        let tails = self
            .shared
            .games
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut pending: HashMap<GameId, Tail> = HashMap::new();
        group.retain_mut(|req| {
            let mut staged: Vec<(&GameId, Tail)> = Vec::new();
            for r in &req.placed {
                let now = staged
                    .iter()
                    .rev()
                    .find(|(g, _)| **g == r.game)
                    .map(|&(_, t)| t)
                    .or_else(|| pending.get(&r.game).copied())
                    .or_else(|| tails.get(&r.game).copied())
                    .unwrap_or_default();
                let next = match r.seq {
                    0 if !now.created && now.last_seq == 0 => Tail {
                        created: true,
                        last_seq: 0,
                    },
                    seq if seq > 0 && seq == now.last_seq + 1 => Tail {
                        created: now.created,
                        last_seq: seq,
                    },
                    seq => {
                        let why = if seq == 0 {
                            format!("game {} is already created", r.game)
                        } else {
                            format!(
                                "game {}: seq {seq} does not follow seq {}",
                                r.game, now.last_seq
                            )
                        };
                        tracing::error!(reason = %why, "refusing an append that would break a game's sequence in the event log");
                        let reply = std::mem::replace(&mut req.reply, oneshot::channel().0);
                        let _ = reply.send(Err(StoreError::Unavailable(format!(
                            "refusing records out of sequence: {why}"
                        ))));
                        return false;
                    }
                };
                staged.push((&r.game, next));
            }
            for (game, tail) in staged {
                pending.insert(game.clone(), tail);
            }
            true
        });
    }

    /// Writes and syncs one group, then answers every caller in it.
    fn commit(&mut self, group: &mut Vec<AppendReq>) {
        self.refuse_out_of_sequence(group);
        if group.is_empty() {
            return;
        }
        let records: usize = group.iter().map(|r| r.records).sum();
        metrics::histogram!("scorehub_log_group_records").record(records as f64);
        match self.write_group(group) {
            Ok(()) => {
                {
                    let mut games = self
                        .shared
                        .games
                        .write()
                        .unwrap_or_else(PoisonError::into_inner);
                    for r in group.iter().flat_map(|req| &req.placed) {
                        let tail = match games.get_mut(&r.game) {
                            Some(t) => t,
                            None => games.entry(r.game.clone()).or_default(),
                        };
                        if r.seq == 0 {
                            tail.created = true;
                        }
                        tail.last_seq = tail.last_seq.max(r.seq);
                    }
                }
                self.len += self.buf.len() as u64;
                self.failed_bytes = None;
                self.shared.set_health(None);
                for req in group.drain(..) {
                    let _ = req.reply.send(Ok(()));
                }
            }
            Err(reason) => {
                metrics::counter!("scorehub_log_errors_total").increment(1);
                tracing::error!(file = %self.shared.path.display(), records, %reason, "event log write failed; the group was refused");
                self.failed_bytes = Some(group.iter().map(|r| r.bytes.len()).sum());
                self.shared.set_health(Some(reason.clone()));
                for req in group.drain(..) {
                    let _ = req.reply.send(Err(StoreError::Unavailable(reason.clone())));
                }
            }
        }
        if self.buf.capacity() > KEEP_BUFFER_BYTES {
            self.buf = Vec::new();
        }
    }

    /// Cuts off what an earlier failed write left after the last good record.
    fn clean_tail(&mut self) -> Result<(), String> {
        if self.dirty_tail {
            self.cut_back().map_err(|e| {
                format!(
                    "cannot cut {} back to {} bytes after an earlier failed write: {e}",
                    self.shared.path.display(),
                    self.len
                )
            })?;
            self.dirty_tail = false;
        }
        Ok(())
    }

    /// Writes the group at the end of the log with one call and syncs it once,
    /// after its index entries. On failure the file is cut back to its
    /// previous length (entries past a game's last seq are never read).
    fn write_group(&mut self, group: &[AppendReq]) -> Result<(), String> {
        self.clean_tail()?;
        self.write_index(group)?;
        let path = self.shared.path.display();
        self.buf.clear();
        for req in group {
            self.buf.extend_from_slice(&req.bytes);
        }
        let started = Instant::now();
        let result = self.file.write_all_at(&self.buf, self.len).and_then(|()| {
            if self.fsync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        metrics::histogram!("scorehub_log_sync_seconds").record(started.elapsed().as_secs_f64());
        if let Err(e) = result {
            if let Err(te) = self.cut_back() {
                tracing::warn!(file = %path, len = self.len, error = %te, "cannot cut the failed write off the event log yet; will retry before the next write");
                self.dirty_tail = true;
            }
            return Err(format!("writing {path} failed: {e}"));
        }
        Ok(())
    }

    /// Writes the index entries of a group about to be written at `self.len`:
    /// one positional write per run of consecutive seqs of a game.
    fn write_index(&mut self, group: &[AppendReq]) -> Result<(), String> {
        let mut placed = Vec::with_capacity(group.iter().map(|r| r.placed.len()).sum());
        let mut rel = self.len;
        for req in group {
            for r in &req.placed {
                let entry = Entry {
                    offset: rel + r.rel,
                    len: r.len,
                    crc: r.crc,
                };
                placed.push((&r.game, r.seq, entry));
            }
            rel += req.bytes.len() as u64;
        }
        // Stable: a seq written twice in a group keeps its later entry.
        placed.sort_by(|a, b| a.0.cmp(b.0).then(a.1.cmp(&b.1)));
        let mut run = Vec::new();
        let mut rest = placed.as_slice();
        while let Some(&(game, first, _)) = rest.first() {
            let n = rest
                .iter()
                .zip(first..)
                .take_while(|((g, seq, _), want)| *g == game && *seq == *want)
                .count();
            run.clear();
            run.extend(rest[..n].iter().map(|&(_, _, entry)| entry));
            self.index.write(game, first, &run).map_err(|e| {
                format!(
                    "writing the index of {} ({}) failed: {e}",
                    self.shared.path.display(),
                    self.index.dir().path_of(game).display()
                )
            })?;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Rebuilds `game`'s index from the log as written so far.
    fn reindex(&mut self, game: GameId) -> Result<(), String> {
        self.index.forget(&game);
        let games = HashSet::from([game]);
        rebuild_index(&self.shared.file, self.len, self.index.dir(), &games)
    }

    /// After a failed write, checks whether one of the same size (at most
    /// [`MAX_GROUP_BYTES`]) would work now; clears the health reason if so.
    fn probe(&mut self) {
        self.shared.probe_queued.store(false, Ordering::Release);
        let Some(bytes) = self.failed_bytes else {
            return;
        };
        match self.try_probe(bytes.min(MAX_GROUP_BYTES)) {
            Ok(()) => {
                tracing::info!(file = %self.shared.path.display(), "the event log is writable again");
                self.failed_bytes = None;
                self.shared.set_health(None);
            }
            Err(reason) => self.shared.set_health(Some(reason)),
        }
    }

    /// Writes `bytes` zero bytes after the last good record, syncs them, and
    /// cuts them off again.
    fn try_probe(&mut self, bytes: usize) -> Result<(), String> {
        self.clean_tail()?;
        let path = self.shared.path.display();
        self.buf.clear();
        self.buf.resize(bytes, 0);
        let written = self.file.write_all_at(&self.buf, self.len).and_then(|()| {
            if self.fsync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        let cut = self.cut_back();
        if cut.is_err() {
            self.dirty_tail = true;
        }
        written.map_err(|e| format!("writing {path} failed: {e}"))?;
        cut.map_err(|e| {
            format!(
                "cannot cut {path} back to {} bytes after checking that it is writable: {e}",
                self.len
            )
        })
    }

    /// Cuts the file back to the last acknowledged record, durably.
    fn cut_back(&self) -> io::Result<()> {
        self.file.set_len(self.len)?;
        if self.fsync {
            self.file.sync_all()?;
        }
        Ok(())
    }

    /// Before the thread ends: cuts off what a failed write left (those
    /// records were refused, so the next start must not replay them), then
    /// syncs.
    fn shutdown(&mut self) {
        if let Err(reason) = self.clean_tail() {
            tracing::error!(file = %self.shared.path.display(), %reason, "stopping with a failed write still at the end of the event log; its records were refused but the next start will replay them");
        }
        if let Err(e) = self.file.sync_all() {
            tracing::error!(file = %self.shared.path.display(), error = %e, "final sync of the event log failed");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::domain::event::fingerprint_of;
    use crate::domain::{Event, NewGame, NewTeam, RawEvent, Scalar};

    const NO_SYNC: FileLogOptions = FileLogOptions { fsync: false };

    fn gid(s: &str) -> GameId {
        GameId::parse(s).unwrap()
    }

    fn created(game: &GameId) -> Record {
        let body = NewGame {
            home: NewTeam {
                name: "Lakers".into(),
            },
            away: NewTeam {
                name: "Celtics".into(),
            },
            status: None,
            period: Some(1),
            extra: Some(BTreeMap::from([
                ("possession".to_string(), Scalar::Str("home".into())),
                ("fouls".to_string(), Scalar::Int(3)),
                ("temp".to_string(), Scalar::Float(21.5)),
                ("ot".to_string(), Scalar::Bool(false)),
            ])),
        };
        Record::Created {
            game: game.clone(),
            state: body.clone().into_state(game.clone(), 1_000).unwrap(),
            fingerprint: fingerprint_of(&body),
            by: "tester".into(),
            at: 1_000,
        }
    }

    fn event(game: &GameId, seq: u64) -> Record {
        let raw = if seq.is_multiple_of(2) {
            RawEvent {
                event_id: format!("e{seq}"),
                kind: "score".into(),
                team: Some("home".into()),
                points: Some(2),
                ..RawEvent::default()
            }
        } else {
            RawEvent {
                event_id: format!("e{seq}"),
                kind: "set".into(),
                patch: Some(json!({"extra": {"possession": "away"}})),
                expected_seq: Some(seq - 1),
                ..RawEvent::default()
            }
        };
        let event = Event::try_from(raw).unwrap();
        Record::Event {
            game: game.clone(),
            seq,
            fingerprint: event.fingerprint(),
            event,
            by: "tester".into(),
            at: 1_000 + seq as i64,
            diff: json!({"seq": seq, "home": {"score": seq * 2}}),
        }
    }

    fn open_collect(dir: &Path) -> Result<(FileLog, Vec<Record>), StoreError> {
        let mut seen = Vec::new();
        let log = FileLog::open(dir, NO_SYNC, |r| {
            seen.push(r);
            Ok(())
        })?;
        Ok((log, seen))
    }

    fn replayed(dir: &Path) -> Vec<Record> {
        open_collect(dir).unwrap().1
    }

    /// Byte length of one record's frame.
    fn frame_len(r: &Record) -> u64 {
        encode(std::slice::from_ref(r)).unwrap().0.len() as u64
    }

    /// A log holding `created` and events 1..=n of one game; returns the records.
    async fn write_game(dir: &Path, n: u64) -> Vec<Record> {
        let g = gid("nba:lal-bos");
        let mut records = vec![created(&g)];
        records.extend((1..=n).map(|s| event(&g, s)));
        let (log, _) = open_collect(dir).unwrap();
        log.append(records.clone()).await.unwrap();
        log.close().await;
        records
    }

    fn log_path(dir: &Path) -> PathBuf {
        dir.join(LOG_FILE_NAME)
    }

    fn file_len(dir: &Path) -> u64 {
        std::fs::metadata(log_path(dir)).unwrap().len()
    }

    #[test]
    fn file_log_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<FileLog>();
    }

    #[tokio::test]
    async fn round_trip_and_reopen_replays_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (gid("nba:a"), gid("nhl:b"));
        let (log, seen) = open_collect(dir.path()).unwrap();
        assert!(seen.is_empty());
        assert!(log.health().is_ok());
        let first = vec![created(&a), created(&b), event(&a, 1)];
        let second = vec![event(&b, 1), event(&a, 2), event(&b, 2)];
        log.append(first.clone()).await.unwrap();
        log.append(Vec::new()).await.unwrap();
        log.append(second.clone()).await.unwrap();
        assert_eq!(
            log.events(&a, 0, 10).await.unwrap(),
            vec![event(&a, 1), event(&a, 2)]
        );
        log.close().await;
        drop(log);

        let all: Vec<Record> = first.into_iter().chain(second).collect();
        let bytes = std::fs::read(log_path(dir.path())).unwrap();
        assert!(bytes.starts_with(b"SCOREHUB-LOG-1\n"));
        assert_eq!(
            bytes.len() as u64,
            MAGIC_LEN + all.iter().map(frame_len).sum::<u64>()
        );
        let (log, seen) = open_collect(dir.path()).unwrap();
        assert_eq!(seen, all);
        // The index is rebuilt by replay.
        assert_eq!(
            log.events(&b, 0, 10).await.unwrap(),
            vec![event(&b, 1), event(&b, 2)]
        );
        // Appends after a reopen follow the replayed records.
        log.append(vec![event(&a, 3)]).await.unwrap();
        log.close().await;
        drop(log);
        let seen = replayed(dir.path());
        assert_eq!(seen.len(), all.len() + 1);
        assert_eq!(seen.last(), Some(&event(&a, 3)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_all_replay_in_per_task_order() {
        const TASKS: usize = 50;
        const PER_TASK: u64 = 20;
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(
            FileLog::open(dir.path(), FileLogOptions { fsync: true }, |_| Ok(())).unwrap(),
        );
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let log = Arc::clone(&log);
            tasks.push(tokio::spawn(async move {
                let g = gid(&format!("t:task{t}"));
                log.append(vec![created(&g)]).await.unwrap();
                let mut seq = 1;
                while seq <= PER_TASK {
                    // Mix single-record calls with multi-record calls.
                    let n = if seq.is_multiple_of(3) {
                        3.min(PER_TASK - seq + 1)
                    } else {
                        1
                    };
                    let batch = (seq..seq + n).map(|s| event(&g, s)).collect();
                    log.append(batch).await.unwrap();
                    seq += n;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        for t in 0..TASKS {
            let g = gid(&format!("t:task{t}"));
            let evs = log.events(&g, 0, 1000).await.unwrap();
            let want: Vec<Record> = (1..=PER_TASK).map(|s| event(&g, s)).collect();
            assert_eq!(evs, want);
        }
        log.close().await;
        drop(log);

        let seen = replayed(dir.path());
        assert_eq!(seen.len(), TASKS * (PER_TASK as usize + 1));
        let mut next: HashMap<GameId, u64> = HashMap::new();
        for r in seen {
            let n = next.entry(r.game().clone()).or_insert(0);
            match r {
                Record::Created { .. } => assert_eq!(*n, 0, "created comes first"),
                Record::Event { seq, .. } => assert_eq!(seq, *n, "events in order"),
            }
            *n += 1;
        }
        assert!(next.values().all(|n| *n == PER_TASK + 1));
    }

    /// Damages the tail with `cut`, then checks that reopening drops only the
    /// last record and that the log keeps working.
    async fn torn_tail_case(cut: impl FnOnce(&Path, u64)) {
        let dir = tempfile::tempdir().unwrap();
        let records = write_game(dir.path(), 3).await;
        let last_start = file_len(dir.path()) - frame_len(&records[3]);
        cut(&log_path(dir.path()), last_start);

        let (log, seen) = open_collect(dir.path()).unwrap();
        assert_eq!(seen, records[..3]);
        assert_eq!(file_len(dir.path()), last_start, "torn tail truncated");
        let g = gid("nba:lal-bos");
        log.append(vec![event(&g, 3), event(&g, 4)]).await.unwrap();
        assert_eq!(
            log.events(&g, 2, 10).await.unwrap(),
            vec![event(&g, 3), event(&g, 4)]
        );
        log.close().await;
        drop(log);
        let mut want = records[..3].to_vec();
        want.extend([event(&g, 3), event(&g, 4)]);
        assert_eq!(replayed(dir.path()), want);
    }

    fn truncate_to(path: &Path, len: u64) {
        OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(len)
            .unwrap();
    }

    fn flip_byte(path: &Path, at: u64) {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0x5a], at).unwrap();
    }

    #[tokio::test]
    async fn torn_tail_inside_header_is_dropped() {
        torn_tail_case(|path, last| truncate_to(path, last + 5)).await;
    }

    #[tokio::test]
    async fn torn_tail_inside_payload_is_dropped() {
        torn_tail_case(|path, last| truncate_to(path, last + HEADER_LEN as u64 + 10)).await;
    }

    #[tokio::test]
    async fn torn_tail_with_bad_checksum_at_eof_is_dropped() {
        torn_tail_case(|path, last| flip_byte(path, last + HEADER_LEN as u64 + 3)).await;
    }

    #[tokio::test]
    async fn garbage_after_the_last_record_is_dropped() {
        for garbage in [
            &b"garbage bytes from nowhere"[..],
            &[0u8; 4096][..],
            &[0xffu8; 3][..],
            // A plausible length that runs past the end of the file.
            &[0x10, 0, 0, 0, 1, 2, 3, 4, 5][..],
        ] {
            let dir = tempfile::tempdir().unwrap();
            let records = write_game(dir.path(), 2).await;
            let good = file_len(dir.path());
            let f = OpenOptions::new()
                .append(true)
                .open(log_path(dir.path()))
                .unwrap();
            f.write_all_at(garbage, good).unwrap();
            drop(f);

            let (log, seen) = open_collect(dir.path()).unwrap();
            assert_eq!(seen, records);
            assert_eq!(file_len(dir.path()), good);
            let g = gid("nba:lal-bos");
            log.append(vec![event(&g, 3)]).await.unwrap();
            log.close().await;
            drop(log);
            assert_eq!(replayed(dir.path()).last(), Some(&event(&g, 3)));
        }
    }

    #[tokio::test]
    async fn flipped_byte_in_a_middle_record_is_corrupt() {
        // Inside the payload, inside the checksum, and in the length field
        // (which makes the record run past the end of the file).
        for (within, name) in [(HEADER_LEN as u64 + 7, "payload"), (5, "crc"), (2, "len")] {
            let dir = tempfile::tempdir().unwrap();
            let records = write_game(dir.path(), 3).await;
            let bad = MAGIC_LEN + frame_len(&records[0]) + frame_len(&records[1]);
            flip_byte(&log_path(dir.path()), bad + within);
            let before = file_len(dir.path());

            let err = open_collect(dir.path()).unwrap_err();
            match &err {
                StoreError::Corrupt { file, offset, .. } => {
                    assert_eq!(*offset, bad, "{name}: {err}");
                    assert!(file.ends_with(LOG_FILE_NAME));
                }
                other => panic!("{name}: expected Corrupt, got {other:?}"),
            }
            assert!(err.to_string().contains(&format!("byte offset {bad}")));
            assert_eq!(file_len(dir.path()), before, "{name}: nothing truncated");
        }
    }

    #[tokio::test]
    async fn on_record_error_stops_open_naming_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let records = write_game(dir.path(), 2).await;
        let second = MAGIC_LEN + frame_len(&records[0]);
        let mut n = 0;
        let err = FileLog::open(dir.path(), NO_SYNC, |_| {
            n += 1;
            if n == 2 {
                Err("unknown game".into())
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        match err {
            StoreError::Corrupt { offset, reason, .. } => {
                assert_eq!(offset, second);
                assert!(reason.contains("unknown game"), "{reason}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        // The failed open released the file.
        assert_eq!(replayed(dir.path()), records);
    }

    #[test]
    fn wrong_magic_header_is_refused() {
        for content in [
            &b"SCOREHUB-LOG-9\nwhatever"[..],
            b"hello",
            b"{\"json\": true}\n",
        ] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(log_path(dir.path()), content).unwrap();
            let err = open_collect(dir.path()).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, StoreError::Corrupt { offset: 0, .. }),
                "{err:?}"
            );
            assert!(msg.contains("not a scorehub event log"), "{msg}");
            assert!(msg.contains("SCOREHUB-LOG-1"), "{msg}");
            assert_eq!(std::fs::read(log_path(dir.path())).unwrap(), content);
        }
    }

    #[tokio::test]
    async fn header_cut_short_at_creation_is_completed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(log_path(dir.path()), &MAGIC[..6]).unwrap();
        let (log, seen) = open_collect(dir.path()).unwrap();
        assert!(seen.is_empty());
        let g = gid("nba:x");
        log.append(vec![created(&g)]).await.unwrap();
        log.close().await;
        drop(log);
        assert_eq!(replayed(dir.path()), vec![created(&g)]);
    }

    #[tokio::test]
    async fn events_paginate_with_since_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (gid("nba:a"), gid("nba:b"));
        let (log, _) = open_collect(dir.path()).unwrap();
        log.append(vec![created(&a), created(&b)]).await.unwrap();
        for s in 1..=10 {
            log.append(vec![event(&a, s), event(&b, s)]).await.unwrap();
        }
        let seqs = |v: Vec<Record>| {
            v.into_iter()
                .map(|r| match r {
                    Record::Event { seq, .. } => seq,
                    Record::Created { .. } => panic!("only events are listed"),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(seqs(log.events(&a, 0, 3).await.unwrap()), [1, 2, 3]);
        assert_eq!(seqs(log.events(&a, 3, 3).await.unwrap()), [4, 5, 6]);
        assert_eq!(seqs(log.events(&a, 8, 100).await.unwrap()), [9, 10]);
        assert!(log.events(&a, 10, 5).await.unwrap().is_empty());
        assert!(log.events(&a, 0, 0).await.unwrap().is_empty());
        assert!(log.events(&gid("nba:none"), 0, 5).await.unwrap().is_empty());
        assert_eq!(log.events(&b, 4, 1).await.unwrap(), vec![event(&b, 5)]);
        // Reads still work after close.
        log.close().await;
        assert_eq!(seqs(log.events(&b, 9, 5).await.unwrap()), [10]);
    }

    #[tokio::test]
    async fn game_records_are_one_games_creation_then_events() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (gid("nba:a"), gid("nba:b"));
        let (log, _) = open_collect(dir.path()).unwrap();
        assert!(log.game_records(&a).await.unwrap().is_empty());
        log.append(vec![created(&a), event(&a, 1), created(&b)])
            .await
            .unwrap();
        for s in 1..=5 {
            log.append(vec![event(&b, s), event(&a, s + 1)])
                .await
                .unwrap();
        }
        let want_a: Vec<Record> = std::iter::once(created(&a))
            .chain((1..=6).map(|s| event(&a, s)))
            .collect();
        let want_b: Vec<Record> = std::iter::once(created(&b))
            .chain((1..=5).map(|s| event(&b, s)))
            .collect();
        assert_eq!(log.game_records(&a).await.unwrap(), want_a);
        assert_eq!(log.game_records(&b).await.unwrap(), want_b);
        assert!(log.game_records(&gid("nba:none")).await.unwrap().is_empty());
        log.close().await;
        drop(log);

        // The index (creation included) is rebuilt by replay.
        let (log, _) = open_collect(dir.path()).unwrap();
        assert_eq!(log.game_records(&a).await.unwrap(), want_a);
        log.append(vec![event(&b, 6)]).await.unwrap();
        let mut want_b = want_b;
        want_b.push(event(&b, 6));
        assert_eq!(log.game_records(&b).await.unwrap(), want_b);
    }

    /// Two games with interleaved records in the log; returns what each holds.
    async fn write_two_games(dir: &Path) -> (Vec<Record>, Vec<Record>) {
        let (a, b) = (gid("nba:a"), gid("nba:b"));
        let mut want_a = vec![created(&a)];
        let mut want_b = vec![created(&b)];
        let (log, _) = open_collect(dir).unwrap();
        log.append(vec![created(&a), created(&b)]).await.unwrap();
        for s in 1..=20 {
            log.append(vec![event(&a, s), event(&b, s)]).await.unwrap();
            want_a.push(event(&a, s));
            want_b.push(event(&b, s));
        }
        log.close().await;
        (want_a, want_b)
    }

    fn index_file(dir: &Path, game: &str) -> PathBuf {
        IndexDir::create(dir).unwrap().path_of(&gid(game))
    }

    /// An append that would break a game's sequence is refused whole and
    /// leaves nothing behind; the others in its group are written.
    #[tokio::test]
    async fn appends_out_of_sequence_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (gid("nba:a"), gid("nba:b"));
        let (log, _) = open_collect(dir.path()).unwrap();
        log.append(vec![created(&a), event(&a, 1)]).await.unwrap();
        let refused = [
            (vec![event(&a, 3)], "seq 3 does not follow seq 1"),
            (vec![event(&a, 1)], "seq 1 does not follow seq 1"),
            (
                vec![event(&a, 2), event(&a, 2)],
                "seq 2 does not follow seq 2",
            ),
            (vec![created(&b), created(&b)], "already created"),
            (vec![created(&a)], "already created"),
            (vec![event(&b, 1 << 62)], "does not follow seq 0"),
        ];
        for (records, why) in refused {
            let err = log.append(records).await.unwrap_err();
            assert!(
                matches!(&err, StoreError::Unavailable(m) if m.contains(why)),
                "{why}: {err:?}"
            );
        }
        // Concurrent appends, refused and accepted side by side.
        let (ok, bad) = tokio::join!(
            log.append(vec![event(&a, 2), created(&b)]),
            log.append(vec![event(&a, 9)]),
        );
        ok.unwrap();
        bad.unwrap_err();
        log.append(vec![event(&b, 1), event(&a, 3)]).await.unwrap();
        log.close().await;
        drop(log);
        let want = vec![
            created(&a),
            event(&a, 1),
            event(&a, 2),
            created(&b),
            event(&b, 1),
            event(&a, 3),
        ];
        assert_eq!(replayed(dir.path()), want);
    }

    /// The index places records by seq, so the log itself refuses seqs the
    /// game's actor would never hand out, whatever `on_record` accepts.
    #[test]
    fn a_gap_a_repeat_or_a_second_creation_is_corruption() {
        let g = gid("nba:a");
        let cases = [
            (
                vec![created(&g), event(&g, 1), event(&g, 3)],
                "gap or repeat",
            ),
            (
                vec![created(&g), event(&g, 1), event(&g, 1)],
                "gap or repeat",
            ),
            (
                vec![event(&g, 1), event(&g, 2), event(&g, 1 << 62)],
                "gap or repeat",
            ),
            (
                vec![created(&g), event(&g, 1), created(&g)],
                "created a second time",
            ),
        ];
        for (records, why) in cases {
            let dir = tempfile::tempdir().unwrap();
            let mut bytes = MAGIC.to_vec();
            bytes.extend(encode(&records).unwrap().0);
            std::fs::write(log_path(dir.path()), bytes).unwrap();
            let bad_at = MAGIC_LEN + records[..2].iter().map(frame_len).sum::<u64>();
            let err = open_collect(dir.path()).unwrap_err();
            assert!(
                matches!(&err, StoreError::Corrupt { offset, reason, .. } if *offset == bad_at && reason.contains(why)),
                "{err:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_missing_index_is_rebuilt_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (want_a, want_b) = write_two_games(dir.path()).await;
        let files = std::fs::read_dir(dir.path().join(INDEX_DIR_NAME))
            .unwrap()
            .count();
        assert_eq!(files, 2, "one index file per game");
        let before = std::fs::read(index_file(dir.path(), "nba:a")).unwrap();
        assert_eq!(before.len(), 16 * 22, "header and seqs 0..=20");

        // As after an upgrade from a version without it, or an operator's rm.
        std::fs::remove_dir_all(dir.path().join(INDEX_DIR_NAME)).unwrap();
        let (log, seen) = open_collect(dir.path()).unwrap();
        assert_eq!(seen.len(), 42);
        assert_eq!(
            std::fs::read(index_file(dir.path(), "nba:a")).unwrap(),
            before
        );
        assert_eq!(log.game_records(&gid("nba:a")).await.unwrap(), want_a);
        assert_eq!(log.game_records(&gid("nba:b")).await.unwrap(), want_b);
        assert_eq!(
            log.events(&gid("nba:b"), 17, 2).await.unwrap(),
            want_b[18..20]
        );
    }

    #[tokio::test]
    async fn an_index_that_does_not_match_the_log_is_repaired_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (want_a, want_b) = write_two_games(dir.path()).await;
        let (path_a, path_b) = (
            index_file(dir.path(), "nba:a"),
            index_file(dir.path(), "nba:b"),
        );
        let good_a = std::fs::read(&path_a).unwrap();
        let good_b = std::fs::read(&path_b).unwrap();
        // a: its last entries lost (as with the page cache on power failure).
        std::fs::write(&path_a, &good_a[..good_a.len() - 48]).unwrap();
        // b: entries past its last seq, left by a group that failed.
        let mut longer = good_b.clone();
        longer.extend_from_slice(&[7u8; 32]);
        std::fs::write(&path_b, &longer).unwrap();

        let (log, _) = open_collect(dir.path()).unwrap();
        assert_eq!(std::fs::read(&path_a).unwrap(), good_a, "rebuilt");
        assert_eq!(std::fs::read(&path_b).unwrap(), good_b, "cut back");
        assert_eq!(log.game_records(&gid("nba:a")).await.unwrap(), want_a);
        assert_eq!(log.game_records(&gid("nba:b")).await.unwrap(), want_b);
        // The next event of b lands after its last one.
        log.append(vec![event(&gid("nba:b"), 21)]).await.unwrap();
        let mut want_b = want_b;
        want_b.push(event(&gid("nba:b"), 21));
        assert_eq!(log.game_records(&gid("nba:b")).await.unwrap(), want_b);
    }

    #[tokio::test]
    async fn a_read_through_a_wrong_entry_has_the_index_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let (want_a, want_b) = write_two_games(dir.path()).await;
        let (log, _) = open_collect(dir.path()).unwrap();
        let (path_a, path_b) = (
            index_file(dir.path(), "nba:a"),
            index_file(dir.path(), "nba:b"),
        );
        let good_a = std::fs::read(&path_a).unwrap();
        // The entry of seq 5 zeroed; replay only checks first and last.
        let f = OpenOptions::new().write(true).open(&path_a).unwrap();
        f.write_all_at(&[0u8; 16], 16 * 6).unwrap();
        assert_eq!(log.events(&gid("nba:a"), 3, 4).await.unwrap(), want_a[4..8]);
        assert_eq!(std::fs::read(&path_a).unwrap(), good_a, "rebuilt");
        // Entries that point at the other game's records.
        std::fs::copy(&path_a, &path_b).unwrap();
        assert_eq!(log.game_records(&gid("nba:b")).await.unwrap(), want_b);
        // Writes go on into the rebuilt files.
        log.append(vec![event(&gid("nba:b"), 21)]).await.unwrap();
        assert_eq!(
            log.events(&gid("nba:b"), 20, 5).await.unwrap(),
            vec![event(&gid("nba:b"), 21)]
        );

        // Once the log is closed nothing rebuilds it: a clear error.
        log.close().await;
        std::fs::write(&path_a, b"").unwrap();
        let err = log.game_records(&gid("nba:a")).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(err.to_string().contains("index of game nba:a"), "{err}");
    }

    #[tokio::test]
    async fn game_records_detect_a_record_changed_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let records = write_game(dir.path(), 2).await;
        let (log, _) = open_collect(dir.path()).unwrap();
        let second = MAGIC_LEN + frame_len(&records[0]);
        flip_byte(&log_path(dir.path()), second + HEADER_LEN as u64 + 3);
        let err = log.game_records(&gid("nba:lal-bos")).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { offset, .. } if offset == second),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn append_after_close_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let g = gid("nba:a");
        let (log, _) = open_collect(dir.path()).unwrap();
        log.append(vec![created(&g)]).await.unwrap();
        log.close().await;
        log.close().await;
        let err = log.append(vec![event(&g, 1)]).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        drop(log);
        assert_eq!(replayed(dir.path()), vec![created(&g)]);
    }

    #[test]
    fn uncreatable_dir_is_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("a-file");
        std::fs::write(&blocker, b"x").unwrap();
        let err = open_collect(&blocker.join("data")).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
        assert!(err.to_string().contains("SCOREHUB_STORAGE__DIR"), "{err}");
    }

    #[test]
    fn second_open_of_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, _) = open_collect(dir.path()).unwrap();
        let err = open_collect(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
        assert!(err.to_string().contains("in use"), "{err}");
    }

    #[tokio::test]
    async fn oversized_record_is_refused_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let g = gid("nba:a");
        let (log, _) = open_collect(dir.path()).unwrap();
        let mut big = event(&g, 1);
        if let Record::Event { diff, .. } = &mut big {
            *diff = json!({"extra": {"blob": "x".repeat(MAX_RECORD_BYTES)}});
        }
        let err = log.append(vec![created(&g), big]).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        log.close().await;
        assert_eq!(file_len(dir.path()), MAGIC_LEN);
    }

    /// A writer whose file handle is read-only (as on a file system remounted
    /// read-only), over a fresh log in `dir`.
    fn failing_writer(dir: &Path) -> (Arc<Shared>, Writer) {
        // Not through `FileLog::open`: its writer thread, once dropped, would
        // hold the file's lock a moment longer than the test waits.
        let path = log_path(dir);
        std::fs::write(&path, MAGIC).unwrap();
        let read_only = Arc::new(File::open(&path).unwrap());
        let shared = Arc::new(Shared {
            path,
            file: Arc::clone(&read_only),
            index: IndexDir::create(dir).unwrap(),
            games: RwLock::new(HashMap::new()),
            health: Mutex::new(None),
            probe_queued: AtomicBool::new(false),
        });
        let writer = Writer {
            shared: Arc::clone(&shared),
            file: read_only,
            len: MAGIC_LEN,
            dirty_tail: false,
            failed_bytes: None,
            fsync: true,
            buf: Vec::new(),
            index: IndexWriter::new(IndexDir::create(dir).unwrap()),
        };
        (shared, writer)
    }

    /// An append request for `records`, and where its answer arrives.
    fn request(records: Vec<Record>) -> (AppendReq, oneshot::Receiver<Result<(), StoreError>>) {
        AppendReq::new(&records).unwrap()
    }

    /// A write that fails (here: the handle is read-only, as on a file system
    /// remounted read-only) is refused, leaves nothing behind, shows in health,
    /// and the writer recovers once writing works again.
    #[test]
    fn failed_write_is_refused_reported_and_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let g = gid("nba:a");
        let (shared, mut writer) = failing_writer(dir.path());
        let path = log_path(dir.path());

        let (req, mut answer) = request(vec![created(&g), event(&g, 1)]);
        writer.commit(&mut vec![req]);
        let err = answer.try_recv().unwrap().unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(shared.health.lock().unwrap().is_some());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), MAGIC_LEN);
        assert!(shared.games.read().unwrap().is_empty());

        // "Space returns": writing works again.
        writer.file = Arc::new(OpenOptions::new().write(true).open(&path).unwrap());
        let (req, mut answer) = request(vec![created(&g), event(&g, 1)]);
        writer.commit(&mut vec![req]);
        answer.try_recv().unwrap().unwrap();
        assert!(shared.health.lock().unwrap().is_none());
        let tail = Tail {
            created: true,
            last_seq: 1,
        };
        assert_eq!(shared.tail(&g), Some(tail));
        drop(writer);
        assert_eq!(replayed(dir.path()), vec![created(&g), event(&g, 1)]);
    }

    /// A failed write whose bytes could not be cut off is cut off at
    /// shutdown at the latest: its records were refused, and the next start
    /// must not replay them.
    #[test]
    fn shutdown_cuts_off_a_failed_write_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let g = gid("nba:a");
        let (_shared, mut writer) = failing_writer(dir.path());
        let path = log_path(dir.path());
        // Whole records past the last good one, as a write that failed at
        // its sync and could not be cut back leaves them.
        let (bytes, _) = encode(&[created(&g), event(&g, 1)]).unwrap();
        let file = OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut &file, &bytes).unwrap();
        writer.dirty_tail = true;
        writer.file = Arc::new(file);
        writer.shutdown();
        drop(writer);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), MAGIC_LEN);
        assert!(replayed(dir.path()).is_empty());
    }

    /// Within one group, only the requests out of sequence are refused; the
    /// ones after them that fit are written.
    #[test]
    fn a_group_refuses_only_its_requests_out_of_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let g = gid("nba:a");
        let (shared, mut writer) = failing_writer(dir.path());
        let path = log_path(dir.path());
        writer.file = Arc::new(OpenOptions::new().write(true).open(&path).unwrap());
        let (first, mut first_answer) = request(vec![created(&g), event(&g, 1)]);
        let (gap, mut gap_answer) = request(vec![event(&g, 3)]);
        let (next, mut next_answer) = request(vec![event(&g, 2)]);
        writer.commit(&mut vec![first, gap, next]);
        first_answer.try_recv().unwrap().unwrap();
        let err = gap_answer.try_recv().unwrap().unwrap_err();
        assert!(
            err.to_string().contains("seq 3 does not follow seq 1"),
            "{err}"
        );
        next_answer.try_recv().unwrap().unwrap();
        let tail = Tail {
            created: true,
            last_seq: 2,
        };
        assert_eq!(shared.tail(&g), Some(tail));
        drop(writer);
        assert_eq!(
            replayed(dir.path()),
            vec![created(&g), event(&g, 1), event(&g, 2)]
        );
    }

    /// After a failed write, a probe keeps the node unhealthy while writing
    /// still fails, clears the reason once it works, and leaves the log as it
    /// was either way.
    #[test]
    fn probe_clears_health_once_writing_works_again() {
        let dir = tempfile::tempdir().unwrap();
        let g = gid("nba:a");
        let (shared, mut writer) = failing_writer(dir.path());
        let path = log_path(dir.path());
        let (req, _answer) = request(vec![created(&g), event(&g, 1)]);
        writer.commit(&mut vec![req]);
        assert!(shared.health.lock().unwrap().is_some());

        shared.probe_queued.store(true, Ordering::Release);
        writer.probe();
        let reason = shared.health.lock().unwrap().clone();
        assert!(
            reason.as_deref().is_some_and(|r| r.contains(LOG_FILE_NAME)),
            "still unhealthy, naming the log: {reason:?}"
        );
        assert!(!shared.probe_queued.load(Ordering::Acquire));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), MAGIC_LEN);

        writer.file = Arc::new(OpenOptions::new().write(true).open(&path).unwrap());
        writer.probe();
        assert!(shared.health.lock().unwrap().is_none());
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            MAGIC_LEN,
            "the probe's bytes are cut off"
        );
        // A probe while healthy writes nothing.
        writer.file = Arc::new(File::open(&path).unwrap());
        writer.probe();
        assert!(shared.health.lock().unwrap().is_none());

        writer.file = Arc::new(OpenOptions::new().write(true).open(&path).unwrap());
        let (req, mut answer) = request(vec![created(&g), event(&g, 1)]);
        writer.commit(&mut vec![req]);
        answer.try_recv().unwrap().unwrap();
        drop(writer);
        assert_eq!(replayed(dir.path()), vec![created(&g), event(&g, 1)]);
    }
}
