//! Extractors that any route of the hub may use, whatever its state type,
//! answering in the hub's JSON error format ([`ApiError`]).
//!
//! Below both [`crate::http`] and [`crate::ws`], so the fans' WebSocket reads
//! its query the way the HTTP routes do without importing them.
//!
//! - [`Query`]: axum's query extractor with our error format.
//! - [`ClientIp`]: the client's address (behind a trusted proxy, the one it
//!   forwarded; see `crate::http::client_ip`).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
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

/// The client's address: the TCP peer, or, when the peer is a trusted
/// proxy, the address it forwarded. Set on each request by
/// `crate::http::client_ip`; where that middleware does not run, the TCP
/// peer. A request served without connect info (a bug) is a 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        if let Some(ip) = parts.extensions.get::<ClientIp>() {
            return Ok(*ip);
        }
        match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(peer)) => Ok(ClientIp(peer.ip())),
            None => Err(ApiError::Internal(
                "no peer address: the router was served without connect info".into(),
            )),
        }
    }
}
