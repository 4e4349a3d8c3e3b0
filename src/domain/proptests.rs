//! Property tests of the pure domain: random games, random event sequences
//! (valid and invalid), and the invariants the fan-out relies on — diffs are
//! minimal, exact, agree with the generic JSON diff, survive MessagePack, and
//! `seq` counts applied events with no gaps.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use proptest::prelude::*;
use serde_json::{Value, json};

use super::state::MAX_EXTRA_KEY_LEN;
use super::*;
use crate::codec;

/// A fixed server time, so runs are reproducible from proptest's seed alone.
const T0: i64 = 1_763_770_000_000;

// ---------------------------------------------------------------- strategies

fn arb_game_id() -> impl Strategy<Value = GameId> {
    "[a-z0-9][a-z0-9_-]{0,8}:[A-Za-z0-9_.-]{1,16}"
        .prop_map(|s| GameId::parse(&s).expect("the regex only produces valid ids"))
}

/// Non-blank team names.
fn arb_name() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z .]{0,15}"
}

fn arb_status() -> impl Strategy<Value = Status> {
    proptest::sample::select(Status::ALL.to_vec())
}

/// Floats with a short exact decimal form, so JSON text round trips are exact
/// whatever float parser serde_json uses.
fn arb_float() -> impl Strategy<Value = f64> {
    (-8000i32..8000).prop_map(|n| f64::from(n) / 8.0)
}

fn arb_scalar() -> impl Strategy<Value = Scalar> {
    prop_oneof![
        any::<bool>().prop_map(Scalar::Bool),
        (-1000i64..1000).prop_map(Scalar::Int),
        arb_float().prop_map(Scalar::Float),
        "[a-z]{0,8}".prop_map(Scalar::Str),
    ]
}

/// Keys drawn from a pool larger than `MAX_EXTRA_KEYS`, so long runs of
/// patches can hit the key limit.
fn arb_extra_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(vec!["possession", "inning", "outs", "fouls", "shots"])
            .prop_map(String::from),
        1 => (0u32..40).prop_map(|i| format!("k{i}")),
    ]
}

fn arb_new_game() -> impl Strategy<Value = NewGame> {
    (
        arb_name(),
        arb_name(),
        proptest::option::of(arb_status()),
        proptest::option::of(0u32..10),
        proptest::option::of(proptest::collection::btree_map(
            arb_extra_key(),
            arb_scalar(),
            0..6,
        )),
    )
        .prop_map(|(home, away, status, period, extra)| NewGame {
            home: NewTeam { name: home },
            away: NewTeam { name: away },
            status,
            period,
            extra,
        })
}

/// A valid initial state, built the way `PUT /v1/games/{id}` builds it.
fn arb_state() -> impl Strategy<Value = GameState> {
    (arb_game_id(), arb_new_game()).prop_map(|(id, new)| {
        new.into_state(id, T0)
            .expect("generated names and extras are within limits")
    })
}

fn scalar_json(s: &Scalar) -> Value {
    serde_json::to_value(s).expect("scalars serialise")
}

/// One entry of a `set` patch; some of them make the patch invalid.
fn arb_patch_entry() -> impl Strategy<Value = (String, Value)> {
    let team = || {
        prop_oneof![
            4 => arb_name().prop_map(|n| json!({ "name": n })),
            1 => (0i64..50).prop_map(|s| json!({ "score": s })),
            1 => Just(json!({ "name": "" })),
            1 => Just(json!({ "score": -1 })),
            1 => Just(json!({ "colour": "red" })),
            1 => Just(Value::Null),
        ]
    };
    let extra_value = prop_oneof![
        6 => arb_scalar().prop_map(|s| scalar_json(&s)),
        3 => Just(Value::Null),
        1 => Just(json!([1, 2])),
        1 => Just(json!({ "nested": true })),
    ];
    let extra = prop_oneof![
        10 => proptest::collection::btree_map(arb_extra_key(), extra_value, 1..5)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => Just(json!({ "x".repeat(MAX_EXTRA_KEY_LEN + 1): 1 })),
        1 => Just(Value::Null),
    ];
    prop_oneof![
        3 => prop_oneof![
            4 => arb_status().prop_map(|s| Value::from(s.as_str())),
            1 => Just(json!("halftime")),
            1 => Just(Value::Null),
        ]
        .prop_map(|v| ("status".to_string(), v)),
        3 => prop_oneof![
            4 => (0u32..10).prop_map(Value::from),
            1 => Just(json!(-1)),
            1 => Just(json!("2")),
        ]
        .prop_map(|v| ("period".to_string(), v)),
        3 => team().prop_map(|v| ("home".to_string(), v)),
        3 => team().prop_map(|v| ("away".to_string(), v)),
        5 => extra.prop_map(|v| ("extra".to_string(), v)),
        2 => prop_oneof![
            (0u64..3_600_000).prop_map(|ms| json!({ "ms": ms })),
            any::<bool>().prop_map(|r| json!({ "running": r })),
            Just(json!({ "at": 5 })),
        ]
        .prop_map(|v| ("clock".to_string(), v)),
        1 => prop_oneof![
            Just(("seq".to_string(), json!(3))),
            Just(("game".to_string(), json!("x:y"))),
            Just(("referee".to_string(), json!("Smith"))),
        ],
    ]
}

