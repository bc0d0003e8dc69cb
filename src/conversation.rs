//! The received side of the conversation: what the relay delivered, each message exactly once,
//! in order, in pages, with the newest [`KEPT`] kept and a note when something is missing.
//!
//! Messages are numbered by the relay (`seq`) within an epoch. Live messages and a history answer
//! can overlap or arrive out of order after a reconnect (the relay may queue a live message before
//! the history it follows); duplicates are dropped and each message takes its place by seq. When
//! the relay's epoch changes (it restarted without its history), the old messages stay on screen
//! and the new epoch's follow them.
//!
//! The resume point is the highest seq up to which nothing is missing ([`Conversation::resume_after`]),
//! not the highest seen: a tab that saw 1, 2 and 5 asks for everything after 2 and so fills the gap.
//!
//! Rows live in pages of about [`PAGE_SIZE`] so that the page re-renders in constant time per
//! message whatever the length: a new message touches one page (see [`Changes`]), and the list of
//! pages changes only once per [`PAGE_SIZE`] messages. Past [`KEPT`] messages the oldest pages leave
//! memory (and the page), and [`Conversation::dropped`] counts them.

use std::collections::VecDeque;
use std::sync::Arc;

use wschat_protocol::v1::{Position, StoredMessage};

/// Rows per page. Big enough that the list of pages stays short (100 pages at [`KEPT`]), small
/// enough that re-rendering one page per animation frame is cheap.
pub const PAGE_SIZE: usize = 100;

/// How many received messages a tab keeps and shows: every message of a flood of 10,000, and at
/// most one page more. Older ones are dropped a page at a time.
pub const KEPT: usize = 10_000;

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

/// A run of consecutive rows, the unit the page re-renders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Unique within the conversation; never reused.
    pub key: u64,
    /// The rows, in order. Shared with the view, which holds the same `Arc`s.
    pub rows: Vec<Arc<ReceivedMessage>>,
    /// The epoch its messages belong to (pages never mix epochs).
    epoch: u64,
}

/// What changed since the last [`Conversation::take_changes`]: what the view must redraw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Pages whose rows changed (by key).
    pub pages: Vec<u64>,
    /// Whether pages were added or dropped.
    pub page_list: bool,
    /// Whether the notice changed.
    pub notice: bool,
}

/// What the page tells the user about messages it does not show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The relay restarted without its history: messages sent while this tab was away may be
    /// missing.
    EpochChanged,
    /// The relay no longer kept some messages sent while this tab was away.
    HistoryIncomplete,
}

impl Notice {
    /// The sentence the page shows.
    #[must_use]
    pub fn text(self) -> &'static str {
        match self {
            Self::EpochChanged => {
                "The chat server restarted and lost its history: messages sent while this tab was away \
                 may be missing."
            }
            Self::HistoryIncomplete => {
                "Some messages were sent while this tab was away and the chat server no longer keeps them."
            }
        }
    }
}

/// The received messages and where this tab stands in the relay's numbering.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    pages: VecDeque<Page>,
    len: usize,
    epoch: Option<String>,
    /// Counts epochs, so pages can say which one they belong to.
    epoch_number: u64,
    /// Every seq up to this one (in the current epoch) was received, observed or is known lost.
    contiguous_seq: u64,
    /// Seqs above `contiguous_seq` already received or observed, ascending: what overtook a gap.
    ahead: Vec<u64>,
    dropped: usize,
    next_key: u64,
    notice: Option<Notice>,
    changes: Changes,
}

impl Conversation {
    /// Takes note of the relay's epoch from its welcome, and returns the seq to resume after:
    /// the last one up to which nothing is missing in that epoch, or 0 for a relay (or an epoch)
    /// this tab does not know.
    pub fn welcome(&mut self, epoch: &str) -> u64 {
        match &self.epoch {
            Some(known) if known == epoch => self.contiguous_seq,
            known => {
                if known.is_some() {
                    self.set_notice(Notice::EpochChanged);
                }
                self.epoch = Some(epoch.to_owned());
                self.epoch_number += 1;
                self.contiguous_seq = 0;
                self.ahead.clear();
                0
            }
        }
    }

