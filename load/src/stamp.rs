//! What each message carries so that the tool can time it and recognise it.
//!
//! Senders and receivers live in the same process and share one [`Clock`], so a message's
//! latency is simply the receive time minus the send time written into its content. The content
//! starts with a stamp, `wschat-load RRRRRRRR KTTTTTTTTTTTT `: the run's id (8 hex digits), the
//! kind (`m` for a measured message, `p` for a probe) and the send time in microseconds
//! (12 hex digits), then dots up to the requested size. Any relay that passes the content on
//! unchanged (JSON escaping leaves these characters alone) can be measured this way, and
//! messages from an earlier run (a relay's history, say) are told apart by their run id.
//!
//! Frames are rendered from a [`FrameTemplate`] encoded once through `wschat-protocol`: each
//! message costs one copy of the template with the stamp (and the v1 id) written over it, and no
//! JSON encoding.

use std::hash::{BuildHasher, Hasher};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use memchr::memmem::Finder;

use wschat_protocol::v1::ClientFrame;
use wschat_protocol::ChatMessage;

use crate::plan::Protocol;

const MARKER: &str = "wschat-load ";
/// The marker's searcher, built once: `str::find` would build one per received frame.
static MARKER_FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(MARKER));
const RUN_AT: usize = MARKER.len();
const KIND_AT: usize = RUN_AT + 9;
const TIME_AT: usize = KIND_AT + 1;
const TIME_DIGITS: usize = 12;
/// The shortest content that holds a stamp (the marker, run id, kind, time and a space).
pub const STAMP_BYTES: usize = TIME_AT + TIME_DIGITS + 1;

/// Microseconds since the run started, the time base of every stamp.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose zero is now.
    #[must_use]
    pub fn start() -> Self {
        Self { origin: Instant::now() }
    }

    /// Microseconds since the clock started.
    #[must_use]
    pub fn micros(&self) -> u64 {
        // u64 microseconds last 584,000 years.
        self.origin.elapsed().as_micros() as u64
    }

    /// The instant `micros` after the clock started.
    #[must_use]
    pub fn instant(&self, micros: u64) -> Instant {
        self.origin + Duration::from_micros(micros)
    }
}

/// Tells this run's messages from anyone else's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunId(pub u32);

impl RunId {
    /// A random id (from the standard library's randomly seeded hasher: no dependency needed).
    #[must_use]
    pub fn random() -> Self {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher
            .write_u128(std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap_or_default().as_nanos());
        Self(hasher.finish() as u32)
    }
}

/// What a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Counted and timed.
    Measured,
    /// Sent before the measurement until every receiver has seen one, so that no receiver misses
    /// the first measured messages because the relay had not finished admitting it.
    Probe,
}

impl Kind {
    fn letter(self) -> u8 {
        match self {
            Self::Measured => b'm',
            Self::Probe => b'p',
        }
    }
}

/// A stamp read back from a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub kind: Kind,
    /// Send time, on the run's [`Clock`].
    pub sent_at: u64,
}

/// What a received frame's stamp says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// One of this run's messages.
    Ours(Stamp),
    /// A message from another run of the tool (e.g. replayed from the relay's history).
    Foreign,
    /// No stamp: not a message from the tool.
    None,
}

impl Stamp {
    /// Looks for a stamp in a frame's text.
    #[must_use]
    pub fn find(text: &str, run: RunId) -> Found {
        let Some(at) = MARKER_FINDER.find(text.as_bytes()) else {
            return Found::None;
        };
        let bytes = &text.as_bytes()[at..];
        if bytes.len() < STAMP_BYTES {
            return Found::Foreign;
        }
        if parse_hex(&bytes[RUN_AT..RUN_AT + 8]) != Some(u64::from(run.0)) {
            return Found::Foreign;
        }
        let kind = match bytes[KIND_AT] {
            b'm' => Kind::Measured,
            b'p' => Kind::Probe,
            _ => return Found::Foreign,
        };
        match parse_hex(&bytes[TIME_AT..TIME_AT + TIME_DIGITS]) {
            Some(sent_at) => Found::Ours(Stamp { kind, sent_at }),
            None => Found::Foreign,
        }
    }
}

/// A v1 message id: a UUID-shaped string that names the run, the sender and the message, so
/// that an ack can be matched to its send time without a lookup table:
/// `RRRRRRRR-SSSS-8000-800P-CCCCCCCCCCCC` (run, sender, probe flag, counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageId {
    pub sender: u16,
    pub probe: bool,
    /// The sender's message number, from 0 (48 bits are written).
    pub counter: u64,
}

impl MessageId {
    const PLACEHOLDER: &'static str = "00000000-0000-8000-8000-000000000000";

    /// Reads an id this run made; `None` for anyone else's.
    #[must_use]
    pub fn parse(id: &str, run: RunId) -> Option<Self> {
        let bytes = id.as_bytes();
        if bytes.len() != Self::PLACEHOLDER.len() || parse_hex(&bytes[0..8])? != u64::from(run.0) {
            return None;
        }
        Some(Self {
            sender: u16::try_from(parse_hex(&bytes[9..13])?).ok()?,
            probe: parse_hex(&bytes[19..23])? == 0x8001,
            counter: parse_hex(&bytes[24..36])?,
        })
    }

