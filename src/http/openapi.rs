//! The OpenAPI 3.1 document of the HTTP API, generated from the code so it
//! cannot drift from it.
//!
//! Where each part comes from:
//!
//! - **Operations**: the `#[utoipa::path]` on each handler (route, parameters,
//!   bodies in both encodings, every status it answers), listed in [`ApiDoc`].
//! - **Bodies and state**: `ToSchema` derived on the real types (`GameState`,
//!   `NewGame`, `Ack`, the pages, the error envelope); ids, `extra` and its
//!   scalars describe themselves next to their types in `domain`.
//! - **Events**: the wire type [`RawEvent`] is one flat struct whose fields
//!   are all optional, and [`Event::try_from`](crate::domain::Event) decides
//!   which belong to which kind. The document shows one object per kind, from
//!   the table [`KINDS`]; tests hold the table to `Event::try_from`.
//! - **Errors**: one reusable response per error family, built from
//!   `ApiError` values themselves, so each response's codes are the ones the
//!   hub really sends; a test checks every use sits under its error's status.
//!
//! The document is rendered once and served as bytes at `GET /v1/openapi.json`;
//! `web/openapi.json` is a snapshot of it, kept equal by a test, so API
//! changes show in review. The browser pages (`/`, `/console`, `/scorehub.js`,
//! their assets) are not API and are left out.

use std::sync::LazyLock;

use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::json;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, Discriminator, KnownFormat, ObjectBuilder, OneOfBuilder,
    Schema, SchemaFormat, Type,
};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, Ref, RefOr, Required, Response, ResponseBuilder,
};
use utoipa::{IntoParams, Modify, OpenApi, PartialSchema, ToResponse, ToSchema};

use super::extract::GamePath;
use super::games::{self, Batch, HistoryEntry, MAX_BATCH};
use super::ops;
use crate::domain::event::MAX_EVENT_ID_LEN;
use crate::domain::state::MAX_SCORE;
use crate::domain::{GameId, League, RawEvent, Scalar, Status};
use crate::error::ApiError;
use crate::limits::TOO_MANY_CONNECTIONS;

/// The scorehub API, as utoipa assembles it.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "scorehub",
        description = "Scorekeepers post idempotent score events over an authenticated HTTP API; fans follow games over a WebSocket (or Server-Sent Events, where WebSocket is blocked).\n\nRequest bodies are JSON (`application/json`) or MessagePack (`application/msgpack`), at most `http.max_body_bytes` (default 64 KiB); responses are JSON. Every error is `{\"error\":{\"code\",\"message\"}}` with the fitting status. Every response carries `x-request-id`.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    paths(
        games::list_games,
        games::get_game,
        games::put_game,
        games::list_events,
        games::post_event,
        games::post_batch,
        super::fans,
        super::sse_fans,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::openapi,
    ),
    components(schemas(Scalar, League, HistoryEntry, crate::error::ErrorEnvelope)),
    modifiers(&Components),
    tags(
        (name = "scorekeeper", description = "Writes; they need `Authorization: Bearer <token>` (mint one with `scorehub token`)."),
        (name = "read", description = "The read side."),
        (name = "fans", description = "Live updates over a WebSocket, or over Server-Sent Events where WebSocket is blocked."),
        (name = "operations", description = "Health, readiness, metrics and this document."),
    ),
)]
pub struct ApiDoc;

/// The document as pretty JSON, rendered on first use and shared after.
pub fn document() -> Bytes {
    static DOCUMENT: LazyLock<Bytes> = LazyLock::new(|| Bytes::from(render()));
    DOCUMENT.clone()
}

/// Renders the document as pretty JSON with a final newline (the form of the
/// `web/openapi.json` snapshot).
pub fn render() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the document is plain data with string keys, so it serialises");
    text.push('\n');
    text
}

/// Adds what the derive cannot: the bearer scheme and the error responses.
struct Components;

