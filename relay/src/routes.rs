//! HTTP routes: WebSocket upgrades on `/ws` and `/`, and the built app as static files.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::Message;
use axum::extract::{ConnectInfo, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use tower::ServiceExt;
use tower_http::compression::Compression;
use tower_http::services::{ServeDir, ServeFile};

use wschat_protocol::v1::SUBPROTOCOL;

use crate::room::Mode;
use crate::{connection, origin, Relay};

/// `/ws` is the app's socket; `/` is the tutorial's (`ws://localhost:5000`) and, for plain HTTP,
/// the app's page when a static directory is configured.
pub(crate) fn router(relay: Arc<Relay>) -> Router {
    let mut router = Router::new()
        .route("/ws", any(upgrade))
        .route("/", any(root))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }));
    if relay.config.echo {
        router = router.route("/echo", any(echo));
    }
    if let Some(dir) = &relay.config.static_dir {
        // Compressed on the fly: the wasm bundle shrinks to about a third over gzip.
        router = router.fallback_service(Compression::new(ServeDir::new(dir)));
    }
    router.with_state(relay)
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
    if let Err(origin) = origin::check(headers, &relay.config.allowed_origins) {
        tracing::warn!(%peer, origin, "refused a handshake: origin not allowed");
        crate::metrics::count(&relay.metrics.handshakes_rejected, "origin");
        let body = format!("origin {origin} is not allowed to connect (see --allow-origin)\n");
        return (StatusCode::FORBIDDEN, body).into_response();
    }
    let identity = match relay.auth.as_ref().map(|auth| auth.identify(uri, headers)) {
        None => None,
        Some(Ok(name)) => Some(name),
        Some(Err(error)) => {
            tracing::warn!(%peer, %error, "refused a handshake: not authenticated");
            crate::metrics::count(&relay.metrics.handshakes_rejected, "unauthorized");
            return (StatusCode::UNAUTHORIZED, format!("{error}\n")).into_response();
        }
    };
    // A client that asks for `wschat.v1` gets it; one that asks for nothing speaks the tutorial's
    // plain JSON.
    let socket = socket.protocols([SUBPROTOCOL]);
    let mode = if socket.selected_protocol().is_some() { Mode::V1 } else { Mode::Tutorial };
    // Joined now, before the handshake is answered; see `Room::join`. If the upgrade fails, the
    // callback is dropped and the membership with it, which leaves the room.
    let config = &relay.config;
    let Some(membership) = relay.room.join_unless_full(mode, config.max_connections) else {
        tracing::warn!(%peer, limit = config.max_connections, "refused a handshake: too many connections");
        crate::metrics::count(&relay.metrics.handshakes_rejected, "too_many_connections");
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections: try again later\n")
            .into_response();
    };
    let guard = connection::Guard {
        heartbeat: config.heartbeat,
        limits: config.limits,
        rate: config.rate,
        max_strikes: config.max_strikes,
        max_message_size: config.max_message_size,
        flood_after: config.flood_after,
        stall_timeout: config.stall_timeout,
    };
    socket.max_message_size(config.max_message_size).on_upgrade(move |socket| {
        let room = Arc::clone(&relay.room);
        let metrics = Arc::clone(&relay.metrics);
        let client = connection::ClientInfo { peer, mode, identity };
        let shutdown = relay.shutdown.clone();
        let task = connection::serve(socket, client, room, membership, guard, metrics, shutdown);
        relay.sockets.track_future(task)
    })
}
