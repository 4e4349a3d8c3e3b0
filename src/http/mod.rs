//! The HTTP surface: every route, and the middleware every request passes.
//!
//! - `games`: the scorekeeper API and the read side.
//! - `ops`: health, readiness, metrics, the OpenAPI document.
//! - [`openapi`]: that document, generated from the handlers and types.
//! - `pages`: the scoreboard, the scorekeeper console and the browser client.
//! - `extract`: extractors that answer in our JSON error format.
//! - `serve`: the accept loop and each connection's task (hyper HTTP/1,
//!   the header-read, idle and body timeouts, stopping).
//! - `conns`: the connection table: the HTTP connection cap, eviction of
//!   the longest-idle connection, the open-file budget.
//! - `bodies`: the request body's deadline, the response's end.
//! - `client_ip`: the client's address behind trusted proxies.
//! - [`crate::limits`]: abuse limits: events per token, WebSocket connects per
//!   address, the connection cap.
//! - `/v1/ws` is the fans' WebSocket (`crate::ws::ws_handler`); `/v1/sse`
//!   their Server-Sent Events fallback (`crate::sse`).
//!
//! The `/v1` routes answer cross-origin requests (CORS) from the origins in
//! `http.cors_origins` only; by default there are none, so browsers keep them
//! same-origin. (`/scorehub.js` is importable from anywhere on its own.)
//!
//! Middleware, outermost first: a request id (`x-request-id`, generated when
//! absent and copied to the response), security headers (`nosniff`,
//! `no-referrer`, `X-Frame-Options: DENY`, on every response), the client's
//! address (`client_ip`), a trace span per request (method, matched route,
//! request id, client address; never the query string nor headers, which
//! may hold tokens), metrics labelled by the matched route
//! template (never the raw URI), and axum's body limit matching
//! `http.max_body_bytes`. Unknown paths get a JSON 404, wrong methods a JSON
//! 405 (with `Allow`).

pub(crate) mod bodies;
mod client_ip;
pub(crate) mod conns;
pub(crate) mod extract;
mod games;
pub mod openapi;
mod ops;
pub(crate) mod pages;
pub(crate) mod serve;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ClientIp, Query};
use crate::metrics as m;
use crate::ws::WsQuery;
use crate::ws::upgrade::WsUpgrade;

pub use games::{
    DEFAULT_EVENTS_LIMIT, DEFAULT_GAMES_LIMIT, MAX_BATCH, MAX_EVENTS_LIMIT, MAX_GAMES_LIMIT,
};

/// The request id header, set by the hub when the client sent none.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How long a browser may cache a preflight answer.
const CORS_MAX_AGE: Duration = Duration::from_secs(600);

/// The complete router: API, WebSocket, operations, with all middleware.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.http.max_body_bytes;
    let proxies = Arc::new(client_ip::Proxies::new(&state.config.http));
    // The 405 fallback is set before the CORS layer so that it is wrapped too
    // (a preflight `OPTIONS` reaches the layer through it).
    let api = games::routes()
        .route("/v1/openapi.json", get(ops::openapi))
        .route("/v1/ws", get(fans))
        .route("/v1/sse", get(sse_fans))
        .method_not_allowed_fallback(method_not_allowed);
    let api = match cors(&state.config.http.cors_origins) {
        Some(layer) => api.layer(layer),
        None => api,
    };
    Router::new()
        .merge(api)
        .merge(ops::routes())
        .merge(pages::routes())
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(track_metrics))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                // Expected 5xx (a 503 from /readyz while Redis is down) are
                // logged by the error layer with their reason; keep this quiet.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(middleware::from_fn_with_state(
            proxies,
            client_ip::client_ip,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("x-frame-options"),
            HeaderValue::from_static("DENY"),
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// The CORS layer for `origins` (`http.cors_origins`, already checked by the
/// config), or `None` when the list is empty: same origin only, no headers.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::PUT, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .expose_headers([header::ETAG, header::RETRY_AFTER, REQUEST_ID])
            .max_age(CORS_MAX_AGE),
    )
}

/// `GET /v1/ws`: the fans' WebSocket (`crate::ws::ws_handler`), with a
/// request that is no WebSocket upgrade answered in our JSON error format.
#[utoipa::path(
    get,
    path = "/v1/ws",
    operation_id = "websocket",
    tag = "fans",
    summary = "Fans' WebSocket (live state)",
    description = "Upgrades to a WebSocket; no token needed. Client messages are JSON text or MessagePack binary frames: `{\"op\":\"sub\",\"games\":[...],\"leagues\":[...],\"since\":{id: seq}}`, `{\"op\":\"unsub\",...}`, `{\"op\":\"ping\"}`. Server frames are binary MessagePack maps: snapshot `{t:\"s\",g,q,d,n?}`, diff `{t:\"d\",g,q,d,ts}` (d is a JSON Merge Patch from q-1 to q), occupancy `{t:\"o\",g,n}` (n: fans watching the game over every node; at most one per game per `occupancy.interval`, only when it changed; snapshots carry the latest n too), error `{t:\"e\",code,msg,g?}`, pong `{t:\"p\"}`. The README (\"Watching frames\") and web/README.md describe the frames and the browser client.",
    params(
        ("games" = Option<String>, Query, description = "Comma-separated game ids to subscribe to at once."),
        ("leagues" = Option<String>, Query, description = "Comma-separated leagues to subscribe to at once."),
        ("Connection" = String, Header, description = "Must include the token `upgrade` (any case).", pattern = r"^([^,]*,)*[ \t]*[Uu][Pp][Gg][Rr][Aa][Dd][Ee][ \t]*(,.*)?$"),
        ("Upgrade" = String, Header, description = "Must include the token `websocket` (any case).", pattern = r"^([^,]*,)*[ \t]*[Ww][Ee][Bb][Ss][Oo][Cc][Kk][Ee][Tt][ \t]*(,.*)?$"),
        ("Sec-WebSocket-Version" = String, Header, description = "Must include `13` (RFC 6455).", pattern = r"^([^,]*,)*[ \t]*13[ \t]*(,.*)?$"),
        ("Sec-WebSocket-Key" = String, Header, description = "16 random bytes in base64 (24 characters), as RFC 6455 asks.", pattern = r"^[A-Za-z0-9+/]{21}[AQgw]==$"),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol."),
        (status = 400, response = openapi::BadRequest),
        (status = 429, response = openapi::RateLimited),
        (status = 503, response = openapi::FansUnavailable),
    ),
)]
async fn fans(
    upgrade: Result<WsUpgrade, ApiError>,
    state: State<crate::ws::Context>,
    client: Result<ClientIp, ApiError>,
    query: Query<WsQuery>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(refusal) => return refusal.into_response(),
    };
    match client {
        Ok(client) => crate::ws::ws_handler(upgrade, state, client, query).await,
        // Only a router served without connect info (a bug) gets here.
        Err(e) => e.into_response(),
    }
}

