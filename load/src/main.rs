//! The `wschat-load` command: flags, the open-file limit, a progress bar, and the summary.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use wschat_load::summary::grouped;
use wschat_load::{Event, Plan, Protocol, Stage, Summary};

/// Load generator for wschat relays (and any relay that broadcasts the tutorial's JSON).
///
/// Opens --connections sockets; the first --senders of them send messages, the others only
/// receive. Every message carries its send time, so each delivery's latency is measured (sender
/// and receivers are this one process). Before measuring, one sender sends probe messages until
/// every receiver has seen one, so no receiver misses the start.
///
/// Sending stops after --messages in total or after --duration, whichever comes first (10 s
/// when neither is given); then the tool waits for outstanding deliveries (up to --drain without
/// one arriving), closes every socket and prints a summary.
///
/// Figures: a delivery is one of this run's messages received by a receiver (senders' copies
/// are not counted: the tutorial protocol does not echo to the sender, v1 acks it instead, and
/// acks are counted apart). Deliveries/s and acks/s are over the time from the first message
/// sent to the last one received; latency is receive time minus send time, in milliseconds.
/// Missing deliveries are messages sent × receivers minus deliveries.
///
/// Exit status: 0 when every connection opened and stayed open, every message reached every
/// receiver (and, in v1, was acked) and no error was seen; 1 otherwise (the summary says what
/// went wrong); 2 when the run could not start (bad flags, no connection at all).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// The relay's socket URL, e.g. ws://127.0.0.1:5000/ws (wss:// works too; with a relay
    /// that wants a token, add ?token=...).
    #[arg(long)]
    url: String,
    /// Connect the receivers here instead, in turn (repeat it: receiver k goes to the k-th URL
    /// modulo their number), e.g. relays sharing rooms through Redis, the senders staying on
    /// --url. Include --url itself to keep some receivers there.
    #[arg(long = "receiver-url", value_name = "URL")]
    receiver_urls: Vec<String>,
    /// Sockets to open, senders included.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// How many of the connections send; the rest only receive.
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Messages per second in total across all senders, each sending its share on an evenly
    /// staggered schedule; 0 sends as fast as the relay takes them.
    #[arg(long, default_value_t = 100.0, value_name = "PER_SECOND")]
    rate: f64,
    /// Stop sending after this long, e.g. 60s, 500ms, 2m (a bare number is seconds); with
    /// --idle, hold the connections this long.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stop sending after this many messages in total (split evenly between the senders).
    #[arg(long, value_name = "N")]
    messages: Option<u64>,
    /// Size of each message's content in bytes (at least 35: it starts with a timing stamp).
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    message_bytes: usize,
    /// v1: wschat's subprotocol (welcome, acks, numbered messages); tutorial: plain
    /// {"source","content"} JSON with no subprotocol.
    #[arg(long, value_enum, default_value_t = ProtocolArg::V1)]
    protocol: ProtocolArg,
    /// Only open the connections and hold them (until --duration, or Ctrl-C); send nothing.
    #[arg(long, conflicts_with_all = ["senders", "rate", "messages", "message_bytes"])]
    idle: bool,
    /// v1: messages one sender may have sent but not yet seen acked (as the app's outbox).
    #[arg(long, default_value_t = 100, value_name = "N")]
    window: usize,
    /// Send this Origin header with each handshake (relays that check Origin let clients
    /// without one in).
    #[arg(long)]
    origin: Option<String>,
    /// Handshakes in progress at once while connecting.
    #[arg(long, default_value_t = 200, value_name = "N")]
    connect_concurrency: usize,
    /// How long one connection may take to open (for v1, until its welcome).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// After sending, how long to wait for outstanding deliveries while none arrives.
    #[arg(long, default_value = "3s", value_name = "DURATION", value_parser = parse_duration)]
    drain: Duration,
    /// v1: spread the connections over N rooms (connection i joins room load-{i mod N}, senders
    /// included, so give at least N senders); each message is expected by the receivers of its
    /// room only. Without it, everyone is in the lobby.
    #[arg(long, value_name = "N")]
    rooms: Option<usize>,
    /// Print JSON lines on standard output instead of the summary for people: one
    /// {"event":"connected",...} when every connection has opened or failed, then the summary
    /// as one {"event":"summary",...} object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProtocolArg {
    V1,
    Tutorial,
}

