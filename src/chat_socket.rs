//! The chat socket as a reactive service, in the spirit of leptos-use's `use_websocket`.
//!
//! [`provide_chat_socket`] opens a gloo-net WebSocket once, at the root, and provides a
//! [`ChatSocket`] through context: read-only signals for the connection state, the sent and
//! received message logs and the relay's last complaint, plus a [`ChatSocket::send`] handle.
//! Frames are encoded and decoded with the wire types of `wschat-protocol`. No component touches
//! gloo-net; the socket closes when the owner that created the service is cleaned up.

use std::pin::Pin;
use std::task::Poll;

use futures::channel::mpsc::{self, UnboundedReceiver, UnboundedSender};
use futures::{future, Sink, SinkExt, StreamExt};
use gloo_net::websocket::futures::WebSocket;
use gloo_net::websocket::{Message, WebSocketError};
use leptos::prelude::*;
use wschat_protocol::{ChatMessage, RelayFrame};

use crate::message_log::MessageLog;

/// Where the connection stands, as the status badge shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// The socket is being opened.
    Connecting,
    /// The socket is open: messages can be sent.
    Connected,
    /// The socket is closed (it failed, the relay went away, or it was closed on purpose).
    Disconnected,
}

impl ConnectionState {
    /// The word the badge shows: `connecting`, `connected` or `disconnected`.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
        }
    }
}

/// Why [`ChatSocket::send`] did not send; the user's text is left where it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The message is empty or only whitespace.
    #[error("there is nothing to send")]
    Blank,
    /// The socket is not open.
    #[error("not connected to the relay: your message was not sent and is still in the box")]
    NotConnected,
}

/// How to open the chat socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatSocketOptions {
    /// The relay's socket URL. Default: the page's own origin at `/ws`, or `?relay=`
    /// (see [`crate::relay_url`]).
    pub url: String,
    /// The `source` put on every message this tab sends. Default: `guest-` and four random digits,
    /// so that two tabs can be told apart.
    pub source: String,
}

impl Default for ChatSocketOptions {
    fn default() -> Self {
        Self { url: crate::relay_url::for_current_page(), source: guest_name() }
    }
}

fn guest_name() -> String {
    // Four digits tell a handful of tabs apart; a chosen display name can replace it later.
    let number = (js_sys::Math::random() * 10_000.0) as u32;
    format!("guest-{number:04}")
}

/// What the socket task is asked to do.
enum Command {
    /// Send this text frame.
    Send(String),
    /// Close the socket with 1000 and stop.
    Close,
}

/// The chat socket service: cheap to copy, the same for every component that asks for it.
#[derive(Debug, Clone, Copy)]
pub struct ChatSocket {
    /// The connection state.
    pub state: ReadSignal<ConnectionState>,
    /// Every message this tab sent, oldest first.
    pub sent: ReadSignal<MessageLog>,
    /// Every message received from other tabs, oldest first.
    pub received: ReadSignal<MessageLog>,
    /// The relay's or the socket's last complaint, for people, until the next successful send.
    pub last_error: ReadSignal<Option<String>>,
    set_sent: WriteSignal<MessageLog>,
    set_last_error: WriteSignal<Option<String>>,
    source: StoredValue<String>,
    commands: StoredValue<UnboundedSender<Command>>,
}

impl ChatSocket {
    /// Opens the socket and returns the service; the socket closes when the current reactive owner
    /// is cleaned up.
    #[must_use]
    pub fn open(options: ChatSocketOptions) -> Self {
        let (state, set_state) = signal(ConnectionState::Connecting);
        let (sent, set_sent) = signal(MessageLog::default());
        let (received, set_received) = signal(MessageLog::default());
        let (last_error, set_last_error) = signal(None);
        let (commands, command_receiver) = mpsc::unbounded();
        let updates = SocketUpdates { set_state, set_received, set_last_error };
        // A browser task of its own, independent of any reactive executor.
        wasm_bindgen_futures::spawn_local(run_socket(options.url, command_receiver, updates));
        let closer = commands.clone();
        on_cleanup(move || {
            // Fails only when the socket task has already ended, and then there is nothing to close.
            let _ = closer.unbounded_send(Command::Close);
        });
        Self {
            state,
            sent,
            received,
            last_error,
            set_sent,
            set_last_error,
            source: StoredValue::new(options.source),
            commands: StoredValue::new(commands),
        }
    }

    /// The name this tab's messages are sent under.
    #[must_use]
    pub fn source(&self) -> String {
        self.source.get_value()
    }

