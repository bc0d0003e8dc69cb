//! Rooms, as clients see them on a real relay: each room numbered from 1 and kept apart, joined
//! with a resume point, kept across a restart (and a data directory from before rooms moved into
//! the lobby), names checked, bounds, token claims, presence, typing, the tutorial's client in the
//! lobby.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use futures_util::SinkExt;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use wschat_protocol::rooms::LOBBY;
use wschat_protocol::v1::{ClientFrame, Position, RoomInfo, ServerFrame, StoredMessage};
use wschat_protocol::ErrorCode;
use wschat_relay::{Config, Heartbeat, RoomLimits, HISTORY_FILE};

/// A v1 client of `relay`, past its welcome (and the lobby's presence).
async fn v1(relay: &TestRelay) -> Client {
    v1_at(relay, "/ws").await
}

/// A v1 client on `path` (e.g. `/ws?name=ada`), past its welcome.
async fn v1_at(relay: &TestRelay, path: &str) -> Client {
    let mut client = connect_v1_to(relay.address, path).await;
    assert!(matches!(next_v1(&mut client).await, ServerFrame::Welcome { .. }));
    client
}

/// What a join answered: the room's state and its first history page.
struct Joined {
    epoch: String,
    latest_seq: u64,
    members: u64,
    history: Vec<StoredMessage>,
}

/// Joins `room` (resuming after `after`, if given) and reads the answer: `joined`, then the
/// history page.
async fn join_after(client: &mut Client, room: &str, after: Option<Position>) -> Joined {
    send_v1(client, &ClientFrame::Join { room: room.into(), after }).await;
    let (epoch, latest_seq, members) = match next_v1(client).await {
        ServerFrame::Joined { room: joined, epoch, latest_seq, members, .. } => {
            assert_eq!(joined, room.to_ascii_lowercase());
            (epoch, latest_seq, members)
        }
        other => panic!("expected joined, got {other:?}"),
    };
    let history = match next_v1(client).await {
        ServerFrame::History { room: answered, request_id: 0, messages, .. } => {
            assert_eq!(answered, room.to_ascii_lowercase());
            messages
        }
        other => panic!("expected the room's history, got {other:?}"),
    };
    Joined { epoch, latest_seq, members, history }
}

async fn join(client: &mut Client, room: &str) -> Joined {
    join_after(client, room, None).await
}

