//! Protocol v1 as clients see it: seqs, acks, dedupe, resume, epoch, heartbeats, and one
//! conversation shared with tutorial-mode clients.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use wschat_protocol::rooms::LOBBY;
use wschat_protocol::v1::{ClientFrame, ServerFrame, StoredMessage};
use wschat_protocol::ErrorCode;
use wschat_relay::{Config, Heartbeat};

/// Reads the welcome frame every v1 connection starts with; returns (epoch, latest_seq).
async fn welcome(client: &mut Client) -> (String, u64) {
    match next_v1(client).await {
        ServerFrame::Welcome { epoch, latest_seq, .. } => (epoch, latest_seq),
        other => panic!("expected a welcome, got {other:?}"),
    }
}

async fn next_message(client: &mut Client) -> StoredMessage {
    match next_v1(client).await {
        ServerFrame::Message { message, .. } => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// A v1 tab is welcomed, gets an ack with the seq for what it sends, and the others get the
/// numbered message, stamped with the relay's time.
#[tokio::test]
async fn messages_are_numbered_acked_and_relayed() {
    let relay = TestRelay::start(Config::default()).await;
    let mut alice = relay.connect_v1().await;
    let mut bob = relay.connect_v1().await;
    let (epoch, latest) = welcome(&mut alice).await;
    assert_eq!(latest, 0);
    assert_eq!(welcome(&mut bob).await.0, epoch, "one relay, one epoch");

    for (n, id) in ["m1", "m2"].into_iter().enumerate() {
        send_v1(&mut alice, &message(id, &format!("hello {n}"))).await;
        let seq = n as u64 + 1;
        let ack = ServerFrame::Ack { room: LOBBY.into(), id: id.into(), seq, duplicate: false };
        assert_eq!(next_v1(&mut alice).await, ack);
        let received = next_message(&mut bob).await;
        assert_eq!((received.seq, received.id.as_str()), (seq, id));
        assert_eq!(received.content, format!("hello {n}"));
        assert!(received.sent_at_ms > 1_700_000_000_000, "a real time stamp");
    }
    // A newcomer is told where the conversation stands.
    let mut carol = relay.connect_v1().await;
    assert_eq!(welcome(&mut carol).await, (epoch, 2));
    relay.stop().await;
}

/// Re-sending a message after a reconnect (same id) is acked again as a duplicate with the same
/// seq, and nobody receives it twice.
#[tokio::test]
async fn a_resent_message_is_relayed_once() {
    let relay = TestRelay::start(Config::default()).await;
    let mut alice = relay.connect_v1().await;
    let mut bob = relay.connect_v1().await;
    welcome(&mut alice).await;
    welcome(&mut bob).await;

    send_v1(&mut alice, &message("once", "only once")).await;
    assert_eq!(
        next_v1(&mut alice).await,
        ServerFrame::Ack { room: LOBBY.into(), id: "once".into(), seq: 1, duplicate: false }
    );
    drop(alice);
    let mut alice = relay.connect_v1().await;
    welcome(&mut alice).await;
    send_v1(&mut alice, &message("once", "only once")).await;
    assert_eq!(
        next_v1(&mut alice).await,
        ServerFrame::Ack { room: LOBBY.into(), id: "once".into(), seq: 1, duplicate: true }
    );

    send_v1(&mut alice, &message("next", "after")).await;
    assert_eq!(next_message(&mut bob).await.id, "once");
    assert_eq!(next_message(&mut bob).await.id, "next", "no second copy in between");
    relay.stop().await;
}

/// Sends a message from `source` and returns the ack's (seq, duplicate).
async fn post_as(client: &mut Client, source: &str, id: &str) -> (u64, bool) {
    let frame = ClientFrame::Message {
        room: LOBBY.into(),
        id: id.into(),
        source: source.into(),
        content: id.into(),
    };
    send_v1(client, &frame).await;
    match next_v1(client).await {
        ServerFrame::Ack { id: acked, seq, duplicate, .. } if acked == id => (seq, duplicate),
        other => panic!("expected the ack of {id}, got {other:?}"),
    }
}

/// With no history kept (`--history-limit 0`), a message re-sent from a new connection under
/// the same name (a tab that reconnected, or the next tab adopting its outbox) is still
/// recognised, after hundreds of other messages; the same id under another name is that
/// sender's own message, numbered and relayed.
#[tokio::test]
async fn a_resent_message_is_recognised_without_history() {
    let config = Config { history_limit: 0, rate: unlimited(), ..Config::default() };
    let relay = TestRelay::start(config).await;
    let mut watcher = relay.connect_v1().await;
    welcome(&mut watcher).await;
    let mut tab = relay.connect_v1().await;
    welcome(&mut tab).await;
    assert_eq!(post_as(&mut tab, "ada", "m1").await, (1, false));
    let mut bob = relay.connect_v1().await;
    welcome(&mut bob).await;
    for n in 0..500 {
        post_as(&mut bob, "bob", &format!("b{n}")).await;
    }
    drop(tab);
    let mut tab = relay.connect_v1().await;
    welcome(&mut tab).await;
    assert_eq!(post_as(&mut tab, "ada", "m1").await, (1, true), "recognised");
    assert_eq!(post_as(&mut bob, "bob", "m1").await, (502, false), "bob's own m1");

    let mut m1_from = Vec::new();
    for _ in 0..502 {
        let message = next_message(&mut watcher).await;
        if message.id == "m1" {
            m1_from.push(message.source);
        }
    }
    assert_eq!(m1_from, ["ada", "bob"], "ada's once, bob's once");
    relay.stop().await;
}

/// A tab whose outbox flushes 300 messages at once (after a long disconnection, say) gets 300
/// acks, in order, and stays connected: its own acks do not count it as a slow reader.
#[tokio::test]
async fn an_outbox_of_300_is_acked_whole() {
    let relay = TestRelay::start(Config { rate: unlimited(), ..Config::default() }).await;
    let mut alice = relay.connect_v1().await;
    welcome(&mut alice).await;
    for n in 0..300 {
        let frame = message(&format!("queued-{n}"), &n.to_string());
        alice.feed(Message::text(frame.to_json())).await.unwrap();
    }
    alice.flush().await.unwrap();
    for n in 0..300 {
        let ack = ServerFrame::Ack {
            room: LOBBY.into(),
            id: format!("queued-{n}"),
            seq: n + 1,
            duplicate: false,
        };
        assert_eq!(next_v1(&mut alice).await, ack);
    }
    assert_eq!(metric(&relay, SLOW_CONSUMERS).await, 0.0);
    relay.stop().await;
}

/// Tab B is cut off while A sends 20 messages; when B comes back and asks for what follows its
/// last seq, it gets exactly those 20, once, in order.
#[tokio::test]
async fn a_returning_tab_gets_exactly_what_it_missed() {
    let relay = TestRelay::start(Config::default()).await;
    let mut alice = relay.connect_v1().await;
    let mut bob = relay.connect_v1().await;
    welcome(&mut alice).await;
    welcome(&mut bob).await;
    send_v1(&mut alice, &message("before", "seen by both")).await;
    next_v1(&mut alice).await;
    let last_seen = next_message(&mut bob).await.seq;
    drop(bob);

    for n in 0..20 {
        send_v1(&mut alice, &message(&format!("missed-{n}"), &n.to_string())).await;
        next_v1(&mut alice).await;
    }
    let mut bob = relay.connect_v1().await;
    welcome(&mut bob).await;
    let (missed, complete) = history(&mut bob, 7, last_seen).await;
    assert!(complete);
    let ids: Vec<_> = missed.iter().map(|message| message.id.clone()).collect();
    let expected: Vec<_> = (0..20).map(|n| format!("missed-{n}")).collect();
    assert_eq!(ids, expected);
    let seqs: Vec<_> = missed.iter().map(|message| message.seq).collect();
    assert_eq!(seqs, (2..=21).collect::<Vec<_>>());
    relay.stop().await;
}

/// When the relay no longer holds everything after the client's seq, the answer says so.
#[tokio::test]
async fn history_that_no_longer_reaches_back_is_reported_incomplete() {
    let relay = TestRelay::start(Config { history_limit: 5, ..Config::default() }).await;
    let mut alice = relay.connect_v1().await;
    welcome(&mut alice).await;
    for n in 0..10 {
        send_v1(&mut alice, &message(&format!("m{n}"), "x")).await;
        next_v1(&mut alice).await;
    }
    let (messages, complete) = history(&mut alice, 1, 2).await;
    assert!(!complete, "seqs 3 to 5 are gone");
    assert_eq!(messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [6, 7, 8, 9, 10]);
    let (messages, complete) = history(&mut alice, 2, 8).await;
    assert!(complete);
    assert_eq!(messages.len(), 2);
    relay.stop().await;
}

/// A relay that restarts without its history starts a new epoch, so clients know their seqs no
/// longer apply.
#[tokio::test]
async fn a_restarted_relay_has_a_new_epoch() {
    let first = TestRelay::start(Config::default()).await;
    let mut client = first.connect_v1().await;
    let (first_epoch, _) = welcome(&mut client).await;
    first.stop().await;
    let second = TestRelay::start(Config::default()).await;
    let mut client = second.connect_v1().await;
    let (second_epoch, latest) = welcome(&mut client).await;
    assert_ne!(first_epoch, second_epoch);
    assert_eq!(latest, 0);
    second.stop().await;
}

/// The tutorial's client and v1 tabs share one conversation: a tutorial message reaches v1 tabs
/// with a seq and an id, and v1 messages reach the tutorial client as its plain JSON.
#[tokio::test]
async fn tutorial_and_v1_clients_share_one_conversation() {
    let relay = TestRelay::start(Config::default()).await;
    let mut tutorial = relay.connect_to("/").await;
    let mut app = relay.connect_v1().await;
    welcome(&mut app).await;

    tutorial.send(Message::text(r#"{"source":"localhost","content":"hi app"}"#)).await.unwrap();
    let received = next_message(&mut app).await;
    assert_eq!(
        (received.seq, received.source.as_str(), received.content.as_str()),
        (1, "localhost", "hi app")
    );
    assert_eq!(received.id.len(), 36, "the relay gives it a UUID: {}", received.id);

    send_v1(&mut app, &message("v1", "hi tutorial")).await;
    next_v1(&mut app).await;
    let plain = tokio::time::timeout(PATIENCE, tutorial.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(plain, Message::text(r#"{"source":"ada","content":"hi tutorial"}"#));
    assert_eq!(history(&mut app, 1, 0).await.0.len(), 2, "both are in the history");
    relay.stop().await;
}

/// A v1 ping gets a pong with the same request id.
#[tokio::test]
async fn ping_gets_pong() {
    let relay = TestRelay::start(Config::default()).await;
    let mut client = relay.connect_v1().await;
    welcome(&mut client).await;
    send_v1(&mut client, &ClientFrame::Ping { request_id: 42 }).await;
    assert_eq!(next_v1(&mut client).await, ServerFrame::Pong { request_id: 42 });
    relay.stop().await;
}

/// Bad v1 frames get an error frame, naming the message id when there is one; the connection
/// stays open and nothing is relayed.
#[tokio::test]
async fn bad_v1_frames_get_errors() {
    let relay = TestRelay::start(Config::default()).await;
    let mut sender = relay.connect_v1().await;
    let mut other = relay.connect_v1().await;
    welcome(&mut sender).await;
    welcome(&mut other).await;
    let cases = [
        (r#"{"type":"shout"}"#.to_owned(), ErrorCode::InvalidMessage, None),
        ("{nope".to_owned(), ErrorCode::InvalidJson, None),
        (
            r#"{"source":"a","content":"tutorial shape"}"#.to_owned(),
            ErrorCode::InvalidMessage,
            None,
        ),
        (message("", "empty id").to_json(), ErrorCode::InvalidMessage, Some(String::new())),
        (
            message(&"x".repeat(129), "long id").to_json(),
            ErrorCode::InvalidMessage,
            Some("x".repeat(129)),
        ),
    ];
    for (text, code, expected_id) in cases {
        sender.send(Message::text(text.clone())).await.unwrap();
        match next_v1(&mut sender).await {
            ServerFrame::Error { error, id, .. } => {
                assert_eq!(error.code, code, "{text}");
                assert_eq!(id, expected_id, "{text}");
            }
            other => panic!("{text}: expected an error, got {other:?}"),
        }
    }
    send_v1(&mut sender, &message("fine", "all good")).await;
    assert_eq!(next_message(&mut other).await.id, "fine");
    relay.stop().await;
}

/// The relay pings every client; one that stops answering (a half-open connection after sleep) is
/// dropped, while one that keeps reading stays connected.
#[tokio::test]
async fn silent_clients_are_dropped_live_ones_stay() {
    let heartbeat =
        Heartbeat { interval: Duration::from_millis(100), timeout: Duration::from_millis(100) };
    let relay = TestRelay::start(Config { heartbeat, ..Config::default() }).await;
    let mut silent = relay.connect_v1().await;
    let mut live = relay.connect_v1().await;
    welcome(&mut live).await;

    // The live client reads (and so answers pings) for well over the timeout.
    let mut pings = 0;
    let reading = tokio::time::Instant::now();
    while reading.elapsed() < Duration::from_millis(800) {
        if let Ok(Some(Ok(Message::Ping(_)))) =
            tokio::time::timeout(Duration::from_millis(50), live.next()).await
        {
            pings += 1;
        }
    }
    assert!(pings >= 2, "pinged {pings} times");
    send_v1(&mut live, &ClientFrame::Ping { request_id: 1 }).await;
    assert_eq!(next_v1(&mut live).await, ServerFrame::Pong { request_id: 1 });

    // The silent client never read, so never answered: its connection has been dropped. Reading
    // now finds the queued frames, then the end.
    let ended =
        tokio::time::timeout(PATIENCE, async { while let Some(Ok(_)) = silent.next().await {} })
            .await;
    assert!(ended.is_ok(), "the silent client is still connected");
    relay.stop().await;
}
