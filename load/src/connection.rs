//! One simulated client: opens its socket, then either receives (one task, one read loop) or
//! sends (a writer on the schedule and a reader for acks, so that neither waits on the other).
//!
//! The hot path, a receiver handling a delivery, finds the stamp in the frame's text, records
//! the latency into a small local batch and stores its count into its own cache line: no JSON
//! parsing, no allocation, no lock (the batch takes one every 64 deliveries).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use wschat_protocol::rooms::LOBBY;
use wschat_protocol::v1::{ClientFrame, ServerFrame, SUBPROTOCOL};
use wschat_protocol::RelayFrame;

use crate::plan::{Plan, Protocol};
use crate::stamp::{Clock, Found, FrameTemplate, Kind, MessageId, RunId, Stamp};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Each socket's read buffer. tungstenite's default, 128 KiB, is touched in full on the first
/// read: 1.3 GB for 10,000 sockets. 8 KiB still holds dozens of small frames per read.
const READ_BUFFER: usize = 8 * 1024;
/// Frames an unthrottled sender hands to tungstenite before one flush (one write system call).
const SEND_BATCH: usize = 32;
/// Latencies a connection collects before taking its histogram shard's lock.
const LATENCY_BATCH: usize = 64;
/// Histogram shards: connections share them by index, so that two threads rarely contend.
const SHARDS: usize = 16;
/// How long the probes may take to reach every receiver before the measurement starts anyway.
const PROBE_PATIENCE: Duration = Duration::from_secs(10);
/// Time between probes while some receiver has not seen one.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// How long a closing connection waits for the relay's answering close frame.
const CLOSE_PATIENCE: Duration = Duration::from_secs(2);

/// Where the run is; connection tasks watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Connecting,
    /// One sender probes until every receiver has seen a probe.
    Probing,
    /// Senders send; `start_us` is the measurement's zero on the run's clock.
    Sending {
        start_us: u64,
    },
}

/// What a connection's state is, for the monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum State {
    Connecting = 0,
    Open = 1,
    Failed = 2,
    Ended = 3,
}

/// One connection's live counters, read by the monitor while the run goes on. Aligned to a cache
/// line each, so that a receiver's stores never contend with another's.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct Slot {
    state: AtomicU8,
    pub deliveries: AtomicU64,
    pub sent: AtomicU64,
    pub acks: AtomicU64,
    pub done_sending: AtomicBool,
}

impl Slot {
    pub fn state(&self) -> State {
        match self.state.load(Relaxed) {
            0 => State::Connecting,
            1 => State::Open,
            2 => State::Failed,
            _ => State::Ended,
        }
    }

    fn set_state(&self, state: State) {
        self.state.store(state as u8, Relaxed);
    }
}

/// Latency histograms shared by the connections, in shards.
#[derive(Debug)]
pub(crate) struct LatencyShards(Box<[Mutex<Histogram<u64>>]>);

impl LatencyShards {
    /// Microseconds from 1 to 60 s at 3 significant digits; longer ones count as 60 s.
    fn new() -> Self {
        Self(
            (0..SHARDS)
                .map(|_| {
                    Mutex::new(
                        Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid fixed bounds"),
                    )
                })
                .collect(),
        )
    }

    /// Every shard added together.
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid fixed bounds");
        for shard in &self.0 {
            all.add(&*shard.lock().unwrap_or_else(PoisonError::into_inner))
                .expect("shards share the bounds");
        }
        all
    }
}

/// A connection's latencies not yet in its shard.
struct LatencyBatch<'a> {
    shard: &'a Mutex<Histogram<u64>>,
    values: [u64; LATENCY_BATCH],
    len: usize,
}

impl<'a> LatencyBatch<'a> {
    fn new(shards: &'a LatencyShards, index: usize) -> Self {
        Self { shard: &shards.0[index % SHARDS], values: [0; LATENCY_BATCH], len: 0 }
    }

    fn record(&mut self, micros: u64) {
        self.values[self.len] = micros;
        self.len += 1;
        if self.len == LATENCY_BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let mut histogram = self.shard.lock().unwrap_or_else(PoisonError::into_inner);
        for &value in &self.values[..self.len] {
            histogram.saturating_record(value.max(1));
        }
        self.len = 0;
    }
}

