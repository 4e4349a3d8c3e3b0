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
//! `http` (ingest) → `auth` → `domain` (validation, apply, diff) → `game`
//! (actor: sequence, dedupe, durable append via `store`) → `codec` (encode
//! once) → `fanout::outbox` (each fan: one non-blocking `writev` of the shared
//! frame via `fanout::wire`, or its bounded queue when the socket is full) →
//! `ws` (the session's writer task draining that queue; its reader).
//!
//! - `config`: raw file + env → validated [`config::Config`].
//! - `auth`: HS256 tokens, scopes, game patterns.
//! - `domain`: game ids, state, events, merge-patch diffs; pure, no IO.
//! - `game`: the per-game actor and its handle.
//! - `registry`: game id → handle, league watchers, log replay.
//! - `store`: durability: the embedded file log (single node) or Redis (cluster).
//! - `cluster`: the Redis pub/sub link between nodes (interest-based channels).
//! - `codec`: frames ↔ MessagePack bytes.
//! - `fanout`: outboxes with conflation, the wire (frame headers, vectored
//!   writes), and the hub's saturation signal (one per hub).
//! - `ws`: the upgrade and fan sessions (reader, writer, goodbye), which see
//!   the hub only through a narrow `ws::Context` and reach the games through
//!   one module.
//! - `extract`: extractors shared by `http` and `ws` (our JSON error format).
//! - `http`: scorekeeper, read and operations routes.
//! - `error`: API errors → status + JSON body.
//! - `metrics`: metric names, Prometheus recorder.
//! - `server`: assembly, serve, graceful shutdown.
//! - `telemetry`: structured logs.
//! - `testing` (hidden): test fixtures, such as a real `redis-server`.
//! - `fuzzing` (hidden): fuzzing harnesses over request bodies, control
//!   messages and log replay, shared by `fuzz/` and the corpus tests.

pub mod app;
pub mod auth;
pub mod backend;
pub mod codec;
pub mod config;
pub mod domain;
pub mod error;
pub mod extract;
pub mod fanout;
#[doc(hidden)]
pub mod fuzzing;
pub mod game;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod store;
pub mod telemetry;
#[doc(hidden)]
pub mod testing;
pub mod ws;
