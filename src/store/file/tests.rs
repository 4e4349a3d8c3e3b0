//! The event log's tests: append and replay, torn tails, corruption, failed
//! writes, the index.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::domain::event::fingerprint_of;
use crate::domain::{Event, NewGame, NewTeam, RawEvent, Scalar};

const NO_SYNC: FileLogOptions = FileLogOptions { fsync: false };

fn gid(s: &str) -> GameId {
    GameId::parse(s).unwrap()
}

fn created(game: &GameId) -> Record {
    let body = NewGame {
        home: NewTeam {
            name: "Lakers".into(),
        },
        away: NewTeam {
            name: "Celtics".into(),
        },
        status: None,
        period: Some(1),
        extra: Some(BTreeMap::from([
            ("possession".to_string(), Scalar::Str("home".into())),
            ("fouls".to_string(), Scalar::Int(3)),
            ("temp".to_string(), Scalar::Float(21.5)),
            ("ot".to_string(), Scalar::Bool(false)),
        ])),
    };
    Record::Created {
        game: game.clone(),
        state: body.clone().into_state(game.clone(), 1_000).unwrap(),
        fingerprint: fingerprint_of(&body),
        by: "tester".into(),
        at: 1_000,
    }
}

fn event(game: &GameId, seq: u64) -> Record {
    let raw = if seq.is_multiple_of(2) {
        RawEvent {
            event_id: format!("e{seq}"),
            kind: "score".into(),
            team: Some("home".into()),
            points: Some(2),
            ..RawEvent::default()
        }
    } else {
        RawEvent {
            event_id: format!("e{seq}"),
            kind: "set".into(),
            patch: Some(json!({"extra": {"possession": "away"}})),
            expected_seq: Some(seq - 1),
            ..RawEvent::default()
        }
    };
    let event = Event::try_from(raw).unwrap();
    Record::Event {
        game: game.clone(),
        seq,
        fingerprint: event.fingerprint(),
        event,
        by: "tester".into(),
        at: 1_000 + seq as i64,
        diff: json!({"seq": seq, "home": {"score": seq * 2}}),
    }
}

fn open_collect(dir: &Path) -> Result<(FileLog, Vec<Record>), StoreError> {
    let mut seen = Vec::new();
    let log = FileLog::open(dir, NO_SYNC, |r| {
        seen.push(r);
        Ok(())
    })?;
    Ok((log, seen))
}

fn replayed(dir: &Path) -> Vec<Record> {
    open_collect(dir).unwrap().1
}

/// Byte length of one record's frame.
fn frame_len(r: &Record) -> u64 {
    encode(std::slice::from_ref(r)).unwrap().0.len() as u64
}

/// A log holding `created` and events 1..=n of one game; returns the records.
async fn write_game(dir: &Path, n: u64) -> Vec<Record> {
    let g = gid("nba:lal-bos");
    let mut records = vec![created(&g)];
    records.extend((1..=n).map(|s| event(&g, s)));
    let (log, _) = open_collect(dir).unwrap();
    log.append(records.clone()).await.unwrap();
    log.close().await;
    records
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join(LOG_FILE_NAME)
}

fn file_len(dir: &Path) -> u64 {
    std::fs::metadata(log_path(dir)).unwrap().len()
}

#[test]
fn file_log_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<FileLog>();
}

