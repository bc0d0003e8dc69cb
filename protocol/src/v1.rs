//! Protocol v1: tagged JSON envelopes, negotiated with `Sec-WebSocket-Protocol: wschat.v1`.
//!
//! A client that asks for no subprotocol keeps the tutorial's plain `{source, content}` frames
//! ([`crate::ChatMessage`]) and is in the room [`LOBBY`] only; v1 clients start there too and
//! join further rooms by name, all on one socket.
//!
//! Every frame is a JSON object whose `"type"` says what it is:
//!
//! | direction | `type` | meaning |
//! |---|---|---|
//! | relay → client | `welcome` | sent first: the lobby's `epoch`, `latest_seq` and the oldest seq it still holds (the client is in the lobby from then on) |
//! | client → relay | `join` | join a `room` (created if new); `after: {epoch, seq}` to resume where the client stopped |
//! | relay → client | `joined` | the client is in `room`: its `epoch`, `latest_seq`, `oldest_seq` and `members`; then its `presence` and the first page of its `history` (`request_id` 0) |
//! | client → relay | `leave` | leave a `room` |
//! | relay → client | `left` | the client is no longer in `room` |
//! | client → relay | `rooms` | "which rooms are there?" |
//! | relay → client | `rooms` | the rooms with members that this client may join, each with its count of `members` |
//! | relay → client | `presence` | who is in `room`, by name (several tabs of one name count once): on joining, and whenever that changes |
//! | client → relay | `typing` | "I am typing in `room`" (at most one a second per room is passed on) |
//! | relay → client | `typing` | `name` is typing in `room` (never stored or numbered) |
//! | client → relay | `message` | a chat message for a `room` (default `lobby`) with the client-made `id` (a UUID) |
//! | relay → client | `ack` | the relay has the message `id` in `room`, as number `seq` (`duplicate` when it had it already) |
//! | relay → client | `message` | a message from anyone in `room`, with its `seq`, `id` and the relay's time `sent_at_ms` |
//! | client → relay | `history` | "send me what `room` (default `lobby`) has after `after_seq`", with a `request_id` |
//! | relay → client | `history` | the answer, with the same `request_id` and `room`; `more` when it was cut at the relay's size bound for one answer (ask again after its last seq) |
//! | client → relay | `ping` | heartbeat, with a `request_id`; answered by a `pong` |
//! | relay → client | `pong` | the answer to a `ping`, with its `request_id` |
//! | relay → client | `error` | a frame was refused; `room`/`id`/`request_id` name it when known |
//!
//! Sequence numbers start at 1 in each room and grow by one per message within that room's
//! `epoch`. A room's epoch changes when the relay loses its history (a restart without
//! `--data-dir`): a client that sees another epoch than the one it knew must not mix the two
//! numberings.

use serde::{Deserialize, Serialize};

pub use crate::rooms::LOBBY;
use crate::{DecodeError, ErrorCode, JsonObject, WireError};

/// The subprotocol name a v1 client asks for.
pub const SUBPROTOCOL: &str = "wschat.v1";

/// A message as the relay numbered, stored and delivers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Position in the room's conversation, from 1, without gaps within an epoch.
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

/// Where a client stopped in a room: the epoch it knew and the last seq up to which it has every
/// message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The room's epoch as the client last saw it.
    pub epoch: String,
    /// The last seq the client has (with everything before it).
    pub seq: u64,
}

/// A room in the answer to [`ClientFrame::Rooms`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// Its name.
    pub room: String,
    /// The connections in it now (a person with two tabs counts twice).
    pub members: u64,
}

/// The room old clients mean: frames from before rooms existed name none.
fn lobby() -> String {
    LOBBY.to_owned()
}

