//! The wschat relay: lets browser tabs (and the tutorial's own client) chat over WebSockets.
//!
//! - [`run`] serves the relay on a listener until a shutdown future completes, then closes every
//!   client socket with 1001 and waits for the socket tasks.
//! - `server` accepts connections and serves HTTP on each until it becomes a WebSocket: the header
//!   timeout, the bound on connections not yet upgraded, and the shutdown deadline.
//! - `gather` is a client's socket whose writes are gathered into few system calls per burst.
//! - `routes` maps HTTP paths to handlers: WebSocket upgrades on `/ws` and `/`, and optionally the
//!   built app as static files.
//! - `close` is the catalogue of every close the relay makes: code, reason, metric label, and
//!   whether the client should reconnect.
//! - `connection` runs one client: a reader and a writer (two futures in one task), and the close
//!   handshake.
//! - `rooms` keeps the open rooms by name: opens a room on its first join (from the store with
//!   `--data-dir`), closes it when idle, within the bounds on rooms; counts connections.
//! - `room` is one room: its members and their names (presence), its history, and fan-out of
//!   each message, in each member's protocol.
//! - `memberships` is one connection's rooms, its name, and its typing signals' pace.
//! - `presence` counts the names in a room, several tabs of one name once.
//! - `outbound` is one client's queue of frames to write, bounded in bytes.
//! - `metrics` keeps the figures served at `/metrics` (Prometheus text format).
//! - `auth` verifies the optional JSON Web Tokens and says whose name a client speaks under.
//! - `origin` checks that a request names a host the relay serves (against DNS rebinding), and a
//!   handshake's Origin against the allowlist.
//! - `rate` is the per-connection token bucket behind the message rate limit.
//! - `tls` serves `https://`/`wss://` with rustls when given a certificate.
//! - `history` keeps a room's last N numbered messages for clients that catch up; it answers
//!   every client, from memory, in pages of bounded size.
//! - `dedupe` remembers the ids each sender used lately (count and age bounded, whatever the
//!   history keeps), so that a message re-sent after a reconnect is acked, not stored again.
//! - `store` mirrors every room's history in a redb file under `--data-dir`, so each room's
//!   epoch, seqs and last N messages, and the ids of recent ones, survive a restart.
//! - `cluster` (with `--redis`) makes the relay one node of many: each message is numbered and
//!   stored in Redis by one script, and every node tails the streams of its open rooms, the only
//!   way messages reach members, so every node delivers the same order.
//! - `commit` is the thread that writes new messages of every room to the store in batches
//!   before their rooms ack and relay them, and reopens the store when a write fails; and the
//!   journal where rooms with messages waiting queue up for it.

mod auth;
mod close;
mod cluster;
mod commit;
mod connection;
mod dedupe;
mod gather;
mod history;
mod memberships;
mod metrics;
mod origin;
mod outbound;
mod presence;
mod rate;
mod room;
mod rooms;
mod routes;
mod server;
mod store;
mod tls;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::commit::{Committer, Journal};
use crate::dedupe::{sender_key, Dedupe};
use crate::history::History;
use crate::metrics::Metrics;
use crate::origin::BrowserPolicy;
use crate::room::Core;
use crate::rooms::Rooms;
use crate::store::{HistoryStore, RoomReader, Store};

pub use connection::Heartbeat;
pub use origin::{allowed_host, allowed_origin, AllowlistError};
pub use rate::RateLimit;
pub use rooms::RoomLimits;
pub use store::{StoreError, HISTORY_FILE};
pub use tls::{TlsError, TlsFiles};
pub use wschat_protocol::limits::MessageLimits;