#[tokio::test]
async fn round_trip_and_reopen_replays_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (gid("nba:a"), gid("nhl:b"));
    let (log, seen) = open_collect(dir.path()).unwrap();
    assert!(seen.is_empty());
    assert!(log.health().is_ok());
    let first = vec![created(&a), created(&b), event(&a, 1)];
    let second = vec![event(&b, 1), event(&a, 2), event(&b, 2)];
    log.append(first.clone()).await.unwrap();
    log.append(Vec::new()).await.unwrap();
    log.append(second.clone()).await.unwrap();
    assert_eq!(
        log.events(&a, 0, 10).await.unwrap(),
        vec![event(&a, 1), event(&a, 2)]
    );
    log.close().await;
    drop(log);

    let all: Vec<Record> = first.into_iter().chain(second).collect();
    let bytes = std::fs::read(log_path(dir.path())).unwrap();
    assert!(bytes.starts_with(b"SCOREHUB-LOG-1\n"));
    assert_eq!(
        bytes.len() as u64,
        MAGIC_LEN + all.iter().map(frame_len).sum::<u64>()
    );
    let (log, seen) = open_collect(dir.path()).unwrap();
    assert_eq!(seen, all);
    // The index is rebuilt by replay.
    assert_eq!(
        log.events(&b, 0, 10).await.unwrap(),
        vec![event(&b, 1), event(&b, 2)]
    );
    // Appends after a reopen follow the replayed records.
    log.append(vec![event(&a, 3)]).await.unwrap();
    log.close().await;
    drop(log);
    let seen = replayed(dir.path());
    assert_eq!(seen.len(), all.len() + 1);
    assert_eq!(seen.last(), Some(&event(&a, 3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_all_replay_in_per_task_order() {
    const TASKS: usize = 50;
    const PER_TASK: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    let log =
        Arc::new(FileLog::open(dir.path(), FileLogOptions { fsync: true }, |_| Ok(())).unwrap());
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            let g = gid(&format!("t:task{t}"));
            log.append(vec![created(&g)]).await.unwrap();
            let mut seq = 1;
            while seq <= PER_TASK {
                // Mix single-record calls with multi-record calls.
                let n = if seq.is_multiple_of(3) {
                    3.min(PER_TASK - seq + 1)
                } else {
                    1
                };
                let batch = (seq..seq + n).map(|s| event(&g, s)).collect();
                log.append(batch).await.unwrap();
                seq += n;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for t in 0..TASKS {
        let g = gid(&format!("t:task{t}"));
        let evs = log.events(&g, 0, 1000).await.unwrap();
        let want: Vec<Record> = (1..=PER_TASK).map(|s| event(&g, s)).collect();
        assert_eq!(evs, want);
    }
    log.close().await;
    drop(log);

    let seen = replayed(dir.path());
    assert_eq!(seen.len(), TASKS * (PER_TASK as usize + 1));
    let mut next: HashMap<GameId, u64> = HashMap::new();
    for r in seen {
        let n = next.entry(r.game().clone()).or_insert(0);
        match r {
            Record::Created { .. } => assert_eq!(*n, 0, "created comes first"),
            Record::Event { seq, .. } => assert_eq!(seq, *n, "events in order"),
        }
        *n += 1;
    }
    assert!(next.values().all(|n| *n == PER_TASK + 1));
}

/// Damages the tail with `cut`, then checks that reopening drops only the
/// last record and that the log keeps working.
async fn torn_tail_case(cut: impl FnOnce(&Path, u64)) {
    let dir = tempfile::tempdir().unwrap();
    let records = write_game(dir.path(), 3).await;
    let last_start = file_len(dir.path()) - frame_len(&records[3]);
    cut(&log_path(dir.path()), last_start);

    let (log, seen) = open_collect(dir.path()).unwrap();
    assert_eq!(seen, records[..3]);
    assert_eq!(file_len(dir.path()), last_start, "torn tail truncated");
    let g = gid("nba:lal-bos");
    log.append(vec![event(&g, 3), event(&g, 4)]).await.unwrap();
    assert_eq!(
        log.events(&g, 2, 10).await.unwrap(),
        vec![event(&g, 3), event(&g, 4)]
    );
    log.close().await;
    drop(log);
    let mut want = records[..3].to_vec();
    want.extend([event(&g, 3), event(&g, 4)]);
    assert_eq!(replayed(dir.path()), want);
}

fn truncate_to(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn flip_byte(path: &Path, at: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x5a], at).unwrap();
}

#[tokio::test]
async fn torn_tail_inside_header_is_dropped() {
    torn_tail_case(|path, last| truncate_to(path, last + 5)).await;
}

#[tokio::test]
async fn torn_tail_inside_payload_is_dropped() {
    torn_tail_case(|path, last| truncate_to(path, last + HEADER_LEN as u64 + 10)).await;
}

#[tokio::test]
async fn torn_tail_with_bad_checksum_at_eof_is_dropped() {
    torn_tail_case(|path, last| flip_byte(path, last + HEADER_LEN as u64 + 3)).await;
}

#[tokio::test]
async fn garbage_after_the_last_record_is_dropped() {
    for garbage in [
        &b"garbage bytes from nowhere"[..],
        &[0u8; 4096][..],
        &[0xffu8; 3][..],
        // A plausible length that runs past the end of the file.
        &[0x10, 0, 0, 0, 1, 2, 3, 4, 5][..],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let records = write_game(dir.path(), 2).await;
        let good = file_len(dir.path());
        let f = OpenOptions::new()
            .append(true)
            .open(log_path(dir.path()))
            .unwrap();
        f.write_all_at(garbage, good).unwrap();
        drop(f);

        let (log, seen) = open_collect(dir.path()).unwrap();
        assert_eq!(seen, records);
        assert_eq!(file_len(dir.path()), good);
        let g = gid("nba:lal-bos");
        log.append(vec![event(&g, 3)]).await.unwrap();
        log.close().await;
        drop(log);
        assert_eq!(replayed(dir.path()).last(), Some(&event(&g, 3)));
    }
}

#[tokio::test]
async fn flipped_byte_in_a_middle_record_is_corrupt() {
    // Inside the payload, inside the checksum, and in the length field
    // (which makes the record run past the end of the file).
    for (within, name) in [(HEADER_LEN as u64 + 7, "payload"), (5, "crc"), (2, "len")] {
        let dir = tempfile::tempdir().unwrap();
        let records = write_game(dir.path(), 3).await;
        let bad = MAGIC_LEN + frame_len(&records[0]) + frame_len(&records[1]);
        flip_byte(&log_path(dir.path()), bad + within);
        let before = file_len(dir.path());

        let err = open_collect(dir.path()).unwrap_err();
        match &err {
            StoreError::Corrupt { file, offset, .. } => {
                assert_eq!(*offset, bad, "{name}: {err}");
                assert!(file.ends_with(LOG_FILE_NAME));
            }
            other => panic!("{name}: expected Corrupt, got {other:?}"),
        }
        assert!(err.to_string().contains(&format!("byte offset {bad}")));
        assert_eq!(file_len(dir.path()), before, "{name}: nothing truncated");
    }
}

#[tokio::test]
async fn on_record_error_stops_open_naming_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_game(dir.path(), 2).await;
    let second = MAGIC_LEN + frame_len(&records[0]);
    let mut n = 0;
    let err = FileLog::open(dir.path(), NO_SYNC, |_| {
        n += 1;
        if n == 2 {
            Err("unknown game".into())
        } else {
            Ok(())
        }
    })
    .unwrap_err();
    match err {
        StoreError::Corrupt { offset, reason, .. } => {
            assert_eq!(offset, second);
            assert!(reason.contains("unknown game"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The failed open released the file.
    assert_eq!(replayed(dir.path()), records);
}

#[test]
fn wrong_magic_header_is_refused() {
    for content in [
        &b"SCOREHUB-LOG-9\nwhatever"[..],
        b"hello",
        b"{\"json\": true}\n",
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(log_path(dir.path()), content).unwrap();
        let err = open_collect(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, StoreError::Corrupt { offset: 0, .. }),
            "{err:?}"
        );
        assert!(msg.contains("not a scorehub event log"), "{msg}");
        assert!(msg.contains("SCOREHUB-LOG-1"), "{msg}");
        assert_eq!(std::fs::read(log_path(dir.path())).unwrap(), content);
    }
}

#[tokio::test]
async fn header_cut_short_at_creation_is_completed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(log_path(dir.path()), &MAGIC[..6]).unwrap();
    let (log, seen) = open_collect(dir.path()).unwrap();
    assert!(seen.is_empty());
    let g = gid("nba:x");
    log.append(vec![created(&g)]).await.unwrap();
    log.close().await;
    drop(log);
    assert_eq!(replayed(dir.path()), vec![created(&g)]);
}

#[tokio::test]
async fn events_paginate_with_since_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (gid("nba:a"), gid("nba:b"));
    let (log, _) = open_collect(dir.path()).unwrap();
    log.append(vec![created(&a), created(&b)]).await.unwrap();
    for s in 1..=10 {
        log.append(vec![event(&a, s), event(&b, s)]).await.unwrap();
    }
    let seqs = |v: Vec<Record>| {
        v.into_iter()
            .map(|r| match r {
                Record::Event { seq, .. } => seq,
                Record::Created { .. } => panic!("only events are listed"),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(log.events(&a, 0, 3).await.unwrap()), [1, 2, 3]);
    assert_eq!(seqs(log.events(&a, 3, 3).await.unwrap()), [4, 5, 6]);
    assert_eq!(seqs(log.events(&a, 8, 100).await.unwrap()), [9, 10]);
    assert!(log.events(&a, 10, 5).await.unwrap().is_empty());
    assert!(log.events(&a, 0, 0).await.unwrap().is_empty());
    assert!(log.events(&gid("nba:none"), 0, 5).await.unwrap().is_empty());
    assert_eq!(log.events(&b, 4, 1).await.unwrap(), vec![event(&b, 5)]);
    // Reads still work after close.
    log.close().await;
    assert_eq!(seqs(log.events(&b, 9, 5).await.unwrap()), [10]);
}

#[tokio::test]
async fn game_records_are_one_games_creation_then_events() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (gid("nba:a"), gid("nba:b"));
    let (log, _) = open_collect(dir.path()).unwrap();
    assert!(log.game_records(&a).await.unwrap().is_empty());
    log.append(vec![created(&a), event(&a, 1), created(&b)])
        .await
        .unwrap();
    for s in 1..=5 {
        log.append(vec![event(&b, s), event(&a, s + 1)])
            .await
            .unwrap();
    }
    let want_a: Vec<Record> = std::iter::once(created(&a))
        .chain((1..=6).map(|s| event(&a, s)))
        .collect();
    let want_b: Vec<Record> = std::iter::once(created(&b))
        .chain((1..=5).map(|s| event(&b, s)))
        .collect();
    assert_eq!(log.game_records(&a).await.unwrap(), want_a);
    assert_eq!(log.game_records(&b).await.unwrap(), want_b);
    assert!(log.game_records(&gid("nba:none")).await.unwrap().is_empty());
    log.close().await;
    drop(log);

    // The index (creation included) is rebuilt by replay.
    let (log, _) = open_collect(dir.path()).unwrap();
    assert_eq!(log.game_records(&a).await.unwrap(), want_a);
    log.append(vec![event(&b, 6)]).await.unwrap();
    let mut want_b = want_b;
    want_b.push(event(&b, 6));
    assert_eq!(log.game_records(&b).await.unwrap(), want_b);
}

/// Two games with interleaved records in the log; returns what each holds.
async fn write_two_games(dir: &Path) -> (Vec<Record>, Vec<Record>) {
    let (a, b) = (gid("nba:a"), gid("nba:b"));
    let mut want_a = vec![created(&a)];
    let mut want_b = vec![created(&b)];
    let (log, _) = open_collect(dir).unwrap();
    log.append(vec![created(&a), created(&b)]).await.unwrap();
    for s in 1..=20 {
        log.append(vec![event(&a, s), event(&b, s)]).await.unwrap();
        want_a.push(event(&a, s));
        want_b.push(event(&b, s));
    }
    log.close().await;
    (want_a, want_b)
}

fn index_file(dir: &Path, game: &str) -> PathBuf {
    IndexDir::create(dir).unwrap().path_of(&gid(game))
}

/// An append that would break a game's sequence is refused whole and
/// leaves nothing behind; the others in its group are written.
#[tokio::test]
async fn appends_out_of_sequence_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (gid("nba:a"), gid("nba:b"));
    let (log, _) = open_collect(dir.path()).unwrap();
    log.append(vec![created(&a), event(&a, 1)]).await.unwrap();
    let refused = [
        (vec![event(&a, 3)], "seq 3 does not follow seq 1"),
        (vec![event(&a, 1)], "seq 1 does not follow seq 1"),
        (
            vec![event(&a, 2), event(&a, 2)],
            "seq 2 does not follow seq 2",
        ),
        (vec![created(&b), created(&b)], "already created"),
        (vec![created(&a)], "already created"),
        (vec![event(&b, 1 << 62)], "does not follow seq 0"),
    ];
    for (records, why) in refused {
        let err = log.append(records).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Unavailable(m) if m.contains(why)),
            "{why}: {err:?}"
        );
    }
    // Concurrent appends, refused and accepted side by side.
    let (ok, bad) = tokio::join!(
        log.append(vec![event(&a, 2), created(&b)]),
        log.append(vec![event(&a, 9)]),
    );
    ok.unwrap();
    bad.unwrap_err();
    log.append(vec![event(&b, 1), event(&a, 3)]).await.unwrap();
    log.close().await;
    drop(log);
    let want = vec![
        created(&a),
        event(&a, 1),
        event(&a, 2),
        created(&b),
        event(&b, 1),
        event(&a, 3),
    ];
    assert_eq!(replayed(dir.path()), want);
}

/// The index places records by seq, so the log itself refuses seqs the
/// game's actor would never hand out, whatever `on_record` accepts.
#[test]
fn a_gap_a_repeat_or_a_second_creation_is_corruption() {
    let g = gid("nba:a");
    let cases = [
        (
            vec![created(&g), event(&g, 1), event(&g, 3)],
            "gap or repeat",
        ),
        (
            vec![created(&g), event(&g, 1), event(&g, 1)],
            "gap or repeat",
        ),
        (
            vec![event(&g, 1), event(&g, 2), event(&g, 1 << 62)],
            "gap or repeat",
        ),
        (
            vec![created(&g), event(&g, 1), created(&g)],
            "created a second time",
        ),
    ];
    for (records, why) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = MAGIC.to_vec();
        bytes.extend(encode(&records).unwrap().0);
        std::fs::write(log_path(dir.path()), bytes).unwrap();
        let bad_at = MAGIC_LEN + records[..2].iter().map(frame_len).sum::<u64>();
        let err = open_collect(dir.path()).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { offset, reason, .. } if *offset == bad_at && reason.contains(why)),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn a_missing_index_is_rebuilt_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (want_a, want_b) = write_two_games(dir.path()).await;
    let files = std::fs::read_dir(dir.path().join(INDEX_DIR_NAME))
        .unwrap()
        .count();
    assert_eq!(files, 2, "one index file per game");
    let before = std::fs::read(index_file(dir.path(), "nba:a")).unwrap();
    assert_eq!(before.len(), 16 * 22, "header and seqs 0..=20");

    // As after an upgrade from a version without it, or an operator's rm.
    std::fs::remove_dir_all(dir.path().join(INDEX_DIR_NAME)).unwrap();
    let (log, seen) = open_collect(dir.path()).unwrap();
    assert_eq!(seen.len(), 42);
    assert_eq!(
        std::fs::read(index_file(dir.path(), "nba:a")).unwrap(),
        before
    );
    assert_eq!(log.game_records(&gid("nba:a")).await.unwrap(), want_a);
    assert_eq!(log.game_records(&gid("nba:b")).await.unwrap(), want_b);
    assert_eq!(
        log.events(&gid("nba:b"), 17, 2).await.unwrap(),
        want_b[18..20]
    );
}

