//! The history on disk: each room's epoch, latest seq and last N messages, and the ids of recent
//! messages, in one redb file, so that a relay started with `--data-dir` picks every room up where
//! it stopped, and still recognises a message re-sent across the restart.
//!
//! The in-memory [`History`](crate::history::History) of each open room stays the source of
//! truth for every answer; the store only mirrors it. A room is read when it is opened (its first
//! member joins; see [`RoomReader`]), and written by the committer (`crate::commit`), one
//! transaction per batch of new messages from any number of rooms. Reads are redb read
//! transactions: they do not wait for a commit being synced.
//!
//! A file from before rooms (one conversation: tables `epoch`, `latest_seq`, `messages`,
//! `recent_ids`) is moved into the room `lobby` when it is opened, in one transaction.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
    WriteTransaction,
};
use wschat_protocol::rooms::LOBBY;
use wschat_protocol::v1::StoredMessage;

use crate::dedupe::{self, Sent};

/// The name of the history file inside the data directory.
pub const HISTORY_FILE: &str = "history.redb";

/// Each room's epoch and the newest seq given out in it: `room → (epoch, latest_seq)`. The seq is
/// kept apart from the messages because with a history limit of 0 no message is stored, yet
/// numbering must still continue after a restart. A room that never had a message has no row:
/// its epoch is made again when it is next opened (nobody can hold a seq of it).
const ROOMS: TableDefinition<&str, (&str, u64)> = TableDefinition::new("rooms");
/// The last N messages of each room by `(room, seq)`: `(id, source, content, sent_at_ms)`. A redb
/// tuple rather than the wire JSON, so that the file's layout does not change when the protocol
/// does; redb records the column types and refuses to open a table under other ones.
const MESSAGES: TableDefinition<(&str, u64), (&str, &str, &str, u64)> =
    TableDefinition::new("room_messages");
/// Who sent what lately, in the order it was stored (a counter over all rooms): `(room, seq,
/// sender, id, sent_at_ms)`, for the dedupe window (`crate::dedupe`), which is independent of
/// the history limit and of which rooms are open. The last [`RECENT_IDS`] are kept; the window's
/// own bounds (per sender, by age) apply when they are read.
const RECENT: TableDefinition<u64, (&str, u64, &str, &str, u64)> =
    TableDefinition::new("room_recent_ids");

/// The layout before rooms, read once to move it into the lobby.
mod single {
    use redb::TableDefinition;

    pub const EPOCH: TableDefinition<(), &str> = TableDefinition::new("epoch");
    pub const LATEST_SEQ: TableDefinition<(), u64> = TableDefinition::new("latest_seq");
    pub const MESSAGES: TableDefinition<u64, (&str, &str, &str, u64)> =
        TableDefinition::new("messages");
    pub const RECENT: TableDefinition<u64, (&str, &str, u64)> = TableDefinition::new("recent_ids");
}

/// As many ids as the dedupe window holds in all.
const RECENT_IDS: u64 = dedupe::Limits::DEFAULT_IDS as u64;

/// Why the history could not be opened, read or written.
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
    /// A room could not be read (the file is being reopened after a failure, or the disk fails).
    #[error("cannot read the room {room} from the history file: {source}")]
    Read {
        /// The room.
        room: String,
        /// What redb said.
        source: redb::Error,
    },
    /// New messages could not be written: the store holds what it held before (or, when the
    /// disk failed during the commit, perhaps the batch too: reopening rolls that back).
    #[error("cannot write {messages} messages to the history file: {source}")]
    Write {
        /// How many messages were to be written.
        messages: usize,
        /// What redb said.
        source: redb::Error,
    },
}

/// One room's part of a commit: the messages numbered right after the ones the store holds for
/// it, oldest first.
#[derive(Debug)]
pub struct RoomBatch<'a> {
    /// The room.
    pub room: &'a str,
    /// Its epoch (written with its latest seq).
    pub epoch: &'a str,
    /// The new messages.
    pub messages: Vec<&'a StoredMessage>,
}

impl RoomBatch<'_> {
    fn latest_seq(&self) -> u64 {
        self.messages.last().map_or(0, |message| message.seq)
    }
}

