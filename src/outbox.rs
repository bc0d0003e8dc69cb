//! The outbox: every message this tab sends is kept here until the relay acknowledges it, so that
//! nothing the user typed is lost to a dropped socket or a reload.
//!
//! A message goes [`Pending`](DeliveryState::Pending) → [`Sent`](DeliveryState::Sent) (written to
//! the socket) → [`Delivered`](DeliveryState::Delivered) (the relay's ack, with its sequence
//! number). When the socket drops, or the page reloads, we cannot know whether a sent message
//! arrived, so it goes back to `Pending` and is sent again: the relay deduplicates by the message's
//! client-made id and acks the copy, so re-sending is always safe. A message the relay refused is
//! [`Failed`](DeliveryState::Failed) until the user retries it.
//!
//! The outbox is bounded by the messages not yet delivered ([`Outbox::capacity`]); when that many
//! are waiting, [`Outbox::push`] refuses instead of dropping anything. Delivered entries stay (the
//! page can show their tick) until the owner prunes them with [`Outbox::prune_delivered`].
//!
//! The outbox is saved in two parts, so that a burst of acks does not rewrite the delivered
//! history again and again: [`Outbox::undelivered_json`] (what must survive a reload, small,
//! saved whenever it changes) and [`Outbox::delivered_json`] (only for display, saved lazily).
//! [`Outbox::take_changes`] says which part changed. Both are a JSON array of entries with
//! snake_case field names like the wire protocol; `seq` marks a delivered message and `failed`
//! a refused one:
//!
//! ```json
//! [{"id":"6f1c…","source":"ann","content":"hi","created_at_ms":1700000000000,"seq":42}]
//! ```
//!
//! Lookups by id are linear scans: the outbox holds the undelivered messages of one tab plus what
//! the owner keeps for display, a few hundred at most, so a map would buy nothing.

use serde::Serialize;
use wschat_protocol::v1::LOBBY;
use wschat_protocol::{DecodeError, JsonObject};

/// How many undelivered messages [`Outbox::default`] holds: far more than anyone types while
/// offline, few enough that localStorage never notices.
pub const DEFAULT_CAPACITY: usize = 100;

/// One message this tab sent, with how far its delivery got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Client-made UUID text, unique per message; the relay deduplicates re-sends by it.
    pub id: String,
    /// The room it was written in, and goes to, whenever it goes.
    pub room: String,
    /// Who wrote it.
    pub source: String,
    /// What was written: text, never HTML.
    pub content: String,
    /// When the user sent it, in milliseconds since the Unix epoch (the browser's clock).
    pub created_at_ms: u64,
    /// How far its delivery got.
    pub state: DeliveryState,
}

impl OutgoingMessage {
    /// A new message, [`Pending`](DeliveryState::Pending).
    #[must_use]
    pub fn new(
        id: impl Into<String>,
        source: impl Into<String>,
        content: impl Into<String>,
        created_at_ms: u64,
    ) -> Self {
        Self {
            id: id.into(),
            room: LOBBY.to_owned(),
            source: source.into(),
            content: content.into(),
            created_at_ms,
            state: DeliveryState::Pending,
        }
    }

    /// The same message, for `room` instead of the lobby.
    #[must_use]
    pub fn in_room(self, room: impl Into<String>) -> Self {
        Self { room: room.into(), ..self }
    }
}

/// How far a message's delivery got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting to be written to the socket (for the first time, or again after a disconnect).
    Pending,
    /// Written to the socket; no ack yet.
    Sent,
    /// The relay has it, as number `seq` of the conversation.
    Delivered {
        /// The relay's sequence number for the message.
        seq: u64,
    },
    /// The relay refused it; it is not re-sent until [`Outbox::retry`].
    Failed {
        /// Why, for people.
        reason: String,
    },
}

impl DeliveryState {
    /// Whether the relay has acknowledged the message.
    #[must_use]
    pub fn is_delivered(&self) -> bool {
        matches!(self, Self::Delivered { .. })
    }
}

