//! Configuration: raw file + environment → validated [`Config`].
//!
//! Loading happens in two stages, like ripgrep's argument handling:
//!
//! 1. **Raw** (`raw`): figment merges the TOML file (`--config FILE` or
//!    `SCOREHUB_CONFIG`) with the environment (`SCOREHUB_<SECTION>__<KEY>`,
//!    which wins) into `RawConfig`-shaped data (`sources`). Every section
//!    denies unknown fields; every raw field is optional: "not given" is
//!    distinct from "given".
//! 2. **Validated** (`validate`): each given value is parsed and checked;
//!    every value not given takes its built-in default from [`Config::default`].
//!
//! Any failure becomes one [`ConfigError`] whose `Display` is a single line that
//! names the key, the problem, the fix and where the bad value came from, e.g.
//! `config error: ws.ping_interval: "abc" is not a duration (use e.g. "20s") (from SCOREHUB_WS__PING_INTERVAL)`.
//!
//! Layout, in load order:
//!
//! - this module: the validated types, their defaults, the shutdown budget and
//!   the entry point [`Config::load`];
//! - `sources`: the file and environment layers, and which one set a key;
//! - `raw`: the types as written, and figment's failures as [`ConfigError`]s;
//! - `validate`: raw → [`Config`];
//! - `error`: [`ConfigError`] and [`ValueError`].
//!
//! `config/default.toml` lists every key with its default; a unit test keeps
//! it equal to [`Config::default`].

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod error;
mod raw;
mod sources;
#[cfg(test)]
mod test_support;
mod validate;

pub use error::{ConfigError, ValueError};

/// The time from SIGTERM to exit, and how it is shared out: the one place
/// these numbers live. The `http.shutdown_timeout` default and cap, the
/// server's drain deadline and `main`'s watchdog all derive from it.
///
/// ```text
/// SIGTERM ── drain: requests, fan sessions ──┬─ flush log ─┬─ exit ─┤
///            ≤ MAX_DRAIN (9 s)               │   0.5 s     │ 0.5 s  │ TOTAL (10 s)
///                                            drain deadline WATCHDOG
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownBudget {
    drain: Duration,
}

impl ShutdownBudget {
    /// Longest time from SIGTERM to exit: the contract's 10 s. Also the
    /// default and the largest accepted `http.shutdown_timeout`.
    pub const TOTAL: Duration = Duration::from_secs(10);
    /// Kept at the end of [`Self::TOTAL`] for the process to exit once `main`
    /// stops waiting.
    pub const EXIT_MARGIN: Duration = Duration::from_millis(500);
    /// Kept after the drain for flushing the event log and closing the games.
    pub const FLUSH_RESERVE: Duration = Duration::from_millis(500);
    /// After SIGTERM, `main` stops waiting for the server and exits:
    /// [`Self::TOTAL`] − [`Self::EXIT_MARGIN`].
    pub const WATCHDOG: Duration = Self::TOTAL.saturating_sub(Self::EXIT_MARGIN);
    /// Longest drain, whatever `http.shutdown_timeout` says:
    /// [`Self::WATCHDOG`] − [`Self::FLUSH_RESERVE`].
    pub const MAX_DRAIN: Duration = Self::WATCHDOG.saturating_sub(Self::FLUSH_RESERVE);

    /// The budget for a configured `http.shutdown_timeout`.
    pub fn new(shutdown_timeout: Duration) -> Self {
        ShutdownBudget {
            drain: shutdown_timeout.min(Self::MAX_DRAIN),
        }
    }

    /// How long in-flight requests and fan sessions get to finish after
    /// SIGTERM: `http.shutdown_timeout`, at most [`Self::MAX_DRAIN`].
    pub fn drain(self) -> Duration {
        self.drain
    }
}
/// Prefix of every configuration environment variable.
pub const ENV_PREFIX: &str = "SCOREHUB_";

/// The environment variable naming the config file (used when `--config` is absent).
pub const ENV_CONFIG_FILE: &str = "SCOREHUB_CONFIG";

/// Minimum length of `auth.secret`, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// The validated configuration of one scorehub process.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// `[http]`: the HTTP + WebSocket listener.
    pub http: HttpConfig,
    /// `[auth]`: token signing.
    pub auth: AuthConfig,
    /// `[redis]`: cluster mode.
    pub redis: RedisConfig,
    /// `[storage]`: the embedded event log (single-node mode).
    pub storage: StorageConfig,
    /// `[log]`: logging output.
    pub log: LogConfig,
    /// `[ws]`: per-connection WebSocket limits.
    pub ws: WsConfig,
    /// `[games]`: per-game actor sizing.
    pub games: GamesConfig,
    /// `[limits]`: abuse limits: per-token and per-address rates, the connection cap.
    pub limits: LimitsConfig,
    /// `[occupancy]`: counting who watches each game.
    pub occupancy: OccupancyConfig,
}