    /// Adds a message unless its seq was already seen in this epoch (received, observed as this
    /// tab's own, or known lost); returns whether it was new. Within an epoch a seq names one
    /// message, so a message delivered twice (live and in a history answer) shows once.
    pub fn insert(&mut self, message: StoredMessage, mine: bool) -> bool {
        let seq = message.seq;
        if seq <= self.contiguous_seq || self.ahead.binary_search(&seq).is_ok() {
            return false;
        }
        self.observe(seq);
        let key = self.next_key;
        self.next_key += 1;
        let row = Arc::new(ReceivedMessage { key, message, mine });
        // Pages of one epoch are consecutive, at the end, and never empty (made with a row, dropped
        // whole). The page to insert into is the latest
        // one of this epoch whose first row comes before the message, searched from the end, where
        // nearly every message lands; else the epoch's first page.
        let epoch = self.epoch_number;
        let epoch_start =
            self.pages.iter().rposition(|page| page.epoch != epoch).map_or(0, |i| i + 1);
        let target = (epoch_start..self.pages.len())
            .rev()
            .find(|&index| self.pages[index].rows[0].message.seq < seq)
            .or((epoch_start < self.pages.len()).then_some(epoch_start));
        match target {
            Some(index)
                if index + 1 < self.pages.len()
                    || self.pages[index].rows.len() < PAGE_SIZE
                    || self.pages[index].rows.last().is_some_and(|r| r.message.seq > seq) =>
            {
                let page = &mut self.pages[index];
                let position = page.rows.partition_point(|r| r.message.seq < seq);
                page.rows.insert(position, row);
                let page_key = page.key;
                self.touch(page_key);
            }
            // A full last page and a message after all of it, or the epoch's first message.
            _ => self.push_page(row),
        }
        self.len += 1;
        self.drop_oldest();
        true
    }

    fn push_page(&mut self, row: Arc<ReceivedMessage>) {
        let key = self.next_key;
        self.next_key += 1;
        self.pages.push_back(Page { key, rows: vec![row], epoch: self.epoch_number });
        self.changes.page_list = true;
        self.touch(key);
    }

    fn touch(&mut self, page_key: u64) {
        if !self.changes.pages.contains(&page_key) {
            self.changes.pages.push(page_key);
        }
    }

    /// Drops whole pages from the front while at least [`KEPT`] rows remain.
    fn drop_oldest(&mut self) {
        while let Some(front) = self.pages.front() {
            if self.len - front.rows.len() < KEPT {
                break;
            }
            let page = self.pages.pop_front().expect("front() was Some");
            self.len -= page.rows.len();
            self.dropped += page.rows.len();
            self.changes.page_list = true;
            self.changes.notice = true;
        }
    }

    /// Records that `seq` exists and needs no resync (e.g. this tab's own acked message).
    pub fn observe(&mut self, seq: u64) {
        if seq <= self.contiguous_seq {
            return;
        }
        if let Err(position) = self.ahead.binary_search(&seq) {
            self.ahead.insert(position, seq);
        }
        self.advance();
    }

    /// The relay answered a history request for what follows `after_seq`, up to `through_seq`
    /// (the newest seq in the answer): nothing in between is missing any more, either because
    /// the answer held it or, when `complete` is false, because the relay no longer has it.
    pub fn history_answered(&mut self, after_seq: u64, through_seq: u64, complete: bool) {
        if !complete {
            self.set_notice(Notice::HistoryIncomplete);
        }
        if after_seq <= self.contiguous_seq && through_seq > self.contiguous_seq {
            self.contiguous_seq = through_seq;
            self.ahead.retain(|&seq| seq > through_seq);
            self.advance();
        }
    }

