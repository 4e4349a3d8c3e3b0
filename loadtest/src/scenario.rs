//! Scenarios: who follows which game on which node, and which game each posted
//! event goes to.
//!
//! The orchestration in `run.rs` is the same for every scenario; a scenario
//! only decides the shape of the traffic (and, for churn, that fans come and
//! go while events flow).

use clap::ValueEnum;
use serde::Serialize;

/// The shape of the traffic a run generates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Scenario {
    /// Fans spread round-robin over the games, each following `--subs-per-fan`
    /// consecutive games (and round-robin over the `--fan-url` nodes, if any);
    /// events spread evenly over all games at a constant rate.
    #[default]
    Steady,
    /// One game, every fan follows it: each event becomes one delivery per fan.
    HotGame,
    /// Many games (`--games`, 500 unless given), each fan following
    /// `--subs-per-fan` consecutive games, events spread over all games: a
    /// fan's frames of different games can share a socket write.
    ManyGames,
    /// Steady traffic while fans keep leaving and new fans connect and
    /// subscribe (with a `sub` message) at `--churn-rate` per second; every
    /// churned fan is checked over its own lifetime.
    Churn,
    /// Steady traffic across a cluster: events go to `--url`, fans sit on the
    /// `--fan-url` nodes, at least one of which must be another node, so the
    /// report shows ingest-to-fan latency through the shared Redis. With
    /// `--hub-bin`, two hubs and a private redis-server are started: events
    /// go to the first hub, fans to the second.
    TwoNodes,
    /// A Redis Cluster of 3 shards (`--replicas` each) and 3 hubs, all
    /// started by the run (`--hub-bin`): events go round-robin to every hub,
    /// fans sit on every hub; the report adds cross-node latency, Redis
    /// commands per event per shard and, with `--kill-primary-at`, the
    /// failover figures.
    Cluster,
}

/// Where one fan connects and what it follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    /// Index of the fan's node, in `--fan-url` order.
    pub(crate) node: usize,
    /// Indexes of the games it subscribes to, all distinct.
    pub(crate) games: Vec<usize>,
}

impl Scenario {
    /// The name as given to `--scenario`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::HotGame => "hot-game",
            Scenario::ManyGames => "many-games",
            Scenario::Churn => "churn",
            Scenario::TwoNodes => "two-nodes",
            Scenario::Cluster => "cluster",
        }
    }

    /// Games created when `--games` is not given.
    pub(crate) fn default_games(self) -> usize {
        match self {
            Scenario::HotGame => 1,
            Scenario::ManyGames => 500,
            Scenario::Steady | Scenario::Churn | Scenario::TwoNodes | Scenario::Cluster => 10,
        }
    }

    /// True when fans leave and join during the run.
    pub(crate) fn churns(self) -> bool {
        self == Scenario::Churn
    }

    /// True when the scenario makes sense only with fans on another node than
    /// the one events are posted to.
    pub(crate) fn needs_another_node(self) -> bool {
        self == Scenario::TwoNodes
    }

    /// Places fan number `fan` on one of `nodes` nodes, following `per_fan` of
    /// `games` games (at most `games`, all distinct).
    ///
    /// Nodes are taken round-robin (`fan % nodes`). The first game is the fan's
    /// number too, shifted by one game after every `lcm(nodes, games)` fans
    /// while nodes and games share a factor: otherwise, with say 2 nodes and 10
    /// games, node 0 would only ever follow even games, and no game would be
    /// watched from both nodes. With one node the placement is plain
    /// round-robin over the games.
    pub(crate) fn place_fan(
        self,
        fan: usize,
        nodes: usize,
        games: usize,
        per_fan: usize,
    ) -> Placement {
        // Every scenario places fans the same way; hot-game has one game.
        let (nodes, games) = (nodes.max(1), games.max(1));
        let common = gcd(nodes, games);
        let lcm = nodes / common * games;
        let first = fan + (fan / lcm) % common;
        Placement {
            node: fan % nodes,
            games: (0..per_fan.min(games))
                .map(|k| (first + k) % games)
                .collect(),
        }
    }

    /// The index of the game the `n`th posted event (counting from 0) goes to.
    /// Every scenario spreads events round-robin over its games.
    pub(crate) fn event_game(self, n: u64, games: usize) -> usize {
        let games = u64::try_from(games.max(1)).unwrap_or(u64::MAX);
        usize::try_from(n % games).unwrap_or(0)
    }
}