/// `[http]`: the HTTP + WebSocket listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Address to bind; port 0 picks any free port. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Largest accepted request body, in bytes. Default 65536.
    pub max_body_bytes: usize,
    /// How long in-flight requests and fan sockets get to finish after SIGTERM
    /// before they are dropped; at most [`ShutdownBudget::TOTAL`], and the
    /// drain itself stops at [`ShutdownBudget::MAX_DRAIN`] so the log is
    /// flushed in time. Default 10 s.
    pub shutdown_timeout: Duration,
    /// Browser origins (`scheme://host[:port]`) allowed to call the `/v1` API
    /// from their pages (CORS), or `["*"]` for any. Default empty: same origin
    /// only, no CORS headers.
    pub cors_origins: Vec<String>,
    /// A request head (request line and headers) must arrive whole within
    /// this long of its first byte, or the connection is closed: a client
    /// trickling its headers (slowloris) holds a connection this long at
    /// most. Default 10 s.
    pub header_read_timeout: Duration,
    /// A request body must arrive whole within this long of its head, or the
    /// request is answered `408 request_timeout` and the connection closed.
    /// Default 30 s.
    pub body_timeout: Duration,
    /// A connection with no request in flight for this long (a keep-alive
    /// connection between requests, or a new one that sent nothing) is
    /// closed. Default 60 s.
    pub idle_timeout: Duration,
    /// Most HTTP connections open at once, not counting those upgraded to a
    /// WebSocket (fans: `limits.max_connections`). When every one is taken,
    /// the one idle longest is closed to make room, or, when all have a
    /// request in flight, the new connection is refused. Lowered to fit the
    /// open-file limit (see [`crate::limits::http_caps`]). Default
    /// 8192.
    pub max_connections: usize,
    /// Networks of the reverse proxies in front of the hub (CIDR, or single
    /// addresses as /32 or /128). Only from a peer inside one of them is the
    /// [`HttpConfig::proxy_header`] believed for the client's address; from
    /// any other peer it is ignored. Default empty: the TCP peer is the
    /// client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The header the trusted proxies append the client's address to. The
    /// other forwarding header is never read: a client could have written it
    /// and a proxy that does not maintain it passes it along unchanged.
    /// Default [`ProxyHeader::XForwardedFor`].
    pub proxy_header: ProxyHeader,
}

/// The forwarding header a reverse proxy appends the client's address to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, most load
    /// balancers).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

impl ProxyHeader {
    /// The config spelling, which is also the header's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyHeader::XForwardedFor => "x-forwarded-for",
            ProxyHeader::Forwarded => "forwarded",
        }
    }
}

impl fmt::Display for ProxyHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 64 * 1024,
            shutdown_timeout: ShutdownBudget::TOTAL,
            cors_origins: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 8192,
            trusted_proxies: Vec::new(),
            proxy_header: ProxyHeader::XForwardedFor,
        }
    }
}

impl HttpConfig {
    /// How this `shutdown_timeout` fits in the hub's shutdown budget.
    pub fn shutdown_budget(&self) -> ShutdownBudget {
        ShutdownBudget::new(self.shutdown_timeout)
    }
}

/// `[auth]`: token signing.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct AuthConfig {
    /// HS256 secret, at least [`MIN_SECRET_BYTES`] bytes. `None` = `serve` generates
    /// one for this run only. Never printed by `Debug`.
    pub secret: Option<String>,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = self.secret.as_ref().map(|_| Redacted);
        f.debug_struct("AuthConfig")
            .field("secret", &secret)
            .finish()
    }
}

