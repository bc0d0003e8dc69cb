//! What the client makes of the relay's frames, as plain Rust: the outbox and, per room, the
//! received conversation, who is there and who is typing, updated by each frame, plus what to
//! send back. The socket task only moves frames between the socket and this type; tests drive it
//! natively, frame by frame.
//!
//! A tab is always in the lobby (the relay puts every v1 connection there and welcomes it with
//! the lobby's state) and in the rooms the user joined, one of which is shown. After each
//! (re)connection the lobby catches up through a history request and every other room through a
//! `join` that names where the tab stopped, so each room resumes exactly.

use std::fmt;

use wschat_protocol::v1::{ClientFrame, RoomInfo, ServerFrame, StoredMessage, LOBBY};
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
    /// The relay refused to let this tab into `room` (not allowed, bad name, too many rooms, a
    /// full room): the room is left off the list.
    RoomRefused {
        /// The room asked for.
        room: String,
        /// Why.
        error: WireError,
    },
    /// The relay closed the connection because its access token expired (1008, "token
    /// expired"): the same token would be refused, so nothing is retried until the user opens
    /// the page with a new one (`?token=`).
    TokenExpired,
}

/// The close reason the relay gives when a connection's token expires.
const TOKEN_EXPIRED: &str = "token expired";

impl Problem {
    /// What a close event means: `opened` tells whether the connection was ever open.
    #[must_use]
    pub fn closed(opened: bool, code: u16, reason: String) -> Self {
        match (opened, code) {
            (true, 1008) if reason == TOKEN_EXPIRED => Self::TokenExpired,
            (true, _) => Self::Lost { code, reason },
            (false, _) => Self::Unreachable { code, reason },
        }
    }

    /// Whether retrying cannot help: the user must act first.
    #[must_use]
    pub fn is_final(&self) -> bool {
        matches!(self, Self::TokenExpired)
    }
}

/// What the page says: in the user's words (no close codes), what happened and what the page
/// does about it. The relay's close reason, written for people, is kept where it says more.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CannotOpen { url, detail } => {
                write!(f, "The chat server's address {url} cannot be used: {detail}")
            }
            Self::Unreachable { .. } => f.write_str(
                "The chat server cannot be reached; trying again. Messages you write wait here.",
            ),
            // Going away, or restarting (a new epoch): the relay is on its way back.
            Self::Lost { code: 1001 | 1012, .. } => {
                f.write_str("The chat server restarted; reconnecting")
            }
            Self::Lost { reason, .. } if !reason.is_empty() => {
                write!(f, "The chat server closed the connection ({reason}); reconnecting")
            }
            Self::Lost { .. } => f.write_str("The connection was lost; reconnecting"),
            Self::HeartbeatTimeout => {
                f.write_str("The chat server stopped answering; reconnecting")
            }
            Self::SendFailed(detail) => {
                write!(f, "A message could not be sent ({detail}); reconnecting")
            }
            Self::Refused(error) => {
                write!(f, "The chat server refused a request: {error}")
            }
            Self::Unavailable => f.write_str(
                "The chat server cannot store messages right now; yours will be sent again shortly",
            ),
            Self::RoomRefused { room, error } => {
                write!(f, "You cannot join the room {room}: {}", error.message)
            }
            Self::TokenExpired => f.write_str(
                "Your access token expired: open the page with a new token to reconnect \
                 (unsent messages wait)",
            ),
        }
    }
}

/// How long "name is typing…" stays up after their last signal, in milliseconds.
pub const TYPING_SHOWN_MS: f64 = 5_000.0;

/// One room this tab is in: its conversation, the history requests in flight for it, and what
/// the page shows beside the conversation.
#[derive(Debug)]
pub struct RoomState {
    /// The room's name, as the relay spells it.
    pub name: String,
    /// What this tab received in the room.
    pub conversation: Conversation,
    /// Messages from others that arrived while another room was shown.
    pub unread: usize,
    /// Who is in the room, by name, sorted, as the relay last said (empty while disconnected).
    pub presence: Vec<String>,
    /// Whether the relay confirmed that this connection is in the room.
    pub joined: bool,
    /// Who is typing, with until when it is shown (`Date.now()` milliseconds).
    typing: Vec<(String, f64)>,
    /// History requests sent and not yet answered: (request id, after seq). A `join`'s answer
    /// comes as request 0.
    resyncs: Vec<(u64, u64)>,
    /// A history answer came in pages: the next one is wanted after this seq.
    next_page_after: Option<u64>,
}

