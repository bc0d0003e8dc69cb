//! Recognising a message sent twice: the ids each sender used lately, remembered for a bounded
//! window (count and age) whatever the history keeps, so that a re-send is acked as a duplicate
//! and relayed once, with `--history-limit 0` too.
//!
//! Who "the sender" is: the name a message is sent under, that is the token's name with
//! `--jwt-secret`, else the `source` the client wrote. Not the connection: an app tab re-sends
//! what was not acked on a new connection after a reconnect, and the next tab of a page adopts
//! the outbox of a tab closed with messages pending and sends them again; both send each message
//! with its id and the source it was first sent under (the outbox keeps both). Ids are UUIDs, so
//! two people sharing a name do not collide. What the namespace buys is that one sender's
//! messages push only that sender's own ids out of its window, not everyone else's.
//!
//! Bounds, all of them needed: [`Limits::default`] keeps per sender its last 1,000 ids, none
//! older than 10 minutes (an app's outbox holds at most 100 messages, and re-sends them within
//! seconds of reconnecting); at most 10,000 senders and 100,000 ids in all (a few tens of
//! megabytes with the longest ids), past which the senders heard from least recently are
//! forgotten first.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use wschat_protocol::v1::StoredMessage;

/// The key a sender's ids are remembered under in one room: the room, a space (which no room
/// name holds, so the two parts cannot be confused), then the sender. Seqs are per room, so a
/// re-send is recognised only in the room it was first sent to.
#[must_use]
pub fn sender_key(room: &str, sender: &str) -> String {
    format!("{room} {sender}")
}

/// A stored message as dedupe remembers it, and as the store keeps it for the next start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The seq it was stored under.
    pub seq: u64,
    /// The name it was sent under (see the module's documentation).
    pub sender: String,
    /// The client's id for it.
    pub id: String,
    /// The relay's time stamp on it, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

impl From<&StoredMessage> for Sent {
    fn from(message: &StoredMessage) -> Self {
        Self {
            seq: message.seq,
            sender: message.source.clone(),
            id: message.id.clone(),
            at_ms: message.sent_at_ms,
        }
    }
}

/// How much is remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Ids remembered per sender, newest kept.
    pub per_sender: usize,
    /// How long an id is remembered, in milliseconds (by the relay's time stamp on its message).
    pub max_age_ms: u64,
    /// Senders remembered at once.
    pub senders: usize,
    /// Ids remembered in all.
    pub ids: usize,
}

impl Limits {
    /// The default bound on ids in all, which the store also keeps (see `crate::store`).
    pub const DEFAULT_IDS: usize = 100_000;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_sender: 1_000,
            max_age_ms: 10 * 60 * 1_000,
            senders: 10_000,
            ids: Self::DEFAULT_IDS,
        }
    }
}

/// One remembered id.
#[derive(Debug)]
struct Remembered {
    id: Arc<str>,
    at_ms: u64,
}

/// One sender's recent ids, oldest first.
#[derive(Debug)]
struct Window {
    ids: VecDeque<Remembered>,
    seq_by_id: HashMap<Arc<str>, (u64, u64)>,
    /// Its place in [`Dedupe::by_activity`].
    tick: u64,
}

impl Window {
    fn pop_oldest(&mut self) {
        if let Some(oldest) = self.ids.pop_front() {
            self.seq_by_id.remove(&oldest.id);
        }
    }

    fn newest_ms(&self) -> u64 {
        self.ids.back().map_or(0, |remembered| remembered.at_ms)
    }
}

/// The ids each sender used lately, and the seq each was given.
#[derive(Debug)]
pub struct Dedupe {
    limits: Limits,
    senders: HashMap<Arc<str>, Window>,
    /// Senders by when an id of theirs was last remembered, least recent first: who is
    /// forgotten when a bound in all is reached, and whose windows aged out whole.
    by_activity: BTreeMap<u64, Arc<str>>,
    next_tick: u64,
    /// Ids remembered in all.
    ids: usize,
}

impl Dedupe {
    /// Remembers nothing yet.
    #[must_use]
    pub fn new(limits: Limits) -> Self {
        Self { limits, senders: HashMap::new(), by_activity: BTreeMap::new(), next_tick: 0, ids: 0 }
    }

    /// The seq given to `sender`'s message `id`, if it is remembered and no older than the age
    /// bound at `now_ms`.
    #[must_use]
    pub fn seq_of(&self, sender: &str, id: &str, now_ms: u64) -> Option<u64> {
        let &(seq, at_ms) = self.senders.get(sender)?.seq_by_id.get(id)?;
        (now_ms.saturating_sub(at_ms) <= self.limits.max_age_ms).then_some(seq)
    }

