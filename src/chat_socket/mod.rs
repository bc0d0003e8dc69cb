//! The chat socket as a reactive service, in the spirit of leptos-use's `use_websocket`.
//!
//! [`provide_chat_socket`] starts it once, at the root, and provides a [`ChatSocket`] through
//! context: read-only signals for the connection state, the "Sent" and "Received" lists and the
//! last problem, plus handles to send, retry, reconnect and close.
//!
//! - `task`: the one task that owns the gloo-net socket for the service's whole life and speaks
//!   protocol v1 (`wschat.v1`): it reconnects with back-off, flushes the outbox in order once
//!   open, asks for exactly the messages it missed, and pings with a deadline. No component
//!   touches gloo-net.
//! - `inbox`: the task's queue of commands and the replies requests wait for.
//! - `timer`: the browser's `setTimeout` as a future.
//! - `feed`: the lists' signals, brought up to date with the [`Session`] once per animation frame.
//! - `storage`: the name, the tab's id and the outbox in the browser's storage.
//!
//! The decisions (what a frame means, when to ping) are plain types tested natively:
//! [`Session`], [`crate::heartbeat::Heartbeat`], [`crate::connection::ConnectionMachine`].

mod feed;
mod inbox;
mod storage;
mod task;
mod timer;

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use leptos::prelude::*;
use wschat_protocol::limits::MessageLimits;
use wschat_protocol::rooms::room_name;
use wschat_protocol::v1::{ClientFrame, ServerFrame};
use wschat_protocol::WireError;

use self::feed::Mirror;
pub use self::feed::{PageView, ReceivedFeed, RoomRow, RoomsFeed, SentFeed, SentRow};
use self::inbox::{Inbox, Reply};
use self::storage::OutboxStorage;
use self::timer::Timer;
pub use crate::connection::ConnectionState;
use crate::outbox::{Outbox, OutboxFull, OutgoingMessage, DEFAULT_CAPACITY};
use crate::reconnect::ReconnectPolicy;
pub use crate::session::{LeaveError, Problem};

use crate::session::Session;

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
    /// The stored messages of the room shown after `after_seq`; answered by
    /// [`ServerFrame::History`].
    History {
        /// The last seq the caller already has.
        after_seq: u64,
    },
    /// A ping; answered by [`ServerFrame::Pong`].
    Ping,
}

/// How to run the chat socket. [`Default`] gives the documented defaults; what depends on the
/// page (its address, the saved name) is resolved when the service opens.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatSocketOptions {
    /// The relay's socket URL, or several separated by commas: each lost connection then tries
    /// the next (for relays on one Redis without a load balancer in front). `None` (the default):
    /// the page's own origin at `/ws`, or `?relay=` (see [`crate::relay_url`]).
    pub url: Option<String>,
    /// The display name put on every message as `source`. `None` (the default): the name saved
    /// in localStorage, else `guest-` and four random digits.
    pub source: Option<String>,
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
    /// This tab's id in storage. `None` (the default): the one kept in sessionStorage, or a new
    /// one. Tests set it to play several tabs in one page.
    pub tab: Option<String>,
    /// The room shown first (joined if need be). `None` (the default): the page address's
    /// `?room=`, else the lobby, and the address then follows the room shown.
    pub room: Option<String>,
}

impl Default for ChatSocketOptions {
    fn default() -> Self {
        Self {
            url: None,
            source: None,
            reconnect: ReconnectPolicy::default(),
            heartbeat_interval: Duration::from_secs(15),
            reply_timeout: Duration::from_secs(10),
            storage_key: Some("wschat.outbox".to_owned()),
            tab: None,
            room: None,
        }
    }
}

impl ChatSocketOptions {
    /// Options for `url` with the given name, no persistence, and otherwise the defaults.
    #[must_use]
    pub fn new(url: impl Into<String>, source: impl Into<String>) -> Self {
        Self {
            url: Some(url.into()),
            source: Some(source.into()),
            storage_key: None,
            ..Self::default()
        }
    }
}

