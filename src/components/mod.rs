//! The page's components, one per file.

pub mod app;
pub mod composer;
pub mod connection_badge;
pub mod message_list;
