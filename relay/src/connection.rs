//! One client connection: a reader and a writer, and how the connection ends.
//!
//! The writer alone owns the socket's sending half and drains the client's outbound queue, a batch
//! at a time with one flush per batch; the reader validates what the client sends and hands it to
//! its rooms. Either may end the connection: the reader when the client leaves, the writer when the
//! relay shuts down, evicts the client, or the socket takes nothing for too long.
//!
//! A close the relay decides (see `crate::close`), wherever it is decided, is sent by the writer,
//! within [`CLOSE_TIMEOUT`], before the connection is dropped: also when the reader decided it
//! and stopped (a frame too big, not UTF-8), and ahead of a shutdown's 1001. What the client sends
//! once the close is decided is not relayed.
//!
//! Every wait and every reading of the clock here is tokio's (`tokio::time`), the rate limiter's
//! included, so that tests run the heartbeat, the stall timeout, rate shaping and the flood
//! close on paused time instead of sleeping. Only the time stamped on messages is the wall
//! clock's.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{Message, WebSocket};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};
use wschat_protocol::rooms::{room_name, LOBBY};
use wschat_protocol::v1::{ClientFrame, Position, ServerFrame};
use wschat_protocol::{ChatMessage, ErrorCode, RelayFrame, WireError};

use crate::auth::Grants;
use crate::close::Close;
use crate::commit::Admission;
use crate::history::Posted;
use crate::memberships::Memberships;
use crate::metrics::{count, Metrics};
use crate::outbound::{frame_bytes, Outbound, FRAME_OVERHEAD};
use crate::rate::TokenBucket;
use crate::room::{ClientId, Evicted, Greeting, Joiner, Mode, Room, PAGE_BYTES};
use crate::rooms::ConnectionSlot;
use crate::{Config, Relay};

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
    /// The relay closed the connection: the client stopped reading (its queue passed its bound or
    /// its socket took nothing for too long), sent too big a message, or too many bad frames.
    #[error("closed by the relay ({}): {}", .0.label(), .0.reason())]
    Closed(Close),
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
///
/// Both directions run in the one task that polls the returned future, as two futures selected
/// together, rather than in a task each: an idle connection then costs one task, and the future
/// holds its parts by reference instead of in copies (measured: the three tasks of one connection
/// took 5.9 KB of an idle socket's 8.6 KB; see `examples/measure.rs`). The socket is split before
/// the future is made, so the future never holds it whole.
pub fn serve(
    socket: WebSocket,
    client: ClientInfo,
    relay: Arc<Relay>,
    admitted: Admitted,
) -> impl Future<Output = ()> + Send {
    let ClientInfo { peer, mode, identity, grants } = client;
    let Admitted { id, slot, outbound, memberships } = admitted;
    let span = tracing::info_span!("client", id, %peer, ?mode, identity);
    let (mut sink, mut stream) = socket.split();
    let grants = grants.map(Box::new);
    let memberships = Mutex::new(memberships);
    let reader = Reader { id, mode, identity, grants, relay, outbound, memberships };
    async move {
        let Reader { relay, outbound, .. } = &reader;
        let metrics = &relay.metrics;
        info!(clients = relay.rooms.connections(), "connected");
        metrics.connections.inc();
        count(&metrics.connections_accepted, mode.label());
        let heard = LastHeard::new();
        // Pinned where they are made: a `let` then `tokio::pin!` would keep two copies of each in
        // this future (about 1.3 KB an idle connection).
        let mut writing =
            pin!(write(&mut sink, outbound, &relay.shutdown, &relay.config, &heard, metrics));
        let mut reading = pin!(reader.run(&mut stream, &heard));
        let outcome = tokio::select! {
            ended = &mut reading => match outbound.close_reason() {
                // The reader stopped on a frame it closes the connection for (too big, not
                // UTF-8): the writer sends that close frame (within its own time bound) before
                // the connection ends, and its outcome says why.
                Some(_) => writing.await,
                // The client is gone: the writer is dropped unfinished.
                None => ended,
            },
            ended = &mut writing => {
                // The writer has sent its close frame: give the client a moment to answer it, so
                // the closing handshake completes instead of the client seeing a reset. If it does
                // not, the reader is dropped unfinished.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut reading).await;
                ended
            }
        };
        reader.memberships().leave_all();
        drop(slot);
        metrics.connections.dec();
        let close = match &outcome {
            Err(ConnectionError::Closed(close)) => Some(*close),
            Err(ConnectionError::Unresponsive(_)) => Some(Close::Unresponsive),
            _ => None,
        };
        if let Some(close) = close.filter(|close| close.counted()) {
            count(&metrics.disconnects, close.label());
        }
        match outcome {
            Ok(Ended::ClientLeft) => info!(clients = relay.rooms.connections(), "disconnected"),
            Ok(Ended::RelayShutdown) => info!("closed: relay shutting down"),
            Err(error) => warn!(
                %error,
                kind = close.map(Close::label),
                reconnect = close.is_none_or(Close::reconnect),
                clients = relay.rooms.connections(),
                "connection ended"
            ),
        }
    }
    .instrument(span)
}