/// Delivered messages kept in the outbox (and so in the "Sent" list and its saved copy).
const DELIVERED_KEPT: usize = 200;
/// Pruned back to [`DELIVERED_KEPT`] once this many are delivered: not on every message.
const DELIVERED_PRUNE_AT: usize = 250;
/// How long the delivered messages may go unsaved (they are saved on `pagehide` too).
const DELIVERED_SAVE_DELAY: Duration = Duration::from_secs(2);
/// Other tabs' orphaned outboxes are looked for at start and then every this many claim renewals
/// (about a minute).
const ADOPT_EVERY_RENEWALS: u32 = 12;
/// "Typing" goes to the relay at most this often while the user types (it passes on at most one
/// a second, and the others show it for 5 s).
const TYPING_EVERY_MS: f64 = 2_000.0;
/// How often an "is typing" line is checked for expiry while one shows.
const TYPING_CHECK: Duration = Duration::from_secs(1);

/// A random (version 4) UUID for a new message, from the browser's cryptographic generator.
fn new_message_id() -> String {
    let mut bytes = [0u8; 16];
    // Not `expect`: formatting the (impossible) JsValue error would pull its Debug code in.
    let crypto = window()
        .crypto()
        .unwrap_or_else(|_| unreachable!("every browser that runs wasm has window.crypto"));
    if crypto.get_random_values_with_u8_array(&mut bytes).is_err() {
        unreachable!("16 bytes is far below getRandomValues' 65536-byte limit");
    }
    crate::outbox::message_id(bytes)
}

/// What the socket task is asked to do.
enum Command {
    /// New messages are in the outbox: send them if open.
    Flush,
    /// Send a request and route its reply to `reply`.
    Request(Request, Reply<Result<ServerFrame, RequestError>>),
    /// The user asks to reconnect now (after a loss, a give-up or a close).
    ReconnectNow,
    /// The browser came back online or the tab became visible: a pending retry starts now and an
    /// open socket is checked with a ping. A socket the user closed stays closed.
    Hurry,
    /// Close the socket with 1000 and stay closed until [`Command::ReconnectNow`].
    Close,
}

/// Why [`ChatSocket::join_room`] did not join.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// Not a room name (1–64 of `a-z0-9._-`).
    #[error("{}", .0.message)]
    Name(WireError),
}

/// What the handle and the socket task share: the session, the signals that mirror it, where
/// the outbox is saved, and the task's commands.
struct Shared {
    session: RefCell<Session>,
    /// Closed when the service's owner is cleaned up, which ends the task.
    commands: Inbox<Command>,
    mirror: Mirror,
    storage: Option<OutboxStorage>,
    /// Set while the browser refuses to save the outbox (storage full or disabled).
    set_storage_problem: WriteSignal<bool>,
    sync_scheduled: Cell<bool>,
    delivered_unsaved: Cell<bool>,
    /// Frames other than messages to send once open (joins, leaves, typing), in order. Dropped
    /// with the connection: the next welcome joins every room again.
    control: RefCell<Vec<ClientFrame>>,
    /// When "typing" last went out (`Date.now()` milliseconds).
    typing_sent_at: Cell<f64>,
    /// Set while a check of the typing line is scheduled.
    typing_check: Cell<bool>,
    /// Whether the page address follows the room shown.
    follow_address: bool,
}

impl Shared {
    /// Brings the signals up to date at the next animation frame, or within 100 ms in a hidden
    /// tab, which gets no animation frames (a tab hidden meanwhile syncs as it hides).
    fn schedule_sync(self: &Rc<Self>) {
        if self.sync_scheduled.replace(true) {
            return;
        }
        let shared = Rc::clone(self);
        if document().hidden() {
            set_timeout(move || shared.sync(), Duration::from_millis(100));
        } else {
            request_animation_frame(move || shared.sync());
        }
    }

