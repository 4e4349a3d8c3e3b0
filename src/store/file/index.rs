//! The event log's per-game index: where each of a game's records lies in the
//! log, kept on disk beside it.
//!
//! ## Format
//!
//! One file per game, `index/<digest>.idx`, named by the first 16 bytes of the
//! SHA-256 of the game id (ids need no escaping, and names stay short):
//!
//! ```text
//! "SCOREHUB-IDX-1\n\0"                       16-byte header
//! entry for seq 0 (the creation), seq 1, seq 2, ...
//!   u64 LE  offset of the record's header in events.log
//!   u32 LE  payload length
//!   u32 LE  crc32 of the payload (as in the record's header)
//! ```
//!
//! Seqs are gap-free from 1, so the entry of `seq` sits at a fixed position:
//! a page of the audit trail is one positional read, whatever its `since`.
//!
//! ## Why on disk
//!
//! An index in memory grows with every event ever logged, for the life of the
//! process, even for games long unloaded. On disk, memory holds only each
//! game's last seq, so it grows with games, not events.
//!
//! ## Why it can be trusted
//!
//! The log is the source of truth; the index is derived from it and never
//! synced on its own:
//! - entries are written before their group goes to the log, so the index
//!   never lacks an entry for an acknowledged record (a failed group leaves
//!   entries past the game's last seq, which nothing reads and the next group
//!   overwrites);
//! - at open, each game's first and last entries are checked against the
//!   records replay found, and a game whose index does not match (lost with
//!   the page cache on power failure, deleted, or from an older version) is
//!   rebuilt from the log;
//! - every read checks each entry against the record it points at (length,
//!   checksum, game, seq); a mismatch has the writer rebuild that game's
//!   index, then the read is tried again.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::domain::GameId;

/// Name of the index directory inside the storage directory.
pub const INDEX_DIR_NAME: &str = "index";

/// The bytes every index file starts with; the digit is the format version.
const INDEX_MAGIC: &[u8; 16] = b"SCOREHUB-IDX-1\n\0";
/// Bytes of one entry, and of the header.
const ENTRY_LEN: u64 = 16;
/// Index files the writer keeps open between groups.
const OPEN_FILES: usize = 64;

/// Where one record lies in the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Entry {
    /// Offset of the record's header.
    pub(super) offset: u64,
    /// Payload length.
    pub(super) len: u32,
    /// crc32 of the payload.
    pub(super) crc: u32,
}

impl Entry {
    fn to_bytes(self) -> [u8; ENTRY_LEN as usize] {
        let mut b = [0u8; ENTRY_LEN as usize];
        b[..8].copy_from_slice(&self.offset.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..].copy_from_slice(&self.crc.to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8]) -> Entry {
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&b[..8]);
        let mut len = [0u8; 4];
        len.copy_from_slice(&b[8..12]);
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&b[12..16]);
        Entry {
            offset: u64::from_le_bytes(offset),
            len: u32::from_le_bytes(len),
            crc: u32::from_le_bytes(crc),
        }
    }
}

/// What [`IndexDir::check`] found of an index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// It matches the log.
    Fits,
    /// It does not (why): rebuild it.
    Stale(&'static str),
}

/// An index file read whole, for `scorehub log verify` ([`IndexDir::load`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Loaded {
    /// There is no index file for the game.
    Missing,
    /// The file does not start with the index header.
    NoHeader,
    /// Its entries, from seq 0; `partial` bytes after the last whole entry.
    Entries {
        /// Entry `i` is the one of seq `i`.
        entries: Vec<Entry>,
        /// Bytes of an incomplete entry at the end (0 when none).
        partial: u64,
    },
}

/// Byte position of the entry of `seq` in an index file.
pub(super) fn position(seq: u64) -> u64 {
    ENTRY_LEN * (seq + 1)
}

/// The index directory: where each game's index file is.
#[derive(Debug, Clone)]
pub(super) struct IndexDir {
    dir: PathBuf,
}

