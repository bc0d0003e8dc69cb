//! HTTP routes: WebSocket upgrades on `/ws` and `/`, and the built app as static files.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::Message;
use axum::extract::{ConnectInfo, Request, State, WebSocketUpgrade};
use axum::http::header::UPGRADE;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tower::ServiceExt;
use tower_http::compression::Compression;
use tower_http::services::{ServeDir, ServeFile};

use wschat_protocol::rooms::LOBBY;
use wschat_protocol::v1::SUBPROTOCOL;
use wschat_protocol::{ErrorCode, WireError};

use crate::close::Close;
use crate::connection::{Admitted, Refusal};
use crate::memberships::Memberships;
use crate::outbound::Outbound;
use crate::room::{Greeting, Joiner, Mode};
use crate::rooms::Seat;
use crate::{connection, Relay};

/// `/ws` is the app's socket; `/` is the tutorial's (`ws://localhost:5000`) and, for plain HTTP,
/// the app's page when a static directory is configured.
///
/// Every route but `/healthz` answers only requests that name a host the relay serves (see
/// `origin`); health checks name the relay however their network does, and learn nothing.
pub(crate) fn router(relay: Arc<Relay>) -> Router {
    let mut router = Router::new()
        .route("/ws", any(upgrade))
        .route("/", any(root))
        .route("/metrics", get(metrics));
    if relay.config.echo {
        router = router.route("/echo", any(echo));
    }
    if let Some(dir) = &relay.config.static_dir {
        // Compressed on the fly: the wasm bundle shrinks to about a third over gzip.
        router = router.fallback_service(Compression::new(ServeDir::new(dir)));
    }
    router
        .layer(middleware::from_fn_with_state(Arc::clone(&relay), known_host))
        .route("/healthz", get(health))
        .with_state(relay)
}

/// Refuses a request that names a host the relay does not serve (403): a page whose name was
/// pointed at the relay's address (DNS rebinding) must not use the socket nor read the pages.
async fn known_host(
    State(relay): State<Arc<Relay>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let Err(host) = relay.browsers.check_host(request.headers(), request.uri()) else {
        return next.run(request).await;
    };
    // `?`: the name is the client's text, escaped in the log.
    tracing::warn!(%peer, host = ?host, "refused a request: not a host this relay serves");
    if request.headers().contains_key(UPGRADE) {
        crate::metrics::count(&relay.metrics.handshakes_rejected, "host");
    }
    // The name is not echoed back: the answer is for whoever set the relay up.
    let body = "this relay does not serve the host name in this request: if the name is yours, \
                start the relay with --allow-host NAME\n";
    (StatusCode::FORBIDDEN, body).into_response()
}

/// Whether this relay can take messages: 200, or 503 while its Redis (with `--redis`) does not
/// answer, so that a load balancer sends clients to another node meanwhile.
async fn health(State(relay): State<Arc<Relay>>) -> Response {
    match relay.rooms.cluster() {
        Some(cluster) if !cluster.is_up() => {
            (StatusCode::SERVICE_UNAVAILABLE, "redis unreachable\n").into_response()
        }
        _ => "ok\n".into_response(),
    }
}

/// The figures in the Prometheus text format. Expose it to your monitoring, not to the internet
/// (a reverse proxy can refuse `/metrics`).
async fn metrics(State(relay): State<Arc<Relay>>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(axum::http::header::CONTENT_TYPE, content_type)], relay.metrics.render()).into_response()
}

/// The conformance-test echo endpoint (`--autobahn-echo` only): every data frame comes back as
/// it was, so Autobahn|Testsuite can exercise the WebSocket layer itself. No room, no limits but
/// the frame size.
async fn echo(socket: WebSocketUpgrade) -> Response {
    socket.max_message_size(ECHO_MAX_MESSAGE).on_upgrade(|mut socket| async move {
        while let Some(Ok(message)) = socket.recv().await {
            let reply = match message {
                Message::Text(_) | Message::Binary(_) => message,
                // tungstenite answers pings and the closing handshake by itself.
                Message::Ping(_) | Message::Pong(_) | Message::Close(_) => continue,
            };
            if socket.send(reply).await.is_err() {
                break;
            }
        }
    })
}