/// Prints `<redacted>` in place of a secret.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `[redis]`: cluster mode.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URL; `None` = single node. `Debug` hides any password.
    pub url: Option<String>,
    /// Seed nodes of a Redis Cluster (instead of `url`); empty = no cluster.
    /// `Debug` hides any password.
    pub cluster: Vec<String>,
    /// Redis Sentinels that watch the primary (instead of `url`); empty =
    /// none. `Debug` hides any password.
    pub sentinels: Vec<String>,
    /// The name the Sentinels monitor the primary under. Default `mymaster`.
    pub sentinel_master: String,
    /// Prefix of every key and channel, so deployments can share one Redis
    /// without seeing each other. Default `sh`.
    pub prefix: String,
    /// Certificates for `rediss://`: a private CA, a client certificate.
    pub tls: RedisTls,
    /// Replicas that must have each commit before it is acknowledged
    /// (`WAIT`); `0` = answer once the primary has it. Default 0.
    pub min_replicas_acked: u32,
    /// Longest wait for [`RedisConfig::min_replicas_acked`] replicas; past it
    /// the event is answered `503` (it may still be applied). Default 500 ms.
    pub replica_ack_timeout: Duration,
    /// Entries kept in each game's Redis stream (trimmed approximately, never
    /// below this): how far back the audit trail and replica repairs reach.
    /// Default 10 000; at least `games.history`.
    pub stream_max_len: usize,
}

/// `[redis]` TLS files (PEM), for `rediss://` URLs only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedisTls {
    /// CA certificate(s) that sign the server's certificate, trusted instead
    /// of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain, for servers that require one
    /// (`tls-auth-clients yes`); needs [`RedisTls::client_key`].
    pub client_cert: Option<PathBuf>,
    /// Private key of [`RedisTls::client_cert`].
    pub client_key: Option<PathBuf>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: None,
            cluster: Vec::new(),
            sentinels: Vec::new(),
            sentinel_master: "mymaster".to_owned(),
            prefix: "sh".to_owned(),
            tls: RedisTls::default(),
            min_replicas_acked: 0,
            replica_ack_timeout: Duration::from_millis(500),
            stream_max_len: 10_000,
        }
    }
}

impl RedisConfig {
    /// Whether nodes share their games through Redis (`url` or `cluster`
    /// set), rather than one node keeping them in its embedded log.
    pub fn shared(&self) -> bool {
        self.url.is_some() || !self.cluster.is_empty() || !self.sentinels.is_empty()
    }

    /// Where Redis is, for logs: the URL, the cluster's seeds or the
    /// Sentinels, without passwords.
    pub fn shown(&self) -> String {
        let list = |urls: &[String]| {
            urls.iter()
                .map(|u| redact_url(u))
                .collect::<Vec<_>>()
                .join(",")
        };
        match &self.url {
            Some(url) => redact_url(url),
            None if !self.sentinels.is_empty() => format!(
                "{} (Sentinels {})",
                self.sentinel_master,
                list(&self.sentinels)
            ),
            None => list(&self.cluster),
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.url.as_deref().map(redact_url);
        let cluster: Vec<String> = self.cluster.iter().map(|u| redact_url(u)).collect();
        f.debug_struct("RedisConfig")
            .field("url", &url)
            .field("cluster", &cluster)
            .field(
                "sentinels",
                &self
                    .sentinels
                    .iter()
                    .map(|u| redact_url(u))
                    .collect::<Vec<_>>(),
            )
            .field("sentinel_master", &self.sentinel_master)
            .field("prefix", &self.prefix)
            .field("tls", &self.tls)
            .field("min_replicas_acked", &self.min_replicas_acked)
            .field("replica_ack_timeout", &self.replica_ack_timeout)
            .field("stream_max_len", &self.stream_max_len)
            .finish()
    }
}

/// Replaces the user-info part of a URL (`redis://user:pass@host`) with
/// `<redacted>`. Everything up to the last `@` goes: a password may hold
/// `/`, `?` or `#` (base64 does), and hiding too much is harmless.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rfind('@') {
        Some(at) => format!("{scheme}://<redacted>@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// `[storage]`: the embedded event log (single-node mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// Directory of the event log. Default `./data`.
    pub dir: PathBuf,
    /// Whether every append is fsynced before it is acknowledged. Default `true`.
    pub fsync: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            dir: PathBuf::from("./data"),
            fsync: true,
        }
    }
}

/// `[log]`: logging output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Output format. Default [`LogFormat::Pretty`].
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `scorehub=debug,info`; `RUST_LOG`
    /// overrides it when set. Default `info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Pretty,
            level: "info".to_owned(),
        }
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable single lines (`pretty`).
    #[default]
    Pretty,
    /// One JSON object per line (`json`).
    Json,
}

