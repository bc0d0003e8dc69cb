//! The room: who is connected, the conversation's history, and fan-out of each message.
//!
//! Numbering a message, writing it to the store (with `--data-dir`) and queueing it for every
//! member happen under one lock, so every client receives messages in seq order, the file holds
//! them in that order, and a history answer is queued exactly between the messages it contains and
//! the live ones that follow.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::{CloseFrame, Message};
use wschat_protocol::v1::{ServerFrame, StoredMessage};
use wschat_protocol::ChatMessage;

use crate::history::{Appended, History, Posted};
use crate::outbound::Outbound;
use crate::store::Store;

/// Identifies one connected client for the lifetime of the relay process.
pub type ClientId = u64;

/// Which protocol a client speaks, fixed at the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The tutorial's plain `{source, content}` frames (no subprotocol asked for).
    Tutorial,
    /// `wschat.v1`: tagged envelopes with seqs, acks and history.
    V1,
}

impl Mode {
    /// The metric label.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Tutorial => "tutorial",
            Self::V1 => "v1",
        }
    }
}

/// Everything the room keeps for one connected client.
struct Member {
    /// The client's outbound queue, drained by its writer.
    outbound: Arc<Outbound>,
    mode: Mode,
}

/// A client's place in the room: leaves the room when dropped, however the connection ends
/// (including an upgrade that never completes).
pub struct Seat {
    room: Arc<Room>,
    id: ClientId,
}

impl Seat {
    /// The client's id, for logs.
    #[must_use]
    pub fn id(&self) -> ClientId {
        self.id
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.room.lock().members.remove(&self.id);
    }
}

/// What a connection task holds for itself after joining the room.
pub struct Membership {
    /// Keeps the client in the room until dropped.
    pub seat: Seat,
    /// Frames to write to this client's socket, and the close once one is decided (by the room
    /// when it evicts the client, or by the connection itself).
    pub outbound: Arc<Outbound>,
}

/// A client whose queue overflowed and which was therefore evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evicted(pub ClientId);

struct State {
    members: HashMap<ClientId, Member>,
    history: History,
    /// Where new messages are also written, so the history outlives the process; `None` keeps it
    /// in memory only.
    store: Option<Box<dyn Store>>,
    /// The newest seq the store has: behind `history.latest_seq()` only after a failed write.
    saved_seq: u64,
}

/// The connected clients and the conversation they share.
///
/// A std `Mutex` is right here: it is held only to number messages, write them to the store and
/// queue frames, never across an `.await`, so no task can hold it while suspended. The store's
/// write is blocking I/O (one small transaction and an fsync per new message, about 0.25 ms
/// measured, see `HistoryStore`): for that long the posting task holds a runtime thread, and other
/// senders block on the lock. At chat rates no person notices, and in exchange the file is written
/// in seq order and every message is on disk before its ack, without a second lock or a queue.
pub struct Room {
    state: Mutex<State>,
    next_id: AtomicU64,
    /// Each client's outbound queue holds at most this many bytes (see `Outbound`).
    queue_bytes: usize,
}

impl Room {
    /// An empty room whose members' outbound queues each hold at most `queue_bytes`. New
    /// messages go into `history` and, when there is one, into `store`.
    #[must_use]
    pub fn new(queue_bytes: usize, history: History, store: Option<Box<dyn Store>>) -> Self {
        Self {
            state: Mutex::new(State {
                members: HashMap::new(),
                // What the history starts with came from the store, or there is no store.
                saved_seq: history.latest_seq(),
                history,
                store,
            }),
            next_id: AtomicU64::new(1),
            queue_bytes,
        }
    }

    /// Adds a client. A v1 client's queue starts with the welcome frame.
    ///
    /// The relay joins a client before it answers the WebSocket handshake: once the client sees its
    /// socket open, every message sent after that reaches it (queued until its writer starts).
    #[cfg(test)]
    pub fn join(self: &Arc<Self>, mode: Mode) -> Membership {
        self.join_unless_full(mode, usize::MAX).expect("no room holds usize::MAX members")
    }

