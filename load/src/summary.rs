//! What a run measured: counts, rates and latency percentiles, for people ([`std::fmt::Display`])
//! and for scripts (one JSON object, the `summary` event of `--json`).

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::connection::{ConnectionReport, Context};
use crate::plan::Protocol;

/// Everything a run measured. Rates are over the time from the first message sent to the last
/// one counted (sent, delivered or acked).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Always `"summary"` (the last line of `--json` output).
    pub event: &'static str,
    pub url: String,
    /// Where the receivers connected, when not at `url` (`--receiver-url`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub receiver_urls: Vec<String>,
    pub protocol: &'static str,
    /// The rooms the connections were spread over (`--rooms`); `null`: all in the lobby.
    pub rooms: Option<usize>,
    pub connections: Connections,
    /// Connections that opened and send.
    pub senders: usize,
    /// Connections that opened and only receive.
    pub receivers: usize,
    pub messages: Messages,
    pub deliveries: Deliveries,
    /// Delivery latency (receive time − send time), over every delivery; `null` when none.
    pub latency_ms: Option<Latency>,
    /// v1 only: acks of the senders' messages; `null` for the tutorial protocol.
    pub acks: Option<Acks>,
    /// Frames that were not this run's messages (the relay's history, other clients).
    pub foreign_frames: u64,
    /// Errors by kind, with how often each happened.
    pub errors: BTreeMap<String, u64>,
    /// Close codes of the connections the relay closed before the run was over.
    pub close_codes: BTreeMap<String, u64>,
    /// True when the run was cut short (Ctrl-C).
    pub interrupted: bool,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Connections {
    pub requested: usize,
    pub opened: usize,
    pub failed: usize,
    /// Still open when the tool stopped.
    pub held: usize,
    pub closed_by_relay: usize,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Messages {
    pub sent: u64,
    /// First to last message sent.
    pub seconds: f64,
    pub per_second: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Deliveries {
    /// This run's messages received by the receivers (senders' own copies are not counted).
    pub count: u64,
    /// Messages sent × receivers that opened (with rooms, in each room: its messages × its
    /// receivers).
    pub expected: u64,
    pub missing: u64,
    /// First message sent to last delivery.
    pub seconds: f64,
    pub per_second: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Acks {
    pub count: u64,
    /// First message sent to last ack.
    pub seconds: f64,
    pub per_second: f64,
    /// Ack latency (ack time − send time); `null` when none.
    pub latency_ms: Option<Latency>,
}

/// Percentiles in milliseconds (microsecond resolution).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Option<Self> {
        let ms = |micros: u64| micros as f64 / 1000.0;
        (!histogram.is_empty()).then(|| Self {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1000.0,
        })
    }
}

impl Summary {
    /// Adds up the connections' reports.
    pub(crate) fn build(
        ctx: &Context,
        reports: Vec<ConnectionReport>,
        start_us: Option<u64>,
        held: usize,
        interrupted: bool,
    ) -> Self {
        let plan = &ctx.plan;
        let mut errors = BTreeMap::new();
        let mut close_codes = BTreeMap::new();
        let (mut sent, mut deliveries, mut acks, mut foreign) = (0, 0, 0, 0);
        let (mut last_send, mut last_delivery, mut last_ack) = (0, 0, 0);
        let (mut senders, mut receivers, mut opened, mut closed_by_relay) = (0, 0, 0, 0);
        // Per room: messages its senders sent, and its receivers that opened.
        let mut room_sent = vec![0_u64; plan.room_count()];
        let mut room_receivers = vec![0_u64; plan.room_count()];
        for (index, report) in reports.into_iter().enumerate() {
            if report.opened {
                opened += 1;
                if index < plan.senders {
                    senders += 1;
                } else {
                    receivers += 1;
                    room_receivers[plan.room_index(index)] += 1;
                }
            }
            room_sent[plan.room_index(index)] += report.sent;
            sent += report.sent;
            deliveries += report.deliveries;
            acks += report.acks;
            foreign += report.foreign;
            last_send = last_send.max(report.last_send_us);
            last_delivery = last_delivery.max(report.last_delivery_us);
            last_ack = last_ack.max(report.last_ack_us);
            for error in report.errors {
                *errors.entry(error).or_insert(0) += 1;
            }
            if let Some(code) = report.closed_by_relay {
                closed_by_relay += 1;
                *close_codes.entry(code.to_string()).or_insert(0) += 1;
            }
        }
        let start = start_us.unwrap_or(0);
        let seconds = |last: u64| last.saturating_sub(start) as f64 / 1e6;
        let rate =
            |count: u64, seconds: f64| if seconds > 0.0 { count as f64 / seconds } else { 0.0 };
        let expected = room_sent.iter().zip(&room_receivers).map(|(sent, to)| sent * to).sum();
        let messages = Messages {
            sent,
            seconds: seconds(last_send),
            per_second: rate(sent, seconds(last_send)),
        };
        Self {
            event: "summary",
            url: plan.url.clone(),
            receiver_urls: plan.receiver_urls.clone(),
            protocol: plan.protocol.as_str(),
            rooms: plan.rooms,
            connections: Connections {
                requested: plan.connections,
                opened,
                failed: plan.connections - opened,
                held,
                closed_by_relay,
            },
            senders,
            receivers,
            messages,
            deliveries: Deliveries {
                count: deliveries,
                expected,
                missing: expected.saturating_sub(deliveries),
                seconds: seconds(last_delivery),
                per_second: rate(deliveries, seconds(last_delivery)),
            },
            latency_ms: Latency::of(&ctx.latency.merged()),
            acks: (plan.protocol == Protocol::V1 && plan.senders > 0).then(|| Acks {
                count: acks,
                seconds: seconds(last_ack),
                per_second: rate(acks, seconds(last_ack)),
                latency_ms: Latency::of(&ctx.ack_latency.merged()),
            }),
            foreign_frames: foreign,
            errors,
            close_codes,
            interrupted,
            notes: ctx.notes.lock().map(|notes| notes.clone()).unwrap_or_default(),
        }
    }

    /// True when every connection opened and stayed open, every message reached every receiver
    /// (and, in v1, was acked), and no error was seen.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.connections.failed == 0
            && self.connections.closed_by_relay == 0
            && self.deliveries.missing == 0
            && self.errors.is_empty()
            && self.acks.is_none_or(|acks| acks.count == self.messages.sent)
    }
}