impl LogFormat {
    /// The config spelling: `pretty` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[ws]`: per-connection WebSocket limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsConfig {
    /// Most game subscriptions one connection may hold. Default 1000.
    pub max_subscriptions: usize,
    /// Largest accepted client message, in bytes. Default 16384.
    pub max_message_bytes: usize,
    /// Outgoing frames queued per connection before conflation. Default 1024.
    pub queue_frames: usize,
    /// Outgoing bytes queued per connection before conflation. Default 4 MiB.
    pub max_queue_bytes: usize,
    /// How often an idle connection is pinged. Default 20 s.
    pub ping_interval: Duration,
    /// A connection silent for this long is dropped. Default 60 s.
    pub idle_timeout: Duration,
    /// Sustained client messages per second before the flood limit. Default 20.
    pub messages_per_second: u32,
    /// Client messages allowed in a burst above the sustained rate. Default 60.
    pub message_burst: u32,
    /// A socket write taking longer than this drops the connection. Default 10 s.
    pub write_timeout: Duration,
    /// A fan whose queue stays conflated (it cannot keep up) this long is
    /// disconnected with close code 1008. Default 30 s.
    pub stuck_timeout: Duration,
    /// Kernel send buffer asked for each fan's socket (`SO_SNDBUF`; Linux
    /// doubles it), which bounds the kernel memory a fan that stops reading
    /// can pin before its queue conflates. 0 leaves the kernel's
    /// auto-tuning, which may grow it to `net.ipv4.tcp_wmem`'s maximum
    /// (4 MiB by default). Default 256 KiB.
    pub send_buffer_bytes: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            max_subscriptions: 1000,
            max_message_bytes: 16 * 1024,
            queue_frames: 1024,
            max_queue_bytes: 4 * 1024 * 1024,
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            messages_per_second: 20,
            message_burst: 60,
            write_timeout: Duration::from_secs(10),
            stuck_timeout: Duration::from_secs(30),
            send_buffer_bytes: 256 * 1024,
        }
    }
}

/// `[games]`: per-game actor sizing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GamesConfig {
    /// Diffs kept per game so reconnecting fans can resume. Default 1000.
    pub history: usize,
    /// Commands queued per game actor before callers wait. Default 1024.
    pub mailbox: usize,
    /// A game with no local fan and no local request for this long is
    /// unloaded: its actor, idempotency record and history leave memory.
    /// Single node: its last state stays for listing and reading, and its
    /// next event or subscription loads it again from the event log.
    /// Cluster: its Redis channel is unsubscribed too; it loads again from
    /// Redis. Default 60 s.
    pub idle_unload: Duration,
    /// How long a finished game (status `final` or `cancelled`) is kept
    /// after the last event that left it finished; then it is gone, like a
    /// game never created. Cluster: its Redis keys expire. Single node: it
    /// is no longer served, and its records leave the event log at the
    /// next start whose compaction it makes worth it. Default 7 days; at
    /// most [`MAX_RETENTION`].
    pub retention: Duration,
    /// Shards (tasks) over which a game with more than `inline_fans` fans
    /// spreads them, so one event's fan-out runs on every core. Default 0:
    /// one per CPU the process may run on.
    pub fan_shards: usize,
    /// Most fans a game's actor pushes each frame to itself; a game with
    /// more moves them to fan shards. Inline is cheaper per delivery (no
    /// hand-off between tasks), but the actor's next event waits for the
    /// pass: at about 5 µs a write, the default
    /// [`crate::fanout::fans::INLINE_FANS`] (512) is at most a few ms.
    pub inline_fans: usize,
}

/// `[occupancy]`: how often each node reports its fan counts and fans hear
/// of a change, and how long a report lives (cluster mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OccupancyConfig {
    /// How often a node reports its fan count of each loaded game and
    /// sends an occupancy frame to the fans of each game whose count changed
    /// (at most one per game per interval). At least
    /// [`MIN_OCCUPANCY_INTERVAL`]. Default 1 s.
    pub interval: Duration,
    /// How long a node's report lives in Redis: a node that dies stops
    /// being counted within this long (plus one interval for the others to
    /// read it). At least twice `interval`, so a live node's report never
    /// lapses between two of its reports. Default 5 s.
    pub ttl: Duration,
}

/// Shortest `occupancy.interval`.
pub const MIN_OCCUPANCY_INTERVAL: Duration = Duration::from_millis(100);

impl Default for OccupancyConfig {
    fn default() -> Self {
        OccupancyConfig {
            interval: Duration::from_secs(1),
            ttl: Duration::from_secs(5),
        }
    }
}

