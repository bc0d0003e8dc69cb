//! The rooms there are: each open room by name, opened on its first join (read from the store
//! with `--data-dir`) and closed again when it is idle, within the relay's bounds; and the count
//! of connections.
//!
//! When a room closes. With `--data-dir`, as soon as its last member has left and nothing of it
//! waits for the disk: its history stays in the file and is read again when someone joins. Without
//! it, closing a room loses its history, so an empty room stays open until the room limit is
//! reached, and then the one empty for longest makes way for a new room. The lobby never closes.
//!
//! Locks: the registry's lock is taken before a room's, never the other way round (a room that
//! empties asks to be closed after letting go of its own lock).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OnceCell;
use wschat_protocol::rooms::LOBBY;
use wschat_protocol::v1::{RoomInfo, ServerFrame};
use wschat_protocol::ErrorCode;

use crate::cluster::Cluster;
use crate::commit::{Admission, Journal};
use crate::history::History;
use crate::room::{ClientId, Core, Greeting, JoinError, Joiner, Room};
use crate::store::RoomReader;

/// The bounds on rooms. [`RoomLimits::default`] gives the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomLimits {
    /// Rooms open at once, the lobby included; past it, joining a new room is refused with
    /// `rooms_full`. Default 10,000.
    pub max_rooms: usize,
    /// Members one room may have; past it, joining it is refused with `room_full` (and the lobby
    /// at the handshake: 503 for a tutorial client, an error frame for a v1 client). Default
    /// 10,000.
    pub max_members: usize,
    /// Rooms one connection may be in at once, the lobby included; past it, joining is refused
    /// with `too_many_rooms`. Default 32.
    pub max_per_connection: usize,
}

impl Default for RoomLimits {
    fn default() -> Self {
        Self { max_rooms: 10_000, max_members: 10_000, max_per_connection: 32 }
    }
}

/// An open room, or one being read from the store (those joining it meanwhile wait for it).
type Slot = Arc<OnceCell<Arc<Room>>>;

/// The open rooms.
pub struct Rooms {
    core: Arc<Core>,
    open: Mutex<HashMap<Arc<str>, Slot>>,
    lobby: Arc<Room>,
    /// With a store: where rooms are read from as they open.
    reader: Option<RoomReader>,
    max_rooms: usize,
    history_limit: usize,
    next_id: AtomicU64,
    connections: AtomicUsize,
}

impl Rooms {
    /// The rooms of a relay whose rooms share `core`, each keeping `history_limit` messages;
    /// the lobby opens now, going on from `lobby`. With a `reader` (and `core` with a journal),
    /// rooms are read from the store as they open.
    #[must_use]
    pub fn new(
        core: Arc<Core>,
        lobby: History,
        reader: Option<RoomReader>,
        max_rooms: usize,
        history_limit: usize,
    ) -> Self {
        let lobby = Arc::new(Room::new(LOBBY.into(), lobby, Arc::clone(&core)));
        let slot = Arc::new(OnceCell::new_with(Some(Arc::clone(&lobby))));
        let open = HashMap::from([(Arc::clone(lobby.shared_name()), slot)]);
        core.metrics.rooms.set(1);
        Self {
            core,
            open: Mutex::new(open),
            lobby,
            reader,
            max_rooms,
            history_limit,
            next_id: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
        }
    }

    /// The lobby, always open.
    #[must_use]
    pub fn lobby(&self) -> &Arc<Room> {
        &self.lobby
    }

    /// The journal; only for a relay with a store.
    ///
    /// # Panics
    /// Without a store: the committer runs only with one.
    #[must_use]
    pub fn journal(&self) -> &Journal {
        self.core.journal.as_ref().expect("the committer runs only with a store")
    }

