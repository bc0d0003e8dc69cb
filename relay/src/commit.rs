//! The committer: one thread that writes new messages to the store in batches, one transaction
//! and one fsync per batch of whatever waited, outside the room's lock, and brings the store back
//! when a write fails.
//!
//! Grouping is what makes durability fast: while one batch is being synced, new messages pile up
//! and go into the next transaction together, so many concurrent senders share each fsync,
//! instead of each message paying for its own under the room's lock (about 1,800 messages a
//! second before). A thread of its own rather than `spawn_blocking`: it lives as long as the
//! relay and spends its life in blocking file I/O.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};
use wschat_protocol::v1::StoredMessage;

use crate::metrics::Metrics;
use crate::room::Room;
use crate::store::Store;

/// The first pause before trying to reopen a failed store again; it doubles up to [`LAST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(50);
/// The longest pause between two tries at reopening a failed store.
const LAST_RETRY: Duration = Duration::from_secs(5);

/// The running committer. Dropping it (without [`Committer::finish`]) still tells it to write what
/// waits and stop, without waiting for that.
pub struct Committer {
    room: Arc<Room>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts the committer for `room`, which must have been made durable, writing to `store`.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(
        room: Arc<Room>,
        store: Box<dyn Store>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let thread = std::thread::Builder::new().name("wschat-commit".into()).spawn({
            let room = Arc::clone(&room);
            move || run(&room, store, &metrics)
        })?;
        Ok(Self { room, thread: Some(thread) })
    }

    /// Has the committer write what waits and stop taking new messages, and returns once it has
    /// closed the store (its file can then be opened by another relay).
    pub async fn finish(mut self) {
        self.room.close_store();
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
        self.room.close_store();
    }
}

/// Writes batch after batch until the relay stops; after a failed write, reopens the store before
/// taking the next batch.
fn run(room: &Room, mut store: Box<dyn Store>, metrics: &Metrics) {
    while let Some(batch) = room.next_batch() {
        let messages: Vec<&StoredMessage> = batch.iter().map(|pending| &pending.message).collect();
        let latest_seq = messages.last().map_or(0, |message| message.seq);
        let started = Instant::now();
        let written = store.append(&messages, latest_seq);
        metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
        match written {
            Ok(()) => {
                metrics.commit_batch_size.observe(batch.len() as f64);
                room.committed(batch);
            }
            Err(error) => {
                metrics.store_failures.inc();
                error!(
                    %error,
                    messages = batch.len(),
                    "commit failed: its messages are refused (unavailable) until the store is reopened"
                );
                room.commit_failed(batch);
                recover(room, &mut *store, metrics);
            }
        }
    }
    info!("history file closed");
}

