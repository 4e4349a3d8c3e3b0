//! The operators' commands of the real binary: `scorehub check` (a valid
//! config, a typo, an unusable storage dir), `scorehub log verify` (a clean
//! log a hub wrote, a flipped byte, a truncated tail, an index entry
//! pointing elsewhere, never changing the files) and `scorehub games list`
//! (from a hub's log, and from Redis in cluster mode).

use std::path::{Path, PathBuf};
use std::time::Duration;

use scorehub::testing::RedisServer;
use serde_json::{Value, json};

use crate::common::{BinaryHub, CliOutput, SECRET, TestHub, run_cli, score};

const LAL: &str = "nba:2026-11-22-lal-bos";
const NYK: &str = "nba:2026-11-22-nyk-mia";
const TOR: &str = "nhl:2026-11-22-tor-mtl";

/// Writes `text` to `<dir>/<name>` and answers its path as a string.
fn write_config(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing the config file");
    path.to_string_lossy().into_owned()
}

/// `scorehub ARGS` with storage in `storage` and nothing else configured,
/// run from the temp dir (`storage` may not exist, or be a file).
fn run_on(storage: &Path, args: &[&str]) -> CliOutput {
    let dir = storage.to_string_lossy().into_owned();
    run_cli(
        args,
        &[("SCOREHUB_STORAGE__DIR", &dir)],
        &std::env::temp_dir(),
    )
}

fn code(out: &CliOutput) -> Option<i32> {
    out.status.code()
}

/// Runs a hub on `dir`, creates three games, posts events (one game goes
/// final), stops it with SIGTERM; answers the states the hub served.
async fn hub_writes_games(dir: &Path) -> Vec<Value> {
    let mut hub = BinaryHub::spawn(dir, &[]);
    for id in [LAL, NYK, TOR] {
        hub.put_game(id).await;
    }
    for i in 1..=4 {
        hub.post_ok(LAL, score(&format!("l{i}"), "home", 2)).await;
    }
    hub.post_ok(NYK, score("n1", "away", 3)).await;
    let status = json!({"event_id": "n2", "kind": "status", "status": "final"});
    hub.post_ok(NYK, status).await;
    let mut states = Vec::new();
    for id in [LAL, NYK, TOR] {
        states.push(hub.get_game(id).await);
    }
    hub.sigterm();
    let exit = hub.wait_exit(Duration::from_secs(15)).await;
    assert!(exit.success(), "the hub stops cleanly: {exit}");
    states
}

/// `(offset, payload length)` of every record in `<dir>/events.log`, read
/// with the documented framing (15-byte header, then u32 length, u32 crc,
/// payload): the test's own reading, independent of the hub's code.
fn records(dir: &Path) -> Vec<(u64, u32)> {
    let bytes = std::fs::read(dir.join("events.log")).expect("reading the log");
    assert!(bytes.starts_with(b"SCOREHUB-LOG-1\n"), "the log's header");
    let mut at = 15;
    let mut out = Vec::new();
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        out.push((at as u64, len));
        at += 8 + len as usize;
    }
    assert_eq!(at, bytes.len(), "the records cover the log exactly");
    out
}

/// Every file under `dir` with its bytes, to show a command changed nothing.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("listing a dir") {
            let path = entry.expect("a dir entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("reading a file");
                files.push((path, bytes));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn check_accepts_a_valid_config_and_prints_one_summary_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = dir.path().join("data");
    let file = write_config(
        dir.path(),
        "hub.toml",
        &format!(
            "[http]\nlisten = \"127.0.0.1:9123\"\n[auth]\nsecret = \"{SECRET}\"\n[storage]\ndir = \"{}\"\n[games]\nretention = \"3d\"\n",
            storage.display()
        ),
    );
    let out = run_cli(&["--config", &file, "check"], &[], dir.path());
    assert_eq!(code(&out), Some(0), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 1, "one line: {}", out.stdout);
    for part in [
        "config ok",
        "hub.toml",
        "single node",
        "127.0.0.1:9123",
        "auth.secret set",
        "does not exist yet",
    ] {
        assert!(out.stdout.contains(part), "{part:?} in {}", out.stdout);
    }
    assert!(!out.stdout.contains(SECRET), "the secret is never printed");
    assert!(!storage.exists(), "check creates nothing");

    // SCOREHUB_CONFIG names the file too, and the environment counts.
    let out = run_cli(
        &["check"],
        &[
            ("SCOREHUB_CONFIG", &file),
            ("SCOREHUB_REDIS__URL", "redis://:pa55word@127.0.0.1:1/0"),
        ],
        dir.path(),
    );
    assert_eq!(code(&out), Some(0), "{out:?}");
    assert!(out.stdout.contains("cluster mode"), "{}", out.stdout);
    assert!(!out.stdout.contains("pa55word"), "{}", out.stdout);
}