/// How the relay behaves. [`Config::default`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// A directory holding a built app (`trunk build --release` output) to serve beside the
    /// socket, so a deployment is one process. `None`: serve only the socket.
    pub static_dir: Option<PathBuf>,
    /// How many bytes may wait for one client before it counts as not reading and is evicted
    /// (1008): each waiting frame counts its text plus the few dozen bytes its slot takes, so this
    /// bounds the frame count as well. Default 4 MiB: a burst of 10,000 short messages or 64
    /// full-size ones, which a reading client drains in milliseconds.
    ///
    /// There is no separate bound on the number of frames (the relay had `--queue-capacity`, 256
    /// frames, until a burst of 2,000 short messages evicted every healthy reader): a reading
    /// client is briefly thousands of frames behind in a burst, and what a queue costs is bytes.
    pub queue_bytes: usize,
    /// How long a client's socket may take nothing while frames wait for it before the client
    /// counts as not reading and is evicted (1008), however few bytes wait. Default 30 s: a
    /// reading client takes a full-size message in well under a second even on a slow link; one
    /// that stopped reading (a frozen process) would otherwise hold its queue until the byte
    /// bound, which a quiet room may take hours to reach.
    pub stall_timeout: Duration,
    /// The largest message a client may send, in bytes; larger ones close the connection (1009).
    /// Default 64 KiB.
    pub max_message_size: usize,
    /// How many messages the relay keeps per room for clients that reconnect or join. Default
    /// 1000.
    pub history_limit: usize,
    /// A directory for the history file ([`HISTORY_FILE`]), so that the epoch, the seqs and the
    /// last `history_limit` messages survive a restart. Every message is on disk before it is
    /// acked or relayed; messages that arrive while one commit is being synced share the next
    /// (one fsync per batch). While the disk fails, messages are refused with `unavailable` and
    /// the file is reopened; if it no longer holds what clients saw, a new epoch starts. `None`
    /// (the default): the history lives in memory and each start is a new epoch.
    pub data_dir: Option<PathBuf>,
    /// A Redis URL (`redis://host:port/db`): the relay becomes one node of many sharing rooms,
    /// numbering, history and message ids through that Redis (see the README, "Several relays on
    /// one Redis"); `data_dir` is then not used. While Redis does not answer, messages are
    /// refused with `unavailable` and `/healthz` answers 503. `None` (the default): the relay
    /// stands alone.
    pub redis: Option<String>,
    /// How often each client is pinged, and how long it may stay silent after a ping before it
    /// is dropped. Default: every 20 s, 10 s.
    pub heartbeat: Heartbeat,
    /// What a message's `source` and `content` may hold. Default: 64 and 10,000 characters.
    pub limits: MessageLimits,
    /// How fast one connection may send messages. Default: 10 per second, bursts of 20.
    pub rate: RateLimit,
    /// Refused frames in a row after which a connection is closed with 1008. Default 20.
    pub max_strikes: u32,
    /// How long a client may be held back by the rate limit without a break before it is closed
    /// as a flood (1008). Default 30 s: an outbox of 100 messages flushed at 10 per second takes
    /// 10 s.
    pub flood_after: Duration,
    /// Connections at once; further handshakes get 503. Default 10,000.
    pub max_connections: usize,
    /// Rooms open at once, members per room, rooms per connection. Default: 10,000, 10,000, 32.
    pub rooms: RoomLimits,
    /// How long a client may take to send a request's header (and, with TLS, to complete the
    /// handshake before it) before its connection is closed; also how long a kept-alive
    /// connection may wait for its next request. Default 10 s: a header is a few hundred bytes.
    pub header_timeout: Duration,
    /// Connections that have not become WebSockets (handshakes in progress, page requests, idle
    /// kept-alive connections), counted apart from `max_connections`; past it, the oldest of
    /// them is closed. Default 1,024: handshakes take milliseconds, so only a flood of stalled
    /// connections reaches it.
    pub max_pending_connections: usize,
    /// Once shutdown begins, how long the relay waits for its connections to close (sockets get
    /// 1001 and a moment to answer) before it drops those still open. Default 5 s.
    pub shutdown_timeout: Duration,
    /// Browser origins allowed to connect besides the relay's own (`*`: any); others get 403.
    /// Compared by scheme, host and port. Default: the dev servers', `http://127.0.0.1:8080`,
    /// `http://localhost:8080` (`trunk serve`), `http://127.0.0.1:4200` and
    /// `http://localhost:4200` (the tutorial's Angular client).
    pub allowed_origins: Vec<String>,
    /// Host names the relay answers to besides `localhost`, IP addresses and the hosts of
    /// `allowed_origins` (`*`: any): a request naming another host gets 403, so a page whose
    /// name was pointed at the relay (DNS rebinding) cannot use it. Not checked with `tls`:
    /// browsers then reach the relay only under its certificate's names. Default: none.
    pub allowed_hosts: Vec<String>,
    /// Serve `https://` and `wss://` with this certificate and key (PEM). Default: none (plain
    /// HTTP, e.g. behind a TLS-terminating proxy).
    pub tls: Option<TlsFiles>,
    /// Serve `/echo`, a bare echo socket for WebSocket conformance testing (Autobahn|Testsuite).
    /// Never in production. Default: off.
    pub echo: bool,
    /// With a secret, every handshake needs an HS256 token signed with it (`?token=` or the
    /// subprotocol `wschat.token.<token>`), and messages carry the token's name; the connection
    /// is closed (1008, "token expired") when the token expires. Default: none.
    pub jwt_secret: Option<String>,
    /// With `jwt_secret`: the audience tokens must name in `aud` (a token for another service
    /// is refused). Default: none, and then tokens naming any audience are refused.
    pub jwt_audience: Option<String>,
    /// With `jwt_secret`: the issuer tokens must name in `iss`. Default: none (any issuer).
    pub jwt_issuer: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            static_dir: None,
            queue_bytes: 4 * 1024 * 1024,
            stall_timeout: Duration::from_secs(30),
            max_message_size: 64 * 1024,
            history_limit: 1000,
            data_dir: None,
            redis: None,
            heartbeat: Heartbeat {
                interval: Duration::from_secs(20),
                timeout: Duration::from_secs(10),
            },
            limits: MessageLimits::default(),
            rate: RateLimit::default(),
            max_strikes: 20,
            flood_after: Duration::from_secs(30),
            max_connections: 10_000,
            rooms: RoomLimits::default(),
            header_timeout: Duration::from_secs(10),
            max_pending_connections: 1024,
            shutdown_timeout: Duration::from_secs(5),
            allowed_origins: origin::default_allowlist(),
            allowed_hosts: Vec::new(),
            jwt_secret: None,
            jwt_audience: None,
            jwt_issuer: None,
            tls: None,
            echo: false,
        }
    }
}

