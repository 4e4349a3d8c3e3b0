//! Faults (issue 6) against the real binary: `kill -9` in the middle of a
//! stream of events, many times over; a full disk; a file system that turns
//! read-only under the hub, or already is at start.
//!
//! The disk faults mount real file systems (tmpfs, and ext4 on a loop device
//! for the read-only case), so they need root, as the suite has here and in
//! CI. A mount that fails fails the test with the command's output; nothing
//! is skipped. Every mount is undone by a guard, also when a test panics.
//!
//! Each test prints its figures (events sent, acknowledged, found after
//! recovery); run with `--nocapture` to see them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{
    Api, BinaryHub, Body, Fan, FanState, Reply, SECRET, WAIT, eventually, run_cli, score,
};

const G: &str = "nba:faults";

/// Every binary here: fsync on (the durable setting), no per-token event limit.
const HUB_ENV: &[(&str, &str)] = &[
    ("SCOREHUB_STORAGE__FSYNC", "true"),
    ("SCOREHUB_LIMITS__EVENTS_PER_SECOND", "1000000"),
    ("SCOREHUB_LIMITS__EVENTS_BURST", "1000000"),
];

// ---------------------------------------------------------------------------
// Helpers

/// Runs a system command (mount, mkfs, ...), returning its error output on failure.
fn try_run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `{cmd}`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{cmd} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs a system command that must succeed; fails the test clearly otherwise.
fn run(cmd: &str, args: &[&str]) {
    if let Err(e) = try_run(cmd, args) {
        panic!("{e}. The fault tests mount file systems and need root (CI runs as root).");
    }
}

/// A file system mounted on a fresh temp dir; unmounted when dropped.
struct Mount {
    point: tempfile::TempDir,
    /// Mount options used by [`Mount::mount`].
    options: String,
    /// The ext4 image, for loop mounts.
    image: Option<PathBuf>,
    /// Holds the image file.
    _image_dir: Option<tempfile::TempDir>,
    mounted: bool,
}

impl Mount {
    /// A tmpfs of `size` (e.g. `1m`).
    fn tmpfs(size: &str) -> Mount {
        let mut m = Mount {
            point: tempfile::tempdir().expect("a mount point"),
            options: format!("size={size},mode=0755"),
            image: None,
            _image_dir: None,
            mounted: false,
        };
        m.mount();
        m
    }

