//! Abuse limits: how much one client may ask of the hub.
//!
//! - **Events per token.** Scorekeeper writes are rate-limited per token
//!   `sub` (the identity, so minting more tokens for one desk does not buy
//!   more): `limits.events_per_second` sustained, `limits.events_burst` at
//!   once, by governor's GCRA. One event or one created game costs 1; a batch
//!   of N costs N and is admitted or refused **as a whole**, so a refused
//!   batch changed nothing and the client simply retries it after
//!   `Retry-After` (its items are idempotent). A batch larger than the burst
//!   could never fit and is a 400 naming the limit. `admin` tokens skip the
//!   limit while `limits.exempt_admin` is set.
//! - **WebSocket connects per address.** New upgrades from one client
//!   address (an IPv4 address, or an IPv6 /64, since one host usually holds a
//!   whole /64): `limits.ws_connects_per_ip_per_second` sustained,
//!   `limits.ws_connect_burst` at once; beyond, 429 with `Retry-After`.
//!   The address is the client's as `crate::http::client_ip` resolves it
//!   (behind a proxy in `http.trusted_proxies`, the forwarded one). Loopback
//!   addresses skip it while `limits.exempt_loopback` is set: the load test
//!   opens thousands of connections from 127.0.0.1 (and, without trusted
//!   proxies, a proxy on the same host would make every fan one address).
//! - **Connection cap.** At most `limits.max_connections` fan connections are
//!   open; a [`Slot`] is taken before the upgrade and released when the
//!   session ends (or the upgrade never happens). When none is free, 503 with
//!   `Retry-After`. The cap never exceeds what the process's open-file limit
//!   leaves after [`FD_RESERVE`]: a hub whose descriptors all went to fans
//!   could not open the event log's index files, accept API requests or
//!   reconnect to Redis, so scorekeepers would get errors for the sake of one
//!   more fan.
//! - **SSE streams.** A Server-Sent Events fan (`crate::sse`) takes a fan
//!   slot like a WebSocket (the same per-address rate and cap) **and** one of
//!   `limits.max_sse_streams` stream slots ([`Limits::admit_sse_fan`]). A
//!   stream is a response that never ends, so its connection stays in the
//!   HTTP table with a request in flight and cannot be evicted: the stream
//!   cap, kept below `http.max_connections` by the config, leaves HTTP
//!   connections for scorekeepers and probes however many SSE fans come.
//! - **HTTP connections** ([`HttpCaps`]): `http.max_connections`, and HTTP
//!   and fan connections together below the open-file limit less
//!   [`FILE_RESERVE`]; enforced at accept by `crate::http::conns`.
//!
//! Every refusal counts in `scorehub_rate_limited_total{kind}` (`events`,
//! `ws_connect`, `ws_capacity`, `sse_capacity`, and `http_capacity` from the HTTP table). The keyed buckets grow with distinct keys;
//! keys whose bucket is full again (indistinguishable from new) are swept at
//! most once per [`SWEEP_EVERY`], on the request path, so memory follows the
//! number of recently active clients.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{InsufficientCapacity, Quota, RateLimiter};

use crate::auth::{Claims, Scope};
use crate::config::LimitsConfig;
use crate::error::{ApiError, ErrorBody, ErrorEnvelope};
use crate::metrics as m;

/// How often, at most, keys whose bucket has refilled are forgotten.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The error code of the 503 answered when every connection slot is taken.
pub const TOO_MANY_CONNECTIONS: &str = "too_many_connections";

/// `Retry-After` of the 503 answered when every connection slot is taken.
pub const FULL_RETRY_AFTER: Duration = Duration::from_secs(5);

/// File descriptors never given to fan connections: the event log and its
/// index files, Redis, scorekeepers' and probes' HTTP connections, and the
/// listener's headroom (of which [`FILE_RESERVE`] go to no connection at all).
pub const FD_RESERVE: u64 = 512;

/// File descriptors never given to any connection, HTTP or WebSocket: the
/// event log, the index files being read, Redis, the listener.
pub const FILE_RESERVE: u64 = 128;

