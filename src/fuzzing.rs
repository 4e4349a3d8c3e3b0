//! Fuzzing harnesses: pure functions of arbitrary bytes, one per untrusted
//! input of the hub.
//!
//! - [`event_body`]: a scorekeeper's request body (event, new game, batch),
//!   as JSON and as MessagePack.
//! - [`control_message`]: a fan's control message, as WebSocket text and as
//!   binary.
//! - [`log_replay`]: the event log read at start-up.
//!
//! Each returns for every input. A panic is a finding: either the code under
//! test panicked, or one of the properties checked here does not hold (the
//! `assert!`s below say which and why it matters). The `cargo fuzz` targets in
//! `fuzz/` call these functions under libFuzzer; the `fuzz_corpus` tests of the
//! `hub` test binary call them on every committed corpus file, so whatever the
//! fuzzer kept is replayed by `cargo test`.
//!
//! Hidden from the docs: this is test tooling, not part of the hub's API.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use serde_json::Value;

use crate::backend::Replayer;
use crate::codec::{self, ClientMsg};
use crate::domain::event::fingerprint_of;
use crate::domain::{
    Clock, Event, GameId, GameState, League, NewGame, RawEvent, Scalar, Status, Team, apply, patch,
};
use crate::error::ApiError;
use crate::http::extract::{Encoding, field_error};
use crate::registry::CreateError;
use crate::store::file::{FileLog, FileLogOptions, LOG_FILE_NAME};
use crate::store::{Record, StoreError};

/// What a harness made of its input, so that tests can check that a seed
/// meant to be valid still is after a format change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The hub would take the input (see each harness for what that means).
    Accepted,
    /// The hub refused the input, cleanly.
    Refused,
}

impl Outcome {
    fn from_accepted(accepted: bool) -> Outcome {
        if accepted {
            Outcome::Accepted
        } else {
            Outcome::Refused
        }
    }
}

/// Server time used for every apply, Unix ms.
const NOW_MS: i64 = 1_790_000_000_000;
/// The game every event is applied to and every new game is created as.
const GAME: &str = "fuzz:game";
// Most items of `POST /v1/events` (the batch route's own limit), and the
// first bytes of an event log (`store::file`'s format): shared, not copied.
use crate::http::MAX_BATCH;
use crate::store::file::MAGIC as LOG_HEADER;
/// Diffs each replayed game keeps, as `games.history` would.
const REPLAY_HISTORY: usize = 8;

/// The result of a step that cannot fail unless the hub is broken; a failure
/// is a finding, reported with `what` went wrong.
fn must<T, E: Display>(result: Result<T, E>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{what}: {e}"),
    }
}

// ---- request bodies --------------------------------------------------------

/// The body of `POST /v1/events` (the route's own type is private; this one
/// has the same shape).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    events: Vec<Value>,
}

/// Decodes `data` as every request body that carries events or games, in both
/// encodings, the way the HTTP extractors do, and checks every event that
/// validates:
///
/// - refusals are client errors (4xx) with a message, never 5xx;
/// - validation loses nothing but `game`: `RawEvent → Event → RawEvent` gives
///   back the body, and the event survives MessagePack (the log's encoding)
///   unchanged and, once it applies, JSON (the API's) as a valid event;
/// - applied to a fixed game (fresh, and in the middle of play), the next state
///   is valid with `seq + 1`; the diff sent to fans, merged into the old state,
///   gives exactly the new state (so fans and a replay after a restart agree
///   with the actor); the log record and the diff and snapshot frames read
///   back as written.
///
/// New-game bodies that validate must give a seq-0 state that survives the
/// same encodings. Accepted: some event applied to a fixed game, or some
/// new-game body was valid.
pub fn event_body(data: &[u8]) -> Outcome {
    let mut accepted = false;
    for encoding in [Encoding::Json, Encoding::MsgPack] {
        match encoding.decode::<RawEvent>(data) {
            Ok(raw) => accepted |= check_event(raw),
            Err(e) => check_refusal(&e),
        }
        match encoding.decode::<NewGame>(data) {
            Ok(body) => accepted |= check_new_game(body),
            Err(e) => check_refusal(&e),
        }
        match encoding.decode::<Batch>(data) {
            Ok(batch) if batch.events.len() <= MAX_BATCH => {
                for (index, item) in batch.events.into_iter().enumerate() {
                    if !item.is_object() {
                        continue;
                    }
                    match serde_path_to_error::deserialize::<_, RawEvent>(item) {
                        Ok(raw) => accepted |= check_event(raw),
                        Err(e) => check_refusal(&field_error(&format!("events[{index}]"), e)),
                    }
                }
            }
            Ok(_) => {}
            Err(e) => check_refusal(&e),
        }
    }
    Outcome::from_accepted(accepted)
}

