//! End-to-end tests of scorehub against its public contract (`CONTRACT.md`
//! sections 1-5): real servers on port 0, real HTTP and WebSocket clients over
//! loopback, and the real binary for start-up, crash and shutdown behaviour.
//!
//! One test binary (this one) keeps link times down; its modules:
//!
//! - `common`: the harness: in-process [`common::TestHub`], the spawned
//!   [`common::BinaryHub`], the [`common::Fan`] WebSocket client and
//!   [`common::FanState`], which applies frames and checks their order.
//! - `api`: the scorekeeper, read and operations routes.
//! - `ws`: fans: subscribe, resume, leagues, conflation, flood limits.
//! - `limits`: abuse limits: per-token event rates, per-address connect
//!   rates, the connection cap, stuck fans, hostile control messages.
//! - `cluster`: several nodes over one real `redis-server` (§5): one
//!   sequence across nodes, idempotent retries anywhere, outages, restarts.
//! - `process`: the binary: durability across `kill -9`, torn log tails,
//!   SIGTERM, configuration errors, the `token` command.
//! - `faults`: the binary under faults: `kill -9` mid-stream many times, a
//!   full disk, a read-only file system (mounts tmpfs and ext4; needs root).
//! - `fuzz_corpus`: every committed fuzz input through its harness
//!   (`scorehub::fuzzing`), as `cargo fuzz` ran it.
//! - `unload`: single node: idle games leave memory and load again from the
//!   event log on use, idempotency, history and subscriptions intact.
//! - `redis_cluster`: nodes over a real 6-process Redis Cluster (3
//!   primaries, 3 replicas): sharded pub/sub, resharding, a primary killed.
//! - `cluster_recovery`: retries that reach another node, Redis losing
//!   acknowledged writes, a commit stuck behind a busy script.
//! - `connections`: HTTP connections under abuse: headers or bodies sent
//!   a byte at a time, thousands of idle keep-alive connections, more
//!   connections than the cap, SIGTERM with half-sent requests.
//! - `proxies`: the client's address behind trusted reverse proxies
//!   (`X-Forwarded-For`, `Forwarded`), spoofing from untrusted peers.
//! - `lifecycle`: a request stalled at SIGTERM, secrets in start-up errors,
//!   the not-ready alert for a failed event log.
//! - `input_edges`: numbers at their limits, NaN in MessagePack, deep
//!   control messages, token edge cases.
//! - `retention`: finished games past `games.retention` are gone (404,
//!   unlisted), compacted out of the event log at the next start, expired
//!   from Redis and swept from its index; retries inside it are duplicates.
//! - `ops`: the operators' commands: `check` (valid config, typo key,
//!   unusable storage dir), `log verify` (clean, flipped byte, torn tail,
//!   wrong index entry, never changing a file), `games list` (from a hub's
//!   log, from Redis).
//! - `proxy_tls`: the reverse-proxy example `deploy/nginx/scorehub.conf`
//!   run by a real `nginx`: TLS, a fan over `wss://` and a scorekeeper over
//!   `https://` through it, `X-Forwarded-For`; an SSE fan through it, unbuffered.
//! - `occupancy`: who watches: the count of fans per game in snapshots,
//!   occupancy frames and `GET`, its rate bound, and over Redis two real
//!   hubs summing their fans until one is killed.
//! - `sse`: fans over Server-Sent Events (`/v1/sse`), the WebSocket's
//!   fallback: snapshot and diffs as JSON events, `Last-Event-ID` resumes,
//!   bad ids, leagues, a slow reader conflated, the limits, SIGTERM.
//! - `prometheus`: a real Prometheus (Debian package `prometheus`) scrapes a
//!   hub, answers queries on its metrics and evaluates the shipped alerts.

mod api;
mod cluster;
mod cluster_recovery;
mod common;
mod connections;
mod faults;
mod fuzz_corpus;
mod input_edges;
mod lifecycle;
mod limits;
mod occupancy;
mod ops;
mod process;
mod prometheus;
mod proxies;
mod proxy_tls;
mod redis_cluster;
mod retention;
mod sse;
mod unload;
mod ws;
