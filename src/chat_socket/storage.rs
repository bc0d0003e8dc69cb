//! What the service keeps in the browser's storage: the display name (localStorage), a guest
//! name, a tab id and the tab's rooms (sessionStorage, so each tab has its own), and the outbox in two parts
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

/// Where one tab's outbox is saved: the undelivered messages under `base.TAB`, the delivered ones
/// under `base.TAB.delivered`, and who holds them under `base.TAB.owner`. TAB is an id kept in
/// sessionStorage, which survives a reload but belongs to one tab, so two tabs never share (and
/// clobber) an outbox.
///
/// Two cases need more than that:
/// - "Duplicate tab" copies sessionStorage, so the copy starts with the original's TAB. The owner
///   key says whether a live page holds TAB (it renews its stamp every [`OWNER_RENEW_MS`]); a
///   second page then takes a TAB of its own.
/// - A tab closed with messages still pending leaves them behind. Its owner key says "released"
///   (written on `pagehide`) or goes stale (a crash); the next page of the site adopts those
///   messages into its own outbox and sends them. Sending one twice is harmless: the relay
///   deduplicates by message id.
#[derive(Debug, Clone)]
pub(super) struct OutboxStorage {
    base: String,
    tab: String,
    /// This page's claim on `tab`: a random id, so that a duplicated tab can tell it apart.
    instance: String,
    undelivered_key: String,
    delivered_key: String,
    owner_key: String,
}

/// How often a page renews its claim on its outbox.
pub(super) const OWNER_RENEW_MS: f64 = 5_000.0;
/// A claim not renewed for this long belongs to a page that is gone (crashed or killed).
const OWNER_STALE_MS: f64 = 15_000.0;
/// A released claim is left alone this long: a reloading page takes its outbox back first.
const RELEASED_GRACE_MS: f64 = 3_000.0;

/// Who holds an outbox, from its owner key (`"INSTANCE STAMP"` or `"released STAMP"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Holder {
    /// A page that renewed its claim recently.
    Live,
    /// Nobody: released long enough ago, stale, or never claimed.
    Nobody,
    /// Released a moment ago (a reload, probably): neither live nor up for adoption yet.
    JustReleased,
}

/// Reads an owner key's value at `now_ms` (`Date.now()`), as seen by page `instance`: its own
/// claim counts as nobody's.
pub(super) fn holder(owner: Option<&str>, instance: &str, now_ms: f64) -> Holder {
    let Some((who, stamp)) = owner.and_then(|owner| owner.split_once(' ')) else {
        return Holder::Nobody;
    };
    // Whole milliseconds, written and read as integers: float formatting and parsing would add
    // about 25 KB to the wasm.
    let age = now_ms - stamp.parse::<u64>().unwrap_or(0) as f64;
    match who {
        "released" if age < RELEASED_GRACE_MS => Holder::JustReleased,
        "released" => Holder::Nobody,
        _ if who == instance || age >= OWNER_STALE_MS => Holder::Nobody,
        _ => Holder::Live,
    }
}

/// `Date.now()` in whole milliseconds.
fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

impl OutboxStorage {
    /// The outbox storage of this tab, claimed for this page. `tab` names it explicitly (tests
    /// use that to play several tabs); otherwise the id in sessionStorage, or a new one.
    pub(super) fn claim(base: &str, tab: Option<&str>) -> Self {
        const TAB_KEY: &str = "wschat.tab";
        let session = session_storage();
        let remembered = || session.as_ref().and_then(|s| s.get_item(TAB_KEY).ok().flatten());
        let instance = super::new_message_id();
        let mut tab =
            tab.map(str::to_owned).or_else(remembered).unwrap_or_else(super::new_message_id);
        let now = js_sys::Date::now();
        let owner =
            local_storage().and_then(|s| s.get_item(&format!("{base}.{tab}.owner")).ok().flatten());
        if holder(owner.as_deref(), &instance, now) == Holder::Live {
            // Another live page holds this outbox: this page is a duplicated tab.
            tab = super::new_message_id();
        }
        if let Some(storage) = &session {
            // Without sessionStorage the outbox survives no reload, but still works.
            let _ = storage.set_item(TAB_KEY, &tab);
        }
        let undelivered_key = format!("{base}.{tab}");
        let storage = Self {
            base: base.to_owned(),
            delivered_key: format!("{undelivered_key}.delivered"),
            owner_key: format!("{undelivered_key}.owner"),
            undelivered_key,
            tab,
            instance,
        };
        storage.renew();
        storage
    }

    /// Renews this page's claim (every [`OWNER_RENEW_MS`], and when the page shows again).
    pub(super) fn renew(&self) {
        self.write(&self.owner_key, &format!("{} {}", self.instance, now_ms()));
    }

