//! Who is in the room shown, and who is typing there.

use leptos::prelude::*;

use crate::chat_socket::expect_chat_socket;

/// The names of the people in the room shown (several tabs of one name count once), as the relay
/// says; empty while disconnected.
#[component]
pub fn PresenceList() -> impl IntoView {
    let presence = expect_chat_socket().rooms.presence;
    view! {
        <section class="presence" aria-label="People in this room">
            <h3>"Here now"</h3>
            <ul data-testid="presence-list">
                // Not keyed: a few names, redrawn when someone comes or goes.
                {move || {
                    presence.get().into_iter().map(|name| view! { <li>{name}</li> }).collect_view()
                }}
            </ul>
        </section>
    }
}
