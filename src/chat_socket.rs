//! The chat socket as a reactive service, in the spirit of leptos-use's `use_websocket`.
//!
//! [`provide_chat_socket`] starts it once, at the root, and provides a [`ChatSocket`] through
//! context: read-only signals for the connection state, the outbox (the "Sent" list), the received
//! conversation and the last problem, plus handles to send, retry, reconnect and close.
//!
//! One task owns the gloo-net socket for the service's whole life and speaks protocol v1
//! (`wschat.v1`): it reconnects with back-off after any loss, flushes the outbox in order once
//! open, asks for exactly the messages it missed, and pings with a deadline so a half-open
//! connection (after a laptop sleeps) is noticed and replaced. No component touches gloo-net.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use futures::channel::mpsc::{self, UnboundedReceiver, UnboundedSender};
use futures::channel::oneshot;
use futures::{future, FutureExt, Sink, SinkExt, StreamExt};
use gloo_net::websocket::futures::WebSocket;
use gloo_net::websocket::{Message, State, WebSocketError};
use gloo_timers::future::TimeoutFuture;
use leptos::prelude::*;
use wschat_protocol::limits::MessageLimits;
use wschat_protocol::v1::{ClientFrame, ServerFrame, SUBPROTOCOL};

pub use crate::connection::ConnectionState;
use crate::connection::{ConnectionMachine, Next};
use crate::conversation::Conversation;
use crate::outbox::{Outbox, OutboxFull, OutgoingMessage};
use crate::reconnect::ReconnectPolicy;

/// Why [`ChatSocket::send`] did not take a message; the user's text is left where it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The message is empty or only whitespace.
    #[error("there is nothing to send")]
    Blank,
    /// The message breaks the relay's rules (too long, control characters); the reason says which.
    #[error("{0}")]
    NotAcceptable(String),
    /// Too many messages are waiting to be delivered.
    #[error("{0}: your message is still in the box; it can be sent once the others are delivered")]
    OutboxFull(#[from] OutboxFull),
}

/// Why a [`ChatSocket::request`] got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No reply within the request timeout.
    #[error("the relay did not answer in time")]
    Timeout,
    /// The connection closed (or was not open) before the reply came.
    #[error("not connected to the relay")]
    Disconnected,
}

/// A request that expects one reply; [`ChatSocket::request`] assigns its correlation id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The stored messages after `after_seq`; answered by [`ServerFrame::History`].
    History {
        /// The last seq the caller already has.
        after_seq: u64,
    },
    /// A ping; answered by [`ServerFrame::Pong`].
    Ping,
}

/// How to run the chat socket. [`Default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatSocketOptions {
    /// The relay's socket URL. Default: the page's own origin at `/ws`, or `?relay=`
    /// (see [`crate::relay_url`]).
    pub url: String,
    /// The display name put on every message as `source`. Default: the name saved in
    /// localStorage, else `guest-` and four random digits.
    pub source: String,
    /// When to retry after a lost connection. Default: 0.5 s doubling to 30 s, with full jitter.
    pub reconnect: ReconnectPolicy,
    /// Time between heartbeat pings. Default 15 s.
    pub heartbeat_interval: Duration,
    /// How long a ping (and any [`ChatSocket::request`]) may wait for its answer before the
    /// socket is declared dead. Default 10 s.
    pub reply_timeout: Duration,
    /// The localStorage key the outbox is kept under (plus this tab's id), so a reload loses
    /// nothing; `None` keeps it in memory only. Default `Some("wschat.outbox")`.
    pub storage_key: Option<String>,
}

impl Default for ChatSocketOptions {
    fn default() -> Self {
        Self {
            url: crate::relay_url::for_current_page(),
            source: saved_name().unwrap_or_else(guest_name),
            reconnect: ReconnectPolicy::default(),
            heartbeat_interval: Duration::from_secs(15),
            reply_timeout: Duration::from_secs(10),
            storage_key: Some("wschat.outbox".to_owned()),
        }
    }
}

