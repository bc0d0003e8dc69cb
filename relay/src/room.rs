//! One room: its members and who they are, its history, and fan-out of each message. (Which
//! rooms there are, and when one opens and closes, is `crate::rooms`'.)
//!
//! Order. Every message is numbered and queued for every member under the room's lock, so every
//! member receives the room's live messages in seq order. A connection in several rooms gets
//! each room's frames in that room's order, interleaved with the others'. A history answer is
//! one page of what was committed when the request came: its messages are picked under the lock,
//! and the text is made without it, so a live message committed meanwhile can reach the client
//! just before the answer (clients place messages by seq, and a history of several pages is
//! interleaved with live messages anyway).
//!
//! Durability (with `--data-dir`). A new message is numbered under the lock and then waits; the
//! room puts itself in the journal (`crate::commit`), whose committer takes what waits in every
//! room, writes it in one transaction on its own thread (no room's lock is held across the
//! fsync), and only then, under the lock again, stores it in the history, acks it and relays it.
//! The history holds committed messages only, so joins, welcomes and history answers speak only
//! of what is on disk, and a message still waiting when a client asks for history reaches that
//! client after the answer, live. When a commit fails, its messages and every one numbered after
//! them in the same rooms are refused to their senders (`unavailable`, with their ids) and their
//! seqs are given out again (nobody saw them); new messages are refused in every room until the
//! committer has reopened the store.
//!
//! Presence. Each member has a name (see `crate::presence`); a `presence` frame goes to every v1
//! member whenever a name appears in the room or leaves it, and to a joining member in any case.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::ws::Message;
use wschat_protocol::v1::{Position, ServerFrame, StoredMessage};
use wschat_protocol::{ChatMessage, ErrorCode, WireError};

use crate::close::Close;
use crate::cluster::Cluster;
use crate::commit::{Admission, Durability, Journal};
use crate::connection::Refusal;
use crate::dedupe::{sender_key, Dedupe};
use crate::history::{History, Posted};
use crate::metrics::{count, Metrics};
use crate::outbound::Outbound;
use crate::presence::Presence;

/// Identifies one connected client for the lifetime of the relay process.
pub type ClientId = u64;

/// Which protocol a client speaks, fixed at the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The tutorial's plain `{source, content}` frames (no subprotocol asked for).
    Tutorial,
    /// `wschat.v1`: tagged envelopes with rooms, seqs, acks and history.
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

/// What every room shares.
pub struct Core {
    /// Each client's outbound queue holds at most this many bytes (see `Outbound`).
    pub queue_bytes: usize,
    /// Members one room may have.
    pub max_members: usize,
    /// The relay's figures.
    pub metrics: Arc<Metrics>,
    /// The ids each sender used lately in each room (see [`sender_key`]): a re-send is acked
    /// as a duplicate, not stored again. One for all rooms, so that its bounds are the relay's,
    /// whatever the number of rooms; locked inside a room's lock, never the other way round.
    pub dedupe: Mutex<Dedupe>,
    /// With a store: where rooms with messages waiting for their commit queue up.
    pub journal: Option<Journal>,
    /// Counts up each time a room empties, to tell which empty room has been so longest.
    pub ticks: AtomicU64,
    /// With `--redis`: the link to the Redis that numbers, stores and fans out every room's
    /// messages (see `crate::cluster`); rooms then take messages from their tails only.
    pub cluster: Option<Arc<Cluster>>,
}

impl Core {
    fn dedupe(&self) -> std::sync::MutexGuard<'_, Dedupe> {
        self.dedupe.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Everything the room keeps for one member.
struct Member {
    /// The client's outbound queue, drained by its writer (shared by all its rooms).
    outbound: Arc<Outbound>,
    mode: Mode,
    /// Its name, for presence and typing.
    name: Arc<str>,
}

/// A client about to join a room.
#[derive(Clone)]
pub struct Joiner {
    /// The client.
    pub id: ClientId,
    /// Its queue.
    pub outbound: Arc<Outbound>,
    /// Its protocol.
    pub mode: Mode,
    /// Its name now.
    pub name: Arc<str>,
}

/// What a member is sent on joining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Greeting {
    /// The lobby at the handshake: the `welcome` frame, as before rooms (v1), or nothing
    /// (tutorial).
    Welcome,
    /// After a `join`: `joined`, then (with presence) the first page of history after the
    /// client's position, or from the start when it knew another epoch or none.
    Joined {
        /// Where the client stopped.
        after: Option<Position>,
    },
}

/// Why a client could not join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    /// The room has its most members.
    Full,
    /// The room was closed a moment ago: open it again.
    Retired,
}

/// A client whose queue overflowed and which was therefore evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evicted(pub ClientId);

/// A numbered message waiting for its commit.
#[derive(Debug)]
pub struct Uncommitted {
    /// The message, numbered.
    pub message: StoredMessage,
    /// Its sender, who gets the ack (v1) once it is committed, or the refusal if that fails.
    from: ClientId,
    /// What it holds of the budget for uncommitted messages (see `Journal::admit`).
    permits: usize,
}

/// What one room has for the committer: its epoch and the messages that waited.
#[derive(Debug)]
pub struct Batch {
    /// The epoch the messages are numbered in.
    pub epoch: String,
    /// The messages, oldest first.
    pub messages: Vec<Uncommitted>,
}

struct State {
    members: HashMap<ClientId, Member>,
    presence: Presence,
    /// Set when the names in the room changed and the members have not been told yet.
    presence_changed: bool,
    /// The committed messages (all of them, without a store).
    history: History,
    /// Numbered messages waiting for the committer, oldest first; they follow those it writes.
    waiting: Vec<Uncommitted>,
    /// How many messages the committer is writing now: they follow the history's latest seq.
    writing: u64,
    /// Whether the room is in the journal's queue.
    in_journal: bool,
    /// The seq of every message waiting or being written, by (sender, id): a re-send of one is
    /// not numbered again but waits for the same commit.
    uncommitted_ids: HashMap<(String, String), u64>,
    /// Re-sends of uncommitted messages (seq, sender, id): acked as duplicates once the message is
    /// committed, refused with it if that fails.
    resent: Vec<(u64, ClientId, String)>,
    /// The room was closed (`crate::rooms`): nobody joins it any more; a new one opens instead.
    retired: bool,
    /// When the room last became empty (a `Core::ticks` value).
    emptied_at: u64,
}