/// Every frame a v1 client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// A new chat message. Sending the same `id` again is safe: the relay acks it once more and
    /// relays it only once.
    Message {
        /// The room it is for (the client must have joined it); `lobby` when absent.
        #[serde(default = "lobby")]
        room: String,
        /// Client-made UUID, unique per message.
        id: String,
        /// Who wrote it.
        source: String,
        /// What was written.
        content: String,
    },
    /// Asks for the stored messages of `room` after `after_seq` (0: all the relay holds).
    History {
        /// The room (the client must have joined it); `lobby` when absent.
        #[serde(default = "lobby")]
        room: String,
        /// Echoed in the answer. 0 is what answers to a `join` carry: use others.
        request_id: u64,
        /// The last seq the client already has.
        after_seq: u64,
    },
    /// Heartbeat; the relay answers with a [`ServerFrame::Pong`].
    Ping {
        /// Echoed in the pong.
        request_id: u64,
    },
    /// Joins a room, creating it if nobody is in it: answered by [`ServerFrame::Joined`], the
    /// room's [`ServerFrame::Presence`] and the first page of its history. Joining a room the
    /// client is in already answers the same way (a resync).
    Join {
        /// The room's name (see [`crate::rooms::room_name`]).
        room: String,
        /// Where the client stopped, if it was in the room before: the history then starts
        /// after it when the epoch is still the room's, else from the oldest message kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<Position>,
    },
    /// Leaves a room: answered by [`ServerFrame::Left`].
    Leave {
        /// The room.
        room: String,
    },
    /// Asks which rooms there are: answered by [`ServerFrame::Rooms`].
    Rooms {},
    /// The user is typing in `room`: passed on to its other members, at most once a second.
    Typing {
        /// The room (the client must have joined it, and may post in it).
        room: String,
    },
}

/// Every frame the relay sends to a v1 client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The first frame on every connection that is in the lobby: the lobby's state, as in a
    /// [`ServerFrame::Joined`].
    Welcome {
        /// Identifies the lobby's history; changes when that history is lost.
        epoch: String,
        /// The newest seq (0: no message yet).
        latest_seq: u64,
        /// The oldest seq still stored (`latest_seq + 1` when none is).
        oldest_seq: u64,
    },
    /// A message just posted in `room` (stored ones come in [`ServerFrame::History`]).
    Message {
        /// The room it was posted in.
        room: String,
        /// The message.
        #[serde(flatten)]
        message: StoredMessage,
    },
    /// The relay has the client's message `id` as `seq` in `room`.
    Ack {
        /// The room it was posted in.
        room: String,
        /// The client's id for the message.
        id: String,
        /// Its number.
        seq: u64,
        /// True when the relay already had it (a re-send after a reconnect): not relayed again.
        duplicate: bool,
    },
    /// The answer to a [`ClientFrame::History`], or the history sent after a [`ServerFrame::Joined`].
    History {
        /// The room.
        room: String,
        /// The request's id (0 after a join).
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
        /// The room the refused frame named, when it named one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        /// The refused message's id, when it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The refused request's id, when it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<u64>,
    },
    /// The client is in `room` (after a [`ClientFrame::Join`]).
    Joined {
        /// The room, spelled as the relay spells it (lower-case).
        room: String,
        /// Identifies the room's history; changes when that history is lost.
        epoch: String,
        /// The newest seq (0: no message yet).
        latest_seq: u64,
        /// The oldest seq still stored (`latest_seq + 1` when none is).
        oldest_seq: u64,
        /// Connections in the room now, this one included.
        members: u64,
    },
    /// The client is no longer in `room` (after a [`ClientFrame::Leave`]).
    Left {
        /// The room.
        room: String,
    },
    /// The answer to [`ClientFrame::Rooms`]: the rooms with members that this client may join,
    /// most members first.
    Rooms {
        /// The rooms.
        rooms: Vec<RoomInfo>,
    },
    /// Who is in `room`: sent on joining it and whenever the set of names changes.
    Presence {
        /// The room.
        room: String,
        /// The names of its members, sorted, each once however many tabs it has open; at most
        /// [`MAX_PRESENCE_NAMES`] of them (the first in that order).
        names: Vec<String>,
        /// How many different names are in the room (more than `names` holds when it was cut).
        count: u64,
    },
    /// `name` is typing in `room`. Nothing follows when they stop: show it for a few seconds.
    Typing {
        /// The room.
        room: String,
        /// Who.
        name: String,
    },
}

