//! Where raw values come from: built-in defaults < the TOML file (`--config
//! FILE` or `SCOREHUB_CONFIG`) < the environment (`SCOREHUB_<SECTION>__<KEY>`),
//! merged with figment, and which layer set a given key (for error messages).
//!
//! Environment values always arrive as strings; they are kept as strings here
//! (so a secret or path is never reinterpreted) and `extract_lossy` converts
//! them to numbers or booleans only where the target key is a number or a
//! boolean.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::error::ConfigError;
use super::raw::{RawConfig, from_figment};
use super::{ENV_CONFIG_FILE, ENV_PREFIX};

/// The layers above the built-in defaults: the config file, if any, and the
/// `SCOREHUB_` environment variables.
pub(super) struct Layers {
    file: Option<ConfigFile>,
    env: Vec<EnvVar>,
}

impl Layers {
    /// Reads the layers. `file` is the `--config` value; without it,
    /// `SCOREHUB_CONFIG` names the file (an empty value counts as unset).
    pub(super) fn gather(
        file: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
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
        Ok(Layers {
            file,
            env: env_vars,
        })
    }

    /// Merges the file and then the environment (which wins) into raw values.
    pub(super) fn extract(&self) -> Result<RawConfig, ConfigError> {
        let mut figment = Figment::new();
        if let Some(file) = &self.file {
            figment = figment.merge(Toml::string(&file.text));
        }
        figment = figment.merge(EnvLayer::new(&self.env));
        figment
            .extract_lossy()
            .map_err(|e| self.locate(from_figment(e)))
    }

    /// Appends to `error` where its key's value came from, when that is known.
    pub(super) fn locate(&self, error: ConfigError) -> ConfigError {
        match error.key().and_then(|key| self.origin(key)) {
            Some(origin) => error.with_origin(origin),
            None => error,
        }
    }

    /// "from SCOREHUB_X__Y" or "in FILE" for the layer that set `key` (or, for a
    /// section, any key inside it); env wins because it is merged last.
    fn origin(&self, key: &str) -> Option<String> {
        let inside = |dotted: &str| dotted == key || dotted.starts_with(&format!("{key}."));
        if let Some(var) = self.env.iter().rev().find(|v| inside(&v.dotted())) {
            return Some(format!("from {}", var.name));
        }
        let file = self.file.as_ref()?;
        file.figment
            .contains(key)
            .then(|| format!("in {}", file.path.display()))
    }
}

/// The config file, read and checked to be valid TOML.
struct ConfigFile {
    path: PathBuf,
    text: String,
    /// The file alone, to tell whether it sets a given key.
    figment: Figment,
}

impl ConfigFile {
    fn read(path: PathBuf) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(source) => return Err(ConfigError::ReadFile { path, source }),
        };
        let toml = Toml::string(&text);
        if let Err(source) = toml.data() {
            return Err(ConfigError::InvalidToml {
                path,
                source: Box::new(source),
            });
        }
        Ok(ConfigFile {
            path,
            figment: Figment::from(toml),
            text,
        })
    }
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
                    return Err(ConfigError::EnvName { name: name.clone() });
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use crate::config::test_support::{env, load_toml, write_toml};
    use crate::config::{Config, GamesConfig, LogFormat};

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
}