/// The refusal that answers the last frame: its code and room.
async fn refusal(client: &mut Client) -> (ErrorCode, Option<String>) {
    match next_v1(client).await {
        ServerFrame::Error { error, room, .. } => (error.code, room),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Sends `id` to `room` and returns its ack's seq.
async fn post(client: &mut Client, room: &str, id: &str) -> u64 {
    let frame = ClientFrame::Message {
        room: room.into(),
        id: id.into(),
        source: "ada".into(),
        content: format!("{id} in {room}"),
    };
    send_v1(client, &frame).await;
    match next_v1(client).await {
        ServerFrame::Ack { room: acked_in, id: acked, seq, duplicate: false } => {
            assert_eq!((acked_in.as_str(), acked.as_str()), (room, id));
            seq
        }
        other => panic!("expected an ack, got {other:?}"),
    }
}

/// The next live message: its room and seq and id.
async fn live(client: &mut Client) -> (String, u64, String) {
    match next_v1(client).await {
        ServerFrame::Message { room, message } => (room, message.seq, message.id),
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Nothing arrives within a short while but, maybe, presence frames.
async fn nothing_more(client: &mut Client) {
    let more = tokio::time::timeout(Duration::from_millis(300), next_v1(client)).await;
    assert!(more.is_err(), "unexpected {more:?}");
}

/// Two rooms number their messages from 1 each, and neither hears the other: Ada in `a` and
/// Bob in `b` each see only their room's messages; Carol, in both, sees each in its room.
#[tokio::test]
async fn rooms_number_from_one_and_keep_apart() {
    let relay = TestRelay::start(Config::default()).await;
    let (mut ada, mut bob, mut carol) = (v1(&relay).await, v1(&relay).await, v1(&relay).await);
    assert_eq!(join(&mut ada, "a").await.latest_seq, 0);
    assert_eq!(join(&mut bob, "b").await.latest_seq, 0);
    assert_eq!(join(&mut carol, "a").await.members, 2);
    join(&mut carol, "b").await;
    assert_eq!(post(&mut ada, "a", "a1").await, 1);
    assert_eq!(post(&mut ada, "a", "a2").await, 2);
    assert_eq!(post(&mut bob, "b", "b1").await, 1);
    assert_eq!(post(&mut ada, LOBBY, "l1").await, 1);
    let mut carol_got = Vec::new();
    for _ in 0..4 {
        carol_got.push(live(&mut carol).await);
    }
    let seen = |room: &str, seq, id: &str| (room.to_owned(), seq, id.to_owned());
    assert_eq!(
        carol_got,
        [seen("a", 1, "a1"), seen("a", 2, "a2"), seen("b", 1, "b1"), seen(LOBBY, 1, "l1")]
    );
    assert_eq!(live(&mut bob).await, seen(LOBBY, 1, "l1"), "bob is in the lobby, not in a");
    nothing_more(&mut bob).await;
    // A room's history is its own.
    send_v1(&mut bob, &ClientFrame::History { room: "b".into(), request_id: 7, after_seq: 0 })
        .await;
    match next_v1(&mut bob).await {
        ServerFrame::History { room, request_id: 7, messages, .. } => {
            assert_eq!(room, "b");
            assert_eq!(messages.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["b1"]);
        }
        other => panic!("{other:?}"),
    }
    relay.stop().await;
}

/// A tab that left a room and comes back on a new connection joins with where it stopped, and
/// gets exactly what it missed; with an epoch the room no longer has, everything it holds.
#[tokio::test]
async fn a_returning_tab_resumes_each_room() {
    let relay = TestRelay::start(Config::default()).await;
    let mut ada = v1(&relay).await;
    let mut tab = v1(&relay).await;
    join(&mut ada, "team").await;
    let first = join(&mut tab, "team").await;
    for n in 1..=3 {
        post(&mut ada, "team", &format!("m{n}")).await;
    }
    for _ in 1..=3 {
        live(&mut tab).await;
    }
    drop(tab);
    for n in 4..=6 {
        post(&mut ada, "team", &format!("m{n}")).await;
    }
    let mut tab = v1(&relay).await;
    let at = Position { epoch: first.epoch.clone(), seq: 3 };
    let back = join_after(&mut tab, "team", Some(at)).await;
    assert_eq!((back.epoch.as_str(), back.latest_seq), (first.epoch.as_str(), 6));
    let ids: Vec<_> = back.history.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["m4", "m5", "m6"]);
    let stale = Position { epoch: "an epoch of long ago".into(), seq: 3 };
    let mut other = v1(&relay).await;
    assert_eq!(join_after(&mut other, "team", Some(stale)).await.history.len(), 6);
    relay.stop().await;
}

fn data_dir(dir: &Path) -> Config {
    Config { data_dir: Some(dir.to_owned()), ..Config::default() }
}

/// With `--data-dir`, two rooms keep their epochs, numbering and histories across a restart;
/// a re-sent message is still recognised in its room.
#[tokio::test]
async fn two_rooms_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestRelay::start(data_dir(dir.path())).await;
    let mut ada = v1(&first).await;
    let a = join(&mut ada, "a").await;
    let b = join(&mut ada, "b").await;
    for n in 1..=3 {
        post(&mut ada, "a", &format!("a{n}")).await;
    }
    post(&mut ada, "b", "b1").await;
    drop(ada);
    first.stop().await;

    let second = TestRelay::start(data_dir(dir.path())).await;
    let mut ada = v1(&second).await;
    let a_again = join(&mut ada, "a").await;
    let b_again = join(&mut ada, "b").await;
    assert_eq!((a_again.epoch.as_str(), a_again.latest_seq), (a.epoch.as_str(), 3));
    assert_eq!((b_again.epoch.as_str(), b_again.latest_seq), (b.epoch.as_str(), 1));
    assert_eq!(a_again.history.len(), 3);
    assert_eq!(post(&mut ada, "b", "b2").await, 2, "b numbers on");
    // The re-send of a3 is acked as the duplicate it is.
    let resend = ClientFrame::Message {
        room: "a".into(),
        id: "a3".into(),
        source: "ada".into(),
        content: "a3 in a".into(),
    };
    send_v1(&mut ada, &resend).await;
    assert!(matches!(next_v1(&mut ada).await, ServerFrame::Ack { seq: 3, duplicate: true, .. }));
    drop(ada);
    second.stop().await;
}

/// A data directory written by a relay from before rooms (one conversation) opens as the
/// lobby: same epoch, same seqs, same messages, and numbering goes on.
#[tokio::test]
async fn a_data_dir_from_before_rooms_becomes_the_lobby() {
    use redb::{Database, TableDefinition};
    const EPOCH: TableDefinition<(), &str> = TableDefinition::new("epoch");
    const LATEST_SEQ: TableDefinition<(), u64> = TableDefinition::new("latest_seq");
    const MESSAGES: TableDefinition<u64, (&str, &str, &str, u64)> =
        TableDefinition::new("messages");
    const RECENT: TableDefinition<u64, (&str, &str, u64)> = TableDefinition::new("recent_ids");

    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::create(dir.path().join(HISTORY_FILE)).unwrap();
        let transaction = db.begin_write().unwrap();
        transaction.open_table(EPOCH).unwrap().insert((), "the old epoch").unwrap();
        transaction.open_table(LATEST_SEQ).unwrap().insert((), 2).unwrap();
        let mut messages = transaction.open_table(MESSAGES).unwrap();
        let mut recent = transaction.open_table(RECENT).unwrap();
        for (seq, id) in [(1, "old-1"), (2, "old-2")] {
            messages.insert(seq, (id, "ada", "from before rooms", 1_700_000_000_000)).unwrap();
            recent.insert(seq, ("ada", id, 1_700_000_000_000)).unwrap();
        }
        drop((messages, recent));
        transaction.commit().unwrap();
    }
    let relay = TestRelay::start(data_dir(dir.path())).await;
    let mut ada = connect_v1_at(relay.address).await;
    match next_v1(&mut ada).await {
        ServerFrame::Welcome { epoch, latest_seq: 2, oldest_seq: 1 } => {
            assert_eq!(epoch, "the old epoch");
        }
        other => panic!("expected the old conversation's welcome, got {other:?}"),
    }
    let (messages, complete) = history(&mut ada, 1, 0).await;
    assert!(complete);
    assert_eq!(messages.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["old-1", "old-2"]);
    assert_eq!(post(&mut ada, LOBBY, "new-3").await, 3);
    drop(ada);
    relay.stop().await;
}

/// Every kind of bad room name is refused with `room_invalid`, naming it, and the connection
/// stays open; a name differing only in case is the same room.
#[tokio::test]
async fn bad_room_names_are_refused_and_the_connection_stays() {
    let relay = TestRelay::start(Config::default()).await;
    let mut ada = v1(&relay).await;
    let long = "x".repeat(65);
    for bad in ["", "two words", "slash/room", "café", "emoji🎉", "tab\t", "star*", &long] {
        send_v1(&mut ada, &ClientFrame::Join { room: bad.into(), after: None }).await;
        assert_eq!(refusal(&mut ada).await, (ErrorCode::RoomInvalid, Some(bad.to_owned())));
    }
    let message = ClientFrame::Message {
        room: "no way".into(),
        id: "m1".into(),
        source: "ada".into(),
        content: "hi".into(),
    };
    send_v1(&mut ada, &message).await;
    match next_v1(&mut ada).await {
        ServerFrame::Error { error, room: Some(room), id: Some(id), .. } => {
            assert_eq!(
                (error.code, room.as_str(), id.as_str()),
                (ErrorCode::RoomInvalid, "no way", "m1")
            );
        }
        other => panic!("{other:?}"),
    }
    send_v1(&mut ada, &ClientFrame::Ping { request_id: 5 }).await;
    assert_eq!(next_v1(&mut ada).await, ServerFrame::Pong { request_id: 5 });
    let mut bob = v1(&relay).await;
    join(&mut ada, "Team-A").await;
    assert_eq!(join(&mut bob, "team-a").await.members, 2, "one room, however it is spelt");
    relay.stop().await;
}

/// Messages, history requests and typing for a room the client is not in are refused with
/// `not_joined`; after `leave` (answered with `left`), nothing of the room reaches it.
#[tokio::test]
async fn leaving_a_room_stops_its_messages() {
    let relay = TestRelay::start(Config::default()).await;
    let (mut ada, mut bob) = (v1(&relay).await, v1(&relay).await);
    join(&mut ada, "a").await;
    join(&mut bob, "a").await;
    send_v1(&mut bob, &ClientFrame::Leave { room: "A".into() }).await;
    assert_eq!(next_v1(&mut bob).await, ServerFrame::Left { room: "a".into() });
    post(&mut ada, "a", "after").await;
    for frame in [
        ClientFrame::Message {
            room: "a".into(),
            id: "m".into(),
            source: "bob".into(),
            content: "hi".into(),
        },
        ClientFrame::History { room: "a".into(), request_id: 3, after_seq: 0 },
        ClientFrame::Typing { room: "a".into() },
        ClientFrame::Leave { room: "a".into() },
    ] {
        send_v1(&mut bob, &frame).await;
        assert_eq!(refusal(&mut bob).await, (ErrorCode::NotJoined, Some("a".into())), "{frame:?}");
    }
    nothing_more(&mut bob).await;
    relay.stop().await;
}

/// The bounds: rooms per connection (`too_many_rooms`), members per room (`room_full`) and
/// rooms in all (`rooms_full`); a room that empties makes way again.
#[tokio::test]
async fn the_bounds_on_rooms() {
    let rooms = RoomLimits { max_rooms: 3, max_members: 2, max_per_connection: 3 };
    let relay = TestRelay::start(Config { rooms, ..Config::default() }).await;
    let mut ada = v1(&relay).await;
    join(&mut ada, "a").await;
    join(&mut ada, "b").await;
    send_v1(&mut ada, &ClientFrame::Join { room: "c".into(), after: None }).await;
    assert_eq!(refusal(&mut ada).await, (ErrorCode::TooManyRooms, Some("c".into())));
    // The lobby and two more: no room for a fourth.
    let mut bob = v1(&relay).await;
    send_v1(&mut bob, &ClientFrame::Join { room: "c".into(), after: None }).await;
    assert_eq!(refusal(&mut bob).await, (ErrorCode::RoomsFull, Some("c".into())));
    join(&mut bob, "a").await;
    // The lobby holds two members too: a third client is told so instead of a welcome...
    let mut dave = connect_v1_to(relay.address, "/ws").await;
    assert_eq!(refusal(&mut dave).await, (ErrorCode::RoomFull, Some(LOBBY.into())));
    send_v1(&mut dave, &ClientFrame::Join { room: "a".into(), after: None }).await;
    assert_eq!(refusal(&mut dave).await, (ErrorCode::RoomFull, Some("a".into())));
    // ...and can join a room with space.
    assert_eq!(join(&mut dave, "b").await.members, 2);
    // Without a data directory an empty room stays open until its place is needed: once b is
    // empty, c opens in its place.
    for client in [&mut ada, &mut dave] {
        send_v1(client, &ClientFrame::Leave { room: "b".into() }).await;
        assert_eq!(next_v1(client).await, ServerFrame::Left { room: "b".into() });
    }
    join(&mut dave, "c").await;
    relay.stop().await;
}

const SECRET: &str = "correct horse battery staple, again";

fn token(name: &str, claims: serde_json::Value) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mut all = json!({ "sub": format!("user-{name}"), "name": name, "exp": now + 3600 });
    all.as_object_mut().unwrap().extend(claims.as_object().unwrap().clone());
    jsonwebtoken::encode(&Header::default(), &all, &EncodingKey::from_secret(SECRET.as_bytes()))
        .unwrap()
}