impl ChatSocketOptions {
    /// Options for `url` with the given name, no persistence, and otherwise the defaults.
    #[must_use]
    pub fn new(url: impl Into<String>, source: impl Into<String>) -> Self {
        Self { url: url.into(), source: source.into(), storage_key: None, ..Self::default() }
    }
}

/// The localStorage key of the display name.
const NAME_KEY: &str = "wschat.name";
/// Delivered messages kept in the outbox (and so in the "Sent" list) across reloads.
const DELIVERED_KEPT: usize = 200;

fn local_storage() -> Option<web_sys::Storage> {
    window().local_storage().ok().flatten()
}

fn saved_name() -> Option<String> {
    local_storage()?.get_item(NAME_KEY).ok().flatten().filter(|name| !name.trim().is_empty())
}

/// A name for a tab whose user picked none: `guest-` and four random digits, which tell a handful
/// of tabs apart. Kept in sessionStorage, so a reload keeps it but each tab has its own.
fn guest_name() -> String {
    const GUEST_KEY: &str = "wschat.guest";
    let session = window().session_storage().ok().flatten();
    if let Some(name) =
        session.as_ref().and_then(|storage| storage.get_item(GUEST_KEY).ok().flatten())
    {
        return name;
    }
    let number = (js_sys::Math::random() * 10_000.0) as u32;
    let name = format!("guest-{number:04}");
    if let Some(storage) = session {
        // Without sessionStorage a reload only picks a new guest name.
        let _ = storage.set_item(GUEST_KEY, &name);
    }
    name
}

