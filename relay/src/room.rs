//! The room: who is connected, the conversation's history, and fan-out of each message.
//!
//! Order. Every message is numbered and queued for every member under one lock, so every client
//! receives live messages in seq order. A history answer is one page of what was committed when
//! the request came: its messages are picked under the lock, and the text is made without it,
//! so a live message committed meanwhile can reach the client just before the answer (clients
//! place messages by seq, and a history of several pages is interleaved with live messages
//! anyway).
//!
//! Durability (with `--data-dir`). A new message is numbered under the lock and then waits; the
//! committer (`crate::commit`) takes everything that waits, writes it in one transaction on its
//! own thread (the lock is not held across the fsync), and only then, under the lock again,
//! stores it in the history, acks it and relays it. The history holds committed messages only, so
//! welcomes and history answers speak only of what is on disk, and a message still waiting when a
//! client asks for history reaches that client after the answer, live. When a commit fails, its
//! messages and every one numbered after it are refused to their senders (`unavailable`, with
//! their ids) and their seqs are given out again (nobody saw them); new messages are refused until
//! the committer has reopened the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ws::Message;
use tokio::sync::{Semaphore, SemaphorePermit};
use wschat_protocol::v1::{ServerFrame, StoredMessage};
use wschat_protocol::{ChatMessage, ErrorCode, WireError};

use crate::close::Close;
use crate::connection::Refusal;
use crate::dedupe::Dedupe;
use crate::history::{History, Posted};
use crate::metrics::{count, Metrics};
use crate::outbound::Outbound;

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

/// How new messages become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// No store: a message is final once numbered.
    Memory,
    /// The committer writes every message before it is acked or relayed.
    Committing,
    /// A commit failed and the committer is reopening the store: new messages are refused.
    Failing,
    /// The relay is stopping: what waits is still written, new messages are refused.
    Closing,
}

/// A numbered message waiting for its commit.
#[derive(Debug)]
pub struct Uncommitted {
    /// The message, numbered.
    pub message: StoredMessage,
    /// Its sender, who gets the ack (v1) once it is committed, or the refusal if that fails.
    from: ClientId,
    /// What it holds of the room's budget for uncommitted messages (see [`Room::admit`]).
    permits: usize,
}

struct State {
    members: HashMap<ClientId, Member>,
    /// The committed messages (all of them, without a store).
    history: History,
    durability: Durability,
    /// Numbered messages waiting for the committer, oldest first; they follow those it writes.
    waiting: Vec<Uncommitted>,
    /// How many messages the committer is writing now: they follow the history's latest seq.
    writing: u64,
    /// The ids each sender used lately: a re-send is acked as a duplicate, not stored again.
    dedupe: Dedupe,
    /// The seq of every message waiting or being written, by (sender, id): a re-send of one is
    /// not numbered again but waits for the same commit.
    uncommitted_ids: HashMap<(String, String), u64>,
    /// Re-sends of uncommitted messages (seq, sender, id): acked as duplicates once the message is
    /// committed, refused with it if that fails.
    resent: Vec<(u64, ClientId, String)>,
}

impl State {
    /// The seq the next new message gets: after the committed ones and those on their way.
    fn next_seq(&self) -> u64 {
        self.history.latest_seq() + self.writing + self.waiting.len() as u64 + 1
    }
}

/// The most bytes of messages that may wait for their commit at once. Past it, readers wait
/// before they take another message (their clients' sockets fill and they slow down), rather than
/// memory growing while the disk lags. Sixteen MiB is thousands of messages: the disk has to be
/// far behind for anyone to wait.
const UNCOMMITTED_BYTES: usize = 16 * 1024 * 1024;

/// The most bytes of messages one history answer holds, and at most a quarter of a client's
/// queue bound, so that an answer always fits beside the live messages: a history larger than the
/// queue (150 messages of 10,000 emoji are 6 MB) would otherwise evict every client that asks for
/// it. A client asks for the next page once it has this one, so one page at a time waits for
/// it. 256 KiB is a few thousand ordinary messages, and a few of the largest (40 KB each).
const PAGE_BYTES: usize = 256 * 1024;

