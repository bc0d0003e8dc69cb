//! Quick measurements of a release relay, run by hand (not part of the tests): RSS per idle
//! socket, fan-out deliveries per second, and acked messages per second with and without
//! `--data-dir`.
//!
//! ```text
//! cargo build --release -p wschat-relay --bin wschat-relay --example measure
//! ulimit -n 20000
//! target/release/examples/measure idle --counts 5000,10000
//! target/release/examples/measure fan-out --receivers 100 --messages 2000 --rounds 5
//! target/release/examples/measure persisted --senders 50 --messages 400 --rounds 3
//! ```
//!
//! Each subcommand starts its own relay from `--relay` (default `target/release/wschat-relay`)
//! on a free loopback port with the per-client rate limit lifted and every other flag at its
//! default, plus whatever `--relay-arg` adds.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use wschat_protocol::v1::{ClientFrame, ServerFrame, LOBBY, SUBPROTOCOL};
use wschat_protocol::ChatMessage;

#[derive(Debug, Parser)]
struct Args {
    /// The relay binary to start.
    #[arg(long, default_value = "target/release/wschat-relay")]
    relay: PathBuf,
    /// One more argument for the relay (repeat it).
    #[arg(long = "relay-arg", allow_hyphen_values = true)]
    relay_args: Vec<String>,
    /// The relay is a plain broadcast relay taking only `--listen` (the bench's floor,
    /// `target/release/wschat-bare-relay`): no rate flags, no metrics, tutorial clients only.
    #[arg(long)]
    plain: bool,
    /// Every client speaks the tutorial's JSON (as against the plain relay); otherwise half of the
    /// receivers and idle sockets speak v1.
    #[arg(long)]
    tutorial: bool,
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Opens idle sockets (half v1, half tutorial) and reads the relay's VmRSS before and after.
    Idle {
        /// Open sockets at which to measure, ascending.
        #[arg(long, value_delimiter = ',', default_value = "5000,10000")]
        counts: Vec<usize>,
        /// Then one client sends a message of this many characters to all, and the RSS is read
        /// again: what a socket keeps after it carried a large frame.
        #[arg(long)]
        then_message: Option<usize>,
    },
    /// One tutorial client sends a burst; every receiver must get all of it.
    FanOut {
        #[arg(long, default_value_t = 100)]
        receivers: usize,
        #[arg(long, default_value_t = 2000)]
        messages: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Many v1 senders each send a burst; counts acks per second, in memory and with a data
    /// directory, alternating, in one run.
    Persisted {
        #[arg(long, default_value_t = 50)]
        senders: usize,
        #[arg(long, default_value_t = 400)]
        messages: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
}

type Client = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

struct Relay {
    child: Child,
    port: u16,
    plain: bool,
    tutorial: bool,
}

impl Relay {
    async fn start(args: &Args, extra: &[String]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut command = Command::new(&args.relay);
        command.args(["--listen", &format!("127.0.0.1:{port}")]);
        if !args.plain {
            command.args(["--rate", "1000000", "--burst", "1000000"]);
        }
        let child = command
            .args(&args.relay_args)
            .args(extra)
            .env("RUST_LOG", "wschat_relay=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start the relay (build it with cargo build --release)");
        let relay = Self { child, port, plain: args.plain, tutorial: args.plain || args.tutorial };
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return relay;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the relay did not start listening");
    }

    fn rss_kib(&self) -> u64 {
        let pid = self.child.id().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    async fn metric(&self, series: &str) -> f64 {
        if self.plain {
            return f64::NAN;
        }
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let request = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut page = String::new();
        stream.read_to_string(&mut page).await.unwrap();
        page.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    async fn connect(&self, v1: bool) -> Client {
        let v1 = v1 && !self.tutorial;
        let mut request = format!("ws://127.0.0.1:{}/ws", self.port).into_client_request().unwrap();
        if v1 {
            request.headers_mut().insert("Sec-WebSocket-Protocol", SUBPROTOCOL.parse().unwrap());
        }
        loop {
            match tokio_tungstenite::connect_async(request.clone()).await {
                Ok((client, _)) => return client,
                // A full accept backlog under thousands of connects: try again.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    async fn stop(mut self) {
        let pid = self.child.id().unwrap().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status().await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// Reads a client until it closes, counting text frames in `received`.
fn drain(mut client: Client, received: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(Ok(frame)) = client.next().await {
            if frame.is_text() {
                received.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match args.what {
        What::Idle { ref counts, then_message } => idle(&args, counts, then_message).await,
        What::FanOut { receivers, messages, rounds } => {
            fan_out(&args, receivers, messages, rounds).await;
        }
        What::Persisted { senders, messages, rounds } => {
            persisted(&args, senders, messages, rounds).await;
        }
    }
}

async fn idle(args: &Args, counts: &[usize], then_message: Option<usize>) {
    let relay = Relay::start(args, &[]).await;
    // One socket first, so that what every relay has once (runtime threads, the first buffers of
    // the allocator's arenas) is in the baseline.
    let warm = relay.connect(true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = relay.rss_kib();
    println!("baseline VmRSS {baseline} KiB (1 socket open)");
    let mut open = vec![warm];
    let received = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for &count in counts {
        let mut connecting = Vec::new();
        let relay = &relay;
        while open.len() + connecting.len() < count {
            let v1 = (open.len() + connecting.len()) % 2 == 0;
            connecting.push(async move { relay.connect(v1).await });
            if connecting.len() == 200 {
                open.extend(futures_util::future::join_all(connecting.drain(..)).await);
            }
        }
        open.extend(futures_util::future::join_all(connecting).await);
        // Idle clients still answer the relay's pings: a reader per socket.
        for client in open.drain(1..) {
            readers.push(drain(client, Arc::clone(&received)));
        }
        let connected = relay.metric("wschat_connections").await as usize;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = relay.rss_kib();
        let per_socket = (rss - baseline) as f64 * 1024.0 / (count - 1) as f64;
        println!(
            "{count} open ({connected} by the relay's count): VmRSS {rss} KiB, {:.0} bytes per idle socket",
            per_socket
        );
    }
    if let Some(chars) = then_message {
        let before = received.load(Ordering::Relaxed);
        let mut sender = relay.connect(false).await;
        let text = ChatMessage { source: "bench".into(), content: "x".repeat(chars) };
        sender.send(Message::text(text.to_json())).await.unwrap();
        while received.load(Ordering::Relaxed) < before + readers.len() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = relay.rss_kib();
        let per_socket = (rss - baseline) as f64 * 1024.0 / readers.len() as f64;
        println!(
            "after each received a {chars}-character message: VmRSS {rss} KiB, {per_socket:.0} bytes per socket"
        );
    }
    drop(readers);
    relay.stop().await;
}

async fn fan_out(args: &Args, receivers: usize, messages: usize, rounds: usize) {
    let relay = Relay::start(args, &[]).await;
    let received = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for n in 0..receivers {
        readers.push(drain(relay.connect(n % 2 == 0).await, Arc::clone(&received)));
    }
    let mut sender = relay.connect(false).await;
    // The v1 receivers' welcomes.
    let expected_welcomes = if relay.tutorial { 0 } else { receivers.div_ceil(2) };
    while received.load(Ordering::Relaxed) < expected_welcomes {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut rates = Vec::new();
    for round in 0..rounds {
        let before = received.load(Ordering::Relaxed);
        let target = before + receivers * messages;
        let started = Instant::now();
        for n in 0..messages {
            let text = ChatMessage { source: "bench".into(), content: format!("{round}-{n}") };
            sender.feed(Message::text(text.to_json())).await.unwrap();
        }
        sender.flush().await.unwrap();
        // Evicted receivers never get the rest: give up on them after a while.
        let deadline = started + Duration::from_secs(20);
        while received.load(Ordering::Relaxed) < target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let elapsed = started.elapsed();
        let got = received.load(Ordering::Relaxed) - before;
        let rate = got as f64 / elapsed.as_secs_f64();
        rates.push(rate);
        println!(
            "round {round}: {got} of {} deliveries in {:.3} s: {:.0} deliveries/s",
            receivers * messages,
            elapsed.as_secs_f64(),
            rate
        );
    }
    let evicted = relay.metric(r#"wschat_disconnects_total{kind="slow_consumer"}"#).await;
    rates.sort_by(f64::total_cmp);
    println!(
        "median {:.0} deliveries/s; slow_consumer evictions: {evicted}",
        rates[rates.len() / 2]
    );
    drop(readers);
    relay.stop().await;
}

/// Sends `messages` v1 messages from each of `senders` clients at once; returns acks per second.
async fn acked_per_second(relay: &Relay, senders: usize, messages: usize, round: usize) -> f64 {
    let mut clients = Vec::new();
    for _ in 0..senders {
        let mut client = relay.connect(true).await;
        // The welcome.
        client.next().await.unwrap().unwrap();
        clients.push(client);
    }
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(s, client)| {
            tokio::spawn(async move {
                let (mut sink, mut stream) = client.split();
                let writing = tokio::spawn(async move {
                    for n in 0..messages {
                        let frame = ClientFrame::Message {
                            room: LOBBY.into(),
                            id: format!("{round}-{s}-{n}"),
                            source: "bench".into(),
                            content: format!("message {n} from {s}"),
                        };
                        sink.feed(Message::text(frame.to_json())).await.unwrap();
                    }
                    sink.flush().await.unwrap();
                    sink
                });
                let mut acks = 0;
                while acks < messages {
                    let Some(Ok(Message::Text(text))) = stream.next().await else {
                        panic!("sender {s} lost its connection after {acks} acks");
                    };
                    match ServerFrame::from_json(&text) {
                        Ok(ServerFrame::Ack { .. }) => acks += 1,
                        Ok(ServerFrame::Error { error, .. }) => panic!("refused: {error}"),
                        _ => {}
                    }
                }
                drop(writing.await.unwrap());
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (senders * messages) as f64 / started.elapsed().as_secs_f64()
}

async fn persisted(args: &Args, senders: usize, messages: usize, rounds: usize) {
    let dir = std::env::temp_dir().join(format!("wschat-measure-{}", std::process::id()));
    let in_memory = Relay::start(args, &[]).await;
    let on_disk = Relay::start(args, &["--data-dir".into(), dir.display().to_string()]).await;
    let (mut memory_rates, mut disk_rates) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let memory = acked_per_second(&in_memory, senders, messages, round).await;
        let disk = acked_per_second(&on_disk, senders, messages, round).await;
        println!("round {round}: in memory {memory:.0} acked/s, with --data-dir {disk:.0} acked/s");
        memory_rates.push(memory);
        disk_rates.push(disk);
    }
    memory_rates.sort_by(f64::total_cmp);
    disk_rates.sort_by(f64::total_cmp);
    let (memory, disk) = (memory_rates[rounds / 2], disk_rates[rounds / 2]);
    println!(
        "median: in memory {memory:.0} acked/s, with --data-dir {disk:.0} acked/s, ratio {:.2}",
        disk / memory
    );
    let commits = on_disk.metric("wschat_commit_batch_size_count").await;
    let committed = on_disk.metric("wschat_commit_batch_size_sum").await;
    println!("with --data-dir: {commits} commits, {:.1} messages per commit", committed / commits);
    in_memory.stop().await;
    on_disk.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
