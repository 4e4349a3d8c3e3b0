//! Who watches, over Redis: every node reports its fan count of each game it
//! has loaded into the game's `occ` hash (on the game's slot, so it works on
//! a Redis Cluster too), each report expiring `occupancy.ttl` after it was
//! written, and reads back the sum of the live reports in the same script
//! call (`store::redis`).
//!
//! A node is known by a random id drawn at start, so a restarted node is a
//! new reporter and the dead one's report simply expires: a node killed
//! with `kill -9` stops being counted within `occupancy.ttl`.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::{BoxFuture, Occupancy};
use crate::domain::GameId;
use crate::store::StoreError;
use crate::store::redis::RedisStore;

/// [`Occupancy`] through the Redis store.
#[derive(Debug)]
pub(crate) struct RedisOccupancy {
    store: Arc<RedisStore>,
    /// This node's id in every game's `occ` hash.
    node: String,
    /// How long a report lives.
    ttl: Duration,
}

impl RedisOccupancy {
    /// Reports through `store` under a fresh node id, each report living `ttl`.
    pub(crate) fn new(store: Arc<RedisStore>, ttl: Duration) -> RedisOccupancy {
        RedisOccupancy {
            store,
            node: format!("{:016x}", rand::random::<u64>()),
            ttl,
        }
    }
}

impl Occupancy for RedisOccupancy {
    fn report<'a>(
        &'a self,
        counts: &'a [(GameId, u64)],
    ) -> BoxFuture<'a, Result<Vec<u64>, StoreError>> {
        Box::pin(async move { self.store.occupancy(&self.node, self.ttl, counts).await })
    }
}
