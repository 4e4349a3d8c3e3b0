//! Hub assembly: open the log, rebuild the games, build the router, serve,
//! and stop gracefully.
//!
//! The backend is picked in one place ([`Hub::start`]): Redis when
//! `redis.url` is set, else the local file log.
//!
//! Serving itself (accepting, connection limits, timeouts) is
//! `crate::http::serve`'s.
//!
//! Shutdown follows mini-redis: a [`CancellationToken`] stops the accept
//! loop and tells every HTTP connection to finish its request and every fan
//! session to close with code 1001 (and every SSE stream to end, so its
//! HTTP connection can finish), [`TaskTracker`]s wait for them, the
//! background tasks stop, then the log is flushed.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use tokio_util::task::TaskTracker;

use crate::app::AppState;
use crate::backend::{self, Backend};
use crate::config::Config;
use crate::domain::Retention;
use crate::game::{ActorConfig, IdleUnload};
use crate::http::serve;
use crate::registry::{self, Registry};
use crate::store::StoreError;
use crate::store::file::FileLogOptions;

/// Idle games waiting to be unloaded.
const IDLE_QUEUE: usize = 1024;

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The event log could not be opened or replayed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The log replayed but describes an impossible game.
    #[error("cannot rebuild games from the event log: {0}")]
    Restore(String),
    /// Cluster mode is configured but not available in this build.
    #[error("{0}")]
    Unsupported(String),
}

/// A hub ready to serve: log replayed, games rebuilt.
pub struct Hub {
    state: AppState,
}

impl Hub {
    /// Starts a hub in the mode the config asks for: cluster through Redis
    /// when `redis.url` or `redis.cluster` is set (Redis must answer now), else single node on
    /// the embedded log. `secret` is the HS256 secret (config's or generated).
    pub async fn start(config: Config, secret: &[u8]) -> Result<Hub, StartError> {
        // The one place that picks the backend.
        if !config.redis.shared() {
            let dir = config.storage.dir.clone();
            let secret = secret.to_vec();
            // Replay blocks on disk IO: keep it off the async workers.
            return tokio::task::spawn_blocking(move || Hub::open(config, &secret))
                .await
                .map_err(|e| {
                    StartError::Restore(format!("replay of {} failed: {e}", dir.display()))
                })?;
        }
        let metrics = crate::metrics::install();
        let shutdown = CancellationToken::new();
        let background = TaskTracker::new();
        let retention = Retention::new(config.games.retention);
        let backend = backend::redis::connect(
            &config.redis,
            retention,
            config.occupancy.ttl,
            shutdown.clone(),
            &background,
        )
        .await?;
        tracing::info!(redis = %config.redis.shown(), cluster = !config.redis.cluster.is_empty(), "cluster mode: Redis is the source of truth");
        Ok(Hub::assemble(
            backend, config, secret, metrics, shutdown, background,
        ))
    }

    /// Opens a single-node hub: the event log under `storage.dir` is
    /// replayed to check it and learn every game's state; each game's actor
    /// starts on its first use and stops after `games.idle_unload` without
    /// use. Blocking (disk IO); call it inside a Tokio runtime (as
    /// [`Hub::start`] does), which runs the actors.
    pub fn open(config: Config, secret: &[u8]) -> Result<Hub, StartError> {
        if config.redis.shared() {
            return Err(StartError::Unsupported(
                "redis.url or redis.cluster is set: start the hub with Hub::start (cluster mode)"
                    .into(),
            ));
        }
        let metrics = crate::metrics::install();
        let started = std::time::Instant::now();
        let (backend, games) = backend::local::open(
            &config.storage.dir,
            FileLogOptions {
                fsync: config.storage.fsync,
            },
            Retention::new(config.games.retention),
        )?;
        tracing::info!(
            games,
            dir = %config.storage.dir.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "event log replayed"
        );
        Ok(Hub::assemble(
            backend,
            config,
            secret,
            metrics,
            CancellationToken::new(),
            TaskTracker::new(),
        ))
    }

    /// The hub over `backend`: the registry, and its background tasks on
    /// `background` (they end on `shutdown`).
    fn assemble(
        backend: Backend,
        config: Config,
        secret: &[u8],
        metrics: metrics_exporter_prometheus::PrometheusHandle,
        shutdown: CancellationToken,
        background: TaskTracker,
    ) -> Hub {
        let (idle_tx, idle_rx) = tokio::sync::mpsc::channel::<crate::domain::GameId>(IDLE_QUEUE);
        let registry = Registry::over(
            &backend,
            actor_config(&config),
            Some(IdleUnload {
                after: config.games.idle_unload,
                announce: idle_tx,
            }),
        );
        // Games without fans or requests leave memory (they stay in the log).
        background.spawn(until(
            shutdown.clone(),
            registry::unload_idle_games(Arc::downgrade(&registry), idle_rx),
        ));
        // Who watches: this node's fan counts out, the totals back, every
        // occupancy.interval (it withdraws this node's counts on shutdown).
        background.spawn(registry::report_occupancy(
            Arc::downgrade(&registry),
            backend.occupancy.clone(),
            config.occupancy.interval,
            shutdown.clone(),
        ));
        // Games created on other nodes in a league a local fan watches.
        background.spawn(until(
            shutdown.clone(),
            registry::follow_announcements(Arc::downgrade(&registry), backend.announced),
        ));
        Hub {
            state: AppState::new(registry, config, secret, metrics, shutdown, background),
        }
    }

