//! Token auth at the handshake: no token, a forged one and an expired one get 401; a valid one
//! connects, and its name is the one on every message, whatever the client writes.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use wschat_protocol::v1::{ServerFrame, SUBPROTOCOL};
use wschat_relay::Config;

const SECRET: &str = "correct horse battery staple";

fn token(secret: &str, name: &str, expires_in_secs: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims =
        json!({ "sub": format!("user-{name}"), "name": name, "exp": now + expires_in_secs });
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes()))
        .unwrap()
}

async fn relay() -> TestRelay {
    TestRelay::start(Config { jwt_secret: Some(SECRET.to_owned()), ..Config::default() }).await
}

async fn handshake_status(relay: &TestRelay, query: &str) -> Option<u16> {
    let url = format!("ws://{}/ws{query}", relay.address);
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => None,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Some(response.status().as_u16())
        }
        Err(other) => panic!("unexpected handshake error: {other}"),
    }
}

/// Missing, forged and expired tokens are refused with 401 before any socket opens.
#[tokio::test]
async fn bad_tokens_get_401() {
    let relay = relay().await;
    assert_eq!(handshake_status(&relay, "").await, Some(401), "no token");
    let forged = token("another secret", "mallory", 3600);
    assert_eq!(handshake_status(&relay, &format!("?token={forged}")).await, Some(401), "forged");
    let expired = token(SECRET, "ada", -3600);
    assert_eq!(handshake_status(&relay, &format!("?token={expired}")).await, Some(401), "expired");
    assert_eq!(handshake_status(&relay, "?token=not.a.jwt").await, Some(401), "garbage");
    let good = token(SECRET, "ada", 3600);
    assert_eq!(handshake_status(&relay, &format!("?token={good}")).await, None, "valid");
    relay.stop().await;
}

/// With auth on, a message carries the token's name, not the `source` the client wrote: nobody
/// can speak as someone else. The token also works as a subprotocol entry.
#[tokio::test]
async fn the_token_decides_the_name() {
    let relay = relay().await;
    let url = format!("ws://{}/ws?token={}", relay.address, token(SECRET, "ada", 3600));
    let (mut ada, _) = tokio_tungstenite::connect_async(url).await.unwrap();

    let mut request = format!("ws://{}/ws", relay.address).into_client_request().unwrap();
    let protocols = format!("{SUBPROTOCOL}, wschat.token.{}", token(SECRET, "grace", 3600));
    request.headers_mut().insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    let (mut grace, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["Sec-WebSocket-Protocol"], SUBPROTOCOL);
    next_v1(&mut grace).await; // welcome

    send(&mut ada, &chat("the queen", "it is I")).await;
    match next_v1(&mut grace).await {
        ServerFrame::Message(message) => {
            assert_eq!((message.source.as_str(), message.content.as_str()), ("ada", "it is I"));
        }
        other => panic!("expected a message, got {other:?}"),
    }
    relay.stop().await;
}
