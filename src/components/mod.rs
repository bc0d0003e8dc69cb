//! The page's components, one per file.

pub mod app;
pub mod composer;
pub mod connection_badge;
pub mod name_field;
pub mod presence_list;
pub mod received_list;
pub mod room_header;
pub mod room_list;
pub mod sent_list;
pub mod typing_line;

use std::cell::RefCell;

thread_local! {
    /// The last minute [`clock`] formatted: the rows of a burst share their minute, and asking
    /// the browser's `Date` costs three calls into JavaScript per row.
    static LAST_MINUTE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// `HH:MM` in the browser's time zone, for a time in milliseconds since the Unix epoch.
fn clock(millis: u64) -> String {
    let minute = millis / 60_000;
    LAST_MINUTE.with_borrow_mut(|(last, text)| {
        if *last != minute {
            let date = js_sys::Date::new(&(millis as f64).into());
            *text = format!("{:02}:{:02}", date.get_hours(), date.get_minutes());
            *last = minute;
        }
        text.clone()
    })
}