    /// Like [`Room::join`], but `None` when `max_members` are already connected. The count is
    /// checked under the same lock as the join, so concurrent handshakes cannot overshoot it.
    pub fn join_unless_full(
        self: &Arc<Self>,
        mode: Mode,
        max_members: usize,
    ) -> Option<Membership> {
        let mut state = self.lock();
        if state.members.len() >= max_members {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let outbound = Arc::new(Outbound::default());
        if mode == Mode::V1 {
            // The byte bound is not applied to the welcome: this cannot fail.
            let _ = outbound.offer(text(state.history.welcome().to_json()), usize::MAX);
        }
        state.members.insert(id, Member { outbound: Arc::clone(&outbound), mode });
        let seat = Seat { room: Arc::clone(self), id };
        Some(Membership { seat, outbound })
    }

    /// How many clients are connected.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().members.len()
    }

    /// Numbers and stores a message from `from`, then queues it for every other client (each in
    /// its own protocol) and, for a v1 sender, queues the ack. A re-sent message (same id) is only
    /// acked again.
    ///
    /// A new message is written to the store before it is acked or relayed, so an acked message
    /// survives a crash. If that write fails, the failure is logged and the message is acked and
    /// relayed all the same: it is in the in-memory history, which answers every client; the next
    /// write (the next message, or the relay stopping) writes it too. Only a relay that stops
    /// while the store still fails loses it on restart.
    ///
    /// A client whose queue passed its byte bound has stopped reading: it is evicted (its
    /// connection closes with 1008) rather than allowed to slow the sender or anyone else. Returns
    /// the evicted clients.
    pub fn post(&self, from: ClientId, posted: Posted, sent_at_ms: u64) -> Vec<Evicted> {
        let mut state = self.lock();
        let id = posted.id.clone();
        let stored = match state.history.append(posted, sent_at_ms) {
            Appended::New(stored) => stored,
            Appended::Duplicate(seq) => {
                let ack = ServerFrame::Ack { id, seq, duplicate: true };
                let queued = state.queue(from, text(ack.to_json()), self.queue_bytes);
                return queued.err().into_iter().collect();
            }
        };
        state.persist();
        let frames = Encoded::new(&stored);
        let ack = text(ServerFrame::Ack { id, seq: stored.seq, duplicate: false }.to_json());
        let mut evicted = Vec::new();
        for (&member_id, member) in &state.members {
            let frame = match (member_id == from, member.mode) {
                (true, Mode::Tutorial) => continue,
                (true, Mode::V1) => ack.clone(),
                (false, mode) => frames.for_mode(mode),
            };
            if !member.outbound.offer(frame, self.queue_bytes) {
                evicted.push(Evicted(member_id));
            }
        }
        for &Evicted(id) in &evicted {
            state.evict(id);
        }
        evicted
    }

    /// Queues the answer to a history request from `to`.
    ///
    /// # Errors
    /// `Evicted` when that client's queue is full (it was evicted).
    pub fn answer_history(
        &self,
        to: ClientId,
        request_id: u64,
        after_seq: u64,
    ) -> Result<(), Evicted> {
        let mut state = self.lock();
        let answer = text(state.history.answer(request_id, after_seq).to_json());
        state.queue(to, answer, self.queue_bytes)
    }

    /// Queues `frame` for one client (an answer to something it sent).
    ///
    /// # Errors
    /// `Evicted` when that client's queue is full, after evicting it: a client that floods the
    /// relay with requests but never reads the answers is a slow consumer too.
    pub fn send_to(&self, id: ClientId, frame: Message) -> Result<(), Evicted> {
        self.lock().queue(id, frame, self.queue_bytes)
    }

    /// Closes the store, if any, after one more try at writing what a failed write missed. Its
    /// file is closed when this returns, so another relay may open it; messages posted after this
    /// are kept in memory only. Called when the relay stops, since a stray handle on the room
    /// could otherwise keep the file open.
    pub fn close_store(&self) {
        let store = {
            let mut state = self.lock();
            if state.saved_seq < state.history.latest_seq() {
                state.persist();
            }
            state.store.take()
        };
        // Closed outside the lock.
        drop(store);
    }

