//! A game's state and the body that creates a game.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{AdditionalProperties, AnyOfBuilder, ObjectBuilder, Schema, Type};

use super::GameId;

/// Most keys `extra` may hold.
pub const MAX_EXTRA_KEYS: usize = 32;
/// Longest key in `extra`, in bytes.
pub const MAX_EXTRA_KEY_LEN: usize = 64;
/// Longest string value in `extra` or team name, in bytes.
pub const MAX_TEXT_LEN: usize = 256;
/// Largest absolute score the hub accepts.
pub const MAX_SCORE: i64 = 1_000_000;

/// Where a game stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Not started yet.
    Scheduled,
    /// In play.
    Live,
    /// Interrupted, will resume.
    Paused,
    /// Over.
    Final,
    /// Moved to a later date.
    Postponed,
    /// Will not be played.
    Cancelled,
}

impl Status {
    /// Every status, for error messages and tests.
    pub const ALL: [Status; 6] = [
        Status::Scheduled,
        Status::Live,
        Status::Paused,
        Status::Final,
        Status::Postponed,
        Status::Cancelled,
    ];

    /// Parses the lowercase wire name.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the game is over for good (`final` or `cancelled`): the
    /// statuses that start its retention clock (see [`super::Retention`]).
    /// `postponed` is not: the game is still to be played.
    pub fn is_finished(self) -> bool {
        matches!(self, Status::Final | Status::Cancelled)
    }

    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::Live => "live",
            Status::Paused => "paused",
            Status::Final => "final",
            Status::Postponed => "postponed",
            Status::Cancelled => "cancelled",
        }
    }
}

/// The game clock. `ms` was true at server time `at` (Unix ms); when `running`,
/// a client derives the current value from `ms - (now - at)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Clock {
    /// Milliseconds on the clock at `at`.
    pub ms: u64,
    /// Whether the clock runs.
    pub running: bool,
    /// Server Unix time in ms when `ms` was true.
    pub at: i64,
}

/// One side of the game.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Team {
    /// Display name.
    #[schema(min_length = 1, max_length = 256)]
    pub name: String,
    /// Points so far.
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub score: i64,
}

/// A sport-specific scalar in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Scalar {
    /// `true` / `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A finite float.
    Float(f64),
    /// Text, at most [`MAX_TEXT_LEN`] bytes.
    Str(String),
}

impl<'de> Deserialize<'de> for Scalar {
    /// Like `#[serde(untagged)]`, but a whole number outside the `i64` range
    /// is refused instead of quietly becoming an inexact float, and so is a
    /// float that is not finite.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        struct ScalarVisitor;
        impl serde::de::Visitor<'_> for ScalarVisitor {
            type Value = Scalar;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a boolean, a whole number within ±2^63, a finite number or a string")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                i64::try_from(v).map(Scalar::Int).map_err(|_| {
                    E::custom(format!(
                        "the whole number {v} is too large (at most {})",
                        i64::MAX
                    ))
                })
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
                if v.is_finite() {
                    Ok(Scalar::Float(v))
                } else {
                    Err(E::custom("numbers must be finite"))
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar::Str(v))
            }
        }
        d.deserialize_any(ScalarVisitor)
    }
}

/// The full state of one game, as served to readers and fans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(examples(json!({
    "game": "nba:2026-11-22-lal-bos",
    "seq": 17,
    "status": "live",
    "period": 3,
    "clock": {"ms": 431000, "running": true, "at": 1763770000000_i64},
    "home": {"name": "Lakers", "score": 78},
    "away": {"name": "Celtics", "score": 81},
    "extra": {"possession": "home"}
})))]
#[serde(deny_unknown_fields)]
pub struct GameState {
    /// The game id.
    pub game: GameId,
    /// Events applied so far (0 right after creation).
    pub seq: u64,
    /// Where the game stands.
    pub status: Status,
    /// Current period (0 before the first).
    pub period: u32,
    /// The game clock.
    pub clock: Clock,
    /// Home side.
    pub home: Team,
    /// Away side.
    pub away: Team,
    /// Sport-specific scalars, at most [`MAX_EXTRA_KEYS`].
    #[schema(schema_with = extra_schema)]
    pub extra: BTreeMap<String, Scalar>,
}

/// The body of `PUT /v1/games/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(examples(json!({
    "home": {"name": "Lakers"},
    "away": {"name": "Celtics"},
    "status": "scheduled"
})))]
#[serde(deny_unknown_fields)]
pub struct NewGame {
    /// Home side; only `name` is read.
    pub home: NewTeam,
    /// Away side; only `name` is read.
    pub away: NewTeam,
    /// Initial status (default `scheduled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Initial period (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<u32>,
    /// Initial sport-specific scalars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = extra_schema)]
    pub extra: Option<BTreeMap<String, Scalar>>,
}