#[test]
fn check_names_a_typo_key_with_the_line_serve_prints_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write_config(
        dir.path(),
        "typo.toml",
        &format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[auth]\nsecret = \"{SECRET}\"\n[ws]\nping_intervall = \"20s\"\n"
        ),
    );
    let check = run_cli(&["--config", &file, "check"], &[], dir.path());
    assert_eq!(code(&check), Some(2), "{check:?}");
    assert!(check.stdout.is_empty(), "{check:?}");
    assert!(
        check.stderr.contains("ws.ping_intervall"),
        "names the key: {}",
        check.stderr
    );
    let serve = run_cli(&["--config", &file, "serve"], &[], dir.path());
    assert_eq!(code(&serve), Some(2), "{serve:?}");
    assert_eq!(check.stderr, serve.stderr, "the same line as serve");

    // A bad value from the environment, and a bad duration.
    for (key, value, named) in [
        ("SCOREHUB_AUTH__SECRET", "short", "auth.secret"),
        ("SCOREHUB_GAMES__RETENTION", "soon", "games.retention"),
        ("SCOREHUB_LOG__LEVEL", "scorehub=loud", "log.level"),
    ] {
        let out = run_cli(&["check"], &[(key, value)], dir.path());
        assert_eq!(code(&out), Some(2), "{key}={value}: {out:?}");
        assert!(out.stderr.contains(named), "{named} in {}", out.stderr);
    }
}

#[test]
fn check_refuses_an_unusable_storage_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let not_a_dir = dir.path().join("plain-file");
    std::fs::write(&not_a_dir, b"x").expect("writing a file");
    let out = run_on(&not_a_dir, &["check"]);
    assert_eq!(code(&out), Some(2), "{out:?}");
    assert!(out.stderr.contains("not a directory"), "{}", out.stderr);
    assert!(
        out.stderr.contains("storage.dir"),
        "names the key: {}",
        out.stderr
    );

    // A directory whose events.log is something else.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    std::fs::write(other.join("events.log"), b"not a scorehub log at all").expect("write");
    let out = run_on(&other, &["check"]);
    assert_eq!(code(&out), Some(2), "{out:?}");
    assert!(
        out.stderr.contains("not a scorehub event log"),
        "{}",
        out.stderr
    );
}

