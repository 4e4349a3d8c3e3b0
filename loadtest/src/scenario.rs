//! Scenarios: who follows which game, and which game each posted event goes to.
//!
//! The orchestration in `main.rs` is the same for every scenario; a scenario
//! only decides the shape of the traffic. New shapes (one hot game, many quiet
//! games, fans churning, two nodes) become new variants here.

use clap::ValueEnum;
use serde::Serialize;

/// The shape of the traffic a run generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Scenario {
    /// Fans spread round-robin over the games, each following `--subs-per-fan`
    /// consecutive games; events spread evenly over all games at a constant rate.
    Steady,
}

impl Scenario {
    /// The indexes of the games fan number `fan` subscribes to, out of `games`
    /// games, `per_fan` of them (at most `games`, all distinct).
    pub(crate) fn fan_games(self, fan: usize, games: usize, per_fan: usize) -> Vec<usize> {
        match self {
            Scenario::Steady => (0..per_fan.min(games)).map(|k| (fan + k) % games).collect(),
        }
    }

    /// The index of the game the `n`th posted event (counting from 0) goes to.
    pub(crate) fn event_game(self, n: u64, games: usize) -> usize {
        match self {
            Scenario::Steady => {
                let games = u64::try_from(games.max(1)).unwrap_or(u64::MAX);
                usize::try_from(n % games).unwrap_or(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Scenario;

    #[test]
    fn steady_spreads_fans_evenly_over_distinct_games() {
        let games = 4;
        let mut followers = [0usize; 4];
        for fan in 0..40 {
            let subs = Scenario::Steady.fan_games(fan, games, 2);
            assert_eq!(subs.len(), 2);
            assert_ne!(subs[0], subs[1]);
            for g in subs {
                followers[g] += 1;
            }
        }
        assert_eq!(followers, [20, 20, 20, 20]);
    }

    #[test]
    fn steady_spreads_events_round_robin() {
        let picked: Vec<usize> = (0..6).map(|n| Scenario::Steady.event_game(n, 3)).collect();
        assert_eq!(picked, [0, 1, 2, 0, 1, 2]);
    }
}
