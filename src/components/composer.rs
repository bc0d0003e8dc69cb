//! The message box and its Send button.

use leptos::ev::KeyboardEvent;
use leptos::prelude::*;

use crate::chat_socket::{expect_chat_socket, SendError};

/// A textarea and a "Send Message" button. Enter sends, Shift+Enter starts a new line. The box
/// clears once the message is in the outbox (sent at once, or when the connection is back); if the
/// outbox refuses it, the text stays in the box. After Send, the focus is back in the box, ready
/// for the next message.
#[component]
pub fn Composer() -> impl IntoView {
    let socket = expect_chat_socket();
    let (draft, set_draft) = signal(String::new());
    let (problem, set_problem) = signal(None::<SendError>);
    let textarea = NodeRef::<leptos::html::Textarea>::new();
    let send = move || match socket.send(&draft.get_untracked()) {
        Ok(()) => {
            set_draft.set(String::new());
            set_problem.set(None);
        }
        Err(SendError::Blank) => set_problem.set(None),
        Err(error) => set_problem.set(Some(error)),
    };
    let on_keydown = move |event: KeyboardEvent| {
        // `is_composing`: Enter that confirms an IME composition (e.g. Japanese input) is not a send.
        if event.key() == "Enter" && !event.shift_key() && !event.is_composing() {
            event.prevent_default();
            send();
        }
    };
    view! {
        <form
            class="composer"
            on:submit=move |event| {
                event.prevent_default();
                send();
                if let Some(textarea) = textarea.get_untracked() {
                    // Fails only for an element out of the document.
                    let _ = textarea.focus();
                }
            }
        >
            <textarea
                data-testid="composer"
                node_ref=textarea
                aria-label="Message"
                placeholder="Type a message; Enter sends, Shift+Enter for a new line"
                rows="3"
                prop:value=draft
                on:input=move |event| {
                    let text = event_target_value(&event);
                    if !text.trim().is_empty() {
                        socket.typing();
                    }
                    set_draft.set(text);
                }
                on:keydown=on_keydown
            ></textarea>
            <button type="submit" data-testid="send">
                "Send Message"
            </button>
            {move || {
                problem
                    .get()
                    .map(|error| view! { <p class="send-problem" role="alert">{error.to_string()}</p> })
            }}
        </form>
    }
}
