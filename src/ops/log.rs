//! `scorehub log verify`: read the embedded event log and its index, and
//! report every problem with its byte offset. Never writes.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use super::Exit;
use crate::backend::{Replayer, Summary};
use crate::domain::GameId;
use crate::store::file::{Problem, ProblemKind, Scan, ScanError, ScanOptions, scan};

/// The log read and folded into games, as the hub's start does.
pub(super) struct Folded {
    /// What the scan found, with the fold's problems added.
    pub(super) scan: Scan,
    /// Every game whose records fold into a valid state.
    pub(super) games: Vec<(GameId, Summary)>,
}

/// Scans `<dir>/events.log` (see [`scan`]) and folds its records with the
/// hub's own [`Replayer`]: a record the fold refuses, or a game whose state
/// is not valid, becomes an [`ProblemKind::Inconsistent`] problem, and that
/// game's later records are not folded.
pub(super) fn fold(dir: &Path, opts: ScanOptions) -> Result<Folded, ScanError> {
    let mut replayer = Replayer::states();
    let mut refused = Vec::new();
    let mut broken: HashSet<GameId> = HashSet::new();
    let mut scanned = scan(dir, opts, |offset, record| {
        if broken.contains(record.game()) {
            return;
        }
        let game = record.game().clone();
        if let Err(e) = replayer.record(record) {
            refused.push((offset, game.clone(), e.to_string()));
            broken.insert(game);
        }
    })?;
    let path = scanned.path.clone();
    for (offset, game, detail) in refused {
        scanned.problems.push(Problem {
            kind: ProblemKind::Inconsistent,
            file: path.clone(),
            offset: Some(offset),
            game: Some(game),
            detail: format!("{detail}; its later records are not checked"),
        });
    }
    let mut games = Vec::new();
    for (id, summary) in replayer.into_each_summary() {
        match summary {
            Ok(s) => games.push((id, s)),
            Err(e) => scanned.problems.push(Problem {
                kind: ProblemKind::Inconsistent,
                file: path.clone(),
                offset: None,
                game: Some(id),
                detail: e.to_string(),
            }),
        }
    }
    games.sort_by(|a, b| a.0.cmp(&b.0));
    // The log's problems by offset, then the index's.
    scanned
        .problems
        .sort_by_key(|p| (p.file != path, p.offset.is_none(), p.offset));
    Ok(Folded {
        scan: scanned,
        games,
    })
}

/// One problem as a report line: `FILE at byte N: KIND: DETAIL`.
pub(super) fn problem_line(p: &Problem) -> String {
    match p.offset {
        Some(offset) => format!(
            "{} at byte {offset}: {}: {}",
            p.file.display(),
            p.kind.as_str(),
            p.detail
        ),
        None => format!("{}: {}: {}", p.file.display(), p.kind.as_str(), p.detail),
    }
}

/// `scorehub log verify`: checks the log in `dir` and its index, read-only.
///
/// Prints one line per problem and a summary on `out`. Answers
/// [`Exit::Ok`] when clean, [`Exit::Problems`] when anything was found
/// (torn tail, damage, contradictions, index mismatches), and
/// [`Exit::Usage`] when there is no log to read at `dir`.
pub fn verify_log(dir: &Path, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    let folded = match fold(dir, ScanOptions { index: true }) {
        Ok(f) => f,
        Err(e @ ScanError::Open { .. }) => {
            let _ = writeln!(err, "scorehub: {e}");
            return Exit::Usage;
        }
        Err(e) => {
            let _ = writeln!(err, "scorehub: {e}");
            return Exit::Problems;
        }
    };
    let scan = &folded.scan;
    for p in &scan.problems {
        let _ = writeln!(out, "{}", problem_line(p));
    }
    for note in &scan.notes {
        let _ = writeln!(out, "note: {note}");
    }
    if scan.in_use {
        let _ = writeln!(
            out,
            "note: a running hub has {} open: a torn tail at its end may be a write in progress; verify a stopped hub's log, or a copy, for a definite answer",
            scan.path.display()
        );
    }
    let counted = format!(
        "{} ({} bytes): {} records, {} games, {} index files",
        scan.path.display(),
        scan.bytes,
        scan.records,
        scan.games,
        scan.index_files
    );
    if scan.problems.is_empty() {
        let _ = writeln!(out, "ok: {counted}; no problem found");
        return Exit::Ok;
    }
    let count = |kind| scan.problems.iter().filter(|p| p.kind == kind).count();
    let kinds: Vec<String> = [
        ProblemKind::Damaged,
        ProblemKind::Inconsistent,
        ProblemKind::TornTail,
        ProblemKind::Index,
    ]
    .into_iter()
    .map(|k| (k, count(k)))
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{n} {}", k.as_str()))
    .collect();
    let _ = writeln!(
        out,
        "problems: {counted}; {} found ({})",
        scan.problems.len(),
        kinds.join(", ")
    );
    Exit::Problems
}