/// What the handshake gives a connection: its id, its place among the connections, its queue
/// (with the lobby's greeting in it), and its rooms (the lobby, unless the lobby was full or is
/// not open to it).
pub struct Admitted {
    /// The client's id.
    pub id: ClientId,
    /// Counts it among the open connections.
    pub slot: ConnectionSlot,
    /// Its queue.
    pub outbound: Arc<Outbound>,
    /// Its rooms and name.
    pub memberships: Memberships,
}

/// A refused frame, answered to its sender in the sender's protocol.
pub struct Refusal {
    /// Why.
    pub error: WireError,
    /// The room the refused frame named (v1), when it named one.
    pub room: Option<String>,
    /// The refused message's id (v1), when known.
    pub id: Option<String>,
    /// The refused request's id (v1), when known.
    pub request_id: Option<u64>,
}

impl From<WireError> for Refusal {
    fn from(error: WireError) -> Self {
        Self { error, room: None, id: None, request_id: None }
    }
}

impl Refusal {
    /// A refusal of a frame about `room`.
    fn about(room: impl Into<String>, error: WireError) -> Self {
        Self { error, room: Some(room.into()), id: None, request_id: None }
    }

    /// The error frame in the client's protocol (the tutorial's has no ids).
    pub fn into_frame(self, mode: Mode) -> Message {
        let json = match mode {
            Mode::Tutorial => RelayFrame::from(self.error).to_json(),
            Mode::V1 => ServerFrame::Error {
                error: self.error,
                room: self.room,
                id: self.id,
                request_id: self.request_id,
            }
            .to_json(),
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
    /// With token auth on, the rooms its token opens; `None`: every room.
    pub grants: Option<Grants>,
}

/// What became of a v1 frame.
enum Handled {
    /// Answered (or refused, with this refusal).
    Done(Option<Refusal>),
    /// A join, still to do.
    Join { room: String, after: Option<Position> },
    /// With `--redis`: a message checked and ready, still to be stored in Redis.
    Share { room: Arc<Room>, posted: Posted },
}

/// What a connection's reader needs besides the socket.
struct Reader {
    id: ClientId,
    mode: Mode,
    identity: Option<String>,
    /// Boxed: most connections have none, and every byte here is paid per idle socket.
    grants: Option<Box<Grants>>,
    /// The rooms, the settings (`config`), the metrics.
    relay: Arc<Relay>,
    /// This client's queue, where a close the reader decides goes too (the writer sends it).
    outbound: Arc<Outbound>,
    /// Its rooms. A lock only so that the reader can be shared with the writer's future; the
    /// reader alone uses it, never across an `.await`.
    memberships: Mutex<Memberships>,
}

impl Reader {
    /// Reads the client's frames until it leaves: relays messages, answers requests and bad
    /// frames, and closes the connection on sustained abuse.
    async fn run(
        &self,
        stream: &mut (impl Stream<Item = Result<Message, axum::Error>> + Unpin),
        heard: &LastHeard,
    ) -> Result<Ended, ConnectionError> {
        let config = &self.relay.config;
        let metrics = &self.relay.metrics;
        let mut bucket = TokenBucket::new(config.rate, Instant::now().into_std());
        let mut throttled_since = None;
        let mut strikes = 0;
        while let Some(frame) = stream.next().await {
            let frame = match frame {
                Ok(frame) => frame,
                Err(error) => {
                    // Some read failures deserve the close code that says why (RFC 6455, 7.4.1).
                    match socket_error(&error) {
                        Some(tungstenite::Error::Capacity(_)) => {
                            self.outbound.close(Close::TooBig { limit: config.max_message_size });
                        }
                        Some(tungstenite::Error::Utf8(_)) => {
                            self.outbound.close(Close::InvalidText)
                        }
                        _ => {}
                    }
                    return Err(ConnectionError::Read(error));
                }
            };
            heard.record();
            metrics.bytes_in.inc_by(frame_bytes(&frame) as u64);
            let refusal = match frame {
                // Once the connection is closing (decided here or by the room), what the client
                // still sends is read only to reach its close reply: nothing more is relayed.
                Message::Text(_) | Message::Binary(_) if self.outbound.close_reason().is_some() => {
                    continue
                }
                Message::Text(text) => {
                    if self.throttle(&mut bucket, &mut throttled_since).await.is_err() {
                        self.outbound.close(Close::Flood { per_second: config.rate.per_second });
                        continue;
                    }
                    // With `--data-dir`, waits while too much waits for the disk already.
                    let admission = self.relay.rooms.admit(text.len()).await;
                    let handled = match self.mode {
                        Mode::Tutorial => self.tutorial_frame(&text, admission),
                        Mode::V1 => self.v1_frame(&text, admission),
                    };
                    match handled {
                        Handled::Done(refusal) => refusal,
                        // Boxed: a join may wait for its room to be read from the store, and
                        // that wait would otherwise be part of every connection's future, idle
                        // or not; the same for a message's round trip to Redis.
                        Handled::Join { room, after } => Box::pin(self.join(room, after)).await,
                        Handled::Share { room, posted } => Box::pin(self.share(room, posted)).await,
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
            // `?`: the message may quote the client's text (an unknown `type`), which must not
            // start a line of its own in the log.
            warn!(code = ?refusal.error.code, error = ?refusal.error.message, "refused a frame");
            count(&metrics.frames_refused, refusal.error.code.as_str());
            self.answer(refusal.into_frame(self.mode));
            strikes += 1;
            if strikes == config.max_strikes {
                self.outbound.close(Close::Strikes { strikes });
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
        throttled_since: &mut Option<Instant>,
    ) -> Result<(), ()> {
        let now = Instant::now().into_std();
        if bucket.allow(now) {
            *throttled_since = None;
            return Ok(());
        }
        let since = *throttled_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.relay.config.flood_after {
            return Err(());
        }
        tokio::time::sleep(bucket.wait(now)).await;
        // The wait was exactly what one token takes; a token is there now.
        bucket.allow(Instant::now().into_std());
        Ok(())
    }

    /// A tutorial client's frame: a plain chat message for the lobby, given an id and a seq like
    /// any other.
    fn tutorial_frame(&self, text: &str, admission: Admission<'_>) -> Handled {
        match ChatMessage::from_json(text) {
            Ok(ChatMessage { source, content }) => {
                // A random (v4) UUID from rand's thread-local generator (ChaCha, seeded by the
                // system): `Uuid::new_v4` asks the system for each one, a `getrandom` call per
                // message that cost 2% of the relay's time in a burst.
                let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string();
                // A tutorial client is in the lobby from its handshake to its end.
                let Some(lobby) = self.memberships().find(LOBBY).cloned() else {
                    return Handled::Done(None);
                };
                self.post(&lobby, Posted { id, source, content }, admission)
            }
            Err(error) => Handled::Done(Some(error.into())),
        }
    }

    /// A v1 client's frame: a message, a request, a join or a leave, or a typing signal.
    /// Everything but a join is done at once; a join is left to the caller, as it may wait.
    fn v1_frame(&self, text: &str, admission: Admission<'_>) -> Handled {
        let frame = match ClientFrame::from_json(text) {
            Ok(frame) => frame,
            Err(error) => return Handled::Done(Some(error.into())),
        };
        Handled::Done(match frame {
            ClientFrame::Message { room, id, source, content } => {
                if id.is_empty() || id.len() > MAX_ID_LENGTH {
                    let detail = format!("a message id has 1 to {MAX_ID_LENGTH} bytes");
                    let error = WireError::new(ErrorCode::InvalidMessage, detail);
                    let refusal = Refusal { id: Some(id), ..Refusal::about(room, error) };
                    return Handled::Done(Some(refusal));
                }
                match self.joined(&room) {
                    Ok(room) => return self.post(&room, Posted { id, source, content }, admission),
                    Err(refusal) => Some(Refusal { id: Some(id), ..refusal }),
                }
            }
            ClientFrame::History { room, request_id, after_seq } => match self.joined(&room) {
                Ok(room) => {
                    if room.answer_history(self.id, request_id, after_seq).is_err() {
                        debug!("evicted while answering a request");
                    }
                    None
                }
                Err(refusal) => Some(Refusal { request_id: Some(request_id), ..refusal }),
            },
            ClientFrame::Ping { request_id } => {
                self.answer_frame(&ServerFrame::Pong { request_id });
                None
            }
            ClientFrame::Join { room, after } => return Handled::Join { room, after },
            ClientFrame::Leave { room } => self.leave(room),
            ClientFrame::Rooms {} => {
                let max_bytes = (self.relay.config.queue_bytes / 4).min(PAGE_BYTES);
                let rooms = self.relay.rooms.list(|room| self.may_join(room), max_bytes);
                self.answer_frame(&rooms);
                None
            }
            ClientFrame::Typing { room } => {
                let room = match self.joined(&room) {
                    Ok(room) => room,
                    Err(refusal) => return Handled::Done(Some(refusal)),
                };
                if !self.may_post(room.name()) {
                    Some(Refusal::about(room.name(), WireError::new(ErrorCode::Forbidden, "")))
                } else {
                    // Past the pace, dropped without a word: the next one a second later says
                    // it.
                    if self.memberships().may_signal_typing(room.name(), Instant::now()) {
                        room.typing(self.id);
                    }
                    None
                }
            }
        })
    }

    /// The room `given` names, if this client is in it.
    ///
    /// # Errors
    /// The refusal, naming the room: `room_invalid` or `not_joined`.
    fn joined(&self, given: &str) -> Result<Arc<Room>, Refusal> {
        let name = room_name(given).map_err(|error| Refusal::about(given, error))?;
        let found = self.memberships().find(&name).cloned();
        found.ok_or_else(|| Refusal::about(name, WireError::new(ErrorCode::NotJoined, "")))
    }

    /// Joins the room `given` names (or greets this client again in a room it is in), within
    /// the bounds on rooms and what its token allows.
    async fn join(&self, given: String, after: Option<Position>) -> Option<Refusal> {
        let refused = |refusal: Refusal| {
            count(&self.relay.metrics.room_refusals, refusal.error.code.as_str());
            Some(refusal)
        };
        let name = match room_name(&given) {
            Ok(name) => name,
            Err(error) => return refused(Refusal::about(given, error)),
        };
        let refuse =
            |code: ErrorCode| refused(Refusal::about(name.clone(), WireError::new(code, "")));
        let greeting = Greeting::Joined { after };
        let (present, rooms, me) = {
            let memberships = self.memberships();
            (memberships.find(&name).cloned(), memberships.len(), Arc::clone(memberships.name()))
        };
        if let Some(room) = present {
            room.greet_again(self.id, &greeting);
            return None;
        }
        if rooms >= self.relay.config.rooms.max_per_connection {
            return refuse(ErrorCode::TooManyRooms);
        }
        // Nothing about a room that is not open to this client: not whether it exists, nor how
        // full it is.
        if !self.may_join(&name) {
            return refuse(ErrorCode::Forbidden);
        }
        let joiner =
            Joiner { id: self.id, outbound: Arc::clone(&self.outbound), mode: self.mode, name: me };
        match self.relay.rooms.join(&name, joiner, &greeting).await {
            Ok(seat) => {
                self.memberships().add(seat);
                None
            }
            Err(code) => refuse(code),
        }
    }

    /// Leaves the room `given` names, and says so.
    fn leave(&self, given: String) -> Option<Refusal> {
        let name = match room_name(&given) {
            Ok(name) => name,
            Err(error) => return Some(Refusal::about(given, error)),
        };
        if !self.memberships().leave(&name) {
            return Some(Refusal::about(name, WireError::new(ErrorCode::NotJoined, "")));
        }
        self.answer_frame(&ServerFrame::Left { room: name });
        None
    }

    /// Checks a message against what the token allows and the limits, then hands it to the room
    /// to number, store and relay (under the token's name when auth is on, whatever the client
    /// wrote); with `--redis`, leaves it to the caller to store in Redis (see [`Reader::share`]).
    fn post(&self, room: &Arc<Room>, mut posted: Posted, admission: Admission<'_>) -> Handled {
        if let Some(identity) = &self.identity {
            posted.source.clone_from(identity);
        }
        let refuse = |error| {
            let refusal =
                Refusal { id: Some(posted.id.clone()), ..Refusal::about(room.name(), error) };
            Handled::Done(Some(refusal))
        };
        if !self.may_post(room.name()) {
            return refuse(WireError::new(ErrorCode::Forbidden, ""));
        }
        if let Err(error) = self.relay.config.limits.check(&posted.source, &posted.content) {
            return refuse(error);
        }
        self.memberships().wrote_as(&posted.source, self.id);
        debug!(
            bytes = posted.content.len(),
            room = room.name(),
            members = room.len(),
            "relaying a message"
        );
        if self.relay.rooms.cluster().is_some() {
            return Handled::Share { room: Arc::clone(room), posted };
        }
        for Evicted(other) in room.post(self.id, posted, now_ms(), admission) {
            debug!(other, "evicted a slow consumer while relaying");
        }
        Handled::Done(None)
    }

    /// With `--redis`: stores a checked message in Redis and acks it (v1) once Redis has it; the
    /// room's tail relays it to everyone else, on every node. Refused with `unavailable` when
    /// Redis fails (or the room just changed epochs there): the client sends it again later.
    /// Returns nothing to count as a strike.
    async fn share(&self, room: Arc<Room>, posted: Posted) -> Option<Refusal> {
        let cluster = self.relay.rooms.cluster()?;
        let (epoch, _) = room.position();
        match cluster.append(room.name(), &epoch, &posted, now_ms(), self.id).await {
            Ok(appended) => {
                if !appended.duplicate {
                    self.relay.metrics.messages_in.inc();
                }
                if self.mode == Mode::V1 {
                    self.answer_frame(&ServerFrame::Ack {
                        room: room.name().to_owned(),
                        id: posted.id,
                        seq: appended.seq,
                        duplicate: appended.duplicate,
                    });
                }
                None
            }
            Err(error) => {
                debug!(%error, room = room.name(), "a message was not stored");
                // Answered here rather than returned as this frame's refusal: Redis failed, not
                // the client, so it is no strike against it (as with a failing `--data-dir`,
                // whose room refuses the same way).
                count(&self.relay.metrics.frames_refused, ErrorCode::Unavailable.as_str());
                let error = WireError::new(ErrorCode::Unavailable, "");
                let refusal = Refusal { id: Some(posted.id), ..Refusal::about(room.name(), error) };
                self.answer(refusal.into_frame(self.mode));
                None
            }
        }
    }

    /// Whether this client may join `room`.
    fn may_join(&self, room: &str) -> bool {
        self.grants.as_ref().is_none_or(|grants| grants.may_join(room))
    }

    /// Whether this client may post in `room`.
    fn may_post(&self, room: &str) -> bool {
        self.grants.as_ref().is_none_or(|grants| grants.may_post(room))
    }

    /// Queues an answer for this client only; a client whose queue is full is not reading, and
    /// is closed as such (a client that floods the relay with requests but never reads the
    /// answers is a slow consumer too).
    fn answer(&self, frame: Message) {
        if !self.outbound.offer(frame, self.relay.config.queue_bytes) {
            debug!("evicted while answering");
            self.outbound.close(Close::SlowConsumer);
        }
    }

    fn answer_frame(&self, frame: &ServerFrame) {
        self.answer(Message::Text(frame.to_json().into()));
    }

    fn memberships(&self) -> MutexGuard<'_, Memberships> {
        self.memberships.lock().unwrap_or_else(PoisonError::into_inner)
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

/// Writes queued frames to the client until the connection is closed (by the room, the reader,
/// or a stall) or the relay shuts down, then sends a close frame: the decided one, or 1001 on
/// shutdown. Pings the client every heartbeat interval and gives up on it when it stays silent
/// past the timeout.
async fn write<S>(
    sink: &mut S,
    outbound: &Outbound,
    shutdown: &CancellationToken,
    config: &Config,
    heard: &LastHeard,
    metrics: &Metrics,
) -> Result<Ended, ConnectionError>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    let close = tokio::select! {
        biased;
        // A close decided already is sent even when the relay is shutting down too: the client
        // learns what it did, not only that the relay stops.
        close = outbound.closed() => Some(close),
        () = shutdown.cancelled() => None,
        stopped = pump(sink, outbound, config, heard, metrics) => match stopped {
            Stopped::Stalled => {
                // The first close decided stands, should the room have evicted the client too.
                outbound.close(Close::Stalled);
                outbound.close_reason()
            }
            Stopped::Failed(error) => return Err(error),
        },
    };
    let frame = close.unwrap_or(Close::Shutdown).frame();
    // Best effort: a client that stopped reading may never take the frame; it is dropped anyway.
    if tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(frame))).await.is_err() {
        debug!("close frame not accepted in time");
    }
    match close {
        Some(close) => Err(ConnectionError::Closed(close)),
        None => Ok(Ended::RelayShutdown),
    }
}

/// Why [`pump`] stopped.
enum Stopped {
    /// The socket took nothing for the stall timeout while frames waited.
    Stalled,
    /// Writing failed, or the client stopped answering pings.
    Failed(ConnectionError),
}

/// Moves frames from the queue to the socket, each batch of what waits with one flush, and pings.
/// Returns only when it has to stop; a close decided meanwhile is `write`'s business.
///
/// Every step that hands bytes to the socket (a frame, a flush) must complete within the stall
/// timeout. A reading client takes a frame of at most the message size limit in milliseconds;
/// one whose socket takes nothing for that long while frames wait has stopped reading, however
/// few bytes wait for it (the byte bound catches those that fall behind fast).
async fn pump<S>(
    sink: &mut S,
    outbound: &Outbound,
    config: &Config,
    heard: &LastHeard,
    metrics: &Metrics,
) -> Stopped
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    let Config { heartbeat, stall_timeout, .. } = *config;
    let mut pings =
        tokio::time::interval_at(Instant::now() + heartbeat.interval, heartbeat.interval);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // What the writer takes from the queue at once; its buffer goes back to the queue each time.
    let mut batch = VecDeque::new();
    loop {
        let ping = tokio::select! {
            biased;
            () = outbound.take(&mut batch) => false,
            _ = pings.tick() => true,
        };
        if ping {
            let silent = heard.silent_for();
            if silent >= heartbeat.interval + heartbeat.timeout {
                return Stopped::Failed(ConnectionError::Unresponsive(silent));
            }
            let ping = sink.send(Message::Ping(Default::default()));
            if let Err(stopped) = within(stall_timeout, ping, || ()).await {
                return stopped;
            }
            continue;
        }
        metrics.queue_depth.observe(batch.len() as f64);
        metrics.frames_out.inc_by(batch.len() as u64);
        let mut handed = Handed::default();
        for frame in batch.drain(..) {
            let bytes = frame_bytes(&frame);
            let fed =
                within(stall_timeout, sink.feed(frame), || handed.count_off(outbound, metrics));
            if let Err(stopped) = fed.await {
                return stopped;
            }
            handed.add(bytes, config, outbound, metrics);
        }
        handed.count_off(outbound, metrics);
        if let Err(stopped) = within(stall_timeout, sink.flush(), || ()).await {
            return stopped;
        }
        Outbound::release(&mut batch);
    }
}

/// Frames of a batch handed to the socket whose bytes still count against the client's queue.
///
/// They are counted off in steps (at most [`HANDED_STEP`] bytes, and 1/64 of the queue's bound),
/// before the writer waits for the socket, and at the end of the batch, rather than one frame at
/// a time: the count is shared with the rooms, which add to it from other threads, and the metric
/// with every connection, so a write to either per frame cost more than handing the frame over
/// (a burst of 20,000 frames to 100 clients is 2,000,000 of each). So the queue counts at most a
/// step and a frame more than waits, and never while the writer waits.
#[derive(Default)]
struct Handed {
    frames: usize,
    payload: usize,
}

/// See [`Handed`]: 16 KiB is about a hundred chat frames, 0.4% of the default queue bound.
const HANDED_STEP: usize = 16 * 1024;

impl Handed {
    fn add(&mut self, payload: usize, config: &Config, outbound: &Outbound, metrics: &Metrics) {
        self.frames += 1;
        self.payload += payload;
        let step = (config.queue_bytes / 64).min(HANDED_STEP);
        if self.payload + self.frames * FRAME_OVERHEAD >= step {
            self.count_off(outbound, metrics);
        }
    }

    fn count_off(&mut self, outbound: &Outbound, metrics: &Metrics) {
        if self.frames > 0 {
            outbound.sent(self.frames, self.payload);
            metrics.bytes_out.inc_by(self.payload as u64);
            (self.frames, self.payload) = (0, 0);
        }
    }
}

/// One step of writing to the socket, which must complete within `stall_timeout`.
///
/// Most steps complete at once (a frame goes into the socket's write buffer), and those arm no
/// timer and read no clock, which per frame of a burst cost more than the step itself; the
/// stall timeout starts when a step first has to wait, in the same poll it started in, and
/// `before_waiting` runs then.
async fn within(
    stall_timeout: Duration,
    step: impl Future<Output = Result<(), axum::Error>>,
    before_waiting: impl FnOnce(),
) -> Result<(), Stopped> {
    let mut step = pin!(step);
    let at_once = std::future::poll_fn(|cx| Poll::Ready(step.as_mut().poll(cx))).await;
    let done = match at_once {
        Poll::Ready(done) => done,
        Poll::Pending => {
            before_waiting();
            // Boxed: a step waits only while the socket is full, and a timer held in place
            // would be part of every connection's future, idle or not.
            let waiting = Box::pin(tokio::time::timeout(stall_timeout, step));
            waiting.await.map_err(|_| Stopped::Stalled)?
        }
    };
    done.map_err(|error| Stopped::Failed(ConnectionError::Write(error)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A socket that records what it is given, and how often it is flushed.
    #[derive(Default)]
    struct Recording {
        frames: Vec<Message>,
        flushes: usize,
    }

    impl Sink<Message> for Recording {
        type Error = axum::Error;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(mut self: Pin<&mut Self>, frame: Message) -> Result<(), Self::Error> {
            self.frames.push(frame);
            Ok(())
        }
        fn poll_flush(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Result<(), Self::Error>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A socket whose peer stopped reading: it never takes anything.
    struct Stuck;

    impl Sink<Message> for Stuck {
        type Error = axum::Error;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Pending
        }
        fn start_send(self: Pin<&mut Self>, _: Message) -> Result<(), Self::Error> {
            unreachable!("never ready")
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Pending
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Pending
        }
    }

    /// A client whose socket takes nothing is evicted as not reading once the stall timeout
    /// passes, though a single short message waits for it: far below the byte bound.
    #[tokio::test(start_paused = true)]
    async fn a_socket_that_takes_nothing_is_evicted_after_the_stall_timeout() {
        let outbound = Outbound::default();
        assert!(outbound.offer(Message::Text("hello".into()), usize::MAX));
        let started = Instant::now();
        let ended = write(
            &mut Stuck,
            &outbound,
            &CancellationToken::new(),
            &Config::default(),
            &LastHeard::new(),
            &Metrics::new(),
        )
        .await;
        match ended {
            Err(ConnectionError::Closed(close)) => {
                assert_eq!((close, close.code()), (Close::Stalled, Some(1008)));
            }
            other => panic!("expected a slow-consumer close, got {other:?}"),
        }
        // The stall, then the bounded wait for the close frame to go out.
        assert_eq!(started.elapsed(), Config::default().stall_timeout + CLOSE_TIMEOUT);
    }

    /// A relay without a store, as `run` makes it, for driving one connection's halves by hand.
    fn relay(config: Config) -> Arc<Relay> {
        let metrics = Arc::new(Metrics::new());
        let history = crate::history::History::new("epoch".into(), config.history_limit);
        let core = Arc::new(crate::room::Core {
            queue_bytes: config.queue_bytes,
            max_members: config.rooms.max_members,
            metrics: Arc::clone(&metrics),
            dedupe: Mutex::new(crate::dedupe::Dedupe::new(crate::dedupe::Limits::default())),
            journal: None,
            ticks: AtomicU64::new(0),
            cluster: None,
        });
        let rooms = Arc::new(crate::rooms::Rooms::new(
            core,
            history,
            None,
            config.rooms.max_rooms,
            config.history_limit,
        ));
        Arc::new(Relay {
            config,
            rooms,
            shutdown: CancellationToken::new(),
            abandon: CancellationToken::new(),
            sockets: tokio_util::task::TaskTracker::new(),
            metrics,
            auth: None,
            browsers: crate::origin::BrowserPolicy::new(&[], &[], false).unwrap(),
        })
    }

    /// A tutorial client in the lobby of `relay`: its reader, and its queue.
    fn tutorial(relay: &Arc<Relay>) -> (Reader, Arc<Outbound>) {
        let id = relay.rooms.next_client_id();
        let outbound = Arc::new(Outbound::default());
        let mut memberships = Memberships::new(None);
        let lobby = relay.rooms.lobby();
        let joiner = Joiner {
            id,
            outbound: Arc::clone(&outbound),
            mode: Mode::Tutorial,
            name: Arc::clone(memberships.name()),
        };
        lobby.join(joiner, &Greeting::Welcome).unwrap();
        memberships.add(crate::rooms::Seat::taken(&relay.rooms, Arc::clone(lobby), id));
        let reader = Reader {
            id,
            mode: Mode::Tutorial,
            identity: None,
            grants: None,
            relay: Arc::clone(relay),
            outbound: Arc::clone(&outbound),
            memberships: Mutex::new(memberships),
        };
        (reader, outbound)
    }

    /// A client sending as fast as it can is held to the default rate, 10 messages a second
    /// after a burst of 20, and once held back for the default 30 s without a break it is closed
    /// as a flood (1008): 320 messages relayed, nothing after the close, on paused time.
    #[tokio::test(start_paused = true)]
    async fn a_client_held_back_for_30_seconds_is_closed_as_a_flood() {
        let relay = relay(Config::default());
        let (flooder, flooder_queue) = tutorial(&relay);
        let (_watcher, watcher_queue) = tutorial(&relay);
        let frame = Message::Text(
            ChatMessage { source: "ada".into(), content: "flood".into() }.to_json().into(),
        );
        let mut frames = futures_util::stream::iter(std::iter::repeat_n(frame, 1_000).map(Ok));
        let started = Instant::now();
        let ended = flooder.run(&mut frames, &LastHeard::new()).await;
        assert!(matches!(ended, Ok(Ended::ClientLeft)), "{ended:?}");
        assert_eq!(flooder_queue.close_reason(), Some(Close::Flood { per_second: 10.0 }));
        assert_eq!(watcher_queue.take_now().len(), 20 + 30 * 10);
        assert_eq!(started.elapsed(), Config::default().flood_after);
    }

    /// A socket whose peer answers every ping at once (the pong is recorded as the reader would).
    struct Answering<'a> {
        heard: &'a LastHeard,
        pings: usize,
    }

    impl Sink<Message> for Answering<'_> {
        type Error = axum::Error;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(mut self: Pin<&mut Self>, frame: Message) -> Result<(), Self::Error> {
            if matches!(frame, Message::Ping(_)) {
                self.heard.record();
                self.pings += 1;
            }
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A client that never answers the relay's pings is dropped at the first ping after it has
    /// been silent for the interval and the timeout (20 s + 10 s by default): at the second
    /// ping, 40 s in, without a close frame. On paused time.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_answers_pings_is_dropped() {
        let (config, heard, metrics) = (Config::default(), LastHeard::new(), Metrics::new());
        let mut sink = Recording::default();
        let started = Instant::now();
        let ended = write(
            &mut sink,
            &Outbound::default(),
            &CancellationToken::new(),
            &config,
            &heard,
            &metrics,
        )
        .await;
        let silent = Duration::from_secs(40);
        assert!(matches!(ended, Err(ConnectionError::Unresponsive(d)) if d == silent), "{ended:?}");
        assert_eq!(started.elapsed(), silent);
        assert_eq!(sink.frames, [Message::Ping(Default::default())], "one ping, no close frame");
    }

    /// A client that answers every ping stays connected however long it says nothing else: five
    /// minutes, fifteen pings, then the relay's shutdown closes it with 1001. On paused time.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_answers_pings_stays() {
        let (config, heard, metrics) = (Config::default(), LastHeard::new(), Metrics::new());
        let shutdown = CancellationToken::new();
        let mut sink = Answering { heard: &heard, pings: 0 };
        let outbound = Outbound::default();
        let writing = write(&mut sink, &outbound, &shutdown, &config, &heard, &metrics);
        let stopping = async {
            tokio::time::sleep(Duration::from_secs(5 * 60 + 1)).await;
            shutdown.cancel();
        };
        let (ended, ()) = tokio::join!(writing, stopping);
        assert!(matches!(ended, Ok(Ended::RelayShutdown)), "{ended:?}");
        assert_eq!(sink.pings, 15);
    }

    /// A close decided for a connection is what its client reads even when the relay shuts
    /// down at the same moment: 1009, not 1001.
    #[tokio::test(start_paused = true)]
    async fn a_decided_close_wins_over_the_shutdown() {
        let outbound = Outbound::default();
        outbound.close(Close::TooBig { limit: 10 });
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let mut sink = Recording::default();
        let (config, heard, metrics) = (Config::default(), LastHeard::new(), Metrics::new());
        let ended = write(&mut sink, &outbound, &shutdown, &config, &heard, &metrics).await;
        assert!(matches!(ended, Err(ConnectionError::Closed(Close::TooBig { .. }))), "{ended:?}");
        assert!(
            matches!(sink.frames.last(), Some(Message::Close(Some(close))) if close.code == 1009)
        );
    }

    /// Once a connection is closing, what its client still sends is not relayed: after the
    /// refused frame that struck it out, a good message reaches nobody.
    #[tokio::test]
    async fn nothing_is_relayed_after_the_close_is_decided() {
        let relay = relay(Config { max_strikes: 1, ..Config::default() });
        let (client, client_queue) = tutorial(&relay);
        let (_watcher, watcher_queue) = tutorial(&relay);
        let good = ChatMessage { source: "ada".into(), content: "too late".into() }.to_json();
        let frames = [Message::Text("not json".into()), Message::Text(good.into())];
        let mut frames = futures_util::stream::iter(frames.map(Ok));
        let ended = client.run(&mut frames, &LastHeard::new()).await;
        assert!(matches!(ended, Ok(Ended::ClientLeft)), "{ended:?}");
        assert_eq!(client_queue.close_reason(), Some(Close::Strikes { strikes: 1 }));
        assert!(watcher_queue.take_now().is_empty());
    }

    /// Everything that waits is written in order with one flush; the relay's shutdown then
    /// closes the socket with 1001.
    #[tokio::test(start_paused = true)]
    async fn what_waits_goes_out_in_order_with_one_flush() {
        let outbound = Outbound::default();
        for n in 0..5 {
            assert!(outbound.offer(Message::Text(n.to_string().into()), usize::MAX));
        }
        let shutdown = CancellationToken::new();
        let mut sink = Recording::default();
        let (config, heard, metrics) = (Config::default(), LastHeard::new(), Metrics::new());
        let writing = write(&mut sink, &outbound, &shutdown, &config, &heard, &metrics);
        let stopping = async {
            // Let the writer take and write the batch, then shut down.
            tokio::task::yield_now().await;
            shutdown.cancel();
        };
        let (ended, ()) = tokio::join!(writing, stopping);
        assert!(matches!(ended, Ok(Ended::RelayShutdown)), "{ended:?}");
        let texts: Vec<_> = sink
            .frames
            .iter()
            .filter_map(|frame| match frame {
                Message::Text(text) => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(texts, ["0", "1", "2", "3", "4"]);
        assert!(
            matches!(sink.frames.last(), Some(Message::Close(Some(close))) if close.code == 1001)
        );
        assert_eq!(sink.flushes, 2, "one for the batch, one for the close frame");
    }
}