#[tokio::test]
async fn an_index_that_does_not_match_the_log_is_repaired_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (want_a, want_b) = write_two_games(dir.path()).await;
    let (path_a, path_b) = (
        index_file(dir.path(), "nba:a"),
        index_file(dir.path(), "nba:b"),
    );
    let good_a = std::fs::read(&path_a).unwrap();
    let good_b = std::fs::read(&path_b).unwrap();
    // a: its last entries lost (as with the page cache on power failure).
    std::fs::write(&path_a, &good_a[..good_a.len() - 48]).unwrap();
    // b: entries past its last seq, left by a group that failed.
    let mut longer = good_b.clone();
    longer.extend_from_slice(&[7u8; 32]);
    std::fs::write(&path_b, &longer).unwrap();

    let (log, _) = open_collect(dir.path()).unwrap();
    assert_eq!(std::fs::read(&path_a).unwrap(), good_a, "rebuilt");
    assert_eq!(std::fs::read(&path_b).unwrap(), good_b, "cut back");
    assert_eq!(log.game_records(&gid("nba:a")).await.unwrap(), want_a);
    assert_eq!(log.game_records(&gid("nba:b")).await.unwrap(), want_b);
    // The next event of b lands after its last one.
    log.append(vec![event(&gid("nba:b"), 21)]).await.unwrap();
    let mut want_b = want_b;
    want_b.push(event(&gid("nba:b"), 21));
    assert_eq!(log.game_records(&gid("nba:b")).await.unwrap(), want_b);
}

