//! Game routes: the scorekeeper API (create a game, post one event or a batch)
//! and the read side (one game, a page of games, a game's event history).
//!
//! Handlers only translate HTTP to calls on the [`Registry`](crate::registry::Registry)
//! and the [`Game`](crate::registry::Game): validation lives in
//! `domain`, sequencing and idempotency in the game actor.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::extract::{Body, GamePath, Scorekeeper, Writer, check_write, field_error};
use super::openapi as doc;
use crate::app::AppState;
use crate::auth::Claims;
use crate::domain::{Event, GameId, GameState, League, NewGame, RawEvent, Status};
use crate::error::{ApiError, ErrorBody};
use crate::extract::Query;
use crate::game::{Applied, Pending};
use crate::metrics as m;
use crate::store::Record;

/// Most events in one `POST /v1/events`.
pub const MAX_BATCH: usize = 500;
/// Default page size of `GET /v1/games`.
pub const DEFAULT_GAMES_LIMIT: usize = 50;
/// Largest page size of `GET /v1/games`.
pub const MAX_GAMES_LIMIT: usize = 500;
/// Default page size of `GET /v1/games/{id}/events`.
pub const DEFAULT_EVENTS_LIMIT: usize = 100;
/// Largest page size of `GET /v1/games/{id}/events`.
pub const MAX_EVENTS_LIMIT: usize = 1000;
/// JSON bytes of events past which a page of `GET /v1/games/{id}/events`
/// stops early (it always holds at least one event), so that a page of
/// large events never costs more than a few MiB.
pub(super) const MAX_EVENTS_PAGE_BYTES: usize = 4 << 20;
/// Records read from storage at a time while a page fills.
const EVENTS_CHUNK: usize = 100;

/// The game routes, to be merged into the main router.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/games", get(list_games))
        .route("/v1/games/{id}", get(get_game).put(put_game))
        .route("/v1/games/{id}/events", get(list_events).post(post_event))
        .route("/v1/events", post(post_batch))
}

/// `{"game","seq","duplicate"}`: the answer for one applied event.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Ack {
    /// The game.
    game: GameId,
    /// The seq the event produced; for a duplicate, the original seq.
    #[schema(minimum = 1)]
    seq: u64,
    /// True when this `event_id` was applied before with the same body: nothing changed.
    duplicate: bool,
}

impl Ack {
    fn new(game: GameId, applied: Applied) -> Ack {
        Ack {
            game,
            seq: applied.seq,
            duplicate: applied.duplicate,
        }
    }
}

/// `ETag: "<seq>"`.
fn etag(seq: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{seq}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// A game's state with its `ETag` and `Cache-Control: no-cache`.
fn state_response(status: StatusCode, state: &GameState) -> Response {
    (
        status,
        [
            (header::ETAG, etag(state.seq)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Json(state),
    )
        .into_response()
}

/// `GET /v1/games/{id}`'s body: the state's fields, and `watching`.
#[derive(Debug, Serialize)]
pub(super) struct WatchedGame<'a> {
    /// The state, its fields at the top level.
    #[serde(flatten)]
    state: &'a GameState,
    /// Fans watching the game over every node, as this node last learned
    /// (at most `occupancy.interval` old).
    watching: u64,
}

/// The schema of [`GameState`] with one more required property, `watching`
/// (the state's schema forbids other properties, so an `allOf` would
/// refuse every answer).
impl utoipa::PartialSchema for WatchedGame<'_> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
        let mut schema = <GameState as utoipa::PartialSchema>::schema();
        if let RefOr::T(Schema::Object(object)) = &mut schema {
            object.description =
                Some("A game's state, and how many fans watch it over every node.".to_owned());
            object.properties.insert(
                "watching".to_owned(),
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Int64,
                    )))
                    .minimum(Some(0))
                    .description(Some(
                        "Fans watching the game over every node (WebSocket subscriptions), as this node last learned: at most `occupancy.interval` old.",
                    ))
                    .into(),
            );
            object.required.push("watching".to_owned());
            for example in &mut object.examples {
                if let Some(fields) = example.as_object_mut() {
                    fields.insert("watching".to_owned(), serde_json::json!(1234));
                }
            }
        }
        schema
    }
}