/// A random (version 4) UUID for a new message, from the browser's cryptographic generator.
fn new_message_id() -> String {
    let mut bytes = [0u8; 16];
    let crypto = window().crypto().expect("every browser that runs wasm has window.crypto");
    crypto
        .get_random_values_with_u8_array(&mut bytes)
        .expect("16 bytes is far below getRandomValues' 65536-byte limit");
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

/// What the socket task is asked to do.
enum Command {
    /// New messages are in the outbox: send them if open.
    Flush,
    /// Send a request and route its reply to `reply`.
    Request(Request, oneshot::Sender<Result<ServerFrame, RequestError>>),
    /// The user asks to reconnect now (after a loss, a give-up or a close).
    ReconnectNow,
    /// The browser came back online or the tab became visible: a pending retry starts now and an
    /// open socket is checked with a ping. A socket the user closed stays closed.
    Hurry,
    /// Close the socket with 1000 and stay closed until [`Command::ReconnectNow`].
    Close,
}

/// The chat socket service: cheap to copy, the same for every component that asks for it.
#[derive(Debug, Clone, Copy)]
pub struct ChatSocket {
    /// The connection state.
    pub state: ReadSignal<ConnectionState>,
    /// Every message this tab sent, with how far its delivery got (the "Sent" list).
    pub outbox: ReadSignal<Outbox>,
    /// Every message received from others, once each, in order.
    pub received: ReadSignal<Conversation>,
    /// The last problem worth telling the user, until things are well again.
    pub last_error: ReadSignal<Option<String>>,
    /// The name this tab's messages are sent under.
    pub source: ReadSignal<String>,
    set_source: WriteSignal<String>,
    set_outbox: WriteSignal<Outbox>,
    reply_timeout: StoredValue<Duration>,
    storage_key: StoredValue<Option<String>>,
    commands: StoredValue<UnboundedSender<Command>>,
}

impl ChatSocket {
    /// Starts the service; the socket closes and its listeners go when the current reactive owner
    /// is cleaned up.
    #[must_use]
    pub fn open(options: ChatSocketOptions) -> Self {
        let storage_key = options.storage_key.as_deref().map(tab_storage_key);
        let outbox = storage_key.as_deref().and_then(load_outbox).unwrap_or_default();
        let (state, set_state) = signal(ConnectionState::Connecting);
        let (outbox, set_outbox) = signal(outbox);
        let (received, set_received) = signal(Conversation::default());
        let (last_error, set_last_error) = signal(None);
        let (source, set_source) = signal(options.source.clone());
        let (commands, command_receiver) = mpsc::unbounded();
        let socket = Self {
            state,
            outbox,
            received,
            last_error,
            source,
            set_source,
            set_outbox,
            reply_timeout: StoredValue::new(options.reply_timeout),
            storage_key: StoredValue::new(storage_key),
            commands: StoredValue::new(commands.clone()),
        };
        let task = SocketTask {
            options,
            commands: command_receiver,
            service: socket,
            set_state,
            set_received,
            set_last_error,
            pending: HashMap::new(),
            next_request_id: 1,
        };
        // A browser task of its own, independent of any reactive executor.
        wasm_bindgen_futures::spawn_local(task.run());

        // Coming back online or to a visible tab is the moment to retry, not when the timer says.
        let retry = commands.clone();
        let online = window_event_listener_untyped("online", move |_| {
            // Fails only once the task has ended, and then there is nothing to reconnect.
            let _ = retry.unbounded_send(Command::Hurry);
        });
        let retry = commands.clone();
        let visible = window_event_listener_untyped("visibilitychange", move |_| {
            if document().visibility_state() == web_sys::VisibilityState::Visible {
                let _ = retry.unbounded_send(Command::Hurry);
            }
        });
        on_cleanup(move || {
            online.remove();
            visible.remove();
            // Dropping the last sender ends the task, which closes the socket with 1000.
            commands.close_channel();
        });
        socket
    }

    /// Queues `content` as a message under this tab's name and lists it under "Sent": sent at
    /// once when open, otherwise as soon as the connection is back. Kept across reloads.
    ///
    /// # Errors
    /// [`SendError::Blank`] for an empty or whitespace-only message,
    /// [`SendError::NotAcceptable`] for one the relay would refuse (too long, control
    /// characters), [`SendError::OutboxFull`] when too many messages are waiting. Nothing is queued then, so the caller keeps the text.
    pub fn send(&self, content: &str) -> Result<(), SendError> {
        if content.trim().is_empty() {
            return Err(SendError::Blank);
        }
        let source = self.source.get_untracked();
        // The relay's default limits, checked here so the user can fix the text before it goes
        // anywhere (the relay checks again, with its own configuration).
        MessageLimits::default()
            .check(&source, content)
            .map_err(|error| SendError::NotAcceptable(error.message))?;
        let message =
            OutgoingMessage::new(new_message_id(), source, content, js_sys::Date::now() as u64);
        let mut queued = Ok(());
        self.set_outbox.update(|outbox| queued = outbox.push(message));
        queued?;
        self.save_outbox();
        self.command(Command::Flush);
        Ok(())
    }

    /// Sends a failed message again.
    pub fn retry(&self, id: &str) {
        let mut retried = false;
        self.set_outbox.update(|outbox| retried = outbox.retry(id));
        if retried {
            self.save_outbox();
            self.command(Command::Flush);
        }
    }

    /// Reconnects at once (after a loss, a give-up or a close), without waiting out the back-off.
    pub fn reconnect_now(&self) {
        self.command(Command::ReconnectNow);
    }

    /// Closes the socket (code 1000); the state becomes [`ConnectionState::Closed`]. Messages sent
    /// meanwhile wait in the outbox.
    pub fn close(&self) {
        self.command(Command::Close);
    }

    /// Changes the display name for messages sent from now on, and remembers it.
    pub fn set_source(&self, name: &str) {
        let name = name.trim();
        if name.is_empty() {
            return;
        }
        self.set_source.set(name.to_owned());
        if let Some(storage) = local_storage() {
            // A full or disabled storage only means the name is not remembered.
            let _ = storage.set_item(NAME_KEY, name);
        }
    }

    /// Sends a request and waits for its reply, correlated by a request id.
    ///
    /// # Errors
    /// [`RequestError::Timeout`] when no reply comes within the reply timeout,
    /// [`RequestError::Disconnected`] when the connection is not open or closes first.
    pub async fn request(&self, request: Request) -> Result<ServerFrame, RequestError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Request(request, reply));
        let timeout = self.reply_timeout.get_value();
        let timer = TimeoutFuture::new(u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX));
        futures::select! {
            answer = answer.fuse() => answer.unwrap_or(Err(RequestError::Disconnected)),
            () = timer.fuse() => Err(RequestError::Timeout),
        }
    }

    fn command(&self, command: Command) {
        // Fails only once the task has ended (the owner was cleaned up): nothing left to do.
        let _ = self.commands.with_value(|commands| commands.unbounded_send(command));
    }

    fn save_outbox(&self) {
        if let Some(key) = self.storage_key.get_value() {
            self.set_outbox.update(|outbox| {
                outbox.prune_delivered(DELIVERED_KEPT);
            });
            save_outbox(&key, &self.outbox.get_untracked());
        }
    }
}

