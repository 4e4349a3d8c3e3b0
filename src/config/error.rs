//! The error of loading the configuration: one line naming the key, the
//! problem, the fix and where the bad value came from.
//!
//! [`ConfigError`] says *which* key (or file, or variable) is wrong and where
//! the value came from; [`ValueError`] says what is wrong with one given
//! value. Where a parser or the file system failed underneath, its error is
//! the `source`. Its text is also part of the one line (a user reads only
//! that line), so a report that prints the chain repeats it.

use std::path::PathBuf;
use std::time::Duration;

use super::{ENV_CONFIG_FILE, ENV_PREFIX, MIN_SECRET_BYTES};

/// Why the configuration could not be loaded. `Display` is a single line
/// starting with `config error: `; `main` prints it and exits with code 2.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error(
        "config error: cannot read config file {}: {source} (check the --config / {ENV_CONFIG_FILE} path)",
        path.display()
    )]
    ReadFile {
        /// The file named by `--config` or `SCOREHUB_CONFIG`.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not TOML.
    #[error("config error: {} is not valid TOML: {}", path.display(), one_line(&source.to_string()))]
    InvalidToml {
        /// The config file.
        path: PathBuf,
        /// The TOML parser's complaint.
        #[source]
        source: Box<figment::Error>,
    },
    /// A `SCOREHUB_` environment variable that is not `SCOREHUB_<SECTION>__<KEY>`.
    #[error(
        "config error: environment variable {name} is not a config key (use \
         {ENV_PREFIX}<SECTION>__<KEY> with a double underscore, \
         e.g. {ENV_PREFIX}HTTP__LISTEN, or unset it)"
    )]
    EnvName {
        /// The variable's name.
        name: String,
    },
    /// A section no scorehub version has.
    #[error(
        "config error: unknown section {section}{} (known sections: {}; every key belongs in one of them){}",
        did_you_mean(suggestion.as_deref()),
        known.join(", "),
        origin_suffix(origin.as_deref())
    )]
    UnknownSection {
        /// The section as written.
        section: String,
        /// A known section a small typo away, if any.
        suggestion: Option<String>,
        /// Every known section.
        known: &'static [&'static str],
        /// Where it was written (`in FILE`, `from SCOREHUB_X__Y`).
        origin: Option<String>,
    },
    /// A key its section does not have.
    #[error(
        "config error: unknown key {key}{} (known keys in {section}: {}){}",
        did_you_mean(suggestion.as_deref()),
        known.join(", "),
        origin_suffix(origin.as_deref())
    )]
    UnknownKey {
        /// The dotted key as written (`http.lisen`).
        key: String,
        /// Its section (`http`).
        section: String,
        /// A known key of the section a small typo away, if any.
        suggestion: Option<String>,
        /// Every key of the section.
        known: &'static [&'static str],
        /// Where it was written.
        origin: Option<String>,
    },
    /// A known key with a value that is wrong.
    #[error("config error: {key}: {problem}{}", origin_suffix(origin.as_deref()))]
    Value {
        /// The dotted key (`ws.ping_interval`).
        key: String,
        /// What is wrong with the value, and the fix.
        #[source]
        problem: ValueError,
        /// Where the value came from.
        origin: Option<String>,
    },
    /// The file and environment could not be merged, for a reason not tied to a key.
    #[error("config error: {}", source.kind)]
    Merge {
        /// figment's error.
        #[source]
        source: Box<figment::Error>,
    },
}

