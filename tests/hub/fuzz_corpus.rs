//! The fuzz corpus, replayed (issue 6). Every input `cargo fuzz` kept under
//! `fuzz/corpus/<target>/`, and every hand-made seed and past crash under
//! `fuzz/seeds/<target>/`, goes through the same harness as the fuzz target
//! (`scorehub::fuzzing`), so the suite repeats what the fuzzer learnt without
//! nightly Rust or libFuzzer. A seed named `ok-*` must still be accepted and
//! one named `bad-*` refused: a format change that quietly turned the seeds
//! into noise fails here instead of weakening the fuzzer.
//!
//! The seeds are written by `write_fuzz_seeds` (ignored; run it after a
//! format change, see `fuzz/README.md`).

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use scorehub::domain::{Event, GameId, GameState, NewGame, RawEvent, apply, patch};
use scorehub::fuzzing::{self, Outcome};
use scorehub::store::Record;
use scorehub::store::file::{FileLog, FileLogOptions, LOG_FILE_NAME};
use serde_json::{Value, json};

/// The `fuzz/` directory of the repository.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Runs `harness` on every file of the target's seeds and corpus.
fn replay(target: &str, harness: fn(&[u8]) -> Outcome) {
    let mut ran = [0usize; 2];
    for (n, kind) in ["seeds", "corpus"].into_iter().enumerate() {
        let dir = fuzz_dir().join(kind).join(target);
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|entry| entry.expect("a readable directory entry").path())
            .filter(|path| path.is_file())
            .collect();
        files.sort();
        for path in files {
            let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let outcome = catch_unwind(AssertUnwindSafe(|| harness(&data)))
                .unwrap_or_else(|_| panic!("{target} panicked on {}", path.display()));
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with("ok-") {
                assert_eq!(outcome, Outcome::Accepted, "{}", path.display());
            } else if name.starts_with("bad-") {
                assert_eq!(outcome, Outcome::Refused, "{}", path.display());
            }
            ran[n] += 1;
        }
    }
    assert!(ran[0] > 0, "no seeds for {target}: run write_fuzz_seeds");
    assert!(ran[1] > 0, "no corpus for {target}: see fuzz/README.md");
}

#[test]
fn event_body_corpus_replays() {
    replay("event_body", fuzzing::event_body);
}

#[test]
fn control_message_corpus_replays() {
    replay("control_message", fuzzing::control_message);
}

#[test]
fn log_replay_corpus_replays() {
    replay("log_replay", fuzzing::log_replay);
}

// ---- seeds -----------------------------------------------------------------

/// Writes every seed of every target into `fuzz/seeds/`. Ignored: it changes
/// the repository. Run it after a format change:
/// `cargo test -p scorehub --test hub fuzz_corpus::write_fuzz_seeds -- --ignored`.
#[tokio::test]
#[ignore = "writes fuzz/seeds/; run by hand after a format change"]
async fn write_fuzz_seeds() {
    let mut seeds = Vec::new();
    for (name, body) in event_bodies() {
        seeds.push(("event_body", format!("{name}.json"), json_bytes(&body)));
        seeds.push(("event_body", format!("{name}.msgpack"), msgpack(&body)));
    }
    seeds.push((
        "event_body",
        "bad-truncated.json".into(),
        br#"{"event_id":"e-1","kind":"sco"#.to_vec(),
    ));
    seeds.push(("event_body", "bad-not-a-body.bin".into(), vec![0xc1, 0x00]));
    seeds.push((
        "event_body",
        "crash-deep-msgpack-patch.msgpack".into(),
        deep_msgpack_patch(1000),
    ));

    for (name, msg) in control_messages() {
        seeds.push(("control_message", format!("{name}.json"), json_bytes(&msg)));
        seeds.push(("control_message", format!("{name}.msgpack"), msgpack(&msg)));
    }
    seeds.push((
        "control_message",
        "bad-not-json.txt".into(),
        b"sub nba:lal-bos".to_vec(),
    ));
    seeds.push((
        "control_message",
        "bad-invalid-utf8.bin".into(),
        vec![0xff, 0xfe, b'{', 0x80],
    ));

    for (name, bytes) in logs().await {
        seeds.push(("log_replay", name, bytes));
    }

    for (target, name, bytes) in seeds {
        let dir = fuzz_dir().join("seeds").join(target);
        fs::create_dir_all(&dir).expect("fuzz/seeds is writable");
        fs::write(dir.join(name), bytes).expect("fuzz/seeds is writable");
    }
}

fn json_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("a JSON value serialises")
}

