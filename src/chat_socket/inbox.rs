//! The two small channels between the handle and the socket task, for one thread: the task's
//! [`Inbox`] of commands and the [`Reply`] a request waits for.
//!
//! Why not `futures::channel`: its `mpsc` and `oneshot` are built for threads (atomics, a lock-free
//! queue, a waker per sender) and cost about 4 KB of wasm; the page has one thread, and a
//! `RefCell` and one waker do.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct Queue<T> {
    items: RefCell<VecDeque<T>>,
    waker: Cell<Option<Waker>>,
    closed: Cell<bool>,
}

/// A queue that many handles push to and one task takes from, in order.
pub(super) struct Inbox<T>(Rc<Queue<T>>);

impl<T> Clone for Inbox<T> {
    fn clone(&self) -> Self {
        Self(Rc::clone(&self.0))
    }
}

impl<T> Inbox<T> {
    pub(super) fn new() -> Self {
        Self(Rc::new(Queue {
            items: RefCell::new(VecDeque::new()),
            waker: Cell::new(None),
            closed: Cell::new(false),
        }))
    }

    /// Queues `item` and wakes the task. Ignored once the inbox is closed: the task is gone.
    pub(super) fn push(&self, item: T) {
        if self.0.closed.get() {
            return;
        }
        self.0.items.borrow_mut().push_back(item);
        self.wake();
    }

    /// Tells the task there is no more to come: after what is queued it reads `None`.
    pub(super) fn close(&self) {
        self.0.closed.set(true);
        self.wake();
    }

    fn wake(&self) {
        if let Some(waker) = self.0.waker.take() {
            waker.wake();
        }
    }

    /// The next item, `None` once closed and empty; remembers `cx` to be woken otherwise.
    pub(super) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if let Some(item) = self.0.items.borrow_mut().pop_front() {
            return Poll::Ready(Some(item));
        }
        if self.0.closed.get() {
            return Poll::Ready(None);
        }
        self.0.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

struct Slot<T> {
    value: RefCell<Option<T>>,
    waker: Cell<Option<Waker>>,
}

/// The answering side of a request: [`Reply::send`] once; dropped unanswered, it sends
/// `otherwise` (the connection ended before the answer came).
pub(super) struct Reply<T> {
    slot: Rc<Slot<T>>,
    otherwise: Option<T>,
}

/// The waiting side of a request.
pub(super) struct Answer<T>(Rc<Slot<T>>);

/// A reply slot and its answer; `otherwise` is what the answer gets if the reply is dropped.
pub(super) fn reply_slot<T>(otherwise: T) -> (Reply<T>, Answer<T>) {
    let slot = Rc::new(Slot { value: RefCell::new(None), waker: Cell::new(None) });
    (Reply { slot: Rc::clone(&slot), otherwise: Some(otherwise) }, Answer(slot))
}

impl<T> Reply<T> {
    /// Answers the request (nobody hears it if the requester has gone).
    pub(super) fn send(mut self, value: T) {
        self.otherwise = None;
        self.fill(value);
    }

    fn fill(&self, value: T) {
        *self.slot.value.borrow_mut() = Some(value);
        if let Some(waker) = self.slot.waker.take() {
            waker.wake();
        }
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(value) = self.otherwise.take() {
            self.fill(value);
        }
    }
}

impl<T> Answer<T> {
    /// The answer, once there is one.
    pub(super) fn poll(&self, cx: &mut Context<'_>) -> Poll<T> {
        match self.0.value.borrow_mut().take() {
            Some(value) => Poll::Ready(value),
            None => {
                self.0.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        }
    }
}
