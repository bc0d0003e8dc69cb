//! The display name this tab sends under.

use leptos::prelude::*;

use crate::chat_socket::expect_chat_socket;

/// "You are NAME", editable; the name is remembered for the next visit.
#[component]
pub fn NameField() -> impl IntoView {
    let socket = expect_chat_socket();
    view! {
        <label class="identity">
            "You are "
            <input
                data-testid="display-name"
                maxlength="64"
                prop:value=move || socket.source.get()
                on:change=move |event| socket.set_source(&event_target_value(&event))
            />
        </label>
    }
}