    /// Gives the outbox up as the page goes away: a reload takes it back, another tab adopts
    /// what was left pending once the page stays gone.
    pub(super) fn release(&self) {
        self.write(&self.owner_key, &format!("released {}", now_ms()));
    }

    /// The ids of other tabs whose outboxes nobody holds (some may hold only delivered messages,
    /// left for a reload that never came).
    pub(super) fn orphans(&self) -> Vec<String> {
        let Some(storage) = local_storage() else { return Vec::new() };
        let prefix = format!("{}.", self.base);
        let now = js_sys::Date::now();
        let count = storage.length().unwrap_or(0);
        (0..count)
            .filter_map(|index| storage.key(index).ok().flatten())
            .filter_map(|key| {
                let rest = key.strip_prefix(&prefix)?;
                Some(rest.split_once('.').map_or(rest, |(tab, _)| tab).to_owned())
            })
            .filter(|tab| *tab != self.tab)
            // Each tab has up to three keys; a handful of tabs at most (gone ones are forgotten).
            .fold(Vec::new(), |mut tabs, tab| {
                if !tabs.contains(&tab) {
                    tabs.push(tab);
                }
                tabs
            })
            .into_iter()
            .filter(|tab| {
                let owner = storage.get_item(&format!("{}{tab}.owner", prefix)).ok().flatten();
                holder(owner.as_deref(), &self.instance, now) == Holder::Nobody
            })
            .collect()
    }

    /// The undelivered messages another tab left behind, as saved (see [`OutboxStorage::load`]):
    /// none when it left only delivered ones; `None` when unreadable (then they are left where
    /// they are).
    pub(super) fn read_orphan(&self, tab: &str) -> Option<Vec<JsObject>> {
        let key = format!("{}.{tab}", self.base);
        match local_storage()?.get_item(&key).ok().flatten() {
            Some(text) => JsObject::parse_list(&text),
            None => Some(Vec::new()),
        }
    }

    /// Forgets another tab's outbox, once its messages are safely in this one's.
    pub(super) fn forget_orphan(&self, tab: &str) {
        if let Some(storage) = local_storage() {
            for suffix in ["", ".delivered", ".owner"] {
                let _ = storage.remove_item(&format!("{}.{tab}{suffix}", self.base));
            }
        }
    }

    /// The rooms this tab was in (sessionStorage: a reload keeps them, each tab has its own),
    /// valid names only.
    pub(super) fn saved_rooms(&self) -> Vec<String> {
        let key = format!("{}.rooms", self.base);
        let text = session_storage().and_then(|storage| storage.get_item(&key).ok().flatten());
        text.unwrap_or_default()
            .lines()
            .filter_map(|name| wschat_protocol::rooms::room_name(name).ok())
            .collect()
    }

    /// Remembers the rooms this tab is in, for a reload, one name per line.
    pub(super) fn save_rooms<'a>(&self, rooms: impl Iterator<Item = &'a str>) {
        if let Some(storage) = session_storage() {
            let text: Vec<&str> = rooms.collect();
            // Without sessionStorage a reload only starts in the lobby again.
            let _ = storage.set_item(&format!("{}.rooms", self.base), &text.join("\n"));
        }
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

    /// Saves what a reload must not lose. Returns false when the browser refused (storage full
    /// or disabled).
    pub(super) fn save_undelivered(&self, outbox: &Outbox) -> bool {
        self.write(&self.undelivered_key, &outbox.undelivered_json())
    }

    /// Saves the delivered messages, for the "Sent" list after a reload. Returns false when the
    /// browser refused.
    pub(super) fn save_delivered(&self, outbox: &Outbox) -> bool {
        self.write(&self.delivered_key, &outbox.delivered_json())
    }

    fn write(&self, key: &str, text: &str) -> bool {
        let saved = local_storage().is_some_and(|storage| storage.set_item(key, text).is_ok());
        if !saved {
            leptos::logging::warn!("wschat: cannot write {key} to localStorage (full or disabled)");
        }
        saved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A claim renewed a moment ago is live; one not renewed for 15 s, or this page's own, is
    /// nobody's; a release is respected for 3 s (a reload takes its outbox back) and then the
    /// outbox is up for adoption.
    #[test]
    fn who_holds_an_outbox() {
        let now = 100_000.0;
        assert_eq!(holder(None, "me", now), Holder::Nobody);
        assert_eq!(holder(Some("garbage"), "me", now), Holder::Nobody);
        assert_eq!(holder(Some("other 95000"), "me", now), Holder::Live);
        assert_eq!(holder(Some("other 85000"), "me", now), Holder::Nobody, "stale: a crash");
        assert_eq!(holder(Some("me 99000"), "me", now), Holder::Nobody);
        assert_eq!(holder(Some("released 99000"), "me", now), Holder::JustReleased);
        assert_eq!(holder(Some("released 90000"), "me", now), Holder::Nobody);
    }
}
