//! API errors: one [`ApiError`] for every way an HTTP request can fail, and
//! how each becomes a status code plus a JSON body.
//!
//! The body is always `{"error":{"code":"snake_case","message":"..."}}`. The
//! `code` is stable and meant for programs; the `message` is one sentence for
//! people that says what was wrong and how to fix it. Details that do not help
//! the client (IO errors, storage paths) go to the log, never to the response.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::AuthError;
use crate::domain::{EventError, GameId, IdError};
use crate::game::ApplyError;
use crate::registry::CreateError;
use crate::store::StoreError;

/// Everything an HTTP handler or extractor can answer with instead of success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400 `bad_request`: the request is malformed; the message names the field.
    #[error("{0}")]
    BadRequest(String),
    /// 400 `bad_last_event_id`: the `Last-Event-ID` of an SSE request (or
    /// its `last_event_id` parameter) is not a list of `game:seq` pairs.
    #[error("{0}")]
    BadLastEventId(String),
    /// 401 `unauthorized`: no token, or a malformed, badly signed or expired one.
    #[error("{0}")]
    Unauthorized(String),
    /// 403 `forbidden`: the token is valid but may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404 `game_not_found`: no game has this id.
    #[error("game {0} does not exist; create it with PUT /v1/games/{0}")]
    GameNotFound(GameId),
    /// 404 `not_found`: no route has this path.
    #[error("no route for {0}; see GET /v1/openapi.json for the API")]
    NotFound(String),
    /// 405 `method_not_allowed`: the path exists but not with this method.
    #[error("method {0} is not allowed here; the Allow header lists the methods this path takes")]
    MethodNotAllowed(String),
    /// 409 `event_id_conflict`: the `event_id` was used for another event.
    #[error("{0}")]
    EventIdConflict(String),
    /// 409 `game_exists`: the game exists with a different creating body.
    #[error("{0}")]
    GameExists(String),
    /// 412 `seq_mismatch`: `expected_seq` does not match the game.
    #[error("{0}")]
    SeqMismatch(String),
    /// 408 `request_timeout`: the body did not arrive within
    /// `http.body_timeout`; the connection is closed after the answer.
    #[error(
        "the request body did not arrive within {} (http.body_timeout); send the whole body at once, or check the network between the client and the hub",
        humantime::format_duration(*after)
    )]
    RequestTimeout {
        /// `http.body_timeout`.
        after: Duration,
    },
    /// 413 `payload_too_large`: the body is over the configured limit.
    #[error(
        "request body is larger than the limit of {limit} bytes (http.max_body_bytes); send a smaller body, or split a batch into several requests"
    )]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// 415 `unsupported_media_type`: the body is neither JSON nor MessagePack.
    #[error("{0}; send `Content-Type: application/json` or `Content-Type: application/msgpack`")]
    UnsupportedMediaType(String),
    /// 422 `invalid_event`: the event is well-formed but cannot apply.
    #[error("{0}")]
    InvalidEvent(String),
    /// 422 `invalid_game`: the new game's body is well-formed but not acceptable.
    #[error("{0}")]
    InvalidGame(String),
    /// 429 `rate_limited`: too many requests; retry after the given time.
    #[error("too many requests; retry after {} s", retry_after.as_secs().max(1))]
    RateLimited {
        /// How long the client should wait.
        retry_after: Duration,
    },
    /// 503 `not_ready`: the hub cannot accept writes right now. The reason
    /// goes to the log; the client is told to retry.
    #[error(
        "the hub cannot accept this request right now; retry shortly (events are idempotent, so resending the same event_id is safe)"
    )]
    NotReady(String),
    /// 500 `internal`: a bug. The detail goes to the log only.
    #[error("internal error; the details are in the server log")]
    Internal(String),
}

/// The JSON error object, `{"code","message"}`, as it appears under `"error"`
/// (also inside batch results).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(
    description = "The error object, `{\"code\",\"message\"}`, under `error` (also inside batch results)."
)]
pub struct ErrorBody {
    /// Stable snake_case code for programs.
    #[schema(value_type = String, pattern = "^[a-z][a-z0-9_]*$", examples("bad_request"))]
    pub code: &'static str,
    /// One human sentence saying what was wrong and how to fix it.
    pub message: String,
}

