//! The history on disk: the epoch, the latest seq, the last N messages and the ids of recent ones
//! in a redb file, so that a relay started with `--data-dir` picks the conversation up where it
//! stopped, and still recognises a message re-sent across the restart.
//!
//! The in-memory [`History`](crate::history::History) stays the source of truth for every answer;
//! the store only mirrors it. It is read at start-up (and when reopened after a failure), and
//! written by the committer (`crate::commit`), one transaction per batch of new messages.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use wschat_protocol::v1::StoredMessage;

use crate::dedupe::{self, Sent};

/// The name of the history file inside the data directory.
pub const HISTORY_FILE: &str = "history.redb";

/// The epoch: made once, when the file is created, and kept for as long as the file is.
const EPOCH: TableDefinition<(), &str> = TableDefinition::new("epoch");
/// The newest seq given out. Kept apart from the messages because with a history limit of 0 no
/// message is stored, yet numbering must still continue after a restart.
const LATEST_SEQ: TableDefinition<(), u64> = TableDefinition::new("latest_seq");
/// The last N messages by seq: `(id, source, content, sent_at_ms)`. A redb tuple rather than the
/// wire JSON, so that the file's layout does not change when the protocol does; redb records the
/// column types and refuses to open a table under other ones.
const MESSAGES: TableDefinition<u64, (&str, &str, &str, u64)> = TableDefinition::new("messages");
/// Who sent what lately, by seq: `(sender, id, sent_at_ms)`, for the dedupe window
/// (`crate::dedupe`), which is independent of the history limit: with `--history-limit 0` no
/// message is kept, yet a re-send across a restart must still be recognised. The last
/// [`RECENT_IDS`] are kept; the window's own bounds (per sender, by age) apply when they are read.
const RECENT: TableDefinition<u64, (&str, &str, u64)> = TableDefinition::new("recent_ids");

/// As many ids as the dedupe window holds in all.
const RECENT_IDS: u64 = dedupe::Limits::DEFAULT_IDS as u64;

/// Why the history could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory does not exist and cannot be made.
    #[error("cannot create the data directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The history file cannot be opened, created or read (for example: it is not a redb file,
    /// another relay has it open, or the disk failed).
    #[error("cannot open the history file {}: {source}", path.display())]
    Open {
        /// The history file.
        path: PathBuf,
        /// What redb said.
        source: redb::Error,
    },
    /// New messages could not be written: the store holds what it held before (or, when the
    /// disk failed during the commit, perhaps the batch too: reopening rolls that back).
    #[error("cannot write up to seq {seq} to the history file: {source}")]
    Write {
        /// The newest seq that was to be written.
        seq: u64,
        /// What redb said.
        source: redb::Error,
    },
}

/// Where the committer writes new messages, so that the history outlives the process.
///
/// A trait so that tests can stand in a store that fails the way redb does: after one I/O error,
/// every later write fails (`PreviousIo`) until the file is reopened.
pub trait Store: Send {
    /// Writes `batch` (the messages numbered right after the ones it holds, oldest first) and
    /// `latest_seq` in one transaction, on disk when this returns; forgets what falls out of the
    /// last N.
    ///
    /// # Errors
    /// [`StoreError::Write`] when the commit did not complete. The batch may or may not be on disk
    /// then; [`Store::reopen`] says what is.
    fn append(&mut self, batch: &[&StoredMessage], latest_seq: u64) -> Result<(), StoreError>;

    /// Closes the file and opens it again (redb refuses every write after an I/O error until
    /// then), forgets any message after `committed_seq` (written by a commit that reported a
    /// failure, so never acked nor relayed), and returns what it holds.
    ///
    /// # Errors
    /// [`StoreError::Open`] when the file cannot be opened or read.
    fn reopen(&mut self, committed_seq: u64) -> Result<Saved, StoreError>;

    /// Starts the file over in a new `epoch`, without messages, for when its history no longer
    /// continues the one clients have seen.
    ///
    /// # Errors
    /// [`StoreError::Write`] when that could not be written.
    fn restart(&mut self, epoch: &str) -> Result<(), StoreError>;
}