    fn write(self, run: RunId, into: &mut [u8]) {
        write_hex(&mut into[0..8], u64::from(run.0));
        write_hex(&mut into[9..13], u64::from(self.sender));
        write_hex(&mut into[19..23], if self.probe { 0x8001 } else { 0x8000 });
        write_hex(&mut into[24..36], self.counter);
    }
}

/// One sender's message frame, encoded once, with the places its stamp and id go.
#[derive(Debug, Clone)]
pub struct FrameTemplate {
    text: Vec<u8>,
    run: RunId,
    stamp_at: usize,
    id_at: Option<usize>,
}

impl FrameTemplate {
    /// The frame `source` sends in `protocol` (in v1, to `room`), with a content of
    /// `content_bytes` bytes (at least [`STAMP_BYTES`]; shorter is raised to that).
    #[must_use]
    pub fn new(
        protocol: Protocol,
        run: RunId,
        room: &str,
        source: &str,
        content_bytes: usize,
    ) -> Self {
        let mut content = format!("{MARKER}{:08x} m{:012x} ", run.0, 0);
        let padding = content_bytes.saturating_sub(content.len());
        content.extend(std::iter::repeat_n('.', padding));
        let text = match protocol {
            Protocol::Tutorial => ChatMessage { source: source.to_owned(), content }.to_json(),
            Protocol::V1 => ClientFrame::Message {
                room: room.to_owned(),
                id: MessageId::PLACEHOLDER.to_owned(),
                source: source.to_owned(),
                content,
            }
            .to_json(),
        };
        let stamp_at = text.find(MARKER).expect("the content holds the marker");
        let id_at = match protocol {
            Protocol::Tutorial => None,
            Protocol::V1 => {
                Some(text.find(MessageId::PLACEHOLDER).expect("the frame holds the id"))
            }
        };
        Self { text: text.into_bytes(), run, stamp_at, id_at }
    }

    /// The frame text for one message: one allocation, the size of the frame.
    #[must_use]
    pub fn render(&self, stamp: Stamp, id: Option<MessageId>) -> String {
        let mut text = self.text.clone();
        let at = self.stamp_at;
        text[at + KIND_AT] = stamp.kind.letter();
        write_hex(&mut text[at + TIME_AT..at + TIME_AT + TIME_DIGITS], stamp.sent_at);
        if let (Some(at), Some(id)) = (self.id_at, id) {
            id.write(self.run, &mut text[at..at + MessageId::PLACEHOLDER.len()]);
        }
        String::from_utf8(text).expect("ASCII hex digits written over ASCII keep the text UTF-8")
    }
}

/// Writes `value` as lower-case hex into all of `into`, keeping the lowest digits.
fn write_hex(into: &mut [u8], mut value: u64) {
    for digit in into.iter_mut().rev() {
        *digit = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
    }
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0_u64, |value, &digit| {
        let nibble = char::from(digit).to_digit(16)?;
        Some(value << 4 | u64::from(nibble))
    })
}

#[cfg(test)]
mod tests {
    use wschat_protocol::v1::ClientFrame;
    use wschat_protocol::ChatMessage;

    use super::*;

    /// A rendered tutorial frame is the tutorial's JSON, its content the requested size, and its
    /// stamp reads back as written.
    #[test]
    fn tutorial_frame_round_trip() {
        let run = RunId(0xdead_beef);
        let template = FrameTemplate::new(Protocol::Tutorial, run, "lobby", "load-0", 100);
        let text = template.render(Stamp { kind: Kind::Measured, sent_at: 123_456_789 }, None);
        let message = ChatMessage::from_json(&text).unwrap();
        assert_eq!(message.source, "load-0");
        assert_eq!(message.content.len(), 100);
        assert_eq!(
            Stamp::find(&text, run),
            Found::Ours(Stamp { kind: Kind::Measured, sent_at: 123_456_789 })
        );
        assert_eq!(Stamp::find(&text, RunId(1)), Found::Foreign);
        assert_eq!(Stamp::find(r#"{"source":"a","content":"hi"}"#, run), Found::None);
    }

    /// A rendered v1 frame carries an id that names its sender and number.
    #[test]
    fn v1_frame_carries_its_id() {
        let run = RunId(7);
        let template = FrameTemplate::new(Protocol::V1, run, "load-1", "load-3", 10);
        let id = MessageId { sender: 3, probe: true, counter: 42 };
        let text = template.render(Stamp { kind: Kind::Probe, sent_at: 5 }, Some(id));
        let ClientFrame::Message { room, id: wire_id, content, .. } =
            ClientFrame::from_json(&text).unwrap()
        else {
            panic!("not a message: {text}");
        };
        assert_eq!(room, "load-1");
        assert_eq!(content.len(), STAMP_BYTES, "raised to the stamp's size");
        assert_eq!(MessageId::parse(&wire_id, run), Some(id));
        assert_eq!(MessageId::parse(&wire_id, RunId(8)), None);
        assert_eq!(Stamp::find(&text, run), Found::Ours(Stamp { kind: Kind::Probe, sent_at: 5 }));
    }
}
