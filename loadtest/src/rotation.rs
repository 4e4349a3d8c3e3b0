//! Games with a bounded life (`--game-events N`): each of the `--games` slots
//! gets at most N events per game; the Nth (a `status` `final` event) retires
//! the game and the slot's next event goes to a new game, created first.
//! Without the flag a slot keeps its one game for the whole run.
//!
//! Every game a run may use is named up front ([`game_ids`]), generation
//! after generation, so that the rest of the run still refers to a game by
//! its index: game `generation × slots + slot`. A game is created (`PUT`) by
//! the first poster that needs it ([`Rotation::ensure`]); fans placed later
//! follow their slots' current games ([`Rotation::current_game`]), and the
//! churn scenario's reference fan of a slot follows each of its games in
//! turn ([`Rotation::watch`]), its new game before that game's first event
//! when it can.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Result;
use tokio::sync::{OnceCell, watch};

use crate::api::Api;

/// Longest wait, after creating a slot's next game, for the slot's reference
/// fan to have its snapshot before the game's first event is posted. Past it
/// the event is posted anyway: churned fans' checkpoints from before the
/// reference's snapshot then count as unverifiable, never as wrong.
const REFERENCE_WAIT: Duration = Duration::from_secs(2);

/// The id of `slot`'s (from 0) game of `generation` (from 0): `<league>:gS`
/// without rotation, `<league>:gS-G` with it (S from 1).
pub(crate) fn game_id(league: &str, slot: usize, generation: usize, rotating: bool) -> String {
    if rotating {
        format!("{league}:g{}-{generation}", slot + 1)
    } else {
        format!("{league}:g{}", slot + 1)
    }
}

/// Every game id a run may use: `generations` generations of `slots` games,
/// generation after generation (index `generation × slots + slot`).
pub(crate) fn game_ids(
    league: &str,
    slots: usize,
    generations: usize,
    rotating: bool,
) -> Vec<String> {
    (0..generations)
        .flat_map(|generation| {
            (0..slots).map(move |slot| game_id(league, slot, generation, rotating))
        })
        .collect()
}

/// How many generations of games a run needs when at most `max_events` are
/// posted over `slots` slots round-robin, `events_per_game` per game (1
/// without a limit).
pub(crate) fn generations(events_per_game: Option<u64>, max_events: u64, slots: usize) -> u64 {
    let Some(per_game) = events_per_game.filter(|&n| n > 0) else {
        return 1;
    };
    let slots = u64::try_from(slots.max(1)).unwrap_or(u64::MAX);
    max_events.div_ceil(slots).div_ceil(per_game).max(1)
}

/// Where the `turn`th event (from 0) of a slot goes: the generation of its
/// game and whether it is that game's last event.
pub(crate) fn event_place(turn: u64, events_per_game: Option<u64>) -> (u64, bool) {
    match events_per_game.filter(|&n| n > 0) {
        Some(per_game) => (turn / per_game, turn % per_game == per_game - 1),
        None => (0, false),
    }
}

/// The games of a run by slot and generation: which exist, which is current.
#[derive(Debug)]
pub(crate) struct Rotation {
    /// Every game id, generation-major.
    ids: Arc<[String]>,
    /// Slots (`--games`).
    slots: usize,
    /// `--game-events`.
    events_per_game: Option<u64>,
    /// Per game: set once it has been created.
    created: Box<[OnceCell<()>]>,
    /// Per slot: the generation of its current game.
    current: Box<[watch::Sender<usize>]>,
    /// Per slot: the newest generation its reference fan has a snapshot of.
    referenced: Box<[watch::Sender<usize>]>,
    /// Wait for the reference fan's snapshot before a new game's first event.
    wait_for_references: bool,
    /// Games created.
    games_created: AtomicU64,
    /// Games whose last event was posted.
    games_retired: AtomicU64,
}