impl Args {
    fn plan(&self) -> Plan {
        Plan {
            url: self.url.clone(),
            receiver_urls: self.receiver_urls.clone(),
            protocol: match self.protocol {
                ProtocolArg::V1 => Protocol::V1,
                ProtocolArg::Tutorial => Protocol::Tutorial,
            },
            connections: self.connections,
            senders: if self.idle { 0 } else { self.senders },
            rate: self.rate,
            duration: self.duration,
            messages: self.messages,
            message_bytes: self.message_bytes,
            window: self.window,
            origin: self.origin.clone(),
            connect_concurrency: self.connect_concurrency,
            connect_timeout: self.connect_timeout,
            drain: self.drain,
            rooms: self.rooms,
        }
    }
}

/// `60s`, `500ms`, `2m`, `1h`, or a bare number of seconds (fractions allowed).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("not a duration: {text:?}"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        other => return Err(format!("unknown unit {other:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|error| format!("{text:?}: {error}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let plan = args.plan();
    if let Err(error) = plan.check() {
        eprintln!("wschat-load: {error}");
        return ExitCode::from(2);
    }
    // Either way the run can go on; with a provider already installed there is nothing to do.
    let _ = rustls::crypto::ring::default_provider().install_default();
    raise_open_file_limit(plan.connections);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("wschat-load: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let progress = progress_bar(args.json);
    let json = args.json;
    let acks = plan.protocol == Protocol::V1;
    let outcome = runtime.block_on(wschat_load::run(plan, interrupted(), |event| match event {
        Event::Progress { stage, totals, .. } => {
            progress.set_message(match stage {
                Stage::Connecting => format!(
                    "connecting: {} open, {} failed, {} to go",
                    grouped(totals.open as u64),
                    grouped(totals.failed as u64),
                    grouped(totals.connecting as u64)
                ),
                Stage::Holding | Stage::Probing => {
                    format!("{}: {} open", stage.as_str(), grouped(totals.open as u64))
                }
                Stage::Sending | Stage::Draining => format!(
                    "{}: {} sent, {} delivered{}, {} open",
                    stage.as_str(),
                    grouped(totals.sent),
                    grouped(totals.deliveries),
                    if acks { format!(", {} acked", grouped(totals.acks)) } else { String::new() },
                    grouped(totals.open as u64),
                ),
            });
        }
        Event::Connected { totals, elapsed } => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "event": "connected",
                        "open": totals.open,
                        "failed": totals.failed,
                        "seconds": elapsed.as_secs_f64(),
                    })
                );
            }
        }
    }));
    progress.finish_and_clear();
    match outcome {
        Ok(summary) => {
            print_summary(&summary, json);
            if summary.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("wschat-load: {error}");
            ExitCode::from(2)
        }
    }
}

fn print_summary(summary: &Summary, json: bool) {
    if json {
        match serde_json::to_string(summary) {
            Ok(line) => println!("{line}"),
            Err(error) => eprintln!("wschat-load: cannot encode the summary: {error}"),
        }
    } else {
        print!("{summary}");
    }
}

/// A spinner with the live counts on standard error, when that is a terminal and `--json` is off.
fn progress_bar(json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .expect("a valid fixed template"),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Completes on Ctrl-C (never, if the handler cannot be installed).
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// 10,000 sockets need more than the usual soft limit of 1,024 open files: raise it to the hard
/// limit, and say so when even that is too low.
fn raise_open_file_limit(connections: usize) {
    // Sockets plus the runtime's own descriptors and some room.
    let wanted = connections as u64 + 64;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < wanted => eprintln!(
            "wschat-load: warning: at most {limit} open files allowed (hard limit); \
             {connections} connections need about {wanted}"
        ),
        Ok(_) => {}
        Err(error) => eprintln!("wschat-load: warning: cannot raise the open-file limit: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations read as people write them.
    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    /// The flags map onto the plan, and --idle means no senders.
    #[test]
    fn idle_sends_nothing() {
        let args =
            Args::parse_from(["wschat-load", "--url", "ws://x", "--idle", "--connections", "7"]);
        let plan = args.plan();
        assert_eq!((plan.connections, plan.senders), (7, 0));
        assert!(Args::try_parse_from([
            "wschat-load",
            "--url",
            "ws://x",
            "--idle",
            "--senders",
            "2"
        ])
        .is_err());
    }
}