/// Reopens the store until it holds exactly the committed history again, pausing longer after
/// each failure; if it holds something else (the file was replaced, or lost what it had
/// written), starts a new epoch in it. Returns early when the relay stops.
fn recover(room: &Room, store: &mut dyn Store, metrics: &Metrics) {
    let mut pause = FIRST_RETRY;
    loop {
        let (epoch, committed_seq) = room.committed_seq();
        match store.reopen(committed_seq) {
            Ok(saved) if saved.epoch == epoch && saved.latest_seq == committed_seq => {
                info!(latest_seq = committed_seq, "history file reopened: taking messages again");
                room.recovered();
                return;
            }
            Ok(saved) => {
                let new_epoch = uuid::Uuid::new_v4().to_string();
                match store.restart(&new_epoch) {
                    Ok(()) => {
                        warn!(
                            epoch,
                            committed_seq,
                            file_epoch = saved.epoch,
                            file_latest_seq = saved.latest_seq,
                            new_epoch,
                            "the history file no longer holds the conversation clients saw: new epoch"
                        );
                        room.restart_epoch(new_epoch);
                        return;
                    }
                    Err(error) => {
                        metrics.store_failures.inc();
                        warn!(%error, retry_in = ?pause, "cannot start a new epoch in the history file");
                    }
                }
            }
            Err(error) => {
                metrics.store_failures.inc();
                warn!(%error, retry_in = ?pause, "cannot reopen the history file");
            }
        }
        if room.pause_unless_closing(pause) {
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
    use wschat_protocol::v1::ServerFrame;
    use wschat_protocol::ErrorCode;

    use crate::dedupe::{Dedupe, Limits};
    use crate::history::{History, Posted};
    use crate::outbound::frame_bytes;
    use crate::room::{Membership, Mode};
    use crate::store::{HistoryStore, Saved, StoreError, HISTORY_FILE};

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
        fn append(&mut self, batch: &[&StoredMessage], latest_seq: u64) -> Result<(), StoreError> {
            if !self.latched && take_one(&self.faults.fail_commits) {
                self.latched = true;
                if self.faults.written_anyway.load(Ordering::Relaxed) {
                    self.inner.append(batch, latest_seq)?;
                }
                let source = redb::Error::Io(std::io::Error::other("fsync: input/output error"));
                return Err(StoreError::Write { seq: latest_seq, source });
            }
            if self.latched {
                return Err(StoreError::Write { seq: latest_seq, source: redb::Error::PreviousIo });
            }
            self.inner.append(batch, latest_seq)
        }

        fn reopen(&mut self, committed_seq: u64) -> Result<Saved, StoreError> {
            if take_one(&self.faults.fail_reopens) {
                let source = redb::Error::Io(std::io::Error::other("still failing"));
                return Err(StoreError::Open { path: self.dir.join(HISTORY_FILE), source });
            }
            if self.faults.lose_file.swap(false, Ordering::Relaxed) {
                std::fs::remove_file(self.dir.join(HISTORY_FILE)).unwrap();
            }
            self.latched = false;
            self.inner.reopen(committed_seq)
        }

        fn restart(&mut self, epoch: &str) -> Result<(), StoreError> {
            self.inner.restart(epoch)
        }
    }

    /// A relay's room and committer on the history file in `dir`, as `run` starts them.
    fn start(dir: &Path, faults: &Faults) -> (Arc<Room>, Committer) {
        let (inner, saved) = HistoryStore::open(dir, 1000).unwrap();
        let history = History::resume(saved.epoch, 1000, saved.latest_seq, saved.messages);
        let metrics = Arc::new(Metrics::new());
        let mut dedupe = Dedupe::new(Limits::default());
        dedupe.remember_all(&saved.recent);
        let room =
            Arc::new(Room::new(4 * 1024 * 1024, history, dedupe, true, Arc::clone(&metrics)));
        let store =
            FaultyStore { inner, dir: dir.to_owned(), faults: faults.clone(), latched: false };
        let committer = Committer::start(Arc::clone(&room), Box::new(store), metrics).unwrap();
        (room, committer)
    }

    /// A client of the room, reading its queue as its writer would.
    struct Tab {
        membership: Membership,
        inbox: VecDeque<Message>,
    }

    impl Tab {
        fn join(room: &Arc<Room>, mode: Mode) -> Self {
            Self { membership: room.join(mode), inbox: VecDeque::new() }
        }

        async fn next(&mut self) -> ServerFrame {
            if self.inbox.is_empty() {
                let outbound = &self.membership.outbound;
                tokio::time::timeout(PATIENCE, outbound.take(&mut self.inbox)).await.unwrap();
            }
            let frame = self.inbox.pop_front().unwrap();
            self.membership.outbound.sent(frame_bytes(&frame));
            ServerFrame::from_json(frame.to_text().unwrap()).unwrap()
        }

        /// Everything queued so far, without waiting.
        fn rest(&mut self) -> Vec<ServerFrame> {
            let mut frames: Vec<_> = self.inbox.drain(..).collect();
            frames.extend(self.membership.outbound.take_now());
            frames
                .iter()
                .map(|frame| ServerFrame::from_json(frame.to_text().unwrap()).unwrap())
                .collect()
        }

        async fn post(&self, room: &Room, id: &str) {
            let posted = Posted { id: id.into(), source: "ada".into(), content: id.into() };
            let admission = room.admit(id.len()).await;
            room.post(self.membership.seat.id(), posted, 0, admission);
        }
    }

    /// Sends `ids` from `tab` at once, as an outbox flushing, and reads until each has been
    /// acked or refused. Records the acks; returns the refused ids (to send again, as the app's
    /// outbox does).
    async fn send_all(
        room: &Room,
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
                ServerFrame::Message(_) | ServerFrame::Welcome { .. } => {}
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
        let (epoch_before, _) = room.committed_seq();
        let mut tabs = [Tab::join(&room, Mode::V1), Tab::join(&room, Mode::V1)];
        let mut watcher = Tab::join(&room, Mode::V1);
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
                while !room.takes_messages() {
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

        let (_, saved) = HistoryStore::open(dir.path(), 1000).unwrap();
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
                ServerFrame::Message(message) => Some((message.seq, message.id)),
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
        let (old_epoch, _) = room.committed_seq();
        let mut alice = Tab::join(&room, Mode::V1);
        let mut acked = HashMap::new();
        let ids: Vec<_> = (1..=3).map(|n| format!("m{n}")).collect();
        assert!(send_all(&room, &mut alice, &ids, &mut acked).await.is_empty());

        faults.lose_file.store(true, Ordering::Relaxed);
        faults.fail_commits.store(1, Ordering::Relaxed);
        let refused = send_all(&room, &mut alice, &["m4".into()], &mut acked).await;
        assert_eq!(refused, ["m4"]);
        let closed = tokio::time::timeout(PATIENCE, alice.membership.outbound.closed()).await;
        assert_eq!(closed.unwrap().code(), Some(1012));

        let (new_epoch, latest) = room.committed_seq();
        assert_ne!(new_epoch, old_epoch);
        assert_eq!(latest, 0);
        let mut bob = Tab::join(&room, Mode::V1);
        assert!(matches!(bob.next().await, ServerFrame::Welcome { latest_seq: 0, .. }));
        let mut acked = HashMap::new();
        assert!(send_all(&room, &mut bob, &["m4".into()], &mut acked).await.is_empty());
        assert_eq!(acked["m4"], 1);
        committer.finish().await;
        let (_, saved) = HistoryStore::open(dir.path(), 1000).unwrap();
        assert_eq!((saved.epoch, saved.latest_seq), (new_epoch, 1));
    }
}
