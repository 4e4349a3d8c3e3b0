//! The harness shared by every test: hubs (in-process and the real binary),
//! an HTTP client that keeps status, headers and body together, a WebSocket
//! fan, and a fan-side state that applies frames while checking their order.

use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use reqwest::header::HeaderMap;
use scorehub::auth::{Auth, Scope};
use scorehub::codec::{DecodedFrame, decode_frame};
use scorehub::config::Config;
use scorehub::server::Hub;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// The HS256 secret every test hub (and binary) is configured with.
pub(crate) const SECRET: &str = "8f2a6c1e9b3d47f0a5c8e1b2d3f4a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c";

/// How long a test waits for something that should happen promptly.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// How many of a hub's last log lines a failed test prints.
const LOG_TAIL: usize = 80;

/// How long the binary may take to log `listening addr=` or to exit.
const BINARY_START: Duration = Duration::from_secs(20);

/// A loopback HTTP client that ignores any proxy settings of the machine.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a plain HTTP client builds")
}

/// The value of the first sample line of metric `name` whose labels contain
/// `labels` (`""` matches any, also none) in Prometheus text.
pub(crate) fn sample(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(labels)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `{"kind":"score"}` event.
pub(crate) fn score(event_id: &str, team: &str, points: i64) -> Value {
    json!({"event_id": event_id, "kind": "score", "team": team, "points": points})
}

/// The body that creates a game.
pub(crate) fn new_game(home: &str, away: &str) -> Value {
    json!({"home": {"name": home}, "away": {"name": away}})
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved chars).
pub(crate) fn encode_query(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Polls `check` until it holds, panicking after `timeout` with `what`.
pub(crate) async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// HTTP

/// A response with everything read.
#[derive(Debug)]
pub(crate) struct Reply {
    /// Status code.
    pub(crate) status: u16,
    /// Response headers.
    pub(crate) headers: HeaderMap,
    /// The body as text.
    pub(crate) text: String,
}

impl Reply {
    /// The body as JSON; panics (showing the body) when it is not JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {:?}",
                self.status, self.text
            )
        })
    }

    /// A header as a string.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header is ASCII").to_owned())
    }

    /// Asserts `200`, returning the JSON body.
    pub(crate) fn ok_json(&self) -> Value {
        assert_eq!(self.status, 200, "expected 200, body: {}", self.text);
        self.json()
    }

    /// Asserts the error `status`, the contract's error body shape and `code`;
    /// returns the message.
    pub(crate) fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(
            self.status, status,
            "expected {status} {code}, got body: {}",
            self.text
        );
        let got = self.assert_error_shape();
        assert_eq!(got.0, code, "error code for status {status}: {}", self.text);
        got.1
    }

    /// Asserts `{"error":{"code":"snake_case","message":"..."}}`; returns both.
    pub(crate) fn assert_error_shape(&self) -> (String, String) {
        let body = self.json();
        let err = body
            .get("error")
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("error body without an `error` object: {}", self.text));
        let code = err
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("error without a string `code`: {}", self.text));
        assert!(
            !code.is_empty()
                && code
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "error code {code:?} is not snake_case"
        );
        let message = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("error without a string `message`: {}", self.text));
        assert!(
            !message.trim().is_empty(),
            "empty error message: {}",
            self.text
        );
        (code.to_owned(), message.to_owned())
    }
}

/// A request body.
pub(crate) enum Body {
    /// No body.
    None,
    /// `application/json`.
    Json(Value),
    /// `application/msgpack` of a JSON value.
    Msgpack(Value),
    /// Raw bytes with a content type (`None` = no `Content-Type` header).
    Raw(Option<&'static str>, Vec<u8>),
}

/// An HTTP client for one hub address, minting tokens with [`SECRET`].
pub(crate) struct Api {
    /// `http://127.0.0.1:PORT`.
    pub(crate) base: String,
    /// The shared client.
    pub(crate) client: reqwest::Client,
    auth: Auth,
}

impl Api {
    fn new(addr: SocketAddr) -> Api {
        Api {
            base: format!("http://{addr}"),
            client: http_client(),
            auth: Auth::new(SECRET.as_bytes()),
        }
    }

