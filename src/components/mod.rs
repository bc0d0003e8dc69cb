//! The page's components, one per file, and the message time they share.

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

use js_sys::{Array, Date, Intl::DateTimeFormat};
use leptos::prelude::*;
use wasm_bindgen::{JsCast, JsValue};

thread_local! {
    /// The last minute [`clock`] formatted (its `datetime` and its text): the rows of a burst
    /// share their minute, and asking the browser costs several calls into JavaScript per row.
    static LAST_MINUTE: RefCell<(u64, String, String)> =
        const { RefCell::new((u64::MAX, String::new(), String::new())) };
    /// The browser's formats in the user's locale: a time of today, and a date and time.
    static FORMATS: [DateTimeFormat; 2] = [
        format(r#"{"timeStyle":"short"}"#),
        format(r#"{"dateStyle":"medium","timeStyle":"short"}"#),
    ];
}

/// An `Intl.DateTimeFormat` of the browser's locale with these options (JSON).
fn format(options: &str) -> DateTimeFormat {
    let options = js_sys::JSON::parse(options)
        .unwrap_or_else(|_| unreachable!("the options are constant, valid JSON"));
    DateTimeFormat::new(&Array::new(), options.unchecked_ref())
}

/// Days since the epoch in the browser's time zone.
fn local_day(millis: f64, date: &Date) -> f64 {
    ((millis - date.get_timezone_offset() * 60_000.0) / 86_400_000.0).floor()
}

/// `<time datetime>` for a time in milliseconds since the Unix epoch: the locale's short time,
/// with the date too when it is not today (in the browser's time zone).
fn clock(millis: u64) -> impl IntoView {
    let minute = millis / 60_000;
    let (datetime, text) = LAST_MINUTE.with_borrow_mut(|(last, datetime, text)| {
        if *last != minute {
            let at = millis as f64;
            let date = Date::new(&at.into());
            let now = Date::now();
            let today = local_day(at, &date) == local_day(now, &Date::new(&now.into()));
            let format = FORMATS.with(|formats| formats[usize::from(!today)].format());
            *text = format
                .call1(&JsValue::UNDEFINED, &date)
                .ok()
                .and_then(|text| text.as_string())
                .unwrap_or_default();
            // To the minute, as shown: "2026-11-21T09:41Z".
            let iso = String::from(date.to_iso_string());
            datetime.clear();
            datetime.push_str(iso.get(..16).unwrap_or_default());
            datetime.push('Z');
            *last = minute;
        }
        (datetime.clone(), text.clone())
    });
    view! { <time datetime=datetime>{text}</time> }
}

/// What a button acts on: `action` and the start of a message's `content`, in quotes (e.g.
/// "Retry sending “hello…”"), so that a list of Retry buttons tells them apart.
fn naming(action: &str, content: &str) -> String {
    let mut name = String::from(action);
    name.push_str(" “");
    crate::announce::push_start(&mut name, content, 30);
    name.push('”');
    name
}
