//! Score events: parsed in two stages (raw wire shape → validated [`Event`]) and
//! applied to a [`GameState`] by the pure function [`apply`].

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::patch;
use super::state::{GameState, InvalidState, MAX_SCORE, Status};

/// Longest `event_id`, in bytes.
pub const MAX_EVENT_ID_LEN: usize = 64;

/// Which side scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The home team.
    Home,
    /// The away team.
    Away,
}

/// What an event does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Adds `points` (negative to correct) to `team`.
    Score {
        /// The side that scored.
        team: Side,
        /// Points to add; never 0.
        points: i64,
    },
    /// Sets the clock (and optionally the period).
    Clock {
        /// New period, if it changes.
        period: Option<u32>,
        /// Milliseconds on the clock now.
        ms: u64,
        /// Whether it runs from now.
        running: bool,
    },
    /// Sets the status.
    Status {
        /// The new status.
        status: Status,
    },
    /// A JSON Merge Patch of the state, not touching `game`, `seq` or `clock.at`.
    Set {
        /// The merge patch (an object).
        patch: Value,
    },
}

impl Action {
    /// The wire name of the kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Score { .. } => "score",
            Action::Clock { .. } => "clock",
            Action::Status { .. } => "status",
            Action::Set { .. } => "set",
        }
    }
}

/// A validated event, as posted by a scorekeeper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "RawEvent", try_from = "RawEvent")]
pub struct Event {
    /// Chosen by the scorekeeper, unique within the game.
    pub event_id: String,
    /// Optimistic concurrency: apply only if the game is at this seq.
    pub expected_seq: Option<u64>,
    /// The effect.
    pub action: Action,
}

/// The flat wire shape of an event; every kind's fields are optional here and
/// checked by [`Event::try_from`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvent {
    /// Game id; only in batch items (and ignored by the single-event route when equal).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub game: Option<String>,
    /// See [`Event::event_id`].
    pub event_id: String,
    /// `score`, `clock`, `status` or `set`.
    pub kind: String,
    /// See [`Event::expected_seq`].
    #[serde(
        default,
        deserialize_with = "present_seq",
        skip_serializing_if = "Option::is_none"
    )]
    pub expected_seq: Option<u64>,
    /// `score`: `home` or `away`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub team: Option<String>,
    /// `score`: points to add.
    #[serde(
        default,
        deserialize_with = "present_int",
        skip_serializing_if = "Option::is_none"
    )]
    pub points: Option<i64>,
    /// `clock`: new period.
    #[serde(
        default,
        deserialize_with = "present_int",
        skip_serializing_if = "Option::is_none"
    )]
    pub period: Option<u32>,
    /// `clock`: milliseconds on the clock.
    #[serde(
        default,
        deserialize_with = "present_seq",
        skip_serializing_if = "Option::is_none"
    )]
    pub ms: Option<u64>,
    /// `clock`: whether it runs.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub running: Option<bool>,
    /// `status`: the new status.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<String>,
    /// `set`: a JSON Merge Patch of the state.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub patch: Option<Value>,
}

/// An optional field that, when present, must hold a value: `null` is
/// refused like any other wrong type (the API document allows no `null`), and
/// only a missing field is `None`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// An optional integer field. Besides integers it takes a float with no
/// fractional part (`725.0` is the integer 725 in JSON and in the API
/// document's JSON Schema); anything out of `T`'s range is refused.
fn present_int<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i128>,
{
    use serde::de::{Error, Unexpected};
    let n = serde_json::Number::deserialize(deserializer)?;
    let whole: i128 = if let Some(u) = n.as_u64() {
        u.into()
    } else if let Some(i) = n.as_i64() {
        i.into()
    } else {
        let f = n.as_f64().unwrap_or(f64::NAN);
        // Within ±2^63 (so the cast is exact) and whole.
        if f.fract() != 0.0 || f.abs() >= 2f64.powi(63) {
            return Err(D::Error::invalid_value(Unexpected::Float(f), &"an integer"));
        }
        f as i128
    };
    T::try_from(whole)
        .map(Some)
        .map_err(|_| D::Error::custom(format_args!("{whole} is out of range for this field")))
}

