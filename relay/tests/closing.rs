//! Close codes as clients see them: every close the relay decides on reaches its client, with
//! its code, every time, on the multi-threaded runtime, however much the client was still sending.

mod common;

use common::*;
use tokio::io::AsyncWriteExt;
use wschat_relay::Config;

/// How many connections each scenario closes: a lost close frame is a race, so one try proves
/// little.
const TRIES: usize = 100;

/// The relay's answer to one misbehaving connection, as a raw client reads it.
async fn close_after(relay: &TestRelay, misbehave: impl AsyncFnOnce(&mut RawClient)) -> u16 {
    let mut client = RawClient::connect(relay, "/ws").await;
    misbehave(&mut client).await;
    client.close_frame().await.expect("the socket ended without a close frame").0
}

/// A frame over the size limit (announced, with part of its payload following), a text frame
/// that is not UTF-8, and a refused frame past the strikes: each client gets 1009, 1007 or 1008,
/// in every one of many tries, while it keeps writing after the offending frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_close_code_reaches_its_client() {
    let config = Config { max_strikes: 1, ..Config::default() };
    let relay = TestRelay::start(config).await;
    for attempt in 0..TRIES {
        let too_big = close_after(&relay, async |client| {
            client.send_header(8 * 1024 * 1024).await;
            let _ = client.stream.write_all(&[b'x'; 64 * 1024]).await;
        });
        let not_utf8 = close_after(&relay, async |client| {
            client.send_text(&[0xC3, 0x28]).await;
            let _ = client.stream.write_all(&[0x81, 0x80, 0, 0, 0, 0]).await;
        });
        let struck_out = close_after(&relay, async |client| {
            client.send_text(b"not json").await;
            for _ in 0..100 {
                let _ = client.stream.write_all(&[0x81, 0x82, 0, 0, 0, 0, b'{', b'}']).await;
            }
        });
        let codes = tokio::join!(too_big, not_utf8, struck_out);
        assert_eq!(codes, (1009, 1007, 1008), "attempt {attempt}");
    }
    relay.stop().await;
}
