//! The connection's state machine, as plain Rust: which state the badge shows and when the next
//! attempt is due, driven by events with the time passed in, so it is tested natively with
//! controlled time. The socket task feeds it what happens and does what it says.

use crate::reconnect::{Backoff, ReconnectPolicy};

/// Where the connection stands, as the status badge shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionState {
    /// The first connection is being opened, or one the user asked for.
    Connecting,
    /// The socket is open and the relay has welcomed us.
    Open,
    /// The connection was lost; the next attempt starts at `retry_at_ms` (`Date.now()` time), or
    /// is under way once that has passed.
    Reconnecting {
        /// How many attempts failed in a row (1 after the first loss).
        attempt: u32,
        /// When the next attempt starts, in milliseconds since the Unix epoch.
        retry_at_ms: f64,
    },
    /// The user closed the connection; "Reconnect now" opens it again.
    Closed,
    /// The service gave up (the policy's attempts ran out); "Reconnect now" tries again.
    Failed {
        /// Why, for people.
        reason: String,
    },
}

impl ConnectionState {
    /// The word the badge shows: `connecting`, `connected`, `reconnecting`, `disconnected` or
    /// `failed`.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Open => "connected",
            Self::Reconnecting { .. } => "reconnecting",
            Self::Closed => "disconnected",
            Self::Failed { .. } => "failed",
        }
    }

    /// Whether messages go out right away (otherwise they wait in the outbox).
    #[must_use]
    pub fn is_open(&self) -> bool {
        *self == Self::Open
    }
}

/// What the socket task should do next after a connection ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Open a new socket at this time (`Date.now()` milliseconds).
    RetryAt(f64),
    /// Wait for the user ("Reconnect now").
    WaitForUser,
}

/// The state plus the back-off that decides when to retry.
#[derive(Debug, Clone)]
pub struct ConnectionMachine {
    state: ConnectionState,
    backoff: Backoff,
}

