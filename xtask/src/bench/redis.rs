//! The Redis rows of `cargo xtask bench`: relays sharing rooms through one Redis (`--redis`),
//! with the settings the README recommends (`appendonly yes`, `appendfsync always`), against
//! the single relay in memory, in the same run. [`SENDERS`] v1 senders and [`FANOUT_RECEIVERS`]
//! receivers in the lobby:
//!
//! - in memory: one relay without Redis;
//! - one node: one relay on Redis, everyone on it;
//! - two nodes: two relays on one Redis, the senders on the first, the receivers split between
//!   both (`wschat-load --receiver-url`), so half the deliveries cross from one node to the
//!   other through Redis.
//!
//! Each setup gets a fresh Redis and fresh relays. The rows have no budget (the issue names
//! none) beyond what every fan-out row promises: nothing lost, nobody closed.

use super::{
    best_of, grouped, load, ms_cell, rate_cell, ratio_cell, strings, Measured, Relay, Row,
    RunningRelay, Scratch, Table, Tools, Verdict, BURST_RUNS, FANOUT_RECEIVERS, PACED_RATE,
    PACED_SECONDS,
};
use crate::nodes::RedisServer;

/// Senders: with Redis a connection waits for each message to be stored before it reads the
/// next (a script, and with `appendfsync always` an fsync), so one sender alone measures a round
/// trip to Redis more than the relays; several keep Redis busy, as many people chatting do.
const SENDERS: usize = 4;
/// Messages of the burst: at the few hundred a second one Redis stores here, about ten seconds.
const BURST_MESSAGES: u64 = 5_000;

/// Where the relays keep the conversation, and how many there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    InMemory,
    OneNode,
    TwoNodes,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Self::InMemory => "in memory",
            Self::OneNode => "1 node on Redis",
            Self::TwoNodes => "2 nodes on Redis, receivers split",
        }
    }

    /// The name in a ratio: `0.80× in-memory`.
    fn short(self) -> &'static str {
        match self {
            Self::InMemory => "in-memory",
            Self::OneNode => "1 node",
            Self::TwoNodes => "2 nodes",
        }
    }
}

/// One load run (`pace` the load tool's flags for how fast and how long) against fresh relays in
/// `setup`.
fn measure(
    tools: &Tools,
    scratch: &Scratch,
    setup: Setup,
    pace: &[String],
) -> anyhow::Result<Measured> {
    let redis = match setup {
        Setup::InMemory => None,
        Setup::OneNode | Setup::TwoNodes => Some(RedisServer::start()?.ok_or_else(|| {
            anyhow::anyhow!(
                "redis-server is not installed (apt-get install redis-server, or cargo xtask \
                 setup --browsers)"
            )
        })?),
    };
    let flags: Vec<String> = match &redis {
        Some(redis) => vec!["--redis".to_owned(), redis.url()],
        None => Vec::new(),
    };
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let node_count = if setup == Setup::TwoNodes { 2 } else { 1 };
    let mut nodes = (0..node_count)
        .map(|_| RunningRelay::start(tools, scratch, Relay::Wschat, &flags))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let connections = (FANOUT_RECEIVERS + SENDERS).to_string();
    let senders = SENDERS.to_string();
    let mut args =
        strings(&["--protocol", "v1", "--connections", &connections, "--senders", &senders]);
    if setup == Setup::TwoNodes {
        for node in &nodes {
            args.extend(["--receiver-url".to_owned(), node.url()]);
        }
    }
    args.extend_from_slice(pace);
    let measured = load(tools, &nodes[0].url(), &args)?;
    for node in &mut nodes {
        node.check_alive()?;
    }
    println!(
        "   {:<34} {:>9.0} deliveries/s, p50 {:.2} ms, p99 {:.2} ms{}",
        setup.name(),
        measured.deliveries_per_second(),
        measured.number("/latency_ms/p50"),
        measured.number("/latency_ms/p99"),
        measured.problems().map(|problems| format!(" ({problems})")).unwrap_or_default()
    );
    Ok(measured)
}

/// Paced runs per setup; the one with the median p99 is kept.
const PACED_RUNS: usize = 3;

