//! Request extractors whose failures are [`ApiError`]s, so every input
//! problem answers in the same JSON format as every other error.
//!
//! - [`Body`]: a JSON or MessagePack body, size-limited, decoded with the
//!   failing field's path in the message.
//! - [`Scorekeeper`]: the verified claims of `Authorization: Bearer <token>`.
//! - [`GamePath`]: the `{id}` path segment as a validated [`GameId`].
//! - [`Writer`]: the three above combined for write routes: token, game id,
//!   the token's permission to write that game (403 otherwise), and one unit
//!   of the token's event rate (429 when spent, see [`crate::limits`]).
//!
//! The query extractor, which the fans' WebSocket uses too, lives one layer
//! down in [`crate::extract`].

use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::bodies::{BodyTimeout, timed_out};
use crate::app::AppState;
use crate::auth::{Claims, parse_bearer};
use crate::domain::GameId;
use crate::error::ApiError;

/// The wire format of a request body, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// `application/json` (any parameters, e.g. `charset=utf-8`).
    Json,
    /// `application/msgpack` or `application/x-msgpack`.
    MsgPack,
}

impl Encoding {
    /// Reads the `Content-Type` header; anything but JSON or MessagePack is a 415.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Encoding, ApiError> {
        let Some(value) = headers.get(header::CONTENT_TYPE) else {
            return Err(ApiError::UnsupportedMediaType(
                "the request has no Content-Type header".into(),
            ));
        };
        let value = value.to_str().unwrap_or("");
        let essence = value.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("application/json") {
            Ok(Encoding::Json)
        } else if essence.eq_ignore_ascii_case("application/msgpack")
            || essence.eq_ignore_ascii_case("application/x-msgpack")
        {
            Ok(Encoding::MsgPack)
        } else {
            let shown: String = essence.chars().take(64).collect();
            Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type {shown:?} is not supported"
            )))
        }
    }

    /// Decodes a whole body into `T`. A malformed document is a 400 saying so;
    /// a well-formed one of the wrong shape is a 400 naming the field path
    /// (`home.name: missing field ...`, `points: invalid type: ...`).
    pub(crate) fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, ApiError> {
        match self {
            Encoding::Json => decode_json(bytes),
            Encoding::MsgPack => decode_msgpack(bytes),
        }
    }
}

fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let not_json = |e: &serde_json::Error| {
        ApiError::BadRequest(format!("request body is not valid JSON: {e}"))
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        if err.inner().is_data() {
            field_error("", err)
        } else {
            not_json(err.inner())
        }
    })?;
    de.end().map_err(|e| not_json(&e))?;
    Ok(value)
}

fn decode_msgpack<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    crate::codec::check_finite_floats(bytes).map_err(|why| {
        ApiError::BadRequest(format!("request body is not usable MessagePack: {why}"))
    })?;
    let mut de = rmp_serde::Deserializer::new(bytes);
    de.set_max_depth(crate::codec::MAX_MSGPACK_DEPTH);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        // `Syntax` carries serde's own messages (missing field, invalid type);
        // the other variants mean the bytes are not MessagePack at all.
        if matches!(err.inner(), rmp_serde::decode::Error::Syntax(_)) {
            field_error("", err)
        } else {
            ApiError::BadRequest(format!(
                "request body is not valid MessagePack: {}",
                err.inner()
            ))
        }
    })?;
    if !de.get_ref().is_empty() {
        return Err(ApiError::BadRequest(
            "request body is not valid MessagePack: trailing bytes after the value".into(),
        ));
    }
    Ok(value)
}

/// A 400 naming the failing field: `"<prefix>.<path>: <problem>"`. With an
/// empty `prefix` the path stands alone (`home.name: ...`); a failure at the
/// root reads `request body: ...` (or `<prefix>: ...`).
pub(crate) fn field_error<E: std::fmt::Display>(
    prefix: &str,
    err: serde_path_to_error::Error<E>,
) -> ApiError {
    let path = err.path().to_string();
    let at_root = path.is_empty() || path == ".";
    let inner = err.into_inner();
    let message = match (prefix.is_empty(), at_root) {
        (true, true) => format!("request body: {inner}"),
        (true, false) => format!("{path}: {inner}"),
        (false, true) => format!("{prefix}: {inner}"),
        (false, false) => format!("{prefix}.{path}: {inner}"),
    };
    ApiError::BadRequest(message)
}

/// A request body of type `T`, JSON or MessagePack by `Content-Type`, at most
/// `http.max_body_bytes` long (413 beyond).
#[derive(Debug, Clone)]
pub(crate) struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let encoding = Encoding::from_headers(req.headers())?;
        let limit = state.config.http.max_body_bytes;
        let bytes = read_limited(req, limit).await?;
        encoding.decode(&bytes).map(Body)
    }
}