impl Modify for Components {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        allow_empty_queries(openapi, &["/v1/games", "/v1/games/{id}/events"]);
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An HS256 JWT with `sub`, `exp`, `scope` (`scorekeeper` or `admin`) and `games` (game ids or `league:*` patterns it may write). Mint one with `scorehub token --sub NAME --games 'nba:*' --ttl 8h`.",
                    ))
                    .build(),
            ),
        );
        for family in all_error_families() {
            components
                .responses
                .insert(family.name.to_owned(), family.response().into());
        }
    }
}

/// The read routes take `?league=` like `?league` absent (what an HTML form
/// sends for an empty field): each query parameter's schema becomes "this, or
/// the empty string", so the document says exactly what the server takes.
fn allow_empty_queries(openapi: &mut utoipa::openapi::OpenApi, paths: &[&str]) {
    for path in paths {
        let Some(item) = openapi.paths.paths.get_mut(*path) else {
            continue;
        };
        let Some(get) = item.get.as_mut() else {
            continue;
        };
        for param in get.parameters.iter_mut().flatten() {
            let RefOr::T(param) = param else {
                continue;
            };
            if param.parameter_in != ParameterIn::Query {
                continue;
            }
            if let Some(schema) = param.schema.take() {
                let empty = ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(0));
                param.schema = Some(OneOfBuilder::new().item(schema).item(empty).into());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Path parameters.

impl IntoParams for GamePath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("id")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("The game id, `league:game`; a malformed id is 400."))
                .schema(Some(Ref::from_schema_name(GameId::name())))
                .build(),
        ]
    }
}

/// The optional `If-None-Match` request header of `GET /v1/games/{id}`
/// (written by hand: an `Option` header would come out as nullable).
#[derive(Debug, Clone, Copy)]
pub struct IfNoneMatch;

impl IntoParams for IfNoneMatch {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("If-None-Match")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "ETags seen before (`\"<seq>\"`, weak or strong, or `*`); when one matches, the answer is 304.",
                ))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build(),
        ]
    }
}

// ---------------------------------------------------------------------------
// Events, by kind.

/// Builds a field's schema.
pub type FieldSchema = fn() -> RefOr<Schema>;

/// One event kind as the document shows it.
pub struct Kind {
    /// The `kind` value.
    pub kind: &'static str,
    /// Its schema's name (for the single-event body).
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// Its own fields: name, schema, required.
    pub fields: &'static [(&'static str, FieldSchema, bool)],
}

/// Every event kind with its own fields. Every kind also takes `event_id`,
/// `kind`, optional `expected_seq` and `game`.
pub const KINDS: [Kind; 4] = [
    Kind {
        kind: "score",
        name: "ScoreEvent",
        description: "Adds `points` (non-zero, negative to correct) to `team`.",
        fields: &[("team", team_schema, true), ("points", points_schema, true)],
    },
    Kind {
        kind: "clock",
        name: "ClockEvent",
        description: "Sets the clock, and the period when given.",
        fields: &[
            ("period", period_schema, false),
            ("ms", ms_schema, true),
            ("running", running_schema, true),
        ],
    },
    Kind {
        kind: "status",
        name: "StatusEvent",
        description: "Sets the status.",
        fields: &[("status", status_schema, true)],
    },
    Kind {
        kind: "set",
        name: "SetEvent",
        description: "Anything else: a JSON Merge Patch (RFC 7386) of the state. It may not touch `game`, `seq` or `clock.at`.",
        fields: &[("patch", patch_schema, true)],
    },
];

fn team_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["home", "away"]))
        .into()
}

/// Non-zero, within ±[`MAX_SCORE`].
fn points_schema() -> RefOr<Schema> {
    let range = |min: i64, max: i64| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(min))
            .maximum(Some(max))
    };
    OneOfBuilder::new()
        .item(range(-MAX_SCORE, -1))
        .item(range(1, MAX_SCORE))
        .description(Some("Points to add: non-zero, within ±1000000."))
        .into()
}

/// What the server takes: any `u32` (no `format`, whose `int32` would stop at 2^31-1).
fn i64_range(min: i64, max: i64) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(min))
        .maximum(Some(max))
        .into()
}

fn period_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0))
        .maximum(Some(u32::MAX))
        .into()
}