#[tokio::test]
async fn a_read_through_a_wrong_entry_has_the_index_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (want_a, want_b) = write_two_games(dir.path()).await;
    let (log, _) = open_collect(dir.path()).unwrap();
    let (path_a, path_b) = (
        index_file(dir.path(), "nba:a"),
        index_file(dir.path(), "nba:b"),
    );
    let good_a = std::fs::read(&path_a).unwrap();
    // The entry of seq 5 zeroed; replay only checks first and last.
    let f = OpenOptions::new().write(true).open(&path_a).unwrap();
    f.write_all_at(&[0u8; 16], 16 * 6).unwrap();
    assert_eq!(log.events(&gid("nba:a"), 3, 4).await.unwrap(), want_a[4..8]);
    assert_eq!(std::fs::read(&path_a).unwrap(), good_a, "rebuilt");
    // Entries that point at the other game's records.
    std::fs::copy(&path_a, &path_b).unwrap();
    assert_eq!(log.game_records(&gid("nba:b")).await.unwrap(), want_b);
    // Writes go on into the rebuilt files.
    log.append(vec![event(&gid("nba:b"), 21)]).await.unwrap();
    assert_eq!(
        log.events(&gid("nba:b"), 20, 5).await.unwrap(),
        vec![event(&gid("nba:b"), 21)]
    );

    // Once the log is closed nothing rebuilds it: a clear error.
    log.close().await;
    std::fs::write(&path_a, b"").unwrap();
    let err = log.game_records(&gid("nba:a")).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("index of game nba:a"), "{err}");
}

