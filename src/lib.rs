//! The wschat web app: the "Angular + WebSockets" tutorial's chat page, in Leptos.
//!
//! - [`chat_socket`]: the reactive WebSocket service (connection state, message logs, `send`),
//!   created once at the root and provided through context.
//! - [`session`]: what each frame from the relay means for the outbox and each room's
//!   conversation, presence and typing line.
//! - [`connection`]: the connection's states and when to retry, as a plain state machine.
//! - [`heartbeat`]: when to ping the relay and when silence means the connection is dead.
//! - [`conversation`]: the received messages, once each, in the relay's order, in pages.
//! - [`announce`]: what a screen reader hears of messages arriving live, a burst at a time.
//! - [`outbox`]: the messages not yet acknowledged by the relay, re-sent after a drop or a reload.
//! - [`reconnect`]: when to reconnect after the socket closes (capped back-off with full jitter).
//! - [`js_json`]: JSON parsed by the browser, read through the protocol's decoders.
//! - [`address`]: `?room=` in the page's address, kept in step with the room shown.
//! - [`relay_url`]: where the socket connects (the page's own origin unless `?relay=` says otherwise).
//! - [`components`]: the page, one component per file.

pub mod address;
pub mod announce;
pub mod chat_socket;
pub mod components;
pub mod connection;
pub mod conversation;
pub mod heartbeat;
pub mod js_json;
pub mod outbox;
pub mod reconnect;
pub mod relay_url;
pub mod session;

pub use components::app::App;