/// Every error response body: `{"error":{"code","message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Error, examples(json!({"error": {
    "code": "bad_request",
    "message": "points: invalid type: string \"3\", expected i64 at line 1 column 60"
}})))]
pub(crate) struct ErrorEnvelope {
    /// What went wrong.
    pub error: ErrorBody,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::BadLastEventId(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::GameNotFound(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::EventIdConflict(_) | ApiError::GameExists(_) => StatusCode::CONFLICT,
            ApiError::SeqMismatch(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::InvalidEvent(_) | ApiError::InvalidGame(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::BadLastEventId(_) => "bad_last_event_id",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::GameNotFound(_) => "game_not_found",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::EventIdConflict(_) => "event_id_conflict",
            ApiError::GameExists(_) => "game_exists",
            ApiError::SeqMismatch(_) => "seq_mismatch",
            ApiError::RequestTimeout { .. } => "request_timeout",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::InvalidEvent(_) => "invalid_event",
            ApiError::InvalidGame(_) => "invalid_game",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::NotReady(_) => "not_ready",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The sentence shown to the client (never the hidden detail of
    /// [`ApiError::NotReady`] or [`ApiError::Internal`]).
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// The `{"code","message"}` object, for batch item results.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code(),
            message: self.message(),
        }
    }

    /// Writes the error to the log: server-side failures at `warn`/`error`
    /// with their hidden detail, client mistakes at `debug`.
    pub fn log(&self) {
        match self {
            ApiError::Internal(detail) => {
                tracing::error!(code = self.code(), detail = %detail, "request failed");
            }
            ApiError::NotReady(detail) => {
                tracing::warn!(code = self.code(), detail = %detail, "request refused: not ready");
            }
            _ => {
                tracing::debug!(code = self.code(), message = %self, "request refused");
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let status = self.status();
        let mut response = (status, Json(ErrorEnvelope { error: self.body() })).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"scorehub\""),
                );
            }
            ApiError::RateLimited { retry_after } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after.as_secs().max(1)),
                );
            }
            ApiError::NotReady(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::RequestTimeout { .. } => {
                // The rest of the body may still come: the connection cannot
                // carry another request.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Conflict { .. } => ApiError::EventIdConflict(e.to_string()),
            ApplyError::SeqMismatch { .. } => ApiError::SeqMismatch(e.to_string()),
            ApplyError::Invalid(inner) => inner.into(),
            ApplyError::Unavailable(reason) => ApiError::NotReady(reason),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ApiError::NotReady(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        match e {
            EventError::BadRequest(m) => ApiError::BadRequest(m),
            EventError::Invalid(m) => ApiError::InvalidEvent(m),
        }
    }
}

impl From<CreateError> for ApiError {
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::Exists(_) | CreateError::Retired(_) => ApiError::GameExists(e.to_string()),
            CreateError::Invalid(inner) => ApiError::InvalidGame(inner.0),
            CreateError::Unavailable(store) => ApiError::from(store),
            CreateError::Interrupted(_) => ApiError::NotReady(e.to_string()),
        }
    }
}

