//! The connection status badge, and the relay's last complaint under it.

use leptos::prelude::*;

use crate::chat_socket::expect_chat_socket;

/// Shows `connecting`, `connected` or `disconnected`, coloured, and any error from the relay.
#[component]
pub fn ConnectionBadge() -> impl IntoView {
    let socket = expect_chat_socket();
    let label = move || socket.state.get().label();
    view! {
        <span
            class=move || format!("badge badge-{}", label())
            data-testid="connection-status"
            role="status"
        >
            {label}
        </span>
        <Show when=move || socket.last_error.with(Option::is_some)>
            <p class="relay-error" role="alert" data-testid="relay-error">
                {move || socket.last_error.get()}
            </p>
        </Show>
    }
}
