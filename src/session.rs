//! What the client makes of the relay's frames, as plain Rust: the outbox and the received
//! conversation, updated by each frame, plus what to send back. The socket task only moves
//! frames between the socket and this type; tests drive it natively, frame by frame.

use std::fmt;

use wschat_protocol::v1::{ClientFrame, ServerFrame, StoredMessage, LOBBY};
use wschat_protocol::{ErrorCode, WireError};

use crate::conversation::Conversation;
use crate::outbox::Outbox;

/// A problem worth telling the user, until things are well again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The socket could not even be created (a malformed relay URL, say).
    CannotOpen {
        /// The URL tried.
        url: String,
        /// The browser's explanation.
        detail: String,
    },
    /// The connection closed before it ever opened: nothing answers there.
    Unreachable {
        /// The close code the browser reported (1006 when nothing answered).
        code: u16,
        /// The relay's close reason, if any.
        reason: String,
    },
    /// An open connection closed.
    Lost {
        /// The close code.
        code: u16,
        /// The relay's close reason, if any (e.g. why it closed the connection).
        reason: String,
    },
    /// The relay stopped answering pings: the connection was replaced.
    HeartbeatTimeout,
    /// Writing to the socket failed.
    SendFailed(String),
    /// The relay refused a request (not a message: those show on their own row).
    Refused(WireError),
    /// The relay cannot store messages right now: they wait and are sent again shortly.
    Unavailable,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why =
            |reason: &str| if reason.is_empty() { String::new() } else { format!(": {reason}") };
        match self {
            Self::CannotOpen { url, detail } => {
                write!(f, "Cannot open a socket to {url}: {detail}")
            }
            Self::Unreachable { code, reason } => {
                write!(f, "Cannot reach the relay (code {code}{})", why(reason))
            }
            Self::Lost { code, reason } => {
                write!(f, "Lost the connection (code {code}{})", why(reason))
            }
            Self::HeartbeatTimeout => f.write_str("The relay stopped answering: reconnecting"),
            Self::SendFailed(detail) => write!(f, "Sending failed: {detail}"),
            Self::Refused(error) => write!(f, "The relay refused a request: {error}"),
            Self::Unavailable => {
                f.write_str("The relay cannot store messages right now: they will be sent again")
            }
        }
    }
}

/// The outbox and the conversation, and the history requests in flight.
#[derive(Debug)]
pub struct Session {
    /// What this tab sent and how far each message got.
    pub outbox: Outbox,
    /// What this tab received.
    pub conversation: Conversation,
    /// The name this tab sends under: received messages with it are shown as the user's own.
    pub source: String,
    /// History requests sent and not yet answered: (request id, after seq).
    resyncs: Vec<(u64, u64)>,
    /// A history answer came in pages: the next one is wanted after this seq.
    next_page_after: Option<u64>,
}

impl Session {
    /// A session that starts with a (possibly reloaded) outbox.
    #[must_use]
    pub fn new(outbox: Outbox, source: String) -> Self {
        Self {
            outbox,
            conversation: Conversation::default(),
            source,
            resyncs: Vec::new(),
            next_page_after: None,
        }
    }

    /// The relay welcomed a new connection: returns the history request that catches up on
    /// what this tab missed (to be sent before anything else).
    pub fn welcome(&mut self, epoch: &str, request_id: u64) -> ClientFrame {
        let after_seq = self.conversation.welcome(epoch);
        self.history_request(request_id, after_seq)
    }

    /// A history request, remembered so that its answer can close the gap it covers.
    pub fn history_request(&mut self, request_id: u64, after_seq: u64) -> ClientFrame {
        self.resyncs.push((request_id, after_seq));
        ClientFrame::History { room: LOBBY.into(), request_id, after_seq }
    }

    /// The request for the next page of a history answer that came in pages, if one is due
    /// (send it at once: the pages follow each other).
    pub fn next_page(&mut self, request_id: u64) -> Option<ClientFrame> {
        let after_seq = self.next_page_after.take()?;
        Some(self.history_request(request_id, after_seq))
    }

    /// The connection ended: requests in flight get no answer.
    pub fn disconnected(&mut self) {
        self.resyncs.clear();
        self.next_page_after = None;
        self.outbox.on_disconnect();
    }

