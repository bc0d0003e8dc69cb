//! `/metrics` and `/healthz` as a monitoring system sees them.

mod common;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use wschat_relay::Config;

/// The value of one sample line (`name{labels} value`) in a metrics page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|line| {
        line.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok()
    })
}

/// A scrape shows the connections, the messages, the refused frames and the refused handshakes,
/// each as it happened.
#[tokio::test]
async fn metrics_count_what_happened() {
    let relay = TestRelay::start(Config { max_connections: 2, ..Config::default() }).await;
    let mut tutorial = relay.connect().await;
    let mut app = relay.connect_v1().await;
    next_v1(&mut app).await; // welcome
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws", relay.address)).await;
    assert!(refused.is_err(), "the third connection is over the limit");

    send(&mut tutorial, &chat("ada", "hello")).await;
    next_v1(&mut app).await; // the message, so it has been counted
    tutorial.send(Message::text("not json")).await.unwrap();
    next_frame(&mut tutorial).await; // the error, so it has been counted

    let response = http_get(relay.address, "/metrics").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("application/openmetrics-text"), "{response}");
    let page = response.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(sample(page, "wschat_connections"), Some(2.0), "{page}");
    assert_eq!(sample(page, r#"wschat_connections_accepted_total{kind="tutorial"}"#), Some(1.0));
    assert_eq!(sample(page, r#"wschat_connections_accepted_total{kind="v1"}"#), Some(1.0));
    let rejected = r#"wschat_handshakes_rejected_total{kind="too_many_connections"}"#;
    assert_eq!(sample(page, rejected), Some(1.0), "{page}");
    assert_eq!(sample(page, "wschat_messages_in_total"), Some(1.0));
    assert_eq!(sample(page, r#"wschat_frames_refused_total{kind="invalid_json"}"#), Some(1.0));
    let sent = chat("ada", "hello").to_json().len() + "not json".len();
    assert_eq!(sample(page, "wschat_bytes_in_total"), Some(sent as f64), "both frames' bytes");
    assert!(sample(page, "wschat_frames_out_total").unwrap() >= 3.0, "welcome, message, error");
    assert!(page.contains("wschat_outbound_queue_depth_bucket"), "{page}");
    relay.stop().await;
}

/// `/healthz` answers while the relay runs.
#[tokio::test]
async fn healthz_says_ok() {
    let relay = TestRelay::start(Config::default()).await;
    let response = http_get(relay.address, "/healthz").await;
    assert!(response.starts_with("HTTP/1.1 200") && response.ends_with("ok\n"), "{response}");
    relay.stop().await;
}
