//! One client connection: a reader task and a writer task, and how the connection ends.
//!
//! The writer alone owns the socket's sending half and drains the client's bounded queue; the
//! reader validates what the client sends and hands it to the room. Either may end the connection:
//! the reader when the client leaves, the writer when the relay shuts down or evicts the client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};
use wschat_protocol::limits::MessageLimits;
use wschat_protocol::v1::{ClientFrame, ServerFrame};
use wschat_protocol::{ChatMessage, ErrorCode, RelayFrame, WireError};

use crate::history::Posted;
use crate::metrics::{count, Metrics};
use crate::rate::{RateLimit, TokenBucket};
use crate::room::{
    frame_bytes, CloseKind, Evicted, Membership, Mode, OutboundQueue, RelayClose, Room,
};

/// How long a close frame may take to go out, and how long the peer then has to answer it. A peer
/// that stopped reading may never take the frame, so both waits are bounded.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a connection ended abnormally. Logged once, when the connection task finishes.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// Reading from the socket failed (a protocol violation, an oversized message, a reset, ...).
    #[error("reading from the client failed: {0}")]
    Read(#[source] axum::Error),
    /// Writing to the socket failed.
    #[error("writing to the client failed: {0}")]
    Write(#[source] axum::Error),
    /// The relay closed the connection: the client stopped reading (its queue overflowed), sent
    /// too big a message, or too many bad frames.
    #[error("closed by the relay ({}): {}", .0.frame.code, .0.frame.reason)]
    Closed(RelayClose),
    /// Nothing came back from the client, not even a pong, for too long: the peer is gone
    /// (a half-open connection after sleep, a pulled cable).
    #[error("no answer to pings for {0:?}: the client is gone")]
    Unresponsive(Duration),
}

/// How often the relay pings each client, and how long an answer may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Time between pings.
    pub interval: Duration,
    /// How long past a ping the client may stay silent before it is dropped.
    pub timeout: Duration,
}

/// When the client was last heard from, shared by its reader (which records) and its writer
/// (which pings and judges).
struct LastHeard {
    since: Instant,
    millis: AtomicU64,
}

impl LastHeard {
    fn new() -> Self {
        Self { since: Instant::now(), millis: AtomicU64::new(0) }
    }