/// Why [`Outbox::push`] refused a message: too many are still waiting for the relay. The message
/// was not queued; the caller still has it (and should leave it in the text box).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("outbox full, {waiting} messages waiting")]
pub struct OutboxFull {
    /// How many messages are waiting (pending, sent or failed): the outbox's capacity.
    pub waiting: usize,
}

/// The messages this tab sent, in the order they were pushed, with their delivery states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbox {
    capacity: usize,
    entries: Vec<OutgoingMessage>,
    changes: OutboxChanges,
}

/// What changed in an [`Outbox`] since the last [`Outbox::take_changes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxChanges {
    /// Messages were added or forgotten: the list itself changed.
    pub list: bool,
    /// Messages whose state changed, by id.
    pub states: Vec<String>,
    /// The undelivered messages changed: what [`Outbox::undelivered_json`] saves.
    pub undelivered: bool,
    /// The delivered messages changed: what [`Outbox::delivered_json`] saves.
    pub delivered: bool,
}

impl OutboxChanges {
    /// Whether nothing changed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One entry as saved: the state is flat (`seq` or `failed`).
#[derive(Serialize)]
struct SavedMessage<'a> {
    id: &'a str,
    /// Left out for the lobby: what was saved before rooms existed reads back as the lobby's.
    #[serde(skip_serializing_if = "is_lobby")]
    room: &'a str,
    source: &'a str,
    content: &'a str,
    created_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed: Option<&'a str>,
}

fn is_lobby(room: &&str) -> bool {
    *room == LOBBY
}

impl<'a> SavedMessage<'a> {
    fn from_message(message: &'a OutgoingMessage) -> Self {
        let (seq, failed) = match &message.state {
            DeliveryState::Delivered { seq } => (Some(*seq), None),
            DeliveryState::Failed { reason } => (None, Some(reason.as_str())),
            DeliveryState::Pending | DeliveryState::Sent => (None, None),
        };
        Self {
            id: &message.id,
            room: &message.room,
            source: &message.source,
            content: &message.content,
            created_at_ms: message.created_at_ms,
            seq,
            failed,
        }
    }
}

impl OutgoingMessage {
    /// Reads back a message saved by [`Outbox::undelivered_json`] or [`Outbox::delivered_json`],
    /// parsed elsewhere (see [`JsonObject`]). One sent before a reload but not acknowledged comes
    /// back pending: whether it arrived is unknown, so it is sent again.
    ///
    /// # Errors
    /// A [`DecodeError`] naming the field that is missing or wrong.
    pub fn from_saved<O: JsonObject>(saved: &O) -> Result<Self, DecodeError> {
        let state = match (saved.optional_u64("seq")?, saved.optional_string("failed")?) {
            (Some(seq), _) => DeliveryState::Delivered { seq },
            (None, Some(reason)) => DeliveryState::Failed { reason },
            (None, None) => DeliveryState::Pending,
        };
        Ok(Self {
            id: saved.required_string("id")?,
            room: saved.optional_string("room")?.unwrap_or_else(|| LOBBY.to_owned()),
            source: saved.required_string("source")?,
            content: saved.required_string("content")?,
            created_at_ms: saved.required_u64("created_at_ms")?,
            state,
        })
    }
}

impl Default for Outbox {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl Outbox {
    /// An empty outbox that holds at most `capacity` undelivered messages (0 refuses everything).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self { capacity, entries: Vec::new(), changes: OutboxChanges::default() }
    }