/// What the server takes: 0 to 2^63-1 (the `int64` range, so 64-bit clients agree).
fn ms_schema() -> RefOr<Schema> {
    i64_range(0, i64::MAX)
}

fn running_schema() -> RefOr<Schema> {
    bool::schema()
}

fn status_schema() -> RefOr<Schema> {
    Ref::from_schema_name(Status::name()).into()
}

fn patch_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some("A JSON Merge Patch of the game state."))
        .into()
}

fn event_id_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_EVENT_ID_LEN))
        .pattern(Some("^[\\x20-\\x7e]{1,64}$"))
        .description(Some(
            "Chosen by the scorekeeper, unique within the game: 1-64 printable ASCII characters. The same event_id with the same body again is a no-op answered with the original seq (`duplicate: true`); with another body it is `409 event_id_conflict`.",
        ))
        .into()
}

fn expected_seq_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(0))
        .maximum(Some(i64::MAX))
        .description(Some(
            "Optimistic concurrency: apply only if the game's current seq equals this, else `412 seq_mismatch` and nothing is applied.",
        ))
        .into()
}

fn game_schema(batch: bool) -> RefOr<Schema> {
    let description = if batch {
        "The game this item applies to."
    } else {
        "Optional: when present it must equal the path's game id (else 422)."
    };
    AllOfBuilder::new()
        .item(Ref::from_schema_name(GameId::name()))
        .description(Some(description))
        .into()
}

/// One kind's object: its fields and the common ones, nothing else.
fn kind_schema(kind: &Kind, batch: bool) -> Schema {
    let mut object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(kind.description))
        .property("game", game_schema(batch))
        .property("event_id", event_id_schema())
        .required("event_id")
        .property(
            "kind",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([kind.kind])),
        )
        .required("kind")
        .property("expected_seq", expected_seq_schema())
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    if batch {
        object = object.required("game");
    }
    for (name, schema, required) in kind.fields {
        object = object.property(*name, schema());
        if *required {
            object = object.required(*name);
        }
    }
    object.into()
}

/// The single-event body: one of the kinds, told apart by `kind`.
impl PartialSchema for RawEvent {
    fn schema() -> RefOr<Schema> {
        let mut one_of = OneOfBuilder::new()
            .description(Some(
                "One event. Fields that do not belong to its kind are refused (400); a well-formed event that cannot apply (unknown team, score out of range) is 422.",
            ))
            .examples([json!({
                "event_id": "q3-0412-lal-3pt", "kind": "score", "team": "home", "points": 3
            })]);
        let mut discriminator = Discriminator::new("kind");
        for kind in &KINDS {
            one_of = one_of.item(Ref::from_schema_name(kind.name));
            discriminator.mapping.insert(
                kind.kind.to_owned(),
                format!("#/components/schemas/{}", kind.name),
            );
        }
        one_of.discriminator(Some(discriminator)).into()
    }
}

impl ToSchema for RawEvent {
    fn name() -> std::borrow::Cow<'static, str> {
        "Event".into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        for kind in &KINDS {
            schemas.push((kind.name.to_owned(), kind_schema(kind, false).into()));
        }
        schemas.push((GameId::name().into_owned(), GameId::schema()));
        schemas.push((Status::name().into_owned(), Status::schema()));
    }
}

/// `POST /v1/events`'s body: 1 to [`MAX_BATCH`] events, each naming its game.
impl PartialSchema for Batch {
    fn schema() -> RefOr<Schema> {
        let mut item = OneOfBuilder::new().description(Some("An event that names its game."));
        for kind in &KINDS {
            item = item.item(kind_schema(kind, true));
        }
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "events",
                utoipa::openapi::schema::ArrayBuilder::new()
                    .items(item)
                    .min_items(Some(1))
                    .max_items(Some(MAX_BATCH)),
            )
            .required("events")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .into()
    }
}

impl ToSchema for Batch {
    fn name() -> std::borrow::Cow<'static, str> {
        "BatchRequest".into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((GameId::name().into_owned(), GameId::schema()));
        schemas.push((Status::name().into_owned(), Status::schema()));
    }
}

