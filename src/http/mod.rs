//! HTTP routes (placeholder until the routes land).

use axum::Router;

use crate::server::AppState;

/// The complete router.
pub fn router(state: AppState) -> Router {
    Router::new().with_state(state)
}