    /// With a store: takes `bytes` of the budget for messages waiting for their commit (see
    /// `Journal::admit`). Without: nothing.
    pub async fn admit(&self, bytes: usize) -> Admission<'_> {
        match &self.core.journal {
            Some(journal) => journal.admit(bytes).await,
            None => Admission::none(),
        }
    }

    /// An id for a new client.
    pub fn next_client_id(&self) -> ClientId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts a new connection in, unless `max` are open already. Checked and counted in one
    /// step, so concurrent handshakes cannot overshoot it.
    pub fn connect(self: &Arc<Self>, max: usize) -> Option<ConnectionSlot> {
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()?;
        Some(ConnectionSlot { rooms: Arc::clone(self) })
    }

    /// Connections open now.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Adds `joiner` to the room `name` (a valid room name), opening it if need be, and greets
    /// it. The seat keeps it there until dropped.
    ///
    /// # Errors
    /// [`ErrorCode::RoomsFull`] when the room is not open and no other can make way for it,
    /// [`ErrorCode::RoomFull`] when it has its most members, [`ErrorCode::Unavailable`] when the
    /// store cannot be read now.
    pub async fn join(
        self: &Arc<Self>,
        name: &str,
        joiner: Joiner,
        greeting: &Greeting,
    ) -> Result<Seat, ErrorCode> {
        loop {
            let room = self.open(name).await?;
            match room.join(joiner.clone(), greeting) {
                Ok(()) => {
                    return Ok(Seat { rooms: Arc::clone(self), room, id: joiner.id });
                }
                Err(JoinError::Full) => return Err(ErrorCode::RoomFull),
                // Closed between opening and joining: the next lookup opens it anew.
                Err(JoinError::Retired) => continue,
            }
        }
    }

    /// The open room `name`, opening it if need be.
    async fn open(&self, name: &str) -> Result<Arc<Room>, ErrorCode> {
        let slot = {
            let mut open = self.lock();
            match open.get(name) {
                Some(slot) => Arc::clone(slot),
                None => {
                    self.make_way(&mut open)?;
                    let slot = Slot::default();
                    open.insert(name.into(), Arc::clone(&slot));
                    self.core.metrics.rooms.set(gauge(open.len()));
                    slot
                }
            }
        };
        let opened = slot.get_or_try_init(|| self.load(name)).await.map(Arc::clone);
        if opened.is_err() {
            // Nobody holds the slot's room: forget the slot, so the next join tries again.
            let mut open = self.lock();
            if open.get(name).is_some_and(|current| Arc::ptr_eq(current, &slot))
                && !slot.initialized()
            {
                open.remove(name);
                self.core.metrics.rooms.set(gauge(open.len()));
            }
        }
        opened
    }

    /// With `--redis`: the link to Redis.
    #[must_use]
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.core.cluster.as_ref()
    }

    /// Whether a room's history outlives the room (with a store, or in Redis): idle rooms then
    /// close at once, to be read again when someone joins.
    fn kept_elsewhere(&self) -> bool {
        self.reader.is_some() || self.core.cluster.is_some()
    }

    /// A new room's history: read from the store or Redis, or new. In Redis, the room's tail
    /// starts with it.
    async fn load(&self, name: &str) -> Result<Arc<Room>, ErrorCode> {
        if let Some(cluster) = &self.core.cluster {
            let loaded = cluster.load(name).await.map_err(|error| {
                tracing::warn!(%error, "cannot open a room from redis");
                ErrorCode::Unavailable
            })?;
            let room = Arc::new(Room::new(name.into(), loaded.history, Arc::clone(&self.core)));
            cluster.tail(&room);
            return Ok(room);
        }
        let history = match &self.reader {
            None => History::new(uuid::Uuid::new_v4().to_string(), self.history_limit),
            Some(reader) => {
                let (reader, room) = (reader.clone(), name.to_owned());
                let loaded = tokio::task::spawn_blocking(move || reader.load(&room)).await;
                match loaded {
                    Ok(Ok(saved)) => History::resume(
                        saved.epoch,
                        self.history_limit,
                        saved.latest_seq,
                        saved.messages,
                    ),
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "cannot open a room");
                        return Err(ErrorCode::Unavailable);
                    }
                    Err(join_error) => {
                        tracing::error!(%join_error, "reading a room failed");
                        return Err(ErrorCode::Unavailable);
                    }
                }
            }
        };
        Ok(Arc::new(Room::new(name.into(), history, Arc::clone(&self.core))))
    }

    /// Makes way for one more room when `max_rooms` are open: without a store, the room empty
    /// for longest closes (its history is lost, as it would be on a restart).
    fn make_way(&self, open: &mut HashMap<Arc<str>, Slot>) -> Result<(), ErrorCode> {
        if open.len() < self.max_rooms {
            return Ok(());
        }
        if self.kept_elsewhere() {
            // With a store or Redis, idle rooms close at once: every open one is in use.
            return Err(ErrorCode::RoomsFull);
        }
        let oldest = open
            .iter()
            .filter_map(|(name, slot)| Some((name, slot.get()?)))
            .filter(|(_, room)| !Arc::ptr_eq(room, &self.lobby))
            .filter_map(|(name, room)| Some((room.idle_since()?, name, room)))
            .min_by_key(|(emptied_at, ..)| *emptied_at)
            .map(|(_, name, room)| (Arc::clone(name), Arc::clone(room)));
        match oldest {
            Some((name, room)) if room.retire_if_idle() => {
                open.remove(&name);
                Ok(())
            }
            _ => Err(ErrorCode::RoomsFull),
        }
    }

    /// Closes `room` if it is idle and may close now: with a store, and never the lobby.
    pub fn retire_if_idle(&self, room: &Arc<Room>) {
        if !self.kept_elsewhere() || Arc::ptr_eq(room, &self.lobby) {
            return;
        }
        let mut open = self.lock();
        let current = open.get(room.name()).and_then(|slot| slot.get());
        if current.is_some_and(|current| Arc::ptr_eq(current, room)) && room.retire_if_idle() {
            open.remove(room.name());
            self.core.metrics.rooms.set(gauge(open.len()));
        }
    }

    /// Every open room.
    #[must_use]
    pub fn open_rooms(&self) -> Vec<Arc<Room>> {
        self.lock().values().filter_map(|slot| slot.get().cloned()).collect()
    }

    /// The open rooms with members for which `may_join` says yes, most members first (then by
    /// name), as many as fit `max_bytes` of the answer. With `--redis`, the rooms of every node,
    /// their members counted on all of them.
    #[must_use]
    pub fn list(&self, may_join: impl Fn(&str) -> bool, max_bytes: usize) -> ServerFrame {
        let mut members =
            self.core.cluster.as_ref().map(|c| c.rooms_elsewhere()).unwrap_or_default();
        for room in self.lock().values().filter_map(|slot| slot.get()) {
            *members.entry(room.name().to_owned()).or_default() += room.len() as u64;
        }
        let mut rooms: Vec<RoomInfo> = members
            .into_iter()
            .filter(|(room, members)| *members > 0 && may_join(room))
            .map(|(room, members)| RoomInfo { room, members })
            .collect();
        rooms.sort_by(|a, b| b.members.cmp(&a.members).then_with(|| a.room.cmp(&b.room)));
        // About what each entry takes: `{"room":"","members":}` and its number, a comma.
        let mut bytes = 0;
        let fitting = rooms
            .iter()
            .take_while(|info| {
                bytes += info.room.len() + 40;
                bytes <= max_bytes
            })
            .count();
        rooms.truncate(fitting);
        ServerFrame::Rooms { rooms }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Slot>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A count as a gauge's value.
fn gauge(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// A client's place in a room: leaves the room when dropped, however the connection ended
/// (including an upgrade that never completes), and lets the room close if it is then idle.
pub struct Seat {
    rooms: Arc<Rooms>,
    room: Arc<Room>,
    id: ClientId,
}

impl Seat {
    /// A seat for a client the room has already taken (`Room::join`).
    #[must_use]
    pub fn taken(rooms: &Arc<Rooms>, room: Arc<Room>, id: ClientId) -> Self {
        Self { rooms: Arc::clone(rooms), room, id }
    }

    /// The room.
    #[must_use]
    pub fn room(&self) -> &Arc<Room> {
        &self.room
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        if self.room.leave(self.id) {
            self.rooms.retire_if_idle(&self.room);
        }
    }
}

/// A connection counted among the open ones until dropped.
pub struct ConnectionSlot {
    rooms: Arc<Rooms>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.rooms.connections.fetch_sub(1, Ordering::AcqRel);
    }
}