    fn record(&self) {
        let millis = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.millis.store(millis, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let heard = self.since + Duration::from_millis(self.millis.load(Ordering::Relaxed));
        Instant::now().saturating_duration_since(heard)
    }
}

/// The longest client-made message id accepted.
const MAX_ID_LENGTH: usize = 128;

/// How a connection ended normally.
#[derive(Debug)]
enum Ended {
    /// The client closed the connection.
    ClientLeft,
    /// The relay is shutting down and closed the connection with 1001.
    RelayShutdown,
}

/// Serves one upgraded WebSocket until the client leaves, the relay shuts down or evicts it.
/// The client joined the room (`membership`) before its handshake was answered.
pub async fn serve(
    socket: WebSocket,
    client: ClientInfo,
    room: Arc<Room>,
    membership: Membership,
    guard: Guard,
    metrics: Arc<Metrics>,
) {
    let ClientInfo { peer, mode, identity } = client;
    let heartbeat = guard.heartbeat;
    let Membership { seat, outbound, stop, eviction } = membership;
    let id = seat.id();
    let span = tracing::info_span!("client", id, %peer, ?mode, identity);
    async move {
        info!(clients = room.len(), "connected");
        metrics.connections.inc();
        count(&metrics.connections_accepted, mode.label());
        let (sink, stream) = socket.split();
        let heard = Arc::new(LastHeard::new());
        let writer = write(
            sink,
            outbound,
            stop.clone(),
            Arc::clone(&eviction),
            heartbeat,
            Arc::clone(&heard),
            Arc::clone(&metrics),
        );
        let mut writer = tokio::spawn(writer.in_current_span());
        let reader = Reader {
            id,
            mode,
            identity,
            room: Arc::clone(&room),
            heard,
            guard,
            stop: stop.clone(),
            close_reason: Arc::clone(&eviction),
            metrics: Arc::clone(&metrics),
        };
        let mut reader = tokio::spawn(reader.run(stream).in_current_span());
        let outcome = tokio::select! {
            ended = &mut reader => {
                writer.abort();
                ended
            }
            ended = &mut writer => {
                // The writer has sent its close frame: give the client a moment to answer it, so the
                // closing handshake completes instead of the client seeing a reset.
                if tokio::time::timeout(CLOSE_TIMEOUT, &mut reader).await.is_err() {
                    reader.abort();
                }
                ended
            }
        };
        drop(seat);
        metrics.connections.dec();
        match &outcome {
            Ok(Err(ConnectionError::Closed(close))) => {
                count(&metrics.disconnects, close.kind.label())
            }
            Ok(Err(ConnectionError::Unresponsive(_))) => {
                count(&metrics.disconnects, "unresponsive")
            }
            _ => {}
        }
        match outcome {
            Ok(Ok(Ended::ClientLeft)) => info!(clients = room.len(), "disconnected"),
            Ok(Ok(Ended::RelayShutdown)) => info!("closed: relay shutting down"),
            Ok(Err(error)) => warn!(%error, clients = room.len(), "connection ended"),
            Err(join_error) => warn!(%join_error, "connection task failed"),
        }
    }
    .instrument(span)
    .await;
}

/// A refused frame, answered to its sender in the sender's protocol.
struct Refusal {
    error: WireError,
    id: Option<String>,
    request_id: Option<u64>,
}

impl From<WireError> for Refusal {
    fn from(error: WireError) -> Self {
        Self { error, id: None, request_id: None }
    }
}

impl Refusal {
    fn into_frame(self, mode: Mode) -> Message {
        let json = match mode {
            Mode::Tutorial => RelayFrame::from(self.error).to_json(),
            Mode::V1 => {
                ServerFrame::Error { error: self.error, id: self.id, request_id: self.request_id }
                    .to_json()
            }
        };
        Message::Text(json.into())
    }
}

/// Who is on the other end, as the handshake established.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The peer's address, for logs.
    pub peer: SocketAddr,
    /// The protocol it speaks.
    pub mode: Mode,
    /// With token auth on, the name from its token: every message it sends carries this name.
    pub identity: Option<String>,
}

/// What a connection's reader needs besides the socket.
struct Reader {
    id: u64,
    mode: Mode,
    identity: Option<String>,
    room: Arc<Room>,
    heard: Arc<LastHeard>,
    guard: Guard,
    /// Closes this connection (the writer sends the close frame); the reason is set first.
    stop: CancellationToken,
    close_reason: Arc<OnceLock<RelayClose>>,
    metrics: Arc<Metrics>,
}

/// The per-connection settings: the heartbeat, and the limits the reader enforces.
#[derive(Debug, Clone, Copy)]
pub struct Guard {
    /// How often to ping the client and how long it may stay silent.
    pub heartbeat: Heartbeat,
    /// What a message's fields may hold.
    pub limits: MessageLimits,
    /// How fast messages may come.
    pub rate: RateLimit,
    /// Refused frames in a row after which the connection is closed (1008) as abusive.
    pub max_strikes: u32,
    /// The frame size limit, for the 1009 explanation.
    pub max_message_size: usize,
    /// How long a client may be held back by the rate limit without a break before its
    /// connection is closed as a flood (1008).
    pub flood_after: Duration,
}

