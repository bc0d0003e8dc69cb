//! `--redis`: the relay as one node of many, sharing rooms, numbering and history through one
//! Redis, so a client may reconnect to any node and resume exactly.
//!
//! Keys, one hash tag per room (so that a Redis Cluster keeps a room's keys in one slot):
//! `wschat:{room}:epoch` (the room's epoch), `:seq` (its latest seq), `:stream` (its last
//! messages, entry id `<seq>-0`, capped at [`Cluster::stream_cap`]) and `:id:<epoch>:<sender>
//! <id>` (the seq a message id was stored under, for [`ID_TTL`]).
//!
//! Write path: one Lua script per message ([`APPEND`]), atomic: checks the room's epoch is the
//! one the node serves, recognises a re-sent id (answering the seq it has), increments the seq,
//! appends to the stream and remembers the id. The sender is acked on the script's reply only;
//! when Redis fails, the message is refused with `unavailable` (the page's outbox keeps it).
//!
//! Fan-out: every node tails the streams of the rooms open on it ([`Cluster::tail`]: one `XREAD
//! BLOCK` naming them all, each from the last seq it delivered, on one connection of its own,
//! woken with `CLIENT UNBLOCK` when a room opens) and that is the only way a message reaches
//! members, the writer's node included (only the sender itself is skipped: its ack came with the
//! script's reply): every node delivers a room's messages in the same order, each once. The room's history in memory is what the tail delivered, on top of
//! what the stream held when the room opened here, so joins and history answers are the
//! stream's, joined with the live tail without gap or duplicate.
//!
//! Epochs: a room whose keys Redis lost (a flush, a restart without persistence) starts a new
//! epoch when a node next looks ([`OPEN`]); the node's v1 members are closed with 1012 and learn
//! it on reconnecting, as after a restart without `--data-dir`. A tail that fell further behind
//! than the stream keeps does the same (its clients then get `complete: false`), and so does a
//! room whose seq went back in Redis (a restart from a file that missed the last writes): that
//! epoch ends, since its seqs would be given out again.
//!
//! Presence and typing span the nodes: each node writes its members' names per room into a
//! sorted set scored by expiry (`:presence`, renewed every second, so a dead node's names go
//! within seconds) and reads the others'; typing signals go through a short stream per room
//! (`:typing`) that the tail reads with the messages.
//!
//! The room directory (a v1 client's `rooms`) spans them too: every second each node writes its
//! rooms and their member counts under its id in `wschat:{nodes}:rooms` (a hash), and its id in
//! `wschat:{nodes}` (a sorted set scored by expiry), and reads the other live nodes' lists, which
//! [`Cluster::rooms_elsewhere`] then answers from memory. A dead node's rooms go within
//! [`PRESENCE_TTL`]. (Both keys share one hash tag: one slot under Redis Cluster.)
//!
//! Health: a ping every half second, and every command's outcome, say whether Redis answers:
//! `/healthz` answers 503 and `wschat_redis_up` is 0 while it does not, and the log says so once
//! each way.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, RedisError, Script};
use tokio_util::sync::CancellationToken;
use wschat_protocol::v1::StoredMessage;

use crate::history::{History, Posted};
use crate::metrics::Metrics;
use crate::room::{ClientId, Room};
use crate::rooms::Rooms;

/// How long a message id is remembered, as `crate::dedupe` does on one node: an app re-sends its
/// outbox within seconds of reconnecting.
pub const ID_TTL: Duration = Duration::from_secs(10 * 60);

/// How long one `XREAD` waits for new entries before the tail looks at the room's epoch (and
/// whether the room is still open here). Bounds how soon a node notices that Redis lost a room
/// nobody writes to.
const TAIL_BLOCK: Duration = Duration::from_secs(1);

/// The most entries one `XREAD` takes.
const TAIL_BATCH: usize = 500;

/// How long any command may take before Redis counts as unreachable (the tail's blocking read
/// gets [`TAIL_BLOCK`] more).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a node checks that Redis answers, for `/healthz` and the metrics.
const HEALTH_INTERVAL: Duration = Duration::from_millis(500);

/// The pause after a failed read before the tail tries again.
const RETRY: Duration = Duration::from_millis(200);

/// How often a node writes the names of its members in each open room, and reads the others'.
const PRESENCE_INTERVAL: Duration = Duration::from_secs(1);