impl State {
    /// The seq the next new message gets: after the committed ones and those on their way.
    fn next_seq(&self) -> u64 {
        self.history.latest_seq() + self.writing + self.waiting.len() as u64 + 1
    }

    /// Nobody in it and nothing on its way to the disk: the room can close.
    fn idle(&self) -> bool {
        self.members.is_empty()
            && self.waiting.is_empty()
            && self.writing == 0
            && self.resent.is_empty()
            && !self.in_journal
    }
}

/// The most bytes of messages one history answer holds, and at most a quarter of a client's
/// queue bound, so that an answer always fits beside the live messages: a history larger than the
/// queue (150 messages of 10,000 emoji are 6 MB) would otherwise evict every client that asks for
/// it. A client asks for the next page once it has this one, so one page at a time waits for
/// it. 256 KiB is a few thousand ordinary messages, and a few of the largest (40 KB each).
pub const PAGE_BYTES: usize = 256 * 1024;

/// The most messages one history answer holds: bounds the time the room's lock is held to pick
/// them (a reference count each), however small they are.
const PAGE_MESSAGES: usize = 1000;

/// One room: its members and the conversation they share.
///
/// A std `Mutex` is right here: it is held only to number messages and queue frames (no I/O, no
/// `.await`), so no task can hold it while suspended; the committer writes to disk without it.
pub struct Room {
    name: Arc<str>,
    state: Mutex<State>,
    /// Its members now, readable without the lock (for the list of rooms).
    members: AtomicUsize,
    core: Arc<Core>,
}

impl Room {
    /// An empty room called `name`, going on from `history`.
    #[must_use]
    pub fn new(name: Arc<str>, history: History, core: Arc<Core>) -> Self {
        Self {
            name,
            state: Mutex::new(State {
                members: HashMap::new(),
                presence: Presence::default(),
                presence_changed: false,
                history,
                waiting: Vec::new(),
                writing: 0,
                in_journal: false,
                uncommitted_ids: HashMap::new(),
                resent: Vec::new(),
                retired: false,
                emptied_at: 0,
            }),
            members: AtomicUsize::new(0),
            core,
        }
    }

    /// Its name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its name, shared.
    #[must_use]
    pub fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    /// How many clients are in it.
    #[must_use]
    pub fn len(&self) -> usize {
        self.members.load(Ordering::Relaxed)
    }

    /// Adds a client and greets it (see [`Greeting`]); the others learn its name if it is new
    /// to the room.
    ///
    /// The relay adds a client to the lobby before it answers the WebSocket handshake: once the
    /// client sees its socket open, every message sent after that reaches it.
    ///
    /// # Errors
    /// [`JoinError::Full`] when the room has `Core::max_members` members, [`JoinError::Retired`]
    /// when it has been closed (open it again).
    pub fn join(&self, joiner: Joiner, greeting: &Greeting) -> Result<(), JoinError> {
        let mut state = self.lock();
        if state.retired {
            return Err(JoinError::Retired);
        }
        if state.members.len() >= self.core.max_members {
            return Err(JoinError::Full);
        }
        let Joiner { id, outbound, mode, name } = joiner;
        if state.presence.add(&name) {
            state.presence_changed = true;
        }
        state.members.insert(id, Member { outbound, mode, name });
        state.emptied_at = 0;
        self.core.metrics.room_joins.inc();
        let page = self.greet(&mut state, id, greeting);
        self.settle(&mut state);
        drop(state);
        if let Some(after_seq) = page {
            let _ = self.answer_history(id, 0, after_seq);
        }
        Ok(())
    }

    /// Greets member `id` again, as on joining: a client that joins a room it is in gets the
    /// room's state and the history after its position (a resync).
    pub fn greet_again(&self, id: ClientId, greeting: &Greeting) {
        let mut state = self.lock();
        let page = self.greet(&mut state, id, greeting);
        self.settle(&mut state);
        drop(state);
        if let Some(after_seq) = page {
            let _ = self.answer_history(id, 0, after_seq);
        }
    }

    /// Queues the greeting for `id` (a v1 member), and its own presence frame unless everyone's
    /// is on its way; returns the seq after which its first history page starts, if it gets one.
    fn greet(&self, state: &mut State, id: ClientId, greeting: &Greeting) -> Option<u64> {
        if state.members.get(&id).is_none_or(|member| member.mode != Mode::V1) {
            return None;
        }
        let (frame, page) = match greeting {
            Greeting::Welcome => (state.history.welcome(), None),
            Greeting::Joined { after } => {
                let after_seq = after
                    .as_ref()
                    .filter(|position| position.epoch == state.history.epoch())
                    .map_or(0, |position| position.seq);
                let joined = ServerFrame::Joined {
                    room: self.name.to_string(),
                    epoch: state.history.epoch().to_owned(),
                    latest_seq: state.history.latest_seq(),
                    oldest_seq: state.history.oldest_seq(),
                    members: state.members.len() as u64,
                };
                (joined, Some(after_seq))
            }
        };
        let limit = self.core.queue_bytes;
        // The greeting is not held to the byte bound (as the welcome before rooms): it cannot
        // fail, and a client's first frames must arrive.
        let _ = state.members[&id].outbound.offer(text(frame.to_json()), usize::MAX);
        if !state.presence_changed {
            let presence = text(state.presence.frame(&self.name).to_json());
            let _ = state.queue(id, presence, limit);
        }
        page
    }

