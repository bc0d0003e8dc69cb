//! The connection status badge, the retry countdown, the "Reconnect now" button, and the last
//! problem.

use std::time::Duration;

use leptos::prelude::*;

use crate::chat_socket::{expect_chat_socket, ConnectionState};

/// Green when connected, orange while connecting or reconnecting (with a countdown to the next
/// attempt), red when closed or failed; "Reconnect now" whenever not connected, "Disconnect"
/// otherwise (messages typed while disconnected wait in the outbox).
#[component]
pub fn ConnectionBadge() -> impl IntoView {
    let socket = expect_chat_socket();
    let (now, set_now) = signal(js_sys::Date::now());
    // The countdown needs a clock; a tick twice a second is plenty for whole seconds.
    if let Ok(ticker) = set_interval_with_handle(
        move || set_now.set(js_sys::Date::now()),
        Duration::from_millis(500),
    ) {
        on_cleanup(move || ticker.clear());
    }
    let state = socket.state;
    let label = move || state.with(ConnectionState::label);
    // Whole class names, not `format!`ed: nothing to allocate on each change.
    let class = move || match state.get() {
        ConnectionState::Open => "badge badge-ok",
        ConnectionState::Connecting | ConnectionState::Reconnecting { .. } => "badge badge-warn",
        ConnectionState::Closed | ConnectionState::Failed { .. } => "badge badge-bad",
    };
    let countdown = move || match state.get() {
        ConnectionState::Reconnecting { attempt, retry_at_ms } => {
            // Whole seconds as an integer: formatting an f64 would pull ~11 KB of float printing
            // into the bundle.
            let seconds = ((retry_at_ms - now.get()) / 1000.0).ceil().max(0.0) as u64;
            Some(if seconds > 0 {
                format!("attempt {attempt}, next try in {seconds} s")
            } else {
                format!("attempt {attempt}, trying now")
            })
        }
        _ => None,
    };
    let waiting =
        move || !matches!(state.get(), ConnectionState::Open | ConnectionState::Connecting);
    let open_or_trying =
        move || !matches!(state.get(), ConnectionState::Closed | ConnectionState::Failed { .. });
    view! {
        <span class=class data-testid="connection-status" role="status">
            {label}
        </span>
        {move || {
            countdown()
                .map(|text| view! { <span class="countdown" data-testid="retry-countdown">{text}</span> })
        }}
        {move || {
            waiting()
                .then(|| {
                    view! {
                        <button class="reconnect" data-testid="reconnect" on:click=move |_| socket.reconnect_now()>
                            "Reconnect now"
                        </button>
                    }
                })
        }}
        {move || {
            open_or_trying()
                .then(|| {
                    view! {
                        <button class="reconnect" data-testid="disconnect" on:click=move |_| socket.close()>
                            "Disconnect"
                        </button>
                    }
                })
        }}
        // Always there, so that screen readers hear each new problem once (a status, not an
        // alert, and its text set again only when it changes: not at every retry).
        <p class="relay-error" role="status" data-testid="relay-error">
            {move || socket.last_error.with(|problem| problem.as_ref().map(ToString::to_string))}
        </p>
    }
}
