//! Wire types shared by the wschat app and the wschat relay.
//!
//! The relay speaks the plain JSON of the "Angular + WebSockets" tutorial: every chat frame is a
//! WebSocket text frame holding `{"source": string, "content": string}`. A frame the relay cannot
//! accept is answered, to its sender only, with `{"error": {"code": ..., "message": ...}}`.
//!
//! Clients that negotiate the `wschat.v1` subprotocol speak the tagged envelopes of [`v1`]
//! instead: rooms, numbered messages, acknowledgements, history, presence and heartbeats. Room
//! names and the patterns tokens grant rooms by are [`rooms`]'s.
//!
//! Both sides encode and decode through this crate, so no field name is ever spelled by hand
//! anywhere else.

use serde::{Deserialize, Serialize};

pub mod limits;
mod object;
pub mod rooms;
pub mod v1;

pub use object::{DecodeError, JsonObject};

/// One chat message, exactly as the tutorial sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote the message (the tutorial uses a fixed name; the app uses the user's name).
    pub source: String,
    /// What was written. Plain text, never HTML.
    pub content: String,
}

impl ChatMessage {
    /// Encodes the message as the tutorial's JSON text frame.
    #[must_use]
    pub fn to_json(&self) -> String {
        // Serialising a struct of two strings cannot fail: serde_json only fails on maps with
        // non-string keys or on a failing `Serialize` impl, and there is neither here.
        serde_json::to_string(self)
            // Not `expect`: formatting the (impossible) error would pull its Debug code into the wasm.
            .unwrap_or_else(|_| unreachable!("a ChatMessage always serialises"))
    }

    /// Decodes a text frame sent by a client.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidJson`] when the text is not JSON at all, [`ErrorCode::InvalidMessage`]
    /// when it is JSON but not a `{source, content}` object of two strings. The returned
    /// [`WireError`] is what the relay sends back to the client.
    pub fn from_json(text: &str) -> Result<Self, WireError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|error| WireError::new(ErrorCode::InvalidJson, error))?;
        // Serde would also accept `["source", "content"]` for a struct; the tutorial's frames are
        // objects, and anything else is refused rather than quietly reinterpreted.
        if !value.is_object() {
            return Err(WireError::new(
                ErrorCode::InvalidMessage,
                format_args!("expected a JSON object, found {}", json_kind(&value)),
            ));
        }
        Self::deserialize(value).map_err(|error| WireError::new(ErrorCode::InvalidMessage, error))
    }
}