/// A seq or a clock reading: an integer from 0 to 2^63-1 (the `int64`
/// range, which every client language holds), integral floats included.
fn present_seq<'de, D>(deserializer: D) -> Result<Option<u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let v: Option<i64> = present_int(deserializer)?;
    v.map(|v| {
        u64::try_from(v).map_err(|_| {
            serde::de::Error::custom(format_args!("{v} is below 0; it must be 0 or more"))
        })
    })
    .transpose()
}

/// Why an event was refused. `BadRequest` maps to HTTP 400 (the body is malformed),
/// `Invalid` to 422 (well-formed, but it makes no sense for this game).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// A field is missing, of the wrong type, or does not belong to the kind.
    #[error("{0}")]
    BadRequest(String),
    /// The event is well-formed but cannot be applied.
    #[error("{0}")]
    Invalid(String),
}

impl From<InvalidState> for EventError {
    fn from(e: InvalidState) -> Self {
        EventError::Invalid(e.0)
    }
}

impl TryFrom<RawEvent> for Event {
    type Error = EventError;

    fn try_from(raw: RawEvent) -> Result<Self, EventError> {
        let id = &raw.event_id;
        if id.is_empty()
            || id.len() > MAX_EVENT_ID_LEN
            || !id.bytes().all(|b| (0x20..=0x7e).contains(&b))
        {
            return Err(EventError::BadRequest(format!(
                "`event_id` must be 1-{MAX_EVENT_ID_LEN} printable ASCII characters"
            )));
        }
        let kind = raw.kind.as_str();
        let allowed: &[&str] = match kind {
            "score" => &["team", "points"],
            "clock" => &["period", "ms", "running"],
            "status" => &["status"],
            "set" => &["patch"],
            other => {
                return Err(EventError::Invalid(format!(
                    "unknown kind {:?}; expected one of score, clock, status, set",
                    other.chars().take(32).collect::<String>()
                )));
            }
        };
        let present = [
            ("team", raw.team.is_some()),
            ("points", raw.points.is_some()),
            ("period", raw.period.is_some()),
            ("ms", raw.ms.is_some()),
            ("running", raw.running.is_some()),
            ("status", raw.status.is_some()),
            ("patch", raw.patch.is_some()),
        ];
        if let Some((field, _)) = present
            .iter()
            .find(|(name, is)| *is && !allowed.contains(name))
        {
            return Err(EventError::BadRequest(format!(
                "field `{field}` does not apply to kind `{kind}` (it takes {})",
                allowed.join(", ")
            )));
        }
        let need = |field: &str| {
            EventError::BadRequest(format!("field `{field}` is required for kind `{kind}`"))
        };
        let action = match kind {
            "score" => {
                let team = match raw.team.as_deref().ok_or_else(|| need("team"))? {
                    "home" => Side::Home,
                    "away" => Side::Away,
                    other => {
                        return Err(EventError::Invalid(format!(
                            "unknown team {:?}; expected \"home\" or \"away\"",
                            other.chars().take(32).collect::<String>()
                        )));
                    }
                };
                let points = raw.points.ok_or_else(|| need("points"))?;
                if points == 0 || points.unsigned_abs() > MAX_SCORE.unsigned_abs() {
                    return Err(EventError::Invalid(format!(
                        "`points` must be non-zero and within ±{MAX_SCORE}"
                    )));
                }
                Action::Score { team, points }
            }
            "clock" => Action::Clock {
                period: raw.period,
                ms: raw.ms.ok_or_else(|| need("ms"))?,
                running: raw.running.ok_or_else(|| need("running"))?,
            },
            "status" => {
                let s = raw.status.ok_or_else(|| need("status"))?;
                let status = Status::parse(&s).ok_or_else(|| {
                    EventError::Invalid(format!(
                        "unknown status {:?}; expected one of scheduled, live, paused, final, postponed, cancelled",
                        s.chars().take(32).collect::<String>()
                    ))
                })?;
                Action::Status { status }
            }
            _ => {
                let patch = raw.patch.ok_or_else(|| need("patch"))?;
                if !patch.is_object() {
                    return Err(EventError::BadRequest(
                        "field `patch` must be a JSON object (a JSON Merge Patch of the state)"
                            .into(),
                    ));
                }
                Action::Set { patch }
            }
        };
        Ok(Event {
            event_id: raw.event_id,
            expected_seq: raw.expected_seq,
            action,
        })
    }
}

