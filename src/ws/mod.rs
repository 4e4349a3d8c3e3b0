//! Fans' WebSocket endpoint `/v1/ws`: one session per connection, a reader for
//! control messages, a writer draining a bounded [`outbox::Outbox`].

pub mod limiter;
pub mod outbox;
pub mod session;

pub use session::ws_handler;
