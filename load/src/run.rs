//! A run, from the first handshake to the summary: connect everyone, probe, send, drain, close.
//!
//! One task per connection does the work; this monitor only watches their counters every
//! [`TICK`] and moves the run from phase to phase.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::connection::{connection, Context, Phase, State};
use crate::plan::{Plan, PlanError, Protocol};
use crate::summary::Summary;

/// How often the monitor looks at the counters (and reports progress).
const TICK: Duration = Duration::from_millis(50);

/// What a run is doing, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connecting,
    /// Probe messages until every receiver is known to be admitted by the relay.
    Probing,
    Sending,
    /// Sending is over; waiting for the last deliveries and acks.
    Draining,
    /// `--idle`: only holding the connections open.
    Holding,
}

impl Stage {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Probing => "probing",
            Self::Sending => "sending",
            Self::Draining => "draining",
            Self::Holding => "holding",
        }
    }
}

/// The connections' counters added up at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub connecting: usize,
    pub open: usize,
    pub failed: usize,
    /// Connections that opened and have ended (closed by the relay, or broken).
    pub ended: usize,
    pub sent: u64,
    pub deliveries: u64,
    pub acks: u64,
}

/// Something to show while the run goes on.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// Every [`TICK`] or so.
    Progress { stage: Stage, totals: Totals, elapsed: Duration },
    /// Once, when every connection has opened or failed.
    Connected { totals: Totals, elapsed: Duration },
}

/// Why a run could not take place at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("not one of {attempted} connections opened; the first error: {first_error}")]
    NoConnection { attempted: usize, first_error: String },
}

/// Runs `plan` against its relay and sums up what happened. `interrupt` (e.g. Ctrl-C) cuts the
/// run short; the summary then covers what happened so far. `on_event` is called from this task
/// only, never from a connection's.
///
/// # Errors
/// When the plan makes no sense, or no connection at all could be opened.
pub async fn run(
    plan: Plan,
    interrupt: impl Future<Output = ()>,
    on_event: impl FnMut(Event),
) -> Result<Summary, LoadError> {
    plan.check()?;
    let ctx = Arc::new(Context::new(plan));
    let tasks: Vec<_> = (0..ctx.plan.connections)
        .map(|index| tokio::spawn(connection(Arc::clone(&ctx), index)))
        .collect();
    let mut monitor = Monitor {
        ctx: Arc::clone(&ctx),
        interrupt: Box::pin(interrupt),
        interrupted: false,
        on_event,
        started: Instant::now(),
    };
    let start_us = monitor.drive().await;
    let held = ctx.slots.iter().filter(|slot| slot.state() == State::Open).count();
    ctx.stop.cancel();
    let mut reports = Vec::with_capacity(tasks.len());
    for task in tasks {
        // A connection task only ends by returning its report (it never panics by design; if it
        // did, its report is lost and the others are still summed up).
        if let Ok(report) = task.await {
            reports.push(report);
        }
    }
    if reports.iter().all(|report| !report.opened) {
        let first_error = reports
            .iter()
            .find_map(|report| report.errors.first().cloned())
            .unwrap_or_else(|| "interrupted".to_owned());
        return Err(LoadError::NoConnection { attempted: ctx.plan.connections, first_error });
    }
    Ok(Summary::build(&ctx, reports, start_us, held, monitor.interrupted))
}

struct Monitor<'a, F> {
    ctx: Arc<Context>,
    interrupt: Pin<Box<dyn Future<Output = ()> + 'a>>,
    interrupted: bool,
    on_event: F,
    started: Instant,
}