impl Reader {
    /// Reads the client's frames until it leaves: relays messages, answers requests and bad
    /// frames, and closes the connection on sustained abuse.
    async fn run(self, mut stream: SplitStream<WebSocket>) -> Result<Ended, ConnectionError> {
        let mut bucket = TokenBucket::new(self.guard.rate, std::time::Instant::now());
        let mut throttled_since = None;
        let mut strikes = 0;
        while let Some(frame) = stream.next().await {
            let frame = match frame {
                Ok(frame) => frame,
                Err(error) => {
                    // Some read failures deserve the close code that says why (RFC 6455, 7.4.1).
                    match socket_error(&error) {
                        Some(tungstenite::Error::Capacity(_)) => {
                            let limit = self.guard.max_message_size;
                            self.close(
                                CloseKind::TooBig,
                                close_code::SIZE,
                                format!("message too big: at most {limit} bytes"),
                            );
                        }
                        Some(tungstenite::Error::Utf8(_)) => self.close(
                            CloseKind::InvalidText,
                            close_code::INVALID,
                            "text frames must be valid UTF-8".to_owned(),
                        ),
                        _ => {}
                    }
                    return Err(ConnectionError::Read(error));
                }
            };
            self.heard.record();
            self.metrics.bytes_in.inc_by(frame_bytes(&frame) as u64);
            let refusal = match frame {
                Message::Text(text) => {
                    if self.throttle(&mut bucket, &mut throttled_since).await.is_err() {
                        let limit = self.guard.rate.per_second;
                        let reason =
                            format!("sending faster than {limit} messages per second for too long");
                        self.close(CloseKind::Flood, close_code::POLICY, reason);
                        continue;
                    }
                    match self.mode {
                        Mode::Tutorial => self.tutorial_frame(&text),
                        Mode::V1 => self.v1_frame(&text),
                    }
                }
                Message::Binary(_) => Some(WireError::new(ErrorCode::BinaryFrame, "").into()),
                // tungstenite answers pings by itself; a pong only needed recording.
                Message::Ping(_) | Message::Pong(_) => continue,
                // Keep reading: tungstenite sends the close reply from within the next read, and
                // the stream then ends. Stopping here would drop the connection without that reply.
                Message::Close(_) => continue,
            };
            let Some(refusal) = refusal else {
                strikes = 0;
                continue;
            };
            warn!(code = ?refusal.error.code, error = %refusal.error.message, "refused a frame");
            count(&self.metrics.frames_refused, refusal.error.code.as_str());
            if self.room.send_to(self.id, refusal.into_frame(self.mode)).is_err() {
                // This client's own queue is full; the writer closes the connection with the reason.
                debug!("evicted while answering a refused frame");
            }
            strikes += 1;
            if strikes == self.guard.max_strikes {
                self.close(
                    CloseKind::Strikes,
                    close_code::POLICY,
                    format!("{strikes} refused frames in a row"),
                );
            }
        }
        Ok(Ended::ClientLeft)
    }

    /// Holds a frame back until the rate allows it. Shaping rather than refusing keeps every
    /// message and its order (an outbox flushed after a reconnect is a legitimate burst), while a
    /// flood only slows its sender down: its own socket buffers fill and its sends block.
    ///
    /// # Errors
    /// `Err(())` when the client has been held back without a break for `flood_after`: that is a
    /// flood, not a burst.
    async fn throttle(
        &self,
        bucket: &mut TokenBucket,
        throttled_since: &mut Option<tokio::time::Instant>,
    ) -> Result<(), ()> {
        let now = std::time::Instant::now();
        if bucket.allow(now) {
            *throttled_since = None;
            return Ok(());
        }
        let since = *throttled_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= self.guard.flood_after {
            return Err(());
        }
        tokio::time::sleep(bucket.wait(now)).await;
        // The wait was exactly what one token takes; a token is there now.
        bucket.allow(std::time::Instant::now());
        Ok(())
    }

    /// Has the writer close the connection with `code` (unless a reason was already given).
    fn close(&self, kind: CloseKind, code: u16, reason: String) {
        // `set` fails only when a reason is already recorded; the first one stands.
        let frame = CloseFrame { code, reason: reason.into() };
        let _ = self.close_reason.set(RelayClose { kind, frame });
        self.stop.cancel();
    }

    /// A tutorial client's frame: a plain chat message, given an id and a seq like any other.
    fn tutorial_frame(&self, text: &str) -> Option<Refusal> {
        match ChatMessage::from_json(text) {
            Ok(ChatMessage { source, content }) => {
                let id = uuid::Uuid::new_v4().to_string();
                self.post(Posted { id, source, content })
            }
            Err(error) => Some(error.into()),
        }
    }

