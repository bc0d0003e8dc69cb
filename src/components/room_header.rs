//! The heading of the room shown, with its Leave button.

use leptos::prelude::*;

use crate::chat_socket::{expect_chat_socket, LeaveError};
use wschat_protocol::v1::LOBBY;

/// `#name` of the room shown; every room but the lobby can be left (unless messages written in it
/// still wait for delivery: the page says so and keeps the room).
#[component]
pub fn RoomHeader() -> impl IntoView {
    let socket = expect_chat_socket();
    let shown = socket.rooms.shown;
    let (problem, set_problem) = signal(None::<LeaveError>);
    // A new room shown: an old refusal no longer applies.
    Effect::new(move |_| {
        shown.track();
        set_problem.set(None);
    });
    let leave = move |_| match socket.leave_room(&shown.get_untracked()) {
        Ok(()) => set_problem.set(None),
        Err(error) => set_problem.set(Some(error)),
    };
    view! {
        <header class="room-header">
            <h2 id="current-room" data-testid="current-room">"#"{move || shown.get()}</h2>
            {move || {
                (shown.with(|shown| shown != LOBBY))
                    .then(|| {
                        view! {
                            <button class="leave" data-testid="room-leave" on:click=leave>
                                {move || format!("Leave #{}", shown.get())}
                            </button>
                        }
                    })
            }}
            {move || {
                problem
                    .get()
                    .map(|error| view! { <p class="send-problem" role="status">{error.to_string()}</p> })
            }}
        </header>
    }
}