/// A history entry: every event field that was sent, plus `seq`, `by`, `at`.
impl PartialSchema for HistoryEntry {
    fn schema() -> RefOr<Schema> {
        let mut object = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "An applied event as posted (its kind's fields, and `expected_seq` when it was sent), with the seq it produced, who posted it and when.",
            ))
            .property("seq", ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)))
            .required("seq")
            .property("event_id", event_id_schema())
            .required("event_id")
            .property(
                "kind",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(KINDS.iter().map(|k| k.kind))),
            )
            .required("kind")
            .property("expected_seq", expected_seq_schema());
        for kind in &KINDS {
            for (name, schema, _) in kind.fields {
                object = object.property(*name, schema());
            }
        }
        object
            .property(
                "by",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("The `sub` of the token that posted it.")),
            )
            .required("by")
            .property(
                "at",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .description(Some("Server ingest time, Unix ms.")),
            )
            .required("at")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .into()
    }
}

impl ToSchema for HistoryEntry {
    fn name() -> std::borrow::Cow<'static, str> {
        "HistoryEvent".into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Status::name().into_owned(), Status::schema()));
    }
}

// ---------------------------------------------------------------------------
// Error responses.

/// A header an error response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    /// `Retry-After: <seconds>`.
    RetryAfter,
    /// `WWW-Authenticate: Bearer realm="scorehub"`.
    WwwAuthenticate,
}

/// One reusable error response: a status and the codes its body may carry.
#[derive(Debug, Clone)]
pub struct ErrorFamily {
    /// The component name (`#/components/responses/<name>`).
    pub name: &'static str,
    /// Its status.
    pub status: StatusCode,
    /// The codes its body may carry.
    pub codes: Vec<&'static str>,
    description: &'static str,
    headers: &'static [Header],
}

impl ErrorFamily {
    /// The family of one error: its status and code come from the error itself.
    fn of(
        name: &'static str,
        error: &ApiError,
        description: &'static str,
        headers: &'static [Header],
    ) -> ErrorFamily {
        ErrorFamily {
            name,
            status: error.status(),
            codes: vec![error.code()],
            description,
            headers,
        }
    }

    /// The response: the error envelope with `code` narrowed to the family's.
    fn response(&self) -> Response {
        let narrowed = ObjectBuilder::new().property(
            "error",
            ObjectBuilder::new().property(
                "code",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(self.codes.iter().copied())),
            ),
        );
        let schema = AllOfBuilder::new()
            .item(Ref::from_schema_name(crate::error::ErrorEnvelope::name()))
            .item(narrowed);
        let mut response = ResponseBuilder::new()
            .description(self.description)
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(schema)).build(),
            );
        for header in self.headers {
            let (name, built) = match header {
                Header::RetryAfter => (
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(Some(
                            ObjectBuilder::new()
                                .schema_type(Type::Integer)
                                .minimum(Some(1)),
                        ))
                        .description(Some("Seconds to wait before retrying.")),
                ),
                Header::WwwAuthenticate => (
                    "WWW-Authenticate",
                    HeaderBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                        .description(Some("`Bearer realm=\"scorehub\"`.")),
                ),
            };
            response = response.header(name, built.build());
        }
        response.build()
    }
}

/// Declares the error families, one per `ApiError` the API answers with: a
/// marker type per family, for `(status = N, response = Name)` in the
/// handlers' annotations, and [`error_families`] listing them all.
macro_rules! error_families {
    ($(
        $(#[$doc:meta])*
        $name:ident: $error:expr, $description:literal, [$($header:ident),*];
    )+) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy)]
            pub struct $name;

            impl $name {
                fn family() -> ErrorFamily {
                    ErrorFamily::of(
                        stringify!($name),
                        &$error,
                        $description,
                        &[$(Header::$header),*],
                    )
                }
            }

            impl<'r> ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<Response>) {
                    (stringify!($name), $name::family().response().into())
                }
            }
        )+

        /// Every error family of the document built from one `ApiError`.
        pub fn error_families() -> Vec<ErrorFamily> {
            vec![$($name::family()),+]
        }
    };
}

/// A game id for error samples (only its variant matters).
fn some_game() -> GameId {
    GameId::parse("nba:g").expect("a literal valid game id")
}

