//! Reading a game's records back with positional reads, through the index.

use super::*;

/// Why a read of a game's records failed.
pub(super) enum ReadError {
    /// The log could not be read, or a record in it is damaged.
    Store(StoreError),
    /// The index does not match the log (why): rebuild it and read again.
    Stale(String),
}

impl Shared {
    /// What the log holds of `game`, if anything.
    pub(super) fn tail(&self, game: &GameId) -> Option<Tail> {
        self.games
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(game)
            .copied()
    }

    /// Reads the records of `game` for seqs `from..=to` through its index,
    /// checking each entry against the record it points at (blocking).
    pub(super) fn read_seqs(
        &self,
        game: &GameId,
        from: u64,
        to: u64,
    ) -> Result<Vec<Record>, ReadError> {
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

    pub(super) fn set_health(&self, state: Option<String>) {
        *self.health.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }
}
