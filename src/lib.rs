//! The wschat web app: the "Angular + WebSockets" tutorial's chat page, in Leptos.
//!
//! - [`chat_socket`]: the reactive WebSocket service (connection state, message logs, `send`),
//!   created once at the root and provided through context.
//! - [`message_log`]: the append-only lists of sent and received messages, keyed for rendering.
//! - [`relay_url`]: where the socket connects (the page's own origin unless `?relay=` says otherwise).
//! - [`components`]: the page, one component per file.

pub mod chat_socket;
pub mod components;
pub mod message_log;
pub mod relay_url;

pub use components::app::App;
