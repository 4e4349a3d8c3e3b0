//! `scorehub games list`: the games the hub's storage holds, from the
//! embedded log (single node) or from Redis (cluster mode).

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::Exit;
use super::log::{fold, problem_line};
use crate::config::Config;
use crate::domain::{GameId, GameState, Retention};
use crate::store::RedisStore;
use crate::store::file::{ScanError, ScanOptions};

/// Games asked of Redis per call.
const PAGE: usize = 500;

/// One listed game.
struct Row {
    state: GameState,
    /// Single node: past `games.retention` (no longer served; its records
    /// leave the log at a later start).
    expired: bool,
}

impl Row {
    fn json(&self) -> Value {
        let s = &self.state;
        json!({
            "id": s.game.as_str(),
            "league": s.game.league_str(),
            "status": s.status.as_str(),
            "seq": s.seq,
            "home": {"name": s.home.name, "score": s.home.score},
            "away": {"name": s.away.name, "score": s.away.score},
            "expired": self.expired,
        })
    }
}

/// `scorehub games list`: every game, ordered by id, with its league,
/// status, seq and score; as a table, or as one JSON array when `json`.
///
/// Reads the log in `dir` when given or when no Redis is configured (the
/// log's `storage.dir`; read-only, like `log verify`; games past
/// `games.retention` are listed as expired), else Redis through the hub's
/// store (like `GET /v1/games`, which first sweeps expired games out of
/// the games index). Problems found in the log are printed on `err` and
/// answered [`Exit::Problems`] after the list; no log at `dir` is
/// [`Exit::Usage`], an unreachable Redis [`Exit::Problems`].
pub fn list_games(
    config: &Config,
    dir: Option<&Path>,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Exit {
    let retention = Retention::new(config.games.retention);
    let (rows, source, exit) = if config.redis.shared() && dir.is_none() {
        match redis_rows(config, retention) {
            Ok(rows) => (rows, format!("Redis {}", config.redis.shown()), Exit::Ok),
            Err(e) => {
                let _ = writeln!(err, "scorehub: {e}");
                return Exit::Problems;
            }
        }
    } else {
        let dir = dir.unwrap_or(&config.storage.dir);
        let folded = match fold(dir, ScanOptions::default()) {
            Ok(f) => f,
            Err(e) => {
                let _ = writeln!(err, "scorehub: {e}");
                return match e {
                    ScanError::Open { .. } => Exit::Usage,
                    ScanError::Read { .. } => Exit::Problems,
                };
            }
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let rows = folded
            .games
            .into_iter()
            .map(|(_, s)| Row {
                expired: retention.expired(s.finished_at, now),
                state: (*s.state).clone(),
            })
            .collect();
        let exit = if folded.scan.problems.is_empty() {
            Exit::Ok
        } else {
            for p in &folded.scan.problems {
                let _ = writeln!(err, "scorehub: {}", problem_line(p));
            }
            let _ = writeln!(
                err,
                "scorehub: the event log has problems: the games above are what its intact records hold; see `scorehub log verify`"
            );
            Exit::Problems
        };
        (rows, folded.scan.path.display().to_string(), exit)
    };
    if json {
        let all: Vec<Value> = rows.iter().map(Row::json).collect();
        let _ = writeln!(out, "{}", Value::Array(all));
    } else {
        let _ = write_table(&rows, &source, out);
    }
    exit
}

/// The rows as an aligned table, then a line saying how many and from where.
fn write_table(rows: &[Row], source: &str, out: &mut dyn Write) -> std::io::Result<()> {
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            let s = &r.state;
            let status = match r.expired {
                true => format!("{} (expired)", s.status.as_str()),
                false => s.status.as_str().to_owned(),
            };
            [
                s.game.as_str().to_owned(),
                s.game.league_str().to_owned(),
                status,
                s.seq.to_string(),
                format!(
                    "{} {}-{} {}",
                    s.home.name, s.home.score, s.away.score, s.away.name
                ),
            ]
        })
        .collect();
    let head = ["GAME", "LEAGUE", "STATUS", "SEQ", "SCORE"].map(str::to_owned);
    let mut width = head.clone().map(|h| h.len());
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    for row in std::iter::once(&head).chain(&cells) {
        writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3],
        )?;
    }
    writeln!(out, "{} games, from {source}", rows.len())
}

/// Every game in Redis, page by page.
fn redis_rows(config: &Config, retention: Retention) -> Result<Vec<Row>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let store = RedisStore::connect_with(&config.redis)
            .await
            .map_err(|e| e.to_string())?
            .with_retention(retention);
        let mut rows = Vec::new();
        let mut cursor: Option<GameId> = None;
        loop {
            let (games, next) = store
                .list(None, None, PAGE, cursor.as_ref())
                .await
                .map_err(|e| e.to_string())?;
            rows.extend(games.into_iter().map(|state| Row {
                state,
                expired: false,
            }));
            match next {
                Some(next) => {
                    cursor = Some(
                        GameId::parse(&next)
                            .map_err(|e| format!("Redis gave a bad list cursor {next:?}: {e}"))?,
                    )
                }
                None => return Ok(rows),
            }
        }
    })
}
