//! Operations routes: liveness, readiness, Prometheus metrics and the
//! OpenAPI document.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;

/// The operations routes, to be merged into the main router. (The document,
/// [`openapi`], is routed with the `/v1` API, under its CORS policy.)
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// `{"status":"ok"}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Health {
    /// Always `ok`.
    status: HealthStatus,
}

/// The one value of `status` in `/healthz`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum HealthStatus {
    /// The process runs.
    Ok,
}

/// `{"status":"ready"}`, or `{"status":"not_ready","reason":...}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Readiness {
    /// Whether events can be accepted.
    status: ReadyStatus,
    /// Why not (only with `not_ready`).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// The values of `status` in `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum ReadyStatus {
    /// Events can be accepted.
    Ready,
    /// They cannot; `reason` says why.
    NotReady,
}

/// `GET /healthz`: 200 while the process runs.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    summary = "Liveness",
    responses((status = 200, description = "The process runs.", body = Health)),
)]
pub(super) async fn healthz() -> Response {
    (
        no_store(),
        Json(Health {
            status: HealthStatus::Ok,
        }),
    )
        .into_response()
}

/// `GET /readyz`: 200 when events can be accepted, else 503 with the reason.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    summary = "Readiness",
    responses(
        (status = 200, description = "Events can be accepted.", body = Readiness),
        (status = 503, description = "Not ready; `reason` says why (Redis unreachable, storage failing, shutting down).", body = Readiness),
    ),
)]
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    match state.readiness() {
        Ok(()) => (
            no_store(),
            Json(Readiness {
                status: ReadyStatus::Ready,
                reason: None,
            }),
        )
            .into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            no_store(),
            Json(Readiness {
                status: ReadyStatus::NotReady,
                reason: Some(reason.to_string()),
            }),
        )
            .into_response(),
    }
}

/// `GET /metrics`: Prometheus text exposition format.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4.", body = String, content_type = "text/plain")),
)]
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /v1/openapi.json`: the API description, rendered once.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    summary = "This document",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", body = Object, content_type = "application/json")),
)]
pub(super) async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        super::openapi::document(),
    )
        .into_response()
}

fn no_store() -> [(header::HeaderName, HeaderValue); 1] {
    [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))]
}
