//! Who may open a socket from a browser, tried the way an attacker's page or a new user's dev
//! server would: DNS rebinding (a name the relay does not serve, pointed at it), origins compared
//! by scheme, host and port, and the tutorial's own dev server admitted out of the box.

mod common;

use std::net::SocketAddr;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wschat_relay::Config;

/// Sends a WebSocket handshake for `path` with these `Host` and `Origin` headers, as a browser
/// would, and returns the status the relay answers with (101 when it accepts).
async fn handshake(address: SocketAddr, path: &str, host: &str, origin: Option<&str>) -> u16 {
    let origin = origin.map(|origin| format!("Origin: {origin}\r\n")).unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{origin}Upgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    status(address, &request).await
}

/// A plain GET of `path` under `host`.
async fn get(address: SocketAddr, path: &str, host: &str) -> u16 {
    status(address, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"))
        .await
}

async fn status(address: SocketAddr, request: &str) -> u16 {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let read = async {
        let mut byte = [0; 1];
        while !head.ends_with(b"\r\n") {
            assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "closed before a status line");
            head.push(byte[0]);
        }
    };
    tokio::time::timeout(PATIENCE, read).await.expect("no status line in time");
    let line = String::from_utf8(head).unwrap();
    line.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

/// DNS rebinding: an attacker's page at `http://evil.example:PORT`, whose name they then point
/// at the relay's address, is "same origin" with itself in the browser. Its handshake names the
/// attacker's host in both `Host` and `Origin`, and must be refused: the relay does not serve
/// that name. The same page cannot read the relay's pages either.
#[tokio::test]
async fn a_rebound_name_is_refused() {
    let relay = TestRelay::start(Config::default()).await;
    let port = relay.address.port();
    let evil = format!("evil.example:{port}");
    let origin = format!("http://{evil}");
    assert_eq!(handshake(relay.address, "/ws", &evil, Some(&origin)).await, 403);
    assert_eq!(handshake(relay.address, "/", &evil, Some(&origin)).await, 403);
    assert_eq!(get(relay.address, "/metrics", &evil).await, 403);
    // Health checks name the relay however their network does; they learn nothing.
    assert_eq!(get(relay.address, "/healthz", &evil).await, 200);
    relay.stop().await;
}

/// The relay's own pages, under the loopback names and addresses it listens on, still connect.
#[tokio::test]
async fn own_origins_on_loopback_connect() {
    let relay = TestRelay::start(Config::default()).await;
    let port = relay.address.port();
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let origin = format!("http://{host}");
        assert_eq!(handshake(relay.address, "/ws", &host, Some(&origin)).await, 101, "{host}");
        assert_eq!(handshake(relay.address, "/ws", &host, None).await, 101, "{host}, no Origin");
    }
    relay.stop().await;
}

/// An origin is a scheme, a host and a port: an `https://` page on the relay's host and port is
/// not the plain relay's own page, nor is a page on another port of the same host.
#[tokio::test]
async fn origins_differ_by_scheme_and_port() {
    let relay = TestRelay::start(Config::default()).await;
    let host = format!("127.0.0.1:{}", relay.address.port());
    for origin in [format!("https://{host}"), "http://127.0.0.1:9".to_owned()] {
        assert_eq!(handshake(relay.address, "/ws", &host, Some(&origin)).await, 403, "{origin}");
    }
    relay.stop().await;
}

/// The tutorial's client, unmodified: its dev server is `http://localhost:4200` and it connects
/// to `ws://localhost:5000` (path `/`) with no subprotocol. With the relay's default flags, it
/// connects; so does the same dev server reached as `127.0.0.1`.
#[tokio::test]
async fn the_tutorials_dev_server_is_admitted_by_default() {
    let relay = TestRelay::start(Config::default()).await;
    let port = relay.address.port();
    for (host, origin) in [
        (format!("localhost:{port}"), "http://localhost:4200"),
        (format!("127.0.0.1:{port}"), "http://127.0.0.1:4200"),
    ] {
        assert_eq!(handshake(relay.address, "/", &host, Some(origin)).await, 101, "{origin}");
    }
    relay.stop().await;
}

/// A public name is refused until it is allowed. With `--allow-host`, the relay's own pages
/// under that name connect; behind a TLS-terminating proxy the pages are `https://` while the
/// relay speaks plain HTTP, so the public origin is allowed with `--allow-origin`, which also
/// allows its host.
#[tokio::test]
async fn a_public_name_is_served_once_allowed() {
    let public = "chat.example.org";
    let relay = TestRelay::start(Config::default()).await;
    assert_eq!(handshake(relay.address, "/ws", public, Some("http://chat.example.org")).await, 403);
    assert_eq!(get(relay.address, "/", public).await, 403);
    relay.stop().await;

    let relay =
        TestRelay::start(Config { allowed_hosts: vec![public.to_owned()], ..Config::default() })
            .await;
    assert_eq!(handshake(relay.address, "/ws", public, Some("http://chat.example.org")).await, 101);
    assert_eq!(get(relay.address, "/", public).await, 200);
    // The plain relay's own page is not an https:// page of the same name.
    let https = Some("https://chat.example.org");
    assert_eq!(handshake(relay.address, "/ws", public, https).await, 403);
    relay.stop().await;

    let allowed_origins = vec!["https://chat.example.org".to_owned()];
    let relay = TestRelay::start(Config { allowed_origins, ..Config::default() }).await;
    assert_eq!(handshake(relay.address, "/ws", public, https).await, 101);
    relay.stop().await;
}
