//! Operations routes: liveness, readiness, Prometheus metrics and the
//! OpenAPI document.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::server::AppState;

/// The hand-written OpenAPI 3.1 description of the HTTP API.
pub const OPENAPI_JSON: &str = include_str!("../../web/openapi.json");

/// The operations routes, to be merged into the main router.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
}

/// `GET /healthz`: 200 while the process runs.
async fn healthz() -> Response {
    (no_store(), Json(json!({"status": "ok"}))).into_response()
}

/// `GET /readyz`: 200 when events can be accepted, else 503 with the reason.
async fn readyz(State(state): State<AppState>) -> Response {
    match state.readiness() {
        Ok(()) => (no_store(), Json(json!({"status": "ready"}))).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            no_store(),
            Json(json!({"status": "not_ready", "reason": reason})),
        )
            .into_response(),
    }
}

/// `GET /metrics`: Prometheus text exposition format.
async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /v1/openapi.json`: the API description.
async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI_JSON,
    )
        .into_response()
}

fn no_store() -> [(header::HeaderName, HeaderValue); 1] {
    [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))]
}
