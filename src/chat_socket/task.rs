//! The task that owns the socket: connects, reconnects, and moves frames between the socket and
//! the [`Session`], asking the feed to redraw.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use futures_core::Stream;
use futures_sink::Sink;
use gloo_net::websocket::futures::WebSocket;
use gloo_net::websocket::{Message, State, WebSocketError};
use leptos::prelude::*;
use wschat_protocol::v1::{ClientFrame, ServerFrame, LOBBY, SUBPROTOCOL};
use wschat_protocol::ErrorCode;

use super::inbox::Reply;
use super::timer::Timer;
use super::{ChatSocketOptions, Command, Request, RequestError, Shared};
use crate::connection::{ConnectionMachine, ConnectionState, Next};
use crate::heartbeat::{Beat, Heartbeat};
use crate::js_json::JsObject;
use crate::session::Problem;

/// How long messages the relay could not store wait before they are sent again.
const UNAVAILABLE_RETRY_MS: f64 = 2_000.0;

/// How one connection ended.
enum Ended {
    /// Lost: the relay went away, the network failed, or the heartbeat went unanswered.
    Lost(Problem),
    /// Closed on purpose ([`super::ChatSocket::close`]).
    Closed,
    /// The service is gone (its owner was cleaned up).
    Dropped,
}

/// One event a connection reacts to.
enum Event {
    Opened,
    Frame(Option<Result<Message, WebSocketError>>),
    Command(Option<Command>),
    Timer,
}

/// The task that owns the socket: connects, reconnects, and keeps the session and the signals
/// up to date.
pub(super) struct SocketTask {
    /// The relay, or several separated by commas, tried in turn: one after each lost connection.
    url: String,
    /// Connections lost so far, which picks the relay of the next attempt.
    lost: usize,
    options: ChatSocketOptions,
    shared: Rc<Shared>,
    set_state: WriteSignal<ConnectionState>,
    set_last_error: WriteSignal<Option<Problem>>,
    /// Replies awaited by [`super::ChatSocket::request`], by request id (a handful at most).
    pending: Vec<(u64, Reply<Result<ServerFrame, RequestError>>)>,
    next_request_id: u64,
}

impl SocketTask {
    pub(super) fn new(
        url: String,
        options: ChatSocketOptions,
        shared: Rc<Shared>,
        set_state: WriteSignal<ConnectionState>,
        set_last_error: WriteSignal<Option<Problem>>,
    ) -> Self {
        Self {
            url,
            lost: 0,
            options,
            shared,
            set_state,
            set_last_error,
            pending: Vec::new(),
            next_request_id: 1,
        }
    }

