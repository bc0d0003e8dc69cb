//! "Sent Messages": this tab's messages, each with how far its delivery got.

use leptos::prelude::*;

use crate::chat_socket::{expect_chat_socket, SentRow};
use crate::components::{clock, naming};
use crate::outbox::DeliveryState;

/// One `<li>` per message: name, time, content, and its state (waiting, sent, delivered, or
/// failed with the reason, a Retry and a Discard button). Each row follows its own message's state: an ack
/// redraws one row, and messages from others redraw nothing here.
#[component]
pub fn SentList() -> impl IntoView {
    let rows = expect_chat_socket().sent.rows;
    view! {
        // Scrolls, from the newest message (see `.log` in the CSS): focusable, to scroll by keyboard.
        <section class="log" aria-label="Sent Messages" tabindex="0">
            <h2>"Sent Messages"</h2>
            <ul data-testid="sent-list">
                <For each=move || rows.get() key=|row| row.key let(row)>
                    <SentMessage row />
                </For>
            </ul>
        </section>
    }
}

/// The row's class and its `data-state` attribute (a short word) for a delivery state. Whole
/// class names, not `format!`ed: nothing to allocate on each change.
fn class_and_word(state: &DeliveryState) -> (&'static str, &'static str) {
    match state {
        DeliveryState::Pending => ("message mine pending", "pending"),
        DeliveryState::Sent => ("message mine sent", "sent"),
        DeliveryState::Delivered { .. } => ("message mine delivered", "delivered"),
        DeliveryState::Failed { .. } => ("message mine failed", "failed"),
    }
}

/// What the row says about a delivery state.
fn explain(state: &DeliveryState) -> String {
    match state {
        DeliveryState::Pending => "waiting for the connection".to_owned(),
        DeliveryState::Sent => "sent, waiting for the relay".to_owned(),
        DeliveryState::Delivered { seq } => format!("delivered, #{seq}"),
        DeliveryState::Failed { reason } => format!("not delivered: {reason}"),
    }
}

#[component]
fn SentMessage(row: SentRow) -> impl IntoView {
    let socket = expect_chat_socket();
    let SentRow { message, state, .. } = row;
    // Owned by this row: disposed with it.
    let state = RwSignal::from(state);
    let class = move || state.with(|state| class_and_word(state).0);
    let word = move || state.with(|state| class_and_word(state).1);
    let explanation = move || state.with(explain);
    let failed = move || state.with(|state| matches!(state, DeliveryState::Failed { .. }));
    let id = message.id.clone();
    view! {
        <li class=class data-state=word>
            <span class="meta">
                <span class="source">{message.source.clone()}</span>
                {clock(message.created_at_ms)}
                <span class="delivery">{explanation}</span>
            </span>
            <span class="content">{message.content.clone()}</span>
            {move || {
                failed()
                    .then(|| {
                        let (retry, discard) = (id.clone(), id.clone());
                        let content = &message.content;
                        let (retry_name, discard_name) =
                            (naming("Retry sending", content), naming("Discard", content));
                        view! {
                            <button class="retry" aria-label=retry_name on:click=move |_| socket.retry(&retry)>"Retry"</button>
                            <button class="retry" aria-label=discard_name data-testid="discard" on:click=move |_| socket.discard(&discard)>
                                "Discard"
                            </button>
                        }
                    })
            }}
        </li>
    }
}