    /// Remembers that `sender`'s message `id` was stored as `seq`, stamped `at_ms`, and forgets
    /// what falls out of the bounds.
    pub fn remember(&mut self, sender: &str, id: &str, seq: u64, at_ms: u64) {
        let tick = self.next_tick;
        self.next_tick += 1;
        let key = match self.senders.get_key_value(sender) {
            Some((key, _)) => Arc::clone(key),
            None => {
                while self.senders.len() >= self.limits.senders.max(1) {
                    if !self.forget_least_active() {
                        break;
                    }
                }
                let key: Arc<str> = sender.into();
                let window = Window { ids: VecDeque::new(), seq_by_id: HashMap::new(), tick };
                self.senders.insert(Arc::clone(&key), window);
                key
            }
        };
        let limits = self.limits;
        let window = self.senders.get_mut(&key).expect("inserted above");
        if window.tick != tick {
            self.by_activity.remove(&window.tick);
            window.tick = tick;
        }
        self.by_activity.insert(tick, key);
        if window.seq_by_id.remove(id).is_some() {
            // Stored again (a re-send that came after its id was forgotten, say): the newest
            // seq is the one to answer with. Rare, so a scan of the window is fine.
            window.ids.retain(|remembered| &*remembered.id != id);
            self.ids -= 1;
        }
        let id: Arc<str> = id.into();
        window.seq_by_id.insert(Arc::clone(&id), (seq, at_ms));
        window.ids.push_back(Remembered { id, at_ms });
        self.ids += 1;
        while window.ids.len() > limits.per_sender.max(1)
            || window
                .ids
                .front()
                .is_some_and(|oldest| at_ms.saturating_sub(oldest.at_ms) > limits.max_age_ms)
        {
            window.pop_oldest();
            self.ids -= 1;
        }
        // The sender just heard from is the most active one: it goes last.
        while self.ids > limits.ids && self.by_activity.len() > 1 {
            if !self.forget_least_active() {
                break;
            }
        }
        // Senders whose newest id aged out are forgotten whole, least active first.
        while let Some(sender) = self.by_activity.values().next() {
            let newest_ms = self.senders.get(sender).map_or(0, Window::newest_ms);
            if at_ms.saturating_sub(newest_ms) <= limits.max_age_ms {
                break;
            }
            self.forget_least_active();
        }
    }

    /// Forgets everything.
    #[cfg(test)]
    pub fn clear(&mut self) {
        *self = Self::new(self.limits);
    }

    /// Forgets every sender of `room` (see [`sender_key`]): its history started over in a new
    /// epoch, where the old seqs mean nothing. Scans every sender: it happens only after the
    /// history file was lost.
    pub fn forget_room(&mut self, room: &str) {
        let prefix = sender_key(room, "");
        let forgotten: Vec<_> =
            self.senders.keys().filter(|key| key.starts_with(&prefix)).cloned().collect();
        for key in forgotten {
            if let Some(window) = self.senders.remove(&key) {
                self.ids -= window.seq_by_id.len();
                self.by_activity.remove(&window.tick);
            }
        }
    }

