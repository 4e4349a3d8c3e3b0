//! Game ids (`league:game`) and league names, validated once at the edge.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a game id or league name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id has no `:` between league and game.
    #[error("game id {0:?} must look like `league:game` (for example `nba:2026-11-22-lal-bos`)")]
    MissingColon(String),
    /// The league part breaks `[a-z0-9][a-z0-9_-]{{0,31}}`.
    #[error(
        "league {0:?} must be 1-32 chars of lowercase letters, digits, `_` or `-`, starting with a letter or digit"
    )]
    BadLeague(String),
    /// The game part breaks `[A-Za-z0-9_.-]{{1,64}}`.
    #[error("game part {0:?} must be 1-64 chars of letters, digits, `_`, `.` or `-`")]
    BadGame(String),
}

/// A validated league name such as `nba`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct League(Arc<str>);

impl League {
    /// Validates a league name: `[a-z0-9][a-z0-9_-]{0,31}`.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if valid_league(s) {
            Ok(League(Arc::from(s)))
        } else {
            Err(IdError::BadLeague(truncate(s)))
        }
    }

    /// The league as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for League {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated game id `league:game`. Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GameId {
    full: Arc<str>,
    colon: u8,
}

impl GameId {
    /// Validates `league:game`.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let Some(colon) = s.find(':') else {
            return Err(IdError::MissingColon(truncate(s)));
        };
        let (league, game) = (&s[..colon], &s[colon + 1..]);
        if !valid_league(league) {
            return Err(IdError::BadLeague(truncate(league)));
        }
        if !valid_game(game) {
            return Err(IdError::BadGame(truncate(game)));
        }
        Ok(GameId {
            full: Arc::from(s),
            // valid_league caps the league at 32 bytes, so the index fits.
            colon: colon as u8,
        })
    }

    /// The full id, `league:game`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The league part.
    pub fn league_str(&self) -> &str {
        &self.full[..self.colon as usize]
    }

    /// The league part as a [`League`].
    pub fn league(&self) -> League {
        League(Arc::from(self.league_str()))
    }
}

impl fmt::Display for GameId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for GameId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GameId({})", self.full)
    }
}

impl Serialize for GameId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.full)
    }
}

impl<'de> Deserialize<'de> for GameId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        GameId::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for League {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for League {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        League::parse(&s).map_err(serde::de::Error::custom)
    }
}

// The API document's view of ids (see `crate::http::openapi`): strings with
// the patterns `valid_league` and `valid_game` check.

/// `League`'s pattern, as an anchored ECMA-262 regular expression.
pub const LEAGUE_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,31}$";

/// `GameId`'s pattern, as an anchored ECMA-262 regular expression.
pub const GAME_ID_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,31}:[A-Za-z0-9_.-]{1,64}$";

impl utoipa::PartialSchema for League {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(LEAGUE_PATTERN))
            .description(Some(
                "A league: 1-32 lowercase letters, digits, `_` or `-`, starting with a letter or digit.",
            ))
            .examples(["nba"])
            .into()
    }
}

impl utoipa::ToSchema for League {}

impl utoipa::PartialSchema for GameId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(GAME_ID_PATTERN))
            .description(Some(
                "`league:game`: league `[a-z0-9][a-z0-9_-]{0,31}`, game `[A-Za-z0-9_.-]{1,64}`.",
            ))
            .examples(["nba:2026-11-22-lal-bos"])
            .into()
    }
}

impl utoipa::ToSchema for GameId {}

fn valid_league(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

fn valid_game(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Keeps error messages short when a client sends a huge id.
fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_ids() {
        let id = GameId::parse("nba:2026-11-22-lal-bos").unwrap();
        assert_eq!(id.league_str(), "nba");
        assert_eq!(id.as_str(), "nba:2026-11-22-lal-bos");
        assert!(GameId::parse("a:B.c_d-1").is_ok());
        assert!(GameId::parse(&format!("{}:{}", "a".repeat(32), "g".repeat(64))).is_ok());
    }

    #[test]
    fn refuses_invalid_ids() {
        for bad in [
            "nba",
            ":x",
            "NBA:x",
            "_nba:x",
            "nba:",
            "nba:a b",
            "nba:a:b",
            "nba:é",
            &format!("{}:x", "a".repeat(33)),
            &format!("nba:{}", "g".repeat(65)),
        ] {
            assert!(GameId::parse(bad).is_err(), "{bad} should be refused");
        }
        assert!(League::parse("nba").is_ok());
        assert!(League::parse("n-b_a9").is_ok());
        assert!(League::parse("Nba").is_err());
        assert!(League::parse("").is_err());
    }
}
