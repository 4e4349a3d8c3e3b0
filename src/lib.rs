//! # scorehub
//!
//! A real-time live-score hub. Scorekeepers post idempotent score events over an
//! authenticated HTTP API; a per-game actor sequences them, makes them durable,
//! turns each into a MessagePack JSON-Merge-Patch diff encoded once, and fans
//! it out to every subscribed WebSocket through bounded per-connection queues.
//!
//! ## Layout
//!
//! The data path reads top to bottom:
//! `http` (ingest) → `auth` → `domain` (validation, apply, diff) →
//! `registry` (the game's live actor) → `game` (plan the group, one durable
//! commit through `backend`) → `codec` (encode once) → `fanout::outbox`
//! (each fan: one non-blocking `writev` of the shared frame via
//! `fanout::wire`, or its bounded queue when the socket is full) → `ws` (the
//! session's writer task draining that queue; its reader).
//!
//! Layers, each using only those below it (checked by reading every
//! module's `use crate::…` lines):
//!
//! | layer | modules | job |
//! | --- | --- | --- |
//! | assembly | `server` | picks the backend (one place), builds the router, serves, stops |
//! | commands | `ops` | operators' commands run beside the hub, not in it: `check`, `log verify`, `games list` |
//! | edges | `http`, `ws`, `sse`, `extract` | serving connections, routes and fan sessions; `ws` sees a narrow `ws::Context` |
//! | shared state | `app` | what handlers and sessions share (`app::AppState`) |
//! | request policy | `limits`, `error` | abuse limits; errors → status, JSON body, close codes |
//! | games | `registry` | game id → live actor; follows a game to its actor ([`registry::Game`]); leagues; the node's occupancy task (who watches) |
//! | actor | `game` | one task per game: `plan` (pure), commit, fan out; `replica` for a shared log |
//! | fan-out | `fanout` | outboxes with conflation, the wire, the saturation signal |
//! | seam | `backend` | [`backend::EventLog`] + [`backend::Transport`]: `local` (file log, alone), `redis` (Redis log + pub/sub bus; on a Redis Cluster, sharded pub/sub); [`backend::Occupancy`]: fan counts out, totals over every node back |
//! | engines | `store` | the file log on disk; the Redis scripts, keys and streams |
//! | base | `metrics`, `codec`, `auth`, `config`, `domain`, `telemetry`, `net` | metric names; frames ↔ MessagePack; tokens; settings; pure game rules; logs; what an HTTP connection is doing |
//!
//! - `config`: raw file + env → validated [`config::Config`].
//! - `auth`: HS256 tokens, scopes, game patterns.
//! - `domain`: game ids, state, events, merge-patch diffs, the idempotency
//!   record, the retention of finished games; pure, no IO.
//! - `backend`: one module per deployment mode, each pairing its log with
//!   its transport; a new mode is a new module here plus one arm in `server`.
//! - `store`: the storage engines the backends drive.
//! - `game`: the per-game actor and its handle.
//! - `registry`: loaded games, per-game loading, league watchers, and the
//!   one task per node that reports and reads who watches each loaded game
//!   (`registry::occupancy`).
//! - `codec`: frames ↔ MessagePack bytes.
//! - `fanout`: outboxes with conflation, the wire (frame headers, vectored
//!   writes), and the hub's saturation signal (one per hub).
//! - `ws`: the upgrade and fan sessions (reader, writer, goodbye), which
//!   reach the games through one module (`ws::games`).
//! - `sse`: fans over Server-Sent Events (`GET /v1/sse`), the fallback for
//!   networks that block WebSocket: the `ws` fan core with a queued-only
//!   outbox, drained as JSON events.
//! - `extract`: extractors shared by `http` and `ws` (our JSON error format).
//! - `http`: scorekeeper, read and operations routes; serving them
//!   (`http::serve`: the accept loop, the HTTP connection cap with
//!   eviction in `http::conns`, header-read, body and idle timeouts) and the
//!   client's address behind trusted proxies (`http::client_ip`).
//! - `net`: one HTTP connection's activity (idle, reading a head, a request
//!   in flight) and the TCP stream that reports it, unwrapped again for
//!   WebSocket upgrades.
//! - `error`: API errors → status + JSON body.
//! - `metrics`: metric names, Prometheus recorder.
//! - `limits`: per-token event rates, per-address connects, the connection
//!   caps fitted to the open-file limit.
//! - `server`: assembly, serve, graceful shutdown.
//! - `ops`: the operators' commands: `check` (config, environment and
//!   `storage.dir`, without starting), `log verify` (the event log and its
//!   index, read-only, through `store::file::scan`), `games list` (from the
//!   log, folded by `backend::Replayer`, or from Redis).
//! - `telemetry`: structured logs.
//! - `testing` (hidden, feature `testing`): test fixtures: a real
//!   `redis-server`, a Redis Cluster, Redis Sentinels.
//! - `fuzzing` (hidden, feature `fuzzing`): fuzzing harnesses over request
//!   bodies, control messages and log replay, shared by `fuzz/` and the
//!   corpus tests.
//!
//! Both are compiled only for tests, benches and fuzz targets, never into
//! the hub.
//!
//! ## Visibility
//!
//! `pub` modules are what the binary, the benches, the integration tests
//! and the fuzz targets drive (`server`, `config`, `auth`, `telemetry`, `ops`;
//! `backend`, `game`, `registry`, `fanout`, `store`, `codec`, `domain`,
//! `limits`, `http::openapi`). The edges and shared state (`app`, `ws`,
//! `extract`, `error`, `metrics`) and the internals of the public modules
//! (`fanout::wire`, `game::actor`, `store::redis`, the Redis transports)
//! are `pub(crate)`, so the compiler reports their dead code. To find dead
//! code in the public modules too, turn every `pub mod` here but `server`,
//! `config`, `auth`, `telemetry` and `ops` into `pub(crate) mod` and run
//! `cargo check --lib`: what it reports unused is used by tests or benches
//! only, or by nothing.

pub(crate) mod app;
pub mod auth;
pub mod backend;
pub mod codec;
pub mod config;
pub mod domain;
pub(crate) mod error;
pub(crate) mod extract;
pub mod fanout;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod game;
pub mod http;
pub mod limits;
pub(crate) mod metrics;
pub(crate) mod net;
pub mod ops;
pub mod registry;
pub mod server;
pub(crate) mod sse;
pub mod store;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;
pub(crate) mod ws;
