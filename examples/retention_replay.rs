//! Start-up time of a single node whose event log holds many finished games,
//! with retention effectively off and with `games.retention = "7d"`.
//!
//! ```sh
//! cargo run --release --example retention_replay
//! cargo run --release --example retention_replay -- --games 10000 --events 100 --live 100 --dir /var/tmp
//! ```
//!
//! Writes a log of `games × events` events (default 10 000 × 100 = 1M, plus
//! one creation per game), interleaved as a live hub writes them, in which
//! `live` games (default 100, 1%) are still live and every other game went
//! `final` 30 days ago. Then, on copies of that storage directory, times
//! what a start of the hub does before it serves (`backend::local::open`:
//! open, replay, fold every game, check the index):
//!
//! - retention effectively off (`games.retention = "100years"`);
//! - `7d`, first start: replay, compaction (the finished games hold 99% of
//!   the records), replay of the compacted log;
//! - `7d`, later starts.
//!
//! The page cache is warm for every run (the files were just written).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use scorehub::backend::local;
use scorehub::config::MAX_RETENTION;
use scorehub::domain::{GameId, Retention, Status};
use scorehub::store::Record;
use scorehub::store::file::{FileLog, FileLogOptions, INDEX_DIR_NAME, LOG_FILE_NAME};
use scorehub::testing::GameRecords;

/// Records handed to the log per append.
const BATCH: usize = 20_000;
const NO_SYNC: FileLogOptions = FileLogOptions { fsync: false };

struct Args {
    games: usize,
    events: u64,
    live: usize,
    dir: PathBuf,
}

fn args() -> Result<Args, Box<dyn Error>> {
    let mut args = Args {
        games: 10_000,
        events: 100,
        live: 100,
        dir: std::env::temp_dir(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--games" => args.games = value.parse()?,
            "--events" => args.events = value.parse()?,
            "--live" => args.live = value.parse()?,
            "--dir" => args.dir = PathBuf::from(value),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if args.live > args.games || args.events < 2 {
        return Err("--live must be at most --games, and --events at least 2".into());
    }
    Ok(args)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Writes the log: every game created, then round after round one event
/// of each game; finished games' last event is `final`, 30 days ago.
fn write_log(rt: &tokio::runtime::Runtime, dir: &Path, a: &Args) -> Result<(), Box<dyn Error>> {
    let log = FileLog::open(dir, NO_SYNC, |_| Ok(()))?;
    let now = now_ms();
    let long_ago = now - 30 * 24 * 3600 * 1000;
    let mut games: Vec<(GameRecords, bool)> = (0..a.games)
        .map(|i| {
            let id = GameId::parse(&format!("nba:game-{i:06}")).expect("a valid game id");
            (GameRecords::new(id), i < a.live)
        })
        .collect();
    let mut batch: Vec<Record> = Vec::with_capacity(BATCH);
    let flush = |batch: &mut Vec<Record>| -> Result<(), Box<dyn Error>> {
        rt.block_on(log.append(std::mem::take(batch)))?;
        Ok(())
    };
    for (g, live) in &games {
        batch.push(g.created(if *live { now } else { long_ago }));
    }
    for round in 1..=a.events {
        for (g, live) in &mut games {
            let at = if *live { now } else { long_ago } + round as i64;
            let record = if round == a.events && !*live {
                g.status(Status::Final, at)
            } else {
                g.score(at)
            };
            batch.push(record);
            if batch.len() == BATCH {
                flush(&mut batch)?;
            }
        }
    }
    flush(&mut batch)?;
    rt.block_on(log.close());
    Ok(())
}

/// Copies a storage directory (the log and its index).
fn copy_dir(from: &Path, to: &Path) -> Result<(), Box<dyn Error>> {
    std::fs::create_dir_all(to.join(INDEX_DIR_NAME))?;
    std::fs::copy(from.join(LOG_FILE_NAME), to.join(LOG_FILE_NAME))?;
    for entry in std::fs::read_dir(from.join(INDEX_DIR_NAME))? {
        let entry = entry?;
        std::fs::copy(
            entry.path(),
            to.join(INDEX_DIR_NAME).join(entry.file_name()),
        )?;
    }
    Ok(())
}

/// One start: opens the backend as `serve` does, then closes it.
fn start(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    retention: Retention,
) -> Result<(Duration, usize, u64), Box<dyn Error>> {
    let started = Instant::now();
    let (backend, games) = local::open(dir, NO_SYNC, retention)?;
    let took = started.elapsed();
    rt.block_on(backend.log.close());
    drop(backend);
    let len = std::fs::metadata(dir.join(LOG_FILE_NAME))?.len();
    Ok((took, games, len))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() -> Result<(), Box<dyn Error>> {
    let a = args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let root = tempfile::tempdir_in(&a.dir)?;
    let source = root.path().join("source");
    let written = Instant::now();
    write_log(&rt, &source, &a)?;
    let size = std::fs::metadata(source.join(LOG_FILE_NAME))?.len();
    println!(
        "log: {} games x {} events ({} events, {} live games), {:.1} MiB, written in {:.1?}",
        a.games,
        a.events,
        a.games as u64 * a.events,
        a.live,
        mib(size),
        written.elapsed()
    );

    let off = root.path().join("off");
    let seven = root.path().join("7d");
    copy_dir(&source, &off)?;
    copy_dir(&source, &seven)?;
    let forever = Retention::new(MAX_RETENTION);
    let week = Retention::new(Duration::from_secs(7 * 24 * 3600));

    for run in 1..=2 {
        let (took, games, len) = start(&rt, &off, forever)?;
        println!(
            "retention off, start {run}: {took:.1?} ({games} games, log {:.1} MiB)",
            mib(len)
        );
    }
    let (took, games, len) = start(&rt, &seven, week)?;
    println!(
        "retention 7d, first start (replay + compact + replay): {took:.1?} ({games} games, log {:.1} MiB -> {:.1} MiB)",
        mib(size),
        mib(len)
    );
    for run in 2..=4 {
        let (took, games, len) = start(&rt, &seven, week)?;
        println!(
            "retention 7d, start {run}: {took:.1?} ({games} games, log {:.1} MiB)",
            mib(len)
        );
    }
    Ok(())
}