impl IndexDir {
    /// The index directory inside `storage_dir`, created if missing.
    pub(super) fn create(storage_dir: &Path) -> io::Result<IndexDir> {
        let dir = storage_dir.join(INDEX_DIR_NAME);
        std::fs::create_dir_all(&dir)?;
        Ok(IndexDir { dir })
    }

    /// The index directory inside `storage_dir`, as it is: nothing is
    /// created (for read-only checks).
    pub(super) fn at(storage_dir: &Path) -> IndexDir {
        IndexDir {
            dir: storage_dir.join(INDEX_DIR_NAME),
        }
    }

    /// The directory itself.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// `game`'s index file read whole (blocking; opened read-only, never
    /// changed).
    pub(super) fn load(&self, game: &GameId) -> io::Result<Loaded> {
        let bytes = match std::fs::read(self.path_of(game)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Missing),
            Err(e) => return Err(e),
        };
        let Some(body) = bytes.strip_prefix(INDEX_MAGIC.as_slice()) else {
            return Ok(Loaded::NoHeader);
        };
        let chunks = body.chunks_exact(ENTRY_LEN as usize);
        let partial = chunks.remainder().len() as u64;
        Ok(Loaded::Entries {
            entries: chunks.map(Entry::from_bytes).collect(),
            partial,
        })
    }

    /// Path of `game`'s index file.
    pub(super) fn path_of(&self, game: &GameId) -> PathBuf {
        let digest = Sha256::digest(game.as_str().as_bytes());
        let mut name = String::with_capacity(36);
        for byte in &digest[..16] {
            // Writing to a String cannot fail.
            let _ = write!(name, "{byte:02x}");
        }
        name.push_str(".idx");
        self.dir.join(name)
    }

    /// The entries of `game` for seqs `from..=to` (blocking). `None` when the
    /// file is missing or too short to hold them: the index must be rebuilt.
    pub(super) fn read(&self, game: &GameId, from: u64, to: u64) -> io::Result<Option<Vec<Entry>>> {
        if to < from {
            return Ok(Some(Vec::new()));
        }
        let file = match File::open(self.path_of(game)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut buf = vec![0u8; ((to - from + 1) * ENTRY_LEN) as usize];
        match file.read_exact_at(&mut buf, position(from)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        Ok(Some(
            buf.chunks_exact(ENTRY_LEN as usize)
                .map(Entry::from_bytes)
                .collect(),
        ))
    }

    /// Whether `game`'s index file holds seqs `0..=last_seq` with `created`
    /// at 0 (when given) and `last` at `last_seq`; entries past `last_seq`
    /// (left by a group that failed) are cut off. A [`Verdict::Stale`] file
    /// must be rebuilt; it is left as it is.
    pub(super) fn check(
        &self,
        game: &GameId,
        created: Option<Entry>,
        last: Option<(u64, Entry)>,
    ) -> io::Result<Verdict> {
        let path = self.path_of(game);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Verdict::Stale("missing"));
            }
            Err(e) => return Err(e),
        };
        let last_seq = last.map_or(0, |(seq, _)| seq);
        let want_len = position(last_seq + 1);
        let len = file.metadata()?.len();
        if len < want_len {
            return Ok(Verdict::Stale("shorter than the log's records of the game"));
        }
        let mut magic = [0u8; ENTRY_LEN as usize];
        file.read_exact_at(&mut magic, 0)?;
        if &magic != INDEX_MAGIC {
            return Ok(Verdict::Stale("without its header"));
        }
        let entry_at = |seq: u64| -> io::Result<Entry> {
            let mut b = [0u8; ENTRY_LEN as usize];
            file.read_exact_at(&mut b, position(seq))?;
            Ok(Entry::from_bytes(&b))
        };
        if let Some(created) = created
            && entry_at(0)? != created
        {
            return Ok(Verdict::Stale("pointing at another creation record"));
        }
        if let Some((seq, last)) = last
            && entry_at(seq)? != last
        {
            return Ok(Verdict::Stale("pointing at another last record"));
        }
        if len > want_len {
            file.set_len(want_len)?;
        }
        Ok(Verdict::Fits)
    }

    /// Replaces `game`'s index file with `entries` (seq, entry); seqs with no
    /// entry are left zero, so reading them finds no record (blocking).
    pub(super) fn rewrite(&self, game: &GameId, entries: &[(u64, Entry)]) -> io::Result<()> {
        let last_seq = entries.iter().map(|&(seq, _)| seq).max().unwrap_or(0);
        let mut buf = vec![0u8; position(last_seq + 1) as usize];
        buf[..ENTRY_LEN as usize].copy_from_slice(INDEX_MAGIC);
        for &(seq, entry) in entries {
            let at = position(seq) as usize;
            buf[at..at + ENTRY_LEN as usize].copy_from_slice(&entry.to_bytes());
        }
        // Written aside and renamed over, so a concurrent reader sees the old
        // file or the new one, never half of one.
        let path = self.path_of(game);
        let fresh = path.with_extension("idx.new");
        std::fs::write(&fresh, &buf)?;
        std::fs::rename(&fresh, &path)
    }
}