impl From<IdError> for ApiError {
    fn from(e: IdError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Forbidden { .. } => ApiError::Forbidden(e.to_string()),
            AuthError::MintRefused(_) => ApiError::BadRequest(e.to_string()),
            _ => ApiError::Unauthorized(e.to_string()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        match e {
            PathRejection::FailedToDeserializePathParams(inner) => {
                ApiError::BadRequest(format!("bad path parameter: {}", inner.body_text()))
            }
            other => ApiError::Internal(format!("path extraction failed: {}", other.body_text())),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        // axum's text starts "Failed to deserialize query string: ..."; ours names
        // the parameter in the same words.
        let text = e.body_text();
        let detail = text
            .strip_prefix("Failed to deserialize query string: ")
            .unwrap_or(&text);
        ApiError::BadRequest(format!("bad query string: {detail}"))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        match e {
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::UnsupportedMediaType("the request body has no JSON content type".into())
            }
            JsonRejection::BytesRejection(_) => {
                ApiError::BadRequest("the request body could not be read; send it again".into())
            }
            other => ApiError::BadRequest(format!(
                "request body is not valid JSON: {}",
                other.body_text()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::InvalidState;

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn every_variant_has_its_status_code_and_json_body() {
        let id = GameId::parse("nba:g1").unwrap();
        let cases = [
            (ApiError::BadRequest("x".into()), 400, "bad_request"),
            (ApiError::Unauthorized("x".into()), 401, "unauthorized"),
            (ApiError::Forbidden("x".into()), 403, "forbidden"),
            (ApiError::GameNotFound(id), 404, "game_not_found"),
            (ApiError::NotFound("/x".into()), 404, "not_found"),
            (
                ApiError::MethodNotAllowed("PATCH".into()),
                405,
                "method_not_allowed",
            ),
            (
                ApiError::EventIdConflict("x".into()),
                409,
                "event_id_conflict",
            ),
            (ApiError::GameExists("x".into()), 409, "game_exists"),
            (ApiError::SeqMismatch("x".into()), 412, "seq_mismatch"),
            (
                ApiError::PayloadTooLarge { limit: 10 },
                413,
                "payload_too_large",
            ),
            (
                ApiError::UnsupportedMediaType("x".into()),
                415,
                "unsupported_media_type",
            ),
            (ApiError::InvalidEvent("x".into()), 422, "invalid_event"),
            (ApiError::InvalidGame("x".into()), 422, "invalid_game"),
            (
                ApiError::RateLimited {
                    retry_after: Duration::from_secs(3),
                },
                429,
                "rate_limited",
            ),
            (ApiError::NotReady("disk".into()), 503, "not_ready"),
            (ApiError::Internal("bug".into()), 500, "internal"),
        ];
        for (err, status, code) in cases {
            let response = err.into_response();
            assert_eq!(response.status().as_u16(), status, "{code}");
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "application/json",
                "{code}"
            );
            let body = body_json(response).await;
            assert_eq!(body["error"]["code"], code);
            let message = body["error"]["message"].as_str().unwrap();
            assert!(!message.is_empty(), "{code}");
            assert_eq!(body.as_object().unwrap().len(), 1);
        }
    }

    #[tokio::test]
    async fn hidden_details_stay_out_of_the_body() {
        let body = body_json(ApiError::Internal("secret path /var/x".into()).into_response()).await;
        assert!(!body.to_string().contains("/var/x"));
        let body = body_json(ApiError::NotReady("disk /var/y full".into()).into_response()).await;
        assert!(!body.to_string().contains("/var/y"));
    }

    #[test]
    fn headers_for_401_429_503() {
        let r = ApiError::Unauthorized("x".into()).into_response();
        assert!(
            r.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let r = ApiError::RateLimited {
            retry_after: Duration::from_secs(7),
        }
        .into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
        let r = ApiError::RateLimited {
            retry_after: Duration::from_millis(10),
        }
        .into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let r = ApiError::NotReady("x".into()).into_response();
        assert!(r.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn conversions_from_domain_errors() {
        let conflict = ApplyError::Conflict {
            event_id: "e1".into(),
            seq: 3,
        };
        assert_eq!(ApiError::from(conflict).code(), "event_id_conflict");
        let mismatch = ApplyError::SeqMismatch {
            expected: 1,
            current: 2,
        };
        assert_eq!(
            ApiError::from(mismatch).status(),
            StatusCode::PRECONDITION_FAILED
        );
        let bad = ApplyError::Invalid(EventError::BadRequest("field".into()));
        assert_eq!(ApiError::from(bad).status(), StatusCode::BAD_REQUEST);
        let invalid = ApplyError::Invalid(EventError::Invalid("team".into()));
        assert_eq!(ApiError::from(invalid).code(), "invalid_event");
        let down = ApplyError::Unavailable("disk".into());
        assert_eq!(ApiError::from(down).code(), "not_ready");

        let id = GameId::parse("nba:g1").unwrap();
        assert_eq!(
            ApiError::from(CreateError::Exists(id)).code(),
            "game_exists"
        );
        let invalid = CreateError::Invalid(InvalidState("`home.name` blank".into()));
        let e = ApiError::from(invalid);
        assert_eq!((e.code(), e.status().as_u16()), ("invalid_game", 422));
        assert_eq!(
            ApiError::from(CreateError::Unavailable(StoreError::Unavailable(
                "x".into()
            )))
            .code(),
            "not_ready"
        );
        assert_eq!(
            ApiError::from(CreateError::Interrupted("panicked".into())).code(),
            "not_ready"
        );
        // A log that contradicts itself is not "retry shortly": it needs an
        // operator, and the detail stays in the server's log.
        let broken = StoreError::Inconsistent {
            game: GameId::parse("nba:g1").unwrap(),
            reason: "event seq 5 follows seq 3".into(),
        };
        let e = ApiError::from(broken);
        assert_eq!((e.code(), e.status().as_u16()), ("internal", 500));

        assert_eq!(ApiError::from(AuthError::Expired).code(), "unauthorized");
        assert_eq!(ApiError::from(AuthError::Missing).status().as_u16(), 401);
        let forbidden = AuthError::Forbidden {
            game: "nba:g1".into(),
        };
        assert_eq!(ApiError::from(forbidden).status().as_u16(), 403);

        let e = ApiError::from(GameId::parse("nope").unwrap_err());
        assert_eq!(e.code(), "bad_request");
        assert!(e.message().contains("league:game"), "{e}");
    }
}