    /// How many undelivered messages the outbox accepts.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues a message to be sent; it becomes [`Pending`](DeliveryState::Pending) whatever state
    /// it carried. A message whose id is already in the outbox is the same message (a double
    /// submit): it is accepted and the outbox is left as it was.
    ///
    /// # Errors
    /// [`OutboxFull`] when [`Outbox::capacity`] messages are already waiting (pending, sent or
    /// failed). Nothing is queued and nothing already queued is dropped; acks make room again.
    pub fn push(&mut self, mut message: OutgoingMessage) -> Result<(), OutboxFull> {
        if self.get(&message.id).is_some() {
            return Ok(());
        }
        let waiting = self.undelivered_count();
        if waiting >= self.capacity {
            return Err(OutboxFull { waiting });
        }
        message.state = DeliveryState::Pending;
        self.entries.push(message);
        self.changes.list = true;
        self.changes.undelivered = true;
        Ok(())
    }

    /// The messages to write to the socket now: the pending ones, in the order they were pushed.
    pub fn to_send(&self) -> impl Iterator<Item = &OutgoingMessage> + '_ {
        self.entries.iter().filter(|entry| entry.state == DeliveryState::Pending)
    }

    /// The message `id` was written to the socket. Returns whether it was pending (an unknown,
    /// already sent, delivered or failed message is left as it is).
    pub fn mark_sent(&mut self, id: &str) -> bool {
        self.transition(id, |state| {
            (*state == DeliveryState::Pending).then_some(DeliveryState::Sent)
        })
    }

    /// The socket closed: every sent but unacknowledged message goes back to pending, to be sent
    /// again, in its original order, on the next connection. Returns how many did.
    pub fn on_disconnect(&mut self) -> usize {
        let mut requeued = 0;
        for entry in &mut self.entries {
            if entry.state == DeliveryState::Sent {
                entry.state = DeliveryState::Pending;
                self.changes.states.push(entry.id.clone());
                requeued += 1;
            }
        }
        requeued
    }

    /// The relay could not take message `id` for now: it goes back to pending, to be sent again.
    /// Returns whether it was sent (a delivered or failed message is left as it is).
    pub fn requeue(&mut self, id: &str) -> bool {
        self.transition(id, |state| {
            (*state == DeliveryState::Sent).then_some(DeliveryState::Pending)
        })
    }

    /// The relay acknowledged message `id` as number `seq`. Returns whether this delivered it:
    /// `false` for an id this outbox does not hold and for a repeated ack (the relay acks every
    /// re-sent copy; the first `seq` stays). An ack also settles a message that went back to
    /// pending or was marked failed in the meantime: the relay has it, so it is not sent again.
    pub fn ack(&mut self, id: &str, seq: u64) -> bool {
        self.transition(id, |state| {
            (!state.is_delivered()).then_some(DeliveryState::Delivered { seq })
        })
    }

    /// The relay refused message `id`. Returns whether it was pending or sent; a delivered or
    /// already failed message is left as it is.
    pub fn fail(&mut self, id: &str, reason: impl Into<String>) -> bool {
        self.transition(id, |state| {
            matches!(state, DeliveryState::Pending | DeliveryState::Sent)
                .then(|| DeliveryState::Failed { reason: reason.into() })
        })
    }

    /// The user asked to try a failed message again: it goes back to pending, keeping its place
    /// in the order. Returns whether it had failed.
    pub fn retry(&mut self, id: &str) -> bool {
        self.transition(id, |state| {
            matches!(state, DeliveryState::Failed { .. }).then_some(DeliveryState::Pending)
        })
    }

    /// Takes in messages another tab left pending (see the app's storage): each one this outbox
    /// does not hold yet is queued as it was saved (pending or failed), over the capacity if need
    /// be, since dropping one would lose it. Returns how many were taken.
    pub fn adopt(&mut self, messages: impl IntoIterator<Item = OutgoingMessage>) -> usize {
        let mut taken = 0;
        for message in messages {
            if message.state.is_delivered() || self.get(&message.id).is_some() {
                continue;
            }
            self.entries.push(message);
            taken += 1;
        }
        if taken > 0 {
            self.changes.list = true;
            self.changes.undelivered = true;
        }
        taken
    }

    /// The user gave up on a failed message: it leaves the outbox. Returns whether it had failed
    /// (nothing else can be discarded: a pending message may already be on its way).
    pub fn discard(&mut self, id: &str) -> bool {
        let failed = |entry: &OutgoingMessage| {
            entry.id == id && matches!(entry.state, DeliveryState::Failed { .. })
        };
        let Some(index) = self.entries.iter().position(failed) else { return false };
        self.entries.remove(index);
        self.changes.list = true;
        self.changes.undelivered = true;
        true
    }

    /// The message with this id, if the outbox holds it.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<&OutgoingMessage> {
        self.entries.iter().find(|entry| entry.id == id)
    }

    /// Every message, in the order they were pushed.
    #[must_use]
    pub fn entries(&self) -> &[OutgoingMessage] {
        &self.entries
    }

    /// How many messages wait to be written to the socket.
    #[must_use]
    pub fn pending_count(&self) -> usize {
        self.to_send().count()
    }

    /// How many messages the relay has not acknowledged (pending, sent or failed): what counts
    /// against [`Outbox::capacity`].
    #[must_use]
    pub fn undelivered_count(&self) -> usize {
        self.entries.iter().filter(|entry| !entry.state.is_delivered()).count()
    }

    /// Whether [`Outbox::push`] would refuse a new message.
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.undelivered_count() >= self.capacity
    }

    /// Forgets delivered messages but the `keep` most recent ones; undelivered messages are never
    /// touched. Returns how many were forgotten.
    pub fn prune_delivered(&mut self, keep: usize) -> usize {
        let delivered = self.entries.iter().filter(|entry| entry.state.is_delivered()).count();
        let mut to_forget = delivered.saturating_sub(keep);
        let forgotten = to_forget;
        // Oldest first: the entries are in push order.
        self.entries.retain(|entry| {
            if to_forget > 0 && entry.state.is_delivered() {
                to_forget -= 1;
                false
            } else {
                true
            }
        });
        if forgotten > 0 {
            self.changes.list = true;
            self.changes.delivered = true;
        }
        forgotten
    }

    /// What changed since the last call; resets the record.
    pub fn take_changes(&mut self) -> OutboxChanges {
        std::mem::take(&mut self.changes)
    }

    /// The undelivered messages (pending, sent or failed) as JSON: what a reload must not lose.
    #[must_use]
    pub fn undelivered_json(&self) -> String {
        self.json_of(|state| !state.is_delivered())
    }

    /// The delivered messages as JSON: only for the "Sent" list after a reload.
    #[must_use]
    pub fn delivered_json(&self) -> String {
        self.json_of(DeliveryState::is_delivered)
    }

    fn json_of(&self, which: impl Fn(&DeliveryState) -> bool) -> String {
        let saved: Vec<_> = self
            .entries
            .iter()
            .filter(|entry| which(&entry.state))
            .map(SavedMessage::from_message)
            .collect();
        // Strings, integers and options of them: serialising cannot fail.
        serde_json::to_string(&saved)
            // Not `expect`: formatting the (impossible) error would pull its Debug code into the wasm.
            .unwrap_or_else(|_| unreachable!("saved messages always serialise"))
    }

    /// Loads an outbox of `capacity` from the two saved parts, parsed elsewhere (see
    /// [`OutgoingMessage::from_saved`]). An outbox saved with more undelivered messages than its
    /// capacity keeps them all; it just refuses new ones until acks make room. The delivered ones
    /// come first: they were sent before anything still waiting. A message in both parts (saved
    /// undelivered, then delivered) counts as delivered.
    ///
    /// # Errors
    /// A [`DecodeError`] when a saved message is not readable (e.g. written by an incompatible
    /// version); the caller then decides what to do with the text.
    pub fn load<O: JsonObject>(
        capacity: usize,
        delivered: &[O],
        undelivered: &[O],
    ) -> Result<Self, DecodeError> {
        let mut outbox = Self::new(capacity);
        for saved in delivered.iter().chain(undelivered) {
            let message = OutgoingMessage::from_saved(saved)?;
            if outbox.get(&message.id).is_none() {
                outbox.entries.push(message);
            }
        }
        // What was loaded is new to whoever shows the list; nothing needs saving again.
        outbox.changes.list = !outbox.entries.is_empty();
        Ok(outbox)
    }

    /// Applies `next` to the state of message `id`; `None` from `next` means "no change".
    /// Returns whether the state changed.
    fn transition(
        &mut self,
        id: &str,
        next: impl FnOnce(&DeliveryState) -> Option<DeliveryState>,
    ) -> bool {
        let Some(entry) = self.entries.iter_mut().find(|entry| entry.id == id) else {
            return false;
        };
        let Some(state) = next(&entry.state) else { return false };
        let was_delivered = entry.state.is_delivered();
        let was_sent = matches!(entry.state, DeliveryState::Pending | DeliveryState::Sent);
        let is_sent = matches!(state, DeliveryState::Pending | DeliveryState::Sent);
        entry.state = state;
        // Pending and sent are saved alike: only other moves change what is saved.
        if !(was_sent && is_sent) {
            self.changes.undelivered = true;
        }
        if was_delivered || entry.state.is_delivered() {
            self.changes.delivered = true;
        }
        self.changes.states.push(entry.id.clone());
        true
    }
}

