//! The room: who is connected, and fan-out of each message to everyone but its sender.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::ws::{CloseFrame, Message};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Identifies one connected client for the lifetime of the relay process.
pub type ClientId = u64;

/// Everything the room keeps for one connected client.
struct Member {
    /// The client's bounded outbound queue, drained by its writer task.
    outbound: mpsc::Sender<Message>,
    /// Cancelled to make the client's connection close.
    stop: CancellationToken,
    /// Why the room stopped the client, when it did (read by the writer to pick the close code).
    eviction: Arc<OnceLock<CloseFrame>>,
}

/// A client's place in the room: leaves the room when dropped, however the connection ends
/// (including an upgrade that never completes).
pub struct Seat {
    room: Arc<Room>,
    id: ClientId,
}

impl Seat {
    /// The client's id, for logs.
    #[must_use]
    pub fn id(&self) -> ClientId {
        self.id
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.room.leave(self.id);
    }
}

/// What a connection task holds for itself after joining the room.
pub struct Membership {
    /// Keeps the client in the room until dropped.
    pub seat: Seat,
    /// Frames to write to this client's socket.
    pub outbound: mpsc::Receiver<Message>,
    /// Cancelled when the connection must close: relay shutdown or eviction.
    pub stop: CancellationToken,
    /// Set (before `stop` is cancelled) when the room evicted this client.
    pub eviction: Arc<OnceLock<CloseFrame>>,
}

/// The set of connected clients.
///
/// A std `Mutex` is right here: it is held only to look up senders and call `try_send`, never across
/// an `.await`, so no task can stall another while holding it.
pub struct Room {
    members: Mutex<HashMap<ClientId, Member>>,
    next_id: AtomicU64,
    queue_capacity: usize,
}

/// A client whose queue overflowed and which was therefore evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evicted(pub ClientId);

impl Room {
    /// An empty room whose members each get an outbound queue of `queue_capacity` frames.
    ///
    /// # Panics
    /// If `queue_capacity` is 0 (a queue must hold at least one frame).
    #[must_use]
    pub fn new(queue_capacity: usize) -> Self {
        assert!(queue_capacity > 0, "the outbound queue must hold at least one frame");
        Self { members: Mutex::default(), next_id: AtomicU64::new(1), queue_capacity }
    }

    /// Adds a client; `shutdown` is the relay's own token, so that shutting down stops everyone.
    ///
    /// The relay joins a client before it answers the WebSocket handshake: once the client sees its
    /// socket open, every message sent after that reaches it (queued until its writer starts).
    pub fn join(self: &Arc<Self>, shutdown: &CancellationToken) -> Membership {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (outbound, receiver) = mpsc::channel(self.queue_capacity);
        let stop = shutdown.child_token();
        let eviction = Arc::new(OnceLock::new());
        let member = Member { outbound, stop: stop.clone(), eviction: Arc::clone(&eviction) };
        lock(&self.members).insert(id, member);
        Membership { seat: Seat { room: Arc::clone(self), id }, outbound: receiver, stop, eviction }
    }

    /// Removes a client; harmless when it was already evicted.
    fn leave(&self, id: ClientId) {
        lock(&self.members).remove(&id);
    }

    /// How many clients are connected.
    #[must_use]
    pub fn len(&self) -> usize {
        lock(&self.members).len()
    }

    /// Queues `frame` for every client except `from`, without ever waiting.
    ///
    /// A client whose queue is full has stopped reading: it is evicted (its connection closes with
    /// 1008) rather than allowed to slow the sender or anyone else. Returns the evicted clients.
    pub fn broadcast(&self, from: ClientId, frame: &Message) -> Vec<Evicted> {
        let mut members = lock(&self.members);
        let mut evicted = Vec::new();
        for (&id, member) in members.iter() {
            if id != from && member.outbound.try_send(frame.clone()).is_err() {
                evicted.push(Evicted(id));
            }
        }
        for &Evicted(id) in &evicted {
            if let Some(member) = members.remove(&id) {
                evict(&member);
            }
        }
        evicted
    }

