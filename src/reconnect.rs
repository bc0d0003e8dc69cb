//! When to reconnect after the socket closes: capped exponential back-off with full jitter, kept as
//! plain data so that it is tested natively, without a browser and without a clock.
//!
//! [`ReconnectPolicy`] says how long to wait before retry number `n`; [`Backoff`] counts the retries
//! of one socket and decides when a connection lasted long enough to count as healthy again. The
//! caller supplies the time (milliseconds, e.g. `js_sys::Date::now()`) and the randomness
//! (`js_sys::Math::random()`), so every decision here is a pure function of its inputs.
//!
//! Why full jitter: when the relay restarts, every open tab loses its socket at the same instant.
//! Waiting a uniformly random time between zero and the exponential ceiling spreads their
//! reconnections out instead of sending them back in synchronised waves (see "Exponential Backoff
//! And Jitter" on the AWS Architecture Blog, which compares the variants).

use std::time::Duration;

/// How long to wait before each reconnection attempt, and when to give up.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconnectPolicy {
    /// The ceiling for the first retry. Default: 0.5 s.
    pub initial_delay: Duration,
    /// The ceiling never grows past this. Default: 30 s.
    pub max_delay: Duration,
    /// How much the ceiling grows from one retry to the next. Default: 2 (doubling). Values below
    /// 1 (and NaN) are treated as 1: the back-off never shrinks while the connection keeps failing.
    pub multiplier: f64,
    /// A connection that stayed open at least this long counts as healthy: when it closes, the
    /// retry count starts again from the first, short delay. Default: 10 s.
    pub stable_after: Duration,
    /// How many retries in a row before giving up; `None` never gives up. Default: `None`, because
    /// a chat tab left open should come back whenever the relay does.
    pub max_attempts: Option<u32>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
            stable_after: Duration::from_secs(10),
            max_attempts: None,
        }
    }
}

impl ReconnectPolicy {
    /// The longest wait before retry number `attempt` (counted from 1; 0 is taken as 1):
    /// `min(max_delay, initial_delay * multiplier^(attempt - 1))`.
    ///
    /// Never panics, whatever the attempt number: the growth is computed in floating point and
    /// anything at or past the cap (including an infinite product) is the cap.
    #[must_use]
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let initial = self.initial_delay.min(self.max_delay);
        if initial.is_zero() {
            // Checked first because 0 × ∞ is NaN, and zero times any growth is still zero.
            return Duration::ZERO;
        }
        // Exponentiation by squaring rather than `powf`, which costs 2 KB of wasm; at most 32
        // steps, and an overflow to infinity is simply past the cap.
        let mut growth = 1.0;
        let mut base = self.multiplier.max(1.0);
        let mut exponent = attempt.saturating_sub(1);
        while exponent > 0 {
            if exponent & 1 == 1 {
                growth *= base;
            }
            base *= base;
            exponent >>= 1;
        }
        let cap = self.max_delay.as_secs_f64();
        let seconds = initial.as_secs_f64() * growth;
        if seconds < cap {
            Duration::try_from_secs_f64(seconds).map_or(self.max_delay, |d| d.min(self.max_delay))
        } else {
            self.max_delay
        }
    }

    /// The wait before retry number `attempt` (from 1): uniform in `[0, ceiling(attempt)]`, picked
    /// by `random`, which should be uniform in `[0, 1)` (the browser passes
    /// `js_sys::Math::random()`; tests pass fixed values). A `random` outside `[0, 1]` is clamped
    /// into it, and a NaN or infinite one counts as 0.
    ///
    /// Never panics, whatever the attempt number; the result is never above `max_delay`.
    #[must_use]
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let fraction = if random.is_finite() { random.clamp(0.0, 1.0) } else { 0.0 };
        // `Duration::mul_f64` panics when rounding pushes the product past `Duration::MAX` (a
        // policy capped at `Duration::MAX` with `random` = 1), hence the fallible conversion.
        Duration::try_from_secs_f64(ceiling.as_secs_f64() * fraction)
            .map_or(ceiling, |delay| delay.min(ceiling))
    }
}

/// The retry count of one socket: told when the socket opens and closes, it answers how long to
/// wait before reconnecting.
///
/// Each close advances the count exactly once and yields at most one delay, so a caller that
/// schedules a retry only from [`Backoff::on_close`]'s answer never has two retries pending.
/// Times are milliseconds on any clock that does not go backwards between an open and its close.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Backoff {
    policy: ReconnectPolicy,
    attempt: u32,
    connected_since: Option<u64>,
}