    /// The full URL of `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The WebSocket URL with `query` (without the `?`; empty for none).
    pub(crate) fn ws_url(&self, query: &str) -> String {
        let host = self.base.trim_start_matches("http://");
        if query.is_empty() {
            format!("ws://{host}/v1/ws")
        } else {
            format!("ws://{host}/v1/ws?{query}")
        }
    }

    /// A token with `sub`, `scope`, `games`, valid one hour.
    pub(crate) fn token_for(&self, sub: &str, games: &[&str], scope: Scope) -> String {
        self.auth
            .mint(
                sub,
                scope,
                games.iter().map(|g| g.to_string()).collect(),
                Duration::from_secs(3600),
            )
            .expect("minting a test token")
    }

    /// A token for `games` (ids or `league:*` patterns) with sub `tester`.
    pub(crate) fn token(&self, games: &[&str], scope: Scope) -> String {
        self.token_for("tester", games, scope)
    }

    /// A scorekeeper token for the whole league of `game`.
    pub(crate) fn writer(&self, game: &str) -> String {
        let league = game.split(':').next().expect("a game id has a league");
        self.token(&[&format!("{league}:*")], Scope::Scorekeeper)
    }

    /// Sends any request and reads the whole reply.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Body,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.client.request(method.clone(), self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&v).expect("JSON encodes")),
            Body::Msgpack(v) => req
                .header("content-type", "application/msgpack")
                .body(rmp_serde::to_vec_named(&v).expect("MessagePack encodes")),
            Body::Raw(ct, bytes) => {
                let req = match ct {
                    Some(ct) => req.header("content-type", ct),
                    None => req,
                };
                req.body(bytes)
            }
        };
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} failed: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("reading a response body");
        Reply {
            status,
            headers,
            text,
        }
    }

    /// The value of the first sample of metric `name` whose labels contain
    /// `labels` (e.g. `reason="stuck"`; `""` for any) in this hub's
    /// `/metrics`, or 0 when there is none yet.
    pub(crate) async fn metric(&self, name: &str, labels: &str) -> f64 {
        sample(&self.get("/metrics").await.text, name, labels).unwrap_or(0.0)
    }

    /// `GET path` without a token.
    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None, Body::None, &[]).await
    }

    /// `PUT /v1/games/{id}` with `body` and a league token.
    pub(crate) async fn put_game_with(&self, id: &str, body: Value) -> Reply {
        let token = self.writer(id);
        self.call(
            Method::PUT,
            &format!("/v1/games/{id}"),
            Some(&token),
            Body::Json(body),
            &[],
        )
        .await
    }

    /// Creates `id` (Home vs Away), asserting `201`.
    pub(crate) async fn put_game(&self, id: &str) {
        let r = self.put_game_with(id, new_game("Home", "Away")).await;
        assert_eq!(r.status, 201, "creating {id}: {}", r.text);
    }

    /// `POST /v1/games/{id}/events` with a league token.
    pub(crate) async fn post_event(&self, id: &str, event: Value) -> Reply {
        let token = self.writer(id);
        self.post_event_as(id, &token, event).await
    }

    /// `POST /v1/games/{id}/events` with `token`.
    pub(crate) async fn post_event_as(&self, id: &str, token: &str, event: Value) -> Reply {
        self.call(
            Method::POST,
            &format!("/v1/games/{id}/events"),
            Some(token),
            Body::Json(event),
            &[],
        )
        .await
    }

    /// Posts a new event, asserting `200` and `duplicate: false`; returns the seq.
    pub(crate) async fn post_ok(&self, id: &str, event: Value) -> u64 {
        let r = self.post_event(id, event).await;
        let body = r.ok_json();
        assert_eq!(body["game"], id, "{body}");
        assert_eq!(body["duplicate"], false, "{body}");
        body["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("no seq in {body}"))
    }

    /// `GET /v1/games/{id}`, asserting `200`: the state, without the
    /// answer's `watching` (asserted to be a count; [`Api::watching`]
    /// reads it), so states from different sources compare equal.
    pub(crate) async fn get_game(&self, id: &str) -> Value {
        let mut body = self.get(&format!("/v1/games/{id}")).await.ok_json();
        without_watching(&mut body);
        body
    }

    /// `watching` of `GET /v1/games/{id}`: fans watching over every node.
    pub(crate) async fn watching(&self, id: &str) -> u64 {
        let body = self.get(&format!("/v1/games/{id}")).await.ok_json();
        body["watching"]
            .as_u64()
            .unwrap_or_else(|| panic!("GET /v1/games/{id} has an integer `watching`: {body}"))
    }
}

