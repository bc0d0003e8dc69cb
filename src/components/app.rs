//! The root component: opens the chat socket once and lays out the tutorial's page.

use leptos::prelude::*;

use crate::chat_socket::{provide_chat_socket, ChatSocketOptions};
use crate::components::composer::Composer;
use crate::components::connection_badge::ConnectionBadge;
use crate::components::message_list::MessageList;

/// The chat page: a heading with the connection badge, the composer, and the sent and received
/// message lists.
#[component]
pub fn App(
    /// How to reach the relay. Default: the page's own origin, or `?relay=`.
    #[prop(optional)]
    options: Option<ChatSocketOptions>,
) -> impl IntoView {
    let socket = provide_chat_socket(options.unwrap_or_default());
    view! {
        <main class="chat">
            <header class="chat-header">
                <h1>"wschat"</h1>
                <ConnectionBadge />
            </header>
            <p class="identity">
                "You are " <strong data-testid="source">{socket.source()}</strong>
            </p>
            <Composer />
            <div class="logs">
                <MessageList title="Sent Messages" testid="sent-list" messages=socket.sent />
                <MessageList
                    title="Received Messages"
                    testid="received-list"
                    messages=socket.received
                />
            </div>
        </main>
    }
}