/// What a history file held when it was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The epoch the seqs belong to.
    pub epoch: String,
    /// The newest seq given out (0: none yet).
    pub latest_seq: u64,
    /// The last N messages, oldest first.
    pub messages: Vec<StoredMessage>,
    /// The senders and ids of the last messages, oldest first, for the dedupe window.
    pub recent: Vec<Sent>,
}

/// The history in a redb file.
///
/// Each append is one write transaction, committed with redb's default durability: on disk
/// (fsync'd) before the call returns. The committer calls it on its own thread, outside the
/// room's lock, with every message that waited meanwhile: one fsync (about 0.25 ms on this
/// project's dev machine, ext4 on a virtual disk; tens of ms on a slow or network disk) per
/// batch, however many messages the batch holds.
#[derive(Debug)]
pub struct HistoryStore {
    /// `None` only between closing and reopening the file.
    db: Option<Database>,
    path: PathBuf,
    capacity: usize,
}

impl HistoryStore {
    /// Opens `dir/history.redb`, creating the directory and the file (with a new epoch) when they
    /// do not exist, and returns what it holds. Keeps at most `capacity` messages: if the file
    /// holds more (the limit was lowered), the oldest are removed now.
    ///
    /// Blocks on file I/O; meant for start-up.
    ///
    /// # Errors
    /// [`StoreError::CreateDir`] or [`StoreError::Open`], naming the path. Another process (or
    /// another relay in this one) holding the file open is an error, not a wait.
    pub fn open(dir: &Path, capacity: usize) -> Result<(Self, Saved), StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| StoreError::CreateDir { path: dir.to_owned(), source })?;
        let path = dir.join(HISTORY_FILE);
        let (db, saved) = open(&path, capacity, None)?;
        Ok((Self { db: Some(db), path, capacity }, saved))
    }

    fn db(&self) -> Result<&Database, redb::Error> {
        // Only a failed reopen leaves it closed; the committer reopens before it writes again.
        self.db.as_ref().ok_or_else(|| redb::Error::Io(std::io::Error::other("the file is closed")))
    }

    fn write(&self, unsaved: &[&StoredMessage], latest_seq: u64) -> Result<(), redb::Error> {
        let keep_from = (latest_seq + 1).saturating_sub(self.capacity as u64);
        let transaction = self.db()?.begin_write()?;
        {
            let mut messages = transaction.open_table(MESSAGES)?;
            for &message in unsaved.iter().filter(|message| message.seq >= keep_from) {
                let StoredMessage { seq, id, source, content, sent_at_ms } = message;
                let row = (id.as_str(), source.as_str(), content.as_str(), *sent_at_ms);
                messages.insert(seq, row)?;
            }
            // Usually removes exactly one: the message that just fell out of the last N.
            messages.retain_in(..keep_from, |_, _| false)?;
            let mut recent = transaction.open_table(RECENT)?;
            for &message in unsaved {
                let StoredMessage { seq, id, source, sent_at_ms, .. } = message;
                recent.insert(seq, (source.as_str(), id.as_str(), *sent_at_ms))?;
            }
            recent.retain_in(..(latest_seq + 1).saturating_sub(RECENT_IDS), |_, _| false)?;
            transaction.open_table(LATEST_SEQ)?.insert((), latest_seq)?;
        }
        transaction.commit()?;
        Ok(())
    }
}

impl Store for HistoryStore {
    fn append(&mut self, batch: &[&StoredMessage], latest_seq: u64) -> Result<(), StoreError> {
        self.write(batch, latest_seq)
            .map_err(|source| StoreError::Write { seq: latest_seq, source })
    }

    fn reopen(&mut self, committed_seq: u64) -> Result<Saved, StoreError> {
        // Closed first: redb refuses a second handle on the file.
        drop(self.db.take());
        let (db, saved) = open(&self.path, self.capacity, Some(committed_seq))?;
        self.db = Some(db);
        Ok(saved)
    }

    fn restart(&mut self, epoch: &str) -> Result<(), StoreError> {
        let restart = || -> Result<(), redb::Error> {
            let transaction = self.db()?.begin_write()?;
            transaction.open_table(EPOCH)?.insert((), epoch)?;
            transaction.open_table(LATEST_SEQ)?.insert((), 0)?;
            transaction.open_table(MESSAGES)?.retain(|_, _| false)?;
            transaction.open_table(RECENT)?.retain(|_, _| false)?;
            transaction.commit()?;
            Ok(())
        };
        restart().map_err(|source| StoreError::Write { seq: 0, source })
    }
}