/// The caps on plain HTTP connections (`http.max_connections`), fitted to
/// the open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpCaps {
    /// Most plain HTTP connections open at once.
    pub http: usize,
    /// Most HTTP and fan connections open at once together: the open-file
    /// limit less [`FILE_RESERVE`]; `None` when the limit is unknown or
    /// unlimited.
    pub total: Option<usize>,
}

/// The HTTP caps for `configured` (`http.max_connections`) under the
/// open-file limit `fd_limit`: HTTP and fan connections together leave
/// [`FILE_RESERVE`] descriptors, and the HTTP cap is never above that total.
/// Fans alone stop at [`FD_RESERVE`] ([`connection_cap`]), so even with
/// every fan slot taken `FD_RESERVE - FILE_RESERVE` HTTP connections fit.
pub fn http_caps(configured: usize, fd_limit: Option<u64>) -> HttpCaps {
    let total = fd_limit.map(|limit| {
        usize::try_from(limit.saturating_sub(FILE_RESERVE))
            .unwrap_or(usize::MAX)
            .max(2)
    });
    HttpCaps {
        http: total.map_or(configured, |t| configured.min(t)).max(1),
        total,
    }
}

impl HttpCaps {
    /// [`http_caps`] under this process's open-file limit; warns when it
    /// lowers `configured`.
    pub fn fitted(configured: usize) -> HttpCaps {
        let fd_limit = open_file_limit();
        let caps = http_caps(configured, fd_limit);
        if caps.http < configured {
            tracing::warn!(
                max_connections = configured,
                open_file_limit = fd_limit,
                cap = caps.http,
                "http.max_connections is above what the open-file limit allows; HTTP connections are capped at the open-file limit minus {FILE_RESERVE}. Raise the limit (ulimit -n, LimitNOFILE= in systemd, nofile in Docker) to allow more"
            );
        }
        caps
    }
}

/// The connection cap: `configured`, lowered so that fan connections leave
/// [`FD_RESERVE`] descriptors of the open-file limit `fd_limit` (unknown or
/// unlimited: `configured`). At least 1.
pub fn connection_cap(configured: usize, fd_limit: Option<u64>) -> usize {
    let Some(limit) = fd_limit else {
        return configured;
    };
    let allowed = usize::try_from(limit.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
    configured.min(allowed).max(1)
}

/// The process's soft limit of open files; `None` when unlimited.
fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// A rate limiter keyed by `K` on clock `C`.
type Keyed<K, C> = RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The hub's abuse limits; one per process, shared through `AppState`.
///
/// Generic over governor's clock only so tests can drive time by hand.
pub struct Limits<C: Clock = DefaultClock> {
    clock: C,
    events: Keyed<String, C>,
    events_burst: u32,
    exempt_admin: bool,
    connects: Keyed<IpAddr, C>,
    exempt_loopback: bool,
    slots: Arc<Slots>,
    /// The SSE stream slots (`limits.max_sse_streams`).
    sse: Arc<Slots>,
    /// The clock reading sweeps are measured from.
    epoch: C::Instant,
    /// When keys were last swept, in ns since `epoch`.
    last_sweep_ns: AtomicU64,
}

impl<C: Clock> std::fmt::Debug for Limits<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("event_keys", &self.events.len())
            .field("connect_keys", &self.connects.len())
            .field("open_connections", &self.open_connections())
            .finish_non_exhaustive()
    }
}

impl Limits {
    /// The limits `config` asks for, on the monotonic clock, with the
    /// connection cap fitted to the open-file limit (see [`connection_cap`]).
    pub fn new(config: &LimitsConfig) -> Limits {
        let fd_limit = open_file_limit();
        let cap = connection_cap(config.max_connections, fd_limit);
        if cap < config.max_connections {
            tracing::warn!(
                max_connections = config.max_connections,
                open_file_limit = fd_limit,
                cap,
                "limits.max_connections is above what the open-file limit allows; fan connections are capped at the open-file limit minus {FD_RESERVE}. Raise the limit (ulimit -n, LimitNOFILE= in systemd, nofile in Docker) to allow more"
            );
        }
        let mut limits = Limits::with_clock(config, DefaultClock::default());
        limits.slots = Arc::new(Slots {
            open: AtomicUsize::new(0),
            max: cap,
        });
        limits
    }
}

