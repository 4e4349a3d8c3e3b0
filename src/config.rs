//! Configuration: raw file + environment → validated [`Config`].
//!
//! Loading happens in two stages, like ripgrep's argument handling:
//!
//! 1. **Raw**: figment merges the TOML file (`--config FILE` or `SCOREHUB_CONFIG`)
//!    with the environment (`SCOREHUB_<SECTION>__<KEY>`, which wins) into
//!    `RawConfig`-shaped data. Every section denies unknown fields, so a typo is
//!    an error instead of a silently ignored setting. Every raw field is optional:
//!    "not given" is distinct from "given".
//! 2. **Validated**: each given value is parsed (addresses, durations, log
//!    filters) and checked (limits > 0, secret length, Redis URL scheme); every
//!    value not given takes its built-in default from [`Config::default`].
//!
//! Any failure becomes one [`ConfigError`] whose `Display` is a single line that
//! names the key, the problem, the fix and where the bad value came from, e.g.
//! `config error: ws.ping_interval: "abc" is not a duration (use e.g. "20s") (from SCOREHUB_WS__PING_INTERVAL)`.
//!
//! Environment values always arrive as strings; they are kept as strings in the
//! raw stage (so a secret or path is never reinterpreted) and converted to numbers
//! or booleans only where the target key is a number or a boolean.
//!
//! `config/default.toml` lists every key with its default; a unit test keeps it
//! equal to [`Config::default`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Deserialize;

/// Longest `http.shutdown_timeout` accepted: the contract has the hub exit
/// within 10 s of SIGTERM.
pub const MAX_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
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
}

/// `[http]`: the HTTP + WebSocket listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Address to bind; port 0 picks any free port. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Largest accepted request body, in bytes. Default 65536.
    pub max_body_bytes: usize,
    /// How long a graceful shutdown may take before in-flight work is dropped. Default 10 s.
    pub shutdown_timeout: Duration,
    /// Browser origins (`scheme://host[:port]`) allowed to call the `/v1` API
    /// from their pages (CORS), or `["*"]` for any. Default empty: same origin
    /// only, no CORS headers.
    pub cors_origins: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 64 * 1024,
            shutdown_timeout: Duration::from_secs(10),
            cors_origins: Vec::new(),
        }
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
#[derive(Clone, PartialEq, Eq, Default)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URL; `None` = single node. `Debug` hides any password.
    pub url: Option<String>,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.url.as_deref().map(redact_url);
        f.debug_struct("RedisConfig").field("url", &url).finish()
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
}

impl Default for GamesConfig {
    fn default() -> Self {
        GamesConfig {
            history: 1000,
            mailbox: 1024,
            idle_unload: Duration::from_secs(60),
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
    /// Whether loopback peers (127.0.0.0/8, ::1) skip the per-address limit:
    /// a reverse proxy on the same host, or the load test. Default `true`.
    pub exempt_loopback: bool,
    /// Most WebSocket connections open at once; further upgrades get 503. Default 50000.
    pub max_connections: usize,
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
        }
    }
}

/// A configuration problem; `Display` is one line naming the key and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    key: Option<String>,
    message: String,
}

impl ConfigError {
    /// An error about `key`, rendered as `key: detail`.
    fn at(key: &str, detail: impl fmt::Display) -> Self {
        ConfigError {
            key: Some(key.to_owned()),
            message: format!("{key}: {detail}"),
        }
    }

    /// An error not tied to one key (unreadable file, malformed variable name).
    fn general(message: impl Into<String>) -> Self {
        ConfigError {
            key: None,
            message: message.into(),
        }
    }

    /// The dotted key (`ws.ping_interval`) the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Appends where the bad value came from, when that is known.
    fn with_origin(mut self, sources: &Sources<'_>) -> Self {
        if let Some(key) = &self.key
            && let Some(origin) = sources.origin(key)
        {
            self.message = format!("{} ({origin})", self.message);
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config error: {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

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
        let env_vars = EnvVar::collect(env)?;
        let file: Option<PathBuf> = match file {
            Some(p) => Some(p.to_path_buf()),
            None => env
                .iter()
                .find(|(k, v)| k.eq_ignore_ascii_case(ENV_CONFIG_FILE) && !v.is_empty())
                .map(|(_, v)| PathBuf::from(v)),
        };
        let file = match file {
            Some(path) => Some(ConfigFile::read(path)?),
            None => None,
        };
        let sources = Sources {
            file: file.as_ref(),
            env: &env_vars,
        };

        let mut figment = Figment::new();
        if let Some(file) = &file {
            figment = figment.merge(Toml::string(&file.text));
        }
        figment = figment.merge(EnvLayer::new(&env_vars));
        let raw: RawConfig = figment
            .extract_lossy()
            .map_err(|e| from_figment(e).with_origin(&sources))?;
        raw.validate(&Config::default())
            .map_err(|e| e.with_origin(&sources))
    }
}

// ---------------------------------------------------------------------------
// Sources: where a value came from, for error messages.

/// The config file, read and checked to be valid TOML.
struct ConfigFile {
    path: PathBuf,
    text: String,
    /// The file alone, to tell whether it sets a given key.
    figment: Figment,
}

impl ConfigFile {
    fn read(path: PathBuf) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ConfigError::general(format!(
                "cannot read config file {}: {e} (check the --config / {ENV_CONFIG_FILE} path)",
                path.display()
            ))
        })?;
        let toml = Toml::string(&text);
        if let Err(e) = toml.data() {
            return Err(ConfigError::general(format!(
                "{} is not valid TOML: {}",
                path.display(),
                one_line(&e.to_string())
            )));
        }
        Ok(ConfigFile {
            path,
            figment: Figment::from(toml),
            text,
        })
    }
}

