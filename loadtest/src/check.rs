//! The end-of-run check: wait for every fan to catch up with the hub, then
//! compare each fan's rebuilt state with `GET /v1/games/{id}` on `--url` and,
//! when the fan sits on another node, on that node too.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use futures_util::{StreamExt, TryStreamExt, stream};
use serde_json::Value;

use crate::{
    api::Api,
    fan::{FanOutcome, FanSpec, Progress, Track},
    nodes::HubUrls,
    rotation::Rotation,
};

/// How many `GET /v1/games/{id}` run at once.
pub(crate) const READ_CONCURRENCY: usize = 16;

/// How many mismatches are described in the report.
const MAX_SAMPLES: usize = 5;

/// The hub's state of every game, in the order of `ids`: `Value::Null` for
/// a game that was never created (`--game-events`: a later generation).
pub(crate) async fn hub_states(
    api: &Api,
    ids: &[String],
    rotation: &Rotation,
) -> Result<Vec<Value>> {
    stream::iter(ids.iter().enumerate().map(|(index, id)| async move {
        if rotation.is_created(index) {
            api.game(id).await
        } else {
            Ok(Value::Null)
        }
    }))
    .buffered(READ_CONCURRENCY)
    .try_collect()
    .await
}

/// What one fan node says about every game, for the final comparison.
#[derive(Debug)]
pub(crate) struct NodeView {
    /// The node's WebSocket base, naming it in mismatch descriptions.
    pub(crate) name: String,
    /// `GET /v1/games/{id}` on this node, per game; `None` when the node is
    /// `--url` itself, whose states every fan is compared with anyway.
    pub(crate) states: Option<Vec<Value>>,
}

/// Reads every game's state on each fan node (`apis[n]` for `nodes[n]`),
/// except on the scorekeeper node (`--url`, whose states are already read).
pub(crate) async fn node_views(
    nodes: &[HubUrls],
    apis: &[Api],
    scorekeeper: &HubUrls,
    ids: &[String],
    rotation: &Rotation,
) -> Result<Vec<NodeView>> {
    let mut views = Vec::with_capacity(nodes.len());
    for (node, api) in nodes.iter().zip(apis) {
        let states = if node == scorekeeper {
            None
        } else {
            Some(hub_states(api, ids, rotation).await?)
        };
        views.push(NodeView {
            name: node.ws.clone(),
            states,
        });
    }
    Ok(views)
}