    /// Removes a member; returns true when the room is then idle (nobody in it, nothing on its
    /// way to the disk), whether or not the member was still there (it may have been evicted).
    pub fn leave(&self, id: ClientId) -> bool {
        let mut state = self.lock();
        state.remove(id);
        self.settle(&mut state);
        if state.members.is_empty() && state.emptied_at == 0 {
            state.emptied_at = self.core.ticks.fetch_add(1, Ordering::Relaxed) + 1;
        }
        state.idle()
    }

    /// Member `id` goes by `name` from now on (it sent a message under a new `source`).
    pub fn rename(&self, id: ClientId, name: &Arc<str>) {
        let mut state = self.lock();
        let Some(member) = state.members.get_mut(&id) else { return };
        let old = std::mem::replace(&mut member.name, Arc::clone(name));
        let gone = state.presence.remove(&old);
        let new = state.presence.add(name);
        if gone || new {
            state.presence_changed = true;
            self.settle(&mut state);
        }
    }

    /// Tells the room's other v1 members that member `from` is typing.
    pub fn typing(&self, from: ClientId) {
        let mut state = self.lock();
        let Some(member) = state.members.get(&from) else { return };
        let name = Arc::clone(&member.name);
        self.tell_typing(&mut state, &name, Some(from));
        drop(state);
        if let Some(cluster) = &self.core.cluster {
            cluster.share_typing(&self.name, &name);
        }
    }

    /// With `--redis`: `name` is typing in this room on another relay; every v1 member is told.
    pub fn typing_elsewhere(&self, name: &str) {
        let mut state = self.lock();
        self.tell_typing(&mut state, name, None);
    }

    /// Tells the v1 members but `typist` that `name` is typing.
    fn tell_typing(&self, state: &mut State, name: &str, typist: Option<ClientId>) {
        let frame = ServerFrame::Typing { room: self.name.to_string(), name: name.to_owned() };
        let frame = text(frame.to_json());
        let others: Vec<ClientId> = state
            .members
            .iter()
            .filter(|&(&id, member)| Some(id) != typist && member.mode == Mode::V1)
            .map(|(&id, _)| id)
            .collect();
        for id in others {
            let _ = state.queue(id, frame.clone(), self.core.queue_bytes);
        }
        self.settle(state);
    }

    /// Whether the room is empty and holds nothing on its way to the disk; and when it emptied.
    #[must_use]
    pub fn idle_since(&self) -> Option<u64> {
        let state = self.lock();
        (state.idle() && !state.retired).then_some(state.emptied_at)
    }

    /// Closes the room if it is idle: nobody can join it any more (they open a new one). True
    /// when it was closed.
    pub fn retire_if_idle(&self) -> bool {
        let mut state = self.lock();
        if !state.idle() {
            return false;
        }
        state.retired = true;
        true
    }

