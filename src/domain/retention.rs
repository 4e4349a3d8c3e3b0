//! How long a finished game is kept (`games.retention`): the rule both logs
//! apply, as arithmetic on times the caller passes in.
//!
//! A game is *finished* while its status is `final` or `cancelled`
//! ([`Status::is_finished`](super::Status::is_finished)). Every event that
//! leaves it finished restarts the clock: `finished_at` is that event's
//! server time (its record's `at`); an event that reopens the game clears
//! it. Once `finished_at + retention` has passed, the game is gone: its
//! reads answer like a game never created.

use std::time::Duration;

use super::Status;

/// The retention of finished games.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    ms: i64,
}

impl Retention {
    /// The built-in default, 7 days (the default of `games.retention`).
    pub const DEFAULT: Duration = Duration::from_secs(7 * 24 * 3600);

    /// Keeps finished games for `after` (at least 1 ms; durations beyond
    /// `i64` milliseconds are capped).
    pub fn new(after: Duration) -> Retention {
        let ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
        Retention { ms: ms.max(1) }
    }

    /// How long finished games are kept, in ms.
    pub fn as_millis(self) -> i64 {
        self.ms
    }

    /// `finished_at` after a record at `at` left the game in `status`:
    /// `Some(at)` when it is finished, `None` when it is not.
    pub fn finished_at(status: Status, at: i64) -> Option<i64> {
        status.is_finished().then_some(at)
    }

    /// When a game finished at `finished_at` expires (Unix ms).
    pub fn expires_at(self, finished_at: i64) -> i64 {
        finished_at.saturating_add(self.ms)
    }

    /// Whether a game finished at `finished_at` (`None`: not finished) is
    /// past retention at `now` (Unix ms).
    pub fn expired(self, finished_at: Option<i64>, now: i64) -> bool {
        finished_at.is_some_and(|f| self.expires_at(f) <= now)
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention::new(Retention::DEFAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_final_and_cancelled_start_the_clock() {
        for status in Status::ALL {
            let want = matches!(status, Status::Final | Status::Cancelled);
            assert_eq!(
                Retention::finished_at(status, 5).is_some(),
                want,
                "{status:?}"
            );
        }
    }

    #[test]
    fn a_game_expires_once_retention_has_passed() {
        let r = Retention::new(Duration::from_millis(100));
        assert_eq!(r.as_millis(), 100);
        assert_eq!(r.expires_at(1_000), 1_100);
        assert!(
            !r.expired(None, i64::MAX),
            "a game not finished never expires"
        );
        assert!(!r.expired(Some(1_000), 1_099));
        assert!(r.expired(Some(1_000), 1_100));
        assert_eq!(Retention::new(Duration::ZERO).as_millis(), 1);
        let huge = Retention::new(Duration::MAX);
        assert_eq!(huge.expires_at(1_000), i64::MAX, "saturates");
        assert_eq!(Retention::default().as_millis(), 7 * 24 * 3600 * 1000);
    }
}