/// The most messages one history answer holds: bounds the time the room's lock is held to pick
/// them (a reference count each), however small they are.
const PAGE_MESSAGES: usize = 1000;

/// The connected clients and the conversation they share.
///
/// A std `Mutex` is right here: it is held only to number messages and queue frames (no I/O, no
/// `.await`), so no task can hold it while suspended; the committer writes to disk without it.
pub struct Room {
    state: Mutex<State>,
    /// Wakes the committer when messages wait for it or the relay stops.
    wake: Condvar,
    /// With a store: the budget of bytes of uncommitted messages ([`UNCOMMITTED_BYTES`]).
    admission: Semaphore,
    durable: bool,
    next_id: AtomicU64,
    /// Each client's outbound queue holds at most this many bytes (see `Outbound`).
    queue_bytes: usize,
    metrics: Arc<Metrics>,
}

/// What a message holds of the room's budget for uncommitted messages: kept by the message until
/// it is committed or refused, given back at once if it never waits for a commit.
pub struct Admission<'a>(Option<SemaphorePermit<'a>>);

impl Admission<'_> {
    /// Nothing held: for a room without a store.
    pub fn none() -> Self {
        Self(None)
    }

    /// Hands the permits over to a waiting message (given back by the room later).
    fn keep(self) -> usize {
        self.0.map_or(0, |permit| {
            let permits = permit.num_permits();
            permit.forget();
            permits
        })
    }
}

impl Room {
    /// An empty room whose members' outbound queues each hold at most `queue_bytes`, going on
    /// from `history` and recognising the re-sends `dedupe` remembers. With `durable`, new
    /// messages wait for the committer (`crate::commit`, started by the caller) before they are
    /// acked and relayed.
    #[must_use]
    pub fn new(
        queue_bytes: usize,
        history: History,
        dedupe: Dedupe,
        durable: bool,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            state: Mutex::new(State {
                members: HashMap::new(),
                history,
                dedupe,
                durability: if durable { Durability::Committing } else { Durability::Memory },
                waiting: Vec::new(),
                writing: 0,
                uncommitted_ids: HashMap::new(),
                resent: Vec::new(),
            }),
            wake: Condvar::new(),
            admission: Semaphore::new(UNCOMMITTED_BYTES),
            durable,
            next_id: AtomicU64::new(1),
            queue_bytes,
            metrics,
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

    /// Takes `bytes` of the budget for messages waiting for their commit, waiting for the
    /// committer to give some back if need be; nothing without a store. Taken before a frame is
    /// read into a message, and handed to [`Room::post`].
    pub async fn admit(&self, bytes: usize) -> Admission<'_> {
        if !self.durable {
            return Admission::none();
        }
        let permits = u32::try_from(bytes.clamp(1, UNCOMMITTED_BYTES)).unwrap_or(u32::MAX);
        // The semaphore is never closed.
        Admission(self.admission.acquire_many(permits).await.ok())
    }

