//! Planning a group of events: pure, no IO.
//!
//! The actor takes every event waiting in its mailbox and plans them one
//! after another against a tentative state: each gets an outcome, and each
//! that applies gets its seq, its log record and its encoded diff frame. Only
//! then is the group made durable in one step. The outcome of each request
//! is either
//!
//! - **final**: true whatever storage does: a duplicate of a committed event
//!   (same `event_id`, same body: `200` with the original seq), the same
//!   `event_id` with another body (`409`), a wrong `expected_seq` (`412`) or
//!   an event the rules refuse (`422`), judged against the committed state;
//! - **tentative**: true only if the group's durable write succeeds: the
//!   event applies; or it repeats or contradicts an event applied earlier in
//!   the same group; or it was judged against the state those earlier events
//!   would make. If the write fails none of that happened, and the answer is
//!   `503`.

use bytes::Bytes;

use super::{Applied, ApplyError, ApplyReq, Seen, SeenIds};
use crate::codec;
use crate::domain::{self, GameState, patch};
use crate::store::Record;

/// The outcome of one request inside a plan, before the group is durable.
#[derive(Debug, Clone)]
pub(super) enum Pending {
    /// Final whatever storage does: a duplicate of a committed event, or an
    /// error found against the committed state.
    Final(Result<Applied, ApplyError>),
    /// Holds only if the group commits: the event applies, duplicates or
    /// contradicts one applied earlier in the group, or was judged against
    /// the state those earlier events would make. If the group cannot be
    /// written, none of that happened, and the answer is 503.
    Tentative(Result<Applied, ApplyError>),
}

/// An error found while planning: final if found against the committed
/// state, tentative once earlier events of the group (`applied`) moved the
/// state it was judged against.
fn judged<T>(applied: &[T], error: ApplyError) -> Pending {
    if applied.is_empty() {
        Pending::Final(Err(error))
    } else {
        Pending::Tentative(Err(error))
    }
}

/// A group of requests planned against the current state.
pub(super) struct Plan {
    /// One outcome per request, in order.
    pub(super) outcomes: Vec<Pending>,
    /// The state after every applicable event.
    pub(super) state: GameState,
    /// Event ids applied by this plan.
    pub(super) fresh: SeenIds,
    /// Applied events: (request index, seq, record, encoded diff frame).
    pub(super) applied: Vec<(usize, u64, Record, Bytes)>,
}

