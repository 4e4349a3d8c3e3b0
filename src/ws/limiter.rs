//! Flood control for fans' control messages: a token bucket on tokio's clock.
//!
//! Tokio's [`Instant`] is used (not the standard one) so tests can drive the
//! bucket with paused time.

use tokio::time::Instant;

/// A token bucket holding at most `burst` tokens, refilled at `per_second`
/// tokens per second. Each client message takes one token.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. A `burst` of 0 is treated as 1, so at least one message
    /// always gets through.
    pub(crate) fn new(per_second: u32, burst: u32) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            per_second: f64::from(per_second),
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes one token; `false` when the bucket is empty (the client floods).
    pub(crate) fn try_take(&mut self) -> bool {
        self.refill(Instant::now());
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.last = now;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn allows_the_burst_then_refuses() {
        let mut bucket = TokenBucket::new(2, 5);
        for i in 0..5 {
            assert!(bucket.try_take(), "message {i} is inside the burst");
        }
        assert!(
            !bucket.try_take(),
            "the sixth message in the same instant floods"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refills_at_the_sustained_rate() {
        let mut bucket = TokenBucket::new(2, 5);
        while bucket.try_take() {}
        tokio::time::advance(Duration::from_millis(499)).await;
        assert!(!bucket.try_take(), "not a whole token yet");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(bucket.try_take(), "half a second at 2/s gives one token");
        assert!(!bucket.try_take());
    }

    #[tokio::test(start_paused = true)]
    async fn never_holds_more_than_the_burst() {
        let mut bucket = TokenBucket::new(100, 3);
        tokio::time::advance(Duration::from_secs(60)).await;
        let granted = (0..10).filter(|_| bucket.try_take()).count();
        assert_eq!(granted, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_burst_still_lets_one_message_through() {
        let mut bucket = TokenBucket::new(0, 0);
        assert!(bucket.try_take());
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(!bucket.try_take(), "a rate of 0 never refills");
    }
}
