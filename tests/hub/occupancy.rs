//! Who watches (occupancy): the count of fans per game, in snapshots (`n`),
//! in occupancy frames (`t:"o"`, at most one per game per
//! `occupancy.interval`, only on a change) and in `GET /v1/games/{id}`
//! (`watching`); alone, and over one real `redis-server` with two real hub
//! processes, one of them killed with `kill -9`.

use std::time::{Duration, Instant};

use scorehub::codec::DecodedFrame;
use scorehub::testing::{RedisCluster, RedisServer};

use crate::common::{Api, BinaryHub, Fan, TestHub, WAIT, eventually};

const G: &str = "nba:2026-11-22-lal-bos";

/// The occupancy interval of these tests: short, so a test sees many ticks.
const INTERVAL: Duration = Duration::from_millis(200);
/// How long a node's report lives in Redis in these tests.
const TTL: Duration = Duration::from_secs(1);

/// A fan of `game` on `node` that reads occupancy frames; returns it with
/// its first frame, the snapshot.
async fn watcher(node: &Api, game: &str) -> (Fan, DecodedFrame) {
    let mut fan = Fan::connect(&node.ws_url(&format!("games={game}")))
        .await
        .seeing_occupancy();
    let first = fan.next_frame(WAIT).await;
    assert_eq!(
        (first.t.as_str(), first.g.as_deref()),
        ("s", Some(game)),
        "the first frame is the snapshot: {first:?}"
    );
    (fan, first)
}

/// Reads frames until an occupancy frame of `game` saying `n` arrives within
/// `timeout` (other frames, and occupancy frames with other counts, are
/// skipped); panics with the counts seen otherwise.
async fn until_watching(fan: &mut Fan, game: &str, n: u64, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(f) = fan.try_next_frame(left).await else {
            panic!("no occupancy frame of {game} with n={n} within {timeout:?}; saw {seen:?}");
        };
        if f.t == "o" {
            assert_eq!(
                f.g.as_deref(),
                Some(game),
                "occupancy frame of {game}: {f:?}"
            );
            let got =
                f.n.unwrap_or_else(|| panic!("an occupancy frame has n: {f:?}"));
            if got == n {
                return;
            }
            seen.push(got);
        }
    }
}

/// The occupancy frames of `game` received within `window`.
async fn occupancy_frames(fan: &mut Fan, game: &str, window: Duration) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + window;
    let mut counts = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return counts;
        }
        match fan.try_next_frame(left).await {
            Some(f) if f.t == "o" && f.g.as_deref() == Some(game) => {
                counts.push(f.n.expect("an occupancy frame has n"));
            }
            Some(_) => {}
            None => return counts,
        }
    }
}

