//! Stage 2: raw values → the validated [`Config`].
//!
//! Each given value is parsed (addresses, durations, log filters) and checked
//! (limits > 0, secret length, Redis URL scheme, CORS origins, timeouts that
//! fit together); every value not given takes the base's value, which is
//! [`Config::default`] when loading.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::error::{ConfigError, ValueError};
use super::raw::{RawConfig, RawDuration, RawList, RawRedis};
use super::{
    AuthConfig, Config, GamesConfig, HttpConfig, LimitsConfig, LogConfig, LogFormat, MAX_RETENTION,
    MIN_OCCUPANCY_INTERVAL, MIN_SECRET_BYTES, OccupancyConfig, ProxyHeader, RedisConfig, RedisTls,
    ShutdownBudget, StorageConfig, WsConfig,
};

impl RawConfig {
    /// Parses and checks every given value; keys not given take `base`'s value.
    pub(super) fn validate(self, base: &Config) -> Result<Config, ConfigError> {
        let RawConfig {
            http,
            auth,
            redis,
            storage,
            log,
            ws,
            games,
            limits,
            occupancy,
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
            header_read_timeout: duration(
                "http.header_read_timeout",
                http.header_read_timeout,
                base.http.header_read_timeout,
            )?,
            body_timeout: duration(
                "http.body_timeout",
                http.body_timeout,
                base.http.body_timeout,
            )?,
            idle_timeout: duration(
                "http.idle_timeout",
                http.idle_timeout,
                base.http.idle_timeout,
            )?,
            max_connections: positive(
                "http.max_connections",
                http.max_connections,
                base.http.max_connections,
            )?,
            trusted_proxies: match http.trusted_proxies {
                Some(RawList(networks)) => networks
                    .iter()
                    .map(String::as_str)
                    .map(parse_network)
                    .collect::<Result<_, _>>()?,
                None => base.http.trusted_proxies.clone(),
            },
            proxy_header: match http.proxy_header.as_deref() {
                Some(h) => parse_proxy_header(h)?,
                None => base.http.proxy_header,
            },
        };
        if http.shutdown_timeout > ShutdownBudget::TOTAL {
            return Err(ConfigError::value(
                "http.shutdown_timeout",
                ValueError::TooLong {
                    given: http.shutdown_timeout,
                    max: ShutdownBudget::TOTAL,
                },
            ));
        }

        let auth = AuthConfig {
            secret: match auth.secret {
                Some(s) => Some(check_secret(s)?),
                None => base.auth.secret.clone(),
            },
        };

        let redis = check_redis(redis, &base.redis)?;

        let storage = StorageConfig {
            dir: match storage.dir {
                Some(d) if d.trim().is_empty() => {
                    return Err(ConfigError::value("storage.dir", ValueError::EmptyPath));
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
            return Err(ConfigError::value(
                "ws.idle_timeout",
                ValueError::IdleNotAbovePing {
                    idle: ws.idle_timeout,
                    ping: ws.ping_interval,
                },
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
            retention: duration("games.retention", games.retention, base.games.retention)?,
            fan_shards: games.fan_shards.unwrap_or(base.games.fan_shards),
            inline_fans: positive(
                "games.inline_fans",
                games.inline_fans,
                base.games.inline_fans,
            )?,
        };
        if games.retention > MAX_RETENTION {
            return Err(ConfigError::value(
                "games.retention",
                ValueError::AboveMax {
                    given: games.retention,
                    max: MAX_RETENTION,
                },
            ));
        }

        if redis.stream_max_len < games.history {
            return Err(ConfigError::value(
                "redis.stream_max_len",
                ValueError::BelowHistory {
                    given: redis.stream_max_len,
                    history: games.history,
                },
            ));
        }

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
            max_sse_streams: positive(
                "limits.max_sse_streams",
                limits.max_sse_streams,
                b.max_sse_streams,
            )?,
        };

        let occupancy = OccupancyConfig {
            interval: duration(
                "occupancy.interval",
                occupancy.interval,
                base.occupancy.interval,
            )?,
            ttl: duration("occupancy.ttl", occupancy.ttl, base.occupancy.ttl)?,
        };
        if occupancy.interval < MIN_OCCUPANCY_INTERVAL {
            return Err(ConfigError::value(
                "occupancy.interval",
                ValueError::BelowMin {
                    given: occupancy.interval,
                    min: MIN_OCCUPANCY_INTERVAL,
                },
            ));
        }
        if occupancy.ttl < occupancy.interval * 2 {
            return Err(ConfigError::value(
                "occupancy.ttl",
                ValueError::TtlNotAboveInterval {
                    ttl: occupancy.ttl,
                    interval: occupancy.interval,
                },
            ));
        }

        Ok(Config {
            http,
            auth,
            redis,
            storage,
            log,
            ws,
            games,
            limits,
            occupancy,
        })
    }
}

/// A limit where 0 makes no sense.
fn positive<T>(key: &str, value: Option<T>, default: T) -> Result<T, ConfigError>
where
    T: PartialEq + Default + Copy,
{
    match value {
        Some(v) if v == T::default() => Err(ConfigError::value(key, ValueError::Zero)),
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
        Ok(d) if d.is_zero() => Err(ConfigError::value(
            key,
            ValueError::ZeroDuration { value: s },
        )),
        Ok(d) => Ok(d),
        Err(source) => Err(ConfigError::value(
            key,
            ValueError::NotADuration { value: s, source },
        )),
    }
}

fn parse_listen(s: &str) -> Result<SocketAddr, ConfigError> {
    s.trim().parse().map_err(|source| {
        ConfigError::value(
            "http.listen",
            ValueError::NotAnAddress {
                value: s.to_owned(),
                source,
            },
        )
    })
}

/// One entry of `http.trusted_proxies`: a CIDR network (`10.0.0.0/8`,
/// `fd00::/8`) or a single address (taken as /32 or /128). A network with
/// bits set below its prefix (`10.0.0.1/8`) is refused with the network it
/// probably means: it is usually a typo for a single address or a shorter
/// prefix, and silently widening it could trust more peers than intended.
fn parse_network(s: &str) -> Result<ipnet::IpNet, ConfigError> {
    const KEY: &str = "http.trusted_proxies";
    let s = s.trim();
    if !s.contains('/') {
        return match s.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(ipnet::IpNet::from(ip)),
            Err(_) => Err(ConfigError::value(
                KEY,
                ValueError::NotANetwork {
                    value: s.to_owned(),
                },
            )),
        };
    }
    let net: ipnet::IpNet = s.parse().map_err(|_| {
        ConfigError::value(
            KEY,
            ValueError::NotANetwork {
                value: s.to_owned(),
            },
        )
    })?;
    if net.trunc() != net {
        return Err(ConfigError::value(KEY, ValueError::HostBitsSet { net }));
    }
    Ok(net)
}

fn parse_proxy_header(s: &str) -> Result<ProxyHeader, ConfigError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "x-forwarded-for" => Ok(ProxyHeader::XForwardedFor),
        "forwarded" => Ok(ProxyHeader::Forwarded),
        _ => Err(ConfigError::value(
            "http.proxy_header",
            ValueError::NotAProxyHeader {
                value: s.to_owned(),
            },
        )),
    }
}

