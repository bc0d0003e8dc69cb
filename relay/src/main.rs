//! The `wschat-relay` command: parses flags, sets up logging, binds, and runs the relay until
//! Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use tracing_subscriber::EnvFilter;
use wschat_relay::{Config, Heartbeat, MessageLimits, RateLimit, RoomLimits, RunError, TlsFiles};

/// Relays chat messages between WebSocket clients: the wschat app and the tutorial's client.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on (the tutorial's client connects to port 5000).
    #[arg(long, env = "WSCHAT_LISTEN", default_value = "127.0.0.1:5000")]
    listen: SocketAddr,
    /// Also serve a built app (`trunk build --release` output) from DIR on the same port.
    #[arg(long = "static", env = "WSCHAT_STATIC", value_name = "DIR")]
    static_dir: Option<PathBuf>,
    /// Bytes that may wait for one client before it is evicted as not reading (each waiting
    /// message counts its text plus a few dozen bytes). There is no bound on the number of
    /// messages: a burst of thousands of short ones is fine.
    #[arg(long, env = "WSCHAT_QUEUE_BYTES", default_value_t = Config::default().queue_bytes,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..))]
    queue_bytes: usize,
    /// Seconds a client's socket may take nothing while messages wait for it before the client
    /// is evicted as not reading.
    #[arg(long, env = "WSCHAT_STALL_TIMEOUT", value_name = "SECONDS", default_value_t = 30,
          value_parser = seconds())]
    stall_timeout: u64,
    /// Largest message a client may send, in bytes (256 to 16 MiB; --queue-bytes must hold one).
    #[arg(long, env = "WSCHAT_MAX_MESSAGE_SIZE", value_name = "BYTES",
          default_value_t = Config::default().max_message_size,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(256..=MAX_MESSAGE_SIZE))]
    max_message_size: usize,
    /// Messages kept for clients that reconnect or join (0 keeps none).
    #[arg(long, env = "WSCHAT_HISTORY_LIMIT", default_value_t = Config::default().history_limit)]
    history_limit: usize,
    /// Keep the history in DIR/history.redb (DIR is created if missing), so the conversation and
    /// its numbering survive a restart: a message is on disk before it is acked or relayed
    /// (messages arriving together share one commit), and while the disk fails messages are
    /// refused with `unavailable`. Without it the history lives in memory and each start is a new
    /// epoch. One relay at a time per DIR.
    #[arg(long, env = "WSCHAT_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Make this relay one node of many sharing rooms, numbering, history and message ids
    /// through the Redis at URL (`redis://127.0.0.1:6379/0`): clients may connect to any node
    /// and resume exactly. Every message is stored in Redis before it is acked; while Redis does
    /// not answer, messages are refused with `unavailable` and /healthz answers 503. Replaces
    /// --data-dir.
    #[arg(long, env = "WSCHAT_REDIS", value_name = "URL", conflicts_with = "data_dir")]
    redis: Option<String>,
    /// Seconds between the pings the relay sends each client.
    #[arg(long, env = "WSCHAT_HEARTBEAT_INTERVAL", value_name = "SECONDS", default_value_t = 20,
          value_parser = seconds())]
    heartbeat_interval: u64,
    /// Seconds a client may stay silent after a ping before the relay drops it.
    #[arg(long, env = "WSCHAT_HEARTBEAT_TIMEOUT", value_name = "SECONDS", default_value_t = 10,
          value_parser = seconds())]
    heartbeat_timeout: u64,
    /// Longest sender name (`source`), in characters.
    #[arg(long, env = "WSCHAT_MAX_SOURCE_LENGTH", value_name = "CHARS",
          default_value_t = MessageLimits::default().max_source_chars, value_parser = at_least_one())]
    max_source_length: usize,
    /// Longest message content, in characters.
    #[arg(long, env = "WSCHAT_MAX_CONTENT_LENGTH", value_name = "CHARS",
          default_value_t = MessageLimits::default().max_content_chars, value_parser = at_least_one())]
    max_content_length: usize,
    /// Connections at once; further handshakes get 503.
    #[arg(long, env = "WSCHAT_MAX_CONNECTIONS", default_value_t = Config::default().max_connections,
          value_parser = at_least_one())]
    max_connections: usize,
    /// Rooms open at once, the lobby included; past it, joining a new room is refused
    /// (`rooms_full`). Without --data-dir, an empty room stays open (with its history) until
    /// this many are open; with it, an empty room closes at once (its history stays on disk).
    #[arg(long, env = "WSCHAT_MAX_ROOMS", value_name = "N",
          default_value_t = RoomLimits::default().max_rooms, value_parser = at_least_one())]
    max_rooms: usize,
    /// Members one room may have (connections; the lobby's too: past it, tutorial clients get
    /// 503); past it, joining is refused (`room_full`). Apart from --max-connections, which
    /// bounds connections in all.
    #[arg(long, env = "WSCHAT_MAX_ROOM_MEMBERS", value_name = "N",
          default_value_t = RoomLimits::default().max_members, value_parser = at_least_one())]
    max_room_members: usize,
    /// Rooms one connection may be in at once, the lobby included; past it, joining is refused
    /// (`too_many_rooms`).
    #[arg(long, env = "WSCHAT_MAX_ROOMS_PER_CONNECTION", value_name = "N",
          default_value_t = RoomLimits::default().max_per_connection, value_parser = at_least_one())]
    max_rooms_per_connection: usize,
    /// Seconds a client may take to send a request's header (and to finish its TLS handshake)
    /// before its connection is closed; also how long a kept-alive connection may stay idle.
    #[arg(long, env = "WSCHAT_HEADER_TIMEOUT", value_name = "SECONDS", default_value_t = 10,
          value_parser = seconds())]
    header_timeout: u64,
    /// Connections that have not become WebSockets (handshakes in progress, page requests, idle
    /// kept-alive connections), counted apart from --max-connections; past it the oldest of them
    /// is closed, so stalled connections cannot keep newcomers out.
    #[arg(long, env = "WSCHAT_MAX_PENDING_CONNECTIONS", value_name = "N",
          default_value_t = Config::default().max_pending_connections, value_parser = at_least_one())]
    max_pending_connections: usize,
    /// Seconds the relay waits, once Ctrl-C or SIGTERM arrives, for its connections to close
    /// (sockets get 1001) before it drops those still open and exits.
    #[arg(long, env = "WSCHAT_SHUTDOWN_TIMEOUT", value_name = "SECONDS", default_value_t = 5,
          value_parser = seconds())]
    shutdown_timeout: u64,
    /// Messages per second one connection may send, sustained (0.001 to 1,000,000,000; a
    /// fraction is fine: 0.5 is one message every two seconds).
    #[arg(long, env = "WSCHAT_RATE", value_name = "PER_SECOND",
          default_value_t = RateLimit::default().per_second, value_parser = rate)]
    rate: f64,
    /// Messages one connection may send at once before the rate applies.
    #[arg(long, env = "WSCHAT_BURST", default_value_t = RateLimit::default().burst,
          value_parser = clap::value_parser!(u32).range(1..))]
    burst: u32,
    /// Refused frames in a row after which a connection is closed (1008).
    #[arg(long, env = "WSCHAT_MAX_STRIKES", default_value_t = Config::default().max_strikes,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_strikes: u32,
    /// Seconds a client may be held back by the rate limit without a break before it is
    /// closed as a flood (1008).
    #[arg(long, env = "WSCHAT_FLOOD_AFTER", value_name = "SECONDS", default_value_t = 30,
          value_parser = seconds())]
    flood_after: u64,
    /// A browser origin allowed to connect besides the relay's own, e.g.
    /// `https://chat.example.org` (scheme, host and port must all match; its host is then
    /// allowed too); repeat it, or give `*` to allow any. Behind a TLS-terminating proxy, give
    /// the public `https://` origin. Default: the dev servers' (http://127.0.0.1:8080,
    /// http://localhost:8080, http://127.0.0.1:4200 and http://localhost:4200).
    #[arg(
        long = "allow-origin",
        env = "WSCHAT_ALLOW_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ',',
        value_parser = wschat_relay::allowed_origin
    )]
    allowed_origins: Vec<String>,
    /// A host name the relay answers to besides `localhost`, IP addresses and the hosts of
    /// --allow-origin, e.g. `chat.example.org` (the public name, when a reverse proxy passes
    /// `Host` on); repeat it, or give `*` for any. Requests naming another host get 403, so that
    /// a site cannot point its own name at the relay (DNS rebinding). Not needed with --tls-cert:
    /// browsers then reach the relay only under the certificate's names.
    #[arg(
        long = "allow-host",
        env = "WSCHAT_ALLOW_HOST",
        value_name = "NAME",
        value_delimiter = ',',
        value_parser = wschat_relay::allowed_host
    )]
    allowed_hosts: Vec<String>,
    /// Require an HS256 JSON Web Token signed with this secret on every connection (`?token=`
    /// or the subprotocol `wschat.token.<token>`); messages then carry the token's `name` (or
    /// `sub`). Prefer the environment variable to keep the secret out of process listings.
    /// At least 32 bytes (RFC 7518: an HS256 key as long as the hash), e.g. from
    /// `openssl rand -base64 32`.
    #[arg(long, env = "WSCHAT_JWT_SECRET", value_name = "SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// With --jwt-secret: the audience tokens must name in `aud`, e.g. `wschat` (tokens for
    /// another service are refused). Without it, tokens that name an audience are refused.
    #[arg(long, env = "WSCHAT_JWT_AUDIENCE", value_name = "AUDIENCE", requires = "jwt_secret",
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    jwt_audience: Option<String>,
    /// With --jwt-secret: the issuer tokens must name in `iss`, e.g. `https://login.example.org`.
    #[arg(long, env = "WSCHAT_JWT_ISSUER", value_name = "ISSUER", requires = "jwt_secret",
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    jwt_issuer: Option<String>,
    /// Serve https:// and wss:// with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "WSCHAT_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) for --tls-cert.
    #[arg(long, env = "WSCHAT_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve /echo, a bare echo socket for WebSocket conformance testing (scripts/autobahn.sh).
    /// Not for production.
    #[arg(long)]
    autobahn_echo: bool,
}