/// Waits until `GET /v1/games/{game}` on `node` says `n` fans watch.
async fn watching_becomes(node: &Api, name: &str, game: &str, n: u64, timeout: Duration) {
    eventually(
        &format!("GET {game} on {name} answers watching = {n}"),
        timeout,
        || async move { node.watching(game).await == n },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_fans_see_the_count_grow_and_fall_in_snapshots_frames_and_get() {
    let hub = TestHub::start_with(|c| {
        c.occupancy.interval = INTERVAL;
        c.occupancy.ttl = TTL;
    })
    .await;
    hub.put_game(G).await;
    assert_eq!(hub.watching(G).await, 0, "nobody watches a new game");

    let (mut first, snapshot) = watcher(&hub, G).await;
    assert_eq!(
        snapshot.n,
        Some(1),
        "the snapshot counts its own fan: {snapshot:?}"
    );
    until_watching(&mut first, G, 1, WAIT).await;

    let (mut second, snapshot) = watcher(&hub, G).await;
    assert!(
        snapshot.n.is_some_and(|n| n >= 1),
        "a snapshot carries the latest count: {snapshot:?}"
    );
    until_watching(&mut first, G, 2, WAIT).await;
    until_watching(&mut second, G, 2, WAIT).await;
    watching_becomes(&hub, "the hub", G, 2, WAIT).await;

    // A fan that leaves lowers it, for the fans still there and for GET.
    second.close().await;
    until_watching(&mut first, G, 1, WAIT).await;
    watching_becomes(&hub, "the hub", G, 1, WAIT).await;

    let metrics = hub.get("/metrics").await.text;
    assert!(
        metrics.contains("scorehub_frames_sent_total{kind=\"occupancy\"}"),
        "occupancy frames are counted by kind:\n{metrics}"
    );
    assert!(
        metrics.contains("scorehub_occupancy_reports_total{outcome=\"ok\"}"),
        "the occupancy task counts its reports:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_churning_crowd_gets_at_most_one_frame_per_interval_and_none_when_still() {
    let hub = TestHub::start_with(|c| {
        c.occupancy.interval = INTERVAL;
        c.occupancy.ttl = TTL;
    })
    .await;
    hub.put_game(G).await;
    let (mut fan, _) = watcher(&hub, G).await;
    until_watching(&mut fan, G, 1, WAIT).await;

    // Fans come and go every few milliseconds, far faster than the
    // interval: the count changes between nearly every two ticks.
    let churn = {
        let url = hub.ws_url(&format!("games={G}"));
        tokio::spawn(async move {
            let started = Instant::now();
            let mut crowd: Vec<Fan> = Vec::new();
            let mut i = 0u32;
            while started.elapsed() < Duration::from_secs(3) {
                if i % 3 == 2 {
                    if let Some(f) = crowd.pop() {
                        f.close().await;
                    }
                } else {
                    let mut f = Fan::connect(&url).await;
                    f.next_frame(WAIT).await;
                    crowd.push(f);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            for f in crowd {
                f.close().await;
            }
        })
    };
    let window = Duration::from_secs(2);
    let counts = occupancy_frames(&mut fan, G, window).await;
    // A tick is due every interval: over the window at most
    // window / interval of them, plus the tick at each edge of it.
    let most = (window.as_millis() / INTERVAL.as_millis()) as usize + 2;
    assert!(
        counts.len() >= 3,
        "the churn changed the count, so frames came: {counts:?}"
    );
    assert!(
        counts.len() <= most,
        "at most one occupancy frame per {INTERVAL:?}: {} in {window:?} (at most {most}): {counts:?}",
        counts.len()
    );
    assert!(
        counts.windows(2).all(|w| w[0] != w[1]),
        "a frame only when the count changed: {counts:?}"
    );
    churn.await.expect("the churn task");

    // Everyone else left: the count settles at 1, then nothing more comes.
    watching_becomes(&hub, "the hub", G, 1, WAIT).await;
    until_watching(&mut fan, G, 1, WAIT).await;
    let still = occupancy_frames(&mut fan, G, INTERVAL * 6).await;
    assert!(
        still.is_empty(),
        "no occupancy frame while the count stands still: {still:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sum_their_fans_and_a_killed_node_drops_out_within_the_ttl() {
    let redis = RedisServer::start();
    let url = redis.url();
    let env = [
        ("SCOREHUB_REDIS__URL", url.as_str()),
        ("SCOREHUB_OCCUPANCY__INTERVAL", "200ms"),
        ("SCOREHUB_OCCUPANCY__TTL", "1s"),
    ];
    let dir_a = tempfile::tempdir().expect("a temp dir");
    let dir_b = tempfile::tempdir().expect("a temp dir");
    let a = BinaryHub::spawn(dir_a.path(), &env);
    let mut b = BinaryHub::spawn(dir_b.path(), &env);
    a.put_game(G).await;

    let mut on_a = Vec::new();
    for _ in 0..2 {
        on_a.push(watcher(&a, G).await.0);
    }
    let mut on_b = Vec::new();
    for _ in 0..3 {
        on_b.push(watcher(&b, G).await.0);
    }
    // Every fan, on either node, hears of all five; both nodes answer it.
    for fan in on_a.iter_mut().chain(on_b.iter_mut()) {
        until_watching(fan, G, 5, WAIT).await;
    }
    watching_becomes(&a, "A", G, 5, WAIT).await;
    watching_becomes(&b, "B", G, 5, WAIT).await;

    // Another deployment (its own prefix) on the same Redis, with a fan of
    // a game of the same id: counted apart.
    let other = TestHub::start_cluster_with(&url, |c| {
        c.redis.prefix = "elsewhere".to_owned();
        c.occupancy.interval = INTERVAL;
        c.occupancy.ttl = TTL;
    })
    .await;
    other.put_game(G).await;
    let (mut stranger, _) = watcher(&other, G).await;
    until_watching(&mut stranger, G, 1, WAIT).await;
    tokio::time::sleep(INTERVAL * 3).await;
    assert_eq!(
        other.watching(G).await,
        1,
        "the other deployment counts its own fan"
    );
    assert_eq!(
        a.watching(G).await,
        5,
        "A does not count the other deployment's fan"
    );

    // B dies without a word: its report expires, and A's fans fall back
    // to A's own two within ttl + interval (and some slack for a loaded
    // machine).
    b.kill9();
    let killed = Instant::now();
    let bound = TTL + INTERVAL + Duration::from_secs(3);
    for fan in &mut on_a {
        until_watching(fan, G, 2, bound).await;
    }
    let took = killed.elapsed();
    assert!(
        took <= bound,
        "A's fans saw the count fall back within {bound:?}, took {took:?}"
    );
    watching_becomes(&a, "A", G, 2, WAIT).await;
    // And it stays there: nothing revives the dead node's fans.
    let after = occupancy_frames(&mut on_a[0], G, INTERVAL * 4).await;
    assert!(
        after.iter().all(|&n| n == 2),
        "the dead node's fans stay gone: {after:?}"
    );
    assert_eq!(a.watching(G).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_shutting_down_withdraws_its_fans_at_once() {
    let redis = RedisServer::start();
    let url = redis.url();
    // A long ttl: only the withdrawal can make B's fans disappear soon.
    let env = [
        ("SCOREHUB_REDIS__URL", url.as_str()),
        ("SCOREHUB_OCCUPANCY__INTERVAL", "200ms"),
        ("SCOREHUB_OCCUPANCY__TTL", "60s"),
    ];
    let dir_a = tempfile::tempdir().expect("a temp dir");
    let dir_b = tempfile::tempdir().expect("a temp dir");
    let a = BinaryHub::spawn(dir_a.path(), &env);
    let mut b = BinaryHub::spawn(dir_b.path(), &env);
    a.put_game(G).await;
    let (mut on_a, _) = watcher(&a, G).await;
    let mut on_b = Vec::new();
    for _ in 0..2 {
        on_b.push(watcher(&b, G).await.0);
    }
    until_watching(&mut on_a, G, 3, WAIT).await;

    b.sigterm();
    let status = b.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "B exits cleanly on SIGTERM: {status:?}");
    // Well inside the 60 s a report lives.
    until_watching(&mut on_a, G, 1, Duration::from_secs(10)).await;
    assert_eq!(a.watching(G).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_redis_cluster_each_game_is_counted_on_its_own_shard() {
    let cluster = RedisCluster::start_with(3, 0);
    let seeds = cluster.urls();
    let a = cluster_node(seeds.clone()).await;
    let b = cluster_node(seeds).await;
    // Games whose keys land on different shards (their hash tags differ),
    // each watched from both nodes by a different number of fans.
    let games: Vec<String> = (0..6).map(|i| format!("nba:shard-{i}")).collect();
    let mut fans = Vec::new();
    for (i, game) in games.iter().enumerate() {
        a.put_game(game).await;
        for _ in 0..=i % 3 {
            fans.push(watcher(&a, game).await.0);
        }
        fans.push(watcher(&b, game).await.0);
    }
    for (i, game) in games.iter().enumerate() {
        let want = (i % 3 + 2) as u64;
        watching_becomes(&a, "A", game, want, WAIT).await;
        watching_becomes(&b, "B", game, want, WAIT).await;
    }
    drop(fans);
    for game in &games {
        watching_becomes(&a, "A", game, 0, WAIT).await;
    }
}

/// An in-process hub over the Redis Cluster of `seeds`.
async fn cluster_node(seeds: Vec<String>) -> TestHub {
    let first = seeds[0].clone();
    TestHub::start_cluster_with(&first, move |c| {
        c.redis.url = None;
        c.redis.cluster = seeds;
        c.occupancy.interval = INTERVAL;
        c.occupancy.ttl = TTL;
    })
    .await
}
