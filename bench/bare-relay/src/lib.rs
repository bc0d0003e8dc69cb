//! A bare broadcast relay: every text frame a client sends goes to every other client, and
//! nothing else happens. No protocol, no history, no limits, no queue bounds, no shutdown.
//!
//! It is the floor `cargo xtask bench` measures wschat against: what tokio and tokio-tungstenite
//! cost on their own, written the way a minimal relay would be, with their default settings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Frames written to a socket before one flush: a burst goes out in few system calls.
const BATCH: usize = 64;

/// Every connected client's outbound queue, by connection number.
///
/// Unbounded queues: the floor never drops or evicts anyone (Node's `ws` buffers without bound
/// too). A std mutex, held only to push clones, never across an `.await`.
type Clients = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>>;

/// Accepts connections on `listener` and relays between them, forever.
pub async fn serve(listener: TcpListener) {
    let clients = Clients::default();
    let mut next_id = 0_u64;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(client(stream, next_id, Arc::clone(&clients)));
                next_id += 1;
            }
            // Out of file descriptors, or a peer that gave up before being accepted: the
            // listener itself is fine, so take a breath and go on.
            Err(error) => {
                eprintln!("wschat-bare-relay: accept failed: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// One client, in one task: reads its frames and fans them out, and writes what others sent.
async fn client(stream: TcpStream, id: u64, clients: Clients) {
    // Small frames must not wait for Nagle's algorithm (Node's `ws` sets this too).
    if stream.set_nodelay(true).is_err() {
        return;
    }
    let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (outbox, mut inbox) = mpsc::unbounded_channel();
    lock(&clients).insert(id, outbox);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            frame = socket.next() => match frame {
                Some(Ok(frame @ Message::Text(_))) => {
                    for (_, other) in lock(&clients).iter().filter(|(other, _)| **other != id) {
                        // A client that has just gone is removed from the map by its own task.
                        let _ = other.send(frame.clone());
                    }
                }
                // Pings are answered by tungstenite itself; binary frames are not relayed.
                Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
            },
            // Never 0: this client's own sender stays in the map while the loop runs.
            _ = inbox.recv_many(&mut batch, BATCH) => {
                let mut written = true;
                for frame in batch.drain(..) {
                    written = written && socket.feed(frame).await.is_ok();
                }
                if !written || socket.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    lock(&clients).remove(&id);
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