fn arb_patch() -> impl Strategy<Value = Value> {
    proptest::collection::vec(arb_patch_entry(), 0..4)
        .prop_map(|entries| Value::Object(entries.into_iter().collect()))
}

fn arb_action() -> impl Strategy<Value = Action> {
    let side = prop_oneof![Just(Side::Home), Just(Side::Away)];
    prop_oneof![
        4 => (side, prop_oneof![3 => 1i64..=6, 1 => -4i64..=4])
            .prop_map(|(team, points)| Action::Score { team, points }),
        2 => (
            proptest::option::of(0u32..10),
            0u64..3_600_000,
            any::<bool>()
        )
            .prop_map(|(period, ms, running)| Action::Clock { period, ms, running }),
        1 => arb_status().prop_map(|status| Action::Status { status }),
        3 => arb_patch().prop_map(|patch| Action::Set { patch }),
    ]
}

fn arb_actions() -> impl Strategy<Value = Vec<Action>> {
    proptest::collection::vec(arb_action(), 0..40)
}

/// An event body as a client would post it; most are valid.
fn arb_event_body() -> impl Strategy<Value = Value> {
    (
        "[ -~]{1,64}",
        proptest::option::of(0u64..1000),
        arb_action(),
    )
        .prop_map(|(event_id, expected_seq, action)| {
            let raw = RawEvent::from(Event {
                event_id,
                expected_seq,
                action,
            });
            serde_json::to_value(raw).expect("raw events serialise")
        })
}

// ---------------------------------------------------------------- helpers

/// One applied event: the state before and after it.
struct Step {
    old: GameState,
    new: GameState,
}

/// Applies every action in turn, skipping the refused ones, and checks that
/// a refusal leaves the state as it was.
fn run(initial: &GameState, actions: &[Action]) -> Result<Vec<Step>, TestCaseError> {
    let mut state = initial.clone();
    let mut steps = Vec::new();
    for (i, action) in actions.iter().enumerate() {
        let before = state.clone();
        let now = T0 + 1 + i as i64 * 37;
        match apply(&state, action, now) {
            Ok(next) => {
                prop_assert!(
                    next.validate().is_ok(),
                    "apply returned an invalid state for {action:?}"
                );
                steps.push(Step {
                    old: state,
                    new: next.clone(),
                });
                state = next;
            }
            Err(_) => prop_assert_eq!(&state, &before, "a refused event changed the state"),
        }
    }
    Ok(steps)
}

fn json_of(state: &GameState) -> Value {
    serde_json::to_value(state).expect("states serialise")
}