/// Where the committer writes new messages, so that the history outlives the process.
///
/// A trait so that tests can stand in a store that fails the way redb does: after one I/O error,
/// every later write fails (`PreviousIo`) until the file is reopened.
pub trait Store: Send {
    /// Writes every room's batch, with each room's latest seq, in one transaction, on disk when
    /// this returns; forgets what falls out of each room's last N.
    ///
    /// # Errors
    /// [`StoreError::Write`] when the commit did not complete. The batch may or may not be on disk
    /// then; [`Store::reopen`] says what is.
    fn append(&mut self, batch: &[RoomBatch<'_>]) -> Result<(), StoreError>;

    /// Closes the file and opens it again (redb refuses every write after an I/O error until
    /// then), forgets any message of each room in `committed` after that room's committed seq
    /// (written by a commit that reported a failure, so never acked nor relayed), and returns
    /// where the file stands for each of them (`None`: it has no row for the room).
    ///
    /// # Errors
    /// [`StoreError::Open`] when the file cannot be opened or read.
    fn reopen(&mut self, committed: &[(&str, u64)]) -> Result<Vec<Option<Position>>, StoreError>;

    /// Starts `room` over in a new `epoch`, without messages, for when its history in the file
    /// no longer continues the one clients have seen.
    ///
    /// # Errors
    /// [`StoreError::Write`] when that could not be written.
    fn restart(&mut self, room: &str, epoch: &str) -> Result<(), StoreError>;
}

/// Where a room's history stands in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The epoch the seqs belong to.
    pub epoch: String,
    /// The newest seq given out (0: none yet).
    pub latest_seq: u64,
}

/// What the file holds of one room when it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRoom {
    /// The epoch the seqs belong to: a new one when the file has none for the room.
    pub epoch: String,
    /// The newest seq given out (0: none yet).
    pub latest_seq: u64,
    /// The last N messages, oldest first.
    pub messages: Vec<StoredMessage>,
}

/// A sender's recent message in some room, for the dedupe window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentId {
    /// The room it was posted in.
    pub room: String,
    /// Its seq there, sender, id and time.
    pub sent: Sent,
}

/// The open file, shared by the committer (which writes) and the readers of rooms. `None` only
/// between closing and reopening it after a failure: redb refuses a second handle on one file.
type SharedDb = Arc<RwLock<Option<Database>>>;

/// Reads rooms from the history file as they are opened.
#[derive(Debug, Clone)]
pub struct RoomReader {
    db: SharedDb,
    capacity: usize,
}

impl RoomReader {
    /// The epoch, the latest seq and the last N messages of `room`; a new epoch when the file
    /// holds nothing of it. Blocks on file I/O: call it off the runtime's threads.
    ///
    /// # Errors
    /// [`StoreError::Read`] when the file is closed (being reopened) or cannot be read.
    pub fn load(&self, room: &str) -> Result<SavedRoom, StoreError> {
        let read = || -> Result<SavedRoom, redb::Error> {
            let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
            let transaction = db.as_ref().ok_or_else(closed)?.begin_read()?;
            let rooms = transaction.open_table(ROOMS)?;
            let Some(row) = rooms.get(room)? else {
                let epoch = uuid::Uuid::new_v4().to_string();
                return Ok(SavedRoom { epoch, latest_seq: 0, messages: Vec::new() });
            };
            let (epoch, latest_seq) = row.value();
            let table = transaction.open_table(MESSAGES)?;
            let mut messages = Vec::new();
            for entry in table.range((room, 0)..=(room, latest_seq))?.rev().take(self.capacity) {
                let (key, row) = entry?;
                messages.push(stored(key.value().1, row.value()));
            }
            messages.reverse();
            Ok(SavedRoom { epoch: epoch.to_owned(), latest_seq, messages })
        };
        read().map_err(|source| StoreError::Read { room: room.to_owned(), source })
    }
}

fn closed() -> redb::Error {
    redb::Error::Io(std::io::Error::other("the file is closed"))
}

fn stored(seq: u64, (id, source, content, sent_at_ms): (&str, &str, &str, u64)) -> StoredMessage {
    StoredMessage {
        seq,
        id: id.to_owned(),
        source: source.to_owned(),
        content: content.to_owned(),
        sent_at_ms,
    }
}

