//! A corpus of bad input, frame by frame against the real relay: each frame gets its expected
//! answer, and the clients connected throughout see none of it and keep chatting.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;
use wschat_protocol::v1::ServerFrame;
use wschat_protocol::{ChatMessage, ErrorCode, RelayFrame};
use wschat_relay::{Config, RateLimit};

/// Which protocol the sending client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum By {
    /// A tutorial-mode client (no subprotocol).
    Tutorial,
    /// A client speaking `wschat.v1`.
    V1,
}

/// What goes on the wire.
enum Sent {
    Text(String),
    Binary(Vec<u8>),
    /// A text frame whose payload is not UTF-8: `Message::text` cannot hold one, so the frame is
    /// built by hand.
    NotUtf8Text(Vec<u8>),
    /// The same text frame this many times, sent before any answer is read.
    Burst(String, usize),
}

impl Sent {
    fn frames(&self) -> Vec<Message> {
        match self {
            Self::Text(text) => vec![Message::text(text.as_str())],
            Self::Binary(bytes) => vec![Message::binary(bytes.clone())],
            Self::NotUtf8Text(bytes) => {
                vec![Message::Frame(Frame::message(bytes.clone(), OpCode::Data(Data::Text), true))]
            }
            Self::Burst(text, count) => vec![Message::text(text.as_str()); *count],
        }
    }
}

/// What the relay should do with the frame.
enum Expect {
    /// An error frame with this code, to the sender only (one per frame of a burst).
    Refused(ErrorCode),
    /// Relayed to everyone else as this message (a v1 sender gets an ack).
    Accepted { source: String, content: String },
    /// A v1 ping answered with a pong.
    Pong(u64),
    /// The sender's connection closed with this code; nobody else notices.
    Closed(CloseCode),
}

struct Case {
    name: String,
    by: By,
    sent: Sent,
    expect: Expect,
}

fn case(name: &str, by: By, sent: Sent, expect: Expect) -> Case {
    Case { name: name.to_owned(), by, sent, expect }
}

fn refused(name: &str, by: By, text: impl Into<String>, code: ErrorCode) -> Case {
    case(name, by, Sent::Text(text.into()), Expect::Refused(code))
}

fn accepted(name: &str, by: By, text: impl Into<String>, source: &str, content: &str) -> Case {
    let expect = Expect::Accepted { source: source.into(), content: content.into() };
    case(name, by, Sent::Text(text.into()), expect)
}

/// The same frame from a tutorial client and from a v1 client, refused the same way.
fn refused_by_both(name: &str, text: impl Into<String>, code: ErrorCode) -> [Case; 2] {
    let text = text.into();
    [
        refused(&format!("{name} (tutorial)"), By::Tutorial, text.clone(), code),
        refused(&format!("{name} (v1)"), By::V1, text, code),
    ]
}

