//! "Received Messages": what others sent, once each, in the relay's order.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use leptos::prelude::*;

use crate::announce::Burst;
use crate::chat_socket::{expect_chat_socket, PageView};
use crate::components::clock;
use crate::conversation::KEPT;

/// One `<li>` per message: name, time and content, as text. Messages sent under this tab's own
/// name (from another tab, or before a reload) are styled as the user's own.
///
/// What arrives live from others is announced to screen readers, once per burst (never a
/// history load, never the user's own messages).
///
/// Rendered a page of rows at a time (see [`crate::conversation`]): a new message redraws one
/// page, whatever the length of the list. Past the newest [`KEPT`] messages the oldest leave, and
/// a line above the list says how many.
#[component]
pub fn ReceivedList() -> impl IntoView {
    let feed = expect_chat_socket().received;
    let dropped = move || {
        let count = feed.dropped.get();
        (count > 0).then(|| {
            format!(
                "{count} older messages are no longer shown: this page keeps the newest {KEPT}."
            )
        })
    };
    let (said, set_said) = signal(String::new());
    let burst = Rc::new(RefCell::new(Burst::default()));
    Effect::new(move |heard: Option<usize>| {
        let total = feed.arrived.get();
        let count = total - heard.unwrap_or(total);
        if count > 0 {
            // The newest message is the last row of the last page.
            let newest = feed.pages.with_untracked(|pages| {
                pages.last().and_then(|page| page.rows.with_untracked(|rows| rows.last().cloned()))
            });
            if let Some(newest) = newest {
                let message = &newest.message;
                let now = js_sys::Date::now();
                if burst.borrow_mut().arrived(count, &message.source, &message.content, now) {
                    announce_when_over(Rc::clone(&burst), set_said);
                }
            }
        }
        total
    });
    view! {
        <section class="log">
            <h2>"Received Messages"</h2>
            {move || dropped().map(|text| view! { <p class="dropped" data-testid="dropped-notice">{text}</p> })}
            <ul data-testid="received-list">
                <For each=move || feed.pages.get() key=|page| (page.generation, page.key) let(page)>
                    <Page page />
                </For>
            </ul>
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
