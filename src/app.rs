//! What request handlers and fan sessions share: one [`AppState`] per hub.
//!
//! Built by [`crate::server`], read by [`crate::http`] and [`crate::ws`]; it
//! sits below both, so neither imports the server that assembles them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::backend::Unready;
use crate::config::Config;
use crate::fanout::pressure::Pressure;
use crate::limits::Limits;
use crate::registry::Registry;

/// Everything request handlers and fan sessions share.
#[derive(Clone)]
pub struct AppState {
    /// Every game.
    pub registry: Arc<Registry>,
    /// Token verification.
    pub auth: Arc<Auth>,
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Cancelled when the hub starts shutting down.
    pub shutdown: CancellationToken,
    /// Tracks fan sessions so shutdown can wait for them.
    pub sessions: TaskTracker,
    /// The hub's background tasks (idle unloading, announcements, the link
    /// to other nodes, housekeeping): each ends on `shutdown`, and shutdown
    /// waits for them.
    pub background: TaskTracker,
    /// Abuse limits: events per token, connects per address, the connection cap.
    pub limits: Arc<Limits>,
    /// Whether this hub's workers are saturated (its probe runs in
    /// [`crate::server`]); read by every fan's outbox.
    pub pressure: Arc<Pressure>,
    /// Connection ids, unique within this hub.
    pub conn_ids: ConnIds,
}

/// Hands out connection ids, unique within one hub; clones share the count.
#[derive(Debug, Clone)]
pub struct ConnIds(Arc<AtomicU64>);

impl ConnIds {
    /// A fresh connection id.
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

impl Default for ConnIds {
    fn default() -> ConnIds {
        ConnIds(Arc::new(AtomicU64::new(1)))
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("games", &self.registry.len())
            .finish_non_exhaustive()
    }
}

impl AppState {
    pub(crate) fn new(
        registry: Arc<Registry>,
        config: Config,
        secret: &[u8],
        metrics: PrometheusHandle,
        shutdown: CancellationToken,
        background: TaskTracker,
    ) -> AppState {
        let mut limits = Limits::new(&config.limits);
        limits.fit_sse_streams(config.http.max_connections);
        AppState {
            registry,
            auth: Arc::new(Auth::new(secret)),
            limits: Arc::new(limits),
            config: Arc::new(config),
            metrics,
            shutdown,
            sessions: TaskTracker::new(),
            background,
            pressure: Arc::new(Pressure::new()),
            conn_ids: ConnIds::default(),
        }
    }

    /// `Ok` when the hub can accept events, else the reason.
    pub fn readiness(&self) -> Result<(), Unready> {
        if self.shutdown.is_cancelled() {
            return Err(Unready::ShuttingDown);
        }
        self.registry.health()
    }
}
