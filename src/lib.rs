//! # scorehub
//!
//! A real-time live-score hub. Scorekeepers post idempotent score events over an
//! authenticated HTTP API; a per-game actor sequences them, turns each into a
//! MessagePack JSON-Merge-Patch diff encoded once, and fans it out to every
//! subscribed WebSocket through bounded per-connection queues.
//!
//! ## Layout
//!
//! - `domain`: game ids, state, events, merge-patch diffs; pure, no IO.
//! - `store`: the durable event log (embedded file log in single-node mode).

pub mod domain;
pub mod store;