    /// Numbers a message from `from`; without a store, queues it for every other client (each in
    /// its own protocol) and, for a v1 sender, queues the ack. With a store, the message waits for
    /// the committer, which does that once the message is on disk; while the store fails, the
    /// message is refused with `unavailable` (the sender keeps it and sends it again later). A
    /// re-sent message (same sender and id, within the dedupe window: see `crate::dedupe`) is
    /// only acked again, as a duplicate, once its first copy is committed.
    ///
    /// A client whose queue passed its byte bound has stopped reading: it is evicted (its
    /// connection closes with 1008) rather than allowed to slow the sender or anyone else. Returns
    /// the evicted clients.
    pub fn post(
        &self,
        from: ClientId,
        posted: Posted,
        sent_at_ms: u64,
        admission: Admission<'_>,
    ) -> Vec<Evicted> {
        let mut state = self.lock();
        if let Some(seq) = state.dedupe.seq_of(&posted.source, &posted.id, sent_at_ms) {
            let ack = ServerFrame::Ack { id: posted.id, seq, duplicate: true };
            return state
                .queue(from, text(ack.to_json()), self.queue_bytes)
                .err()
                .into_iter()
                .collect();
        }
        match state.durability {
            Durability::Memory => {
                let message = posted.numbered(state.history.latest_seq() + 1, sent_at_ms);
                let frames = Encoded::new(&message);
                state.dedupe.remember(&message.source, &message.id, message.seq, sent_at_ms);
                state.history.push(message);
                self.metrics.messages_in.inc();
                state.deliver(from, &frames, self.queue_bytes)
            }
            Durability::Committing => {
                let key = (posted.source.clone(), posted.id.clone());
                if let Some(&seq) = state.uncommitted_ids.get(&key) {
                    state.resent.push((seq, from, posted.id));
                    return Vec::new();
                }
                let seq = state.next_seq();
                state.uncommitted_ids.insert(key, seq);
                let message = posted.numbered(seq, sent_at_ms);
                state.waiting.push(Uncommitted { message, from, permits: admission.keep() });
                self.wake.notify_one();
                Vec::new()
            }
            Durability::Failing | Durability::Closing => {
                self.refuse_unavailable(&mut state, from, posted.id).err().into_iter().collect()
            }
        }
    }

    /// Queues the answer to a history request from `to`: the committed messages after
    /// `after_seq`, one page of them (see [`PAGE_BYTES`]); the answer says `more` when the client
    /// should ask again after its last seq.
    ///
    /// # Errors
    /// `Evicted` when that client's queue is full (it was evicted).
    pub fn answer_history(
        &self,
        to: ClientId,
        request_id: u64,
        after_seq: u64,
    ) -> Result<(), Evicted> {
        let page_bytes = (self.queue_bytes / 4).min(PAGE_BYTES);
        let page = self.lock().history.page(after_seq, page_bytes, PAGE_MESSAGES);
        // Copied and encoded without the lock: up to a few hundred kilobytes of text.
        let answer = text(page.into_frame(request_id).to_json());
        self.lock().queue(to, answer, self.queue_bytes)
    }

    /// Queues `frame` for one client (an answer to something it sent).
    ///
    /// # Errors
    /// `Evicted` when that client's queue is full, after evicting it: a client that floods the
    /// relay with requests but never reads the answers is a slow consumer too.
    pub fn send_to(&self, id: ClientId, frame: Message) -> Result<(), Evicted> {
        self.lock().queue(id, frame, self.queue_bytes)
    }