#[tokio::test]
async fn game_records_detect_a_record_changed_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_game(dir.path(), 2).await;
    let (log, _) = open_collect(dir.path()).unwrap();
    let second = MAGIC_LEN + frame_len(&records[0]);
    flip_byte(&log_path(dir.path()), second + HEADER_LEN as u64 + 3);
    let err = log.game_records(&gid("nba:lal-bos")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { offset, .. } if offset == second),
        "{err:?}"
    );
}

#[tokio::test]
async fn append_after_close_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let g = gid("nba:a");
    let (log, _) = open_collect(dir.path()).unwrap();
    log.append(vec![created(&g)]).await.unwrap();
    log.close().await;
    log.close().await;
    let err = log.append(vec![event(&g, 1)]).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    drop(log);
    assert_eq!(replayed(dir.path()), vec![created(&g)]);
}

#[test]
fn uncreatable_dir_is_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let err = open_collect(&blocker.join("data")).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("SCOREHUB_STORAGE__DIR"), "{err}");
}

#[test]
fn second_open_of_the_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, _) = open_collect(dir.path()).unwrap();
    let err = open_collect(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("in use"), "{err}");
}

#[tokio::test]
async fn oversized_record_is_refused_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let g = gid("nba:a");
    let (log, _) = open_collect(dir.path()).unwrap();
    let mut big = event(&g, 1);
    if let Record::Event { diff, .. } = &mut big {
        *diff = json!({"extra": {"blob": "x".repeat(MAX_RECORD_BYTES)}});
    }
    let err = log.append(vec![created(&g), big]).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    log.close().await;
    assert_eq!(file_len(dir.path()), MAGIC_LEN);
}

/// A writer whose file handle is read-only (as on a file system remounted
/// read-only), over a fresh log in `dir`.
fn failing_writer(dir: &Path) -> (Arc<Shared>, Writer) {
    // Not through `FileLog::open`: its writer thread, once dropped, would
    // hold the file's lock a moment longer than the test waits.
    let path = log_path(dir);
    std::fs::write(&path, MAGIC).unwrap();
    let read_only = Arc::new(File::open(&path).unwrap());
    let shared = Arc::new(Shared {
        path,
        file: Arc::clone(&read_only),
        index: IndexDir::create(dir).unwrap(),
        games: RwLock::new(HashMap::new()),
        health: Mutex::new(None),
        probe_queued: AtomicBool::new(false),
    });
    let writer = Writer {
        shared: Arc::clone(&shared),
        file: read_only,
        len: MAGIC_LEN,
        dirty_tail: false,
        failed_bytes: None,
        fsync: true,
        buf: Vec::new(),
        index: IndexWriter::new(IndexDir::create(dir).unwrap()),
    };
    (shared, writer)
}