    /// A v1 client's frame: a message, a history request or a ping.
    fn v1_frame(&self, text: &str) -> Option<Refusal> {
        let frame = match ClientFrame::from_json(text) {
            Ok(frame) => frame,
            Err(error) => return Some(error.into()),
        };
        let answered = match frame {
            ClientFrame::Message { id, source, content } => {
                if id.is_empty() || id.len() > MAX_ID_LENGTH {
                    let detail = format!("a message id has 1 to {MAX_ID_LENGTH} bytes");
                    let error = WireError::new(ErrorCode::InvalidMessage, detail);
                    return Some(Refusal { error, id: Some(id), request_id: None });
                }
                return self.post(Posted { id, source, content });
            }
            ClientFrame::History { request_id, after_seq } => {
                self.room.answer_history(self.id, request_id, after_seq)
            }
            ClientFrame::Ping { request_id } => {
                let pong = ServerFrame::Pong { request_id }.to_json();
                self.room.send_to(self.id, Message::Text(pong.into()))
            }
        };
        if answered.is_err() {
            debug!("evicted while answering a request");
        }
        None
    }

    /// Checks a message against the limits, then numbers and relays it (under the token's name
    /// when auth is on, whatever the client wrote).
    fn post(&self, mut posted: Posted) -> Option<Refusal> {
        if let Some(identity) = &self.identity {
            posted.source.clone_from(identity);
        }
        let refuse = |error| Some(Refusal { error, id: Some(posted.id.clone()), request_id: None });
        if let Err(error) = self.guard.limits.check(&posted.source, &posted.content) {
            return refuse(error);
        }
        debug!(bytes = posted.content.len(), clients = self.room.len(), "relaying a message");
        self.metrics.messages_in.inc();
        for Evicted(other) in self.room.post(self.id, posted, now_ms()) {
            debug!(other, "evicted a slow consumer while relaying");
        }
        None
    }
}

/// The WebSocket protocol error behind a failed read, if that is what it was.
fn socket_error(error: &axum::Error) -> Option<&tungstenite::Error> {
    use std::error::Error as _;
    let mut source = error.source();
    while let Some(error) = source {
        if let Some(socket_error) = error.downcast_ref::<tungstenite::Error>() {
            return Some(socket_error);
        }
        source = error.source();
    }
    None
}

/// Milliseconds since the Unix epoch: the time stamped on each message.
fn now_ms() -> u64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// Writes queued frames to the client until the connection is stopped, then sends a close frame:
/// the eviction's, or 1001 when the relay is shutting down. Pings the client every heartbeat
/// interval and gives up on it when it stays silent past the timeout.
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut outbound: OutboundQueue,
    stop: CancellationToken,
    eviction: Arc<OnceLock<RelayClose>>,
    heartbeat: Heartbeat,
    heard: Arc<LastHeard>,
    metrics: Arc<Metrics>,
) -> Result<Ended, ConnectionError> {
    let mut pings =
        tokio::time::interval_at(Instant::now() + heartbeat.interval, heartbeat.interval);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            frame = outbound.recv() => match frame {
                Some(frame) => {
                    metrics.queue_depth.observe(outbound.len() as f64);
                    metrics.frames_out.inc();
                    metrics.bytes_out.inc_by(frame_bytes(&frame) as u64);
                    frame
                }
                // The room dropped our queue: we were evicted and `stop` is cancelled as well.
                None => break,
            },
            _ = pings.tick() => {
                let silent = heard.silent_for();
                if silent >= heartbeat.interval + heartbeat.timeout {
                    return Err(ConnectionError::Unresponsive(silent));
                }
                Message::Ping(Default::default())
            }
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            sent = sink.send(frame) => sent.map_err(ConnectionError::Write)?,
        }
    }
    let relay_close = eviction.get().cloned();
    let close = relay_close.as_ref().map_or_else(
        || CloseFrame { code: close_code::AWAY, reason: "relay shutting down".into() },
        |relay_close| relay_close.frame.clone(),
    );
    // Best effort: a client that stopped reading may never take the frame; it is dropped anyway.
    if tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(close.clone()))))
        .await
        .is_err()
    {
        debug!("close frame not accepted in time");
    }
    match relay_close {
        Some(relay_close) => Err(ConnectionError::Closed(relay_close)),
        None => Ok(Ended::RelayShutdown),
    }
}