impl<C: Clock + Clone> Limits<C> {
    /// The limits `config` asks for, on `clock`.
    pub fn with_clock(config: &LimitsConfig, clock: C) -> Limits<C> {
        let events = RateLimiter::dashmap_with_clock(
            quota(config.events_per_second, config.events_burst),
            clock.clone(),
        );
        let connects = RateLimiter::dashmap_with_clock(
            quota(
                config.ws_connects_per_ip_per_second,
                config.ws_connect_burst,
            ),
            clock.clone(),
        );
        Limits {
            epoch: clock.now(),
            clock,
            events,
            events_burst: config.events_burst.max(1),
            exempt_admin: config.exempt_admin,
            connects,
            exempt_loopback: config.exempt_loopback,
            slots: Arc::new(Slots {
                open: AtomicUsize::new(0),
                max: config.max_connections,
            }),
            sse: Arc::new(Slots {
                open: AtomicUsize::new(0),
                max: config.max_sse_streams,
            }),
            last_sweep_ns: AtomicU64::new(0),
        }
    }
}

impl<C: Clock> Limits<C> {
    /// Charges `n` events to the token's `sub`. `Ok` when they fit now; else
    /// 429 `rate_limited` with the wait until they will (whole seconds, at
    /// least 1). `n` above `limits.events_burst` can never fit: 400.
    pub fn charge_events(&self, claims: &Claims, n: usize) -> Result<(), ApiError> {
        if self.exempt_admin && claims.scope == Scope::Admin {
            return Ok(());
        }
        let Some(cost) = u32::try_from(n).ok().and_then(NonZeroU32::new) else {
            return if n == 0 { Ok(()) } else { Err(self.too_big(n)) };
        };
        self.maybe_sweep();
        match self.events.check_key_n(&claims.sub, cost) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                refused("events");
                let wait = not_until.wait_time_from(self.clock.now());
                tracing::debug!(sub = %claims.sub, events = n, wait_ms = wait.as_millis() as u64, "events rate-limited");
                Err(ApiError::RateLimited {
                    retry_after: whole_seconds(wait),
                })
            }
            Err(InsufficientCapacity(_)) => Err(self.too_big(n)),
        }
    }

    fn too_big(&self, n: usize) -> ApiError {
        let burst = self.events_burst;
        ApiError::BadRequest(format!(
            "events: a batch of {n} events is more than this hub accepts from one token at once \
             (limits.events_burst = {burst}); split it into batches of at most {burst} events"
        ))
    }

    /// Admits a new fan connection from `peer`: a [`Slot`] to hold for the
    /// connection's life, or the refusal to answer instead of upgrading.
    pub fn admit_fan(&self, peer: IpAddr) -> Result<Slot, Refusal> {
        if !(self.exempt_loopback && is_loopback(peer)) {
            self.maybe_sweep();
            if let Err(not_until) = self.connects.check_key(&address_key(peer)) {
                refused("ws_connect");
                let wait = not_until.wait_time_from(self.clock.now());
                return Err(Refusal::TooFast {
                    retry_after: whole_seconds(wait),
                });
            }
        }
        match self.slots.acquire() {
            Some(slot) => Ok(slot),
            None => {
                refused("ws_capacity");
                Err(Refusal::Full {
                    max: self.slots.max,
                })
            }
        }
    }

    /// Caps SSE streams at half of `http_max` (`http.max_connections`) when
    /// `limits.max_sse_streams` asks for more, with a warning: streams never
    /// end, and the other half stays for scorekeepers and probes.
    pub fn fit_sse_streams(&mut self, http_max: usize) {
        let cap = (http_max / 2).max(1);
        if self.sse.max > cap {
            tracing::warn!(
                max_sse_streams = self.sse.max,
                http_max_connections = http_max,
                cap,
                "limits.max_sse_streams is above half of http.max_connections; SSE streams are capped at {cap} so scorekeepers still find HTTP connections. Raise http.max_connections to allow more"
            );
            self.sse = Arc::new(Slots {
                open: AtomicUsize::new(0),
                max: cap,
            });
        }
    }

    /// SSE streams holding a slot now.
    pub fn open_sse_streams(&self) -> usize {
        self.sse.open.load(Ordering::Acquire)
    }

    /// Admits a new SSE fan from `peer`: its fan slot (as
    /// [`Limits::admit_fan`]) and its stream slot, both to hold for the
    /// stream's life, or the refusal to answer instead of streaming.
    pub fn admit_sse_fan(&self, peer: IpAddr) -> Result<(Slot, Slot), Refusal> {
        let fan = self.admit_fan(peer)?;
        match self.sse.acquire() {
            Some(stream) => Ok((fan, stream)),
            None => {
                refused("sse_capacity");
                Err(Refusal::StreamsFull { max: self.sse.max })
            }
        }
    }

    /// Fan connections holding a slot now.
    pub fn open_connections(&self) -> usize {
        self.slots.open.load(Ordering::Acquire)
    }

    /// Keys tracked now: (token subs, client addresses).
    pub fn tracked_keys(&self) -> (usize, usize) {
        (self.events.len(), self.connects.len())
    }

    /// Forgets keys whose bucket is full again, at most once per [`SWEEP_EVERY`].
    fn maybe_sweep(&self) {
        let now = self.clock.now().duration_since(self.epoch).as_u64();
        let last = self.last_sweep_ns.load(Ordering::Relaxed);
        let every = u64::try_from(SWEEP_EVERY.as_nanos()).unwrap_or(u64::MAX);
        if now.saturating_sub(last) < every
            || self
                .last_sweep_ns
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.events.retain_recent();
        self.events.shrink_to_fit();
        self.connects.retain_recent();
        self.connects.shrink_to_fit();
    }
}

