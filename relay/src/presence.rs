//! Who is in a room, by display name: several connections under one name (a person's tabs) count
//! once, and a change is only a change when a name appears or goes.
//!
//! A connection's name is its token's name with `--jwt-secret`, else the `name` parameter of its
//! socket's URL, else the last `source` it sent a message under, else [`ANONYMOUS`] (see
//! `crate::memberships`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use wschat_protocol::v1::{ServerFrame, MAX_PRESENCE_NAMES};

/// The name of a connection that gave none.
pub const ANONYMOUS: &str = "anonymous";

/// [`ANONYMOUS`], shared: most connections start under it, and a copy each would cost every
/// idle socket an allocation.
#[must_use]
pub fn anonymous() -> Arc<str> {
    static SHARED: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    Arc::clone(SHARED.get_or_init(|| ANONYMOUS.into()))
}

/// The names in one room, each with the number of connections under it, in name order.
#[derive(Debug, Default)]
pub struct Presence {
    names: BTreeMap<Arc<str>, usize>,
    /// With `--redis`: the names in the room on other relays (see `crate::cluster`).
    elsewhere: BTreeSet<String>,
}

impl Presence {
    /// One more connection under `name`; true when the name is new to the room.
    pub fn add(&mut self, name: &Arc<str>) -> bool {
        let count = self.names.entry(Arc::clone(name)).or_insert(0);
        *count += 1;
        *count == 1
    }

    /// One connection fewer under `name`; true when that was its last one.
    pub fn remove(&mut self, name: &str) -> bool {
        let Some(count) = self.names.get_mut(name) else { return false };
        *count -= 1;
        if *count > 0 {
            return false;
        }
        self.names.remove(name);
        true
    }

    /// The names of this relay's connections.
    #[must_use]
    pub fn names_here(&self) -> BTreeSet<String> {
        self.names.keys().map(|name| name.to_string()).collect()
    }

    /// With `--redis`: the names in the room on other relays are `names` now; true when that
    /// changes them.
    pub fn set_elsewhere(&mut self, names: BTreeSet<String>) -> bool {
        if self.elsewhere == names {
            return false;
        }
        self.elsewhere = names;
        true
    }

    /// The `presence` frame for `room`: the first [`MAX_PRESENCE_NAMES`] names in order (here and,
    /// with `--redis`, on other relays, each once), and how many there are.
    #[must_use]
    pub fn frame(&self, room: &str) -> ServerFrame {
        let mut all: BTreeSet<&str> = self.names.keys().map(|name| &**name).collect();
        all.extend(self.elsewhere.iter().map(String::as_str));
        let names = all.iter().take(MAX_PRESENCE_NAMES).map(|name| (*name).to_owned()).collect();
        ServerFrame::Presence { room: room.to_owned(), names, count: all.len() as u64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(presence: &Presence) -> Vec<String> {
        match presence.frame("r") {
            ServerFrame::Presence { names, .. } => names,
            other => panic!("{other:?}"),
        }
    }

    /// Two tabs of one name count once: the name appears with the first and goes with the last.
    #[test]
    fn a_name_counts_once_however_many_tabs() {
        let mut presence = Presence::default();
        let (ada, bob) = (Arc::from("ada"), Arc::from("bob"));
        assert!(presence.add(&bob));
        assert!(presence.add(&ada));
        assert!(!presence.add(&ada), "a second tab of ada changes nothing");
        assert_eq!(names(&presence), ["ada", "bob"]);
        assert!(!presence.remove("ada"));
        assert_eq!(names(&presence), ["ada", "bob"]);
        assert!(presence.remove("ada"));
        assert!(!presence.remove("ada"), "nobody left under it");
        assert_eq!(names(&presence), ["bob"]);
    }

    /// A crowded room lists the first names in order, and says how many there are.
    #[test]
    fn a_crowded_room_lists_the_first_names() {
        let mut presence = Presence::default();
        for n in 0..MAX_PRESENCE_NAMES + 5 {
            presence.add(&Arc::from(format!("user-{n:04}")));
        }
        match presence.frame("r") {
            ServerFrame::Presence { names, count, .. } => {
                assert_eq!(names.len(), MAX_PRESENCE_NAMES);
                assert_eq!(names[0], "user-0000");
                assert_eq!(count, MAX_PRESENCE_NAMES as u64 + 5);
            }
            other => panic!("{other:?}"),
        }
    }

    /// With `--redis`: names on other relays join the frame, each name once however many relays
    /// have it, and a change elsewhere is a change only when the names differ.
    #[test]
    fn names_elsewhere_join_the_frame_once() {
        let mut presence = Presence::default();
        presence.add(&Arc::from("bob"));
        let elsewhere = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect();
        assert!(presence.set_elsewhere(elsewhere(&["ada", "bob"])));
        assert!(!presence.set_elsewhere(elsewhere(&["ada", "bob"])), "nothing new");
        assert_eq!(names(&presence), ["ada", "bob"]);
        assert!(matches!(presence.frame("r"), ServerFrame::Presence { count: 2, .. }));
        assert_eq!(presence.names_here().into_iter().collect::<Vec<_>>(), ["bob"]);
        assert!(presence.set_elsewhere(BTreeSet::new()));
        assert_eq!(names(&presence), ["bob"]);
    }
}