/// What is wrong with one given value; `Display` says it and the fix, without the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// The value has the wrong type.
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// What the key takes, in words.
        expected: String,
        /// What was given, in words.
        found: String,
        /// figment's error.
        #[source]
        source: Box<figment::Error>,
    },
    /// The value of a secret key has the wrong type (the value is not echoed).
    #[error("must be {expected}")]
    SecretWrongType {
        /// What the key takes, in words.
        expected: String,
        /// figment's error.
        #[source]
        source: Box<figment::Error>,
    },
    /// A number too large for the key.
    #[error("the number is out of range")]
    OutOfRange {
        /// figment's error.
        #[source]
        source: Box<figment::Error>,
    },
    /// Any other deserialisation failure.
    #[error("{}", source.kind)]
    Unreadable {
        /// figment's error.
        #[source]
        source: Box<figment::Error>,
    },
    /// 0 for a limit where 0 makes no sense.
    #[error("must be greater than 0 (remove the key to use the default)")]
    Zero,
    /// A zero duration where only a positive one makes sense.
    #[error("{value:?} must be longer than zero (use e.g. \"20s\")")]
    ZeroDuration {
        /// The value as written.
        value: String,
    },
    /// Not a humantime duration.
    #[error("{value:?} is not a duration (use e.g. \"20s\")")]
    NotADuration {
        /// The value as written.
        value: String,
        /// humantime's complaint.
        #[source]
        source: humantime::DurationError,
    },
    /// A duration longer than the key allows.
    #[error(
        "{} is too long: the hub exits within {} of SIGTERM (use at most \"{}\")",
        humantime::format_duration(*given),
        humantime::format_duration(*max),
        humantime::format_duration(*max)
    )]
    TooLong {
        /// The value, parsed.
        given: Duration,
        /// The longest accepted.
        max: Duration,
    },
    /// `ws.idle_timeout` not longer than `ws.ping_interval`.
    #[error(
        "{} must be longer than ws.ping_interval ({}), or live but quiet \
         connections are dropped before they are pinged (e.g. idle_timeout = 3 × ping_interval)",
        humantime::format_duration(*idle),
        humantime::format_duration(*ping)
    )]
    IdleNotAbovePing {
        /// `ws.idle_timeout`.
        idle: Duration,
        /// `ws.ping_interval`.
        ping: Duration,
    },
    /// Not an `ip:port` socket address.
    #[error(
        "{value:?} is not an ip:port address (use e.g. \"127.0.0.1:8080\", \
         \"0.0.0.0:8080\" or \"[::]:8080\"; port 0 picks a free port)"
    )]
    NotAnAddress {
        /// The value as written.
        value: String,
        /// The address parser's complaint.
        #[source]
        source: std::net::AddrParseError,
    },
    /// An `auth.secret` too short to sign tokens safely (the value is not echoed).
    #[error(
        "too short ({len} bytes, at least {MIN_SECRET_BYTES} needed); generate one with \
         `openssl rand -hex 32`, or unset it to get a random secret for this run"
    )]
    SecretTooShort {
        /// Its length in bytes.
        len: usize,
    },
    /// `"*"` in `http.cors_origins` next to other entries.
    #[error(
        "\"*\" allows every origin and must be the only entry (remove the others, or remove \"*\")"
    )]
    WildcardNotAlone,
    /// An entry of `http.cors_origins` that is not an origin as browsers send it.
    #[error(
        "{shown:?} is not an origin; write it as browsers send it: scheme://host[:port] \
         in lowercase, without a path or trailing slash (e.g. \"https://scores.example.com\"), \
         or use [\"*\"] for any origin"
    )]
    NotAnOrigin {
        /// The entry, cut to 80 characters.
        shown: String,
    },
    /// Not a `redis://` or `rediss://` URL (the value is not echoed: it may hold a password).
    #[error(
        "must be a redis:// or rediss:// URL such as \"redis://127.0.0.1:6379/0\" \
         (or unset it to run a single node)"
    )]
    NotARedisUrl,
    /// An entry of `http.trusted_proxies` that is neither an IP address nor a
    /// CIDR network.
    #[error(
        "{value:?} is not an IP address or network; write an address (\"10.0.0.7\", \
         \"fd00::7\") or a CIDR network (\"10.0.0.0/8\", \"fd00::/8\")"
    )]
    NotANetwork {
        /// The entry as written.
        value: String,
    },
    /// A CIDR network in `http.trusted_proxies` with bits set past its prefix.
    #[error(
        "\"{net}\" has address bits set past its prefix; write the network \"{}\", \
         or the single address \"{}\"",
        net.trunc(),
        net.addr()
    )]
    HostBitsSet {
        /// The entry, parsed.
        net: ipnet::IpNet,
    },
    /// Neither `x-forwarded-for` nor `forwarded`.
    #[error(
        "{value:?} is not a forwarding header (use \"x-forwarded-for\" or \"forwarded\" (RFC 7239): \
         the one your proxies append the client's address to)"
    )]
    NotAProxyHeader {
        /// The value as written.
        value: String,
    },
    /// Neither `pretty` nor `json`.
    #[error("{value:?} is not a log format (use \"pretty\" or \"json\")")]
    NotALogFormat {
        /// The value as written.
        value: String,
    },
    /// Not an `EnvFilter` directive.
    #[error(
        "{value:?} is not a log filter ({source}; use e.g. \"info\" or \"scorehub=debug,info\")"
    )]
    NotALogFilter {
        /// The value as written.
        value: String,
        /// The filter parser's complaint.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// An empty path.
    #[error("must not be empty (use a directory path, e.g. \"./data\")")]
    EmptyPath,
    /// An empty file path.
    #[error("must not be empty (use a file path, or remove the key)")]
    EmptyFile,
    /// A duration longer than the key allows.
    #[error(
        "{} is too long (use at most \"{}\")",
        humantime::format_duration(*given),
        humantime::format_duration(*max)
    )]
    AboveMax {
        /// The value, parsed.
        given: Duration,
        /// The longest accepted.
        max: Duration,
    },
    /// A duration shorter than the key allows.
    #[error(
        "{} is too short (use at least \"{}\")",
        humantime::format_duration(*given),
        humantime::format_duration(*min)
    )]
    BelowMin {
        /// The value, parsed.
        given: Duration,
        /// The shortest accepted.
        min: Duration,
    },
    /// `occupancy.ttl` shorter than two `occupancy.interval`s.
    #[error(
        "{} must be at least twice occupancy.interval ({}): a live node's report \
         would lapse between two of its reports (raise the ttl, or lower the interval)",
        humantime::format_duration(*ttl),
        humantime::format_duration(*interval)
    )]
    TtlNotAboveInterval {
        /// `occupancy.ttl`.
        ttl: Duration,
        /// `occupancy.interval`.
        interval: Duration,
    },
    /// `redis.stream_max_len` below `games.history`.
    #[error(
        "{given} is below games.history ({history}): a node could not seed the \
         resume window of a game it loads (raise it, or lower games.history)"
    )]
    BelowHistory {
        /// `redis.stream_max_len`.
        given: usize,
        /// `games.history`.
        history: usize,
    },
    /// More than one of `redis.url`, `redis.cluster`, `redis.sentinels`.
    #[error(
        "only one of redis.url, redis.cluster and redis.sentinels may be set: redis.url for \
         one server (or a managed endpoint), redis.cluster for the seed nodes of a Redis \
         Cluster, redis.sentinels for the Sentinels of a primary with replicas"
    )]
    UrlAndCluster,
    /// A TLS file for a URL that is not `rediss://`.
    #[error("is only used with TLS: make redis.url a rediss:// URL, or remove the key")]
    TlsWithoutRediss,
    /// A client certificate without its key, or a key without its certificate.
    #[error("redis.client_cert and redis.client_key go together: set both (PEM files), or neither")]
    CertWithoutKey,
    /// Not a usable key prefix.
    #[error(
        "{value:?} is not a key prefix: use 1 to 32 of A-Z a-z 0-9 _ - . (e.g. \"sh-staging\")"
    )]
    NotAPrefix {
        /// The value as written.
        value: String,
    },
}