    /// For the committer: waits until messages wait for their commit, and takes them all (they
    /// are being written from then on). `None` once the relay is stopping and nothing waits.
    pub fn next_batch(&self) -> Option<Vec<Uncommitted>> {
        let mut state = self.lock();
        loop {
            if !state.waiting.is_empty() {
                let batch = std::mem::take(&mut state.waiting);
                state.writing = batch.len() as u64;
                return Some(batch);
            }
            if state.durability == Durability::Closing {
                return None;
            }
            state = self.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// For the committer: `batch` is on disk. Stores it in the history, acks each message to its
    /// sender (and to anyone who re-sent it meanwhile) and relays it to everyone else, in seq
    /// order. The frames are encoded before the lock is taken.
    pub fn committed(&self, batch: Vec<Uncommitted>) {
        let frames: Vec<_> = batch.iter().map(|pending| Encoded::new(&pending.message)).collect();
        let last_seq = batch.last().map_or(0, |pending| pending.message.seq);
        let permits: usize = batch.iter().map(|pending| pending.permits).sum();
        let mut state = self.lock();
        state.writing = 0;
        for (pending, frames) in batch.into_iter().zip(frames) {
            let message = &pending.message;
            state.uncommitted_ids.remove(&(message.source.clone(), message.id.clone()));
            state.dedupe.remember(&message.source, &message.id, message.seq, message.sent_at_ms);
            state.history.push(pending.message);
            self.metrics.messages_in.inc();
            // Evicted clients are closing; nothing more to do about them here.
            let _ = state.deliver(pending.from, &frames, self.queue_bytes);
        }
        let resent = std::mem::take(&mut state.resent);
        let (acked, still_waiting) = resent.into_iter().partition(|(seq, ..)| *seq <= last_seq);
        state.resent = still_waiting;
        for (seq, from, id) in acked {
            let ack = ServerFrame::Ack { id, seq, duplicate: true };
            let _ = state.queue(from, text(ack.to_json()), self.queue_bytes);
        }
        drop(state);
        self.admission.add_permits(permits);
    }

    /// For the committer: writing `batch` failed. Its messages and every one numbered after it
    /// are refused with `unavailable`, their seqs are given out again (nobody saw them), and new
    /// messages are refused until [`Room::recovered`] (or [`Room::restart_epoch`]).
    pub fn commit_failed(&self, batch: Vec<Uncommitted>) {
        let mut state = self.lock();
        state.writing = 0;
        if state.durability == Durability::Committing {
            state.durability = Durability::Failing;
        }
        let waiting = std::mem::take(&mut state.waiting);
        let resent = std::mem::take(&mut state.resent);
        state.uncommitted_ids.clear();
        let mut permits = 0;
        for pending in batch.into_iter().chain(waiting) {
            permits += pending.permits;
            let _ = self.refuse_unavailable(&mut state, pending.from, pending.message.id);
        }
        for (_, from, id) in resent {
            let _ = self.refuse_unavailable(&mut state, from, id);
        }
        drop(state);
        self.admission.add_permits(permits);
    }

    /// For the committer: the epoch and the newest committed seq, which the store must hold.
    #[must_use]
    pub fn committed_seq(&self) -> (String, u64) {
        let state = self.lock();
        (state.history.epoch().to_owned(), state.history.latest_seq())
    }

    /// For the committer: the store holds every committed message again; new messages are taken.
    pub fn recovered(&self) {
        let mut state = self.lock();
        if state.durability == Durability::Failing {
            state.durability = Durability::Committing;
        }
    }

    /// For the committer: the store could not be brought back to the committed history (its file
    /// was replaced, or lost what it had written), so numbering cannot go on in this epoch. The
    /// history starts over in `epoch`, and every v1 client is closed with 1012 so that it
    /// reconnects and sees the new epoch in its welcome; tutorial clients know no seqs and stay.
    pub fn restart_epoch(&self, epoch: String) {
        let mut state = self.lock();
        state.history.restart(epoch);
        state.dedupe.clear();
        let v1: Vec<_> = state
            .members
            .iter()
            .filter(|(_, member)| member.mode == Mode::V1)
            .map(|(&id, _)| id)
            .collect();
        for id in v1 {
            if let Some(member) = state.members.remove(&id) {
                member.outbound.close(Close::NewEpoch);
            }
        }
        if state.durability == Durability::Failing {
            state.durability = Durability::Committing;
        }
    }

    /// For the committer, between two tries at reopening the store: waits `pause`, or less if
    /// the relay starts stopping. True when it is stopping (stop trying).
    pub fn pause_unless_closing(&self, pause: Duration) -> bool {
        let state = self.lock();
        if state.durability == Durability::Closing {
            return true;
        }
        let (state, _) =
            self.wake.wait_timeout(state, pause).unwrap_or_else(PoisonError::into_inner);
        state.durability == Durability::Closing
    }

    /// Whether new messages are taken (not refused because the store fails or the relay stops).
    #[cfg(test)]
    pub fn takes_messages(&self) -> bool {
        matches!(self.lock().durability, Durability::Memory | Durability::Committing)
    }

    /// Stops taking new messages (they are refused with `unavailable`) and tells the committer
    /// to write what waits and stop. Called when the relay stops, after the sockets closed.
    pub fn close_store(&self) {
        let mut state = self.lock();
        if state.durability != Durability::Memory {
            state.durability = Durability::Closing;
        }
        drop(state);
        self.wake.notify_all();
    }

    /// Queues the `unavailable` refusal of message `id` for its sender, counted.
    fn refuse_unavailable(
        &self,
        state: &mut State,
        from: ClientId,
        id: String,
    ) -> Result<(), Evicted> {
        let Some(mode) = state.members.get(&from).map(|member| member.mode) else { return Ok(()) };
        count(&self.metrics.frames_refused, ErrorCode::Unavailable.as_str());
        let error = WireError::new(ErrorCode::Unavailable, "");
        let refusal = Refusal { error, id: Some(id), request_id: None };
        state.queue(from, refusal.into_frame(mode), self.queue_bytes)
    }

    /// Locks the state, recovering it if a thread panicked while holding it: every critical
    /// section leaves it consistent at each step, so the data is still good.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Acks a new message to its v1 sender and queues it for everyone else; returns (and
    /// evicts) the members that passed their queue's bound.
    fn deliver(&mut self, from: ClientId, frames: &Encoded, limit: usize) -> Vec<Evicted> {
        let mut evicted = Vec::new();
        for (&member_id, member) in &self.members {
            let frame = match (member_id == from, member.mode) {
                (true, Mode::Tutorial) => continue,
                (true, Mode::V1) => frames.ack.clone(),
                (false, mode) => frames.for_mode(mode),
            };
            if !member.outbound.offer(frame, limit) {
                evicted.push(Evicted(member_id));
            }
        }
        for &Evicted(id) in &evicted {
            self.evict(id);
        }
        evicted
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
            member.outbound.close(Close::SlowConsumer);
        }
    }
}

/// A stored message encoded once per protocol, shared by every recipient of that protocol, and
/// its ack.
struct Encoded {
    v1: Message,
    tutorial: Message,
    ack: Message,
}

impl Encoded {
    fn new(stored: &StoredMessage) -> Self {
        let ack = ServerFrame::Ack { id: stored.id.clone(), seq: stored.seq, duplicate: false };
        Self {
            v1: text(ServerFrame::Message(stored.clone()).to_json()),
            tutorial: text(ChatMessage::from(stored).to_json()),
            ack: text(ack.to_json()),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes enough for anything these tests queue.
    const ROOMY: usize = 1024 * 1024;

    fn room(queue_bytes: usize) -> Arc<Room> {
        let history = History::new("epoch".into(), 100);
        Arc::new(Room::new(queue_bytes, history, dedupe(), false, Arc::new(Metrics::new())))
    }

    /// A room with a store, whose committer the test plays by hand.
    fn durable_room() -> Arc<Room> {
        let history = History::new("epoch".into(), 100);
        Arc::new(Room::new(ROOMY, history, dedupe(), true, Arc::new(Metrics::new())))
    }

    fn dedupe() -> Dedupe {
        Dedupe::new(crate::dedupe::Limits::default())
    }

    fn posted(id: &str, content: &str) -> Posted {
        Posted { id: id.into(), source: "ada".into(), content: content.into() }
    }

    fn post(room: &Room, from: &Membership, id: &str) -> Vec<Evicted> {
        room.post(from.seat.id(), posted(id, id), 0, Admission::none())
    }

    fn tutorial_text(content: &str) -> Message {
        text(ChatMessage { source: "ada".into(), content: content.into() }.to_json())
    }

    /// The v1 frames a member has waiting, decoded.
    fn frames(member: &Membership) -> Vec<ServerFrame> {
        let taken = member.outbound.take_now();
        taken
            .iter()
            .map(|frame| ServerFrame::from_json(frame.to_text().unwrap()).unwrap())
            .collect()
    }

    fn ack(id: &str, seq: u64) -> ServerFrame {
        ServerFrame::Ack { id: id.into(), seq, duplicate: false }
    }

    /// (seq, id) of each message frame, and "history" for a history answer.
    fn seqs(frames: &[ServerFrame]) -> Vec<(u64, String)> {
        frames
            .iter()
            .filter_map(|frame| match frame {
                ServerFrame::Message(message) => Some((message.seq, message.id.clone())),
                ServerFrame::History { .. } => Some((0, "history".into())),
                _ => None,
            })
            .collect()
    }

    /// A message reaches every other member once, and never a tutorial sender.
    #[test]
    fn post_skips_a_tutorial_sender() {
        let room = room(ROOMY);
        let a = room.join(Mode::Tutorial);
        let b = room.join(Mode::Tutorial);
        let c = room.join(Mode::Tutorial);
        assert!(room.post(a.seat.id(), posted("1", "hi"), 0, Admission::none()).is_empty());
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
            assert!(matches!(frames(member)[..], [ServerFrame::Welcome { .. }]));
        }
        room.post(a.seat.id(), posted("m1", "hi"), 7, Admission::none());
        assert_eq!(frames(&a), [ack("m1", 1)]);
        assert_eq!(
            frames(&b),
            [ServerFrame::Message(StoredMessage {
                seq: 1,
                id: "m1".into(),
                source: "ada".into(),
                content: "hi".into(),
                sent_at_ms: 7
            })]
        );
        // A re-send is acked as a duplicate and not relayed again.
        post(&room, &a, "m1");
        assert_eq!(frames(&a), [ServerFrame::Ack { id: "m1".into(), seq: 1, duplicate: true }]);
        assert!(frames(&b).is_empty());
    }

    /// A member that falls behind by more than its byte bound is evicted with 1008; the others
    /// keep receiving.
    #[test]
    fn the_byte_bound_evicts_only_that_member() {
        let frame_size = tutorial_text(&"x".repeat(20)).to_text().unwrap().len();
        let room = room(2 * (frame_size + crate::outbound::FRAME_OVERHEAD));
        let sender = room.join(Mode::Tutorial);
        let reader = room.join(Mode::Tutorial);
        let stalled = room.join(Mode::Tutorial);
        let content = "x".repeat(20);
        for n in 0..2 {
            let evicted =
                room.post(sender.seat.id(), posted(&n.to_string(), &content), 0, Admission::none());
            assert!(evicted.is_empty());
            assert_eq!(reader.outbound.take_now().len(), 1);
        }
        let evicted = room.post(sender.seat.id(), posted("2", &content), 0, Admission::none());
        assert_eq!(evicted, vec![Evicted(stalled.seat.id())], "the stalled one is 3 frames behind");
        assert_eq!(stalled.outbound.close_reason().and_then(Close::code), Some(1008));
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
            let evicted = post(&room, &sender, &format!("m{n}"));
            assert!(evicted.is_empty(), "message {n}");
        }
        assert_eq!(sender.outbound.take_now().len(), 2_001, "the welcome and 2,000 acks");
        for reader in &readers {
            assert!(reader.outbound.take_now().len() >= 2_000);
        }
    }