    /// Copies what changed into the signals and saves what changed of the outbox: the
    /// undelivered part now, the delivered part a little later.
    fn sync(self: &Rc<Self>) {
        self.sync_scheduled.set(false);
        // A timer may fire after the service's owner was cleaned up; there is nothing to show.
        if self.mirror.is_disposed() {
            return;
        }
        let mut session = self.session.borrow_mut();
        if session.outbox.entries().len() - session.outbox.undelivered_count() > DELIVERED_PRUNE_AT
        {
            session.outbox.prune_delivered(DELIVERED_KEPT);
        }
        let changes = session.outbox.take_changes();
        let now = js_sys::Date::now();
        session.expire_typing(now);
        self.mirror.sync(&mut session, changes.list, &changes.states, now);
        if session.shown().typing_at(now).next().is_some() && !self.typing_check.replace(true) {
            let shared = Rc::clone(self);
            set_timeout(
                move || {
                    shared.typing_check.set(false);
                    shared.sync();
                },
                TYPING_CHECK,
            );
        }
        let Some(storage) = &self.storage else { return };
        if changes.undelivered {
            self.set_storage_problem.set(!storage.save_undelivered(&session.outbox));
        }
        if changes.delivered && !self.delivered_unsaved.replace(true) {
            let shared = Rc::clone(self);
            set_timeout(move || shared.save_delivered(), DELIVERED_SAVE_DELAY);
        }
    }

    fn save_delivered(&self) {
        if self.delivered_unsaved.replace(false) {
            if let Some(storage) = &self.storage {
                storage.save_delivered(&self.session.borrow().outbox);
            }
        }
    }

    /// Takes in what other tabs left pending when they closed (see [`OutboxStorage`]); returns
    /// whether anything was taken. An orphan is forgotten only once this tab has saved its
    /// messages; an unreadable one is left alone.
    fn adopt_orphans(self: &Rc<Self>) -> bool {
        let Some(storage) = &self.storage else { return false };
        let mut adopted = false;
        for tab in storage.orphans() {
            let Some(saved) = storage.read_orphan(&tab) else { continue };
            let Ok(messages) =
                saved.iter().map(OutgoingMessage::from_saved).collect::<Result<Vec<_>, _>>()
            else {
                continue;
            };
            let mut session = self.session.borrow_mut();
            if session.outbox.adopt(messages) == 0 || storage.save_undelivered(&session.outbox) {
                storage.forget_orphan(&tab);
                adopted = true;
            }
        }
        if adopted {
            // Their rooms are joined before the lists are drawn, so they show at once.
            self.join_rooms_of_undelivered();
            self.sync();
        }
        adopted
    }

    /// Joins every room an undelivered message was written in (a reloaded or adopted outbox):
    /// its messages then go there, and show in its "Sent" list.
    fn join_rooms_of_undelivered(&self) {
        let mut session = self.session.borrow_mut();
        let rooms: Vec<String> = session
            .outbox
            .entries()
            .iter()
            .filter(|message| !message.state.is_delivered())
            .map(|message| message.room.clone())
            .collect();
        for room in rooms {
            if let Some(frame) = session.join(&room, false) {
                self.control.borrow_mut().push(frame);
            }
        }
        drop(session);
        self.save_rooms();
    }

    /// Remembers the rooms this tab is in (see [`OutboxStorage::save_rooms`]).
    fn save_rooms(&self) {
        if let Some(storage) = &self.storage {
            storage.save_rooms(self.session.borrow().rooms().iter().map(|room| room.name.as_str()));
        }
    }

    /// Queues a frame to go out once open (see [`Shared::control`]).
    fn queue(&self, frame: ClientFrame) {
        self.control.borrow_mut().push(frame);
    }
}