/// A refusal of client input must be a 4xx that says something.
fn check_refusal(e: &ApiError) {
    assert!(
        e.status().is_client_error(),
        "client input was refused with {} ({e}); malformed input is the client's error, never the server's",
        e.status()
    );
    assert!(
        !e.message().is_empty(),
        "a refusal ({}) has an empty message",
        e.code()
    );
}

/// Validates `raw` and checks the properties of [`event_body`]; true when it
/// applied to at least one fixed game.
fn check_event(raw: RawEvent) -> bool {
    let event = match Event::try_from(raw.clone()) {
        Ok(event) => event,
        Err(e) => {
            check_refusal(&ApiError::from(e));
            return false;
        }
    };

    let back = RawEvent::from(event.clone());
    assert_eq!(
        back,
        RawEvent { game: None, ..raw },
        "validating an event must keep every field but `game`"
    );
    assert_eq!(
        Event::try_from(back).as_ref(),
        Ok(&event),
        "an event's wire form must validate to the same event"
    );
    let packed = must(rmp_serde::to_vec_named(&event), "encoding an event");
    let unpacked: Event = must(rmp_serde::from_slice(&packed), "decoding an encoded event");
    assert_eq!(
        unpacked, event,
        "an event must survive MessagePack unchanged"
    );
    let mut applied = false;
    for state in fixed_states() {
        match apply(state, &event.action, NOW_MS) {
            Ok(next) => {
                check_transition(state, &next, &event);
                applied = true;
            }
            Err(e) => check_refusal(&ApiError::from(e)),
        }
    }
    if applied {
        // Only events that apply are ever stored or echoed. (One that does
        // not may hold a patch nested deeper than JSON's parser allows, which
        // MessagePack can carry.)
        let text = must(serde_json::to_vec(&event), "writing an event as JSON");
        must(
            serde_json::from_slice::<Event>(&text),
            "an event that applied, written as JSON, must read back as a valid event",
        );
    }
    applied
}

/// The properties of one applied event, `old` → `next`.
fn check_transition(old: &GameState, next: &GameState, event: &Event) {
    assert_eq!(next.seq, old.seq + 1, "apply must advance seq by one");
    assert_eq!(next.game, old.game, "apply must not change the game id");
    must(next.validate(), "apply returned a state that is not valid");

    let diff = patch::diff(old, next);
    let mut doc = must(serde_json::to_value(old), "a state as a JSON value");
    patch::merge(&mut doc, &diff);
    assert_eq!(
        doc,
        must(serde_json::to_value(next), "a state as a JSON value"),
        "the diff sent to fans, merged into the old state, must give the new state"
    );
    let replayed: GameState = must(
        serde_json::from_value(doc),
        "a state rebuilt by merging diffs (as log replay does) must parse",
    );
    assert_eq!(
        &replayed, next,
        "a state rebuilt by merging diffs must equal the actor's"
    );

    let record = Record::Event {
        game: old.game.clone(),
        seq: next.seq,
        event: event.clone(),
        fingerprint: event.fingerprint(),
        by: "fuzz".into(),
        at: NOW_MS,
        diff: diff.clone(),
    };
    check_record_round_trip(&record);

    let frame = must(
        codec::decode_frame(&codec::diff(&next.game, next.seq, &diff, NOW_MS)),
        "decoding a diff frame",
    );
    assert_eq!(
        (frame.t.as_str(), frame.q, frame.d.as_ref()),
        ("d", Some(next.seq), Some(&diff)),
        "a diff frame must carry its seq and diff"
    );
    check_snapshot(next);
}