/// Decodes `text` as `T`, but only when it holds a JSON object.
///
/// Serde's tagged and untagged enums also accept an array of the fields in order, so that
/// `["ping", 1]` would pass for `{"type": "ping", "request_id": 1}`. No frame of either protocol is
/// an array, and anything else is refused rather than quietly reinterpreted (as in
/// [`ChatMessage::from_json`]). Unlike a detour through `serde_json::Value`, this keeps serde's
/// refusal of duplicate fields and its line and column numbers.
pub(crate) fn from_json_object<'de, T: Deserialize<'de>>(
    text: &'de str,
) -> Result<T, serde_json::Error> {
    struct ObjectVisitor<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectVisitor<T> {
        type Value = T;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("a JSON object")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }

    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = serde::Deserializer::deserialize_map(
        &mut deserializer,
        ObjectVisitor(std::marker::PhantomData),
    )?;
    deserializer.end()?;
    Ok(value)
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Why the relay refused a frame. Serialised in `snake_case`, e.g. `"invalid_json"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The text frame is not valid JSON.
    InvalidJson,
    /// The frame is JSON but not a `{"source": string, "content": string}` object.
    InvalidMessage,
    /// A binary frame: the protocol is text-only.
    BinaryFrame,
    /// The `source` is blank or contains control characters.
    SourceInvalid,
    /// The `content` is blank or contains control characters other than line breaks and tabs.
    ContentInvalid,
    /// The `source` or the `content` is longer than the relay accepts.
    TooLong,
    /// The relay cannot store messages right now (its disk or its database is failing): the
    /// message was not taken; send it again later.
    Unavailable,
    /// The room name is not one (see [`rooms::room_name`]).
    RoomInvalid,
    /// The client's token does not let it join this room, or post in it.
    Forbidden,
    /// The frame names a room the client has not joined.
    NotJoined,
    /// The client is in as many rooms as one connection may be: leave one first.
    TooManyRooms,
    /// The room has as many members as the relay allows in one room.
    RoomFull,
    /// The relay holds as many rooms as it allows: a new one cannot be opened now.
    RoomsFull,
}

impl ErrorCode {
    /// A short explanation for people, used as the start of every error message with this code.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            Self::InvalidJson => "the frame is not valid JSON",
            Self::InvalidMessage => {
                "the frame is not a chat message: expected {\"source\": string, \"content\": string}"
            }
            Self::BinaryFrame => "binary frames are not supported: send JSON text frames",
            Self::SourceInvalid => "the source (the sender's name) is not acceptable",
            Self::ContentInvalid => "the message content is not acceptable",
            Self::TooLong => "the message is too long",
            Self::Unavailable => "the relay cannot store messages right now; try again shortly",
            Self::RoomInvalid => "the room name is not acceptable",
            Self::Forbidden => "this room is not open to you",
            Self::NotJoined => "join the room first",
            Self::TooManyRooms => "you are in as many rooms as one connection may be: leave one",
            Self::RoomFull => "the room is full",
            Self::RoomsFull => "the relay cannot open more rooms right now",
        }
    }

    /// Every code.
    pub const ALL: [Self; 13] = [
        Self::InvalidJson,
        Self::InvalidMessage,
        Self::BinaryFrame,
        Self::SourceInvalid,
        Self::ContentInvalid,
        Self::TooLong,
        Self::Unavailable,
        Self::RoomInvalid,
        Self::Forbidden,
        Self::NotJoined,
        Self::TooManyRooms,
        Self::RoomFull,
        Self::RoomsFull,
    ];

    /// The code with this wire name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == name)
    }

    /// The wire name, e.g. `"invalid_json"` (also the relay's metric label).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidMessage => "invalid_message",
            Self::BinaryFrame => "binary_frame",
            Self::SourceInvalid => "source_invalid",
            Self::ContentInvalid => "content_invalid",
            Self::TooLong => "too_long",
            Self::Unavailable => "unavailable",
            Self::RoomInvalid => "room_invalid",
            Self::Forbidden => "forbidden",
            Self::NotJoined => "not_joined",
            Self::TooManyRooms => "too_many_rooms",
            Self::RoomFull => "room_full",
            Self::RoomsFull => "rooms_full",
        }
    }
}

/// The body of an error frame: a machine-readable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// What kind of problem this is.
    pub code: ErrorCode,
    /// What exactly was wrong, for people (e.g. serde's "missing field `content` at line 1 ...").
    pub message: String,
}

impl WireError {
    /// An error whose message starts with the code's own description, followed by `detail`.
    #[must_use]
    pub fn new(code: ErrorCode, detail: impl std::fmt::Display) -> Self {
        let detail = detail.to_string();
        let message = if detail.is_empty() {
            code.describe().to_owned()
        } else {
            format!("{}: {detail}", code.describe())
        };
        Self { code, message }
    }
}

impl WireError {
    /// Decodes `{"code": ..., "message": ...}` from an object parsed elsewhere (see
    /// [`JsonObject`]).
    ///
    /// # Errors
    /// A [`DecodeError`] naming the field that is missing or wrong (an unknown code included).
    pub fn from_object<O: JsonObject>(object: &O) -> Result<Self, DecodeError> {
        let code = object.required_string("code")?;
        let code = ErrorCode::from_name(&code)
            .ok_or(DecodeError { field: "code", expected: "a known error code" })?;
        Ok(Self { code, message: object.required_string("message")? })
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Every frame the relay sends to a client.
///
/// Untagged, because the tutorial's chat frames carry no tag and must stay byte-compatible with
/// it: a chat frame has `source` and `content`, an error frame has only `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RelayFrame {
    /// A message another client sent.
    Chat(ChatMessage),
    /// The relay refused the frame this client just sent.
    Error {
        /// What was wrong with it.
        error: WireError,
    },
}

impl RelayFrame {
    /// Encodes the frame as JSON text.
    #[must_use]
    pub fn to_json(&self) -> String {
        // Only strings and a unit enum inside: serialising cannot fail (see `ChatMessage::to_json`).
        serde_json::to_string(self)
            // Not `expect`: formatting the (impossible) error would pull its Debug code into the wasm.
            .unwrap_or_else(|_| unreachable!("a RelayFrame always serialises"))
    }

    /// Decodes a frame received from the relay.
    ///
    /// # Errors
    /// The serde_json error when the text is neither a chat frame nor an error frame (both are
    /// JSON objects).
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        from_json_object(text)
    }
}

