//! Route and extractor tests: the real router over a real (temporary) event
//! log, driven in-process with `oneshot`.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::app::AppState;
use crate::auth::Scope;
use crate::config::Config;
use crate::server::Hub;

const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";

struct App {
    _dir: tempfile::TempDir,
    state: AppState,
    router: Router,
    /// A scorekeeper token for `nba:*`.
    nba: String,
}

fn app_with(config: impl FnOnce(&mut Config)) -> App {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.storage.dir = dir.path().to_path_buf();
    cfg.storage.fsync = false;
    config(&mut cfg);
    let hub = Hub::open(cfg, SECRET).unwrap();
    let state = hub.state().clone();
    let nba = token(&state, Scope::Scorekeeper, &["nba:*"]);
    App {
        _dir: dir,
        router: hub.router(),
        state,
        nba,
    }
}

fn app() -> App {
    app_with(|_| {})
}

fn token(state: &AppState, scope: Scope, games: &[&str]) -> String {
    state
        .auth
        .mint(
            "alice",
            scope,
            games.iter().map(|g| g.to_string()).collect(),
            Duration::from_secs(600),
        )
        .unwrap()
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    text: String,
}

impl Reply {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

impl App {
    async fn raw(&self, req: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        self.raw(req.unwrap()).await
    }

    async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, None, None).await
    }

    async fn create(&self, id: &str) -> Reply {
        let body = json!({"home": {"name": "Lakers"}, "away": {"name": "Celtics"}});
        self.call(
            Method::PUT,
            &format!("/v1/games/{id}"),
            Some(&self.nba),
            Some(body),
        )
        .await
    }

    async fn post_event(&self, id: &str, event: Value) -> Reply {
        self.call(
            Method::POST,
            &format!("/v1/games/{id}/events"),
            Some(&self.nba),
            Some(event),
        )
        .await
    }
}

fn score(event_id: &str, team: &str, points: i64) -> Value {
    json!({"event_id": event_id, "kind": "score", "team": team, "points": points})
}

// ---------------------------------------------------------------- router basics

#[tokio::test]
async fn unknown_route_is_json_404_with_security_headers_and_request_id() {
    let app = app();
    let r = app.get("/nope?token=secret").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "not_found");
    assert!(r.message().contains("/nope"), "{}", r.message());
    assert!(!r.message().contains("secret"), "query never echoed");
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    assert_eq!(r.headers["referrer-policy"], "no-referrer");
    assert_eq!(r.headers["x-frame-options"], "DENY");
    assert!(!r.headers["x-request-id"].is_empty());

    let req = Request::get("/healthz")
        .header("x-request-id", "abc-123")
        .body(Body::empty())
        .unwrap();
    let r = app.raw(req).await;
    assert_eq!(r.headers["x-request-id"], "abc-123");
}

#[tokio::test]
async fn wrong_method_is_json_405_with_allow() {
    let app = app();
    let r = app
        .call(Method::DELETE, "/v1/games/nba:g1", None, None)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.code(), "method_not_allowed");
    let allow = r.headers[header::ALLOW].to_str().unwrap();
    assert!(allow.contains("GET") && allow.contains("PUT"), "{allow}");
}

// ---------------------------------------------------------------- auth

#[tokio::test]
async fn writes_need_a_valid_token() {
    let app = app();
    let body = json!({"home": {"name": "A"}, "away": {"name": "B"}});
    let r = app
        .call(Method::PUT, "/v1/games/nba:g1", None, Some(body.clone()))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "unauthorized");
    assert!(
        r.message().contains("Authorization: Bearer"),
        "{}",
        r.message()
    );
    assert!(
        r.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );

    let r = app
        .call(
            Method::PUT,
            "/v1/games/nba:g1",
            Some("not.a.jwt"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(!r.text.contains("not.a.jwt"), "token never echoed");

    let req = Request::put("/v1/games/nba:g1")
        .header(header::AUTHORIZATION, "Basic dXNlcjpwYXNz")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    assert_eq!(app.raw(req).await.status, StatusCode::UNAUTHORIZED);

    let other = Hub::open(
        {
            let mut c = Config::default();
            c.storage.dir = app._dir.path().join("other");
            c
        },
        b"another-secret-another-secret-another",
    )
    .unwrap();
    let foreign = token(other.state(), Scope::Admin, &[]);
    let r = app
        .call(Method::PUT, "/v1/games/nba:g1", Some(&foreign), Some(body))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.message().contains("signature"), "{}", r.message());
}

