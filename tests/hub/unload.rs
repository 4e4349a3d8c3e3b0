//! Single node: a game without fans or requests for `games.idle_unload` leaves
//! memory, and every use of it afterwards (reads, a repeated create, events,
//! batch items, subscriptions by id or league, resumes) behaves exactly as if
//! it had stayed: reads come from its kept state, everything else loads it
//! again from the event log, idempotency record and history included.
//!
//! These hubs are served in-process like `common::TestHub`, but keep the
//! registry to see whether a game is loaded: `scorehub_games_active` is one
//! gauge for every hub of this test binary. Waits are bounded polls.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use reqwest::Method;
use scorehub::auth::{Auth, Scope};
use scorehub::config::Config;
use scorehub::domain::GameId;
use scorehub::registry::Registry;
use scorehub::server::Hub;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::common::{
    Fan, FanState, Reply, SECRET, WAIT, eventually, http_client, merge_patch, new_game, score,
};

/// Short enough for tests; unloading is polled for, never timed.
const IDLE: Duration = Duration::from_millis(200);

const G: &str = "nba:unload-1";

/// A single-node hub on `127.0.0.1:0` over `dir`, keeping its registry.
struct LocalHub {
    base: String,
    registry: Arc<Registry>,
    client: reqwest::Client,
    token: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl LocalHub {
    async fn start(dir: &Path, history: usize) -> LocalHub {
        let mut config = Config::default();
        config.storage.dir = dir.to_path_buf();
        config.storage.fsync = false;
        config.auth.secret = Some(SECRET.to_owned());
        config.limits.events_per_second = 1_000_000;
        config.limits.events_burst = 1_000_000;
        config.games.idle_unload = IDLE;
        config.games.history = history;
        // A hub stopped in this process lets go of the log once its last
        // game actor has ended: wait for that (bounded).
        let deadline = tokio::time::Instant::now() + WAIT;
        let hub = loop {
            match Hub::open(config.clone(), SECRET.as_bytes()) {
                Ok(hub) => break hub,
                Err(e) if e.to_string().contains("in use") => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the log is still in use after {WAIT:?}: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("the hub opens: {e}"),
            }
        };
        let registry = hub.state().registry.clone();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(hub.serve(listener, async move {
            let _ = stopped.await;
        }));
        let token = Auth::new(SECRET.as_bytes())
            .mint(
                "tester",
                Scope::Scorekeeper,
                vec!["nba:*".into()],
                Duration::from_secs(3600),
            )
            .expect("minting a token");
        LocalHub {
            base: format!("http://{addr}"),
            registry,
            client: http_client(),
            token,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops serving and waits for the log to be flushed.
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("shut down once");
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("serve returns within 15 s")
            .expect("serve does not panic")
            .expect("serve ends without an IO error");
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} failed: {e}"));
        Reply {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            text: resp.text().await.expect("reading a response body"),
        }
    }

    /// The state `GET /v1/games/{id}` answers (without its `watching`).
    async fn get_game(&self, id: &str) -> Value {
        let mut body = self
            .call(Method::GET, &format!("/v1/games/{id}"), None)
            .await
            .ok_json();
        crate::common::without_watching(&mut body);
        body
    }

    async fn put(&self, id: &str, body: &Value) -> Reply {
        self.call(Method::PUT, &format!("/v1/games/{id}"), Some(body))
            .await
    }

    async fn post(&self, id: &str, event: &Value) -> Reply {
        self.call(Method::POST, &format!("/v1/games/{id}/events"), Some(event))
            .await
    }

    /// Posts an event; returns `(seq, duplicate)`.
    async fn post_ok(&self, id: &str, event: &Value) -> (u64, bool) {
        let body = self.post(id, event).await.ok_json();
        assert_eq!(body["game"], id, "{body}");
        let seq = body["seq"].as_u64().expect("an ack has a seq");
        let dup = body["duplicate"].as_bool().expect("an ack says duplicate");
        (seq, dup)
    }

    fn ws_url(&self, query: &str) -> String {
        let host = self.base.trim_start_matches("http://");
        format!("ws://{host}/v1/ws?{query}")
    }

    fn is_loaded(&self, id: &str) -> bool {
        self.registry
            .is_loaded(&GameId::parse(id).expect("a valid id"))
    }

    /// Polls (bounded) until `id` has left memory.
    async fn wait_unloaded(&self, id: &str) {
        eventually(&format!("{id} to be unloaded"), WAIT, || async {
            !self.is_loaded(id)
        })
        .await;
    }
}

impl Drop for LocalHub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn status(event_id: &str, status: &str) -> Value {
    json!({"event_id": event_id, "kind": "status", "status": status})
}

fn set_extra(event_id: &str, key: &str, value: Value) -> Value {
    json!({"event_id": event_id, "kind": "set", "patch": {"extra": {key: value}}})
}

/// Creates `G` and applies six events (it ends `live`, home 5, away 3).
async fn game_with_six_events(hub: &LocalHub) {
    assert_eq!(hub.put(G, &new_game("Home", "Away")).await.status, 201);
    let events = [
        status("e1", "live"),
        score("e2", "home", 2),
        score("e3", "away", 3),
        set_extra("e4", "possession", json!("home")),
        score("e5", "home", 3),
        set_extra("e6", "fouls", json!(4)),
    ];
    for (i, e) in events.iter().enumerate() {
        assert_eq!(hub.post_ok(G, e).await, (i as u64 + 1, false));
    }
}

/// Reads frames up to a barrier's pong.
async fn frames_until_barrier(fan: &mut Fan) -> Vec<scorehub::codec::DecodedFrame> {
    fan.barrier().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unloaded_game_reads_lists_and_keeps_exact_idempotency() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = LocalHub::start(dir.path(), 1000).await;
    game_with_six_events(&hub).await;
    // A fan comes and goes.
    let mut fan = Fan::connect(&hub.ws_url(&format!("games={G}"))).await;
    let f = fan.next_frame(WAIT).await;
    assert_eq!((f.t.as_str(), f.q), ("s", Some(6)), "{f:?}");
    fan.close().await;
    let before = hub.get_game(G).await;

    hub.wait_unloaded(G).await;

    // Reads, listing, the audit trail and a repeated create need no actor.
    let r = hub.call(Method::GET, &format!("/v1/games/{G}"), None).await;
    let mut read = r.ok_json();
    assert_eq!(read["watching"], 0, "an unloaded game has no fans: {read}");
    crate::common::without_watching(&mut read);
    assert_eq!(read, before);
    assert_eq!(r.header("etag").as_deref(), Some("\"6\""));
    let page = hub
        .call(Method::GET, "/v1/games?league=nba&status=live", None)
        .await
        .ok_json();
    assert_eq!(page["games"], json!([before.clone()]), "{page}");
    let page = hub
        .call(Method::GET, "/v1/games?league=nba&status=final", None)
        .await
        .ok_json();
    assert_eq!(page["games"], json!([]), "{page}");
    let r = hub.put(G, &new_game("Home", "Away")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.ok_json(), before);
    hub.put(G, &new_game("Other", "Away"))
        .await
        .assert_error(409, "game_exists");
    let history = hub
        .call(Method::GET, &format!("/v1/games/{G}/events?since=0"), None)
        .await
        .ok_json();
    assert_eq!(history["events"].as_array().map(Vec::len), Some(6));
    assert!(!hub.is_loaded(G), "reading does not load the game");

    // Events load it: a retry is a duplicate with its original seq, a
    // reused id with another body a conflict, a new event the next seq.
    assert_eq!(hub.post_ok(G, &score("e3", "away", 3)).await, (3, true));
    hub.post(G, &score("e3", "away", 1))
        .await
        .assert_error(409, "event_id_conflict");
    hub.post(
        G,
        &json!({"event_id": "e7", "kind": "score", "team": "home", "points": 1, "expected_seq": 5}),
    )
    .await
    .assert_error(412, "seq_mismatch");
    assert_eq!(hub.post_ok(G, &score("e7", "home", 1)).await, (7, false));
    let after = hub.get_game(G).await;
    assert_eq!(after["seq"], 7);
    assert_eq!(
        after["home"]["score"],
        before["home"]["score"].as_u64().unwrap() + 1
    );

    // Batch items, once unloaded again.
    hub.wait_unloaded(G).await;
    let batch = json!({"events": [
        {"game": G, "event_id": "e4", "kind": "set", "patch": {"extra": {"possession": "home"}}},
        {"game": G, "event_id": "e8", "kind": "score", "team": "away", "points": 2},
        {"game": G, "event_id": "e2", "kind": "score", "team": "home", "points": 5},
    ]});
    let results = hub
        .call(Method::POST, "/v1/events", Some(&batch))
        .await
        .ok_json();
    let results = &results["results"];
    assert_eq!(results[0]["seq"], 4, "{results}");
    assert_eq!(results[0]["duplicate"], true, "{results}");
    assert_eq!(results[1]["seq"], 8, "{results}");
    assert_eq!(results[1]["duplicate"], false, "{results}");
    assert_eq!(
        results[2]["error"]["code"], "event_id_conflict",
        "{results}"
    );
    assert_eq!(hub.get_game(G).await["seq"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fans_of_an_unloaded_game_get_snapshots_diffs_and_resumes() {
    let dir = tempfile::tempdir().expect("temp dir");
    // History 4: after seq 9 the diffs 6..=9 are kept for resume.
    let hub = LocalHub::start(dir.path(), 4).await;
    game_with_six_events(&hub).await;
    assert_eq!(hub.post_ok(G, &score("e7", "home", 1)).await, (7, false));
    let at7 = hub.get_game(G).await;
    hub.wait_unloaded(G).await;

    // Subscribe by id: a snapshot equal to GET, then diffs.
    let mut fan = Fan::connect(&hub.ws_url(&format!("games={G}"))).await;
    let mut state = FanState::default();
    let f = fan.next_frame(WAIT).await;
    assert_eq!((f.t.as_str(), f.q), ("s", Some(7)), "{f:?}");
    assert_eq!(f.d.as_ref(), Some(&at7));
    state.apply(&f);
    assert_eq!(hub.post_ok(G, &score("e8", "away", 2)).await, (8, false));
    assert_eq!(hub.post_ok(G, &status("e9", "paused")).await, (9, false));
    state.follow(&mut fan, G, 9, WAIT).await;
    assert_eq!(state.snapshots(G), 1);
    let at9 = hub.get_game(G).await;
    assert_eq!(state.state(G), Some(&at9));
    fan.close().await;
    hub.wait_unloaded(G).await;

    // Resume inside the history window: exactly the missed diffs, as rebuilt
    // from the log (the same frames a fan would have got live).
    let mut fan = Fan::connect(&hub.ws_url("")).await;
    fan.send_json(&json!({"op": "sub", "games": [G], "since": {G: 7}}))
        .await;
    let frames = frames_until_barrier(&mut fan).await;
    let kinds: Vec<_> = frames.iter().map(|f| (f.t.as_str(), f.q)).collect();
    assert_eq!(kinds, [("d", Some(8)), ("d", Some(9))], "{frames:?}");
    let mut resumed = at7.clone();
    for f in &frames {
        assert!(f.ts.is_some(), "{f:?}");
        merge_patch(&mut resumed, f.d.as_ref().expect("a diff has d"));
    }
    assert_eq!(resumed, at9);
    fan.close().await;
    hub.wait_unloaded(G).await;

    // Resume from before the window: a snapshot.
    let mut fan = Fan::connect(&hub.ws_url("")).await;
    fan.send_json(&json!({"op": "sub", "games": [G], "since": {G: 2}}))
        .await;
    let frames = frames_until_barrier(&mut fan).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!((frames[0].t.as_str(), frames[0].q), ("s", Some(9)));
    assert_eq!(frames[0].d.as_ref(), Some(&at9));
    fan.close().await;
    hub.wait_unloaded(G).await;

    // Resume at the current seq: nothing to send, then the next diff.
    let mut fan = Fan::connect(&hub.ws_url("")).await;
    fan.send_json(&json!({"op": "sub", "games": [G], "since": {G: 9}}))
        .await;
    assert!(frames_until_barrier(&mut fan).await.is_empty());
    assert_eq!(hub.post_ok(G, &score("e10", "home", 2)).await, (10, false));
    let f = fan.next_frame(WAIT).await;
    assert_eq!((f.t.as_str(), f.q), ("d", Some(10)), "{f:?}");
    fan.close().await;
    hub.wait_unloaded(G).await;

    // A league watch loads its unloaded games: snapshot, then diffs.
    let mut fan = Fan::connect(&hub.ws_url("leagues=nba")).await;
    let mut state = FanState::default();
    let f = fan.next_frame(WAIT).await;
    assert_eq!((f.t.as_str(), f.q), ("s", Some(10)), "{f:?}");
    assert_eq!(f.d.as_ref(), Some(&hub.get_game(G).await));
    state.apply(&f);
    assert_eq!(hub.post_ok(G, &score("e11", "away", 1)).await, (11, false));
    state.follow(&mut fan, G, 11, WAIT).await;
    assert_eq!(state.state(G), Some(&hub.get_game(G).await));
    // A watched game stays loaded: it has a subscriber.
    assert!(hub.is_loaded(G));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_events_of_an_unloaded_game_get_consecutive_seqs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = LocalHub::start(dir.path(), 1000).await;
    game_with_six_events(&hub).await;
    let mut next = 7;
    for round in 0..3 {
        hub.wait_unloaded(G).await;
        // 20 new events and, from the second round on, retries of the
        // previous round's, all at once.
        let mut events: Vec<(String, Value)> = (0..20)
            .map(|i| {
                let id = format!("r{round}-{i}");
                (id.clone(), score(&id, "home", 1))
            })
            .collect();
        if round > 0 {
            events.extend((0..5).map(|i| {
                let id = format!("r{}-{i}", round - 1);
                (id.clone(), score(&id, "home", 1))
            }));
        }
        let acks = join_all(events.iter().map(|(_, e)| hub.post_ok(G, e))).await;
        let mut fresh: Vec<u64> = acks.iter().filter(|a| !a.1).map(|a| a.0).collect();
        fresh.sort_unstable();
        assert_eq!(
            fresh,
            (next..next + 20).collect::<Vec<_>>(),
            "round {round}: {acks:?}"
        );
        let retries = acks.iter().filter(|a| a.1).count();
        assert_eq!(retries, if round > 0 { 5 } else { 0 }, "{acks:?}");
        next += 20;
        assert_eq!(hub.get_game(G).await["seq"], next - 1);
    }
    // The retries got their original seqs: post them once more, one by one.
    hub.wait_unloaded(G).await;
    let mut seen = std::collections::HashSet::new();
    for i in 0..20 {
        let (seq, dup) = hub.post_ok(G, &score(&format!("r1-{i}"), "home", 1)).await;
        assert!(dup);
        assert!(
            (27..47).contains(&seq),
            "r1-{i} was applied in round 1: {seq}"
        );
        assert!(seen.insert(seq), "seq {seq} given twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_hub_keeps_games_unloaded_until_used() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = LocalHub::start(dir.path(), 1000).await;
    game_with_six_events(&hub).await;
    let before = hub.get_game(G).await;
    hub.shutdown().await;

    let hub = LocalHub::start(dir.path(), 1000).await;
    assert!(!hub.is_loaded(G), "replay does not load games");
    assert_eq!(hub.get_game(G).await, before);
    let page = hub
        .call(Method::GET, "/v1/games?league=nba", None)
        .await
        .ok_json();
    assert_eq!(page["games"], json!([before]));
    assert!(!hub.is_loaded(G));
    assert_eq!(hub.post_ok(G, &score("e5", "home", 3)).await, (5, true));
    assert_eq!(hub.post_ok(G, &score("e7", "home", 3)).await, (7, false));
    hub.shutdown().await;
}
