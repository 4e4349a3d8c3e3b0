//! Serving the router on a listener: the accept loop, and one task per
//! connection running hyper's HTTP/1 with the hub's timeouts.
//!
//! - **Accept**: each connection is admitted by the connection table
//!   ([`Conns`]: `http.max_connections` and the open-file budget; when
//!   full, the longest-idle connection is closed to make room, or the new
//!   one is refused with a best-effort `503` and closed).
//! - **Timeouts** (see [`crate::net`]): a connection with no request in
//!   flight is closed after `http.idle_timeout`; one whose request head
//!   started is closed when the head is not whole within
//!   `http.header_read_timeout` of its first byte (no answer: there is no
//!   request to answer); a request body must arrive within
//!   `http.body_timeout` of its head ([`DeadlineBody`]), else the request
//!   is answered `408` and the connection closed. Every connection closed
//!   this way counts in `scorehub_http_closed_total{reason}`.
//! - **Upgrades**: hyper hands an upgraded connection to the WebSocket
//!   session (`crate::ws`) and this connection's task ends; the fan is then
//!   counted by the fan slots, not here.
//! - **Stop**: when `stop` is cancelled the listener is closed; connections
//!   without a request in flight are closed at once, those with one finish
//!   it (answered with `Connection: close`) and then close. [`run`] returns
//!   once every connection has ended. When `hard_stop` is cancelled (the
//!   shutdown budget ran out), the remaining connections are dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::bodies::{DeadlineBody, InFlight, InFlightBody};
use super::conns::{Admitted, Conns};
use crate::app::AppState;
use crate::limits::HttpCaps;
use crate::metrics as m;
use crate::net::{Timeouts, Verdict, Watched};

/// How long the accept loop pauses after an error that is not about one
/// connection (e.g. out of file descriptors), as axum's `serve` does.
const ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// How one hub serves HTTP.
#[derive(Clone)]
pub(crate) struct Settings {
    /// The connection table.
    conns: Arc<Conns>,
    /// Header-read and idle timeouts.
    timeouts: Timeouts,
    /// `http.body_timeout`.
    body_timeout: Duration,
}

impl Settings {
    /// What `state`'s config asks for, with a new connection table beside
    /// its fan slots (the caps fitted to the open-file limit).
    pub(crate) fn for_hub(state: &AppState) -> Settings {
        let http = &state.config.http;
        Settings {
            conns: Conns::new(HttpCaps::fitted(http.max_connections), state.limits.clone()),
            timeouts: Timeouts {
                header_read: http.header_read_timeout,
                idle: http.idle_timeout,
            },
            body_timeout: http.body_timeout,
        }
    }
}

/// Accepts connections on `listener` and serves `router` on each until
/// `stop`; then waits for the connections to end (all of them at once on
/// `hard_stop`).
pub(crate) async fn run(
    listener: TcpListener,
    router: Router,
    settings: Settings,
    stop: CancellationToken,
    hard_stop: CancellationToken,
) {
    let mut http = http1::Builder::new();
    // hyper's own header timeout also runs while a keep-alive connection
    // waits for its next request; the hub times heads itself (crate::net).
    http.keep_alive(true).header_read_timeout(None);
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::error!(error = %e, "cannot accept connections; retrying in 1 s");
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_PAUSE) => continue,
                    () = stop.cancelled() => break,
                }
            }
        };
        // Frames are small and already batched per flush: send them now.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        match settings.conns.admit() {
            Some(admitted) => {
                connections.spawn(serve_connection(
                    tcp,
                    peer,
                    admitted,
                    http.clone(),
                    router.clone(),
                    settings.clone(),
                    stop.clone(),
                    hard_stop.clone(),
                ));
            }
            None => refuse(tcp, peer, &settings.conns),
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Errors about one connection only: accepting goes on at once.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Answers a connection the table has no room for, best effort, and closes
/// it. The write cannot block (a fresh socket's send buffer is empty); a
/// client whose request already arrived may see a reset instead.
fn refuse(tcp: TcpStream, peer: SocketAddr, conns: &Conns) {
    tracing::debug!(%peer, open = conns.open(), "HTTP connection refused: every connection has a request in flight");
    let _ = tcp.try_write(conns.refusal());
}

/// Serves one connection until it ends, times out, is evicted or the hub stops.
#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
    http: http1::Builder,
    router: Router,
    settings: Settings,
    stop: CancellationToken,
    hard_stop: CancellationToken,
) {
    let activity = admitted.activity().clone();
    let io = TokioIo::new(Watched::new(tcp, activity.clone()));
    let body_timeout = settings.body_timeout;
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let request = InFlight::begin(activity.clone());
            req.extensions_mut().insert(ConnectInfo(peer));
            let req = req.map(|body| DeadlineBody::new(body, body_timeout));
            let call = tower_service::Service::call(&mut router.clone(), req);
            async move {
                let response = call.await?;
                Ok::<_, Infallible>(response.map(|body| InFlightBody::new(body, request)))
            }
        })
    };
    // The connection is closed (dropped) at the end of this block.
    let why = {
        let conn = http.serve_connection(io, service).with_upgrades();
        tokio::pin!(conn);
        // Once set, the connection is finishing its request and then closes.
        let mut finishing = false;
        let why = loop {
            let recheck = match activity.verdict(settings.timeouts, Instant::now()) {
                Verdict::Until(at) => at,
                Verdict::Expired(expiry) => break Some(expiry.label()),
            };
            tokio::select! {
                biased;
                served = conn.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                    }
                    break None;
                }
                () = hard_stop.cancelled() => break None,
                () = stop.cancelled(), if !finishing => {
                    if !activity.in_flight() {
                        break None;
                    }
                    conn.as_mut().graceful_shutdown();
                    finishing = true;
                }
                () = activity.changed(), if !finishing => {
                    if activity.is_evicted() {
                        if !activity.in_flight() {
                            break Some("evicted");
                        }
                        conn.as_mut().graceful_shutdown();
                        finishing = true;
                    }
                }
                () = tokio::time::sleep_until(recheck), if !finishing => {}
            }
        };
        // Counted while the socket is still open: a client that sees the
        // close then sees it counted. Evictions are counted when chosen, by
        // the table.
        if let Some(reason) = why
            && reason != "evicted"
        {
            metrics::counter!(m::HTTP_CLOSED, "reason" => reason).increment(1);
        }
        why
    };
    if let Some(reason) = why {
        tracing::debug!(%peer, reason, "HTTP connection closed by the hub");
    }
    drop(admitted);
}