/// A tutorial chat frame; `source` and `content` are JSON already (quoted, escaped or not).
fn chat_json(source: &str, content: &str) -> String {
    format!(r#"{{"source":{source},"content":{content}}}"#)
}

/// A v1 message frame; `content` is JSON already.
fn v1_json(id: &str, content: &str) -> String {
    format!(r#"{{"type":"message","id":"{id}","source":"ada","content":{content}}}"#)
}

/// Every case, in the order they are sent.
fn corpus() -> Vec<Case> {
    use By::{Tutorial, V1};
    use ErrorCode::*;
    let mut cases = Vec::new();

    // Malformed JSON.
    cases.extend(refused_by_both("not JSON at all", "hello", InvalidJson));
    cases.extend(refused_by_both("an empty text frame", "", InvalidJson));
    cases.extend(refused_by_both("only whitespace", " \r\n\t ", InvalidJson));
    cases.extend(refused_by_both("an unclosed brace", "{", InvalidJson));
    cases.extend(refused_by_both("truncated", r#"{"source":"a","content":"b""#, InvalidJson));
    cases.extend(refused_by_both(
        "a trailing comma",
        r#"{"source":"a","content":"b",}"#,
        InvalidJson,
    ));
    cases.push(refused("single quotes", Tutorial, "{'source':'a','content':'b'}", InvalidJson));
    cases.push(refused("unquoted keys", Tutorial, r#"{source:"a",content:"b"}"#, InvalidJson));
    cases.push(refused(
        "a comment before the object",
        Tutorial,
        "// hi\n{\"source\":\"a\",\"content\":\"b\"}",
        InvalidJson,
    ));
    cases.extend(refused_by_both(
        "garbage after the object",
        r#"{"type":"ping","request_id":1,"source":"a","content":"b"} x"#,
        InvalidJson,
    ));
    cases.push(refused(
        "two objects in one frame",
        Tutorial,
        r#"{"source":"a","content":"b"}{"source":"a","content":"b"}"#,
        InvalidJson,
    ));
    cases.push(refused("NaN as a value", Tutorial, chat_json(r#""a""#, "NaN"), InvalidJson));
    cases.push(refused(
        "an unknown escape",
        Tutorial,
        chat_json(r#""a""#, r#""\x41""#),
        InvalidJson,
    ));
    cases.push(refused(
        "a raw NUL inside a JSON string",
        Tutorial,
        chat_json(r#""a""#, "\"a\0b\""),
        InvalidJson,
    ));
    cases.push(refused(
        "a raw line feed inside a JSON string",
        V1,
        v1_json("raw-lf", "\"a\nb\""),
        InvalidJson,
    ));
    cases.push(refused(
        "a byte order mark before the object",
        Tutorial,
        format!("\u{feff}{}", chat_json(r#""a""#, r#""b""#)),
        InvalidJson,
    ));
    cases.extend(refused_by_both(
        "a lone leading surrogate escape",
        v1_json("lone-high", r#""\ud800""#),
        InvalidJson,
    ));
    cases.push(refused(
        "a lone trailing surrogate escape",
        Tutorial,
        chat_json(r#""a""#, r#""x\udc00y""#),
        InvalidJson,
    ));
    cases.push(refused(
        "a surrogate pair in the wrong order",
        V1,
        v1_json("swapped-pair", r#""\ude00\ud83d""#),
        InvalidJson,
    ));

    // Deeply nested: serde_json stops at 128 levels, long before the stack is in danger.
    cases.extend(refused_by_both("10,000 opening brackets", "[".repeat(10_000), InvalidJson));
    cases.push(refused(
        "10,000 nested objects",
        Tutorial,
        format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000)),
        InvalidJson,
    ));
    cases.push(refused(
        "200 balanced brackets",
        V1,
        format!("{}{}", "[".repeat(200), "]".repeat(200)),
        InvalidJson,
    ));
    cases.push(refused(
        "content nested 100 deep",
        Tutorial,
        chat_json(r#""a""#, &format!("{}{}", "[".repeat(100), "]".repeat(100))),
        InvalidMessage,
    ));

    // Wrong types and shapes.
    cases.extend(refused_by_both("an array instead of an object", r#"["a","b"]"#, InvalidMessage));
    cases.push(refused("a v1 frame as an array", V1, r#"["ping",1]"#, InvalidMessage));
    cases.extend(refused_by_both("a bare number", "42", InvalidMessage));
    cases.extend(refused_by_both("a bare string", r#""hello""#, InvalidMessage));
    cases.extend(refused_by_both("null", "null", InvalidMessage));
    cases.push(refused("true", Tutorial, "true", InvalidMessage));
    cases.push(refused(
        "a number as the source",
        Tutorial,
        chat_json("1", r#""b""#),
        InvalidMessage,
    ));
    cases.push(refused(
        "a number as the content",
        Tutorial,
        chat_json(r#""a""#, "2"),
        InvalidMessage,
    ));
    cases.push(refused(
        "a boolean as the content",
        Tutorial,
        chat_json(r#""a""#, "true"),
        InvalidMessage,
    ));
    cases.push(refused(
        "an object as the content",
        Tutorial,
        chat_json(r#""a""#, r#"{"text":"b"}"#),
        InvalidMessage,
    ));
    cases.push(refused(
        "an array as the content",
        V1,
        v1_json("array", r#"["b"]"#),
        InvalidMessage,
    ));
    cases.push(refused("a null source", Tutorial, chat_json("null", r#""b""#), InvalidMessage));
    cases.push(refused("a null content", V1, v1_json("null-content", "null"), InvalidMessage));
    cases.push(refused(
        "a number as the message id",
        V1,
        r#"{"type":"message","id":7,"source":"a","content":"b"}"#,
        InvalidMessage,
    ));
    cases.push(refused(
        "a string request id",
        V1,
        r#"{"type":"ping","request_id":"1"}"#,
        InvalidMessage,
    ));
    cases.push(refused(
        "a fractional request id",
        V1,
        r#"{"type":"ping","request_id":1.5}"#,
        InvalidMessage,
    ));
    cases.push(refused(
        "a request id past u64",
        V1,
        r#"{"type":"ping","request_id":18446744073709551616}"#,
        InvalidMessage,
    ));
    cases.push(refused(
        "a negative seq",
        V1,
        r#"{"type":"history","request_id":1,"after_seq":-1}"#,
        InvalidMessage,
    ));
    cases.push(refused("a number as the type", V1, r#"{"type":1,"request_id":1}"#, InvalidMessage));
    cases.push(refused(
        "an unknown type",
        V1,
        r#"{"type":"shout","content":"hi"}"#,
        InvalidMessage,
    ));
    cases.push(refused(
        "the type in capitals",
        V1,
        r#"{"type":"PING","request_id":1}"#,
        InvalidMessage,
    ));
    cases.push(refused(
        "an empty message id",
        V1,
        r#"{"type":"message","id":"","source":"a","content":"b"}"#,
        InvalidMessage,
    ));
    cases.push(refused(
        "a 129-byte message id",
        V1,
        v1_json(&"i".repeat(129), r#""b""#),
        InvalidMessage,
    ));

    // Missing fields.
    cases.extend(refused_by_both("an empty object", "{}", InvalidMessage));
    cases.push(refused("no content", Tutorial, r#"{"source":"a"}"#, InvalidMessage));
    cases.push(refused("no source", Tutorial, r#"{"content":"b"}"#, InvalidMessage));
    cases.push(refused(
        "keys in capitals",
        Tutorial,
        r#"{"Source":"a","Content":"b"}"#,
        InvalidMessage,
    ));
    cases.push(refused(
        "a tutorial frame to a v1 relay",
        V1,
        chat_json(r#""a""#, r#""b""#),
        InvalidMessage,
    ));
    cases.push(refused(
        "a message without an id",
        V1,
        r#"{"type":"message","source":"a","content":"b"}"#,
        InvalidMessage,
    ));
    cases.push(refused("a ping without a request id", V1, r#"{"type":"ping"}"#, InvalidMessage));
    cases.push(refused(
        "a history without after_seq",
        V1,
        r#"{"type":"history","request_id":1}"#,
        InvalidMessage,
    ));

    // Duplicate keys: the tutorial decoder goes through `serde_json::Value`, where the last one
    // wins; v1 frames are decoded directly, and serde refuses the duplicate.
    cases.push(accepted(
        "duplicate keys, last one wins (tutorial)",
        Tutorial,
        r#"{"source":"first","source":"second","content":"duplicate keys"}"#,
        "second",
        "duplicate keys",
    ));
    cases.push(refused(
        "duplicate keys (v1)",
        V1,
        r#"{"type":"message","id":"dup","id":"dup2","source":"a","content":"b"}"#,
        InvalidMessage,
    ));

    // Blank fields.
    cases.push(refused("an empty source", Tutorial, chat_json(r#""""#, r#""b""#), SourceInvalid));
    cases.push(refused(
        "a blank source",
        Tutorial,
        chat_json(r#"" \t ""#, r#""b""#),
        SourceInvalid,
    ));
    cases.push(refused("an empty content", Tutorial, chat_json(r#""a""#, r#""""#), ContentInvalid));
    cases.push(refused("a blank content", V1, v1_json("blank", r#"" \n\r\t ""#), ContentInvalid));
    cases.push(refused(
        "only no-break spaces",
        Tutorial,
        chat_json(r#""a""#, "\"\u{a0}\u{a0}\""),
        ContentInvalid,
    ));
    cases.push(refused(
        "only an ideographic space",
        V1,
        v1_json("ideographic", "\"\u{3000}\""),
        ContentInvalid,
    ));

    // NUL and control characters, escaped as JSON allows.
    cases.push(refused(
        "NUL in the content",
        Tutorial,
        chat_json(r#""a""#, r#""a\u0000b""#),
        ContentInvalid,
    ));
    cases.push(refused(
        "NUL in the content (v1)",
        V1,
        v1_json("nul", r#""a\u0000b""#),
        ContentInvalid,
    ));
    cases.push(refused(
        "NUL in the source",
        Tutorial,
        chat_json(r#""a\u0000""#, r#""b""#),
        SourceInvalid,
    ));
    cases.push(refused(
        "an ANSI clear-screen sequence",
        Tutorial,
        chat_json(r#""a""#, r#""\u001b[2J\u001b[Hgone""#),
        ContentInvalid,
    ));
    cases.push(refused(
        "an OSC title sequence",
        V1,
        v1_json("osc", r#""\u001b]0;pwned\u0007""#),
        ContentInvalid,
    ));
    cases.push(refused("a bell", Tutorial, chat_json(r#""a""#, r#""ding\u0007""#), ContentInvalid));
    cases.push(refused(
        "a backspace",
        Tutorial,
        chat_json(r#""a""#, r#""abc\b\b\bxyz""#),
        ContentInvalid,
    ));
    cases.push(refused("DEL", Tutorial, chat_json(r#""a""#, r#""x\u007f""#), ContentInvalid));
    cases.push(refused("a C1 CSI", V1, v1_json("c1-csi", r#""\u009b31m red""#), ContentInvalid));
    cases.push(refused(
        "a C1 next-line",
        Tutorial,
        chat_json(r#""a""#, r#""a\u0085b""#),
        ContentInvalid,
    ));
    cases.push(refused(
        "a tab in the source",
        Tutorial,
        chat_json(r#""a\tb""#, r#""c""#),
        SourceInvalid,
    ));
    cases.push(refused(
        "a line feed in the source",
        Tutorial,
        chat_json(r#""a\nb""#, r#""c""#),
        SourceInvalid,
    ));
    cases.push(accepted(
        "line breaks and tabs in the content",
        Tutorial,
        chat_json(r#""a""#, r#""one\r\ntwo\n\tthree""#),
        "a",
        "one\r\ntwo\n\tthree",
    ));

    // Odd but valid Unicode: format characters, emoji, combining marks, noncharacters. The app
    // shows content as text, so these are passed on as they are.
    let odd = [
        ("a right-to-left override", "evil\u{202e}gnp.exe"),
        ("a right-to-left mark", "שלום\u{200f} hi"),
        ("a zero-width joiner family", "👨\u{200d}👩\u{200d}👧"),
        ("stacked combining marks", "Z\u{335}\u{321}\u{322}a\u{337}l\u{338}g\u{336}o\u{335}"),
        ("the noncharacter U+FFFF", "a\u{ffff}b"),
        ("the last code point U+10FFFF", "\u{10ffff}"),
        ("a byte order mark in the content", "\u{feff}hi"),
        ("a line separator", "one\u{2028}two"),
        ("private use", "\u{e000}\u{f8ff}"),
    ];
    for (n, (name, content)) in odd.into_iter().enumerate() {
        let json = serde_json::to_string(content).unwrap();
        let (by, text) = if n % 2 == 0 {
            (Tutorial, chat_json(r#""a""#, &json))
        } else {
            (V1, v1_json(&format!("odd-{n}"), &json))
        };
        let source = if by == Tutorial { "a" } else { "ada" };
        cases.push(accepted(name, by, text, source, content));
    }
    cases.push(accepted(
        "an escaped surrogate pair",
        Tutorial,
        chat_json(r#""a""#, r#""\ud83d\ude00""#),
        "a",
        "😀",
    ));
    // Invisible only is blank, and a name cannot reorder itself to pass for another.
    cases.push(refused(
        "only zero-width characters",
        Tutorial,
        chat_json(r#""a""#, "\"\u{200b}\u{feff}\u{2060}\""),
        ErrorCode::ContentInvalid,
    ));
    cases.push(refused(
        "a right-to-left override in the source",
        Tutorial,
        chat_json("\"ada\u{202e}\"", r#""hi""#),
        ErrorCode::SourceInvalid,
    ));
    let emoji_name = "🎉".repeat(64);
    cases.push(accepted(
        "a source of 64 emoji",
        Tutorial,
        chat_json(&format!("\"{emoji_name}\""), r#""hi""#),
        &emoji_name,
        "hi",
    ));

    // Extra fields are ignored, in both protocols.
    cases.push(accepted(
        "extra fields (tutorial)",
        Tutorial,
        r#"{"source":"a","content":"extra","id":7,"admin":true,"seq":1}"#,
        "a",
        "extra",
    ));
    cases.push(accepted(
        "a v1 envelope from a tutorial client",
        Tutorial,
        r#"{"type":"message","id":"x","source":"a","content":"envelope"}"#,
        "a",
        "envelope",
    ));
    cases.push(accepted(
        "an extra field nested 100 deep",
        Tutorial,
        format!(r#"{{"source":"a","content":"deep","x":{}{}}}"#, "[".repeat(100), "]".repeat(100)),
        "a",
        "deep",
    ));
    cases.push(accepted(
        "extra fields (v1)",
        V1,
        r#"{"type":"message","id":"extra","source":"ada","content":"extra","seq":99,"sent_at_ms":1}"#,
        "ada",
        "extra",
    ));
    cases.push(case(
        "a ping with extra fields",
        V1,
        Sent::Text(r#"{"type":"ping","request_id":77,"payload":[1,2,3]}"#.into()),
        Expect::Pong(77),
    ));

    // Long fields and huge frames.
    cases.push(refused(
        "a 65-character source",
        Tutorial,
        chat_json(&format!("\"{}\"", "n".repeat(65)), r#""b""#),
        TooLong,
    ));
    let longest = "c".repeat(10_000);
    cases.push(accepted(
        "content of exactly 10,000 characters",
        Tutorial,
        chat_json(r#""a""#, &format!("\"{longest}\"")),
        "a",
        &longest,
    ));
    cases.push(refused(
        "content of 10,001 characters",
        V1,
        v1_json("long", &format!("\"{}\"", "c".repeat(10_001))),
        TooLong,
    ));
    // Within the 64 KiB frame limit, so the relay reads it and then measures the content.
    cases.push(refused(
        "content of 65,000 characters",
        Tutorial,
        chat_json(r#""a""#, &format!("\"{}\"", "c".repeat(65_000))),
        TooLong,
    ));
    cases.push(refused(
        "10,001 escaped characters",
        Tutorial,
        chat_json(r#""a""#, &format!("\"{}\"", r"\u00e9".repeat(10_001))),
        TooLong,
    ));
    let huge = chat_json(r#""a""#, &format!("\"{}\"", "c".repeat(70_000)));
    cases.push(case(
        "a 70 kB text frame (tutorial)",
        Tutorial,
        Sent::Text(huge.clone()),
        Expect::Closed(CloseCode::Size),
    ));
    cases.push(case(
        "a 70 kB text frame (v1)",
        V1,
        Sent::Text(huge),
        Expect::Closed(CloseCode::Size),
    ));
    cases.push(case(
        "a 70 kB binary frame",
        Tutorial,
        Sent::Binary(vec![0; 70_000]),
        Expect::Closed(CloseCode::Size),
    ));

    // Binary frames.
    let valid = chat_json(r#""a""#, r#""b""#).into_bytes();
    cases.push(case(
        "a chat message as binary",
        Tutorial,
        Sent::Binary(valid.clone()),
        Expect::Refused(BinaryFrame),
    ));
    cases.push(case(
        "a chat message as binary (v1)",
        V1,
        Sent::Binary(valid),
        Expect::Refused(BinaryFrame),
    ));
    cases.push(case(
        "an empty binary frame",
        Tutorial,
        Sent::Binary(Vec::new()),
        Expect::Refused(BinaryFrame),
    ));
    cases.push(case(
        "bytes that are not UTF-8, as binary",
        V1,
        Sent::Binary(vec![0xff, 0xfe, 0xc0, 0x80, 0xed, 0xa0, 0x80]),
        Expect::Refused(BinaryFrame),
    ));
    cases.push(case(
        "a text frame that is not UTF-8",
        Tutorial,
        Sent::NotUtf8Text(b"{\"source\":\"a\",\"content\":\"\xff\xfe\"}".to_vec()),
        // RFC 6455 (8.1): the connection is failed with 1007.
        Expect::Closed(CloseCode::Invalid),
    ));

    // Floods of bad frames: each is answered, in order, and nothing else happens.
    cases.push(case(
        "100 bad frames at once (tutorial)",
        Tutorial,
        Sent::Burst("nope".into(), 100),
        Expect::Refused(InvalidJson),
    ));
    cases.push(case(
        "100 bad frames at once (v1)",
        V1,
        Sent::Burst(r#"{"type":"shout"}"#.into(), 100),
        Expect::Refused(InvalidMessage),
    ));
    cases
}

/// What [`receive`] says when the wait ran out: the connection is still open.
const NOTHING_ARRIVED: &str = "nothing arrived";

/// The next data frame, skipping heartbeats; an error naming what ended the wait otherwise.
async fn receive(client: &mut Client) -> Result<Message, String> {
    loop {
        match tokio::time::timeout(PATIENCE, client.next()).await {
            Err(_) => return Err(NOTHING_ARRIVED.into()),
            Ok(None) => return Err("the connection ended".into()),
            Ok(Some(Err(error))) => return Err(format!("the connection failed: {error}")),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(message))) => return Ok(message),
        }
    }
}

async fn receive_tutorial(client: &mut Client) -> Result<RelayFrame, String> {
    match receive(client).await? {
        Message::Text(text) => {
            RelayFrame::from_json(&text).map_err(|error| format!("{error}: {text}"))
        }
        other => Err(format!("expected a text frame, got {other:?}")),
    }
}

/// The next v1 frame but presence frames (the names in the lobby change as the corpus writes
/// under new ones).
async fn receive_v1(client: &mut Client) -> Result<ServerFrame, String> {
    loop {
        let frame = match receive(client).await? {
            Message::Text(text) => {
                ServerFrame::from_json(&text).map_err(|error| format!("{error}: {text}"))?
            }
            other => return Err(format!("expected a text frame, got {other:?}")),
        };
        if !matches!(frame, ServerFrame::Presence { .. }) {
            return Ok(frame);
        }
    }
}

/// Connects a v1 client and reads its welcome.
async fn connect_v1(relay: &TestRelay) -> Client {
    let mut client = relay.connect_v1().await;
    assert!(matches!(next_v1(&mut client).await, ServerFrame::Welcome { .. }));
    client
}

/// The two senders of the corpus and the two bystanders, all in one conversation.
struct Conversation {
    relay: TestRelay,
    tutorial: Client,
    v1: Client,
    bystander: Client,
    v1_bystander: Client,
}

impl Conversation {
    fn sender(&mut self, by: By) -> &mut Client {
        match by {
            By::Tutorial => &mut self.tutorial,
            By::V1 => &mut self.v1,
        }
    }

    /// Sends the case's frames and checks every answer; `Err` says what went wrong.
    async fn run(&mut self, case: &Case) -> Result<(), String> {
        let frames = case.sent.frames();
        let count = frames.len();
        for frame in frames {
            if let Err(error) = self.sender(case.by).send(frame).await {
                // A relay that closes at once may beat the end of the send; the close is checked below.
                if !matches!(case.expect, Expect::Closed(_)) {
                    return Err(format!("sending failed: {error}"));
                }
            }
        }
        match &case.expect {
            Expect::Refused(code) => {
                for n in 0..count {
                    let answered = match case.by {
                        By::Tutorial => match receive_tutorial(&mut self.tutorial).await? {
                            RelayFrame::Error { error } => error.code,
                            other => {
                                return Err(format!("frame {n}: expected an error, got {other:?}"))
                            }
                        },
                        By::V1 => match receive_v1(&mut self.v1).await? {
                            ServerFrame::Error { error, .. } => error.code,
                            other => {
                                return Err(format!("frame {n}: expected an error, got {other:?}"))
                            }
                        },
                    };
                    if answered != *code {
                        return Err(format!("frame {n}: expected {code:?}, got {answered:?}"));
                    }
                }
                Ok(())
            }
            Expect::Pong(request_id) => match receive_v1(&mut self.v1).await? {
                ServerFrame::Pong { request_id: answered } if answered == *request_id => Ok(()),
                other => Err(format!("expected a pong, got {other:?}")),
            },
            Expect::Accepted { source, content } => self.relayed(case.by, source, content).await,
            Expect::Closed(code) => {
                let ended = loop {
                    match receive(self.sender(case.by)).await {
                        // Someone came or went in the lobby meanwhile.
                        Ok(Message::Text(text)) if text.contains(r#""type":"presence""#) => {}
                        other => break other,
                    }
                };
                // A fresh sender for the cases that follow, whatever happened to this one.
                match case.by {
                    By::Tutorial => self.tutorial = self.relay.connect().await,
                    By::V1 => self.v1 = connect_v1(&self.relay).await,
                }
                match ended {
                    Ok(Message::Close(Some(frame))) if frame.code == *code => Ok(()),
                    other => Err(format!("expected the connection to close, got {other:?}")),
                }
            }
        }
    }

    /// Checks that an accepted message was acked (v1) and reached every other client next.
    async fn relayed(&mut self, by: By, source: &str, content: &str) -> Result<(), String> {
        let expected = ChatMessage { source: source.into(), content: content.into() };
        if by == By::V1 {
            match receive_v1(&mut self.v1).await? {
                ServerFrame::Ack { duplicate: false, .. } => {}
                other => return Err(format!("expected an ack, got {other:?}")),
            }
        }
        let mut tutorial_readers = vec![("the bystander", &mut self.bystander)];
        let mut v1_readers = vec![("the v1 bystander", &mut self.v1_bystander)];
        match by {
            By::Tutorial => v1_readers.push(("the v1 sender", &mut self.v1)),
            By::V1 => tutorial_readers.push(("the tutorial sender", &mut self.tutorial)),
        }
        for (who, client) in tutorial_readers {
            match receive_tutorial(client).await {
                Ok(RelayFrame::Chat(received)) if received == expected => {}
                other => return Err(format!("{who} expected {expected:?}, got {other:?}")),
            }
        }
        for (who, client) in v1_readers {
            match receive_v1(client).await {
                Ok(ServerFrame::Message { message: received, .. })
                    if ChatMessage::from(&received) == expected => {}
                other => return Err(format!("{who} expected {expected:?}, got {other:?}")),
            }
        }
        Ok(())
    }
}

/// Every frame of the corpus gets its own answer, to its sender only: error frames with the
/// right code, odd-but-valid messages relayed unchanged, huge or non-UTF-8 frames closing only
/// the sender. Two people chatting meanwhile (one per protocol) see only the valid messages and
/// can still talk to each other afterwards.
#[tokio::test]
async fn a_corpus_of_bad_frames_is_answered_and_harms_nobody() {
    // Strikes and the rate are tested in limits.rs; here they would cut the corpus short.
    let rate = RateLimit { per_second: 1e6, burst: 10_000 };
    let relay = TestRelay::start(Config { max_strikes: 1000, rate, ..Config::default() }).await;
    let bystander = relay.connect().await;
    let v1_bystander = connect_v1(&relay).await;
    let tutorial = relay.connect().await;
    let v1 = connect_v1(&relay).await;
    let mut conversation = Conversation { relay, tutorial, v1, bystander, v1_bystander };

    let cases = corpus();
    let mut frames = 0;
    let mut answered = 0;
    let mut failures = Vec::new();
    for case in &cases {
        let count = case.sent.frames().len();
        frames += count;
        match conversation.run(case).await {
            Ok(()) => answered += count,
            Err(error) => failures.push(format!("{} ({:?}): {error}", case.name, case.by)),
        }
    }
    println!("corpus: {frames} frames, {answered} answered as expected");
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));
    assert!(cases.len() >= 50, "the corpus has {} cases", cases.len());

    // Nothing is left over for the bystanders, and they can still talk to each other.
    let Conversation { relay, mut bystander, mut v1_bystander, .. } = conversation;
    send(&mut bystander, &chat("bystander", "still here?")).await;
    match next_v1(&mut v1_bystander).await {
        ServerFrame::Message { message: received, .. } => {
            assert_eq!(
                (received.source.as_str(), received.content.as_str()),
                ("bystander", "still here?")
            );
        }
        other => panic!("the v1 bystander expected the bystander's message, got {other:?}"),
    }
    send_v1(&mut v1_bystander, &message("after-the-corpus", "yes")).await;
    assert!(matches!(next_v1(&mut v1_bystander).await, ServerFrame::Ack { .. }));
    assert_eq!(next_chat(&mut bystander).await, chat("ada", "yes"));
    relay.stop().await;
}
