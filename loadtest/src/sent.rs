//! When each event was posted, by game and `seq`, so that a fan receiving the
//! diff can measure send → receive latency in microseconds on one monotonic
//! clock (the frame's `ts` has only whole milliseconds, and is the hub's clock).
//!
//! Posters write after the hub answers with the event's `seq`; thousands of
//! fans read concurrently. Each game has a ring of slots indexed by `seq`, and
//! each slot is one `AtomicU64` holding the send time and a tag of the `seq`,
//! so a read never sees half of a write and never takes a lock. A fan that gets
//! the diff before the poster got its answer (common: the hub fans out and
//! answers at the same time) keeps the receipt and looks again later
//! ([`crate::fan`] does that).

use std::{
    sync::atomic::{AtomicU8, AtomicU64, Ordering},
    time::Instant,
};

/// Bits of a slot holding the low bits of `seq` (the tag).
const TAG_BITS: u32 = 20;

/// Mask of the tag bits.
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;

/// Largest storable send time in nanoseconds since the start (about 4.9 h;
/// a run is bounded well below that).
const MAX_NANOS: u64 = (1 << (64 - TAG_BITS)) - 2;

/// Slots over all games together (8 bytes each).
const TOTAL_SLOTS: usize = 1 << 21;

/// Fewest slots per game.
const MIN_SLOTS: usize = 64;

/// Send times of posted events, per game and `seq`.
#[derive(Debug)]
pub(crate) struct SentTimes {
    /// The zero of every time stored here.
    start: Instant,
    /// Per game, a power-of-two number of slots; `0` is an empty slot.
    rings: Box<[Box<[AtomicU64]>]>,
    /// Per game and slot, the index of the hub the event was posted to
    /// (cluster runs post to every hub, round-robin).
    nodes: Box<[Box<[AtomicU8]>]>,
}

/// When and where one event was posted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sent {
    /// [`SentTimes::now_ns`] just before the request.
    pub(crate) ns: u64,
    /// The index of the hub it was posted to, in posting order.
    pub(crate) node: u8,
}

impl SentTimes {
    /// Room for `games` games. Each game gets
    /// `max(64, 2^21 / games)` slots (a power of two, at most `2^20`): a send
    /// time stays readable until that many later events of its game were posted.
    pub(crate) fn new(games: usize) -> Self {
        let per_game = (TOTAL_SLOTS / games.max(1)).clamp(MIN_SLOTS, 1 << TAG_BITS);
        Self::with_slots(games, per_game)
    }

    /// Room for `games` games of `per_game` slots each, rounded down to a
    /// power of two so that `seq & (len - 1)` is the index.
    fn with_slots(games: usize, per_game: usize) -> Self {
        let per_game = 1 << (usize::BITS - 1 - per_game.max(1).leading_zeros());
        Self {
            start: Instant::now(),
            rings: (0..games)
                .map(|_| (0..per_game).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            nodes: (0..games)
                .map(|_| (0..per_game).map(|_| AtomicU8::new(0)).collect())
                .collect(),
        }
    }

    /// Nanoseconds since this table was made, on the monotonic clock.
    pub(crate) fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Notes that event `seq` of game `game` was sent at `sent_ns` (from
    /// [`Self::now_ns`]) to hub `node`. Unknown games and times past the
    /// limit are ignored.
    pub(crate) fn record(&self, game: usize, seq: u64, sent_ns: u64, node: u8) {
        let (Some(ring), Some(nodes)) = (self.rings.get(game), self.nodes.get(game)) else {
            return;
        };
        if sent_ns > MAX_NANOS {
            return;
        }
        let index = slot_index(seq, ring.len());
        // The node first: a reader that sees the new time sees it too.
        nodes[index].store(node, Ordering::Relaxed);
        let slot = &ring[index];
        slot.store(
            ((sent_ns + 1) << TAG_BITS) | (seq & TAG_MASK),
            Ordering::Release,
        );
    }

    /// When and where event `seq` of game `game` was sent, if it is known
    /// (and not being overwritten by a later event of that game).
    pub(crate) fn sent_at(&self, game: usize, seq: u64) -> Option<Sent> {
        let (ring, nodes) = (self.rings.get(game)?, self.nodes.get(game)?);
        let index = slot_index(seq, ring.len());
        let packed = ring[index].load(Ordering::Acquire);
        if packed == 0 || packed & TAG_MASK != seq & TAG_MASK {
            return None;
        }
        let node = nodes[index].load(Ordering::Relaxed);
        // A writer in between may have changed the node: then the slot
        // changed too, and this event's entry is gone.
        if ring[index].load(Ordering::Acquire) != packed {
            return None;
        }
        Some(Sent {
            ns: (packed >> TAG_BITS) - 1,
            node,
        })
    }
}

/// The slot of `seq` in a ring of `len` slots (a power of two).
fn slot_index(seq: u64, len: usize) -> usize {
    // The mask is below `len`, so the result fits a usize.
    usize::try_from(seq & (len as u64 - 1)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::SentTimes;

    #[test]
    fn a_recorded_send_is_found_by_game_and_seq() {
        let sent = SentTimes::new(3);
        assert_eq!(sent.sent_at(1, 7), None);
        sent.record(1, 7, 12_345, 2);
        assert_eq!(
            sent.sent_at(1, 7),
            Some(super::Sent {
                ns: 12_345,
                node: 2
            })
        );
        assert_eq!(sent.sent_at(0, 7), None, "another game");
        assert_eq!(sent.sent_at(1, 8), None, "another seq");
        sent.record(1, 0, 0, 0);
        assert_eq!(
            sent.sent_at(1, 0).map(|s| s.ns),
            Some(0),
            "time zero is a time"
        );
        sent.record(9, 1, 1, 0);
        assert_eq!(sent.sent_at(9, 1), None, "unknown games are ignored");
    }

    #[test]
    fn a_later_event_in_the_same_slot_replaces_the_earlier_one() {
        let sent = SentTimes::with_slots(1, 64);
        sent.record(0, 5, 100, 0);
        sent.record(0, 5 + 64, 200, 1);
        assert_eq!(sent.sent_at(0, 5), None, "overwritten: not mistaken");
        assert_eq!(
            sent.sent_at(0, 5 + 64).map(|s| (s.ns, s.node)),
            Some((200, 1))
        );
    }

    #[test]
    fn one_hot_game_gets_a_large_ring() {
        let sent = SentTimes::new(1);
        assert_eq!(sent.rings[0].len(), 1 << 20);
        let many = SentTimes::new(500);
        assert_eq!(many.rings[0].len(), 4096);
        assert!(sent.now_ns() < 60_000_000_000);
    }
}