/// The longest any duration flag may be: a day is already far past any sensible setting, and the
/// bound keeps every deadline computed from one inside the clock's range.
const MAX_SECONDS: u64 = 24 * 60 * 60;

/// The largest `--max-message-size`: tungstenite refuses single frames over 16 MiB anyway.
const MAX_MESSAGE_SIZE: u64 = 16 * 1024 * 1024;

/// What a queued frame adds to its message besides the text the sender wrote (the v1 envelope:
/// id, seq, time), for the check that `--queue-bytes` holds one message of the largest size.
const FRAME_ENVELOPE: usize = 1024;

/// Durations in whole seconds, from 1 to [`MAX_SECONDS`].
fn seconds() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..=MAX_SECONDS)
}

/// Counts for which 0 means nothing works (no connections, no characters).
fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}

/// `--rate`: a finite number of messages per second, from 0.001 (below it, a single wait would
/// outlast any connection) to a billion (as good as no limit). 0, NaN or infinity would turn
/// the shaping off, and a tiny rate made the wait overflow.
fn rate(value: &str) -> Result<f64, String> {
    const RANGE: std::ops::RangeInclusive<f64> = 0.001..=1e9;
    let expected =
        || format!("expected messages per second from {} to {}", RANGE.start(), RANGE.end());
    let rate: f64 = value.trim().parse().map_err(|_| expected())?;
    if RANGE.contains(&rate) {
        Ok(rate)
    } else {
        Err(expected())
    }
}

