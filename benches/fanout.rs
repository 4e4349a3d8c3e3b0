//! Fan-out cost: one encoded diff handed to N fans.
//!
//! - `outbox_push/N`: what the game actor does per event, in isolation — push
//!   the same shared frame into N outboxes. Queues are drained between timed
//!   batches, outside the measurement.
//! - `actor_apply/N`: the whole actor path through the public API — apply one
//!   event (sequence, diff, append to a file log without fsync, encode once,
//!   fan out to N subscribers) and wait for the answer.
//!
//! Throughput is reported in fans reached per second. Run with
//! `cargo bench --bench fanout` (add `-- --quick` for a short run).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use scorehub::backend::EventLog;
use scorehub::backend::local::{Catalog, LocalLog};
use scorehub::codec;
use scorehub::domain::{self, Action, Event, GameId, GameState, NewGame, NewTeam, Side, patch};
use scorehub::fanout::outbox::{Item, Outbox, Push, Take};
use scorehub::fanout::pressure::Pressure;
use scorehub::game::{ActorConfig, GameHandle, Restored, SeenIds, Submission};
use scorehub::store::FileLog;
use scorehub::store::file::FileLogOptions;

/// Pushes (or applies) between two drains of the queues; below the frame cap
/// so nothing is ever conflated.
const DRAIN_EVERY: u64 = 256;
/// Frame cap per outbox: large enough never to conflate in these benches.
const MAX_FRAMES: usize = 4 * DRAIN_EVERY as usize;
/// Byte cap per outbox: never reached.
const MAX_BYTES: usize = 64 << 20;

fn new_state() -> GameState {
    let id = GameId::parse("nba:2026-11-22-lal-bos").expect("valid id");
    NewGame {
        home: NewTeam {
            name: "Los Angeles Lakers".into(),
        },
        away: NewTeam {
            name: "Boston Celtics".into(),
        },
        status: None,
        period: None,
        extra: None,
    }
    .into_state(id, 1_763_770_000_000)
    .expect("valid game")
}

/// The frame the actor would encode for a typical score event.
fn typical_frame(state: &GameState) -> Bytes {
    let action = Action::Score {
        team: Side::Home,
        points: 3,
    };
    let next = domain::apply(state, &action, 1_763_770_431_000).expect("the score applies");
    codec::diff(
        &next.game,
        next.seq,
        &patch::diff(state, &next),
        1_763_770_431_000,
    )
}

fn outboxes(n: usize) -> Vec<Arc<Outbox>> {
    // No probe runs: the hub reads calm, as on an idle machine.
    let pressure = Arc::new(Pressure::new());
    (0..n as u64)
        .map(|id| Arc::new(Outbox::new(id, MAX_FRAMES, MAX_BYTES, pressure.clone())))
        .collect()
}

fn drain(outboxes: &[Arc<Outbox>], scratch: &mut Vec<Item>) {
    for ob in outboxes {
        scratch.clear();
        // No socket is attached: every frame queues, as for a fan whose
        // socket is full (the direct write path is measured by the load test).
        let taken = ob.take(scratch, &mut None);
        assert!(taken != Take::Closed, "an outbox closed during the bench");
    }
    scratch.clear();
}

fn outbox_push(c: &mut Criterion) {
    let state = new_state();
    let frame = typical_frame(&state);
    let game = state.game.clone();
    let mut g = c.benchmark_group("outbox_push");
    for n in [1usize, 100, 1_000, 10_000] {
        let fans = outboxes(n);
        let mut scratch = Vec::new();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let batch = left.min(DRAIN_EVERY);
                    let start = Instant::now();
                    for _ in 0..batch {
                        for ob in &fans {
                            let pushed = ob.push_diff(&game, &frame);
                            debug_assert_eq!(pushed, Push::Queued);
                        }
                    }
                    timed += start.elapsed();
                    drain(&fans, &mut scratch);
                    left -= batch;
                }
                timed
            })
        });
    }
    g.finish();
}

fn actor_apply(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = Arc::new(
        FileLog::open(dir.path(), FileLogOptions { fsync: false }, |_| Ok(()))
            .expect("the file log opens"),
    );
    let log: Arc<dyn EventLog> = Arc::new(LocalLog::new(file, Catalog::default()));
    let by: Arc<str> = Arc::from("bench");
    let cfg = ActorConfig {
        mailbox: 1024,
        history: 256,
        fan_shards: 2,
        inline_fans: scorehub::fanout::fans::INLINE_FANS,
    };

    let mut g = c.benchmark_group("actor_apply");
    for n in [1usize, 100, 1_000] {
        // A fresh game per N, so earlier runs leave no subscribers behind.
        let mut state = new_state();
        state.game = GameId::parse(&format!("nba:bench-{n}")).expect("valid id");
        let restored = Restored {
            state,
            created_fingerprint: [0; 16],
            seen: SeenIds::new(),
            history: VecDeque::new(),
            lost: 0,
        };
        let handle = rt.block_on(async { GameHandle::spawn(restored, log.clone(), cfg) });
        let fans = Arc::new(outboxes(n));
        rt.block_on(async {
            for ob in fans.iter() {
                assert!(
                    handle.try_subscribe(ob.clone(), None).await,
                    "actor is gone"
                );
            }
        });
        let mut next_event = 0u64;

        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let first = next_event;
                next_event += iters;
                let (handle, fans, by) = (handle.clone(), fans.clone(), by.clone());
                async move {
                    let mut scratch = Vec::new();
                    let mut timed = Duration::ZERO;
                    let mut score = handle.state().home.score;
                    let mut i = first;
                    while i < first + iters {
                        let end = (first + iters).min(i + DRAIN_EVERY);
                        let start = Instant::now();
                        for k in i..end {
                            // Alternate +1/-1 so the score never leaves its bounds.
                            let points = if score == 0 { 1 } else { -1 };
                            score += points;
                            let event = Event {
                                event_id: format!("e{k}"),
                                expected_seq: None,
                                action: Action::Score {
                                    team: Side::Home,
                                    points,
                                },
                            };
                            let submission = Submission::new(event, by.clone(), Instant::now());
                            let applied = handle
                                .try_submit(submission)
                                .await
                                .expect("the actor runs")
                                .wait()
                                .await
                                .expect("the event applies");
                            debug_assert!(!applied.duplicate);
                        }
                        timed += start.elapsed();
                        drain(&fans, &mut scratch);
                        i = end;
                    }
                    timed
                }
            })
        });
    }
    g.finish();
    rt.block_on(log.close());
}

criterion_group!(benches, outbox_push, actor_apply);
criterion_main!(benches);