/// With `--jwt-secret`, the token's `rooms` and `post` say where its holder may go and write:
/// a refused join or post gets `forbidden` with the room, the room list shows only rooms the
/// holder may join, and nothing about a refused room leaks (no presence, no history, no count).
#[tokio::test]
async fn token_claims_open_rooms() {
    let config = Config { jwt_secret: Some(SECRET.into()), ..Config::default() };
    let relay = TestRelay::start(config).await;
    let boss = token("boss", json!({}));
    let reader = token("reader", json!({ "rooms": ["lobby", "team-*"], "post": ["team-a"] }));
    let mut boss = v1_at(&relay, &format!("/ws?token={boss}")).await;
    let mut reader = v1_at(&relay, &format!("/ws?token={reader}")).await;
    join(&mut boss, "secret").await;
    post(&mut boss, "secret", "s1").await;
    join(&mut boss, "team-b").await;

    send_v1(&mut reader, &ClientFrame::Join { room: "secret".into(), after: None }).await;
    assert_eq!(refusal(&mut reader).await, (ErrorCode::Forbidden, Some("secret".into())));
    join(&mut reader, "team-a").await;
    join(&mut reader, "team-b").await;
    let in_b = ClientFrame::Message {
        room: "team-b".into(),
        id: "r1".into(),
        source: "reader".into(),
        content: "may I?".into(),
    };
    send_v1(&mut reader, &in_b).await;
    match next_v1(&mut reader).await {
        ServerFrame::Error { error, room: Some(room), id: Some(id), .. } => {
            assert_eq!(
                (error.code, room.as_str(), id.as_str()),
                (ErrorCode::Forbidden, "team-b", "r1")
            );
        }
        other => panic!("{other:?}"),
    }
    send_v1(&mut reader, &ClientFrame::Typing { room: "team-b".into() }).await;
    assert_eq!(refusal(&mut reader).await, (ErrorCode::Forbidden, Some("team-b".into())));
    send_v1(&mut reader, &ClientFrame::Typing { room: "lobby".into() }).await;
    assert_eq!(refusal(&mut reader).await, (ErrorCode::Forbidden, Some(LOBBY.into())));
    assert_eq!(post(&mut reader, "team-a", "r2").await, 1);

    send_v1(&mut reader, &ClientFrame::Rooms {}).await;
    let listed = match next_v1(&mut reader).await {
        ServerFrame::Rooms { rooms } => rooms,
        other => panic!("{other:?}"),
    };
    let names: Vec<_> = listed.iter().map(|info| info.room.as_str()).collect();
    assert_eq!(names, [LOBBY, "team-b", "team-a"], "most members first; no secret");
    send_v1(&mut boss, &ClientFrame::Rooms {}).await;
    match next_v1(&mut boss).await {
        ServerFrame::Rooms { rooms } => {
            assert!(rooms.contains(&RoomInfo { room: "secret".into(), members: 1 }))
        }
        other => panic!("{other:?}"),
    }
    // The reader never heard of the secret room: only its own rooms' frames reached it.
    nothing_more(&mut reader).await;
    relay.stop().await;
}