/// The history in a redb file.
///
/// Each append is one write transaction, committed with redb's default durability: on disk
/// (fsync'd) before the call returns. The committer calls it on its own thread, outside every
/// room's lock, with every message that waited meanwhile in any room: one fsync (about 0.25 ms on
/// this project's dev machine, ext4 on a virtual disk; tens of ms on a slow or network disk) per
/// batch, however many messages and rooms the batch holds.
#[derive(Debug)]
pub struct HistoryStore {
    db: SharedDb,
    path: PathBuf,
    capacity: usize,
    /// The key of the next row in [`RECENT`].
    next_recent: u64,
}

/// What [`HistoryStore::open`] finds.
#[derive(Debug)]
pub struct Opened {
    /// Where the committer writes.
    pub store: HistoryStore,
    /// Where rooms are read from as they open.
    pub reader: RoomReader,
    /// The recent messages of every room, oldest first, for the dedupe window.
    pub recent: Vec<RecentId>,
}

impl HistoryStore {
    /// Opens `dir/history.redb`, creating the directory and the file when they do not exist, and
    /// moving a file from before rooms into the lobby. Each room keeps at most `capacity`
    /// messages (if the file holds more, because the limit was lowered, they are never read, and
    /// removed at the room's next write).
    ///
    /// Blocks on file I/O; meant for start-up.
    ///
    /// # Errors
    /// [`StoreError::CreateDir`] or [`StoreError::Open`], naming the path. Another process (or
    /// another relay in this one) holding the file open is an error, not a wait.
    pub fn open(dir: &Path, capacity: usize) -> Result<Opened, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| StoreError::CreateDir { path: dir.to_owned(), source })?;
        let path = dir.join(HISTORY_FILE);
        let (db, recent, next_recent) = open(&path, &[])
            .map(|(db, _, next_recent)| (db, next_recent))
            .and_then(|(db, next_recent)| {
                let recent = read_recent(&db)
                    .map_err(|source| StoreError::Open { path: path.clone(), source })?;
                Ok((db, recent, next_recent))
            })?;
        let db = Arc::new(RwLock::new(Some(db)));
        let reader = RoomReader { db: Arc::clone(&db), capacity };
        Ok(Opened { store: Self { db, path, capacity, next_recent }, reader, recent })
    }

    fn write(&self, batch: &[RoomBatch<'_>]) -> Result<u64, redb::Error> {
        let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
        let transaction = db.as_ref().ok_or_else(closed)?.begin_write()?;
        let mut next_recent = self.next_recent;
        {
            let mut rooms = transaction.open_table(ROOMS)?;
            let mut messages = transaction.open_table(MESSAGES)?;
            let mut recent = transaction.open_table(RECENT)?;
            for part in batch {
                let latest_seq = part.latest_seq();
                let room = part.room;
                let keep_from = (latest_seq + 1).saturating_sub(self.capacity as u64);
                for &message in &part.messages {
                    let StoredMessage { seq, id, source, content, sent_at_ms } = message;
                    if *seq >= keep_from {
                        let row = (id.as_str(), source.as_str(), content.as_str(), *sent_at_ms);
                        messages.insert((room, *seq), row)?;
                    }
                    recent.insert(
                        next_recent,
                        (room, *seq, source.as_str(), id.as_str(), *sent_at_ms),
                    )?;
                    next_recent += 1;
                }
                // Usually removes exactly one: the message that just fell out of the last N.
                messages.retain_in((room, 0)..(room, keep_from), |_, _| false)?;
                rooms.insert(room, (part.epoch, latest_seq))?;
            }
            recent.retain_in(..next_recent.saturating_sub(RECENT_IDS), |_, _| false)?;
        }
        transaction.commit()?;
        Ok(next_recent)
    }
}

impl Drop for HistoryStore {
    /// Closes the file, whoever else still holds the handle (the readers of rooms): the relay
    /// that stops lets go of it, so that another (a restart in the same process) can open it.
    fn drop(&mut self) {
        drop(self.db.write().unwrap_or_else(PoisonError::into_inner).take());
    }
}

