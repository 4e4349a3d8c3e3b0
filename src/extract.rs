//! Extractors that any route of the hub may use, whatever its state type,
//! answering in the hub's JSON error format ([`ApiError`]).
//!
//! Below both [`crate::http`] and [`crate::ws`], so the fans' WebSocket reads
//! its query the way the HTTP routes do without importing them.
//!
//! - [`Query`]: axum's query extractor with our error format.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Query parameters of type `T`, with a 400 in our format naming the parameter.
#[derive(Debug, Clone)]
pub(crate) struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(value) = axum::extract::Query::<T>::try_from_uri(&parts.uri)?;
        Ok(Query(value))
    }
}
