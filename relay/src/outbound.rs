//! One client's outbound queue: the frames waiting for its socket, bounded in bytes, and the
//! close the relay decided on for it.
//!
//! The room offers frames (under its lock, never waiting); the connection's writer takes all that
//! wait at once and writes them with one flush. A client counts as not reading when the bytes
//! waiting for it pass the bound, not when it is some number of frames behind: a burst of 2,000
//! small messages is 2,000 frames but a few hundred kilobytes, which a reading client drains in
//! milliseconds.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use axum::extract::ws::Message;
use tokio::sync::Notify;

use crate::close::Close;

/// What a waiting frame costs besides its payload: its slot in the queue. Counted so that the byte
/// bound also bounds the number of frames (a queue of empty frames is not free).
pub const FRAME_OVERHEAD: usize = std::mem::size_of::<Message>();

/// A batch larger than this many frames is not kept for reuse once written, so that a socket that
/// went quiet after a burst gives the memory back.
const KEPT_BATCH_CAPACITY: usize = 64;

/// The queue, shared by the room (which offers) and the client's writer (which takes).
///
/// A std `Mutex`: held only to push or to swap the queue out, never across an `.await`. Nothing is
/// allocated until the first frame is offered, so an idle connection costs only this struct.
#[derive(Debug, Default)]
pub struct Outbound {
    waiting: Mutex<Waiting>,
    /// Bytes offered and not yet handed to the socket (frames in the writer's batch included),
    /// each frame counted as its payload plus [`FRAME_OVERHEAD`].
    bytes: AtomicUsize,
    /// Woken when the first frame arrives in an empty queue (the writer takes all of them then).
    ready: Notify,
    /// Woken when a close is decided.
    closing: Notify,
}

#[derive(Debug, Default)]
struct Waiting {
    frames: VecDeque<Message>,
    /// Why the relay closes this connection, once decided; the first reason stands.
    close: Option<Close>,
}

impl Outbound {
    /// Queues `frame` unless the bytes waiting would pass `limit`; false when they would (the
    /// client is not reading fast enough). Once a close is decided nothing more is queued (the
    /// connection is ending), and that counts as taken.
    pub fn offer(&self, frame: Message, limit: usize) -> bool {
        let cost = cost(&frame);
        let mut waiting = self.lock();
        if waiting.close.is_some() {
            return true;
        }
        if self.bytes.load(Ordering::Relaxed).saturating_add(cost) > limit {
            return false;
        }
        self.bytes.fetch_add(cost, Ordering::Relaxed);
        let was_empty = waiting.frames.is_empty();
        waiting.frames.push_back(frame);
        drop(waiting);
        // A queue that was not empty has a wake-up pending already: the writer takes everything
        // that waits when it wakes.
        if was_empty {
            self.ready.notify_one();
        }
        true
    }

    /// Decides that the connection closes with `close`, unless a reason was decided already (the
    /// first one stands). The writer sends it ahead of any frame still waiting.
    pub fn close(&self, close: Close) {
        let mut waiting = self.lock();
        if waiting.close.is_none() {
            waiting.close = Some(close);
            drop(waiting);
            self.closing.notify_one();
        }
    }

    /// The close decided for this connection, if any.
    #[must_use]
    pub fn close_reason(&self) -> Option<Close> {
        self.lock().close
    }

    /// Waits until a close is decided, and returns it.
    pub async fn closed(&self) -> Close {
        loop {
            if let Some(close) = self.close_reason() {
                return close;
            }
            // `notify_one` leaves a permit when nobody waits, so a close decided between the
            // check and this wait is not missed.
            self.closing.notified().await;
        }
    }

    /// Waits for frames and moves every waiting frame into `batch` (empty when called), oldest
    /// first.
    pub async fn take(&self, batch: &mut VecDeque<Message>) {
        debug_assert!(batch.is_empty());
        loop {
            {
                let mut waiting = self.lock();
                if !waiting.frames.is_empty() {
                    // The queue gets the batch's (empty) buffer back: no allocation per batch.
                    std::mem::swap(&mut waiting.frames, batch);
                    return;
                }
            }
            // As in `closed`: an offer between the check and this wait leaves a permit.
            self.ready.notified().await;
        }
    }

    /// Records that `frames` frames taken from the queue, of `payload` bytes in all
    /// ([`frame_bytes`]), have been handed to the socket.
    pub fn sent(&self, frames: usize, payload: usize) {
        self.bytes.fetch_sub(payload + frames * FRAME_OVERHEAD, Ordering::Relaxed);
    }

    /// Lets a written batch's buffer go if a burst made it large, so a quiet socket stays small.
    pub fn release(batch: &mut VecDeque<Message>) {
        if batch.capacity() > KEPT_BATCH_CAPACITY {
            *batch = VecDeque::new();
        }
    }

    /// Frames waiting now (not counting a batch the writer is writing).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().frames.len()
    }

    /// Takes every waiting frame as if the writer had written it.
    #[cfg(test)]
    pub fn take_now(&self) -> Vec<Message> {
        let frames = std::mem::take(&mut self.lock().frames);
        self.sent(frames.len(), frames.iter().map(frame_bytes).sum());
        frames.into()
    }

    /// Locks the queue, recovering it after a panic elsewhere: each critical section leaves it
    /// consistent.
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The bytes of a frame's payload, as the byte metrics count them (0 for control frames).
#[must_use]
pub fn frame_bytes(frame: &Message) -> usize {
    match frame {
        Message::Text(text) => text.len(),
        Message::Binary(bytes) => bytes.len(),
        Message::Ping(_) | Message::Pong(_) | Message::Close(_) => 0,
    }
}

/// What a frame counts against the queue's byte bound.
fn cost(frame: &Message) -> usize {
    frame_bytes(frame) + FRAME_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(content: &str) -> Message {
        Message::Text(content.into())
    }

    /// Frames come out in the order they went in, all at once, and their bytes count until the
    /// writer has handed them to the socket.
    #[tokio::test]
    async fn takes_everything_waiting_in_order() {
        let outbound = Outbound::default();
        let limit = 3 * (5 + FRAME_OVERHEAD);
        for content in ["one..", "two..", "three"] {
            assert!(outbound.offer(text(content), limit));
        }
        assert!(!outbound.offer(text("four."), limit), "a fourth would pass the bound");
        let mut batch = VecDeque::new();
        outbound.take(&mut batch).await;
        assert_eq!(batch, [text("one.."), text("two.."), text("three")]);
        assert!(!outbound.offer(text("four."), limit), "taken is not yet sent");
        outbound.sent(1, frame_bytes(&batch.pop_front().unwrap()));
        assert!(outbound.offer(text("four."), limit), "sent frees its bytes");
    }

    /// Many small frames are no reason to count a client as slow: only their bytes are.
    #[test]
    fn thousands_of_small_frames_fit_a_few_hundred_kilobytes() {
        let outbound = Outbound::default();
        for n in 0..10_000 {
            assert!(outbound.offer(text(&format!("{n:>20}")), 4 * 1024 * 1024), "frame {n}");
        }
        assert_eq!(outbound.len(), 10_000);
    }

    /// The first close decided stands, and nothing is queued after it.
    #[tokio::test]
    async fn the_first_close_stands() {
        let outbound = Outbound::default();
        outbound.close(Close::SlowConsumer);
        outbound.close(Close::Stalled);
        assert_eq!(outbound.closed().await, Close::SlowConsumer);
        assert!(outbound.offer(text("late"), usize::MAX));
        assert_eq!(outbound.len(), 0);
    }
}