/// `1234567` as `1,234,567`.
pub fn grouped(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn write_latency(f: &mut fmt::Formatter<'_>, latency: Option<Latency>) -> fmt::Result {
    match latency {
        Some(l) => writeln!(
            f,
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (mean {:.2} ms)",
            l.p50, l.p90, l.p99, l.max, l.mean
        ),
        None => writeln!(f, "none measured"),
    }
}

fn write_counts(f: &mut fmt::Formatter<'_>, counts: &BTreeMap<String, u64>) -> fmt::Result {
    if counts.is_empty() {
        return writeln!(f, "none");
    }
    let listed: Vec<String> =
        counts.iter().map(|(what, count)| format!("{what} ×{}", grouped(*count))).collect();
    writeln!(f, "{}", listed.join("; "))
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.connections;
        writeln!(
            f,
            "wschat-load: {} ({} protocol{}){}",
            self.url,
            self.protocol,
            match self.rooms {
                Some(rooms) => format!(", {} rooms", grouped(rooms as u64)),
                None => String::new(),
            },
            if self.interrupted { ", interrupted" } else { "" }
        )?;
        if !self.receiver_urls.is_empty() {
            writeln!(f, "  receivers at  {}", self.receiver_urls.join(", "))?;
        }
        writeln!(
            f,
            "  connections   {} held of {} ({} failed to open, {} closed by the relay)",
            grouped(c.held as u64),
            grouped(c.requested as u64),
            grouped(c.failed as u64),
            grouped(c.closed_by_relay as u64)
        )?;
        let m = &self.messages;
        writeln!(
            f,
            "  messages      {} sent by {} senders in {:.2} s ({:.0}/s)",
            grouped(m.sent),
            self.senders,
            m.seconds,
            m.per_second
        )?;
        let d = &self.deliveries;
        writeln!(
            f,
            "  deliveries    {} of {} to {} receivers ({} missing), {:.0}/s over {:.2} s",
            grouped(d.count),
            grouped(d.expected),
            grouped(self.receivers as u64),
            grouped(d.missing),
            d.per_second,
            d.seconds
        )?;
        write!(f, "  latency       ")?;
        write_latency(f, self.latency_ms)?;
        if let Some(acks) = &self.acks {
            writeln!(
                f,
                "  acks          {} ({:.0}/s over {:.2} s)",
                grouped(acks.count),
                acks.per_second,
                acks.seconds
            )?;
            write!(f, "  ack latency   ")?;
            write_latency(f, acks.latency_ms)?;
        }
        if self.foreign_frames > 0 {
            writeln!(f, "  other frames  {} (not from this run)", grouped(self.foreign_frames))?;
        }
        write!(f, "  errors        ")?;
        write_counts(f, &self.errors)?;
        write!(f, "  close codes   ")?;
        write_counts(f, &self.close_codes)?;
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::grouped;

    /// Large counts are printed with thousands separators.
    #[test]
    fn counts_are_grouped() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }
}
