//! The per-event hot path, step by step: parse an event body, apply it, diff
//! the states, encode the diff frame once; plus the snapshot a new fan gets.
//!
//! Run with `cargo bench --bench codec` (add `-- --quick` for a short run).

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use scorehub::codec;
use scorehub::domain::{
    self, Action, Event, GameId, GameState, NewGame, NewTeam, RawEvent, Scalar, Side, Status, patch,
};

/// A score event as a scorekeeper posts it.
const SCORE_BODY: &[u8] =
    br#"{"event_id":"q3-07:31-lal-3pt","kind":"score","team":"home","points":3,"expected_seq":17}"#;

/// A live basketball game with a few sport-specific extras.
fn typical_state() -> GameState {
    let extra: BTreeMap<String, Scalar> = [
        ("possession", Scalar::Str("home".into())),
        ("home_fouls", Scalar::Int(4)),
        ("away_fouls", Scalar::Int(6)),
        ("bonus", Scalar::Bool(false)),
        ("win_prob_home", Scalar::Float(0.47)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let id = GameId::parse("nba:2026-11-22-lal-bos").expect("valid id");
    let mut state = NewGame {
        home: NewTeam {
            name: "Los Angeles Lakers".into(),
        },
        away: NewTeam {
            name: "Boston Celtics".into(),
        },
        status: Some(Status::Live),
        period: Some(3),
        extra: Some(extra),
    }
    .into_state(id, 1_763_770_000_000)
    .expect("valid game");
    state.seq = 17;
    state.home.score = 78;
    state.away.score = 81;
    state
}

fn hot_path(c: &mut Criterion) {
    let state = typical_state();
    let action = Action::Score {
        team: Side::Home,
        points: 3,
    };
    let now = 1_763_770_431_000;
    let next = domain::apply(&state, &action, now).expect("the score applies");
    let diff = patch::diff(&state, &next);

    let mut g = c.benchmark_group("hot_path");
    g.throughput(Throughput::Elements(1));

    g.bench_function("decode_event", |b| {
        b.iter(|| {
            let raw: RawEvent = serde_json::from_slice(black_box(SCORE_BODY)).expect("valid body");
            Event::try_from(raw).expect("valid event")
        })
    });
    g.bench_function("apply_score", |b| {
        b.iter(|| domain::apply(black_box(&state), black_box(&action), now).expect("applies"))
    });
    g.bench_function("diff", |b| {
        b.iter(|| patch::diff(black_box(&state), black_box(&next)))
    });
    g.bench_function("encode_diff", |b| {
        b.iter(|| codec::diff(black_box(&next.game), next.seq, black_box(&diff), now))
    });
    g.bench_function("encode_snapshot", |b| {
        b.iter(|| codec::snapshot(black_box(&next)))
    });
    g.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