/// Most bytes of an oversized body read (and thrown away) before the `413`,
/// as a multiple of the limit: a client still sending when the server answers
/// and closes gets a TCP reset, which can destroy the `413` in its receive
/// buffer (it sees "connection reset" instead). Reading the rest first, as
/// far as this bound and [`DRAIN_TIME`] allow, delivers the answer.
const DRAIN_FACTOR: u64 = 16;
/// Longest time spent reading an oversized body before the `413`.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads the whole body, refusing more than `limit` bytes without buffering
/// them: by `Content-Length` up front, else while streaming. A body that
/// misses its deadline (`http.body_timeout`, set by `super::bodies`) is a
/// `408`. A body of up to
/// 16 × `limit` is read to its end (and dropped, for at most 2 s) before the
/// refusal, so the client gets it.
pub(crate) async fn read_limited(req: Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let drain_max = (limit as u64).saturating_mul(DRAIN_FACTOR);
    let mut stream = req.into_body().into_data_stream();
    if let Some(n) = declared.filter(|&n| n > limit as u64) {
        if n <= drain_max {
            drain(&mut stream, n).await;
        }
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let capacity = declared.map_or(0, |n| n as usize).min(limit);
    let mut buf = Vec::with_capacity(capacity);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            if let Some(BodyTimeout { after }) = timed_out(&e) {
                metrics::counter!(crate::metrics::HTTP_CLOSED, "reason" => "body_timeout")
                    .increment(1);
                return ApiError::RequestTimeout { after };
            }
            tracing::debug!(error = %e, "reading the request body failed");
            ApiError::BadRequest(
                "the request body could not be read completely; send it again".into(),
            )
        })?;
        if buf.len() + chunk.len() > limit {
            let read = (buf.len() + chunk.len()) as u64;
            drain(&mut stream, drain_max.saturating_sub(read)).await;
            return Err(ApiError::PayloadTooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Reads and drops up to `max` more bytes of `stream`, for at most
/// [`DRAIN_TIME`].
async fn drain(stream: &mut axum::body::BodyDataStream, max: u64) {
    let mut left = max;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while left > 0 {
            match stream.next().await {
                Some(Ok(chunk)) => left = left.saturating_sub(chunk.len() as u64),
                _ => break,
            }
        }
    })
    .await;
}

/// The verified claims of the request's bearer token (401 when missing, malformed,
/// badly signed or expired). The token itself is never logged nor echoed.
#[derive(Debug, Clone)]
pub(crate) struct Scorekeeper(pub Claims);

impl FromRequestParts<AppState> for Scorekeeper {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::Unauthorized(
                "missing Authorization header; send `Authorization: Bearer <token>` (mint one with `scorehub token`)".into(),
            ));
        };
        let value = value.to_str().map_err(|_| {
            ApiError::Unauthorized(
                "the Authorization header is not readable text; send `Authorization: Bearer <token>`"
                    .into(),
            )
        })?;
        let token = parse_bearer(value)?;
        let claims = state.auth.verify(token)?;
        Ok(Scorekeeper(claims))
    }
}

/// The `{id}` path parameter as a validated game id (400 `bad_request` with the
/// reason when it is malformed).
#[derive(Debug, Clone)]
pub(crate) struct GamePath(pub GameId);

impl<S: Send + Sync> FromRequestParts<S> for GamePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await?;
        Ok(GamePath(GameId::parse(&raw)?))
    }
}

/// A token allowed to write the game in the path: 401 without a valid token,
/// 400 for a malformed id, 403 when the token's games do not cover it, 429
/// when the token's `sub` is over its event rate (the request costs one
/// event). Runs before the body is read, so an unauthorised or throttled
/// client costs no decoding.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    /// The token's claims.
    pub claims: Claims,
    /// The game it may write.
    pub game: GameId,
}

impl FromRequestParts<AppState> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Scorekeeper(claims) = Scorekeeper::from_request_parts(parts, state).await?;
        let GamePath(game) = GamePath::from_request_parts(parts, state).await?;
        check_write(&claims, &game)?;
        state.limits.charge_events(&claims, 1)?;
        Ok(Writer { claims, game })
    }
}

/// 403 unless `claims` may write `game`; the message lists what the token covers.
pub(crate) fn check_write(claims: &Claims, game: &GameId) -> Result<(), ApiError> {
    if claims.may_write(game) {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "token for sub {:?} may not write game {game}; its games are [{}]; use a token whose games include {game} or `{}:*`",
        claims.sub,
        claims.games.join(", "),
        game.league_str(),
    )))
}