fn msgpack(v: &Value) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("a JSON value encodes as MessagePack")
}

/// A `set` event whose patch nests `depth` one-key maps: it once overflowed
/// a debug build's 2 MiB stack (MessagePack bodies were decoded up to depth
/// 1024); now refused past depth 128, as JSON is.
fn deep_msgpack_patch(depth: usize) -> Vec<u8> {
    let mut body = msgpack(&json!({"event_id": "e-1", "kind": "set", "patch": {}}));
    // The patch's empty map is the last byte; nest it `depth` times in {"a": …}.
    body.pop();
    for _ in 0..depth {
        body.extend_from_slice(&[0x81, 0xa1, b'a']);
    }
    body.push(0x80);
    body
}

/// Request bodies: events of every kind, a new game, a batch, and refusals.
fn event_bodies() -> Vec<(&'static str, Value)> {
    vec![
        (
            "ok-score",
            json!({"event_id": "e-1", "kind": "score", "team": "home", "points": 3}),
        ),
        (
            // Fails on the fresh game (a negative score), applies in play.
            "ok-score-correction",
            json!({"event_id": "e-2", "kind": "score", "team": "away", "points": -2, "expected_seq": 41}),
        ),
        (
            "ok-clock",
            json!({"event_id": "c-1", "kind": "clock", "period": 2, "ms": 720_000, "running": true}),
        ),
        (
            "ok-clock-same-period",
            json!({"event_id": "c-2", "kind": "clock", "ms": 0, "running": false}),
        ),
        (
            "ok-status",
            json!({"event_id": "s-1", "kind": "status", "status": "final"}),
        ),
        (
            "ok-set",
            json!({"event_id": "x-1", "kind": "set", "patch": {
                "extra": {"possession": "away", "fouls": 4, "ratio": 0.5, "overtime": true, "timeouts_home": null},
                "home": {"name": "LA Lakers", "score": 90},
                "clock": {"ms": 1000, "running": false},
                "period": 4,
                "status": "paused"
            }}),
        ),
        (
            "ok-event-naming-its-game",
            json!({"game": "fuzz:game", "event_id": "e-3", "kind": "score", "team": "home", "points": 1}),
        ),
        (
            "ok-new-game",
            json!({"home": {"name": "Lakers"}, "away": {"name": "Celtics"}, "status": "scheduled", "period": 0,
                   "extra": {"venue": "Arena", "neutral": false, "capacity": 19068, "odds": 1.5}}),
        ),
        (
            "ok-batch",
            json!({"events": [
                {"game": "fuzz:game", "event_id": "b-1", "kind": "score", "team": "home", "points": 2},
                {"game": "fuzz:game", "event_id": "b-2", "kind": "clock", "ms": 5000, "running": true},
                {"game": "nba:x", "event_id": "b-3", "kind": "dance"},
                7
            ]}),
        ),
        (
            "bad-unknown-kind",
            json!({"event_id": "e-1", "kind": "dance"}),
        ),
        (
            "bad-zero-points",
            json!({"event_id": "e-1", "kind": "score", "team": "home", "points": 0}),
        ),
        (
            "bad-field-of-another-kind",
            json!({"event_id": "e-1", "kind": "status", "status": "live", "points": 2}),
        ),
        (
            "bad-set-changes-seq",
            json!({"event_id": "e-1", "kind": "set", "patch": {"seq": 99}}),
        ),
        (
            "bad-set-clock-at",
            json!({"event_id": "e-1", "kind": "set", "patch": {"clock": {"at": 1}}}),
        ),
        (
            "bad-blank-team-name",
            json!({"home": {"name": " "}, "away": {"name": "Celtics"}}),
        ),
    ]
}

/// Control messages of every op, and refusals.
fn control_messages() -> Vec<(&'static str, Value)> {
    vec![
        (
            "ok-sub",
            json!({"op": "sub", "games": ["nba:lal-bos", "nfl:kc-buf"], "leagues": ["nhl"],
                   "since": {"nba:lal-bos": 12}}),
        ),
        (
            // Decodes; each bad id gets its own error frame.
            "ok-sub-invalid-ids",
            json!({"op": "sub", "games": ["NBA:x", "nba", "nba:", ":x"], "leagues": ["-x", ""]}),
        ),
        (
            "ok-unsub",
            json!({"op": "unsub", "games": ["nba:lal-bos"], "leagues": ["nhl"]}),
        ),
        ("ok-ping", json!({"op": "ping"})),
        ("bad-unknown-op", json!({"op": "dance"})),
        (
            "bad-unknown-field",
            json!({"op": "sub", "games": [], "gmaes": []}),
        ),
        (
            "bad-since-not-a-number",
            json!({"op": "sub", "since": {"nba:a": "3"}}),
        ),
    ]
}