/// Takes the top-level `watching` out of a `GET /v1/games/{id}` body (the
/// state stays), asserting it is a count.
pub(crate) fn without_watching(body: &mut Value) {
    let watching = body.as_object_mut().and_then(|o| o.remove("watching"));
    assert!(
        watching.as_ref().is_some_and(Value::is_u64),
        "GET /v1/games/{{id}} answers an integer `watching` beside the state: {watching:?} in {body}"
    );
}

// ---------------------------------------------------------------------------
// In-process hub

/// Lifts the per-token event rate: the suite posts thousands of events from
/// one token as fast as it can. The `limits` tests set their own limits.
fn unlimited_events(config: &mut Config) {
    config.limits.events_per_second = 1_000_000;
    config.limits.events_burst = 1_000_000;
}

/// A hub served in this process on `127.0.0.1:0`, with its own storage dir.
pub(crate) struct TestHub {
    api: Api,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Deref for TestHub {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestHub {
    /// A hub with the default config (fsync off).
    pub(crate) async fn start() -> TestHub {
        TestHub::start_with(|_| {}).await
    }

    /// A hub whose config `tweak` may change.
    pub(crate) async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestHub {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let mut config = Config::default();
        config.storage.dir = dir.path().to_path_buf();
        config.storage.fsync = false;
        config.auth.secret = Some(SECRET.to_owned());
        unlimited_events(&mut config);
        tweak(&mut config);
        let hub = Hub::open(config, SECRET.as_bytes()).expect("the hub opens");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(hub.serve(listener, async move {
            let _ = stopped.await;
        }));
        TestHub {
            api: Api::new(addr),
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Stops the hub and waits (bounded) for `serve` to return `Ok`.
    pub(crate) async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("shut down once");
        let res = tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("serve returns within 15 s of shutdown")
            .expect("the serve task does not panic");
        res.expect("serve ends without an IO error");
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

// ---------------------------------------------------------------------------
// The real binary

/// A `scorehub` command with a clean environment (no inherited `SCOREHUB_*`).
fn command(cwd: &Path) -> Command {
    scrubbed(Command::new(env!("CARGO_BIN_EXE_scorehub")), cwd)
}

/// `cmd` without the caller's `SCOREHUB_*` and `RUST_LOG`, in `cwd`.
fn scrubbed(mut cmd: Command, cwd: &Path) -> Command {
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.to_ascii_uppercase().starts_with("SCOREHUB_") || k == "RUST_LOG" {
            cmd.env_remove(&key);
        }
    }
    cmd.current_dir(cwd).env("NO_COLOR", "1");
    cmd
}

/// Removes ANSI escape sequences (colours) from a log line.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The address in a `listening addr=...` log line.
fn parse_listening(line: &str) -> Option<SocketAddr> {
    let line = strip_ansi(line);
    let rest = &line[line.find("listening addr=")? + "listening addr=".len()..];
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || ".:[]".contains(*c))
        .collect();
    addr.parse().ok()
}

/// The `scorehub` binary running `serve`, killed when dropped.
pub(crate) struct BinaryHub {
    child: Child,
    api: Api,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Deref for BinaryHub {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl BinaryHub {
    /// Runs `scorehub serve` on `127.0.0.1:0` with storage in `dir`, the test
    /// secret and `env` on top; waits for `listening addr=`.
    pub(crate) fn spawn(dir: &Path, env: &[(&str, &str)]) -> BinaryHub {
        BinaryHub::spawn_args(dir, &["serve"], env)
    }

    /// Like [`BinaryHub::spawn`] with other arguments (e.g. none: `serve` is
    /// the default). A variable given in `env` with an empty value is removed
    /// instead (e.g. `("SCOREHUB_AUTH__SECRET", "")` runs without a secret).
    pub(crate) fn spawn_args(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> BinaryHub {
        BinaryHub::spawn_cmd(command(dir), dir, args, env)
    }

    /// Like [`BinaryHub::spawn`], with at most `nofile` open files (set by
    /// util-linux's `prlimit` before the hub starts).
    pub(crate) fn spawn_with_nofile(dir: &Path, nofile: u64, env: &[(&str, &str)]) -> BinaryHub {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_scorehub"));
        BinaryHub::spawn_cmd(scrubbed(cmd, dir), dir, &["serve"], env)
    }

    /// Runs `cmd` (the hub, or a wrapper of it) with `args` and the test
    /// environment; waits for `listening addr=`.
    fn spawn_cmd(mut cmd: Command, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> BinaryHub {
        cmd.args(args)
            .env("SCOREHUB_HTTP__LISTEN", "127.0.0.1:0")
            .env("SCOREHUB_STORAGE__DIR", dir)
            .env("SCOREHUB_AUTH__SECRET", SECRET)
            .env("SCOREHUB_LOG__FORMAT", "pretty");
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning the scorehub binary");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        {
            let pipe = child.stdout.take().expect("stdout is piped");
            let stdout = Arc::clone(&stdout);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    stdout.lock().expect("stdout lock").push(line);
                }
            });
        }
        let pipe = child.stderr.take().expect("stderr is piped");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        {
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    stderr.lock().expect("stderr lock").push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + BINARY_START;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = parse_listening(&line) {
                        break addr;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "scorehub did not log `listening addr=` within {BINARY_START:?}; stderr:\n{}",
                        stderr.lock().expect("stderr lock").join("\n")
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait();
                    panic!(
                        "scorehub exited ({status:?}) before logging `listening addr=`; stderr:\n{}",
                        stderr.lock().expect("stderr lock").join("\n")
                    );
                }
            }
        };
        BinaryHub {
            child,
            api: Api::new(addr),
            stdout,
            stderr,
        }
    }

    /// Everything it wrote to stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").join("\n")
    }

    /// Everything it wrote to stdout so far.
    pub(crate) fn stdout(&self) -> String {
        self.stdout.lock().expect("stdout lock").join("\n")
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9` and reap.
    pub(crate) fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL the hub");
        self.child.wait().expect("reap the hub");
    }

    /// Sends SIGTERM with the `kill` command.
    pub(crate) fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("running kill -TERM");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Waits up to `timeout` for the process to exit.
    pub(crate) async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "scorehub did not exit within {timeout:?}; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for BinaryHub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // A failed test shows what the hub logged: its reasons are
            // there, not in the client's answer.
            let lines = self.stderr.lock().map(|l| l.clone()).unwrap_or_default();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            eprintln!("--- the last {} log lines of this hub ---", tail.len());
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

/// What a finished command printed.
#[derive(Debug)]
pub(crate) struct CliOutput {
    /// Exit status.
    pub(crate) status: ExitStatus,
    /// Standard output.
    pub(crate) stdout: String,
    /// Standard error.
    pub(crate) stderr: String,
}

/// Runs `scorehub ARGS` in `cwd` with a clean environment plus `env` (empty
/// values are removed, as in [`BinaryHub::spawn_args`]); panics
/// (after killing it) when it has not exited within 20 s.
pub(crate) fn run_cli(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> CliOutput {
    let mut cmd = command(cwd);
    cmd.args(args);
    for (k, v) in env {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning the scorehub binary");
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    };
    let out = read_all(Box::new(child.stdout.take().expect("stdout is piped")));
    let err = read_all(Box::new(child.stderr.take().expect("stderr is piped")));
    let deadline = Instant::now() + BINARY_START;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`scorehub {}` did not exit within {BINARY_START:?}; stderr:\n{}",
                args.join(" "),
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    CliOutput {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

// ---------------------------------------------------------------------------
// Fans

/// A WebSocket fan, over plain TCP unless made with [`Fan::from_ws`] (e.g.
/// over TLS, through a proxy).
///
/// Occupancy frames (`t:"o"`, at most one per game per `occupancy.interval`)
/// arrive whenever a game's count of fans changes; a fan skips them unless
/// it asked for them ([`Fan::seeing_occupancy`]), so tests of the state
/// frames see exactly those.
pub(crate) struct Fan<S = TcpStream> {
    ws: WebSocketStream<S>,
    occupancy: bool,
}

impl Fan {
    /// Connects to a `ws://` URL.
    pub(crate) async fn connect(url: &str) -> Fan {
        Fan::connect_inner(url, None).await
    }

    /// Connects with a small socket receive buffer, so the server's writes
    /// block soon when this fan stops reading.
    pub(crate) async fn connect_with_recv_buffer(url: &str, bytes: u32) -> Fan {
        Fan::connect_inner(url, Some(bytes)).await
    }

    async fn connect_inner(url: &str, recv_buffer: Option<u32>) -> Fan {
        let host = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .expect("ws URL has a host");
        let addr: SocketAddr = host.parse().expect("ws URL host is ip:port");
        let socket = TcpSocket::new_v4().expect("a TCP socket");
        if let Some(bytes) = recv_buffer {
            socket
                .set_recv_buffer_size(bytes)
                .expect("setting SO_RCVBUF");
        }
        let stream = socket
            .connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        let (ws, _) = tokio_tungstenite::client_async(url, stream)
            .await
            .unwrap_or_else(|e| panic!("WebSocket handshake with {url} failed: {e}"));
        Fan {
            ws,
            occupancy: false,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Fan<S> {
    /// A fan over a WebSocket its caller opened.
    pub(crate) fn from_ws(ws: WebSocketStream<S>) -> Fan<S> {
        Fan {
            ws,
            occupancy: false,
        }
    }

    /// This fan, also reading occupancy frames (`t:"o"`).
    pub(crate) fn seeing_occupancy(mut self) -> Fan<S> {
        self.occupancy = true;
        self
    }

    /// Whether a decoded frame is one this fan skips.
    fn skips(&self, frame: &DecodedFrame) -> bool {
        !self.occupancy && frame.t == "o"
    }

    /// Sends a JSON text message.
    pub(crate) async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Sends a raw text message.
    pub(crate) async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .expect("sending a text message");
    }

    /// Sends a MessagePack binary message.
    pub(crate) async fn send_msgpack(&mut self, value: &Value) {
        let bytes = rmp_serde::to_vec_named(value).expect("MessagePack encodes");
        self.ws
            .send(Message::binary(bytes))
            .await
            .expect("sending a binary message");
    }

    /// Sends without flushing and without panicking (for floods); false once
    /// the connection is gone.
    pub(crate) async fn feed_text(&mut self, text: &str) -> bool {
        self.ws.feed(Message::text(text.to_owned())).await.is_ok()
    }

    /// Flushes fed messages; false once the connection is gone.
    pub(crate) async fn flush(&mut self) -> bool {
        self.ws.flush().await.is_ok()
    }

    /// The next data frame within `timeout`, or `None`. Control frames are skipped.
    pub(crate) async fn try_next_frame(&mut self, timeout: Duration) -> Option<DecodedFrame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) => panic!("the connection ended while a frame was expected"),
                Ok(Some(Err(e))) => panic!("WebSocket error while a frame was expected: {e}"),
                Ok(Some(Ok(msg))) => msg,
            };
            match msg {
                Message::Binary(bytes) => {
                    let frame = decode_frame(&bytes).unwrap_or_else(|e| {
                        panic!("a server frame is not a MessagePack frame map ({e}): {bytes:?}")
                    });
                    if !self.skips(&frame) {
                        return Some(frame);
                    }
                }
                Message::Text(text) => panic!(
                    "the server sent a text frame {text:?}; every server frame must be binary MessagePack"
                ),
                Message::Close(frame) => {
                    panic!(
                        "the server closed the connection ({frame:?}) while a frame was expected"
                    )
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// The next data frame; panics after `timeout`.
    pub(crate) async fn next_frame(&mut self, timeout: Duration) -> DecodedFrame {
        self.try_next_frame(timeout)
            .await
            .unwrap_or_else(|| panic!("no frame within {timeout:?}"))
    }

    /// Sends a ping and returns every frame received before the pong: once it
    /// returns, the server has handled every message sent before it.
    pub(crate) async fn barrier(&mut self) -> Vec<DecodedFrame> {
        self.send_json(&json!({"op": "ping"})).await;
        let mut before = Vec::new();
        loop {
            let f = self.next_frame(WAIT).await;
            if f.t == "p" {
                return before;
            }
            before.push(f);
        }
    }

    /// Reads (skipping data frames) until a close frame; returns its code.
    pub(crate) async fn expect_close(&mut self, timeout: Duration) -> u16 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("no close frame within {timeout:?}"),
                Ok(None) => panic!("the connection ended without a close frame"),
                Ok(Some(Err(e))) => panic!("WebSocket error before a close frame: {e}"),
                Ok(Some(Ok(msg))) => msg,
            };
            if let Message::Close(frame) = msg {
                return frame
                    .map(|f| u16::from(f.code))
                    .expect("the close frame carries a code");
            }
        }
    }

    /// Every data frame until a close frame, and the close code.
    pub(crate) async fn frames_until_close(
        &mut self,
        timeout: Duration,
    ) -> (u16, Vec<DecodedFrame>) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut frames = Vec::new();
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("no close frame within {timeout:?}"),
                Ok(None) => panic!("the connection ended without a close frame"),
                Ok(Some(Err(e))) => panic!("WebSocket error before a close frame: {e}"),
                Ok(Some(Ok(msg))) => msg,
            };
            match msg {
                Message::Binary(bytes) => {
                    let frame = decode_frame(&bytes)
                        .unwrap_or_else(|e| panic!("not a MessagePack frame map ({e})"));
                    if !self.skips(&frame) {
                        frames.push(frame);
                    }
                }
                Message::Close(frame) => {
                    let code = frame
                        .map(|f| u16::from(f.code))
                        .expect("the close frame carries a code");
                    return (code, frames);
                }
                _ => {}
            }
        }
    }

    /// Closes politely (ignoring errors).
    pub(crate) async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// RFC 7386 JSON Merge Patch, applied in place.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let Value::Object(map) = target else {
        unreachable!("made an object above")
    };
    for (key, value) in fields {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// A fan's view of its games, built only from frames and checked on the way.
#[derive(Debug, Default)]
pub(crate) struct FanState {
    games: HashMap<String, Value>,
    /// `(t, g, q)` of every frame applied, in order.
    pub(crate) log: Vec<(String, String, u64)>,
}

impl FanState {
    /// Applies a snapshot or diff; panics on anything the contract forbids:
    /// a diff before a snapshot, a gap or repeat in `q`, a state whose `seq`
    /// disagrees with `q`.
    pub(crate) fn apply(&mut self, f: &DecodedFrame) {
        let g =
            f.g.clone()
                .unwrap_or_else(|| panic!("state frame without g: {f:?}"));
        let q =
            f.q.unwrap_or_else(|| panic!("state frame without q: {f:?}"));
        let d =
            f.d.as_ref()
                .unwrap_or_else(|| panic!("state frame without d: {f:?}"));
        match f.t.as_str() {
            "s" => {
                assert_eq!(d["seq"].as_u64(), Some(q), "snapshot seq != q: {f:?}");
                assert_eq!(
                    d["game"].as_str(),
                    Some(g.as_str()),
                    "snapshot of {g}: {f:?}"
                );
                self.games.insert(g.clone(), d.clone());
            }
            "d" => {
                assert!(f.ts.is_some(), "diff without ts: {f:?}");
                let state = self
                    .games
                    .get_mut(&g)
                    .unwrap_or_else(|| panic!("diff for {g} before any snapshot: {f:?}"));
                let at = state["seq"].as_u64().expect("state has seq");
                assert_eq!(
                    q,
                    at + 1,
                    "diff q={q} for {g} does not follow seq {at} (frames so far: {:?})",
                    self.log.iter().rev().take(5).collect::<Vec<_>>()
                );
                merge_patch(state, d);
                assert_eq!(
                    state["seq"].as_u64(),
                    Some(q),
                    "after diff q={q} the state's seq is {} (the merge patch must carry seq)",
                    state["seq"]
                );
            }
            other => panic!("FanState given a {other:?} frame: {f:?}"),
        }
        self.log.push((f.t.clone(), g, q));
    }

    /// The state of `game`, if a snapshot arrived.
    pub(crate) fn state(&self, game: &str) -> Option<&Value> {
        self.games.get(game)
    }

    /// The seq the fan holds for `game`.
    pub(crate) fn seq(&self, game: &str) -> Option<u64> {
        self.games.get(game).and_then(|s| s["seq"].as_u64())
    }

    /// How many snapshots of `game` were applied.
    pub(crate) fn snapshots(&self, game: &str) -> usize {
        self.log
            .iter()
            .filter(|(t, g, _)| t == "s" && g == game)
            .count()
    }

    /// Reads frames from `fan` until it holds `game` at `seq`.
    pub(crate) async fn follow<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        fan: &mut Fan<S>,
        game: &str,
        seq: u64,
        timeout: Duration,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.seq(game) != Some(seq) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let f = fan.try_next_frame(left).await.unwrap_or_else(|| {
                panic!(
                    "fan holds {game} at {:?}, expected {seq} within {timeout:?}",
                    self.seq(game)
                )
            });
            self.apply(&f);
        }
    }
}