/// Of `runs` runs of `measure`, the one whose p99 latency is the median: a tail latency on a
/// shared machine varies from run to run several times over, and neither the best nor the worst
/// run says what to expect.
fn median_p99_of(
    runs: usize,
    mut measure: impl FnMut() -> anyhow::Result<Measured>,
) -> anyhow::Result<Measured> {
    let mut measured = (0..runs.max(1)).map(|_| measure()).collect::<anyhow::Result<Vec<_>>>()?;
    measured.sort_by(|a, b| a.number("/latency_ms/p99").total_cmp(&b.number("/latency_ms/p99")));
    Ok(measured.swap_remove(measured.len() / 2))
}

/// The rows: deliveries/s of a burst (best of [`BURST_RUNS`]), and deliveries/s, p50 and p99
/// latency at a fixed rate (the run with the median p99 of [`PACED_RUNS`]); each for one node on Redis against the relay in memory (what Redis
/// costs) and for two nodes against one (what crossing nodes costs).
pub(super) fn rows(tools: &Tools, scratch: &Scratch, table: &mut Table) -> anyhow::Result<()> {
    let burst =
        strings(&["--rate", "0", "--messages", &BURST_MESSAGES.to_string(), "--drain", "5s"]);
    let paced =
        strings(&["--rate", &PACED_RATE.to_string(), "--duration", &format!("{PACED_SECONDS}s")]);
    let paces = [
        (format!("burst of {} msgs, unthrottled", grouped(BURST_MESSAGES as f64)), &burst, true),
        (format!("{PACED_RATE} msgs/s for {PACED_SECONDS} s"), &paced, false),
    ];
    for (pace, flags, is_burst) in paces {
        let measured = |setup| {
            let measure = || measure(tools, scratch, setup, flags);
            if is_burst {
                best_of(BURST_RUNS, measure)
            } else {
                median_p99_of(PACED_RUNS, measure)
            }
        };
        let memory = measured(Setup::InMemory)?;
        let one = measured(Setup::OneNode)?;
        let two = measured(Setup::TwoNodes)?;
        let figures: &[(&str, &str)] = if is_burst {
            &[("deliveries/s", "/deliveries/per_second")]
        } else {
            &[
                ("deliveries/s", "/deliveries/per_second"),
                ("p50 latency", "/latency_ms/p50"),
                ("p99 latency", "/latency_ms/p99"),
            ]
        };
        // What Redis costs, then what crossing from one node to another costs.
        for (setup, measured, base_setup, base) in [
            (Setup::OneNode, &one, Setup::InMemory, &memory),
            (Setup::TwoNodes, &two, Setup::OneNode, &one),
        ] {
            for (figure, pointer) in figures {
                let mut row = Row::new(format!(
                    "{SENDERS} senders → {FANOUT_RECEIVERS}, {pace}, v1: {figure}, {} (floor: {})",
                    setup.name(),
                    base_setup.name(),
                ));
                let (value, base_value) = (measured.number(pointer), base.number(pointer));
                let cell = if pointer.starts_with("/deliveries") { rate_cell } else { ms_cell };
                row.wschat = cell(value);
                row.floor = cell(base_value);
                row.ratio = ratio_cell(value / base_value, base_setup.short());
                if pointer.starts_with("/deliveries") {
                    row.budget = "none lost or closed".to_owned();
                    row.verdict = Verdict::check(measured.problems().is_none());
                }
                table.push(row);
            }
        }
        for setup in [Setup::InMemory, Setup::OneNode, Setup::TwoNodes] {
            let measured = match setup {
                Setup::InMemory => &memory,
                Setup::OneNode => &one,
                Setup::TwoNodes => &two,
            };
            if let Some(problems) = measured.problems() {
                table.note(format!("wschat {}, {pace}: {problems}", setup.name()));
            }
        }
    }
    table.note(format!(
        "Redis rows: redis-server on the same machine with appendonly yes and appendfsync always \
         (acked means on disk); each of the {SENDERS} senders keeps at most 100 messages unacked, \
         and with Redis each connection has one message at a time being stored, so the bursts \
         measure how fast Redis stores (a Lua script and an fsync per round trip), not the fan-out"
    ));
    Ok(())
}