/// `GET /v1/sse`: the fans' Server-Sent Events stream (`crate::sse`).
#[utoipa::path(
    get,
    path = "/v1/sse",
    operation_id = "sse",
    tag = "fans",
    summary = "Fans' Server-Sent Events stream (fallback for networks that block WebSocket)",
    description = "The WebSocket's frames and guarantees over `text/event-stream`, for clients whose network blocks WebSocket; no token needed. The stream opens with `retry: 2000`; then each frame is one event of the default type (`message`) whose `data:` line is the frame's map as JSON: snapshot `{\"t\":\"s\",\"g\",\"q\",\"d\"}`, diff `{\"t\":\"d\",\"g\",\"q\",\"d\",\"ts\"}`, error `{\"t\":\"e\",\"code\",\"msg\",\"g\"?}`. Snapshots and diffs carry an `id:` holding the position of every followed game (`nba:a:17,nhl:b:4`; each pair splits at its last `:`), so a browser's own reconnect resumes with `Last-Event-ID`. Invalid or unknown games and leagues get an error event each, as on the WebSocket (`invalid_game_id`, `game_not_found`, `invalid_league`, `too_many_subscriptions`). Comments (`: keep-alive`) every `ws.ping_interval`. The stream ends at shutdown, or with an error event `slow_consumer` for a client that cannot keep up. The subscriptions are fixed: reopen the stream to change them.",
    params(
        ("games" = Option<String>, Query, description = "Comma-separated game ids to follow."),
        ("leagues" = Option<String>, Query, description = "Comma-separated leagues to follow."),
        ("last_event_id" = Option<String>, Query, description = "Positions to resume at, as in `Last-Event-ID`, for clients that cannot set headers; the header wins when both are sent.", pattern = r"^\s*([a-z0-9][a-z0-9_-]{0,31}:[A-Za-z0-9_.-]{1,64}:[0-9]{1,19}\s*(,\s*[a-z0-9][a-z0-9_-]{0,31}:[A-Za-z0-9_.-]{1,64}:[0-9]{1,19}\s*)*)?$"),
        ("Last-Event-ID" = Option<String>, Header, description = "Positions to resume at: `game:seq` pairs separated by commas (the `id` of the last event received). A game resumed inside `games.history` gets exactly the diffs after its seq, else a snapshot.", pattern = r"^\s*([a-z0-9][a-z0-9_-]{0,31}:[A-Za-z0-9_.-]{1,64}:[0-9]{1,19}\s*(,\s*[a-z0-9][a-z0-9_-]{0,31}:[A-Za-z0-9_.-]{1,64}:[0-9]{1,19}\s*)*)?$"),
    ),
    responses(
        (status = 200, description = "The event stream; it does not end until the client leaves, the hub shuts down, or the client cannot keep up.", content_type = "text/event-stream", body = String),
        (status = 400, response = openapi::SseBadRequest),
        (status = 429, response = openapi::RateLimited),
        (status = 503, response = openapi::FansUnavailable),
    ),
)]
async fn sse_fans(
    state: State<crate::ws::Context>,
    client: Result<ClientIp, ApiError>,
    query: Query<crate::sse::SseQuery>,
    headers: axum::http::HeaderMap,
) -> Response {
    match client {
        Ok(client) => crate::sse::sse_handler(state, client, query, headers).await,
        // Only a router served without connect info (a bug) gets here.
        Err(e) => e.into_response(),
    }
}

/// The matched route template (`/v1/games/{id}`), or `unmatched`.
fn route_of(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned()
}

/// The span of one request: method, route template, request id and the
/// client's address (see `client_ip`) only.
fn request_span(req: &Request) -> tracing::Span {
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let client = req.extensions().get::<ClientIp>().map(|ClientIp(ip)| *ip);
    tracing::info_span!(
        "request",
        method = %req.method(),
        route = %route_of(req),
        request_id = %request_id,
        client = client.map(tracing::field::display),
    )
}

/// Counts `scorehub_http_requests_total{route,status}` and times
/// `scorehub_http_request_duration_seconds{route}`.
async fn track_metrics(req: Request, next: Next) -> Response {
    let route = route_of(&req);
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!(m::HTTP_SECONDS, "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(m::HTTP_REQUESTS, "route" => route, "status" => status).increment(1);
    response
}

/// JSON 404 for paths no route matches. Echoes the path only, never the query.
async fn not_found(method: Method, uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::NotFound(format!("{method} {path}"))
}

/// JSON 405 for a known path with the wrong method (axum adds `Allow`).
async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}
