//! Protocol v1: tagged JSON envelopes, negotiated with `Sec-WebSocket-Protocol: wschat.v1`.
//!
//! A client that asks for no subprotocol keeps the tutorial's plain `{source, content}` frames
//! ([`crate::ChatMessage`]); both kinds share one conversation.
//!
//! Every frame is a JSON object whose `"type"` says what it is:
//!
//! | direction | `type` | meaning |
//! |---|---|---|
//! | relay → client | `welcome` | sent first: the relay's `epoch`, `latest_seq` and the oldest seq it still holds |
//! | client → relay | `message` | a chat message with the client-made `id` (a UUID) |
//! | relay → client | `ack` | the relay has the message `id`, as number `seq` (`duplicate` when it had it already) |
//! | relay → client | `message` | a message from anyone, with its `seq`, `id` and the relay's time `sent_at_ms` |
//! | client → relay | `history` | "send me what you have after `after_seq`", with a `request_id` |
//! | relay → client | `history` | the answer, with the same `request_id`; `more` when it was cut at the relay's size bound for one answer (ask again after its last seq) |
//! | client → relay | `ping` | heartbeat, with a `request_id`; answered by a `pong` |
//! | relay → client | `pong` | the answer to a `ping`, with its `request_id` |
//! | relay → client | `error` | a frame was refused; `id`/`request_id` name it when known |
//!
//! Sequence numbers start at 1 and grow by one per message within an `epoch`. The epoch changes
//! when the relay loses its history (a restart without `--data-dir`): a client that sees another
//! epoch than the one it knew must not mix the two numberings.

use serde::{Deserialize, Serialize};

use crate::{DecodeError, ErrorCode, JsonObject, WireError};

/// The subprotocol name a v1 client asks for.
pub const SUBPROTOCOL: &str = "wschat.v1";

/// A message as the relay numbered, stored and delivers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Position in the conversation, from 1, without gaps within an epoch.
    pub seq: u64,
    /// The sender's id for the message (a UUID; the relay makes one for tutorial clients).
    pub id: String,
    /// Who wrote it.
    pub source: String,
    /// What was written: text, never HTML.
    pub content: String,
    /// When the relay received it, in milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
}

/// Every frame a v1 client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// A new chat message. Sending the same `id` again is safe: the relay acks it once more and
    /// relays it only once.
    Message {
        /// Client-made UUID, unique per message.
        id: String,
        /// Who wrote it.
        source: String,
        /// What was written.
        content: String,
    },
    /// Asks for the stored messages after `after_seq` (0: all the relay holds).
    History {
        /// Echoed in the answer.
        request_id: u64,
        /// The last seq the client already has.
        after_seq: u64,
    },
    /// Heartbeat; the relay answers with a [`ServerFrame::Pong`].
    Ping {
        /// Echoed in the pong.
        request_id: u64,
    },
}

/// Every frame the relay sends to a v1 client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The first frame on every connection.
    Welcome {
        /// Identifies the relay's history; changes when that history is lost.
        epoch: String,
        /// The newest seq (0: no message yet).
        latest_seq: u64,
        /// The oldest seq still stored (`latest_seq + 1` when none is).
        oldest_seq: u64,
    },
    /// A message, live or (within a history answer) stored.
    Message(StoredMessage),
    /// The relay has the client's message `id` as `seq`.
    Ack {
        /// The client's id for the message.
        id: String,
        /// Its number.
        seq: u64,
        /// True when the relay already had it (a re-send after a reconnect): not relayed again.
        duplicate: bool,
    },
    /// The answer to a [`ClientFrame::History`].
    History {
        /// The request's id.
        request_id: u64,
        /// The epoch the seqs belong to.
        epoch: String,
        /// The messages after the requested seq, oldest first.
        messages: Vec<StoredMessage>,
        /// False when the relay no longer holds some messages right after the requested seq:
        /// they are lost to this client, and the page should say so.
        complete: bool,
        /// True when the answer stopped at the relay's size bound for one answer: the client
        /// asks again after the last seq in `messages` for the rest. Absent (false) otherwise.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        more: bool,
    },
    /// The answer to a [`ClientFrame::Ping`].
    Pong {
        /// The ping's id.
        request_id: u64,
    },
    /// A frame was refused.
    Error {
        /// What was wrong.
        error: WireError,
        /// The refused message's id, when it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The refused request's id, when it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<u64>,
    },
}

