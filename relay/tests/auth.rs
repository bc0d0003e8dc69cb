//! Token auth at the handshake: no token, a forged one, an expired one, one not valid yet and one
//! for another audience or from another issuer get 401; a valid one connects, its name is the one
//! on every message, whatever the client writes, and the connection ends when the token expires.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use futures_util::StreamExt;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
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
        ServerFrame::Message { message, .. } => {
            assert_eq!((message.source.as_str(), message.content.as_str()), ("ada", "it is I"));
        }
        other => panic!("expected a message, got {other:?}"),
    }
    relay.stop().await;
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn sign(claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::default(), claims, &EncodingKey::from_secret(SECRET.as_bytes()))
        .unwrap()
}

/// A token that is not valid yet (`nbf` an hour from now, say one issued for tomorrow's
/// session) is refused like an expired one.
#[tokio::test]
async fn a_token_not_valid_yet_gets_401() {
    let relay = relay().await;
    let early = sign(&json!({ "sub": "ada", "nbf": now() + 3600, "exp": now() + 7200 }));
    assert_eq!(handshake_status(&relay, &format!("?token={early}")).await, Some(401));
    let started = sign(&json!({ "sub": "ada", "nbf": now() - 10, "exp": now() + 7200 }));
    assert_eq!(handshake_status(&relay, &format!("?token={started}")).await, None);
    relay.stop().await;
}

/// A connection lasts no longer than its token: when the token expires (allowing the same
/// minute of clock skew as at the handshake), the relay closes the socket with 1008 and the
/// reason "token expired", which the page shows; the client then needs a fresh token.
#[tokio::test]
async fn the_connection_closes_when_its_token_expires() {
    let relay = relay().await;
    // Past its `exp` but within the minute of skew allowed: valid for about 10 more seconds,
    // ample for the handshake.
    let expiring = sign(&json!({ "sub": "ada", "exp": now() - 50 }));
    let url = format!("ws://{}/ws?token={expiring}", relay.address);
    let (mut client, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let frame = loop {
        match tokio::time::timeout(PATIENCE, client.next()).await.expect("still open") {
            Some(Ok(Message::Close(frame))) => break frame.expect("a close code"),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!((frame.code, frame.reason.as_str()), (CloseCode::Policy, "token expired"));
    relay.stop().await;
}

/// With `--jwt-audience` and `--jwt-issuer`, only tokens made for this relay (`aud`) by that
/// issuer (`iss`) connect: a token a login service made for another of its services is refused,
/// as is one lacking either claim. Without an audience configured, a token that names one is
/// refused (RFC 7519: a recipient not named in `aud` must reject it).
#[tokio::test]
async fn audience_and_issuer_are_checked() {
    const LOGIN: &str = "https://login.example.org";
    let strict = TestRelay::start(Config {
        jwt_secret: Some(SECRET.to_owned()),
        jwt_audience: Some("wschat".to_owned()),
        jwt_issuer: Some(LOGIN.to_owned()),
        ..Config::default()
    })
    .await;
    let exp = now() + 3600;
    let cases = [
        (json!({ "sub": "ada", "exp": exp, "aud": "wschat", "iss": LOGIN }), None),
        (json!({ "sub": "ada", "exp": exp, "aud": ["billing", "wschat"], "iss": LOGIN }), None),
        (json!({ "sub": "ada", "exp": exp, "aud": "billing", "iss": LOGIN }), Some(401)),
        (json!({ "sub": "ada", "exp": exp, "iss": LOGIN }), Some(401)),
        (
            json!({ "sub": "ada", "exp": exp, "aud": "wschat", "iss": "https://evil.example" }),
            Some(401),
        ),
        (json!({ "sub": "ada", "exp": exp, "aud": "wschat" }), Some(401)),
    ];
    for (claims, expected) in cases {
        let query = format!("?token={}", sign(&claims));
        assert_eq!(handshake_status(&strict, &query).await, expected, "{claims}");
    }
    strict.stop().await;

    let relay = relay().await;
    let for_someone = sign(&json!({ "sub": "ada", "exp": exp, "aud": "billing" }));
    assert_eq!(handshake_status(&relay, &format!("?token={for_someone}")).await, Some(401));
    relay.stop().await;
}
