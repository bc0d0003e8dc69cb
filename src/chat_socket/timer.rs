//! A browser timer as a future, for the waits of the socket task and of requests.
//!
//! Why not gloo-timers' `TimeoutFuture`: it hands the firing over through a thread-safe oneshot
//! channel; the inbox's reply slot does it with a `RefCell`, and the page's one `setTimeout`
//! binding (Leptos' too) serves both.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use leptos::prelude::window;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;

use super::inbox::{reply_slot, Answer};

/// Ready once its time has passed. Dropping it clears the browser's timer.
pub(super) struct Timer {
    fired: Answer<()>,
    /// The browser's id for the timer; `None` if the browser refused to set it (then the timer
    /// never fires, as a timer that is never due).
    id: Option<i32>,
    /// Kept until the timer is dropped: the browser calls it at most once, and not after
    /// `clearTimeout`.
    _callback: Closure<dyn FnMut()>,
}

impl Timer {
    /// A timer due in `millis` milliseconds.
    pub(super) fn new(millis: u32) -> Self {
        let (reply, fired) = reply_slot(());
        let callback = Closure::once(move || reply.send(()));
        let id = window()
            .set_timeout_with_callback_and_timeout_and_arguments_0(
                callback.as_ref().unchecked_ref(),
                i32::try_from(millis).unwrap_or(i32::MAX),
            )
            .ok();
        Self { fired, id, _callback: callback }
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.fired.poll(cx)
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            window().clear_timeout_with_handle(id);
        }
    }
}