    /// Applies a frame from the relay (other than the welcome). Returns a problem to show, if
    /// the frame reports one.
    /// Takes the frame by value: a message moves into the conversation without a copy.
    pub fn apply(&mut self, frame: ServerFrame) -> Option<Problem> {
        match frame {
            ServerFrame::Message { message, .. } => self.receive(message),
            ServerFrame::Ack { id, seq, .. } => {
                self.outbox.ack(&id, seq);
                self.conversation.observe(seq);
            }
            ServerFrame::History { request_id, messages, complete, more, .. } => {
                let through = messages.last().map(|message| message.seq);
                if more {
                    // Cut at the relay's bound for one answer: the rest follows this page.
                    self.next_page_after = through;
                }
                for message in messages {
                    self.receive(message);
                }
                let position = self.resyncs.iter().position(|(id, _)| *id == request_id);
                if let Some((_, after_seq)) = position.map(|index| self.resyncs.remove(index)) {
                    let through = through.unwrap_or(after_seq);
                    self.conversation.history_answered(after_seq, through, complete);
                }
            }
            ServerFrame::Error { error, id: Some(id), .. }
                if error.code != ErrorCode::Unavailable =>
            {
                self.outbox.fail(&id, error.message);
            }
            // The relay could not store it: it waits, to be sent again a little later.
            ServerFrame::Error { id: Some(id), .. } => {
                self.outbox.requeue(&id);
                return Some(Problem::Unavailable);
            }
            ServerFrame::Error { error, id: None, .. } => return Some(Problem::Refused(error)),
            ServerFrame::Welcome { .. }
            | ServerFrame::Pong { .. }
            | ServerFrame::Joined { .. }
            | ServerFrame::Left { .. }
            | ServerFrame::Rooms { .. }
            | ServerFrame::Presence { .. }
            | ServerFrame::Typing { .. } => {}
        }
        None
    }

    /// A message from the relay: this tab's own (acked by its id) or one for the received list.
    fn receive(&mut self, message: StoredMessage) {
        if self.outbox.ack(&message.id, message.seq) || self.outbox.get(&message.id).is_some() {
            self.conversation.observe(message.seq);
            return;
        }
        let mine = message.source == self.source;
        self.conversation.insert(message, mine);
    }