/// How long a name written by a node stays without being written again: the members of a node
/// that died disappear from the other nodes' presence within this (plus an interval).
const PRESENCE_TTL: Duration = Duration::from_secs(5);

/// The sorted set of live nodes (scored by when each expires) and the hash of each node's rooms.
const NODES: &str = "wschat:{nodes}";
const NODE_ROOMS: &str = "wschat:{nodes}:rooms";

/// Typing signals a room's typing stream keeps: they are read within moments or not at all.
const TYPING_KEPT: usize = 100;

/// The stream keeps at least this many entries, whatever the history limit: a node's tail that
/// is that far behind has to reload the room.
const MIN_STREAM: usize = 1000;

/// Appends one message. KEYS: epoch, seq, stream, the id's key. ARGV: the epoch the node serves,
/// the stream's cap, the id's TTL in seconds, then the entry: id, source, content, time stamp,
/// node, client. Answers `{"stored", seq}`, `{"duplicate", seq}`, or `{"epoch", current}` when
/// the room is in another epoch (or none: Redis lost it) and nothing was stored.
const APPEND: &str = r"
local epoch = redis.call('GET', KEYS[1])
if not epoch or redis.call('EXISTS', KEYS[2]) == 0 then return {'epoch', ''} end
if epoch ~= ARGV[1] then return {'epoch', epoch} end
local known = redis.call('GET', KEYS[4])
if known then return {'duplicate', known} end
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '=', ARGV[2], seq .. '-0',
  'epoch', epoch, 'id', ARGV[4], 'source', ARGV[5], 'content', ARGV[6], 'at', ARGV[7],
  'node', ARGV[8], 'client', ARGV[9])
redis.call('SET', KEYS[4], seq, 'EX', ARGV[3])
return {'stored', tostring(seq)}
";

/// Opens a room: its epoch, or a new one (ARGV[1]) with an empty stream when Redis holds none or
/// lost its seq. KEYS: epoch, seq, stream. Answers the epoch.
const OPEN: &str = r"
local epoch = redis.call('GET', KEYS[1])
if epoch and redis.call('EXISTS', KEYS[2]) == 1 then return epoch end
redis.call('DEL', KEYS[3])
redis.call('SET', KEYS[2], 0)
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
";

/// Ends an epoch whose seqs went back: deletes the room's epoch (KEYS[1]) if it is still ARGV[1],
/// so that the next [`OPEN`] starts a new one.
const END_EPOCH: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// A room's keys.
struct Keys {
    epoch: String,
    seq: String,
    stream: String,
}

impl Keys {
    fn of(room: &str) -> Self {
        // No room name holds a brace (see `wschat_protocol::rooms`), so the tag is the name.
        Self {
            epoch: format!("wschat:{{{room}}}:epoch"),
            seq: format!("wschat:{{{room}}}:seq"),
            stream: format!("wschat:{{{room}}}:stream"),
        }
    }

    /// The key remembering one message id, per epoch (an id from an older epoch says nothing
    /// about this one); the sender's length first, so that sender and id cannot be confused.
    /// The room's typing signals: a short stream of `node` and `name` entries, read by every
    /// node's tail beside the messages.
    fn typing(room: &str) -> String {
        format!("wschat:{{{room}}}:typing")
    }

    /// The room's presence: a sorted set of `<node>\n<name>`, scored by when it expires.
    fn presence(room: &str) -> String {
        format!("wschat:{{{room}}}:presence")
    }

    fn id(room: &str, epoch: &str, sender: &str, id: &str) -> String {
        format!("wschat:{{{room}}}:id:{epoch}:{}:{sender}:{id}", sender.len())
    }
}

/// What became of an appended message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Its seq.
    pub seq: u64,
    /// It had been stored before (a re-send): not stored again.
    pub duplicate: bool,
}

/// Why a message was not appended. Either way the sender is refused with `unavailable` and
/// sends it again later.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Redis did not answer, or failed.
    #[error("redis failed: {0}")]
    Redis(#[from] RedisError),
    /// The room is in another epoch in Redis than on this node (the node's tail reloads it).
    #[error("the room's epoch changed")]
    EpochChanged,
    /// Redis answered something the script never does.
    #[error("unexpected answer from redis: {0}")]
    Unexpected(String),
}

/// A room as Redis holds it.
pub struct Loaded {
    /// Its history: the epoch, the latest seq, the last messages.
    pub history: History,
}

