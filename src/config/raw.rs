//! Stage 1: the configuration as written, and why it could not be read.
//!
//! Every section denies unknown fields, so a typo is an error instead of a
//! silently ignored setting. Every field is optional: "not given" is distinct
//! from "given". Values are kept as written (durations and lists as strings)
//! and parsed in stage 2 ([`super::validate`]). A deserialisation failure
//! becomes a [`ConfigError`] naming the key, with a typo hint for unknown keys.

use std::fmt;

use serde::Deserialize;

use super::error::{ConfigError, ValueError};
use super::{Redacted, redact_url};

/// Keys whose values must never be echoed in error messages.
const SENSITIVE_KEYS: &[&str] = &[
    "auth.secret",
    "redis.url",
    "redis.cluster",
    "redis.sentinels",
];

/// The configuration as written: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) http: RawHttp,
    pub(super) auth: RawAuth,
    pub(super) redis: RawRedis,
    pub(super) storage: RawStorage,
    pub(super) log: RawLog,
    pub(super) ws: RawWs,
    pub(super) games: RawGames,
    pub(super) limits: RawLimits,
    pub(super) occupancy: RawOccupancy,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) listen: Option<String>,
    pub(super) max_body_bytes: Option<usize>,
    pub(super) shutdown_timeout: Option<RawDuration>,
    pub(super) cors_origins: Option<RawList>,
    pub(super) header_read_timeout: Option<RawDuration>,
    pub(super) body_timeout: Option<RawDuration>,
    pub(super) idle_timeout: Option<RawDuration>,
    pub(super) max_connections: Option<usize>,
    pub(super) trusted_proxies: Option<RawList>,
    pub(super) proxy_header: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) secret: Option<String>,
}

impl fmt::Debug for RawAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = self.secret.as_ref().map(|_| Redacted);
        f.debug_struct("RawAuth").field("secret", &secret).finish()
    }
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawRedis {
    pub(super) url: Option<String>,
    pub(super) cluster: Option<RawList>,
    pub(super) sentinels: Option<RawList>,
    pub(super) sentinel_master: Option<String>,
    pub(super) prefix: Option<String>,
    pub(super) ca_file: Option<String>,
    pub(super) client_cert: Option<String>,
    pub(super) client_key: Option<String>,
    pub(super) min_replicas_acked: Option<u32>,
    pub(super) replica_ack_timeout: Option<RawDuration>,
    pub(super) stream_max_len: Option<usize>,
}

impl fmt::Debug for RawRedis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.url.as_deref().map(redact_url);
        f.debug_struct("RawRedis")
            .field("url", &url)
            .field(
                "cluster",
                &self
                    .cluster
                    .as_ref()
                    .map(|RawList(urls)| urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>()),
            )
            .field(
                "sentinels",
                &self
                    .sentinels
                    .as_ref()
                    .map(|RawList(urls)| urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>()),
            )
            .field("sentinel_master", &self.sentinel_master)
            .field("prefix", &self.prefix)
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("min_replicas_acked", &self.min_replicas_acked)
            .field("replica_ack_timeout", &self.replica_ack_timeout)
            .field("stream_max_len", &self.stream_max_len)
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawStorage {
    pub(super) dir: Option<String>,
    pub(super) fsync: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<String>,
    pub(super) level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawWs {
    pub(super) max_subscriptions: Option<usize>,
    pub(super) max_message_bytes: Option<usize>,
    pub(super) queue_frames: Option<usize>,
    pub(super) max_queue_bytes: Option<usize>,
    pub(super) ping_interval: Option<RawDuration>,
    pub(super) idle_timeout: Option<RawDuration>,
    pub(super) messages_per_second: Option<u32>,
    pub(super) message_burst: Option<u32>,
    pub(super) write_timeout: Option<RawDuration>,
    pub(super) stuck_timeout: Option<RawDuration>,
    pub(super) send_buffer_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawGames {
    pub(super) history: Option<usize>,
    pub(super) mailbox: Option<usize>,
    pub(super) idle_unload: Option<RawDuration>,
    pub(super) retention: Option<RawDuration>,
    pub(super) fan_shards: Option<usize>,
    pub(super) inline_fans: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawOccupancy {
    pub(super) interval: Option<RawDuration>,
    pub(super) ttl: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) events_per_second: Option<u32>,
    pub(super) events_burst: Option<u32>,
    pub(super) exempt_admin: Option<bool>,
    pub(super) ws_connects_per_ip_per_second: Option<u32>,
    pub(super) ws_connect_burst: Option<u32>,
    pub(super) exempt_loopback: Option<bool>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_sse_streams: Option<usize>,
}

/// A duration as written (`"20s"`); parsed in stage 2. Its own type only so a
/// wrong type reads "expected a duration string such as "20s"".
#[derive(Debug)]
pub(super) struct RawDuration(pub(super) String);

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
pub(super) struct RawList(pub(super) Vec<String>);

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

/// Turns a figment extraction error into a [`ConfigError`] naming the key.
pub(super) fn from_figment(e: figment::Error) -> ConfigError {
    use figment::error::Kind;

    let key = e.path.join(".");
    let value = |problem| ConfigError::value(&key, problem);
    match &e.kind {
        Kind::UnknownField(field, known) => {
            // The path ends with the unknown field itself; the rest is its section.
            let mut section = e.path.clone();
            if section.last() == Some(field) {
                section.pop();
            }
            let section = section.join(".");
            let suggestion = did_you_mean(field, known);
            if section.is_empty() {
                ConfigError::UnknownSection {
                    section: field.clone(),
                    suggestion,
                    known,
                    origin: None,
                }
            } else {
                ConfigError::UnknownKey {
                    key: format!("{section}.{field}"),
                    section,
                    suggestion,
                    known,
                    origin: None,
                }
            }
        }
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            let expected = friendly_expected(&key, expected);
            if SENSITIVE_KEYS.contains(&key.as_str()) {
                value(ValueError::SecretWrongType {
                    expected,
                    source: Box::new(e.clone()),
                })
            } else {
                value(ValueError::WrongType {
                    expected,
                    found: friendly_actual(actual),
                    source: Box::new(e.clone()),
                })
            }
        }
        Kind::USizeOutOfRange(_) | Kind::ISizeOutOfRange(_) => value(ValueError::OutOfRange {
            source: Box::new(e.clone()),
        }),
        _ if key.is_empty() => ConfigError::Merge {
            source: Box::new(e.clone()),
        },
        _ => value(ValueError::Unreadable {
            source: Box::new(e.clone()),
        }),
    }
}

/// The known name a small typo away from `given`, for a "did you mean" hint.
fn did_you_mean(given: &str, known: &[&str]) -> Option<String> {
    known
        .iter()
        .map(|k| (edit_distance(given, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k.to_owned())
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use crate::config::Config;
    use crate::config::test_support::{env, load_toml};

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
}