/// An append request for `records`, and where its answer arrives.
fn request(records: Vec<Record>) -> (AppendReq, oneshot::Receiver<Result<(), StoreError>>) {
    AppendReq::new(&records).unwrap()
}

/// A write that fails (here: the handle is read-only, as on a file system
/// remounted read-only) is refused, leaves nothing behind, shows in health,
/// and the writer recovers once writing works again.
#[test]
fn failed_write_is_refused_reported_and_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let g = gid("nba:a");
    let (shared, mut writer) = failing_writer(dir.path());
    let path = log_path(dir.path());

    let (req, mut answer) = request(vec![created(&g), event(&g, 1)]);
    writer.commit(&mut vec![req]);
    let err = answer.try_recv().unwrap().unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(shared.health.lock().unwrap().is_some());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), MAGIC_LEN);
    assert!(shared.games.read().unwrap().is_empty());

    // "Space returns": writing works again.
    writer.file = Arc::new(OpenOptions::new().write(true).open(&path).unwrap());
    let (req, mut answer) = request(vec![created(&g), event(&g, 1)]);
    writer.commit(&mut vec![req]);
    answer.try_recv().unwrap().unwrap();
    assert!(shared.health.lock().unwrap().is_none());
    let tail = Tail {
        created: true,
        last_seq: 1,
    };
    assert_eq!(shared.tail(&g), Some(tail));
    drop(writer);
    assert_eq!(replayed(dir.path()), vec![created(&g), event(&g, 1)]);
}

/// A failed write whose bytes could not be cut off is cut off at
/// shutdown at the latest: its records were refused, and the next start
/// must not replay them.
#[test]
fn shutdown_cuts_off_a_failed_write_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let g = gid("nba:a");
    let (_shared, mut writer) = failing_writer(dir.path());
    let path = log_path(dir.path());
    // Whole records past the last good one, as a write that failed at
    // its sync and could not be cut back leaves them.
    let (bytes, _) = encode(&[created(&g), event(&g, 1)]).unwrap();
    let file = OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut &file, &bytes).unwrap();
    writer.dirty_tail = true;
    writer.file = Arc::new(file);
    writer.shutdown();
    drop(writer);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), MAGIC_LEN);
    assert!(replayed(dir.path()).is_empty());
}

/// Within one group, only the requests out of sequence are refused; the
/// ones after them that fit are written.
#[test]
fn a_group_refuses_only_its_requests_out_of_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let g = gid("nba:a");
    let (shared, mut writer) = failing_writer(dir.path());
    let path = log_path(dir.path());
    writer.file = Arc::new(OpenOptions::new().write(true).open(&path).unwrap());
    let (first, mut first_answer) = request(vec![created(&g), event(&g, 1)]);
    let (gap, mut gap_answer) = request(vec![event(&g, 3)]);
    let (next, mut next_answer) = request(vec![event(&g, 2)]);
    writer.commit(&mut vec![first, gap, next]);
    first_answer.try_recv().unwrap().unwrap();
    let err = gap_answer.try_recv().unwrap().unwrap_err();
    assert!(
        err.to_string().contains("seq 3 does not follow seq 1"),
        "{err}"
    );
    next_answer.try_recv().unwrap().unwrap();
    let tail = Tail {
        created: true,
        last_seq: 2,
    };
    assert_eq!(shared.tail(&g), Some(tail));
    drop(writer);
    assert_eq!(
        replayed(dir.path()),
        vec![created(&g), event(&g, 1), event(&g, 2)]
    );
}

/// After a failed write, a probe keeps the node unhealthy while writing
/// still fails, clears the reason once it works, and leaves the log as it
/// was either way.
#[test]
fn probe_clears_health_once_writing_works_again() {
    let dir = tempfile::tempdir().unwrap();
    let g = gid("nba:a");
    let (shared, mut writer) = failing_writer(dir.path());
    let path = log_path(dir.path());
    let (req, _answer) = request(vec![created(&g), event(&g, 1)]);
    writer.commit(&mut vec![req]);
    assert!(shared.health.lock().unwrap().is_some());

    shared.probe_queued.store(true, Ordering::Release);
    writer.probe();
    let reason = shared.health.lock().unwrap().clone();
    assert!(
        reason.as_deref().is_some_and(|r| r.contains(LOG_FILE_NAME)),
        "still unhealthy, naming the log: {reason:?}"
    );
    assert!(!shared.probe_queued.load(Ordering::Acquire));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), MAGIC_LEN);

    writer.file = Arc::new(OpenOptions::new().write(true).open(&path).unwrap());
    writer.probe();
    assert!(shared.health.lock().unwrap().is_none());
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        MAGIC_LEN,
        "the probe's bytes are cut off"
    );
    // A probe while healthy writes nothing.
    writer.file = Arc::new(File::open(&path).unwrap());
    writer.probe();
    assert!(shared.health.lock().unwrap().is_none());

    writer.file = Arc::new(OpenOptions::new().write(true).open(&path).unwrap());
    let (req, mut answer) = request(vec![created(&g), event(&g, 1)]);
    writer.commit(&mut vec![req]);
    answer.try_recv().unwrap().unwrap();
    drop(writer);
    assert_eq!(replayed(dir.path()), vec![created(&g), event(&g, 1)]);
}