/// Plans `reqs` against the `committed` state and its `seen` ids: who is a duplicate, who
/// conflicts, who applies and what each applied event's diff frame is.
pub(super) fn plan(committed: &GameState, seen: &SeenIds, reqs: &[&ApplyReq], now: i64) -> Plan {
    let mut state = committed.clone();
    let mut fresh = SeenIds::new();
    let mut applied = Vec::new();
    let mut outcomes = Vec::with_capacity(reqs.len());
    for (i, req) in reqs.iter().enumerate() {
        let id = req.event.event_id.as_str();
        let seen = seen
            .get(id)
            .map(|s| (s, false))
            .or_else(|| fresh.get(id).map(|s| (s, true)));
        let outcome = match seen {
            Some((s, in_plan)) if s.fingerprint == req.fingerprint => {
                let dup = Applied {
                    seq: s.seq,
                    duplicate: true,
                };
                if in_plan {
                    Pending::Tentative(Ok(dup))
                } else {
                    Pending::Final(Ok(dup))
                }
            }
            Some((s, in_plan)) => {
                let conflict = Err(ApplyError::Conflict {
                    event_id: id.to_string(),
                    seq: s.seq,
                });
                if in_plan {
                    Pending::Tentative(conflict)
                } else {
                    Pending::Final(conflict)
                }
            }
            None => match req.event.expected_seq {
                Some(expected) if expected != state.seq => judged(
                    &applied,
                    ApplyError::SeqMismatch {
                        expected,
                        current: state.seq,
                    },
                ),
                _ => match domain::apply(&state, &req.event.action, now) {
                    Err(e) => judged(&applied, ApplyError::Invalid(e)),
                    Ok(next) => {
                        let diff = patch::diff(&state, &next);
                        let frame = codec::diff(&state.game, next.seq, &diff, now);
                        let record = Record::Event {
                            game: state.game.clone(),
                            seq: next.seq,
                            event: req.event.clone(),
                            fingerprint: req.fingerprint,
                            by: req.by.to_string(),
                            at: now,
                            diff,
                        };
                        fresh.insert(
                            id,
                            Seen {
                                fingerprint: req.fingerprint,
                                seq: next.seq,
                            },
                        );
                        applied.push((i, next.seq, record, frame));
                        state = next;
                        Pending::Tentative(Ok(Applied {
                            seq: state.seq,
                            duplicate: false,
                        }))
                    }
                },
            },
        };
        outcomes.push(outcome);
    }
    Plan {
        outcomes,
        state,
        fresh,
        applied,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use serde_json::json;
    use tokio::sync::oneshot;

    use super::*;
    use crate::domain::{Action, Event, GameId, NewGame, Side};

    const NOW: i64 = 1_790_000_000_000;

    fn game() -> GameState {
        NewGame::between("H", "A")
            .into_state(GameId::parse("nba:plan").unwrap(), NOW)
            .unwrap()
    }

    fn score(id: &str, points: i64) -> Event {
        Event {
            event_id: id.into(),
            expected_seq: None,
            action: Action::Score {
                team: Side::Home,
                points,
            },
        }
    }

    /// An event the rules refuse whatever the state (`set` may not touch `seq`).
    fn refused(id: &str) -> Event {
        Event {
            event_id: id.into(),
            expected_seq: None,
            action: Action::Set {
                patch: json!({"seq": 9}),
            },
        }
    }

    fn expecting(mut event: Event, seq: u64) -> Event {
        event.expected_seq = Some(seq);
        event
    }

    fn req(event: Event) -> ApplyReq {
        let (reply, _) = oneshot::channel();
        ApplyReq {
            fingerprint: event.fingerprint(),
            event,
            by: Arc::from("t"),
            received: Instant::now(),
            reply,
        }
    }

    fn plan_of(state: &GameState, seen: &SeenIds, events: Vec<Event>) -> Plan {
        let reqs: Vec<ApplyReq> = events.into_iter().map(req).collect();
        let refs: Vec<&ApplyReq> = reqs.iter().collect();
        plan(state, seen, &refs, NOW)
    }

    /// `outcome` as (final?, result).
    fn parts(outcome: &Pending) -> (bool, &Result<Applied, ApplyError>) {
        match outcome {
            Pending::Final(r) => (true, r),
            Pending::Tentative(r) => (false, r),
        }
    }

    fn applied(seq: u64) -> Result<Applied, ApplyError> {
        Ok(Applied {
            seq,
            duplicate: false,
        })
    }

    fn duplicate(seq: u64) -> Result<Applied, ApplyError> {
        Ok(Applied {
            seq,
            duplicate: true,
        })
    }

    #[test]
    fn a_fresh_event_applies_with_the_next_seq_its_record_and_its_diff_frame() {
        let state = game();
        let p = plan_of(&state, &SeenIds::new(), vec![score("e1", 3)]);
        assert_eq!(parts(&p.outcomes[0]), (false, &applied(1)));
        assert_eq!((p.state.seq, p.state.home.score), (1, 3));
        let (i, seq, record, frame) = &p.applied[0];
        assert_eq!((*i, *seq), (0, 1));
        let Record::Event {
            seq: rseq,
            event,
            diff,
            at,
            ..
        } = record
        else {
            panic!("an event record: {record:?}");
        };
        assert_eq!((*rseq, event.event_id.as_str(), *at), (1, "e1", NOW));
        let decoded = codec::decode_frame(frame).unwrap();
        assert_eq!(decoded.q, Some(1));
        assert_eq!(decoded.d.as_ref(), Some(diff));
        let mut doc = serde_json::to_value(&state).unwrap();
        patch::merge(&mut doc, diff);
        assert_eq!(
            doc,
            serde_json::to_value(&p.state).unwrap(),
            "the diff leads to the new state"
        );
        assert!(p.fresh.get("e1").is_some());
    }

    #[test]
    fn a_group_gets_consecutive_seqs_and_folds_into_one_state() {
        let p = plan_of(
            &game(),
            &SeenIds::new(),
            vec![score("a", 1), score("b", 2), score("c", 3)],
        );
        let seqs: Vec<u64> = p.applied.iter().map(|(_, q, _, _)| *q).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!((p.state.seq, p.state.home.score), (3, 6));
        for (k, seq) in [(0, 1), (1, 2), (2, 3)] {
            assert_eq!(parts(&p.outcomes[k]), (false, &applied(seq)));
        }
        assert_eq!(p.fresh.len(), 3, "fresh holds exactly the applied ids");
    }

    #[test]
    fn a_committed_event_again_is_a_final_duplicate_and_another_body_a_final_conflict() {
        let mut state = game();
        state.seq = 4;
        let mut seen = SeenIds::new();
        let original = score("old", 2);
        seen.insert(
            "old",
            Seen {
                fingerprint: original.fingerprint(),
                seq: 3,
            },
        );
        let p = plan_of(&state, &seen, vec![original, score("old", 5)]);
        assert_eq!(parts(&p.outcomes[0]), (true, &duplicate(3)));
        assert_eq!(
            parts(&p.outcomes[1]),
            (
                true,
                &Err(ApplyError::Conflict {
                    event_id: "old".into(),
                    seq: 3
                })
            )
        );
        assert!(p.applied.is_empty());
        assert_eq!(p.state, state, "nothing applies: the state is unchanged");
        assert_eq!(p.fresh.len(), 0);
    }

    #[test]
    fn repeating_an_event_of_the_same_group_is_tentative() {
        let first = score("x", 1);
        let p = plan_of(
            &game(),
            &SeenIds::new(),
            vec![first.clone(), first, score("x", 7)],
        );
        assert_eq!(parts(&p.outcomes[0]), (false, &applied(1)));
        assert_eq!(parts(&p.outcomes[1]), (false, &duplicate(1)));
        assert_eq!(
            parts(&p.outcomes[2]),
            (
                false,
                &Err(ApplyError::Conflict {
                    event_id: "x".into(),
                    seq: 1
                })
            )
        );
        assert_eq!(p.applied.len(), 1);
        assert_eq!(p.state.seq, 1);
    }

    #[test]
    fn a_wrong_expected_seq_is_final_against_the_committed_state_and_tentative_after_an_applied_event()
     {
        let mismatch = |expected, current| Err(ApplyError::SeqMismatch { expected, current });
        let p = plan_of(
            &game(),
            &SeenIds::new(),
            vec![
                expecting(score("a", 1), 5),
                expecting(score("b", 1), 0),
                expecting(score("c", 1), 0),
                expecting(score("d", 1), 2),
            ],
        );
        assert_eq!(parts(&p.outcomes[0]), (true, &mismatch(5, 0)));
        assert_eq!(parts(&p.outcomes[1]), (false, &applied(1)));
        assert_eq!(parts(&p.outcomes[2]), (false, &mismatch(0, 1)));
        assert_eq!(parts(&p.outcomes[3]), (false, &mismatch(2, 1)));
        assert_eq!(p.state.seq, 1);
        assert_eq!(p.fresh.len(), 1);
    }

    #[test]
    fn an_event_the_rules_refuse_is_final_first_and_tentative_after_an_applied_event() {
        let p = plan_of(
            &game(),
            &SeenIds::new(),
            vec![refused("r1"), score("ok", 1), refused("r2")],
        );
        let (final_first, first) = parts(&p.outcomes[0]);
        assert!(final_first);
        assert!(matches!(first, Err(ApplyError::Invalid(_))), "{first:?}");
        assert_eq!(parts(&p.outcomes[1]), (false, &applied(1)));
        let (final_last, last) = parts(&p.outcomes[2]);
        assert!(!final_last);
        assert!(matches!(last, Err(ApplyError::Invalid(_))), "{last:?}");
        assert!(p.fresh.get("r1").is_none() && p.fresh.get("r2").is_none());
    }

    #[test]
    fn a_group_where_nothing_applies_leaves_the_state_as_it_was() {
        let state = game();
        let p = plan_of(
            &state,
            &SeenIds::new(),
            vec![refused("r"), expecting(score("s", 1), 3)],
        );
        assert!(p.applied.is_empty());
        assert_eq!(p.state, state);
        assert!(
            p.outcomes
                .iter()
                .all(|o| matches!(o, Pending::Final(Err(_))))
        );
    }
}
