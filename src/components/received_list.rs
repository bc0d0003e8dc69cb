//! "Received Messages": what others sent, once each, in the relay's order, in a pane that
//! follows the newest message.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use leptos::prelude::*;

use crate::announce::Burst;
use crate::chat_socket::{expect_chat_socket, PageView};
use crate::components::clock;
use crate::conversation::KEPT;

/// How close to the newest message (in pixels) still counts as being there.
const AT_NEWEST_SLACK: i32 = 8;

/// One `<li>` per message: name, time and content, as text. Messages sent under this tab's own
/// name (from another tab, or before a reload) are styled as the user's own.
///
/// The section scrolls, and stays on the newest message while the user is there (its content is
/// laid out from the bottom: see `.log` in the CSS). Scrolled up to read, the user stays put and,
/// when messages arrive, is offered "New messages ↓".
///
/// What arrives live from others is announced to screen readers, once per burst (never a
/// history load, never the user's own messages).
///
/// Rendered a page of rows at a time (see [`crate::conversation`]): a new message redraws one
/// page, whatever the length of the list. Past the newest [`KEPT`] messages the oldest leave, and
/// a line above the list says how many.
#[component]
pub fn ReceivedList() -> impl IntoView {
    let socket = expect_chat_socket();
    let feed = socket.received;
    let dropped = move || {
        let count = feed.dropped.get();
        (count > 0).then(|| {
            format!(
                "{count} older messages are no longer shown: this page keeps the newest {KEPT}."
            )
        })
    };
    let pane = NodeRef::<leptos::html::Section>::new();
    // The pane's offset from its newest message is 0 there and negative above it.
    let at_newest =
        move || pane.get_untracked().is_none_or(|pane| pane.scroll_top() > -AT_NEWEST_SLACK);
    let (unseen, set_unseen) = signal(false);
    let to_newest = move || {
        if let Some(pane) = pane.get_untracked() {
            pane.set_scroll_top(0);
        }
        set_unseen.set(false);
    };
    let (said, set_said) = signal(String::new());
    let burst = Rc::new(RefCell::new(Burst::default()));
    // One effect (each costs bundle bytes) for what arrives live and for another room shown,
    // which starts at its newest message.
    Effect::new(move |before: Option<(String, usize)>| {
        let shown = socket.rooms.shown.get();
        let total = feed.arrived.get();
        match before {
            Some((room, _)) if room != shown => to_newest(),
            Some((_, heard)) if total > heard => {
                if !at_newest() {
                    set_unseen.set(true);
                }
                // The newest message is the last row of the last page.
                let newest = feed.pages.with_untracked(|pages| {
                    pages
                        .last()
                        .and_then(|page| page.rows.with_untracked(|rows| rows.last().cloned()))
                });
                if let Some(newest) = newest {
                    let message = &newest.message;
                    let now = js_sys::Date::now();
                    let count = total - heard;
                    if burst.borrow_mut().arrived(count, &message.source, &message.content, now) {
                        announce_when_over(Rc::clone(&burst), set_said);
                    }
                }
            }
            _ => {}
        }
        (shown, total)
    });
    // The section is the pane (see `.log` in the CSS): focusable, to scroll it by keyboard.
    view! {
        <section
            class="log"
            aria-label="Received Messages"
            tabindex="0"
            node_ref=pane
            on:scroll=move |_| {
                if unseen.get_untracked() && at_newest() {
                    set_unseen.set(false);
                }
            }
        >
            <h2>"Received Messages"</h2>
            {move || dropped().map(|text| view! { <p class="dropped" data-testid="dropped-notice">{text}</p> })}
            <ul data-testid="received-list">
                <For each=move || feed.pages.get() key=|page| page.id let(page)>
                    <Page page />
                </For>
            </ul>
            <button
                class="new-messages"
                data-testid="new-messages"
                hidden=move || !unseen.get()
                on:click=move |_| {
                    // Keyboard users carry on from the pane, not from nowhere.
                    if let Some(pane) = pane.get_untracked() {
                        // Fails only for an element out of the document.
                        let _ = pane.focus();
                    }
                    to_newest();
                }
            >
                "New messages"
            </button>
            // What arrives live, once per burst, for screen readers (see `crate::announce`).
            <p class="sr-only" role="status">{said}</p>
        </section>
    }
}

/// Waits until the burst is over, then says it (a burst that went on waits again).
fn announce_when_over(burst: Rc<RefCell<Burst>>, set_said: WriteSignal<String>) {
    let Some(due_at) = burst.borrow().due_at() else { return };
    let wait = (due_at - js_sys::Date::now()).max(0.0) as u64;
    set_timeout(
        move || {
            let said = burst.borrow_mut().take(js_sys::Date::now());
            match said {
                // Does nothing if the page is gone meanwhile.
                Some(said) => {
                    set_said.try_set(said);
                }
                None => announce_when_over(burst, set_said),
            }
        },
        Duration::from_millis(wait),
    );
}

/// The rows of one page.
#[component]
fn Page(page: PageView) -> impl IntoView {
    let rows = page.rows;
    view! {
        <For each=move || rows.get() key=|row| row.key let(row)>
            // Four elements, no wrapper: a flood builds and lays out thousands of these.
            <li class=if row.mine { "message mine" } else { "message" }>
                <span class="source">{row.message.source.clone()}</span>
                {clock(row.message.sent_at_ms)}
                <span class="content">{row.message.content.clone()}</span>
            </li>
        </For>
    }
}
