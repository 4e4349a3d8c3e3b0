//! The end-of-run check: wait for every fan to catch up with the hub, then
//! compare each fan's rebuilt state with `GET /v1/games/{id}`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use futures_util::{StreamExt, TryStreamExt, stream};
use serde_json::Value;

use crate::{
    api::Api,
    fan::{FanOutcome, FanSpec, Progress},
};

/// How many `GET /v1/games/{id}` run at once.
const READ_CONCURRENCY: usize = 16;

/// How many mismatches are described in the report.
const MAX_SAMPLES: usize = 5;

/// The hub's state of every game, in the order of `ids`.
pub(crate) async fn hub_states(api: &Api, ids: &[String]) -> Result<Vec<Value>> {
    stream::iter(ids.iter().map(|id| api.game(id)))
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await
}

/// The `seq` of each state.
pub(crate) fn seqs(states: &[Value], ids: &[String]) -> Result<Vec<u64>> {
    states
        .iter()
        .zip(ids)
        .map(|(state, id)| {
            state
                .get("seq")
                .and_then(Value::as_u64)
                .with_context(|| format!("GET /v1/games/{id} has no integer `seq`: {state}"))
        })
        .collect()
}

/// Waits until every live fan has seen at least `targets[g]` of each game `g`
/// it follows, or `max_wait` passed. Returns whether they all did, and how long
/// it took.
pub(crate) async fn wait_caught_up(
    fans: &[(FanSpec, Arc<Progress>)],
    targets: &[u64],
    max_wait: Duration,
) -> (bool, Duration) {
    let start = Instant::now();
    loop {
        let all = fans
            .iter()
            .all(|(spec, progress)| progress.caught_up(spec, targets));
        if all {
            return (true, start.elapsed());
        }
        if start.elapsed() >= max_wait {
            return (false, start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The result of comparing fans' states with the hub's.
#[derive(Debug, Default)]
pub(crate) struct StateCheck {
    /// (fan, game) pairs compared.
    pub(crate) checked: u64,
    /// Pairs that differ.
    pub(crate) mismatches: u64,
    /// A few mismatches, described.
    pub(crate) samples: Vec<String>,
}

/// Compares every connected, not dropped fan's view of each followed game with
/// the hub's state (`hub[g]` for game index `g`). With state rebuilding off, only
/// the sequence numbers are compared.
pub(crate) fn compare(outcomes: &[FanOutcome], hub: &[Value], ids: &[String]) -> StateCheck {
    let mut check = StateCheck::default();
    for outcome in outcomes {
        if outcome.connect_error.is_some() || outcome.dropped.is_some() {
            continue;
        }
        for track in &outcome.tracks {
            let (Some(expected), Some(id)) = (hub.get(track.game), ids.get(track.game)) else {
                continue;
            };
            check.checked += 1;
            let hub_seq = expected.get("seq").and_then(Value::as_u64);
            let problem = match (&track.seq, &track.state) {
                (None, _) => Some("never got a snapshot".to_string()),
                (Some(seq), _) if Some(*seq) != hub_seq => Some(format!(
                    "fan at seq {seq}, hub at seq {}",
                    hub_seq.map_or_else(|| "?".into(), |s| s.to_string())
                )),
                (Some(_), Some(state)) if state != expected => Some(format!(
                    "same seq, different state: fan {} hub {}",
                    clip(state),
                    clip(expected)
                )),
                _ => None,
            };
            if let Some(problem) = problem {
                check.mismatches += 1;
                if check.samples.len() < MAX_SAMPLES {
                    check
                        .samples
                        .push(format!("fan {} game {id}: {problem}", outcome.index));
                }
            }
        }
    }
    check
}

/// A JSON value as text, cut to a readable length.
fn clip(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= 240 {
        return text;
    }
    let mut cut: String = text.chars().take(240).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::compare;
    use crate::fan::{FanCounters, FanOutcome, Track};
    use serde_json::json;

    fn fan(index: usize, seq: Option<u64>, state: Option<serde_json::Value>) -> FanOutcome {
        FanOutcome {
            index,
            connect_error: None,
            dropped: None,
            counters: FanCounters::default(),
            tracks: vec![Track {
                game: 0,
                seq,
                state,
            }],
            first_problem: None,
        }
    }

    #[test]
    fn finds_lagging_missing_and_different_states() {
        let ids = vec!["lt:g1".to_string()];
        let hub = vec![json!({"seq": 3, "home": {"score": 2}})];
        let outcomes = vec![
            fan(0, Some(3), Some(json!({"seq": 3, "home": {"score": 2}}))),
            fan(1, Some(2), Some(json!({"seq": 2, "home": {"score": 1}}))),
            fan(2, None, None),
            fan(3, Some(3), Some(json!({"seq": 3, "home": {"score": 5}}))),
            fan(4, Some(3), None), // state checking off: seq only
        ];
        let check = compare(&outcomes, &hub, &ids);
        assert_eq!(check.checked, 5);
        assert_eq!(check.mismatches, 3);
        assert_eq!(check.samples.len(), 3);
        assert!(check.samples[0].starts_with("fan 1 "));
    }
}
