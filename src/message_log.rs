//! The lists of sent and received messages: append-only, each entry with a stable id so the page
//! can render them as a keyed list.

use wschat_protocol::ChatMessage;

/// One message in a log, with the id that keys it in the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedMessage {
    /// Unique within its log, in arrival order.
    pub id: u64,
    /// The message itself.
    pub message: ChatMessage,
}

/// An append-only list of messages in the order they were sent or received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageLog {
    entries: Vec<LoggedMessage>,
    next_id: u64,
}

impl MessageLog {
    /// Appends a message and returns the id it was given.
    pub fn push(&mut self, message: ChatMessage) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push(LoggedMessage { id, message });
        id
    }

    /// The messages, oldest first.
    #[must_use]
    pub fn entries(&self) -> &[LoggedMessage] {
        &self.entries
    }

    /// How many messages the log holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the log is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(content: &str) -> ChatMessage {
        ChatMessage { source: "tab".into(), content: content.into() }
    }

    /// Messages keep their order, and identical messages still get distinct ids (two "ok"s in a
    /// row are two rows, not one).
    #[test]
    fn keeps_order_and_gives_distinct_ids() {
        let mut log = MessageLog::default();
        let first = log.push(message("ok"));
        let second = log.push(message("ok"));
        let third = log.push(message("bye"));
        assert!(first < second && second < third);
        let contents: Vec<_> = log.entries().iter().map(|e| e.message.content.as_str()).collect();
        assert_eq!(contents, ["ok", "ok", "bye"]);
        assert_eq!(log.len(), 3);
    }
}