impl RoomState {
    fn new(name: String) -> Self {
        Self {
            name,
            conversation: Conversation::default(),
            unread: 0,
            presence: Vec::new(),
            joined: false,
            typing: Vec::new(),
            resyncs: Vec::new(),
            next_page_after: None,
        }
    }

    /// The names shown as typing at `now_ms`, in the order they started.
    pub fn typing_at(&self, now_ms: f64) -> impl Iterator<Item = &str> + '_ {
        self.typing.iter().filter(move |(_, until)| *until > now_ms).map(|(name, _)| name.as_str())
    }

    fn history_answered(&mut self, request_id: u64, messages_through: Option<u64>, complete: bool) {
        let position = self.resyncs.iter().position(|(id, _)| *id == request_id);
        if let Some((_, after_seq)) = position.map(|index| self.resyncs.remove(index)) {
            let through = messages_through.unwrap_or(after_seq);
            self.conversation.history_answered(after_seq, through, complete);
        }
    }
}

/// What changed in the rooms since the last [`Session::take_room_changes`]: what the page must
/// redraw besides the conversation itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomChanges {
    /// The room list: rooms joined or left, unread counts, which one is shown.
    pub list: bool,
    /// Another room is shown: its conversation and sent messages replace the last one's.
    pub shown: bool,
    /// The shown room's presence.
    pub presence: bool,
    /// The shown room's typing line.
    pub typing: bool,
    /// Messages from others that arrived live in the room shown (not in a history answer): what
    /// the page announces.
    pub arrived: usize,
}

/// Why [`Session::leave`] kept a room.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaveError {
    /// The lobby is where every tab (and the tutorial's client) meets: it cannot be left.
    #[error("the lobby cannot be left")]
    Lobby,
    /// Messages written in the room are not delivered yet: leaving would strand them.
    #[error("{0} of your messages in this room are not delivered yet: leave once they are")]
    Undelivered(usize),
    /// This tab is not in the room.
    #[error("you are not in this room")]
    NotJoined,
}

/// The outbox and the rooms, and the history requests in flight.
#[derive(Debug)]
pub struct Session {
    /// What this tab sent, to every room, and how far each message got.
    pub outbox: Outbox,
    /// The name this tab sends under: received messages with it are shown as the user's own.
    pub source: String,
    /// The lobby first, then the other rooms in the order they were joined.
    rooms: Vec<RoomState>,
    /// The room shown (an index into `rooms`).
    shown: usize,
    /// The rooms that exist and this tab may join, as the relay last listed them.
    directory: Vec<RoomInfo>,
    changes: RoomChanges,
}

impl Session {
    /// A session that starts with a (possibly reloaded) outbox, in the lobby.
    #[must_use]
    pub fn new(outbox: Outbox, source: String) -> Self {
        Self {
            outbox,
            source,
            rooms: vec![RoomState::new(LOBBY.to_owned())],
            shown: 0,
            directory: Vec::new(),
            changes: RoomChanges {
                list: true,
                shown: true,
                presence: true,
                typing: true,
                arrived: 0,
            },
        }
    }

    /// The rooms this tab is in: the lobby first.
    #[must_use]
    pub fn rooms(&self) -> &[RoomState] {
        &self.rooms
    }

    /// The room called `name`, if this tab is in it.
    #[must_use]
    pub fn room(&self, name: &str) -> Option<&RoomState> {
        self.rooms.iter().find(|room| room.name == name)
    }

    fn room_mut(&mut self, name: &str) -> Option<&mut RoomState> {
        self.rooms.iter_mut().find(|room| room.name == name)
    }

    /// The room shown.
    #[must_use]
    pub fn shown(&self) -> &RoomState {
        &self.rooms[self.shown]
    }

    /// The room shown, to change.
    pub fn shown_mut(&mut self) -> &mut RoomState {
        &mut self.rooms[self.shown]
    }