    /// Ids remembered in all.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ids
    }

    /// Senders remembered now.
    #[cfg(test)]
    pub fn senders(&self) -> usize {
        self.senders.len()
    }

    /// Forgets the sender heard from least recently, all its ids; false when there is none.
    fn forget_least_active(&mut self) -> bool {
        let Some((_, sender)) = self.by_activity.pop_first() else { return false };
        if let Some(window) = self.senders.remove(&sender) {
            self.ids -= window.seq_by_id.len();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60 * 1_000;

    fn small() -> Limits {
        Limits { per_sender: 3, max_age_ms: 10 * MINUTE, senders: 3, ids: 7 }
    }

    /// A sender's re-send is recognised; the same id from someone else is not theirs.
    #[test]
    fn ids_are_per_sender() {
        let mut dedupe = Dedupe::new(Limits::default());
        dedupe.remember("ada", "m1", 1, 0);
        assert_eq!(dedupe.seq_of("ada", "m1", 0), Some(1));
        assert_eq!(dedupe.seq_of("bob", "m1", 0), None);
        assert_eq!(dedupe.seq_of("ada", "m2", 0), None);
    }

    /// Each sender keeps its own last N: a busy sender pushes out only its own ids.
    #[test]
    fn a_busy_sender_forgets_only_its_own_ids() {
        let mut dedupe = Dedupe::new(small());
        dedupe.remember("ada", "a1", 1, 0);
        for n in 0..10 {
            dedupe.remember("bob", &format!("b{n}"), 2 + n, 0);
        }
        assert_eq!(dedupe.seq_of("ada", "a1", 0), Some(1), "ada's id outlived bob's burst");
        assert_eq!(dedupe.seq_of("bob", "b6", 0), None, "bob keeps his last 3");
        assert_eq!(dedupe.seq_of("bob", "b7", 0), Some(9));
        assert_eq!(dedupe.len(), 4);
    }

    /// An id older than the age bound is forgotten, whether asked about or pushed out.
    #[test]
    fn ids_age_out() {
        let mut dedupe = Dedupe::new(small());
        dedupe.remember("ada", "old", 1, 0);
        assert_eq!(dedupe.seq_of("ada", "old", 10 * MINUTE), Some(1));
        assert_eq!(dedupe.seq_of("ada", "old", 10 * MINUTE + 1), None);
        dedupe.remember("ada", "new", 2, 11 * MINUTE);
        assert_eq!(dedupe.len(), 1, "the old one is gone, not only hidden");
        dedupe.remember("bob", "b", 3, 22 * MINUTE);
        assert_eq!(dedupe.len(), 1, "ada's whole window aged out");
    }

    /// Past the bound on senders or on ids in all, the senders heard from least recently go
    /// first, whole.
    #[test]
    fn the_least_active_senders_go_first() {
        let mut dedupe = Dedupe::new(Limits { ids: 5, ..small() });
        dedupe.remember("ada", "a1", 1, 0);
        dedupe.remember("bob", "b1", 2, 0);
        dedupe.remember("cy", "c1", 3, 0);
        dedupe.remember("ada", "a2", 4, 0);
        // A fourth sender: bob, heard from least recently, goes.
        dedupe.remember("dee", "d1", 5, 0);
        assert_eq!(dedupe.seq_of("cy", "c1", 0), Some(3));
        assert_eq!(dedupe.seq_of("bob", "b1", 0), None);
        assert_eq!(dedupe.seq_of("ada", "a1", 0), Some(1));
        dedupe.remember("dee", "d2", 6, 0);
        assert_eq!(dedupe.len(), 5);
        // A sixth id: cy goes, though ada's are older.
        dedupe.remember("ada", "a3", 7, 0);
        assert_eq!(dedupe.seq_of("cy", "c1", 0), None);
        assert_eq!(dedupe.seq_of("ada", "a1", 0), Some(1));
        assert_eq!(dedupe.len(), 5);
    }

    /// Senders are forgotten in the order they were last heard from, the very first one too:
    /// a stream of new senders never grows the window past its bounds.
    #[test]
    fn a_stream_of_new_senders_stays_within_the_bounds() {
        let limits = small();
        let mut dedupe = Dedupe::new(limits);
        for n in 0..100 {
            dedupe.remember(&format!("s{n}"), "x", n, 0);
            assert!(dedupe.senders.len() <= limits.senders);
            assert_eq!(dedupe.senders.len(), dedupe.by_activity.len());
            assert_eq!(dedupe.len(), dedupe.senders.len());
        }
        assert_eq!(dedupe.seq_of("s0", "x", 0), None, "the first sender went first");
        assert_eq!(dedupe.seq_of("s99", "x", 0), Some(99));
    }

    /// An id stored again (after its first copy was forgotten elsewhere, or seeded twice) is
    /// remembered once, under its newest seq.
    #[test]
    fn an_id_stored_again_is_remembered_once() {
        let mut dedupe = Dedupe::new(small());
        dedupe.remember("ada", "m1", 1, 0);
        dedupe.remember("ada", "m1", 5, 0);
        assert_eq!((dedupe.seq_of("ada", "m1", 0), dedupe.len()), (Some(5), 1));
    }

    /// Cleared for a new epoch: nothing is recognised.
    #[test]
    fn clear_forgets_everything() {
        let mut dedupe = Dedupe::new(small());
        dedupe.remember("ada", "m1", 1, 0);
        dedupe.clear();
        assert_eq!(dedupe.seq_of("ada", "m1", 0), None);
        assert_eq!(dedupe.len(), 0);
    }

    /// A room that starts over forgets its own senders' ids, and only those: the same sender
    /// and id in another room (even one whose name starts the same) are still recognised.
    #[test]
    fn forgetting_a_room_keeps_the_others() {
        let mut dedupe = Dedupe::new(Limits::default());
        for (room, seq) in [("team", 1), ("team-a", 2), ("lobby", 3)] {
            dedupe.remember(&sender_key(room, "ada"), "m1", seq, 0);
        }
        dedupe.remember(&sender_key("team", "bob"), "m2", 2, 0);
        dedupe.forget_room("team");
        assert_eq!(dedupe.seq_of(&sender_key("team", "ada"), "m1", 0), None);
        assert_eq!(dedupe.seq_of(&sender_key("team", "bob"), "m2", 0), None);
        assert_eq!(dedupe.seq_of(&sender_key("team-a", "ada"), "m1", 0), Some(2));
        assert_eq!(dedupe.seq_of(&sender_key("lobby", "ada"), "m1", 0), Some(3));
        assert_eq!((dedupe.len(), dedupe.senders()), (2, 2));
        // The forgotten senders left the activity order too: new ones are remembered as usual.
        dedupe.remember(&sender_key("team", "ada"), "m3", 1, 0);
        assert_eq!(dedupe.seq_of(&sender_key("team", "ada"), "m3", 0), Some(1));
    }
}
