//! Where an SSE fan is in each game it follows: the event id of the stream.
//!
//! `Last-Event-ID` is only the id of the last event the browser saw, so every
//! event of a game (snapshot or diff) carries the position of **every**
//! followed game, not just its own: `nba:a:17,nhl:b:4`, sorted by game id.
//! A game id contains `:` itself, so each pair splits at its **last** `:`.
//! Errors and keep-alives carry no id (an event without one leaves the
//! browser's last id as it was).
//!
//! The id grows with the games followed (about the id's length plus the
//! digits of its seq per game), and is rebuilt for every event: fine for a
//! fallback transport, and bounded by `ws.max_subscriptions`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::domain::GameId;

/// Game → the seq of the last frame of it the fan has got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Positions(BTreeMap<GameId, u64>);

/// Why a `Last-Event-ID` is not a list of `game:seq` pairs (shown to the client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadId {
    /// An empty item between commas.
    #[error(
        "Last-Event-ID has an empty item at position {0}; send `game:seq` pairs separated by commas, e.g. `nba:a:17,nhl:b:4`"
    )]
    Empty(usize),
    /// An item without a `:` before its seq.
    #[error(
        "Last-Event-ID item {0:?} has no `:seq` at its end; send `game:seq` pairs such as `nba:a:17`"
    )]
    NoSeq(String),
    /// The part after the last `:` is not a seq.
    #[error(
        "Last-Event-ID item {0:?} does not end in a seq (a whole number after the last `:`), e.g. `nba:a:17`"
    )]
    BadSeq(String),
    /// The part before the last `:` is not a game id.
    #[error("Last-Event-ID item {item:?} names no valid game: {why}")]
    BadGame {
        /// The item.
        item: String,
        /// What is wrong with the game id.
        why: String,
    },
    /// A game named twice.
    #[error("Last-Event-ID names game {0} twice; send each game once")]
    Twice(String),
    /// More games than a stream may follow.
    #[error(
        "Last-Event-ID names {given} games; a stream follows at most {max} (ws.max_subscriptions)"
    )]
    TooMany {
        /// Games named.
        given: usize,
        /// `ws.max_subscriptions`.
        max: usize,
    },
}

impl Positions {
    /// Parses `game:seq,game:seq` (whitespace around items is ignored; an
    /// empty or blank id is no position at all), at most `max` games.
    pub(crate) fn parse(id: &str, max: usize) -> Result<Positions, BadId> {
        let mut out = BTreeMap::new();
        if id.trim().is_empty() {
            return Ok(Positions(out));
        }
        for (i, item) in id.split(',').map(str::trim).enumerate() {
            if item.is_empty() {
                return Err(BadId::Empty(i + 1));
            }
            if out.len() == max {
                let given = id.split(',').count();
                return Err(BadId::TooMany { given, max });
            }
            let Some((game, seq)) = item.rsplit_once(':') else {
                return Err(BadId::NoSeq(item.to_owned()));
            };
            if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BadId::BadSeq(item.to_owned()));
            }
            let seq: u64 = seq.parse().map_err(|_| BadId::BadSeq(item.to_owned()))?;
            let game = GameId::parse(game).map_err(|e| BadId::BadGame {
                item: item.to_owned(),
                why: e.to_string(),
            })?;
            if out.insert(game.clone(), seq).is_some() {
                return Err(BadId::Twice(game.to_string()));
            }
        }
        Ok(Positions(out))
    }

    /// Notes that the fan got frame `seq` of `game`.
    pub(crate) fn set(&mut self, game: GameId, seq: u64) {
        self.0.insert(game, seq);
    }

    /// The seq held for `game`, if any.
    #[cfg(test)]
    pub(crate) fn get(&self, game: &GameId) -> Option<u64> {
        self.0.get(game).copied()
    }

    /// Keeps only the games `keep` says the stream follows.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&GameId) -> bool) {
        self.0.retain(|g, _| keep(g));
    }

    /// Every position, as the `since` of a `sub` message.
    pub(crate) fn since(&self) -> BTreeMap<String, u64> {
        self.0
            .iter()
            .map(|(g, q)| (g.as_str().to_owned(), *q))
            .collect()
    }

    /// Writes the id (`nba:a:17,nhl:b:4`) to `out`.
    pub(crate) fn write_id(&self, out: &mut String) {
        for (i, (game, seq)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Writing to a String cannot fail.
            let _ = write!(out, "{game}:{seq}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(p: &Positions) -> String {
        let mut s = String::new();
        p.write_id(&mut s);
        s
    }

    #[test]
    fn pairs_split_at_the_last_colon_and_round_trip() {
        let p = Positions::parse("nhl:b:4, nba:2026-11-22-lal.bos:17", 10).unwrap();
        let g = |s: &str| GameId::parse(s).unwrap();
        assert_eq!(p.get(&g("nba:2026-11-22-lal.bos")), Some(17));
        assert_eq!(p.get(&g("nhl:b")), Some(4));
        assert_eq!(
            id(&p),
            "nba:2026-11-22-lal.bos:17,nhl:b:4",
            "sorted by game"
        );
        assert_eq!(Positions::parse(&id(&p), 10).unwrap(), p);
        assert_eq!(Positions::parse("", 10).unwrap(), Positions::default());
        assert_eq!(Positions::parse("  ", 10).unwrap(), Positions::default());
        assert_eq!(id(&Positions::default()), "");
    }

    #[test]
    fn malformed_ids_say_what_is_wrong() {
        type Check = fn(&BadId) -> bool;
        let cases: [(&str, Check); 9] = [
            ("nba:a:1,,nba:b:2", |e| matches!(e, BadId::Empty(2))),
            ("nba:a:1,", |e| matches!(e, BadId::Empty(2))),
            ("17", |e| matches!(e, BadId::NoSeq(_))),
            ("nba:a:", |e| matches!(e, BadId::BadSeq(_))),
            ("nba:a:-1", |e| matches!(e, BadId::BadSeq(_))),
            ("nba:a:+1", |e| matches!(e, BadId::BadSeq(_))),
            ("nba:a:99999999999999999999999", |e| {
                matches!(e, BadId::BadSeq(_))
            }),
            ("nba:17", |e| matches!(e, BadId::BadGame { .. })),
            ("nba:a:1,nba:a:2", |e| matches!(e, BadId::Twice(_))),
        ];
        for (raw, expected) in cases {
            let err = Positions::parse(raw, 10).unwrap_err();
            assert!(expected(&err), "{raw}: {err:?}");
            assert!(err.to_string().contains("Last-Event-ID"), "{err}");
        }
        let err = Positions::parse("a:x:1,a:y:2,a:z:3", 2).unwrap_err();
        assert_eq!(err, BadId::TooMany { given: 3, max: 2 });
    }
}