/// The shortest `--jwt-secret`: RFC 7518 (3.2) wants an HS256 key at least as long as the hash;
/// a shorter one can be found from any token by brute force, and an empty one lets anyone sign.
const MIN_JWT_SECRET: usize = 32;

/// Settings refused after parsing: values that are each valid but nonsense together, and the
/// secret, checked here rather than by a value parser so that the refusal does not print it.
fn check_settings(args: &Args) {
    if let Some(secret) = args.jwt_secret.as_ref().filter(|secret| secret.len() < MIN_JWT_SECRET) {
        Args::command()
            .error(
                ErrorKind::ValueValidation,
                format!(
                    "--jwt-secret has {} bytes, too few to resist guessing from a token: use at \
                     least {MIN_JWT_SECRET}, e.g. from `openssl rand -base64 32`",
                    secret.len()
                ),
            )
            .exit();
    }
    let least_queue = args.max_message_size.saturating_add(FRAME_ENVELOPE);
    if args.queue_bytes < least_queue {
        Args::command()
            .error(
                ErrorKind::ValueValidation,
                format!(
                    "--queue-bytes {} cannot hold one message of --max-message-size {}: every \
                     client would be evicted by the first large one (give at least {least_queue})",
                    args.queue_bytes, args.max_message_size
                ),
            )
            .exit();
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    check_settings(&args);
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("wschat_relay=info")),
        )
        .init();
    // Every connection is a file descriptor, whether it became a socket yet or not.
    raise_open_file_limit(args.max_connections.saturating_add(args.max_pending_connections));
    if let Some(dir) = &args.static_dir {
        if !dir.join("index.html").is_file() {
            tracing::error!(dir = %dir.display(), "no index.html there: build the app first (trunk build --release)");
            std::process::exit(2);
        }
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await.inspect_err(|error| {
        tracing::error!(address = %args.listen, %error, "cannot listen");
    })?;
    let config = Config {
        static_dir: args.static_dir,
        queue_bytes: args.queue_bytes,
        stall_timeout: Duration::from_secs(args.stall_timeout),
        max_message_size: args.max_message_size,
        history_limit: args.history_limit,
        data_dir: args.data_dir,
        redis: args.redis,
        heartbeat: Heartbeat {
            interval: Duration::from_secs(args.heartbeat_interval),
            timeout: Duration::from_secs(args.heartbeat_timeout),
        },
        limits: MessageLimits {
            max_source_chars: args.max_source_length,
            max_content_chars: args.max_content_length,
        },
        rate: RateLimit { per_second: args.rate, burst: args.burst },
        max_strikes: args.max_strikes,
        flood_after: Duration::from_secs(args.flood_after),
        jwt_secret: args.jwt_secret,
        jwt_audience: args.jwt_audience,
        jwt_issuer: args.jwt_issuer,
        echo: args.autobahn_echo,
        tls: args.tls_cert.zip(args.tls_key).map(|(cert, key)| TlsFiles { cert, key }),
        allowed_origins: if args.allowed_origins.is_empty() {
            Config::default().allowed_origins
        } else {
            args.allowed_origins
        },
        allowed_hosts: args.allowed_hosts,
        max_connections: args.max_connections,
        rooms: RoomLimits {
            max_rooms: args.max_rooms,
            max_members: args.max_room_members,
            max_per_connection: args.max_rooms_per_connection,
        },
        header_timeout: Duration::from_secs(args.header_timeout),
        max_pending_connections: args.max_pending_connections,
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
    };
    match wschat_relay::run(listener, config, shutdown_signal()).await {
        Ok(()) => Ok(()),
        // The error names the data directory or the history file.
        Err(RunError::Store(error)) => {
            tracing::error!(%error, "cannot load the history");
            std::process::exit(2);
        }
        // The error says what Redis (or the URL) refused.
        Err(RunError::Redis(error)) => {
            tracing::error!(%error, "cannot reach redis");
            std::process::exit(2);
        }
        // The error names the file or what rustls refused.
        Err(RunError::Tls(error)) => {
            tracing::error!(%error, "cannot set up TLS");
            std::process::exit(2);
        }
        // Checked when the flags were parsed: only reachable through a bug.
        Err(RunError::Allowlist(error)) => {
            tracing::error!(%error, "cannot use the allowlists");
            std::process::exit(2);
        }
        Err(RunError::Io(error)) => Err(error),
    }
}

/// Raises the soft limit on open files to the hard limit, logging both: every client is a socket,
/// and the usual soft limit (1,024) is far below the default `--max-connections` (10,000), while
/// the hard limit is usually much higher. A limit still below `max_connections` (here the chat's
/// and the pending connections together) is worth a warning: past it, new connections fail at
/// accept.
fn raise_open_file_limit(max_connections: usize) {
    let before = match rlimit::Resource::NOFILE.get() {
        Ok((soft, _)) => soft,
        Err(error) => {
            tracing::warn!(%error, "cannot read the open-file limit");
            return;
        }
    };
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(now) if now < max_connections as u64 => tracing::warn!(
            open_file_limit = now,
            max_connections,
            "the open-file limit is below --max-connections: raise the hard limit (ulimit -Hn, LimitNOFILE=)"
        ),
        Ok(now) if now != before => {
            tracing::info!(from = before, to = now, "raised the open-file limit to the hard limit");
        }
        Ok(now) => tracing::info!(open_file_limit = now, "open-file limit"),
        Err(error) => tracing::warn!(%error, open_file_limit = before, "cannot raise the open-file limit"),
    }
}

/// Completes on Ctrl-C, or on SIGTERM (what service managers and container runtimes send).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