impl Drop for LatencyBatch<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// What every connection task shares with the others and with the monitor.
#[derive(Debug)]
pub(crate) struct Context {
    pub plan: Plan,
    pub run: RunId,
    pub clock: Clock,
    pub slots: Box<[Slot]>,
    pub phase: watch::Sender<Phase>,
    /// Cancelled when the run is over: every connection closes.
    pub stop: CancellationToken,
    connect_permits: Semaphore,
    /// Receivers open when connecting finished (set by the monitor before probing).
    pub receivers_held: AtomicUsize,
    probes_seen: AtomicUsize,
    prober_chosen: AtomicBool,
    pub probing_done: AtomicBool,
    pub latency: LatencyShards,
    pub ack_latency: LatencyShards,
    /// Things worth saying in the summary that are not errors of one connection.
    pub notes: Mutex<Vec<String>>,
}

impl Context {
    pub fn new(plan: Plan) -> Self {
        Self {
            run: RunId::random(),
            clock: Clock::start(),
            slots: (0..plan.connections).map(|_| Slot::default()).collect(),
            phase: watch::Sender::new(Phase::Connecting),
            stop: CancellationToken::new(),
            connect_permits: Semaphore::new(plan.connect_concurrency),
            receivers_held: AtomicUsize::new(0),
            probes_seen: AtomicUsize::new(0),
            prober_chosen: AtomicBool::new(false),
            probing_done: AtomicBool::new(false),
            latency: LatencyShards::new(),
            ack_latency: LatencyShards::new(),
            notes: Mutex::new(Vec::new()),
            plan,
        }
    }

    fn note(&self, note: String) {
        self.notes.lock().unwrap_or_else(PoisonError::into_inner).push(note);
    }
}

/// What one connection saw, merged into the summary at the end.
#[derive(Debug, Default)]
pub(crate) struct ConnectionReport {
    pub opened: bool,
    pub deliveries: u64,
    pub last_delivery_us: u64,
    pub sent: u64,
    pub last_send_us: u64,
    pub acks: u64,
    pub last_ack_us: u64,
    /// Frames from someone other than this run (history, other clients).
    pub foreign: u64,
    pub errors: Vec<String>,
    /// The close code, when the relay closed the connection before the run was over (1005 for
    /// a close frame without one).
    pub closed_by_relay: Option<u16>,
}

impl ConnectionReport {
    fn closed(&mut self, frame: Option<&CloseFrame>, stop: &CancellationToken) {
        if !stop.is_cancelled() {
            self.closed_by_relay = Some(frame.map_or(1005, |frame| u16::from(frame.code)));
        }
    }

    fn merge(&mut self, other: Self) {
        self.deliveries += other.deliveries;
        self.last_delivery_us = self.last_delivery_us.max(other.last_delivery_us);
        self.acks += other.acks;
        self.last_ack_us = self.last_ack_us.max(other.last_ack_us);
        self.foreign += other.foreign;
        self.errors.extend(other.errors);
        self.closed_by_relay = self.closed_by_relay.or(other.closed_by_relay);
    }
}

/// Runs connection `index` from its handshake to the end of the run.
pub(crate) async fn connection(ctx: Arc<Context>, index: usize) -> ConnectionReport {
    let mut report = ConnectionReport::default();
    let slot = &ctx.slots[index];
    let opened = {
        let Ok(_permit) = ctx.connect_permits.acquire().await else {
            unreachable!("the semaphore is never closed");
        };
        tokio::select! {
            biased;
            () = ctx.stop.cancelled() => None,
            opened = tokio::time::timeout(ctx.plan.connect_timeout, open(&ctx.plan, index)) => Some(opened),
        }
    };
    let socket = match opened {
        Some(Ok(Ok(socket))) => socket,
        Some(Ok(Err(error))) => {
            report.errors.push(format!("connect: {error}"));
            slot.set_state(State::Failed);
            return report;
        }
        Some(Err(_elapsed)) => {
            report.errors.push(format!("connect: no answer within {:?}", ctx.plan.connect_timeout));
            slot.set_state(State::Failed);
            return report;
        }
        None => {
            slot.set_state(State::Failed);
            return report;
        }
    };
    report.opened = true;
    slot.set_state(State::Open);
    if index < ctx.plan.senders {
        send(socket, &ctx, index, &mut report).await;
    } else {
        receive(socket, &ctx, index, &mut report).await;
    }
    slot.set_state(State::Ended);
    report
}

