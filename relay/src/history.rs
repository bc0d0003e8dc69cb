//! A room's history: numbered messages, the last N kept, answered to clients that
//! catch up in pages of bounded size. (Recognising re-sent messages is `crate::dedupe`'s, for a
//! window of its own.)

use std::collections::VecDeque;
use std::sync::Arc;

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

/// A kept message and what it takes in a history answer.
#[derive(Debug)]
struct Kept {
    /// Shared with the pages that hold it: a page is made of these without copying a message.
    message: Arc<StoredMessage>,
    /// Its JSON's length in bytes, as a history answer holds it.
    bytes: usize,
}

impl Kept {
    fn new(message: StoredMessage) -> Self {
        Self { bytes: encoded_len(&message), message: Arc::new(message) }
    }
}

/// The bytes `message` takes in a history answer, counted without building the text.
fn encoded_len(message: &StoredMessage) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Strings and integers into a writer that never fails: serialising cannot fail.
    let _ = serde_json::to_writer(&mut counter, message);
    counter.0
}

/// One answer to a history request: the messages after the requested seq, up to the bounds of
/// one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The epoch the seqs belong to.
    pub epoch: String,
    /// The messages, oldest first, shared with the history.
    pub messages: Vec<Arc<StoredMessage>>,
    /// False when messages right after the requested seq are no longer kept.
    pub complete: bool,
    /// True when the page stopped at a bound before the newest message: the client asks again
    /// after its last seq.
    pub more: bool,
}

impl Page {
    /// The answer to request `request_id` in `room`. Copies the messages: meant to be called
    /// without the room's lock.
    #[must_use]
    pub fn into_frame(self, room: &str, request_id: u64) -> ServerFrame {
        let Self { epoch, messages, complete, more } = self;
        let messages = messages.iter().map(|message| StoredMessage::clone(message)).collect();
        ServerFrame::History { room: room.to_owned(), request_id, epoch, messages, complete, more }
    }
}

/// The last `capacity` messages, numbered from 1 within an epoch.
#[derive(Debug)]
pub struct History {
    epoch: String,
    capacity: usize,
    messages: VecDeque<Kept>,
    latest_seq: u64,
}

impl History {
    /// An empty history for a new `epoch`, keeping at most `capacity` messages.
    #[must_use]
    pub fn new(epoch: String, capacity: usize) -> Self {
        Self { epoch, capacity, messages: VecDeque::new(), latest_seq: 0 }
    }

    /// A history that goes on from a saved one (see `crate::store`): the same `epoch`, numbering
    /// from `latest_seq + 1`, holding the last `capacity` of `messages` (oldest first), as if the
    /// relay had never stopped.
    #[must_use]
    pub fn resume(
        epoch: String,
        capacity: usize,
        latest_seq: u64,
        messages: Vec<StoredMessage>,
    ) -> Self {
        let skip = messages.len().saturating_sub(capacity);
        let messages = messages.into_iter().skip(skip).map(Kept::new).collect();
        Self { epoch, capacity, messages, latest_seq }
    }

    /// Numbers and stores `posted` (the room does the same in two steps, numbering before the
    /// commit and [`History::push`] after).
    #[cfg(test)]
    pub fn append(&mut self, posted: Posted, sent_at_ms: u64) -> StoredMessage {
        let stored = posted.numbered(self.latest_seq + 1, sent_at_ms);
        self.push(stored.clone());
        stored
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
            self.messages.pop_front();
        }
        self.messages.push_back(Kept::new(message));
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