/// A log record must read back exactly as written, in the log's encoding.
fn check_record_round_trip(record: &Record) {
    let bytes = must(rmp_serde::to_vec_named(record), "encoding a log record");
    let back: Record = must(
        rmp_serde::from_slice(&bytes),
        "a log record the hub writes must read back (or the hub cannot restart)",
    );
    assert_eq!(&back, record, "a log record must read back unchanged");
}

/// A snapshot frame must carry the state as its JSON value.
fn check_snapshot(state: &GameState) {
    let frame = must(
        codec::decode_frame(&codec::snapshot(state)),
        "decoding a snapshot frame",
    );
    assert_eq!(
        frame.d,
        Some(must(serde_json::to_value(state), "a state as a JSON value")),
        "a snapshot frame must carry the whole state"
    );
}

/// Builds the game of a new-game body and checks it; true when valid.
fn check_new_game(body: NewGame) -> bool {
    let fingerprint = fingerprint_of(&body);
    match body.into_state(fixed_game(), NOW_MS) {
        Ok(state) => {
            assert_eq!(state.seq, 0, "a new game starts at seq 0");
            check_record_round_trip(&Record::Created {
                game: state.game.clone(),
                state: state.clone(),
                fingerprint,
                by: "fuzz".into(),
                at: NOW_MS,
            });
            check_snapshot(&state);
            let text = must(serde_json::to_vec(&state), "writing a state as JSON");
            must(
                serde_json::from_slice::<GameState>(&text),
                "a state served as JSON must read back",
            );
            true
        }
        Err(e) => {
            check_refusal(&ApiError::from(CreateError::Invalid(e)));
            false
        }
    }
}

/// The game id every fixed state has.
fn fixed_game() -> GameId {
    GameId::parse(GAME).expect("the fixed game id is a valid constant")
}

