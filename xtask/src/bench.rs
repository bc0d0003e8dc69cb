//! `cargo xtask bench`: a benchmark, not a test. It builds the relays and the load tool for
//! release, runs each measurement against wschat's relay, the floor (a bare tokio-tungstenite
//! broadcast relay, `bench/bare-relay`) and the peer (a Node `ws` broadcast relay,
//! `bench/node-relay`) in the same run, and prints one Markdown table in which every figure
//! stands beside what it is compared with. It exits non-zero when a budget is missed, after
//! printing the whole table.
//!
//! The table is a list of [`Row`]s filled by one function per group of rows ([`relay_fanout`],
//! [`idle_rss`], [`persistence`], in [`redis`] relays sharing rooms through Redis, and in
//! [`browser`] the app's first load and its flood and
//! tab→tab latency in Chromium and Firefox against a plain JavaScript page); a new group is one
//! more function that pushes rows (with a [`Verdict`] when it checks a budget) and is called from
//! [`run`].

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::process::{self, cargo, run as run_command};

mod browser;
mod redis;

/// wschat's throughput must be at least this share of the floor's.
const THROUGHPUT_VS_FLOOR: f64 = 0.8;
/// Most bytes of relay memory one idle socket may cost.
const RSS_PER_SOCKET: f64 = 6144.0;
/// Persisted throughput must be at least this share of in-memory throughput.
const PERSISTED_VS_MEMORY: f64 = 0.5;

/// Receivers of the fan-out rows (plus one sender).
const FANOUT_RECEIVERS: usize = 100;
/// Messages of the unthrottled burst: 2,000,000 deliveries, about a second for the floor here,
/// long enough to time on a busy machine.
const BURST_MESSAGES: u64 = 20_000;
/// The burst is run this many times per relay and the best run kept: the machine is shared.
const BURST_RUNS: usize = 3;
/// The paced rows: this many messages per second for this long.
const PACED_RATE: u64 = 200;
const PACED_SECONDS: u64 = 5;
/// The rooms row: this many rooms of [`ROOM_MEMBERS`] v1 connections each (one of them the
/// room's sender), and a burst of [`ROOM_MESSAGES`] messages per room: 1,800,000 deliveries in
/// all, as many as the single-room burst's, over 10,000 sockets instead of 101.
const ROOMS: usize = 1_000;
const ROOM_MEMBERS: usize = 10;
const ROOM_MESSAGES: u64 = 200;
/// Idle sockets opened for the memory rows.
const IDLE_SOCKETS: [usize; 2] = [5_000, 10_000];
/// Concurrent v1 senders (each also receives the others' messages) for the persistence rows,
/// each with up to 100 messages unacked (the app's outbox).
const PERSIST_SENDERS: usize = 4;
const PERSIST_SECONDS: u64 = 3;

/// How one row compares with its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    /// A figure shown for context, with no budget.
    Info,
    /// The figure has a budget but could not be measured: counts as missed.
    NotMeasured,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::Missed => "**MISSED**",
            Self::Info => "",
            Self::NotMeasured => "**not measured**",
        }
    }

    fn check(met: bool) -> Self {
        if met {
            Self::Met
        } else {
            Self::Missed
        }
    }
}

/// One line of the table: what is measured, wschat's figure, the floor's and the peer's (or
/// whatever the row compares with, named in `figure`), their ratio, the budget and the verdict.
#[derive(Debug, Clone)]
pub struct Row {
    pub figure: String,
    pub wschat: String,
    pub floor: String,
    pub peer: String,
    pub ratio: String,
    pub budget: String,
    pub verdict: Verdict,
}

impl Row {
    /// A row with only its figure filled in; the rest reads "—" until set.
    pub fn new(figure: impl Into<String>) -> Self {
        let dash = || "—".to_owned();
        Self {
            figure: figure.into(),
            wschat: dash(),
            floor: dash(),
            peer: dash(),
            ratio: dash(),
            budget: dash(),
            verdict: Verdict::Info,
        }
    }
}

