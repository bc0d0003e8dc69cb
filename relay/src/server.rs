//! The HTTP server: accepts connections and serves HTTP/1.1 on each with hyper until it becomes a
//! WebSocket, and keeps the connections that have not (yet) from piling up.
//!
//! axum's own `serve` has no timer, so a client that sends half a request header and then nothing
//! kept its connection forever, and held up the graceful shutdown that waits for it. Here:
//!
//! - A request's header (and, with TLS, the handshake before it) must arrive within the header
//!   timeout, or the connection is closed; the same timeout closes a kept-alive connection that
//!   sends no next request.
//! - The connections that have not become WebSockets (pending) are counted apart from the chat's
//!   `max_connections`; past their bound, the oldest of them is closed to make room. A real
//!   handshake takes milliseconds, so under a flood of stalled connections it is the stalled
//!   ones that go, and newcomers still get in (refusing newcomers instead would let a few
//!   hundred stalled sockets, renewed every timeout, keep everyone out).
//! - Shutdown stops accepting, lets each connection finish the request it is in, and waits for
//!   everything (sockets included) at most the shutdown timeout; then whatever is left is
//!   dropped, so a lingering client cannot keep the relay from exiting.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::debug;

use crate::gather::Gathered;
use crate::metrics::{count, Metrics};
use crate::{routes, Relay};

/// The most a connection may buffer of a request header (hyper's default is about 400 KB): with
/// the bound on pending connections, this bounds what stalled headers can hold. Browsers' headers
/// are a few KB, cookies included; servers commonly stop at 8 to 32 KB.
const MAX_HEADER_BUFFER: usize = 64 * 1024;

/// Serves `relay` on `listener` until `shutdown` completes, then drains as the module says.
pub(crate) async fn serve(
    mut listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    relay: Arc<Relay>,
    shutdown: impl Future<Output = ()>,
) {
    let router = routes::router(Arc::clone(&relay));
    let pending = Arc::new(Pending::new(relay.config.max_pending_connections, &relay.metrics));
    let connections = TaskTracker::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(relay.config.header_timeout)
        .max_buf_size(MAX_HEADER_BUFFER);
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            // Retries by itself after errors such as running out of file descriptors.
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
        };
        no_delay(&stream);
        let place = pending.admit();
        let connection = Connection {
            peer,
            relay: Arc::clone(&relay),
            router: router.clone(),
            http: http.clone(),
        };
        connections.spawn(connection.serve(stream, acceptor.clone(), place));
    }
    // From here on, new connections are refused by the system.
    drop(listener);
    tracing::info!("shutting down");
    relay.shutdown.cancel();
    connections.close();
    relay.sockets.close();
    let drained = async {
        connections.wait().await;
        relay.sockets.wait().await;
    };
    let deadline = relay.config.shutdown_timeout;
    if tokio::time::timeout(deadline, drained).await.is_err() {
        tracing::warn!(
            ?deadline,
            requests = connections.len(),
            sockets = relay.sockets.len(),
            "shutdown deadline passed: dropping the connections still open"
        );
        relay.abandon.cancel();
        // Every task watches `abandon` and ends at its next poll.
        connections.wait().await;
        relay.sockets.wait().await;
    }
}

/// Turns off Nagle's algorithm on a client's socket: the writer already gathers what waits into
/// one write per batch, and a chat frame held back until the previous one is acknowledged (up to
/// the peer's delayed-ack timer, 40 ms) is latency a person sees.
fn no_delay(socket: &TcpStream) {
    if let Err(error) = socket.set_nodelay(true) {
        debug!(%error, "cannot set TCP_NODELAY");
    }
}

/// One accepted connection, before it becomes a WebSocket.
struct Connection {
    peer: SocketAddr,
    relay: Arc<Relay>,
    router: Router,
    http: http1::Builder,
}