/// The `seq` of each state (0 for a game never created).
pub(crate) fn seqs(states: &[Value], ids: &[String]) -> Result<Vec<u64>> {
    states
        .iter()
        .zip(ids)
        .map(|(state, id)| {
            if state.is_null() {
                return Ok(0);
            }
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
        let all = fans.iter().all(|(_, progress)| progress.caught_up(targets));
        if all {
            return (true, start.elapsed());
        }
        if start.elapsed() >= max_wait {
            return (false, start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The highest `seq` of each game over the hubs of `apis` (0 for a game
/// never created): in a cluster a hub's own view may lag the others'.
pub(crate) async fn highest_seqs(
    apis: &[Api],
    ids: &[String],
    rotation: &Rotation,
) -> Result<Vec<u64>> {
    let mut best = vec![0; ids.len()];
    for api in apis {
        let states = hub_states(api, ids, rotation).await?;
        for (best, seq) in best.iter_mut().zip(seqs(&states, ids)?) {
            *best = (*best).max(seq);
        }
    }
    Ok(best)
}

/// Cluster runs: waits, for at most `max_wait`, until every fan has the
/// highest `seq` any hub of `apis` reports for each of its games, and the
/// hubs report the same again afterwards (after a failover hubs keep
/// repairing from the streams for a while). Returns whether that happened
/// and the time waited.
pub(crate) async fn wait_caught_up_with_all(
    fans: &[(FanSpec, Arc<Progress>)],
    apis: &[Api],
    ids: &[String],
    rotation: &Rotation,
    max_wait: Duration,
) -> Result<(bool, Duration)> {
    let start = Instant::now();
    let mut targets = highest_seqs(apis, ids, rotation).await?;
    loop {
        let left = max_wait.saturating_sub(start.elapsed());
        let (caught_up, _) = wait_caught_up(fans, &targets, left).await;
        let again = highest_seqs(apis, ids, rotation).await?;
        let settled = again == targets;
        if (caught_up && settled) || start.elapsed() >= max_wait {
            return Ok((caught_up && settled, start.elapsed()));
        }
        targets = again;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The result of comparing fans' states with the hub's.
#[derive(Debug, Default)]
pub(crate) struct StateCheck {
    /// (fan, game) pairs compared.
    pub(crate) checked: u64,
    /// Pairs that differ (from either state they are compared with).
    pub(crate) mismatches: u64,
    /// Of those, per fan node (same order as the views).
    pub(crate) mismatches_per_node: Vec<u64>,
    /// A few mismatches, described.
    pub(crate) samples: Vec<String>,
}

/// Compares every connected fan's (not dropped, not left) view of each followed game with
/// the hub's state on `--url` (`hub[g]` for game index `g`) and, for a fan on
/// another node, with that node's state too (`nodes[fan's node]`): a (fan, game)
/// pair is a mismatch when it differs from either. With state rebuilding off,
/// only the sequence numbers are compared.
pub(crate) fn compare(
    outcomes: &[FanOutcome],
    hub: &[Value],
    nodes: &[NodeView],
    ids: &[String],
) -> StateCheck {
    let mut check = StateCheck {
        mismatches_per_node: vec![0; nodes.len()],
        ..StateCheck::default()
    };
    for outcome in outcomes {
        // A fan that left (churn) is checked by its checkpoints instead.
        if outcome.connect_error.is_some() || outcome.dropped.is_some() || outcome.left {
            continue;
        }
        let node = nodes.get(outcome.node);
        for track in &outcome.tracks {
            let (Some(expected), Some(id)) = (hub.get(track.game), ids.get(track.game)) else {
                continue;
            };
            // A fan without a snapshot is told once, not once per reference.
            let own = node
                .and_then(|view| view.states.as_ref())
                .and_then(|states| states.get(track.game))
                .filter(|_| track.seq.is_some());
            check.checked += 1;
            let problem = match own {
                None => differ(track, expected),
                Some(own) => match (differ(track, expected), differ(track, own)) {
                    (None, None) => None,
                    (on_url, on_node) => Some(format!(
                        "against --url: {}; against its node: {}",
                        on_url.as_deref().unwrap_or("same"),
                        on_node.as_deref().unwrap_or("same")
                    )),
                },
            };
            let Some(problem) = problem else {
                continue;
            };
            check.mismatches += 1;
            if let Some(count) = check.mismatches_per_node.get_mut(outcome.node) {
                *count += 1;
            }
            if check.samples.len() < MAX_SAMPLES {
                let on = match node {
                    Some(view) if nodes.len() > 1 || view.states.is_some() => {
                        format!(" on {}", view.name)
                    }
                    _ => String::new(),
                };
                check
                    .samples
                    .push(format!("fan {}{on} game {id}: {problem}", outcome.index));
            }
        }
    }
    check
}

/// How a fan's view of a game (which has had a snapshot) differs from a hub's
/// state of it, if it does.
fn differ(track: &Track, expected: &Value) -> Option<String> {
    let hub_seq = expected.get("seq").and_then(Value::as_u64);
    match (&track.seq, &track.state) {
        (None, _) => Some("never got a snapshot".to_string()),
        (Some(seq), _) if Some(*seq) != hub_seq => Some(format!(
            "fan at seq {seq}, hub at seq {}",
            hub_seq.map_or_else(|| "?".into(), |s| s.to_string())
        )),
        (Some(_), Some(state)) if **state != *expected => Some(format!(
            "same seq, different state: fan {} hub {}",
            clip(state),
            clip(expected)
        )),
        _ => None,
    }
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
    use super::{NodeView, compare};
    use crate::fan::{FanCounters, FanKind, FanOutcome, Track};
    use serde_json::{Value, json};

    fn fan(index: usize, node: usize, seq: Option<u64>, state: Option<Value>) -> FanOutcome {
        FanOutcome {
            index,
            node,
            kind: FanKind::Steady,
            connect_error: None,
            dropped: None,
            left: false,
            counters: FanCounters::default(),
            tracks: vec![Track {
                game: 0,
                seq,
                state: state.map(std::sync::Arc::new),
            }],
            checkpoints: Vec::new(),
            history: Vec::new(),
            first_problem: None,
        }
    }

    fn view(name: &str, states: Option<Vec<Value>>) -> NodeView {
        NodeView {
            name: name.into(),
            states,
        }
    }

    #[test]
    fn finds_lagging_missing_and_different_states() {
        let ids = vec!["lt:g1".to_string()];
        let hub = vec![json!({"seq": 3, "home": {"score": 2}})];
        let nodes = [view("ws://127.0.0.1:8080", None)];
        let outcomes = vec![
            fan(0, 0, Some(3), Some(json!({"seq": 3, "home": {"score": 2}}))),
            fan(1, 0, Some(2), Some(json!({"seq": 2, "home": {"score": 1}}))),
            fan(2, 0, None, None),
            fan(3, 0, Some(3), Some(json!({"seq": 3, "home": {"score": 5}}))),
            fan(4, 0, Some(3), None), // state checking off: seq only
        ];
        let check = compare(&outcomes, &hub, &nodes, &ids);
        assert_eq!(check.checked, 5);
        assert_eq!(check.mismatches, 3);
        assert_eq!(check.mismatches_per_node, [3]);
        assert_eq!(check.samples.len(), 3);
        assert_eq!(
            check.samples[0],
            "fan 1 game lt:g1: fan at seq 2, hub at seq 3"
        );
    }

    #[test]
    fn a_fan_on_another_node_must_match_both_nodes() {
        let ids = vec!["lt:g1".to_string()];
        let at3 = json!({"seq": 3, "home": {"score": 2}});
        let at2 = json!({"seq": 2, "home": {"score": 1}});
        let hub = vec![at3.clone()];
        let nodes = [
            view("ws://127.0.0.1:8080", None),
            view("ws://127.0.0.1:8081", Some(vec![at3.clone()])),
            view("ws://127.0.0.1:8082", Some(vec![at2.clone()])),
        ];
        let outcomes = vec![
            fan(0, 0, Some(3), Some(at3.clone())), // on --url, matches
            fan(1, 1, Some(3), Some(at3.clone())), // on a node that agrees
            fan(2, 2, Some(3), Some(at3.clone())), // its node lags behind --url
            fan(3, 2, Some(2), Some(at2.clone())), // agrees with its node only
            fan(4, 1, None, None),                 // no snapshot: said once
        ];
        let check = compare(&outcomes, &hub, &nodes, &ids);
        assert_eq!(check.checked, 5);
        assert_eq!(check.mismatches, 3);
        assert_eq!(check.mismatches_per_node, [0, 1, 2]);
        assert_eq!(
            check.samples,
            [
                "fan 2 on ws://127.0.0.1:8082 game lt:g1: against --url: same; \
                 against its node: fan at seq 3, hub at seq 2",
                "fan 3 on ws://127.0.0.1:8082 game lt:g1: against --url: fan at seq 2, \
                 hub at seq 3; against its node: same",
                "fan 4 on ws://127.0.0.1:8081 game lt:g1: never got a snapshot",
            ]
        );
    }
}