/// The chat socket service: cheap to copy, the same for every component that asks for it.
#[derive(Debug, Clone, Copy)]
pub struct ChatSocket {
    /// The connection state.
    pub state: ReadSignal<ConnectionState>,
    /// Every message received from others, once each, in order (the "Received" list).
    pub received: ReceivedFeed,
    /// Every message this tab sent, with how far its delivery got (the "Sent" list).
    pub sent: SentFeed,
    /// The last problem worth telling the user, until things are well again.
    pub last_error: ReadSignal<Option<Problem>>,
    /// True while the browser refuses to save the outbox (storage full or disabled): messages
    /// still go out, but those waiting would not survive a reload.
    pub storage_problem: ReadSignal<bool>,
    /// The rooms this tab is in, the one shown, who is there and who is typing.
    pub rooms: RoomsFeed,
    /// The name this tab's messages are sent under.
    pub source: ReadSignal<String>,
    set_source: WriteSignal<String>,
    reply_timeout: Duration,
    shared: StoredValue<Rc<Shared>, LocalStorage>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl ChatSocket {
    /// Starts the service; the socket closes and its listeners go when the current reactive owner
    /// is cleaned up.
    #[must_use]
    pub fn open(options: ChatSocketOptions) -> Self {
        let url = options.url.clone().unwrap_or_else(crate::relay_url::for_current_page);
        let source =
            options.source.clone().or_else(storage::saved_name).unwrap_or_else(storage::guest_name);
        let storage = options
            .storage_key
            .as_deref()
            .map(|base| OutboxStorage::claim(base, options.tab.as_deref()));
        let outbox = storage
            .as_ref()
            .map_or_else(|| Outbox::new(DEFAULT_CAPACITY), |s| s.load(DEFAULT_CAPACITY));
        let (storage_problem, set_storage_problem) = signal(false);
        let mut session = Session::new(outbox, source.clone());
        // The rooms this tab was in before a reload, then the one asked for.
        for room in storage.as_ref().map(OutboxStorage::saved_rooms).unwrap_or_default() {
            session.join(&room, false);
        }
        let first = options
            .room
            .clone()
            .or_else(|| crate::address::parameter("room"))
            .and_then(|room| room_name(&room).ok());
        if let Some(room) = &first {
            session.join(room, false);
            session.show(room);
        }
        let shared = Rc::new(Shared {
            session: RefCell::new(session),
            commands: Inbox::new(),
            mirror: Mirror::new(),
            storage,
            set_storage_problem,
            sync_scheduled: Cell::new(false),
            delivered_unsaved: Cell::new(false),
            control: RefCell::new(Vec::new()),
            typing_sent_at: Cell::new(0.0),
            typing_check: Cell::new(false),
            follow_address: options.room.is_none(),
        });
        // The reloaded outbox shows at once, with whatever closed tabs left pending.
        shared.join_rooms_of_undelivered();
        shared.sync();
        shared.adopt_orphans();
        let (state, set_state) = signal(ConnectionState::Connecting);
        let (last_error, set_last_error) = signal(None);
        let (source, set_source) = signal(source);
        let socket = Self {
            state,
            received: shared.mirror.received(),
            sent: shared.mirror.sent(),
            rooms: shared.mirror.rooms(),
            last_error,
            storage_problem,
            source,
            set_source,
            reply_timeout: options.reply_timeout,
            shared: StoredValue::new_local(Rc::clone(&shared)),
        };
        let task =
            task::SocketTask::new(url, options, Rc::clone(&shared), set_state, set_last_error);
        // A browser task of its own, independent of any reactive executor.
        wasm_bindgen_futures::spawn_local(task.run());

        // Coming back online or to a visible tab is the moment to retry, not when the timer says.
        let retry = Rc::clone(&shared);
        let online = window_event_listener_untyped("online", move |_| {
            retry.commands.push(Command::Hurry);
        });
        let retry = Rc::clone(&shared);
        let hiding = Rc::clone(&shared);
        let visible = window_event_listener_untyped("visibilitychange", move |_| {
            if document().visibility_state() == web_sys::VisibilityState::Visible {
                retry.commands.push(Command::Hurry);
            } else if hiding.sync_scheduled.get() {
                // The animation frame it waits for will not come while hidden.
                hiding.sync();
            }
        });
        // The delivered part of the outbox is saved lazily: a tab going away saves it now, and
        // gives its outbox up for a reload (or another tab) to take.
        let leaving = Rc::clone(&shared);
        let hide = window_event_listener_untyped("pagehide", move |_| {
            leaving.save_delivered();
            if let Some(storage) = &leaving.storage {
                storage.release();
            }
        });
        // A page back from the back-forward cache claims its outbox again.
        let back = Rc::clone(&shared);
        let show = window_event_listener_untyped("pageshow", move |_| {
            if let Some(storage) = &back.storage {
                storage.renew();
            }
        });
        // The claim is renewed while the page lives; now and then, closed tabs are looked for.
        let renewing = Rc::clone(&shared);
        let renewals = Cell::new(0_u32);
        let renew = set_interval_with_handle(
            move || {
                let Some(storage) = &renewing.storage else { return };
                storage.renew();
                renewals.set(renewals.get() + 1);
                if renewals.get().is_multiple_of(ADOPT_EVERY_RENEWALS) && renewing.adopt_orphans() {
                    renewing.commands.push(Command::Flush);
                }
            },
            Duration::from_millis(storage::OWNER_RENEW_MS as u64),
        )
        .ok();
        let stored = socket.shared;
        on_cleanup(move || {
            online.remove();
            visible.remove();
            hide.remove();
            show.remove();
            if let Some(renew) = renew {
                renew.clear();
            }
            // Ends the task, which closes the socket with 1000. (Through the stored value: the
            // clean-up must be `Send`. Clean-ups run before the owner's values are disposed.)
            stored.with_value(|shared| shared.commands.close());
        });
        socket
    }

    /// Queues `content` as a message under this tab's name and lists it under "Sent": sent at
    /// once when open, otherwise as soon as the connection is back. Saved before this returns,
    /// so a reload right after loses nothing.
    ///
    /// # Errors
    /// [`SendError::Blank`] for an empty or whitespace-only message,
    /// [`SendError::NotAcceptable`] for one the relay would refuse (too long, control
    /// characters), [`SendError::OutboxFull`] when too many messages are waiting. Nothing is
    /// queued then, so the caller keeps the text.
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
        self.shared.with_value(|shared| {
            let mut session = shared.session.borrow_mut();
            let message = message.in_room(session.shown().name.clone());
            session.outbox.push(message)?;
            // The message ends the user's "typing" for the others (the relay clears it).
            drop(session);
            shared.typing_sent_at.set(0.0);
            shared.sync();
            Ok::<_, SendError>(())
        })?;
        self.command(Command::Flush);
        Ok(())
    }

