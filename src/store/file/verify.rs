//! Checking the log and its index without changing either: what
//! `scorehub log verify` and `scorehub games list` read.
//!
//! [`scan`] walks the log with the framing of `format` (length, crc32,
//! MessagePack), classifies damage the way opening does (`replay`: a torn
//! tail is the last bytes only; damage followed by an intact record is
//! corruption) but, instead of stopping at the first problem, skips to the
//! next intact record and goes on, so one run reports every damaged place
//! with its byte offset. Then it compares each game's index file (`index`)
//! entry by entry with where the records really are.
//!
//! Read-only: files are opened for reading, nothing is created, truncated or
//! rebuilt, and no lock is held (the log's lock is only tried, and released
//! at once, to tell whether a hub has it open). A hub appending meanwhile
//! is not disturbed, but the scan stops at the length the log had when it
//! began, and the group being written then may show as a torn tail.

use std::fs::TryLockError;

use super::index::{Loaded, position};
use super::*;

/// What is wrong, and so what the hub does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The last bytes of the log are not a whole record: a crash mid-write
    /// (or a write in progress). They were never acknowledged; the hub
    /// drops them at its next start.
    TornTail,
    /// A record that is damaged (impossible length, checksum mismatch, not
    /// decodable) with intact records after it, or a log without its
    /// header: the hub refuses to start on it.
    Damaged,
    /// Intact records that contradict each other (a second creation, a gap
    /// or repeat in a game's seqs, an event before its game's creation, a
    /// state that is not a valid game): the hub refuses to start on it.
    Inconsistent,
    /// The index disagrees with the log. The log is the source of truth:
    /// the hub rebuilds a game's index at its next start (when its first or
    /// last entry is wrong) or when a read finds an entry wrong.
    Index,
}

impl ProblemKind {
    /// A short name for reports: `torn tail`, `damaged`, `inconsistent`, `index`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::TornTail => "torn tail",
            ProblemKind::Damaged => "damaged",
            ProblemKind::Inconsistent => "inconsistent",
            ProblemKind::Index => "index",
        }
    }
}

/// One problem a [`scan`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// The file it is in: the log, or a game's index file.
    pub file: PathBuf,
    /// Byte offset in [`Problem::file`] where it starts, when it has one.
    pub offset: Option<u64>,
    /// The game it concerns, when known.
    pub game: Option<GameId>,
    /// What is wrong, as a sentence.
    pub detail: String,
}

/// What to check besides the log itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanOptions {
    /// Compare every game's index file with the log (reads each whole).
    pub index: bool,
}

/// What a [`scan`] found.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// The log file.
    pub path: PathBuf,
    /// Bytes of the log scanned: its length when the scan began.
    pub bytes: u64,
    /// Intact records read (decoded, checksum matching).
    pub records: u64,
    /// Games with at least one intact record.
    pub games: usize,
    /// Index files compared with the log.
    pub index_files: usize,
    /// Every problem, in the order found (the log's, then the index's).
    pub problems: Vec<Problem>,
    /// Things worth knowing that are not problems (a leftover compaction,
    /// index files of no game).
    pub notes: Vec<String>,
    /// Whether a process (a running hub) held the log's lock when the scan
    /// began: a torn tail may then be a write in progress.
    pub in_use: bool,
}

/// Why a [`scan`] could not read the log at all.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The log file cannot be opened (missing directory or file, permissions).
    #[error(
        "cannot open the event log {}: {source} (point storage.dir / SCOREHUB_STORAGE__DIR, or --dir, at the hub's storage directory)",
        path.display()
    )]
    Open {
        /// The log file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: io::Error,
    },
    /// Reading failed part-way (an IO error, not damage).
    #[error("cannot read {} at byte {offset}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// The IO error.
        #[source]
        source: io::Error,
    },
}

/// What the scan knows of one game.
#[derive(Debug, Default)]
struct GameScan {
    created: bool,
    last_seq: u64,
    /// Where each of its records is, by seq (when checking the index).
    entries: Vec<Entry>,
    /// A problem was found in its records: they are no longer handed on,
    /// nor is its index compared.
    broken: bool,
}