/// Squeezes a multi-line parser message (with source snippets) into one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains('|') && !l.starts_with('^'))
        .collect::<Vec<_>>()
        .join(": ")
}

/// One `SCOREHUB_<SECTION>__<KEY>` variable.
struct EnvVar {
    /// The variable name as given.
    name: String,
    section: String,
    key: String,
    value: String,
}

impl EnvVar {
    /// Picks the config variables out of the environment; refuses malformed names.
    fn collect(env: &[(String, String)]) -> Result<Vec<EnvVar>, ConfigError> {
        let mut vars = Vec::new();
        for (name, value) in env {
            let Some(rest) = strip_prefix_ignore_case(name, ENV_PREFIX) else {
                continue;
            };
            if name.eq_ignore_ascii_case(ENV_CONFIG_FILE) {
                continue;
            }
            let parts: Vec<&str> = rest.split("__").collect();
            match parts.as_slice() {
                [section, key] if !section.is_empty() && !key.is_empty() => vars.push(EnvVar {
                    name: name.clone(),
                    section: section.to_ascii_lowercase(),
                    key: key.to_ascii_lowercase(),
                    value: value.clone(),
                }),
                _ => {
                    return Err(ConfigError::general(format!(
                        "environment variable {name} is not a config key (use \
                         {ENV_PREFIX}<SECTION>__<KEY> with a double underscore, \
                         e.g. {ENV_PREFIX}HTTP__LISTEN, or unset it)"
                    )));
                }
            }
        }
        Ok(vars)
    }

    fn dotted(&self) -> String {
        format!("{}.{}", self.section, self.key)
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Where the raw values came from.
struct Sources<'a> {
    file: Option<&'a ConfigFile>,
    env: &'a [EnvVar],
}

impl Sources<'_> {
    /// "from SCOREHUB_X__Y" or "in FILE" for the layer that set `key` (or, for a
    /// section, any key inside it); env wins because it is merged last.
    fn origin(&self, key: &str) -> Option<String> {
        let inside = |dotted: &str| dotted == key || dotted.starts_with(&format!("{key}."));
        if let Some(var) = self.env.iter().rev().find(|v| inside(&v.dotted())) {
            return Some(format!("from {}", var.name));
        }
        let file = self.file?;
        file.figment
            .contains(key)
            .then(|| format!("in {}", file.path.display()))
    }
}

/// The environment variables as a figment layer. Values stay strings;
/// `extract_lossy` turns them into numbers or booleans where the key needs one.
struct EnvLayer {
    dict: Dict,
}

impl EnvLayer {
    fn new(vars: &[EnvVar]) -> Self {
        let mut sections: BTreeMap<String, Dict> = BTreeMap::new();
        for var in vars {
            sections
                .entry(var.section.clone())
                .or_default()
                .insert(var.key.clone(), Value::from(var.value.clone()));
        }
        let dict = sections
            .into_iter()
            .map(|(section, keys)| (section, Value::from(keys)))
            .collect();
        EnvLayer { dict }
    }
}

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

// ---------------------------------------------------------------------------
// Stage 1: raw, as written.

/// Keys whose values must never be echoed in error messages.
const SENSITIVE_KEYS: &[&str] = &["auth.secret", "redis.url"];

/// The configuration as written: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    http: RawHttp,
    auth: RawAuth,
    redis: RawRedis,
    storage: RawStorage,
    log: RawLog,
    ws: RawWs,
    games: RawGames,
    limits: RawLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
    max_body_bytes: Option<usize>,
    shutdown_timeout: Option<RawDuration>,
    cors_origins: Option<RawList>,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawAuth {
    secret: Option<String>,
}

impl fmt::Debug for RawAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = self.secret.as_ref().map(|_| Redacted);
        f.debug_struct("RawAuth").field("secret", &secret).finish()
    }
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawRedis {
    url: Option<String>,
}