    pub(super) async fn run(mut self) {
        let mut machine = ConnectionMachine::new(self.options.reconnect.clone());
        loop {
            let ended = self.connect(&mut machine).await;
            // Requests in flight will get no reply on this connection, and what waited to go
            // with it is moot: the next welcome joins every room again.
            self.pending.clear();
            self.shared.control.borrow_mut().clear();
            self.shared.session.borrow_mut().disconnected();
            self.shared.schedule_sync();
            let next = match ended {
                Ended::Dropped => {
                    // The service is gone (the app was unmounted): what it left pending is up
                    // for adoption like a closed tab's.
                    if let Some(storage) = &self.shared.storage {
                        storage.release();
                    }
                    return;
                }
                Ended::Closed => machine.closed_by_user(),
                Ended::Lost(problem) => {
                    self.lost += 1;
                    let reason = problem.to_string();
                    let is_final = problem.is_final();
                    self.set_last_error.set(Some(problem));
                    if is_final {
                        machine.gave_up(reason)
                    } else {
                        machine.lost(reason, js_sys::Date::now(), js_sys::Math::random())
                    }
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
            let mut timer = retry_at.map(|at| Timer::new(wait_until(at)));
            // `None`: the retry is due.
            let command = poll_fn(|cx| {
                if let Poll::Ready(command) = self.shared.commands.poll_next(cx) {
                    return Poll::Ready(Some(command));
                }
                match timer.as_mut().map(|timer| Pin::new(timer).poll(cx)) {
                    Some(Poll::Ready(())) => Poll::Ready(None),
                    _ => Poll::Pending,
                }
            })
            .await;
            let Some(command) = command else { return true };
            match command {
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
                Some(Command::Request(_, reply)) => reply.send(Err(RequestError::Disconnected)),
                // The outbox keeps the messages until the connection is back.
                Some(Command::Flush) => {}
                Some(Command::Close) => {
                    retry_at = None;
                    machine.closed_by_user();
                    self.publish(machine);
                }
            }
        }
    }

    /// One connection, from opening to its end.
    async fn connect(&mut self, machine: &mut ConnectionMachine) -> Ended {
        // The name goes along, so that the others see who is in a room before they write.
        let relay = crate::relay_url::nth(&self.url, self.lost);
        let url = {
            let name = js_sys::encode_uri_component(&self.shared.session.borrow().source);
            let separator = if relay.contains('?') { '&' } else { '?' };
            format!("{relay}{separator}name={name}")
        };
        let mut socket = match WebSocket::open_with_protocol(&url, SUBPROTOCOL) {
            Ok(socket) => socket,
            Err(error) => {
                let (url, detail) = (relay.to_owned(), error.to_string());
                return Ended::Lost(Problem::CannotOpen { url, detail });
            }
        };
        let mut opened = false;
        let mut welcomed = false;
        let mut heartbeat = Heartbeat::new(
            millis(self.options.heartbeat_interval),
            millis(self.options.reply_timeout),
            js_sys::Date::now(),
        );
        // When messages the relay could not store are due to go again.
        let mut retry_flush_at: Option<f64> = None;
        // The timer for the next heartbeat or retry, and when it fires.
        let mut timer: Option<(f64, Timer)> = None;
        loop {
            let wake_at =
                retry_flush_at.map_or(heartbeat.wake_at(), |at| at.min(heartbeat.wake_at()));
            // Kept from one event to the next while the wake-up time stands: a flood of frames
            // would otherwise set and clear a browser timer per frame.
            if timer.as_ref().is_none_or(|(at, _)| *at != wake_at) {
                timer = Some((wake_at, Timer::new(wait_until(wake_at))));
            }
            // One poll over everything the connection waits for. gloo-net has no open event: its
            // sink turns ready when the socket opens. (Not split: a `SplitSink` reports ready at
            // once, without asking the socket, which would claim "open" during the handshake.)
            let event = poll_fn(|cx| {
                if let Poll::Ready(command) = self.shared.commands.poll_next(cx) {
                    return Poll::Ready(Event::Command(command));
                }
                // Ready also means "closed" (a failed handshake): only an open socket counts.
                if !opened
                    && Pin::new(&mut socket).poll_ready(cx).is_ready()
                    && matches!(socket.state(), State::Open)
                {
                    return Poll::Ready(Event::Opened);
                }
                if let Poll::Ready(frame) = Pin::new(&mut socket).poll_next(cx) {
                    return Poll::Ready(Event::Frame(frame));
                }
                if let Some((_, timer)) = timer.as_mut().filter(|_| opened) {
                    if Pin::new(timer).poll(cx).is_ready() {
                        return Poll::Ready(Event::Timer);
                    }
                }
                Poll::Pending
            })
            .await;
            match event {
                Event::Opened => {
                    opened = true;
                    heartbeat = Heartbeat::new(
                        millis(self.options.heartbeat_interval),
                        millis(self.options.reply_timeout),
                        js_sys::Date::now(),
                    );
                }
                Event::Frame(Some(Ok(Message::Text(text)))) => {
                    let decoded = JsObject::parse(&text)
                        .ok_or_else(|| "not a JSON object".to_owned())
                        .and_then(|object| {
                            ServerFrame::from_object(&object).map_err(|error| error.to_string())
                        });
                    let frame = match decoded {
                        Ok(frame) => frame,
                        Err(error) => {
                            leptos::logging::warn!(
                                "wschat: ignoring a frame from the relay: {error}"
                            );
                            continue;
                        }
                    };
                    match frame {
                        ServerFrame::Welcome { epoch, .. } => {
                            welcomed = true;
                            machine.welcomed(js_sys::Date::now());
                            self.publish(machine);
                            self.set_last_error.set(None);
                            let request_id = self.request_id();
                            let resync =
                                self.shared.session.borrow_mut().welcome(&epoch, request_id);
                            if let Err(ended) = self.catch_up(&mut socket, &resync) {
                                return ended;
                            }
                        }
                        // A token that does not allow the lobby, or a full lobby: no welcome
                        // comes, but the connection serves the other rooms.
                        ServerFrame::Error { error, room: Some(room), id: None, .. }
                            if !welcomed
                                && room == LOBBY
                                && matches!(
                                    error.code,
                                    ErrorCode::Forbidden | ErrorCode::RoomFull
                                ) =>
                        {
                            welcomed = true;
                            machine.welcomed(js_sys::Date::now());
                            self.publish(machine);
                            self.set_last_error.set(Some(Problem::RoomRefused { room, error }));
                            let resync = self.shared.session.borrow_mut().welcome_elsewhere();
                            if let Err(ended) = self.catch_up(&mut socket, &resync) {
                                return ended;
                            }
                        }
                        ServerFrame::Pong { request_id } if heartbeat.pong(request_id) => {}
                        frame => {
                            // A copy only for a requester waiting for this very frame.
                            let reply = self.reply_for(&frame);
                            let problem =
                                self.shared.session.borrow_mut().apply(frame, js_sys::Date::now());
                            loop {
                                let next_id = self.next_request_id;
                                let Some(next_page) =
                                    self.shared.session.borrow_mut().next_page(next_id)
                                else {
                                    break;
                                };
                                self.next_request_id += 1;
                                if let Err(ended) = send(&mut socket, &next_page) {
                                    return ended;
                                }
                            }
                            self.shared.schedule_sync();
                            if problem == Some(Problem::Unavailable) {
                                retry_flush_at
                                    .get_or_insert(js_sys::Date::now() + UNAVAILABLE_RETRY_MS);
                            }
                            if let Some(problem) = problem {
                                self.set_last_error.set(Some(problem));
                            }
                            if let Some((reply, frame)) = reply {
                                reply.send(Ok(frame));
                            }
                        }
                    }
                }
                Event::Frame(Some(Ok(Message::Bytes(_)))) => {
                    leptos::logging::warn!("wschat: ignoring a binary frame from the relay");
                }
                // An error event always precedes the close event that follows it.
                Event::Frame(Some(Err(WebSocketError::ConnectionError))) => {}
                Event::Frame(Some(Err(WebSocketError::ConnectionClose(close)))) => {
                    return Ended::Lost(Problem::closed(opened, close.code, close.reason));
                }
                Event::Frame(Some(Err(error))) => {
                    return Ended::Lost(Problem::SendFailed(error.to_string()))
                }
                Event::Frame(None) => {
                    return Ended::Lost(Problem::Lost { code: 1006, reason: String::new() })
                }
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
                    heartbeat.hurry(js_sys::Date::now());
                }
                Event::Command(Some(Command::Flush)) => {
                    if welcomed {
                        if let Err(ended) = self.flush(&mut socket) {
                            return ended;
                        }
                    }
                }
                Event::Command(Some(Command::Request(request, reply))) => {
                    if !welcomed {
                        reply.send(Err(RequestError::Disconnected));
                        continue;
                    }
                    let request_id = self.request_id();
                    self.pending.push((request_id, reply));
                    let frame = match request {
                        Request::History { after_seq } => {
                            let mut session = self.shared.session.borrow_mut();
                            let room = session.shown().name.clone();
                            session.history_request(&room, request_id, after_seq)
                        }
                        Request::Ping => ClientFrame::Ping { request_id },
                    };
                    if let Err(ended) = send(&mut socket, &frame) {
                        return ended;
                    }
                }
                Event::Timer => {
                    timer = None;
                    let now = js_sys::Date::now();
                    if retry_flush_at.is_some_and(|at| now >= at) {
                        retry_flush_at = None;
                        if let Err(ended) = self.flush(&mut socket) {
                            return ended;
                        }
                    }
                    match heartbeat.beat(now, || self.request_id()) {
                        Beat::Wait => {}
                        Beat::Ping(request_id) => {
                            if let Err(ended) = send(&mut socket, &ClientFrame::Ping { request_id })
                            {
                                return ended;
                            }
                        }
                        Beat::TimedOut => {
                            let _ = socket.close(Some(4000), Some("heartbeat timed out"));
                            return Ended::Lost(Problem::HeartbeatTimeout);
                        }
                    }
                }
            }
        }
    }

    /// The waiting requester this frame answers, if any, with a copy of the frame for it.
    fn reply_for(
        &mut self,
        frame: &ServerFrame,
    ) -> Option<(Reply<Result<ServerFrame, RequestError>>, ServerFrame)> {
        let request_id = match frame {
            ServerFrame::History { request_id, .. } | ServerFrame::Pong { request_id } => {
                Some(*request_id)
            }
            ServerFrame::Error { request_id, .. } => *request_id,
            _ => None,
        }?;
        let index = self.pending.iter().position(|(id, _)| *id == request_id)?;
        let (_, reply) = self.pending.swap_remove(index);
        Some((reply, frame.clone()))
    }

    /// Sends what catches up on what this tab missed, then what waited: the relay answers in
    /// order.
    fn catch_up(&mut self, socket: &mut WebSocket, resync: &[ClientFrame]) -> Result<(), Ended> {
        // Joins queued before the welcome are in `resync`.
        self.shared.control.borrow_mut().clear();
        for frame in resync {
            send(socket, frame)?;
        }
        self.shared.schedule_sync();
        self.flush(socket)
    }

    /// Sends the frames queued besides messages (joins first: a message may be for a room just
    /// joined), then every pending outbox message, in order.
    fn flush(&mut self, socket: &mut WebSocket) -> Result<(), Ended> {
        let control = std::mem::take(&mut *self.shared.control.borrow_mut());
        for frame in &control {
            send(socket, frame)?;
        }
        let waiting = self.shared.session.borrow().to_send();
        for (id, frame) in waiting {
            send(socket, &frame)?;
            self.shared.session.borrow_mut().outbox.mark_sent(&id);
        }
        self.shared.schedule_sync();
        Ok(())
    }

    fn request_id(&mut self) -> u64 {
        let id = self.next_request_id;
        self.next_request_id += 1;
        id
    }
}

/// Writes a frame to an open socket. Synchronous: the browser's `WebSocket.send` only queues the
/// frame, so there is nothing to wait for (gloo-net's sink is ready whenever the socket is open).
fn send(socket: &mut WebSocket, frame: &ClientFrame) -> Result<(), Ended> {
    Pin::new(socket)
        .start_send(Message::Text(frame.to_json()))
        .map_err(|error| Ended::Lost(Problem::SendFailed(error.to_string())))
}

/// Milliseconds from now until `at` (`Date.now()` time), for a timer.
fn wait_until(at: f64) -> u32 {
    (at - js_sys::Date::now()).max(0.0) as u32
}

fn millis(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
