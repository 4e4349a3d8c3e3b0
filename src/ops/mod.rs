//! Operators' commands that run beside the hub, never inside it:
//! `scorehub check` ([`check`]: the config, environment and `storage.dir`,
//! without starting), `scorehub log verify` ([`verify_log`]: the embedded
//! event log and its index, read-only) and `scorehub games list`
//! ([`list_games`]: the games the log or Redis holds).
//!
//! `main` parses the command line and loads the config (a bad one exits 2
//! there, with the same line `serve` prints); these write their report to
//! `out`, their errors to `err`, and answer the process's [`Exit`] status.
//! The record format is read only through [`crate::store::file::scan`], and
//! records are folded into games by the same [`crate::backend::Replayer`]
//! the hub starts with.

mod check;
mod games;
mod log;

pub use self::check::check;
pub use self::games::list_games;
pub use self::log::verify_log;

/// How an operator's command ended: its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: valid, clean, listed.
    Ok,
    /// 1: it ran, and found problems (or could not reach Redis).
    Problems,
    /// 2: bad usage or config: nothing was checked.
    Usage,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Problems => 1,
            Exit::Usage => 2,
        }
    }
}
