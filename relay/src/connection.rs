//! One client connection: a reader task and a writer task, and how the connection ends.
//!
//! The writer alone owns the socket's sending half and drains the client's bounded queue; the
//! reader validates what the client sends and hands it to the room. Either may end the connection:
//! the reader when the client leaves, the writer when the relay shuts down or evicts the client.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};
use wschat_protocol::{ChatMessage, ErrorCode, RelayFrame, WireError};

use crate::room::{Evicted, Membership, Room};

/// How long a close frame may take to go out, and how long the peer then has to answer it. A peer
/// that stopped reading may never take the frame, so both waits are bounded.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a connection ended abnormally. Logged once, when the connection task finishes.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// Reading from the socket failed (a protocol violation, an oversized message, a reset, ...).
    #[error("reading from the client failed: {0}")]
    Read(#[source] axum::Error),
    /// Writing to the socket failed.
    #[error("writing to the client failed: {0}")]
    Write(#[source] axum::Error),
    /// The client's outbound queue overflowed: it stopped reading.
    #[error("evicted: {}", .0.reason)]
    Evicted(CloseFrame),
}

/// How a connection ended normally.
#[derive(Debug)]
enum Ended {
    /// The client closed the connection.
    ClientLeft,
    /// The relay is shutting down and closed the connection with 1001.
    RelayShutdown,
}

/// Serves one upgraded WebSocket until the client leaves, the relay shuts down or evicts it.
/// The client joined the room (`membership`) before its handshake was answered.
pub async fn serve(socket: WebSocket, peer: SocketAddr, room: Arc<Room>, membership: Membership) {
    let Membership { seat, outbound, stop, eviction } = membership;
    let id = seat.id();
    let span = tracing::info_span!("client", id, %peer);
    async move {
        info!(clients = room.len(), "connected");
        let (sink, stream) = socket.split();
        let mut writer = tokio::spawn(write(sink, outbound, stop, eviction).in_current_span());
        let mut reader = tokio::spawn(read(stream, id, Arc::clone(&room)).in_current_span());
        let outcome = tokio::select! {
            ended = &mut reader => {
                writer.abort();
                ended
            }
            ended = &mut writer => {
                // The writer has sent its close frame: give the client a moment to answer it, so the
                // closing handshake completes instead of the client seeing a reset.
                if tokio::time::timeout(CLOSE_TIMEOUT, &mut reader).await.is_err() {
                    reader.abort();
                }
                ended
            }
        };
        drop(seat);
        match outcome {
            Ok(Ok(Ended::ClientLeft)) => info!(clients = room.len(), "disconnected"),
            Ok(Ok(Ended::RelayShutdown)) => info!("closed: relay shutting down"),
            Ok(Err(error)) => warn!(%error, clients = room.len(), "connection ended"),
            Err(join_error) => warn!(%join_error, "connection task failed"),
        }
    }
    .instrument(span)
    .await;
}

/// Reads the client's frames until it leaves: relays chat messages, answers bad frames.
async fn read(
    mut stream: SplitStream<WebSocket>,
    id: u64,
    room: Arc<Room>,
) -> Result<Ended, ConnectionError> {
    while let Some(frame) = stream.next().await {
        let refused = match frame.map_err(ConnectionError::Read)? {
            Message::Text(text) => match ChatMessage::from_json(&text) {
                Ok(message) => {
                    // Re-encoded rather than forwarded verbatim: only validated fields go out.
                    let frame = Message::Text(message.to_json().into());
                    debug!(bytes = text.len(), clients = room.len(), "relaying a message");
                    for Evicted(other) in room.broadcast(id, &frame) {
                        debug!(other, "evicted a slow consumer while relaying");
                    }
                    continue;
                }
                Err(error) => error,
            },
            Message::Binary(_) => WireError::new(ErrorCode::BinaryFrame, ""),
            // tungstenite answers pings by itself; pongs need no answer.
            Message::Ping(_) | Message::Pong(_) => continue,
            // Keep reading: tungstenite sends the close reply from within the next read, and the
            // stream then ends. Stopping here would drop the connection without that reply.
            Message::Close(_) => continue,
        };
        warn!(code = ?refused.code, error = %refused.message, "refused a frame");
        let answer = Message::Text(RelayFrame::from(refused).to_json().into());
        if room.send_to(id, answer).is_err() {
            // This client's own queue is full; the writer closes the connection with the reason.
            debug!("evicted while answering a refused frame");
        }
    }
    Ok(Ended::ClientLeft)
}

/// Writes queued frames to the client until the connection is stopped, then sends a close frame:
/// the eviction's, or 1001 when the relay is shutting down.
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut outbound: mpsc::Receiver<Message>,
    stop: CancellationToken,
    eviction: Arc<OnceLock<CloseFrame>>,
) -> Result<Ended, ConnectionError> {
    loop {
        let frame = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            frame = outbound.recv() => match frame {
                Some(frame) => frame,
                // The room dropped our queue: we were evicted and `stop` is cancelled as well.
                None => break,
            },
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            sent = sink.send(frame) => sent.map_err(ConnectionError::Write)?,
        }
    }
    let close = eviction.get().cloned().unwrap_or_else(|| CloseFrame {
        code: close_code::AWAY,
        reason: "relay shutting down".into(),
    });
    let evicted = eviction.get().is_some();
    // Best effort: a client that stopped reading may never take the frame; it is dropped anyway.
    if tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(close.clone()))))
        .await
        .is_err()
    {
        debug!("close frame not accepted in time");
    }
    if evicted {
        Err(ConnectionError::Evicted(close))
    } else {
        Ok(Ended::RelayShutdown)
    }
}