impl fmt::Debug for RawRedis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.url.as_deref().map(redact_url);
        f.debug_struct("RawRedis").field("url", &url).finish()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawStorage {
    dir: Option<String>,
    fsync: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawWs {
    max_subscriptions: Option<usize>,
    max_message_bytes: Option<usize>,
    queue_frames: Option<usize>,
    max_queue_bytes: Option<usize>,
    ping_interval: Option<RawDuration>,
    idle_timeout: Option<RawDuration>,
    messages_per_second: Option<u32>,
    message_burst: Option<u32>,
    write_timeout: Option<RawDuration>,
    stuck_timeout: Option<RawDuration>,
    send_buffer_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawGames {
    history: Option<usize>,
    mailbox: Option<usize>,
    idle_unload: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLimits {
    events_per_second: Option<u32>,
    events_burst: Option<u32>,
    exempt_admin: Option<bool>,
    ws_connects_per_ip_per_second: Option<u32>,
    ws_connect_burst: Option<u32>,
    exempt_loopback: Option<bool>,
    max_connections: Option<usize>,
}

/// A duration as written (`"20s"`); parsed in stage 2. Its own type only so a
/// wrong type reads "expected a duration string such as "20s"".
#[derive(Debug)]
struct RawDuration(String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"20s\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(s.to_owned()))
            }
        }
        d.deserialize_str(V)
    }
}

/// A list of strings as written: a TOML array, or (from the environment) one
/// string of comma-separated items. Items are trimmed; empty ones dropped.
#[derive(Debug)]
struct RawList(Vec<String>);

impl<'de> Deserialize<'de> for RawList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of strings (or one comma-separated string)")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RawList, E> {
                Ok(RawList(
                    s.split(',')
                        .map(str::trim)
                        .filter(|item| !item.is_empty())
                        .map(str::to_owned)
                        .collect(),
                ))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawList, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    let item = item.trim();
                    if !item.is_empty() {
                        items.push(item.to_owned());
                    }
                }
                Ok(RawList(items))
            }
        }
        d.deserialize_any(V)
    }
}

/// Turns a figment extraction error into one line naming the key.
fn from_figment(e: figment::Error) -> ConfigError {
    use figment::error::Kind;

    let key = e.path.join(".");
    match &e.kind {
        Kind::UnknownField(field, known) => {
            // The path ends with the unknown field itself; the rest is its section.
            let mut section = e.path.clone();
            if section.last() == Some(field) {
                section.pop();
            }
            let key = section.join(".");
            let full = if key.is_empty() {
                field.clone()
            } else {
                format!("{key}.{field}")
            };
            let hint = did_you_mean(field, known);
            let known = known.join(", ");
            let message = if key.is_empty() {
                format!(
                    "unknown section {field}{hint} (known sections: {known}; every key belongs in one of them)"
                )
            } else {
                format!("unknown key {full}{hint} (known keys in {key}: {known})")
            };
            ConfigError {
                key: Some(full),
                message,
            }
        }
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            let expected = friendly_expected(&key, expected);
            if SENSITIVE_KEYS.contains(&key.as_str()) {
                ConfigError::at(&key, format!("must be {expected}"))
            } else {
                ConfigError::at(
                    &key,
                    format!("expected {expected}, found {}", friendly_actual(actual)),
                )
            }
        }
        Kind::USizeOutOfRange(_) | Kind::ISizeOutOfRange(_) => {
            ConfigError::at(&key, "the number is out of range")
        }
        _ if key.is_empty() => ConfigError::general(e.kind.to_string()),
        _ => ConfigError::at(&key, e.kind.to_string()),
    }
}

/// `" (did you mean `listen`?)"` when a known name is a small typo away.
fn did_you_mean(given: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| (edit_distance(given, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!(" (did you mean {k}?)"))
        .unwrap_or_default()
}

/// Levenshtein distance, for typo hints on short key names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn friendly_expected(key: &str, expected: &str) -> String {
    match expected {
        other if other.starts_with("struct ") => format!("a table (a [{key}] section)"),
        "usize" | "u32" | "u64" => "a whole number >= 0".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "a string" => "a string (in quotes)".to_owned(),
        other => other.to_owned(),
    }
}