    /// Sends a failed message again.
    pub fn retry(&self, id: &str) {
        let retried = self.shared.with_value(|shared| {
            let retried = shared.session.borrow_mut().outbox.retry(id);
            shared.sync();
            retried
        });
        if retried {
            self.command(Command::Flush);
        }
    }

    /// Drops a failed message the user gave up on.
    pub fn discard(&self, id: &str) {
        self.shared.with_value(|shared| {
            let discarded = shared.session.borrow_mut().outbox.discard(id);
            if discarded {
                shared.sync();
            }
        });
    }

    /// Joins the room `name` (created if nobody is in it) and shows it. Joining a room this tab
    /// is in already just shows it.
    ///
    /// # Errors
    /// [`JoinError::Name`] when `name` is not a room name; nothing changes then.
    pub fn join_room(&self, name: &str) -> Result<(), JoinError> {
        let room = room_name(name.trim()).map_err(JoinError::Name)?;
        let connected = self.state.get_untracked().is_open();
        self.shared.with_value(|shared| {
            let mut session = shared.session.borrow_mut();
            if let Some(frame) = session.join(&room, connected) {
                shared.queue(frame);
                drop(session);
                shared.save_rooms();
            }
        });
        self.show_room(&room);
        self.command(Command::Flush);
        Ok(())
    }

