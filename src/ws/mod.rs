//! Fans' WebSocket endpoint `/v1/ws`: one session per connection, a reader for
//! control messages, and a writer task for when the socket backs up. The
//! bounded per-fan queue that game actors write through lives one layer down,
//! in [`crate::fanout`].
//!
//! - [`handler`]: the entry: admission (limits, shutdown), the upgrade.
//! - `context`: [`Context`], the little of the hub a session may use,
//!   built from the [`AppState`](crate::app::AppState).
//! - `games`: the session's one door to the registry and the games' handles.
//! - `session`: one connection, running the parts below together.
//! - `reader`: client frames in: control messages, the flood limit.
//! - `subscriptions`: what the connection follows; `sub` and `unsub`.
//! - `writer`: draining the queue, pings, dead peers, resync after
//!   conflation, the stuck watch.
//! - `goodbye`: why a session ends, its close frame, the teardown.
//! - [`upgrade`]: the WebSocket handshake over hyper's upgrade.
//! - [`limiter`]: the token bucket of the flood limit.
//!
//! The fan's core (the connection's shared parts, its subscriptions, the
//! `sub` handling, the teardown) is also the Server-Sent Events transport's
//! (`crate::sse`): one implementation of the guarantees for both.

mod context;
mod games;
mod goodbye;
pub(crate) mod handler;
pub(crate) mod limiter;
mod reader;
mod session;
mod subscriptions;
pub(crate) mod upgrade;
mod writer;

pub(crate) use context::Context;
pub(crate) use goodbye::teardown;
pub(crate) use handler::{WsQuery, ws_handler};
pub(crate) use reader::handle_msg;
pub(crate) use session::Conn;
pub(crate) use subscriptions::Subscriptions;
pub(crate) use writer::{FrameCounts, request_resyncs, until_stuck};

#[cfg(test)]
mod goodbye_tests;
#[cfg(test)]
mod testkit;
