//! The root component: starts the chat socket once and lays out the tutorial's page.

use leptos::prelude::*;

use crate::chat_socket::{provide_chat_socket, ChatSocketOptions};
use crate::components::composer::Composer;
use crate::components::connection_badge::ConnectionBadge;
use crate::components::name_field::NameField;
use crate::components::presence_list::PresenceList;
use crate::components::received_list::ReceivedList;
use crate::components::room_header::RoomHeader;
use crate::components::room_list::RoomList;
use crate::components::sent_list::SentList;
use crate::components::typing_line::TypingLine;

/// The chat page: a heading with the connection badge, the name, the rooms, and for the room
/// shown its heading, who is there, the composer, who is typing, and the sent and received
/// message lists (the tutorial's layout, inside each room).
#[component]
pub fn App(
    /// How to reach the relay and more. Default: the page's own origin, or `?relay=`.
    #[prop(optional)]
    options: Option<ChatSocketOptions>,
) -> impl IntoView {
    let socket = provide_chat_socket(options.unwrap_or_default());
    let notice = move || socket.received.notice.get().map(|notice| notice.text());
    view! {
        <main class="chat">
            <header class="chat-header">
                <h1>"wschat"</h1>
                <ConnectionBadge />
            </header>
            <NameField />
            {move || {
                notice()
                    .map(|text| {
                        view! {
                            <p class="notice" role="status" data-testid="history-notice">
                                {text}
                            </p>
                        }
                    })
            }}
            {move || {
                socket
                    .storage_problem
                    .get()
                    .then(|| {
                        view! {
                            <p class="notice" role="status" data-testid="storage-problem">
                                "This browser will not save more: messages waiting to be sent are \
                                 lost if this page is closed or reloaded. Free some site storage."
                            </p>
                        }
                    })
            }}
            <div class="rooms-layout">
                <RoomList />
                <section class="room" aria-labelledby="current-room">
                    <RoomHeader />
                    <PresenceList />
                    <Composer />
                    <TypingLine />
                    <div class="logs">
                        <SentList />
                        <ReceivedList />
                    </div>
                </section>
            </div>
        </main>
    }
}