/// This node's link to Redis.
pub struct Cluster {
    client: Client,
    /// Every command but the tails' blocking reads; reconnects by itself.
    commands: ConnectionManager,
    /// This node's id, in every entry it appends, so that its tails know its own senders.
    node: String,
    append: Script,
    open: Script,
    end_epoch: Script,
    /// The rooms open on this node, whose streams its tail reads.
    tailed: Mutex<Vec<Weak<Room>>>,
    /// Whether the tail has started (with the first room).
    tailing: AtomicBool,
    /// The tail's connection id in Redis (0: none now), to wake its blocked read.
    reader_id: AtomicI64,
    history_limit: usize,
    /// Whether Redis answered lately.
    up: AtomicBool,
    metrics: Arc<Metrics>,
    /// Stops the tails and the health check when the relay stops.
    stop: CancellationToken,
    /// The rooms open on the other live nodes, with their members there, as last read.
    elsewhere: Mutex<HashMap<String, u64>>,
}

impl Cluster {
    /// Connects to Redis at `url`, and starts checking that it answers.
    ///
    /// # Errors
    /// When the URL is not one, or Redis cannot be reached now.
    pub async fn connect(
        url: &str,
        history_limit: usize,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, RedisError> {
        let client = Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let commands = ConnectionManager::new_with_config(client.clone(), config).await?;
        let cluster = Arc::new(Self {
            client,
            commands,
            node: uuid::Uuid::new_v4().to_string(),
            append: Script::new(APPEND),
            open: Script::new(OPEN),
            end_epoch: Script::new(END_EPOCH),
            tailed: Mutex::new(Vec::new()),
            tailing: AtomicBool::new(false),
            reader_id: AtomicI64::new(0),
            history_limit,
            up: AtomicBool::new(true),
            metrics,
            stop,
            elsewhere: Mutex::new(HashMap::new()),
        });
        cluster.metrics.redis_up.set(1);
        tokio::spawn(Arc::clone(&cluster).watch());
        Ok(cluster)
    }

    /// Whether Redis answered lately: `/healthz` answers 503 otherwise, so that a load balancer
    /// sends clients to a node that can store their messages.
    #[must_use]
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Entries a room's stream keeps: the history limit, and at least [`MIN_STREAM`] for tails
    /// that lag.
    fn stream_cap(&self) -> usize {
        self.history_limit.max(MIN_STREAM)
    }

    /// Notes whether Redis answered, saying so in the log and the metrics when that changes.
    fn answered<T, E: std::fmt::Display>(&self, result: &Result<T, E>) {
        let up = result.is_ok();
        if self.up.swap(up, Ordering::Relaxed) != up {
            self.metrics.redis_up.set(i64::from(up));
            match result {
                Ok(_) => tracing::info!("redis answers again"),
                Err(error) => tracing::error!(%error, "redis unreachable: sends are refused"),
            }
        }
        if !up {
            self.metrics.redis_failures.inc();
        }
    }

    /// Pings Redis every [`HEALTH_INTERVAL`] until the relay stops.
    async fn watch(self: Arc<Self>) {
        let mut commands = self.commands.clone();
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(HEALTH_INTERVAL) => {}
            }
            let pong: Result<String, RedisError> =
                redis::cmd("PING").query_async(&mut commands).await;
            self.answered(&pong);
        }
    }

    /// Stores `posted` in `room` (in `epoch`, the one this node serves) as sent by `client` at
    /// `at_ms`, or finds the seq it was stored under before.
    ///
    /// # Errors
    /// See [`AppendError`]: nothing was stored.
    pub async fn append(
        &self,
        room: &str,
        epoch: &str,
        posted: &Posted,
        at_ms: u64,
        client: ClientId,
    ) -> Result<Appended, AppendError> {
        let keys = Keys::of(room);
        let mut commands = self.commands.clone();
        let answer: Result<Vec<String>, RedisError> = self
            .append
            .key(&keys.epoch)
            .key(&keys.seq)
            .key(&keys.stream)
            .key(Keys::id(room, epoch, &posted.source, &posted.id))
            .arg(epoch)
            .arg(self.stream_cap())
            .arg(ID_TTL.as_secs())
            .arg(&posted.id)
            .arg(&posted.source)
            .arg(&posted.content)
            .arg(at_ms)
            .arg(&self.node)
            .arg(client)
            .invoke_async(&mut commands)
            .await;
        self.answered(&answer);
        let answer = answer?;
        let seq = |text: &str| text.parse::<u64>().ok();
        match answer.as_slice() {
            [kind, value] if kind == "stored" || kind == "duplicate" => match seq(value) {
                Some(seq) => Ok(Appended { seq, duplicate: kind == "duplicate" }),
                None => Err(AppendError::Unexpected(value.clone())),
            },
            [kind, _] if kind == "epoch" => Err(AppendError::EpochChanged),
            other => Err(AppendError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Tells the other nodes that `name` is typing in `room` (this node told its own members):
    /// one entry in the room's typing stream, which their tails read. Best effort: a signal lost
    /// while Redis fails is repeated by the page a moment later.
    pub fn share_typing(&self, room: &str, name: &str) {
        let mut commands = self.commands.clone();
        let key = Keys::typing(room);
        let mut add = redis::pipe();
        add.cmd("XADD").arg(&key).arg("MAXLEN").arg("~").arg(TYPING_KEPT).arg("*");
        add.arg("node").arg(&self.node).arg("name").arg(name).ignore();
        // A quiet room's signals go with it.
        add.cmd("EXPIRE").arg(&key).arg(60).ignore();
        tokio::spawn(async move {
            let added: Result<(), RedisError> = add.query_async(&mut commands).await;
            // Lost with Redis: the next signal comes within a second or two.
            let _ = added;
        });
    }

    /// Shares presence with the other nodes until the relay stops: every [`PRESENCE_INTERVAL`],
    /// in one pipeline for all the rooms open here, writes the names of this node's members
    /// (expiring after [`PRESENCE_TTL`]), removes those that left, and reads everyone's.
    pub fn share_presence(self: &Arc<Self>, rooms: Arc<Rooms>) {
        let cluster = Arc::clone(self);
        tokio::spawn(async move { cluster.run_presence(&rooms).await });
    }

    async fn run_presence(&self, rooms: &Rooms) {
        let mut commands = self.commands.clone();
        let prefix = format!("{}\n", self.node);
        // What this node wrote last, per room: names no longer here are removed at once.
        let mut written: HashMap<String, BTreeSet<String>> = HashMap::new();
        loop {
            tokio::select! {
                () = self.stop.cancelled() => break,
                () = tokio::time::sleep(PRESENCE_INTERVAL) => {}
            }
            let now = now_ms();
            let expires = now + PRESENCE_TTL.as_millis() as u64;
            let open = rooms.open_rooms();
            let mut pipe = redis::pipe();
            let mut here_now = HashMap::new();
            for room in &open {
                let key = Keys::presence(room.name());
                let here = room.names_here();
                pipe.cmd("ZREMRANGEBYSCORE").arg(&key).arg("-inf").arg(now).ignore();
                let left: Vec<String> = written
                    .get(room.name())
                    .into_iter()
                    .flatten()
                    .filter(|name| !here.contains(*name))
                    .map(|name| format!("{prefix}{name}"))
                    .collect();
                if !left.is_empty() {
                    pipe.cmd("ZREM").arg(&key).arg(left).ignore();
                }
                for name in &here {
                    pipe.cmd("ZADD").arg(&key).arg(expires).arg(format!("{prefix}{name}")).ignore();
                }
                pipe.cmd("PEXPIRE").arg(&key).arg(PRESENCE_TTL.as_millis() as u64).ignore();
                pipe.cmd("ZRANGE").arg(&key).arg(0).arg(-1);
                here_now.insert(room.name().to_owned(), here);
            }
            // Rooms closed here since (their last member left): their names go at once too.
            for (closed, names) in &written {
                if here_now.contains_key(closed) {
                    continue;
                }
                let gone: Vec<String> =
                    names.iter().map(|name| format!("{prefix}{name}")).collect();
                if !gone.is_empty() {
                    pipe.cmd("ZREM").arg(Keys::presence(closed)).arg(gone).ignore();
                }
            }
            let everyone: Result<Vec<Vec<String>>, RedisError> =
                pipe.query_async(&mut commands).await;
            self.answered(&everyone);
            let Ok(everyone) = everyone else { continue };
            for (room, members) in open.iter().zip(everyone) {
                let elsewhere = members
                    .iter()
                    .filter(|member| !member.starts_with(&prefix))
                    .filter_map(|member| Some(member.split_once('\n')?.1.to_owned()))
                    .collect();
                room.set_names_elsewhere(elsewhere);
            }
            written = here_now;
            self.share_rooms(&mut commands, &open, now, expires).await;
        }
        // Stopping: this node's rooms leave the directory at once (best effort).
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM").arg(NODES).arg(&self.node).ignore();
        pipe.cmd("HDEL").arg(NODE_ROOMS).arg(&self.node).ignore();
        let _: Result<(), RedisError> = pipe.query_async(&mut commands).await;
    }

    /// Writes this node's rooms with members (`room count` per line) and reads the other live
    /// nodes', for [`Cluster::rooms_elsewhere`]; forgets the lists of nodes that expired.
    async fn share_rooms(
        &self,
        commands: &mut ConnectionManager,
        open: &[Arc<Room>],
        now: u64,
        expires: u64,
    ) {
        let lines: Vec<String> = open
            .iter()
            .filter(|room| room.len() > 0)
            .map(|room| format!("{} {}", room.name(), room.len()))
            .collect();
        let mut pipe = redis::pipe();
        pipe.cmd("ZREMRANGEBYSCORE").arg(NODES).arg("-inf").arg(now).ignore();
        pipe.cmd("ZADD").arg(NODES).arg(expires).arg(&self.node).ignore();
        pipe.cmd("HSET").arg(NODE_ROOMS).arg(&self.node).arg(lines.join("\n")).ignore();
        pipe.cmd("ZRANGE").arg(NODES).arg(0).arg(-1);
        pipe.cmd("HGETALL").arg(NODE_ROOMS);
        let read: Result<(Vec<String>, HashMap<String, String>), RedisError> =
            pipe.query_async(commands).await;
        self.answered(&read);
        let Ok((live, lists)) = read else { return };
        let mut elsewhere: HashMap<String, u64> = HashMap::new();
        let mut expired = Vec::new();
        for (node, list) in &lists {
            if *node == self.node {
                continue;
            }
            if !live.contains(node) {
                expired.push(node.as_str());
                continue;
            }
            for line in list.lines() {
                if let Some((room, count)) = line.split_once(' ') {
                    *elsewhere.entry(room.to_owned()).or_default() += count.parse().unwrap_or(0);
                }
            }
        }
        *self.elsewhere.lock().unwrap_or_else(PoisonError::into_inner) = elsewhere;
        if !expired.is_empty() {
            let gone: Result<(), RedisError> =
                redis::cmd("HDEL").arg(NODE_ROOMS).arg(expired).query_async(commands).await;
            self.answered(&gone);
        }
    }

    /// The rooms open on the other live nodes and how many are in each there, as read within the
    /// last second or so (empty until the first read, and while Redis does not answer).
    #[must_use]
    pub fn rooms_elsewhere(&self) -> HashMap<String, u64> {
        self.elsewhere.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Reads `room` from Redis, opening it in a new epoch if Redis holds none: its epoch, latest
    /// seq and last messages, read in one transaction so that the tail goes on exactly after them.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn load(&self, room: &str) -> Result<Loaded, RedisError> {
        let result = self.read_room(room).await;
        self.answered(&result);
        result
    }

    async fn read_room(&self, room: &str) -> Result<Loaded, RedisError> {
        let keys = Keys::of(room);
        let mut commands = self.commands.clone();
        loop {
            let _epoch: String = self
                .open
                .key(&keys.epoch)
                .key(&keys.seq)
                .key(&keys.stream)
                .arg(uuid::Uuid::new_v4().to_string())
                .invoke_async(&mut commands)
                .await?;
            let (epoch, seq, entries): (Option<String>, Option<u64>, StreamRangeReply) =
                redis::pipe()
                    .atomic()
                    .get(&keys.epoch)
                    .get(&keys.seq)
                    .cmd("XREVRANGE")
                    .arg(&keys.stream)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(self.history_limit.max(1))
                    .query_async(&mut commands)
                    .await?;
            // Lost again between the two (a flush right then): open it again.
            let (Some(epoch), Some(latest_seq)) = (epoch, seq) else { continue };
            let mut messages: Vec<StoredMessage> = entries
                .ids
                .iter()
                .rev()
                .filter_map(|entry| entry_message(entry, &epoch))
                .map(|(message, _)| message)
                .collect();
            messages.retain(|message| message.seq <= latest_seq);
            let history = History::resume(epoch, self.history_limit, latest_seq, messages);
            return Ok(Loaded { history });
        }
    }

    /// Adds `room` (open on this node, at its latest seq) to the rooms this node tails: each new
    /// entry of its stream is delivered to its members from then on, until the room closes.
    /// The first room starts the node's tail.
    pub fn tail(self: &Arc<Self>, room: &Arc<Room>) {
        let first = {
            let mut tailed = self.tailed.lock().unwrap_or_else(PoisonError::into_inner);
            let first = !self.tailing.swap(true, Ordering::AcqRel);
            tailed.push(Arc::downgrade(room));
            first
        };
        if first {
            let cluster = Arc::clone(self);
            tokio::spawn(async move { cluster.run_tail().await });
            return;
        }
        // The tail may be blocked in a read that does not name this room yet: wake it, so the
        // room's messages are not held up until that read times out.
        let reader = self.reader_id.load(Ordering::Acquire);
        if reader != 0 {
            let mut commands = self.commands.clone();
            tokio::spawn(async move {
                let unblocked: Result<i64, RedisError> = redis::cmd("CLIENT")
                    .arg("UNBLOCK")
                    .arg(reader)
                    .query_async(&mut commands)
                    .await;
                // Not blocked (or gone): the tail's next read names the room anyway.
                let _ = unblocked;
            });
        }
    }

    /// The rooms tailed now: those still open (closed ones are dropped from the list).
    fn tailed_rooms(&self) -> Vec<Arc<Room>> {
        let mut tailed = self.tailed.lock().unwrap_or_else(PoisonError::into_inner);
        tailed.retain(|room| room.upgrade().is_some_and(|room| !room.is_retired()));
        tailed.iter().filter_map(Weak::upgrade).collect()
    }

    /// The node's tail: one connection, one `XREAD BLOCK` naming every room open here, each from
    /// the latest seq it delivered, so that a node costs Redis one connection whatever its rooms.
    async fn run_tail(self: Arc<Self>) {
        let mut connection: Option<MultiplexedConnection> = None;
        let mut check_first = false;
        // The last typing signal read per room.
        let mut typing_seen: HashMap<String, String> = HashMap::new();
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            let conn = match &mut connection {
                Some(conn) => conn,
                None => match self.reader_connection().await {
                    Ok((conn, id)) => {
                        self.reader_id.store(id, Ordering::Release);
                        connection.insert(conn)
                    }
                    Err(error) => {
                        self.answered::<(), _>(&Err(error));
                        self.pause().await;
                        continue;
                    }
                },
            };
            let rooms = self.tailed_rooms();
            if rooms.is_empty() {
                self.pause().await;
                continue;
            }
            if std::mem::take(&mut check_first) {
                // After a failed read (Redis may have restarted), before reading on.
                for room in &rooms {
                    self.check(conn, room).await;
                }
            }
            let positions: Vec<(String, u64)> = rooms.iter().map(|room| room.position()).collect();
            typing_seen.retain(|name, _| rooms.iter().any(|room| room.name() == name));
            let mut read = redis::cmd("XREAD");
            read.arg("COUNT").arg(TAIL_BATCH).arg("BLOCK").arg(TAIL_BLOCK.as_millis() as u64);
            read.arg("STREAMS");
            for room in &rooms {
                read.arg(Keys::of(room.name()).stream);
            }
            for room in &rooms {
                read.arg(Keys::typing(room.name()));
            }
            for (_, after) in &positions {
                read.arg(format!("{after}-0"));
            }
            for room in &rooms {
                // From two seconds ago for a room new to the tail (by this node's clock, which
                // should agree with Redis's: entry ids are Redis's time), so that a signal sent
                // between two reads is not missed; older ones are stale.
                let seen = typing_seen
                    .entry(room.name().to_owned())
                    .or_insert_with(|| format!("{}-0", now_ms().saturating_sub(2000)));
                read.arg(seen.as_str());
            }
            let reply: Result<Option<StreamReadReply>, RedisError> = read.query_async(conn).await;
            self.answered(&reply);
            match reply {
                Ok(Some(reply)) => {
                    for stream in reply.keys {
                        if let Some(room) =
                            rooms.iter().find(|room| Keys::typing(room.name()) == stream.key)
                        {
                            for entry in &stream.ids {
                                let (Some(node), Some(name)) =
                                    (entry.get::<String>("node"), entry.get::<String>("name"))
                                else {
                                    continue;
                                };
                                if node != self.node {
                                    room.typing_elsewhere(&name);
                                }
                            }
                            if let Some(last) = stream.ids.last() {
                                typing_seen.insert(room.name().to_owned(), last.id.clone());
                            }
                            continue;
                        }
                        let Some(index) = rooms
                            .iter()
                            .position(|room| Keys::of(room.name()).stream == stream.key)
                        else {
                            continue;
                        };
                        let (room, (epoch, _)) = (&rooms[index], &positions[index]);
                        for entry in stream.ids {
                            let delivered =
                                entry_message(&entry, epoch).map(|(message, sender)| {
                                    let mine = (sender.node == self.node).then_some(sender.client);
                                    room.relay_stored(message, mine)
                                });
                            if delivered != Some(true) {
                                // Another epoch, or a gap: the stream moved on without this node.
                                self.reload(room).await;
                                break;
                            }
                        }
                    }
                }
                // Quiet for a while (or woken for a new room): has Redis lost a room meanwhile?
                Ok(None) => {
                    for room in &rooms {
                        self.check(conn, room).await;
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "reading the rooms' streams failed");
                    connection = None;
                    self.reader_id.store(0, Ordering::Release);
                    check_first = true;
                    self.pause().await;
                }
            }
        }
    }

    /// A connection of its own for the tail's blocking reads (they would hold up every other
    /// command on a shared one), and its id for `CLIENT UNBLOCK`.
    async fn reader_connection(&self) -> Result<(MultiplexedConnection, i64), RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT + TAIL_BLOCK));
        let mut conn = self.client.get_multiplexed_async_connection_with_config(&config).await?;
        let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut conn).await?;
        Ok((conn, id))
    }

    /// Looks whether Redis still holds `room` as this node serves it, and reloads it if not: its
    /// epoch is gone or another, or its seq went back (Redis restarted from a file that missed
    /// the last writes, e.g. `appendfsync everysec`). Seqs this node's clients saw would then be
    /// given out again in the same epoch, so that epoch ends: a new one starts.
    async fn check(&self, conn: &mut MultiplexedConnection, room: &Arc<Room>) {
        let keys = Keys::of(room.name());
        let (epoch, latest) = room.position();
        let current: Result<(Option<String>, Option<u64>), RedisError> =
            redis::pipe().get(&keys.epoch).get(&keys.seq).query_async(conn).await;
        self.answered(&current);
        let Ok((current, seq)) = current else { return };
        if current.as_deref() == Some(epoch.as_str()) && seq.is_some_and(|seq| seq >= latest) {
            return;
        }
        if current.as_deref() == Some(epoch.as_str()) {
            let ended: Result<i64, RedisError> =
                self.end_epoch.key(&keys.epoch).arg(&epoch).invoke_async(conn).await;
            self.answered(&ended);
            if ended.is_err() {
                return;
            }
        }
        self.reload(room).await;
    }

    /// Reads `room` again from Redis and starts it over from there (see `Room::reload`).
    async fn reload(&self, room: &Arc<Room>) {
        match self.load(room.name()).await {
            Ok(loaded) => {
                tracing::warn!(
                    room = room.name(),
                    epoch = loaded.history.epoch(),
                    latest_seq = loaded.history.latest_seq(),
                    "a room moved on in redis without this node: its clients resync"
                );
                room.reload(loaded.history);
            }
            Err(error) => tracing::debug!(%error, room = room.name(), "cannot reload a room"),
        }
    }

    async fn pause(&self) {
        tokio::select! {
            () = self.stop.cancelled() => {}
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Who appended an entry.
struct Sender {
    node: String,
    client: ClientId,
}

/// The message an entry of a room's stream in `epoch` holds, and who sent it; `None` for an
/// entry of another epoch or one that is not a message.
fn entry_message(entry: &StreamId, epoch: &str) -> Option<(StoredMessage, Sender)> {
    let text = |field: &str| -> Option<String> { entry.get(field) };
    if text("epoch")? != epoch {
        return None;
    }
    let seq = entry.id.split_once('-')?.0.parse().ok()?;
    let message = StoredMessage {
        seq,
        id: text("id")?,
        source: text("source")?,
        content: text("content")?,
        sent_at_ms: entry.get("at")?,
    };
    let sender = Sender { node: text("node")?, client: entry.get("client")? };
    Some((message, sender))
}

/// Milliseconds since the Unix epoch, by this node's clock (presence expiry: nodes' clocks must
/// agree within a second or so).
fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}