impl Backoff {
    /// A fresh count (no retries yet, not connected) following `policy`.
    #[must_use]
    pub fn new(policy: ReconnectPolicy) -> Self {
        Self { policy, attempt: 0, connected_since: None }
    }

    /// The policy this count follows.
    #[must_use]
    pub fn policy(&self) -> &ReconnectPolicy {
        &self.policy
    }

    /// How many retries were scheduled since the last healthy connection (0 before the first
    /// close); what a "reconnecting (attempt 3)" badge shows.
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether the socket is open, as far as this count was told.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.connected_since.is_some()
    }

    /// The socket opened at `now_ms`. The count is not reset yet: only a connection that stays
    /// open for [`ReconnectPolicy::stable_after`] proves the relay is healthy again.
    pub fn on_open(&mut self, now_ms: u64) {
        self.connected_since = Some(now_ms);
    }

    /// The socket closed (or failed to open) at `now_ms`: returns how long to wait before the next
    /// attempt, or `None` when [`ReconnectPolicy::max_attempts`] retries in a row have already
    /// been made and it is time to give up (and every further close answers `None` until
    /// [`Backoff::reset`]).
    ///
    /// If the connection that just closed had been open for at least
    /// [`ReconnectPolicy::stable_after`], the count starts again first, so the delay is short. A
    /// close without an open before it (the connection attempt itself failed) counts as a retry.
    /// `random` picks the jitter, as in [`ReconnectPolicy::delay`].
    pub fn on_close(&mut self, now_ms: u64, random: f64) -> Option<Duration> {
        if let Some(since) = self.connected_since.take() {
            let open_for = u128::from(now_ms.saturating_sub(since));
            if open_for >= self.policy.stable_after.as_millis() {
                self.attempt = 0;
            }
        }
        let next = self.attempt.saturating_add(1);
        if self.policy.max_attempts.is_some_and(|max| next > max) {
            return None;
        }
        self.attempt = next;
        Some(self.policy.delay(next, random))
    }

    /// Forgets the count, e.g. when the user presses "reconnect now" after giving up or the page
    /// comes back online; the next close waits the shortest delay again.
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.connected_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Just under 1, the largest `random` the browser can hand out.
    const ALMOST_ONE: f64 = 1.0 - f64::EPSILON;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    /// With the relay down, the longest wait between tries goes 0.5 s, 1 s, 2 s, ... and then
    /// stays at 30 s instead of growing for ever.
    #[test]
    fn delays_grow_then_cap() {
        let policy = ReconnectPolicy::default();
        let ceilings: Vec<_> = (1..=9).map(|attempt| policy.ceiling(attempt)).collect();
        let expected = [500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000].map(ms);
        assert_eq!(ceilings, expected);
        // Attempt 0 is not a retry the caller should ask about; it waits like the first one.
        assert_eq!(policy.ceiling(0), ms(500));
    }

    /// Each wait is somewhere between "immediately" and the current ceiling, never above it.
    #[test]
    fn jitter_stays_between_zero_and_the_ceiling() {
        let policy = ReconnectPolicy::default();
        for attempt in 1..=10 {
            let ceiling = policy.ceiling(attempt);
            assert_eq!(policy.delay(attempt, 0.0), Duration::ZERO);
            let longest = policy.delay(attempt, ALMOST_ONE);
            assert!(longest <= ceiling, "attempt {attempt}: {longest:?} > {ceiling:?}");
            assert!(longest >= ceiling.mul_f64(0.999), "attempt {attempt}: {longest:?} too short");
        }
        assert_eq!(policy.delay(3, 0.5), ms(1_000));
        // Out-of-range randomness is clamped rather than trusted.
        assert_eq!(policy.delay(3, -1.0), Duration::ZERO);
        assert_eq!(policy.delay(3, 7.0), ms(2_000));
        assert_eq!(policy.delay(3, f64::NAN), Duration::ZERO);
    }

    /// A tab left retrying for days (or given an absurd attempt number) still waits at most the
    /// cap, and nothing panics.
    #[test]
    fn huge_attempt_numbers_stay_at_the_cap() {
        let policy = ReconnectPolicy::default();
        assert_eq!(policy.ceiling(u32::MAX), policy.max_delay);
        assert!(policy.delay(u32::MAX, ALMOST_ONE) <= policy.max_delay);

        let unbounded = ReconnectPolicy {
            max_delay: Duration::MAX,
            multiplier: f64::MAX,
            ..ReconnectPolicy::default()
        };
        assert_eq!(unbounded.ceiling(u32::MAX), Duration::MAX);
        assert!(unbounded.delay(u32::MAX, 1.0) <= Duration::MAX);

        let no_wait =
            ReconnectPolicy { initial_delay: Duration::ZERO, ..ReconnectPolicy::default() };
        assert_eq!(no_wait.delay(u32::MAX, ALMOST_ONE), Duration::ZERO);

        let mut backoff = Backoff::new(ReconnectPolicy::default());
        backoff.attempt = u32::MAX;
        assert!(backoff.on_close(0, ALMOST_ONE).is_some_and(|delay| delay <= ms(30_000)));
        assert_eq!(backoff.attempt(), u32::MAX);
    }

    /// After a connection that held for 10 s, the next drop is retried quickly again; a connection
    /// that dropped sooner does not earn that.
    #[test]
    fn count_resets_only_after_a_stable_connection() {
        let mut backoff = Backoff::default();
        for _ in 0..4 {
            assert!(backoff.on_close(0, 0.5).is_some());
        }
        assert_eq!(backoff.attempt(), 4);

        backoff.on_open(100_000);
        assert!(backoff.is_open());
        assert_eq!(backoff.attempt(), 4, "opening alone does not prove the relay is healthy");
        let delay = backoff.on_close(109_999, ALMOST_ONE);
        assert_eq!(backoff.attempt(), 5);
        assert!(delay.is_some_and(|delay| delay > ms(7_990)), "still backing off: {delay:?}");

        backoff.on_open(200_000);
        let delay = backoff.on_close(210_000, ALMOST_ONE);
        assert_eq!(backoff.attempt(), 1);
        assert!(delay.is_some_and(|delay| delay <= ms(500)));
        assert!(!backoff.is_open());
    }

    /// With a retry limit, the tab gives up after that many failed tries, and "reconnect now"
    /// (a reset) lets it try again.
    #[test]
    fn max_attempts_gives_up() {
        let policy = ReconnectPolicy { max_attempts: Some(3), ..ReconnectPolicy::default() };
        let mut backoff = Backoff::new(policy);
        for attempt in 1..=3 {
            assert!(backoff.on_close(0, 0.5).is_some(), "retry {attempt} is allowed");
        }
        assert_eq!(backoff.on_close(0, 0.5), None);
        assert_eq!(backoff.on_close(0, 0.5), None, "giving up is not forgotten");
        assert_eq!(backoff.attempt(), 3);

        backoff.reset();
        assert_eq!(backoff.on_close(0, 0.5), Some(ms(250)));
        assert_eq!(backoff.attempt(), 1);

        let never = ReconnectPolicy { max_attempts: Some(0), ..ReconnectPolicy::default() };
        assert_eq!(Backoff::new(never).on_close(0, 0.5), None);
    }

    /// A relay that accepts the socket and drops it a second later does not get hammered: every
    /// drop waits longer, up to the cap, exactly one retry per drop.
    #[test]
    fn flapping_connection_keeps_backing_off() {
        let mut backoff = Backoff::default();
        let mut now = 0;
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            backoff.on_open(now);
            now += 1_000;
            let delay = backoff.on_close(now, ALMOST_ONE).expect("unlimited attempts");
            ceilings.push(backoff.policy().ceiling(backoff.attempt()));
            assert!(delay <= *ceilings.last().expect("just pushed"));
            now += u64::try_from(delay.as_millis()).expect("at most 30 s");
        }
        assert_eq!(backoff.attempt(), 8);
        let expected = [500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000].map(ms);
        assert_eq!(ceilings, expected);
    }

    /// A socket that never manages to open (relay unreachable) backs off just the same.
    #[test]
    fn failed_connection_attempts_count_as_retries() {
        let mut backoff = Backoff::default();
        assert!(!backoff.is_open());
        assert_eq!(backoff.on_close(0, 0.5), Some(ms(250)));
        assert_eq!(backoff.on_close(600, 0.5), Some(ms(500)));
        assert_eq!(backoff.on_close(1_200, 0.5), Some(ms(1_000)));
        assert_eq!(backoff.attempt(), 3);
    }
}