/// Why a socket could not be opened.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error(transparent)]
    Handshake(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("the relay sent no welcome first ({0})")]
    NoWelcome(String),
    #[error("the relay did not let it join {room} ({why})")]
    NotJoined { room: String, why: String },
}

/// The name every v1 connection goes by (the `name` parameter of its URL): one name for the
/// whole crowd, so that presence changes once, not with each sender's first message.
const NAME: &str = "wschat-load";

/// Opens connection `index`'s socket and, for v1, waits for the relay's welcome (with rooms, a
/// refusal of the lobby will do: a crowd of load connections may fill it) and joins its room.
async fn open(plan: &Plan, index: usize) -> Result<Socket, OpenError> {
    let url = plan.url_of(index);
    let url = match plan.protocol {
        Protocol::V1 => {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!("{url}{separator}name={NAME}")
        }
        Protocol::Tutorial => url.to_owned(),
    };
    let mut request = url.as_str().into_client_request()?;
    if plan.protocol == Protocol::V1 {
        request
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    }
    if let Some(origin) = &plan.origin {
        let origin = HeaderValue::from_str(origin)
            .expect("Plan::check lets only visible ASCII through, always a valid header value");
        request.headers_mut().insert(header::ORIGIN, origin);
    }
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    // No Nagle: a lone message must not wait for the previous one's acknowledgement.
    let (mut socket, _response) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
    if plan.protocol == Protocol::Tutorial {
        return Ok(socket);
    }
    match next_frame(&mut socket).await.map_err(OpenError::NoWelcome)? {
        ServerFrame::Welcome { .. } => {}
        ServerFrame::Error { room: Some(room), .. } if plan.rooms.is_some() && room == LOBBY => {}
        other => return Err(OpenError::NoWelcome(format!("got {other:?}"))),
    }
    if plan.rooms.is_some() {
        let room = plan.room(index);
        let join = ClientFrame::Join { room: room.clone(), after: None };
        socket.send(Message::text(join.to_json())).await?;
        // Joined once `joined` arrives: every message of the room after it reaches this socket.
        loop {
            match next_frame(&mut socket).await {
                Ok(ServerFrame::Joined { .. }) => break,
                Ok(ServerFrame::Error { error, .. }) => {
                    return Err(OpenError::NotJoined { room, why: error.code.as_str().into() })
                }
                Ok(_) => {}
                Err(why) => return Err(OpenError::NotJoined { room, why }),
            }
        }
    }
    Ok(socket)
}

/// The next v1 frame while opening, or what ended the wait.
async fn next_frame(socket: &mut Socket) -> Result<ServerFrame, String> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                return ServerFrame::from_json(text.as_str())
                    .map_err(|_| format!("got {}", text.as_str()))
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(format!(
                    "closed with {}",
                    frame.map_or(1005, |frame| u16::from(frame.code))
                ))
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error.to_string()),
            None => return Err("the connection ended".into()),
        }
    }
}