fn compact_path(dir: &Path) -> PathBuf {
    dir.join(COMPACT_FILE_NAME)
}

/// Compaction drops every record of the games it is given, keeps the others
/// byte for byte (their index rebuilt for the new offsets), and the log
/// goes on: appends continue, a dropped id can start again, and a stale
/// index file of a dropped game (a crash before it was removed) is harmless.
#[tokio::test]
async fn compaction_drops_whole_games_and_keeps_the_rest_readable() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (gid("nba:a"), gid("nba:b"), gid("nhl:c"));
    let mut all = vec![created(&a), created(&b)];
    for seq in 1..=20 {
        all.push(event(&a, seq));
        if seq <= 5 {
            all.push(event(&b, seq));
        }
    }
    all.push(created(&c));
    let (log, _) = open_collect(dir.path()).unwrap();
    log.append(all.clone()).await.unwrap();
    let before = file_len(dir.path());
    let a_index = log.shared.index.path_of(&a);
    let stale_index = std::fs::read(&a_index).unwrap();

    let mut seen = Vec::new();
    let (log, done) = log
        .compact(&HashSet::from([a.clone()]), |r| {
            seen.push(r);
            Ok(())
        })
        .unwrap();
    let done = done.expect("compacted");
    let kept: Vec<Record> = all.iter().filter(|r| *r.game() != a).cloned().collect();
    assert_eq!(seen, kept, "the reopen replays exactly the records kept");
    assert_eq!(
        done,
        Compaction {
            games_dropped: 1,
            records_before: 28,
            records_after: 7,
            bytes_before: before,
            bytes_after: MAGIC_LEN + kept.iter().map(frame_len).sum::<u64>(),
        }
    );
    assert_eq!(file_len(dir.path()), done.bytes_after);
    assert!(!compact_path(dir.path()).exists(), "no leftover");
    assert!(!a_index.exists(), "the dropped game's index is removed");
    assert!(
        FileLog::open(dir.path(), NO_SYNC, |_| Ok(())).is_err(),
        "the compacted log is locked by its owner"
    );

    // b's records moved: its index is rebuilt and reads find them.
    let want_b: Vec<Record> = (1..=5).map(|s| event(&b, s)).collect();
    assert_eq!(log.events(&b, 0, 100).await.unwrap(), want_b);
    assert_eq!(log.game_records(&c).await.unwrap(), vec![created(&c)]);
    assert!(log.events(&a, 0, 100).await.unwrap().is_empty());
    assert!(log.game_records(&a).await.unwrap().is_empty());

    // A crash between the rename and the index cleanup would have left a's
    // old index file: a new life of the id writes over it.
    std::fs::write(&a_index, &stale_index).unwrap();
    log.append(vec![event(&b, 6), created(&a), event(&a, 1)])
        .await
        .unwrap();
    assert_eq!(log.events(&a, 0, 100).await.unwrap(), vec![event(&a, 1)]);
    log.close().await;
    drop(log);

    let (log, seen) = open_collect(dir.path()).unwrap();
    let mut want = kept;
    want.extend([event(&b, 6), created(&a), event(&a, 1)]);
    assert_eq!(seen, want);
    assert_eq!(log.events(&a, 0, 100).await.unwrap(), vec![event(&a, 1)]);
    assert_eq!(log.events(&b, 4, 100).await.unwrap().len(), 2);
}

/// A crash before the rename leaves the old log complete and an unfinished
/// compacted file beside it: the next open removes the file and replays the
/// old log, all of it.
#[tokio::test]
async fn a_leftover_compaction_is_removed_at_open_and_the_log_kept() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_game(dir.path(), 4).await;
    let before = std::fs::read(log_path(dir.path())).unwrap();
    // Half a compacted copy: the header and part of a record.
    let mut partial = before[..before.len() / 2].to_vec();
    partial.truncate(partial.len().max(MAGIC.len() + 3));
    std::fs::write(compact_path(dir.path()), &partial).unwrap();

    let (log, seen) = open_collect(dir.path()).unwrap();
    assert_eq!(seen, records);
    assert!(
        !compact_path(dir.path()).exists(),
        "the leftover is removed"
    );
    assert_eq!(std::fs::read(log_path(dir.path())).unwrap(), before);
    log.close().await;
}