/// The rows, the notes under them, and the budgets' outcome.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Table {
    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Runs one group of rows; when it fails, what it pushed stays and a row says what is missing.
    pub fn group(&mut self, name: &str, group: impl FnOnce(&mut Self) -> anyhow::Result<()>) {
        // For developers: `WSCHAT_BENCH="first load,Chromium"` measures only the groups whose
        // names contain one of these (the browser groups need the first-load group's build).
        if let Ok(only) = std::env::var("WSCHAT_BENCH") {
            if !only.split(',').any(|part| name.contains(part.trim())) {
                return;
            }
        }
        println!("\n== {name}");
        if let Err(error) = group(self) {
            println!("   failed: {error:#}");
            self.push(Row {
                verdict: Verdict::NotMeasured,
                ..Row::new(format!("{name}: not (fully) measured"))
            });
            self.note(format!("{name}: {error:#}"));
        }
    }

    /// The table in Markdown, aligned, with the notes below.
    pub fn render(&self) -> String {
        let header =
            ["figure", "wschat", "floor (bare)", "peer (Node ws)", "ratio", "budget", "verdict"];
        let cells: Vec<[&str; 7]> = self
            .rows
            .iter()
            .map(|row| {
                [
                    row.figure.as_str(),
                    &row.wschat,
                    &row.floor,
                    &row.peer,
                    &row.ratio,
                    &row.budget,
                    row.verdict.label(),
                ]
            })
            .collect();
        let mut widths = header.map(|title| title.chars().count());
        for row in &cells {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 7]| {
            let padded: Vec<String> =
                cells.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
            format!("| {} |\n", padded.join(" | "))
        };
        let mut out = line(header);
        let rule: Vec<String> = widths.iter().map(|width| "-".repeat(*width)).collect();
        let _ = writeln!(out, "|-{}-|", rule.join("-|-"));
        for row in cells {
            out.push_str(&line(row));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }

    /// The rows whose budget was missed or could not be checked.
    pub fn missed(&self) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|row| matches!(row.verdict, Verdict::Missed | Verdict::NotMeasured))
            .collect()
    }
}

/// Builds everything, measures every group, prints the table.
///
/// # Errors
/// When a build fails, or after printing the table when any budget was missed.
pub fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let tools = Tools::build()?;
    let scratch = Scratch::create()?;
    let mut table = Table::default();
    table.group("relay fan-out, 1 sender → 100 receivers", |table| {
        relay_fanout(&tools, &scratch, table)
    });
    table.group("relay fan-out in rooms, 1,000 rooms × 10 members", |table| {
        rooms_fanout(&tools, &scratch, table)
    });
    table.group("RSS per idle socket", |table| idle_rss(&tools, &scratch, table));
    table.group("persistence: --data-dir vs in-memory", |table| {
        persistence(&tools, &scratch, table)
    });
    table.group("relays on Redis: one node vs two, and vs in-memory", |table| {
        redis::rows(&tools, &scratch, table)
    });
    browser::groups(&tools, &scratch, &mut table);

    println!("\n{}", table.render());
    println!(
        "cargo xtask bench: {} cores, {:.0} s in all (builds included)",
        std::thread::available_parallelism().map_or(0, usize::from),
        started.elapsed().as_secs_f64()
    );
    let missed = table.missed();
    if missed.is_empty() {
        println!("every budget met");
        return Ok(());
    }
    let names: Vec<&str> = missed.iter().map(|row| row.figure.as_str()).collect();
    bail!("{} budget(s) missed or not measured:\n  {}", missed.len(), names.join("\n  "))
}

/// The release binaries and the Node relay's script.
struct Tools {
    relay: PathBuf,
    bare_relay: PathBuf,
    load: PathBuf,
    /// `None` (with the reason) when Node or npm is missing or the install failed.
    node_relay: Result<PathBuf, String>,
}

