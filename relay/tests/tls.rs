//! TLS with a self-signed certificate made in the test: chat over `wss://`, the app over
//! `https://`, and nothing over plain `ws://` on the same port.

mod common;

use std::sync::Arc;

use common::*;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::Connector;
use wschat_relay::{Config, TlsFiles};

/// A relay with a fresh self-signed certificate for `localhost`, and a client config trusting it.
async fn tls_relay(dir: &std::path::Path) -> (TestRelay, Arc<ClientConfig>) {
    tls_relay_for(dir, "localhost").await
}

/// A relay with a fresh self-signed certificate for `name`, and a client config trusting it.
async fn tls_relay_for(dir: &std::path::Path, name: &str) -> (TestRelay, Arc<ClientConfig>) {
    let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><title>wschat</title>").unwrap();

    let mut roots = RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let config = Config {
        tls: Some(TlsFiles { cert, key }),
        static_dir: Some(dir.to_owned()),
        ..Config::default()
    };
    (TestRelay::start(config).await, Arc::new(client))
}

async fn connect_wss(relay: &TestRelay, client: &Arc<ClientConfig>) -> Client {
    let url = format!("wss://localhost:{}/ws", relay.address.port());
    let connector = Some(Connector::Rustls(Arc::clone(client)));
    let (socket, _) = tokio_tungstenite::connect_async_tls_with_config(url, None, false, connector)
        .await
        .unwrap();
    socket
}

/// Two clients chat over `wss://`.
#[tokio::test]
async fn chat_over_wss() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, client) = tls_relay(dir.path()).await;
    let mut alice = connect_wss(&relay, &client).await;
    let mut bob = connect_wss(&relay, &client).await;
    send(&mut alice, &chat("alice", "over TLS")).await;
    assert_eq!(next_chat(&mut bob).await, chat("alice", "over TLS"));
    relay.stop().await;
}

/// The built app is served over `https://`, and a plain-text client gets nowhere.
#[tokio::test]
async fn the_app_over_https_and_no_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, client) = tls_relay(dir.path()).await;
    let tcp = TcpStream::connect(relay.address).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client).connect(name, tcp).await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = Vec::new();
    // A TLS peer may end without close_notify after `Connection: close`; what was read counts.
    let _ = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut response)).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("<title>wschat</title>"), "{response}");

    let plain = tokio_tungstenite::connect_async(format!("ws://{}/ws", relay.address)).await;
    assert!(plain.is_err(), "a plain ws:// handshake must fail on the TLS port");
    relay.stop().await;
}

/// Over TLS the relay's own pages are `https://`: such a page connects over `wss://`, while a
/// plain `http://` page of the same name and port (one a network attacker could inject) is
/// another origin and is refused.
#[tokio::test]
async fn the_own_origin_over_tls_is_https() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, client) = tls_relay(dir.path()).await;
    let port = relay.address.port();
    let attempt = |origin: String| {
        let mut request = format!("wss://localhost:{port}/ws").into_client_request().unwrap();
        request.headers_mut().insert("Origin", origin.parse().unwrap());
        let connector = Some(Connector::Rustls(Arc::clone(&client)));
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector)
    };
    assert!(attempt(format!("https://localhost:{port}")).await.is_ok());
    match attempt(format!("http://localhost:{port}")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("expected 403, got {other:?}"),
    }
    relay.stop().await;
}

/// A relay serving TLS for its public name needs no `--allow-host`: a browser reaches it under
/// that name only if the certificate vouches for it (under a rebound name the browser refuses
/// the certificate first). Its page loads and its socket connects with the default flags.
#[tokio::test]
async fn a_public_name_over_tls_needs_no_allow_host() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, client) = tls_relay_for(dir.path(), "chat.example.org").await;
    let tcp = TcpStream::connect(relay.address).await.unwrap();
    let name = ServerName::try_from("chat.example.org").unwrap();
    let mut tls =
        tokio_rustls::TlsConnector::from(Arc::clone(&client)).connect(name, tcp).await.unwrap();
    let request = "GET / HTTP/1.1\r\nHost: chat.example.org\r\nConnection: close\r\n\r\n";
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // A TLS peer may end without close_notify after `Connection: close`; what was read counts.
    let _ = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut response)).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let tcp = TcpStream::connect(relay.address).await.unwrap();
    let mut request = "wss://chat.example.org/ws".into_client_request().unwrap();
    request.headers_mut().insert("Origin", "https://chat.example.org".parse().unwrap());
    let connector = Some(Connector::Rustls(client));
    let socket =
        tokio_tungstenite::client_async_tls_with_config(request, tcp, None, connector).await;
    assert!(socket.is_ok(), "{:?}", socket.err());
    relay.stop().await;
}