impl ToSchema for WatchedGame<'_> {
    fn name() -> std::borrow::Cow<'static, str> {
        "WatchedGame".into()
    }

    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <GameState as ToSchema>::schemas(schemas);
    }
}

/// Counts an event refused before it reached the game actor (the actor counts
/// its own outcomes).
fn count_rejected() {
    metrics::counter!(m::EVENTS_TOTAL, "outcome" => "rejected").increment(1);
}

/// `PUT /v1/games/{id}`: creates a game, idempotently.
#[utoipa::path(
    put,
    path = "/v1/games/{id}",
    operation_id = "createGame",
    tag = "scorekeeper",
    summary = "Create a game (idempotent)",
    description = "Creates the game with its initial state. The same body again is 200 with the current state; another body for an existing id is 409. The token must cover the game; creating a game costs one unit of the token's event rate.",
    params(GamePath),
    request_body(
        description = "The initial state. Scores start at 0, the clock at 0 and stopped.",
        content((NewGame = "application/json"), (NewGame = "application/msgpack")),
    ),
    security(("bearerAuth" = [])),
    responses(
        (status = 201, description = "Created; its state.", body = GameState,
            headers(
                ("ETag" = String, description = "The game's seq as a strong entity tag: `\"<seq>\"`."),
                ("Cache-Control" = String, description = "`no-cache`."),
            ),
            links(
                ("PostEvent" = (operation_id = "postEvent", parameters(("id" = "$request.path.id")), description = "Post an event to the new game.")),
                ("GetGame" = (operation_id = "getGame", parameters(("id" = "$request.path.id")), description = "Read the game.")),
                ("ListEvents" = (operation_id = "listEvents", parameters(("id" = "$request.path.id")), description = "Read its history.")),
            )),
        (status = 200, description = "It already exists, created with the same body; its current state.", body = GameState,
            headers(
                ("ETag" = String, description = "The game's seq as a strong entity tag: `\"<seq>\"`."),
                ("Cache-Control" = String, description = "`no-cache`."),
            ),
            links(
                ("PostEvent" = (operation_id = "postEvent", parameters(("id" = "$request.path.id")), description = "Post an event to the game.")),
                ("GetGame" = (operation_id = "getGame", parameters(("id" = "$request.path.id")), description = "Read the game.")),
            )),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::Forbidden),
        (status = 409, response = doc::GameExists),
        (status = 408, response = doc::RequestTimeout),
        (status = 413, response = doc::PayloadTooLarge),
        (status = 415, response = doc::UnsupportedMediaType),
        (status = 422, response = doc::InvalidGame),
        (status = 429, response = doc::RateLimited),
        (status = 500, response = doc::Internal),
        (status = 503, response = doc::NotReady),
    ),
)]
pub(super) async fn put_game(
    State(state): State<AppState>,
    writer: Writer,
    Body(body): Body<NewGame>,
) -> Result<Response, ApiError> {
    let (handle, created) = state
        .registry
        .create(writer.game, body, &writer.claims.sub)
        .await?;
    let status = match created {
        crate::registry::Created::New => StatusCode::CREATED,
        crate::registry::Created::Existing => StatusCode::OK,
    };
    Ok(state_response(status, &handle.state()))
}

