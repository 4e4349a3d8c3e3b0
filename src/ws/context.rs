//! What a fan session may use of the hub: a narrow [`Context`], built from
//! [`AppState`] in one place ([`FromRef`]), instead of all of it. A session
//! sees no tokens, no other config section, no metrics renderer.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::FromRef;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::games::Games;
use crate::app::{AppState, ConnIds};
use crate::config::WsConfig;
use crate::fanout::pressure::Pressure;
use crate::limits::{Limits, Refusal, Slot};

/// Everything a fan session needs from its hub. Cheap to build (a few
/// reference counts and the `[ws]` section), so axum builds one per upgrade
/// request from the [`AppState`].
#[derive(Clone)]
pub(crate) struct Context {
    /// The games, through the one module that talks to the registry.
    pub(super) games: Games,
    /// The `[ws]` config section.
    pub(crate) config: WsConfig,
    /// Cancelled when the hub starts shutting down.
    pub(crate) shutdown: CancellationToken,
    /// Tracks sessions so shutdown can wait for them.
    pub(crate) sessions: TaskTracker,
    /// Whether the hub's workers are saturated; handed to each outbox.
    pub(super) pressure: Arc<Pressure>,
    limits: Arc<Limits>,
    conn_ids: ConnIds,
    /// Where sessions report how far they got (tests only).
    #[cfg(test)]
    pub(super) stages: Option<tokio::sync::mpsc::UnboundedSender<super::session::Stage>>,
}

impl FromRef<AppState> for Context {
    fn from_ref(state: &AppState) -> Context {
        Context {
            games: Games::new(state.registry.clone()),
            config: state.config.ws.clone(),
            shutdown: state.shutdown.clone(),
            sessions: state.sessions.clone(),
            pressure: state.pressure.clone(),
            limits: state.limits.clone(),
            conn_ids: state.conn_ids.clone(),
            #[cfg(test)]
            stages: None,
        }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A connection slot for a fan from `peer` (held for the connection's
    /// life), or the refusal to answer instead of upgrading.
    pub(super) fn admit_fan(&self, peer: IpAddr) -> Result<Slot, Refusal> {
        self.limits.admit_fan(peer)
    }

    /// A fan slot and an SSE stream slot for a stream to `peer` (both held
    /// for the stream's life), or the refusal to answer instead.
    pub(crate) fn admit_sse_fan(&self, peer: IpAddr) -> Result<(Slot, Slot), Refusal> {
        self.limits.admit_sse_fan(peer)
    }

    /// A fresh connection id, unique within the hub.
    pub(crate) fn next_conn_id(&self) -> u64 {
        self.conn_ids.next()
    }
}
