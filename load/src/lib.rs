//! `wschat-load`: opens thousands of WebSocket connections to a relay, has some of them send
//! messages on a schedule, and measures what the others receive.
//!
//! - [`plan`]: what a run does ([`Plan`]), checked before any socket opens.
//! - [`run`](mod@run): the monitor that takes a run through its phases (connect, probe, send,
//!   drain) and [`run()`] itself.
//! - `connection`: one task per simulated client (senders have a second one for acks).
//! - [`stamp`]: the send time and run id each message carries, and the frame templates.
//! - [`summary`]: the figures, printed for people or as JSON.

mod connection;
pub mod plan;
pub mod run;
pub mod stamp;
pub mod summary;

pub use plan::{Plan, PlanError, Protocol};
pub use run::{run, Event, LoadError, Stage, Totals};
pub use summary::Summary;
