//! The error of loading the configuration: one line naming the key, the
//! problem, the fix and where the bad value came from.

use std::fmt;

/// A configuration problem; `Display` is one line naming the key and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub(super) key: Option<String>,
    pub(super) message: String,
}

impl ConfigError {
    /// An error about `key`, rendered as `key: detail`.
    pub(super) fn at(key: &str, detail: impl fmt::Display) -> Self {
        ConfigError {
            key: Some(key.to_owned()),
            message: format!("{key}: {detail}"),
        }
    }

    /// An error not tied to one key (unreadable file, malformed variable name).
    pub(super) fn general(message: impl Into<String>) -> Self {
        ConfigError {
            key: None,
            message: message.into(),
        }
    }

    /// The dotted key (`ws.ping_interval`) the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Appends where the bad value came from (`from SCOREHUB_X__Y`, `in FILE`).
    pub(super) fn with_origin(mut self, origin: String) -> Self {
        self.message = format!("{} ({origin})", self.message);
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config error: {}", self.message)
    }
}

impl std::error::Error for ConfigError {}