    fn advance(&mut self) {
        let run = self
            .ahead
            .iter()
            .zip(self.contiguous_seq + 1..)
            .take_while(|(&seq, expected)| seq == *expected)
            .count();
        if run > 0 {
            self.contiguous_seq += run as u64;
            self.ahead.drain(..run);
        }
    }

    fn set_notice(&mut self, notice: Notice) {
        self.notice = Some(notice);
        self.changes.notice = true;
    }

    /// The seq to resume after: every seq up to it was received (or is known lost).
    #[must_use]
    pub fn resume_after(&self) -> u64 {
        self.contiguous_seq
    }

    /// Where this tab stopped: the epoch it knows and [`Conversation::resume_after`]; `None`
    /// before the relay first named an epoch.
    #[must_use]
    pub fn position(&self) -> Option<Position> {
        let epoch = self.epoch.clone()?;
        Some(Position { epoch, seq: self.contiguous_seq })
    }

    /// The pages, oldest first.
    pub fn pages(&self) -> impl Iterator<Item = &Page> + '_ {
        self.pages.iter()
    }

    /// The page with this key, if it is still kept.
    #[must_use]
    pub fn page(&self, key: u64) -> Option<&Page> {
        self.pages.iter().rev().find(|page| page.key == key)
    }

    /// Every message kept, in order.
    pub fn messages(&self) -> impl Iterator<Item = &ReceivedMessage> + '_ {
        self.pages.iter().flat_map(|page| page.rows.iter().map(|row| &**row))
    }

    /// What changed since the last call; resets the record.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// What the page should tell the user about missing messages, if anything.
    #[must_use]
    pub fn notice(&self) -> Option<Notice> {
        self.notice
    }

    /// How many of the oldest messages were dropped to keep [`KEPT`].
    #[must_use]
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// How many messages are kept.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is kept.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
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

    fn numbered(seq: u64) -> StoredMessage {
        message(seq, &format!("id-{seq}"))
    }

    fn seqs(conversation: &Conversation) -> Vec<u64> {
        conversation.messages().map(|entry| entry.message.seq).collect()
    }

    /// A first visit resumes from the start; a reconnect to the same relay resumes after the last
    /// message seen.
    #[test]
    fn resumes_after_the_last_seen_seq() {
        let mut conversation = Conversation::default();
        assert_eq!(conversation.welcome("e1"), 0);
        conversation.insert(numbered(1), false);
        conversation.insert(numbered(2), false);
        assert_eq!(conversation.welcome("e1"), 2);
        assert!(conversation.notice().is_none());
    }

    /// A live message that overtook the history answer does not move the resume point past the
    /// gap: after a drop the tab asks again for what it has not seen, and the page shows every
    /// message once, in order.
    #[test]
    fn a_gap_holds_the_resume_point_until_filled() {
        let mut conversation = Conversation::default();
        conversation.welcome("e1");
        conversation.insert(numbered(1), false);
        conversation.insert(numbered(4), false);
        assert_eq!(conversation.resume_after(), 1, "2 and 3 are missing");
        assert_eq!(conversation.welcome("e1"), 1);
        for seq in [2, 3, 4] {
            conversation.insert(numbered(seq), false);
        }
        conversation.history_answered(1, 4, true);
        assert!(!conversation.insert(numbered(1), false), "a duplicate is dropped");
        assert_eq!(seqs(&conversation), [1, 2, 3, 4]);
        assert_eq!(conversation.resume_after(), 4);
        let keys: std::collections::HashSet<_> =
            conversation.messages().map(|entry| entry.key).collect();
        assert_eq!(keys.len(), 4, "every row has its own key");
    }

    /// An incomplete history answer closes the gap it could not fill, and the page says so.
    #[test]
    fn an_incomplete_history_is_announced_and_not_asked_again() {
        let mut conversation = Conversation::default();
        conversation.welcome("e1");
        conversation.insert(numbered(1), false);
        conversation.insert(numbered(9), false);
        conversation.insert(numbered(10), false);
        conversation.history_answered(1, 10, false);
        assert_eq!(conversation.notice(), Some(Notice::HistoryIncomplete));
        assert_eq!(conversation.resume_after(), 10);
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
        assert_eq!(conversation.notice(), Some(Notice::EpochChanged));
        assert!(conversation.notice().unwrap().text().contains("lost its history"));
        conversation.insert(message(1, "x"), false);
        conversation.insert(message(3, "z"), false);
        conversation.insert(message(2, "y"), false);
        assert_eq!(seqs(&conversation), [1, 2, 1, 2, 3]);
        assert_eq!(conversation.resume_after(), 3);
    }

    /// Seqs of this tab's own acked messages count as seen, so they are not fetched again.
    #[test]
    fn own_messages_advance_the_resume_point() {
        let mut conversation = Conversation::default();
        conversation.welcome("e1");
        conversation.observe(1);
        conversation.observe(2);
        assert_eq!(conversation.welcome("e1"), 2);
        assert!(conversation.is_empty());
    }

    /// Appending touches only the last page; the list of pages changes once per page.
    #[test]
    fn a_message_touches_one_page() {
        let mut conversation = Conversation::default();
        conversation.welcome("e1");
        conversation.insert(numbered(1), false);
        let first = conversation.take_changes();
        assert!(first.page_list);
        assert_eq!(first.pages.len(), 1);
        for seq in 2..=PAGE_SIZE as u64 {
            conversation.insert(numbered(seq), false);
        }
        let filled = conversation.take_changes();
        assert!(!filled.page_list, "the first page had room");
        assert_eq!(filled.pages, first.pages);
        conversation.insert(numbered(PAGE_SIZE as u64 + 1), false);
        let next = conversation.take_changes();
        assert!(next.page_list);
        assert_eq!(next.pages.len(), 1);
        assert_ne!(next.pages, first.pages);
        assert_eq!(conversation.take_changes(), Changes::default());
    }

    /// A late message lands in the page where its seq belongs, even a full one.
    #[test]
    fn a_late_message_joins_its_page() {
        let mut conversation = Conversation::default();
        conversation.welcome("e1");
        for seq in (1..=250).filter(|seq| seq % 50 != 0) {
            conversation.insert(numbered(seq), false);
        }
        conversation.take_changes();
        conversation.insert(numbered(50), false);
        let changes = conversation.take_changes();
        assert_eq!(changes.pages.len(), 1);
        assert!(!changes.page_list);
        for seq in [100, 150, 200, 250] {
            conversation.insert(numbered(seq), false);
        }
        assert_eq!(seqs(&conversation), (1..=250).collect::<Vec<_>>());
        assert_eq!(conversation.resume_after(), 250);
    }

    /// A flood of 10,000 is kept whole; past that the oldest pages go, the page says how many, and
    /// a late copy of a dropped message does not come back.
    #[test]
    fn the_oldest_pages_go_past_the_bound() {
        let mut conversation = Conversation::default();
        conversation.welcome("e1");
        for seq in 1..=KEPT as u64 {
            conversation.insert(numbered(seq), false);
        }
        assert_eq!((conversation.len(), conversation.dropped()), (KEPT, 0));
        for seq in KEPT as u64 + 1..=KEPT as u64 + 250 {
            conversation.insert(numbered(seq), false);
        }
        assert!(conversation.len() >= KEPT && conversation.len() < KEPT + PAGE_SIZE);
        assert_eq!(conversation.len() + conversation.dropped(), KEPT + 250);
        assert_eq!(conversation.dropped(), 200);
        assert!(!conversation.insert(numbered(1), false), "a dropped message stays dropped");
        assert_eq!(seqs(&conversation).first(), Some(&201));
    }
}