/// Two valid states events are applied to: a fresh game, and one in play with
/// a running clock and sport-specific `extra` values of every kind.
fn fixed_states() -> &'static [GameState; 2] {
    static STATES: OnceLock<[GameState; 2]> = OnceLock::new();
    STATES.get_or_init(|| {
        let team = |name: &str, score| Team {
            name: name.into(),
            score,
        };
        let fresh = GameState {
            game: fixed_game(),
            seq: 0,
            status: Status::Scheduled,
            period: 0,
            clock: Clock {
                ms: 0,
                running: false,
                at: NOW_MS - 60_000,
            },
            home: team("Home", 0),
            away: team("Away", 0),
            extra: Default::default(),
        };
        let in_play = GameState {
            seq: 41,
            status: Status::Live,
            period: 3,
            clock: Clock {
                ms: 431_000,
                running: true,
                at: NOW_MS - 5_000,
            },
            home: team("Lakers", 87),
            away: team("Celtics", 85),
            extra: [
                ("possession", Scalar::Str("home".into())),
                ("timeouts_home", Scalar::Int(2)),
                ("overtime", Scalar::Bool(false)),
                ("attendance_ratio", Scalar::Float(0.97)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            ..fresh.clone()
        };
        [fresh, in_play]
    })
}

// ---- control messages ------------------------------------------------------

/// Decodes `data` as a fan's control message: as text (when it is UTF-8) and
/// as binary, as the WebSocket session does. Checks that:
///
/// - a message that decodes from JSON decodes to the same message from the
///   same document in MessagePack (the two encodings are one protocol);
/// - every game id and league it names either parses to an id that prints as
///   the input, or is refused with an error frame that reads back;
/// - a refusal's error frame reads back with its message.
///
/// Accepted: it decoded in at least one encoding.
pub fn control_message(data: &[u8]) -> Outcome {
    let mut accepted = false;
    if let Ok(text) = std::str::from_utf8(data) {
        match codec::decode_text(text) {
            Ok(msg) => {
                accepted = true;
                check_client_msg(&msg);
                let value: Value = must(
                    serde_json::from_str(text),
                    "a control message that decoded is a JSON document",
                );
                let packed = must(
                    rmp_serde::to_vec_named(&value),
                    "encoding a JSON document as MessagePack",
                );
                assert_eq!(
                    codec::decode_binary(&packed).ok(),
                    Some(msg),
                    "a control message must decode the same from JSON and from MessagePack"
                );
            }
            Err(e) => check_error_frame("bad_message", &e.to_string(), None),
        }
    }
    match codec::decode_binary(data) {
        Ok(msg) => {
            accepted = true;
            check_client_msg(&msg);
        }
        Err(e) => check_error_frame("bad_message", &e.to_string(), None),
    }
    Outcome::from_accepted(accepted)
}

/// Checks every id a decoded message names, as the session parses them.
fn check_client_msg(msg: &ClientMsg) {
    let (games, leagues, since) = match msg {
        ClientMsg::Sub {
            games,
            leagues,
            since,
        } => (games, leagues, Some(since)),
        ClientMsg::Unsub { games, leagues } => (games, leagues, None),
        ClientMsg::Ping => return,
    };
    let since_games = since.into_iter().flat_map(|s| s.keys());
    for raw in games.iter().chain(since_games) {
        match GameId::parse(raw) {
            Ok(id) => {
                assert_eq!(
                    id.as_str(),
                    raw.as_str(),
                    "a game id must print as it was given"
                );
                let league = must(
                    League::parse(id.league_str()),
                    "the league of a valid game id must be a valid league",
                );
                assert!(
                    raw.starts_with(league.as_str())
                        && raw[league.as_str().len()..].starts_with(':'),
                    "the league of {raw:?} must be its prefix before the first `:`"
                );
            }
            Err(e) => check_error_frame("invalid_game_id", &e.to_string(), Some(raw)),
        }
    }
    for raw in leagues {
        match League::parse(raw) {
            Ok(league) => assert_eq!(
                league.as_str(),
                raw.as_str(),
                "a league must print as given"
            ),
            Err(e) => check_error_frame("invalid_league", &e.to_string(), None),
        }
    }
}

/// An error frame must read back with its code, message and game.
fn check_error_frame(code: &str, msg: &str, game: Option<&str>) {
    assert!(
        !msg.is_empty(),
        "an error frame ({code}) has an empty message"
    );
    let frame = must(
        codec::decode_frame(&codec::error(code, msg, game)),
        "decoding an error frame",
    );
    assert_eq!(
        (
            frame.t.as_str(),
            frame.code.as_deref(),
            frame.msg.as_deref(),
            frame.g.as_deref()
        ),
        ("e", Some(code), Some(msg), game),
        "an error frame must read back as written"
    );
}

// ---- log replay ------------------------------------------------------------

/// Opens an event log made of `data` three ways: `data` after a valid header;
/// `data` as the whole file; and `data` cut into records that are framed with
/// their true length and checksum (see `framed_log`), so that random bytes
/// reach record decoding and replay instead of stopping at a checksum. Each
/// is replayed through the registry's
/// [`crate::backend::Replayer`] in a fresh directory under the system's
/// temporary directory (`TMPDIR`; a tmpfs makes this fast). Checks that:
///
/// - opening ends in `Ok` or a clean [`StoreError`] (a corrupt log names an
///   offset inside the file), never a panic or an unbounded allocation;
/// - when it opens, what is left on disk (a torn tail cut off) starts with the
///   header, is no longer than before, and opens again to the same records
///   without further change: recovery is idempotent;
/// - every replayed record encodes to bytes that decode and encode again to
///   the same bytes.
///
/// Accepted: some log opened and replayed at least one record.
pub fn log_replay(data: &[u8]) -> Outcome {
    let mut with_header = Vec::with_capacity(LOG_HEADER.len() + data.len());
    with_header.extend_from_slice(LOG_HEADER);
    with_header.extend_from_slice(data);
    let after_header = replay_file(&with_header);
    let whole = replay_file(data);
    let framed = replay_file(&framed_log(data));
    Outcome::from_accepted(after_header || whole || framed)
}

/// A log holding `data` read as chunks, each a `u16` little-endian length and
/// that many bytes (fewer at the end), every chunk framed as a record with
/// its true length and crc32 (the log's format: `u32` LE length, `u32` LE
/// crc32, payload).
fn framed_log(data: &[u8]) -> Vec<u8> {
    let mut log = Vec::with_capacity(LOG_HEADER.len() + data.len() * 4);
    log.extend_from_slice(LOG_HEADER);
    let mut rest = data;
    while let [lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (payload, next) = tail.split_at(len);
        // A u16 always fits a u32.
        log.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        log.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        log.extend_from_slice(payload);
        rest = next;
    }
    log
}

/// Replays `contents` as an event log; true when it opened with records.
fn replay_file(contents: &[u8]) -> bool {
    let dir = ScratchDir::new(contents);
    let (records, result) = open_log(dir.path());
    match result {
        Ok(()) => {}
        Err(StoreError::Corrupt { offset, reason, .. }) => {
            assert!(
                offset <= contents.len() as u64,
                "a corrupt log names offset {offset}, past its end ({} bytes)",
                contents.len()
            );
            assert!(!reason.is_empty(), "a corrupt log gives no reason");
            return false;
        }
        // The scratch directory failed us (it is not the input's doing):
        // nothing to check. Opening never answers `Unavailable`.
        Err(StoreError::Open { .. } | StoreError::Unavailable(_)) => return false,
        // Opening names where a log contradicts itself (`Corrupt`, with
        // an offset); a game-level contradiction is for loads after that.
        Err(e @ StoreError::Inconsistent { .. }) => {
            panic!("opening must report a contradiction as corruption at an offset, not: {e}")
        }
    }
    let kept = must(
        std::fs::read(dir.path().join(LOG_FILE_NAME)),
        "reading the log back after open",
    );
    assert!(
        kept.starts_with(LOG_HEADER),
        "an opened log must start with the header"
    );
    assert!(
        kept.len() <= contents.len().max(LOG_HEADER.len()),
        "opening a log must not grow it beyond its header"
    );

    let again = ScratchDir::new(&kept);
    let (records_again, result) = open_log(again.path());
    if let Err(e) = result {
        panic!("a log as left by a successful open must open again: {e}");
    }
    assert_eq!(
        records_again, records,
        "a recovered log must replay the same records"
    );
    let after = must(
        std::fs::read(again.path().join(LOG_FILE_NAME)),
        "reading the log back after the second open",
    );
    assert_eq!(after, kept, "opening a recovered log must not change it");
    !records.is_empty()
}

/// Opens the log in `dir`, folding its records into a replayer; returns each
/// record's encoding and how the open ended.
fn open_log(dir: &Path) -> (Vec<Vec<u8>>, Result<(), StoreError>) {
    let mut replayer = Replayer::full(REPLAY_HISTORY);
    let mut records = Vec::new();
    let opened = FileLog::open(dir, FileLogOptions { fsync: false }, |record| {
        records.push(stable_encoding(&record));
        replayer.record(record).map_err(|e| e.to_string())
    });
    // Dropping the log stops its writer thread; nothing was appended.
    (records, opened.map(drop))
}

/// The log encoding of a replayed record, checked to be stable: decoding it
/// and encoding again gives the same bytes.
fn stable_encoding(record: &Record) -> Vec<u8> {
    let bytes = must(
        rmp_serde::to_vec_named(record),
        "encoding a replayed record",
    );
    let back: Record = must(
        rmp_serde::from_slice(&bytes),
        "a replayed record, encoded again, must decode",
    );
    let again = must(rmp_serde::to_vec_named(&back), "encoding a record again");
    assert_eq!(again, bytes, "a replayed record must encode stably");
    bytes
}

/// A fresh directory holding `events.log`, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates the directory and writes `contents` as its log file.
    fn new(contents: &[u8]) -> ScratchDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = ScratchDir(std::env::temp_dir().join(format!(
            "scorehub-fuzz-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )));
        // A leftover of an earlier process with the same pid is stale.
        let _ = std::fs::remove_dir_all(&dir.0);
        must(
            std::fs::create_dir_all(&dir.0),
            "creating a scratch directory (set TMPDIR to a writable one)",
        );
        must(
            std::fs::write(dir.0.join(LOG_FILE_NAME), contents),
            "writing a scratch log",
        );
        dir
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