#[test]
fn log_verify_and_games_list_without_a_log_exit_2_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-dir");
    for args in [&["log", "verify"][..], &["games", "list"][..]] {
        let out = run_on(&missing, args);
        assert_eq!(code(&out), Some(2), "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("no-such-dir/events.log") && out.stderr.contains("storage.dir"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(!missing.exists(), "{args:?} creates nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_verify_finds_a_hub_written_log_clean_and_games_list_shows_its_games() {
    let dir = tempfile::tempdir().expect("temp dir");
    let states = hub_writes_games(dir.path()).await;
    let before = snapshot(dir.path());

    let out = run_on(dir.path(), &["log", "verify"]);
    assert_eq!(code(&out), Some(0), "{out:?}");
    // 3 creations, 4 + 2 events.
    assert!(
        out.stdout.contains("ok: ") && out.stdout.contains("9 records, 3 games, 3 index files"),
        "{}",
        out.stdout
    );

    let out = run_on(dir.path(), &["games", "list", "--json"]);
    assert_eq!(code(&out), Some(0), "{out:?}");
    let listed: Value = serde_json::from_str(&out.stdout).expect("games list --json is JSON");
    let listed = listed.as_array().expect("an array");
    assert_eq!(listed.len(), 3, "{listed:?}");
    for (row, state) in listed.iter().zip(&states) {
        assert_eq!(row["id"], state["game"], "{row}");
        assert_eq!(row["seq"], state["seq"], "{row}");
        assert_eq!(row["status"], state["status"], "{row}");
        assert_eq!(row["home"]["score"], state["home"]["score"], "{row}");
        assert_eq!(row["away"]["score"], state["away"]["score"], "{row}");
        assert_eq!(row["expired"], false, "{row}");
    }
    assert_eq!(listed[0]["league"], "nba");
    assert_eq!(listed[2]["league"], "nhl");
    assert_eq!(listed[0]["home"]["score"], 8);
    assert_eq!(listed[1]["status"], "final");

    let out = run_on(dir.path(), &["games", "list"]);
    assert_eq!(code(&out), Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("GAME"), "{}", out.stdout);
    assert!(
        lines[1].starts_with(LAL) && lines[1].contains("8-0"),
        "{}",
        out.stdout
    );
    assert!(lines[2].contains("final"), "{}", out.stdout);
    assert!(lines[4].starts_with("3 games"), "{}", out.stdout);

    // A game past games.retention is listed as expired.
    let out = run_cli(
        &[
            "games",
            "list",
            "--json",
            "--dir",
            &dir.path().to_string_lossy(),
        ],
        &[("SCOREHUB_GAMES__RETENTION", "1ms")],
        dir.path(),
    );
    let listed: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(listed[1]["expired"], true, "{listed}");
    assert_eq!(listed[0]["expired"], false, "{listed}");

    assert!(
        snapshot(dir.path()) == before,
        "the commands changed no file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_verify_reports_a_flipped_byte_and_a_truncated_tail_at_their_offsets() {
    let dir = tempfile::tempdir().expect("temp dir");
    hub_writes_games(dir.path()).await;
    let log = dir.path().join("events.log");
    let recs = records(dir.path());
    let clean = std::fs::read(&log).expect("read");

    // A byte flipped in the payload of the third record, in the middle.
    let (bad, _) = recs[2];
    let mut flipped = clean.clone();
    flipped[bad as usize + 8 + 5] ^= 0x40;
    std::fs::write(&log, &flipped).expect("write");
    let before = snapshot(dir.path());
    let out = run_on(dir.path(), &["log", "verify"]);
    assert_eq!(code(&out), Some(1), "{out:?}");
    assert!(
        out.stdout.contains(&format!(
            "events.log at byte {bad}: damaged: checksum mismatch"
        )),
        "{}",
        out.stdout
    );
    let (next, _) = recs[3];
    assert!(
        out.stdout
            .contains(&format!("next intact record, at byte {next}")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("problems: "), "{}", out.stdout);
    assert!(snapshot(dir.path()) == before, "verify changed no file");
    // games list still lists, warns, and exits 1.
    let out = run_on(dir.path(), &["games", "list"]);
    assert_eq!(code(&out), Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&format!("at byte {bad}")),
        "{}",
        out.stderr
    );

    // The last record cut short: a torn tail, at its offset.
    let (last, len) = *recs.last().expect("records");
    std::fs::write(&log, &clean[..last as usize + 8 + len as usize / 2]).expect("write");
    let out = run_on(dir.path(), &["log", "verify"]);
    assert_eq!(code(&out), Some(1), "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("events.log at byte {last}: torn tail")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("extends past the end"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_verify_reports_an_index_entry_pointing_at_another_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    hub_writes_games(dir.path()).await;
    let recs = records(dir.path());
    // Some game's index, its seq-1 entry (16 bytes after the 16-byte header
    // and seq 0) made to point at the log's first record.
    let index = std::fs::read_dir(dir.path().join("index"))
        .expect("the index dir")
        .map(|e| e.expect("entry").path())
        .find(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) >= 48)
        .expect("an index file with a seq-1 entry");
    let mut bytes = std::fs::read(&index).expect("read");
    let (first, _) = recs[0];
    bytes[32..40].copy_from_slice(&first.to_le_bytes());
    std::fs::write(&index, &bytes).expect("write");

    let out = run_on(dir.path(), &["log", "verify"]);
    assert_eq!(code(&out), Some(1), "{out:?}");
    let name = index
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        out.stdout.contains(&format!("{name} at byte 32: index:"))
            && out
                .stdout
                .contains(&format!("seq 1: the index points at byte {first}")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("1 index"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn games_list_reads_redis_in_cluster_mode() {
    let redis = RedisServer::start();
    let hub = TestHub::start_cluster(&redis.url()).await;
    hub.put_game(TOR).await;
    hub.put_game(LAL).await;
    hub.post_ok(LAL, score("l1", "away", 3)).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_cli(
        &["games", "list", "--json"],
        &[("SCOREHUB_REDIS__URL", &redis.url())],
        dir.path(),
    );
    assert_eq!(code(&out), Some(0), "{out:?}");
    let listed: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let ids: Vec<&str> = listed
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|g| g["id"].as_str())
        .collect();
    assert_eq!(ids, [LAL, TOR]);
    assert_eq!(listed[0]["seq"], 1);
    assert_eq!(listed[0]["away"]["score"], 3);

    let out = run_cli(
        &["games", "list"],
        &[("SCOREHUB_REDIS__URL", &redis.url())],
        dir.path(),
    );
    assert!(out.stdout.contains("2 games, from Redis"), "{out:?}");
    hub.shutdown().await;

    // Unreachable Redis: exit 1 with the reason.
    drop(redis);
    let out = run_cli(
        &["games", "list"],
        &[("SCOREHUB_REDIS__URL", "redis://127.0.0.1:1/0")],
        dir.path(),
    );
    assert_eq!(code(&out), Some(1), "{out:?}");
    assert!(out.stderr.contains("redis.url"), "{}", out.stderr);
}
