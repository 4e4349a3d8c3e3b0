//! `scorehub check`: is this config (file and environment) one `serve`
//! would start with, and is `storage.dir` usable? Nothing is created,
//! written or contacted.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::fs::Access;

use super::Exit;
use crate::config::Config;
use crate::store::StoreError;
use crate::store::file::{LOG_FILE_NAME, MAGIC, log_in_use};

/// Checks `config` (already loaded and validated, from `file` when one was
/// given) the way `serve` would use it: the log filter, and in single-node
/// mode `storage.dir` (a directory this process can write, or one it can
/// create; an event log in it must be readable, writable and start with
/// the log's header). Redis is not contacted.
///
/// Prints one summary line on `out` and answers [`Exit::Ok`], or one error
/// line on `err`, naming the key, and [`Exit::Usage`].
pub fn check(
    config: &Config,
    file: Option<&Path>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Exit {
    if let Err(e) = crate::telemetry::check_filter(&config.log.level) {
        let _ = writeln!(err, "scorehub: {e}");
        return Exit::Usage;
    }
    let mode = if config.redis.shared() {
        format!(
            "cluster mode through Redis {} (not contacted by check)",
            config.redis.shown()
        )
    } else {
        match storage(&config.storage.dir) {
            Ok(state) => format!(
                "single node, storage.dir {} ({state})",
                config.storage.dir.display()
            ),
            Err(e) => {
                let _ = writeln!(err, "scorehub: {e}");
                return Exit::Usage;
            }
        }
    };
    let secret = match &config.auth.secret {
        Some(_) => "auth.secret set",
        None => "auth.secret not set (serve generates one per run)",
    };
    let from = match file {
        Some(f) => format!("{} and the environment", f.display()),
        None => "defaults and the environment, no config file".to_owned(),
    };
    let _ = writeln!(
        out,
        "config ok ({from}): {mode}, listen {}, {secret}, log.format {}, log.level {}",
        config.http.listen, config.log.format, config.log.level
    );
    Exit::Ok
}

/// Whether `dir` can hold the event log, and what is in it; the error is the
/// one `serve` would stop with.
fn storage(dir: &Path) -> Result<String, StoreError> {
    let open_err = |reason: String| StoreError::Open {
        dir: dir.display().to_string(),
        reason,
    };
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(open_err("it is not a directory".into())),
        Ok(_) => {
            writable(dir).map_err(|e| open_err(format!("it is not writable: {e}")))?;
            let log = dir.join(LOG_FILE_NAME);
            let file = match File::open(&log) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Ok("exists, writable, no event log yet".into());
                }
                Err(e) => return Err(open_err(format!("cannot open {}: {e}", log.display()))),
            };
            rustix::fs::access(&log, Access::READ_OK | Access::WRITE_OK)
                .map_err(|e| open_err(format!("cannot write {}: {e}", log.display())))?;
            let len = file
                .metadata()
                .map_err(|e| open_err(format!("cannot stat {}: {e}", log.display())))?
                .len();
            let mut head = vec![0u8; len.min(MAGIC.len() as u64) as usize];
            file.read_exact_at(&mut head, 0)
                .map_err(|e| open_err(format!("cannot read {}: {e}", log.display())))?;
            if !MAGIC.starts_with(&head) {
                return Err(open_err(format!(
                    "{} does not start with the header {:?}: it is not a scorehub event log, or was written by an incompatible version",
                    log.display(),
                    String::from_utf8_lossy(MAGIC)
                )));
            }
            let running = match log_in_use(&file) {
                true => "; a running hub has it open",
                false => "",
            };
            Ok(format!("exists, writable, event log {len} bytes{running}"))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // serve creates it, and its missing parents.
            let parent = dir
                .ancestors()
                .skip(1)
                .map(|p| {
                    if p.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        p
                    }
                })
                .find(|p| p.exists())
                .unwrap_or(Path::new("/"));
            if !parent.is_dir() {
                return Err(open_err(format!(
                    "it does not exist, and {} is not a directory to create it in",
                    parent.display()
                )));
            }
            writable(parent).map_err(|e| {
                open_err(format!(
                    "it does not exist, and {} is not writable to create it: {e}",
                    parent.display()
                ))
            })?;
            Ok("does not exist yet; serve creates it".into())
        }
        Err(e) => Err(open_err(format!("cannot stat it: {e}"))),
    }
}

/// Whether this process may create files in `dir`.
fn writable(dir: &Path) -> Result<(), rustix::io::Errno> {
    rustix::fs::access(dir, Access::WRITE_OK | Access::EXEC_OK)
}
