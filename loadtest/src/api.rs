//! The hub's HTTP side, as the contract describes it: health, creating games,
//! reading a game's state, posting events. Nothing here knows the hub's
//! internals.
//!
//! Every request runs on the control thread ([`control`]), a runtime of its
//! own: the fans' runtime may have thousands of tasks with frames to read
//! (when fans catch up after the window, say), and a request or its answer
//! waiting in that queue would time out, or measure this process instead of
//! the hub.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::runtime::Handle;

/// The control thread's runtime: HTTP requests to the hubs and the posters
/// run there, apart from the fans. Started on first use, for the process's
/// life.
pub(crate) fn control() -> Result<Handle> {
    static CONTROL: OnceLock<Handle> = OnceLock::new();
    if let Some(handle) = CONTROL.get() {
        return Ok(handle.clone());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the control thread's runtime")?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("loadtest-control".into())
        .spawn(move || {
            raise_priority();
            runtime.block_on(std::future::pending::<()>())
        })
        .context("starting the control thread")?;
    // Two first callers at once: one thread stays idle, harmless.
    Ok(CONTROL.get_or_init(|| handle).clone())
}

/// The nice value the control thread asks for: a higher priority than the
/// fans' threads (at the process's own), so a post is sent, and its
/// answer timed, when it arrives rather than when the scheduler next gets to
/// this thread among the generator's busy fan threads. The control thread
/// stands for a scorekeeper on another machine; it runs a few requests a
/// second, so the CPU it takes from the hub is negligible.
const CONTROL_NICE: i32 = -10;

/// Raises the calling thread's priority to [`CONTROL_NICE`] where the
/// process may (root or `CAP_SYS_NICE`); elsewhere the thread stays at the
/// process's priority and says so once.
fn raise_priority() {
    let me = rustix::thread::gettid();
    // On Linux a thread id names just that thread for setpriority.
    if let Err(e) = rustix::process::setpriority_process(Some(me), CONTROL_NICE) {
        eprintln!(
            "loadtest: the control thread stays at the default priority ({e}): \
             post latency may include this process's own queueing; run as root to avoid it"
        );
    }
}

/// An answer read whole on the control thread.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

impl Answer {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn json<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_slice(&self.body)
    }

    fn text(&self) -> Result<String, std::str::Utf8Error> {
        std::str::from_utf8(&self.body).map(str::to_owned)
    }

    /// The first few hundred characters of the body, for error messages.
    fn short(&self) -> String {
        match self.text() {
            Ok(text) => text.chars().take(300).collect(),
            Err(e) => format!("<unreadable: {e}>"),
        }
    }
}

/// Sends `request` and reads its answer on the control thread.
async fn send(request: reqwest::RequestBuilder) -> Result<Answer> {
    let exchange = async move {
        let response = request.send().await?;
        let status = response.status();
        let body = response.bytes().await?.to_vec();
        Ok::<_, reqwest::Error>(Answer { status, body })
    };
    control()?
        .spawn(exchange)
        .await
        .map_err(|e| anyhow!("the control thread dropped a request: {e}"))?
        .map_err(anyhow::Error::from)
}

