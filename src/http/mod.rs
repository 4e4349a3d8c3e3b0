//! The HTTP surface: every route, and the middleware every request passes.
//!
//! - `games`: the scorekeeper API and the read side.
//! - `ops`: health, readiness, metrics, the OpenAPI document.
//! - [`pages`]: the scoreboard, the scorekeeper console and the browser client.
//! - [`extract`]: extractors that answer in our JSON error format.
//! - [`limits`]: abuse limits: events per token, WebSocket connects per
//!   address, the connection cap.
//! - `/v1/ws` is the fans' WebSocket ([`crate::ws::ws_handler`]).
//!
//! Middleware, outermost first: a request id (`x-request-id`, generated when
//! absent and copied to the response), security headers, a trace span per
//! request (method, matched route, request id; never the query string nor
//! headers, which may hold tokens), metrics labelled by the matched route
//! template (never the raw URI), and axum's body limit matching
//! `http.max_body_bytes`. Unknown paths get a JSON 404, wrong methods a JSON
//! 405 (with `Allow`).

pub mod extract;
mod games;
pub mod limits;
mod ops;
pub mod pages;
#[cfg(test)]
mod tests;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::error::ApiError;
use crate::metrics as m;
use crate::server::AppState;

pub use games::{
    DEFAULT_EVENTS_LIMIT, DEFAULT_GAMES_LIMIT, MAX_BATCH, MAX_EVENTS_LIMIT, MAX_GAMES_LIMIT,
};
pub use ops::OPENAPI_JSON;

/// The request id header, set by the hub when the client sent none.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The complete router: API, WebSocket, operations, with all middleware.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.http.max_body_bytes;
    Router::new()
        .merge(games::routes())
        .merge(ops::routes())
        .merge(pages::routes())
        .route("/v1/ws", get(crate::ws::ws_handler))
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

/// The matched route template (`/v1/games/{id}`), or `unmatched`.
fn route_of(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned()
}

/// The span of one request: method, route template and request id only.
fn request_span(req: &Request) -> tracing::Span {
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        method = %req.method(),
        route = %route_of(req),
        request_id = %request_id,
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