/// `POST /v1/games/{id}/events`: applies one event.
#[utoipa::path(
    post,
    path = "/v1/games/{id}/events",
    operation_id = "postEvent",
    tag = "scorekeeper",
    summary = "Apply one event",
    description = "Applies one event to the game, idempotently by `event_id`. Order of checks: token (401), game id (400), permission (403), the token's event rate (429), body (415, 413, 400), game exists (404), event (400, 422), then `expected_seq` (412) and `event_id` reuse (409). An event answered 200 is durable.",
    params(GamePath),
    request_body(
        description = "One event.",
        content((RawEvent = "application/json"), (RawEvent = "application/msgpack")),
    ),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Applied, or a duplicate of an event applied before (then nothing changed).", body = Ack,
            links(
                ("GetGame" = (operation_id = "getGame", parameters(("id" = "$request.path.id")), description = "Read the game's new state.")),
                ("ListEvents" = (operation_id = "listEvents", parameters(("id" = "$request.path.id")), description = "Read its history.")),
                ("PostEvent" = (operation_id = "postEvent", parameters(("id" = "$request.path.id")), description = "Post the next event.")),
            )),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::Forbidden),
        (status = 404, response = doc::GameNotFound),
        (status = 409, response = doc::EventIdConflict),
        (status = 412, response = doc::SeqMismatch),
        (status = 408, response = doc::RequestTimeout),
        (status = 413, response = doc::PayloadTooLarge),
        (status = 415, response = doc::UnsupportedMediaType),
        (status = 422, response = doc::InvalidEvent),
        (status = 429, response = doc::RateLimited),
        (status = 500, response = doc::Internal),
        (status = 503, response = doc::NotReady),
    ),
)]
pub(super) async fn post_event(
    State(state): State<AppState>,
    writer: Writer,
    Body(raw): Body<RawEvent>,
) -> Result<Json<Ack>, ApiError> {
    let received = Instant::now();
    let Writer { claims, game } = writer;
    if let Some(named) = raw.game.as_deref()
        && named != game.as_str()
    {
        count_rejected();
        let shown: String = named.chars().take(100).collect();
        return Err(ApiError::InvalidEvent(format!(
            "game: the body names game {shown:?} but the path names {game}; drop `game` from the body or post to that game's URL"
        )));
    }
    let Some(handle) = state.registry.find(&game).await? else {
        count_rejected();
        return Err(ApiError::GameNotFound(game));
    };
    let event = Event::try_from(raw).inspect_err(|_| count_rejected())?;
    let applied = handle
        .apply(event, Arc::from(claims.sub.as_str()), received)
        .await?;
    Ok(Json(Ack::new(game, applied)))
}

/// The body of `POST /v1/events`. Items stay generic values so that one
/// malformed item is an item error, not a failed request. (Its schema in the
/// API document is written in [`doc`], by kind.)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Batch {
    events: Vec<Value>,
}

/// One entry of the batch answer, in the order of the request's items.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(super) enum ItemResult {
    /// Applied (or a duplicate).
    Done(Ack),
    /// Refused; nothing changed.
    Failed {
        /// The item's `game`, when it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        game: Option<String>,
        /// Why.
        error: ErrorBody,
    },
}

/// The answer to `POST /v1/events`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchResults {
    /// One entry per request item, in the same order.
    results: Vec<ItemResult>,
}

