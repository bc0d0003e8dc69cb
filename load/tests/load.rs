//! The load tool against real relays on 127.0.0.1: the wschat relay (both protocols) and the
//! bench's bare relay, each on a free port in this process. Every count is exact.

use std::future::pending;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use wschat_load::{LoadError, Plan, Protocol, Summary};
use wschat_relay::{Config, RateLimit};

/// A wschat relay in this process, stopped when dropped.
struct WschatRelay {
    address: SocketAddr,
    _shutdown: oneshot::Sender<()>,
}

impl WschatRelay {
    /// The relay with its per-client rate limit lifted (a load run is a flood by its defaults).
    async fn start(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(wschat_relay::run(listener, config, async move {
            // A dropped sender (test over) stops the relay too.
            let _ = stopped.await;
        }));
        Self { address, _shutdown: shutdown }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.address)
    }
}

fn unlimited() -> Config {
    Config { rate: RateLimit { per_second: 1e6, burst: 1_000_000 }, ..Config::default() }
}

async fn bare_relay() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(wschat_bare_relay::serve(listener));
    format!("ws://{address}")
}

/// 2 senders × 50 messages, 5 receivers, as fast as the relay takes them.
fn burst(url: String, protocol: Protocol) -> Plan {
    Plan {
        protocol,
        connections: 7,
        senders: 2,
        rate: 0.0,
        messages: Some(100),
        drain: Duration::from_secs(5),
        ..Plan::new(url)
    }
}

async fn run(plan: Plan) -> Summary {
    let summary =
        tokio::time::timeout(Duration::from_secs(30), wschat_load::run(plan, pending(), |_| {}))
            .await
            .expect("the run ends on its own")
            .expect("the run takes place");
    println!("{summary}");
    summary
}

/// Every receiver gets every message exactly once; the tutorial protocol does not echo to the
/// sender, so 100 messages to 5 receivers are exactly 500 deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tutorial_burst_through_the_bare_relay_is_counted_exactly() {
    let summary = run(burst(bare_relay().await, Protocol::Tutorial)).await;
    assert_eq!(summary.messages.sent, 100);
    assert_eq!((summary.senders, summary.receivers), (2, 5));
    assert_eq!(summary.deliveries.count, 500);
    assert_eq!(summary.deliveries.missing, 0);
    assert!(summary.acks.is_none(), "the tutorial protocol has no acks");
    let latency = summary.latency_ms.expect("deliveries were timed");
    assert!(latency.p50 <= latency.p99 && latency.p99 <= latency.max);
    assert!(summary.deliveries.per_second > 0.0);
    assert_eq!(summary.connections.held, 7);
    assert!(summary.is_clean(), "{summary:?}");
}

/// The same burst through the wschat relay, whose tutorial clients share one conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tutorial_burst_through_wschat_is_counted_exactly() {
    let relay = WschatRelay::start(unlimited()).await;
    let summary = run(burst(relay.url(), Protocol::Tutorial)).await;
    assert_eq!(summary.deliveries.count, 500);
    assert!(summary.is_clean(), "{summary:?}");
}

/// In v1 every message is acked to its sender (counted apart) and delivered to the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_burst_counts_acks_apart_from_deliveries() {
    let relay = WschatRelay::start(unlimited()).await;
    let summary = run(burst(relay.url(), Protocol::V1)).await;
    assert_eq!(summary.deliveries.count, 500);
    let acks = summary.acks.expect("v1 has acks");
    assert_eq!(acks.count, 100);
    assert!(acks.latency_ms.is_some());
    assert!(summary.is_clean(), "{summary:?}");
}

/// A paced run sends on schedule: 40 messages/s for half a second is 20 messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_and_a_duration_pace_the_senders() {
    let plan = Plan {
        protocol: Protocol::Tutorial,
        connections: 4,
        senders: 2,
        rate: 40.0,
        duration: Some(Duration::from_millis(500)),
        ..Plan::new(bare_relay().await)
    };
    let summary = run(plan).await;
    assert_eq!(summary.messages.sent, 20);
    assert_eq!(summary.deliveries.count, 40);
    assert!(summary.messages.seconds >= 0.45, "{:?}", summary.messages);
}

/// Idle connections are only held; past the relay's connection limit, handshakes fail with 503
/// and the summary says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_held_and_refusals_reported() {
    let relay = WschatRelay::start(Config { max_connections: 8, ..unlimited() }).await;
    let plan = Plan {
        connections: 10,
        senders: 0,
        duration: Some(Duration::from_millis(200)),
        ..Plan::new(relay.url())
    };
    let summary = run(plan).await;
    assert_eq!(summary.connections.opened, 8);
    assert_eq!(summary.connections.held, 8);
    assert_eq!(summary.connections.failed, 2);
    assert_eq!(summary.messages.sent, 0);
    assert_eq!(summary.errors.values().sum::<u64>(), 2, "{:?}", summary.errors);
    assert!(summary.errors.keys().all(|error| error.contains("503")), "{:?}", summary.errors);
    assert!(!summary.is_clean());
}

/// A relay that closes the sender (here for a message over its size limit) ends the run early
/// instead of leaving it waiting for acks, and the summary shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_closed_by_the_relay_ends_the_run_and_is_reported() {
    for protocol in [Protocol::V1, Protocol::Tutorial] {
        let relay = WschatRelay::start(Config { max_message_size: 100, ..unlimited() }).await;
        let plan = Plan {
            protocol,
            connections: 3,
            senders: 1,
            rate: 0.0,
            messages: Some(10),
            message_bytes: 200,
            drain: Duration::from_millis(300),
            ..Plan::new(relay.url())
        };
        let summary = run(plan).await;
        assert_eq!(summary.connections.held, 2, "the sender is gone: {summary:?}");
        assert_eq!(summary.deliveries.count, 0);
        // The relay closes with 1009; when its close frame is lost to a reset (it drops
        // the socket with our frames still unread), the reset is reported instead.
        assert!(
            summary.close_codes.get("1009") == Some(&1) || !summary.errors.is_empty(),
            "{summary:?}"
        );
        assert!(!summary.is_clean());
    }
}

/// Nothing listening: the run does not take place, and the error says why.
#[tokio::test]
async fn no_relay_no_run() {
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let plan = Plan { connections: 3, ..Plan::new(format!("ws://127.0.0.1:{port}/ws")) };
    match wschat_load::run(plan, pending(), |_| {}).await {
        Err(LoadError::NoConnection { attempted: 3, first_error }) => {
            assert!(first_error.contains("refused"), "{first_error}");
        }
        other => panic!("expected no connection, got {other:?}"),
    }
}

/// With rooms, each message reaches the receivers of its room only, and the counts say so: 3
/// rooms of 4 connections (one sender each), 30 messages per room, 90 deliveries in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_rooms_deliver_within_each_room() {
    let relay = WschatRelay::start(unlimited()).await;
    let plan = Plan {
        connections: 12,
        senders: 3,
        rate: 0.0,
        messages: Some(90),
        rooms: Some(3),
        drain: Duration::from_secs(5),
        ..Plan::new(relay.url())
    };
    let summary = run(plan).await;
    assert_eq!((summary.senders, summary.receivers), (3, 9));
    assert_eq!(summary.messages.sent, 90);
    assert_eq!(summary.deliveries.expected, 270, "30 messages to 3 receivers in each room");
    assert_eq!(summary.deliveries.count, 270);
    assert_eq!(summary.acks.as_ref().map(|acks| acks.count), Some(90));
    assert!(summary.is_clean(), "{summary}");
}