/// A token that does not open the lobby: a v1 client is told so instead of a welcome and can
/// go elsewhere; the tutorial's client, which knows no other room, is refused at the handshake.
#[tokio::test]
async fn a_token_without_the_lobby() {
    let config = Config { jwt_secret: Some(SECRET.into()), ..Config::default() };
    let relay = TestRelay::start(config).await;
    let elsewhere = token("eve", json!({ "rooms": ["team-*"] }));
    let mut eve = connect_v1_to(relay.address, &format!("/ws?token={elsewhere}")).await;
    assert_eq!(refusal(&mut eve).await, (ErrorCode::Forbidden, Some(LOBBY.into())));
    join(&mut eve, "team-x").await;
    let url = format!("ws://{}/ws?token={elsewhere}", relay.address);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 403);
        }
        other => panic!("expected 403, got {other:?}"),
    }
    relay.stop().await;
}

/// The names of the next presence frame for `room` (other frames skipped).
async fn presence(client: &mut Client, room: &str) -> Vec<String> {
    loop {
        if let ServerFrame::Presence { room: about, names, count } = next_v1_any(client).await {
            if about == room {
                assert_eq!(count, names.len() as u64);
                return names;
            }
        }
    }
}

/// Presence: who is in a room by name, on joining and whenever it changes; two tabs of one name
/// count once; the name comes from the URL, else from what the client writes; a tab that
/// vanishes without closing drops out once the heartbeat deadline passes.
#[tokio::test]
async fn presence_by_name() {
    let heartbeat =
        Heartbeat { interval: Duration::from_millis(300), timeout: Duration::from_millis(300) };
    let relay = TestRelay::start(Config { heartbeat, ..Config::default() }).await;
    let mut ada = connect_v1_to(relay.address, "/ws?name=ada").await;
    assert!(matches!(next_v1_any(&mut ada).await, ServerFrame::Welcome { .. }));
    assert_eq!(presence(&mut ada, LOBBY).await, ["ada"]);
    send_v1(&mut ada, &ClientFrame::Join { room: "r".into(), after: None }).await;
    assert_eq!(presence(&mut ada, "r").await, ["ada"]);
    // Bob's name is what he writes under.
    let mut bob = v1(&relay).await;
    send_v1(&mut bob, &ClientFrame::Join { room: "r".into(), after: None }).await;
    assert_eq!(presence(&mut bob, "r").await, ["ada", "anonymous"]);
    assert_eq!(presence(&mut ada, "r").await, ["ada", "anonymous"]);
    let hello = ClientFrame::Message {
        room: "r".into(),
        id: "b1".into(),
        source: "bob".into(),
        content: "hello".into(),
    };
    send_v1(&mut bob, &hello).await;
    assert_eq!(presence(&mut ada, "r").await, ["ada", "bob"]);
    // A second tab of Ada changes nothing for the others.
    let mut ada_again = connect_v1_to(relay.address, "/ws?name=ada").await;
    send_v1(&mut ada_again, &ClientFrame::Join { room: "r".into(), after: None }).await;
    assert_eq!(presence(&mut ada_again, "r").await, ["ada", "bob"]);
    drop(ada_again);
    // Bob's tab vanishes without a close: it stops answering pings (nobody reads it).
    let vanished = bob;
    let names = presence(&mut ada, "r").await;
    assert_eq!(names, ["ada"], "bob dropped out at the heartbeat deadline");
    drop(vanished);
    relay.stop().await;
}