impl ClientFrame {
    /// Encodes the frame as JSON text.
    #[must_use]
    pub fn to_json(&self) -> String {
        // Strings and integers only: serialising cannot fail.
        serde_json::to_string(self)
            // Not `expect`: formatting the (impossible) error would pull its Debug code into the wasm.
            .unwrap_or_else(|_| unreachable!("a ClientFrame always serialises"))
    }

    /// Decodes a frame from a v1 client.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidJson`] for text that is not JSON, [`ErrorCode::InvalidMessage`] for JSON
    /// that is not one of the frames above (unknown `type`, missing or mistyped fields).
    pub fn from_json(text: &str) -> Result<Self, WireError> {
        crate::from_json_object(text).map_err(|error| {
            // Serde can refuse a frame for its shape (an unknown `type` first, say) before it has
            // read the rest of the text, so its error alone does not tell whether the text was
            // JSON at all: `{"type":"shout",oops}` is not.
            match serde_json::from_str::<serde_json::Value>(text) {
                Ok(_) => WireError::new(ErrorCode::InvalidMessage, error),
                Err(not_json) => WireError::new(ErrorCode::InvalidJson, not_json),
            }
        })
    }
}

impl ServerFrame {
    /// Encodes the frame as JSON text.
    #[must_use]
    pub fn to_json(&self) -> String {
        // Strings, integers and booleans only: serialising cannot fail.
        serde_json::to_string(self)
            // Not `expect`: formatting the (impossible) error would pull its Debug code into the wasm.
            .unwrap_or_else(|_| unreachable!("a ServerFrame always serialises"))
    }

    /// Decodes a frame from the relay.
    ///
    /// # Errors
    /// The serde_json error for anything that is not one of the frames above (all JSON objects).
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        crate::from_json_object(text)
    }
}

impl StoredMessage {
    /// Decodes a stored message from an object parsed elsewhere (see [`JsonObject`]).
    ///
    /// # Errors
    /// A [`DecodeError`] naming the field that is missing or of the wrong type.
    pub fn from_object<O: JsonObject>(object: &O) -> Result<Self, DecodeError> {
        Ok(Self {
            seq: object.required_u64("seq")?,
            id: object.required_string("id")?,
            source: object.required_string("source")?,
            content: object.required_string("content")?,
            sent_at_ms: object.required_u64("sent_at_ms")?,
        })
    }
}

impl ServerFrame {
    /// Decodes a frame from an object parsed elsewhere, such as the browser's `JSON.parse`
    /// result (see [`JsonObject`]): the same frames as [`ServerFrame::from_json`] without a JSON
    /// parser. Fields it does not know are ignored, like serde does.
    ///
    /// # Errors
    /// A [`DecodeError`] naming the field that is missing or of the wrong type, or `type` for an
    /// unknown frame type.
    pub fn from_object<O: JsonObject>(object: &O) -> Result<Self, DecodeError> {
        let kind = object.required_string("type")?;
        Ok(match kind.as_str() {
            "welcome" => Self::Welcome {
                epoch: object.required_string("epoch")?,
                latest_seq: object.required_u64("latest_seq")?,
                oldest_seq: object.required_u64("oldest_seq")?,
            },
            "message" => Self::Message(StoredMessage::from_object(object)?),
            "ack" => Self::Ack {
                id: object.required_string("id")?,
                seq: object.required_u64("seq")?,
                duplicate: object.required_bool("duplicate")?,
            },
            "history" => Self::History {
                request_id: object.required_u64("request_id")?,
                epoch: object.required_string("epoch")?,
                messages: object
                    .required_objects("messages")?
                    .iter()
                    .map(StoredMessage::from_object)
                    .collect::<Result<_, _>>()?,
                complete: object.required_bool("complete")?,
                more: match object.has("more") {
                    true => object.required_bool("more")?,
                    false => false,
                },
            },
            "pong" => Self::Pong { request_id: object.required_u64("request_id")? },
            "error" => Self::Error {
                error: WireError::from_object(&object.required_object("error")?)?,
                id: object.optional_string("id")?,
                request_id: object.optional_u64("request_id")?,
            },
            _ => return Err(DecodeError { field: "type", expected: "a known frame type" }),
        })
    }
}