impl From<Event> for RawEvent {
    fn from(e: Event) -> RawEvent {
        let mut raw = RawEvent {
            event_id: e.event_id,
            kind: e.action.kind().to_string(),
            expected_seq: e.expected_seq,
            ..RawEvent::default()
        };
        match e.action {
            Action::Score { team, points } => {
                raw.team = Some(
                    match team {
                        Side::Home => "home",
                        Side::Away => "away",
                    }
                    .into(),
                );
                raw.points = Some(points);
            }
            Action::Clock {
                period,
                ms,
                running,
            } => {
                raw.period = period;
                raw.ms = Some(ms);
                raw.running = Some(running);
            }
            Action::Status { status } => raw.status = Some(status.as_str().into()),
            Action::Set { patch } => raw.patch = Some(patch),
        }
        raw
    }
}

/// A digest of an event's canonical body: equal for retries of the same event,
/// different when the same `event_id` comes with another body.
pub type Fingerprint = [u8; 16];

/// Digest of any serialisable body in its canonical JSON form (keys sorted).
pub fn fingerprint_of<T: Serialize>(body: &T) -> Fingerprint {
    // serde_json's Map is a BTreeMap (no `preserve_order`), so `to_value` sorts
    // keys and the digest does not depend on the client's key order.
    let canonical = serde_json::to_value(body)
        .and_then(|v| serde_json::to_vec(&v))
        .unwrap_or_default();
    let digest = Sha256::digest(&canonical);
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

impl Event {
    /// The digest used to tell a retry from a conflicting reuse of `event_id`.
    pub fn fingerprint(&self) -> Fingerprint {
        fingerprint_of(self)
    }
}

/// Applies `action` to `state` at server time `now_ms`, returning the next state
/// (with `seq + 1`). Pure: the same inputs always give the same output.
pub fn apply(state: &GameState, action: &Action, now_ms: i64) -> Result<GameState, EventError> {
    let mut next = state.clone();
    match action {
        Action::Score { team, points } => {
            let t = match team {
                Side::Home => &mut next.home,
                Side::Away => &mut next.away,
            };
            t.score = t.score.saturating_add(*points);
        }
        Action::Clock {
            period,
            ms,
            running,
        } => {
            if let Some(p) = period {
                next.period = *p;
            }
            next.clock.ms = *ms;
            next.clock.running = *running;
            next.clock.at = now_ms;
        }
        Action::Status { status } => next.status = *status,
        Action::Set { patch } => {
            let obj = patch.as_object().ok_or_else(|| {
                EventError::BadRequest("field `patch` must be a JSON object".into())
            })?;
            for forbidden in ["game", "seq"] {
                if obj.contains_key(forbidden) {
                    return Err(EventError::Invalid(format!(
                        "a `set` patch may not change `{forbidden}`"
                    )));
                }
            }
            if obj
                .get("clock")
                .and_then(Value::as_object)
                .is_some_and(|c| c.contains_key("at"))
            {
                return Err(EventError::Invalid(
                    "`clock.at` is set by the server; patch `clock.ms` / `clock.running` instead"
                        .into(),
                ));
            }
            let mut doc = serde_json::to_value(state)
                .map_err(|e| EventError::Invalid(format!("state not serialisable: {e}")))?;
            patch::merge(&mut doc, patch);
            next = serde_json::from_value(doc).map_err(|e| {
                EventError::Invalid(format!("the patch would make the state invalid: {e}"))
            })?;
            if next.clock.ms != state.clock.ms || next.clock.running != state.clock.running {
                next.clock.at = now_ms;
            }
        }
    }
    next.seq = state.seq + 1;
    next.validate()?;
    Ok(next)
}