    /// With a store, nothing is acked or relayed before its commit; then everything committed is,
    /// in seq order, and a history answer given meanwhile holds only what was committed, with
    /// the rest following it live: no gap, no message twice.
    #[test]
    fn only_committed_messages_are_acked_relayed_and_answered() {
        let room = durable_room();
        let alice = room.join(Mode::V1);
        let bob = room.join(Mode::V1);
        let carol = room.join(Mode::Tutorial);
        frames(&alice);
        frames(&bob);
        post(&room, &alice, "m1");
        post(&room, &alice, "m2");
        assert!(frames(&alice).is_empty() && frames(&bob).is_empty(), "not on disk yet");
        assert!(carol.outbound.take_now().is_empty());

        let first = room.next_batch().unwrap();
        assert_eq!(first.iter().map(|pending| pending.message.seq).collect::<Vec<_>>(), [1, 2]);
        // While the committer writes m1 and m2: m3 is numbered after them, a re-send of m1 waits
        // for its commit, and Bob asks for history, which holds nothing committed yet.
        post(&room, &alice, "m3");
        post(&room, &bob, "m1");
        room.answer_history(bob.seat.id(), 9, 0).unwrap();
        room.committed(first);
        let second = room.next_batch().unwrap();
        assert_eq!(second.iter().map(|pending| pending.message.seq).collect::<Vec<_>>(), [3]);
        room.committed(second);

        assert_eq!(frames(&alice), [ack("m1", 1), ack("m2", 2), ack("m3", 3)]);
        let bob_got = frames(&bob);
        assert_eq!(
            seqs(&bob_got),
            [(0, "history".into()), (1, "m1".into()), (2, "m2".into()), (3, "m3".into())]
        );
        assert!(bob_got.contains(&ServerFrame::Ack { id: "m1".into(), seq: 1, duplicate: true }));
        assert_eq!(carol.outbound.take_now().len(), 3);
        // A newcomer is welcomed at the committed seq.
        let dave = room.join(Mode::V1);
        assert!(matches!(frames(&dave)[..], [ServerFrame::Welcome { latest_seq: 3, .. }]));
    }