impl Tools {
    fn build() -> anyhow::Result<Self> {
        // The workspace's release profile is tuned for the wasm bundle's size (opt-level "z");
        // the relay sets opt-level 3 for itself in Cargo.toml, and the floor and the load tool
        // get the same here, so that the three are built alike.
        run_command(cargo().args([
            "build",
            "--release",
            "--package",
            "wschat-relay",
            "--package",
            "wschat-bare-relay",
            "--package",
            "wschat-load",
            "--config",
            "profile.release.package.wschat-bare-relay.opt-level=3",
            "--config",
            "profile.release.package.wschat-load.opt-level=3",
        ]))?;
        let release = process::workspace_root().join("target/release");
        let node_dir = process::workspace_root().join("bench/node-relay");
        // --prefer-offline: once the npm cache has `ws`, the bench needs no network.
        let node_relay = run_command(
            Command::new("npm")
                .args(["ci", "--prefer-offline", "--no-audit", "--no-fund"])
                .current_dir(&node_dir),
        )
        .map(|()| node_dir.join("relay.js"))
        .map_err(|error| format!("the Node relay could not be installed ({error:#})"));
        Ok(Self {
            relay: release.join("wschat-relay"),
            bare_relay: release.join("wschat-bare-relay"),
            load: release.join("wschat-load"),
            node_relay,
        })
    }
}

/// A directory for relay logs and data, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("wschat-bench-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Best effort: a leftover directory in /tmp harms nothing.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Which relay a measurement runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relay {
    Wschat,
    Bare,
    Node,
}

impl Relay {
    fn name(self) -> &'static str {
        match self {
            Self::Wschat => "wschat",
            Self::Bare => "bare",
            Self::Node => "node",
        }
    }
}

/// A relay process on a free port; killed (and reaped) when dropped.
struct RunningRelay {
    name: String,
    child: Child,
    port: u16,
    log: PathBuf,
}