fn friendly_actual(actual: &figment::error::Actual) -> String {
    use figment::error::Actual;
    match actual {
        Actual::Str(s) => format!("{s:?}"),
        Actual::Unsigned(n) => format!("the number {n}"),
        Actual::Signed(n) => format!("the number {n}"),
        Actual::Float(n) => format!("the number {n}"),
        Actual::Bool(b) => format!("the boolean {b}"),
        Actual::Map => "a table".to_owned(),
        Actual::Seq => "a list".to_owned(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Stage 2: validated.

impl RawConfig {
    /// Parses and checks every given value; keys not given take `base`'s value.
    fn validate(self, base: &Config) -> Result<Config, ConfigError> {
        let RawConfig {
            http,
            auth,
            redis,
            storage,
            log,
            ws,
            games,
            limits,
        } = self;

        let http = HttpConfig {
            listen: match http.listen {
                Some(s) => parse_listen(&s)?,
                None => base.http.listen,
            },
            max_body_bytes: positive(
                "http.max_body_bytes",
                http.max_body_bytes,
                base.http.max_body_bytes,
            )?,
            shutdown_timeout: duration(
                "http.shutdown_timeout",
                http.shutdown_timeout,
                base.http.shutdown_timeout,
            )?,
            cors_origins: match http.cors_origins {
                Some(RawList(origins)) => check_cors_origins(origins)?,
                None => base.http.cors_origins.clone(),
            },
        };
        if http.shutdown_timeout > MAX_SHUTDOWN_TIMEOUT {
            return Err(ConfigError::at(
                "http.shutdown_timeout",
                format!(
                    "{} is too long: the hub exits within {} of SIGTERM (use at most \"{}\")",
                    humantime::format_duration(http.shutdown_timeout),
                    humantime::format_duration(MAX_SHUTDOWN_TIMEOUT),
                    humantime::format_duration(MAX_SHUTDOWN_TIMEOUT),
                ),
            ));
        }

        let auth = AuthConfig {
            secret: match auth.secret {
                Some(s) => Some(check_secret(s)?),
                None => base.auth.secret.clone(),
            },
        };

        let redis = RedisConfig {
            url: match redis.url {
                Some(url) => Some(check_redis_url(url)?),
                None => base.redis.url.clone(),
            },
        };

        let storage = StorageConfig {
            dir: match storage.dir {
                Some(d) if d.trim().is_empty() => {
                    return Err(ConfigError::at(
                        "storage.dir",
                        "must not be empty (use a directory path, e.g. \"./data\")",
                    ));
                }
                Some(d) => PathBuf::from(d),
                None => base.storage.dir.clone(),
            },
            fsync: storage.fsync.unwrap_or(base.storage.fsync),
        };

        let log = LogConfig {
            format: match log.format.as_deref() {
                Some(f) => parse_log_format(f)?,
                None => base.log.format,
            },
            level: match log.level {
                Some(l) => check_log_level(l)?,
                None => base.log.level.clone(),
            },
        };

        let b = &base.ws;
        let ws = WsConfig {
            max_subscriptions: positive(
                "ws.max_subscriptions",
                ws.max_subscriptions,
                b.max_subscriptions,
            )?,
            max_message_bytes: positive(
                "ws.max_message_bytes",
                ws.max_message_bytes,
                b.max_message_bytes,
            )?,
            queue_frames: positive("ws.queue_frames", ws.queue_frames, b.queue_frames)?,
            max_queue_bytes: positive("ws.max_queue_bytes", ws.max_queue_bytes, b.max_queue_bytes)?,
            ping_interval: duration("ws.ping_interval", ws.ping_interval, b.ping_interval)?,
            idle_timeout: duration("ws.idle_timeout", ws.idle_timeout, b.idle_timeout)?,
            messages_per_second: positive(
                "ws.messages_per_second",
                ws.messages_per_second,
                b.messages_per_second,
            )?,
            message_burst: positive("ws.message_burst", ws.message_burst, b.message_burst)?,
            write_timeout: duration("ws.write_timeout", ws.write_timeout, b.write_timeout)?,
            stuck_timeout: duration("ws.stuck_timeout", ws.stuck_timeout, b.stuck_timeout)?,
            send_buffer_bytes: ws.send_buffer_bytes.unwrap_or(b.send_buffer_bytes),
        };
        if ws.idle_timeout <= ws.ping_interval {
            return Err(ConfigError::at(
                "ws.idle_timeout",
                format!(
                    "{} must be longer than ws.ping_interval ({}), or live but quiet \
                     connections are dropped before they are pinged (e.g. idle_timeout = 3 × ping_interval)",
                    humantime::format_duration(ws.idle_timeout),
                    humantime::format_duration(ws.ping_interval),
                ),
            ));
        }

        let games = GamesConfig {
            history: positive("games.history", games.history, base.games.history)?,
            mailbox: positive("games.mailbox", games.mailbox, base.games.mailbox)?,
            idle_unload: duration(
                "games.idle_unload",
                games.idle_unload,
                base.games.idle_unload,
            )?,
        };

        let b = &base.limits;
        let limits = LimitsConfig {
            events_per_second: positive(
                "limits.events_per_second",
                limits.events_per_second,
                b.events_per_second,
            )?,
            events_burst: positive("limits.events_burst", limits.events_burst, b.events_burst)?,
            exempt_admin: limits.exempt_admin.unwrap_or(b.exempt_admin),
            ws_connects_per_ip_per_second: positive(
                "limits.ws_connects_per_ip_per_second",
                limits.ws_connects_per_ip_per_second,
                b.ws_connects_per_ip_per_second,
            )?,
            ws_connect_burst: positive(
                "limits.ws_connect_burst",
                limits.ws_connect_burst,
                b.ws_connect_burst,
            )?,
            exempt_loopback: limits.exempt_loopback.unwrap_or(b.exempt_loopback),
            max_connections: positive(
                "limits.max_connections",
                limits.max_connections,
                b.max_connections,
            )?,
        };

        Ok(Config {
            http,
            auth,
            redis,
            storage,
            log,
            ws,
            games,
            limits,
        })
    }
}

/// A limit where 0 makes no sense.
fn positive<T>(key: &str, value: Option<T>, default: T) -> Result<T, ConfigError>
where
    T: PartialEq + Default + Copy,
{
    match value {
        Some(v) if v == T::default() => Err(ConfigError::at(
            key,
            "must be greater than 0 (remove the key to use the default)",
        )),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

/// A humantime duration (`"20s"`, `"1m"`), greater than zero.
fn duration(
    key: &str,
    value: Option<RawDuration>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(RawDuration(s)) = value else {
        return Ok(default);
    };
    match humantime::parse_duration(s.trim()) {
        Ok(d) if d.is_zero() => Err(ConfigError::at(
            key,
            format!("{s:?} must be longer than zero (use e.g. \"20s\")"),
        )),
        Ok(d) => Ok(d),
        Err(_) => Err(ConfigError::at(
            key,
            format!("{s:?} is not a duration (use e.g. \"20s\")"),
        )),
    }
}

fn parse_listen(s: &str) -> Result<SocketAddr, ConfigError> {
    s.trim().parse().map_err(|_| {
        ConfigError::at(
            "http.listen",
            format!(
                "{s:?} is not an ip:port address (use e.g. \"127.0.0.1:8080\", \
                 \"0.0.0.0:8080\" or \"[::]:8080\"; port 0 picks a free port)"
            ),
        )
    })
}

fn check_secret(secret: String) -> Result<String, ConfigError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(ConfigError::at(
            "auth.secret",
            format!(
                "too short ({} bytes, at least {MIN_SECRET_BYTES} needed); generate one with \
                 `openssl rand -hex 32`, or unset it to get a random secret for this run",
                secret.len()
            ),
        ));
    }
    Ok(secret)
}

/// Each origin must be exactly what a browser sends in `Origin`:
/// `http(s)://host[:port]`, lowercase, no path; or `*` alone for any origin.
fn check_cors_origins(origins: Vec<String>) -> Result<Vec<String>, ConfigError> {
    const KEY: &str = "http.cors_origins";
    if origins.iter().any(|o| o == "*") {
        if origins.len() > 1 {
            return Err(ConfigError::at(
                KEY,
                "\"*\" allows every origin and must be the only entry (remove the others, or remove \"*\")",
            ));
        }
        return Ok(origins);
    }
    for origin in &origins {
        let rest = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        let well_formed = rest.is_some_and(|host| {
            !host.is_empty()
                && host.bytes().all(|b| {
                    b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                })
        });
        if !well_formed {
            let shown: String = origin.chars().take(80).collect();
            return Err(ConfigError::at(
                KEY,
                format!(
                    "{shown:?} is not an origin; write it as browsers send it: scheme://host[:port] \
                     in lowercase, without a path or trailing slash (e.g. \"https://scores.example.com\"), \
                     or use [\"*\"] for any origin"
                ),
            ));
        }
    }
    Ok(origins)
}

fn check_redis_url(url: String) -> Result<String, ConfigError> {
    let lower = url.trim().to_ascii_lowercase();
    let rest = lower
        .strip_prefix("redis://")
        .or_else(|| lower.strip_prefix("rediss://"));
    match rest {
        Some(rest) if !rest.is_empty() => Ok(url.trim().to_owned()),
        _ => Err(ConfigError::at(
            "redis.url",
            "must be a redis:// or rediss:// URL such as \"redis://127.0.0.1:6379/0\" \
             (or unset it to run a single node)",
        )),
    }
}

fn parse_log_format(s: &str) -> Result<LogFormat, ConfigError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "pretty" => Ok(LogFormat::Pretty),
        "json" => Ok(LogFormat::Json),
        _ => Err(ConfigError::at(
            "log.format",
            format!("{s:?} is not a log format (use \"pretty\" or \"json\")"),
        )),
    }
}

fn check_log_level(level: String) -> Result<String, ConfigError> {
    match tracing_subscriber::EnvFilter::builder().parse(&level) {
        Ok(_) => Ok(level),
        Err(e) => Err(ConfigError::at(
            "log.level",
            format!(
                "{level:?} is not a log filter ({e}; use e.g. \"info\" or \"scorehub=debug,info\")"
            ),
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write_toml(text: &str) -> tempfile::NamedTempFile {
        use std::io::Write;
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn load_toml(text: &str) -> Result<Config, ConfigError> {
        let f = write_toml(text);
        Config::load_from(Some(f.path()), &[])
    }

    fn default_toml_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml")
    }

    /// A config differing from the default in every field.
    fn unlike_default() -> Config {
        Config {
            http: HttpConfig {
                listen: "10.1.2.3:1".parse().unwrap(),
                max_body_bytes: 1,
                shutdown_timeout: Duration::from_secs(1),
                cors_origins: vec!["https://elsewhere.example".into()],
            },
            auth: AuthConfig {
                secret: Some("s".repeat(40)),
            },
            redis: RedisConfig {
                url: Some("redis://elsewhere:1/2".into()),
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
            },
            limits: LimitsConfig {
                events_per_second: 1,
                events_burst: 1,
                exempt_admin: false,
                ws_connects_per_ip_per_second: 1,
                ws_connect_burst: 1,
                exempt_loopback: false,
                max_connections: 1,
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
    fn no_file_no_env_gives_defaults() {
        assert_eq!(Config::load_from(None, &[]).unwrap(), Config::default());
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let f = write_toml(
            "[http]\nlisten = \"0.0.0.0:9000\"\nmax_body_bytes = 1000\n\
             [ws]\nqueue_frames = 10\nping_interval = \"5s\"\n",
        );
        let e = env(&[
            ("SCOREHUB_HTTP__LISTEN", "127.0.0.1:0"),
            ("SCOREHUB_STORAGE__FSYNC", "false"),
            ("SCOREHUB_WS__QUEUE_FRAMES", "64"),
            ("SCOREHUB_WS__IDLE_TIMEOUT", "1m 30s"),
            ("SCOREHUB_LOG__LEVEL", "scorehub=debug,info"),
            ("SCOREHUB_LOG__FORMAT", "json"),
            ("SCOREHUB_AUTH__SECRET", &"7".repeat(64)),
            ("SCOREHUB_REDIS__URL", "redis://127.0.0.1:6379/0"),
            ("OTHER_VAR", "ignored"),
        ]);
        let c = Config::load_from(Some(f.path()), &e).unwrap();
        // env wins over the file
        assert_eq!(c.http.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(c.ws.queue_frames, 64);
        // the file wins over defaults
        assert_eq!(c.http.max_body_bytes, 1000);
        assert_eq!(c.ws.ping_interval, Duration::from_secs(5));
        // env over defaults
        assert!(!c.storage.fsync);
        assert_eq!(c.ws.idle_timeout, Duration::from_secs(90));
        assert_eq!(c.log.level, "scorehub=debug,info");
        assert_eq!(c.log.format, LogFormat::Json);
        // a digits-only secret stays the exact string
        assert_eq!(c.auth.secret.as_deref(), Some("7".repeat(64).as_str()));
        assert_eq!(c.redis.url.as_deref(), Some("redis://127.0.0.1:6379/0"));
        // untouched keys keep their defaults
        assert_eq!(c.games, GamesConfig::default());
        assert_eq!(c.storage.dir, PathBuf::from("./data"));
    }

    #[test]
    fn cors_origins_from_file_list_or_env_string_and_checked() {
        let c = load_toml(
            "[http]\ncors_origins = [\"https://scores.example.com\", \"http://localhost:3000\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.http.cors_origins,
            vec!["https://scores.example.com", "http://localhost:3000"]
        );
        let e = env(&[(
            "SCOREHUB_HTTP__CORS_ORIGINS",
            "https://a.example, https://b.example:8443,",
        )]);
        let c = Config::load_from(None, &e).unwrap();
        assert_eq!(
            c.http.cors_origins,
            vec!["https://a.example", "https://b.example:8443"]
        );
        let e = env(&[("SCOREHUB_HTTP__CORS_ORIGINS", "*")]);
        assert_eq!(
            Config::load_from(None, &e).unwrap().http.cors_origins,
            vec!["*"]
        );
        let e = env(&[("SCOREHUB_HTTP__CORS_ORIGINS", "")]);
        assert!(
            Config::load_from(None, &e)
                .unwrap()
                .http
                .cors_origins
                .is_empty()
        );
        for bad in [
            "https://scores.example.com/",
            "https://scores.example.com/app",
            "scores.example.com",
            "ftp://scores.example.com",
            "https://Scores.example.com",
            "*,https://a.example",
        ] {
            let e = env(&[("SCOREHUB_HTTP__CORS_ORIGINS", bad)]);
            let err = Config::load_from(None, &e).unwrap_err();
            assert_eq!(err.key(), Some("http.cors_origins"), "{bad}");
            let msg = err.to_string();
            assert!(msg.contains("SCOREHUB_HTTP__CORS_ORIGINS"), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        let err = load_toml("[http]\ncors_origins = 3\n").unwrap_err();
        assert_eq!(err.key(), Some("http.cors_origins"), "{err}");
    }

    #[test]
    fn scorehub_config_env_names_the_file_and_flag_wins() {
        let f = write_toml("[games]\nhistory = 7\n");
        let g = write_toml("[games]\nhistory = 8\n");
        let path = f.path().to_string_lossy().into_owned();
        let e = env(&[("SCOREHUB_CONFIG", path.as_str())]);
        assert_eq!(Config::load_from(None, &e).unwrap().games.history, 7);
        assert_eq!(
            Config::load_from(Some(g.path()), &e).unwrap().games.history,
            8
        );
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = Config::load_from(Some(Path::new("/nonexistent/x.toml")), &[]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("config error: cannot read config file /nonexistent/x.toml"),
            "{msg}"
        );
    }

    #[test]
    fn invalid_toml_is_one_line() {
        let err = load_toml("[http\nlisten = 1").unwrap_err().to_string();
        assert!(err.contains("is not valid TOML"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        let err = load_toml("[http]\nlisen = \"127.0.0.1:1\"\n").unwrap_err();
        assert_eq!(err.key(), Some("http.lisen"));
        let msg = err.to_string();
        assert!(
            msg.starts_with("config error: unknown key http.lisen"),
            "{msg}"
        );
        assert!(msg.contains("did you mean listen?"), "{msg}");
        assert!(
            msg.contains(
                "known keys in http: listen, max_body_bytes, shutdown_timeout, cors_origins"
            ),
            "{msg}"
        );
        assert!(msg.contains("(in "), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn unknown_section_in_file_is_named() {
        let msg = load_toml("[htp]\nlisten = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("config error: unknown section htp"),
            "{msg}"
        );
        assert!(msg.contains("known sections: http, auth"), "{msg}");
    }

    #[test]
    fn unknown_env_key_is_named() {
        let err = Config::load_from(None, &env(&[("SCOREHUB_WS__QUEUE_FRAME", "5")])).unwrap_err();
        assert_eq!(err.key(), Some("ws.queue_frame"));
        let msg = err.to_string();
        assert!(msg.contains("unknown key ws.queue_frame"), "{msg}");
        assert!(msg.contains("from SCOREHUB_WS__QUEUE_FRAME"), "{msg}");

        let msg = Config::load_from(None, &env(&[("SCOREHUB_WEB__X", "5")]))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("unknown section web"), "{msg}");
        assert!(msg.contains("from SCOREHUB_WEB__X"), "{msg}");
    }

    #[test]
    fn malformed_env_name_is_refused() {
        for name in [
            "SCOREHUB_HTTP_LISTEN",
            "SCOREHUB_HTTP__LISTEN__X",
            "SCOREHUB___X",
        ] {
            let msg = Config::load_from(None, &env(&[(name, "1")]))
                .unwrap_err()
                .to_string();
            assert!(
                msg.contains(name) && msg.contains("<SECTION>__<KEY>"),
                "{msg}"
            );
        }
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = load_toml("[ws]\nqueue_frames = \"lots\"\n").unwrap_err();
        assert_eq!(err.key(), Some("ws.queue_frames"));
        let msg = err.to_string();
        assert!(
            msg.contains("ws.queue_frames: expected a whole number"),
            "{msg}"
        );
        assert!(msg.contains("\"lots\""), "{msg}");

        let msg = load_toml("[ws]\nping_interval = 20\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("ws.ping_interval: expected a duration string such as \"20s\""),
            "{msg}"
        );

        let msg = Config::load_from(None, &env(&[("SCOREHUB_STORAGE__FSYNC", "maybe")]))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("storage.fsync: expected true or false"),
            "{msg}"
        );
        assert!(msg.contains("from SCOREHUB_STORAGE__FSYNC"), "{msg}");

        let msg = load_toml("[ws]\nqueue_frames = -3\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("ws.queue_frames"), "{msg}");
    }

    #[test]
    fn bad_duration_is_refused() {
        let err =
            Config::load_from(None, &env(&[("SCOREHUB_WS__PING_INTERVAL", "abc")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config error: ws.ping_interval: \"abc\" is not a duration (use e.g. \"20s\") \
             (from SCOREHUB_WS__PING_INTERVAL)"
        );
        let msg = load_toml("[http]\nshutdown_timeout = \"0s\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("http.shutdown_timeout: \"0s\" must be longer than zero"),
            "{msg}"
        );
        let msg = load_toml("[http]\nshutdown_timeout = \"60s\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("http.shutdown_timeout: 1m is too long")
                && msg.contains("at most \"10s\""),
            "{msg}"
        );
        assert!(load_toml("[http]\nshutdown_timeout = \"10s\"\n").is_ok());
    }

    #[test]
    fn short_secret_is_refused_without_echoing_it() {
        let err = load_toml("[auth]\nsecret = \"hunter2\"\n").unwrap_err();
        assert_eq!(err.key(), Some("auth.secret"));
        let msg = err.to_string();
        assert!(msg.contains("auth.secret"), "{msg}");
        assert!(msg.contains("openssl rand -hex 32"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");

        let msg = load_toml("[auth]\nsecret = 1234\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("auth.secret: must be"), "{msg}");
        assert!(!msg.contains("1234"), "{msg}");
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
    fn bad_values_are_refused_with_the_key() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "SCOREHUB_HTTP__LISTEN",
                "localhost:80",
                "http.listen: \"localhost:80\" is not an ip:port",
            ),
            (
                "SCOREHUB_REDIS__URL",
                "http://x",
                "redis.url: must be a redis:// or rediss:// URL",
            ),
            (
                "SCOREHUB_LOG__FORMAT",
                "xml",
                "log.format: \"xml\" is not a log format",
            ),
            (
                "SCOREHUB_LOG__LEVEL",
                "scorehub=loud",
                "log.level: \"scorehub=loud\" is not a log filter",
            ),
            (
                "SCOREHUB_STORAGE__DIR",
                "",
                "storage.dir: must not be empty",
            ),
            (
                "SCOREHUB_WS__QUEUE_FRAMES",
                "0",
                "ws.queue_frames: must be greater than 0",
            ),
            (
                "SCOREHUB_WS__MESSAGES_PER_SECOND",
                "0",
                "ws.messages_per_second: must be greater than 0",
            ),
            (
                "SCOREHUB_GAMES__MAILBOX",
                "0",
                "games.mailbox: must be greater than 0",
            ),
            (
                "SCOREHUB_LIMITS__EVENTS_PER_SECOND",
                "0",
                "limits.events_per_second: must be greater than 0",
            ),
            (
                "SCOREHUB_LIMITS__MAX_CONNECTIONS",
                "0",
                "limits.max_connections: must be greater than 0",
            ),
            (
                "SCOREHUB_WS__STUCK_TIMEOUT",
                "0s",
                "ws.stuck_timeout: \"0s\" must be longer than zero",
            ),
            (
                "SCOREHUB_WS__IDLE_TIMEOUT",
                "10s",
                "ws.idle_timeout: 10s must be longer than ws.ping_interval",
            ),
        ];
        for (var, value, expected) in cases {
            let msg = Config::load_from(None, &env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(msg.contains(expected), "{var}={value}: {msg}");
            assert!(msg.contains(&format!("from {var}")), "{msg}");
        }
    }

    #[test]
    fn limits_come_from_file_and_env() {
        let f = write_toml(
            "[limits]\nevents_per_second = 5\nexempt_loopback = false\n\
             [ws]\nstuck_timeout = \"2s\"\n",
        );
        let e = env(&[
            ("SCOREHUB_LIMITS__EVENTS_BURST", "7"),
            ("SCOREHUB_LIMITS__EXEMPT_ADMIN", "false"),
            ("SCOREHUB_LIMITS__MAX_CONNECTIONS", "3"),
            ("SCOREHUB_LIMITS__WS_CONNECTS_PER_IP_PER_SECOND", "4"),
            ("SCOREHUB_LIMITS__WS_CONNECT_BURST", "6"),
        ]);
        let c = Config::load_from(Some(f.path()), &e).unwrap();
        assert_eq!(
            c.limits,
            LimitsConfig {
                events_per_second: 5,
                events_burst: 7,
                exempt_admin: false,
                ws_connects_per_ip_per_second: 4,
                ws_connect_burst: 6,
                exempt_loopback: false,
                max_connections: 3,
            }
        );
        assert_eq!(c.ws.stuck_timeout, Duration::from_secs(2));

        let msg = Config::load_from(None, &env(&[("SCOREHUB_LIMITS__EXEMPT_LOOPBACK", "maybe")]))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("limits.exempt_loopback: expected true or false"),
            "{msg}"
        );
        let err = load_toml("[limits]\nevents_per_secnd = 5\n").unwrap_err();
        assert_eq!(err.key(), Some("limits.events_per_secnd"));
        assert!(err.to_string().contains("did you mean events_per_second?"));
    }

    #[test]
    fn rediss_and_zero_port_are_accepted() {
        let c = Config::load_from(
            None,
            &env(&[
                ("SCOREHUB_REDIS__URL", "rediss://:pw@cache.example:6380/1"),
                ("SCOREHUB_HTTP__LISTEN", "[::1]:0"),
            ]),
        )
        .unwrap();
        assert_eq!(c.http.listen.port(), 0);
        assert!(c.redis.url.is_some());
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