/// `POST /v1/events`: applies a batch in order. Items of one game keep their
/// order through the game's mailbox; items of different games are independent.
#[utoipa::path(
    post,
    path = "/v1/events",
    operation_id = "postEvents",
    tag = "scorekeeper",
    summary = "Apply a batch of events, in order",
    description = "Applies 1 to 500 events in order (also across games). Each item is checked and applied on its own, exactly like `POST /v1/games/{id}/events`, and is idempotent by itself: a scorekeeper catching up after being offline can resend the whole batch. Every item is parsed first: an item its schema refuses (a missing or unknown field, a wrong type, an unknown kind or team) refuses the whole batch with 400 or 422, the message naming `events[i]`, and nothing is applied. A refusal that depends on the game (403 token may not write it, 404 unknown game, 409, 412, 422 from the game's state) does not fail the request: that item's entry in `results` carries the error and the other items are applied. The batch costs one unit of the token's event rate per item, admitted or refused (429) as a whole.",
    request_body(
        description = "The events, each naming its game.",
        content((Batch = "application/json"), (Batch = "application/msgpack")),
    ),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "One result per item, in order.", body = BatchResults),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 408, response = doc::RequestTimeout),
        (status = 413, response = doc::PayloadTooLarge),
        (status = 415, response = doc::UnsupportedMediaType),
        (status = 422, response = doc::InvalidEvent),
        (status = 429, response = doc::RateLimited),
        (status = 500, response = doc::Internal),
        (status = 503, response = doc::NotReady),
    ),
)]
pub(super) async fn post_batch(
    State(state): State<AppState>,
    Scorekeeper(claims): Scorekeeper,
    Body(batch): Body<Batch>,
) -> Result<Json<BatchResults>, ApiError> {
    let n = batch.events.len();
    if n == 0 {
        return Err(ApiError::BadRequest(
            "events: the batch is empty; send 1 to 500 events".into(),
        ));
    }
    if n > MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "events: the batch holds {n} events, at most {MAX_BATCH} are allowed; split it into several requests"
        )));
    }
    // A batch costs one unit of the token's event rate per item, all or nothing.
    state.limits.charge_events(&claims, n)?;
    let by: Arc<str> = Arc::from(claims.sub.as_str());
    // Every item is parsed before any is submitted: a batch with a malformed
    // item is refused whole (400 or 422, naming the item), and nothing of it
    // is applied, so the fixed batch can simply be sent again.
    let mut parsed = Vec::with_capacity(n);
    for (index, item) in batch.events.into_iter().enumerate() {
        parsed.push(parse_item(index, item).inspect_err(|_| count_rejected())?);
    }
    // Submit every item in order without waiting (each game's mailbox keeps
    // the order, and its actor commits what is queued as one group), then
    // collect the outcomes in order.
    let mut submitted = Vec::with_capacity(n);
    for (game, event) in parsed {
        let named = Some(game.as_str().to_owned());
        submitted.push((named, submit_item(&state, &claims, &by, game, event).await));
    }
    let mut results = Vec::with_capacity(n);
    for (named, submitted) in submitted {
        let outcome = match submitted {
            Ok((game, pending)) => pending
                .wait()
                .await
                .map(|applied| Ack::new(game, applied))
                .map_err(ApiError::from),
            Err(e) => Err(e),
        };
        results.push(match outcome {
            Ok(ack) => ItemResult::Done(ack),
            Err(e) => {
                e.log();
                ItemResult::Failed {
                    game: named,
                    error: e.body(),
                }
            }
        });
    }
    Ok(Json(BatchResults { results }))
}

/// Parses one batch item: an event object that names its game. Any error
/// here is the item's shape (what the item schema refuses), so it refuses the
/// whole batch; the message starts with `events[index]`.
fn parse_item(index: usize, item: Value) -> Result<(GameId, Event), ApiError> {
    let prefix = format!("events[{index}]");
    if !item.is_object() {
        return Err(ApiError::BadRequest(format!(
            "{prefix}: each item must be an event object with `game`, `event_id` and `kind`"
        )));
    }
    let raw: RawEvent =
        serde_path_to_error::deserialize(item).map_err(|e| field_error(&prefix, e))?;
    let Some(named) = raw.game.as_deref() else {
        return Err(ApiError::BadRequest(format!(
            "{prefix}.game: missing; every batch item names its game"
        )));
    };
    let game =
        GameId::parse(named).map_err(|e| ApiError::BadRequest(format!("{prefix}.game: {e}")))?;
    let event = Event::try_from(raw).map_err(|e| match ApiError::from(e) {
        ApiError::BadRequest(m) => ApiError::BadRequest(format!("{prefix}: {m}")),
        ApiError::InvalidEvent(m) => ApiError::InvalidEvent(format!("{prefix}: {m}")),
        other => other,
    })?;
    Ok((game, event))
}

/// Checks a parsed batch item as `POST /v1/games/{id}/events` would (the
/// token, the game), and queues it in its game's mailbox. Errors here depend
/// on the game, not the item's shape: they are the item's result.
async fn submit_item(
    state: &AppState,
    claims: &Claims,
    by: &Arc<str>,
    game: GameId,
    event: Event,
) -> Result<(GameId, Pending), ApiError> {
    let received = Instant::now();
    check_write(claims, &game).inspect_err(|_| count_rejected())?;
    let Some(handle) = state.registry.find(&game).await? else {
        count_rejected();
        return Err(ApiError::GameNotFound(game));
    };
    let pending = handle.submit(event, by.clone(), received).await?;
    Ok((game, pending))
}

/// Whether an `If-None-Match` header matches `seq`'s ETag (strong or weak).
fn not_modified(headers: &HeaderMap, seq: u64) -> bool {
    let current = format!("\"{seq}\"");
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == current)
}

