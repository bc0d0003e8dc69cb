//! "Received Messages": what others sent, once each, in the relay's order.

use leptos::prelude::*;

use crate::chat_socket::{expect_chat_socket, PageView};
use crate::components::clock;
use crate::conversation::KEPT;

/// One `<li>` per message: name, time and content, as text. Messages sent under this tab's own
/// name (from another tab, or before a reload) are styled as the user's own.
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
    view! {
        <section class="log">
            <h2>"Received Messages"</h2>
            {move || dropped().map(|text| view! { <p class="dropped" data-testid="dropped-notice">{text}</p> })}
            <ul data-testid="received-list">
                <For each=move || feed.pages.get() key=|page| (page.generation, page.key) let(page)>
                    <Page page />
                </For>
            </ul>
        </section>
    }
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