/// Greatest common divisor (Euclid); `gcd(a, 0) == a`.
fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::Scenario;

    #[test]
    fn steady_spreads_fans_evenly_over_distinct_games() {
        let games = 4;
        let mut followers = [0usize; 4];
        for fan in 0..40 {
            let placed = Scenario::Steady.place_fan(fan, 1, games, 2);
            assert_eq!(placed.node, 0);
            assert_eq!(placed.games.len(), 2);
            assert_ne!(placed.games[0], placed.games[1]);
            for g in placed.games {
                followers[g] += 1;
            }
        }
        assert_eq!(followers, [20, 20, 20, 20]);
    }

    #[test]
    fn one_node_places_fans_round_robin_over_games() {
        for fan in 0..50 {
            let placed = Scenario::Steady.place_fan(fan, 1, 7, 3);
            let expected: Vec<usize> = (0..3).map(|k| (fan + k) % 7).collect();
            assert_eq!(placed.games, expected, "fan {fan}");
        }
    }

    /// Every (node, game) pair is followed by the same number of fans, and
    /// every node gets the same number of fans, for these many fans.
    fn assert_even(nodes: usize, games: usize, fans: usize) {
        let mut per_pair = vec![vec![0usize; games]; nodes];
        let mut per_node = vec![0usize; nodes];
        for fan in 0..fans {
            let placed = Scenario::TwoNodes.place_fan(fan, nodes, games, 1);
            assert_eq!(placed.node, fan % nodes, "round-robin over nodes");
            per_node[placed.node] += 1;
            per_pair[placed.node][placed.games[0]] += 1;
        }
        assert!(per_node.iter().all(|&n| n == fans / nodes), "{per_node:?}");
        let each = fans / (nodes * games);
        assert!(
            per_pair.iter().flatten().all(|&n| n == each),
            "{nodes} nodes, {games} games, {fans} fans: {per_pair:?}"
        );
    }

    #[test]
    fn every_game_is_followed_from_every_node() {
        assert_even(2, 10, 20); // shared factor: shifted
        assert_even(2, 4, 40);
        assert_even(3, 6, 36);
        assert_even(2, 3, 12); // coprime: round-robin covers every pair
        assert_even(4, 1, 8);
        assert_even(3, 3, 9);
    }

    #[test]
    fn few_fans_still_cover_every_game() {
        let mut followed = [false; 10];
        for fan in 0..10 {
            followed[Scenario::TwoNodes.place_fan(fan, 2, 10, 1).games[0]] = true;
        }
        assert!(followed.iter().all(|&f| f), "{followed:?}");
    }

    #[test]
    fn steady_spreads_events_round_robin() {
        let picked: Vec<usize> = (0..6).map(|n| Scenario::Steady.event_game(n, 3)).collect();
        assert_eq!(picked, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn only_two_nodes_needs_another_node_and_only_churn_churns() {
        use clap::ValueEnum;
        for &scenario in Scenario::value_variants() {
            assert_eq!(
                scenario.needs_another_node(),
                scenario == Scenario::TwoNodes
            );
            assert_eq!(scenario.churns(), scenario == Scenario::Churn);
        }
    }

    #[test]
    fn hot_game_is_one_game_and_many_games_many() {
        assert_eq!(Scenario::HotGame.default_games(), 1);
        assert_eq!(Scenario::ManyGames.default_games(), 500);
        let placed = Scenario::HotGame.place_fan(12_345, 1, 1, 1);
        assert_eq!(placed.games, [0]);
        assert_eq!(Scenario::HotGame.event_game(99, 1), 0);
    }

    #[test]
    fn many_games_gives_every_game_the_same_followers() {
        let (games, per_fan, fans) = (500, 20, 10_000);
        let mut followers = vec![0usize; games];
        for fan in 0..fans {
            for g in Scenario::ManyGames.place_fan(fan, 1, games, per_fan).games {
                followers[g] += 1;
            }
        }
        assert!(followers.iter().all(|&n| n == fans * per_fan / games));
    }

    #[test]
    fn names_are_the_command_line_values() {
        use clap::ValueEnum;
        for scenario in Scenario::value_variants() {
            let value = scenario.to_possible_value().expect("no skipped variants");
            assert_eq!(scenario.name(), value.get_name());
        }
    }
}
