//! The log's format: the file header, record framing (length, crc32,
//! MessagePack) and encoding a run of records.

use std::path::Path;

use super::super::{Record, StoreError};
use crate::domain::GameId;

/// The bytes every log file starts with; the digit is the format version.
pub const MAGIC: &[u8] = b"SCOREHUB-LOG-1\n";
/// Length of [`MAGIC`], as a file offset.
pub(super) const MAGIC_LEN: u64 = MAGIC.len() as u64;
/// Per-record header: payload length and crc32, both `u32` little endian.
pub(super) const HEADER_LEN: usize = 8;
/// Largest payload accepted; a length above it is damage, not a record.
pub(super) const MAX_RECORD_BYTES: usize = 1 << 20;

/// A record inside an [`AppendReq`], to index as it is written.
pub(super) struct PendingRecord {
    pub(super) game: GameId,
    /// Its seq; 0 for the creation.
    pub(super) seq: u64,
    /// Offset of its header within the request's bytes.
    pub(super) rel: u64,
    pub(super) len: u32,
    pub(super) crc: u32,
}

pub(super) fn wrong_header(path: &Path, found: &[u8]) -> StoreError {
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
pub(super) fn encode(records: &[Record]) -> Result<(Vec<u8>, Vec<PendingRecord>), StoreError> {
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
pub(super) fn seq_of(record: &Record) -> u64 {
    match record {
        Record::Created { .. } => 0,
        Record::Event { seq, .. } => *seq,
    }
}

/// Payload length and crc32 from a record header.
pub(super) fn parse_header(b: &[u8]) -> (u32, u32) {
    let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let crc = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    (len, crc)
}