/// Opens (or creates) the file at `path` and loads it; see [`load`].
fn open(
    path: &Path,
    capacity: usize,
    committed_seq: Option<u64>,
) -> Result<(Database, Saved), StoreError> {
    let open = || -> Result<(Database, Saved), redb::Error> {
        let db = Database::create(path)?;
        let transaction = db.begin_write()?;
        let saved = load(&transaction, capacity, committed_seq)?;
        transaction.commit()?;
        Ok((db, saved))
    };
    open().map_err(|source| StoreError::Open { path: path.to_owned(), source })
}

/// Reads the epoch (making one if the file is new), the latest seq and the last `capacity`
/// messages, removing older ones, and any after `committed_seq` when given.
fn load(
    transaction: &WriteTransaction,
    capacity: usize,
    committed_seq: Option<u64>,
) -> Result<Saved, redb::Error> {
    let mut epochs = transaction.open_table(EPOCH)?;
    let stored_epoch = epochs.get(())?.map(|epoch| epoch.value().to_owned());
    let epoch = match stored_epoch {
        Some(epoch) => epoch,
        None => {
            let epoch = uuid::Uuid::new_v4().to_string();
            epochs.insert((), epoch.as_str())?;
            epoch
        }
    };
    let mut latest_seq = transaction.open_table(LATEST_SEQ)?.get(())?.map_or(0, |seq| seq.value());
    let mut table = transaction.open_table(MESSAGES)?;
    if let Some(committed) = committed_seq.filter(|&committed| committed < latest_seq) {
        // A commit reported failed but reached the disk: nobody saw these messages, and their
        // seqs are given out again.
        table.retain_in(committed + 1.., |_, _| false)?;
        transaction.open_table(RECENT)?.retain_in(committed + 1.., |_, _| false)?;
        transaction.open_table(LATEST_SEQ)?.insert((), committed)?;
        latest_seq = committed;
    }
    let keep_from = (latest_seq + 1).saturating_sub(capacity as u64);
    table.retain_in(..keep_from, |_, _| false)?;
    let mut messages = Vec::new();
    for entry in table.iter()? {
        let (seq, row) = entry?;
        let (id, source, content, sent_at_ms) = row.value();
        messages.push(StoredMessage {
            seq: seq.value(),
            id: id.to_owned(),
            source: source.to_owned(),
            content: content.to_owned(),
            sent_at_ms,
        });
    }
    let mut recent_table = transaction.open_table(RECENT)?;
    let recent = if recent_table.is_empty()? {
        // A file from before the table existed: its messages are what it knows of.
        messages.iter().map(Sent::from).collect()
    } else {
        recent_table.retain_in(..(latest_seq + 1).saturating_sub(RECENT_IDS), |_, _| false)?;
        let mut recent = Vec::new();
        for entry in recent_table.iter()? {
            let (seq, row) = entry?;
            let (sender, id, at_ms) = row.value();
            recent.push(Sent { seq: seq.value(), sender: sender.into(), id: id.into(), at_ms });
        }
        recent
    };
    Ok(Saved { epoch, latest_seq, messages, recent })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedupe::{Dedupe, Limits};
    use crate::history::{History, Posted};

    fn message(seq: u64, id: &str) -> StoredMessage {
        StoredMessage {
            seq,
            id: id.into(),
            source: "ada".into(),
            content: format!("text of {id}"),
            sent_at_ms: 1_700_000_000_000 + seq,
        }
    }

    fn seqs(saved: &Saved) -> Vec<u64> {
        saved.messages.iter().map(|message| message.seq).collect()
    }

    /// What was written comes back, field for field, after the relay reopens the file.
    #[test]
    fn messages_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, saved) = HistoryStore::open(dir.path(), 10).unwrap();
        assert_eq!((saved.latest_seq, saved.messages.len()), (0, 0));
        let written = [message(1, "a"), message(2, "b")];
        for message in &written {
            store.append(&[message], message.seq).unwrap();
        }
        drop(store);
        let (_, reopened) = HistoryStore::open(dir.path(), 10).unwrap();
        let recent = written.iter().map(Sent::from).collect();
        let expected =
            Saved { epoch: saved.epoch, latest_seq: 2, messages: written.into(), recent };
        assert_eq!(reopened, expected);
    }

    /// The file holds only the last N messages, whether N is reached while writing or lowered
    /// between two runs.
    #[test]
    fn keeps_only_the_last_n() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = HistoryStore::open(dir.path(), 3).unwrap();
        for seq in 1..=5 {
            store.append(&[&message(seq, &seq.to_string())], seq).unwrap();
        }
        drop(store);
        let (store, saved) = HistoryStore::open(dir.path(), 3).unwrap();
        assert_eq!((saved.latest_seq, seqs(&saved)), (5, vec![3, 4, 5]));
        drop(store);
        let (_, saved) = HistoryStore::open(dir.path(), 2).unwrap();
        assert_eq!(seqs(&saved), [4, 5]);
    }

    /// The epoch is made once, with the file, and the same one comes back on every reopen; a new
    /// file gets a new one.
    #[test]
    fn the_epoch_is_made_once_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let (store, first) = HistoryStore::open(dir.path(), 10).unwrap();
        drop(store);
        let (_, again) = HistoryStore::open(dir.path(), 10).unwrap();
        assert_eq!(again.epoch, first.epoch);
        let other = tempfile::tempdir().unwrap();
        let (_, elsewhere) = HistoryStore::open(other.path(), 10).unwrap();
        assert_ne!(elsewhere.epoch, first.epoch);
    }

    /// What a relay keeps in memory, resumed from the file.
    struct Resumed {
        store: HistoryStore,
        history: History,
        dedupe: Dedupe,
    }

    /// Opens the file and resumes the history and the dedupe window from it, as the relay does
    /// at start-up.
    fn start(dir: &Path, capacity: usize) -> Resumed {
        let (store, saved) = HistoryStore::open(dir, capacity).unwrap();
        let mut dedupe = Dedupe::new(Limits::default());
        dedupe.remember_all(&saved.recent);
        let history = History::resume(saved.epoch, capacity, saved.latest_seq, saved.messages);
        Resumed { store, history, dedupe }
    }

    impl Resumed {
        /// Numbers `id` and writes it, unless it is a re-send, as the room does; returns the
        /// seq and whether it was a duplicate.
        fn post(&mut self, id: &str) -> (u64, bool) {
            if let Some(seq) = self.dedupe.seq_of("ada", id, 0) {
                return (seq, true);
            }
            let posted = Posted { id: id.into(), source: "ada".into(), content: id.into() };
            let stored = self.history.append(posted, 0);
            self.store.append(&[&stored], stored.seq).unwrap();
            self.dedupe.remember("ada", id, stored.seq, 0);
            (stored.seq, false)
        }
    }

    /// After a restart on the same file, numbering goes on from the last seq, in the same epoch.
    #[test]
    fn a_reopened_history_continues_the_seqs() {
        let dir = tempfile::tempdir().unwrap();
        let mut relay = start(dir.path(), 10);
        for id in ["a", "b", "c"] {
            relay.post(id);
        }
        let before = relay.history.welcome();
        drop(relay);
        let mut relay = start(dir.path(), 10);
        assert_eq!(relay.history.welcome(), before);
        assert_eq!(relay.post("d"), (4, false));
    }

    /// A message re-sent after a restart is still recognised by its id, whether or not the
    /// history still holds it: with a limit of 2, and of 0.
    #[test]
    fn a_reopened_store_still_recognises_resent_ids_beyond_the_history() {
        for capacity in [2, 0] {
            let dir = tempfile::tempdir().unwrap();
            let mut relay = start(dir.path(), capacity);
            for id in ["a", "b", "c"] {
                relay.post(id);
            }
            drop(relay);
            let mut relay = start(dir.path(), capacity);
            assert_eq!(relay.history.oldest_seq(), 4 - capacity as u64);
            for (seq, id) in ["a", "b", "c"].into_iter().enumerate() {
                assert_eq!(relay.post(id), (seq as u64 + 1, true), "{id} kept {capacity}");
            }
            assert_eq!(relay.post("d"), (4, false));
        }
    }

    /// With a limit of 0 no message is kept, but the latest seq still is, so numbering continues.
    #[test]
    fn zero_capacity_keeps_the_latest_seq_only() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = HistoryStore::open(dir.path(), 0).unwrap();
        store.append(&[&message(1, "a")], 1).unwrap();
        store.append(&[&message(2, "b")], 2).unwrap();
        drop(store);
        let (_, saved) = HistoryStore::open(dir.path(), 0).unwrap();
        assert_eq!((saved.latest_seq, saved.messages.len()), (2, 0));
    }

    /// Messages a failed write missed are written with the next one, and only those within the
    /// last N are kept.
    #[test]
    fn a_catch_up_write_fills_the_gap() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = HistoryStore::open(dir.path(), 3).unwrap();
        store.append(&[&message(1, "a")], 1).unwrap();
        let missed: Vec<_> = (2..=5).map(|seq| message(seq, &seq.to_string())).collect();
        store.append(&missed.iter().collect::<Vec<_>>(), 5).unwrap();
        drop(store);
        let (_, saved) = HistoryStore::open(dir.path(), 3).unwrap();
        assert_eq!((saved.latest_seq, seqs(&saved)), (5, vec![3, 4, 5]));
    }

    /// A commit that reported a failure may still have reached the disk: reopening forgets what
    /// it wrote after the committed seq, so that seq is given out again, and writing goes on.
    #[test]
    fn reopening_forgets_what_a_failed_commit_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, opened) = HistoryStore::open(dir.path(), 10).unwrap();
        store.append(&[&message(1, "a"), &message(2, "b")], 2).unwrap();
        store.append(&[&message(3, "reported failed")], 3).unwrap();
        let saved = store.reopen(2).unwrap();
        assert_eq!((saved.epoch.as_str(), saved.latest_seq), (opened.epoch.as_str(), 2));
        assert_eq!(seqs(&saved), [1, 2]);
        assert_eq!(saved.recent.iter().map(|sent| sent.seq).collect::<Vec<_>>(), [1, 2]);
        store.append(&[&message(3, "c")], 3).unwrap();
        drop(store);
        let (_, saved) = HistoryStore::open(dir.path(), 10).unwrap();
        assert_eq!(saved.messages.last().map(|message| message.id.as_str()), Some("c"));
        assert_eq!(seqs(&saved), [1, 2, 3]);
        let ids: Vec<_> = saved.recent.iter().map(|sent| sent.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"], "the id of the failed commit is forgotten too");
    }

    /// Starting over keeps the file but not its conversation: a new epoch, no messages, seq 0.
    #[test]
    fn a_restart_starts_a_new_epoch_without_messages() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = HistoryStore::open(dir.path(), 10).unwrap();
        store.append(&[&message(1, "a")], 1).unwrap();
        store.restart("second").unwrap();
        drop(store);
        let (_, saved) = HistoryStore::open(dir.path(), 10).unwrap();
        let expected =
            Saved { epoch: "second".into(), latest_seq: 0, messages: vec![], recent: vec![] };
        assert_eq!(saved, expected);
    }

    /// A missing data directory is created, however deep.
    #[test]
    fn creates_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("var").join("wschat");
        HistoryStore::open(&nested, 10).unwrap();
        assert!(nested.join(HISTORY_FILE).is_file());
    }

    /// A file that is not a redb database, or one another relay holds open, is refused with an
    /// error that names it.
    #[test]
    fn refuses_a_file_it_cannot_open_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(HISTORY_FILE), "not a database, but long enough to look")
            .unwrap();
        let error = HistoryStore::open(dir.path(), 10).unwrap_err();
        assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
        assert!(error.to_string().contains(&dir.path().join(HISTORY_FILE).display().to_string()));

        let busy = tempfile::tempdir().unwrap();
        let _held = HistoryStore::open(busy.path(), 10).unwrap();
        let error = HistoryStore::open(busy.path(), 10).unwrap_err();
        assert!(matches!(error, StoreError::Open { .. }), "{error:?}");

        let not_a_dir = dir.path().join(HISTORY_FILE);
        let error = HistoryStore::open(&not_a_dir, 10).unwrap_err();
        assert!(matches!(error, StoreError::CreateDir { .. }), "{error:?}");
    }
}
