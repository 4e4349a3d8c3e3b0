//! Helpers shared by the config module's unit tests.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use super::{Config, ConfigError};

/// An environment from `(name, value)` pairs.
pub(super) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A temporary `.toml` file holding `text`.
pub(super) fn write_toml(text: &str) -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

/// Loads `text` as the config file, with no environment.
pub(super) fn load_toml(text: &str) -> Result<Config, ConfigError> {
    let f = write_toml(text);
    Config::load_from(Some(f.path()), &[])
}

/// `config/default.toml` in the repository.
pub(super) fn default_toml_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml")
}