/// Typing is relayed to the room's other members with the typist's name, at most once a second
/// per room (more is dropped without an answer), and never numbered.
#[tokio::test]
async fn typing_is_relayed_and_held_to_its_pace() {
    let relay = TestRelay::start(Config::default()).await;
    let mut ada = v1_at(&relay, "/ws?name=ada").await;
    let mut bob = v1(&relay).await;
    join(&mut ada, "r").await;
    join(&mut bob, "r").await;
    for _ in 0..5 {
        send_v1(&mut ada, &ClientFrame::Typing { room: "r".into() }).await;
    }
    assert_eq!(
        next_v1(&mut bob).await,
        ServerFrame::Typing { room: "r".into(), name: "ada".into() }
    );
    nothing_more(&mut bob).await;
    nothing_more(&mut ada).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    send_v1(&mut ada, &ClientFrame::Typing { room: "r".into() }).await;
    assert_eq!(
        next_v1(&mut bob).await,
        ServerFrame::Typing { room: "r".into(), name: "ada".into() }
    );
    // The room's numbering never saw it.
    assert_eq!(post(&mut ada, "r", "m1").await, 1);
    relay.stop().await;
}

/// The tutorial's client is in the lobby with the v1 clients, as before rooms, and hears nothing
/// of other rooms.
#[tokio::test]
async fn the_tutorial_client_stays_in_the_lobby() {
    let relay = TestRelay::start(Config::default()).await;
    let mut tutorial = relay.connect().await;
    let mut ada = v1(&relay).await;
    join(&mut ada, "elsewhere").await;
    post(&mut ada, "elsewhere", "e1").await;
    post(&mut ada, LOBBY, "l1").await;
    assert_eq!(next_chat(&mut tutorial).await, chat("ada", "l1 in lobby"));
    send(&mut tutorial, &chat("tut", "hi from the tutorial")).await;
    match next_v1(&mut ada).await {
        ServerFrame::Message { room, message } => {
            assert_eq!((room.as_str(), message.seq, message.source.as_str()), (LOBBY, 2, "tut"));
        }
        other => panic!("{other:?}"),
    }
    tutorial.send(Message::Close(None)).await.unwrap();
    relay.stop().await;
}

/// `/metrics` counts rooms and memberships without a label per room.
#[tokio::test]
async fn metrics_count_rooms_without_naming_them() {
    let relay = TestRelay::start(Config::default()).await;
    let mut ada = v1(&relay).await;
    join(&mut ada, "private-name").await;
    send_v1(&mut ada, &ClientFrame::Join { room: "bad name".into(), after: None }).await;
    refusal(&mut ada).await;
    assert_eq!(metric(&relay, "wschat_rooms").await, 2.0);
    assert_eq!(metric(&relay, "wschat_room_members").await, 2.0);
    assert_eq!(metric(&relay, "wschat_room_joins_total").await, 2.0);
    assert_eq!(metric(&relay, r#"wschat_room_refusals_total{kind="room_invalid"}"#).await, 1.0);
    assert!(!http_get(relay.address, "/metrics").await.contains("private-name"));
    relay.stop().await;
}