    /// Queues `frame` for one client (an answer to something it sent).
    ///
    /// Returns `Err(Evicted)` when that client's queue is full, after evicting it: a client that
    /// floods the relay with bad frames but never reads the answers is a slow consumer too.
    pub fn send_to(&self, id: ClientId, frame: Message) -> Result<(), Evicted> {
        let mut members = lock(&self.members);
        let Some(member) = members.get(&id) else {
            return Ok(());
        };
        if member.outbound.try_send(frame).is_ok() {
            return Ok(());
        }
        if let Some(member) = members.remove(&id) {
            evict(&member);
        }
        Err(Evicted(id))
    }
}

/// The close frame sent to a client whose outbound queue overflowed.
#[must_use]
pub fn slow_consumer_close() -> CloseFrame {
    CloseFrame {
        code: axum::extract::ws::close_code::POLICY,
        reason: "outbound queue full: the client is not reading its messages".into(),
    }
}

fn evict(member: &Member) {
    // `set` fails only if a reason was already recorded; the first reason is the one that counts.
    let _ = member.eviction.set(slow_consumer_close());
    member.stop.cancel();
}

/// Locks a mutex, recovering the data if a thread panicked while holding it: every critical section
/// here leaves the map consistent at each step, so the data is still good.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(body: &str) -> Message {
        Message::Text(body.into())
    }

    /// A message reaches every other member once, and never its sender.
    #[tokio::test]
    async fn broadcast_skips_the_sender() {
        let room = Arc::new(Room::new(4));
        let shutdown = CancellationToken::new();
        let mut a = room.join(&shutdown);
        let mut b = room.join(&shutdown);
        let mut c = room.join(&shutdown);
        assert!(room.broadcast(a.seat.id(), &text("hi")).is_empty());
        assert_eq!(b.outbound.recv().await, Some(text("hi")));
        assert_eq!(c.outbound.recv().await, Some(text("hi")));
        assert!(a.outbound.try_recv().is_err());
    }

    /// A member whose queue is full is evicted with 1008; the others keep receiving.
    #[tokio::test]
    async fn full_queue_evicts_only_that_member() {
        let room = Arc::new(Room::new(2));
        let shutdown = CancellationToken::new();
        let sender = room.join(&shutdown);
        let stalled = room.join(&shutdown);
        let mut reader = room.join(&shutdown);
        for n in 0..2 {
            assert!(room.broadcast(sender.seat.id(), &text(&n.to_string())).is_empty());
            reader.outbound.recv().await.unwrap();
        }
        assert_eq!(room.broadcast(sender.seat.id(), &text("2")), vec![Evicted(stalled.seat.id())]);
        assert!(stalled.stop.is_cancelled());
        assert_eq!(stalled.eviction.get().map(|close| close.code), Some(1008));
        assert_eq!(reader.outbound.recv().await, Some(text("2")));
        assert_eq!(room.len(), 2);
        assert!(!reader.stop.is_cancelled());
    }

    /// Shutting the relay down stops every member.
    #[test]
    fn shutdown_stops_everyone() {
        let room = Arc::new(Room::new(1));
        let shutdown = CancellationToken::new();
        let a = room.join(&shutdown);
        let b = room.join(&shutdown);
        shutdown.cancel();
        assert!(a.stop.is_cancelled() && b.stop.is_cancelled());
        assert!(a.eviction.get().is_none());
    }

    /// A client leaves the room when its seat is dropped, however its connection ended.
    #[test]
    fn dropping_the_seat_leaves_the_room() {
        let room = Arc::new(Room::new(1));
        let shutdown = CancellationToken::new();
        let a = room.join(&shutdown);
        let b = room.join(&shutdown);
        assert_eq!(room.len(), 2);
        drop(a);
        assert_eq!(room.len(), 1);
        drop(b);
        assert_eq!(room.len(), 0);
    }
}
