//! The committer: one thread that writes new messages to the store in batches, one transaction
//! and one fsync per batch of whatever waited in any room, outside every room's lock, and brings
//! the store back when a write fails; and the journal, where rooms with messages waiting queue up
//! for it.
//!
//! Grouping is what makes durability fast: while one batch is being synced, new messages pile up
//! (in any number of rooms) and go into the next transaction together, so many concurrent
//! senders share each fsync, instead of each message paying for its own under its room's lock
//! (about 1,800 messages a second before). A thread of its own rather than `spawn_blocking`: it
//! lives as long as the relay and spends its life in blocking file I/O.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};
use tracing::{error, info, warn};

use crate::metrics::Metrics;
use crate::room::{Batch, Room};
use crate::rooms::Rooms;
use crate::store::{RoomBatch, Store};

/// The first pause before trying to reopen a failed store again; it doubles up to [`LAST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(50);
/// The longest pause between two tries at reopening a failed store.
const LAST_RETRY: Duration = Duration::from_secs(5);

/// The most bytes of messages that may wait for their commit at once, in all rooms. Past it,
/// readers wait before they take another message (their clients' sockets fill and they slow
/// down), rather than memory growing while the disk lags. Sixteen MiB is thousands of messages:
/// the disk has to be far behind for anyone to wait.
const UNCOMMITTED_BYTES: usize = 16 * 1024 * 1024;

/// Whether new messages are taken, with a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The committer writes every message before it is acked or relayed.
    Committing,
    /// A commit failed and the committer is reopening the store: new messages are refused.
    Failing,
    /// The relay is stopping: what waits is still written, new messages are refused.
    Closing,
}

/// The rooms with messages waiting for the committer, and whether it takes new ones. Locked
/// inside a room's lock (a room queues itself while numbering a message), never the other way
/// round: the committer takes the queue, lets go of it, then locks each room.
pub struct Journal {
    state: Mutex<JournalState>,
    /// Wakes the committer when a room queues up or the relay stops.
    wake: Condvar,
    /// The budget of bytes of uncommitted messages ([`UNCOMMITTED_BYTES`]).
    admission: Semaphore,
}

struct JournalState {
    durability: Durability,
    /// Rooms with messages waiting, in the order they queued up; each at most once.
    rooms: Vec<Arc<Room>>,
}

/// What a message holds of the budget for uncommitted messages: kept by the message until it is
/// committed or refused, given back at once if it never waits for a commit.
pub struct Admission<'a>(Option<SemaphorePermit<'a>>);

impl Admission<'_> {
    /// Nothing held: for a relay without a store.
    pub fn none() -> Self {
        Self(None)
    }

    /// Hands the permits over to a waiting message (given back by its room later).
    pub fn keep(self) -> usize {
        self.0.map_or(0, |permit| {
            let permits = permit.num_permits();
            permit.forget();
            permits
        })
    }
}

impl Default for Journal {
    fn default() -> Self {
        Self {
            state: Mutex::new(JournalState {
                durability: Durability::Committing,
                rooms: Vec::new(),
            }),
            wake: Condvar::new(),
            admission: Semaphore::new(UNCOMMITTED_BYTES),
        }
    }
}

impl Journal {
    /// Whether new messages are taken now.
    pub fn durability(&self) -> Durability {
        self.lock().durability
    }

    /// Queues `room`, which has messages waiting (a room queues itself once until the committer
    /// takes them).
    pub fn enqueue(&self, room: Arc<Room>) {
        self.lock().rooms.push(room);
        self.wake.notify_one();
    }