impl Store for HistoryStore {
    fn append(&mut self, batch: &[RoomBatch<'_>]) -> Result<(), StoreError> {
        let messages = batch.iter().map(|part| part.messages.len()).sum();
        self.next_recent =
            self.write(batch).map_err(|source| StoreError::Write { messages, source })?;
        Ok(())
    }

    fn reopen(&mut self, committed: &[(&str, u64)]) -> Result<Vec<Option<Position>>, StoreError> {
        let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
        // Closed first: redb refuses a second handle on the file.
        drop(db.take());
        let (reopened, positions, next_recent) = open(&self.path, committed)?;
        *db = Some(reopened);
        self.next_recent = next_recent;
        Ok(positions)
    }

    fn restart(&mut self, room: &str, epoch: &str) -> Result<(), StoreError> {
        let restart = || -> Result<(), redb::Error> {
            let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
            let transaction = db.as_ref().ok_or_else(closed)?.begin_write()?;
            transaction.open_table(ROOMS)?.insert(room, (epoch, 0))?;
            transaction
                .open_table(MESSAGES)?
                .retain_in((room, 0)..=(room, u64::MAX), |_, _| false)?;
            transaction.open_table(RECENT)?.retain(|_, (recent_room, ..)| recent_room != room)?;
            transaction.commit()?;
            Ok(())
        };
        restart().map_err(|source| StoreError::Write { messages: 0, source })
    }
}

/// Opens (or creates) the file at `path`, moves a single-conversation file into the lobby, rolls
/// each room of `committed` back to its committed seq, and says where each of those rooms stands
/// and which key the next recent id gets.
fn open(
    path: &Path,
    committed: &[(&str, u64)],
) -> Result<(Database, Vec<Option<Position>>, u64), StoreError> {
    let open = || -> Result<(Database, Vec<Option<Position>>, u64), redb::Error> {
        let db = Database::create(path)?;
        let transaction = db.begin_write()?;
        migrate(&transaction)?;
        let positions = committed
            .iter()
            .map(|&(room, seq)| roll_back(&transaction, room, seq))
            .collect::<Result<_, _>>()?;
        let next_recent = {
            let recent = transaction.open_table(RECENT)?;
            let last = recent.last()?.map(|(key, _)| key.value());
            last.map_or(0, |key| key + 1)
        };
        // Made here so that the tables exist for readers from the first moment.
        transaction.open_table(ROOMS)?;
        transaction.open_table(MESSAGES)?;
        transaction.commit()?;
        Ok((db, positions, next_recent))
    };
    open().map_err(|source| StoreError::Open { path: path.to_owned(), source })
}

/// Forgets what `room` holds after `committed_seq` (a commit reported failed but reached the
/// disk: nobody saw these messages, and their seqs are given out again); says where the room
/// stands then.
fn roll_back(
    transaction: &WriteTransaction,
    room: &str,
    committed_seq: u64,
) -> Result<Option<Position>, redb::Error> {
    let mut rooms = transaction.open_table(ROOMS)?;
    let Some((epoch, latest_seq)) =
        rooms.get(room)?.map(|row| (row.value().0.to_owned(), row.value().1))
    else {
        return Ok(None);
    };
    if latest_seq <= committed_seq {
        return Ok(Some(Position { epoch, latest_seq }));
    }
    transaction
        .open_table(MESSAGES)?
        .retain_in((room, committed_seq + 1)..=(room, u64::MAX), |_, _| false)?;
    transaction
        .open_table(RECENT)?
        .retain(|_, (recent_room, seq, ..)| recent_room != room || seq <= committed_seq)?;
    rooms.insert(room, (epoch.as_str(), committed_seq))?;
    Ok(Some(Position { epoch, latest_seq: committed_seq }))
}

/// Moves a file from before rooms into the lobby, if this is one, and drops its old tables.
fn migrate(transaction: &WriteTransaction) -> Result<(), redb::Error> {
    let had_single = transaction.list_tables()?.any(|table| table.name() == single::EPOCH.name());
    if !had_single {
        return Ok(());
    }
    let epoch =
        transaction.open_table(single::EPOCH)?.get(())?.map(|epoch| epoch.value().to_owned());
    let latest_seq =
        transaction.open_table(single::LATEST_SEQ)?.get(())?.map_or(0, |seq| seq.value());
    {
        let mut rooms = transaction.open_table(ROOMS)?;
        if let Some(epoch) = &epoch {
            rooms.insert(LOBBY, (epoch.as_str(), latest_seq))?;
        }
        let mut messages = transaction.open_table(MESSAGES)?;
        for entry in transaction.open_table(single::MESSAGES)?.iter()? {
            let (seq, row) = entry?;
            messages.insert((LOBBY, seq.value()), row.value())?;
        }
        let mut recent = transaction.open_table(RECENT)?;
        let mut next = recent.last()?.map_or(0, |(key, _)| key.value() + 1);
        let old_recent = transaction.open_table(single::RECENT)?;
        if old_recent.is_empty()? {
            // A file from before the table existed: its messages are what it knows of.
            for entry in transaction.open_table(single::MESSAGES)?.iter()? {
                let (seq, row) = entry?;
                let (id, source, _, sent_at_ms) = row.value();
                recent.insert(next, (LOBBY, seq.value(), source, id, sent_at_ms))?;
                next += 1;
            }
        } else {
            for entry in old_recent.iter()? {
                let (seq, row) = entry?;
                let (sender, id, at_ms) = row.value();
                recent.insert(next, (LOBBY, seq.value(), sender, id, at_ms))?;
                next += 1;
            }
        }
    }
    transaction.delete_table(single::EPOCH)?;
    transaction.delete_table(single::LATEST_SEQ)?;
    transaction.delete_table(single::MESSAGES)?;
    transaction.delete_table(single::RECENT)?;
    Ok(())
}

/// Every recent id the file holds, oldest first.
fn read_recent(db: &Database) -> Result<Vec<RecentId>, redb::Error> {
    let transaction = db.begin_read()?;
    let table = transaction.open_table(RECENT)?;
    let mut recent = Vec::new();
    for entry in table.iter()? {
        let (_, row) = entry?;
        let (room, seq, sender, id, at_ms) = row.value();
        let sent = Sent { seq, sender: sender.into(), id: id.into(), at_ms };
        recent.push(RecentId { room: room.into(), sent });
    }
    Ok(recent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedupe::{sender_key, Dedupe, Limits};
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

    fn seqs(saved: &SavedRoom) -> Vec<u64> {
        saved.messages.iter().map(|message| message.seq).collect()
    }

    /// Writes `messages` to `room` in `epoch`, one commit.
    fn append(store: &mut HistoryStore, room: &str, epoch: &str, messages: &[StoredMessage]) {
        let batch = RoomBatch { room, epoch, messages: messages.iter().collect() };
        store.append(&[batch]).unwrap();
    }

    /// What was written comes back, field for field, after the relay reopens the file, room by
    /// room; the recent ids come back for every room.
    #[test]
    fn rooms_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut opened = HistoryStore::open(dir.path(), 10).unwrap();
        let lobby = opened.reader.load(LOBBY).unwrap();
        assert_eq!((lobby.latest_seq, lobby.messages.len()), (0, 0));
        let written = [message(1, "a"), message(2, "b")];
        append(&mut opened.store, LOBBY, &lobby.epoch, &written[..1]);
        append(&mut opened.store, LOBBY, &lobby.epoch, &written[1..]);
        append(&mut opened.store, "team", "team-epoch", &[message(1, "t")]);
        drop(opened);
        let reopened = HistoryStore::open(dir.path(), 10).unwrap();
        let expected =
            SavedRoom { epoch: lobby.epoch, latest_seq: 2, messages: written.clone().into() };
        assert_eq!(reopened.reader.load(LOBBY).unwrap(), expected);
        let team = reopened.reader.load("team").unwrap();
        assert_eq!((team.epoch.as_str(), seqs(&team)), ("team-epoch", vec![1]));
        let recent: Vec<_> =
            reopened.recent.iter().map(|recent| (recent.room.as_str(), recent.sent.seq)).collect();
        assert_eq!(recent, [(LOBBY, 1), (LOBBY, 2), ("team", 1)]);
    }

    /// One commit writes several rooms at once, each numbered on its own.
    #[test]
    fn one_commit_holds_several_rooms() {
        let dir = tempfile::tempdir().unwrap();
        let mut opened = HistoryStore::open(dir.path(), 10).unwrap();
        let (a, b) = ([message(1, "a1"), message(2, "a2")], [message(1, "b1")]);
        let batch = [
            RoomBatch { room: "a", epoch: "ea", messages: a.iter().collect() },
            RoomBatch { room: "b", epoch: "eb", messages: b.iter().collect() },
        ];
        opened.store.append(&batch).unwrap();
        assert_eq!(seqs(&opened.reader.load("a").unwrap()), [1, 2]);
        assert_eq!(seqs(&opened.reader.load("b").unwrap()), [1]);
        assert_eq!(opened.reader.load("b").unwrap().epoch, "eb");
    }

    /// A room the file has never seen gets a new epoch each time it is read, and no messages.
    #[test]
    fn an_unknown_room_is_new() {
        let dir = tempfile::tempdir().unwrap();
        let opened = HistoryStore::open(dir.path(), 10).unwrap();
        let first = opened.reader.load("new").unwrap();
        let again = opened.reader.load("new").unwrap();
        assert_eq!((first.latest_seq, first.messages.len()), (0, 0));
        assert_ne!(first.epoch, again.epoch);
    }

    /// The file holds only the last N messages of a room, whether N is reached while writing or
    /// lowered between two runs.
    #[test]
    fn keeps_only_the_last_n() {
        let dir = tempfile::tempdir().unwrap();
        let mut opened = HistoryStore::open(dir.path(), 3).unwrap();
        for seq in 1..=5 {
            append(&mut opened.store, "r", "e", &[message(seq, &seq.to_string())]);
        }
        drop(opened);
        let opened = HistoryStore::open(dir.path(), 3).unwrap();
        let saved = opened.reader.load("r").unwrap();
        assert_eq!((saved.latest_seq, seqs(&saved)), (5, vec![3, 4, 5]));
        drop(opened);
        let opened = HistoryStore::open(dir.path(), 2).unwrap();
        assert_eq!(seqs(&opened.reader.load("r").unwrap()), [4, 5]);
    }

    /// What a relay keeps in memory of one room, resumed from the file.
    struct Resumed {
        opened: Opened,
        history: History,
        dedupe: Dedupe,
    }

    /// Opens the file and resumes the lobby's history and the dedupe window from it, as the
    /// relay does at start-up.
    fn start(dir: &Path, capacity: usize) -> Resumed {
        let opened = HistoryStore::open(dir, capacity).unwrap();
        let mut dedupe = Dedupe::new(Limits::default());
        for recent in &opened.recent {
            let Sent { seq, sender, id, at_ms } = &recent.sent;
            dedupe.remember(&sender_key(&recent.room, sender), id, *seq, *at_ms);
        }
        let saved = opened.reader.load(LOBBY).unwrap();
        let history = History::resume(saved.epoch, capacity, saved.latest_seq, saved.messages);
        Resumed { opened, history, dedupe }
    }

    impl Resumed {
        /// Numbers `id` and writes it, unless it is a re-send, as the room does; returns the
        /// seq and whether it was a duplicate.
        fn post(&mut self, id: &str) -> (u64, bool) {
            let key = sender_key(LOBBY, "ada");
            if let Some(seq) = self.dedupe.seq_of(&key, id, 0) {
                return (seq, true);
            }
            let posted = Posted { id: id.into(), source: "ada".into(), content: id.into() };
            let stored = self.history.append(posted, 0);
            let epoch = self.history.epoch().to_owned();
            append(&mut self.opened.store, LOBBY, &epoch, std::slice::from_ref(&stored));
            self.dedupe.remember(&key, id, stored.seq, 0);
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
        let mut opened = HistoryStore::open(dir.path(), 0).unwrap();
        append(&mut opened.store, "r", "e", &[message(1, "a")]);
        append(&mut opened.store, "r", "e", &[message(2, "b")]);
        drop(opened);
        let saved = HistoryStore::open(dir.path(), 0).unwrap().reader.load("r").unwrap();
        assert_eq!((saved.latest_seq, saved.messages.len()), (2, 0));
    }

    /// A commit that reported a failure may still have reached the disk: reopening forgets what
    /// it wrote after each room's committed seq (its messages and its recent ids), so those seqs
    /// are given out again, and writing goes on. Other rooms are untouched.
    #[test]
    fn reopening_forgets_what_a_failed_commit_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let mut opened = HistoryStore::open(dir.path(), 10).unwrap();
        append(&mut opened.store, "r", "e", &[message(1, "a"), message(2, "b")]);
        append(&mut opened.store, "other", "o", &[message(1, "o1")]);
        append(&mut opened.store, "r", "e", &[message(3, "reported failed")]);
        let found = opened.store.reopen(&[("r", 2), ("other", 1), ("unknown", 0)]).unwrap();
        let position = |epoch: &str, latest_seq| Some(Position { epoch: epoch.into(), latest_seq });
        assert_eq!(found, [position("e", 2), position("o", 1), None]);
        assert_eq!(seqs(&opened.reader.load("r").unwrap()), [1, 2]);
        append(&mut opened.store, "r", "e", &[message(3, "c")]);
        drop(opened);
        let opened = HistoryStore::open(dir.path(), 10).unwrap();
        let saved = opened.reader.load("r").unwrap();
        assert_eq!(saved.messages.last().map(|message| message.id.as_str()), Some("c"));
        assert_eq!(seqs(&saved), [1, 2, 3]);
        let ids: Vec<_> = opened.recent.iter().map(|recent| recent.sent.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "o1", "c"], "the id of the failed commit is forgotten too");
    }