/// Reads `<dir>/events.log` from start to end without changing anything,
/// handing each intact, consistent record to `on_record` with its byte
/// offset, in log order (blocking; see the module docs).
///
/// Damage is reported in the answer, not as an error: the answer is an
/// error only when the log cannot be opened or read.
pub fn scan(
    dir: &Path,
    opts: ScanOptions,
    mut on_record: impl FnMut(u64, Record),
) -> Result<Scan, ScanError> {
    let path = dir.join(LOG_FILE_NAME);
    let file = File::open(&path).map_err(|source| ScanError::Open {
        path: path.clone(),
        source,
    })?;
    let read_err = |offset: u64, source: io::Error| ScanError::Read {
        path: path.clone(),
        offset,
        source,
    };
    let file_len = file.metadata().map_err(|e| read_err(0, e))?.len();
    let mut out = Scan {
        path: path.clone(),
        bytes: file_len,
        in_use: log_in_use(&file),
        ..Scan::default()
    };
    let compact = dir.join(COMPACT_FILE_NAME);
    if compact.exists() {
        out.notes.push(format!(
            "{} is an unfinished compaction left by a crash; the hub removes it at its next start (the log itself is the one from before)",
            compact.display()
        ));
    }
    let problem = |kind, offset: u64, game: Option<&GameId>, detail: String| Problem {
        kind,
        file: path.clone(),
        offset: Some(offset),
        game: game.cloned(),
        detail,
    };

    let head_len = file_len.min(MAGIC_LEN) as usize;
    let mut head = vec![0u8; head_len];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| read_err(0, e))?;
    if head != MAGIC[..head_len] {
        out.problems.push(problem(
            ProblemKind::Damaged,
            0,
            None,
            format!(
                "it does not start with the header {:?} (found {:?}): not a scorehub event log, or one written by an incompatible version",
                String::from_utf8_lossy(MAGIC),
                String::from_utf8_lossy(&head),
            ),
        ));
        return Ok(out);
    }
    if file_len < MAGIC_LEN {
        out.notes.push(format!(
            "{} holds {file_len} bytes of its header and no record (cut short while being created; the hub completes it at its next start)",
            path.display()
        ));
        return Ok(out);
    }

    let mut games: HashMap<GameId, GameScan> = HashMap::new();
    let mut reader = BufReader::with_capacity(256 << 10, &file);
    reader
        .seek(SeekFrom::Start(MAGIC_LEN))
        .map_err(|e| read_err(MAGIC_LEN, e))?;
    let mut pos = MAGIC_LEN;
    let mut header = [0u8; HEADER_LEN];
    let mut payload = Vec::new();
    // Skips to the next intact record after the damaged one at `pos`, or
    // reports the rest of the file as one problem.
    let resync = |pos: u64, why: String, tail_if_none: bool, out: &mut Scan| {
        let next = intact_record_after(&file, pos + 1, file_len).map_err(|e| read_err(pos, e))?;
        match next {
            Some(next) => out.problems.push(problem(
                ProblemKind::Damaged,
                pos,
                None,
                format!(
                    "{why}; skipped {} bytes to the next intact record, at byte {next}",
                    next - pos
                ),
            )),
            None => out.problems.push(problem(
                if tail_if_none {
                    ProblemKind::TornTail
                } else {
                    ProblemKind::Damaged
                },
                pos,
                None,
                format!(
                    "{why}; nothing intact in the last {} bytes{}",
                    file_len - pos,
                    if tail_if_none {
                        " (the hub drops them at its next start: a crash mid-write leaves such a tail, never acknowledged)"
                    } else {
                        ""
                    }
                ),
            )),
        }
        Ok::<_, ScanError>(next)
    };
    while pos < file_len {
        if file_len - pos < HEADER_LEN as u64 {
            out.problems.push(problem(
                ProblemKind::TornTail,
                pos,
                None,
                format!(
                    "incomplete record header ({} bytes) at the end (the hub drops it at its next start: a crash mid-write leaves such a tail, never acknowledged)",
                    file_len - pos
                ),
            ));
            break;
        }
        reader
            .read_exact(&mut header)
            .map_err(|e| read_err(pos, e))?;
        let (len, crc) = parse_header(&header);
        let end = pos + HEADER_LEN as u64 + u64::from(len);
        if len == 0 || len as usize > MAX_RECORD_BYTES || end > file_len {
            let why = if end > file_len && len as usize <= MAX_RECORD_BYTES && len != 0 {
                format!("the record ({len} bytes) extends past the end of the file")
            } else {
                format!("invalid record length {len}")
            };
            match resync(pos, why, true, &mut out)? {
                Some(next) => {
                    reader
                        .seek(SeekFrom::Start(next))
                        .map_err(|e| read_err(next, e))?;
                    pos = next;
                    continue;
                }
                None => break,
            }
        }
        payload.resize(len as usize, 0);
        reader
            .read_exact(&mut payload)
            .map_err(|e| read_err(pos, e))?;
        if crc32fast::hash(&payload) != crc {
            let why = "checksum mismatch (the record changed on disk since it was written)";
            if end == file_len {
                out.problems.push(problem(
                    ProblemKind::TornTail,
                    pos,
                    None,
                    format!("{why} in the last record (the hub drops it at its next start: a crash mid-write leaves such a tail, never acknowledged)"),
                ));
                break;
            }
            match resync(pos, why.to_owned(), false, &mut out)? {
                Some(next) => {
                    reader
                        .seek(SeekFrom::Start(next))
                        .map_err(|e| read_err(next, e))?;
                    pos = next;
                    continue;
                }
                None => break,
            }
        }
        let record: Record = match rmp_serde::from_slice(&payload) {
            Ok(r) => r,
            Err(e) => {
                out.problems.push(problem(
                    ProblemKind::Damaged,
                    pos,
                    None,
                    format!("the record's checksum matches but it cannot be decoded: {e}"),
                ));
                pos = end;
                continue;
            }
        };
        out.records += 1;
        let game = match games.get_mut(record.game()) {
            Some(g) => g,
            None => games.entry(record.game().clone()).or_default(),
        };
        let seq = seq_of(&record);
        let contradiction = match seq {
            0 if !game.created && game.last_seq == 0 => {
                game.created = true;
                None
            }
            0 => Some(format!("game {} is created a second time", record.game())),
            seq if seq == game.last_seq + 1 && !game.created => Some(format!(
                "an event of game {} (seq {seq}) comes before the game is created",
                record.game()
            )),
            seq if seq == game.last_seq + 1 => None,
            seq => Some(format!(
                "game {}: event seq {seq} follows seq {} (a gap or a repeat)",
                record.game(),
                game.last_seq
            )),
        };
        if seq > 0 {
            game.last_seq = seq;
        }
        if let Some(detail) = contradiction {
            if !game.broken {
                out.problems.push(problem(
                    ProblemKind::Inconsistent,
                    pos,
                    Some(record.game()),
                    format!("{detail}; its later records are not checked"),
                ));
            }
            game.broken = true;
        }
        if !game.broken {
            if opts.index {
                game.entries.push(Entry {
                    offset: pos,
                    len,
                    crc,
                });
            }
            on_record(pos, record);
        }
        pos = end;
    }
    out.games = games.len();
    if opts.index {
        check_index(dir, &games, &mut out)?;
    }
    Ok(out)
}