/// The outbox's localStorage key for this tab: `base` plus an id kept in sessionStorage, which
/// survives a reload but belongs to one tab, so two tabs never share (and clobber) an outbox.
fn tab_storage_key(base: &str) -> String {
    const TAB_KEY: &str = "wschat.tab";
    let session = window().session_storage().ok().flatten();
    let saved = session.as_ref().and_then(|storage| storage.get_item(TAB_KEY).ok().flatten());
    let tab = saved.unwrap_or_else(|| {
        let tab = new_message_id();
        if let Some(storage) = &session {
            // Without sessionStorage the outbox survives no reload, but still works.
            let _ = storage.set_item(TAB_KEY, &tab);
        }
        tab
    });
    format!("{base}.{tab}")
}

fn load_outbox(key: &str) -> Option<Outbox> {
    let text = local_storage()?.get_item(key).ok().flatten()?;
    match Outbox::from_json(&text) {
        Ok(outbox) => Some(outbox),
        Err(error) => {
            leptos::logging::warn!("wschat: ignoring an unreadable saved outbox: {error}");
            None
        }
    }
}

fn save_outbox(key: &str, outbox: &Outbox) {
    let saved = local_storage().map(|storage| storage.set_item(key, &outbox.to_json()));
    if !matches!(saved, Some(Ok(()))) {
        leptos::logging::warn!("wschat: cannot save the outbox; unsent messages survive no reload");
    }
}

/// Opens a [`ChatSocket`] and provides it to every component below the current owner.
pub fn provide_chat_socket(options: ChatSocketOptions) -> ChatSocket {
    let socket = ChatSocket::open(options);
    provide_context(socket);
    socket
}

/// The [`ChatSocket`] provided at the root.
///
/// # Panics
/// When no ancestor called [`provide_chat_socket`]: a wiring mistake, not a runtime condition.
#[must_use]
pub fn expect_chat_socket() -> ChatSocket {
    expect_context::<ChatSocket>()
}

/// How one connection ended.
enum Ended {
    /// Lost: the relay went away, the network failed, or the heartbeat went unanswered.
    Lost(String),
    /// Closed on purpose ([`ChatSocket::close`]).
    Closed,
    /// The service is gone (its owner was cleaned up).
    Dropped,
}

/// One event a connection reacts to.
enum Event {
    Opened,
    Frame(Option<Result<Message, WebSocketError>>),
    Command(Option<Command>),
    Heartbeat,
}

/// The task that owns the socket: connects, reconnects, and keeps the signals up to date.
struct SocketTask {
    options: ChatSocketOptions,
    commands: UnboundedReceiver<Command>,
    service: ChatSocket,
    set_state: WriteSignal<ConnectionState>,
    set_received: WriteSignal<Conversation>,
    set_last_error: WriteSignal<Option<String>>,
    /// Replies awaited by [`ChatSocket::request`], by request id.
    pending: HashMap<u64, oneshot::Sender<Result<ServerFrame, RequestError>>>,
    next_request_id: u64,
}