error_families! {
    /// 400: a malformed body, path or query.
    BadRequest: ApiError::BadRequest(String::new()),
        "Malformed request: body, path or query. The message names the field (e.g. `home.name: missing field`).", [];
    /// 401: no token, or a bad one.
    Unauthorized: ApiError::Unauthorized(String::new()),
        "No token, or a malformed, badly signed or expired one.", [WwwAuthenticate];
    /// 403: the token may not write this game.
    Forbidden: ApiError::Forbidden(String::new()),
        "The token is valid but its `games` do not cover this game.", [];
    /// 404: no such game.
    GameNotFound: ApiError::GameNotFound(some_game()),
        "No game has this id.", [];
    /// 409 on `PUT`: created before with another body.
    GameExists: ApiError::GameExists(String::new()),
        "The game exists, created with a different body.", [];
    /// 409 on events: the `event_id` named another event.
    EventIdConflict: ApiError::EventIdConflict(String::new()),
        "This `event_id` was used for a different event; nothing was applied.", [];
    /// 412: `expected_seq` is not the game's seq.
    SeqMismatch: ApiError::SeqMismatch(String::new()),
        "`expected_seq` is not the game's current seq; nothing was applied.", [];
    /// 408: the body did not arrive in time.
    RequestTimeout: ApiError::RequestTimeout { after: std::time::Duration::ZERO },
        "The body did not arrive whole within `http.body_timeout` (default 30 s) of the request head; the connection is closed. Send it again: events are idempotent.", [];
    /// 413: the body is over the limit.
    PayloadTooLarge: ApiError::PayloadTooLarge { limit: 0 },
        "The body is larger than `http.max_body_bytes` (default 65536).", [];
    /// 415: neither JSON nor MessagePack.
    UnsupportedMediaType: ApiError::UnsupportedMediaType(String::new()),
        "The body is neither `application/json` nor `application/msgpack` (`application/x-msgpack` is accepted too).", [];
    /// 422 on `PUT`: a well-formed but unacceptable game.
    InvalidGame: ApiError::InvalidGame(String::new()),
        "The body is well-formed but not acceptable (blank name, too many `extra` keys...).", [];
    /// 422 on events: a well-formed event that cannot apply.
    InvalidEvent: ApiError::InvalidEvent(String::new()),
        "The event is well-formed but cannot apply (unknown team, kind or status; score out of range).", [];
    /// 429: over the rate limit.
    RateLimited: ApiError::RateLimited { retry_after: std::time::Duration::ZERO },
        "Too many requests: the token's event rate (or, for `/v1/ws`, the address's connection rate) is spent. Retry after `Retry-After` seconds; events are idempotent.", [RetryAfter];
    /// 500: a bug.
    Internal: ApiError::Internal(String::new()),
        "A bug; the details are in the server log.", [];
    /// 503: the hub cannot take this now.
    NotReady: ApiError::NotReady(String::new()),
        "The hub cannot serve this right now (storage failing, Redis down, shutting down). Retry: events are idempotent.", [RetryAfter];
}

/// 503 on `/v1/ws`: not ready, or every connection slot is taken.
#[derive(Debug, Clone, Copy)]
pub struct FansUnavailable;

impl FansUnavailable {
    fn family() -> ErrorFamily {
        ErrorFamily {
            name: "FansUnavailable",
            status: ApiError::NotReady(String::new()).status(),
            codes: vec![
                ApiError::NotReady(String::new()).code(),
                TOO_MANY_CONNECTIONS,
            ],
            description: "The hub is shutting down, or holds its maximum of `limits.max_connections` fan connections (on `/v1/sse`, or of `limits.max_sse_streams` streams). Retry after `Retry-After` seconds.",
            headers: &[Header::RetryAfter],
        }
    }
}

impl<'r> ToResponse<'r> for FansUnavailable {
    fn response() -> (&'r str, RefOr<Response>) {
        (
            "FansUnavailable",
            FansUnavailable::family().response().into(),
        )
    }
}

/// 400 on `/v1/sse`: a malformed query, or a malformed `Last-Event-ID`.
#[derive(Debug, Clone, Copy)]
pub struct SseBadRequest;

