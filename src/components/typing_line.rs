//! "name is typing…" for the room shown.

use leptos::prelude::*;

use crate::chat_socket::expect_chat_socket;

/// Who is typing in the room shown, for a few seconds after each of their signals, and until
/// their message arrives. Polite: screen readers hear it when idle.
#[component]
pub fn TypingLine() -> impl IntoView {
    let typing = expect_chat_socket().rooms.typing;
    let text = move || {
        typing.with(|names| match names.as_slice() {
            [] => String::new(),
            [one] => format!("{one} is typing…"),
            [one, two] => format!("{one} and {two} are typing…"),
            [one, two, rest @ ..] => format!("{one}, {two} and {} more are typing…", rest.len()),
        })
    };
    view! { <p class="typing" data-testid="typing" aria-live="polite">{text}</p> }
}