impl From<&StoredMessage> for crate::ChatMessage {
    /// What a tutorial-mode client receives of a stored message.
    fn from(message: &StoredMessage) -> Self {
        Self { source: message.source.clone(), content: message.content.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(seq: u64) -> StoredMessage {
        StoredMessage {
            seq,
            id: format!("00000000-0000-4000-8000-{seq:012}"),
            source: "ada".into(),
            content: "hello\n<b>world</b>".into(),
            sent_at_ms: 1_763_000_000_000 + seq,
        }
    }

    /// The documented shapes, byte for byte: what other clients can be written against.
    #[test]
    fn frames_have_the_documented_shape() {
        let cases: [(&str, ClientFrame); 3] = [
            (
                r#"{"type":"message","id":"m1","source":"ada","content":"hi"}"#,
                ClientFrame::Message {
                    id: "m1".into(),
                    source: "ada".into(),
                    content: "hi".into(),
                },
            ),
            (
                r#"{"type":"history","request_id":7,"after_seq":41}"#,
                ClientFrame::History { request_id: 7, after_seq: 41 },
            ),
            (r#"{"type":"ping","request_id":9}"#, ClientFrame::Ping { request_id: 9 }),
        ];
        for (text, frame) in cases {
            assert_eq!(frame.to_json(), text);
            assert_eq!(ClientFrame::from_json(text).unwrap(), frame);
        }
        let server: [(&str, ServerFrame); 4] = [
            (
                r#"{"type":"welcome","epoch":"e","latest_seq":3,"oldest_seq":1}"#,
                ServerFrame::Welcome { epoch: "e".into(), latest_seq: 3, oldest_seq: 1 },
            ),
            (
                r#"{"type":"ack","id":"m1","seq":4,"duplicate":false}"#,
                ServerFrame::Ack { id: "m1".into(), seq: 4, duplicate: false },
            ),
            (r#"{"type":"pong","request_id":9}"#, ServerFrame::Pong { request_id: 9 }),
            (
                r#"{"type":"message","seq":1,"id":"m1","source":"a","content":"b","sent_at_ms":5}"#,
                ServerFrame::Message(StoredMessage {
                    seq: 1,
                    id: "m1".into(),
                    source: "a".into(),
                    content: "b".into(),
                    sent_at_ms: 5,
                }),
            ),
        ];
        for (text, frame) in server {
            assert_eq!(frame.to_json(), text);
            assert_eq!(ServerFrame::from_json(text).unwrap(), frame);
            assert_eq!(from_object(text), Ok(frame));
        }
    }

    /// Decodes through [`ServerFrame::from_object`], as the browser app does after `JSON.parse`.
    fn from_object(text: &str) -> Result<ServerFrame, DecodeError> {
        ServerFrame::from_object(&serde_json::from_str::<serde_json::Value>(text).unwrap())
    }

    /// The object decoder agrees with serde on every frame, and refuses what serde refuses,
    /// naming the field.
    #[test]
    fn the_object_decoder_agrees_with_serde() {
        let frames = [
            ServerFrame::History {
                request_id: 1,
                epoch: "e".into(),
                messages: vec![stored(1), stored(2)],
                complete: false,
                more: true,
            },
            ServerFrame::Error {
                error: WireError::new(ErrorCode::Unavailable, "disk"),
                id: Some("m1".into()),
                request_id: None,
            },
            ServerFrame::Error {
                error: WireError::new(ErrorCode::InvalidJson, ""),
                id: None,
                request_id: Some(4),
            },
            ServerFrame::Welcome {
                epoch: "e".into(),
                latest_seq: 9_007_199_254_740_992,
                oldest_seq: 0,
            },
        ];
        for frame in frames {
            assert_eq!(from_object(&frame.to_json()), Ok(frame));
        }
        let refused = [
            (r#"{"type":"shout"}"#, "type"),
            (r#"{"epoch":"e"}"#, "type"),
            (r#"{"type":"pong","request_id":-1}"#, "request_id"),
            (r#"{"type":"pong","request_id":1.5}"#, "request_id"),
            (r#"{"type":"pong","request_id":"1"}"#, "request_id"),
            (r#"{"type":"ack","id":"m","seq":1}"#, "duplicate"),
            (
                r#"{"type":"history","request_id":1,"epoch":"e","messages":[1],"complete":true}"#,
                "messages",
            ),
            (r#"{"type":"error","error":{"code":"nope","message":"x"}}"#, "code"),
            (r#"{"type":"error","error":{"code":"too_long","message":"x"},"id":7}"#, "id"),
        ];
        for (text, field) in refused {
            assert!(ServerFrame::from_json(text).is_err(), "serde refuses {text}");
            assert_eq!(from_object(text).map_err(|error| error.field), Err(field), "{text}");
        }
    }

    /// History answers and errors survive the round trip; absent ids are left out of errors.
    #[test]
    fn history_and_errors_round_trip() {
        let history = ServerFrame::History {
            request_id: 1,
            epoch: "e".into(),
            messages: vec![stored(1), stored(2)],
            complete: true,
            more: false,
        };
        assert_eq!(ServerFrame::from_json(&history.to_json()).unwrap(), history);
        let error = ServerFrame::Error {
            error: WireError::new(ErrorCode::InvalidMessage, "no"),
            id: None,
            request_id: Some(3),
        };
        let text = error.to_json();
        assert!(!text.contains("\"id\""), "{text}");
        assert_eq!(ServerFrame::from_json(&text).unwrap(), error);
        assert!(ServerFrame::from_json(r#"["pong",9]"#).is_err(), "an array is not a frame");
    }

    /// Malformed client frames are refused with the right code.
    #[test]
    fn bad_client_frames_are_refused() {
        let cases = [
            ("{", ErrorCode::InvalidJson),
            ("not json", ErrorCode::InvalidJson),
            (r#"{"type":"shout",oops}"#, ErrorCode::InvalidJson),
            (r#"{"type":"shout","content":"hi"}"#, ErrorCode::InvalidMessage),
            (r#"{"source":"a","content":"b"}"#, ErrorCode::InvalidMessage),
            (r#"{"type":"message","source":"a","content":"b"}"#, ErrorCode::InvalidMessage),
            (r#"{"type":"history","request_id":"1","after_seq":0}"#, ErrorCode::InvalidMessage),
            (r#"{"type":"history","request_id":1,"after_seq":-1}"#, ErrorCode::InvalidMessage),
            (r#"["message"]"#, ErrorCode::InvalidMessage),
            (r#"["ping",1]"#, ErrorCode::InvalidMessage),
            (r#"["message","m1","ada","hi"]"#, ErrorCode::InvalidMessage),
        ];
        for (text, code) in cases {
            assert_eq!(ClientFrame::from_json(text).unwrap_err().code, code, "{text}");
        }
    }

    /// A tutorial client receives only `source` and `content` of a stored message.
    #[test]
    fn tutorial_view_of_a_stored_message() {
        let plain = crate::ChatMessage::from(&stored(1));
        assert_eq!(plain.to_json(), r#"{"source":"ada","content":"hello\n<b>world</b>"}"#);
    }
}