    /// Shows the room `name`, one this tab is in; its unread count clears.
    pub fn show_room(&self, name: &str) {
        self.shared.with_value(|shared| {
            if shared.session.borrow_mut().show(name) {
                if shared.follow_address {
                    crate::address::show_room(name);
                }
                shared.sync();
            }
        });
    }

    /// Leaves the room `name`; the lobby is shown if it was.
    ///
    /// # Errors
    /// [`LeaveError`] for the lobby, for a room holding undelivered messages of this tab (they
    /// would be stranded), or a room this tab is not in; nothing changes then.
    pub fn leave_room(&self, name: &str) -> Result<(), LeaveError> {
        self.shared.with_value(|shared| {
            let mut session = shared.session.borrow_mut();
            let frame = session.leave(name)?;
            if shared.follow_address {
                crate::address::show_room(&session.shown().name);
            }
            drop(session);
            shared.save_rooms();
            shared.queue(frame);
            shared.sync();
            Ok::<_, LeaveError>(())
        })?;
        self.command(Command::Flush);
        Ok(())
    }

    /// Tells the others in the room shown that the user is typing (at most once every 2 s).
    pub fn typing(&self) {
        let now = js_sys::Date::now();
        let due = self.shared.with_value(|shared| {
            if now - shared.typing_sent_at.get() < TYPING_EVERY_MS
                || !self.state.get_untracked().is_open()
            {
                return false;
            }
            shared.typing_sent_at.set(now);
            let room = shared.session.borrow().shown().name.clone();
            shared.queue(ClientFrame::Typing { room });
            true
        });
        if due {
            self.command(Command::Flush);
        }
    }

    /// Asks the relay which rooms there are; the answer shows in [`RoomsFeed::directory`].
    pub fn list_rooms(&self) {
        self.shared.with_value(|shared| shared.queue(ClientFrame::Rooms {}));
        self.command(Command::Flush);
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
        self.shared.with_value(|shared| name.clone_into(&mut shared.session.borrow_mut().source));
        storage::save_name(name);
    }

    /// Looks at the session (the outbox and the received conversation) as it is now, untracked.
    pub fn with_session<R>(&self, look: impl FnOnce(&Session) -> R) -> R {
        self.shared.with_value(|shared| look(&shared.session.borrow()))
    }

    /// Sends a request and waits for its reply, correlated by a request id.
    ///
    /// # Errors
    /// [`RequestError::Timeout`] when no reply comes within the reply timeout,
    /// [`RequestError::Disconnected`] when the connection is not open or closes first.
    pub async fn request(&self, request: Request) -> Result<ServerFrame, RequestError> {
        // Unanswered when the task drops the request: the connection was not open or closed.
        let (reply, answer) = inbox::reply_slot(Err(RequestError::Disconnected));
        self.command(Command::Request(request, reply));
        let timeout = u32::try_from(self.reply_timeout.as_millis()).unwrap_or(u32::MAX);
        let mut timer = Timer::new(timeout);
        poll_fn(|cx| match answer.poll(cx) {
            Poll::Ready(answer) => Poll::Ready(answer),
            Poll::Pending => Pin::new(&mut timer).poll(cx).map(|()| Err(RequestError::Timeout)),
        })
        .await
    }

    /// Queues a command for the task; ignored once the owner was cleaned up (the task is gone).
    fn command(&self, command: Command) {
        self.shared.with_value(|shared| shared.commands.push(command));
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
    // Not `expect_context`: its message formats the type's name and the caller's location with
    // `{:?}`, which brought `Debug` for strings (with Unicode escaping tables) into the wasm.
    use_context::<ChatSocket>()
        .unwrap_or_else(|| panic!("no ChatSocket here: provide_chat_socket runs at the root"))
}
