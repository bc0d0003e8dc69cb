//! What a run does: which relay, how many connections, who sends, how fast and for how long.

use std::time::Duration;

use crate::stamp::STAMP_BYTES;

/// The wire protocol every connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// wschat's `wschat.v1` subprotocol: a `welcome` first, `ack`s for the sender, numbered
    /// messages for everyone else.
    V1,
    /// The tutorial's plain `{"source", "content"}` JSON, no subprotocol: what the bare and Node
    /// relays of the bench (and most broadcast relays) speak.
    Tutorial,
}

impl Protocol {
    /// The name used on the command line and in the summary.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::Tutorial => "tutorial",
        }
    }
}

/// What a run does. Connections `0..senders` send; the others only receive.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The relay's socket URL, `ws://` or `wss://`: the senders connect there, and the
    /// receivers too unless `receiver_urls` names others.
    pub url: String,
    /// Where the receivers connect instead, in turn (receiver `k` to `receiver_urls[k % len]`):
    /// several relays sharing rooms through Redis, say, so that messages sent on one are
    /// measured as they arrive on each. Empty: at `url`, with the senders.
    pub receiver_urls: Vec<String>,
    pub protocol: Protocol,
    /// Sockets to open, senders included.
    pub connections: usize,
    /// How many of the connections send (0: only hold connections open).
    pub senders: usize,
    /// Messages per second, in total across the senders, each sending its share on an evenly
    /// staggered schedule; 0 sends as fast as the relay takes them.
    pub rate: f64,
    /// Stop sending after this long (counted from the first message).
    pub duration: Option<Duration>,
    /// Stop sending after this many messages in total.
    pub messages: Option<u64>,
    /// Bytes of each message's content (at least the stamp's 35).
    pub message_bytes: usize,
    /// v1 only: messages a sender may have sent but not yet seen acked, as the app's outbox.
    pub window: usize,
    /// An `Origin` header for the handshake (relays that check it admit clients without one).
    pub origin: Option<String>,
    /// Handshakes in progress at once while connecting.
    pub connect_concurrency: usize,
    /// How long one connection may take to open (and, for v1, to be welcomed).
    pub connect_timeout: Duration,
    /// After the last send, how long to keep waiting for outstanding deliveries and acks while
    /// none arrives.
    pub drain: Duration,
    /// v1 only: spread the connections over this many rooms (connection `i` joins room
    /// `load-{i % rooms}`, senders included); `None`: everyone in the lobby.
    pub rooms: Option<usize>,
}

impl Plan {
    /// A plan for `url` with the command's defaults: 100 connections, 1 sender, 100 messages/s
    /// for 10 s, 64-byte contents, v1.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            receiver_urls: Vec::new(),
            protocol: Protocol::V1,
            connections: 100,
            senders: 1,
            rate: 100.0,
            duration: None,
            messages: None,
            message_bytes: 64,
            window: 100,
            origin: None,
            connect_concurrency: 200,
            connect_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(3),
            rooms: None,
        }
    }

    /// How many rooms the connections are spread over (1: the lobby alone).
    #[must_use]
    pub fn room_count(&self) -> usize {
        self.rooms.unwrap_or(1).max(1)
    }

    /// Which of the rooms connection `index` is in (0 to `room_count() - 1`).
    #[must_use]
    pub fn room_index(&self, index: usize) -> usize {
        index % self.room_count()
    }

    /// The name of the room connection `index` posts in and reads: `load-N` with `rooms`, else
    /// the lobby.
    #[must_use]
    pub fn room(&self, index: usize) -> String {
        match self.rooms {
            Some(_) => format!("load-{}", self.room_index(index)),
            None => wschat_protocol::rooms::LOBBY.to_owned(),
        }
    }

    /// The socket URL connection `index` opens: `url` for the senders, the receivers'
    /// URLs in turn for the others.
    #[must_use]
    pub fn url_of(&self, index: usize) -> &str {
        match index.checked_sub(self.senders) {
            Some(receiver) if !self.receiver_urls.is_empty() => {
                &self.receiver_urls[receiver % self.receiver_urls.len()]
            }
            _ => &self.url,
        }
    }

    /// Sending stops after this long: `duration`, or 10 s when neither it nor `messages` is set.
    #[must_use]
    pub fn send_for(&self) -> Option<Duration> {
        match (self.duration, self.messages) {
            (None, None) => Some(Duration::from_secs(10)),
            (duration, _) => duration,
        }
    }

    /// How many messages sender `index` sends at most (the total split evenly).
    #[must_use]
    pub fn quota(&self, index: usize) -> Option<u64> {
        let total = self.messages?;
        let senders = self.senders.max(1) as u64;
        Some(total / senders + u64::from((index as u64) < total % senders))
    }

    /// Checks that the plan makes sense.
    ///
    /// # Errors
    /// The first setting that does not.
    pub fn check(&self) -> Result<(), PlanError> {
        let is_socket_url = |url: &str| url.starts_with("ws://") || url.starts_with("wss://");
        if let Some(url) =
            std::iter::once(&self.url).chain(&self.receiver_urls).find(|url| !is_socket_url(url))
        {
            return Err(PlanError::Url(url.clone()));
        }
        if self.connections == 0 {
            return Err(PlanError::NoConnections);
        }
        if self.senders > self.connections {
            return Err(PlanError::TooManySenders {
                senders: self.senders,
                connections: self.connections,
            });
        }
        if !self.rate.is_finite() || self.rate < 0.0 {
            return Err(PlanError::Rate(self.rate));
        }
        if self.message_bytes < STAMP_BYTES {
            return Err(PlanError::MessageBytes(self.message_bytes));
        }
        if self.window == 0 || self.connect_concurrency == 0 {
            return Err(PlanError::Zero);
        }
        match self.rooms {
            Some(0) => return Err(PlanError::Rooms),
            Some(_) if self.protocol != Protocol::V1 => return Err(PlanError::RoomsNeedV1),
            _ => {}
        }
        if let Some(origin) = &self.origin {
            if origin.is_empty() || !origin.bytes().all(|byte| byte.is_ascii_graphic()) {
                return Err(PlanError::Origin(origin.clone()));
            }
        }
        Ok(())
    }
}