    /// The rooms the relay last listed (see [`ClientFrame::Rooms`]).
    #[must_use]
    pub fn directory(&self) -> &[RoomInfo] {
        &self.directory
    }

    /// Adds `name` (a valid room name) to this tab's rooms unless it is there already. Returns
    /// the `join` to send when it is new and the connection is open (else the next welcome joins
    /// it).
    pub fn join(&mut self, name: &str, connected: bool) -> Option<ClientFrame> {
        if self.room(name).is_some() {
            return None;
        }
        self.rooms.push(RoomState::new(name.to_owned()));
        self.changes.list = true;
        connected.then(|| ClientFrame::Join { room: name.to_owned(), after: None })
    }

    /// Shows the room `name` (which this tab is in); its unread count clears. Returns whether it
    /// is one this tab is in.
    pub fn show(&mut self, name: &str) -> bool {
        let Some(index) = self.rooms.iter().position(|room| room.name == name) else {
            return false;
        };
        if index != self.shown {
            self.shown = index;
            self.changes =
                RoomChanges { list: true, shown: true, presence: true, typing: true, arrived: 0 };
        }
        let room = &mut self.rooms[index];
        if room.unread > 0 {
            room.unread = 0;
            self.changes.list = true;
        }
        true
    }

    /// Leaves the room `name`: returns the `leave` to send. The lobby is shown if it was.
    ///
    /// # Errors
    /// [`LeaveError`] when the room is the lobby, holds undelivered messages of this tab, or is
    /// not one this tab is in; nothing changes then.
    pub fn leave(&mut self, name: &str) -> Result<ClientFrame, LeaveError> {
        if name == LOBBY {
            return Err(LeaveError::Lobby);
        }
        let index =
            self.rooms.iter().position(|room| room.name == name).ok_or(LeaveError::NotJoined)?;
        let undelivered = self
            .outbox
            .entries()
            .iter()
            .filter(|message| message.room == name && !message.state.is_delivered())
            .count();
        if undelivered > 0 {
            return Err(LeaveError::Undelivered(undelivered));
        }
        let shown = self.rooms[self.shown].name.clone();
        self.rooms.remove(index);
        self.changes.list = true;
        if shown == name {
            self.shown = 0;
            self.changes =
                RoomChanges { list: true, shown: true, presence: true, typing: true, arrived: 0 };
        } else {
            self.shown = self.rooms.iter().position(|room| room.name == shown).unwrap_or(0);
        }
        Ok(ClientFrame::Leave { room: name.to_owned() })
    }

    /// The relay welcomed a new connection (and put it in the lobby): returns what catches up on
    /// what this tab missed, to be sent before anything else: a history request for the lobby
    /// (with `request_id`), and a `join` for every other room, naming where this tab stopped.
    pub fn welcome(&mut self, epoch: &str, request_id: u64) -> Vec<ClientFrame> {
        let lobby = &mut self.rooms[0];
        lobby.joined = true;
        let after_seq = lobby.conversation.welcome(epoch);
        let mut frames = vec![self.history_request(LOBBY, request_id, after_seq)];
        frames.extend(self.welcome_elsewhere());
        frames
    }

    /// Like [`Session::welcome`] on a connection the relay refused the lobby (a token that does
    /// not allow it): every other room is joined again.
    pub fn welcome_elsewhere(&mut self) -> Vec<ClientFrame> {
        self.rooms[1..]
            .iter()
            .map(|room| ClientFrame::Join {
                room: room.name.clone(),
                after: room.conversation.position(),
            })
            .collect()
    }

    /// A history request for `room`, remembered so that its answer can close the gap it covers.
    pub fn history_request(&mut self, room: &str, request_id: u64, after_seq: u64) -> ClientFrame {
        if let Some(state) = self.room_mut(room) {
            state.resyncs.push((request_id, after_seq));
        }
        ClientFrame::History { room: room.to_owned(), request_id, after_seq }
    }

    /// The request for the next page of a history answer that came in pages, if one is due
    /// (send it at once: the pages follow each other). Call until `None`: several rooms may
    /// each want one.
    pub fn next_page(&mut self, request_id: u64) -> Option<ClientFrame> {
        let room = self.rooms.iter_mut().find(|room| room.next_page_after.is_some())?;
        let after_seq = room.next_page_after.take()?;
        let name = room.name.clone();
        Some(self.history_request(&name, request_id, after_seq))
    }