#[tokio::test]
async fn token_for_another_league_is_forbidden() {
    let app = app();
    let nfl = token(&app.state, Scope::Scorekeeper, &["nfl:*", "mlb:g1"]);
    let body = json!({"home": {"name": "A"}, "away": {"name": "B"}});
    let r = app
        .call(Method::PUT, "/v1/games/nba:g1", Some(&nfl), Some(body))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.code(), "forbidden");
    assert!(r.message().contains("nba:g1"), "{}", r.message());
    assert!(r.message().contains("nfl:*, mlb:g1"), "{}", r.message());
    // 403 comes before the body is even looked at.
    let req = Request::put("/v1/games/nba:g1")
        .header(header::AUTHORIZATION, format!("Bearer {nfl}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("x"))
        .unwrap();
    assert_eq!(app.raw(req).await.status, StatusCode::FORBIDDEN);

    let admin = token(&app.state, Scope::Admin, &[]);
    assert_eq!(
        app.call(
            Method::PUT,
            "/v1/games/nba:g1",
            Some(&admin),
            Some(json!({"home": {"name": "A"}, "away": {"name": "B"}}))
        )
        .await
        .status,
        StatusCode::CREATED
    );
}

// ---------------------------------------------------------------- create

#[tokio::test]
async fn create_is_idempotent() {
    let app = app();
    let r = app.create("nba:g1").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["game"], "nba:g1");
    assert_eq!(r.body["seq"], 0);
    assert_eq!(r.body["status"], "scheduled");
    assert_eq!(r.body["home"], json!({"name": "Lakers", "score": 0}));
    assert_eq!(r.headers[header::ETAG], "\"0\"");

    let r = app.create("nba:g1").await;
    assert_eq!(r.status, StatusCode::OK);

    let other = json!({"home": {"name": "Knicks"}, "away": {"name": "Celtics"}});
    let r = app
        .call(Method::PUT, "/v1/games/nba:g1", Some(&app.nba), Some(other))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "game_exists");
}

