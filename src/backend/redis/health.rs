//! Whether Redis answers, as both transports see it: a ping each second,
//! and a log line when that changes.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::store::redis::RedisStore;

/// The last ping's outcome (optimistic until the first one).
#[derive(Debug)]
pub(super) struct Pinging(AtomicBool);

impl Pinging {
    /// Reachable, until a ping says otherwise.
    pub(super) fn new() -> Pinging {
        Pinging(AtomicBool::new(true))
    }

    /// Whether the last ping was answered.
    pub(super) fn up(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Pings `store` (named `what` in the log) and records the outcome,
    /// logging when it changed; returns it.
    pub(super) async fn check(&self, store: &RedisStore, what: &str) -> bool {
        let ok = store.ping().await.is_ok();
        if self.0.swap(ok, Ordering::Relaxed) != ok {
            if ok {
                tracing::info!("{what} reachable again");
            } else {
                tracing::warn!("{what} unreachable: refusing events until it returns");
            }
        }
        ok
    }
}
