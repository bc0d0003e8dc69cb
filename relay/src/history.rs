//! The conversation's history: numbered messages, the last N kept, with dedupe by message id.

use std::collections::{HashMap, VecDeque};

use wschat_protocol::v1::{ServerFrame, StoredMessage};

/// A message as a client posted it, before the relay numbers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The client's id for it (the relay makes one for tutorial clients).
    pub id: String,
    /// Who wrote it.
    pub source: String,
    /// What was written.
    pub content: String,
}

impl Posted {
    /// The message stored as number `seq`, received at `sent_at_ms`.
    #[must_use]
    pub fn numbered(self, seq: u64, sent_at_ms: u64) -> StoredMessage {
        StoredMessage { seq, id: self.id, source: self.source, content: self.content, sent_at_ms }
    }
}

/// What [`History::append`] did.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// A new message, now stored under its seq: relay it.
    New(StoredMessage),
    /// The id was already stored under this seq (a re-send after a reconnect): do not relay again.
    Duplicate(u64),
}

/// The last `capacity` messages, numbered from 1 within an epoch.
#[derive(Debug)]
pub struct History {
    epoch: String,
    capacity: usize,
    messages: VecDeque<StoredMessage>,
    /// Seq of every stored message by id. Ids of messages that fell out of the history are
    /// forgotten: a re-send that late would be stored again (the documented limit of dedupe).
    seq_by_id: HashMap<String, u64>,
    latest_seq: u64,
}

impl History {
    /// An empty history for a new `epoch`, keeping at most `capacity` messages.
    #[must_use]
    pub fn new(epoch: String, capacity: usize) -> Self {
        Self {
            epoch,
            capacity,
            messages: VecDeque::new(),
            seq_by_id: HashMap::new(),
            latest_seq: 0,
        }
    }

    /// A history that goes on from a saved one (see `crate::store`): the same `epoch`, numbering
    /// from `latest_seq + 1`, holding the last `capacity` of `messages` (oldest first) and
    /// recognising their ids as duplicates, as if the relay had never stopped.
    #[must_use]
    pub fn resume(
        epoch: String,
        capacity: usize,
        latest_seq: u64,
        messages: Vec<StoredMessage>,
    ) -> Self {
        let skip = messages.len().saturating_sub(capacity);
        let messages: VecDeque<_> = messages.into_iter().skip(skip).collect();
        let seq_by_id = messages.iter().map(|message| (message.id.clone(), message.seq)).collect();
        Self { epoch, capacity, messages, seq_by_id, latest_seq }
    }

    /// Numbers and stores `posted`, unless its id is already stored (the room does the same in
    /// two steps, [`History::seq_of`] and [`History::push`], since with a store a message is
    /// numbered before it is committed and stored after).
    #[cfg(test)]
    pub fn append(&mut self, posted: Posted, sent_at_ms: u64) -> Appended {
        if let Some(seq) = self.seq_of(&posted.id) {
            return Appended::Duplicate(seq);
        }
        let stored = posted.numbered(self.latest_seq + 1, sent_at_ms);
        self.push(stored.clone());
        Appended::New(stored)
    }

    /// The seq of the stored message with this id, if it is still stored.
    #[must_use]
    pub fn seq_of(&self, id: &str) -> Option<u64> {
        self.seq_by_id.get(id).copied()
    }

    /// Stores a message numbered elsewhere (by the room, before its commit).
    ///
    /// # Panics
    /// If `message` is not numbered `latest_seq + 1`: seqs have no gaps within an epoch.
    pub fn push(&mut self, message: StoredMessage) {
        assert_eq!(message.seq, self.latest_seq + 1, "seqs follow each other");
        self.latest_seq = message.seq;
        if self.capacity == 0 {
            return;
        }
        if self.messages.len() == self.capacity {
            if let Some(oldest) = self.messages.pop_front() {
                self.seq_by_id.remove(&oldest.id);
            }
        }
        self.seq_by_id.insert(message.id.clone(), message.seq);
        self.messages.push_back(message);
    }

    /// Forgets everything and starts over in `epoch`, from seq 1: for when the history clients
    /// have seen can no longer be continued.
    pub fn restart(&mut self, epoch: String) {
        *self = Self::new(epoch, self.capacity);
    }

    /// The epoch the seqs belong to.
    #[must_use]
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The newest seq given out (0: none yet).
    #[must_use]
    pub fn latest_seq(&self) -> u64 {
        self.latest_seq
    }

    /// The stored messages after `seq`, oldest first.
    pub fn after(&self, seq: u64) -> impl Iterator<Item = &StoredMessage> {
        // The messages are in seq order, so a binary search finds the first one.
        let first = self.messages.partition_point(|message| message.seq <= seq);
        self.messages.range(first..)
    }

    /// The oldest seq still stored (`latest + 1` when none is).
    #[must_use]
    pub fn oldest_seq(&self) -> u64 {
        self.messages.front().map_or(self.latest_seq + 1, |message| message.seq)
    }