impl SseBadRequest {
    fn family() -> ErrorFamily {
        ErrorFamily {
            name: "SseBadRequest",
            status: ApiError::BadLastEventId(String::new()).status(),
            codes: vec![
                ApiError::BadRequest(String::new()).code(),
                ApiError::BadLastEventId(String::new()).code(),
            ],
            description: "A query naming no game and no league (`bad_request`: a stream cannot subscribe later), or a `Last-Event-ID` (or `last_event_id`) that is not a list of `game:seq` pairs (`bad_last_event_id`; the message says which item is wrong). Nothing was streamed.",
            headers: &[],
        }
    }
}

impl<'r> ToResponse<'r> for SseBadRequest {
    fn response() -> (&'r str, RefOr<Response>) {
        ("SseBadRequest", SseBadRequest::family().response().into())
    }
}

/// Every error family, the fans' 503 and the SSE 400 included.
fn all_error_families() -> Vec<ErrorFamily> {
    let mut all = error_families();
    all.push(FansUnavailable::family());
    all.push(SseBadRequest::family());
    all
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::domain::{Event, EventError};

    fn doc() -> Value {
        serde_json::from_str(&render()).expect("the document is JSON")
    }

    #[test]
    fn snapshot_matches_the_generated_document() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/openapi.json");
        let generated = render();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).expect("writing web/openapi.json");
            return;
        }
        let snapshot = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            snapshot == generated,
            "web/openapi.json differs from the document the code generates; \
             refresh it with `UPDATE_OPENAPI=1 cargo test -p scorehub --lib openapi` and review the diff"
        );
    }

    #[test]
    fn every_error_response_sits_under_its_status() {
        let families = all_error_families();
        let by_name: std::collections::HashMap<_, _> =
            families.iter().map(|f| (f.name, f)).collect();
        let doc = doc();
        let mut used = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                for (status, response) in op["responses"].as_object().expect("responses") {
                    let Some(r) = response.get("$ref").and_then(Value::as_str) else {
                        continue;
                    };
                    let name = r.trim_start_matches("#/components/responses/");
                    let family = by_name
                        .get(name)
                        .unwrap_or_else(|| panic!("{method} {path}: unknown response {r}"));
                    assert_eq!(
                        status,
                        family.status.as_str(),
                        "{method} {path}: {name} is a {} response",
                        family.status
                    );
                    used.insert(name);
                }
                let statuses: Vec<&String> =
                    op["responses"].as_object().expect("r").keys().collect();
                assert!(!statuses.is_empty(), "{method} {path} lists no response");
            }
        }
        for family in &families {
            assert!(
                doc["components"]["responses"].get(family.name).is_some(),
                "{} is not in components",
                family.name
            );
            assert!(used.contains(family.name), "{} is never used", family.name);
        }
    }

    /// The fans' 503 family covers what a full hub really answers.
    #[tokio::test]
    async fn fans_unavailable_matches_the_connection_cap_refusal() {
        use axum::response::IntoResponse;
        let response = crate::limits::Refusal::Full { max: 1 }.into_response();
        let family = FansUnavailable::family();
        assert_eq!(response.status(), family.status);
        assert!(response.headers().contains_key("retry-after"));
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let body: Value = serde_json::from_slice(&bytes).expect("JSON");
        let code = body["error"]["code"].as_str().expect("code");
        assert!(family.codes.contains(&code), "{code}");
    }

    /// A valid value for each event field.
    fn sample(field: &str) -> Value {
        match field {
            "team" => json!("home"),
            "points" => json!(3),
            "period" => json!(2),
            "ms" => json!(431000),
            "running" => json!(true),
            "status" => json!("live"),
            "patch" => json!({"extra": {"possession": "home"}}),
            other => panic!("no sample for {other}"),
        }
    }

    fn parse(body: &Value) -> Result<Event, EventError> {
        let raw: RawEvent = serde_json::from_value(body.clone())
            .map_err(|e| EventError::BadRequest(e.to_string()))?;
        Event::try_from(raw)
    }

    /// The kinds table says what `Event::try_from` accepts: each kind with
    /// its required fields parses; without any one of them, or with a field
    /// of another kind, it does not; optional fields are accepted.
    #[test]
    fn kinds_table_matches_the_event_parser() {
        let every_field: BTreeSet<&str> = KINDS
            .iter()
            .flat_map(|k| k.fields.iter().map(|(name, _, _)| *name))
            .collect();
        for kind in &KINDS {
            let mut body = json!({"event_id": "e1", "kind": kind.kind});
            for (name, _, required) in kind.fields {
                if *required {
                    body[*name] = sample(name);
                }
            }
            parse(&body).unwrap_or_else(|e| panic!("{}: {body} refused: {e}", kind.kind));
            let mut full = body.clone();
            full["expected_seq"] = json!(4);
            full["game"] = json!("nba:g");
            for (name, _, _) in kind.fields {
                full[*name] = sample(name);
            }
            parse(&full).unwrap_or_else(|e| panic!("{}: {full} refused: {e}", kind.kind));
            for (name, _, required) in kind.fields {
                if *required {
                    let mut missing = body.clone();
                    missing.as_object_mut().expect("object").remove(*name);
                    assert!(
                        parse(&missing).is_err(),
                        "{}: accepted without {name}",
                        kind.kind
                    );
                }
            }
            let own: BTreeSet<&str> = kind.fields.iter().map(|(n, _, _)| *n).collect();
            for other in every_field.difference(&own) {
                let mut extra = body.clone();
                extra[*other] = sample(other);
                assert!(parse(&extra).is_err(), "{}: accepted {other}", kind.kind);
            }
        }
        // And the table names every field of the wire type.
        let all = RawEvent {
            game: Some("nba:g".into()),
            event_id: "e".into(),
            kind: "k".into(),
            expected_seq: Some(1),
            team: Some("home".into()),
            points: Some(1),
            period: Some(1),
            ms: Some(1),
            running: Some(true),
            status: Some("live".into()),
            patch: Some(json!({})),
        };
        let wire: BTreeSet<String> = serde_json::to_value(all)
            .expect("serialises")
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect();
        let mut documented: BTreeSet<String> =
            every_field.iter().map(|s| (*s).to_owned()).collect();
        documented.extend(["game", "event_id", "kind", "expected_seq"].map(String::from));
        assert_eq!(wire, documented);
        // The unknown kinds are refused.
        assert!(parse(&json!({"event_id": "e", "kind": "foul"})).is_err());
    }

    #[test]
    fn limits_in_the_document_match_the_code() {
        let doc = doc();
        let batch = &doc["components"]["schemas"]["BatchRequest"]["properties"]["events"];
        assert_eq!(batch["maxItems"], MAX_BATCH);
        let params = doc["paths"]["/v1/games"]["get"]["parameters"]
            .as_array()
            .expect("parameters");
        let limit = params
            .iter()
            .find(|p| p["name"] == "limit")
            .expect("limit parameter");
        assert_eq!(
            limit["schema"]["oneOf"][0]["maximum"],
            games::MAX_GAMES_LIMIT
        );
        let params = doc["paths"]["/v1/games/{id}/events"]["get"]["parameters"]
            .as_array()
            .expect("parameters");
        let limit = params
            .iter()
            .find(|p| p["name"] == "limit")
            .expect("limit parameter");
        assert_eq!(
            limit["schema"]["oneOf"][0]["maximum"],
            games::MAX_EVENTS_LIMIT
        );
        assert_eq!(
            doc["components"]["schemas"]["GameId"]["pattern"],
            crate::domain::id::GAME_ID_PATTERN
        );
        let team = &doc["components"]["schemas"]["Team"]["properties"];
        assert_eq!(team["score"]["maximum"], MAX_SCORE);
        assert_eq!(
            team["name"]["maxLength"],
            crate::domain::state::MAX_TEXT_LEN
        );
        let new_team = &doc["components"]["schemas"]["NewTeam"]["properties"];
        assert_eq!(
            new_team["name"]["maxLength"],
            crate::domain::state::MAX_TEXT_LEN
        );
    }
}