#[tokio::test]
async fn create_body_errors() {
    let app = app();
    let put = |body: Value| app.call(Method::PUT, "/v1/games/nba:g1", Some(&app.nba), Some(body));

    let r = put(json!({"home": {"name": " "}, "away": {"name": "B"}})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.code(), "invalid_game");
    assert!(r.message().contains("home.name"), "{}", r.message());

    let r = put(json!({"home": {}, "away": {"name": "B"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "bad_request");
    assert!(
        r.message().starts_with("home: missing field `name`"),
        "{}",
        r.message()
    );

    let r = put(json!({"home": {"name": "A"}, "away": {"name": "B"}, "period": "two"})).await;
    assert!(
        r.message().starts_with("period: invalid type: string"),
        "{}",
        r.message()
    );

    let r = put(json!({"home": {"name": "A"}, "away": {"name": "B"}, "colour": 1})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.message().contains("unknown field `colour`"),
        "{}",
        r.message()
    );

    let r = put(json!({"home": {"name": "A"}, "away": {"name": "B"}, "status": "halftime"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.message().starts_with("status: unknown variant"),
        "{}",
        r.message()
    );

    let r = put(json!("text")).await;
    assert!(
        r.message().starts_with("request body: invalid type"),
        "{}",
        r.message()
    );

    let r = app
        .call(
            Method::PUT,
            "/v1/games/nba",
            Some(&app.nba),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message().contains("league:game"), "{}", r.message());
}

// ---------------------------------------------------------------- body extractor

fn put_raw(app: &App, content_type: Option<&str>, body: Vec<u8>) -> Request<Body> {
    let mut req = Request::put("/v1/games/nba:g1")
        .header(header::AUTHORIZATION, format!("Bearer {}", app.nba));
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    req.body(Body::from(body)).unwrap()
}

#[tokio::test]
async fn content_types() {
    let app = app();
    let json_body = br#"{"home":{"name":"A"},"away":{"name":"B"}}"#.to_vec();

    let r = app
        .raw(put_raw(&app, Some("text/plain"), json_body.clone()))
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(r.code(), "unsupported_media_type");
    assert!(
        r.message().contains("application/json") && r.message().contains("application/msgpack")
    );

    let r = app.raw(put_raw(&app, None, json_body.clone())).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let r = app
        .raw(put_raw(
            &app,
            Some("Application/JSON; charset=utf-8"),
            json_body,
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    let value = json!({"home": {"name": "A"}, "away": {"name": "B"}});
    let packed = rmp_serde::to_vec_named(&value).unwrap();
    let r = app
        .raw(put_raw(&app, Some("application/msgpack"), packed.clone()))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app
        .raw(put_raw(&app, Some("application/x-msgpack"), packed.clone()))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // responses are JSON even for MessagePack requests
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");

    let mut trailing = packed;
    trailing.push(0xc0);
    let r = app
        .raw(put_raw(&app, Some("application/msgpack"), trailing))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message().contains("MessagePack"), "{}", r.message());

    let r = app
        .raw(put_raw(&app, Some("application/msgpack"), vec![0xc1]))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.message()
            .starts_with("request body is not valid MessagePack"),
        "{}",
        r.message()
    );

    let wrong =
        rmp_serde::to_vec_named(&json!({"home": {"name": 5}, "away": {"name": "B"}})).unwrap();
    let r = app
        .raw(put_raw(&app, Some("application/msgpack"), wrong))
        .await;
    assert!(
        r.message().starts_with("home.name: invalid type"),
        "{}",
        r.message()
    );
}

#[tokio::test]
async fn json_syntax_errors() {
    let app = app();
    for body in [
        &b"{\"home\":"[..],
        b"",
        br#"{"home":{"name":"A"},"away":{"name":"B"}} {}"#,
        b"nope",
    ] {
        let r = app
            .raw(put_raw(&app, Some("application/json"), body.to_vec()))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(
            r.message().starts_with("request body is not valid JSON"),
            "{:?}: {}",
            String::from_utf8_lossy(body),
            r.message()
        );
    }
}

#[tokio::test]
async fn body_limit() {
    let app = app_with(|c| c.http.max_body_bytes = 100);
    let big = format!(
        r#"{{"home":{{"name":"{}"}},"away":{{"name":"B"}}}}"#,
        "x".repeat(200)
    );
    // No Content-Length: the limit holds while streaming.
    let r = app
        .raw(put_raw(
            &app,
            Some("application/json"),
            big.clone().into_bytes(),
        ))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.code(), "payload_too_large");
    assert!(r.message().contains("100 bytes"), "{}", r.message());
    // With Content-Length: refused up front.
    let req = Request::put("/v1/games/nba:g1")
        .header(header::AUTHORIZATION, format!("Bearer {}", app.nba))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, big.len())
        .body(Body::from(big))
        .unwrap();
    assert_eq!(app.raw(req).await.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Exactly at the limit is fine.
    let name = "y".repeat(100 - r#"{"home":{"name":""},"away":{"name":"B"}}"#.len());
    let exact = format!(r#"{{"home":{{"name":"{name}"}},"away":{{"name":"B"}}}}"#);
    assert_eq!(exact.len(), 100);
    let r = app
        .raw(put_raw(&app, Some("application/json"), exact.into_bytes()))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

// ---------------------------------------------------------------- events

#[tokio::test]
async fn post_event_outcomes() {
    let app = app();
    // 401 before 404
    let r = app
        .call(
            Method::POST,
            "/v1/games/nba:none/events",
            None,
            Some(score("e1", "home", 2)),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app.post_event("nba:none", score("e1", "home", 2)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "game_not_found");
    assert!(
        r.message().contains("PUT /v1/games/nba:none"),
        "{}",
        r.message()
    );

    app.create("nba:g1").await;
    let r = app.post_event("nba:g1", score("e1", "home", 2)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"game": "nba:g1", "seq": 1, "duplicate": false})
    );

    let r = app.post_event("nba:g1", score("e1", "home", 2)).await;
    assert_eq!(
        r.body,
        json!({"game": "nba:g1", "seq": 1, "duplicate": true})
    );

    let r = app.post_event("nba:g1", score("e1", "home", 3)).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "event_id_conflict");

    let mut e = score("e2", "away", 3);
    e["expected_seq"] = json!(0);
    let r = app.post_event("nba:g1", e).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(r.code(), "seq_mismatch");

    let r = app.post_event("nba:g1", score("e3", "visitors", 3)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.code(), "invalid_event");

    let r = app
        .post_event(
            "nba:g1",
            json!({"event_id": "e4", "kind": "score", "team": "home", "points": "3"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.message().starts_with("points: invalid type: string"),
        "{}",
        r.message()
    );

    let r = app
        .post_event(
            "nba:g1",
            json!({"event_id": "e5", "kind": "score", "team": "home"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message().contains("points"), "{}", r.message());

    // A body naming another game is well-formed but makes no sense here: 422.
    let mut e = score("e6", "home", 1);
    e["game"] = json!("nba:other");
    let r = app.post_event("nba:g1", e).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.message().contains("nba:other"), "{}", r.message());
    // `null` is not a game id (the document allows none)...
    let mut e = score("e6", "home", 1);
    e["game"] = Value::Null;
    let r = app.post_event("nba:g1", e).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    // ...and integers written as floats are integers (JSON Schema says so).
    let r = app
        .post_event(
            "nba:g1",
            json!({"event_id": "e6f", "kind": "score", "team": "home", "points": 1.0, "expected_seq": 1.0}),
        )
        .await;
    assert_eq!(r.body["seq"], 2, "{}", r.text);

    let mut e = score("e7", "home", 1);
    e["game"] = json!("nba:g1");
    let r = app.post_event("nba:g1", e).await;
    assert_eq!(r.body["seq"], 3, "{}", r.text);

    let r = app.get("/v1/games/nba:g1").await;
    assert_eq!(r.body["home"]["score"], 4);
}

#[tokio::test]
async fn get_game_etag_and_errors() {
    let app = app();
    assert_eq!(app.get("/v1/games/nba:g1").await.code(), "game_not_found");
    let r = app.get("/v1/games/NBA:g1").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message().contains("league"), "{}", r.message());

    app.create("nba:g1").await;
    app.post_event("nba:g1", score("e1", "home", 2)).await;
    let r = app.get("/v1/games/nba:g1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::ETAG], "\"1\"");
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-cache");
    assert_eq!(r.body["seq"], 1);

    for tag in ["\"1\"", "W/\"1\"", "\"0\", \"1\"", "*"] {
        let req = Request::get("/v1/games/nba:g1")
            .header(header::IF_NONE_MATCH, tag)
            .body(Body::empty())
            .unwrap();
        let r = app.raw(req).await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{tag}");
        assert_eq!(r.headers[header::ETAG], "\"1\"");
        assert!(r.text.is_empty());
    }
    let req = Request::get("/v1/games/nba:g1")
        .header(header::IF_NONE_MATCH, "\"0\"")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.raw(req).await.status, StatusCode::OK);
}

#[tokio::test]
async fn list_games_pages_and_filters() {
    let app = app();
    let mlb = token(&app.state, Scope::Admin, &[]);
    for id in ["nba:a", "nba:b", "nba:c"] {
        app.create(id).await;
    }
    app.call(
        Method::PUT,
        "/v1/games/mlb:x",
        Some(&mlb),
        Some(json!({"home": {"name": "A"}, "away": {"name": "B"}, "status": "live"})),
    )
    .await;

    let r = app.get("/v1/games").await;
    assert_eq!(r.body["games"].as_array().unwrap().len(), 4);
    assert_eq!(r.body["next_cursor"], Value::Null);

    let r = app.get("/v1/games?league=nba&limit=2").await;
    let ids: Vec<&str> = r.body["games"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["game"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["nba:a", "nba:b"]);
    let cursor = r.body["next_cursor"].as_str().unwrap().to_string();
    let r = app
        .get(&format!("/v1/games?league=nba&limit=2&cursor={cursor}"))
        .await;
    let ids: Vec<&str> = r.body["games"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["game"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["nba:c"]);
    assert_eq!(r.body["next_cursor"], Value::Null);

    let r = app.get("/v1/games?status=live").await;
    assert_eq!(r.body["games"][0]["game"], "mlb:x");
    assert_eq!(r.body["games"].as_array().unwrap().len(), 1);

    let r = app.get("/v1/games?league=&status=").await;
    assert_eq!(r.body["games"].as_array().unwrap().len(), 4);

    for (query, field) in [
        ("limit=501", "limit"),
        ("limit=0", "limit"),
        ("limit=ten", "limit"),
        ("status=halftime", "status"),
        ("league=NBA", "league"),
        ("cursor=garbage", "cursor"),
    ] {
        let r = app.get(&format!("/v1/games?{query}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(
            r.message().starts_with(&format!("{field}:")),
            "{query}: {}",
            r.message()
        );
    }
    assert_eq!(app.get("/v1/games?limit=500").await.status, StatusCode::OK);
}

#[tokio::test]
async fn event_history() {
    let app = app();
    app.create("nba:g1").await;
    let uri = "/v1/games/nba:g1/events";
    assert_eq!(app.get(uri).await.status, StatusCode::UNAUTHORIZED);
    // any valid token, even one that may not write the game
    let reader = token(&app.state, Scope::Scorekeeper, &["mlb:*"]);
    let r = app.call(Method::GET, uri, Some(&reader), None).await;
    assert_eq!(r.body, json!({"events": [], "next": 0}));

    app.post_event("nba:g1", score("e1", "home", 2)).await;
    app.post_event(
        "nba:g1",
        json!({"event_id": "e2", "kind": "clock", "ms": 1000, "running": true, "period": 2}),
    )
    .await;
    app.post_event(
        "nba:g1",
        json!({"event_id": "e3", "kind": "status", "status": "live", "expected_seq": 2}),
    )
    .await;

    let r = app.call(Method::GET, uri, Some(&reader), None).await;
    let events = r.body["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["seq"], 1);
    assert_eq!(events[0]["event_id"], "e1");
    assert_eq!(events[0]["kind"], "score");
    assert_eq!(events[0]["team"], "home");
    assert_eq!(events[0]["points"], 2);
    assert_eq!(events[0]["by"], "alice");
    assert!(events[0]["at"].as_i64().unwrap() > 0);
    assert_eq!(events[1]["period"], 2);
    assert_eq!(events[2]["expected_seq"], 2);
    assert_eq!(r.body["next"], 3);

    let r = app
        .call(
            Method::GET,
            &format!("{uri}?since=1&limit=1"),
            Some(&reader),
            None,
        )
        .await;
    assert_eq!(r.body["events"][0]["seq"], 2);
    assert_eq!(r.body["next"], 2);
    let r = app
        .call(Method::GET, &format!("{uri}?since=3"), Some(&reader), None)
        .await;
    assert_eq!(r.body, json!({"events": [], "next": 3}));

    for q in ["limit=1001", "limit=0", "since=-1"] {
        let r = app
            .call(Method::GET, &format!("{uri}?{q}"), Some(&reader), None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
    }
    let r = app
        .call(
            Method::GET,
            "/v1/games/nba:none/events",
            Some(&reader),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// A page of large events stops at about 4 MiB, before `limit`; going on
/// from `next` gives the rest, with nothing skipped or repeated.
#[tokio::test]
async fn event_history_pages_of_large_events_stop_early() {
    let app = app_with(|c| {
        c.limits.events_per_second = 1_000_000;
        c.limits.events_burst = 1_000_000;
    });
    app.create("nba:g1").await;
    const N: u64 = 600;
    for n in 1..=N {
        let extra: serde_json::Map<String, Value> = (0..32)
            .map(|k| {
                (
                    format!("k{k:02}"),
                    json!(format!("{n:06}{k:02}{:x<248}", "")),
                )
            })
            .collect();
        let event = json!({"event_id": format!("e{n}"), "kind": "set", "patch": {"extra": extra}});
        let r = app.post_event("nba:g1", event).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let uri = "/v1/games/nba:g1/events";
    let mut since = 0;
    let mut seqs = Vec::new();
    let mut pages = Vec::new();
    loop {
        let r = app
            .call(
                Method::GET,
                &format!("{uri}?since={since}&limit=1000"),
                Some(&app.nba),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let events = r.body["events"].as_array().unwrap();
        if events.is_empty() {
            assert_eq!(r.body["next"], since);
            break;
        }
        let bytes = serde_json::to_vec(events).unwrap().len();
        assert!(
            bytes <= super::games::MAX_EVENTS_PAGE_BYTES,
            "{bytes} bytes"
        );
        pages.push(events.len());
        seqs.extend(events.iter().map(|e| e["seq"].as_u64().unwrap()));
        since = r.body["next"].as_u64().unwrap();
        assert_eq!(Some(&since), seqs.last());
    }
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>());
    assert!(
        pages.len() >= 2 && pages[0] < 1000,
        "pages of {pages:?} events"
    );
}

#[tokio::test]
async fn batch() {
    let app = app();
    app.create("nba:g1").await;
    app.create("nba:g2").await;
    let post = |body: Value, token: Option<&str>| {
        let token = token.map(str::to_owned);
        let app = &app;
        async move {
            app.call(Method::POST, "/v1/events", token.as_deref(), Some(body))
                .await
        }
    };

    assert_eq!(
        post(json!({"events": [score("x", "home", 1)]}), None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let r = post(json!({"events": []}), Some(&app.nba)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let many: Vec<Value> = (0..501).map(|i| json!({"game": "nba:g1", "event_id": format!("m{i}"), "kind": "score", "team": "home", "points": 1})).collect();
    let r = post(json!({"events": many}), Some(&app.nba)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message().contains("500"), "{}", r.message());
    assert_eq!(
        post(json!({"evnts": []}), Some(&app.nba)).await.status,
        StatusCode::BAD_REQUEST
    );

    let item = |game: &str, id: &str, team: &str, points: Value| json!({"game": game, "event_id": id, "kind": "score", "team": team, "points": points});
    let body = json!({"events": [
        item("nba:g1", "a", "home", json!(2)),
        item("nba:g2", "b", "away", json!(3)),
        item("nba:g1", "a", "home", json!(2)),
        item("nfl:g1", "d", "home", json!(1)),
        item("nba:none", "e", "home", json!(1)),
        item("nba:g1", "a", "home", json!(5)),
        item("nba:g1", "i", "away", json!(1.0)),
    ]});
    let r = post(body, Some(&app.nba)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let results = r.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 7);
    assert_eq!(
        results[0],
        json!({"game": "nba:g1", "seq": 1, "duplicate": false})
    );
    assert_eq!(
        results[1],
        json!({"game": "nba:g2", "seq": 1, "duplicate": false})
    );
    assert_eq!(
        results[2],
        json!({"game": "nba:g1", "seq": 1, "duplicate": true})
    );
    let code = |i: usize| {
        results[i]["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    // Refusals that depend on the game are the item's result.
    assert_eq!(code(3), "forbidden");
    assert_eq!(results[3]["game"], "nfl:g1");
    assert_eq!(code(4), "game_not_found");
    assert_eq!(code(5), "event_id_conflict");
    assert_eq!(
        results[6],
        json!({"game": "nba:g1", "seq": 2, "duplicate": false})
    );

    // An item its schema refuses refuses the whole batch, naming the item, and
    // nothing of the batch is applied (the good item `j` never lands).
    let mut unknown_field = item("nba:g1", "k", "home", json!(1));
    unknown_field["extra"] = json!(1);
    let mut null_game = item("nba:g1", "k", "home", json!(1));
    null_game["game"] = Value::Null;
    let malformed = [
        (
            item("nba:g1", "c", "home", json!("x")),
            StatusCode::BAD_REQUEST,
            "events[1].points: invalid type",
        ),
        (
            item("nba:g1", "c", "home", json!(1.5)),
            StatusCode::BAD_REQUEST,
            "events[1].points: invalid value",
        ),
        (
            item("nba:g1", "f", "left", json!(1)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "events[1]: ",
        ),
        (
            json!({"event_id": "g", "kind": "score", "team": "home", "points": 1}),
            StatusCode::BAD_REQUEST,
            "events[1].game: missing",
        ),
        (
            item("bad id", "h", "home", json!(1)),
            StatusCode::BAD_REQUEST,
            "events[1].game: ",
        ),
        (
            null_game,
            StatusCode::BAD_REQUEST,
            "events[1].game: invalid type: null",
        ),
        (
            unknown_field,
            StatusCode::BAD_REQUEST,
            "events[1].extra: unknown field",
        ),
        (
            json!(7),
            StatusCode::BAD_REQUEST,
            "events[1]: each item must be an event object",
        ),
    ];
    for (bad, status, prefix) in malformed {
        let body = json!({"events": [item("nba:g1", "j", "home", json!(1)), bad]});
        let r = post(body, Some(&app.nba)).await;
        assert_eq!(r.status, status, "{}", r.text);
        assert!(r.message().starts_with(prefix), "{prefix}: {}", r.message());
    }

    // Retrying the whole batch changes nothing.
    let r = post(json!({"events": [item("nba:g1", "a", "home", json!(2)), item("nba:g1", "i", "away", json!(1))]}), Some(&app.nba)).await;
    assert_eq!(r.body["results"][0]["duplicate"], true);
    assert_eq!(
        r.body["results"][1],
        json!({"game": "nba:g1", "seq": 2, "duplicate": true})
    );
    let g1 = app.get("/v1/games/nba:g1").await;
    assert_eq!(
        (
            g1.body["home"]["score"].clone(),
            g1.body["away"]["score"].clone()
        ),
        (json!(2), json!(1))
    );
}

// ---------------------------------------------------------------- ops

#[tokio::test]
async fn ops_routes() {
    let app = app();
    let r = app.get("/healthz").await;
    assert_eq!(
        (r.status, r.body.clone()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let r = app.get("/readyz").await;
    assert_eq!(
        (r.status, r.body.clone()),
        (StatusCode::OK, json!({"status": "ready"}))
    );

    let r = app.get("/v1/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3.1"));

    app.create("nba:metric-probe").await;
    app.get("/v1/games/nba:metric-probe").await;
    let r = app.get("/metrics").await;
    assert!(
        r.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    assert!(
        r.text.contains("scorehub_http_requests_total"),
        "{}",
        r.text
    );
    assert!(r.text.contains(r#"route="/v1/games/{id}""#), "{}", r.text);
    assert!(!r.text.contains("metric-probe"), "no raw ids in labels");

    app.state.shutdown.cancel();
    let r = app.get("/readyz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body["status"], "not_ready");
    assert_eq!(r.body["reason"], "shutting down");
}

#[test]
fn openapi_document_is_valid_json_and_lists_every_route() {
    let doc: Value = serde_json::from_str(&super::openapi::render()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/v1/games", &["get"][..]),
        ("/v1/games/{id}", &["get", "put"]),
        ("/v1/games/{id}/events", &["get", "post"]),
        ("/v1/events", &["post"]),
        ("/v1/openapi.json", &["get"]),
        ("/v1/ws", &["get"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/metrics", &["get"]),
    ] {
        for m in methods {
            assert!(paths[path].get(*m).is_some(), "{m} {path} missing");
        }
    }
    // every $ref resolves
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, v) in o {
                    if k == "$ref" {
                        out.push(v.as_str().unwrap().to_owned());
                    } else {
                        refs(v, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r.strip_prefix('#').unwrap();
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }
}

/// The document cannot name a route the router lacks: every documented
/// operation reaches a handler (no route-level 404 or 405), and the routes it
/// leaves out are exactly the browser pages.
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let app = app();
    let doc: Value = serde_json::from_str(&super::openapi::render()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let uri = path.replace("{id}", "nba:probe");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = app.call(method.clone(), &uri, Some(&app.nba), None).await;
            assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_ne!(r.code(), "not_found", "{method} {path}: no such route");
        }
    }
    let mut undocumented = Vec::new();
    for page in [
        "/",
        "/console",
        "/scorehub.js",
        "/assets/app.js",
        "/favicon.svg",
    ] {
        assert_eq!(app.get(page).await.status, StatusCode::OK, "{page}");
        if !paths.contains_key(page) {
            undocumented.push(page);
        }
    }
    assert_eq!(undocumented.len(), 5, "pages stay out of the API document");
}

/// A plain GET of the WebSocket path is a 400 in the error format (axum's own
/// rejection is plain text, which no API document can describe).
#[tokio::test]
async fn websocket_path_without_upgrade_is_a_json_400() {
    let app = app();
    let r = app.get("/v1/ws?games=nba:g1").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(r.code(), "bad_request");
    assert!(r.message().contains("WebSocket"), "{}", r.message());
}

// ---------------------------------------------------------------- CORS and security headers

const ALLOWED: &str = "https://scores.example.com";

async fn preflight(app: &App, origin: &str, path: &str) -> Reply {
    let req = Request::builder()
        .method(Method::OPTIONS)
        .uri(path)
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,content-type",
        )
        .body(Body::empty())
        .unwrap();
    app.raw(req).await
}

async fn get_from(app: &App, origin: &str, path: &str) -> Reply {
    let req = Request::get(path)
        .header(header::ORIGIN, origin)
        .body(Body::empty())
        .unwrap();
    app.raw(req).await
}

#[tokio::test]
async fn cors_preflight_from_an_allowed_origin_gets_the_grant() {
    let app = app_with(|c| c.http.cors_origins = vec![ALLOWED.into()]);
    for path in ["/v1/events", "/v1/games/nba:g1/events", "/v1/games/nba:g1"] {
        let r = preflight(&app, ALLOWED, path).await;
        assert!(r.status.is_success(), "{path}: {}", r.status);
        let h = &r.headers;
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], ALLOWED, "{path}");
        let methods = h[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap();
        for m in ["GET", "PUT", "POST"] {
            assert!(methods.contains(m), "{path}: {methods}");
        }
        let headers = h[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(
            headers.contains("authorization") && headers.contains("content-type"),
            "{headers}"
        );
        assert!(h.contains_key(header::ACCESS_CONTROL_MAX_AGE));
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
    }
    // A simple request gets the origin and the readable headers.
    app.create("nba:g1").await;
    let r = get_from(&app, ALLOWED, "/v1/games/nba:g1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], ALLOWED);
    let exposed = r.headers[header::ACCESS_CONTROL_EXPOSE_HEADERS]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        exposed.contains("etag") && exposed.contains("retry-after"),
        "{exposed}"
    );
    // Errors of the API carry it too, so a page can read them.
    let r = get_from(&app, ALLOWED, "/v1/games/nba:missing").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], ALLOWED);
}

#[tokio::test]
async fn cors_grants_nothing_to_other_origins_nor_outside_v1() {
    let app = app_with(|c| c.http.cors_origins = vec![ALLOWED.into()]);
    for origin in [
        "https://evil.example",
        "https://scores.example.com.evil.example",
    ] {
        let r = preflight(&app, origin, "/v1/events").await;
        assert!(
            !r.headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
            "{origin}: {:?}",
            r.headers
        );
        let r = get_from(&app, origin, "/v1/games").await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(!r.headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    }
    // The operations routes and pages are not part of the API's CORS policy.
    for path in ["/healthz", "/metrics", "/console"] {
        let r = get_from(&app, ALLOWED, path).await;
        assert!(
            !r.headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
            "{path}"
        );
    }
}

#[tokio::test]
async fn cors_is_off_by_default_same_origin_only() {
    let app = app();
    assert!(app.state.config.http.cors_origins.is_empty());
    let r = preflight(&app, ALLOWED, "/v1/events").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.code(), "method_not_allowed");
    for key in r.headers.keys() {
        assert!(!key.as_str().starts_with("access-control-"), "{key}");
    }
    let r = get_from(&app, ALLOWED, "/v1/games").await;
    for key in r.headers.keys() {
        assert!(!key.as_str().starts_with("access-control-"), "{key}");
    }
}

#[tokio::test]
async fn cors_any_origin_when_configured_with_a_star() {
    let app = app_with(|c| c.http.cors_origins = vec!["*".into()]);
    let r = get_from(&app, "https://anyone.example", "/v1/games").await;
    assert_eq!(r.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
}

/// Every kind of response carries the security headers: API success, API
/// error, unknown route, wrong method, operations, pages, preflight.
#[tokio::test]
async fn security_headers_on_every_kind_of_response() {
    let app = app_with(|c| c.http.cors_origins = vec![ALLOWED.into()]);
    app.create("nba:g1").await;
    let mut replies = vec![
        ("api 200", app.get("/v1/games/nba:g1").await),
        ("api 201", app.create("nba:g2").await),
        ("api 404", app.get("/v1/games/nba:none").await),
        ("api 400", app.get("/v1/games/NOT-AN-ID").await),
        (
            "api 401",
            app.call(Method::POST, "/v1/events", None, Some(json!({})))
                .await,
        ),
        ("404", app.get("/no/such/page").await),
        (
            "405",
            app.call(Method::DELETE, "/v1/games/nba:g1", None, None)
                .await,
        ),
        ("ws 400", app.get("/v1/ws").await),
        ("healthz", app.get("/healthz").await),
        ("metrics", app.get("/metrics").await),
        ("openapi", app.get("/v1/openapi.json").await),
        ("preflight", preflight(&app, ALLOWED, "/v1/events").await),
    ];
    for page in ["/", "/console", "/scorehub.js", "/assets/style.css"] {
        replies.push((page, app.get(page).await));
    }
    for (what, r) in replies {
        assert_eq!(r.headers["x-content-type-options"], "nosniff", "{what}");
        assert_eq!(r.headers["referrer-policy"], "no-referrer", "{what}");
        assert_eq!(r.headers["x-frame-options"], "DENY", "{what}");
        assert!(r.headers.contains_key("x-request-id"), "{what}");
    }
}
