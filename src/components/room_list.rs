//! The rooms beside the conversation: the ones this tab is in, each with its unread count, and a
//! box to join or create one by name.

use leptos::prelude::*;

use crate::chat_socket::{expect_chat_socket, JoinError, RoomRow};

/// One button per room this tab is in (the lobby first); the one shown is marked current. A room
/// not shown counts the messages that arrived meanwhile. Below, a name box joins a room, creating
/// it if nobody is in it.
#[component]
pub fn RoomList() -> impl IntoView {
    let socket = expect_chat_socket();
    let rooms = socket.rooms;
    let (name, set_name) = signal(String::new());
    let (problem, set_problem) = signal(None::<JoinError>);
    let join = move || match socket.join_room(&name.get_untracked()) {
        Ok(()) => {
            set_name.set(String::new());
            set_problem.set(None);
        }
        Err(error) => set_problem.set(Some(error)),
    };
    view! {
        <nav class="rooms" aria-label="Rooms">
            <h2>"Rooms"</h2>
            <ul data-testid="room-list">
                <For each=move || rooms.list.get() key=|room| room.key let(room)>
                    <RoomItem room />
                </For>
            </ul>
            <form
                class="room-join"
                on:submit=move |event| {
                    event.prevent_default();
                    join();
                }
            >
                // Suggests the rooms there are (asked for when the box gets focus).
                <input
                    data-testid="room-join"
                    aria-label="Room to join"
                    placeholder="room name"
                    maxlength="64"
                    list="room-directory"
                    prop:value=name
                    on:focus=move |_| socket.list_rooms()
                    on:input=move |event| set_name.set(event_target_value(&event))
                />
                <datalist id="room-directory">
                    // Not keyed: a handful of options, redrawn when the relay lists them again.
                    {move || {
                        rooms
                            .directory
                            .get()
                            .into_iter()
                            .map(|room| {
                                view! {
                                    <option value=room.room>{room.members}" here"</option>
                                }
                            })
                            .collect_view()
                    }}
                </datalist>
                <button type="submit" data-testid="room-join-button">
                    "Join room"
                </button>
            </form>
            {move || {
                problem
                    .get()
                    .map(|error| view! { <p class="send-problem" role="alert">{error.to_string()}</p> })
            }}
        </nav>
    }
}

/// A room of the list: its name, and how many messages arrived while it was not shown.
#[component]
fn RoomItem(room: RoomRow) -> impl IntoView {
    let socket = expect_chat_socket();
    let shown = socket.rooms.shown;
    let RoomRow { name, unread, joined, .. } = room;
    // Owned by this row: disposed with it.
    let (unread, joined) = (RwSignal::from(unread), RwSignal::from(joined));
    let current = {
        let name = name.clone();
        move || shown.with(|shown| *shown == name)
    };
    let show = name.clone();
    let attribute = name.clone();
    view! {
        // `data-joined`: whether the relay confirmed this tab in the room (false while joining).
        <li data-testid="room-item" data-room=attribute data-joined=move || if joined.get() { "true" } else { "false" }>
            <button
                class="room-button"
                aria-current=move || current().then_some("page")
                on:click=move |_| socket.show_room(&show)
            >
                <span class="room-name">"#"{name}</span>
                // Read out as "3 unread" (the word comes from the CSS).
                <span class="unread" data-testid="unread-count">
                    {move || match unread.get() {
                        0 => String::new(),
                        count => count.to_string(),
                    }}
                </span>
            </button>
        </li>
    }
}