/// Checks that `diff` holds exactly the fields (and sub-fields) that differ
/// between `old` and `new`, with their new values (`null` when removed).
fn check_minimal(old: &Value, new: &Value, diff: &Value, depth: u8) -> Result<(), TestCaseError> {
    let (Some(o), Some(n), Some(d)) = (old.as_object(), new.as_object(), diff.as_object()) else {
        return Err(TestCaseError::fail(format!(
            "expected objects: old {old}, new {new}, diff {diff}"
        )));
    };
    let null = Value::Null;
    for (k, dv) in d {
        let (ov, nv) = (o.get(k).unwrap_or(&null), n.get(k).unwrap_or(&null));
        prop_assert_ne!(ov, nv, "diff holds unchanged field {}", k);
        if depth > 0 && ov.is_object() && nv.is_object() {
            check_minimal(ov, nv, dv, depth - 1)?;
        } else {
            prop_assert_eq!(dv, nv, "diff value of {} is not the new value", k);
        }
    }
    for k in o.keys().chain(n.keys()) {
        if o.get(k) != n.get(k) {
            prop_assert!(
                d.contains_key(k),
                "changed field {} missing from diff {}",
                k,
                diff
            );
        }
    }
    Ok(())
}

/// Renders `v` as JSON text with every object's keys in an order chosen by
/// `seed` (serde_json's own writer would always sort them).
fn write_shuffled(v: &Value, seed: u64, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            let hasher = BuildHasherDefault::<DefaultHasher>::default();
            keys.sort_by_key(|k| hasher.hash_one((seed, k)));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push(':');
                write_shuffled(&map[k], seed, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The same event with exactly one field value changed.
fn mutate(e: &Event, which: u8) -> Event {
    let mut m = e.clone();
    match which % 3 {
        0 => {
            m.event_id = if m.event_id.len() < 64 {
                format!("{}x", m.event_id)
            } else {
                m.event_id[1..].to_string()
            }
        }
        1 => m.expected_seq = m.expected_seq.map_or(Some(0), |s| Some(s + 1)),
        _ => match &mut m.action {
            Action::Score { points, .. } => {
                let delta = if *points > 0 { -2 } else { 2 };
                *points += delta;
            }
            Action::Clock { ms, .. } => *ms += 1,
            Action::Status { status } => {
                *status = if *status == Status::Live {
                    Status::Final
                } else {
                    Status::Live
                }
            }
            Action::Set { patch } => {
                if let Some(obj) = patch.as_object_mut() {
                    let n = obj.get("zz").and_then(Value::as_i64).unwrap_or(0);
                    obj.insert("zz".into(), Value::from(n + 1));
                }
            }
        },
    }
    m
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// 1. The snapshot followed by every diff, merged in order, is the final state.
    #[test]
    fn snapshot_plus_diffs_rebuild_the_state(initial in arb_state(), actions in arb_actions()) {
        let steps = run(&initial, &actions)?;
        let mut doc = json_of(&initial);
        for step in &steps {
            patch::merge(&mut doc, &patch::diff(&step.old, &step.new));
            prop_assert_eq!(&doc, &json_of(&step.new));
        }
        let last = steps.last().map_or(&initial, |s| &s.new);
        prop_assert_eq!(doc, json_of(last));
    }

    /// 2. A diff holds every changed field and nothing else, two levels deep.
    #[test]
    fn diffs_hold_exactly_the_changed_fields(initial in arb_state(), actions in arb_actions()) {
        for step in run(&initial, &actions)? {
            let d = patch::diff(&step.old, &step.new);
            check_minimal(&json_of(&step.old), &json_of(&step.new), &d, 1)?;
        }
    }

    /// 3. The field-wise diff agrees with the generic JSON diff.
    #[test]
    fn fast_diff_equals_generic_diff(initial in arb_state(), actions in arb_actions()) {
        for step in run(&initial, &actions)? {
            prop_assert_eq!(
                patch::diff(&step.old, &step.new),
                patch::diff_values(&json_of(&step.old), &json_of(&step.new))
            );
        }
    }

    /// 4. Every applied event adds exactly 1 to `seq`, and its diff says so.
    #[test]
    fn seq_counts_applied_events(initial in arb_state(), actions in arb_actions()) {
        let steps = run(&initial, &actions)?;
        for (i, step) in steps.iter().enumerate() {
            prop_assert_eq!(step.new.seq, step.old.seq + 1);
            prop_assert_eq!(step.new.seq, initial.seq + i as u64 + 1);
            let d = patch::diff(&step.old, &step.new);
            prop_assert_eq!(
                d.get("seq"),
                Some(&Value::from(step.new.seq))
            );
        }
    }

    /// 5a. A valid event body survives RawEvent → Event → JSON → Event.
    #[test]
    fn events_round_trip_through_json(body in arb_event_body()) {
        let raw: RawEvent = serde_json::from_value(body.clone())
            .map_err(|e| TestCaseError::fail(format!("{body} is not a RawEvent: {e}")))?;
        let Ok(event) = Event::try_from(raw) else {
            // Invalid bodies (e.g. zero points) are refused; nothing to round trip.
            return Ok(());
        };
        let text = serde_json::to_string(&event)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: Event = serde_json::from_str(&text)
            .map_err(|e| TestCaseError::fail(format!("{text} does not parse back: {e}")))?;
        prop_assert_eq!(&back, &event);
        prop_assert_eq!(back.fingerprint(), event.fingerprint());
    }

    /// 5b. The fingerprint ignores key order and sees any changed value.
    #[test]
    fn fingerprint_ignores_key_order_only(
        body in arb_event_body(),
        seeds in (any::<u64>(), any::<u64>()),
        which in any::<u8>(),
    ) {
        let (mut a, mut b) = (String::new(), String::new());
        write_shuffled(&body, seeds.0, &mut a);
        write_shuffled(&body, seeds.1, &mut b);
        let (Ok(ea), Ok(eb)) = (serde_json::from_str::<Event>(&a), serde_json::from_str::<Event>(&b)) else {
            // Both orders must agree on refusing an invalid body.
            prop_assert!(serde_json::from_str::<Event>(&a).is_err());
            prop_assert!(serde_json::from_str::<Event>(&b).is_err());
            return Ok(());
        };
        prop_assert_eq!(&ea, &eb);
        prop_assert_eq!(ea.fingerprint(), eb.fingerprint(), "{} vs {}", a, b);
        let changed = mutate(&ea, which);
        prop_assert_ne!(&changed, &ea);
        prop_assert_ne!(changed.fingerprint(), ea.fingerprint());
    }

    /// 6. The MessagePack diff frame decodes to the same patch (and the
    /// snapshot frame to the same state).
    #[test]
    fn msgpack_frames_round_trip(initial in arb_state(), actions in arb_actions()) {
        let steps = run(&initial, &actions)?;
        for (i, step) in steps.iter().enumerate() {
            let d = patch::diff(&step.old, &step.new);
            let ts = T0 + i as i64;
            let frame = codec::decode_frame(&codec::diff(&step.new.game, step.new.seq, &d, ts))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(frame.t.as_str(), "d");
            prop_assert_eq!(frame.g.as_deref(), Some(step.new.game.as_str()));
            prop_assert_eq!(frame.q, Some(step.new.seq));
            prop_assert_eq!(frame.ts, Some(ts));
            prop_assert_eq!(frame.d, Some(d));
        }
        let last = steps.last().map_or(&initial, |s| &s.new);
        let snap = codec::decode_frame(&codec::snapshot(last))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(snap.d, Some(json_of(last)));
    }
}

/// The generators reach both outcomes: most sequences apply some events and
/// refuse others, so the properties above are not vacuous.
#[test]
fn generators_produce_applied_and_refused_events() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let (mut applied, mut refused, mut sets_applied) = (0, 0, 0);
    let mut extra_keys = BTreeMap::new();
    for _ in 0..64 {
        let initial = arb_state()
            .new_tree(&mut runner)
            .expect("strategy")
            .current();
        let actions = arb_actions()
            .new_tree(&mut runner)
            .expect("strategy")
            .current();
        let mut state = initial;
        for action in &actions {
            match apply(&state, action, T0) {
                Ok(next) => {
                    applied += 1;
                    if matches!(action, Action::Set { .. }) {
                        sets_applied += 1;
                    }
                    for k in next.extra.keys() {
                        *extra_keys.entry(k.clone()).or_insert(0) += 1;
                    }
                    state = next;
                }
                Err(_) => refused += 1,
            }
        }
    }
    assert!(applied > 200, "only {applied} events applied");
    assert!(refused > 50, "only {refused} events refused");
    assert!(sets_applied > 30, "only {sets_applied} set events applied");
    assert!(extra_keys.len() > 5, "extra keys seen: {extra_keys:?}");
}