    /// For the committer: waits until rooms have messages waiting, and takes them all. `None`
    /// once the relay is stopping and nothing waits.
    pub fn next_rooms(&self) -> Option<Vec<Arc<Room>>> {
        let mut state = self.lock();
        loop {
            if !state.rooms.is_empty() {
                return Some(std::mem::take(&mut state.rooms));
            }
            if state.durability == Durability::Closing {
                return None;
            }
            state = self.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// For the committer: a commit failed; new messages are refused until [`Journal::recovered`].
    pub fn failing(&self) {
        let mut state = self.lock();
        if state.durability == Durability::Committing {
            state.durability = Durability::Failing;
        }
    }

    /// For the committer: the store holds every committed message again; new messages are taken.
    pub fn recovered(&self) {
        let mut state = self.lock();
        if state.durability == Durability::Failing {
            state.durability = Durability::Committing;
        }
    }

    /// Stops taking new messages (they are refused with `unavailable`) and tells the committer
    /// to write what waits and stop. Called when the relay stops, after the sockets closed.
    pub fn close(&self) {
        self.lock().durability = Durability::Closing;
        self.wake.notify_all();
    }

    /// For the committer, between two tries at reopening the store: waits `pause`, or less if
    /// the relay starts stopping. True when it is stopping (stop trying).
    pub fn pause_unless_closing(&self, pause: Duration) -> bool {
        let state = self.lock();
        if state.durability == Durability::Closing {
            return true;
        }
        let (state, _) =
            self.wake.wait_timeout(state, pause).unwrap_or_else(PoisonError::into_inner);
        state.durability == Durability::Closing
    }

    /// Takes `bytes` of the budget for messages waiting for their commit, waiting for the
    /// committer to give some back if need be. Taken before a frame is read into a message, and
    /// handed to the room with it.
    pub async fn admit(&self, bytes: usize) -> Admission<'_> {
        let permits = u32::try_from(bytes.clamp(1, UNCOMMITTED_BYTES)).unwrap_or(u32::MAX);
        // The semaphore is never closed.
        Admission(self.admission.acquire_many(permits).await.ok())
    }

    /// Gives back what committed or refused messages held of the budget.
    pub fn release(&self, permits: usize) {
        self.admission.add_permits(permits);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JournalState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running committer. Dropping it (without [`Committer::finish`]) still tells it to write what
/// waits and stop, without waiting for that.
pub struct Committer {
    rooms: Arc<Rooms>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts the committer for `rooms`, which must have a journal, writing to `store`.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(
        rooms: Arc<Rooms>,
        store: Box<dyn Store>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let thread = std::thread::Builder::new().name("wschat-commit".into()).spawn({
            let rooms = Arc::clone(&rooms);
            move || run(&rooms, store, &metrics)
        })?;
        Ok(Self { rooms, thread: Some(thread) })
    }

    /// Has the committer write what waits and stop taking new messages, and returns once it has
    /// closed the store (its file can then be opened by another relay).
    pub async fn finish(mut self) {
        self.rooms.journal().close();
        let Some(thread) = self.thread.take() else { return };
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(())) => {}
            Ok(Err(_panic)) => error!("the committer thread panicked"),
            Err(join_error) => error!(%join_error, "cannot wait for the committer thread"),
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.rooms.journal().close();
    }
}

/// Writes batch after batch until the relay stops; after a failed write, reopens the store before
/// taking the next batch.
fn run(rooms: &Rooms, mut store: Box<dyn Store>, metrics: &Metrics) {
    let journal = rooms.journal();
    while let Some(queued) = journal.next_rooms() {
        let batches: Vec<(Arc<Room>, Batch)> = queued
            .into_iter()
            .map(|room| {
                let batch = room.take_waiting();
                (room, batch)
            })
            .filter(|(_, batch)| !batch.messages.is_empty())
            .collect();
        if batches.is_empty() {
            continue;
        }
        let parts: Vec<RoomBatch<'_>> = batches
            .iter()
            .map(|(room, batch)| RoomBatch {
                room: room.name(),
                epoch: &batch.epoch,
                messages: batch.messages.iter().map(|pending| &pending.message).collect(),
            })
            .collect();
        let messages: usize = parts.iter().map(|part| part.messages.len()).sum();
        let started = Instant::now();
        let written = store.append(&parts);
        drop(parts);
        metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
        match written {
            Ok(()) => {
                metrics.commit_batch_size.observe(messages as f64);
                for (room, batch) in batches {
                    if room.committed(batch) {
                        rooms.retire_if_idle(&room);
                    }
                }
            }
            Err(error) => {
                metrics.store_failures.inc();
                error!(
                    %error,
                    messages,
                    rooms = batches.len(),
                    "commit failed: its messages are refused (unavailable) until the store is reopened"
                );
                // First, so that no room takes a message between its refusal and the next.
                journal.failing();
                for (room, batch) in batches {
                    room.commit_failed(batch);
                }
                recover(rooms, &mut *store, metrics);
            }
        }
    }
    info!("history file closed");
}

/// Reopens the store until it holds exactly the committed history of every open room again,
/// pausing longer after each failure; a room whose history the file no longer continues (the
/// file was replaced, or lost what it had written) starts over in a new epoch, in the file and
/// in memory. Returns early when the relay stops.
fn recover(rooms: &Rooms, store: &mut dyn Store, metrics: &Metrics) {
    let journal = rooms.journal();
    let mut pause = FIRST_RETRY;
    loop {
        let open = rooms.open_rooms();
        let committed: Vec<(Arc<Room>, String, u64)> = open
            .into_iter()
            .map(|room| {
                let (epoch, seq) = room.committed_seq();
                (room, epoch, seq)
            })
            .collect();
        let wanted: Vec<(&str, u64)> =
            committed.iter().map(|(room, _, seq)| (room.name(), *seq)).collect();
        match store.reopen(&wanted).and_then(|found| {
            let mut restarted = Vec::new();
            for ((room, epoch, seq), found) in committed.iter().zip(found) {
                let continues = match &found {
                    Some(position) => position.epoch == *epoch && position.latest_seq == *seq,
                    // The file never had a message of the room: nor did anyone see one.
                    None => *seq == 0,
                };
                if !continues {
                    let new_epoch = uuid::Uuid::new_v4().to_string();
                    store.restart(room.name(), &new_epoch)?;
                    warn!(
                        room = room.name(),
                        epoch,
                        committed_seq = seq,
                        file = ?found,
                        new_epoch,
                        "the history file no longer holds the conversation clients saw: new epoch"
                    );
                    restarted.push((Arc::clone(room), new_epoch));
                }
            }
            Ok(restarted)
        }) {
            Ok(restarted) => {
                for (room, epoch) in restarted {
                    room.restart_epoch(epoch);
                }
                info!(rooms = committed.len(), "history file reopened: taking messages again");
                journal.recovered();
                return;
            }
            Err(error) => {
                metrics.store_failures.inc();
                warn!(%error, retry_in = ?pause, "cannot reopen the history file");
            }
        }
        if journal.pause_unless_closing(pause) {
            return;
        }
        pause = (pause * 2).min(LAST_RETRY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, VecDeque};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use axum::extract::ws::Message;
    use wschat_protocol::rooms::LOBBY;
    use wschat_protocol::v1::ServerFrame;
    use wschat_protocol::ErrorCode;

    use crate::dedupe::{Dedupe, Limits};
    use crate::history::{History, Posted};
    use crate::outbound::{frame_bytes, Outbound};
    use crate::room::{Core, Greeting, Joiner, Mode};
    use crate::rooms::Seat;
    use crate::store::{HistoryStore, Position, StoreError, HISTORY_FILE};

    /// Guards against a hang, never a performance assertion.
    const PATIENCE: Duration = Duration::from_secs(20);

    /// What the test tells the faulty store to do next.
    #[derive(Clone, Default)]
    struct Faults {
        /// Commits to fail from now on; after each, every write fails until a reopen.
        fail_commits: Arc<AtomicUsize>,
        /// Whether a failing commit still reaches the disk (the fsync failed after the write).
        written_anyway: Arc<AtomicBool>,
        /// Reopens to fail.
        fail_reopens: Arc<AtomicUsize>,
        /// Whether the next reopen finds the file gone (a disk replaced, a directory wiped).
        lose_file: Arc<AtomicBool>,
    }

    fn take_one(count: &AtomicUsize) -> bool {
        count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok()
    }

    /// A real history file that fails the way redb does: once a write fails, every later one
    /// fails too (`PreviousIo`) until the file is reopened.
    struct FaultyStore {
        inner: HistoryStore,
        dir: PathBuf,
        faults: Faults,
        latched: bool,
    }

    impl Store for FaultyStore {
        fn append(&mut self, batch: &[RoomBatch<'_>]) -> Result<(), StoreError> {
            if !self.latched && take_one(&self.faults.fail_commits) {
                self.latched = true;
                if self.faults.written_anyway.load(Ordering::Relaxed) {
                    self.inner.append(batch)?;
                }
                let source = redb::Error::Io(std::io::Error::other("fsync: input/output error"));
                return Err(StoreError::Write { messages: batch.len(), source });
            }
            if self.latched {
                let source = redb::Error::PreviousIo;
                return Err(StoreError::Write { messages: batch.len(), source });
            }
            self.inner.append(batch)
        }

        fn reopen(
            &mut self,
            committed: &[(&str, u64)],
        ) -> Result<Vec<Option<Position>>, StoreError> {
            if take_one(&self.faults.fail_reopens) {
                let source = redb::Error::Io(std::io::Error::other("still failing"));
                return Err(StoreError::Open { path: self.dir.join(HISTORY_FILE), source });
            }
            if self.faults.lose_file.swap(false, Ordering::Relaxed) {
                std::fs::remove_file(self.dir.join(HISTORY_FILE)).unwrap();
            }
            self.latched = false;
            self.inner.reopen(committed)
        }

        fn restart(&mut self, room: &str, epoch: &str) -> Result<(), StoreError> {
            self.inner.restart(room, epoch)
        }
    }

    /// A relay's rooms and committer on the history file in `dir`, as `run` starts them.
    fn start(dir: &Path, faults: &Faults) -> (Arc<Rooms>, Committer) {
        let opened = HistoryStore::open(dir, 1000).unwrap();
        let saved = opened.reader.load(LOBBY).unwrap();
        let lobby = History::resume(saved.epoch, 1000, saved.latest_seq, saved.messages);
        let metrics = Arc::new(Metrics::new());
        let mut dedupe = Dedupe::new(Limits::default());
        for recent in &opened.recent {
            let sent = &recent.sent;
            let key = crate::dedupe::sender_key(&recent.room, &sent.sender);
            dedupe.remember(&key, &sent.id, sent.seq, sent.at_ms);
        }
        let core = Arc::new(Core {
            queue_bytes: 4 * 1024 * 1024,
            max_members: usize::MAX,
            metrics: Arc::clone(&metrics),
            dedupe: Mutex::new(dedupe),
            journal: Some(Journal::default()),
            ticks: std::sync::atomic::AtomicU64::new(0),
            cluster: None,
        });
        let rooms = Arc::new(Rooms::new(core, lobby, Some(opened.reader), 100, 1000));
        let store = FaultyStore {
            inner: opened.store,
            dir: dir.to_owned(),
            faults: faults.clone(),
            latched: false,
        };
        let committer = Committer::start(Arc::clone(&rooms), Box::new(store), metrics).unwrap();
        (rooms, committer)
    }

    /// A client in one room, reading its queue as its writer would.
    struct Tab {
        seat: Seat,
        id: u64,
        outbound: Arc<Outbound>,
        inbox: VecDeque<Message>,
    }

    impl Tab {
        /// A v1 client in the lobby.
        fn join(rooms: &Arc<Rooms>) -> Self {
            let id = rooms.next_client_id();
            let outbound = Arc::new(Outbound::default());
            let joiner =
                Joiner { id, outbound: Arc::clone(&outbound), mode: Mode::V1, name: "ada".into() };
            rooms.lobby().join(joiner, &Greeting::Welcome).unwrap();
            let seat = Seat::taken(rooms, Arc::clone(rooms.lobby()), id);
            Self { seat, id, outbound, inbox: VecDeque::new() }
        }

        /// A v1 client in room `name`.
        async fn join_room(rooms: &Arc<Rooms>, name: &str) -> Self {
            let id = rooms.next_client_id();
            let outbound = Arc::new(Outbound::default());
            let joiner =
                Joiner { id, outbound: Arc::clone(&outbound), mode: Mode::V1, name: "ada".into() };
            let seat = rooms.join(name, joiner, &Greeting::Joined { after: None }).await.unwrap();
            Self { seat, id, outbound, inbox: VecDeque::new() }
        }

        async fn next(&mut self) -> ServerFrame {
            if self.inbox.is_empty() {
                let outbound = &self.outbound;
                tokio::time::timeout(PATIENCE, outbound.take(&mut self.inbox)).await.unwrap();
            }
            let frame = self.inbox.pop_front().unwrap();
            self.outbound.sent(1, frame_bytes(&frame));
            ServerFrame::from_json(frame.to_text().unwrap()).unwrap()
        }

        /// Everything queued so far, without waiting.
        fn rest(&mut self) -> Vec<ServerFrame> {
            let mut frames: Vec<_> = self.inbox.drain(..).collect();
            frames.extend(self.outbound.take_now());
            frames
                .iter()
                .map(|frame| ServerFrame::from_json(frame.to_text().unwrap()).unwrap())
                .collect()
        }

        async fn post(&self, rooms: &Rooms, id: &str) {
            let posted = Posted { id: id.into(), source: "ada".into(), content: id.into() };
            let admission = rooms.admit(id.len()).await;
            self.seat.room().post(self.id, posted, 0, admission);
        }
    }

    /// Sends `ids` from `tab` at once, as an outbox flushing, and reads until each has been
    /// acked or refused. Records the acks; returns the refused ids (to send again, as the app's
    /// outbox does).
    async fn send_all(
        room: &Rooms,
        tab: &mut Tab,
        ids: &[String],
        acked: &mut HashMap<String, u64>,
    ) -> Vec<String> {
        for id in ids {
            tab.post(room, id).await;
        }
        let mut refused = Vec::new();
        let mut answered = 0;
        while answered < ids.len() {
            match tab.next().await {
                ServerFrame::Ack { id, seq, .. } => {
                    let first = *acked.entry(id.clone()).or_insert(seq);
                    assert_eq!(first, seq, "{id} acked under two seqs");
                    answered += 1;
                }
                ServerFrame::Error { error, id: Some(id), .. } => {
                    assert_eq!(error.code, ErrorCode::Unavailable);
                    refused.push(id);
                    answered += 1;
                }
                ServerFrame::Message { .. }
                | ServerFrame::Welcome { .. }
                | ServerFrame::Joined { .. }
                | ServerFrame::Presence { .. }
                | ServerFrame::History { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        refused
    }

    /// Bursts of messages from two tabs while commits fail now and then (once with the batch
    /// reaching the disk anyway, once with the file slow to reopen): each refused message is
    /// sent again until acked. Every acked message is in the file after a restart under the seq
    /// its ack gave, the seqs are contiguous, none was given to two messages, and a watching tab
    /// received each stored message exactly once, in seq order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_acked_is_lost_and_no_seq_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::default();
        let (room, committer) = start(dir.path(), &faults);
        let (epoch_before, _) = room.lobby().committed_seq();
        let mut tabs = [Tab::join(&room), Tab::join(&room)];
        let mut watcher = Tab::join(&room);
        let mut acked = HashMap::new();
        let mut retry: [Vec<String>; 2] = Default::default();
        let mut refusals = 0;
        for round in 0..30 {
            match round {
                10 => faults.fail_commits.store(1, Ordering::Relaxed),
                20 => {
                    faults.written_anyway.store(true, Ordering::Relaxed);
                    faults.fail_reopens.store(2, Ordering::Relaxed);
                    faults.fail_commits.store(1, Ordering::Relaxed);
                }
                _ => {}
            }
            for (n, tab) in tabs.iter_mut().enumerate() {
                let mut ids = std::mem::take(&mut retry[n]);
                ids.extend((0..5).map(|k| format!("tab{n}-{round}-{k}")));
                retry[n] = send_all(&room, tab, &ids, &mut acked).await;
                refusals += retry[n].len();
            }
        }
        // The outbox's retry: once the store is back, send what was refused again.
        while retry.iter().any(|ids| !ids.is_empty()) {
            tokio::time::timeout(PATIENCE, async {
                while room.journal().durability() != Durability::Committing {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .expect("the store comes back");
            for (n, tab) in tabs.iter_mut().enumerate() {
                let ids = std::mem::take(&mut retry[n]);
                retry[n] = send_all(&room, tab, &ids, &mut acked).await;
            }
        }
        assert_eq!(acked.len(), 2 * 30 * 5);
        committer.finish().await;

        let saved = HistoryStore::open(dir.path(), 1000).unwrap().reader.load(LOBBY).unwrap();
        assert_eq!(saved.epoch, epoch_before, "recovering kept the epoch");
        let stored: Vec<_> = saved.messages.iter().map(|m| (m.seq, m.id.clone())).collect();
        let expected_seqs: Vec<_> = (1..=saved.latest_seq).collect();
        assert_eq!(stored.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), expected_seqs);
        assert_eq!(stored.len(), acked.len(), "only acked messages were stored, each once");
        for (seq, id) in &stored {
            assert_eq!(acked.get(id), Some(seq), "{id}");
        }
        let watched: Vec<_> = watcher
            .rest()
            .into_iter()
            .filter_map(|frame| match frame {
                ServerFrame::Message { message, .. } => Some((message.seq, message.id)),
                _ => None,
            })
            .collect();
        assert_eq!(watched, stored, "the watcher got every stored message once, in order");
        assert_eq!(faults.fail_commits.load(Ordering::Relaxed), 0, "both commits failed");
        assert_eq!(faults.fail_reopens.load(Ordering::Relaxed), 0, "and two reopens");
        assert!(refusals >= 2, "at least the two failed batches were refused: {refusals}");
    }

    /// The file is gone when the committer reopens it after a failure: the history clients saw
    /// cannot go on, so a new epoch starts, in memory and in the file; v1 tabs are closed with
    /// 1012 to learn it, and numbering starts from 1.
    #[tokio::test]
    async fn a_lost_file_starts_a_new_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::default();
        let (room, committer) = start(dir.path(), &faults);
        let (old_epoch, _) = room.lobby().committed_seq();
        let mut alice = Tab::join(&room);
        let mut acked = HashMap::new();
        let ids: Vec<_> = (1..=3).map(|n| format!("m{n}")).collect();
        assert!(send_all(&room, &mut alice, &ids, &mut acked).await.is_empty());

        faults.lose_file.store(true, Ordering::Relaxed);
        faults.fail_commits.store(1, Ordering::Relaxed);
        let refused = send_all(&room, &mut alice, &["m4".into()], &mut acked).await;
        assert_eq!(refused, ["m4"]);
        let closed = tokio::time::timeout(PATIENCE, alice.outbound.closed()).await;
        assert_eq!(closed.unwrap().code(), Some(1012));

        let (new_epoch, latest) = room.lobby().committed_seq();
        assert_ne!(new_epoch, old_epoch);
        assert_eq!(latest, 0);
        let mut bob = Tab::join(&room);
        assert!(matches!(bob.next().await, ServerFrame::Welcome { latest_seq: 0, .. }));
        let mut acked = HashMap::new();
        // The store may still be reopening when bob posts: a refusal (`unavailable`) is sent
        // again, as the page's outbox does.
        let deadline = Instant::now() + PATIENCE;
        while !send_all(&room, &mut bob, &["m4".into()], &mut acked).await.is_empty() {
            assert!(Instant::now() < deadline, "m4 never taken in the new epoch");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(acked["m4"], 1);
        committer.finish().await;
        let saved = HistoryStore::open(dir.path(), 1000).unwrap().reader.load(LOBBY).unwrap();
        assert_eq!((saved.epoch, saved.latest_seq), (new_epoch, 1));
    }

    /// Two rooms posting at once share commits, each numbered from 1; a room whose last member
    /// left closes once its messages are on disk, and opens again from the file with them.
    #[tokio::test]
    async fn rooms_share_commits_and_reopen_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (rooms, committer) = start(dir.path(), &Faults::default());
        let mut a = Tab::join_room(&rooms, "a").await;
        let mut b = Tab::join_room(&rooms, "b").await;
        let ids: Vec<_> = (1..=5).map(|n| format!("m{n}")).collect();
        for id in &ids {
            a.post(&rooms, id).await;
            b.post(&rooms, id).await;
        }
        for tab in [&mut a, &mut b] {
            let mut acked = Vec::new();
            while acked.len() < ids.len() {
                if let ServerFrame::Ack { seq, .. } = tab.next().await {
                    acked.push(seq);
                }
            }
            assert_eq!(acked, [1, 2, 3, 4, 5]);
        }
        let epoch_a = a.seat.room().committed_seq().0;
        let first_a = Arc::clone(a.seat.room());
        drop(a);
        assert!(!rooms.open_rooms().iter().any(|room| Arc::ptr_eq(room, &first_a)), "a closed");
        let mut again = Tab::join_room(&rooms, "a").await;
        assert!(!Arc::ptr_eq(again.seat.room(), &first_a), "a new room from the file");
        match again.next().await {
            ServerFrame::Joined { epoch, latest_seq: 5, .. } => assert_eq!(epoch, epoch_a),
            other => panic!("{other:?}"),
        }
        drop((again, b));
        committer.finish().await;
    }
}