/// What every request handler shares.
struct Relay {
    config: Config,
    rooms: Arc<Rooms>,
    /// Cancelled when the relay shuts down; each client's stop token is a child of it.
    shutdown: CancellationToken,
    /// Cancelled when the shutdown deadline passes: every connection still open is dropped.
    abandon: CancellationToken,
    /// Tracks the socket tasks, which outlive the HTTP connections they were upgraded from.
    sockets: TaskTracker,
    metrics: Arc<Metrics>,
    /// Verifies tokens when `jwt_secret` is set.
    auth: Option<Authenticator>,
    /// The Host and Origin checks.
    browsers: BrowserPolicy,
}

/// Why [`run`] stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The history in `data_dir` could not be opened; nothing was served.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Redis could not be reached at start (or its URL is not one); nothing was served.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The TLS certificate or key could not be used; nothing was served.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// An allowed origin or host cannot be used; nothing was served.
    #[error(transparent)]
    Allowlist(#[from] AllowlistError),
    /// The listener failed.
    #[error("the listener failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves the relay on `listener` until `shutdown` completes.
///
/// With a `data_dir`, the history is first loaded from there (see [`Config::data_dir`]).
/// Shutdown then stops accepting connections, closes every client socket with 1001 ("going
/// away"), returns once every connection has closed or the shutdown timeout has passed
/// (dropping those still open), and leaves the history file closed.
///
/// # Errors
/// [`RunError::Store`] when the history file cannot be opened, [`RunError::Tls`] or
/// [`RunError::Allowlist`] for unusable settings (all before anything is served), or an I/O
/// error from the listener.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let acceptor = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let browsers =
        BrowserPolicy::new(&config.allowed_origins, &config.allowed_hosts, acceptor.is_some())?;
    let metrics = Metrics::new();
    let metrics = Arc::new(if config.redis.is_some() { metrics.with_redis() } else { metrics });
    let stop_cluster = CancellationToken::new();
    let cluster = match &config.redis {
        Some(url) => Some(
            cluster::Cluster::connect(
                url,
                config.history_limit,
                Arc::clone(&metrics),
                stop_cluster.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let Start { lobby, dedupe, store, reader } = match &cluster {
        Some(cluster) => {
            let loaded = cluster.load(wschat_protocol::rooms::LOBBY).await?;
            tracing::info!(
                lobby_epoch = loaded.history.epoch(),
                lobby_latest_seq = loaded.history.latest_seq(),
                "lobby read from redis"
            );
            Start {
                lobby: loaded.history,
                dedupe: Dedupe::new(dedupe::Limits::default()),
                store: None,
                reader: None,
            }
        }
        None => open_history(&config)?,
    };
    let auth = config.jwt_secret.as_deref().map(|secret| {
        Authenticator::new(secret, config.jwt_audience.as_deref(), config.jwt_issuer.as_deref())
    });
    let core = Arc::new(Core {
        queue_bytes: config.queue_bytes,
        max_members: config.rooms.max_members,
        metrics: Arc::clone(&metrics),
        dedupe: std::sync::Mutex::new(dedupe),
        journal: store.is_some().then(Journal::default),
        ticks: std::sync::atomic::AtomicU64::new(0),
        cluster: cluster.clone(),
    });
    let rooms =
        Arc::new(Rooms::new(core, lobby, reader, config.rooms.max_rooms, config.history_limit));
    if let Some(cluster) = &cluster {
        cluster.tail(rooms.lobby());
        cluster.share_presence(Arc::clone(&rooms));
    }
    let committer = store
        .map(|store| Committer::start(Arc::clone(&rooms), store, Arc::clone(&metrics)))
        .transpose()?;
    let relay = Arc::new(Relay {
        rooms,
        config,
        shutdown: CancellationToken::new(),
        abandon: CancellationToken::new(),
        sockets: TaskTracker::new(),
        metrics,
        auth,
        browsers,
    });
    let scheme = if acceptor.is_some() { "https/wss" } else { "http/ws" };
    tracing::info!(address = %listener.local_addr()?, scheme, static_dir = ?relay.config.static_dir, "listening");
    server::serve(listener, acceptor, relay, shutdown).await;
    stop_cluster.cancel();
    if let Some(committer) = committer {
        committer.finish().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// What the rooms start from.
struct Start {
    /// The lobby's history.
    lobby: History,
    /// The ids recently used, so that re-sends across a restart are recognised.
    dedupe: Dedupe,
    /// Where the committer writes, with a `data_dir`.
    store: Option<Box<dyn Store>>,
    /// Where rooms are read from as they open, with a `data_dir`.
    reader: Option<RoomReader>,
}

/// The lobby's history and the dedupe window to start from: loaded from `data_dir` when there is
/// one, else empty in a new epoch, since the one before it is lost. (Other rooms are read when
/// they open.)
///
/// Opening the file is blocking I/O on the runtime's thread; it happens once, before anything is
/// served, so it delays nothing else.
fn open_history(config: &Config) -> Result<Start, StoreError> {
    let mut dedupe = Dedupe::new(dedupe::Limits::default());
    let Some(dir) = &config.data_dir else {
        let epoch = uuid::Uuid::new_v4().to_string();
        return Ok(Start {
            lobby: History::new(epoch, config.history_limit),
            dedupe,
            store: None,
            reader: None,
        });
    };
    let opened = HistoryStore::open(dir, config.history_limit)?;
    let saved = opened.reader.load(wschat_protocol::rooms::LOBBY)?;
    tracing::info!(
        file = %dir.join(HISTORY_FILE).display(),
        lobby_epoch = %saved.epoch,
        lobby_latest_seq = saved.latest_seq,
        lobby_messages = saved.messages.len(),
        recent_ids = opened.recent.len(),
        "history loaded"
    );
    for recent in &opened.recent {
        let sent = &recent.sent;
        dedupe.remember(&sender_key(&recent.room, &sent.sender), &sent.id, sent.seq, sent.at_ms);
    }
    let lobby =
        History::resume(saved.epoch, config.history_limit, saved.latest_seq, saved.messages);
    Ok(Start { lobby, dedupe, store: Some(Box::new(opened.store)), reader: Some(opened.reader) })
}
