//! Fans' WebSocket endpoint `/v1/ws`: one session per connection, a reader for
//! control messages, and a writer task for when the socket backs up. The
//! bounded per-fan queue that game actors write through lives one layer down,
//! in [`crate::fanout`].

pub mod limiter;
pub mod session;
pub mod upgrade;

pub use session::ws_handler;
#[cfg(test)]
mod goodbye_tests;