impl Rotation {
    /// The games `ids` (from [`game_ids`]) in `slots` slots, none created yet.
    pub(crate) fn new(
        ids: Arc<[String]>,
        slots: usize,
        events_per_game: Option<u64>,
        wait_for_references: bool,
    ) -> Self {
        let slots = slots.max(1);
        let per_slot = |_| watch::Sender::new(0);
        Self {
            created: ids.iter().map(|_| OnceCell::new()).collect(),
            current: (0..slots).map(per_slot).collect(),
            referenced: (0..slots).map(per_slot).collect(),
            ids,
            slots,
            events_per_game,
            wait_for_references,
            games_created: AtomicU64::new(0),
            games_retired: AtomicU64::new(0),
        }
    }

    /// The number of slots.
    pub(crate) fn slots(&self) -> usize {
        self.slots
    }

    /// Games per slot that may exist.
    pub(crate) fn generations(&self) -> usize {
        (self.ids.len() / self.slots).max(1)
    }

    /// True when games have a bounded life.
    pub(crate) fn rotates(&self) -> bool {
        self.events_per_game.is_some()
    }

    /// `--game-events`.
    pub(crate) fn events_per_game(&self) -> Option<u64> {
        self.events_per_game
    }

    /// The index of `slot`'s game of `generation`.
    pub(crate) fn index(&self, slot: usize, generation: usize) -> usize {
        generation * self.slots + slot
    }

    /// The slot and generation of game `game`.
    pub(crate) fn slot_generation(&self, game: usize) -> (usize, usize) {
        (game % self.slots, game / self.slots)
    }

    /// The index of `slot`'s current game.
    pub(crate) fn current_game(&self, slot: usize) -> usize {
        let generation = self.current.get(slot).map_or(0, |g| *g.borrow());
        self.index(slot, generation)
    }

    /// Follows the generation of `slot`'s current game.
    pub(crate) fn watch(&self, slot: usize) -> Option<watch::Receiver<usize>> {
        self.current.get(slot).map(watch::Sender::subscribe)
    }

    /// True once game `game` has been created.
    pub(crate) fn is_created(&self, game: usize) -> bool {
        self.created.get(game).is_some_and(OnceCell::initialized)
    }

    /// Makes sure `slot`'s game of `generation`, and every earlier one, has
    /// been created, creating them in order; returns its index. Several
    /// posters asking at once create each game once.
    pub(crate) async fn ensure(&self, api: &Api, slot: usize, generation: usize) -> Result<usize> {
        let game = self.index(slot, generation);
        if self.is_created(game) {
            return Ok(game);
        }
        for earlier in 0..=generation {
            let index = self.index(slot, earlier);
            let cell = self
                .created
                .get(index)
                .ok_or_else(|| anyhow::anyhow!("game {index} is beyond the run's games"))?;
            cell.get_or_try_init(|| self.create(api, slot, earlier))
                .await?;
        }
        Ok(game)
    }

    /// Creates `slot`'s game of `generation`, makes it the slot's current
    /// game, and waits (bounded) for the slot's reference fan to follow it.
    async fn create(&self, api: &Api, slot: usize, generation: usize) -> Result<()> {
        let game = self.index(slot, generation);
        api.create_game(&self.ids[game]).await?;
        self.games_created.fetch_add(1, Ordering::Relaxed);
        if let Some(current) = self.current.get(slot) {
            current.send_if_modified(|g| raise(g, generation));
        }
        if self.wait_for_references
            && generation > 0
            && let Some(referenced) = self.referenced.get(slot)
        {
            let mut seen = referenced.subscribe();
            // Past the bound the game starts anyway (see REFERENCE_WAIT).
            let _ = tokio::time::timeout(REFERENCE_WAIT, seen.wait_for(|&g| g >= generation)).await;
        }
        Ok(())
    }

    /// Notes that the slot's reference fan has a snapshot of game `game`.
    pub(crate) fn reference_saw(&self, game: usize) {
        let (slot, generation) = self.slot_generation(game);
        if let Some(referenced) = self.referenced.get(slot) {
            referenced.send_if_modified(|g| raise(g, generation));
        }
    }

