//! How one deployment names its keys and channels in Redis.
//!
//! Every name starts with the deployment's prefix (`redis.prefix`, default
//! `sh`), so deployments with different prefixes share one Redis without
//! seeing each other's games or traffic. Keys live in the URL's database;
//! pub/sub ignores the database number, so channel names carry it (`sh@3:`)
//! unless it is 0, where they stay as they always were (`sh:`).
//!
//! The keys of one game share the hash tag `{<game id>}` (one cluster slot),
//! and so does its channel: its frames can be published from the commit
//! script and, on Redis Cluster, with sharded pub/sub on the same shard.

use crate::domain::{GameId, League};

/// The names of one deployment (one prefix, one database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Prefix of keys: `<prefix>`.
    keys: String,
    /// Prefix of channels: `<prefix>` or `<prefix>@<db>`.
    channels: String,
}

/// A channel a node may be subscribed to, as read back from its name (for
/// tests: the transports route by the names they subscribed).
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// Diff frames of one game.
    Game(GameId),
    /// Ids of games created in a league.
    League(League),
}

impl Names {
    /// The names under `prefix` (already validated by the config) in
    /// database `db`.
    pub fn new(prefix: &str, db: i64) -> Names {
        let channels = if db == 0 {
            prefix.to_owned()
        } else {
            format!("{prefix}@{db}")
        };
        Names {
            keys: prefix.to_owned(),
            channels,
        }
    }

    /// `<prefix>:{<id>}:<suffix>`: one of a game's keys.
    pub fn key(&self, id: &GameId, suffix: &str) -> String {
        self.key_of(id.as_str(), suffix)
    }

    /// [`Names::key`] of an id read back from the games index.
    pub fn key_of(&self, id: &str, suffix: &str) -> String {
        format!("{}:{{{id}}}:{suffix}", self.keys)
    }

    /// `<prefix>:games`: the sorted set of every game id.
    pub fn games(&self) -> String {
        format!("{}:games", self.keys)
    }

    /// `<prefix>:expiring`: the sorted set of finished games, scored by
    /// their expiry (Unix ms), that the games index still lists.
    pub fn expiring(&self) -> String {
        format!("{}:expiring", self.keys)
    }

    /// `<channels>:g:{<id>}`: the channel of a game's diff frames.
    pub fn game_channel(&self, id: &GameId) -> String {
        format!("{}:g:{{{id}}}", self.channels)
    }

    /// `<channels>:l:<league>`: the channel announcing games created in a
    /// league.
    pub fn league_channel(&self, league: &League) -> String {
        format!("{}:l:{league}", self.channels)
    }

    /// The inverse of [`Names::game_channel`] and [`Names::league_channel`];
    /// `None` for a name of another deployment or no name of ours.
    #[cfg(test)]
    pub fn parse_channel(&self, name: &[u8]) -> Option<Channel> {
        let name = std::str::from_utf8(name).ok()?;
        let rest = name
            .strip_prefix(self.channels.as_str())?
            .strip_prefix(':')?;
        if let Some(game) = rest.strip_prefix("g:{") {
            return GameId::parse(game.strip_suffix('}')?)
                .ok()
                .map(Channel::Game);
        }
        League::parse(rest.strip_prefix("l:")?)
            .ok()
            .map(Channel::League)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gid(s: &str) -> GameId {
        GameId::parse(s).unwrap()
    }

    #[test]
    fn names_round_trip_and_stay_in_their_deployment() {
        let names = Names::new("sh", 0);
        let id = gid("nba:2026-11-22-lal-bos");
        let channel = names.game_channel(&id);
        assert_eq!(channel, "sh:g:{nba:2026-11-22-lal-bos}");
        assert_eq!(
            names.parse_channel(channel.as_bytes()),
            Some(Channel::Game(id.clone()))
        );
        let league = League::parse("nba").unwrap();
        let channel = names.league_channel(&league);
        assert_eq!(channel, "sh:l:nba");
        assert_eq!(
            names.parse_channel(channel.as_bytes()),
            Some(Channel::League(league.clone()))
        );
        assert_eq!(names.key(&gid("nba:x"), "log"), "sh:{nba:x}:log");
        assert_eq!(names.key_of("nba:x", "state"), "sh:{nba:x}:state");
        assert_eq!(names.games(), "sh:games");
        assert_eq!(names.expiring(), "sh:expiring");
        for bad in [
            &b"sh:g:{nba:x"[..],
            b"xx:g:{nba:x}",
            b"sh:l:NBA",
            b"sh:g:nba:x",
            b"sh:x:nba",
            b"\xff",
        ] {
            assert_eq!(names.parse_channel(bad), None);
        }

        // Another prefix, another database: nothing of one parses in the other.
        let staging = Names::new("sh-staging", 0);
        let db3 = Names::new("sh", 3);
        assert_eq!(
            staging.key(&id, "log"),
            "sh-staging:{nba:2026-11-22-lal-bos}:log"
        );
        assert_eq!(db3.game_channel(&id), "sh@3:g:{nba:2026-11-22-lal-bos}");
        assert_eq!(
            db3.key(&id, "log"),
            names.key(&id, "log"),
            "keys are scoped by SELECT"
        );
        for (a, b) in [(&names, &staging), (&names, &db3), (&staging, &db3)] {
            for channel in [a.game_channel(&id), a.league_channel(&league)] {
                assert_eq!(b.parse_channel(channel.as_bytes()), None, "{channel}");
            }
            for channel in [b.game_channel(&id), b.league_channel(&league)] {
                assert_eq!(a.parse_channel(channel.as_bytes()), None, "{channel}");
            }
        }
    }
}