/// A team in a [`NewGame`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTeam {
    /// Display name, 1-256 bytes, not blank.
    #[schema(min_length = 1, max_length = 256)]
    pub name: String,
}

// The API document's view of `Scalar` and `extra` (see `crate::http::openapi`):
// written by hand because an untagged enum derives a `oneOf`, which a whole
// number would fail (it is both an integer and a number), and because a map's
// size and key limits have no derive attribute.

impl utoipa::PartialSchema for Scalar {
    fn schema() -> RefOr<Schema> {
        AnyOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(MAX_TEXT_LEN)),
            )
            .item(ObjectBuilder::new().schema_type(Type::Integer))
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .description(Some(
                "A sport-specific scalar: a string (at most 256 bytes), an integer, a finite number or a boolean.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Scalar {}

/// `extra`: at most [`MAX_EXTRA_KEYS`] keys of 1-[`MAX_EXTRA_KEY_LEN`] bytes.
fn extra_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "Sport-specific scalars, at most 32 keys of 1-64 bytes.",
        ))
        .max_properties(Some(MAX_EXTRA_KEYS))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_EXTRA_KEY_LEN)),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::Ref(
            utoipa::openapi::Ref::from_schema_name("Scalar"),
        ))))
        .into()
}

/// Why a state (or a game body) is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidState(pub String);

impl NewGame {
    /// A game between `home` and `away`, everything else at its default
    /// (`scheduled`, period 0, no `extra`).
    pub fn between(home: impl Into<String>, away: impl Into<String>) -> NewGame {
        NewGame {
            home: NewTeam { name: home.into() },
            away: NewTeam { name: away.into() },
            status: None,
            period: None,
            extra: None,
        }
    }

    /// Builds the state at `seq` 0, checking names and `extra`.
    pub fn into_state(self, game: GameId, now_ms: i64) -> Result<GameState, InvalidState> {
        let state = GameState {
            game,
            seq: 0,
            status: self.status.unwrap_or(Status::Scheduled),
            period: self.period.unwrap_or(0),
            clock: Clock {
                ms: 0,
                running: false,
                at: now_ms,
            },
            home: Team {
                name: self.home.name,
                score: 0,
            },
            away: Team {
                name: self.away.name,
                score: 0,
            },
            extra: self.extra.unwrap_or_default(),
        };
        state.validate()?;
        Ok(state)
    }
}

impl GameState {
    /// Checks the limits a state must hold after every event.
    pub fn validate(&self) -> Result<(), InvalidState> {
        for (side, team) in [("home", &self.home), ("away", &self.away)] {
            if team.name.trim().is_empty() || team.name.len() > MAX_TEXT_LEN {
                return Err(InvalidState(format!(
                    "`{side}.name` must be 1-{MAX_TEXT_LEN} bytes and not blank"
                )));
            }
            if !(0..=MAX_SCORE).contains(&team.score) {
                return Err(InvalidState(format!(
                    "`{side}.score` would be {}; it must stay within 0..={MAX_SCORE}",
                    team.score
                )));
            }
        }
        if self.extra.len() > MAX_EXTRA_KEYS {
            return Err(InvalidState(format!(
                "`extra` may hold at most {MAX_EXTRA_KEYS} keys, it would hold {}",
                self.extra.len()
            )));
        }
        for (k, v) in &self.extra {
            if k.is_empty() || k.len() > MAX_EXTRA_KEY_LEN {
                return Err(InvalidState(format!(
                    "`extra` keys must be 1-{MAX_EXTRA_KEY_LEN} bytes"
                )));
            }
            if k == "__proto__" {
                // Browsers' decoders refuse it (it would set an object's
                // prototype), so no fan could ever see the game.
                return Err(InvalidState(
                    "`extra` key \"__proto__\" is reserved: pick another name".into(),
                ));
            }
            match v {
                Scalar::Str(s) if s.len() > MAX_TEXT_LEN => {
                    return Err(InvalidState(format!(
                        "`extra.{k}` is longer than {MAX_TEXT_LEN} bytes"
                    )));
                }
                Scalar::Float(f) if !f.is_finite() => {
                    return Err(InvalidState(format!("`extra.{k}` must be a finite number")));
                }
                _ => {}
            }
        }
        Ok(())
    }
}