    /// The shared state (for tests and tools).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The complete router: API, WebSocket, pages, operations.
    pub fn router(&self) -> Router {
        app(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, then drains: the
    /// listener closes, idle HTTP connections close, in-flight requests
    /// finish, fans get close 1001, the log is flushed. Bounded by
    /// `http.shutdown_timeout` (see [`crate::config::ShutdownBudget`]); HTTP
    /// connections still open at the deadline are dropped.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state;
        let router = app(state.clone());
        let token = state.shutdown.clone();
        let drain = state.config.http.shutdown_budget().drain();
        let settings = serve::Settings::for_hub(&state);
        state.background.spawn(until(token.clone(), {
            let token = token.clone();
            async move {
                shutdown.await;
                tracing::info!("shutting down: closing fan connections, finishing requests");
                token.cancel();
            }
        }));
        state.background.spawn(housekeeping(state.clone()));
        state
            .background
            .spawn(state.pressure.clone().probe(token.clone()));
        let hard_stop = CancellationToken::new();
        let server = serve::run(listener, router, settings, token.clone(), hard_stop.clone());
        tokio::pin!(server);
        tokio::select! {
            () = &mut server => {}
            () = token.cancelled() => {
                // One deadline for the whole drain, requests and fans alike,
                // leaving time to flush the log within the shutdown budget.
                let deadline = tokio::time::Instant::now() + drain;
                if tokio::time::timeout_at(deadline, &mut server).await.is_err() {
                    tracing::warn!(
                        grace_ms = drain.as_millis() as u64,
                        "requests still in flight at the shutdown deadline are dropped"
                    );
                    hard_stop.cancel();
                    // Each connection's task drops its connection at once.
                    let _ = tokio::time::timeout(BACKGROUND_STOP, &mut server).await;
                }
                // Every frame committed reaches its fans' outboxes before
                // they are closed (fan shards may run behind their actors).
                if tokio::time::timeout_at(deadline, state.registry.flush_fanout())
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        grace_ms = drain.as_millis() as u64,
                        "fan-out did not finish in time"
                    );
                }
                state.sessions.close();
                if tokio::time::timeout_at(deadline, state.sessions.wait()).await.is_err() {
                    tracing::warn!(
                        grace_ms = drain.as_millis() as u64,
                        "fan sessions did not close in time"
                    );
                }
            }
        }
        state.sessions.close();
        token.cancel();
        state.background.close();
        if tokio::time::timeout(BACKGROUND_STOP, state.background.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks did not stop in time");
        }
        state.registry.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// How long shutdown waits for the background tasks (each stops at once on
/// the token; an unload in progress finishes its step).
const BACKGROUND_STOP: Duration = Duration::from_millis(200);

/// Runs `task` until `shutdown`.
async fn until(shutdown: CancellationToken, task: impl std::future::Future<Output = ()>) {
    tokio::select! {
        () = task => {}
        () = shutdown.cancelled() => {}
    }
}

fn actor_config(config: &Config) -> ActorConfig {
    ActorConfig {
        mailbox: config.games.mailbox,
        history: config.games.history,
        fan_shards: match config.games.fan_shards {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        },
        inline_fans: config.games.inline_fans,
    }
}

/// How often histogram samples are folded into their buckets.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Once a second publishes `/readyz` as the gauge `scorehub_ready` (1/0), so
/// alerts need not probe; every [`METRICS_UPKEEP`] folds the histogram
/// samples recorded since into their buckets. The recorder keeps every raw
/// sample until then, so without upkeep a hub nobody scrapes would grow by a
/// few dozen bytes per event, forever. Stops at shutdown.
async fn housekeeping(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_upkeep = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = state.shutdown.cancelled() => break,
        }
        let ready = state.readiness().is_ok();
        metrics::gauge!(crate::metrics::READY).set(if ready { 1.0 } else { 0.0 });
        if last_upkeep.elapsed() >= METRICS_UPKEEP {
            state.metrics.run_upkeep();
            last_upkeep = tokio::time::Instant::now();
        }
    }
    metrics::gauge!(crate::metrics::READY).set(0.0);
}

/// Builds the router from shared state, so tests use exactly what `serve` does.
pub fn app(state: AppState) -> Router {
    crate::http::router(state)
}

/// A shutdown future completing on SIGTERM or Ctrl-C.
///
/// SIGTERM is caught from this call on, not from the future's first poll:
/// call it early (before the event log is replayed and the address is
/// logged), so a SIGTERM at any point of start-up leads to a clean drain
/// instead of the default action (the process killed). Needs a runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async move {
            match term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {},
            _ = term => {},
        }
    }
}