/// The largest message the echo endpoint takes: Autobahn's biggest cases send 16 MiB.
const ECHO_MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// How many bytes a socket reads at once, which is also the read buffer every socket keeps from
/// its first moment (tungstenite allocates it whole, and its default of 128 KiB made an idle
/// connection cost 139 KB). 512 bytes hold a typical chat frame; a larger one is read in several
/// calls into a buffer reserved for the whole frame. Measured with `examples/measure.rs`: 4.5 KB
/// per idle socket at 5,000 open (1 KiB: 5.0 KB).
const READ_BUFFER: usize = 512;

/// How many bytes of frames tungstenite gathers before it writes them to the socket, when the
/// writer writes a batch (the rest goes with the batch's flush). The buffer keeps its size once
/// grown, so this is also what a socket keeps after a burst: 4 KiB, a few dozen chat frames.
/// Below it, `gather` makes system calls of up to 16 KiB and keeps nothing once flushed.
const WRITE_BUFFER: usize = 4 * 1024;

async fn upgrade(
    socket: WebSocketUpgrade,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(relay): State<Arc<Relay>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    accept(socket, peer, relay, &uri, &headers)
}

async fn root(
    socket: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(relay): State<Arc<Relay>>,
    request: Request,
) -> Response {
    if let Ok(socket) = socket {
        return accept(socket, peer, relay, request.uri(), request.headers());
    }
    match &relay.config.static_dir {
        Some(dir) => {
            let index = Compression::new(ServeFile::new(dir.join("index.html")));
            match index.oneshot(request).await {
                Ok(response) => response.into_response(),
                Err(never) => match never {},
            }
        }
        None => "wschat relay: connect a WebSocket to /ws\n".into_response(),
    }
}

fn accept(
    socket: WebSocketUpgrade,
    peer: SocketAddr,
    relay: Arc<Relay>,
    uri: &Uri,
    headers: &HeaderMap,
) -> Response {
    if let Err(origin) = relay.browsers.check_origin(headers) {
        tracing::warn!(%peer, origin = ?origin, "refused a handshake: origin not allowed");
        crate::metrics::count(&relay.metrics.handshakes_rejected, "origin");
        let body = format!("origin {origin} is not allowed to connect (see --allow-origin)\n");
        return (StatusCode::FORBIDDEN, body).into_response();
    }
    let identity = match relay.auth.as_ref().map(|auth| auth.identify(uri, headers)) {
        None => None,
        Some(Ok(identity)) => Some(identity),
        Some(Err(error)) => {
            // `?`: a token's parse error may quote the client's text.
            let error = error.to_string();
            tracing::warn!(%peer, error = ?error, "refused a handshake: not authenticated");
            crate::metrics::count(&relay.metrics.handshakes_rejected, "unauthorized");
            return (StatusCode::UNAUTHORIZED, format!("{error}\n")).into_response();
        }
    };
    // A client that asks for `wschat.v1` gets it; one that asks for nothing speaks the tutorial's
    // plain JSON.
    let socket = socket.protocols([SUBPROTOCOL]);
    let mode = if socket.selected_protocol().is_some() { Mode::V1 } else { Mode::Tutorial };
    let config = &relay.config;
    let may_enter_lobby = identity.as_ref().is_none_or(|identity| identity.grants.may_join(LOBBY));
    if mode == Mode::Tutorial && !may_enter_lobby {
        // The tutorial's protocol knows no other room.
        tracing::warn!(%peer, "refused a handshake: the token does not open the lobby");
        crate::metrics::count(&relay.metrics.handshakes_rejected, "forbidden");
        let body = "this token does not open the lobby, the only room of the tutorial's protocol\n";
        return (StatusCode::FORBIDDEN, body).into_response();
    }
    let Some(slot) = relay.rooms.connect(config.max_connections) else {
        tracing::warn!(%peer, limit = config.max_connections, "refused a handshake: too many connections");
        crate::metrics::count(&relay.metrics.handshakes_rejected, "too_many_connections");
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections: try again later\n")
            .into_response();
    };
    let given_name = match &identity {
        Some(identity) => Some(identity.name.clone()),
        None => name_in_query(uri, config),
    };
    let id = relay.rooms.next_client_id();
    let outbound = Arc::new(Outbound::default());
    let mut memberships = Memberships::new(given_name);
    // Joined now, before the handshake is answered; see `Room::join`. If the upgrade fails, the
    // callback is dropped and the seat with it, which leaves the room.
    if may_enter_lobby {
        let lobby = relay.rooms.lobby();
        let joiner = Joiner {
            id,
            outbound: Arc::clone(&outbound),
            mode,
            name: Arc::clone(memberships.name()),
        };
        match lobby.join(joiner, &Greeting::Welcome) {
            Ok(()) => memberships.add(Seat::taken(&relay.rooms, Arc::clone(lobby), id)),
            Err(_) if mode == Mode::Tutorial => {
                tracing::warn!(%peer, limit = config.rooms.max_members, "refused a handshake: the lobby is full");
                crate::metrics::count(&relay.metrics.handshakes_rejected, "lobby_full");
                return (StatusCode::SERVICE_UNAVAILABLE, "the lobby is full: try again later\n")
                    .into_response();
            }
            // A v1 client can still join other rooms: it learns why it is not in the lobby.
            Err(_) => refuse_lobby(&outbound, ErrorCode::RoomFull),
        }
    } else {
        refuse_lobby(&outbound, ErrorCode::Forbidden);
    }
    let admitted = Admitted { id, slot, outbound, memberships };
    // The frame limit too: tungstenite checks it at a frame's header, before reading (and making
    // room for) its payload; the message limit alone applies once the payload has arrived.
    let socket = socket
        .max_message_size(config.max_message_size)
        .max_frame_size(config.max_message_size)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER);
    socket.on_upgrade(move |socket| {
        let (identity, valid_until, grants) = match identity {
            Some(identity) => (Some(identity.name), identity.valid_until, Some(identity.grants)),
            None => (None, None, None),
        };
        let client = connection::ClientInfo { peer, mode, identity, grants };
        let sockets = relay.sockets.clone();
        let abandoned = relay.abandon.clone().cancelled_owned();
        let outbound = &admitted.outbound;
        let expiry = valid_until.map(|valid_until| {
            let expiry: Expiry = Box::pin(close_on_expiry(valid_until, Arc::clone(outbound)));
            expiry
        });
        let connection = connection::serve(socket, client, relay, admitted);
        sockets.track_future(SocketTask { connection, abandoned, expiry })
    })
}

