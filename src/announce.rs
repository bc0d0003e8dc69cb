//! What the page says aloud about messages that arrive live, a burst at a time.
//!
//! A screen reader hears one announcement per burst, once the room has been quiet for
//! [`QUIET_MS`] (or [`LONGEST_WAIT_MS`] after the burst began, so a steady stream is still heard
//! now and then): a message alone is read out with its author, a burst is counted and its newest
//! message read out. Messages from a history answer and the user's own never count: the session
//! tells them apart (see `RoomChanges::arrived`).

/// A burst ends after this long without a new message.
pub const QUIET_MS: f64 = 1_000.0;

/// A burst that goes on is announced this long after it began all the same.
pub const LONGEST_WAIT_MS: f64 = 5_000.0;

/// The newest message's content is cut to this many bytes in an announcement.
const SPOKEN_BYTES: usize = 140;

/// The burst of live messages not announced yet.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Burst {
    count: usize,
    began_at: f64,
    last_at: f64,
    latest: String,
}

impl Burst {
    /// `count` messages arrived at `now_ms`, the newest from `source` saying `content`. Returns
    /// whether they begin a burst (then the caller waits until [`Burst::due_at`]).
    pub fn arrived(&mut self, count: usize, source: &str, content: &str, now_ms: f64) -> bool {
        let begins = self.count == 0;
        if begins {
            self.began_at = now_ms;
        }
        self.count += count;
        self.last_at = now_ms;
        self.latest.clear();
        self.latest.push_str(source);
        self.latest.push_str(": ");
        push_start(&mut self.latest, content, SPOKEN_BYTES);
        begins
    }

    /// When the burst going on will be over, if one is.
    #[must_use]
    pub fn due_at(&self) -> Option<f64> {
        (self.count > 0).then(|| (self.last_at + QUIET_MS).min(self.began_at + LONGEST_WAIT_MS))
    }

    /// The announcement, if the burst is over at `now_ms`; the next message begins a new one.
    pub fn take(&mut self, now_ms: f64) -> Option<String> {
        if self.due_at()? > now_ms {
            return None;
        }
        let said = match std::mem::take(&mut self.count) {
            1 => std::mem::take(&mut self.latest),
            count => {
                let mut said = String::new();
                push_number(&mut said, count);
                said.push_str(" new messages; the latest, ");
                said.push_str(&self.latest);
                said
            }
        };
        Some(said)
    }
}

/// Appends `number` in decimal digits to `out` (`to_string` would bring integer formatting
/// into the bundle for this one use).
fn push_number(out: &mut String, number: usize) {
    if number >= 10 {
        push_number(out, number / 10);
    }
    out.push(char::from(b'0' + (number % 10) as u8));
}

/// Appends the start of `text`, at most `bytes` long (cut between two characters), to `out`,
/// and "…" if that is not all of it. (Bytes, not characters: the same for most text, and
/// cheaper to count.)
pub fn push_start(out: &mut String, text: &str, bytes: usize) {
    if text.len() <= bytes {
        out.push_str(text);
        return;
    }
    let mut cut = bytes;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    out.push_str(&text[..cut]);
    out.push('…');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message alone is read out with its author once the room is quiet.
    #[test]
    fn a_message_alone_is_read_out() {
        let mut burst = Burst::default();
        assert_eq!(burst.due_at(), None);
        assert!(burst.arrived(1, "bob", "hello", 10_000.0));
        assert_eq!(burst.due_at(), Some(11_000.0));
        assert_eq!(burst.take(10_999.0), None, "not quiet yet");
        assert_eq!(burst.take(11_000.0).as_deref(), Some("bob: hello"));
        assert_eq!(burst.take(20_000.0), None, "said once");
        assert_eq!(burst.due_at(), None);
    }

    /// Messages that keep coming make one announcement, counted, with the newest read out.
    #[test]
    fn a_burst_is_one_announcement() {
        let mut burst = Burst::default();
        assert!(burst.arrived(2, "bob", "one", 0.0));
        assert!(!burst.arrived(1, "cy", "two", 400.0), "the same burst");
        assert!(!burst.arrived(3, "bob", "three", 900.0));
        assert_eq!(burst.take(1_500.0), None, "still coming");
        assert_eq!(burst.due_at(), Some(1_900.0));
        assert_eq!(burst.take(1_900.0).as_deref(), Some("6 new messages; the latest, bob: three"));
        assert!(burst.arrived(1, "cy", "later", 5_000.0), "a new burst");
    }

    /// A stream that never pauses is still announced, every few seconds.
    #[test]
    fn a_steady_stream_is_heard_now_and_then() {
        let mut burst = Burst::default();
        let mut said = Vec::new();
        let mut now = 0.0;
        while now < 12_000.0 {
            burst.arrived(1, "bot", "tick", now);
            said.extend(burst.take(now));
            now += 500.0;
        }
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said[0].starts_with("11 new messages"), "{said:?}");
        let mut numbers = String::new();
        for number in [0, 7, 10, 305] {
            push_number(&mut numbers, number);
            numbers.push(' ');
        }
        assert_eq!(numbers, "0 7 10 305 ");
    }

    /// A long message is cut in the announcement (the page shows it whole).
    #[test]
    fn long_messages_are_cut() {
        let mut burst = Burst::default();
        let long = "é".repeat(500);
        burst.arrived(1, "bob", &long, 0.0);
        let said = burst.take(QUIET_MS).unwrap();
        assert_eq!(said, format!("bob: {}…", "é".repeat(SPOKEN_BYTES / 2)));
        let mut out = String::new();
        push_start(&mut out, "aé", 2);
        assert_eq!(out, "a…", "cut between two characters");
    }
}
