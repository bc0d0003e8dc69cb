//! "Received Messages": what others sent, once each, in the relay's order.

use leptos::prelude::*;

use crate::chat_socket::expect_chat_socket;
use crate::components::clock;

/// One `<li>` per message: name, time and content, as text. Messages sent under this tab's own
/// name (from another tab, or before a reload) are styled as the user's own.
#[component]
pub fn ReceivedList() -> impl IntoView {
    let socket = expect_chat_socket();
    let entries = move || socket.received.with(|received| received.entries().to_vec());
    view! {
        <section class="log">
            <h2>"Received Messages"</h2>
            <ul data-testid="received-list">
                <For each=entries key=|entry| entry.key let(entry)>
                    <li class=if entry.mine { "message mine" } else { "message" } data-seq=entry.message.seq>
                        <span class="meta">
                            <span class="source">{entry.message.source}</span>
                            <time>{clock(entry.message.sent_at_ms as f64)}</time>
                        </span>
                        <span class="content">{entry.message.content}</span>
                    </li>
                </For>
            </ul>
        </section>
    }
}