impl SocketTask {
    async fn run(mut self) {
        let mut machine = ConnectionMachine::new(self.options.reconnect.clone());
        loop {
            let ended = self.connect(&mut machine).await;
            // Requests in flight will get no reply on this connection.
            self.pending.clear();
            self.service.set_outbox.update(|outbox| {
                outbox.on_disconnect();
            });
            let next = match ended {
                Ended::Dropped => return,
                Ended::Closed => machine.closed_by_user(),
                Ended::Lost(reason) => {
                    self.set_last_error.set(Some(reason.clone()));
                    machine.lost(reason, js_sys::Date::now(), js_sys::Math::random())
                }
            };
            self.publish(&machine);
            if !self.wait_to_reconnect(&mut machine, next).await {
                return;
            }
            self.publish(&machine);
        }
    }

    fn publish(&self, machine: &ConnectionMachine) {
        self.set_state.set(machine.state().clone());
    }

    /// Waits until the next attempt is due (or, with [`Next::WaitForUser`], for the user), unless
    /// told to reconnect now. Returns false when the service is gone.
    async fn wait_to_reconnect(&mut self, machine: &mut ConnectionMachine, next: Next) -> bool {
        let mut retry_at = match next {
            Next::RetryAt(at) => Some(at),
            Next::WaitForUser => None,
        };
        loop {
            let timer = match retry_at {
                Some(at) => {
                    let wait = (at - js_sys::Date::now()).max(0.0) as u32;
                    TimeoutFuture::new(wait).left_future()
                }
                None => future::pending().right_future(),
            };
            futures::select! {
                () = timer.fuse() => return true,
                command = self.commands.next() => match command {
                    None => return false,
                    Some(Command::ReconnectNow) => {
                        if machine.reconnect_now() {
                            return true;
                        }
                    }
                    Some(Command::Hurry) => {
                        if machine.hurry() {
                            return true;
                        }
                    }
                    Some(Command::Request(_, reply)) => {
                        // Nobody is listening for the reply if the receiver is gone already.
                        let _ = reply.send(Err(RequestError::Disconnected));
                    }
                    // The outbox keeps the messages until the connection is back.
                    Some(Command::Flush) => {}
                    Some(Command::Close) => {
                        retry_at = None;
                        machine.closed_by_user();
                        self.publish(machine);
                    }
                },
            }
        }
    }