/// Longest `games.retention` (100 years): expiry times must stay far
/// inside what Redis and Unix milliseconds hold.
pub const MAX_RETENTION: Duration = Duration::from_secs(100 * 31_557_600);

impl Default for GamesConfig {
    fn default() -> Self {
        GamesConfig {
            history: 1000,
            mailbox: 1024,
            idle_unload: Duration::from_secs(60),
            retention: Duration::from_secs(7 * 24 * 3600),
            fan_shards: 0,
            inline_fans: crate::fanout::fans::INLINE_FANS,
        }
    }
}

/// `[limits]`: abuse limits.
///
/// Scorekeeper writes are limited per token `sub` (one event costs one, a
/// batch of N costs N, creating a game costs one); new WebSocket connections
/// per client address; open WebSocket connections in total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Sustained events per second one token `sub` may post. Default 200.
    pub events_per_second: u32,
    /// Events one token may post at once above the sustained rate; also the
    /// largest batch that can be accepted. Default 500 (a full batch).
    pub events_burst: u32,
    /// Whether `admin`-scope tokens (the operator's own tools: console, load
    /// test) skip the per-token limit. Default `true`.
    pub exempt_admin: bool,
    /// Sustained new WebSocket connections per second from one client address
    /// (IPv4 address, or IPv6 /64). Default 20.
    pub ws_connects_per_ip_per_second: u32,
    /// New WebSocket connections one address may open at once above the rate. Default 100.
    pub ws_connect_burst: u32,
    /// Whether loopback client addresses (127.0.0.0/8, ::1) skip the
    /// per-address limit: the load test, or a reverse proxy on the same host
    /// that is not in `http.trusted_proxies` (one that is has its clients'
    /// forwarded addresses counted). Default `true`.
    pub exempt_loopback: bool,
    /// Most WebSocket connections open at once; further upgrades get 503. Default 50000.
    pub max_connections: usize,
    /// Most Server-Sent Events streams (`GET /v1/sse`) open at once, each also
    /// holding a fan slot of `max_connections` and an HTTP connection; further
    /// streams get 503. Never more than half of `http.max_connections` (the
    /// hub lowers it, with a warning). Default 4096.
    pub max_sse_streams: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            events_per_second: 200,
            events_burst: 500,
            exempt_admin: true,
            ws_connects_per_ip_per_second: 20,
            ws_connect_burst: 100,
            exempt_loopback: true,
            max_connections: 50_000,
            max_sse_streams: 4096,
        }
    }
}

