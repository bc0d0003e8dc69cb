//! One list of messages ("Sent Messages" or "Received Messages").

use leptos::prelude::*;

use crate::message_log::MessageLog;

/// A titled list with one `<li>` per message, showing its source and its content as text.
#[component]
pub fn MessageList(
    /// The heading above the list.
    title: &'static str,
    /// The list's `data-testid`.
    testid: &'static str,
    /// The messages to show, oldest first.
    #[prop(into)]
    messages: Signal<MessageLog>,
) -> impl IntoView {
    view! {
        <section class="log">
            <h2>{title}</h2>
            <ul data-testid=testid>
                <For
                    each=move || messages.with(|log| log.entries().to_vec())
                    key=|entry| entry.id
                    let(entry)
                >
                    <li class="message">
                        <span class="source">{entry.message.source}</span>
                        <span class="content">{entry.message.content}</span>
                    </li>
                </For>
            </ul>
        </section>
    }
}
