//! Fan-out: how one encoded frame reaches many sockets without waiting on any.
//!
//! Below the game actors and above the sockets: an actor hands each frame to
//! its game's [`fans::Fans`] (pushed inline for a few fans, else through fan
//! shards running on every core), which push it into every subscriber's
//! [`outbox::Outbox`], which writes it straight to the
//! socket with one non-blocking `writev` (`wire`) or queues it (bounded,
//! with conflation) for the connection's writer task. [`pressure`] tells when
//! the node is saturated, so several games' frames for one fan share a write.
//! Nothing here knows about games' state, storage or HTTP.

pub mod fans;
pub mod outbox;
pub mod pressure;
pub(crate) mod wire;