    /// Locks the state, recovering it if a thread panicked while holding it: every critical
    /// section leaves it consistent at each step, so the data is still good.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    /// Brings the store, if there is one, up to the history's latest seq: writes the new message
    /// and any that a failed write missed (still in memory, unless they fell out of the last N).
    /// A failure is logged (once, here) and otherwise ignored, as `Room::post` explains.
    fn persist(&mut self) {
        let Some(store) = &mut self.store else { return };
        let latest_seq = self.history.latest_seq();
        let unsaved: Vec<_> = self.history.after(self.saved_seq).collect();
        match store.append(&unsaved, latest_seq) {
            Ok(()) => self.saved_seq = latest_seq,
            Err(error) => tracing::error!(
                %error,
                saved_seq = self.saved_seq,
                "kept in memory only for now: written with the next message if the store recovers"
            ),
        }
    }

    fn queue(&mut self, id: ClientId, frame: Message, limit: usize) -> Result<(), Evicted> {
        let Some(member) = self.members.get(&id) else { return Ok(()) };
        if member.outbound.offer(frame, limit) {
            return Ok(());
        }
        self.evict(id);
        Err(Evicted(id))
    }

    fn evict(&mut self, id: ClientId) {
        if let Some(member) = self.members.remove(&id) {
            member.outbound.close(RelayClose::slow_consumer());
        }
    }
}

/// A stored message encoded once per protocol, shared by every recipient of that protocol.
struct Encoded {
    v1: Message,
    tutorial: Message,
}

impl Encoded {
    fn new(stored: &StoredMessage) -> Self {
        Self {
            v1: text(ServerFrame::Message(stored.clone()).to_json()),
            tutorial: text(ChatMessage::from(stored).to_json()),
        }
    }

    fn for_mode(&self, mode: Mode) -> Message {
        // Cloning a text frame clones a reference-counted buffer, not the text.
        match mode {
            Mode::V1 => self.v1.clone(),
            Mode::Tutorial => self.tutorial.clone(),
        }
    }
}

fn text(json: String) -> Message {
    Message::Text(json.into())
}

/// Why the relay itself closes a connection (shutdown aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// It stopped reading: its outbound queue passed its byte bound, or its socket took nothing
    /// for too long.
    SlowConsumer,
    /// It sent a frame over the size limit.
    TooBig,
    /// It sent a text frame that is not UTF-8.
    InvalidText,
    /// It kept sending faster than the rate.
    Flood,
    /// It sent too many refused frames in a row.
    Strikes,
}

impl CloseKind {
    /// The metric label.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::SlowConsumer => "slow_consumer",
            Self::TooBig => "too_big",
            Self::InvalidText => "invalid_text",
            Self::Flood => "flood",
            Self::Strikes => "strikes",
        }
    }
}

/// A close the relay decided on: why, and the frame the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayClose {
    /// Why.
    pub kind: CloseKind,
    /// The close frame (code and reason) sent to the client.
    pub frame: CloseFrame,
}

impl RelayClose {
    /// The close for a client whose outbound queue passed its byte bound (1008).
    #[must_use]
    pub fn slow_consumer() -> Self {
        Self {
            kind: CloseKind::SlowConsumer,
            frame: CloseFrame {
                code: axum::extract::ws::close_code::POLICY,
                reason: "outbound queue full: the client is not reading its messages".into(),
            },
        }
    }