/// When the compacted file cannot be written, the old log stays and opens
/// again as it was.
#[tokio::test]
async fn a_compaction_that_cannot_write_keeps_the_log_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_game(dir.path(), 3).await;
    let before = std::fs::read(log_path(dir.path())).unwrap();
    let (log, _) = open_collect(dir.path()).unwrap();
    // Something in the way: the new file cannot be created.
    std::fs::create_dir(compact_path(dir.path())).unwrap();
    let mut seen = Vec::new();
    let (log, done) = log
        .compact(&HashSet::from([gid("nba:lal-bos")]), |r| {
            seen.push(r);
            Ok(())
        })
        .unwrap();
    assert_eq!(done, None);
    assert_eq!(seen, records);
    assert_eq!(std::fs::read(log_path(dir.path())).unwrap(), before);
    log.append(vec![event(&gid("nba:lal-bos"), 4)])
        .await
        .unwrap();
    log.close().await;
    drop(log);
    std::fs::remove_dir(compact_path(dir.path())).unwrap();
    assert_eq!(replayed(dir.path()).len(), records.len() + 1);
}

/// Scans `dir` checking the index; answers the scan and the offsets handed on.
fn scan_all(dir: &Path) -> (Scan, Vec<u64>) {
    let mut offsets = Vec::new();
    let scanned = scan(dir, ScanOptions { index: true }, |at, _| offsets.push(at)).unwrap();
    (scanned, offsets)
}

#[tokio::test]
async fn scan_of_a_clean_log_finds_nothing_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_game(dir.path(), 5).await;
    let before = std::fs::read(log_path(dir.path())).unwrap();
    let (s, offsets) = scan_all(dir.path());
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    assert_eq!((s.records, s.games, s.index_files), (6, 1, 1));
    assert_eq!(offsets.len(), records.len());
    assert_eq!(offsets[0], MAGIC_LEN);
    assert!(!s.in_use);
    assert_eq!(std::fs::read(log_path(dir.path())).unwrap(), before);
}

#[tokio::test]
async fn scan_reports_every_damaged_record_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_game(dir.path(), 8).await;
    let at = |i: usize| MAGIC_LEN + records[..i].iter().map(frame_len).sum::<u64>();
    // A payload byte of record 2, the length of record 5.
    flip_byte(&log_path(dir.path()), at(2) + HEADER_LEN as u64 + 3);
    flip_byte(&log_path(dir.path()), at(5) + 2);
    let (s, offsets) = scan_all(dir.path());
    let found: Vec<(ProblemKind, Option<u64>)> =
        s.problems.iter().map(|p| (p.kind, p.offset)).collect();
    // The damage, then what it does to the game's seqs (event 2 is gone).
    assert_eq!(
        found[..3],
        [
            (ProblemKind::Damaged, Some(at(2))),
            (ProblemKind::Inconsistent, Some(at(3))),
            (ProblemKind::Damaged, Some(at(5))),
        ],
        "{:?}",
        s.problems
    );
    assert!(
        s.problems[1].detail.contains("a gap or a repeat"),
        "{:?}",
        s.problems[1]
    );
    assert!(
        s.problems[2].detail.contains(&format!("at byte {}", at(6))),
        "{:?}",
        s.problems[2]
    );
    assert_eq!(s.records, 7, "every intact record is read");
    assert_eq!(
        offsets,
        [at(0), at(1)],
        "a broken game's later records are not handed on"
    );
}

#[test]
fn scan_reports_contradictions_at_their_offsets() {
    let g = gid("nba:a");
    let cases = [
        (
            vec![created(&g), event(&g, 1), event(&g, 3)],
            "a gap or a repeat",
        ),
        (
            vec![created(&g), event(&g, 1), created(&g)],
            "created a second time",
        ),
        (
            vec![event(&gid("nba:b"), 1), created(&g), event(&g, 1)],
            "before the game is created",
        ),
    ];
    for (records, why) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = MAGIC.to_vec();
        bytes.extend(encode(&records).unwrap().0);
        std::fs::write(log_path(dir.path()), bytes).unwrap();
        let s = scan(dir.path(), ScanOptions::default(), |_, _| {}).unwrap();
        let bad_at = if why.contains("before") {
            MAGIC_LEN
        } else {
            MAGIC_LEN + records[..2].iter().map(frame_len).sum::<u64>()
        };
        assert_eq!(s.problems.len(), 1, "{why}: {:?}", s.problems);
        let p = &s.problems[0];
        assert_eq!(
            (p.kind, p.offset),
            (ProblemKind::Inconsistent, Some(bad_at)),
            "{p:?}"
        );
        assert!(p.detail.contains(why), "{p:?}");
    }
}

#[tokio::test]
async fn scan_sees_a_torn_tail_and_a_running_hub() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_game(dir.path(), 3).await;
    let last = MAGIC_LEN + records[..3].iter().map(frame_len).sum::<u64>();
    truncate_to(&log_path(dir.path()), last + 5);
    let (log, _) = open_collect(dir.path()).unwrap();
    assert_eq!(file_len(dir.path()), last, "open drops the torn tail");
    truncate_to(&log_path(dir.path()), last + 5);
    let (s, _) = scan_all(dir.path());
    assert!(s.in_use, "the open log's lock is seen");
    assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
    assert_eq!(
        (s.problems[0].kind, s.problems[0].offset),
        (ProblemKind::TornTail, Some(last))
    );
    assert_eq!(file_len(dir.path()), last + 5, "scan truncates nothing");
    log.close().await;
}