/// A message id: 16 random bytes as a version 4 UUID (RFC 9562), lowercase and hyphenated
/// (`xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx`). Written here rather than with the uuid crate,
/// whose formatting goes through `core::fmt` padding for no gain.
#[must_use]
pub fn message_id(mut random: [u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    random[6] = (random[6] & 0x0f) | 0x40;
    random[8] = (random[8] & 0x3f) | 0x80;
    let mut id = String::with_capacity(36);
    for (index, byte) in random.into_iter().enumerate() {
        if matches!(index, 4 | 6 | 8 | 10) {
            id.push('-');
        }
        id.push(char::from(HEX[usize::from(byte >> 4)]));
        id.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    id
}

#[cfg(test)]
mod tests {
    /// Message ids are version 4 UUIDs in the usual form, the random bytes in order around the
    /// version and variant bits.
    #[test]
    fn message_ids_are_version_4_uuids() {
        assert_eq!(message_id([0xff; 16]), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert_eq!(message_id([0; 16]), "00000000-0000-4000-8000-000000000000");
        let counting = std::array::from_fn(|index| index as u8);
        assert_eq!(message_id(counting), "00010203-0405-4607-8809-0a0b0c0d0e0f");
    }

    use super::*;

    fn message(id: &str) -> OutgoingMessage {
        OutgoingMessage::new(id, "ann", format!("text of {id}"), 1_700_000_000_000)
    }

    /// A saved part parsed (in the browser, `JSON.parse` does this).
    fn parse(text: &str) -> Vec<serde_json::Value> {
        parse_list(text)
    }

    fn parse_list(text: &str) -> Vec<serde_json::Value> {
        serde_json::from_str(text).expect("a JSON array")
    }

    fn outbox_with(capacity: usize, ids: &[&str]) -> Outbox {
        let mut outbox = Outbox::new(capacity);
        for id in ids {
            outbox.push(message(id)).expect("room for the test's messages");
        }
        outbox
    }

    fn ids<'a>(messages: impl Iterator<Item = &'a OutgoingMessage>) -> Vec<&'a str> {
        messages.map(|message| message.id.as_str()).collect()
    }

    /// Messages typed while offline go out in the order they were typed, each exactly once.
    #[test]
    fn flush_keeps_the_typing_order() {
        let mut outbox = outbox_with(10, &["a", "b", "c"]);
        assert_eq!(ids(outbox.to_send()), ["a", "b", "c"]);
        assert_eq!(outbox.pending_count(), 3);

        for id in ["a", "b", "c"] {
            assert!(outbox.mark_sent(id));
        }
        assert_eq!(outbox.to_send().count(), 0, "a sent message is not sent twice");
        assert!(!outbox.mark_sent("a"));

        for (seq, id) in (1..).zip(["a", "b", "c"]) {
            assert!(outbox.ack(id, seq));
        }
        assert_eq!(ids(outbox.entries().iter()), ["a", "b", "c"]);
        assert_eq!(outbox.get("c").map(|m| &m.state), Some(&DeliveryState::Delivered { seq: 3 }));
        assert_eq!(outbox.undelivered_count(), 0);
    }

    /// When the socket drops before the relay acknowledged some messages, they go out again on
    /// the next connection, in their original order, ahead of what was typed meanwhile.
    #[test]
    fn reconnect_resends_unacknowledged_messages_in_order() {
        let mut outbox = outbox_with(10, &["a", "b", "c", "d"]);
        for id in ["a", "b", "c", "d"] {
            outbox.mark_sent(id);
        }
        outbox.ack("b", 7);

        assert_eq!(outbox.on_disconnect(), 3);
        outbox.push(message("e")).expect("room");
        assert_eq!(ids(outbox.to_send()), ["a", "c", "d", "e"]);
        assert_eq!(outbox.get("b").map(|m| &m.state), Some(&DeliveryState::Delivered { seq: 7 }));
        assert_eq!(outbox.on_disconnect(), 0, "nothing was sent since");
    }

    /// A message the relay acks twice (because it was re-sent) shows one tick with its first
    /// number; acks for messages this tab does not know change nothing; a double submit of the
    /// same message queues it once.
    #[test]
    fn ack_is_idempotent_and_duplicates_collapse() {
        let mut outbox = outbox_with(10, &["a", "b"]);
        outbox.mark_sent("a");
        assert!(outbox.ack("a", 1));
        assert!(!outbox.ack("a", 1));
        assert!(!outbox.ack("a", 99));
        assert_eq!(outbox.get("a").map(|m| &m.state), Some(&DeliveryState::Delivered { seq: 1 }));
        assert!(!outbox.ack("from another tab", 2));

        // The socket dropped after "b" was written; the late ack still settles it.
        outbox.mark_sent("b");
        outbox.on_disconnect();
        assert!(outbox.ack("b", 2));
        assert_eq!(outbox.to_send().count(), 0, "an acknowledged message is not re-sent");

        outbox.push(message("c")).expect("room");
        outbox.push(message("c")).expect("a duplicate is accepted");
        assert_eq!(ids(outbox.entries().iter()), ["a", "b", "c"]);
        assert!(!outbox.mark_sent("a"), "a delivered message is never sent again");
    }

    /// With too many messages waiting the app says "outbox full" rather than dropping one, and
    /// accepts new messages again as soon as the relay acknowledges old ones.
    #[test]
    fn full_outbox_refuses_then_accepts_after_acks() {
        let mut outbox = outbox_with(2, &["a", "b"]);
        assert!(outbox.is_full());
        let error = outbox.push(message("c")).expect_err("the outbox is full");
        assert_eq!(error, OutboxFull { waiting: 2 });
        assert_eq!(error.to_string(), "outbox full, 2 messages waiting");
        assert_eq!(ids(outbox.entries().iter()), ["a", "b"], "nothing queued, nothing dropped");

        // A failed message still waits for the user, so it still takes room.
        outbox.fail("a", "too long");
        assert!(outbox.push(message("c")).is_err());

        outbox.mark_sent("b");
        outbox.ack("b", 1);
        assert!(!outbox.is_full());
        outbox.push(message("c")).expect("the ack made room");
        assert_eq!(ids(outbox.entries().iter()), ["a", "b", "c"]);
        assert!(outbox.push(message("d")).is_err());
    }

    /// After a reload the page still shows every message: unacknowledged ones are sent again,
    /// delivered ones keep their number, failed ones still wait for "retry".
    #[test]
    fn persistence_round_trip_resends_what_was_in_flight() {
        let mut outbox = outbox_with(5, &["a", "b", "c", "d"]);
        outbox.mark_sent("a");
        outbox.ack("a", 1);
        outbox.mark_sent("b");
        outbox.fail("d", "rate limited");

        let (delivered, undelivered) =
            (parse(&outbox.delivered_json()), parse(&outbox.undelivered_json()));
        let loaded = Outbox::load(5, &delivered, &undelivered).expect("our JSON loads");
        assert_eq!(loaded.capacity(), 5);
        assert_eq!(ids(loaded.entries().iter()), ["a", "b", "c", "d"]);
        let states: Vec<_> = loaded.entries().iter().map(|m| m.state.clone()).collect();
        assert_eq!(
            states,
            [
                DeliveryState::Delivered { seq: 1 },
                DeliveryState::Pending,
                DeliveryState::Pending,
                DeliveryState::Failed { reason: "rate limited".into() },
            ]
        );
        assert_eq!(ids(loaded.to_send()), ["b", "c"]);
        assert_eq!(loaded.get("c"), outbox.get("c"), "text, author and time survive");
        let mut only_waiting = Outbox::load(5, &[], &undelivered).expect("loads");
        let changes = only_waiting.take_changes();
        assert!(changes.list && !changes.undelivered, "a loaded list is shown, not saved again");
        assert_eq!(ids(only_waiting.entries().iter()), ["b", "c", "d"]);
    }

    /// What localStorage holds is the documented snake_case JSON; a `sent` message is saved like
    /// a pending one; unreadable text is an error, not an empty outbox.
    #[test]
    fn stored_format_is_stable() {
        let mut outbox = outbox_with(3, &["a", "b"]);
        outbox.mark_sent("a");
        outbox.ack("a", 42);
        outbox.mark_sent("b");
        let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).expect("JSON");
        assert_eq!(
            parse(&outbox.delivered_json()),
            serde_json::json!([{"id": "a", "source": "ann", "content": "text of a",
                "created_at_ms": 1_700_000_000_000_u64, "seq": 42}])
        );
        assert_eq!(
            parse(&outbox.undelivered_json()),
            serde_json::json!([{"id": "b", "source": "ann", "content": "text of b",
                "created_at_ms": 1_700_000_000_000_u64}])
        );
        outbox.fail("b", "no");
        assert_eq!(parse(&outbox.undelivered_json())[0]["failed"], "no");

        let unreadable = |text: &str| Outbox::load(3, &parse_list(text), &[]).unwrap_err().field;
        assert_eq!(unreadable(r#"[{"id": "a"}]"#), "source", "fields are required");
        assert_eq!(
            unreadable(r#"[{"id":"a","source":"b","content":"c","created_at_ms":1,"seq":"x"}]"#),
            "seq"
        );
    }

    /// A message keeps its room through a reload; one saved before rooms existed (no `room`) is
    /// the lobby's, and the lobby's are saved as before.
    #[test]
    fn the_room_is_saved_and_old_messages_are_the_lobbys() {
        let mut outbox = Outbox::new(3);
        outbox.push(message("a").in_room("team-a")).unwrap();
        outbox.push(message("b")).unwrap();
        let saved = parse(&outbox.undelivered_json());
        assert_eq!(saved[0]["room"], "team-a");
        assert!(saved[1].get("room").is_none(), "the lobby is left out: {saved:?}");
        let loaded = Outbox::load(3, &[], &saved).unwrap();
        let rooms: Vec<_> = loaded.entries().iter().map(|m| m.room.as_str()).collect();
        assert_eq!(rooms, ["team-a", LOBBY]);
    }

    /// A burst of acks changes what is saved of the delivered part, and each row once; sending a
    /// message changes only the undelivered part.
    #[test]
    fn changes_say_what_to_save_and_redraw() {
        let mut outbox = outbox_with(10, &["a", "b"]);
        let pushed = outbox.take_changes();
        assert!(pushed.list && pushed.undelivered && !pushed.delivered);
        outbox.mark_sent("a");
        let sent = outbox.take_changes();
        assert_eq!(sent.states, ["a"]);
        assert!(!sent.undelivered && !sent.list, "sent is saved as pending");
        outbox.ack("a", 1);
        outbox.ack("b", 2);
        let acked = outbox.take_changes();
        assert_eq!(acked.states, ["a", "b"]);
        assert!(acked.undelivered && acked.delivered && !acked.list);
        assert!(outbox.take_changes().is_empty());
    }

    /// A message the relay refused is shown as failed and not re-sent on reconnect; "retry" sends
    /// it again, in its original place.
    #[test]
    fn failed_message_waits_for_retry() {
        let mut outbox = outbox_with(10, &["a", "b"]);
        outbox.mark_sent("a");
        assert!(outbox.fail("a", "message too long"));
        assert!(!outbox.fail("a", "again"), "the first reason stays");
        assert_eq!(
            outbox.get("a").map(|m| &m.state),
            Some(&DeliveryState::Failed { reason: "message too long".into() })
        );
        assert_eq!(ids(outbox.to_send()), ["b"]);
        outbox.on_disconnect();
        assert_eq!(ids(outbox.to_send()), ["b"], "a disconnect does not retry a failure");

        assert!(!outbox.retry("b"), "only failed messages are retried");
        assert!(!outbox.retry("unknown"));
        assert!(outbox.retry("a"));
        assert_eq!(ids(outbox.to_send()), ["a", "b"]);
        outbox.mark_sent("a");
        assert!(outbox.ack("a", 5));
        assert!(!outbox.fail("a", "late refusal"), "a delivered message stays delivered");
    }

    /// Messages a closed tab left pending are adopted once each, beyond the capacity (none is
    /// dropped), and go out with this tab's; delivered ones are not taken.
    #[test]
    fn adopting_an_orphaned_outbox() {
        let mut outbox = outbox_with(2, &["a", "b"]);
        let mut delivered = message("old");
        delivered.state = DeliveryState::Delivered { seq: 1 };
        let mut failed = message("f");
        failed.state = DeliveryState::Failed { reason: "too long".into() };
        let orphan = [message("a"), message("x"), delivered, failed];
        assert_eq!(outbox.adopt(orphan), 2);
        assert_eq!(ids(outbox.entries().iter()), ["a", "b", "x", "f"]);
        assert_eq!(ids(outbox.to_send()), ["a", "b", "x"]);
        assert!(outbox.is_full());
        assert!(outbox.take_changes().undelivered);
    }

    /// Only a failed message can be discarded; then it is gone for good.
    #[test]
    fn discarding_a_failed_message() {
        let mut outbox = outbox_with(5, &["a", "b"]);
        assert!(!outbox.discard("a"), "a pending message may be on its way");
        outbox.fail("a", "too long");
        outbox.take_changes();
        assert!(outbox.discard("a"));
        assert_eq!(ids(outbox.entries().iter()), ["b"]);
        let changes = outbox.take_changes();
        assert!(changes.list && changes.undelivered);
        assert!(!outbox.discard("a"));
    }

    /// Old delivered messages can be forgotten to keep the saved outbox small; messages still
    /// waiting are never forgotten.
    #[test]
    fn pruning_forgets_only_old_delivered_messages() {
        let mut outbox = outbox_with(10, &["a", "b", "c", "d", "e"]);
        for (seq, id) in (1..).zip(["a", "b", "d", "e"]) {
            outbox.mark_sent(id);
            outbox.ack(id, seq);
        }
        assert_eq!(outbox.prune_delivered(2), 2);
        assert_eq!(ids(outbox.entries().iter()), ["c", "d", "e"]);
        assert_eq!(outbox.prune_delivered(2), 0);
        assert_eq!(outbox.prune_delivered(0), 2);
        assert_eq!(ids(outbox.entries().iter()), ["c"]);
    }
}