impl<F: FnMut(Event)> Monitor<'_, F> {
    /// Takes the run through its phases; returns the measurement's start (on the run's clock)
    /// when messages were sent.
    async fn drive(&mut self) -> Option<u64> {
        let ctx = Arc::clone(&self.ctx);
        let plan = &ctx.plan;
        let connected = self.until(Stage::Connecting, |totals| totals.connecting == 0).await;
        (self.on_event)(Event::Connected { totals: connected, elapsed: self.started.elapsed() });
        if connected.open == 0 || self.interrupted {
            return None;
        }
        let is_open = |index: usize| ctx.slots[index].state() == State::Open;
        let receivers = (plan.senders..plan.connections).filter(|&index| is_open(index)).count();
        let senders = (0..plan.senders).filter(|&index| is_open(index)).count();
        if plan.senders == 0 {
            let until = plan.duration.map(|duration| Instant::now() + duration);
            self.until(Stage::Holding, |_| until.is_some_and(|until| Instant::now() >= until))
                .await;
            return None;
        }
        if senders == 0 {
            return None;
        }
        // With rooms, each connection was admitted once its `joined` came: no probe is needed
        // (nor could one sender's reach every room).
        if receivers > 0 && plan.rooms.is_none() {
            ctx.receivers_held.store(receivers, Relaxed);
            ctx.phase.send_replace(Phase::Probing);
            self.until(Stage::Probing, |_| {
                ctx.probing_done.load(Relaxed)
                    || (0..plan.senders).all(|index| ctx.slots[index].state() != State::Open)
            })
            .await;
        }
        let start_us = ctx.clock.micros();
        ctx.phase.send_replace(Phase::Sending { start_us });
        self.until(Stage::Sending, |_| {
            (0..plan.senders).all(|index| {
                let slot = &ctx.slots[index];
                slot.state() != State::Open || slot.done_sending.load(Relaxed)
            })
        })
        .await;
        self.drain().await;
        Some(start_us)
    }

    /// Waits until every open receiver has every message sent (and, in v1, every message is
    /// acked), or until nothing has arrived for the plan's drain time.
    async fn drain(&mut self) {
        let ctx = Arc::clone(&self.ctx);
        let plan = &ctx.plan;
        let mut last_count = 0;
        let mut last_progress = Instant::now();
        self.until(Stage::Draining, |totals| {
            let senders = &ctx.slots[..plan.senders];
            // What each room's receivers should have: what its senders sent.
            let mut sent = vec![0; plan.room_count()];
            for (index, slot) in senders.iter().enumerate() {
                sent[plan.room_index(index)] += slot.sent.load(Relaxed);
            }
            let delivered = ctx.slots.iter().enumerate().skip(plan.senders).all(|(index, slot)| {
                slot.state() != State::Open
                    || slot.deliveries.load(Relaxed) >= sent[plan.room_index(index)]
            });
            let acked = plan.protocol == Protocol::Tutorial
                || senders.iter().all(|slot| {
                    slot.state() != State::Open
                        || slot.acks.load(Relaxed) >= slot.sent.load(Relaxed)
                });
            let count = totals.deliveries + totals.acks;
            if count != last_count {
                last_count = count;
                last_progress = Instant::now();
            }
            (delivered && acked) || last_progress.elapsed() >= plan.drain
        })
        .await;
    }

    /// Reports progress every tick until `done` holds for the current totals (or the run is
    /// interrupted); returns those totals.
    async fn until(&mut self, stage: Stage, mut done: impl FnMut(&Totals) -> bool) -> Totals {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let totals = self.totals();
            (self.on_event)(Event::Progress { stage, totals, elapsed: self.started.elapsed() });
            if self.interrupted || done(&totals) {
                return totals;
            }
            tokio::select! {
                biased;
                () = &mut self.interrupt, if !self.interrupted => self.interrupted = true,
                _ = ticker.tick() => {}
            }
        }
    }

    fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for slot in &*self.ctx.slots {
            match slot.state() {
                State::Connecting => totals.connecting += 1,
                State::Open => totals.open += 1,
                State::Failed => totals.failed += 1,
                State::Ended => totals.ended += 1,
            }
            totals.sent += slot.sent.load(Relaxed);
            totals.deliveries += slot.deliveries.load(Relaxed);
            totals.acks += slot.acks.load(Relaxed);
        }
        totals
    }
}
