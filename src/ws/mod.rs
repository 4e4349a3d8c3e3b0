//! Fans' WebSocket endpoint `/v1/ws`: one session per connection, a reader for
//! control messages, a bounded [`outbox::Outbox`] that game actors write
//! through straight to the socket ([`wire`]), and a writer task for when the
//! socket backs up.

pub mod limiter;
pub mod outbox;
pub mod pressure;
pub mod session;
pub mod upgrade;
pub mod wire;

pub use session::ws_handler;
#[cfg(test)]
mod goodbye_tests;
