//! The received side of the conversation: what the relay delivered, each message exactly once,
//! in order, with a note when the relay could not fill a gap.
//!
//! Messages are numbered by the relay (`seq`) within an epoch. Live messages and a history answer
//! can overlap after a reconnect; duplicates are dropped by message id (a UUID, unique across
//! epochs) and each message takes its place by seq. When the relay's epoch changes (it restarted
//! without its history), the old messages stay on screen and the new epoch's follow them.

use std::collections::HashSet;

use wschat_protocol::v1::StoredMessage;

/// One received message, with the key that identifies its row on the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// Unique within the conversation; never reused.
    pub key: u64,
    /// The message as the relay numbered it.
    pub message: StoredMessage,
    /// Sent under this tab's own name (from another tab, or before a reload).
    pub mine: bool,
}

/// The received messages and where this tab stands in the relay's numbering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conversation {
    entries: Vec<ReceivedMessage>,
    ids: HashSet<String>,
    epoch: Option<String>,
    /// Where the current epoch's messages begin in `entries`.
    epoch_start: usize,
    last_seq: u64,
    next_key: u64,
    notice: Option<String>,
}

impl Conversation {
    /// Takes note of the relay's epoch from its welcome, and returns the seq to resume after:
    /// the last one seen in that epoch, or 0 for a relay (or an epoch) this tab does not know.
    pub fn welcome(&mut self, epoch: &str) -> u64 {
        match &self.epoch {
            Some(known) if known == epoch => self.last_seq,
            Some(_) => {
                self.notice = Some(
                    "The relay restarted and lost its history: messages sent while this tab \
                     was away may be missing."
                        .to_owned(),
                );
                self.start_epoch(epoch);
                0
            }
            None => {
                self.start_epoch(epoch);
                0
            }
        }
    }

    fn start_epoch(&mut self, epoch: &str) {
        self.epoch = Some(epoch.to_owned());
        self.epoch_start = self.entries.len();
        self.last_seq = 0;
    }

    /// Adds a message unless its id was already received; returns whether it was new.
    pub fn insert(&mut self, message: StoredMessage, mine: bool) -> bool {
        if !self.ids.insert(message.id.clone()) {
            return false;
        }
        self.observe(message.seq);
        let current = &self.entries[self.epoch_start..];
        let position = self.epoch_start + current.partition_point(|e| e.message.seq < message.seq);
        let key = self.next_key;
        self.next_key += 1;
        self.entries.insert(position, ReceivedMessage { key, message, mine });
        true
    }

    /// Records that `seq` exists and needs no resync (e.g. this tab's own acked message).
    pub fn observe(&mut self, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
    }

    /// Records that the relay no longer held some messages this tab missed.
    pub fn history_incomplete(&mut self) {
        self.notice = Some(
            "Some messages were sent while this tab was away and the relay no longer keeps them."
                .to_owned(),
        );
    }

    /// The last seq seen in the current epoch.
    #[must_use]
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The messages, in order.
    #[must_use]
    pub fn entries(&self) -> &[ReceivedMessage] {
        &self.entries
    }

    /// What the page should tell the user about missing messages, if anything.
    #[must_use]
    pub fn notice(&self) -> Option<&str> {
        self.notice.as_deref()
    }

    /// How many messages were received.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was received.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64, id: &str) -> StoredMessage {
        StoredMessage {
            seq,
            id: id.into(),
            source: "bob".into(),
            content: format!("message {seq}"),
            sent_at_ms: 0,
        }
    }

    fn seqs(conversation: &Conversation) -> Vec<u64> {
        conversation.entries().iter().map(|entry| entry.message.seq).collect()
    }

    /// A first visit resumes from the start; a reconnect to the same relay resumes after the last
    /// message seen.
    #[test]
    fn resumes_after_the_last_seen_seq() {
        let mut conversation = Conversation::default();
        assert_eq!(conversation.welcome("e1"), 0);
        conversation.insert(message(1, "a"), false);
        conversation.insert(message(2, "b"), false);
        assert_eq!(conversation.welcome("e1"), 2);
        assert!(conversation.notice().is_none());
    }

    /// A live message that arrived before the history answer keeps its place: the page shows
    /// every message once, in seq order.
    #[test]
    fn overlapping_history_and_live_messages_show_once_in_order() {
        let mut conversation = Conversation::default();
        conversation.welcome("e1");
        conversation.insert(message(1, "a"), false);
        conversation.insert(message(4, "d"), false);
        for (seq, id) in [(2, "b"), (3, "c"), (4, "d")] {
            conversation.insert(message(seq, id), false);
        }
        assert!(!conversation.insert(message(1, "a"), false), "a duplicate is dropped");
        assert_eq!(seqs(&conversation), [1, 2, 3, 4]);
        let keys: HashSet<_> = conversation.entries().iter().map(|entry| entry.key).collect();
        assert_eq!(keys.len(), 4, "every row has its own key");
    }

    /// A relay that lost its history is a new epoch: the page says so, keeps what it showed, and
    /// numbers the new epoch's messages after them.
    #[test]
    fn a_new_epoch_is_announced_and_follows_the_old_messages() {
        let mut conversation = Conversation::default();
        conversation.welcome("e1");
        conversation.insert(message(1, "a"), false);
        conversation.insert(message(2, "b"), false);
        assert_eq!(conversation.welcome("e2"), 0);
        assert!(conversation.notice().unwrap().contains("lost its history"));
        conversation.insert(message(1, "x"), false);
        assert_eq!(seqs(&conversation), [1, 2, 1]);
        assert_eq!(conversation.last_seq(), 1);
    }

    /// Seqs of this tab's own acked messages count as seen, so they are not fetched again.
    #[test]
    fn own_messages_advance_the_resume_point() {
        let mut conversation = Conversation::default();
        conversation.welcome("e1");
        conversation.observe(5);
        assert_eq!(conversation.welcome("e1"), 5);
        assert!(conversation.is_empty());
    }
}
