//! A game's idempotency record: every applied `event_id`, for the game's life.
//!
//! The contract makes an `event_id` idempotent for as long as its game
//! exists, so this record grows with every applied event. It is kept
//! compact: an id is stored as a 128-bit digest (16 bytes, no separate heap
//! allocation) next to its body fingerprint and seq, 40 bytes per event
//! before the hash table's slack, instead of a boxed string of up to 64 bytes
//! plus its allocation. Two different ids share a digest with probability
//! about n²/2¹²⁹, i.e. never in practice (10⁻²⁶ for a million events).
//!
//! The digest is already uniformly random, so the table hashes it by taking
//! its first eight bytes instead of running SipHash over it again.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use sha2::{Digest, Sha256};

use super::Fingerprint;

/// The idempotency record of one applied event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// Digest of the event body.
    pub fingerprint: Fingerprint,
    /// The seq it produced.
    pub seq: u64,
}

/// 128 bits of SHA-256 of an `event_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct IdDigest([u8; 16]);

impl IdDigest {
    fn of(event_id: &str) -> IdDigest {
        let digest = Sha256::digest(event_id.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        IdDigest(out)
    }
}

/// Hashes an [`IdDigest`] by its first eight bytes (it is random already).
#[derive(Debug, Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 16]` hashes as its length, then its bytes: keep the last
        // eight-or-more-byte write's prefix.
        if bytes.len() >= 8 {
            let mut first = [0u8; 8];
            first.copy_from_slice(&bytes[..8]);
            self.0 = u64::from_le_bytes(first);
        } else {
            for b in bytes {
                self.0 = self.0.rotate_left(8) ^ u64::from(*b);
            }
        }
    }

    fn write_usize(&mut self, _len: usize) {
        // The array's length prefix carries no information.
    }
}

/// Every applied `event_id` of one game with what it produced.
#[derive(Debug, Clone, Default)]
pub struct SeenIds(HashMap<IdDigest, Seen, BuildHasherDefault<DigestHasher>>);

impl SeenIds {
    /// An empty record.
    pub fn new() -> SeenIds {
        SeenIds::default()
    }

    /// What `event_id` produced, if it was applied.
    pub fn get(&self, event_id: &str) -> Option<Seen> {
        self.0.get(&IdDigest::of(event_id)).copied()
    }

    /// Records that `event_id` was applied.
    pub fn insert(&mut self, event_id: &str, seen: Seen) {
        self.0.insert(IdDigest::of(event_id), seen);
    }

    /// Moves every record of `other` into this one.
    pub fn absorb(&mut self, other: &mut SeenIds) {
        self.0.extend(other.0.drain());
    }

    /// How many ids are recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no id is recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(seq: u64) -> Seen {
        Seen {
            fingerprint: [seq as u8; 16],
            seq,
        }
    }

    #[test]
    fn finds_what_was_inserted_and_nothing_else() {
        let mut ids = SeenIds::new();
        assert!(ids.is_empty());
        for i in 0..10_000u64 {
            ids.insert(&format!("evt-{i}"), seen(i));
        }
        assert_eq!(ids.len(), 10_000);
        for i in 0..10_000u64 {
            assert_eq!(ids.get(&format!("evt-{i}")), Some(seen(i)));
        }
        assert_eq!(ids.get("evt-10000"), None);
        assert_eq!(ids.get(""), None);
        // Ids differing only in case or a trailing byte are different ids.
        assert_eq!(ids.get("EVT-1"), None);
        assert_eq!(ids.get("evt-1 "), None);
    }

    #[test]
    fn absorb_moves_everything_and_later_inserts_win() {
        let mut a = SeenIds::new();
        a.insert("x", seen(1));
        let mut b = SeenIds::new();
        b.insert("x", seen(2));
        b.insert("y", seen(3));
        a.absorb(&mut b);
        assert!(b.is_empty());
        assert_eq!(a.get("x"), Some(seen(2)));
        assert_eq!(a.get("y"), Some(seen(3)));
    }

    #[test]
    fn an_entry_is_forty_bytes() {
        assert_eq!(
            std::mem::size_of::<(IdDigest, Seen)>(),
            40,
            "the per-event idempotency cost documented above"
        );
    }
}