    /// An ext4 file system of `mib` MiB on a loop device, mounted with
    /// `errors=remount-ro`: on an error the kernel makes it read-only.
    fn ext4(mib: u64) -> Mount {
        let image_dir = tempfile::tempdir().expect("a dir for the ext4 image");
        let image = image_dir.path().join("fs.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(mib << 20))
            .expect("creating the ext4 image file");
        run("mkfs.ext4", &["-q", "-F", &image.to_string_lossy()]);
        let mut m = Mount {
            point: tempfile::tempdir().expect("a mount point"),
            options: "loop,errors=remount-ro".into(),
            image: Some(image),
            _image_dir: Some(image_dir),
            mounted: false,
        };
        m.mount();
        m
    }

    fn mount(&mut self) {
        let point = self.point.path().to_string_lossy().into_owned();
        match &self.image {
            None => run(
                "mount",
                &["-t", "tmpfs", "-o", &self.options, "tmpfs", &point],
            ),
            Some(image) => run(
                "mount",
                &[
                    "-t",
                    "ext4",
                    "-o",
                    &self.options,
                    &image.to_string_lossy(),
                    &point,
                ],
            ),
        }
        self.mounted = true;
    }

    fn unmount(&mut self) {
        run("umount", &[&self.point.path().to_string_lossy()]);
        self.mounted = false;
    }

    fn path(&self) -> &Path {
        self.point.path()
    }

    /// `mount -o remount,OPTIONS`.
    fn remount(&self, options: &str) {
        run(
            "mount",
            &[
                "-o",
                &format!("remount,{options}"),
                &self.point.path().to_string_lossy(),
            ],
        );
    }

    /// The mount options the kernel reports now.
    fn current_options(&self) -> String {
        let out = Command::new("findmnt")
            .args(["-no", "OPTIONS", "--mountpoint"])
            .arg(self.path())
            .output()
            .expect("running findmnt");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The mounted device, e.g. `/dev/loop3`.
    fn source(&self) -> String {
        let out = Command::new("findmnt")
            .args(["-no", "SOURCE", "--mountpoint"])
            .arg(self.path())
            .output()
            .expect("running findmnt");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        let point = self.point.path().to_string_lossy().into_owned();
        if let Err(e) = try_run("umount", &[&point]) {
            eprintln!("{e}; detaching it lazily");
            let _ = try_run("umount", &["-l", &point]);
        }
    }
}

/// The whole audit trail of `game`, oldest first, over as many pages as it takes.
async fn trail(api: &Api, game: &str) -> Vec<Value> {
    let token = api.writer(game);
    let mut since = 0;
    let mut out = Vec::new();
    loop {
        let page = api
            .call(
                Method::GET,
                &format!("/v1/games/{game}/events?since={since}&limit=1000"),
                Some(&token),
                Body::None,
                &[],
            )
            .await
            .ok_json();
        let events = page["events"].as_array().expect("`events` is a list");
        if events.is_empty() {
            return out;
        }
        let next = page["next"].as_u64().expect("`next` is a number");
        assert!(next > since, "the trail's `next` did not advance: {page}");
        since = next;
        out.extend(events.iter().cloned());
    }
}

/// Asserts the trail is `1..=n` without gaps or repeats and returns its
/// event ids in seq order.
fn trail_ids(trail: &[Value]) -> Vec<String> {
    let mut seen = HashSet::new();
    trail
        .iter()
        .enumerate()
        .map(|(i, ev)| {
            assert_eq!(
                ev["seq"].as_u64(),
                Some(i as u64 + 1),
                "the audit trail must be gapless from 1; item {i} is {ev}"
            );
            let id = ev["event_id"].as_str().expect("event_id").to_owned();
            assert!(seen.insert(id.clone()), "event {id} is in the trail twice");
            id
        })
        .collect()
}

/// `GET /readyz`: its status and `reason`.
async fn readiness(api: &Api) -> (u16, String) {
    let r = api.get("/readyz").await;
    let reason = r.json()["reason"].as_str().unwrap_or_default().to_owned();
    (r.status, reason)
}

/// The game's state, checking the `ETag` names its seq.
async fn state_with_etag(api: &Api) -> Value {
    let r = api.get(&format!("/v1/games/{G}")).await;
    let mut state = r.ok_json();
    crate::common::without_watching(&mut state);
    assert_eq!(
        r.header("etag"),
        Some(format!("\"{}\"", state["seq"])),
        "ETag of {state}"
    );
    state
}

/// Asserts a `503 not_ready` with a message telling the client to retry.
fn assert_not_ready(r: &Reply) {
    let message = r.assert_error(503, "not_ready");
    assert!(
        message.contains("retry"),
        "a 503 should tell the client to retry: {message}"
    );
}

/// A small deterministic generator (splitmix64), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------------------
// kill -9, many times

/// Rounds of start, load, `kill -9`.
const ROUNDS: u64 = 10;
/// Concurrent posters per round.
const POSTERS: u64 = 4;
/// Seeds the kill points and the retries.
const SEED: u64 = 0x5c0e_4b0b_fa17_0006;

/// What the posters sent and what the hub answered, across rounds.
#[derive(Default)]
struct Ledger {
    /// The body of every event id ever sent.
    bodies: HashMap<String, Value>,
    /// Every acknowledged event id and its seq.
    acked: HashMap<String, u64>,
    /// The acknowledged ids in acknowledgement order (to pick retries from).
    acked_order: Vec<String>,
    /// Seqs of acknowledged events, to catch two acks of one seq at once.
    acked_seqs: HashSet<u64>,
    /// New ids sent in the current round that got no answer before the kill.
    in_flight: Vec<String>,
    /// New events posted (first attempts).
    sent: usize,
    /// `200` answers to new events.
    acks: usize,
    /// Retries of acknowledged events posted under load.
    retries: usize,
}

impl Ledger {
    fn ack(&mut self, id: &str, seq: u64) {
        assert!(
            self.acked_seqs.insert(seq),
            "{id} was acknowledged at seq {seq}, which another event already got"
        );
        self.acked.insert(id.to_owned(), seq);
        self.acked_order.push(id.to_owned());
    }
}

/// Posts new events (and sometimes retries an acknowledged one) until the
/// hub stops answering; every answer before that must be a `200`.
async fn poster(api: &Api, round: u64, p: u64, ledger: &Mutex<Ledger>, acks: &AtomicUsize) {
    let token = api.writer(G);
    let mut rng = Rng(SEED ^ (round << 8) ^ p);
    for i in 0.. {
        let retry = {
            let l = ledger.lock().expect("ledger");
            (rng.below(6) == 0 && !l.acked_order.is_empty()).then(|| {
                let id = l.acked_order[rng.below(l.acked_order.len() as u64) as usize].clone();
                let body = l.bodies[&id].clone();
                (id, body)
            })
        };
        let (id, body, is_retry) = match retry {
            Some((id, body)) => (id, body, true),
            None => {
                let id = format!("r{round}-p{p}-{i}");
                let team = if (p + i).is_multiple_of(2) {
                    "home"
                } else {
                    "away"
                };
                let body = score(&id, team, (i % 3 + 1) as i64);
                let mut l = ledger.lock().expect("ledger");
                l.bodies.insert(id.clone(), body.clone());
                l.sent += 1;
                (id, body, false)
            }
        };
        let answer = async {
            let resp = api
                .client
                .post(api.url(&format!("/v1/games/{G}/events")))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await?;
            let status = resp.status().as_u16();
            let text = resp.text().await?;
            Ok::<_, reqwest::Error>((status, text))
        };
        let (status, text) = match answer.await {
            Ok(answer) => answer,
            Err(_) => {
                // The hub died with this request in flight: it may or may not be applied.
                if !is_retry {
                    ledger.lock().expect("ledger").in_flight.push(id);
                }
                return;
            }
        };
        assert_eq!(status, 200, "{id} while the hub was up: {text}");
        let reply: Value = serde_json::from_str(&text).expect("a JSON answer");
        let seq = reply["seq"].as_u64().expect("seq");
        let mut l = ledger.lock().expect("ledger");
        if is_retry {
            l.retries += 1;
            assert_eq!(
                reply,
                json!({"game": G, "seq": l.acked[&id], "duplicate": true}),
                "a retry of acknowledged {id} under load"
            );
        } else {
            assert_eq!(reply["duplicate"], false, "new event {id}: {reply}");
            l.ack(&id, seq);
            l.acks += 1;
            acks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Checks a restarted hub against the ledger: every acknowledged event in
/// the trail exactly once at its seq, nothing applied that was neither
/// acknowledged nor in flight, the state agreeing with the trail, retries
/// answered as duplicates. Returns the trail's event ids in seq order.
async fn check_recovered(api: &Api, ledger: &Ledger, rng: &mut Rng, round: u64) -> Vec<String> {
    let trail = trail(api, G).await;
    let ids = trail_ids(&trail);
    let at: HashMap<&str, u64> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i as u64 + 1))
        .collect();
    for (id, seq) in &ledger.acked {
        assert_eq!(
            at.get(id.as_str()),
            Some(seq),
            "after restart {round}: acknowledged {id} must be in the trail at seq {seq}"
        );
    }
    let (mut home, mut away) = (0, 0);
    for ev in &trail {
        let id = ev["event_id"].as_str().expect("event_id");
        assert!(
            ledger.acked.contains_key(id) || ledger.in_flight.iter().any(|f| f == id),
            "after restart {round}: {id} was applied but neither acknowledged nor in flight at the kill"
        );
        let body = &ledger.bodies[id];
        assert_eq!(
            (&ev["team"], &ev["points"]),
            (&body["team"], &body["points"]),
            "{id} in the trail differs from what was sent: {ev}"
        );
        let points = body["points"].as_i64().expect("points");
        match body["team"].as_str() {
            Some("home") => home += points,
            _ => away += points,
        }
    }
    let state = state_with_etag(api).await;
    assert_eq!(
        state["seq"].as_u64(),
        Some(trail.len() as u64),
        "after restart {round}: the state's seq must equal the trail's length"
    );
    assert_eq!(
        (&state["home"]["score"], &state["away"]["score"]),
        (&json!(home), &json!(away)),
        "after restart {round}: the scores must be the sum of the trail"
    );
    // A sample of acknowledged events, retried: duplicates at their original seq.
    for _ in 0..16.min(ledger.acked_order.len()) {
        let id = &ledger.acked_order[rng.below(ledger.acked_order.len() as u64) as usize];
        let r = api.post_event(G, ledger.bodies[id].clone()).await;
        assert_eq!(
            r.ok_json(),
            json!({"game": G, "seq": ledger.acked[id], "duplicate": true}),
            "after restart {round}: a retry of acknowledged {id}"
        );
    }
    assert_eq!(
        state_with_etag(api).await,
        state,
        "retries changed the state"
    );
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_many_times_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ledger = Ledger::default();
    let mut rng = Rng(SEED);
    let (mut in_flight_total, mut in_flight_applied) = (0, 0);
    for round in 0..=ROUNDS {
        let mut hub = BinaryHub::spawn(dir.path(), HUB_ENV);
        if round == 0 {
            hub.put_game(G).await;
        } else {
            let ids = check_recovered(&hub, &ledger, &mut rng, round).await;
            // What was in flight at the kill is resent, as a scorekeeper would:
            // a duplicate at its seq if it was applied, else applied now.
            let in_flight = std::mem::take(&mut ledger.in_flight);
            in_flight_total += in_flight.len();
            for id in in_flight {
                let applied_at = ids.iter().position(|i| *i == id).map(|i| i as u64 + 1);
                let r = hub
                    .post_event(G, ledger.bodies[&id].clone())
                    .await
                    .ok_json();
                match applied_at {
                    Some(seq) => {
                        in_flight_applied += 1;
                        assert_eq!(
                            r,
                            json!({"game": G, "seq": seq, "duplicate": true}),
                            "{id} was applied before the kill"
                        );
                    }
                    None => assert_eq!(r["duplicate"], false, "{id} was not applied: {r}"),
                }
                ledger.ack(&id, r["seq"].as_u64().expect("seq"));
            }
        }
        if round == ROUNDS {
            // Finally, every acknowledged event, retried, is a duplicate at its seq.
            let before = state_with_etag(&hub).await;
            for (id, seq) in &ledger.acked {
                let r = hub.post_event(G, ledger.bodies[id].clone()).await;
                assert_eq!(
                    r.ok_json(),
                    json!({"game": G, "seq": seq, "duplicate": true}),
                    "a retry of acknowledged {id} after {ROUNDS} kills"
                );
            }
            assert_eq!(
                state_with_etag(&hub).await,
                before,
                "retries applied nothing"
            );
            break;
        }

        let kill_after = 20 + rng.below(150) as usize;
        let acks = AtomicUsize::new(0);
        let pid = hub.pid().to_string();
        let shared = Mutex::new(std::mem::take(&mut ledger));
        let posters = futures_util::future::join_all(
            (0..POSTERS).map(|p| poster(&hub, round, p, &shared, &acks)),
        );
        let killer = async {
            eventually(
                &format!("{kill_after} acknowledged events in round {round}"),
                Duration::from_secs(60),
                || std::future::ready(acks.load(Ordering::Relaxed) >= kill_after),
            )
            .await;
            let status = Command::new("kill")
                .args(["-KILL", &pid])
                .status()
                .expect("running kill -KILL");
            assert!(status.success(), "kill -KILL {pid} failed");
        };
        futures_util::future::join(posters, killer).await;
        hub.wait_exit(WAIT).await;
        ledger = shared.into_inner().expect("ledger");
        println!(
            "kill -9 round {round}: killed after {} acks (aimed at {kill_after}); {} in flight",
            acks.load(Ordering::Relaxed),
            ledger.in_flight.len()
        );
    }
    println!(
        "kill -9 x{ROUNDS}: {} new events sent, {} acknowledged under load (+{} retries answered \
         as duplicates), {} in flight at a kill ({} of them applied before it, the rest applied \
         on resend); after recovery all {} acknowledged events were found, each once, at its seq",
        ledger.sent,
        ledger.acks,
        ledger.retries,
        in_flight_total,
        in_flight_applied,
        ledger.acked.len()
    );
    assert_eq!(
        ledger.acks + in_flight_total,
        ledger.sent,
        "every event sent is accounted for"
    );
}

// ---------------------------------------------------------------------------
// A full disk

/// A `set` event of about 9 KiB (32 extra keys of 250-byte strings): its log
/// record holds the event and its diff, about 18 KiB.
fn big_set(id: &str, n: u64) -> Value {
    let extra: serde_json::Map<String, Value> = (0..32)
        .map(|k| {
            let text = format!("{n:08}-{k:02}-");
            (format!("k{k:02}"), json!(format!("{text:x<250}")))
        })
        .collect();
    json!({"event_id": id, "kind": "set", "patch": {"extra": extra}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gets_503_and_recovers() {
    let mount = Mount::tmpfs("1m");
    let log = mount.path().join("events.log");
    let log_len = || std::fs::metadata(&log).expect("the event log exists").len();
    let mut hub = BinaryHub::spawn(mount.path(), HUB_ENV);
    hub.put_game(G).await;
    let mut fan = Fan::connect(&hub.ws_url(&format!("games={G}"))).await;
    let mut seen = FanState::default();
    seen.apply(&fan.next_frame(WAIT).await);

    // Fill the disk.
    let token = hub.writer(G);
    let mut acked = Vec::new();
    let mut refused = None;
    for n in 1..=500 {
        let id = format!("big{n}");
        let before = log_len();
        let r = hub.post_event_as(G, &token, big_set(&id, n)).await;
        if r.status == 503 {
            refused = Some((id, n, r, before));
            break;
        }
        assert_eq!(
            r.ok_json(),
            json!({"game": G, "seq": n, "duplicate": false}),
            "{id} on a disk with room"
        );
        acked.push(id);
        seen.follow(&mut fan, G, n, WAIT).await;
    }
    let (refused_id, refused_n, r, len_before) =
        refused.expect("500 events of ~18 KiB each never filled a 1 MiB tmpfs");
    let last = acked.len() as u64;
    assert!(last >= 10, "the disk was full after only {last} events");
    assert_not_ready(&r);
    assert_eq!(
        log_len(),
        len_before,
        "the refused write must be cut off the log, not left half-written"
    );

    // Not ready, with the reason; alive; reads served; the fan stays.
    let (status, reason) = readiness(&hub).await;
    assert_eq!(status, 503, "/readyz on a full disk: {reason}");
    assert!(
        reason.contains("events.log") && reason.to_lowercase().contains("no space left"),
        "/readyz should name the event log and the full disk: {reason:?}"
    );
    assert_eq!(hub.get("/healthz").await.status, 200);
    let state = state_with_etag(&hub).await;
    assert_eq!(state["seq"].as_u64(), Some(last));
    assert_eq!(
        seen.state(G),
        Some(&state),
        "the fan holds the acknowledged state"
    );
    assert_eq!(trail_ids(&trail(&hub, G).await), acked, "the audit trail");
    assert!(
        fan.barrier().await.is_empty(),
        "the fan got a frame for a refused event"
    );

    // Still full: the retry is refused again and the probe does not heal it.
    assert_not_ready(
        &hub.post_event_as(G, &token, big_set(&refused_id, refused_n))
            .await,
    );
    let (status, reason) = readiness(&hub).await;
    assert_eq!(status, 503, "/readyz while still full: {reason}");
    assert_eq!(state_with_etag(&hub).await, state);
    assert_eq!(log_len(), len_before);

    // Space returns: the node is ready again by itself, before any event.
    mount.remount("size=16m");
    eventually("/readyz 200 once the disk has room", WAIT, || async {
        readiness(&hub).await.0 == 200
    })
    .await;
    assert_eq!(log_len(), len_before, "probing left bytes in the log");
    assert_eq!(state_with_etag(&hub).await, state);

    // The refused event applies now, at the next seq; then one more.
    let r = hub
        .post_event_as(G, &token, big_set(&refused_id, refused_n))
        .await;
    assert_eq!(
        r.ok_json(),
        json!({"game": G, "seq": last + 1, "duplicate": false}),
        "the refused event, resent once the disk has room"
    );
    acked.push(refused_id);
    let r = hub
        .post_event_as(G, &token, score("after", "home", 3))
        .await;
    assert_eq!(
        r.ok_json(),
        json!({"game": G, "seq": last + 2, "duplicate": false})
    );
    acked.push("after".into());
    seen.follow(&mut fan, G, last + 2, WAIT).await;
    let state = state_with_etag(&hub).await;
    assert_eq!(seen.state(G), Some(&state));

    // A restart replays exactly what was acknowledged.
    hub.sigterm();
    let status = hub.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIGTERM: {}",
        hub.stderr()
    );
    drop(hub);
    let hub = BinaryHub::spawn(mount.path(), HUB_ENV);
    assert_eq!(
        state_with_etag(&hub).await,
        state,
        "the state after a restart"
    );
    let found = trail_ids(&trail(&hub, G).await);
    assert_eq!(found, acked, "the audit trail after a restart");
    assert!(
        !hub.stderr().contains("torn"),
        "replay found a torn record: {}",
        hub.stderr()
    );
    println!(
        "full disk (1 MiB tmpfs): {} events sent in {} POSTs (2 answered 503 while full; the \
         refused event applied at {} once space returned), {} acknowledged, {} found after \
         recovery and a restart",
        acked.len(),
        acked.len() + 2,
        last + 1,
        acked.len(),
        found.len()
    );
}

/// A group whose write fails changed nothing, so every answer that depended
/// on it is 503: also an event that reuses the `event_id` of an earlier
/// event of the group (it would be 409 against a seq never written) and one
/// whose `expected_seq` is the game's real seq (it would be 412 against the
/// group's tentative seq). Once the disk has room, both apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_fails_to_write_answers_503_for_all_it_planned() {
    let mount = Mount::tmpfs("1m");
    let hub = BinaryHub::spawn(mount.path(), HUB_ENV);
    hub.put_game(G).await;
    let token = hub.writer(G);
    let mut at = 0;
    for n in 1..=500 {
        let r = hub
            .post_event_as(G, &token, big_set(&format!("fill{n}"), n))
            .await;
        if r.status == 503 {
            break;
        }
        assert_eq!(r.ok_json()["seq"], n, "{}", r.text);
        at = n;
    }
    assert!(at >= 10, "the disk was full after only {at} events");

    // One batch: its items reach the game's actor together and are planned
    // as one group, whose write fails on the full disk.
    let reused_id = big_set("x", 2);
    let mut matching = score("y", "home", 1);
    matching["expected_seq"] = json!(at);
    let mut items = vec![big_set("x", 1), reused_id.clone(), matching.clone()];
    for item in &mut items {
        item["game"] = json!(G);
    }
    let r = hub
        .call(
            Method::POST,
            "/v1/events",
            Some(&token),
            Body::Json(json!({"events": items})),
            &[],
        )
        .await;
    let results = r.ok_json();
    let codes: Vec<Value> = results["results"]
        .as_array()
        .expect("one result per item")
        .iter()
        .map(|r| r["error"]["code"].clone())
        .collect();
    assert_eq!(codes, vec![json!("not_ready"); 3], "{results}");
    assert_eq!(hub.get_game(G).await["seq"], at, "nothing applied");

    mount.remount("size=16m");
    eventually("the hub is ready once the disk has room", WAIT, || async {
        readiness(&hub).await.0 == 200
    })
    .await;
    assert_eq!(hub.post_ok(G, matching).await, at + 1);
    assert_eq!(hub.post_ok(G, reused_id).await, at + 2);
}

// ---------------------------------------------------------------------------
// A read-only file system

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_storage_dir_refuses_writes_clearly() {
    // A file system cannot be remounted read-only while the hub holds its log
    // open for writing (the kernel says "busy"); what turns one read-only
    // under a running process is an error, with `errors=remount-ro`.
    let mut mount = Mount::ext4(32);
    let mut hub = BinaryHub::spawn(mount.path(), HUB_ENV);
    hub.put_game(G).await;
    let mut fan = Fan::connect(&hub.ws_url(&format!("games={G}"))).await;
    let mut seen = FanState::default();
    seen.apply(&fan.next_frame(WAIT).await);
    let mut acked = Vec::new();
    for n in 1..=20 {
        let id = format!("e{n}");
        assert_eq!(hub.post_ok(G, score(&id, "home", 1)).await, n);
        acked.push(id);
    }
    seen.follow(&mut fan, G, 20, WAIT).await;

    let device = mount.source();
    let name = device.rsplit('/').next().expect("a device path");
    let trigger = format!("/sys/fs/ext4/{name}/trigger_fs_error");
    std::fs::write(&trigger, "scorehub fault test")
        .unwrap_or_else(|e| panic!("cannot write {trigger} to make {device} fail: {e}"));
    let options = mount.current_options();
    assert!(
        options.split(',').any(|o| o == "ro" || o == "emergency_ro"),
        "the file system should be read-only now: {options}"
    );

    // Events: a clear 503, nothing applied; reads and fans go on.
    let r = hub.post_event(G, score("e21", "home", 1)).await;
    assert_not_ready(&r);
    let (status, reason) = readiness(&hub).await;
    assert_eq!(status, 503, "/readyz on a read-only file system: {reason}");
    assert!(
        reason.contains("events.log") && reason.contains("Read-only file system"),
        "/readyz should name the event log and the read-only file system: {reason:?}"
    );
    assert_eq!(hub.get("/healthz").await.status, 200);
    let state = state_with_etag(&hub).await;
    assert_eq!(state["seq"], 20);
    assert_eq!(seen.state(G), Some(&state));
    assert_eq!(trail_ids(&trail(&hub, G).await), acked);
    assert!(
        fan.barrier().await.is_empty(),
        "a frame for a refused event"
    );
    assert_not_ready(&hub.post_event(G, score("e21", "home", 1)).await);
    let (status, _) = readiness(&hub).await;
    assert_eq!(
        status, 503,
        "a probe must not find a read-only log writable"
    );
    assert_eq!(state_with_etag(&hub).await, state);

    // Recovery is the operator's: stop the hub, repair, mount, start.
    hub.sigterm();
    let exit = hub.wait_exit(Duration::from_secs(10)).await;
    drop(hub);
    mount.unmount();
    let image = mount.image.clone().expect("an ext4 image");
    let fsck = Command::new("e2fsck")
        .args(["-f", "-y"])
        .arg(&image)
        .output()
        .expect("running e2fsck");
    assert!(
        matches!(fsck.status.code(), Some(0 | 1)),
        "e2fsck could not repair the file system: {fsck:?}"
    );
    mount.mount();
    let hub = BinaryHub::spawn(mount.path(), HUB_ENV);
    assert_eq!(state_with_etag(&hub).await, state, "the state after repair");
    let found = trail_ids(&trail(&hub, G).await);
    assert_eq!(found, acked, "the audit trail after repair");
    assert_eq!(readiness(&hub).await.0, 200);
    assert_eq!(hub.post_ok(G, score("e21", "home", 1)).await, 21);
    println!(
        "read-only file system (ext4, errors=remount-ro): 21 events sent in 23 POSTs (2 answered \
         503 while read-only), {} acknowledged before, {} found after repair and a restart, the \
         refused one applied at 21 after it; SIGTERM on the read-only disk: {exit}",
        acked.len(),
        found.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_on_a_read_only_storage_dir_fails_naming_it() {
    let mount = Mount::tmpfs("16m");
    let mut hub = BinaryHub::spawn(mount.path(), HUB_ENV);
    hub.put_game(G).await;
    for n in 1..=3 {
        hub.post_ok(G, score(&format!("e{n}"), "away", 2)).await;
    }
    let state = state_with_etag(&hub).await;
    hub.sigterm();
    let status = hub.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIGTERM: {}",
        hub.stderr()
    );
    drop(hub);
    mount.remount("ro");

    let cwd = tempfile::tempdir().expect("temp dir");
    let with_log = mount.path().to_string_lossy().into_owned();
    let missing = mount.path().join("new").to_string_lossy().into_owned();
    for dir in [&with_log, &missing] {
        let out = run_cli(
            &["serve"],
            &[
                ("SCOREHUB_HTTP__LISTEN", "127.0.0.1:0"),
                ("SCOREHUB_STORAGE__DIR", dir),
                ("SCOREHUB_AUTH__SECRET", SECRET),
            ],
            cwd.path(),
        );
        assert!(
            !out.status.success(),
            "started on a read-only storage dir {dir}: {out:?}"
        );
        assert!(
            out.stderr.contains("storage.dir")
                && out.stderr.contains(dir.as_str())
                && out.stderr.contains("Read-only file system"),
            "stderr should name storage.dir, {dir} and the read-only file system: {}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("listening addr="),
            "it listened first: {}",
            out.stderr
        );
    }

    // Writable again: it starts with everything that was acknowledged.
    mount.remount("rw");
    let hub = BinaryHub::spawn(mount.path(), HUB_ENV);
    assert_eq!(state_with_etag(&hub).await, state);
    assert_eq!(hub.post_ok(G, score("e4", "away", 2)).await, 4);
}
