//! Limits as clients see them: field checks answered with error frames, too many connections
//! refused at the handshake, floods shaped and then closed, and repeated bad frames closed.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use wschat_protocol::v1::ServerFrame;
use wschat_protocol::{ChatMessage, ErrorCode, RelayFrame};
use wschat_relay::{Config, MessageLimits, RateLimit};

/// Fields over the limits, blank or with control characters get their own error code, in each
/// client's protocol (with the message id for v1); the connection stays open and nothing is
/// relayed.
#[tokio::test]
async fn bad_fields_are_answered_and_not_relayed() {
    let limits = MessageLimits { max_source_chars: 8, max_content_chars: 20 };
    let relay = TestRelay::start(Config { limits, ..Config::default() }).await;
    let mut tutorial = relay.connect().await;
    let mut app = relay.connect_v1().await;
    let mut watcher = relay.connect().await;
    next_v1(&mut app).await; // welcome

    let cases = [
        ("ada", "x".repeat(21), ErrorCode::TooLong),
        ("a-long-name", "hi".to_owned(), ErrorCode::TooLong),
        ("", "hi".to_owned(), ErrorCode::SourceInvalid),
        ("ada\u{7}", "hi".to_owned(), ErrorCode::SourceInvalid),
        ("ada", "  ".to_owned(), ErrorCode::ContentInvalid),
        ("ada", "nul\0".to_owned(), ErrorCode::ContentInvalid),
    ];
    for (n, (source, content, code)) in cases.into_iter().enumerate() {
        send(&mut tutorial, &chat(source, &content)).await;
        match next_frame(&mut tutorial).await {
            RelayFrame::Error { error } => assert_eq!(error.code, code, "{source:?} {content:?}"),
            other => panic!("expected an error, got {other:?}"),
        }
        // v1 messages come from "ada": only the content cases apply to them.
        if source == "ada" {
            let id = format!("bad-{n}");
            send_v1(&mut app, &message(&id, &content)).await;
            match next_v1(&mut app).await {
                ServerFrame::Error { error, id: refused, .. } => {
                    assert_eq!((error.code, refused), (code, Some(id)));
                }
                other => panic!("expected an error, got {other:?}"),
            }
        }
    }
    send(&mut tutorial, &chat("ada", "fine")).await;
    let fine = next_frame(&mut watcher).await;
    assert_eq!(
        fine,
        RelayFrame::Chat(ChatMessage { source: "ada".into(), content: "fine".into() })
    );
    relay.stop().await;
}