impl ConnectionMachine {
    /// A machine that is connecting for the first time.
    #[must_use]
    pub fn new(policy: ReconnectPolicy) -> Self {
        Self { state: ConnectionState::Connecting, backoff: Backoff::new(policy) }
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> &ConnectionState {
        &self.state
    }

    /// The relay welcomed us: the connection is open.
    pub fn welcomed(&mut self, now_ms: f64) {
        self.backoff.on_open(now_ms as u64);
        self.state = ConnectionState::Open;
    }

    /// The connection was lost (or never opened). `random` in [0, 1) draws the jitter.
    pub fn lost(&mut self, reason: String, now_ms: f64, random: f64) -> Next {
        match self.backoff.on_close(now_ms as u64, random) {
            Some(delay) => {
                let retry_at_ms = now_ms + delay.as_secs_f64() * 1000.0;
                let attempt = self.backoff.attempt();
                self.state = ConnectionState::Reconnecting { attempt, retry_at_ms };
                Next::RetryAt(retry_at_ms)
            }
            None => {
                self.state = ConnectionState::Failed { reason };
                Next::WaitForUser
            }
        }
    }

    /// The connection ended in a way no retry can mend (an expired token): the badge says
    /// failed with `reason`, and nothing is retried until the user asks.
    pub fn gave_up(&mut self, reason: String) -> Next {
        self.state = ConnectionState::Failed { reason };
        self.backoff.reset();
        Next::WaitForUser
    }

    /// The user closed the connection: nothing is retried until they ask.
    pub fn closed_by_user(&mut self) -> Next {
        self.state = ConnectionState::Closed;
        self.backoff.reset();
        Next::WaitForUser
    }

    /// The user asked to reconnect now. Returns whether a new attempt should start (not when one
    /// is already connecting or open).
    pub fn reconnect_now(&mut self) -> bool {
        match self.state {
            ConnectionState::Open | ConnectionState::Connecting => false,
            ConnectionState::Reconnecting { .. } => true,
            ConnectionState::Closed | ConnectionState::Failed { .. } => {
                self.backoff.reset();
                self.state = ConnectionState::Connecting;
                true
            }
        }
    }

    /// The browser came back online or the tab became visible. Returns whether a pending retry
    /// should start now: only when one is pending, never for a connection the user closed or that
    /// gave up.
    #[must_use]
    pub fn hurry(&self) -> bool {
        matches!(self.state, ConnectionState::Reconnecting { .. })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SECOND: f64 = 1000.0;

    fn machine() -> ConnectionMachine {
        ConnectionMachine::new(ReconnectPolicy::default())
    }

    fn attempt(machine: &ConnectionMachine) -> u32 {
        match machine.state() {
            ConnectionState::Reconnecting { attempt, .. } => *attempt,
            other => panic!("not reconnecting: {other:?}"),
        }
    }

    /// The badge goes connecting → connected → reconnecting with a countdown to the next try.
    #[test]
    fn connecting_open_then_reconnecting_with_a_due_time() {
        let mut machine = machine();
        assert_eq!(machine.state().label(), "connecting");
        machine.welcomed(0.0);
        assert!(machine.state().is_open());
        // random 0.999…: the longest wait of the first attempt, just under half a second.
        let next = machine.lost("gone".into(), 20.0 * SECOND, 0.999_999);
        let ConnectionState::Reconnecting { attempt, retry_at_ms } = *machine.state() else {
            panic!("{:?}", machine.state())
        };
        assert_eq!(attempt, 1);
        assert_eq!(next, Next::RetryAt(retry_at_ms));
        assert!(retry_at_ms > 20.0 * SECOND && retry_at_ms <= 20.5 * SECOND, "{retry_at_ms}");
    }

    /// Failed attempts count up and wait longer; a connection that stayed up a while resets the
    /// count, one that drops at once does not.
    #[test]
    fn attempts_count_up_and_reset_after_a_stable_connection() {
        let mut machine = machine();
        let mut now = 0.0;
        for expected in 1..=4 {
            machine.lost("refused".into(), now, 0.999);
            assert_eq!(attempt(&machine), expected);
            now += SECOND;
        }
        machine.welcomed(now);
        machine.lost("dropped at once".into(), now + 100.0, 0.5);
        assert_eq!(attempt(&machine), 5, "a flapping connection keeps backing off");
        machine.welcomed(now + SECOND);
        machine.lost("dropped after a while".into(), now + 60.0 * SECOND, 0.5);
        assert_eq!(attempt(&machine), 1, "a stable connection starts over");
    }

    /// Closed by the user: the badge says disconnected, going online does not reopen it, and
    /// "Reconnect now" does, from a fresh count.
    #[test]
    fn a_user_close_waits_for_the_user() {
        let mut machine = machine();
        machine.lost("refused".into(), 0.0, 0.5);
        machine.lost("refused".into(), SECOND, 0.5);
        assert!(machine.hurry(), "a pending retry may be hurried");
        assert_eq!(machine.closed_by_user(), Next::WaitForUser);
        assert_eq!(machine.state().label(), "disconnected");
        assert!(!machine.hurry());
        assert!(machine.reconnect_now());
        assert_eq!(*machine.state(), ConnectionState::Connecting);
        machine.lost("refused".into(), 2.0 * SECOND, 0.5);
        assert_eq!(attempt(&machine), 1);
    }

    /// With limited attempts the machine gives up with the reason, and the user can try again.
    #[test]
    fn gives_up_after_the_last_attempt() {
        let policy = ReconnectPolicy { max_attempts: Some(2), ..ReconnectPolicy::default() };
        let mut machine = ConnectionMachine::new(policy);
        assert!(matches!(machine.lost("refused".into(), 0.0, 0.5), Next::RetryAt(_)));
        assert!(matches!(machine.lost("refused".into(), SECOND, 0.5), Next::RetryAt(_)));
        assert_eq!(machine.lost("still refused".into(), 2.0 * SECOND, 0.5), Next::WaitForUser);
        assert_eq!(*machine.state(), ConnectionState::Failed { reason: "still refused".into() });
        assert!(!machine.hurry());
        assert!(machine.reconnect_now());
        assert!(matches!(machine.lost("refused".into(), 3.0 * SECOND, 0.5), Next::RetryAt(_)));
    }

    /// A final problem fails at once, whatever attempts remain; "Reconnect now" still tries.
    #[test]
    fn a_final_problem_is_not_retried() {
        let mut machine = machine();
        machine.welcomed(0.0);
        assert_eq!(machine.gave_up("token expired".into()), Next::WaitForUser);
        assert_eq!(machine.state().label(), "failed");
        assert!(!machine.hurry(), "coming back online does not retry it");
        assert!(machine.reconnect_now());
        assert!(matches!(machine.lost("refused".into(), SECOND, 0.5), Next::RetryAt(_)));
        assert_eq!(attempt(&machine), 1);
    }

    /// "Reconnect now" while connected or connecting starts nothing: no second socket.
    #[test]
    fn no_second_attempt_while_one_is_under_way() {
        let mut machine = machine();
        assert!(!machine.reconnect_now());
        machine.welcomed(0.0);
        assert!(!machine.reconnect_now());
        assert!(!machine.hurry());
    }

    /// Waits never exceed the cap, however long the relay stays away.
    #[test]
    fn waits_are_capped() {
        let mut machine = machine();
        let mut now = 0.0;
        for _ in 0..100 {
            if let Next::RetryAt(at) = machine.lost("refused".into(), now, 0.999_999) {
                assert!(at - now <= Duration::from_secs(30).as_secs_f64() * SECOND);
                now = at;
            }
        }
        assert_eq!(attempt(&machine), 100);
    }
}