    /// The oldest seq still stored (`latest + 1` when none is).
    #[must_use]
    pub fn oldest_seq(&self) -> u64 {
        self.messages.front().map_or(self.latest_seq + 1, |kept| kept.message.seq)
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

    /// The stored messages after `after_seq`, oldest first, as many as fit `max_bytes` (their
    /// JSON) and `max_messages`, and whether nothing between `after_seq` and the first of them
    /// has been dropped. Always at least one message when there is one, whatever its size, so
    /// that paging goes on. Costs a binary search and a reference count per message: cheap enough
    /// to call under the room's lock; the text is made later.
    #[must_use]
    pub fn page(&self, after_seq: u64, max_bytes: usize, max_messages: usize) -> Page {
        // The messages are in seq order, so a binary search finds the first one.
        let first = self.messages.partition_point(|kept| kept.message.seq <= after_seq);
        let mut messages = Vec::new();
        let mut bytes = 0;
        let mut more = false;
        for kept in self.messages.range(first..) {
            let full = messages.len() >= max_messages || bytes + kept.bytes > max_bytes;
            if full && !messages.is_empty() {
                more = true;
                break;
            }
            bytes += kept.bytes;
            messages.push(Arc::clone(&kept.message));
        }
        // Nothing is missing if the client is already at or past the oldest gap.
        let complete = after_seq >= self.latest_seq || after_seq + 1 >= self.oldest_seq();
        Page { epoch: self.epoch.clone(), messages, complete, more }
    }

    /// The whole answer after `after_seq`, in one page.
    #[cfg(test)]
    pub fn answer(&self, request_id: u64, after_seq: u64) -> ServerFrame {
        self.page(after_seq, usize::MAX, usize::MAX).into_frame("lobby", request_id)
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
            assert_eq!(history.append(posted(id), 0).seq, n as u64 + 1);
        }
        assert_eq!(
            history.welcome(),
            ServerFrame::Welcome { epoch: "e".into(), latest_seq: 3, oldest_seq: 1 }
        );
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
    /// complete.
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
        assert_eq!(history.append(posted("a"), 0).seq, 6);
    }

    /// A resumed history answers and welcomes exactly like the one that was saved, and numbers
    /// on from where it stopped.
    #[test]
    fn a_resumed_history_goes_on_where_the_saved_one_stopped() {
        let mut saved = History::new("e".into(), 3);
        for id in ["a", "b", "c", "d"] {
            saved.append(posted(id), 0);
        }
        let messages =
            saved.messages.iter().map(|kept| StoredMessage::clone(&kept.message)).collect();
        let mut resumed = History::resume("e".into(), 3, saved.latest_seq, messages);
        assert_eq!(resumed.welcome(), saved.welcome());
        assert_eq!(resumed.answer(9, 1), saved.answer(9, 1));
        assert_eq!(resumed.append(posted("e"), 0).seq, 5);
        // Resumed with a lower limit, it keeps only the newest.
        let messages =
            saved.messages.iter().map(|kept| StoredMessage::clone(&kept.message)).collect();
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

    /// A client catching up on more than one answer should hold gets it in pages: each cut at
    /// the byte bound or the count, whichever comes first, saying `more` until the last; each
    /// next page asked after the last seq of the one before; every message once, in order.
    #[test]
    fn answers_in_pages_cut_at_bytes_or_count() {
        let mut history = History::new("e".into(), 100);
        for n in 1..=9 {
            history.append(posted(&format!("m{n}")), 0);
        }
        let one = history.messages[0].bytes;
        assert!(history.messages.iter().all(|kept| kept.bytes == one), "same-sized messages");
        let message_frame = ServerFrame::Message {
            room: "r".into(),
            message: StoredMessage::clone(&history.messages[0].message),
        };
        assert_eq!(one + r#""type":"message","room":"r","#.len(), message_frame.to_json().len());

        let pages = |max_bytes, max_messages| {
            let (mut after, mut pages) = (0, Vec::new());
            loop {
                let page = history.page(after, max_bytes, max_messages);
                let seqs: Vec<_> = page.messages.iter().map(|message| message.seq).collect();
                assert!(page.complete);
                after = *seqs.last().unwrap();
                pages.push(seqs);
                if !page.more {
                    return pages;
                }
            }
        };
        assert_eq!(pages(3 * one, 100), [vec![1, 2, 3], vec![4, 5, 6], vec![7, 8, 9]]);
        assert_eq!(
            pages(2 * one + 1, 4),
            [vec![1, 2], vec![3, 4], vec![5, 6], vec![7, 8], vec![9]]
        );
        assert_eq!(pages(usize::MAX, 4), [vec![1, 2, 3, 4], vec![5, 6, 7, 8], vec![9]]);
        // A message larger than the bound still goes, alone, so that paging never stalls.
        assert_eq!(pages(1, 100).len(), 9);
        let last = history.page(8, 1, 100);
        assert_eq!((last.messages.len(), last.more), (1, false));
        let past = history.page(9, 1, 100);
        assert_eq!((past.messages.len(), past.more, past.complete), (0, false, true));
    }
}