/// A received frame that carries no stamp of this run.
enum Unstamped {
    /// A v1 ack; `id` when it is one of this run's messages.
    Ack(Option<MessageId>),
    /// An error frame, by code; `id` when it names one of this run's messages.
    Error(&'static str, Option<MessageId>),
    /// A chat message from someone else, a welcome, a history answer, a pong.
    Other,
    /// About the rooms (presence, joins, typing): not counted.
    Room,
    /// Nothing either protocol knows.
    Unknown,
}

fn classify(text: &str, protocol: Protocol, run: RunId) -> Unstamped {
    match protocol {
        Protocol::V1 => match ServerFrame::from_json(text) {
            Ok(ServerFrame::Ack { id, .. }) => Unstamped::Ack(MessageId::parse(&id, run)),
            Ok(ServerFrame::Error { error, id, .. }) => {
                Unstamped::Error(error.code.as_str(), id.and_then(|id| MessageId::parse(&id, run)))
            }
            Ok(
                ServerFrame::Presence { .. }
                | ServerFrame::Joined { .. }
                | ServerFrame::Left { .. }
                | ServerFrame::Rooms { .. }
                | ServerFrame::Typing { .. }
                // The first history page after a join.
                | ServerFrame::History { request_id: 0, .. },
            ) => Unstamped::Room,
            Ok(_) => Unstamped::Other,
            Err(_) => Unstamped::Unknown,
        },
        Protocol::Tutorial => match RelayFrame::from_json(text) {
            Ok(RelayFrame::Error { error }) => Unstamped::Error(error.code.as_str(), None),
            Ok(_) => Unstamped::Other,
            Err(_) => Unstamped::Unknown,
        },
    }
}

/// A receiver: counts and times this run's measured messages until the run stops.
async fn receive(mut socket: Socket, ctx: &Context, index: usize, report: &mut ConnectionReport) {
    let slot = &ctx.slots[index];
    let mut latencies = LatencyBatch::new(&ctx.latency, index);
    let mut seen_probe = false;
    // Made once: a fresh `cancelled()` per frame would register a waiter per frame.
    let stop = ctx.stop.cancelled();
    tokio::pin!(stop);
    loop {
        // The socket first: `stop` is only polled when no frame is waiting, not once per frame.
        let frame = tokio::select! {
            biased;
            frame = socket.next() => frame,
            () = &mut stop => break,
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => return report.closed(frame.as_ref(), &ctx.stop),
            Some(Ok(_)) => continue,
            Some(Err(error)) => return report.errors.push(format!("receive: {error}")),
            None => {
                return report.errors.push("receive: the connection ended without a close".into())
            }
        };
        match Stamp::find(text.as_str(), ctx.run) {
            Found::Ours(Stamp { kind: Kind::Measured, sent_at }) => {
                let now = ctx.clock.micros();
                report.deliveries += 1;
                report.last_delivery_us = now;
                slot.deliveries.store(report.deliveries, Relaxed);
                latencies.record(now.saturating_sub(sent_at));
            }
            Found::Ours(Stamp { kind: Kind::Probe, .. }) => {
                if !seen_probe {
                    seen_probe = true;
                    ctx.probes_seen.fetch_add(1, Relaxed);
                }
            }
            Found::Foreign => report.foreign += 1,
            Found::None => match classify(text.as_str(), ctx.plan.protocol, ctx.run) {
                Unstamped::Error(code, _) => report.errors.push(format!("error frame: {code}")),
                Unstamped::Unknown => report.errors.push("unrecognised frame".into()),
                Unstamped::Ack(_) | Unstamped::Other => report.foreign += 1,
                Unstamped::Room => {}
            },
        }
    }
    close(&mut socket).await;
}

/// Closes politely: a close frame, then the relay's answer (or a short wait for it).
async fn close(socket: &mut Socket) {
    // The relay may already be gone; nothing to report at the end of a run.
    let _ = socket.close(None).await;
    let _ = tokio::time::timeout(CLOSE_PATIENCE, async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}

/// Send times of a v1 sender's messages in flight, by number modulo the window: an ack finds its
/// message's send time here (the window guarantees the slot was not reused yet).
type InFlight = Arc<[AtomicU64]>;

/// A sender: a reader task for acks and others' messages, and this task writing on schedule.
async fn send(socket: Socket, ctx: &Arc<Context>, index: usize, report: &mut ConnectionReport) {
    let (mut sink, stream) = socket.split();
    let window = Arc::new(Semaphore::new(ctx.plan.window));
    let in_flight: InFlight = (0..ctx.plan.window).map(|_| AtomicU64::new(0)).collect();
    let mut reader = tokio::spawn(read_as_sender(
        stream,
        Arc::clone(ctx),
        index,
        Arc::clone(&window),
        Arc::clone(&in_flight),
    ));
    let written = write_messages(&mut sink, ctx, index, &window, &in_flight, report).await;
    ctx.slots[index].done_sending.store(true, Relaxed);
    if let Err(error) = written {
        report.errors.push(format!("send: {error}"));
    }
    ctx.stop.cancelled().await;
    // The relay may already have closed the connection.
    let _ = sink.close().await;
    match tokio::time::timeout(CLOSE_PATIENCE, &mut reader).await {
        Ok(Ok(read)) => report.merge(read),
        Ok(Err(join_error)) => report.errors.push(format!("sender's reader: {join_error}")),
        Err(_elapsed) => reader.abort(),
    }
}

type Sink = SplitSink<Socket, Message>;

/// Waits for the sending phase (probing first if this sender is chosen), then sends this
/// sender's share of the messages on schedule.
async fn write_messages(
    sink: &mut Sink,
    ctx: &Context,
    index: usize,
    window: &Semaphore,
    in_flight: &InFlight,
    report: &mut ConnectionReport,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let plan = &ctx.plan;
    let room = plan.room(index);
    let source = format!("load-{index}");
    let template = FrameTemplate::new(plan.protocol, ctx.run, &room, &source, plan.message_bytes);
    let sender = u16::try_from(index).unwrap_or(u16::MAX);
    let id = |counter: u64, probe: bool| match plan.protocol {
        Protocol::V1 => Some(MessageId { sender, probe, counter }),
        Protocol::Tutorial => None,
    };
    let mut phase = ctx.phase.subscribe();
    let current = tokio::select! {
        biased;
        () = ctx.stop.cancelled() => return Ok(()),
        changed = phase.wait_for(|phase| *phase != Phase::Connecting) => match changed {
            Ok(phase) => *phase,
            Err(_closed) => return Ok(()),
        },
    };
    let start_us = match current {
        Phase::Sending { start_us } => start_us,
        Phase::Connecting | Phase::Probing => {
            if current == Phase::Probing && !ctx.prober_chosen.swap(true, Relaxed) {
                let probed = probe(sink, ctx, &template, &id).await;
                // Done either way: a failed probe must not keep the run waiting.
                ctx.probing_done.store(true, Relaxed);
                probed?;
            }
            let sending = tokio::select! {
                biased;
                () = ctx.stop.cancelled() => return Ok(()),
                sending = phase.wait_for(|phase| matches!(phase, Phase::Sending { .. })) => sending,
            };
            match sending.as_deref() {
                Ok(&Phase::Sending { start_us }) => start_us,
                _ => return Ok(()),
            }
        }
    };

    let start = ctx.clock.instant(start_us);
    let deadline = plan.send_for().map(|duration| start + duration);
    let quota = plan.quota(index).unwrap_or(u64::MAX);
    let slot = &ctx.slots[index];
    let stop = ctx.stop.cancelled();
    tokio::pin!(stop);
    let mut unflushed = 0;
    let mut counter = 0_u64;
    while counter < quota && !ctx.stop.is_cancelled() {
        if plan.rate > 0.0 {
            let offset = (counter * plan.senders as u64 + index as u64) as f64 / plan.rate;
            let due = start + Duration::from_secs_f64(offset);
            if deadline.is_some_and(|deadline| due >= deadline) {
                break;
            }
            tokio::select! {
                biased;
                () = &mut stop => break,
                () = tokio::time::sleep_until(due.into()) => {}
            }
        } else if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            break;
        }
        if plan.protocol == Protocol::V1 {
            match window.try_acquire() {
                Ok(permit) => permit.forget(),
                Err(_) => {
                    // Full: what is buffered must go out, or no ack would ever come.
                    if unflushed > 0 {
                        sink.flush().await?;
                        unflushed = 0;
                    }
                    let expired = async {
                        match deadline {
                            Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        biased;
                        () = &mut stop => break,
                        () = expired => break,
                        // Closed when the connection has ended: no ack will come.
                        permit = window.acquire() => match permit {
                            Ok(permit) => permit.forget(),
                            Err(_closed) => break,
                        },
                    }
                }
            }
        }
        let now = ctx.clock.micros();
        in_flight[(counter % in_flight.len() as u64) as usize].store(now, Relaxed);
        let text =
            template.render(Stamp { kind: Kind::Measured, sent_at: now }, id(counter, false));
        sink.feed(Message::text(text)).await?;
        counter += 1;
        report.sent = counter;
        report.last_send_us = now;
        slot.sent.store(counter, Relaxed);
        unflushed += 1;
        if plan.rate > 0.0 || unflushed == SEND_BATCH {
            sink.flush().await?;
            unflushed = 0;
        }
    }
    sink.flush().await
}

/// Sends probes until every receiver has seen one (or `PROBE_PATIENCE` runs out).
async fn probe(
    sink: &mut Sink,
    ctx: &Context,
    template: &FrameTemplate,
    id: &impl Fn(u64, bool) -> Option<MessageId>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let receivers = ctx.receivers_held.load(Relaxed);
    let give_up = Instant::now() + PROBE_PATIENCE;
    let mut counter = 0;
    while ctx.probes_seen.load(Relaxed) < receivers && !ctx.stop.is_cancelled() {
        if Instant::now() >= give_up {
            ctx.note(format!(
                "only {} of {receivers} receivers saw a probe message within {PROBE_PATIENCE:?}; \
                 the others may miss the first messages",
                ctx.probes_seen.load(Relaxed)
            ));
            break;
        }
        let stamp = Stamp { kind: Kind::Probe, sent_at: ctx.clock.micros() };
        sink.send(Message::text(template.render(stamp, id(counter, true)))).await?;
        counter += 1;
        let next = Instant::now() + PROBE_EVERY;
        while ctx.probes_seen.load(Relaxed) < receivers && Instant::now() < next {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    Ok(())
}

/// A sender's reader: acks (v1) free the window and are timed; others' messages are skipped.
async fn read_as_sender(
    mut stream: SplitStream<Socket>,
    ctx: Arc<Context>,
    index: usize,
    window: Arc<Semaphore>,
    in_flight: InFlight,
) -> ConnectionReport {
    let mut report = ConnectionReport::default();
    let slot = &ctx.slots[index];
    let mut latencies = LatencyBatch::new(&ctx.ack_latency, index);
    let ours = |id: &MessageId| usize::from(id.sender) == index && !id.probe;
    while let Some(frame) = stream.next().await {
        let text = match frame {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(frame)) => {
                report.closed(frame.as_ref(), &ctx.stop);
                break;
            }
            Ok(_) => continue,
            Err(error) => {
                if !ctx.stop.is_cancelled() {
                    report.errors.push(format!("receive: {error}"));
                }
                break;
            }
        };
        match Stamp::find(text.as_str(), ctx.run) {
            // Other senders' messages and probes: receivers count those.
            Found::Ours(_) => {}
            Found::Foreign => report.foreign += 1,
            Found::None => match classify(text.as_str(), ctx.plan.protocol, ctx.run) {
                Unstamped::Ack(Some(id)) if ours(&id) => {
                    let now = ctx.clock.micros();
                    report.acks += 1;
                    report.last_ack_us = now;
                    slot.acks.store(report.acks, Relaxed);
                    let sent_at =
                        in_flight[(id.counter % in_flight.len() as u64) as usize].load(Relaxed);
                    latencies.record(now.saturating_sub(sent_at));
                    window.add_permits(1);
                }
                Unstamped::Ack(_) | Unstamped::Other | Unstamped::Room => {}
                Unstamped::Error(code, id) => {
                    report.errors.push(format!("error frame: {code}"));
                    if id.is_some_and(|id| ours(&id)) {
                        // Refused, so never acked: its place in the window is free again.
                        window.add_permits(1);
                    }
                }
                Unstamped::Unknown => report.errors.push("unrecognised frame".into()),
            },
        }
    }
    // The connection is over: the writer must not wait for acks, nor the monitor for its sends.
    window.close();
    slot.set_state(State::Ended);
    report
}