/// A plan that cannot run.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("the URL must start with ws:// or wss://, not {0:?}")]
    Url(String),
    #[error("at least one connection is needed")]
    NoConnections,
    #[error("{senders} senders but only {connections} connections: senders are connections too")]
    TooManySenders { senders: usize, connections: usize },
    #[error("the rate must be a number of messages per second, 0 or more, not {0}")]
    Rate(f64),
    #[error("messages must be at least {STAMP_BYTES} bytes (the timing stamp), not {0}")]
    MessageBytes(usize),
    #[error("the window and the connect concurrency must be at least 1")]
    Zero,
    #[error("the origin must be a URL origin such as http://127.0.0.1:8080, not {0:?}")]
    Origin(String),
    #[error("at least one room is needed")]
    Rooms,
    #[error("rooms need the v1 protocol: the tutorial's knows only the lobby")]
    RoomsNeedV1,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A total of 10 messages over 3 senders is split 4, 3, 3.
    #[test]
    fn messages_are_split_evenly() {
        let plan = Plan { senders: 3, messages: Some(10), ..Plan::new("ws://127.0.0.1:1") };
        assert_eq!([0, 1, 2].map(|index| plan.quota(index)), [Some(4), Some(3), Some(3)]);
        assert_eq!(plan.send_for(), None, "a count alone is not cut short");
        assert_eq!(Plan::new("ws://x").send_for(), Some(Duration::from_secs(10)));
    }

    /// Plans that cannot run are refused before any socket is opened.
    #[test]
    fn nonsense_is_refused() {
        let plan = Plan::new("ws://127.0.0.1:1");
        assert_eq!(plan.check(), Ok(()));
        assert!(matches!(
            Plan { url: "http://x".into(), ..plan.clone() }.check(),
            Err(PlanError::Url(_))
        ));
        assert!(matches!(
            Plan { senders: 101, ..plan.clone() }.check(),
            Err(PlanError::TooManySenders { .. })
        ));
        assert_eq!(
            Plan { message_bytes: 10, ..plan.clone() }.check(),
            Err(PlanError::MessageBytes(10))
        );
        assert_eq!(Plan { rate: -1.0, ..plan.clone() }.check(), Err(PlanError::Rate(-1.0)));
        assert_eq!(Plan { rooms: Some(0), ..plan.clone() }.check(), Err(PlanError::Rooms));
        let tutorial = Plan { protocol: Protocol::Tutorial, rooms: Some(2), ..plan };
        assert_eq!(tutorial.check(), Err(PlanError::RoomsNeedV1));
    }

    /// With rooms, connections go round them in turn, senders included.
    #[test]
    fn connections_are_spread_over_the_rooms() {
        let plan = Plan { rooms: Some(3), ..Plan::new("ws://x") };
        let rooms: Vec<_> = (0..5).map(|index| plan.room(index)).collect();
        assert_eq!(rooms, ["load-0", "load-1", "load-2", "load-0", "load-1"]);
        assert_eq!(Plan::new("ws://x").room(4), "lobby");
        assert_eq!(Plan::new("ws://x").room_index(4), 0);
    }

    /// Senders connect to `url`; receivers go round `receiver_urls` when it names any.
    #[test]
    fn receivers_go_round_their_urls() {
        let plan = Plan {
            senders: 2,
            connections: 6,
            receiver_urls: vec!["ws://a".into(), "ws://b".into()],
            ..Plan::new("ws://a")
        };
        let urls: Vec<_> = (0..6).map(|index| plan.url_of(index)).collect();
        assert_eq!(urls, ["ws://a", "ws://a", "ws://a", "ws://b", "ws://a", "ws://b"]);
        assert_eq!(Plan::new("ws://x").url_of(5), "ws://x");
        let bad = Plan { receiver_urls: vec!["http://b".into()], ..plan };
        assert_eq!(bad.check(), Err(PlanError::Url("http://b".into())));
    }
}