/// A game created and played through the real log writer: its records.
fn game_records(id: &str) -> Vec<Record> {
    let game = GameId::parse(id).expect("a valid game id");
    let body: NewGame =
        serde_json::from_value(json!({"home": {"name": "Home"}, "away": {"name": "Away"},
            "extra": {"venue": "Arena", "odds": 1.5}}))
        .expect("a valid new-game body");
    let fingerprint = scorehub::domain::event::fingerprint_of(&body);
    let mut state = body.into_state(game.clone(), 1_000).expect("a valid game");
    let mut records = vec![Record::Created {
        game: game.clone(),
        state: state.clone(),
        fingerprint,
        by: "seed".into(),
        at: 1_000,
    }];
    let events = [
        json!({"event_id": "e-1", "kind": "score", "team": "home", "points": 3}),
        json!({"event_id": "e-2", "kind": "clock", "period": 1, "ms": 720_000, "running": true}),
        json!({"event_id": "e-3", "kind": "set", "patch": {"extra": {"possession": "home", "odds": null}}}),
        json!({"event_id": "e-4", "kind": "status", "status": "live"}),
    ];
    for (i, raw) in events.into_iter().enumerate() {
        let raw: RawEvent = serde_json::from_value(raw).expect("a well-formed event");
        let event = Event::try_from(raw).expect("a valid event");
        let at = 2_000 + i as i64;
        let next: GameState = apply(&state, &event.action, at).expect("the event applies");
        records.push(Record::Event {
            game: game.clone(),
            seq: next.seq,
            fingerprint: event.fingerprint(),
            event,
            by: "seed".into(),
            at,
            diff: patch::diff(&state, &next),
        });
        state = next;
    }
    records
}

/// The bytes of a log holding `records`, written by [`FileLog`] itself.
async fn log_of(records: Vec<Record>) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("a temp dir");
    let log = FileLog::open(dir.path(), FileLogOptions { fsync: false }, |_| Ok(()))
        .expect("a new log opens");
    log.append(records).await.expect("the records are written");
    log.close().await;
    drop(log);
    fs::read(dir.path().join(LOG_FILE_NAME)).expect("the log reads back")
}

/// Log seeds: whole files, record streams (the harness puts them after a
/// header, or frames them), a torn tail, and logs that must be refused.
async fn logs() -> Vec<(String, Vec<u8>)> {
    let one = game_records("nba:lal-bos");
    let header_len = log_of(Vec::new()).await.len();
    let whole = log_of(one.clone()).await;

    let two = {
        let other = game_records("nhl:tor-mtl");
        let mut mixed = Vec::new();
        for (a, b) in one.iter().zip(&other) {
            mixed.push(a.clone());
            mixed.push(b.clone());
        }
        log_of(mixed).await
    };

    let mut torn = whole.clone();
    torn.extend_from_slice(&whole[header_len..header_len + 20]);

    let mut flipped = whole.clone();
    flipped[header_len + 12] ^= 0x5a;

    let mut gap = one.clone();
    gap.remove(2);
    let gap = log_of(gap).await;

    let mut twice = one[..2].to_vec();
    twice.push(one[0].clone());
    let twice = log_of(twice).await;

    // The harness frames chunks of (u16 LE length, payload) itself.
    let mut framed = Vec::new();
    for record in &one {
        let payload = rmp_serde::to_vec_named(record).expect("a record encodes");
        let len = u16::try_from(payload.len()).expect("a seed record is small");
        framed.extend_from_slice(&len.to_le_bytes());
        framed.extend_from_slice(&payload);
    }

    vec![
        ("ok-one-game.log".into(), whole.clone()),
        ("ok-one-game-framed.bin".into(), framed),
        (
            "ok-one-game-records.bin".into(),
            whole[header_len..].to_vec(),
        ),
        ("ok-two-games.log".into(), two),
        ("ok-torn-tail.log".into(), torn),
        // Opens, but holds nothing to replay: neither accepted nor refused.
        ("empty-header-only.log".into(), whole[..header_len].to_vec()),
        ("bad-flipped-byte.log".into(), flipped),
        ("bad-seq-gap.log".into(), gap),
        ("bad-created-twice.log".into(), twice),
        (
            "bad-wrong-header.log".into(),
            b"SCOREHUB-LOG-9\nnot a log".to_vec(),
        ),
    ]
}