/// Whether another process holds the lock of `file`, an open event log (a
/// hub has it open). The lock is only tried: taken shared and released at
/// once.
pub fn log_in_use(file: &File) -> bool {
    match file.try_lock_shared() {
        Ok(()) => {
            // Released when the file closes anyway.
            let _ = file.unlock();
            false
        }
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(_)) => false,
    }
}

/// Most index mismatches reported per game (the rest are counted).
const MISMATCHES_PER_GAME: usize = 3;

/// Compares every intact game's index file with where its records are.
fn check_index(
    dir: &Path,
    games: &HashMap<GameId, GameScan>,
    out: &mut Scan,
) -> Result<(), ScanError> {
    let index = IndexDir::at(dir);
    let index_problem =
        |file: PathBuf, offset: Option<u64>, game: &GameId, detail: String| Problem {
            kind: ProblemKind::Index,
            file,
            offset,
            game: Some(game.clone()),
            detail,
        };
    if !index.dir().is_dir() {
        if !games.is_empty() {
            out.problems.push(Problem {
                kind: ProblemKind::Index,
                file: index.dir().to_path_buf(),
                offset: None,
                game: None,
                detail: "the index directory is missing; the hub rebuilds it from the log at its next start".into(),
            });
        }
        return Ok(());
    }
    let mut ids: Vec<&GameId> = games
        .iter()
        .filter(|(_, g)| !g.broken && g.created)
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    for id in ids {
        let Some(game) = games.get(id) else { continue };
        let file = index.path_of(id);
        let loaded = index.load(id).map_err(|source| ScanError::Read {
            path: file.clone(),
            offset: 0,
            source,
        })?;
        out.index_files += 1;
        let entries = match loaded {
            Loaded::Missing => {
                out.problems.push(index_problem(
                    file,
                    None,
                    id,
                    format!("game {id} has no index file"),
                ));
                continue;
            }
            Loaded::NoHeader => {
                out.problems.push(index_problem(
                    file,
                    Some(0),
                    id,
                    format!("the index file of game {id} does not start with the index header"),
                ));
                continue;
            }
            Loaded::Entries { entries, .. } => entries,
        };
        let mut wrong = game
            .entries
            .iter()
            .zip(&entries)
            .enumerate()
            .filter(|(_, (want, got))| want != got);
        let mut reported = 0;
        for (seq, (want, got)) in wrong.by_ref().take(MISMATCHES_PER_GAME) {
            reported += 1;
            out.problems.push(index_problem(
                file.clone(),
                Some(position(seq as u64)),
                id,
                format!(
                    "game {id} seq {seq}: the index points at byte {} ({} bytes, crc {:08x}), but the record is at byte {} ({} bytes, crc {:08x})",
                    got.offset, got.len, got.crc, want.offset, want.len, want.crc
                ),
            ));
        }
        let more = wrong.count();
        if more > 0 {
            out.problems.push(index_problem(
                file.clone(),
                None,
                id,
                format!("game {id}: {more} more index entries after these {reported} are wrong"),
            ));
        }
        if entries.len() < game.entries.len() {
            out.problems.push(index_problem(
                file.clone(),
                Some(position(entries.len() as u64)),
                id,
                format!(
                    "the index of game {id} ends at seq {}, but the log holds seqs up to {}",
                    entries.len() as i64 - 1,
                    game.entries.len() - 1
                ),
            ));
        }
    }
    note_stray_index_files(&index, games, out);
    Ok(())
}

/// Notes index files that belong to no game of the log, and rewrites that
/// never finished: harmless (never read), but worth knowing.
fn note_stray_index_files(index: &IndexDir, games: &HashMap<GameId, GameScan>, out: &mut Scan) {
    let Ok(listing) = std::fs::read_dir(index.dir()) else {
        return;
    };
    let known: HashSet<PathBuf> = games.keys().map(|g| index.path_of(g)).collect();
    let (mut stray, mut unfinished) = (0usize, 0usize);
    for entry in listing.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".idx.new") {
            unfinished += 1;
        } else if name.ends_with(".idx") && !known.contains(&path) {
            stray += 1;
        }
    }
    if stray > 0 {
        out.notes.push(format!(
            "{stray} index files in {} belong to no game of the log (left by a compaction a crash interrupted, or by games the log lost); they are never read",
            index.dir().display()
        ));
    }
    if unfinished > 0 {
        out.notes.push(format!(
            "{unfinished} unfinished index rewrites (*.idx.new) in {}; they are never read",
            index.dir().display()
        ));
    }
}
