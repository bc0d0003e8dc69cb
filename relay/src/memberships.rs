//! One connection's rooms: the seats it holds, the name it goes by in them, and when it last said
//! it was typing in each.
//!
//! The name, for presence and typing: the token's name with `--jwt-secret`, else the `name`
//! parameter of the socket's URL, else the last `source` the client sent a message under, else
//! `anonymous`. Only the last two change, when the client writes under another name.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::presence::anonymous;
use crate::room::Room;
use crate::rooms::Seat;

/// How often a connection's typing signal is passed on per room: more often is dropped, without
/// an answer (the app sends one on each key press, and the line it shows lasts a few seconds).
pub const TYPING_EVERY: Duration = Duration::from_secs(1);

/// Where a connection's name comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Naming {
    /// The token or the URL: fixed for the connection.
    Given,
    /// The last `source` the client wrote (or none yet): follows it.
    FromSource,
}

/// One room the connection is in.
struct Joined {
    seat: Seat,
    /// When a typing signal was last passed on in this room.
    typed_at: Option<Instant>,
}

/// A connection's rooms and name.
pub struct Memberships {
    name: Arc<str>,
    naming: Naming,
    rooms: Vec<Joined>,
}

impl Memberships {
    /// A connection named `given` (its token's name or its URL's), or nothing yet.
    #[must_use]
    pub fn new(given: Option<String>) -> Self {
        match given {
            Some(name) => Self { name: name.into(), naming: Naming::Given, rooms: Vec::new() },
            None => Self { name: anonymous(), naming: Naming::FromSource, rooms: Vec::new() },
        }
    }

    /// The name it goes by now.
    #[must_use]
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Rooms it is in.
    #[must_use]
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// The room `name`, if the connection is in it.
    #[must_use]
    pub fn find(&self, name: &str) -> Option<&Arc<Room>> {
        self.rooms.iter().map(|joined| joined.seat.room()).find(|room| room.name() == name)
    }

    /// Holds a new seat.
    pub fn add(&mut self, seat: Seat) {
        self.rooms.push(Joined { seat, typed_at: None });
    }

    /// Gives up the seat in room `name`, which leaves it; false when the connection was not in
    /// it.
    pub fn leave(&mut self, name: &str) -> bool {
        let Some(index) = self.rooms.iter().position(|joined| joined.seat.room().name() == name)
        else {
            return false;
        };
        drop(self.rooms.swap_remove(index));
        true
    }

    /// Leaves every room.
    pub fn leave_all(&mut self) {
        self.rooms.clear();
    }

    /// The client wrote a message under `source`: if its name follows what it writes and this
    /// is new, the rooms it is in learn the new name (and their members, if the names change).
    pub fn wrote_as(&mut self, source: &str, id: u64) {
        if self.naming != Naming::FromSource || *self.name == *source {
            return;
        }
        self.name = source.into();
        for joined in &self.rooms {
            joined.seat.room().rename(id, &self.name);
        }
    }

    /// Whether a typing signal in room `name` (which the connection is in) is passed on at
    /// `now`: at most one per [`TYPING_EVERY`] per room. Records it when it is.
    pub fn may_signal_typing(&mut self, name: &str, now: Instant) -> bool {
        let Some(joined) = self.rooms.iter_mut().find(|joined| joined.seat.room().name() == name)
        else {
            return false;
        };
        if joined.typed_at.is_some_and(|at| now.duration_since(at) < TYPING_EVERY) {
            return false;
        }
        joined.typed_at = Some(now);
        true
    }
}
