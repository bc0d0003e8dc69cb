//! The relay as clients see it: real tokio-tungstenite clients against `run(...)` on 127.0.0.1:0.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use wschat_protocol::{ErrorCode, RelayFrame};
use wschat_relay::{Config, MessageLimits};

/// A message from one tab appears in every other tab, exactly as sent, and not back in the
/// sender's own tab (it already lists it under "Sent").
#[tokio::test]
async fn relays_to_everyone_but_the_sender() {
    let relay = TestRelay::start(Config::default()).await;
    let mut alice = relay.connect().await;
    let mut bob = relay.connect().await;
    let mut carol = relay.connect().await;

    let hello = chat("alice", "hello, everyone");
    send(&mut alice, &hello).await;
    assert_eq!(next_chat(&mut bob).await, hello);
    assert_eq!(next_chat(&mut carol).await, hello);

    // Bob's reply was sent after the relay had fanned out Alice's message, so if Alice had been
    // sent her own message it would arrive before Bob's reply.
    let reply = chat("bob", "hi alice");
    send(&mut bob, &reply).await;
    assert_eq!(next_chat(&mut alice).await, reply);
    assert_eq!(next_chat(&mut carol).await, reply);
    relay.stop().await;
}

/// The tutorial's client connects to `ws://localhost:5000` (path `/`) and speaks plain JSON; it
/// chats with app clients on `/ws`, byte for byte as the tutorial expects.
#[tokio::test]
async fn tutorial_client_on_root_path_chats_with_app_clients() {
    let relay = TestRelay::start(Config::default()).await;
    let mut tutorial = relay.connect_to("/").await;
    let mut app = relay.connect().await;

    let text = r#"{"source":"localhost","content":"from the tutorial"}"#;
    tutorial.send(Message::text(text)).await.unwrap();
    let received = tokio::time::timeout(PATIENCE, app.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(received, Message::text(text));

    send(&mut app, &chat("app", "from the app")).await;
    assert_eq!(next_chat(&mut tutorial).await, chat("app", "from the app"));
    relay.stop().await;
}

/// A bad frame is answered to its sender alone with a clear error; its connection stays open and
/// the other clients see nothing of it.
#[tokio::test]
async fn bad_frames_are_answered_to_the_sender_only() {
    let relay = TestRelay::start(Config::default()).await;
    let mut sender = relay.connect().await;
    let mut other = relay.connect().await;

    let cases = [
        (Message::text("not json"), ErrorCode::InvalidJson),
        (Message::text(r#"{"source":"a","content":"unterminated"#), ErrorCode::InvalidJson),
        (Message::text(r#"{"source":"a"}"#), ErrorCode::InvalidMessage),
        (Message::text(r#"{"source":1,"content":"b"}"#), ErrorCode::InvalidMessage),
        (Message::text(r#"["a","b"]"#), ErrorCode::InvalidMessage),
        (Message::binary(vec![0, 159, 146, 150]), ErrorCode::BinaryFrame),
    ];
    for (frame, expected) in cases {
        let description = format!("{frame:?}");
        sender.send(frame).await.unwrap();
        match next_frame(&mut sender).await {
            RelayFrame::Error { error } => {
                assert_eq!(error.code, expected, "{description}");
                assert!(!error.message.is_empty());
            }
            other => panic!("{description}: expected an error, got {other:?}"),
        }
    }

    // The sender is still connected and can chat; the other client's first frame is that message,
    // so none of the bad frames (nor their answers) reached it.
    let fine = chat("sender", "sorry about that");
    send(&mut sender, &fine).await;
    assert_eq!(next_chat(&mut other).await, fine);
    send(&mut other, &chat("other", "no harm done")).await;
    assert_eq!(next_chat(&mut sender).await, chat("other", "no harm done"));
    relay.stop().await;
}

/// A burst of 2,000 small messages from one tab, sent as fast as the socket takes them, reaches
/// every other tab whole and in order: nobody is disconnected for being briefly 2,000 small
/// messages behind. (The relay's own limit on messages per second is lifted; every other setting
/// is the default.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_reaches_every_reader() {
    const READERS: usize = 20;
    const MESSAGES: usize = 2_000;
    let relay = TestRelay::start(Config { rate: unlimited(), ..Config::default() }).await;
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let mut reader = relay.connect().await;
        readers.push(tokio::spawn(async move {
            for n in 0..MESSAGES {
                assert_eq!(next_chat(&mut reader).await.content, n.to_string(), "in order");
            }
            reader
        }));
    }
    let mut sender = relay.connect().await;
    for n in 0..MESSAGES {
        let frame = Message::text(chat("burst", &n.to_string()).to_json());
        sender.feed(frame).await.unwrap();
    }
    sender.flush().await.unwrap();
    for reader in readers {
        reader.await.unwrap();
    }
    assert_eq!(metric(&relay, SLOW_CONSUMERS).await, 0.0, "nobody was evicted");
    relay.stop().await;
}

/// A client that stops reading does not slow anyone else down: the others get every message, in
/// order, including a burst; the stalled client is disconnected (1008 when the close frame can
/// still reach it) once it is megabytes behind, and it alone.
#[tokio::test]
async fn a_client_that_stops_reading_does_not_stall_the_others() {
    // Big messages, fast: lift the content and rate limits, which are not what this is about.
    let relay = TestRelay::start(Config {
        limits: MessageLimits { max_content_chars: 100_000, ..MessageLimits::default() },
        rate: unlimited(),
        ..Config::default()
    })
    .await;
    let mut stalled = relay.connect().await;
    let mut sender = relay.connect().await;
    let mut reader = relay.connect().await;

    // First a burst of small messages, all at once: no reason to drop anyone.
    for n in 0..2_000 {
        sender.feed(Message::text(chat("small", &n.to_string()).to_json())).await.unwrap();
    }
    sender.flush().await.unwrap();
    for n in 0..2_000 {
        assert_eq!(next_chat(&mut reader).await.content, n.to_string());
    }
    // Then 400 messages of 60 KB: ~24 MB, more than the stalled client's queue bound and the
    // loopback socket buffers can hide. The sender waits for each message to reach the reader
    // before sending the next, so the reader is never the slow one: only the stalled client falls
    // behind.
    let body = "x".repeat(60_000);
    for n in 0..400 {
        send(&mut sender, &chat(&n.to_string(), &body)).await;
        let message = next_chat(&mut reader).await;
        assert_eq!(message.source, n.to_string(), "messages arrive complete and in order");
    }

    // Now the stalled client reads: it finds its connection closed by the relay, with 1008 when
    // the close frame could still be delivered.
    let code = close_code(&mut stalled).await;
    assert!(matches!(code, None | Some(CloseCode::Policy)), "closed with {code:?}");
    assert_eq!(
        metric_reaches(&relay, SLOW_CONSUMERS, 1.0).await,
        1.0,
        "the stalled client, and only it"
    );
    relay.stop().await;
}

/// Stopping the relay closes every client socket with 1001 ("going away") and `run` returns.
#[tokio::test]
async fn shutdown_closes_every_socket_with_1001() {
    let relay = TestRelay::start(Config::default()).await;
    let mut first = relay.connect().await;
    let mut second = relay.connect_to("/").await;
    send(&mut first, &chat("first", "before the shutdown")).await;
    next_chat(&mut second).await;

    relay.stop().await;
    assert_eq!(close_code(&mut first).await, Some(CloseCode::Away));
    assert_eq!(close_code(&mut second).await, Some(CloseCode::Away));
}

/// A client that closes its socket gets the relay's close reply: a clean closing handshake, not
/// a dropped connection.
#[tokio::test]
async fn leaving_is_a_clean_close_handshake() {
    let relay = TestRelay::start(Config::default()).await;
    let mut client = relay.connect().await;
    client.close(None).await.unwrap();
    let reply = tokio::time::timeout(PATIENCE, client.next()).await.unwrap();
    assert!(matches!(reply, Some(Ok(Message::Close(_)))), "got {reply:?}");
    relay.stop().await;
}

/// The `wschat-relay` command stops on SIGTERM (what service managers send): it closes every
/// socket with 1001 and exits successfully.
#[cfg(unix)]
#[tokio::test]
async fn the_command_shuts_down_gracefully_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut relay = tokio::process::Command::new(env!("CARGO_BIN_EXE_wschat-relay"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut client = tokio::time::timeout(PATIENCE, async {
        loop {
            match tokio_tungstenite::connect_async(&url).await {
                Ok((client, _)) => break client,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .unwrap();

    let pid = relay.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await;
    assert!(killed.unwrap().success());
    assert_eq!(close_code(&mut client).await, Some(CloseCode::Away));
    let status = tokio::time::timeout(PATIENCE, relay.wait()).await.unwrap().unwrap();
    assert!(status.success(), "exited with {status}");
}

/// A message larger than the limit ends only the sender's connection (1009); others chat on.
#[tokio::test]
async fn oversized_message_closes_only_its_sender() {
    let relay = TestRelay::start(Config { max_message_size: 1024, ..Config::default() }).await;
    let mut big = relay.connect().await;
    let mut other = relay.connect().await;
    let mut third = relay.connect().await;

    big.send(Message::text(chat("big", &"y".repeat(2048)).to_json())).await.unwrap();
    assert_eq!(close_code(&mut big).await, Some(CloseCode::Size));

    send(&mut other, &chat("other", "still here")).await;
    assert_eq!(next_chat(&mut third).await, chat("other", "still here"));
    relay.stop().await;
}

/// With `--static DIR` the relay also serves the built app, on the same port as the socket.
#[tokio::test]
async fn serves_the_built_app_beside_the_socket() {
    let dir = std::env::temp_dir().join(format!("wschat-static-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><title>wschat</title>").unwrap();
    std::fs::write(dir.join("app.js"), "console.log('wschat')").unwrap();
    let relay =
        TestRelay::start(Config { static_dir: Some(dir.clone()), ..Config::default() }).await;

    let index = http_get(relay.address, "/").await;
    assert!(index.starts_with("HTTP/1.1 200"), "{index}");
    assert!(index.ends_with("<!doctype html><title>wschat</title>"), "{index}");
    let script = http_get(relay.address, "/app.js").await;
    assert!(script.starts_with("HTTP/1.1 200") && script.ends_with("console.log('wschat')"));
    assert!(http_get(relay.address, "/missing.js").await.starts_with("HTTP/1.1 404"));

    // The socket still works on both paths.
    let mut app = relay.connect().await;
    let mut tutorial = relay.connect_to("/").await;
    send(&mut app, &chat("app", "static and socket on one port")).await;
    assert_eq!(next_chat(&mut tutorial).await, chat("app", "static and socket on one port"));
    relay.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// Started with a low soft limit on open files (1,024 is common), the `wschat-relay` command
/// raises it to the hard limit and says so, so that thousands of clients can connect without
/// anyone tuning `ulimit -n` first.
#[cfg(unix)]
#[tokio::test]
async fn the_command_raises_its_open_file_limit() {
    use tokio::io::AsyncBufReadExt;
    let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
    let low = hard.min(256);
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_wschat-relay"));
    command
        // Fewer connections than any hard limit, so the limit is not worth a warning.
        .args(["--listen", "127.0.0.1:0", "--max-connections", "100"])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: setrlimit is async-signal-safe, and nothing else runs in the child before exec.
    unsafe {
        command.pre_exec(move || rlimit::Resource::NOFILE.set(low, hard));
    }
    let mut relay = command.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(relay.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(PATIENCE, async {
        loop {
            let line = lines.next_line().await.unwrap().expect("the relay logs its limit");
            if line.contains("open-file limit") {
                return line;
            }
        }
    })
    .await
    .unwrap();
    if low < hard {
        assert!(line.contains(&format!("from={low} to={hard}")), "{line}");
    } else {
        assert!(line.contains(&hard.to_string()), "{line}");
    }
}
