//! What the service keeps in the browser's storage: the display name (localStorage), a guest
//! name and a tab id (sessionStorage, so each tab has its own), and the outbox in two parts
//! (see [`crate::outbox`]).

use leptos::prelude::window;

use crate::js_json::JsObject;
use crate::outbox::Outbox;

/// The localStorage key of the display name.
const NAME_KEY: &str = "wschat.name";

fn local_storage() -> Option<web_sys::Storage> {
    window().local_storage().ok().flatten()
}

fn session_storage() -> Option<web_sys::Storage> {
    window().session_storage().ok().flatten()
}

/// The name saved by [`save_name`], if any.
pub(super) fn saved_name() -> Option<String> {
    local_storage()?.get_item(NAME_KEY).ok().flatten().filter(|name| !name.trim().is_empty())
}

/// Remembers the display name for the next visit.
pub(super) fn save_name(name: &str) {
    if let Some(storage) = local_storage() {
        // A full or disabled storage only means the name is not remembered.
        let _ = storage.set_item(NAME_KEY, name);
    }
}

/// A name for a tab whose user picked none: `guest-` and four random digits, which tell a handful
/// of tabs apart. Kept in sessionStorage, so a reload keeps it but each tab has its own.
pub(super) fn guest_name() -> String {
    const GUEST_KEY: &str = "wschat.guest";
    let session = session_storage();
    if let Some(name) =
        session.as_ref().and_then(|storage| storage.get_item(GUEST_KEY).ok().flatten())
    {
        return name;
    }
    let number = (js_sys::Math::random() * 10_000.0) as u32;
    let name = format!("guest-{number:04}");
    if let Some(storage) = session {
        // Without sessionStorage a reload only picks a new guest name.
        let _ = storage.set_item(GUEST_KEY, &name);
    }
    name
}

/// Where one tab's outbox is saved: the undelivered messages under `base.TAB` and the delivered
/// ones under `base.TAB.delivered`, where TAB is an id kept in sessionStorage, which survives a
/// reload but belongs to one tab, so two tabs never share (and clobber) an outbox.
#[derive(Debug, Clone)]
pub(super) struct OutboxStorage {
    undelivered_key: String,
    delivered_key: String,
}

impl OutboxStorage {
    pub(super) fn for_this_tab(base: &str) -> Self {
        const TAB_KEY: &str = "wschat.tab";
        let session = session_storage();
        let saved = session.as_ref().and_then(|storage| storage.get_item(TAB_KEY).ok().flatten());
        let tab = saved.unwrap_or_else(|| {
            let tab = super::new_message_id();
            if let Some(storage) = &session {
                // Without sessionStorage the outbox survives no reload, but still works.
                let _ = storage.set_item(TAB_KEY, &tab);
            }
            tab
        });
        let undelivered_key = format!("{base}.{tab}");
        Self { delivered_key: format!("{undelivered_key}.delivered"), undelivered_key }
    }

    /// The saved outbox, or an empty one. Unreadable saved text is set aside under its key plus
    /// `.unreadable` (never trusted, never silently lost) and the outbox starts empty.
    pub(super) fn load(&self, capacity: usize) -> Outbox {
        let Some(storage) = local_storage() else { return Outbox::new(capacity) };
        let read = |key: &str| storage.get_item(key).ok().flatten();
        let (delivered, undelivered) = (read(&self.delivered_key), read(&self.undelivered_key));
        let parse = |text: &Option<String>| match text {
            None => Some(Vec::new()),
            Some(text) => JsObject::parse_list(text),
        };
        let loaded = match (parse(&delivered), parse(&undelivered)) {
            (Some(delivered), Some(undelivered)) => {
                Outbox::load(capacity, &delivered, &undelivered).map_err(|error| error.to_string())
            }
            _ => Err("not a JSON list of messages".to_owned()),
        };
        match loaded {
            Ok(outbox) => outbox,
            Err(error) => {
                leptos::logging::warn!("wschat: setting aside an unreadable saved outbox: {error}");
                for (key, text) in
                    [(&self.delivered_key, delivered), (&self.undelivered_key, undelivered)]
                {
                    if let Some(text) = text {
                        let _ = storage.set_item(&format!("{key}.unreadable"), &text);
                        let _ = storage.remove_item(key);
                    }
                }
                Outbox::new(capacity)
            }
        }
    }

    /// Saves what a reload must not lose.
    pub(super) fn save_undelivered(&self, outbox: &Outbox) {
        self.save(&self.undelivered_key, &outbox.undelivered_json());
    }

    /// Saves the delivered messages, for the "Sent" list after a reload.
    pub(super) fn save_delivered(&self, outbox: &Outbox) {
        self.save(&self.delivered_key, &outbox.delivered_json());
    }

    fn save(&self, key: &str, json: &str) {
        let saved = local_storage().map(|storage| storage.set_item(key, json));
        if !matches!(saved, Some(Ok(()))) {
            leptos::logging::warn!(
                "wschat: cannot save the outbox; unsent messages survive no reload"
            );
        }
    }
}
