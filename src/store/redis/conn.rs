//! The connection the store's commands go through: one Redis server, or a
//! Redis Cluster.
//!
//! Both reconnect by themselves. On a cluster, every command is routed to
//! the primary of its key's slot (`EVALSHA` by its first key, so a commit
//! runs on the game's shard), `MOVED`/`ASK` are followed and the slot map is
//! refreshed; a pipeline must stay within one slot, which the store's
//! pipelines do (one game's keys share a hash tag).

use ::redis::aio::{ConnectionLike, ConnectionManager};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, Pipeline, RedisFuture, Value};

use super::{CONNECT_TIMEOUT, RECONNECT_RETRIES, RESPONSE_TIMEOUT};

/// One server or a cluster; cheap to clone (clones share the sockets).
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server (or a managed endpoint in front of one).
    Single(ConnectionManager),
    /// A Redis Cluster, one multiplexed connection per node.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A cluster client builder over the seed nodes `seeds`, with the store's
/// timeouts and, for `rediss://` seeds, `certificates` beyond the system's.
pub(crate) fn cluster_builder(
    seeds: &[String],
    certificates: Option<::redis::TlsCertificates>,
) -> ClusterClientBuilder {
    let builder = ClusterClientBuilder::new(seeds.iter().map(String::as_str))
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .retries(RECONNECT_RETRIES as u32);
    match certificates {
        Some(certificates) => builder.certs(certificates),
        None => builder,
    }
}