/// The most names one [`ServerFrame::Presence`] lists: a list of people beside a conversation,
/// and a bound on what every change costs in a crowded room.
pub const MAX_PRESENCE_NAMES: usize = 100;

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
            "message" => Self::Message {
                room: object.required_string("room")?,
                message: StoredMessage::from_object(object)?,
            },
            "ack" => Self::Ack {
                room: object.required_string("room")?,
                id: object.required_string("id")?,
                seq: object.required_u64("seq")?,
                duplicate: object.required_bool("duplicate")?,
            },
            "history" => Self::History {
                room: object.required_string("room")?,
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
                room: object.optional_string("room")?,
                id: object.optional_string("id")?,
                request_id: object.optional_u64("request_id")?,
            },
            "joined" => Self::Joined {
                room: object.required_string("room")?,
                epoch: object.required_string("epoch")?,
                latest_seq: object.required_u64("latest_seq")?,
                oldest_seq: object.required_u64("oldest_seq")?,
                members: object.required_u64("members")?,
            },
            "left" => Self::Left { room: object.required_string("room")? },
            "rooms" => Self::Rooms {
                rooms: object
                    .required_objects("rooms")?
                    .iter()
                    .map(RoomInfo::from_object)
                    .collect::<Result<_, _>>()?,
            },
            "presence" => Self::Presence {
                room: object.required_string("room")?,
                names: object.required_strings("names")?,
                count: object.required_u64("count")?,
            },
            "typing" => Self::Typing {
                room: object.required_string("room")?,
                name: object.required_string("name")?,
            },
            _ => return Err(DecodeError { field: "type", expected: "a known frame type" }),
        })
    }
}