    /// One connection, from opening to its end.
    async fn connect(&mut self, machine: &mut ConnectionMachine) -> Ended {
        let url = self.options.url.clone();
        let mut socket = match WebSocket::open_with_protocol(&url, SUBPROTOCOL) {
            Ok(socket) => socket,
            Err(error) => return Ended::Lost(format!("Cannot open a socket to {url}: {error}")),
        };
        let mut opened = false;
        let mut welcomed = false;
        let heartbeat_ms = millis(self.options.heartbeat_interval);
        let deadline_ms = millis(self.options.reply_timeout);
        let mut next_ping = js_sys::Date::now() + heartbeat_ms;
        // The id of the unanswered heartbeat ping, and when it is due to be answered.
        let mut awaited_pong: Option<(u64, f64)> = None;
        loop {
            let wake_at = awaited_pong.map_or(next_ping, |(_, due)| due.min(next_ping));
            let wait = (wake_at - js_sys::Date::now()).max(0.0) as u32;
            let mut timer = TimeoutFuture::new(wait);
            // One poll over everything the connection waits for. gloo-net has no open event: its
            // sink turns ready when the socket opens. (Not split: a `SplitSink` reports ready at
            // once, without asking the socket, which would claim "open" during the handshake.)
            let event = future::poll_fn(|cx| {
                if let Poll::Ready(command) = self.commands.poll_next_unpin(cx) {
                    return Poll::Ready(Event::Command(command));
                }
                // Ready also means "closed" (a failed handshake): only an open socket counts.
                if !opened
                    && Pin::new(&mut socket).poll_ready(cx).is_ready()
                    && matches!(socket.state(), State::Open)
                {
                    return Poll::Ready(Event::Opened);
                }
                if let Poll::Ready(frame) = socket.poll_next_unpin(cx) {
                    return Poll::Ready(Event::Frame(frame));
                }
                if opened && timer.poll_unpin(cx).is_ready() {
                    return Poll::Ready(Event::Heartbeat);
                }
                Poll::Pending
            })
            .await;
            match event {
                Event::Opened => opened = true,
                Event::Frame(Some(Ok(Message::Text(text)))) => {
                    match ServerFrame::from_json(&text) {
                        Ok(ServerFrame::Welcome { epoch, .. }) => {
                            welcomed = true;
                            machine.welcomed(js_sys::Date::now());
                            self.publish(machine);
                            let mut after_seq = 0;
                            self.set_received
                                .update(|received| after_seq = received.welcome(&epoch));
                            self.set_last_error.set(None);
                            // Catch up first, then send what waited: the relay answers in order.
                            let request_id = self.request_id();
                            let resync = ClientFrame::History { request_id, after_seq };
                            if let Err(ended) = send(&mut socket, &resync).await {
                                return ended;
                            }
                            if let Err(ended) = self.flush(&mut socket).await {
                                return ended;
                            }
                        }
                        Ok(frame) => {
                            if let Some((id, _)) = awaited_pong {
                                if frame == (ServerFrame::Pong { request_id: id }) {
                                    awaited_pong = None;
                                    continue;
                                }
                            }
                            self.handle(frame);
                        }
                        Err(error) => {
                            leptos::logging::warn!(
                                "wschat: ignoring a frame from the relay: {error}"
                            );
                        }
                    }
                }
                Event::Frame(Some(Ok(Message::Bytes(_)))) => {
                    leptos::logging::warn!("wschat: ignoring a binary frame from the relay");
                }
                // An error event always precedes the close event that follows it.
                Event::Frame(Some(Err(WebSocketError::ConnectionError))) => {}
                Event::Frame(Some(Err(WebSocketError::ConnectionClose(close)))) => {
                    let why = if close.reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", close.reason)
                    };
                    let what =
                        if opened { "Lost the connection" } else { "Cannot reach the relay" };
                    return Ended::Lost(format!("{what} (code {}{why})", close.code));
                }
                Event::Frame(Some(Err(error))) => {
                    return Ended::Lost(format!("Socket error: {error}"))
                }
                Event::Frame(None) => return Ended::Lost("The connection closed".to_owned()),
                Event::Command(None) => {
                    // Only fails for an invalid code or an over-long reason, and these are valid.
                    let _ = socket.close(Some(1000), Some("page closed"));
                    return Ended::Dropped;
                }
                Event::Command(Some(Command::Close)) => {
                    let _ = socket.close(Some(1000), Some("closed by the user"));
                    return Ended::Closed;
                }
                // Already connecting (a second socket would only race this one) or connected; but
                // a tab coming back from sleep may hold a dead socket: check it with a ping now.
                Event::Command(Some(Command::ReconnectNow | Command::Hurry)) => {
                    next_ping = js_sys::Date::now();
                }
                Event::Command(Some(Command::Flush)) => {
                    if welcomed {
                        if let Err(ended) = self.flush(&mut socket).await {
                            return ended;
                        }
                    }
                }
                Event::Command(Some(Command::Request(request, reply))) => {
                    if !welcomed {
                        let _ = reply.send(Err(RequestError::Disconnected));
                        continue;
                    }
                    let request_id = self.request_id();
                    self.pending.insert(request_id, reply);
                    let frame = match request {
                        Request::History { after_seq } => {
                            ClientFrame::History { request_id, after_seq }
                        }
                        Request::Ping => ClientFrame::Ping { request_id },
                    };
                    if let Err(ended) = send(&mut socket, &frame).await {
                        return ended;
                    }
                }
                Event::Heartbeat => {
                    let now = js_sys::Date::now();
                    if let Some((_, due)) = awaited_pong {
                        if now >= due {
                            let _ = socket.close(Some(4000), Some("heartbeat timed out"));
                            return Ended::Lost(
                                "The relay stopped answering: reconnecting".to_owned(),
                            );
                        }
                    }
                    if now >= next_ping {
                        next_ping = now + heartbeat_ms;
                        if awaited_pong.is_none() {
                            let request_id = self.request_id();
                            awaited_pong = Some((request_id, now + deadline_ms));
                            if let Err(ended) =
                                send(&mut socket, &ClientFrame::Ping { request_id }).await
                            {
                                return ended;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Applies one frame from the relay (other than the welcome and heartbeat pongs).
    fn handle(&mut self, frame: ServerFrame) {
        let request_id = match &frame {
            ServerFrame::History { request_id, .. } | ServerFrame::Pong { request_id } => {
                Some(*request_id)
            }
            ServerFrame::Error { request_id, .. } => *request_id,
            _ => None,
        };
        match &frame {
            ServerFrame::Message(message) => self.receive(message.clone()),
            ServerFrame::Ack { id, seq, .. } => {
                self.service.set_outbox.update(|outbox| {
                    outbox.ack(id, *seq);
                });
                self.set_received.update(|received| received.observe(*seq));
                self.service.save_outbox();
            }
            ServerFrame::History { messages, complete, .. } => {
                if !complete {
                    self.set_received.update(Conversation::history_incomplete);
                }
                for message in messages {
                    self.receive(message.clone());
                }
            }
            ServerFrame::Error { error, id: Some(id), .. } => {
                self.service.set_outbox.update(|outbox| {
                    outbox.fail(id, error.message.clone());
                });
                self.service.save_outbox();
            }
            ServerFrame::Error { error, .. } => {
                self.set_last_error.set(Some(format!("The relay refused a request: {error}")));
            }
            ServerFrame::Welcome { .. } | ServerFrame::Pong { .. } => {}
        }
        if let Some(reply) = request_id.and_then(|id| self.pending.remove(&id)) {
            // The requester may have timed out and gone; then nobody needs the reply.
            let _ = reply.send(Ok(frame));
        }
    }

    /// A message from the relay: this tab's own (acked by its id) or one for the received list.
    fn receive(&mut self, message: wschat_protocol::v1::StoredMessage) {
        let mut own = false;
        self.service.set_outbox.update(|outbox| {
            own = outbox.get(&message.id).is_some();
            if own {
                outbox.ack(&message.id, message.seq);
            }
        });
        if own {
            self.set_received.update(|received| received.observe(message.seq));
            self.service.save_outbox();
            return;
        }
        let mine = message.source == self.service.source.get_untracked();
        self.set_received.update(|received| {
            received.insert(message, mine);
        });
    }

    /// Sends every pending outbox message, in order.
    async fn flush(&mut self, socket: &mut WebSocket) -> Result<(), Ended> {
        let waiting: Vec<_> = self.service.outbox.with_untracked(|outbox| {
            outbox
                .to_send()
                .map(|message| {
                    (message.id.clone(), message.source.clone(), message.content.clone())
                })
                .collect()
        });
        for (id, source, content) in waiting {
            send(socket, &ClientFrame::Message { id: id.clone(), source, content }).await?;
            self.service.set_outbox.update(|outbox| {
                outbox.mark_sent(&id);
            });
        }
        Ok(())
    }

    fn request_id(&mut self) -> u64 {
        let id = self.next_request_id;
        self.next_request_id += 1;
        id
    }
}

async fn send(socket: &mut WebSocket, frame: &ClientFrame) -> Result<(), Ended> {
    socket
        .send(Message::Text(frame.to_json()))
        .await
        .map_err(|error| Ended::Lost(format!("Sending failed: {error}")))
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