    /// A failed commit acks and relays nothing: its messages and those numbered after it are
    /// refused with `unavailable` (v1 with the id, tutorial in its own error frame), new ones too
    /// while the store fails, and once it is back their seqs are given out again.
    #[test]
    fn a_failed_commit_is_refused_and_its_seqs_given_out_again() {
        let room = durable_room();
        let alice = room.join(Mode::V1);
        let tutorial = room.join(Mode::Tutorial);
        let bob = room.join(Mode::V1);
        frames(&alice);
        frames(&bob);
        post(&room, &alice, "m1");
        room.committed(room.next_batch().unwrap());
        frames(&bob);
        tutorial.outbound.take_now();
        assert_eq!(frames(&alice), [ack("m1", 1)]);

        post(&room, &alice, "m2");
        let failing = room.next_batch().unwrap();
        post(&room, &tutorial, "t3");
        post(&room, &alice, "m2"); // re-sent while its commit is under way
        room.commit_failed(failing);
        post(&room, &alice, "m4"); // while the store is down

        let refused: Vec<_> = frames(&alice)
            .into_iter()
            .map(|frame| match frame {
                ServerFrame::Error { error, id: Some(id), .. } => {
                    assert_eq!(error.code, ErrorCode::Unavailable);
                    id
                }
                other => panic!("expected a refusal, got {other:?}"),
            })
            .collect();
        assert_eq!(refused, ["m2", "m2", "m4"]);
        let tutorial_got = tutorial.outbound.take_now();
        let expected =
            wschat_protocol::RelayFrame::from(WireError::new(ErrorCode::Unavailable, ""));
        assert_eq!(tutorial_got, [text(expected.to_json())]);
        assert!(frames(&bob).is_empty(), "nothing was relayed");

        room.recovered();
        post(&room, &alice, "m2");
        room.committed(room.next_batch().unwrap());
        assert_eq!(frames(&alice), [ack("m2", 2)], "seq 2 again: nobody saw the first one");
        assert_eq!(seqs(&frames(&bob)), [(2, "m2".into())]);
    }

    /// When the store cannot continue the history, a new epoch starts: v1 clients are closed
    /// with 1012 to learn it on reconnecting, tutorial clients stay, numbering starts at 1.
    #[test]
    fn a_new_epoch_closes_v1_clients_and_numbers_from_one() {
        let room = durable_room();
        let alice = room.join(Mode::V1);
        let tutorial = room.join(Mode::Tutorial);
        post(&room, &alice, "m1");
        room.committed(room.next_batch().unwrap());
        let failing = {
            post(&room, &alice, "m2");
            room.next_batch().unwrap()
        };
        room.commit_failed(failing);
        room.restart_epoch("second".into());
        assert_eq!(alice.outbound.close_reason().and_then(Close::code), Some(1012));
        assert_eq!(tutorial.outbound.close_reason(), None);
        let newcomer = room.join(Mode::V1);
        assert!(matches!(
            &frames(&newcomer)[..],
            [ServerFrame::Welcome { epoch, latest_seq: 0, .. }] if epoch == "second"
        ));
        post(&room, &tutorial, "t1");
        room.committed(room.next_batch().unwrap());
        assert_eq!(seqs(&frames(&newcomer)), [(1, "t1".into())]);
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