impl RunningRelay {
    /// Starts `relay` with `extra` flags, its open-file soft limit raised to the hard limit (for
    /// 10,000 sockets), its output in a log file; waits until it listens.
    fn start(
        tools: &Tools,
        scratch: &Scratch,
        relay: Relay,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let port = process::free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let mut command = Command::new("sh");
        // `exec` keeps the pid: the relay itself is the child, whose memory is read below.
        command.args(["-c", r#"ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@""#, "sh"]);
        match relay {
            Relay::Wschat => {
                // The per-client rate limit is lifted (a load test is a flood by its default
                // rules); every other flag keeps its default.
                command.arg(&tools.relay).args(["--listen", &listen]);
                command.args(["--rate", "1000000", "--burst", "1000000"]);
                command.env("RUST_LOG", "wschat_relay=warn");
            }
            Relay::Bare => {
                command.arg(&tools.bare_relay).args(["--listen", &listen]);
            }
            Relay::Node => {
                let script =
                    tools.node_relay.as_ref().map_err(|reason| anyhow::anyhow!("{reason}"))?;
                command.arg("node").arg(script).args(["--listen", &listen]);
            }
        }
        command.args(extra);
        let log = scratch.0.join(format!("{}-{port}.log", relay.name()));
        let file = std::fs::File::create(&log)?;
        command.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file);
        let child =
            command.spawn().with_context(|| format!("cannot start the {} relay", relay.name()))?;
        let mut running = Self { name: relay.name().to_owned(), child, port, log };
        running.wait_until_listening()?;
        Ok(running)
    }

    fn wait_until_listening(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err() {
            if let Some(status) = self.child.try_wait()? {
                bail!("the {} relay exited ({status}): {}", self.name, self.log_tail());
            }
            if Instant::now() > deadline {
                bail!("the {} relay did not listen within 30 s: {}", self.name, self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// The relay's resident memory (VmRSS), in bytes.
    fn rss(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.child.id());
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let kilobytes = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .with_context(|| format!("no VmRSS in {path}"))?;
        Ok(kilobytes * 1024)
    }

    /// Fails, with the end of its log, when the relay has died.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the {} relay exited ({status}): {}", self.name, self.log_tail());
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" / ")
    }
}

impl Drop for RunningRelay {
    fn drop(&mut self) {
        // Either fails only when the process has already exited, which is the goal.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The figures of one load run, from `wschat-load --json`'s summary.
#[derive(Debug, Clone)]
struct Measured {
    summary: Value,
}

impl Measured {
    fn number(&self, pointer: &str) -> f64 {
        self.summary.pointer(pointer).and_then(Value::as_f64).unwrap_or(f64::NAN)
    }

    fn deliveries_per_second(&self) -> f64 {
        self.number("/deliveries/per_second")
    }

    fn acks_per_second(&self) -> f64 {
        self.number("/acks/per_second")
    }

    /// Problems worth a note: missing deliveries, relay closes, errors.
    fn problems(&self) -> Option<String> {
        let missing = self.number("/deliveries/missing");
        let expected = self.number("/deliveries/expected");
        let mut problems = Vec::new();
        if missing > 0.0 {
            problems.push(format!(
                "{} of {} deliveries missing",
                grouped(missing),
                grouped(expected)
            ));
        }
        for (key, what) in [("close_codes", "closed by the relay with"), ("errors", "errors:")] {
            if let Some(counts) = self.summary.get(key).and_then(Value::as_object) {
                if !counts.is_empty() {
                    let listed: Vec<String> =
                        counts.iter().map(|(code, count)| format!("{code} ×{count}")).collect();
                    problems.push(format!("{what} {}", listed.join(", ")));
                }
            }
        }
        let sent = self.number("/messages/sent");
        let acks = self.number("/acks/count");
        if acks.is_finite() && acks < sent {
            problems.push(format!("{} of {} messages acked", grouped(acks), grouped(sent)));
        }
        (!problems.is_empty()).then(|| problems.join("; "))
    }
}

/// How long one load run may take before the bench gives up on it (each run here is planned
/// to take well under a minute, however slow the relay).
const LOAD_PATIENCE: Duration = Duration::from_secs(180);

/// Runs `wschat-load --json` against `url` with `args`; returns its summary.
fn load(tools: &Tools, url: &str, args: &[String]) -> anyhow::Result<Measured> {
    let mut child = Command::new(&tools.load)
        .args(["--url", url, "--json"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start wschat-load")?;
    let stdout = child.stdout.take().context("wschat-load's output")?;
    let reader = std::thread::spawn(move || last_json_line(BufReader::new(stdout)));
    let deadline = Instant::now() + LOAD_PATIENCE;
    // Its exit status only says whether the run was clean; the summary says how.
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            // Either fails only when it has just exited by itself.
            let _ = child.kill();
            let _ = child.wait();
            bail!("wschat-load {} did not finish within {LOAD_PATIENCE:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let summary =
        reader.join().map_err(|_| anyhow::anyhow!("reading wschat-load's output failed"))?;
    Ok(Measured { summary: summary.context("wschat-load printed no summary")? })
}

/// Reads JSON lines until the end; returns the last `summary` event.
fn last_json_line(reader: impl BufRead) -> Option<Value> {
    reader
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
        .filter(|value| value["event"] == "summary")
        .last()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

/// One sender to [`FANOUT_RECEIVERS`], `extra` deciding the pace; against a fresh relay.
fn fanout(
    tools: &Tools,
    scratch: &Scratch,
    relay: Relay,
    protocol: &str,
    extra: &[String],
) -> anyhow::Result<Measured> {
    let mut running = RunningRelay::start(tools, scratch, relay, &[])?;
    let connections = (FANOUT_RECEIVERS + 1).to_string();
    let mut args =
        strings(&["--protocol", protocol, "--connections", &connections, "--senders", "1"]);
    args.extend_from_slice(extra);
    let measured = load(tools, &running.url(), &args)?;
    running.check_alive()?;
    println!(
        "   {:<6} {:<8} {:>9.0} deliveries/s, p50 {:.2} ms, p99 {:.2} ms{}",
        relay.name(),
        protocol,
        measured.deliveries_per_second(),
        measured.number("/latency_ms/p50"),
        measured.number("/latency_ms/p99"),
        measured.problems().map(|problems| format!(" ({problems})")).unwrap_or_default()
    );
    Ok(measured)
}

/// The best of `runs` (at least one) runs of `measure`: the most deliveries, then the most
/// deliveries per second. The machine is shared: a run slowed by something else says little
/// about the relay.
fn best_of(
    runs: usize,
    mut measure: impl FnMut() -> anyhow::Result<Measured>,
) -> anyhow::Result<Measured> {
    let mut best = measure()?;
    for _ in 1..runs {
        let measured = measure()?;
        if (measured.number("/deliveries/count"), measured.deliveries_per_second())
            > (best.number("/deliveries/count"), best.deliveries_per_second())
        {
            best = measured;
        }
    }
    Ok(best)
}

/// The fan-out rows: a burst (best of [`BURST_RUNS`]) and a paced run, for wschat in both
/// protocols and the floor and the peer in the tutorial's.
fn relay_fanout(tools: &Tools, scratch: &Scratch, table: &mut Table) -> anyhow::Result<()> {
    let burst =
        strings(&["--rate", "0", "--messages", &BURST_MESSAGES.to_string(), "--drain", "5s"]);
    let paced =
        strings(&["--rate", &PACED_RATE.to_string(), "--duration", &format!("{PACED_SECONDS}s")]);
    let measure = |relay: Relay, protocol: &str, extra: &[String], runs: usize| {
        best_of(runs, || fanout(tools, scratch, relay, protocol, extra))
    };
    // The throughput budget is checked on the burst, where all three speak the same protocol.
    for (pace, extra, runs, has_budget) in [
        (
            format!("burst of {} msgs, unthrottled", grouped(BURST_MESSAGES as f64)),
            &burst,
            BURST_RUNS,
            true,
        ),
        (format!("{PACED_RATE} msgs/s for {PACED_SECONDS} s"), &paced, 1, false),
    ] {
        let bare = measure(Relay::Bare, "tutorial", extra, runs)?;
        let node = match &tools.node_relay {
            Ok(_) => Some(measure(Relay::Node, "tutorial", extra, runs)?),
            Err(_) => None,
        };
        for protocol in ["tutorial", "v1"] {
            let wschat = measure(Relay::Wschat, protocol, extra, runs)?;
            let label = if protocol == "v1" { "v1 (floor, peer: tutorial)" } else { "tutorial" };
            let is_budget = has_budget && protocol == "tutorial";
            let lost = wschat.problems().is_some();
            let per_second = |measured: &Measured| measured.deliveries_per_second();
            let mut row = compare_row(
                format!("fan-out 1→100, {pace}, {label}: deliveries/s"),
                (&wschat, Some(&bare), node.as_ref()),
                per_second,
                rate_cell,
            );
            if is_budget {
                let ratio = per_second(&wschat) / per_second(&bare);
                row.budget = format!("≥ {THROUGHPUT_VS_FLOOR}× floor, none lost or closed");
                row.verdict = Verdict::check(ratio >= THROUGHPUT_VS_FLOOR && !lost);
            }
            table.push(row);
            for (name, pointer) in [("p50", "/latency_ms/p50"), ("p99", "/latency_ms/p99")] {
                let mut row = compare_row(
                    format!("fan-out 1→100, {pace}, {label}: {name} latency"),
                    (&wschat, Some(&bare), node.as_ref()),
                    |measured| measured.number(pointer),
                    ms_cell,
                );
                if protocol == "v1" && has_budget {
                    // A v1 sender waits for acks (see the note), a tutorial sender does not.
                    row.ratio = "—".to_owned();
                }
                table.push(row);
            }
            if let Some(problems) = wschat.problems() {
                table.note(format!("wschat, {label}, {pace}: {problems}"));
            }
        }
        for (name, measured) in [("floor", Some(&bare)), ("peer", node.as_ref())] {
            if let Some(problems) = measured.and_then(Measured::problems) {
                table.note(format!("{name}, {pace}: {problems}"));
            }
        }
    }
    table.note(format!(
        "the burst's v1 sender keeps at most 100 messages unacked (the app's outbox), so it is paced \
         by acks and queues little: its latencies are not comparable with the tutorial bursts', \
         which queue all {} messages at once",
        grouped(BURST_MESSAGES as f64)
    ));
    if let Err(reason) = &tools.node_relay {
        table.note(format!("peer not measured: {reason}"));
    }
    Ok(())
}

/// The rooms rows: [`ROOMS`] rooms of [`ROOM_MEMBERS`] v1 connections, one sender in each, a
/// burst of [`ROOM_MESSAGES`] per room at once; wschat alone (the floor and the peer have no
/// rooms), to read beside the single room's v1 burst above.
fn rooms_fanout(tools: &Tools, scratch: &Scratch, table: &mut Table) -> anyhow::Result<()> {
    let connections = ROOMS * ROOM_MEMBERS;
    // Room for every connection in the lobby too, where each starts.
    let limit = (connections + 100).to_string();
    let flags = ["--max-connections", &limit, "--max-room-members", &limit];
    let mut running = RunningRelay::start(tools, scratch, Relay::Wschat, &flags)?;
    let args = strings(&[
        "--protocol",
        "v1",
        "--connections",
        &connections.to_string(),
        "--senders",
        &ROOMS.to_string(),
        "--rooms",
        &ROOMS.to_string(),
        "--rate",
        "0",
        "--messages",
        &(ROOM_MESSAGES * ROOMS as u64).to_string(),
        "--drain",
        "5s",
    ]);
    let measured = load(tools, &running.url(), &args)?;
    running.check_alive()?;
    println!(
        "   wschat v1 rooms {:>9.0} deliveries/s, p50 {:.2} ms, p99 {:.2} ms{}",
        measured.deliveries_per_second(),
        measured.number("/latency_ms/p50"),
        measured.number("/latency_ms/p99"),
        measured.problems().map(|problems| format!(" ({problems})")).unwrap_or_default()
    );
    let pace = format!("burst of {ROOM_MESSAGES} msgs per room, unthrottled");
    let mut row =
        Row::new(format!("fan-out in {ROOMS} rooms × {ROOM_MEMBERS}, {pace}, v1: deliveries/s"));
    row.wschat = rate_cell(measured.deliveries_per_second());
    table.push(row);
    for (name, pointer) in [("p50", "/latency_ms/p50"), ("p99", "/latency_ms/p99")] {
        let mut row = Row::new(format!(
            "fan-out in {ROOMS} rooms × {ROOM_MEMBERS}, {pace}, v1: {name} latency"
        ));
        row.wschat = ms_cell(measured.number(pointer));
        table.push(row);
    }
    if let Some(problems) = measured.problems() {
        table.note(format!("wschat, {ROOMS} rooms: {problems}"));
    }
    Ok(())
}

/// A row of one figure for wschat, the floor and the peer, with wschat's ratio to the floor.
fn compare_row(
    figure: String,
    (wschat, floor, peer): (&Measured, Option<&Measured>, Option<&Measured>),
    value: impl Fn(&Measured) -> f64,
    cell: fn(f64) -> String,
) -> Row {
    let mut row = Row::new(figure);
    row.wschat = cell(value(wschat));
    if let Some(floor) = floor {
        row.floor = cell(value(floor));
        row.ratio = ratio_cell(value(wschat) / value(floor), "floor");
    }
    if let Some(peer) = peer {
        row.peer = cell(value(peer));
    }
    row
}

/// The memory rows: each relay's RSS growth per idle socket with 5,000 and 10,000 open.
fn idle_rss(tools: &Tools, scratch: &Scratch, table: &mut Table) -> anyhow::Result<()> {
    for sockets in IDLE_SOCKETS {
        let wschat = rss_per_socket(tools, scratch, Relay::Wschat, "v1", sockets)?;
        let bare = rss_per_socket(tools, scratch, Relay::Bare, "tutorial", sockets)?;
        let node = match &tools.node_relay {
            Ok(_) => Some(rss_per_socket(tools, scratch, Relay::Node, "tutorial", sockets)?),
            Err(_) => None,
        };
        let mut row = Row::new(format!(
            "RSS per idle socket, {} open (wschat: v1 clients, as the app's)",
            grouped(sockets as f64)
        ));
        row.wschat = bytes_cell(wschat);
        row.floor = bytes_cell(bare);
        row.budget = format!("≤ {} B and ≤ peer", grouped(RSS_PER_SOCKET));
        match node {
            Some(node) => {
                row.peer = bytes_cell(node);
                row.ratio = ratio_cell(wschat / node, "peer");
                row.verdict = Verdict::check(wschat <= RSS_PER_SOCKET && wschat <= node);
            }
            None => row.verdict = Verdict::NotMeasured,
        }
        table.push(row);
    }
    table.note(
        "the floor keeps tokio-tungstenite's defaults, whose 128 KiB read buffer per socket is \
         touched in full on the first read: it is a floor for throughput, not for memory",
    );
    Ok(())
}

/// Opens `sockets` idle connections to a fresh relay; returns its RSS growth per socket.
fn rss_per_socket(
    tools: &Tools,
    scratch: &Scratch,
    relay: Relay,
    protocol: &str,
    sockets: usize,
) -> anyhow::Result<f64> {
    let mut running = RunningRelay::start(tools, scratch, relay, &[])?;
    // Let start-up allocations settle before the baseline.
    std::thread::sleep(Duration::from_millis(500));
    let before = running.rss()?;
    let mut child = Command::new(&tools.load)
        .args(["--url", &running.url(), "--json", "--idle", "--protocol", protocol])
        .args(["--connections", &sockets.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start wschat-load")?;
    let stopper = ChildGuard(&mut child);
    let stdout = stopper.0.stdout.take().context("wschat-load's output")?;
    let mut events = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<Value>(&line).ok());
    let connected = events
        .by_ref()
        .find(|value| value["event"] == "connected")
        .context("wschat-load ended before its connections were open")?;
    let open = connected["open"].as_u64().unwrap_or(0);
    // Let the relay finish its side of the last handshakes.
    std::thread::sleep(Duration::from_secs(1));
    running.check_alive()?;
    let after = running.rss()?;
    // SIGINT: the tool closes its sockets and prints its summary.
    run_quietly(Command::new("kill").args(["-INT", &stopper.0.id().to_string()]))?;
    let summary = events.filter(|value| value["event"] == "summary").last();
    drop(stopper);
    if open == 0 {
        bail!("no socket to the {} relay opened", relay.name());
    }
    let per_socket = after.saturating_sub(before) as f64 / open as f64;
    let problems = summary.map(|summary| Measured { summary }.problems()).unwrap_or_default();
    println!(
        "   {:<6} {} sockets open: RSS {} → {} ({} per socket){}",
        relay.name(),
        grouped(open as f64),
        bytes_cell(before as f64),
        bytes_cell(after as f64),
        bytes_cell(per_socket),
        problems.map(|problems| format!(" ({problems})")).unwrap_or_default()
    );
    if (open as usize) < sockets {
        bail!("only {open} of {sockets} sockets to the {} relay opened", relay.name());
    }
    Ok(per_socket)
}

/// Waits for a child process, killing it first if it has not ended within 30 s.
struct ChildGuard<'a>(&'a mut Child);

impl Drop for ChildGuard<'_> {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Either fails only when the process has already exited, which is the goal.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_quietly(command: &mut Command) -> anyhow::Result<()> {
    let status =
        command.status().with_context(|| format!("cannot run {}", process::describe(command)))?;
    if !status.success() {
        bail!("{} failed ({status})", process::describe(command));
    }
    Ok(())
}

/// The persistence rows: acked messages per second from several unthrottled v1 senders, with
/// `--data-dir` and in memory.
fn persistence(tools: &Tools, scratch: &Scratch, table: &mut Table) -> anyhow::Result<()> {
    let senders = PERSIST_SENDERS.to_string();
    let args = strings(&[
        "--protocol",
        "v1",
        "--connections",
        &senders,
        "--senders",
        &senders,
        "--rate",
        "0",
        "--duration",
        &format!("{PERSIST_SECONDS}s"),
    ]);
    let measure = |data_dir: Option<&Path>| -> anyhow::Result<Measured> {
        let data_flags: Vec<String> = match data_dir {
            Some(dir) => vec!["--data-dir".to_owned(), dir.display().to_string()],
            None => Vec::new(),
        };
        let flags: Vec<&str> = data_flags.iter().map(String::as_str).collect();
        let mut running = RunningRelay::start(tools, scratch, Relay::Wschat, &flags)?;
        let measured = load(tools, &running.url(), &args)?;
        running.check_alive()?;
        println!(
            "   wschat {:<10} {:>7.0} acks/s, ack p50 {:.2} ms, p99 {:.2} ms{}",
            if data_dir.is_some() { "--data-dir" } else { "in memory" },
            measured.acks_per_second(),
            measured.number("/acks/latency_ms/p50"),
            measured.number("/acks/latency_ms/p99"),
            measured.problems().map(|problems| format!(" ({problems})")).unwrap_or_default()
        );
        Ok(measured)
    };
    let memory = measure(None)?;
    let data_dir = scratch.0.join("data");
    let persisted = measure(Some(&data_dir))?;
    let pace = format!("{PERSIST_SENDERS} v1 senders unthrottled for {PERSIST_SECONDS} s");
    let ratio = persisted.acks_per_second() / memory.acks_per_second();
    let mut row =
        Row::new(format!("acked msgs/s, {pace}: --data-dir (wschat) vs in-memory (floor)"));
    row.wschat = rate_cell(persisted.acks_per_second());
    row.floor = rate_cell(memory.acks_per_second());
    row.ratio = ratio_cell(ratio, "in-memory");
    row.budget = format!("≥ {PERSISTED_VS_MEMORY}× in-memory, no sender closed");
    row.verdict = Verdict::check(
        ratio >= PERSISTED_VS_MEMORY
            && memory.problems().is_none()
            && persisted.problems().is_none(),
    );
    table.push(row);
    for (name, pointer) in [("p50", "/acks/latency_ms/p50"), ("p99", "/acks/latency_ms/p99")] {
        let mut row = Row::new(format!("ack {name} latency, {pace}: --data-dir vs in-memory"));
        row.wschat = ms_cell(persisted.number(pointer));
        row.floor = ms_cell(memory.number(pointer));
        row.ratio = ratio_cell(persisted.number(pointer) / memory.number(pointer), "in-memory");
        table.push(row);
    }
    for (name, measured) in [("in memory", &memory), ("--data-dir", &persisted)] {
        if let Some(problems) = measured.problems() {
            table.note(format!("wschat {name}, {pace}: {problems}"));
        }
    }
    Ok(())
}

/// `1234567.8` as `1,234,568`.
fn grouped(value: f64) -> String {
    if !value.is_finite() {
        return "n/a".to_owned();
    }
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    if value < -0.5 {
        out.insert(0, '-');
    }
    out
}

/// `0.96× floor`; small ratios keep three decimals, so that 0.004× does not read as 0.00×.
fn ratio_cell(ratio: f64, of: &str) -> String {
    if !ratio.is_finite() {
        return "n/a".to_owned();
    }
    let decimals = if ratio >= 10.0 {
        0
    } else if ratio >= 0.1 {
        2
    } else {
        3
    };
    format!("{ratio:.decimals$}× {of}")
}

fn rate_cell(per_second: f64) -> String {
    format!("{}/s", grouped(per_second))
}

fn ms_cell(ms: f64) -> String {
    if ms.is_finite() {
        format!("{ms:.2} ms")
    } else {
        "n/a".to_owned()
    }
}

fn bytes_cell(bytes: f64) -> String {
    if bytes.abs() >= 10.0 * 1024.0 * 1024.0 {
        format!("{:.0} MiB", bytes / (1024.0 * 1024.0))
    } else {
        format!("{} B", grouped(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table is Markdown with aligned columns, and missed budgets are listed.
    #[test]
    fn table_renders_and_lists_misses() {
        let mut table = Table::default();
        table.push(Row { wschat: "1 B".into(), verdict: Verdict::Met, ..Row::new("a") });
        table.push(Row { verdict: Verdict::Missed, ..Row::new("a longer figure") });
        table.note("a note");
        let text = table.render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("| figure          | wschat |"));
        assert!(lines[1].starts_with("|-----"));
        assert_eq!(lines[0].chars().count(), lines[2].chars().count());
        assert!(text.contains("- a note"));
        assert_eq!(table.missed().len(), 1);
        assert_eq!(grouped(1_234_567.8), "1,234,568");
        assert_eq!(bytes_cell(6144.0), "6,144 B");
        assert_eq!(ratio_cell(0.004_05, "in-memory"), "0.004× in-memory");
        assert_eq!(ratio_cell(0.956, "floor"), "0.96× floor");
        assert_eq!(ratio_cell(22.1, "peer"), "22× peer");
    }
}