    /// Notes that the last event of a game was posted.
    pub(crate) fn retired(&self) {
        self.games_retired.fetch_add(1, Ordering::Relaxed);
    }

    /// Games created so far.
    pub(crate) fn games_created(&self) -> u64 {
        self.games_created.load(Ordering::Relaxed)
    }

    /// Games retired so far.
    pub(crate) fn games_retired(&self) -> u64 {
        self.games_retired.load(Ordering::Relaxed)
    }
}

/// Raises `value` to `to`; true when it changed.
fn raise(value: &mut usize, to: usize) -> bool {
    if to > *value {
        *value = to;
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Rotation, event_place, game_id, game_ids, generations};

    #[test]
    fn ids_name_slot_and_generation() {
        assert_eq!(game_id("lt", 0, 0, false), "lt:g1");
        assert_eq!(game_id("lt", 19, 3, true), "lt:g20-3");
        assert_eq!(game_ids("lt", 2, 1, false), ["lt:g1", "lt:g2"]);
        assert_eq!(
            game_ids("lt", 2, 3, true),
            [
                "lt:g1-0", "lt:g2-0", "lt:g1-1", "lt:g2-1", "lt:g1-2", "lt:g2-2"
            ]
        );
    }

    #[test]
    fn an_index_is_generation_major() {
        let ids: Arc<[String]> = game_ids("lt", 3, 4, true).into();
        let rotation = Rotation::new(Arc::clone(&ids), 3, Some(10), false);
        assert_eq!(rotation.generations(), 4);
        for slot in 0..3 {
            for generation in 0..4 {
                let game = rotation.index(slot, generation);
                assert_eq!(rotation.slot_generation(game), (slot, generation));
                assert_eq!(ids[game], game_id("lt", slot, generation, true));
            }
        }
        assert_eq!(rotation.current_game(2), 2, "generation 0 at first");
        assert!(!rotation.is_created(2));
    }

    #[test]
    fn every_nth_event_of_a_slot_ends_its_game() {
        let places: Vec<(u64, bool)> = (0..7).map(|turn| event_place(turn, Some(3))).collect();
        assert_eq!(
            places,
            [
                (0, false),
                (0, false),
                (0, true),
                (1, false),
                (1, false),
                (1, true),
                (2, false)
            ]
        );
        assert_eq!(event_place(1_000_000, None), (0, false), "no limit");
    }

    #[test]
    fn generations_cover_every_event() {
        assert_eq!(generations(None, 1_000_000, 20), 1);
        // 120,400 events over 20 slots: 6020 per slot, 1000 per game.
        assert_eq!(generations(Some(1000), 120_400, 20), 7);
        assert_eq!(generations(Some(20), 60, 3), 1);
        assert_eq!(generations(Some(20), 61, 3), 2);
        assert_eq!(generations(Some(5), 0, 3), 1);
        for events in 0..200u64 {
            let needed = generations(Some(7), events, 4);
            for n in 0..events {
                let (generation, _) = event_place(n / 4, Some(7));
                assert!(generation < needed, "{events} events: event {n}");
            }
        }
    }

    #[tokio::test]
    async fn the_current_game_follows_the_newest_generation() {
        let ids: Arc<[String]> = game_ids("lt", 2, 3, true).into();
        let rotation = Rotation::new(ids, 2, Some(10), false);
        let mut watch = rotation.watch(1).expect("slot 1");
        rotation.current[1].send_if_modified(|g| super::raise(g, 2));
        assert!(watch.has_changed().expect("open"));
        assert_eq!(*watch.borrow_and_update(), 2);
        assert_eq!(rotation.current_game(1), 5);
        rotation.current[1].send_if_modified(|g| super::raise(g, 1));
        assert!(!watch.has_changed().expect("open"), "never backwards");
        rotation.reference_saw(5);
        assert_eq!(*rotation.referenced[1].borrow(), 2);
    }
}