impl Connection {
    /// Runs the TLS handshake if any, then HTTP, until the connection closes or upgrades; it
    /// holds its `place` among the pending connections until then.
    async fn serve(self, stream: TcpStream, acceptor: Option<TlsAcceptor>, place: Place) {
        let relay = Arc::clone(&self.relay);
        let peer = self.peer;
        let serving = async {
            // Under TLS, whose records a burst's writes are then gathered from.
            let stream = Gathered::new(stream);
            let Some(acceptor) = acceptor else {
                return self.http(stream).await;
            };
            let timeout = relay.config.header_timeout;
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => self.http(stream).await,
                Ok(Err(error)) => {
                    // `?`: a failed handshake's error may quote what the client sent.
                    debug!(%peer, error = ?error.to_string(), "TLS handshake failed");
                    count(&relay.metrics.pending_closed, "tls_failed");
                }
                Err(_) => {
                    debug!(%peer, "TLS handshake timed out");
                    count(&relay.metrics.pending_closed, "header_timeout");
                }
            }
        };
        tokio::select! {
            () = serving => {}
            () = place.crowded_out.cancelled() => {
                debug!(%peer, "closed a connection that had not upgraded: too many pending");
                count(&relay.metrics.pending_closed, "crowded_out");
            }
            () = relay.abandon.cancelled() => {}
        }
    }

    /// Serves HTTP/1.1 on an established connection. Each request carries the peer's address
    /// (`ConnectInfo`), as axum's own server would add it.
    async fn http<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self { peer, relay, router, http } = self;
        let service = router.map_request(move |mut request: axum::http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        });
        let connection = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
        let mut connection = pin!(connection.with_upgrades());
        let ended = tokio::select! {
            ended = connection.as_mut() => ended,
            () = relay.shutdown.cancelled() => {
                // Closes the connection once the request in progress, if any, is answered.
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        match ended {
            Ok(()) => {}
            Err(error) if error.is_timeout() => {
                debug!(%peer, "closed a connection that sent no complete request header in time");
                count(&relay.metrics.pending_closed, "header_timeout");
            }
            Err(error) => debug!(%peer, %error, "HTTP connection failed"),
        }
    }
}

/// The pending connections: those that have not become WebSockets yet, oldest first, each with
/// the token that closes it.
struct Pending {
    limit: usize,
    open: Mutex<Places>,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

#[derive(Default)]
struct Places {
    next: u64,
    open: BTreeMap<u64, CancellationToken>,
}

/// A connection's place among the pending ones; dropping it frees the place.
struct Place {
    pending: Arc<Pending>,
    id: u64,
    /// Cancelled when newer connections crowd this one out.
    crowded_out: CancellationToken,
}

impl Pending {
    fn new(limit: usize, metrics: &Metrics) -> Self {
        Self { limit, open: Mutex::default(), gauge: metrics.pending_connections.clone() }
    }

    /// Counts a new connection in, closing the oldest when `limit` already wait.
    fn admit(self: &Arc<Self>) -> Place {
        let crowded_out = CancellationToken::new();
        // No code panics while holding the lock; if some did, the map would still be whole.
        let mut places = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        while places.open.len() >= self.limit {
            match places.open.pop_first() {
                Some((_, oldest)) => oldest.cancel(),
                None => break,
            }
        }
        let id = places.next;
        places.next += 1;
        places.open.insert(id, crowded_out.clone());
        self.gauge.set(i64::try_from(places.open.len()).unwrap_or(i64::MAX));
        Place { pending: Arc::clone(self), id, crowded_out }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut places = self.pending.open.lock().unwrap_or_else(PoisonError::into_inner);
        places.open.remove(&self.id);
        self.pending.gauge.set(i64::try_from(places.open.len()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past the bound, each newcomer closes the oldest pending connection, and a connection
    /// that leaves frees its place.
    #[test]
    fn the_oldest_pending_connection_makes_room() {
        let pending = Arc::new(Pending::new(2, &Metrics::new()));
        let first = pending.admit();
        let second = pending.admit();
        assert!(!first.crowded_out.is_cancelled());
        let third = pending.admit();
        assert!(first.crowded_out.is_cancelled(), "the oldest goes");
        assert!(!second.crowded_out.is_cancelled() && !third.crowded_out.is_cancelled());
        drop(second);
        let fourth = pending.admit();
        assert!(!third.crowded_out.is_cancelled(), "a free place is taken first");
        drop(first);
        assert_eq!(pending.gauge.get(), 2);
        drop((third, fourth));
        assert_eq!(pending.gauge.get(), 0);
    }
}
