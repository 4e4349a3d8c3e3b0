//! Logging: one global `tracing` subscriber writing to stderr, as human lines or JSON.
//!
//! The filter comes from `log.level` unless `RUST_LOG` is set (then `RUST_LOG`
//! wins, the usual convention for a one-off debugging session).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::ParseError;

use crate::config::LogFormat;

/// A log filter that does not parse.
#[derive(Debug, thiserror::Error)]
#[error(
    "{origin}: {directives:?} is not a log filter ({source}); use e.g. \"info\" or \"scorehub=debug,info\""
)]
pub struct BadLogFilter {
    /// Where it came from: `log.level` or `RUST_LOG`.
    pub origin: &'static str,
    /// The filter as given.
    pub directives: String,
    /// What the parser said.
    pub source: ParseError,
}

/// Installs the global subscriber: `pretty` = single human-readable lines
/// (coloured on a terminal), `json` = one JSON object per line with the event's
/// fields at the top level. Filter: `level` (an `EnvFilter` directive), or
/// `RUST_LOG` when set and non-empty. Logs go to stderr.
///
/// A bad filter is an error naming its source. Once a global subscriber is
/// installed (by an earlier call, or by a test harness), later calls only check
/// the filter and change nothing.
pub fn init_logging(format: LogFormat, level: &str) -> Result<(), BadLogFilter> {
    let filter = build_filter(level, std::env::var("RUST_LOG").ok().as_deref())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Pretty => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    // Err only means a global subscriber already exists: keep it (a no-op).
    drop(installed);
    Ok(())
}

/// Checks the filter [`init_logging`] would use (`RUST_LOG` when set and
/// non-empty, else `level`) without installing anything: `scorehub check`.
pub fn check_filter(level: &str) -> Result<(), BadLogFilter> {
    build_filter(level, std::env::var("RUST_LOG").ok().as_deref()).map(drop)
}

/// The filter from `RUST_LOG` when set and non-empty, else from `level`.
fn build_filter(level: &str, rust_log: Option<&str>) -> Result<EnvFilter, BadLogFilter> {
    let (directives, origin) = match rust_log.map(str::trim) {
        Some(env) if !env.is_empty() => (env, "RUST_LOG"),
        _ => (level, "log.level"),
    };
    EnvFilter::builder()
        .parse(directives)
        .map_err(|source| BadLogFilter {
            origin,
            directives: directives.to_owned(),
            source,
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn rust_log_overrides_level() {
        let f = build_filter("info", Some("scorehub=trace")).unwrap();
        assert!(f.to_string().contains("scorehub=trace"));
        let f = build_filter("warn", Some("  ")).unwrap();
        assert_eq!(f.to_string(), "warn");
        let f = build_filter("debug", None).unwrap();
        assert_eq!(f.to_string(), "debug");
    }

    #[test]
    fn bad_filters_name_their_source() {
        let e = build_filter("scorehub=loud", None).unwrap_err();
        assert!(e.to_string().starts_with("log.level:"), "{e}");
        let e = build_filter("info", Some("x=loud")).unwrap_err();
        assert!(e.to_string().starts_with("RUST_LOG:"), "{e}");
    }

    #[test]
    fn init_twice_is_a_no_op() {
        assert!(init_logging(LogFormat::Json, "info").is_ok());
        assert!(init_logging(LogFormat::Pretty, "debug").is_ok());
    }
}