    /// The close for a client whose socket took nothing for too long while frames waited (1008).
    #[must_use]
    pub fn slow_consumer_stalled() -> Self {
        Self {
            kind: CloseKind::SlowConsumer,
            frame: CloseFrame {
                code: axum::extract::ws::close_code::POLICY,
                reason: "nothing could be written for too long: the client is not reading".into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use std::sync::atomic::AtomicBool;

    /// Bytes enough for anything these tests queue.
    const ROOMY: usize = 1024 * 1024;

    fn room(queue_bytes: usize) -> Arc<Room> {
        Arc::new(Room::new(queue_bytes, History::new("epoch".into(), 100), None))
    }

    fn posted(id: &str, content: &str) -> Posted {
        Posted { id: id.into(), source: "ada".into(), content: content.into() }
    }

    fn tutorial_text(content: &str) -> Message {
        text(ChatMessage { source: "ada".into(), content: content.into() }.to_json())
    }

    /// A message reaches every other member once, and never a tutorial sender.
    #[test]
    fn post_skips_a_tutorial_sender() {
        let room = room(ROOMY);
        let a = room.join(Mode::Tutorial);
        let b = room.join(Mode::Tutorial);
        let c = room.join(Mode::Tutorial);
        assert!(room.post(a.seat.id(), posted("1", "hi"), 0).is_empty());
        assert_eq!(b.outbound.take_now(), [tutorial_text("hi")]);
        assert_eq!(c.outbound.take_now(), [tutorial_text("hi")]);
        assert!(a.outbound.take_now().is_empty());
    }

    /// A v1 client is welcomed, gets an ack for its own message and the numbered message of others.
    #[test]
    fn v1_members_get_welcome_acks_and_numbered_messages() {
        let room = room(ROOMY);
        let a = room.join(Mode::V1);
        let b = room.join(Mode::V1);
        for member in [&a, &b] {
            let welcome = member.outbound.take_now();
            assert!(welcome[0].to_text().unwrap().starts_with(r#"{"type":"welcome""#));
        }
        room.post(a.seat.id(), posted("m1", "hi"), 7);
        let ack = ServerFrame::Ack { id: "m1".into(), seq: 1, duplicate: false };
        assert_eq!(a.outbound.take_now(), [text(ack.to_json())]);
        let delivered = b.outbound.take_now();
        assert_eq!(
            ServerFrame::from_json(delivered[0].to_text().unwrap()).unwrap(),
            ServerFrame::Message(StoredMessage {
                seq: 1,
                id: "m1".into(),
                source: "ada".into(),
                content: "hi".into(),
                sent_at_ms: 7
            })
        );
        // A re-send is acked as a duplicate and not relayed again.
        room.post(a.seat.id(), posted("m1", "hi"), 8);
        let ack = ServerFrame::Ack { id: "m1".into(), seq: 1, duplicate: true };
        assert_eq!(a.outbound.take_now(), [text(ack.to_json())]);
        assert!(b.outbound.take_now().is_empty());
    }

    /// Stands in for the history file: records the seqs of each write, and fails while told to.
    #[derive(Clone, Default)]
    struct FakeStore {
        writes: Arc<Mutex<Vec<Vec<u64>>>>,
        failing: Arc<AtomicBool>,
    }

    impl Store for FakeStore {
        fn append(
            &mut self,
            unsaved: &[&StoredMessage],
            latest_seq: u64,
        ) -> Result<(), StoreError> {
            if self.failing.load(Ordering::Relaxed) {
                let source = redb::Error::Io(std::io::Error::other("disk full"));
                return Err(StoreError::Write { seq: latest_seq, source });
            }
            self.writes.lock().unwrap().push(unsaved.iter().map(|message| message.seq).collect());
            Ok(())
        }
    }

    /// A room writing to a fake store; the returned clone shares its record and its switch.
    fn room_with_store(failing: bool) -> (Arc<Room>, FakeStore) {
        let fake = FakeStore::default();
        fake.failing.store(failing, Ordering::Relaxed);
        let history = History::new("epoch".into(), 100);
        (Arc::new(Room::new(ROOMY, history, Some(Box::new(fake.clone())))), fake)
    }

    /// Each new message is written to the store once; a re-send is not written again.
    #[test]
    fn new_messages_are_written_once() {
        let (room, fake) = room_with_store(false);
        let a = room.join(Mode::Tutorial);
        room.post(a.seat.id(), posted("m1", "hi"), 0);
        room.post(a.seat.id(), posted("m2", "there"), 0);
        room.post(a.seat.id(), posted("m1", "hi"), 0);
        assert_eq!(*fake.writes.lock().unwrap(), [[1], [2]]);
        room.close_store();
        room.post(a.seat.id(), posted("m3", "after"), 0);
        assert_eq!(fake.writes.lock().unwrap().len(), 2, "closed: nothing more is written");
    }

    /// When the disk fails, the message is still acked, relayed and kept for history answers.
    #[test]
    fn a_failed_write_still_reaches_everyone() {
        let (room, fake) = room_with_store(true);
        let a = room.join(Mode::V1);
        let b = room.join(Mode::Tutorial);
        a.outbound.take_now();
        assert!(room.post(a.seat.id(), posted("m1", "hi"), 0).is_empty());
        let ack = ServerFrame::Ack { id: "m1".into(), seq: 1, duplicate: false };
        assert_eq!(a.outbound.take_now(), [text(ack.to_json())]);
        assert_eq!(b.outbound.take_now(), [tutorial_text("hi")]);
        room.answer_history(a.seat.id(), 1, 0).unwrap();
        let answer = a.outbound.take_now();
        match ServerFrame::from_json(answer[0].to_text().unwrap()).unwrap() {
            ServerFrame::History { messages, complete, .. } => {
                assert_eq!((messages.len(), complete), (1, true));
            }
            other => panic!("not a history answer: {other:?}"),
        }
        // Once the disk recovers, the next message brings the missed one with it, so the file
        // has no hole.
        fake.failing.store(false, Ordering::Relaxed);
        room.post(a.seat.id(), posted("m2", "again"), 0);
        assert_eq!(*fake.writes.lock().unwrap(), [[1, 2]]);
    }

    /// A relay that stops after a failed write tries once more to write what was missed.
    #[test]
    fn stopping_retries_a_failed_write() {
        let (room, fake) = room_with_store(true);
        let a = room.join(Mode::Tutorial);
        room.post(a.seat.id(), posted("m1", "hi"), 0);
        fake.failing.store(false, Ordering::Relaxed);
        room.close_store();
        assert_eq!(*fake.writes.lock().unwrap(), [[1]]);
    }

    /// A member that falls behind by more than its byte bound is evicted with 1008; the others
    /// keep receiving, and taking frames frees their bytes again.
    #[test]
    fn the_byte_bound_evicts_only_that_member() {
        let frame_size = tutorial_text(&"x".repeat(20)).to_text().unwrap().len();
        let room = room(2 * (frame_size + crate::outbound::FRAME_OVERHEAD));
        let sender = room.join(Mode::Tutorial);
        let reader = room.join(Mode::Tutorial);
        let stalled = room.join(Mode::Tutorial);
        for n in 0..2 {
            let evicted = room.post(sender.seat.id(), posted(&n.to_string(), &"x".repeat(20)), 0);
            assert!(evicted.is_empty());
            assert_eq!(reader.outbound.take_now().len(), 1);
        }
        let evicted = room.post(sender.seat.id(), posted("2", &"x".repeat(20)), 0);
        assert_eq!(evicted, vec![Evicted(stalled.seat.id())], "the stalled one is 3 frames behind");
        assert_eq!(stalled.outbound.close_reason().map(|close| close.frame.code), Some(1008));
        assert_eq!(reader.outbound.take_now().len(), 1, "the reader keeps up and stays");
        assert_eq!(reader.outbound.close_reason(), None);
        assert_eq!(room.len(), 2);
    }

    /// With the default bound, a burst of 2,000 messages that nobody has read yet evicts nobody:
    /// being many small frames behind is not being slow.
    #[test]
    fn a_burst_of_small_messages_evicts_nobody() {
        let room = room(crate::Config::default().queue_bytes);
        let sender = room.join(Mode::V1);
        let readers: Vec<_> =
            [Mode::V1, Mode::Tutorial].into_iter().map(|mode| room.join(mode)).collect();
        for n in 0..2_000 {
            let evicted = room.post(sender.seat.id(), posted(&format!("m{n}"), "a short line"), 0);
            assert!(evicted.is_empty(), "message {n}");
        }
        assert_eq!(sender.outbound.take_now().len(), 2_001, "the welcome and 2,000 acks");
        for reader in &readers {
            assert!(reader.outbound.take_now().len() >= 2_000);
        }
    }

    /// A client leaves the room when its seat is dropped, however its connection ended.
    #[test]
    fn dropping_the_seat_leaves_the_room() {
        let room = room(ROOMY);
        let a = room.join(Mode::Tutorial);
        let b = room.join(Mode::V1);
        assert_eq!(room.len(), 2);
        drop(a);
        assert_eq!(room.len(), 1);
        drop(b);
        assert_eq!(room.len(), 0);
    }
}