fn check_secret(secret: String) -> Result<String, ConfigError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(ConfigError::value(
            "auth.secret",
            ValueError::SecretTooShort { len: secret.len() },
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
            return Err(ConfigError::value(KEY, ValueError::WildcardNotAlone));
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
            return Err(ConfigError::value(KEY, ValueError::NotAnOrigin { shown }));
        }
    }
    Ok(origins)
}

/// Longest `redis.replica_ack_timeout`: a `WAIT` must end well inside the
/// 2 s every Redis command is given.
const MAX_REPLICA_ACK_TIMEOUT: Duration = Duration::from_millis(1500);

fn check_redis(raw: RawRedis, base: &RedisConfig) -> Result<RedisConfig, ConfigError> {
    let path = |key: &str, value: Option<String>, base: &Option<PathBuf>| match value {
        Some(v) if v.trim().is_empty() => Err(ConfigError::value(key, ValueError::EmptyFile)),
        Some(v) => Ok(Some(PathBuf::from(v))),
        None => Ok(base.clone()),
    };
    let redis = RedisConfig {
        url: match raw.url {
            Some(url) => Some(check_redis_url("redis.url", url)?),
            None => base.url.clone(),
        },
        cluster: match raw.cluster {
            Some(RawList(urls)) => urls
                .into_iter()
                .map(|u| check_redis_url("redis.cluster", u))
                .collect::<Result<_, _>>()?,
            None => base.cluster.clone(),
        },
        sentinels: match raw.sentinels {
            Some(RawList(urls)) => urls
                .into_iter()
                .map(|u| check_redis_url("redis.sentinels", u))
                .collect::<Result<_, _>>()?,
            None => base.sentinels.clone(),
        },
        sentinel_master: match raw.sentinel_master {
            Some(name) => check_prefix("redis.sentinel_master", name)?,
            None => base.sentinel_master.clone(),
        },
        prefix: match raw.prefix {
            Some(p) => check_prefix("redis.prefix", p)?,
            None => base.prefix.clone(),
        },
        tls: RedisTls {
            ca_file: path("redis.ca_file", raw.ca_file, &base.tls.ca_file)?,
            client_cert: path("redis.client_cert", raw.client_cert, &base.tls.client_cert)?,
            client_key: path("redis.client_key", raw.client_key, &base.tls.client_key)?,
        },
        min_replicas_acked: raw.min_replicas_acked.unwrap_or(base.min_replicas_acked),
        replica_ack_timeout: duration(
            "redis.replica_ack_timeout",
            raw.replica_ack_timeout,
            base.replica_ack_timeout,
        )?,
        stream_max_len: positive(
            "redis.stream_max_len",
            raw.stream_max_len,
            base.stream_max_len,
        )?,
    };
    let modes = [
        redis.url.is_some(),
        !redis.cluster.is_empty(),
        !redis.sentinels.is_empty(),
    ];
    if modes.iter().filter(|&&m| m).count() > 1 {
        let key = if modes[1] {
            "redis.cluster"
        } else {
            "redis.sentinels"
        };
        return Err(ConfigError::value(key, ValueError::UrlAndCluster));
    }
    if redis.replica_ack_timeout > MAX_REPLICA_ACK_TIMEOUT {
        return Err(ConfigError::value(
            "redis.replica_ack_timeout",
            ValueError::AboveMax {
                given: redis.replica_ack_timeout,
                max: MAX_REPLICA_ACK_TIMEOUT,
            },
        ));
    }
    let tls = &redis.tls;
    let rediss = redis
        .url
        .iter()
        .chain(&redis.cluster)
        .any(|u| u.to_ascii_lowercase().starts_with("rediss://"));
    for (key, set) in [
        ("redis.ca_file", tls.ca_file.is_some()),
        ("redis.client_cert", tls.client_cert.is_some()),
        ("redis.client_key", tls.client_key.is_some()),
    ] {
        if set && !rediss {
            return Err(ConfigError::value(key, ValueError::TlsWithoutRediss));
        }
    }
    match (&tls.client_cert, &tls.client_key) {
        (Some(_), None) => Err(ConfigError::value(
            "redis.client_key",
            ValueError::CertWithoutKey,
        )),
        (None, Some(_)) => Err(ConfigError::value(
            "redis.client_cert",
            ValueError::CertWithoutKey,
        )),
        _ => Ok(redis),
    }
}