    /// The first frame for a new v1 client.
    #[must_use]
    pub fn welcome(&self) -> ServerFrame {
        ServerFrame::Welcome {
            epoch: self.epoch.clone(),
            latest_seq: self.latest_seq,
            oldest_seq: self.oldest_seq(),
        }
    }

    /// The answer to a history request: every stored message after `after_seq`, and whether
    /// nothing between `after_seq` and the first of them has been dropped.
    #[must_use]
    pub fn answer(&self, request_id: u64, after_seq: u64) -> ServerFrame {
        let messages: Vec<_> = self.after(after_seq).cloned().collect();
        // Nothing is missing if the client is already at or past the oldest gap.
        let complete = after_seq >= self.latest_seq || after_seq + 1 >= self.oldest_seq();
        ServerFrame::History {
            request_id,
            epoch: self.epoch.clone(),
            messages,
            complete,
            more: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posted(id: &str) -> Posted {
        Posted { id: id.into(), source: "ada".into(), content: format!("text of {id}") }
    }

    fn seqs(frame: &ServerFrame) -> (Vec<u64>, bool) {
        match frame {
            ServerFrame::History { messages, complete, .. } => {
                (messages.iter().map(|message| message.seq).collect(), *complete)
            }
            other => panic!("not a history answer: {other:?}"),
        }
    }

    /// Messages are numbered 1, 2, 3, ... in the order they arrive.
    #[test]
    fn numbers_messages_in_order() {
        let mut history = History::new("e".into(), 10);
        for (n, id) in ["a", "b", "c"].into_iter().enumerate() {
            match history.append(posted(id), 0) {
                Appended::New(stored) => assert_eq!(stored.seq, n as u64 + 1),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            history.welcome(),
            ServerFrame::Welcome { epoch: "e".into(), latest_seq: 3, oldest_seq: 1 }
        );
    }

    /// A message sent twice (a retry after a reconnect) is stored once and keeps its seq.
    #[test]
    fn a_resent_message_is_a_duplicate() {
        let mut history = History::new("e".into(), 10);
        history.append(posted("a"), 0);
        history.append(posted("b"), 0);
        assert_eq!(history.append(posted("a"), 0), Appended::Duplicate(1));
        assert_eq!(seqs(&history.answer(1, 0)), (vec![1, 2], true));
    }

    /// A client that missed messages gets exactly those after its last seq.
    #[test]
    fn answers_exactly_what_was_missed() {
        let mut history = History::new("e".into(), 10);
        for id in ["a", "b", "c", "d"] {
            history.append(posted(id), 0);
        }
        assert_eq!(seqs(&history.answer(1, 2)), (vec![3, 4], true));
        assert_eq!(seqs(&history.answer(1, 4)), (vec![], true));
        assert_eq!(seqs(&history.answer(1, 0)), (vec![1, 2, 3, 4], true));
    }

    /// Only the last N are kept; a client whose last seq fell out is told the answer is not
    /// complete, and old ids are forgotten.
    #[test]
    fn keeps_the_last_n_and_says_when_history_no_longer_reaches_back() {
        let mut history = History::new("e".into(), 3);
        for id in ["a", "b", "c", "d", "e"] {
            history.append(posted(id), 0);
        }
        assert_eq!(history.oldest_seq(), 3);
        assert_eq!(seqs(&history.answer(1, 0)), (vec![3, 4, 5], false));
        assert_eq!(seqs(&history.answer(1, 1)), (vec![3, 4, 5], false));
        assert_eq!(seqs(&history.answer(1, 2)), (vec![3, 4, 5], true));
        assert!(matches!(history.append(posted("a"), 0), Appended::New(stored) if stored.seq == 6));
    }

    /// A resumed history answers, welcomes and dedupes exactly like the one that was saved, and
    /// numbers on from where it stopped.
    #[test]
    fn a_resumed_history_goes_on_where_the_saved_one_stopped() {
        let mut saved = History::new("e".into(), 3);
        for id in ["a", "b", "c", "d"] {
            saved.append(posted(id), 0);
        }
        let messages = saved.messages.iter().cloned().collect();
        let mut resumed = History::resume("e".into(), 3, saved.latest_seq, messages);
        assert_eq!(resumed.welcome(), saved.welcome());
        assert_eq!(resumed.answer(9, 1), saved.answer(9, 1));
        assert_eq!(resumed.append(posted("c"), 0), Appended::Duplicate(3));
        assert!(matches!(resumed.append(posted("e"), 0), Appended::New(stored) if stored.seq == 5));
        // Resumed with a lower limit, it keeps only the newest.
        let messages = saved.messages.iter().cloned().collect();
        let smaller = History::resume("e".into(), 1, saved.latest_seq, messages);
        assert_eq!(smaller.oldest_seq(), 4);
    }

    /// With no history kept, messages are still numbered, and any gap is reported.
    #[test]
    fn zero_capacity_numbers_but_keeps_nothing() {
        let mut history = History::new("e".into(), 0);
        history.append(posted("a"), 0);
        assert_eq!(history.oldest_seq(), 2);
        assert_eq!(seqs(&history.answer(1, 0)), (vec![], false));
        assert_eq!(seqs(&history.answer(1, 1)), (vec![], true));
    }
}