    /// The connection ended: requests in flight get no answer, the relay forgets this tab's
    /// rooms (they are joined again on the next welcome), presence and typing are unknown.
    pub fn disconnected(&mut self) {
        for room in &mut self.rooms {
            room.resyncs.clear();
            room.next_page_after = None;
            room.joined = false;
            room.presence.clear();
            room.typing.clear();
        }
        self.changes.presence = true;
        self.changes.typing = true;
        self.changes.list = true;
        self.outbox.on_disconnect();
    }

    /// Applies a frame from the relay (other than the welcome) at `now_ms` (`Date.now()`).
    /// Returns a problem to show, if the frame reports one.
    /// Takes the frame by value: a message moves into the conversation without a copy.
    pub fn apply(&mut self, frame: ServerFrame, now_ms: f64) -> Option<Problem> {
        match frame {
            ServerFrame::Message { room, message } => self.receive(&room, message, true),
            ServerFrame::Ack { room, id, seq, .. } => {
                self.outbox.ack(&id, seq);
                if let Some(room) = self.room_mut(&room) {
                    room.conversation.observe(seq);
                }
            }
            ServerFrame::History { room, request_id, messages, complete, more, .. } => {
                let through = messages.last().map(|message| message.seq);
                // A room this tab left meanwhile: nothing to show it in.
                self.room(&room)?;
                for message in messages {
                    self.receive(&room, message, false);
                }
                let state = self.room_mut(&room)?;
                if more {
                    // Cut at the relay's bound for one answer: the rest follows this page.
                    state.next_page_after = through;
                }
                state.history_answered(request_id, through, complete);
            }
            ServerFrame::Joined { room, epoch, .. } => {
                let state = self.room_mut(&room)?;
                state.joined = true;
                // The relay follows with the history after the position the join named, or all
                // it has if the epoch changed: exactly what `welcome` says to resume after.
                let after_seq = state.conversation.welcome(&epoch);
                state.resyncs.push((0, after_seq));
                self.changes.list = true;
            }
            ServerFrame::Presence { room, names, .. } => {
                let shown = self.rooms[self.shown].name == room;
                let state = self.room_mut(&room)?;
                if state.presence != names {
                    state.presence = names;
                    self.changes.presence |= shown;
                }
            }
            ServerFrame::Typing { room, name } => {
                if name == self.source {
                    // This user in another tab: the page shows others typing.
                    return None;
                }
                let shown = self.rooms[self.shown].name == room;
                let state = self.room_mut(&room)?;
                let until = now_ms + TYPING_SHOWN_MS;
                match state.typing.iter_mut().find(|(who, _)| *who == name) {
                    Some(entry) => entry.1 = until,
                    None => {
                        state.typing.push((name, until));
                        self.changes.typing |= shown;
                    }
                }
            }
            ServerFrame::Rooms { rooms } => {
                self.directory = rooms;
                self.changes.list = true;
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
            // A room not joined yet was refused: its join was.
            ServerFrame::Error { error, room: Some(room), id: None, .. }
                if self.room(&room).is_some_and(|state| !state.joined) && room != LOBBY =>
            {
                self.forget(&room);
                return Some(Problem::RoomRefused { room, error });
            }
            ServerFrame::Error { error, id: None, .. } => return Some(Problem::Refused(error)),
            ServerFrame::Welcome { .. } | ServerFrame::Left { .. } | ServerFrame::Pong { .. } => {}
        }
        None
    }

    /// Drops a room the relay refused (the lobby is shown if it was).
    fn forget(&mut self, name: &str) {
        let Some(index) = self.rooms.iter().position(|room| room.name == name) else { return };
        let shown = self.rooms[self.shown].name.clone();
        self.rooms.remove(index);
        self.shown = self.rooms.iter().position(|room| room.name == shown).unwrap_or(0);
        self.changes.list = true;
        if shown == name {
            self.changes =
                RoomChanges { list: true, shown: true, presence: true, typing: true, arrived: 0 };
        }
    }

    /// Ends typing signals shown for longer than [`TYPING_SHOWN_MS`]. Returns whether the shown
    /// room's typing line changed.
    pub fn expire_typing(&mut self, now_ms: f64) -> bool {
        let mut changed = false;
        for (index, room) in self.rooms.iter_mut().enumerate() {
            let before = room.typing.len();
            room.typing.retain(|(_, until)| *until > now_ms);
            changed |= index == self.shown && room.typing.len() != before;
        }
        self.changes.typing |= changed;
        changed
    }

    /// A message from the relay in `room`: this tab's own (acked by its id) or one for the
    /// received list, `live` or from a history answer. Its author is no longer typing.
    fn receive(&mut self, room: &str, message: StoredMessage, live: bool) {
        let shown = self.shown;
        let Some(index) = self.rooms.iter().position(|state| state.name == room) else { return };
        let state = &mut self.rooms[index];
        if let Some(at) = state.typing.iter().position(|(name, _)| *name == message.source) {
            state.typing.remove(at);
            self.changes.typing |= index == shown;
        }
        if self.outbox.ack(&message.id, message.seq) || self.outbox.get(&message.id).is_some() {
            state.conversation.observe(message.seq);
            return;
        }
        let mine = message.source == self.source;
        if state.conversation.insert(message, mine) && !mine {
            if index != shown {
                state.unread += 1;
                self.changes.list = true;
            } else if live {
                self.changes.arrived += 1;
            }
        }
    }

    /// What changed in the rooms since the last call; resets the record.
    pub fn take_room_changes(&mut self) -> RoomChanges {
        std::mem::take(&mut self.changes)
    }

    /// The pending messages as frames, in order, each with its id (to mark it sent once
    /// written). Messages for a room this tab is no longer in go too: the relay refuses them
    /// (`not_joined`) and they show as failed, never silently dropped.
    #[must_use]
    pub fn to_send(&self) -> Vec<(String, ClientFrame)> {
        self.outbox
            .to_send()
            .map(|message| {
                let frame = ClientFrame::Message {
                    room: message.room.clone(),
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
    use wschat_protocol::v1::Position;

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

    fn lobby(session: &Session) -> &Conversation {
        &session.room(LOBBY).unwrap().conversation
    }

    fn seqs(conversation: &Conversation) -> Vec<u64> {
        conversation.messages().map(|m| m.message.seq).collect()
    }

    fn live(room: &str, message: StoredMessage) -> ServerFrame {
        ServerFrame::Message { room: room.into(), message }
    }

    fn history(room: &str, request_id: u64, messages: Vec<StoredMessage>) -> ServerFrame {
        ServerFrame::History {
            room: room.into(),
            request_id,
            epoch: "e".into(),
            messages,
            complete: true,
            more: false,
        }
    }

    /// The history page that follows a `joined` (request 0).
    fn after_join(room: &str, epoch: &str, messages: Vec<StoredMessage>) -> ServerFrame {
        ServerFrame::History {
            room: room.into(),
            request_id: 0,
            epoch: epoch.into(),
            messages,
            complete: true,
            more: false,
        }
    }

    fn joined(room: &str, epoch: &str) -> ServerFrame {
        ServerFrame::Joined {
            room: room.into(),
            epoch: epoch.into(),
            latest_seq: 0,
            oldest_seq: 1,
            members: 1,
        }
    }

    fn lobby_history(request_id: u64, after_seq: u64) -> ClientFrame {
        ClientFrame::History { room: LOBBY.into(), request_id, after_seq }
    }

    /// A connection closed for an expired token is final; other closes are retried, and a close
    /// before the connection opened means the relay was not reached.
    #[test]
    fn an_expired_token_is_final() {
        let expired = Problem::closed(true, 1008, "token expired".into());
        assert_eq!(expired, Problem::TokenExpired);
        assert!(expired.is_final());
        assert!(expired.to_string().contains("new token"), "{expired}");
        let evicted = Problem::closed(true, 1008, "too slow".into());
        assert_eq!(evicted, Problem::Lost { code: 1008, reason: "too slow".into() });
        assert!(!evicted.is_final());
        let refused = Problem::closed(false, 1006, String::new());
        assert_eq!(refused, Problem::Unreachable { code: 1006, reason: String::new() });
        assert!(!refused.is_final());
    }

    /// A welcome asks for what was missed; the pending messages go next; the ack delivers.
    #[test]
    fn welcome_resyncs_then_messages_are_sent_and_acked() {
        let mut session = session_with(&["m1"]);
        assert_eq!(session.welcome("e", 1), [lobby_history(1, 0)]);
        let frames = session.to_send();
        assert_eq!(frames.len(), 1);
        session.outbox.mark_sent("m1");
        assert!(session.to_send().is_empty());
        let ack =
            ServerFrame::Ack { room: LOBBY.into(), id: "m1".into(), seq: 3, duplicate: false };
        session.apply(ack, 0.0);
        assert_eq!(session.outbox.get("m1").unwrap().state, DeliveryState::Delivered { seq: 3 });
        assert!(lobby(&session).is_empty(), "an own message is not 'received'");
    }

    /// Own messages coming back from the relay (in a history answer after a reload) settle the
    /// outbox instead of being listed as received; others' messages are listed, and one sent
    /// under this tab's name from elsewhere is marked as the user's.
    #[test]
    fn own_and_others_messages() {
        let mut session = session_with(&["mine"]);
        session.welcome("e", 1);
        let answer = history(
            LOBBY,
            1,
            vec![stored(1, "other", "bob"), stored(2, "mine", "ann"), stored(3, "x", "ann")],
        );
        assert_eq!(session.apply(answer, 0.0), None);
        assert_eq!(session.outbox.get("mine").unwrap().state, DeliveryState::Delivered { seq: 2 });
        let received: Vec<_> =
            lobby(&session).messages().map(|m| (m.message.seq, m.mine)).collect();
        assert_eq!(received, [(1, false), (3, true)]);
        assert_eq!(lobby(&session).resume_after(), 3);
    }

    /// The race of issue 8: a live message queued before the history answer does not make the
    /// tab skip what the answer holds, and a drop before the answer asks for the gap again.
    #[test]
    fn a_live_message_before_the_history_answer_loses_nothing() {
        let mut session = session_with(&[]);
        session.welcome("e", 1);
        session.apply(live(LOBBY, stored(5, "m5", "bob")), 0.0);
        session.disconnected();
        assert_eq!(session.welcome("e", 2), [lobby_history(2, 0)], "the gap 1..4 is asked again");
        let answer = (1..=5).map(|seq| stored(seq, &format!("m{seq}"), "bob")).collect();
        session.apply(history(LOBBY, 2, answer), 0.0);
        assert_eq!(seqs(lobby(&session)), [1, 2, 3, 4, 5]);
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
        session.apply(page(1, 1..=3, true), 0.0);
        assert_eq!(session.next_page(2), Some(lobby_history(2, 3)));
        assert_eq!(session.next_page(3), None, "asked once");
        session.apply(page(2, 4..=5, false), 0.0);
        assert_eq!(session.next_page(3), None);
        assert_eq!(lobby(&session).len(), 5);
        assert_eq!(lobby(&session).resume_after(), 5);
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
            room: Some(LOBBY.into()),
            id: id.map(str::to_owned),
            request_id: None,
        };
        assert_eq!(session.apply(refused(ErrorCode::TooLong, Some("long")), 0.0), None);
        assert!(matches!(session.outbox.get("long").unwrap().state, DeliveryState::Failed { .. }));
        let problem = session.apply(refused(ErrorCode::Unavailable, Some("later")), 0.0);
        assert_eq!(problem, Some(Problem::Unavailable));
        assert_eq!(session.outbox.get("later").unwrap().state, DeliveryState::Pending);
        assert_eq!(session.to_send().len(), 1);
        let problem = session.apply(refused(ErrorCode::InvalidMessage, None), 0.0);
        assert!(matches!(problem, Some(Problem::Refused(_))));
    }

    /// Each room has its own conversation and numbering; a message from someone else in a room
    /// not shown counts as unread until the room is shown; own messages never do.
    #[test]
    fn rooms_keep_apart_and_count_unread() {
        let mut session = session_with(&[]);
        session.welcome("e", 1);
        assert_eq!(
            session.join("team", true),
            Some(ClientFrame::Join { room: "team".into(), after: None })
        );
        assert_eq!(session.join("team", true), None, "joined once");
        session.apply(joined("team", "t"), 0.0);
        session.take_room_changes();
        session.apply(live(LOBBY, stored(1, "l1", "bob")), 0.0);
        session.apply(live("team", stored(1, "t1", "bob")), 0.0);
        session.apply(live("team", stored(2, "t2", "ann")), 0.0);
        session.apply(live("elsewhere", stored(1, "x", "bob")), 0.0);
        assert_eq!(seqs(lobby(&session)), [1]);
        assert_eq!(seqs(&session.room("team").unwrap().conversation), [1, 2]);
        assert_eq!(session.room("team").unwrap().unread, 1, "own messages are not unread");
        assert_eq!(session.room(LOBBY).unwrap().unread, 0, "the shown room has none");
        assert!(session.take_room_changes().list);

        assert!(session.show("team"));
        assert_eq!(session.shown().name, "team");
        assert_eq!(session.room("team").unwrap().unread, 0);
        let changes = session.take_room_changes();
        assert!(changes.shown && changes.list);
        session.apply(live(LOBBY, stored(2, "l2", "cy")), 0.0);
        assert_eq!(session.room(LOBBY).unwrap().unread, 1);
        assert!(!session.show("nowhere"));
    }

    /// What the page announces: messages from others that arrive live in the room shown, not
    /// those of a history answer, nor the user's own (from this tab or under the same name), nor
    /// those of another room (counted as unread there instead).
    #[test]
    fn only_others_live_messages_in_the_room_shown_are_announced() {
        let mut session = session_with(&["own"]);
        session.welcome("e", 1);
        session.join("team", true);
        session.apply(joined("team", "t"), 0.0);
        session.take_room_changes();
        session.apply(history(LOBBY, 1, vec![stored(1, "h1", "bob"), stored(2, "h2", "cy")]), 0.0);
        assert_eq!(session.take_room_changes().arrived, 0, "history is not announced");
        session.apply(live(LOBBY, stored(3, "l3", "bob")), 0.0);
        session.apply(live(LOBBY, stored(4, "l4", "cy")), 0.0);
        session.apply(live(LOBBY, stored(5, "own", "ann")), 0.0);
        session.apply(live(LOBBY, stored(6, "other-tab", "ann")), 0.0);
        session.apply(live("team", stored(1, "t1", "bob")), 0.0);
        session.apply(live(LOBBY, stored(4, "l4", "cy")), 0.0);
        assert_eq!(session.take_room_changes().arrived, 2, "bob's and cy's, once each");
        assert_eq!(session.take_room_changes().arrived, 0, "taken");
    }

    /// After a reconnection the lobby asks for what it missed and every other room is joined
    /// again from where the tab stopped in it; a message waiting for a room goes to that room.
    #[test]
    fn a_reconnection_resumes_every_room() {
        let mut session = session_with(&[]);
        session.welcome("e", 1);
        session.join("team", true);
        session.apply(joined("team", "t"), 0.0);
        session.apply(
            after_join("team", "t", vec![stored(1, "t1", "bob"), stored(2, "t2", "bob")]),
            0.0,
        );
        session.outbox.push(OutgoingMessage::new("w", "ann", "later", 0).in_room("team")).unwrap();
        session.disconnected();
        assert!(!session.room("team").unwrap().joined);
        let frames = session.welcome("e", 7);
        assert_eq!(
            frames,
            [
                lobby_history(7, 0),
                ClientFrame::Join {
                    room: "team".into(),
                    after: Some(Position { epoch: "t".into(), seq: 2 })
                },
            ]
        );
        let ClientFrame::Message { room, .. } = &session.to_send()[0].1 else { panic!() };
        assert_eq!(room, "team");
        // The relay answers the join with what followed seq 2 (a new epoch would start over).
        session.apply(joined("team", "t"), 0.0);
        session.apply(after_join("team", "t", vec![stored(3, "t3", "bob")]), 0.0);
        assert_eq!(seqs(&session.room("team").unwrap().conversation), [1, 2, 3]);
        assert_eq!(session.room("team").unwrap().conversation.resume_after(), 3);
    }

    /// A join the relay refuses (forbidden, bad name, limits) takes the room off the list, shows
    /// the lobby, and says why; an error about a joined room does not.
    #[test]
    fn a_refused_join_is_forgotten_and_explained() {
        let mut session = session_with(&[]);
        session.welcome("e", 1);
        session.join("secret", true);
        session.show("secret");
        let refusal = |room: &str| ServerFrame::Error {
            error: WireError::new(ErrorCode::Forbidden, "not for you"),
            room: Some(room.into()),
            id: None,
            request_id: None,
        };
        let problem = session.apply(refusal("secret"), 0.0);
        assert!(
            matches!(&problem, Some(Problem::RoomRefused { room, .. }) if room == "secret"),
            "{problem:?}"
        );
        assert!(problem.unwrap().to_string().contains("secret"));
        assert!(session.room("secret").is_none());
        assert_eq!(session.shown().name, LOBBY);
        let problem = session.apply(refusal(LOBBY), 0.0);
        assert!(matches!(problem, Some(Problem::Refused(_))));
        assert!(session.room(LOBBY).is_some(), "the lobby stays");
    }

    /// The lobby cannot be left, nor a room holding undelivered messages (they would be
    /// stranded); any other room is left, and the lobby shown if it was.
    #[test]
    fn leaving_a_room() {
        let mut session = session_with(&[]);
        session.welcome("e", 1);
        session.join("team", true);
        session.join("quiet", true);
        session.show("quiet");
        session.outbox.push(OutgoingMessage::new("w", "ann", "wait", 0).in_room("team")).unwrap();
        assert_eq!(session.leave(LOBBY), Err(LeaveError::Lobby));
        assert_eq!(session.leave("team"), Err(LeaveError::Undelivered(1)));
        assert_eq!(session.leave("nowhere"), Err(LeaveError::NotJoined));
        assert_eq!(session.leave("quiet"), Ok(ClientFrame::Leave { room: "quiet".into() }));
        assert_eq!(session.shown().name, LOBBY);
        let ack =
            ServerFrame::Ack { room: "team".into(), id: "w".into(), seq: 1, duplicate: false };
        session.apply(ack, 0.0);
        assert!(session.leave("team").is_ok());
        let names: Vec<_> = session.rooms().iter().map(|room| room.name.as_str()).collect();
        assert_eq!(names, [LOBBY]);
    }

    /// Presence follows the relay; "is typing" shows for a few seconds after the last signal,
    /// ends when that person's message arrives, and never shows the user themself.
    #[test]
    fn presence_and_typing() {
        let mut session = session_with(&[]);
        session.welcome("e", 1);
        session.take_room_changes();
        let presence = ServerFrame::Presence {
            room: LOBBY.into(),
            names: vec!["ann".into(), "bob".into()],
            count: 2,
        };
        session.apply(presence.clone(), 0.0);
        assert_eq!(session.shown().presence, ["ann", "bob"]);
        assert!(session.take_room_changes().presence);
        session.apply(presence, 0.0);
        assert!(!session.take_room_changes().presence, "unchanged");

        let typing = |name: &str| ServerFrame::Typing { room: LOBBY.into(), name: name.into() };
        session.apply(typing("bob"), 1_000.0);
        session.apply(typing("ann"), 1_000.0);
        assert!(session.take_room_changes().typing);
        fn at(session: &Session, now: f64) -> Vec<&str> {
            session.shown().typing_at(now).collect()
        }
        assert_eq!(at(&session, 2_000.0), ["bob"]);
        session.apply(typing("bob"), 4_000.0);
        assert_eq!(at(&session, 8_000.0), ["bob"], "renewed");
        assert!(!session.expire_typing(8_000.0));
        assert!(session.expire_typing(9_500.0));
        assert!(at(&session, 9_500.0).is_empty());
        session.apply(typing("cy"), 10_000.0);
        session.apply(live(LOBBY, stored(1, "c1", "cy")), 10_100.0);
        assert!(at(&session, 10_200.0).is_empty(), "their message ends it");
        session.disconnected();
        assert!(session.shown().presence.is_empty());
    }
}