/// Sends `request` (a `GET` of `url`) and insists on a success status.
async fn get_ok(request: reqwest::RequestBuilder, url: &str) -> Result<Answer> {
    let response = send(request).await.with_context(|| format!("GET {url}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!("GET {url} answered {status}; body: {}", response.short());
    }
    Ok(response)
}

/// How long one HTTP request to the hub may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `GET /metrics` may take: the window's edges wait for it.
const METRICS_TIMEOUT: Duration = Duration::from_secs(3);

/// A cheap-to-clone client for one hub.
#[derive(Clone, Debug)]
pub(crate) struct Api {
    /// The shared connection pool.
    client: reqwest::Client,
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:8080`.
    base: Arc<str>,
    /// The `Authorization` header value, `Bearer <token>`.
    bearer: Arc<str>,
}

fn client(pool_size: usize) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(pool_size)
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")
}

/// What the hub answered to one posted event.
#[derive(Debug)]
pub(crate) enum PostReply {
    /// `200`: applied, or (`duplicate: true`) recognised as a retry.
    Accepted {
        /// The hub said it had seen this `event_id` before.
        duplicate: bool,
        /// The event's `seq`, as the hub answered it.
        seq: Option<u64>,
    },
    /// `429`: the hub's rate limiter refused it.
    RateLimited,
    /// Any other status, with a short description.
    Refused(String),
}

impl Api {
    /// A client for the hub at `base` (an `http://` URL), authenticating with `token`.
    pub(crate) fn new(base: &str, token: &str, pool_size: usize) -> Result<Self> {
        Ok(Self {
            client: client(pool_size)?,
            base: base.trim_end_matches('/').into(),
            bearer: format!("Bearer {token}").into(),
        })
    }

    /// The hub's base URL, without a trailing slash.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// Checks that the hub answers `GET /healthz` with `200`.
    pub(crate) async fn health(&self) -> Result<()> {
        let url = format!("{}/healthz", self.base);
        let response = send(self.client.get(&url)).await.with_context(|| {
            format!("the hub does not answer at {url}: is `scorehub serve` running there?")
        })?;
        if !response.status().is_success() {
            bail!("GET {url} answered {}", response.status());
        }
        Ok(())
    }

    /// Waits until the hub answers `GET /readyz` with `200` (it can accept
    /// events: in cluster mode, Redis is reachable), for at most `max_wait`.
    pub(crate) async fn wait_ready(&self, max_wait: Duration) -> Result<()> {
        let url = format!("{}/readyz", self.base);
        let start = std::time::Instant::now();
        loop {
            let last = match send(self.client.get(&url)).await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => {
                    let status = response.status();
                    format!("{status}: {}", response.short())
                }
                Err(e) => format!("{e}"),
            };
            if start.elapsed() >= max_wait {
                bail!("GET {url} did not answer 200 within {max_wait:?}; last answer: {last}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates game `id` with a fixed initial body (`201`, or `200` when it
    /// already exists with the same body).
    pub(crate) async fn create_game(&self, id: &str) -> Result<()> {
        let url = format!("{}/v1/games/{id}", self.base);
        let body = json!({"home": {"name": "H"}, "away": {"name": "A"}});
        let response = send(
            self.client
                .put(&url)
                .header(reqwest::header::AUTHORIZATION, &*self.bearer)
                .json(&body),
        )
        .await
        .with_context(|| format!("PUT {url}"))?;
        let status = response.status().as_u16();
        if status == 200 || status == 201 {
            return Ok(());
        }
        let text = response.short();
        let hint = match status {
            401 => {
                ": the token is missing, malformed or expired (mint one with `scorehub token --scope admin`)"
            }
            403 => ": the token may not write this game (mint one with `--games '<league>:*'`)",
            409 => ": the game exists with another initial body (try another --league)",
            _ => "",
        };
        bail!("PUT {url} answered {status}{hint}; body: {text}");
    }

    /// Reads game `id`'s current state with `GET /v1/games/{id}`: the
    /// state's fields, without the `watching` count beside them (fans'
    /// states do not hold it, and it moves while fans come and go).
    pub(crate) async fn game(&self, id: &str) -> Result<Value> {
        let url = format!("{}/v1/games/{id}", self.base);
        let response = get_ok(self.client.get(&url), &url).await?;
        let mut state: Value = response
            .json()
            .with_context(|| format!("GET {url}: the body is not JSON"))?;
        if let Some(fields) = state.as_object_mut() {
            fields.remove("watching");
        }
        Ok(state)
    }

    /// One page of game `id`'s event history (`GET /v1/games/{id}/events`)
    /// after `since`: `(seq, event_id)` of each entry, oldest first, and the
    /// `since` of the next page.
    pub(crate) async fn events_page(
        &self,
        id: &str,
        since: u64,
        limit: usize,
    ) -> Result<(Vec<(u64, String)>, u64)> {
        let url = format!(
            "{}/v1/games/{id}/events?since={since}&limit={limit}",
            self.base
        );
        let request = self
            .client
            .get(&url)
            .header(reqwest::header::AUTHORIZATION, &*self.bearer);
        let page: Value = get_ok(request, &url)
            .await?
            .json()
            .with_context(|| format!("GET {url}: the body is not JSON"))?;
        let entries = page
            .get("events")
            .and_then(Value::as_array)
            .with_context(|| format!("GET {url}: no `events` list in {page}"))?
            .iter()
            .filter_map(|entry| {
                let seq = entry.get("seq")?.as_u64()?;
                let id = entry.get("event_id")?.as_str()?;
                Some((seq, id.to_string()))
            })
            .collect();
        let next = page.get("next").and_then(Value::as_u64).unwrap_or(since);
        Ok((entries, next))
    }

    /// The hub's Prometheus page (`GET /metrics`, text exposition format).
    /// Bounded by [`METRICS_TIMEOUT`], as it is read at the measured window's edges.
    pub(crate) async fn metrics(&self) -> Result<String> {
        let url = format!("{}/metrics", self.base);
        get_ok(self.client.get(&url).timeout(METRICS_TIMEOUT), &url)
            .await?
            .text()
            .with_context(|| format!("GET {url}: reading the body"))
    }

    /// Posts one event to game `id`. A transport failure is an `Err`; every
    /// HTTP answer is a [`PostReply`].
    pub(crate) async fn post_event(&self, id: &str, event: &Value) -> Result<PostReply> {
        let url = format!("{}/v1/games/{id}/events", self.base);
        let response = send(
            self.client
                .post(&url)
                .header(reqwest::header::AUTHORIZATION, &*self.bearer)
                .json(event),
        )
        .await
        .with_context(|| format!("POST {url}"))?;
        let status = response.status().as_u16();
        match status {
            200 => {
                let body: Value = response
                    .json()
                    .with_context(|| format!("POST {url}: the 200 body is not JSON"))?;
                let duplicate = body.get("duplicate").and_then(Value::as_bool) == Some(true);
                let seq = body.get("seq").and_then(Value::as_u64);
                Ok(PostReply::Accepted { duplicate, seq })
            }
            429 => Ok(PostReply::RateLimited),
            _ => {
                let text = response.short();
                Ok(PostReply::Refused(format!(
                    "POST {url} answered {status}; body: {text}"
                )))
            }
        }
    }
}
