//! Opening the log: read every record once, drop a torn tail, refuse a
//! damaged middle, and check (or rebuild) the per-game index.

use super::error::IndexError;
use super::*;

/// What replay found of one game: enough to check its index file.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ReplayTail {
    pub(super) created: Option<Entry>,
    pub(super) last: Option<(u64, Entry)>,
}

/// Why the header of a short file could not be written.
pub(super) enum HeaderError {
    Io(io::Error),
    Wrong(Vec<u8>),
}

/// Gives a new (or torn-at-creation) file its header, durably.
pub(super) fn start_new_file(
    file: &File,
    dir: &Path,
    path: &Path,
    len: u64,
) -> Result<(), HeaderError> {
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
pub(super) struct ReplayEnd {
    /// End of the last good record.
    pub(super) good_len: u64,
    /// Why the bytes after `good_len` were dropped, if any.
    pub(super) torn: Option<String>,
}

/// Reads every record after the header, noting each game's first and last
/// records in `tails` and feeding `on_record`.
pub(super) fn replay(
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
pub(super) fn reconcile_index(
    file: &File,
    len: u64,
    index: &IndexDir,
    tails: &HashMap<GameId, ReplayTail>,
) -> Result<(), IndexError> {
    let mut stale = HashSet::new();
    let mut first_reason = None;
    for (game, tail) in tails {
        let verdict = index
            .check(game, tail.created, tail.last)
            .map_err(|source| IndexError::Check {
                game: game.clone(),
                path: index.path_of(game),
                source,
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
pub(super) struct RecordKey {
    pub(super) game: GameId,
    /// Absent from the creation, which is seq 0.
    #[serde(default)]
    pub(super) seq: u64,
}

/// Rewrites the index files of `games` from the records in the first `len`
/// bytes of the log (blocking; reads the whole log).
pub(super) fn rebuild_index(
    file: &File,
    len: u64,
    index: &IndexDir,
    games: &HashSet<GameId>,
) -> Result<(), IndexError> {
    let mut found: HashMap<&GameId, Vec<(u64, Entry)>> =
        games.iter().map(|g| (g, Vec::new())).collect();
    let read_err = |offset: u64, e: &dyn fmt::Display| IndexError::Read {
        offset,
        reason: e.to_string(),
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
        index
            .rewrite(game, &entries)
            .map_err(|source| IndexError::Write {
                game: game.clone(),
                path: index.path_of(game),
                source,
            })?;
    }
    Ok(())
}

/// The offset of the first intact record (plausible length, within the file,
/// matching checksum) starting at or after `from`, if any.
pub(super) fn intact_record_after(
    file: &File,
    from: u64,
    file_len: u64,
) -> io::Result<Option<u64>> {
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