/// A `rate` per second with room for `burst` at once (both at least 1).
fn quota(rate: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

/// Rounds a wait up to whole seconds, at least one (`Retry-After` is in
/// seconds, and a client retrying early would only be refused again).
fn whole_seconds(wait: Duration) -> Duration {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

fn refused(kind: &'static str) {
    metrics::counter!(m::RATE_LIMITED, "kind" => kind).increment(1);
}

/// Whether `ip` is a loopback address (IPv4-mapped IPv6 included).
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
    }
}

/// The key a peer's connects are counted under: an IPv4 address as it is
/// (also when IPv4-mapped), an IPv6 address by its /64 network.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(Ipv6Addr::from(segments))
            }
        },
    }
}

/// The open-connection counter behind [`Slot`]s.
#[derive(Debug)]
struct Slots {
    open: AtomicUsize,
    max: usize,
}

impl Slots {
    fn acquire(self: &Arc<Self>) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }
}

/// One of the `limits.max_connections` connection slots; freed on drop.
#[derive(Debug)]
pub struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a WebSocket upgrade was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The address opens connections faster than its limit: 429.
    TooFast {
        /// How long the client should wait.
        retry_after: Duration,
    },
    /// Every connection slot is taken: 503 `too_many_connections`.
    Full {
        /// The cap (`limits.max_connections`).
        max: usize,
    },
    /// Every SSE stream slot is taken: 503 `too_many_connections`.
    StreamsFull {
        /// The cap (`limits.max_sse_streams`).
        max: usize,
    },
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::TooFast { retry_after } => {
                ApiError::RateLimited { retry_after }.into_response()
            }
            Refusal::Full { max } => {
                let secs = FULL_RETRY_AFTER.as_secs();
                tracing::debug!(
                    max,
                    "WebSocket upgrade refused: every connection slot is taken"
                );
                let error = ErrorBody {
                    code: TOO_MANY_CONNECTIONS,
                    message: format!(
                        "the hub already holds its maximum of {max} fan connections; retry in {secs} s"
                    ),
                };
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, HeaderValue::from(secs))],
                    Json(ErrorEnvelope { error }),
                )
                    .into_response()
            }
            Refusal::StreamsFull { max } => {
                let secs = FULL_RETRY_AFTER.as_secs();
                tracing::debug!(max, "SSE stream refused: every stream slot is taken");
                let error = ErrorBody {
                    code: TOO_MANY_CONNECTIONS,
                    message: format!(
                        "the hub already holds its maximum of {max} SSE streams (limits.max_sse_streams); retry in {secs} s, or connect over the WebSocket"
                    ),
                };
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, HeaderValue::from(secs))],
                    Json(ErrorEnvelope { error }),
                )
                    .into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn claims(sub: &str, scope: Scope) -> Claims {
        Claims {
            sub: sub.into(),
            exp: u64::MAX,
            iat: 0,
            nbf: None,
            scope,
            games: vec!["nba:*".into()],
        }
    }

    fn limits(config: LimitsConfig) -> (Limits<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (Limits::with_clock(&config, clock.clone()), clock)
    }

    fn retry_after(e: ApiError) -> Duration {
        match e {
            ApiError::RateLimited { retry_after } => retry_after,
            other => panic!("expected 429, got {other:?}"),
        }
    }

    #[test]
    fn events_are_limited_per_sub_and_batches_whole() {
        let (l, clock) = limits(LimitsConfig {
            events_per_second: 10,
            events_burst: 20,
            ..LimitsConfig::default()
        });
        let alice = claims("alice", Scope::Scorekeeper);
        let bob = claims("bob", Scope::Scorekeeper);
        l.charge_events(&alice, 15).unwrap();
        // 5 left: a batch of 6 is refused whole, 2.5 s until...
        let wait = retry_after(l.charge_events(&alice, 6).unwrap_err());
        assert_eq!(wait, Duration::from_secs(1), "0.1 s rounds up to 1 s");
        l.charge_events(&alice, 5).unwrap();
        let wait = retry_after(l.charge_events(&alice, 20).unwrap_err());
        assert_eq!(wait, Duration::from_secs(2), "20 events at 10/s");
        // Another sub has its own bucket.
        l.charge_events(&bob, 20).unwrap();
        clock.advance(Duration::from_secs(2));
        l.charge_events(&alice, 20).unwrap();
        // Never more than the burst.
        let e = l.charge_events(&bob, 21).unwrap_err();
        assert_eq!(e.code(), "bad_request");
        assert!(e.message().contains("limits.events_burst = 20"), "{e}");
        l.charge_events(&bob, 0).unwrap();
    }

    #[test]
    fn admin_tokens_skip_the_event_limit_only_when_exempt() {
        let config = LimitsConfig {
            events_per_second: 1,
            events_burst: 1,
            ..LimitsConfig::default()
        };
        let admin = claims("ops", Scope::Admin);
        let (l, _) = limits(config.clone());
        for _ in 0..100 {
            l.charge_events(&admin, 1).unwrap();
        }
        let (l, _) = limits(LimitsConfig {
            exempt_admin: false,
            ..config
        });
        l.charge_events(&admin, 1).unwrap();
        assert!(l.charge_events(&admin, 1).is_err());
    }

    #[test]
    fn connects_are_limited_per_address_and_ipv6_by_64() {
        let (l, clock) = limits(LimitsConfig {
            ws_connects_per_ip_per_second: 2,
            ws_connect_burst: 3,
            exempt_loopback: false,
            ..LimitsConfig::default()
        });
        let a: IpAddr = "203.0.113.7".parse().unwrap();
        let b: IpAddr = "203.0.113.8".parse().unwrap();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(l.admit_fan(a).unwrap());
        }
        assert_eq!(
            l.admit_fan(a).unwrap_err(),
            Refusal::TooFast {
                retry_after: Duration::from_secs(1)
            }
        );
        held.push(l.admit_fan(b).unwrap());
        clock.advance(Duration::from_millis(500));
        held.push(l.admit_fan(a).unwrap());

        // Two hosts of one /64 share a bucket; another /64 does not.
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        for host in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"] {
            held.push(l.admit_fan(v6(host)).unwrap());
        }
        assert!(l.admit_fan(v6("2001:db8:1:2::4")).is_err());
        held.push(l.admit_fan(v6("2001:db8:1:3::1")).unwrap());
        // IPv4-mapped IPv6 is the IPv4 address.
        assert!(l.admit_fan(v6("::ffff:203.0.113.7")).is_err());
        assert_eq!(l.open_connections(), held.len());
    }

    #[test]
    fn loopback_is_exempt_only_when_configured() {
        let config = LimitsConfig {
            ws_connects_per_ip_per_second: 1,
            ws_connect_burst: 1,
            ..LimitsConfig::default()
        };
        let (l, _) = limits(config.clone());
        for ip in ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"] {
            for _ in 0..10 {
                drop(l.admit_fan(ip.parse().unwrap()).unwrap());
            }
        }
        let (l, _) = limits(LimitsConfig {
            exempt_loopback: false,
            ..config
        });
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        drop(l.admit_fan(local).unwrap());
        assert!(matches!(l.admit_fan(local), Err(Refusal::TooFast { .. })));
    }

    #[test]
    fn the_connection_cap_leaves_descriptors_for_everything_else() {
        assert_eq!(connection_cap(50_000, Some(20_000)), 20_000 - 512);
        assert_eq!(
            connection_cap(1_000, Some(20_000)),
            1_000,
            "below the limit"
        );
        assert_eq!(connection_cap(50_000, None), 50_000, "unlimited");
        assert_eq!(
            connection_cap(50_000, Some(100)),
            1,
            "a tiny limit still serves one fan"
        );
        // This process's own limit is applied by `Limits::new`.
        let limits = Limits::new(&LimitsConfig::default());
        let want = connection_cap(LimitsConfig::default().max_connections, open_file_limit());
        assert_eq!(limits.slots.max, want);
    }

    #[test]
    fn http_connections_and_fans_together_leave_the_file_reserve() {
        let caps = http_caps(8192, Some(20_000));
        assert_eq!(caps.http, 8192);
        assert_eq!(caps.total, Some(20_000 - 128));
        // Every fan slot taken still leaves room for HTTP connections.
        let fans = connection_cap(50_000, Some(20_000));
        assert_eq!(caps.total.unwrap() - fans, 512 - 128);
        assert_eq!(http_caps(50_000, Some(1_000)).http, 1_000 - 128);
        assert_eq!(
            http_caps(8192, None),
            HttpCaps {
                http: 8192,
                total: None
            }
        );
        assert_eq!(
            http_caps(8192, Some(10)).http,
            2,
            "a tiny limit still serves"
        );
    }

    #[test]
    fn the_connection_cap_frees_a_slot_when_one_is_dropped() {
        let (l, _) = limits(LimitsConfig {
            max_connections: 2,
            ..LimitsConfig::default()
        });
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let first = l.admit_fan(local).unwrap();
        let _second = l.admit_fan(local).unwrap();
        assert_eq!(l.admit_fan(local).unwrap_err(), Refusal::Full { max: 2 });
        drop(first);
        assert_eq!(l.open_connections(), 1);
        let _third = l.admit_fan(local).unwrap();
        assert_eq!(l.open_connections(), 2);
    }

    #[test]
    fn idle_keys_are_swept() {
        let (l, clock) = limits(LimitsConfig {
            events_per_second: 100,
            events_burst: 100,
            exempt_loopback: false,
            ..LimitsConfig::default()
        });
        for i in 0..50 {
            l.charge_events(&claims(&format!("s{i}"), Scope::Scorekeeper), 1)
                .unwrap();
            let ip = IpAddr::from([198, 51, 100, i]);
            drop(l.admit_fan(ip).unwrap());
        }
        assert_eq!(l.tracked_keys(), (50, 50));
        clock.advance(SWEEP_EVERY);
        l.charge_events(&claims("late", Scope::Scorekeeper), 1)
            .unwrap();
        assert_eq!(l.tracked_keys(), (1, 0), "only the fresh key is left");
    }

    #[tokio::test]
    async fn refusals_answer_429_and_503_with_retry_after() {
        let r = Refusal::TooFast {
            retry_after: Duration::from_secs(2),
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");

        let r = Refusal::Full { max: 3 }.into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"]["code"], "too_many_connections");
        assert!(body["error"]["message"].as_str().unwrap().contains('3'));
    }

    #[test]
    fn waits_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(
            whole_seconds(Duration::from_millis(1001)),
            Duration::from_secs(2)
        );
        assert_eq!(
            whole_seconds(Duration::from_secs(3)),
            Duration::from_secs(3)
        );
    }
}