impl From<WireError> for RelayFrame {
    fn from(error: WireError) -> Self {
        Self::Error { error }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(source: &str, content: &str) -> ChatMessage {
        ChatMessage { source: source.into(), content: content.into() }
    }

    /// The tutorial's client sends exactly this text; it decodes and re-encodes unchanged.
    #[test]
    fn tutorial_frame_round_trips_byte_for_byte() {
        let text = r#"{"source":"localhost","content":"hello"}"#;
        let decoded = ChatMessage::from_json(text).unwrap();
        assert_eq!(decoded, message("localhost", "hello"));
        assert_eq!(decoded.to_json(), text);
    }

    /// Newlines, quotes, markup and non-ASCII text survive the round trip untouched.
    #[test]
    fn awkward_content_round_trips() {
        let original = message("Zoë", "line 1\nline \"2\" <img src=x onerror=alert(1)> 🎉\u{0}");
        assert_eq!(ChatMessage::from_json(&original.to_json()).unwrap(), original);
    }

    /// Fields the tutorial does not know are ignored rather than refused, so newer clients work.
    #[test]
    fn extra_fields_are_ignored() {
        let decoded = ChatMessage::from_json(r#"{"source":"a","content":"b","id":7}"#).unwrap();
        assert_eq!(decoded, message("a", "b"));
    }

    /// Text that is not JSON is refused as invalid JSON, with serde's explanation.
    #[test]
    fn non_json_is_invalid_json() {
        for text in ["", "hello", "{", r#"{"source":"a","content":"b""#, "{'source':'a'}"] {
            let error = ChatMessage::from_json(text).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidJson, "{text:?}");
            assert!(error.message.starts_with("the frame is not valid JSON: "), "{error}");
        }
    }

    /// JSON of the wrong shape is refused as an invalid message, naming what was wrong.
    #[test]
    fn wrong_shapes_are_invalid_messages() {
        let cases = [
            (r#"{"source":"a"}"#, "missing field `content`"),
            (r#"{"content":"b"}"#, "missing field `source`"),
            (r#"{"source":1,"content":"b"}"#, "invalid type: integer `1`"),
            (r#"{"source":"a","content":null}"#, "invalid type: null"),
            (r#"["a","b"]"#, "expected a JSON object, found an array"),
            ("42", "expected a JSON object, found a number"),
            (r#""hello""#, "expected a JSON object, found a string"),
            ("null", "expected a JSON object, found null"),
        ];
        for (text, detail) in cases {
            let error = ChatMessage::from_json(text).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidMessage, "{text}");
            assert!(error.message.contains(detail), "{text}: {error}");
        }
    }

    /// `as_str` spells every code as serde does on the wire, `from_name` reads it back, `ALL`
    /// holds each code once, the room codes among them.
    #[test]
    fn wire_names_match_serde() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{}\"", code.as_str()));
            assert_eq!(
                serde_json::from_str::<ErrorCode>(&format!("\"{}\"", code.as_str())).unwrap(),
                code
            );
            assert_eq!(ErrorCode::from_name(code.as_str()), Some(code));
            assert!(!code.describe().is_empty());
        }
        let names: std::collections::BTreeSet<_> =
            ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for name in
            ["room_invalid", "forbidden", "not_joined", "too_many_rooms", "room_full", "rooms_full"]
        {
            assert!(names.contains(name), "{name}");
        }
    }

    /// An error frame has the documented shape and decodes back on the client.
    #[test]
    fn error_frame_shape() {
        let frame = RelayFrame::from(WireError::new(ErrorCode::BinaryFrame, ""));
        let text = frame.to_json();
        assert_eq!(
            text,
            r#"{"error":{"code":"binary_frame","message":"binary frames are not supported: send JSON text frames"}}"#
        );
        assert_eq!(RelayFrame::from_json(&text).unwrap(), frame);
    }

    /// The client tells chat frames from error frames, and refuses anything else.
    #[test]
    fn client_decodes_both_frame_kinds() {
        assert_eq!(
            RelayFrame::from_json(r#"{"source":"a","content":"b"}"#).unwrap(),
            RelayFrame::Chat(message("a", "b"))
        );
        assert!(RelayFrame::from_json(r#"{"error":{"code":"nope","message":"x"}}"#).is_err());
        assert!(RelayFrame::from_json(r#"{"hello":"world"}"#).is_err());
        assert!(RelayFrame::from_json(r#"["a","b"]"#).is_err(), "an array is not a chat frame");
    }
}
