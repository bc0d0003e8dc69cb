//! The client's heartbeat, as plain Rust with the time passed in: when to ping the relay, and
//! when an unanswered ping means the connection is dead (a laptop that slept, a cable pulled, a
//! relay that froze), so the socket task replaces it instead of waiting for TCP to notice.

/// What the socket task should do when the heartbeat's timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Nothing yet.
    Wait,
    /// Send a ping with this request id.
    Ping(u64),
    /// The last ping went unanswered past its deadline: the connection is dead.
    TimedOut,
}

/// Pings every `interval_ms` of an open connection, one at a time, each answered within
/// `deadline_ms`.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    interval_ms: f64,
    deadline_ms: f64,
    next_ping_at: f64,
    /// The unanswered ping's request id, and when its answer is due.
    awaited: Option<(u64, f64)>,
}

impl Heartbeat {
    /// A heartbeat for a connection that opened at `now_ms`: the first ping is due one interval
    /// later.
    #[must_use]
    pub fn new(interval_ms: f64, deadline_ms: f64, now_ms: f64) -> Self {
        Self { interval_ms, deadline_ms, next_ping_at: now_ms + interval_ms, awaited: None }
    }

    /// When [`Heartbeat::beat`] next has something to do.
    #[must_use]
    pub fn wake_at(&self) -> f64 {
        self.awaited.map_or(self.next_ping_at, |(_, due)| due.min(self.next_ping_at))
    }

    /// The timer fired at `now_ms`; `next_request_id` numbers a ping if one is due.
    pub fn beat(&mut self, now_ms: f64, next_request_id: impl FnOnce() -> u64) -> Beat {
        if let Some((_, due)) = self.awaited {
            if now_ms >= due {
                return Beat::TimedOut;
            }
        }
        if now_ms < self.next_ping_at {
            return Beat::Wait;
        }
        self.next_ping_at = now_ms + self.interval_ms;
        if self.awaited.is_some() {
            return Beat::Wait;
        }
        let id = next_request_id();
        self.awaited = Some((id, now_ms + self.deadline_ms));
        Beat::Ping(id)
    }

    /// A pong arrived; returns whether it answered the heartbeat's ping (and so is consumed).
    pub fn pong(&mut self, request_id: u64) -> bool {
        match self.awaited {
            Some((id, _)) if id == request_id => {
                self.awaited = None;
                true
            }
            _ => false,
        }
    }

    /// Check the connection now (the tab came back to view or online: the socket may be dead).
    pub fn hurry(&mut self, now_ms: f64) {
        self.next_ping_at = self.next_ping_at.min(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> impl FnMut() -> u64 {
        let mut next = 0;
        move || {
            next += 1;
            next
        }
    }

    /// An answered ping keeps the connection; the next one follows an interval later.
    #[test]
    fn pings_every_interval_while_answered() {
        let mut ids = ids();
        let mut heartbeat = Heartbeat::new(15_000.0, 10_000.0, 0.0);
        assert_eq!(heartbeat.wake_at(), 15_000.0);
        assert_eq!(heartbeat.beat(14_999.0, &mut ids), Beat::Wait);
        assert_eq!(heartbeat.beat(15_000.0, &mut ids), Beat::Ping(1));
        assert_eq!(heartbeat.wake_at(), 25_000.0, "the deadline comes first");
        assert!(!heartbeat.pong(7), "someone else's pong");
        assert!(heartbeat.pong(1));
        assert_eq!(heartbeat.wake_at(), 30_000.0);
        assert_eq!(heartbeat.beat(30_000.0, &mut ids), Beat::Ping(2));
    }

    /// A ping left unanswered past its deadline declares the connection dead; no second ping is
    /// sent meanwhile.
    #[test]
    fn an_unanswered_ping_times_out() {
        let mut ids = ids();
        let mut heartbeat = Heartbeat::new(1_000.0, 5_000.0, 0.0);
        assert_eq!(heartbeat.beat(1_000.0, &mut ids), Beat::Ping(1));
        assert_eq!(heartbeat.beat(2_000.0, &mut ids), Beat::Wait, "one ping at a time");
        assert_eq!(heartbeat.beat(5_999.0, &mut ids), Beat::Wait);
        assert_eq!(heartbeat.beat(6_000.0, &mut ids), Beat::TimedOut);
    }

    /// Coming back to the tab checks the connection at once.
    #[test]
    fn hurry_pings_now() {
        let mut ids = ids();
        let mut heartbeat = Heartbeat::new(15_000.0, 10_000.0, 0.0);
        heartbeat.hurry(3_000.0);
        assert_eq!(heartbeat.wake_at(), 3_000.0);
        assert_eq!(heartbeat.beat(3_000.0, &mut ids), Beat::Ping(1));
    }
}