impl RoomInfo {
    /// Decodes a room of a [`ServerFrame::Rooms`] answer from an object parsed elsewhere.
    ///
    /// # Errors
    /// A [`DecodeError`] naming the field that is missing or of the wrong type.
    pub fn from_object<O: JsonObject>(object: &O) -> Result<Self, DecodeError> {
        Ok(Self { room: object.required_string("room")?, members: object.required_u64("members")? })
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

    /// The documented shapes of client frames, byte for byte: what other clients can be written
    /// against.
    #[test]
    fn client_frames_have_the_documented_shape() {
        let cases: [(&str, ClientFrame); 8] = [
            (
                r#"{"type":"message","room":"lobby","id":"m1","source":"ada","content":"hi"}"#,
                ClientFrame::Message {
                    room: LOBBY.into(),
                    id: "m1".into(),
                    source: "ada".into(),
                    content: "hi".into(),
                },
            ),
            (
                r#"{"type":"history","room":"team-a","request_id":7,"after_seq":41}"#,
                ClientFrame::History { room: "team-a".into(), request_id: 7, after_seq: 41 },
            ),
            (r#"{"type":"ping","request_id":9}"#, ClientFrame::Ping { request_id: 9 }),
            (
                r#"{"type":"join","room":"team-a"}"#,
                ClientFrame::Join { room: "team-a".into(), after: None },
            ),
            (
                r#"{"type":"join","room":"team-a","after":{"epoch":"e","seq":12}}"#,
                ClientFrame::Join {
                    room: "team-a".into(),
                    after: Some(Position { epoch: "e".into(), seq: 12 }),
                },
            ),
            (r#"{"type":"leave","room":"team-a"}"#, ClientFrame::Leave { room: "team-a".into() }),
            (r#"{"type":"rooms"}"#, ClientFrame::Rooms {}),
            (r#"{"type":"typing","room":"team-a"}"#, ClientFrame::Typing { room: "team-a".into() }),
        ];
        for (text, frame) in cases {
            assert_eq!(frame.to_json(), text);
            assert_eq!(ClientFrame::from_json(text).unwrap(), frame);
        }
    }

    /// Clients from before rooms name no room in messages and history requests: they mean the
    /// lobby. Extra fields are ignored, also in the frames without any.
    #[test]
    fn frames_without_a_room_are_for_the_lobby() {
        assert_eq!(
            ClientFrame::from_json(r#"{"type":"message","id":"m1","source":"ada","content":"hi"}"#)
                .unwrap(),
            ClientFrame::Message {
                room: LOBBY.into(),
                id: "m1".into(),
                source: "ada".into(),
                content: "hi".into()
            }
        );
        assert_eq!(
            ClientFrame::from_json(r#"{"type":"history","request_id":1,"after_seq":0}"#).unwrap(),
            ClientFrame::History { room: LOBBY.into(), request_id: 1, after_seq: 0 }
        );
        assert_eq!(
            ClientFrame::from_json(r#"{"type":"rooms","please":true}"#).unwrap(),
            ClientFrame::Rooms {}
        );
    }

    /// The documented shapes of server frames, byte for byte, decoded alike by serde and by the
    /// object decoder the browser app uses.
    #[test]
    fn server_frames_have_the_documented_shape() {
        let server: [(&str, ServerFrame); 11] = [
            (
                r#"{"type":"welcome","epoch":"e","latest_seq":3,"oldest_seq":1}"#,
                ServerFrame::Welcome { epoch: "e".into(), latest_seq: 3, oldest_seq: 1 },
            ),
            (
                r#"{"type":"ack","room":"lobby","id":"m1","seq":4,"duplicate":false}"#,
                ServerFrame::Ack { room: LOBBY.into(), id: "m1".into(), seq: 4, duplicate: false },
            ),
            (r#"{"type":"pong","request_id":9}"#, ServerFrame::Pong { request_id: 9 }),
            (
                r#"{"type":"message","room":"team-a","seq":1,"id":"m1","source":"a","content":"b","sent_at_ms":5}"#,
                ServerFrame::Message {
                    room: "team-a".into(),
                    message: StoredMessage {
                        seq: 1,
                        id: "m1".into(),
                        source: "a".into(),
                        content: "b".into(),
                        sent_at_ms: 5,
                    },
                },
            ),
            (
                r#"{"type":"history","room":"team-a","request_id":0,"epoch":"e","messages":[],"complete":true}"#,
                ServerFrame::History {
                    room: "team-a".into(),
                    request_id: 0,
                    epoch: "e".into(),
                    messages: vec![],
                    complete: true,
                    more: false,
                },
            ),
            (
                r#"{"type":"joined","room":"team-a","epoch":"e","latest_seq":12,"oldest_seq":1,"members":2}"#,
                ServerFrame::Joined {
                    room: "team-a".into(),
                    epoch: "e".into(),
                    latest_seq: 12,
                    oldest_seq: 1,
                    members: 2,
                },
            ),
            (r#"{"type":"left","room":"team-a"}"#, ServerFrame::Left { room: "team-a".into() }),
            (
                r#"{"type":"rooms","rooms":[{"room":"lobby","members":3},{"room":"team-a","members":1}]}"#,
                ServerFrame::Rooms {
                    rooms: vec![
                        RoomInfo { room: LOBBY.into(), members: 3 },
                        RoomInfo { room: "team-a".into(), members: 1 },
                    ],
                },
            ),
            (
                r#"{"type":"presence","room":"team-a","names":["ada","bob"],"count":2}"#,
                ServerFrame::Presence {
                    room: "team-a".into(),
                    names: vec!["ada".into(), "bob".into()],
                    count: 2,
                },
            ),
            (
                r#"{"type":"typing","room":"team-a","name":"ada"}"#,
                ServerFrame::Typing { room: "team-a".into(), name: "ada".into() },
            ),
            (
                r#"{"type":"error","error":{"code":"forbidden","message":"this room is not open to you"},"room":"secret"}"#,
                ServerFrame::Error {
                    error: WireError::new(ErrorCode::Forbidden, ""),
                    room: Some("secret".into()),
                    id: None,
                    request_id: None,
                },
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
                room: LOBBY.into(),
                request_id: 1,
                epoch: "e".into(),
                messages: vec![stored(1), stored(2)],
                complete: false,
                more: true,
            },
            ServerFrame::Error {
                error: WireError::new(ErrorCode::Unavailable, "disk"),
                room: Some("team-a".into()),
                id: Some("m1".into()),
                request_id: None,
            },
            ServerFrame::Error {
                error: WireError::new(ErrorCode::InvalidJson, ""),
                room: None,
                id: None,
                request_id: Some(4),
            },
            ServerFrame::Welcome {
                epoch: "e".into(),
                latest_seq: 9_007_199_254_740_992,
                oldest_seq: 0,
            },
            ServerFrame::Message { room: "r".into(), message: stored(3) },
            ServerFrame::Presence { room: "r".into(), names: vec![], count: 0 },
            ServerFrame::Rooms { rooms: vec![] },
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
            (r#"{"type":"ack","room":"lobby","id":"m","seq":1}"#, "duplicate"),
            (r#"{"type":"ack","id":"m","seq":1,"duplicate":true}"#, "room"),
            (
                r#"{"type":"history","room":"lobby","request_id":1,"epoch":"e","messages":[1],"complete":true}"#,
                "messages",
            ),
            (r#"{"type":"error","error":{"code":"nope","message":"x"}}"#, "code"),
            (r#"{"type":"error","error":{"code":"too_long","message":"x"},"id":7}"#, "id"),
            (r#"{"type":"error","error":{"code":"too_long","message":"x"},"room":7}"#, "room"),
            (
                r#"{"type":"message","seq":1,"id":"m","source":"a","content":"b","sent_at_ms":1}"#,
                "room",
            ),
            (
                r#"{"type":"message","room":"r","id":"m","source":"a","content":"b","sent_at_ms":1}"#,
                "seq",
            ),
            (r#"{"type":"presence","room":"r","names":["a",1],"count":2}"#, "names"),
            (r#"{"type":"presence","room":"r","names":"a","count":1}"#, "names"),
            (r#"{"type":"presence","room":"r","names":[]}"#, "count"),
            (r#"{"type":"rooms","rooms":[{"room":"a"}]}"#, "members"),
            (
                r#"{"type":"joined","room":"a","epoch":"e","latest_seq":0,"oldest_seq":1}"#,
                "members",
            ),
            (r#"{"type":"typing","room":"a"}"#, "name"),
            (r#"{"type":"left"}"#, "room"),
        ];
        for (text, field) in refused {
            assert!(ServerFrame::from_json(text).is_err(), "serde refuses {text}");
            assert_eq!(from_object(text).map_err(|error| error.field), Err(field), "{text}");
        }
    }

    /// History answers and errors survive the round trip; absent ids and rooms are left out of
    /// errors.
    #[test]
    fn history_and_errors_round_trip() {
        let history = ServerFrame::History {
            room: LOBBY.into(),
            request_id: 1,
            epoch: "e".into(),
            messages: vec![stored(1), stored(2)],
            complete: true,
            more: false,
        };
        assert_eq!(ServerFrame::from_json(&history.to_json()).unwrap(), history);
        let error = ServerFrame::Error {
            error: WireError::new(ErrorCode::InvalidMessage, "no"),
            room: None,
            id: None,
            request_id: Some(3),
        };
        let text = error.to_json();
        assert!(!text.contains("\"id\"") && !text.contains("\"room\""), "{text}");
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
            (
                r#"{"type":"message","room":7,"id":"m","source":"a","content":"b"}"#,
                ErrorCode::InvalidMessage,
            ),
            (r#"{"type":"history","request_id":"1","after_seq":0}"#, ErrorCode::InvalidMessage),
            (r#"{"type":"history","request_id":1,"after_seq":-1}"#, ErrorCode::InvalidMessage),
            (r#"{"type":"join"}"#, ErrorCode::InvalidMessage),
            (r#"{"type":"join","room":"a","after":{"epoch":"e"}}"#, ErrorCode::InvalidMessage),
            (r#"{"type":"join","room":"a","after":7}"#, ErrorCode::InvalidMessage),
            (r#"{"type":"leave"}"#, ErrorCode::InvalidMessage),
            (r#"{"type":"typing","room":null}"#, ErrorCode::InvalidMessage),
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