/// Past the connection limit the handshake is refused with 503; a place frees when someone
/// leaves.
#[tokio::test]
async fn too_many_connections_get_503() {
    let relay = TestRelay::start(Config { max_connections: 2, ..Config::default() }).await;
    let first = relay.connect().await;
    let _second = relay.connect().await;
    let url = format!("ws://{}/ws", relay.address);
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
        }
        other => panic!("expected 503, got {other:?}"),
    }
    drop(first);
    let admitted = tokio::time::timeout(PATIENCE, async {
        loop {
            if tokio_tungstenite::connect_async(&url).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(admitted.is_ok(), "a place frees up when a client leaves");
    relay.stop().await;
}

/// A page on another site cannot open a socket (403); the relay's own pages, the dev server and
/// clients that send no Origin can.
#[tokio::test]
async fn foreign_origins_are_refused_at_the_handshake() {
    let relay = TestRelay::start(Config::default()).await;
    let attempt = |origin: Option<&str>| {
        let mut request = format!("ws://{}/ws", relay.address).into_client_request().unwrap();
        if let Some(origin) = origin {
            request.headers_mut().insert("Origin", origin.parse().unwrap());
        }
        tokio_tungstenite::connect_async(request)
    };
    match attempt(Some("https://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("expected 403, got {other:?}"),
    }
    let own = format!("http://{}", relay.address);
    for origin in [None, Some(own.as_str()), Some("http://127.0.0.1:8080")] {
        assert!(attempt(origin).await.is_ok(), "{origin:?} is allowed");
    }
    relay.stop().await;
}

/// A burst over the rate is slowed down, not dropped: everything arrives, in order.
#[tokio::test]
async fn a_burst_over_the_rate_is_delayed_not_lost() {
    let rate = RateLimit { per_second: 50.0, burst: 5 };
    let relay = TestRelay::start(Config { rate, ..Config::default() }).await;
    let mut sender = relay.connect().await;
    let mut reader = relay.connect().await;
    for n in 0..30 {
        send(&mut sender, &chat("ada", &n.to_string())).await;
    }
    for n in 0..30 {
        assert_eq!(next_chat(&mut reader).await.content, n.to_string());
    }
    relay.stop().await;
}

/// A client that keeps sending faster than the rate for too long is closed with 1008; the others
/// keep chatting.
#[tokio::test]
async fn a_flood_is_closed_with_1008() {
    let rate = RateLimit { per_second: 20.0, burst: 1 };
    let flood_after = Duration::from_millis(300);
    let relay = TestRelay::start(Config { rate, flood_after, ..Config::default() }).await;
    let mut flooder = relay.connect().await;
    let mut other = relay.connect().await;
    let mut watcher = relay.connect().await;
    let flooding = tokio::spawn(async move {
        for n in 0..10_000 {
            if flooder.send(Message::text(chat("flood", &n.to_string()).to_json())).await.is_err() {
                break;
            }
        }
        close_code(&mut flooder).await
    });
    let code = tokio::time::timeout(PATIENCE, flooding).await.unwrap().unwrap();
    assert_eq!(code, Some(CloseCode::Policy));
    send(&mut other, &chat("other", "still fine")).await;
    let received = tokio::time::timeout(PATIENCE, async {
        loop {
            let message = next_chat(&mut watcher).await;
            if message.source == "other" {
                return message;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(received.content, "still fine");
    relay.stop().await;
}

/// Bad frame after bad frame: after `max_strikes` in a row the connection is closed with 1008.
#[tokio::test]
async fn repeated_bad_frames_close_the_connection() {
    let relay = TestRelay::start(Config { max_strikes: 5, ..Config::default() }).await;
    let mut client = relay.connect().await;
    for _ in 0..4 {
        client.send(Message::text("nope")).await.unwrap();
        assert!(matches!(next_frame(&mut client).await, RelayFrame::Error { .. }));
    }
    // A good frame resets the count.
    send(&mut client, &chat("ada", "sorry")).await;
    for _ in 0..4 {
        client.send(Message::text("nope")).await.unwrap();
        assert!(matches!(next_frame(&mut client).await, RelayFrame::Error { .. }));
    }
    client.send(Message::text("nope")).await.unwrap();
    assert_eq!(close_code(&mut client).await, Some(CloseCode::Policy));
    relay.stop().await;
}

/// A frame over the size limit closes its sender with 1009, saying the limit.
#[tokio::test]
async fn an_oversized_frame_closes_with_1009() {
    let relay = TestRelay::start(Config { max_message_size: 1000, ..Config::default() }).await;
    let mut client = relay.connect().await;
    client.send(Message::text("x".repeat(2000))).await.unwrap();
    let frame = loop {
        match tokio::time::timeout(PATIENCE, client.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let frame = frame.expect("a close frame with a code");
    assert_eq!(frame.code, CloseCode::Size);
    assert!(frame.reason.contains("at most 1000 bytes"), "{}", frame.reason);
    relay.stop().await;
}

/// A client that announces an 8 MiB frame is closed with 1009 at the frame's header: the relay
/// neither waits for the payload (only 1 KiB of it ever comes) nor makes room for it.
#[tokio::test]
async fn a_frame_announced_over_the_limit_is_refused_at_its_header() {
    let relay = TestRelay::start(Config::default()).await;
    let mut client = RawClient::connect(&relay, "/ws").await;
    client.send_header(8 * 1024 * 1024).await;
    client.stream.write_all(&[b'x'; 1024]).await.unwrap();
    let (code, reason) = client.close_frame().await.expect("a close frame");
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("at most 65536 bytes"), "{reason}");
    relay.stop().await;
}
