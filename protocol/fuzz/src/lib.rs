//! The properties the wire decoders must keep, shared by the fuzz targets in `fuzz_targets/`.
//!
//! Every check panics, naming the offending text, when a property does not hold: libFuzzer turns
//! the panic into a crash report and keeps the input under `artifacts/` for replaying.

use std::ops::ControlFlow;

use arbitrary::{Arbitrary, Unstructured};
use serde_json::Value;
use wschat_protocol::v1::{ClientFrame, Position, RoomInfo, ServerFrame, StoredMessage};
use wschat_protocol::{ChatMessage, ErrorCode, RelayFrame, WireError};

/// Feeds `text` to every decoder and checks each answer.
///
/// An accepted frame must have been a JSON object (both protocols promise objects only) and must
/// decode to itself again after re-encoding. A refused tutorial or v1 client frame must carry the
/// code its docs promise (`invalid_json` exactly when the text is not JSON) and a message, and
/// must survive the trip back to the client as an error frame.
///
/// # Panics
/// When a decoder panics or breaks one of the properties above.
pub fn check_decoders(text: &str) {
    // "JSON" in the decoders' docs: whatever serde_json parses as a value.
    let json = serde_json::from_str::<Value>(text).ok();

    match ChatMessage::from_json(text) {
        Ok(message) => {
            assert_object(text, json.as_ref());
            assert_eq!(ChatMessage::from_json(&message.to_json()), Ok(message), "{text:?}");
        }
        Err(error) => check_refusal(text, json.is_some(), error),
    }

    match ClientFrame::from_json(text) {
        Ok(frame) => {
            let object = assert_object(text, json.as_ref());
            let encoded = frame.to_json();
            let tag = serde_json::from_str::<Value>(&encoded).map(|value| value["type"].clone());
            assert_eq!(tag.ok().as_ref(), object.get("type"), "{text:?} decoded as {frame:?}");
            assert_eq!(ClientFrame::from_json(&encoded), Ok(frame), "{text:?}");
        }
        Err(error) => check_refusal(text, json.is_some(), error),
    }

    // The client's decoders hand serde_json's error on: only acceptance has properties to check.
    if let Ok(frame) = ServerFrame::from_json(text) {
        let object = assert_object(text, json.as_ref());
        assert_eq!(ServerFrame::from_json(&frame.to_json()).ok(), Some(frame.clone()), "{text:?}");
        // The browser app decodes through `from_object` after `JSON.parse`: whatever serde
        // accepts, it must read the same, but for integers past 2^53, which a JavaScript number
        // cannot hold exactly (from_object refuses those rather than read them wrong).
        let value = Value::Object(object.clone());
        if !has_inexact_integer(&value) {
            assert_eq!(ServerFrame::from_object(&value), Ok(frame), "{text:?} through from_object");
        }
    }
    if let Ok(frame) = RelayFrame::from_json(text) {
        assert_object(text, json.as_ref());
        assert_eq!(RelayFrame::from_json(&frame.to_json()).ok(), Some(frame), "{text:?}");
    }
}

/// Encodes `frame`, checks that its own decoder gives it back unchanged, then runs every decoder
/// on the encoded text through [`check_decoders`].
///
/// # Panics
/// When the round trip loses or changes anything, or [`check_decoders`] panics.
pub fn check_round_trip(frame: &AnyFrame) {
    let text = match frame {
        AnyFrame::Chat(message) => {
            let text = message.to_json();
            assert_eq!(ChatMessage::from_json(&text).as_ref(), Ok(message), "{text}");
            text
        }
        AnyFrame::Relay(relay) => {
            let text = relay.to_json();
            assert_eq!(RelayFrame::from_json(&text).ok().as_ref(), Some(relay), "{text}");
            text
        }
        AnyFrame::Client(client) => {
            let text = client.to_json();
            assert_eq!(ClientFrame::from_json(&text).as_ref(), Ok(client), "{text}");
            text
        }
        AnyFrame::Server(server) => {
            let text = server.to_json();
            assert_eq!(ServerFrame::from_json(&text).ok().as_ref(), Some(server), "{text}");
            text
        }
    };
    check_decoders(&text);
}

/// Checks a refusal that the relay sends back to the client that sent `text`.
fn check_refusal(text: &str, is_json: bool, error: WireError) {
    let expected = if is_json { ErrorCode::InvalidMessage } else { ErrorCode::InvalidJson };
    assert_eq!(error.code, expected, "{text:?} refused with {error}");
    assert!(error.message.starts_with(error.code.describe()), "{text:?} refused with {error}");
    let frame = RelayFrame::from(error);
    assert_eq!(RelayFrame::from_json(&frame.to_json()).ok(), Some(frame), "{text:?}");
}

/// The decoded JSON object, or a panic naming `text` when it was not one.
/// Whether `value` holds an integer that a JavaScript number cannot represent exactly.
fn has_inexact_integer(value: &Value) -> bool {
    const MAX_EXACT: u64 = 1 << 53;
    match value {
        Value::Number(number) => number.as_u64().is_some_and(|n| n > MAX_EXACT),
        Value::Array(items) => items.iter().any(has_inexact_integer),
        Value::Object(fields) => fields.values().any(has_inexact_integer),
        _ => false,
    }
}