    /// The pending messages as frames, in order, each with its id (to mark it sent once written).
    #[must_use]
    pub fn to_send(&self) -> Vec<(String, ClientFrame)> {
        self.outbox
            .to_send()
            .map(|message| {
                let frame = ClientFrame::Message {
                    room: LOBBY.into(),
                    id: message.id.clone(),
                    source: message.source.clone(),
                    content: message.content.clone(),
                };
                (message.id.clone(), frame)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{DeliveryState, OutgoingMessage};

    fn stored(seq: u64, id: &str, source: &str) -> StoredMessage {
        StoredMessage {
            seq,
            id: id.into(),
            source: source.into(),
            content: "hi".into(),
            sent_at_ms: 0,
        }
    }

    fn session_with(ids: &[&str]) -> Session {
        let mut outbox = Outbox::default();
        for id in ids {
            outbox.push(OutgoingMessage::new(*id, "ann", "hello", 0)).unwrap();
        }
        Session::new(outbox, "ann".into())
    }

    fn history(request_id: u64, messages: Vec<StoredMessage>, complete: bool) -> ServerFrame {
        ServerFrame::History {
            room: LOBBY.into(),
            request_id,
            epoch: "e".into(),
            messages,
            complete,
            more: false,
        }
    }

    /// A welcome asks for what was missed; the pending messages go next; the ack delivers.
    #[test]
    fn welcome_resyncs_then_messages_are_sent_and_acked() {
        let mut session = session_with(&["m1"]);
        assert_eq!(
            session.welcome("e", 1),
            ClientFrame::History { room: LOBBY.into(), request_id: 1, after_seq: 0 }
        );
        let frames = session.to_send();
        assert_eq!(frames.len(), 1);
        session.outbox.mark_sent("m1");
        assert!(session.to_send().is_empty());
        session.apply(ServerFrame::Ack {
            room: LOBBY.into(),
            id: "m1".into(),
            seq: 3,
            duplicate: false,
        });
        assert_eq!(session.outbox.get("m1").unwrap().state, DeliveryState::Delivered { seq: 3 });
        assert!(session.conversation.is_empty(), "an own message is not 'received'");
    }

    /// Own messages coming back from the relay (in a history answer after a reload) settle the
    /// outbox instead of being listed as received; others' messages are listed, and one sent
    /// under this tab's name from elsewhere is marked as the user's.
    #[test]
    fn own_and_others_messages() {
        let mut session = session_with(&["mine"]);
        session.welcome("e", 1);
        let answer = history(
            1,
            vec![stored(1, "other", "bob"), stored(2, "mine", "ann"), stored(3, "x", "ann")],
            true,
        );
        assert_eq!(session.apply(answer), None);
        assert_eq!(session.outbox.get("mine").unwrap().state, DeliveryState::Delivered { seq: 2 });
        let received: Vec<_> =
            session.conversation.messages().map(|m| (m.message.seq, m.mine)).collect();
        assert_eq!(received, [(1, false), (3, true)]);
        assert_eq!(session.conversation.resume_after(), 3);
    }

    /// The race of issue 8: a live message queued before the history answer does not make the
    /// tab skip what the answer holds, and a drop before the answer asks for the gap again.
    #[test]
    fn a_live_message_before_the_history_answer_loses_nothing() {
        let mut session = session_with(&[]);
        session.welcome("e", 1);
        session.apply(ServerFrame::Message { room: LOBBY.into(), message: stored(5, "m5", "bob") });
        session.disconnected();
        assert_eq!(
            session.welcome("e", 2),
            ClientFrame::History { room: LOBBY.into(), request_id: 2, after_seq: 0 },
            "the gap 1..4 is asked for again"
        );
        let answer = (1..=5).map(|seq| stored(seq, &format!("m{seq}"), "bob")).collect();
        session.apply(history(2, answer, true));
        let seqs: Vec<_> = session.conversation.messages().map(|m| m.message.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
    }

    /// A history answer cut at the relay's bound is followed by a request for the next page,
    /// after its last seq; the pages together fill the gap.
    #[test]
    fn a_history_in_pages_asks_for_each_next_page() {
        let mut session = session_with(&[]);
        session.welcome("e", 1);
        let page = |request_id, seqs: std::ops::RangeInclusive<u64>, more| ServerFrame::History {
            room: LOBBY.into(),
            request_id,
            epoch: "e".into(),
            messages: seqs.map(|seq| stored(seq, &format!("m{seq}"), "bob")).collect(),
            complete: true,
            more,
        };
        session.apply(page(1, 1..=3, true));
        assert_eq!(
            session.next_page(2),
            Some(ClientFrame::History { room: LOBBY.into(), request_id: 2, after_seq: 3 })
        );
        assert_eq!(session.next_page(3), None, "asked once");
        session.apply(page(2, 4..=5, false));
        assert_eq!(session.next_page(3), None);
        assert_eq!(session.conversation.len(), 5);
        assert_eq!(session.conversation.resume_after(), 5);
    }

    /// A refused message fails on its row; a relay that cannot store it keeps it pending to go
    /// again; a refused request is a problem for the page.
    #[test]
    fn refusals() {
        let mut session = session_with(&["long", "later"]);
        for id in ["long", "later"] {
            session.outbox.mark_sent(id);
        }
        let refused = |code, id: Option<&str>| ServerFrame::Error {
            error: WireError::new(code, ""),
            room: None,
            id: id.map(str::to_owned),
            request_id: None,
        };
        assert_eq!(session.apply(refused(ErrorCode::TooLong, Some("long"))), None);
        assert!(matches!(session.outbox.get("long").unwrap().state, DeliveryState::Failed { .. }));
        let problem = session.apply(refused(ErrorCode::Unavailable, Some("later")));
        assert_eq!(problem, Some(Problem::Unavailable));
        assert_eq!(session.outbox.get("later").unwrap().state, DeliveryState::Pending);
        assert_eq!(session.to_send().len(), 1);
        let problem = session.apply(refused(ErrorCode::InvalidMessage, None));
        assert!(matches!(problem, Some(Problem::Refused(_))));
    }
}