    /// Numbers a message from `from`; without a store, queues it for every other member (each in
    /// its own protocol) and, for a v1 sender, queues the ack. With a store, the message waits for
    /// the committer, which does that once the message is on disk; while the store fails, the
    /// message is refused with `unavailable` (the sender keeps it and sends it again later). A
    /// re-sent message (same sender, room and id, within the dedupe window: see `crate::dedupe`)
    /// is only acked again, as a duplicate, once its first copy is committed.
    ///
    /// A member whose queue passed its byte bound has stopped reading: it is evicted (its
    /// connection closes with 1008) rather than allowed to slow the sender or anyone else.
    /// Returns the evicted clients.
    pub fn post(
        self: &Arc<Self>,
        from: ClientId,
        posted: Posted,
        sent_at_ms: u64,
        admission: Admission<'_>,
    ) -> Vec<Evicted> {
        let mut state = self.lock();
        let key = sender_key(&self.name, &posted.source);
        let known = self.core.dedupe().seq_of(&key, &posted.id, sent_at_ms);
        if let Some(seq) = known {
            let ack = ServerFrame::Ack {
                room: self.name.to_string(),
                id: posted.id,
                seq,
                duplicate: true,
            };
            let evicted = state.queue(from, text(ack.to_json()), self.core.queue_bytes).err();
            self.settle(&mut state);
            return evicted.into_iter().collect();
        }
        let Some(journal) = &self.core.journal else {
            let message = posted.numbered(state.history.latest_seq() + 1, sent_at_ms);
            let frames = Encoded::new(&self.name, &message);
            self.core.dedupe().remember(&key, &message.id, message.seq, sent_at_ms);
            state.history.push(message);
            self.core.metrics.messages_in.inc();
            let evicted = state.deliver(from, &frames, self.core.queue_bytes);
            self.settle(&mut state);
            return evicted;
        };
        match journal.durability() {
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
                if !state.in_journal {
                    state.in_journal = true;
                    journal.enqueue(Arc::clone(self));
                }
                Vec::new()
            }
            Durability::Failing | Durability::Closing => {
                let evicted = self.refuse_unavailable(&mut state, from, posted.id).err();
                self.settle(&mut state);
                evicted.into_iter().collect()
            }
        }
    }

    /// With `--redis`: the names of this relay's members, for the others.
    #[must_use]
    pub fn names_here(&self) -> std::collections::BTreeSet<String> {
        self.lock().presence.names_here()
    }

    /// With `--redis`: the names in the room on other relays are `names` now; the v1 members
    /// are told if that changes who is in the room.
    pub fn set_names_elsewhere(&self, names: std::collections::BTreeSet<String>) {
        let mut state = self.lock();
        if state.presence.set_elsewhere(names) {
            state.presence_changed = true;
            self.settle(&mut state);
        }
    }

    /// With `--redis`: the room's epoch and latest seq here, where its tail goes on from.
    #[must_use]
    pub fn position(&self) -> (String, u64) {
        let state = self.lock();
        (state.history.epoch().to_owned(), state.history.latest_seq())
    }

    /// Whether the room was closed (nobody joins it any more; its tail stops).
    #[must_use]
    pub fn is_retired(&self) -> bool {
        self.lock().retired
    }

    /// With `--redis`: `message`, stored in Redis and read from the room's stream, goes into the
    /// history and to every member, but its sender if that is `sender` (a client of this node,
    /// which was acked when Redis stored it; a tutorial sender never gets its own message back).
    /// False, and nothing done, when it does not follow the history's latest seq: the tail
    /// missed messages and must reload the room.
    pub fn relay_stored(&self, message: StoredMessage, sender: Option<ClientId>) -> bool {
        let frames = Encoded::new(&self.name, &message);
        let mut state = self.lock();
        if message.seq != state.history.latest_seq() + 1 {
            return false;
        }
        state.history.push(message);
        let mut evicted = Vec::new();
        for (&member_id, member) in &state.members {
            if Some(member_id) == sender {
                continue;
            }
            if !member.outbound.offer(frames.for_mode(member.mode), self.core.queue_bytes) {
                evicted.push(member_id);
            }
        }
        for id in evicted {
            state.evict(id);
        }
        self.settle(&mut state);
        true
    }

    /// With `--redis`: the room went on in Redis without this node (a new epoch after Redis lost
    /// it, or more messages than its stream keeps while this node's tail lagged): the history
    /// starts over from `history`, and every v1 member is closed with 1012 to resync on
    /// reconnecting (`complete: false` tells it what it missed); tutorial clients stay.
    pub fn reload(&self, history: History) {
        let mut state = self.lock();
        state.history = history;
        self.core.dedupe().forget_room(&self.name);
        let v1: Vec<_> = state
            .members
            .iter()
            .filter(|(_, member)| member.mode == Mode::V1)
            .map(|(&id, _)| id)
            .collect();
        for id in v1 {
            if let Some(member) = state.remove(id) {
                member.outbound.close(Close::NewEpoch);
            }
        }
        self.settle(&mut state);
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
        let page_bytes = (self.core.queue_bytes / 4).min(PAGE_BYTES);
        let page = self.lock().history.page(after_seq, page_bytes, PAGE_MESSAGES);
        // Copied and encoded without the lock: up to a few hundred kilobytes of text.
        let answer = text(page.into_frame(&self.name, request_id).to_json());
        let mut state = self.lock();
        let queued = state.queue(to, answer, self.core.queue_bytes);
        self.settle(&mut state);
        queued
    }

    /// For the committer: takes the messages that wait (they are being written from then on).
    pub fn take_waiting(&self) -> Batch {
        let mut state = self.lock();
        state.in_journal = false;
        let messages = std::mem::take(&mut state.waiting);
        state.writing = messages.len() as u64;
        Batch { epoch: state.history.epoch().to_owned(), messages }
    }

    /// For the committer: `batch` is on disk. Stores it in the history, acks each message to its
    /// sender (and to anyone who re-sent it meanwhile) and relays it to everyone else, in seq
    /// order. The frames are encoded before the lock is taken. Returns true when the room is
    /// then idle.
    pub fn committed(&self, batch: Batch) -> bool {
        let frames: Vec<_> = batch
            .messages
            .iter()
            .map(|pending| Encoded::new(&self.name, &pending.message))
            .collect();
        let last_seq = batch.messages.last().map_or(0, |pending| pending.message.seq);
        let permits: usize = batch.messages.iter().map(|pending| pending.permits).sum();
        let mut state = self.lock();
        state.writing = 0;
        for (pending, frames) in batch.messages.into_iter().zip(frames) {
            let message = &pending.message;
            state.uncommitted_ids.remove(&(message.source.clone(), message.id.clone()));
            let key = sender_key(&self.name, &message.source);
            self.core.dedupe().remember(&key, &message.id, message.seq, message.sent_at_ms);
            state.history.push(pending.message);
            self.core.metrics.messages_in.inc();
            // Evicted clients are closing; nothing more to do about them here.
            let _ = state.deliver(pending.from, &frames, self.core.queue_bytes);
        }
        let resent = std::mem::take(&mut state.resent);
        let (acked, still_waiting) = resent.into_iter().partition(|(seq, ..)| *seq <= last_seq);
        state.resent = still_waiting;
        for (seq, from, id) in acked {
            let ack = ServerFrame::Ack { room: self.name.to_string(), id, seq, duplicate: true };
            let _ = state.queue(from, text(ack.to_json()), self.core.queue_bytes);
        }
        self.settle(&mut state);
        let idle = state.idle();
        drop(state);
        self.release(permits);
        idle
    }

    /// For the committer: writing `batch` failed (the journal is failing already). Its messages
    /// and every one numbered after them are refused with `unavailable`, and their seqs are given
    /// out again (nobody saw them).
    pub fn commit_failed(&self, batch: Batch) {
        let mut state = self.lock();
        state.writing = 0;
        let permits = self.refuse_uncommitted(&mut state, batch.messages);
        self.settle(&mut state);
        drop(state);
        self.release(permits);
    }

    /// Refuses `batch` and everything waiting or re-sent, with `unavailable`; returns the permits
    /// they held.
    fn refuse_uncommitted(&self, state: &mut State, batch: Vec<Uncommitted>) -> usize {
        let waiting = std::mem::take(&mut state.waiting);
        let resent = std::mem::take(&mut state.resent);
        state.uncommitted_ids.clear();
        let mut permits = 0;
        for pending in batch.into_iter().chain(waiting) {
            permits += pending.permits;
            let _ = self.refuse_unavailable(state, pending.from, pending.message.id);
        }
        for (_, from, id) in resent {
            let _ = self.refuse_unavailable(state, from, id);
        }
        permits
    }

    /// For the committer: the epoch and the newest committed seq, which the store must hold.
    #[must_use]
    pub fn committed_seq(&self) -> (String, u64) {
        let state = self.lock();
        (state.history.epoch().to_owned(), state.history.latest_seq())
    }

    /// For the committer: the store could not be brought back to the room's committed history
    /// (its file was replaced, or lost what it had written), so numbering cannot go on in this
    /// epoch. The history starts over in `epoch`, whatever waited is refused, and every v1
    /// member is closed with 1012 so that it reconnects and sees the new epoch when it joins
    /// again; tutorial clients know no seqs and stay.
    pub fn restart_epoch(&self, epoch: String) {
        let mut state = self.lock();
        let permits = self.refuse_uncommitted(&mut state, Vec::new());
        state.history.restart(epoch);
        self.core.dedupe().forget_room(&self.name);
        for id in state.v1_members() {
            if let Some(member) = state.remove(id) {
                member.outbound.close(Close::NewEpoch);
            }
        }
        self.settle(&mut state);
        drop(state);
        self.release(permits);
    }

    /// Tells every v1 member about a change in the names, if there was one; members evicted on
    /// the way (their queues full) may change the names again, so until nothing changes.
    fn settle(&self, state: &mut State) {
        while std::mem::take(&mut state.presence_changed) {
            let frame = text(state.presence.frame(&self.name).to_json());
            for id in state.v1_members() {
                let _ = state.queue(id, frame.clone(), self.core.queue_bytes);
            }
        }
        self.counted(state);
    }

    /// Keeps the member count readable without the lock, the gauge of members and the count of
    /// leaves in step with the members: called after every change (evictions remove members deep
    /// inside the state's methods).
    fn counted(&self, state: &State) {
        let now = state.members.len();
        let before = self.members.swap(now, Ordering::Relaxed);
        let metrics = &self.core.metrics;
        if now > before {
            metrics.room_members.inc_by(gauge(now - before));
        } else if now < before {
            metrics.room_members.dec_by(gauge(before - now));
            metrics.room_leaves.inc_by((before - now) as u64);
        }
    }

    /// Queues the `unavailable` refusal of message `id` for its sender, counted.
    fn refuse_unavailable(
        &self,
        state: &mut State,
        from: ClientId,
        id: String,
    ) -> Result<(), Evicted> {
        let Some(mode) = state.members.get(&from).map(|member| member.mode) else { return Ok(()) };
        count(&self.core.metrics.frames_refused, ErrorCode::Unavailable.as_str());
        let error = WireError::new(ErrorCode::Unavailable, "");
        let refusal =
            Refusal { error, room: Some(self.name.to_string()), id: Some(id), request_id: None };
        state.queue(from, refusal.into_frame(mode), self.core.queue_bytes)
    }

    /// Gives permits back to the budget for uncommitted messages.
    fn release(&self, permits: usize) {
        if let Some(journal) = &self.core.journal {
            journal.release(permits);
        }
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

    /// Closes a member's connection as not reading, and removes it from this room (its other
    /// rooms let it go when its connection ends).
    fn evict(&mut self, id: ClientId) {
        if let Some(member) = self.remove(id) {
            member.outbound.close(Close::SlowConsumer);
        }
    }

    /// Removes a member, noting whether its name left the room with it.
    /// The members that speak v1 (presence and epochs are theirs only).
    fn v1_members(&self) -> Vec<ClientId> {
        let v1 = self.members.iter().filter(|(_, member)| member.mode == Mode::V1);
        v1.map(|(&id, _)| id).collect()
    }

    fn remove(&mut self, id: ClientId) -> Option<Member> {
        let member = self.members.remove(&id)?;
        if self.presence.remove(&member.name) {
            self.presence_changed = true;
        }
        Some(member)
    }
}