impl ConfigError {
    /// An error about the value of `key`.
    pub(super) fn value(key: &str, problem: ValueError) -> Self {
        ConfigError::Value {
            key: key.to_owned(),
            problem,
            origin: None,
        }
    }

    /// The dotted key (`ws.ping_interval`, or a section such as `htp`) the
    /// error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownSection { section: key, .. }
            | ConfigError::UnknownKey { key, .. }
            | ConfigError::Value { key, .. } => Some(key),
            ConfigError::ReadFile { .. }
            | ConfigError::InvalidToml { .. }
            | ConfigError::EnvName { .. }
            | ConfigError::Merge { .. } => None,
        }
    }

    /// Records where the bad value came from (`from SCOREHUB_X__Y`, `in FILE`).
    pub(super) fn with_origin(mut self, from: String) -> Self {
        match &mut self {
            ConfigError::UnknownSection { origin, .. }
            | ConfigError::UnknownKey { origin, .. }
            | ConfigError::Value { origin, .. } => *origin = Some(from),
            ConfigError::ReadFile { .. }
            | ConfigError::InvalidToml { .. }
            | ConfigError::EnvName { .. }
            | ConfigError::Merge { .. } => {}
        }
        self
    }
}

/// `" (did you mean listen?)"`, or nothing.
fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion
        .map(|s| format!(" (did you mean {s}?)"))
        .unwrap_or_default()
}

/// `" (from SCOREHUB_X__Y)"`, or nothing.
fn origin_suffix(origin: Option<&str>) -> String {
    origin.map(|o| format!(" ({o})")).unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_errors_name_the_key_first_and_the_origin_last() {
        let e = ConfigError::value("games.mailbox", ValueError::Zero)
            .with_origin("from SCOREHUB_GAMES__MAILBOX".to_owned());
        assert_eq!(e.key(), Some("games.mailbox"));
        assert_eq!(
            e.to_string(),
            "config error: games.mailbox: must be greater than 0 (remove the key to use the default) \
             (from SCOREHUB_GAMES__MAILBOX)"
        );
    }

    #[test]
    fn file_errors_keep_their_source() {
        let e = ConfigError::ReadFile {
            path: "/x.toml".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(e.key(), None);
        assert!(std::error::Error::source(&e).is_some());
        // Errors not tied to a key take no origin.
        let shown = e.with_origin("in /x.toml".to_owned()).to_string();
        assert!(!shown.contains("(in /x.toml)"), "{shown}");
    }
}
