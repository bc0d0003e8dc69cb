//! "Sent Messages": this tab's messages, each with how far its delivery got.

use leptos::prelude::*;

use crate::chat_socket::expect_chat_socket;
use crate::components::clock;
use crate::outbox::{DeliveryState, OutgoingMessage};

/// One `<li>` per message: name, time, content, and its state (waiting, sent, delivered, or
/// failed with the reason and a Retry button).
#[component]
pub fn SentList() -> impl IntoView {
    let socket = expect_chat_socket();
    let entries = move || socket.outbox.with(|outbox| outbox.entries().to_vec());
    view! {
        <section class="log">
            <h2>"Sent Messages"</h2>
            <ul data-testid="sent-list">
                <For each=entries key=|message| message.id.clone() let(message)>
                    <SentMessage message />
                </For>
            </ul>
        </section>
    }
}

/// The short word (also the `data-state` attribute) and the explanation of a delivery state.
fn describe(state: &DeliveryState) -> (&'static str, String) {
    match state {
        DeliveryState::Pending => ("pending", "waiting for the connection".to_owned()),
        DeliveryState::Sent => ("sent", "sent, waiting for the relay".to_owned()),
        DeliveryState::Delivered { seq } => ("delivered", format!("delivered, #{seq}")),
        DeliveryState::Failed { reason } => ("failed", format!("not delivered: {reason}")),
    }
}

#[component]
fn SentMessage(message: OutgoingMessage) -> impl IntoView {
    let socket = expect_chat_socket();
    let id = StoredValue::new(message.id.clone());
    // The row stays; only its state follows the outbox.
    let state = Memo::new(move |_| {
        socket.outbox.with(|outbox| {
            id.with_value(|id| outbox.get(id).map_or(DeliveryState::Pending, |m| m.state.clone()))
        })
    });
    let word = move || describe(&state.get()).0;
    let explanation = move || describe(&state.get()).1;
    let failed = move || matches!(state.get(), DeliveryState::Failed { .. });
    view! {
        <li class=move || format!("message mine {}", word()) data-state=word>
            <span class="meta">
                <span class="source">{message.source}</span>
                <time>{clock(message.created_at_ms as f64)}</time>
                <span class="delivery">{explanation}</span>
            </span>
            <span class="content">{message.content}</span>
            <Show when=failed>
                <button class="retry" on:click=move |_| id.with_value(|id| socket.retry(id))>
                    "Retry"
                </button>
            </Show>
        </li>
    }
}