/// `GET /v1/games/{id}`: one game's state, with `ETag: "<seq>"`.
#[utoipa::path(
    get,
    path = "/v1/games/{id}",
    operation_id = "getGame",
    tag = "read",
    summary = "A game's current state",
    description = "No token needed. The state, and `watching`: how many fans watch the game over every node (refreshed every `occupancy.interval`). Sends `ETag: \"<seq>\"` (the state's seq only: `watching` does not change it); with a matching `If-None-Match` the answer is 304.",
    params(
        GamePath,
        doc::IfNoneMatch,
    ),
    responses(
        (status = 200, description = "The state and how many fans watch.", body = WatchedGame,
            headers(
                ("ETag" = String, description = "The game's seq as a strong entity tag: `\"<seq>\"`."),
                ("Cache-Control" = String, description = "`no-cache`."),
            )),
        (status = 304, description = "Unchanged since the given ETag.",
            headers(
                ("ETag" = String, description = "The game's seq as a strong entity tag: `\"<seq>\"`."),
                ("Cache-Control" = String, description = "`no-cache`."),
            )),
        (status = 400, response = doc::BadRequest),
        (status = 404, response = doc::GameNotFound),
        (status = 500, response = doc::Internal),
        (status = 503, response = doc::NotReady),
    ),
)]
pub(super) async fn get_game(
    State(state): State<AppState>,
    GamePath(game): GamePath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let handle = state
        .registry
        .find(&game)
        .await?
        .ok_or(ApiError::GameNotFound(game))?;
    let current = handle.state();
    if not_modified(&headers, current.seq) {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag(current.seq)),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
        )
            .into_response());
    }
    let body = WatchedGame {
        state: &current,
        watching: handle.watching(),
    };
    Ok((
        StatusCode::OK,
        [
            (header::ETAG, etag(current.seq)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Json(body),
    )
        .into_response())
}

/// Query of `GET /v1/games`. Values are parsed by hand for clear messages;
/// empty values count as absent.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only this league's games.
    #[param(value_type = Option<League>)]
    league: Option<String>,
    /// Only games with this status.
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    /// Games per page: 1 to 500, default 50.
    #[param(value_type = Option<usize>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page; absent for the first page.
    #[param(value_type = Option<GameId>)]
    cursor: Option<String>,
}

/// One page of `GET /v1/games`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct GamesPage<'a> {
    /// Ordered by game id.
    #[schema(value_type = Vec<GameState>)]
    games: Vec<&'a GameState>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// A present, non-empty query value.
fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// Parses a numeric query parameter within `min..=max`, or its default.
fn number_param<T>(
    name: &str,
    value: &Option<String>,
    default: T,
    min: T,
    max: T,
) -> Result<T, ApiError>
where
    T: FromStr + PartialOrd + Copy + std::fmt::Display,
{
    let Some(s) = given(value) else {
        return Ok(default);
    };
    match s.parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => {
            let shown: String = s.chars().take(32).collect();
            Err(ApiError::BadRequest(format!(
                "{name}: {shown:?} is not allowed; use a whole number from {min} to {max} (default {default})"
            )))
        }
    }
}

/// `GET /v1/games`: a page of games, ordered by id, optionally filtered.
#[utoipa::path(
    get,
    path = "/v1/games",
    operation_id = "listGames",
    tag = "read",
    summary = "List games, paginated",
    description = "Games ordered by id, optionally filtered by league and status. No token needed. An empty parameter counts as absent.",
    params(ListQuery),
    responses(
        (status = 200, description = "One page.", body = GamesPage),
        (status = 400, response = doc::BadRequest),
        (status = 500, response = doc::Internal),
        (status = 503, response = doc::NotReady),
    ),
)]
pub(super) async fn list_games(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let league = given(&q.league)
        .map(|l| League::parse(l).map_err(|e| ApiError::BadRequest(format!("league: {e}"))))
        .transpose()?;
    let status = given(&q.status)
        .map(|s| {
            Status::parse(s).ok_or_else(|| {
                let shown: String = s.chars().take(32).collect();
                ApiError::BadRequest(format!(
                    "status: {shown:?} is not a status; use one of scheduled, live, paused, final, postponed, cancelled"
                ))
            })
        })
        .transpose()?;
    let limit = number_param("limit", &q.limit, DEFAULT_GAMES_LIMIT, 1, MAX_GAMES_LIMIT)?;
    let cursor = given(&q.cursor)
        .map(|c| {
            GameId::parse(c).map_err(|_| {
                ApiError::BadRequest(
                    "cursor: not a cursor this hub gave out; pass the `next_cursor` of the previous page, or leave it out to start from the first"
                        .into(),
                )
            })
        })
        .transpose()?;
    let page = state
        .registry
        .list(league.as_ref(), status, limit, cursor.as_ref())
        .await?;
    let games = page.games.iter().map(|g| &**g).collect();
    Ok(Json(GamesPage {
        games,
        next_cursor: page.next_cursor,
    })
    .into_response())
}