    /// Sends `content` as a chat message and lists it under "Sent".
    ///
    /// # Errors
    /// [`SendError::Blank`] for an empty or whitespace-only message, [`SendError::NotConnected`]
    /// when the socket is not open. Nothing is sent or listed then, so the caller keeps the text.
    pub fn send(&self, content: &str) -> Result<(), SendError> {
        if content.trim().is_empty() {
            return Err(SendError::Blank);
        }
        if self.state.get_untracked() != ConnectionState::Connected {
            return Err(SendError::NotConnected);
        }
        let message = ChatMessage { source: self.source(), content: content.to_owned() };
        self.commands
            .with_value(|commands| commands.unbounded_send(Command::Send(message.to_json())))
            .map_err(|_| SendError::NotConnected)?;
        self.set_sent.update(|sent| {
            sent.push(message);
        });
        self.set_last_error.set(None);
        Ok(())
    }

    /// Closes the socket (code 1000); the state becomes [`ConnectionState::Disconnected`].
    pub fn close(&self) {
        // Fails only when the socket task has already ended: then the socket is closed already.
        let _ = self.commands.with_value(|commands| commands.unbounded_send(Command::Close));
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

/// The signals the socket task writes to.
struct SocketUpdates {
    set_state: WriteSignal<ConnectionState>,
    set_received: WriteSignal<MessageLog>,
    set_last_error: WriteSignal<Option<String>>,
}

impl SocketUpdates {
    fn frame(&self, text: &str) {
        match RelayFrame::from_json(text) {
            Ok(RelayFrame::Chat(message)) => self.set_received.update(|received| {
                received.push(message);
            }),
            Ok(RelayFrame::Error { error }) => {
                self.set_last_error.set(Some(format!("The relay refused a message: {error}")));
            }
            Err(error) => {
                leptos::logging::warn!("wschat: ignoring a frame from the relay: {error}: {text}");
            }
        }
    }
}

/// One event the socket task reacts to.
enum Event {
    Opened,
    Frame(Option<Result<Message, WebSocketError>>),
    Command(Option<Command>),
}

/// Owns the socket for its whole life: reports it open, hands received frames to the logs, sends
/// what [`ChatSocket::send`] queues, and reports it closed.
async fn run_socket(url: String, mut commands: UnboundedReceiver<Command>, updates: SocketUpdates) {
    let mut socket = match WebSocket::open(&url) {
        Ok(socket) => socket,
        Err(error) => {
            updates.set_last_error.set(Some(format!("Cannot open a socket to {url}: {error}")));
            updates.set_state.set(ConnectionState::Disconnected);
            return;
        }
    };
    let mut opened = false;
    loop {
        // One poll over everything the task waits for. gloo-net has no open event: its sink turns
        // ready when the socket opens. (Not split: a `SplitSink` reports ready at once, without
        // asking the socket, which would claim "connected" while the handshake is still going.)
        let event = future::poll_fn(|cx| {
            if let Poll::Ready(command) = commands.poll_next_unpin(cx) {
                return Poll::Ready(Event::Command(command));
            }
            if !opened && Pin::new(&mut socket).poll_ready(cx).is_ready() {
                return Poll::Ready(Event::Opened);
            }
            socket.poll_next_unpin(cx).map(Event::Frame)
        })
        .await;
        match event {
            Event::Opened => {
                opened = true;
                updates.set_last_error.set(None);
                updates.set_state.set(ConnectionState::Connected);
            }
            Event::Frame(Some(Ok(Message::Text(text)))) => updates.frame(&text),
            Event::Frame(Some(Ok(Message::Bytes(_)))) => {
                leptos::logging::warn!("wschat: ignoring a binary frame from the relay");
            }
            // An error event always precedes the close event that follows it.
            Event::Frame(Some(Err(WebSocketError::ConnectionError))) => {}
            Event::Frame(Some(Err(WebSocketError::ConnectionClose(close)))) => {
                if !close.was_clean || close.code != 1000 {
                    let reason = &close.reason;
                    let why = if reason.is_empty() { String::new() } else { format!(": {reason}") };
                    updates.set_last_error.set(Some(format!(
                        "Disconnected from the relay (code {}{why})",
                        close.code
                    )));
                }
                break;
            }
            Event::Frame(Some(Err(error))) => {
                updates.set_last_error.set(Some(format!("Socket error: {error}")));
                break;
            }
            Event::Frame(None) => break,
            Event::Command(Some(Command::Send(text))) => {
                if let Err(error) = socket.send(Message::Text(text)).await {
                    updates.set_last_error.set(Some(format!("Sending failed: {error}")));
                }
            }
            Event::Command(Some(Command::Close) | None) => {
                // Only fails for an invalid code or an over-long reason, and these are valid.
                let _ = socket.close(Some(1000), Some("closed by the user"));
                updates.set_state.set(ConnectionState::Disconnected);
                return;
            }
        }
    }
    updates.set_state.set(ConnectionState::Disconnected);
}