/// The first frame of a v1 client that is not in the lobby: why (`room_full`, `forbidden`).
fn refuse_lobby(outbound: &Outbound, code: ErrorCode) {
    let refusal = Refusal {
        error: WireError::new(code, ""),
        room: Some(LOBBY.to_owned()),
        id: None,
        request_id: None,
    };
    // The first frame, as a welcome would be: not held to the byte bound.
    let _ = outbound.offer(refusal.into_frame(Mode::V1), usize::MAX);
}

/// The `name` parameter of the socket's URL, if it is one a message's `source` could be (other
/// values are ignored: the connection goes by the name it writes under, as without one).
fn name_in_query(uri: &Uri, config: &crate::Config) -> Option<String> {
    let query =
        axum::extract::Query::<std::collections::HashMap<String, String>>::try_from_uri(uri);
    let name = query.ok()?.0.remove("name")?;
    config.limits.check_source(&name).is_ok().then_some(name)
}

/// The timer that closes a connection when its token expires.
type Expiry = Pin<Box<dyn Future<Output = Infallible> + Send>>;

pin_project_lite::pin_project! {
    /// A socket's task: its connection, until it ends or the shutdown deadline passes, and the
    /// expiry of its token, if any.
    ///
    /// A named future rather than an `async` block with `select!`: the block would keep the
    /// connection future twice (the captured value and the one polled), about 2 KB more for
    /// every idle socket (measured with `examples/measure.rs`). The expiry is boxed, so that
    /// sockets without a token do not carry a timer.
    struct SocketTask<F> {
        #[pin]
        connection: F,
        #[pin]
        abandoned: WaitForCancellationFutureOwned,
        expiry: Option<Expiry>,
    }
}

impl<F: Future<Output = ()>> Future for SocketTask<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.connection.poll(cx).is_ready() || this.abandoned.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        if let Some(Poll::Ready(never)) =
            this.expiry.as_mut().map(|expiry| expiry.as_mut().poll(cx))
        {
            match never {}
        }
        Poll::Pending
    }
}

/// Has the connection's writer close it (1008, "token expired") when its token expires; never
/// completes, so the connection ends as any other the relay closes.
async fn close_on_expiry(valid_until: SystemTime, outbound: Arc<Outbound>) -> Infallible {
    // Tokens expire by the wall clock; a clock set back meanwhile only delays the close.
    let remaining = valid_until.duration_since(SystemTime::now()).unwrap_or_default();
    tokio::time::sleep(remaining).await;
    outbound.close(Close::TokenExpired);
    std::future::pending().await
}