// ---------------------------------------------------------------------------
// Cluster mode (several nodes over one Redis)

impl TestHub {
    /// A hub in cluster mode over the Redis at `redis_url`, started like the
    /// binary does (`Hub::start`); Redis must answer now.
    pub(crate) async fn start_cluster(redis_url: &str) -> TestHub {
        TestHub::start_cluster_with(redis_url, |_| {}).await
    }

    /// [`TestHub::start_cluster`] with `tweak` applied to the config.
    pub(crate) async fn start_cluster_with(
        redis_url: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> TestHub {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let mut config = Config::default();
        config.storage.dir = dir.path().to_path_buf();
        config.storage.fsync = false;
        config.auth.secret = Some(SECRET.to_owned());
        unlimited_events(&mut config);
        config.redis.url = Some(redis_url.to_owned());
        tweak(&mut config);
        let hub = Hub::start(config, SECRET.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("a cluster hub over {redis_url} starts: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(hub.serve(listener, async move {
            let _ = stopped.await;
        }));
        TestHub {
            api: Api::new(addr),
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }
}

impl BinaryHub {
    /// Runs `scorehub serve` in cluster mode (`SCOREHUB_REDIS__URL`), storage
    /// in `dir`; waits for `listening addr=`.
    pub(crate) fn spawn_cluster(dir: &Path, redis_url: &str) -> BinaryHub {
        BinaryHub::spawn(dir, &[("SCOREHUB_REDIS__URL", redis_url)])
    }
}
