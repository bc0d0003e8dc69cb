//! The page's components, one per file.

pub mod app;
pub mod composer;
pub mod connection_badge;
pub mod name_field;
pub mod received_list;
pub mod sent_list;

/// `HH:MM` in the browser's time zone, for a time in milliseconds since the Unix epoch.
fn clock(millis: f64) -> String {
    let date = js_sys::Date::new(&millis.into());
    format!("{:02}:{:02}", date.get_hours(), date.get_minutes())
}
