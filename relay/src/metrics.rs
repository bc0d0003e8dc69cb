//! The relay's metrics, served at `/metrics` in the Prometheus text format.
//!
//! One registry per relay (not a process-wide global), so tests can run many relays in one
//! process and read each one's figures.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A label with one string value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Label {
    /// The value: a protocol, a reason or an error code.
    pub kind: &'static str,
}

/// Every figure the relay keeps.
pub struct Metrics {
    registry: Registry,
    /// Connections open now.
    pub connections: Gauge,
    /// Connections accepted, by protocol (`tutorial`, `v1`).
    pub connections_accepted: Family<Label, Counter>,
    /// Handshakes refused, by reason.
    pub handshakes_rejected: Family<Label, Counter>,
    /// Chat messages accepted: numbered, stored (committed, with `--data-dir`) and relayed.
    pub messages_in: Counter,
    /// Frames written to clients.
    pub frames_out: Counter,
    /// Bytes of the data frames clients sent.
    pub bytes_in: Counter,
    /// Bytes of the data frames written to clients.
    pub bytes_out: Counter,
    /// Frames refused, by error code.
    pub frames_refused: Family<Label, Counter>,
    /// Connections the relay closed itself, by reason (`slow_consumer`, `too_big`,
    /// `invalid_text`, `flood`, `strikes`, `new_epoch`, `token_expired`, `unresponsive`).
    pub disconnects: Family<Label, Counter>,
    /// Frames waiting in a client's outbound queue when its writer takes them (all at once, to
    /// write them with one flush).
    pub queue_depth: Histogram,
    /// With `--data-dir`: messages written per commit (one transaction, one fsync).
    pub commit_batch_size: Histogram,
    /// With `--data-dir`: how long each commit took, in seconds, failed ones included.
    pub commit_seconds: Histogram,
    /// With `--data-dir`: failed commits, and failed tries at reopening the store after one.
    pub store_failures: Counter,
    /// Connections open that have not become WebSockets (handshakes in progress, page requests,
    /// idle kept-alive connections, stalled requests).
    pub pending_connections: Gauge,
    /// Such connections the relay closed, by reason (`header_timeout`, `crowded_out`,
    /// `tls_failed`).
    pub pending_closed: Family<Label, Counter>,
    /// Rooms open now (in memory), the lobby included. Never a label per room: their names are
    /// the users', and unbounded.
    pub rooms: Gauge,
    /// Memberships now: connections in rooms, a connection counted once per room it is in.
    pub room_members: Gauge,
    /// Rooms joined (the lobby at the handshake included).
    pub room_joins: Counter,
    /// Rooms left, however (a leave, a connection's end, an eviction).
    pub room_leaves: Counter,
    /// Joins refused, by error code (`room_invalid`, `forbidden`, `too_many_rooms`,
    /// `room_full`, `rooms_full`, `unavailable`).
    pub room_refusals: Family<Label, Counter>,
    /// With `--redis`: 1 while Redis answers, 0 while it does not (sends are refused then).
    pub redis_up: Gauge,
    /// With `--redis`: commands that failed or timed out.
    pub redis_failures: Counter,
}

impl Metrics {
    /// A fresh registry with every metric registered (prefix `wschat_`).
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wschat");
        let metrics = Self {
            connections: Gauge::default(),
            connections_accepted: Family::default(),
            handshakes_rejected: Family::default(),
            messages_in: Counter::default(),
            frames_out: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            frames_refused: Family::default(),
            disconnects: Family::default(),
            // From one frame at a time (a reader keeping up) to a burst of thousands.
            queue_depth: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, 1024.0, 4096.0]),
            commit_batch_size: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, 1024.0]),
            // From a fast SSD's fsync to a struggling network disk.
            commit_seconds: Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0]),
            store_failures: Counter::default(),
            pending_connections: Gauge::default(),
            pending_closed: Family::default(),
            rooms: Gauge::default(),
            room_members: Gauge::default(),
            room_joins: Counter::default(),
            room_leaves: Counter::default(),
            room_refusals: Family::default(),
            redis_up: Gauge::default(),
            redis_failures: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("connections", "Connections open now", metrics.connections.clone());
        registry.register(
            "connections_accepted",
            "Connections accepted, by protocol",
            metrics.connections_accepted.clone(),
        );
        registry.register(
            "handshakes_rejected",
            "Handshakes refused, by reason",
            metrics.handshakes_rejected.clone(),
        );
        registry.register("messages_in", "Chat messages accepted", metrics.messages_in.clone());
        registry.register("frames_out", "Frames written to clients", metrics.frames_out.clone());
        registry.register("bytes_in", "Bytes of data frames received", metrics.bytes_in.clone());
        registry.register("bytes_out", "Bytes of data frames written", metrics.bytes_out.clone());
        registry.register(
            "frames_refused",
            "Frames refused, by error code",
            metrics.frames_refused.clone(),
        );
        registry.register(
            "disconnects",
            "Connections closed by the relay, by reason",
            metrics.disconnects.clone(),
        );
        registry.register(
            "outbound_queue_depth",
            "Frames waiting for a client when its writer takes them, all at once",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "commit_batch_size",
            "Messages written per commit to the history file",
            metrics.commit_batch_size.clone(),
        );
        registry.register(
            "commit_seconds",
            "Time per commit to the history file",
            metrics.commit_seconds.clone(),
        );
        registry.register(
            "store_failures",
            "Failed commits to the history file and failed tries at reopening it",
            metrics.store_failures.clone(),
        );
        registry.register(
            "pending_connections",
            "Connections open that have not become WebSockets",
            metrics.pending_connections.clone(),
        );
        registry.register(
            "pending_closed",
            "Connections closed before they became WebSockets, by reason",
            metrics.pending_closed.clone(),
        );
        registry.register("rooms", "Rooms open now", metrics.rooms.clone());
        registry.register(
            "room_members",
            "Connections in rooms now, once per room",
            metrics.room_members.clone(),
        );
        registry.register("room_joins", "Rooms joined", metrics.room_joins.clone());
        registry.register("room_leaves", "Rooms left", metrics.room_leaves.clone());
        registry.register(
            "room_refusals",
            "Joins refused, by error code",
            metrics.room_refusals.clone(),
        );
        Self { registry, ..metrics }
    }

    /// Adds the figures about Redis (`--redis` only: without it, nothing changes).
    #[must_use]
    pub fn with_redis(mut self) -> Self {
        self.registry.register(
            "redis_up",
            "1 while Redis answers, 0 while sends are refused",
            self.redis_up.clone(),
        );
        self.registry.register(
            "redis_failures",
            "Redis commands that failed or timed out",
            self.redis_failures.clone(),
        );
        self
    }

    /// The figures in the Prometheus text (OpenMetrics) format.
    #[must_use]
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("encoding metrics into a String cannot fail");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts one more for `kind` in a labelled family.
pub fn count(family: &Family<Label, Counter>, kind: &'static str) {
    family.get_or_create(&Label { kind }).inc();
}
