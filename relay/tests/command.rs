//! The `wschat-relay` command as an operator and an attacker meet it: nonsense flag values are
//! refused at start with a message naming the flag, and text a client sends cannot forge a line
//! in the relay's log.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use wschat_protocol::v1::SUBPROTOCOL;

fn relay_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wschat-relay"));
    command
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Settings from the environment of whoever runs the tests must not change the outcome.
    for (name, _) in std::env::vars() {
        if name.starts_with("WSCHAT_") {
            command.env_remove(name);
        }
    }
    command
}

/// Runs the command with `args` (and `env`), expecting it to refuse them: returns its exit code
/// and what it printed. A relay that starts instead is stopped, and the case fails.
async fn refused(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = relay_command();
    command.args(["--listen", "127.0.0.1:0"]).args(args).envs(env.iter().copied());
    let mut relay = command.spawn().unwrap();
    let mut stderr = relay.stderr.take().unwrap();
    let mut printed = String::new();
    let read = tokio::time::timeout(PATIENCE, stderr.read_to_string(&mut printed)).await;
    assert!(read.is_ok(), "{args:?} {env:?}: the relay started; it printed {printed}");
    let status = tokio::time::timeout(PATIENCE, relay.wait()).await.unwrap().unwrap();
    (status.code(), printed)
}

/// Every numeric flag refuses nonsense at start (zero where zero means nothing works, rates
/// that are not a positive number, durations that overflow the clock), as do origins and
/// names that cannot match a browser's, and a JWT secret short enough to guess (without printing it). The message
/// names the flag and says what is expected; the exit code is 2, as for any usage error.
#[tokio::test]
async fn nonsense_settings_are_refused_at_start() {
    let cases: &[(&[&str], &str)] = &[
        (&["--rate", "0"], "--rate"),
        (&["--rate=-1"], "--rate"),
        (&["--rate", "NaN"], "--rate"),
        (&["--rate", "inf"], "--rate"),
        (&["--rate", "1e-300"], "--rate"),
        (&["--burst", "0"], "--burst"),
        (&["--queue-bytes", "0"], "--queue-bytes"),
        (&["--queue-bytes", "2048", "--max-message-size", "65536"], "--queue-bytes"),
        (&["--max-message-size", "0"], "--max-message-size"),
        (&["--max-message-size", "18446744073709551615"], "--max-message-size"),
        (&["--max-connections", "0"], "--max-connections"),
        (&["--max-source-length", "0"], "--max-source-length"),
        (&["--max-content-length", "0"], "--max-content-length"),
        (&["--heartbeat-interval", "0"], "--heartbeat-interval"),
        (&["--heartbeat-interval", "18446744073709551615"], "--heartbeat-interval"),
        (&["--heartbeat-timeout", "0"], "--heartbeat-timeout"),
        (&["--stall-timeout", "18446744073709551615"], "--stall-timeout"),
        (&["--flood-after", "0"], "--flood-after"),
        (&["--flood-after", "18446744073709551615"], "--flood-after"),
        (&["--max-strikes", "0"], "--max-strikes"),
        (&["--header-timeout", "0"], "--header-timeout"),
        (&["--max-pending-connections", "0"], "--max-pending-connections"),
        (&["--shutdown-timeout", "0"], "--shutdown-timeout"),
        (&["--shutdown-timeout", "18446744073709551615"], "--shutdown-timeout"),
        (&["--allow-origin", "null"], "--allow-origin"),
        (&["--allow-origin", "chat.example.org"], "--allow-origin"),
        (&["--allow-origin", "https://chat.example.org/app"], "--allow-origin"),
        (&["--allow-host", "https://chat.example.org"], "--allow-host"),
        (&["--jwt-secret", "hunter2"], "--jwt-secret"),
        (&["--jwt-secret", &"s".repeat(32), "--jwt-audience", ""], "--jwt-audience"),
        (&["--jwt-audience", "wschat"], "--jwt-secret"),
        (&["--jwt-secret", &"s".repeat(32), "--jwt-issuer", ""], "--jwt-issuer"),
    ];
    for (args, flag) in cases {
        let (code, printed) = refused(args, &[]).await;
        assert_eq!(code, Some(2), "{args:?}: {printed}");
        assert!(printed.contains(flag), "{args:?} must name {flag}: {printed}");
        assert!(!printed.contains("panicked"), "{args:?}: {printed}");
    }
    // A refused secret is not printed (error output ends up in logs).
    let (_, printed) = refused(&["--jwt-secret", "hunter2"], &[]).await;
    assert!(!printed.contains("hunter2"), "{printed}");
    // The environment variables go through the same checks.
    let (code, printed) = refused(&[], &[("WSCHAT_RATE", "0")]).await;
    assert_eq!(code, Some(2), "{printed}");
    assert!(printed.contains("--rate"), "{printed}");
}

/// A client's text in the log is escaped: a v1 frame whose `type` holds a line break followed
/// by what looks like a log line (the relay logs the refusal, which quotes the unknown type)
/// shows up as one line with `\n` in it, never as a line of its own.
#[tokio::test]
async fn a_client_cannot_forge_a_log_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut relay =
        relay_command().args(["--listen", &format!("127.0.0.1:{port}")]).spawn().unwrap();
    let mut lines = BufReader::new(relay.stdout.take().unwrap()).lines();
    let mut request = format!("ws://127.0.0.1:{port}/ws").into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", SUBPROTOCOL.parse().unwrap());
    let mut client = tokio::time::timeout(PATIENCE, async {
        loop {
            match tokio_tungstenite::connect_async(request.clone()).await {
                Ok((client, _)) => break client,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .unwrap();

    let forged = "FORGED  INFO wschat_relay: the admin logged in";
    let frame = format!(r#"{{"type":"hello\n{forged}","id":"1"}}"#);
    client.send(Message::text(frame)).await.unwrap();
    // A second refusal marks the end of what the first one logged.
    client.send(Message::text("end-of-test")).await.unwrap();
    let logged = tokio::time::timeout(PATIENCE, async {
        let mut logged = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            let last = line.contains("end-of-test") || line.contains("InvalidJson");
            logged.push(line);
            if last {
                return logged;
            }
        }
        panic!("the relay stopped logging: {logged:#?}");
    })
    .await
    .expect("the refusals were logged");
    assert!(
        logged.iter().any(|line| line.contains("refused a frame") && line.contains(forged)),
        "the refusal is logged, with the client's text on its line: {logged:#?}"
    );
    assert!(!logged.iter().any(|line| line.starts_with("FORGED")), "{logged:#?}");
}