fn assert_object<'v>(text: &str, json: Option<&'v Value>) -> &'v serde_json::Map<String, Value> {
    match json {
        Some(Value::Object(object)) => object,
        _ => panic!("a frame was accepted from {text:?}, which is not a JSON object"),
    }
}

/// Any frame of either protocol, made up by the fuzzer for [`check_round_trip`].
#[derive(Debug)]
pub enum AnyFrame {
    /// A tutorial frame, from a client or relayed.
    Chat(ChatMessage),
    /// What the relay sends a tutorial client.
    Relay(RelayFrame),
    /// What a v1 client sends.
    Client(ClientFrame),
    /// What the relay sends a v1 client.
    Server(ServerFrame),
}

impl<'a> Arbitrary<'a> for AnyFrame {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u.int_in_range(0..=3)? {
            0 => Self::Chat(chat_message(u)?),
            1 => Self::Relay(if u.arbitrary()? {
                RelayFrame::Chat(chat_message(u)?)
            } else {
                RelayFrame::Error { error: wire_error(u)? }
            }),
            2 => Self::Client(client_frame(u)?),
            _ => Self::Server(server_frame(u)?),
        })
    }
}

fn chat_message(u: &mut Unstructured<'_>) -> arbitrary::Result<ChatMessage> {
    Ok(ChatMessage { source: u.arbitrary()?, content: u.arbitrary()? })
}

fn wire_error(u: &mut Unstructured<'_>) -> arbitrary::Result<WireError> {
    let code = *u.choose(&ErrorCode::ALL)?;
    // Any text, not only what `WireError::new` makes: the client must decode whatever arrives.
    Ok(WireError { code, message: u.arbitrary()? })
}

fn client_frame(u: &mut Unstructured<'_>) -> arbitrary::Result<ClientFrame> {
    Ok(match u.int_in_range(0..=6)? {
        0 => ClientFrame::Message {
            room: u.arbitrary()?,
            id: u.arbitrary()?,
            source: u.arbitrary()?,
            content: u.arbitrary()?,
        },
        1 => ClientFrame::History {
            room: u.arbitrary()?,
            request_id: u.arbitrary()?,
            after_seq: u.arbitrary()?,
        },
        2 => ClientFrame::Join {
            room: u.arbitrary()?,
            after: if u.arbitrary()? {
                Some(Position { epoch: u.arbitrary()?, seq: u.arbitrary()? })
            } else {
                None
            },
        },
        3 => ClientFrame::Leave { room: u.arbitrary()? },
        4 => ClientFrame::Rooms {},
        5 => ClientFrame::Typing { room: u.arbitrary()? },
        _ => ClientFrame::Ping { request_id: u.arbitrary()? },
    })
}

fn stored_message(u: &mut Unstructured<'_>) -> arbitrary::Result<StoredMessage> {
    Ok(StoredMessage {
        seq: u.arbitrary()?,
        id: u.arbitrary()?,
        source: u.arbitrary()?,
        content: u.arbitrary()?,
        sent_at_ms: u.arbitrary()?,
    })
}

fn server_frame(u: &mut Unstructured<'_>) -> arbitrary::Result<ServerFrame> {
    Ok(match u.int_in_range(0..=10)? {
        0 => ServerFrame::Welcome {
            epoch: u.arbitrary()?,
            latest_seq: u.arbitrary()?,
            oldest_seq: u.arbitrary()?,
        },
        1 => ServerFrame::Message { room: u.arbitrary()?, message: stored_message(u)? },
        2 => ServerFrame::Ack {
            room: u.arbitrary()?,
            id: u.arbitrary()?,
            seq: u.arbitrary()?,
            duplicate: u.arbitrary()?,
        },
        3 => {
            let room = u.arbitrary()?;
            let request_id = u.arbitrary()?;
            let epoch = u.arbitrary()?;
            let mut messages = Vec::new();
            // A few messages are enough to mix them up; more would only slow each run down.
            u.arbitrary_loop(None, Some(4), |u| {
                messages.push(stored_message(u)?);
                Ok(ControlFlow::Continue(()))
            })?;
            ServerFrame::History {
                room,
                request_id,
                epoch,
                messages,
                complete: u.arbitrary()?,
                more: u.arbitrary()?,
            }
        }
        4 => ServerFrame::Pong { request_id: u.arbitrary()? },
        5 => ServerFrame::Joined {
            room: u.arbitrary()?,
            epoch: u.arbitrary()?,
            latest_seq: u.arbitrary()?,
            oldest_seq: u.arbitrary()?,
            members: u.arbitrary()?,
        },
        6 => ServerFrame::Left { room: u.arbitrary()? },
        7 => {
            let mut rooms = Vec::new();
            u.arbitrary_loop(None, Some(4), |u| {
                rooms.push(RoomInfo { room: u.arbitrary()?, members: u.arbitrary()? });
                Ok(ControlFlow::Continue(()))
            })?;
            ServerFrame::Rooms { rooms }
        }
        8 => ServerFrame::Presence {
            room: u.arbitrary()?,
            names: u.arbitrary()?,
            count: u.arbitrary()?,
        },
        9 => ServerFrame::Typing { room: u.arbitrary()?, name: u.arbitrary()? },
        _ => ServerFrame::Error {
            error: wire_error(u)?,
            room: u.arbitrary()?,
            id: u.arbitrary()?,
            request_id: u.arbitrary()?,
        },
    })
}