    /// Starting a room over keeps the file but not the room's conversation: a new epoch, no
    /// messages, seq 0. Other rooms keep theirs.
    #[test]
    fn a_restart_starts_a_room_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut opened = HistoryStore::open(dir.path(), 10).unwrap();
        append(&mut opened.store, "r", "e", &[message(1, "a")]);
        append(&mut opened.store, "other", "o", &[message(1, "b")]);
        opened.store.restart("r", "second").unwrap();
        drop(opened);
        let opened = HistoryStore::open(dir.path(), 10).unwrap();
        let expected = SavedRoom { epoch: "second".into(), latest_seq: 0, messages: vec![] };
        assert_eq!(opened.reader.load("r").unwrap(), expected);
        assert_eq!(seqs(&opened.reader.load("other").unwrap()), [1]);
        let rooms: Vec<_> = opened.recent.iter().map(|recent| recent.room.as_str()).collect();
        assert_eq!(rooms, ["other"]);
    }

    /// Writes a file as a relay from before rooms did: one conversation in tables `epoch`,
    /// `latest_seq`, `messages` and (unless `without_recent`) `recent_ids`.
    pub(crate) fn write_single_conversation(
        path: &Path,
        messages: &[StoredMessage],
        without_recent: bool,
    ) {
        let db = Database::create(path).unwrap();
        let transaction = db.begin_write().unwrap();
        transaction.open_table(single::EPOCH).unwrap().insert((), "old-epoch").unwrap();
        let latest = messages.last().map_or(0, |message| message.seq);
        transaction.open_table(single::LATEST_SEQ).unwrap().insert((), latest).unwrap();
        {
            let mut table = transaction.open_table(single::MESSAGES).unwrap();
            let mut recent = transaction.open_table(single::RECENT).unwrap();
            for message in messages {
                let StoredMessage { seq, id, source, content, sent_at_ms } = message;
                table
                    .insert(seq, (id.as_str(), source.as_str(), content.as_str(), *sent_at_ms))
                    .unwrap();
                if !without_recent {
                    recent.insert(seq, (source.as_str(), id.as_str(), *sent_at_ms)).unwrap();
                }
            }
        }
        transaction.commit().unwrap();
    }

    /// A file from before rooms becomes the lobby: its epoch, seqs, messages and recent ids,
    /// also when it predates the recent ids table; the old tables are gone afterwards, and
    /// numbering goes on.
    #[test]
    fn a_single_conversation_file_moves_into_the_lobby() {
        for without_recent in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let old = [message(1, "a"), message(2, "b"), message(3, "c")];
            write_single_conversation(&dir.path().join(HISTORY_FILE), &old, without_recent);
            let mut opened = HistoryStore::open(dir.path(), 10).unwrap();
            let lobby = opened.reader.load(LOBBY).unwrap();
            assert_eq!(
                lobby,
                SavedRoom { epoch: "old-epoch".into(), latest_seq: 3, messages: old.to_vec() }
            );
            let recent: Vec<_> = opened
                .recent
                .iter()
                .map(|recent| (recent.room.as_str(), recent.sent.seq, recent.sent.id.as_str()))
                .collect();
            assert_eq!(recent, [(LOBBY, 1, "a"), (LOBBY, 2, "b"), (LOBBY, 3, "c")]);
            append(&mut opened.store, LOBBY, "old-epoch", &[message(4, "d")]);
            drop(opened);
            let opened = HistoryStore::open(dir.path(), 10).unwrap();
            assert_eq!(seqs(&opened.reader.load(LOBBY).unwrap()), [1, 2, 3, 4]);
            let db = opened.store.db.read().unwrap();
            let transaction = db.as_ref().unwrap().begin_read().unwrap();
            let names: Vec<String> =
                transaction.list_tables().unwrap().map(|table| table.name().to_owned()).collect();
            assert!(!names.iter().any(|name| name == "epoch" || name == "messages"), "{names:?}");
        }
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
