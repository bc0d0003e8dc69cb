//! A token bucket per connection: a burst of messages is fine, a sustained flood is not.

use std::time::{Duration, Instant};

/// How fast one connection may send messages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Messages per second, sustained. Default 10.
    pub per_second: f64,
    /// Messages that may come at once before the rate applies. Default 20.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self { per_second: 10.0, burst: 20 }
    }
}

/// The bucket: starts full, refills at `per_second`, holds at most `burst` tokens.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    #[must_use]
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        Self { limit, tokens: f64::from(limit.burst), refilled_at: now }
    }

    /// Takes a token for one message at `now`; false when the bucket is empty (refuse it).
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        self.refilled_at = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.limit.per_second)
            .min(f64::from(self.limit.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until the next message would be allowed, from `now`.
    #[must_use]
    pub fn wait(&self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        let missing = 1.0 - (self.tokens + elapsed * self.limit.per_second);
        if missing <= 0.0 || self.limit.per_second <= 0.0 {
            Duration::ZERO
        } else {
            // A rate so small that the wait overflows a Duration waits "forever" rather than
            // panicking (the command refuses such rates at start).
            Duration::try_from_secs_f64(missing / self.limit.per_second).unwrap_or(Duration::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst passes, the next message is refused, and after a pause the rate applies again.
    #[test]
    fn burst_then_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(RateLimit { per_second: 10.0, burst: 3 }, start);
        assert!((0..3).all(|_| bucket.allow(start)));
        assert!(!bucket.allow(start));
        assert_eq!(bucket.wait(start), Duration::from_millis(100));
        assert!(!bucket.allow(start + Duration::from_millis(50)));
        assert!(bucket.allow(start + Duration::from_millis(150)));
    }

    /// A long pause refills only up to the burst.
    #[test]
    fn refill_is_capped_at_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(RateLimit { per_second: 10.0, burst: 2 }, start);
        let later = start + Duration::from_secs(3600);
        assert!(bucket.allow(later) && bucket.allow(later));
        assert!(!bucket.allow(later));
    }

    /// A steady sender at the rate is never refused.
    #[test]
    fn steady_senders_pass() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(RateLimit { per_second: 5.0, burst: 1 }, start);
        for n in 0..100 {
            assert!(bucket.allow(start + Duration::from_millis(200 * n)), "message {n}");
        }
    }
}