/// The log writer's side of the index: writes entries, keeping a few files
/// open between groups.
#[derive(Debug)]
pub(super) struct IndexWriter {
    dir: IndexDir,
    open: HashMap<GameId, File>,
    buf: Vec<u8>,
}

impl IndexWriter {
    /// A writer into `dir`.
    pub(super) fn new(dir: IndexDir) -> IndexWriter {
        IndexWriter {
            dir,
            open: HashMap::new(),
            buf: Vec::new(),
        }
    }

    /// The directory written to.
    pub(super) fn dir(&self) -> &IndexDir {
        &self.dir
    }

    /// Writes the entries of `game` for consecutive seqs from `first_seq`
    /// (blocking; not synced: the log is the source of truth).
    pub(super) fn write(
        &mut self,
        game: &GameId,
        first_seq: u64,
        entries: &[Entry],
    ) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        for entry in entries {
            buf.extend_from_slice(&entry.to_bytes());
        }
        let written = self
            .file(game)
            .and_then(|file| file.write_all_at(&buf, position(first_seq)));
        self.buf = buf;
        written
    }

    /// Forgets an open file, before the index of its game is rebuilt.
    pub(super) fn forget(&mut self, game: &GameId) {
        self.open.remove(game);
    }

    /// `game`'s index file, opened (and created with its header) if needed.
    fn file(&mut self, game: &GameId) -> io::Result<&File> {
        if !self.open.contains_key(game) {
            if self.open.len() >= OPEN_FILES
                && let Some(old) = self.open.keys().next().cloned()
            {
                self.open.remove(&old);
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(self.dir.path_of(game))?;
            if file.metadata()?.len() < ENTRY_LEN {
                file.write_all_at(INDEX_MAGIC, 0)?;
            }
            self.open.insert(game.clone(), file);
        }
        self.open
            .get(game)
            .ok_or_else(|| io::Error::other("index file not open"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gid(s: &str) -> GameId {
        GameId::parse(s).unwrap()
    }

    fn entry(n: u64) -> Entry {
        Entry {
            offset: 15 + n * 100,
            len: n as u32 + 7,
            crc: (n as u32).wrapping_mul(2_654_435_761),
        }
    }

    #[test]
    fn entries_round_trip_at_their_seq() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = IndexDir::create(tmp.path()).unwrap();
        let mut w = IndexWriter::new(dir.clone());
        let g = gid("nba:a");
        w.write(&g, 0, &[entry(0), entry(1)]).unwrap();
        w.write(&g, 2, &[entry(2), entry(3), entry(4)]).unwrap();
        assert_eq!(
            dir.read(&g, 0, 4).unwrap().unwrap(),
            (0..=4).map(entry).collect::<Vec<_>>()
        );
        assert_eq!(dir.read(&g, 3, 3).unwrap().unwrap(), vec![entry(3)]);
        assert_eq!(dir.read(&g, 3, 2).unwrap().unwrap(), Vec::new());
        assert_eq!(dir.read(&g, 4, 5).unwrap(), None, "past the end");
        assert_eq!(dir.read(&gid("nba:none"), 0, 0).unwrap(), None);
        // Games get their own files.
        let other = gid("nba:b");
        w.write(&other, 0, &[entry(9)]).unwrap();
        assert_ne!(dir.path_of(&g), dir.path_of(&other));
        assert_eq!(dir.read(&other, 0, 0).unwrap().unwrap(), vec![entry(9)]);
        assert_eq!(dir.read(&g, 0, 0).unwrap().unwrap(), vec![entry(0)]);
    }

    #[test]
    fn check_accepts_a_matching_file_and_cuts_entries_past_the_last_seq() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = IndexDir::create(tmp.path()).unwrap();
        let mut w = IndexWriter::new(dir.clone());
        let g = gid("nba:a");
        w.write(&g, 0, &(0..=5).map(entry).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(
            dir.check(&g, Some(entry(0)), Some((3, entry(3)))).unwrap(),
            Verdict::Fits
        );
        assert_eq!(dir.read(&g, 4, 4).unwrap(), None, "cut after seq 3");
        assert_eq!(dir.read(&g, 0, 3).unwrap().unwrap().len(), 4);
        // A creation without events.
        assert_eq!(dir.check(&g, Some(entry(0)), None).unwrap(), Verdict::Fits);
        assert_eq!(dir.read(&g, 1, 1).unwrap(), None);
    }

    #[test]
    fn check_refuses_what_does_not_match() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = IndexDir::create(tmp.path()).unwrap();
        let mut w = IndexWriter::new(dir.clone());
        let g = gid("nba:a");
        w.write(&g, 0, &(0..=3).map(entry).collect::<Vec<_>>())
            .unwrap();
        let stale = |created, last| match dir.check(&g, created, last).unwrap() {
            Verdict::Stale(why) => why,
            Verdict::Fits => panic!("{created:?} {last:?} fits"),
        };
        assert!(stale(Some(entry(0)), Some((4, entry(4)))).contains("shorter"));
        assert!(stale(Some(entry(9)), Some((3, entry(3)))).contains("creation"));
        assert!(stale(Some(entry(0)), Some((3, entry(2)))).contains("last"));
        let missing = dir.check(&gid("nba:none"), None, Some((1, entry(1))));
        assert_eq!(missing.unwrap(), Verdict::Stale("missing"));
        std::fs::write(dir.path_of(&g), [0u8; 64]).unwrap();
        assert!(stale(None, Some((2, entry(0)))).contains("header"));
        // Nothing it refused was changed or removed.
        assert_eq!(std::fs::read(dir.path_of(&g)).unwrap(), vec![0u8; 64]);
    }

    #[test]
    fn rewrite_replaces_the_file_and_leaves_missing_seqs_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = IndexDir::create(tmp.path()).unwrap();
        let g = gid("nba:a");
        let mut w = IndexWriter::new(dir.clone());
        w.write(&g, 0, &(0..=9).map(|n| entry(n + 50)).collect::<Vec<_>>())
            .unwrap();
        w.forget(&g);
        dir.rewrite(&g, &[(0, entry(0)), (1, entry(1)), (3, entry(3))])
            .unwrap();
        let got = dir.read(&g, 0, 3).unwrap().unwrap();
        assert_eq!(got, vec![entry(0), entry(1), Entry::default(), entry(3)]);
        assert_eq!(dir.read(&g, 4, 4).unwrap(), None);
        assert_eq!(
            dir.check(&g, Some(entry(0)), Some((3, entry(3)))).unwrap(),
            Verdict::Fits
        );
    }
}
