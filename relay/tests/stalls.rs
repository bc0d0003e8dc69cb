//! Connections that never finish their request (a slowloris attack, or clients gone silent
//! mid-handshake): they are closed after the header timeout, they never crowd out the chat, and
//! they never hold up a shutdown.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wschat_relay::Config;

/// How many stalled connections the attacks below hold open: what was seen in the wild.
const STALLED: usize = 300;

/// Opens a connection and sends the first half of a WebSocket handshake's header, never the rest.
async fn half_a_request(address: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let half = format!("GET /ws HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n");
    stream.write_all(half.as_bytes()).await.unwrap();
    stream
}

async fn many_half_requests(address: SocketAddr) -> Vec<TcpStream> {
    // Each stalled connection is two sockets in this process (its client and the relay's end).
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let mut stalled = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        stalled.push(half_a_request(address).await);
    }
    stalled
}

/// Waits until the relay closes `stream` (an end of stream or a reset; whatever it wrote first,
/// such as an error status, is skipped).
async fn closed_by_the_relay(stream: &mut TcpStream) {
    let mut buffer = [0; 1024];
    let closed = async {
        while let Ok(read @ 1..) = stream.read(&mut buffer).await {
            let _ = read;
        }
    };
    tokio::time::timeout(PATIENCE, closed).await.expect("the relay kept the connection open");
}

/// While 300 connections sit on half a request header (and one has sent nothing at all),
/// people still connect and chat; the stalled connections are closed once the header timeout
/// passes (10 s by default).
#[tokio::test]
async fn stalled_requests_are_closed_and_chat_goes_on() {
    let relay = TestRelay::start(Config::default()).await;
    let mut stalled = many_half_requests(relay.address).await;
    stalled.push(TcpStream::connect(relay.address).await.unwrap());

    let mut alice = relay.connect().await;
    let mut bob = relay.connect_to("/").await;
    send(&mut alice, &chat("alice", "anyone there?")).await;
    assert_eq!(next_chat(&mut bob).await, chat("alice", "anyone there?"));

    for stream in &mut stalled {
        closed_by_the_relay(stream).await;
    }
    send(&mut bob, &chat("bob", "still here")).await;
    assert_eq!(next_chat(&mut alice).await, chat("bob", "still here"));
    let timed_out = r#"wschat_pending_closed_total{kind="header_timeout"}"#;
    assert_eq!(metric_reaches(&relay, timed_out, (STALLED + 1) as f64).await, (STALLED + 1) as f64);
    relay.stop().await;
}

/// Past the bound on connections that have not become sockets, a newcomer closes the oldest
/// of them: with the bound full of stalled connections (and a header timeout of an hour),
/// clients still connect and chat, and the longest-stalled connection is the one closed.
#[tokio::test]
async fn stalled_requests_cannot_crowd_out_newcomers() {
    let config = Config {
        max_pending_connections: 10,
        header_timeout: Duration::from_secs(3600),
        ..Config::default()
    };
    let relay = TestRelay::start(config).await;
    let mut stalled = Vec::new();
    for _ in 0..10 {
        stalled.push(half_a_request(relay.address).await);
    }
    let mut alice = relay.connect().await;
    let mut bob = relay.connect().await;
    send(&mut alice, &chat("alice", "made it")).await;
    assert_eq!(next_chat(&mut bob).await, chat("alice", "made it"));
    // Alice's handshake crowded out the oldest; once she was a socket, her place was free again
    // for Bob's.
    closed_by_the_relay(&mut stalled[0]).await;
    let crowded_out = r#"wschat_pending_closed_total{kind="crowded_out"}"#;
    assert_eq!(metric(&relay, crowded_out).await, 1.0);
    relay.stop().await;
}

/// With 300 connections stalled mid-header (and a header timeout of an hour), stopping the
/// relay still closes its sockets with 1001 and returns, once the shutdown timeout has passed;
/// the stalled connections are dropped.
#[tokio::test]
async fn stalled_requests_do_not_hold_up_a_shutdown() {
    let config = Config {
        header_timeout: Duration::from_secs(3600),
        shutdown_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let relay = TestRelay::start(config).await;
    let mut stalled = many_half_requests(relay.address).await;
    let mut client = relay.connect().await;
    relay.stop().await;
    assert_eq!(close_code(&mut client).await, Some(CloseCode::Away));
    for stream in &mut stalled {
        closed_by_the_relay(stream).await;
    }
}

/// The `wschat-relay` command, sent SIGTERM while 300 connections sit on half a request header
/// (with a header timeout of an hour), closes its chat sockets with 1001 and exits,
/// successfully, once its shutdown timeout has passed.
#[cfg(unix)]
#[tokio::test]
async fn the_command_exits_on_sigterm_despite_stalled_requests() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut relay = tokio::process::Command::new(env!("CARGO_BIN_EXE_wschat-relay"))
        .args(["--listen", &address.to_string(), "--header-timeout", "3600"])
        .args(["--shutdown-timeout", "2"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("ws://{address}/ws");
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
    let _stalled = many_half_requests(address).await;

    let pid = relay.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await;
    assert!(killed.unwrap().success());
    assert_eq!(close_code(&mut client).await, Some(CloseCode::Away));
    let status = tokio::time::timeout(PATIENCE, relay.wait()).await.expect("still running");
    assert!(status.unwrap().success());
}