/// A key prefix: 1–32 of `A–Z a–z 0–9 _ - .` (no `:` or braces, which
/// structure the names after it).
fn check_prefix(key: &str, prefix: String) -> Result<String, ConfigError> {
    let ok = (1..=32).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(prefix)
    } else {
        Err(ConfigError::value(
            key,
            ValueError::NotAPrefix { value: prefix },
        ))
    }
}

fn check_redis_url(key: &str, url: String) -> Result<String, ConfigError> {
    let lower = url.trim().to_ascii_lowercase();
    let rest = lower
        .strip_prefix("redis://")
        .or_else(|| lower.strip_prefix("rediss://"));
    match rest {
        Some(rest) if !rest.is_empty() => Ok(url.trim().to_owned()),
        _ => Err(ConfigError::value(key, ValueError::NotARedisUrl)),
    }
}

fn parse_log_format(s: &str) -> Result<LogFormat, ConfigError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "pretty" => Ok(LogFormat::Pretty),
        "json" => Ok(LogFormat::Json),
        _ => Err(ConfigError::value(
            "log.format",
            ValueError::NotALogFormat {
                value: s.to_owned(),
            },
        )),
    }
}

fn check_log_level(level: String) -> Result<String, ConfigError> {
    match tracing_subscriber::EnvFilter::builder().parse(&level) {
        Ok(_) => Ok(level),
        Err(source) => Err(ConfigError::value(
            "log.level",
            ValueError::NotALogFilter {
                value: level,
                source,
            },
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::time::Duration;

    use crate::config::test_support::{env, load_toml, write_toml};
    use crate::config::{Config, LimitsConfig};

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
    fn redis_section_is_checked_key_by_key() {
        let c = load_toml(
            "[redis]\nurl = \"rediss://h:6380/0\"\nprefix = \"sh-staging.2\"\n\
             ca_file = \"/ca.pem\"\nclient_cert = \"/c.pem\"\nclient_key = \"/c.key\"\n\
             min_replicas_acked = 1\nreplica_ack_timeout = \"1s\"\nstream_max_len = 1000\n",
        )
        .unwrap();
        assert_eq!(c.redis.prefix, "sh-staging.2");
        assert_eq!(c.redis.tls.ca_file.as_deref(), Some("/ca.pem".as_ref()));
        assert_eq!(c.redis.min_replicas_acked, 1);
        assert_eq!(c.redis.replica_ack_timeout, Duration::from_secs(1));
        assert_eq!(c.redis.stream_max_len, 1000);
        let e = env(&[("SCOREHUB_REDIS__PREFIX", "tenant_b")]);
        assert_eq!(
            Config::load_from(None, &e).unwrap().redis.prefix,
            "tenant_b"
        );

        for (text, key, says) in [
            ("prefix = \"\"", "redis.prefix", "not a key prefix"),
            ("prefix = \"a:b\"", "redis.prefix", "not a key prefix"),
            ("prefix = \"{x}\"", "redis.prefix", "not a key prefix"),
            (
                "prefix = \"a23456789012345678901234567890123\"",
                "redis.prefix",
                "1 to 32",
            ),
            (
                "url = \"redis://h/0\"\nca_file = \"/ca.pem\"",
                "redis.ca_file",
                "rediss://",
            ),
            ("ca_file = \"/ca.pem\"", "redis.ca_file", "rediss://"),
            (
                "url = \"rediss://h/0\"\nclient_cert = \"/c.pem\"",
                "redis.client_key",
                "go together",
            ),
            (
                "url = \"rediss://h/0\"\nclient_key = \"/c.key\"",
                "redis.client_cert",
                "go together",
            ),
            (
                "url = \"rediss://h/0\"\nca_file = \" \"",
                "redis.ca_file",
                "empty",
            ),
            (
                "replica_ack_timeout = \"2s\"",
                "redis.replica_ack_timeout",
                "at most \"1s 500ms\"",
            ),
            (
                "stream_max_len = 0",
                "redis.stream_max_len",
                "greater than 0",
            ),
            (
                "stream_max_len = 999",
                "redis.stream_max_len",
                "games.history (1000)",
            ),
        ] {
            let err = load_toml(&format!("[redis]\n{text}\n")).unwrap_err();
            assert_eq!(err.key(), Some(key), "{text}: {err}");
            assert!(err.to_string().contains(says), "{text}: {err}");
        }
        let c = load_toml("[redis]\ncluster = [\"redis://a:7000\", \"redis://b:7000\"]\n").unwrap();
        assert_eq!(c.redis.cluster, ["redis://a:7000", "redis://b:7000"]);
        assert!(c.redis.shared());
        let e = env(&[("SCOREHUB_REDIS__CLUSTER", "redis://a:7000,rediss://b:7000")]);
        let c = Config::load_from(None, &e).unwrap();
        assert_eq!(c.redis.cluster.len(), 2);
        let err = load_toml("[redis]\nurl = \"redis://h/0\"\ncluster = [\"redis://a:7000\"]\n")
            .unwrap_err();
        assert_eq!(err.key(), Some("redis.cluster"), "{err}");
        assert!(err.to_string().contains("only one of"), "{err}");
        let err = load_toml("[redis]\ncluster = [\"http://a:7000\"]\n").unwrap_err();
        assert_eq!(err.key(), Some("redis.cluster"), "{err}");
        assert!(!Config::default().redis.shared());
        let c = load_toml(
            "[redis]\nsentinels = [\"redis://s1:26379\"]\nsentinel_master = \"scores\"\n",
        )
        .unwrap();
        assert_eq!(c.redis.sentinels, ["redis://s1:26379"]);
        assert_eq!(c.redis.sentinel_master, "scores");
        assert!(c.redis.shared());
        let err = load_toml("[redis]\nurl = \"redis://h/0\"\nsentinels = [\"redis://s:26379\"]\n")
            .unwrap_err();
        assert_eq!(err.key(), Some("redis.sentinels"), "{err}");
        let err = load_toml("[redis]\nsentinel_master = \"a b\"\n").unwrap_err();
        assert_eq!(err.key(), Some("redis.sentinel_master"), "{err}");
        // The history bound follows games.history.
        let c = load_toml("[redis]\nstream_max_len = 10\n[games]\nhistory = 10\n").unwrap();
        assert_eq!(c.redis.stream_max_len, 10);
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
    fn http_timeouts_and_connection_cap_come_from_file_and_env() {
        let c = load_toml(
            "[http]\nheader_read_timeout = \"2s\"\nbody_timeout = \"5s\"\nmax_connections = 100\n",
        )
        .unwrap();
        assert_eq!(c.http.header_read_timeout, Duration::from_secs(2));
        assert_eq!(c.http.body_timeout, Duration::from_secs(5));
        assert_eq!(c.http.idle_timeout, Duration::from_secs(60), "default");
        assert_eq!(c.http.max_connections, 100);
        let e = env(&[
            ("SCOREHUB_HTTP__IDLE_TIMEOUT", "1m 30s"),
            ("SCOREHUB_HTTP__MAX_CONNECTIONS", "7"),
        ]);
        let c = Config::load_from(None, &e).unwrap();
        assert_eq!(c.http.idle_timeout, Duration::from_secs(90));
        assert_eq!(c.http.max_connections, 7);
        for (var, key) in [
            (
                "SCOREHUB_HTTP__HEADER_READ_TIMEOUT",
                "http.header_read_timeout",
            ),
            ("SCOREHUB_HTTP__BODY_TIMEOUT", "http.body_timeout"),
            ("SCOREHUB_HTTP__IDLE_TIMEOUT", "http.idle_timeout"),
            ("SCOREHUB_HTTP__MAX_CONNECTIONS", "http.max_connections"),
        ] {
            let err = Config::load_from(None, &env(&[(var, "0")])).unwrap_err();
            assert_eq!(err.key(), Some(key), "{err}");
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn trusted_proxies_are_networks_from_a_list_or_env_string() {
        let c = load_toml(
            "[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.168.1.7\", \"fd00::/8\"]\n\
             proxy_header = \"Forwarded\"\n",
        )
        .unwrap();
        let shown: Vec<String> = c
            .http
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8"]);
        assert_eq!(c.http.proxy_header, crate::config::ProxyHeader::Forwarded);
        let e = env(&[("SCOREHUB_HTTP__TRUSTED_PROXIES", "127.0.0.1, ::1")]);
        let c = Config::load_from(None, &e).unwrap();
        let shown: Vec<String> = c
            .http
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(shown, ["127.0.0.1/32", "::1/128"]);
        assert_eq!(
            c.http.proxy_header,
            crate::config::ProxyHeader::XForwardedFor,
            "default"
        );

        for (bad, says) in [
            ("10.0.0.0/33", "is not an IP address or network"),
            ("proxy.internal", "is not an IP address or network"),
            (
                "10.0.0.1/8",
                "write the network \"10.0.0.0/8\", or the single address \"10.0.0.1\"",
            ),
        ] {
            let e = env(&[("SCOREHUB_HTTP__TRUSTED_PROXIES", bad)]);
            let err = Config::load_from(None, &e).unwrap_err();
            assert_eq!(err.key(), Some("http.trusted_proxies"), "{bad}");
            let msg = err.to_string();
            assert!(msg.contains(says), "{msg}");
            assert!(msg.contains("SCOREHUB_HTTP__TRUSTED_PROXIES"), "{msg}");
        }
        let err = load_toml("[http]\nproxy_header = \"x-real-ip\"\n").unwrap_err();
        assert_eq!(err.key(), Some("http.proxy_header"));
        assert!(
            err.to_string()
                .contains("\"x-forwarded-for\" or \"forwarded\""),
            "{err}"
        );
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
            ("SCOREHUB_LIMITS__MAX_SSE_STREAMS", "8"),
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
                max_sse_streams: 8,
            }
        );
        let err = load_toml("[limits]\nmax_sse_streams = 0\n").unwrap_err();
        assert_eq!(err.key(), Some("limits.max_sse_streams"));
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
    fn occupancy_interval_has_a_floor_and_the_ttl_spans_two_intervals() {
        let c = load_toml("[occupancy]\ninterval = \"250ms\"\nttl = \"2s\"\n").unwrap();
        assert_eq!(c.occupancy.interval, Duration::from_millis(250));
        assert_eq!(c.occupancy.ttl, Duration::from_secs(2));
        let err = load_toml("[occupancy]\ninterval = \"10ms\"\n").unwrap_err();
        assert_eq!(err.key(), Some("occupancy.interval"), "{err}");
        assert!(err.to_string().contains("100ms"), "{err}");
        let err = load_toml("[occupancy]\ninterval = \"3s\"\n").unwrap_err();
        assert_eq!(err.key(), Some("occupancy.ttl"), "{err}");
        assert!(
            err.to_string()
                .contains("at least twice occupancy.interval"),
            "{err}"
        );
        let err = load_toml("[occupancy]\nttl = \"0s\"\n").unwrap_err();
        assert_eq!(err.key(), Some("occupancy.ttl"), "{err}");
        let err = load_toml("[occupancy]\nrate = \"1s\"\n").unwrap_err();
        assert!(err.to_string().contains("occupancy"), "{err}");
    }

    #[test]
    fn games_retention_is_a_positive_bounded_duration() {
        assert_eq!(
            Config::default().games.retention,
            Duration::from_secs(7 * 24 * 3600)
        );
        let c = load_toml("[games]\nretention = \"36h\"\n").unwrap();
        assert_eq!(c.games.retention, Duration::from_secs(36 * 3600));
        let e = env(&[("SCOREHUB_GAMES__RETENTION", "250ms")]);
        let c = Config::load_from(None, &e).unwrap();
        assert_eq!(c.games.retention, Duration::from_millis(250));
        for (value, says) in [
            ("0", "games.retention: \"0\" must be longer than zero"),
            ("0s", "games.retention: \"0s\" must be longer than zero"),
            ("off", "games.retention: \"off\" is not a duration"),
            (
                "101years",
                "games.retention: 101years is too long (use at most \"100years\")",
            ),
        ] {
            let e = env(&[("SCOREHUB_GAMES__RETENTION", value)]);
            let err = Config::load_from(None, &e).unwrap_err();
            assert_eq!(err.key(), Some("games.retention"), "{value}");
            let msg = err.to_string();
            assert!(msg.contains(says), "{value}: {msg}");
            assert!(msg.contains("from SCOREHUB_GAMES__RETENTION"), "{msg}");
        }
        let err = load_toml("[games]\nretention = 7\n").unwrap_err();
        assert_eq!(err.key(), Some("games.retention"), "{err}");
    }

    #[test]
    fn games_inline_fans_is_positive() {
        assert_eq!(
            Config::default().games.inline_fans,
            crate::fanout::fans::INLINE_FANS
        );
        let c = load_toml("[games]\ninline_fans = 32\n").unwrap();
        assert_eq!(c.games.inline_fans, 32);
        let e = env(&[("SCOREHUB_GAMES__INLINE_FANS", "0")]);
        let err = Config::load_from(None, &e).unwrap_err();
        assert_eq!(err.key(), Some("games.inline_fans"), "{err}");
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
}