impl Config {
    /// Loads defaults < file < env. `file` is the --config value (None = use SCOREHUB_CONFIG if set).
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars_os()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect();
        Config::load_from(file, &env)
    }

    /// Same, with the environment given explicitly (for tests; no process env).
    ///
    /// Only variables starting with `SCOREHUB_` are read; `SCOREHUB_CONFIG` names the
    /// file when `file` is `None` (an empty value counts as unset).
    pub fn load_from(file: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let layers = sources::Layers::gather(file, env)?;
        let raw = layers.extract()?;
        raw.validate(&Config::default())
            .map_err(|e| layers.locate(e))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Toml};

    use super::raw::RawConfig;
    use super::test_support::default_toml_path;
    use super::*;

    /// A config differing from the default in every field.
    fn unlike_default() -> Config {
        Config {
            http: HttpConfig {
                listen: "10.1.2.3:1".parse().unwrap(),
                max_body_bytes: 1,
                shutdown_timeout: Duration::from_secs(1),
                cors_origins: vec!["https://elsewhere.example".into()],
                header_read_timeout: Duration::from_secs(1),
                body_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(1),
                max_connections: 1,
                trusted_proxies: vec!["10.9.8.0/24".parse().unwrap()],
                proxy_header: ProxyHeader::Forwarded,
            },
            auth: AuthConfig {
                secret: Some("s".repeat(40)),
            },
            redis: RedisConfig {
                url: Some("redis://elsewhere:1/2".into()),
                cluster: Vec::new(),
                sentinels: Vec::new(),
                sentinel_master: "other-master".into(),
                prefix: "other".into(),
                tls: RedisTls::default(),
                min_replicas_acked: 2,
                replica_ack_timeout: Duration::from_millis(900),
                stream_max_len: 5,
            },
            storage: StorageConfig {
                dir: "/elsewhere".into(),
                fsync: false,
            },
            log: LogConfig {
                format: LogFormat::Json,
                level: "trace".into(),
            },
            ws: WsConfig {
                max_subscriptions: 1,
                max_message_bytes: 1,
                queue_frames: 1,
                max_queue_bytes: 1,
                ping_interval: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(2),
                messages_per_second: 1,
                message_burst: 1,
                write_timeout: Duration::from_secs(1),
                stuck_timeout: Duration::from_secs(1),
                send_buffer_bytes: 0,
            },
            games: GamesConfig {
                history: 1,
                mailbox: 1,
                idle_unload: Duration::from_secs(1),
                retention: Duration::from_secs(1),
                fan_shards: 1,
                inline_fans: 1,
            },
            limits: LimitsConfig {
                events_per_second: 1,
                events_burst: 1,
                exempt_admin: false,
                ws_connects_per_ip_per_second: 1,
                ws_connect_burst: 1,
                exempt_loopback: false,
                max_connections: 1,
                max_sse_streams: 2,
            },
            occupancy: OccupancyConfig {
                interval: Duration::from_secs(3),
                ttl: Duration::from_secs(9),
            },
        }
    }

    #[test]
    fn default_toml_equals_builtin_defaults() {
        let loaded = Config::load_from(Some(&default_toml_path()), &[]).unwrap();
        assert_eq!(loaded, Config::default());
    }

    #[test]
    fn default_toml_sets_every_non_optional_key() {
        // Validate the file's raw values over a base unlike the default in every
        // field: any key missing from the file would leak the base value through.
        let text = std::fs::read_to_string(default_toml_path()).unwrap();
        let raw: RawConfig = Figment::from(Toml::string(&text)).extract_lossy().unwrap();
        let mut got = raw.validate(&unlike_default()).unwrap();
        // The optional keys are commented out in the file, on purpose.
        assert_eq!(got.auth.secret.take(), Some("s".repeat(40)));
        assert_eq!(got.redis.url.take(), Some("redis://elsewhere:1/2".into()));
        assert_eq!(got, Config::default());
        assert!(
            text.contains("# secret = "),
            "auth.secret shown commented out"
        );
        assert!(text.contains("# url = "), "redis.url shown commented out");
    }

    #[test]
    fn shutdown_budget_adds_up_to_the_contract() {
        assert_eq!(ShutdownBudget::TOTAL, Duration::from_secs(10));
        assert_eq!(ShutdownBudget::MAX_DRAIN, Duration::from_secs(9));
        assert_eq!(ShutdownBudget::WATCHDOG, Duration::from_millis(9500));
        assert_eq!(
            ShutdownBudget::MAX_DRAIN + ShutdownBudget::FLUSH_RESERVE + ShutdownBudget::EXIT_MARGIN,
            ShutdownBudget::TOTAL
        );
        // The default and the cap of http.shutdown_timeout are the total;
        // the drain stops early enough to flush the log.
        assert_eq!(
            HttpConfig::default().shutdown_timeout,
            ShutdownBudget::TOTAL
        );
        let budget = HttpConfig::default().shutdown_budget();
        assert_eq!(budget.drain(), ShutdownBudget::MAX_DRAIN);
        let short = ShutdownBudget::new(Duration::from_secs(1));
        assert_eq!(short.drain(), Duration::from_secs(1));
    }

    #[test]
    fn secret_is_not_in_debug_output() {
        let mut c = Config::default();
        c.auth.secret = Some("x".repeat(40));
        c.redis.url = Some("redis://user:pa55@host:6379/0".into());
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("xxxx"), "{dbg}");
        assert!(dbg.contains("Some(<redacted>)"), "{dbg}");
        assert!(!dbg.contains("pa55"), "{dbg}");
        assert!(dbg.contains("redis://<redacted>@host:6379/0"), "{dbg}");
    }

    #[test]
    fn redact_url_hides_only_user_info() {
        assert_eq!(redact_url("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redact_url("redis://:p@h:1/0"), "redis://<redacted>@h:1/0");
        assert_eq!(redact_url("nonsense"), "nonsense");
        // Passwords may hold what ends an authority elsewhere.
        assert_eq!(redact_url("rediss://:p@a@h/2"), "rediss://<redacted>@h/2");
        for secret in ["s3cr/et", "a?b", "c#d", "e@f"] {
            let url = format!("redis://user:{secret}@h:1/0");
            let shown = redact_url(&url);
            assert!(!shown.contains(secret), "{url} shown as {shown}");
            assert!(shown.ends_with("@h:1/0"), "{shown}");
        }
    }
}
