//! The page's address: `?room=NAME` opens a room, and the address follows the room shown, so a
//! link to the page is a link to the room. Other parameters (`relay`, `token`) are kept.

use leptos::prelude::window;
use wschat_protocol::v1::LOBBY;

fn search_params() -> Option<web_sys::UrlSearchParams> {
    let search = window().location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search).ok()
}

/// The value of the page address's query parameter `name`, if any.
#[must_use]
pub fn parameter(name: &str) -> Option<String> {
    search_params()?.get(name)
}

/// Puts `room` in the address (`?room=NAME`; none for the lobby) without reloading the page or
/// adding a history entry per switch.
pub fn show_room(room: &str) {
    let Some(params) = search_params() else { return };
    if params.get("room").as_deref().unwrap_or(LOBBY) == room {
        return;
    }
    if room == LOBBY {
        params.delete("room");
    } else {
        params.set("room", room);
    }
    let query = String::from(params.to_string());
    let address = if query.is_empty() {
        window().location().pathname().unwrap_or_default()
    } else {
        format!("?{query}")
    };
    if let Ok(history) = window().history() {
        // Refused only for another origin's address, which this never is.
        let _ = history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&address));
    }
}