/// A count as a gauge's value.
fn gauge(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// A stored message encoded once per protocol, shared by every recipient of that protocol, and
/// its ack.
struct Encoded {
    v1: Message,
    tutorial: Message,
    ack: Message,
}

impl Encoded {
    fn new(room: &str, stored: &StoredMessage) -> Self {
        let ack = ServerFrame::Ack {
            room: room.to_owned(),
            id: stored.id.clone(),
            seq: stored.seq,
            duplicate: false,
        };
        let message = ServerFrame::Message { room: room.to_owned(), message: stored.clone() };
        Self {
            v1: text(message.to_json()),
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

    fn core(queue_bytes: usize, durable: bool) -> Arc<Core> {
        Arc::new(Core {
            queue_bytes,
            max_members: usize::MAX,
            metrics: Arc::new(Metrics::new()),
            dedupe: Mutex::new(Dedupe::new(crate::dedupe::Limits::default())),
            journal: durable.then(Journal::default),
            ticks: AtomicU64::new(0),
            cluster: None,
        })
    }

    fn room(queue_bytes: usize) -> Arc<Room> {
        let history = History::new("epoch".into(), 100);
        Arc::new(Room::new("lobby".into(), history, core(queue_bytes, false)))
    }

    /// A room with a store, whose committer the test plays by hand.
    fn durable_room() -> Arc<Room> {
        let history = History::new("epoch".into(), 100);
        Arc::new(Room::new("lobby".into(), history, core(ROOMY, true)))
    }

    /// A client in a room, reading its queue by hand.
    struct Tab {
        id: ClientId,
        outbound: Arc<Outbound>,
    }

    static NEXT_ID: AtomicU64 = AtomicU64::new(1);

    fn join(room: &Room, mode: Mode) -> Tab {
        join_as(room, mode, "ada")
    }

    fn join_as(room: &Room, mode: Mode, name: &str) -> Tab {
        let tab = Tab {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            outbound: Arc::new(Outbound::default()),
        };
        let joiner =
            Joiner { id: tab.id, outbound: Arc::clone(&tab.outbound), mode, name: name.into() };
        room.join(joiner, &Greeting::Welcome).unwrap();
        tab
    }

    fn posted(id: &str, content: &str) -> Posted {
        Posted { id: id.into(), source: "ada".into(), content: content.into() }
    }

    fn post(room: &Arc<Room>, from: &Tab, id: &str) -> Vec<Evicted> {
        room.post(from.id, posted(id, id), 0, Admission::none())
    }

    /// The committer's part, played by hand: takes what waits in the room.
    fn next_batch(room: &Room) -> Batch {
        let queued = room.core.journal.as_ref().unwrap().next_rooms().unwrap();
        assert!(queued.iter().all(|queued| std::ptr::eq(&**queued, room)));
        room.take_waiting()
    }

    fn tutorial_text(content: &str) -> Message {
        text(ChatMessage { source: "ada".into(), content: content.into() }.to_json())
    }

    /// Every v1 frame a member has waiting, decoded.
    fn all_frames(tab: &Tab) -> Vec<ServerFrame> {
        let taken = tab.outbound.take_now();
        taken
            .iter()
            .map(|frame| ServerFrame::from_json(frame.to_text().unwrap()).unwrap())
            .collect()
    }

    /// The v1 frames a member has waiting but presence frames, decoded.
    fn frames(tab: &Tab) -> Vec<ServerFrame> {
        let mut frames = all_frames(tab);
        frames.retain(|frame| !matches!(frame, ServerFrame::Presence { .. }));
        frames
    }

    fn ack(id: &str, seq: u64) -> ServerFrame {
        ServerFrame::Ack { room: "lobby".into(), id: id.into(), seq, duplicate: false }
    }

    /// (seq, id) of each message frame, and "history" for a history answer.
    fn seqs(frames: &[ServerFrame]) -> Vec<(u64, String)> {
        frames
            .iter()
            .filter_map(|frame| match frame {
                ServerFrame::Message { message, .. } => Some((message.seq, message.id.clone())),
                ServerFrame::History { .. } => Some((0, "history".into())),
                _ => None,
            })
            .collect()
    }

    /// The names of each presence frame.
    fn presence(frames: &[ServerFrame]) -> Vec<Vec<String>> {
        frames
            .iter()
            .filter_map(|frame| match frame {
                ServerFrame::Presence { names, .. } => Some(names.clone()),
                _ => None,
            })
            .collect()
    }

    /// A message reaches every other member once, and never a tutorial sender.
    #[test]
    fn post_skips_a_tutorial_sender() {
        let room = room(ROOMY);
        let a = join(&room, Mode::Tutorial);
        let b = join(&room, Mode::Tutorial);
        let c = join(&room, Mode::Tutorial);
        assert!(room.post(a.id, posted("1", "hi"), 0, Admission::none()).is_empty());
        assert_eq!(b.outbound.take_now(), [tutorial_text("hi")]);
        assert_eq!(c.outbound.take_now(), [tutorial_text("hi")]);
        assert!(a.outbound.take_now().is_empty());
    }

    /// A v1 client is welcomed, gets an ack for its own message and the numbered message of
    /// others.
    #[test]
    fn v1_members_get_welcome_acks_and_numbered_messages() {
        let room = room(ROOMY);
        let a = join(&room, Mode::V1);
        let b = join(&room, Mode::V1);
        for tab in [&a, &b] {
            assert!(matches!(frames(tab)[..], [ServerFrame::Welcome { .. }]));
        }
        room.post(a.id, posted("m1", "hi"), 7, Admission::none());
        assert_eq!(frames(&a), [ack("m1", 1)]);
        assert_eq!(
            frames(&b),
            [ServerFrame::Message {
                room: "lobby".into(),
                message: StoredMessage {
                    seq: 1,
                    id: "m1".into(),
                    source: "ada".into(),
                    content: "hi".into(),
                    sent_at_ms: 7
                }
            }]
        );
        // A re-send is acked as a duplicate and not relayed again.
        post(&room, &a, "m1");
        assert_eq!(
            frames(&a),
            [ServerFrame::Ack { room: "lobby".into(), id: "m1".into(), seq: 1, duplicate: true }]
        );
        assert!(frames(&b).is_empty());
    }

    /// Presence: each member learns the names on joining; a new name is told to everyone, a
    /// second tab of a known name to nobody else, and a name goes when its last tab leaves or
    /// is renamed. Tutorial members count, but get no presence frames.
    #[test]
    fn presence_follows_names_not_tabs() {
        let room = room(ROOMY);
        let ada = join_as(&room, Mode::V1, "ada");
        assert_eq!(presence(&all_frames(&ada)), [vec!["ada"]]);
        let bob = join_as(&room, Mode::V1, "bob");
        assert_eq!(presence(&all_frames(&ada)), [vec!["ada", "bob"]]);
        assert_eq!(presence(&all_frames(&bob)), [vec!["ada", "bob"]], "one frame for the joiner");
        let ada_again = join_as(&room, Mode::V1, "ada");
        assert_eq!(presence(&all_frames(&ada_again)), [vec!["ada", "bob"]]);
        assert!(presence(&all_frames(&ada)).is_empty() && presence(&all_frames(&bob)).is_empty());
        let tutorial = join_as(&room, Mode::Tutorial, "carol");
        assert!(tutorial.outbound.take_now().is_empty());
        assert_eq!(presence(&all_frames(&bob)), [vec!["ada", "bob", "carol"]]);
        room.leave(ada.id);
        assert!(all_frames(&bob).is_empty(), "ada is still there in another tab");
        room.leave(ada_again.id);
        assert_eq!(presence(&all_frames(&bob)), [vec!["bob", "carol"]]);
        room.rename(bob.id, &Arc::from("robert"));
        assert_eq!(presence(&all_frames(&bob)), [vec!["carol", "robert"]]);
    }

    /// Typing reaches the room's other v1 members, under the typist's name, and nobody else.
    #[test]
    fn typing_reaches_the_others() {
        let room = room(ROOMY);
        let ada = join_as(&room, Mode::V1, "ada");
        let bob = join_as(&room, Mode::V1, "bob");
        let tutorial = join_as(&room, Mode::Tutorial, "carol");
        all_frames(&ada);
        all_frames(&bob);
        room.typing(ada.id);
        assert!(all_frames(&ada).is_empty());
        assert!(tutorial.outbound.take_now().is_empty());
        assert_eq!(
            all_frames(&bob),
            [ServerFrame::Typing { room: "lobby".into(), name: "ada".into() }]
        );
    }

    /// A member that falls behind by more than its byte bound is evicted with 1008; the others
    /// keep receiving.
    #[test]
    fn the_byte_bound_evicts_only_that_member() {
        let frame_size = tutorial_text(&"x".repeat(20)).to_text().unwrap().len();
        let room = room(2 * (frame_size + crate::outbound::FRAME_OVERHEAD));
        let sender = join(&room, Mode::Tutorial);
        let reader = join(&room, Mode::Tutorial);
        let stalled = join(&room, Mode::Tutorial);
        let content = "x".repeat(20);
        for n in 0..2 {
            let evicted =
                room.post(sender.id, posted(&n.to_string(), &content), 0, Admission::none());
            assert!(evicted.is_empty());
            assert_eq!(reader.outbound.take_now().len(), 1);
        }
        let evicted = room.post(sender.id, posted("2", &content), 0, Admission::none());
        assert_eq!(evicted, vec![Evicted(stalled.id)], "the stalled one is 3 frames behind");
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
        let sender = join(&room, Mode::V1);
        let readers: Vec<_> =
            [Mode::V1, Mode::Tutorial].into_iter().map(|mode| join(&room, mode)).collect();
        for n in 0..2_000 {
            let evicted = post(&room, &sender, &format!("m{n}"));
            assert!(evicted.is_empty(), "message {n}");
        }
        assert_eq!(frames(&sender).len(), 2_001, "the welcome and 2,000 acks");
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
        let alice = join(&room, Mode::V1);
        let bob = join(&room, Mode::V1);
        let carol = join(&room, Mode::Tutorial);
        frames(&alice);
        frames(&bob);
        post(&room, &alice, "m1");
        post(&room, &alice, "m2");
        assert!(frames(&alice).is_empty() && frames(&bob).is_empty(), "not on disk yet");
        assert!(carol.outbound.take_now().is_empty());

        let first = next_batch(&room);
        let first_seqs: Vec<_> = first.messages.iter().map(|pending| pending.message.seq).collect();
        assert_eq!(first_seqs, [1, 2]);
        // While the committer writes m1 and m2: m3 is numbered after them, a re-send of m1 waits
        // for its commit, and Bob asks for history, which holds nothing committed yet.
        post(&room, &alice, "m3");
        post(&room, &bob, "m1");
        room.answer_history(bob.id, 9, 0).unwrap();
        room.committed(first);
        let second = next_batch(&room);
        let second_seqs: Vec<_> =
            second.messages.iter().map(|pending| pending.message.seq).collect();
        assert_eq!(second_seqs, [3]);
        room.committed(second);

        assert_eq!(frames(&alice), [ack("m1", 1), ack("m2", 2), ack("m3", 3)]);
        let bob_got = frames(&bob);
        assert_eq!(
            seqs(&bob_got),
            [(0, "history".into()), (1, "m1".into()), (2, "m2".into()), (3, "m3".into())]
        );
        assert!(bob_got.contains(&ServerFrame::Ack {
            room: "lobby".into(),
            id: "m1".into(),
            seq: 1,
            duplicate: true
        }));
        assert_eq!(carol.outbound.take_now().len(), 3);
        // A newcomer is welcomed at the committed seq.
        let dave = join(&room, Mode::V1);
        assert!(matches!(frames(&dave)[..], [ServerFrame::Welcome { latest_seq: 3, .. }]));
    }

    /// A failed commit acks and relays nothing: its messages and those numbered after it are
    /// refused with `unavailable` (v1 with the id and the room, tutorial in its own error frame),
    /// new ones too while the store fails, and once it is back their seqs are given out again.
    #[test]
    fn a_failed_commit_is_refused_and_its_seqs_given_out_again() {
        let room = durable_room();
        let journal = room.core.journal.as_ref().unwrap();
        let alice = join(&room, Mode::V1);
        let tutorial = join(&room, Mode::Tutorial);
        let bob = join(&room, Mode::V1);
        frames(&alice);
        frames(&bob);
        post(&room, &alice, "m1");
        room.committed(next_batch(&room));
        frames(&bob);
        tutorial.outbound.take_now();
        assert_eq!(frames(&alice), [ack("m1", 1)]);

        post(&room, &alice, "m2");
        let failing = next_batch(&room);
        post(&room, &tutorial, "t3");
        post(&room, &alice, "m2"); // re-sent while its commit is under way
        journal.failing();
        room.commit_failed(failing);
        post(&room, &alice, "m4"); // while the store is down

        let refused: Vec<_> = frames(&alice)
            .into_iter()
            .map(|frame| match frame {
                ServerFrame::Error { error, id: Some(id), room: Some(room), .. } => {
                    assert_eq!((error.code, room.as_str()), (ErrorCode::Unavailable, "lobby"));
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

        journal.recovered();
        post(&room, &alice, "m2");
        room.committed(next_batch(&room));
        assert_eq!(frames(&alice), [ack("m2", 2)], "seq 2 again: nobody saw the first one");
        assert_eq!(seqs(&frames(&bob)), [(2, "m2".into())]);
    }

    /// When the store cannot continue the history, a new epoch starts: v1 clients are closed
    /// with 1012 to learn it on reconnecting, tutorial clients stay, numbering starts at 1.
    #[test]
    fn a_new_epoch_closes_v1_clients_and_numbers_from_one() {
        let room = durable_room();
        let alice = join(&room, Mode::V1);
        let tutorial = join(&room, Mode::Tutorial);
        post(&room, &alice, "m1");
        room.committed(next_batch(&room));
        let failing = {
            post(&room, &alice, "m2");
            next_batch(&room)
        };
        room.core.journal.as_ref().unwrap().failing();
        room.commit_failed(failing);
        room.restart_epoch("second".into());
        room.core.journal.as_ref().unwrap().recovered();
        assert_eq!(alice.outbound.close_reason().and_then(Close::code), Some(1012));
        assert_eq!(tutorial.outbound.close_reason(), None);
        let newcomer = join(&room, Mode::V1);
        assert!(matches!(
            &frames(&newcomer)[..],
            [ServerFrame::Welcome { epoch, latest_seq: 0, .. }] if epoch == "second"
        ));
        post(&room, &tutorial, "t1");
        room.committed(next_batch(&room));
        assert_eq!(seqs(&frames(&newcomer)), [(1, "t1".into())]);
    }

    /// A member that leaves is gone however it went, and the room says when it is idle: nobody
    /// in it and nothing on its way to the disk.
    #[test]
    fn leaving_empties_the_room() {
        let room = durable_room();
        let a = join(&room, Mode::Tutorial);
        let b = join(&room, Mode::V1);
        assert_eq!(room.len(), 2);
        assert!(!room.leave(a.id));
        post(&room, &b, "m1");
        assert!(!room.leave(b.id), "m1 still waits for the disk");
        assert_eq!(room.len(), 0);
        assert!(room.committed(next_batch(&room)), "idle once it is written");
        assert!(room.retire_if_idle());
        let joiner = Joiner { id: 99, outbound: Arc::default(), mode: Mode::V1, name: "x".into() };
        assert_eq!(room.join(joiner, &Greeting::Welcome), Err(JoinError::Retired));
    }

    /// A full room refuses one more member; a join after a leave is fine again.
    #[test]
    fn a_full_room_refuses_newcomers() {
        let history = History::new("epoch".into(), 100);
        let core =
            Arc::new(Core { max_members: 1, ..Arc::into_inner(core(ROOMY, false)).unwrap() });
        let room = Room::new("small".into(), history, core);
        let first = join(&room, Mode::V1);
        let joiner = Joiner { id: 98, outbound: Arc::default(), mode: Mode::V1, name: "x".into() };
        assert_eq!(room.join(joiner.clone(), &Greeting::Welcome), Err(JoinError::Full));
        room.leave(first.id);
        assert_eq!(room.join(joiner, &Greeting::Welcome), Ok(()));
    }

    /// Joining (not the lobby's welcome) greets with the room's state, then the presence, then
    /// the history after the client's position if it knew this epoch, else from the start.
    #[test]
    fn a_join_greets_with_state_presence_and_history() {
        let room = room(ROOMY);
        let ada = join(&room, Mode::V1);
        for n in 1..=3 {
            post(&room, &ada, &format!("m{n}"));
        }
        let greeted = |after: Option<Position>| {
            let tab = Tab { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), outbound: Arc::default() };
            let joiner = Joiner {
                id: tab.id,
                outbound: Arc::clone(&tab.outbound),
                mode: Mode::V1,
                name: "bob".into(),
            };
            room.join(joiner, &Greeting::Joined { after }).unwrap();
            all_frames(&tab)
        };
        let got = greeted(None);
        assert!(
            matches!(
                &got[..],
                [
                    ServerFrame::Joined { latest_seq: 3, oldest_seq: 1, .. },
                    ServerFrame::Presence { .. },
                    ServerFrame::History { request_id: 0, .. }
                ]
            ),
            "{got:?}"
        );
        assert_eq!(seqs(&got), [(0, "history".into())]);
        let history_seqs = |frames: &[ServerFrame]| match frames.last() {
            Some(ServerFrame::History { messages, .. }) => {
                messages.iter().map(|message| message.seq).collect::<Vec<_>>()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(history_seqs(&got), [1, 2, 3]);
        let resumed = greeted(Some(Position { epoch: "epoch".into(), seq: 2 }));
        assert_eq!(history_seqs(&resumed), [3]);
        let other_epoch = greeted(Some(Position { epoch: "older".into(), seq: 2 }));
        assert_eq!(history_seqs(&other_epoch), [1, 2, 3]);
    }

    /// With `--redis`: a message read from the room's stream reaches every member in its
    /// protocol but its sender on this relay (acked already), goes into the history, and is
    /// refused (nothing done) when it does not follow the latest seq.
    #[test]
    fn a_stored_message_reaches_everyone_but_its_sender_in_order() {
        let room = room(ROOMY);
        let sender = join(&room, Mode::V1);
        let reader = join(&room, Mode::V1);
        let tutorial = join(&room, Mode::Tutorial);
        frames(&sender);
        frames(&reader);
        let stored = |seq: u64, id: &str| posted(id, id).numbered(seq, 0);
        assert!(room.relay_stored(stored(1, "m1"), Some(sender.id)));
        assert!(room.relay_stored(stored(2, "m2"), None), "from another relay");
        assert!(!room.relay_stored(stored(4, "m4"), None), "a gap");
        assert_eq!(seqs(&frames(&sender)), [(2, "m2".into())]);
        assert_eq!(seqs(&frames(&reader)), [(1, "m1".into()), (2, "m2".into())]);
        assert_eq!(tutorial.outbound.take_now(), [tutorial_text("m1"), tutorial_text("m2")]);
        assert_eq!(room.position(), ("epoch".into(), 2));
    }

    /// With `--redis`: a room that moved on in Redis without this relay starts over from what
    /// Redis holds; v1 members are closed with 1012 to resync, tutorial members stay.
    #[test]
    fn a_reloaded_room_closes_v1_members_and_goes_on_from_redis() {
        let room = room(ROOMY);
        let v1 = join(&room, Mode::V1);
        let tutorial = join(&room, Mode::Tutorial);
        room.reload(History::new("second".into(), 100));
        assert_eq!(v1.outbound.close_reason().and_then(Close::code), Some(1012));
        assert_eq!(tutorial.outbound.close_reason(), None);
        assert_eq!(room.position(), ("second".into(), 0));
        assert_eq!(room.len(), 1);
    }
}