/// Query of `GET /v1/games/{id}/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct EventsQuery {
    /// Only events with a seq greater than this (default 0: from the first).
    #[param(value_type = Option<u64>, minimum = 0)]
    since: Option<String>,
    /// Events per page: 1 to 1000, default 100.
    #[param(value_type = Option<usize>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// One page of a game's history.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsPage {
    /// Oldest first.
    events: Vec<HistoryEntry>,
    /// Pass as `since` for the next page: the last seq returned, or `since` when none were.
    next: u64,
}

/// One history entry: the event's flat wire fields plus `seq`, `by` and `at`.
/// (Its schema in the API document is written in [`doc`].)
#[derive(Debug, Serialize)]
pub(super) struct HistoryEntry {
    /// The seq this event produced.
    seq: u64,
    /// The event as posted.
    #[serde(flatten)]
    event: RawEvent,
    /// The `sub` of the token that posted it.
    by: String,
    /// Server ingest time, Unix ms.
    at: i64,
}

/// How many bytes `value` takes as JSON (0 if it cannot be written).
fn json_len(value: &impl Serialize) -> usize {
    /// Counts what is written to it.
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => 0,
    }
}

/// `GET /v1/games/{id}/events`: the audit trail, oldest first, paged by seq.
#[utoipa::path(
    get,
    path = "/v1/games/{id}/events",
    operation_id = "listEvents",
    tag = "read",
    summary = "A game's event history (the audit trail)",
    description = "Applied events, oldest first, with who posted them and when. Any valid token. A page holds at most `limit` events and about 4 MiB of them: a page of large events can hold fewer. Go on with `since` = `next` until a page comes back empty. An empty parameter counts as absent.",
    params(GamePath, EventsQuery),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "One page of history.", body = EventsPage),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 404, response = doc::GameNotFound),
        (status = 500, response = doc::Internal),
        (status = 503, response = doc::NotReady),
    ),
)]
pub(super) async fn list_events(
    State(state): State<AppState>,
    Scorekeeper(_claims): Scorekeeper,
    GamePath(game): GamePath,
    Query(q): Query<EventsQuery>,
) -> Result<Json<EventsPage>, ApiError> {
    let since = number_param("since", &q.since, 0u64, 0, i64::MAX.unsigned_abs())?;
    let limit = number_param("limit", &q.limit, DEFAULT_EVENTS_LIMIT, 1, MAX_EVENTS_LIMIT)?;
    if state.registry.find(&game).await?.is_none() {
        return Err(ApiError::GameNotFound(game));
    }
    let mut events = Vec::new();
    let mut next = since;
    let mut bytes = 0;
    'page: while events.len() < limit {
        let want = (limit - events.len()).min(EVENTS_CHUNK);
        let records = state.registry.events(&game, next, want).await?;
        let got = records.len();
        for record in records {
            let Record::Event {
                seq, event, by, at, ..
            } = record
            else {
                continue;
            };
            let entry = HistoryEntry {
                seq,
                event: RawEvent::from(event),
                by,
                at,
            };
            let size = json_len(&entry);
            if !events.is_empty() && bytes + size > MAX_EVENTS_PAGE_BYTES {
                break 'page;
            }
            bytes += size;
            next = seq;
            events.push(entry);
        }
        if got < want {
            break;
        }
    }
    Ok(Json(EventsPage { events, next }))
}
