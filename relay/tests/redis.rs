//! Several relays on one Redis (`--redis`), with a real `redis-server` started here on a free
//! loopback port with its own temporary directory: clients on different nodes chat in one room in
//! one order, resume on another node exactly, and nothing acked is lost when Redis is killed or
//! stopped.
//!
//! A client of a relay killed with SIGKILL reconnects through a real HAProxy (health-checked
//! on `/healthz`) to another and resumes exactly.
//!
//! When `redis-server` (or `haproxy`) cannot be found the tests say SKIPPED and return, unless
//! `WSCHAT_REQUIRE_REDIS` is set (`cargo xtask test` installs both and sets it), where they fail.

mod common;
#[path = "common/haproxy.rs"]
mod haproxy;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wschat_protocol::rooms::LOBBY;
use wschat_protocol::v1::{ClientFrame, RoomInfo, ServerFrame, StoredMessage};
use wschat_protocol::ErrorCode;
use wschat_relay::Config;

/// Whether Redis keeps what it acknowledged across a crash.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Persistence {
    /// `appendonly yes`, `appendfsync always`: the recommended settings.
    Always,
    /// Nothing on disk: a restart loses everything.
    Off,
}

/// A `redis-server` of this test's own.
struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    persistence: Persistence,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one, or `None` (SKIPPED) when `redis-server` is not installed.
    async fn start(persistence: Persistence) -> Option<Self> {
        let binary = required("redis-server")?;
        let port = free_port();
        let mut server = Self { port, dir: tempfile::tempdir().unwrap(), persistence, child: None };
        server.spawn(&binary).await;
        Some(server)
    }

    async fn spawn(&mut self, binary: &PathBuf) {
        let appendonly = if self.persistence == Persistence::Always { "yes" } else { "no" };
        let child = Command::new(binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", "", "--appendonly", appendonly, "--appendfsync", "always"])
            .args(["--maxmemory-policy", "noeviction", "--daemonize", "no"])
            .args(["--logfile", "redis.log"])
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        tokio::time::timeout(PATIENCE, async {
            while !self.answers().await {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("redis-server did not start");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Whether it answers PING.
    async fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if stream.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut reply = [0; 7];
        stream.read_exact(&mut reply).await.is_ok() && &reply == b"+PONG\r\n"
    }

    /// Runs one command (its answer unread), as an operator or a fault would.
    async fn command(&self, args: &[&str]) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut reply = [0; 1];
        stream.read_exact(&mut reply).await.unwrap();
    }

    /// SIGKILL: Redis ends at once, keeping only what it had written.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().unwrap();
            child.wait().await.unwrap();
        }
    }

    /// Starts it again on the same port and directory.
    async fn restart(&mut self) {
        self.spawn(&redis_binary().unwrap()).await;
    }
}

fn redis_binary() -> Option<PathBuf> {
    installed("redis-server")
}

/// Where the Debian-packaged command `name` is installed; `None` (the test prints SKIPPED) when
/// it is not, unless `cargo xtask test` requires it (`WSCHAT_REQUIRE_REDIS`): then it fails.
fn required(name: &str) -> Option<PathBuf> {
    let found = installed(name);
    if found.is_none() {
        assert!(
            std::env::var_os("WSCHAT_REQUIRE_REDIS").is_none(),
            "{name} not found, and WSCHAT_REQUIRE_REDIS is set"
        );
        eprintln!("SKIPPED: {name} not found (apt-get install {name})");
    }
    found
}

/// A loopback port nothing listens on (for a server the test starts).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Where the command `name` is installed, if it is.
fn installed(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A relay on `redis`.
async fn node(redis: &RedisServer) -> TestRelay {
    // The default strikes (20): the crash test sends 25 into an outage, and refusals for Redis's
    // failure are no strikes against the client.
    let config = Config { redis: Some(redis.url()), rate: unlimited(), ..Config::default() };
    TestRelay::start(config).await
}

/// The welcome's epoch and latest seq.
async fn welcome(client: &mut Client) -> (String, u64) {
    match next_v1(client).await {
        ServerFrame::Welcome { epoch, latest_seq, .. } => (epoch, latest_seq),
        other => panic!("expected a welcome, got {other:?}"),
    }
}

/// What the relay answered to one message.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Acked { seq: u64, duplicate: bool },
    Unavailable,
}

/// Sends message `id` and reads until its ack or its refusal, skipping everything else.
/// Posts `m{n}` for each n in `seqs` and checks each is acked as seq n, new.
async fn post_numbered(client: &mut Client, seqs: std::ops::RangeInclusive<u64>) {
    for n in seqs {
        assert_eq!(
            post(client, &format!("m{n}")).await,
            Answer::Acked { seq: n, duplicate: false }
        );
    }
}

async fn post(client: &mut Client, id: &str) -> Answer {
    send_v1(client, &message(id, id)).await;
    loop {
        match next_v1(client).await {
            ServerFrame::Ack { id: acked, seq, duplicate, .. } if acked == id => {
                return Answer::Acked { seq, duplicate }
            }
            ServerFrame::Error { error, id: Some(refused), .. } if refused == id => {
                assert_eq!(error.code, ErrorCode::Unavailable);
                return Answer::Unavailable;
            }
            _ => continue,
        }
    }
}

/// Reads live messages until `count` have come; returns them.
async fn messages(client: &mut Client, count: usize) -> Vec<StoredMessage> {
    let mut got = Vec::new();
    while got.len() < count {
        if let ServerFrame::Message { message, .. } = next_v1(client).await {
            got.push(message);
        }
    }
    got
}

/// The status line's code of a GET.
async fn status(address: SocketAddr, path: &str) -> u16 {
    let response = http_get(address, path).await;
    response.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

/// Waits until `/healthz` answers `code`.
async fn health_becomes(address: SocketAddr, code: u16) {
    tokio::time::timeout(PATIENCE, async {
        while status(address, "/healthz").await != code {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("/healthz never answered {code}"));
}

/// A tutorial client and a v1 client on node A, a v1 sender and a v1 reader on node B, all in
/// the lobby: both v1 readers see the same messages in the same order, numbered 1 to 40 once
/// each, and the tutorial client gets every message from B once and never its own back.
#[tokio::test]
async fn clients_on_two_nodes_chat_in_one_order() {
    let Some(redis) = RedisServer::start(Persistence::Off).await else { return };
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut tutorial = a.connect().await;
    let mut reader_a = a.connect_v1().await;
    let mut sender_b = b.connect_v1().await;
    let mut reader_b = b.connect_v1().await;
    for client in [&mut reader_a, &mut sender_b, &mut reader_b] {
        welcome(client).await;
    }
    for n in 0..20 {
        send(&mut tutorial, &chat("tutor", &format!("t{n}"))).await;
        let answer = post(&mut sender_b, &format!("b{n}")).await;
        assert!(matches!(answer, Answer::Acked { duplicate: false, .. }), "{answer:?}");
    }
    let on_a = messages(&mut reader_a, 40).await;
    let on_b = messages(&mut reader_b, 40).await;
    let order = |got: &[StoredMessage]| {
        got.iter().map(|message| (message.seq, message.content.clone())).collect::<Vec<_>>()
    };
    assert_eq!(order(&on_a), order(&on_b), "one order on both nodes");
    assert_eq!(
        on_a.iter().map(|message| message.seq).collect::<Vec<_>>(),
        (1..=40).collect::<Vec<_>>()
    );
    let contents: HashSet<_> = on_a.iter().map(|message| message.content.clone()).collect();
    assert_eq!(contents.len(), 40, "each message once");
    let mut from_b = Vec::new();
    while from_b.len() < 20 {
        let got = next_chat(&mut tutorial).await;
        assert!(got.content.starts_with('b'), "never its own: {got:?}");
        from_b.push(got.content);
    }
    assert_eq!(from_b, (0..20).map(|n| format!("b{n}")).collect::<Vec<_>>());
}

/// A v1 client on node A reads a few messages, goes away, and comes back on node B after more
/// were sent there: the history after its last seq is exactly what it missed, complete.
#[tokio::test]
async fn a_client_resumes_exactly_on_the_other_node() {
    let Some(redis) = RedisServer::start(Persistence::Off).await else { return };
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut sender = b.connect_v1().await;
    welcome(&mut sender).await;
    let mut reader = a.connect_v1().await;
    let (epoch, _) = welcome(&mut reader).await;
    post_numbered(&mut sender, 1..=5).await;
    let seen = messages(&mut reader, 5).await;
    let last_seen = seen.last().unwrap().seq;
    drop(reader);
    post_numbered(&mut sender, 6..=9).await;
    let mut back = b.connect_v1().await;
    let (epoch_b, latest) = welcome(&mut back).await;
    assert_eq!((epoch_b, latest), (epoch, 9), "the same room on both nodes");
    let (missed, complete) = history(&mut back, 1, last_seen).await;
    assert!(complete);
    let missed: Vec<_> = missed.iter().map(|message| (message.seq, message.id.as_str())).collect();
    assert_eq!(missed, [(6, "m6"), (7, "m7"), (8, "m8"), (9, "m9")]);
    // A re-send on the other node is recognised: acked as the same message, not stored again.
    assert_eq!(post(&mut back, "m7").await, Answer::Acked { seq: 7, duplicate: true });
}

/// Sends 40 messages back to back without waiting for their answers, and kills Redis with
/// SIGKILL after the 15th is sent, while the relay is storing them; checks `/healthz` says 503,
/// starts Redis again, then re-sends every refused message until it is acked, as the app's
/// outbox does. Returns each id with the seq it was acked under, and how many sends were refused.
async fn stream_through_a_crash(
    client: &mut Client,
    redis: &mut RedisServer,
    relay: SocketAddr,
) -> (Vec<(String, u64)>, usize) {
    let ids: Vec<String> = (0..40).map(|n| format!("m{n}")).collect();
    for id in &ids[..15] {
        send_v1(client, &message(id, id)).await;
    }
    redis.kill().await;
    for id in &ids[15..] {
        send_v1(client, &message(id, id)).await;
    }
    let mut answers = std::collections::HashMap::new();
    while answers.len() < ids.len() {
        match next_v1(client).await {
            ServerFrame::Ack { id, seq, .. } => answers.insert(id, Some(seq)),
            ServerFrame::Error { error, id: Some(id), .. } => {
                assert_eq!(error.code, ErrorCode::Unavailable);
                answers.insert(id, None)
            }
            _ => continue,
        };
    }
    health_becomes(relay, 503).await;
    redis.restart().await;
    health_becomes(relay, 200).await;
    let mut refused = 0;
    let mut acked = Vec::new();
    for id in ids {
        let seq = match answers[&id] {
            Some(seq) => seq,
            None => {
                refused += 1;
                tokio::time::timeout(PATIENCE, async {
                    loop {
                        if let Answer::Acked { seq, .. } = post(client, &id).await {
                            return seq;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
                .await
                .expect("never acked after redis came back")
            }
        };
        acked.push((id, seq));
    }
    acked.sort_by_key(|(_, seq)| *seq);
    (acked, refused)
}

/// Redis killed with SIGKILL in the middle of a stream of messages, with `appendonly yes` and
/// `appendfsync always`, then started again: meanwhile sends are refused with `unavailable` and
/// `/healthz` answers 503; the refused ones are sent again and acked (one stored just before the
/// kill whose answer was lost would be acked as a duplicate under its seq); afterwards every acked
/// message is there exactly once, seqs 1 to 40 without a gap, in the same epoch, on the other
/// node too.
#[tokio::test]
async fn with_aof_always_a_redis_crash_loses_nothing_acked() {
    let Some(mut redis) = RedisServer::start(Persistence::Always).await else { return };
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut client = a.connect_v1().await;
    let (epoch, _) = welcome(&mut client).await;
    // Node B is up (it read the lobby from Redis) before the crash: it would not start without.
    welcome(&mut b.connect_v1().await).await;
    let (acked, refused) = stream_through_a_crash(&mut client, &mut redis, a.address).await;
    assert!(refused >= 25, "everything sent after the kill was refused ({refused})");
    let seqs: Vec<u64> = acked.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>(), "contiguous, each once");
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), close_code(&mut client)).await.is_err(),
        "the client stays: same epoch"
    );
    let mut check = b.connect_v1().await;
    let (epoch_after, latest) = welcome(&mut check).await;
    assert_eq!((epoch_after.as_str(), latest), (epoch.as_str(), 40));
    let (stored, complete) = history(&mut check, 1, 0).await;
    assert!(complete);
    let stored: Vec<_> = stored.into_iter().map(|message| (message.id, message.seq)).collect();
    assert_eq!(stored, acked);
}

/// With persistence off, a Redis restart loses the rooms: a new epoch starts, v1 clients are
/// closed with 1012 and are welcomed in the new epoch when they come back, numbering from 1.
#[tokio::test]
async fn without_persistence_a_redis_restart_starts_a_new_epoch() {
    let Some(mut redis) = RedisServer::start(Persistence::Off).await else { return };
    let a = node(&redis).await;
    let mut client = a.connect_v1().await;
    let (epoch, _) = welcome(&mut client).await;
    post_numbered(&mut client, 1..=3).await;
    redis.kill().await;
    redis.restart().await;
    assert_eq!(close_code(&mut client).await, Some(CloseCode::Restart));
    let mut again = a.connect_v1().await;
    let (new_epoch, latest) = welcome(&mut again).await;
    assert_ne!(new_epoch, epoch);
    assert_eq!(latest, 0);
    assert_eq!(post(&mut again, "m1").await, Answer::Acked { seq: 1, duplicate: false });
}

/// Redis stopped: `/healthz` answers 503, sends are refused with `unavailable` and nothing is
/// acked; Redis back: `/healthz` answers 200 and the same sends go through, after what was acked
/// before.
#[tokio::test]
async fn while_redis_is_down_sends_are_refused_and_go_through_after() {
    let Some(mut redis) = RedisServer::start(Persistence::Always).await else { return };
    let a = node(&redis).await;
    assert_eq!(status(a.address, "/healthz").await, 200);
    let mut client = a.connect_v1().await;
    welcome(&mut client).await;
    assert_eq!(post(&mut client, "before").await, Answer::Acked { seq: 1, duplicate: false });
    redis.kill().await;
    health_becomes(a.address, 503).await;
    assert_eq!(metric(&a, "wschat_redis_up").await, 0.0);
    for id in ["x1", "x2"] {
        assert_eq!(post(&mut client, id).await, Answer::Unavailable);
    }
    redis.restart().await;
    health_becomes(a.address, 200).await;
    assert_eq!(metric(&a, "wschat_redis_up").await, 1.0);
    for (id, seq) in [("x1", 2), ("x2", 3)] {
        assert_eq!(post(&mut client, id).await, Answer::Acked { seq, duplicate: false });
    }
    let (stored, _) = history(&mut client, 1, 0).await;
    let ids: Vec<_> = stored.iter().map(|message| message.id.as_str()).collect();
    assert_eq!(ids, ["before", "x1", "x2"]);
}

/// Redis goes back in time (as after a crash with `appendfsync everysec`, played here by setting
/// the room's seq back): the seqs clients saw would be given out again, so the relay ends that
/// epoch; v1 clients are closed with 1012 and come back to a new epoch, numbering from 1.
#[tokio::test]
async fn seqs_going_back_in_redis_end_the_epoch() {
    let Some(redis) = RedisServer::start(Persistence::Off).await else { return };
    let a = node(&redis).await;
    let mut client = a.connect_v1().await;
    let (epoch, _) = welcome(&mut client).await;
    post_numbered(&mut client, 1..=3).await;
    redis.command(&["SET", "wschat:{lobby}:seq", "1"]).await;
    assert_eq!(close_code(&mut client).await, Some(CloseCode::Restart));
    let mut again = a.connect_v1().await;
    let (new_epoch, latest) = welcome(&mut again).await;
    assert_ne!(new_epoch, epoch);
    assert_eq!(latest, 0);
}

/// Reads until a presence frame of the lobby lists exactly `names`.
async fn presence_becomes(client: &mut Client, names: &[&str]) {
    presence_in_becomes(client, LOBBY, names).await;
}

/// Reads until a presence frame of `room` lists exactly `names`.
async fn presence_in_becomes(client: &mut Client, room: &str, names: &[&str]) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let frame = next_v1_any(client).await;
            if let ServerFrame::Presence { room: of, names: got, count } = frame {
                if of == room && got == names && count == names.len() as u64 {
                    return;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("presence never became {names:?}"));
}

/// Node A as a process of its own (so that a test can kill it with SIGKILL) and node B in this
/// one, both on `redis`; Ada connected to A and Bob to B.
async fn ada_on_a_process_bob_on_a_node(
    redis: &RedisServer,
) -> (RelayProcess, TestRelay, Client, Client) {
    let url = redis.url();
    let a = RelayProcess::start(&[std::ffi::OsStr::new("--redis"), url.as_ref()]).await;
    let b = node(redis).await;
    let ada = connect_v1_to(a.address, "/ws?name=ada").await;
    let bob = connect_v1_to(b.address, "/ws?name=bob").await;
    (a, b, ada, bob)
}

/// Ada on node A (a process of its own) and Bob on node B, in the lobby: each sees both names
/// (within a couple of seconds); when node A is killed with SIGKILL, so that nobody tells, Bob
/// sees Ada gone within the names' expiry.
#[tokio::test]
async fn presence_spans_the_nodes_and_a_dead_node_s_members_go() {
    let Some(redis) = RedisServer::start(Persistence::Off).await else { return };
    let (a, _b, mut ada, mut bob) = ada_on_a_process_bob_on_a_node(&redis).await;
    presence_becomes(&mut ada, &["ada", "bob"]).await;
    presence_becomes(&mut bob, &["ada", "bob"]).await;
    a.kill().await;
    let killed = std::time::Instant::now();
    presence_becomes(&mut bob, &["bob"]).await;
    assert!(killed.elapsed() < Duration::from_secs(10), "gone within the expiry");
}

/// Ada on node A and Bob on node B in room "team": when Ada leaves it (and the room closes on
/// A, its last member gone), Bob sees her go at once, not after the names' expiry.
#[tokio::test]
async fn leaving_a_room_shows_on_the_other_node_at_once() {
    let Some(redis) = RedisServer::start(Persistence::Off).await else { return };
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut ada = connect_v1_to(a.address, "/ws?name=ada").await;
    let mut bob = connect_v1_to(b.address, "/ws?name=bob").await;
    for client in [&mut ada, &mut bob] {
        send_v1(client, &ClientFrame::Join { room: "team".into(), after: None }).await;
    }
    presence_in_becomes(&mut bob, "team", &["ada", "bob"]).await;
    send_v1(&mut ada, &ClientFrame::Leave { room: "team".into() }).await;
    let left = std::time::Instant::now();
    presence_in_becomes(&mut bob, "team", &["bob"]).await;
    assert!(left.elapsed() < Duration::from_secs(4), "before the expiry (5 s)");
}

/// An HAProxy of this test's own in front of `relays`: the sample `deploy/haproxy.cfg` (checks
/// on `/healthz`, a connection refused by a dead relay retried on another), with `balance first`
/// so that every client goes to the first relay while it is up (the test knows which one it is
/// on). `None` (SKIPPED) when `haproxy` is not installed.
struct LoadBalancer {
    address: SocketAddr,
    _dir: tempfile::TempDir,
    _child: Child,
}

impl LoadBalancer {
    async fn start(relays: &[SocketAddr]) -> Option<Self> {
        let binary = required("haproxy")?;
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/haproxy.cfg");
        let sample = std::fs::read_to_string(sample).unwrap();
        let config = haproxy::haproxy_config(&sample, port, relays, Some("first"));
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, config).unwrap();
        let child = Command::new(binary)
            .arg("-f")
            .arg(&file)
            .arg("-db")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        tokio::time::timeout(PATIENCE, async {
            while status_or_nothing(address).await != Some(200) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("haproxy did not start");
        Some(Self { address, _dir: dir, _child: child })
    }
}

/// `/healthz`'s status through `address`, or `None` when nothing answers there.
async fn status_or_nothing(address: SocketAddr) -> Option<u16> {
    let mut stream = TcpStream::connect(address).await.ok()?;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// A client reaches node A through HAProxy and reads five messages; node A is killed with
/// SIGKILL while five more are sent on node B; the client reconnects through HAProxy, lands on B
/// and resumes exactly: the five it missed, complete, none twice, none lost.
#[tokio::test]
async fn through_a_load_balancer_a_client_of_a_killed_node_resumes_on_another() {
    let Some(redis) = RedisServer::start(Persistence::Always).await else { return };
    let url = redis.url();
    let a = RelayProcess::start(&[std::ffi::OsStr::new("--redis"), url.as_ref()]).await;
    let b = node(&redis).await;
    let Some(balancer) = LoadBalancer::start(&[a.address, b.address]).await else { return };
    let mut client = connect_v1_at(balancer.address).await;
    let (epoch, _) = welcome(&mut client).await;
    let mut sender = b.connect_v1().await;
    welcome(&mut sender).await;
    post_numbered(&mut sender, 1..=5).await;
    let seen = messages(&mut client, 5).await;
    assert_eq!(seen.iter().map(|message| message.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    a.kill().await;
    let killed = std::time::Instant::now();
    post_numbered(&mut sender, 6..=10).await;
    assert_eq!(close_code(&mut client).await, None, "node A died without a word");
    let mut back = tokio::time::timeout(PATIENCE, async {
        loop {
            let url = format!("ws://{}/ws", balancer.address);
            let mut request =
                tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
                    .unwrap();
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                wschat_protocol::v1::SUBPROTOCOL.parse().unwrap(),
            );
            if let Ok((client, _)) = tokio_tungstenite::connect_async(request).await {
                return client;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("never reconnected through the load balancer");
    let (epoch_back, latest) = welcome(&mut back).await;
    assert_eq!((epoch_back.as_str(), latest), (epoch.as_str(), 10));
    let (missed, complete) = history(&mut back, 1, 5).await;
    let resumed_in = killed.elapsed();
    assert!(complete);
    let missed: Vec<_> = missed.iter().map(|message| (message.seq, message.id.as_str())).collect();
    assert_eq!(missed, [(6, "m6"), (7, "m7"), (8, "m8"), (9, "m9"), (10, "m10")]);
    eprintln!(
        "resumed on node B {} ms after node A was killed: 0 lost, 0 twice",
        resumed_in.as_millis()
    );
}

/// Three rooms opened on both nodes (one read of Redis per node serves them all): messages sent
/// on node B, interleaved across the rooms, reach each room's reader on node A in that room's
/// order, numbered from 1 in each, and nothing of the other rooms.
#[tokio::test]
async fn each_room_keeps_its_own_order_across_nodes() {
    let Some(redis) = RedisServer::start(Persistence::Off).await else { return };
    let (a, b) = (node(&redis).await, node(&redis).await);
    let rooms = ["red", "green", "blue"];
    let mut readers = Vec::new();
    for room in rooms {
        let mut reader = a.connect_v1().await;
        send_v1(&mut reader, &ClientFrame::Join { room: room.into(), after: None }).await;
        loop {
            if let ServerFrame::Joined { .. } = next_v1(&mut reader).await {
                break;
            }
        }
        readers.push(reader);
    }
    let mut sender = b.connect_v1().await;
    for room in rooms {
        send_v1(&mut sender, &ClientFrame::Join { room: room.into(), after: None }).await;
    }
    for n in 1..=5 {
        for room in rooms {
            let id = format!("{room}-{n}");
            let frame = ClientFrame::Message {
                room: room.into(),
                id: id.clone(),
                source: "bob".into(),
                content: id.clone(),
            };
            send_v1(&mut sender, &frame).await;
        }
    }
    for (room, reader) in rooms.iter().zip(&mut readers) {
        let mut got = Vec::new();
        while got.len() < 5 {
            if let ServerFrame::Message { room: of, message } = next_v1(reader).await {
                assert_eq!(of, *room, "only its own room's messages");
                got.push((message.seq, message.id));
            }
        }
        let expected: Vec<_> = (1..=5).map(|n| (n, format!("{room}-{n}"))).collect();
        assert_eq!(got, expected);
    }
}

/// Bob on node B starts typing in the lobby: Ada on node A is told, under Bob's name, within
/// moments.
#[tokio::test]
async fn typing_reaches_the_other_node() {
    let Some(redis) = RedisServer::start(Persistence::Off).await else { return };
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut ada = connect_v1_to(a.address, "/ws?name=ada").await;
    let mut bob = connect_v1_to(b.address, "/ws?name=bob").await;
    presence_becomes(&mut ada, &["ada", "bob"]).await;
    send_v1(&mut bob, &ClientFrame::Typing { room: LOBBY.into() }).await;
    let told = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let ServerFrame::Typing { room, name } = next_v1(&mut ada).await {
                return (room, name);
            }
        }
    })
    .await
    .expect("ada was never told that bob is typing");
    assert_eq!((told.0.as_str(), told.1.as_str()), (LOBBY, "bob"));
}

/// Reads until the answer to `rooms` (asked again every 200 ms) is exactly `expected`.
async fn directory_becomes(client: &mut Client, expected: &[(&str, u64)]) {
    let expected: Vec<RoomInfo> = expected
        .iter()
        .map(|(room, members)| RoomInfo { room: (*room).to_owned(), members: *members })
        .collect();
    let mut last = Vec::new();
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            send_v1(client, &ClientFrame::Rooms {}).await;
            loop {
                if let ServerFrame::Rooms { rooms } = next_v1_any(client).await {
                    last = rooms;
                    break;
                }
            }
            if last == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "the directory never became {expected:?}; last: {last:?}");
}

/// The room directory spans the nodes: a room open only on node A is listed to a client of node
/// B, members counted on both nodes; when node A is killed with SIGKILL, its rooms and members
/// leave B's directory within the expiry.
#[tokio::test]
async fn the_room_directory_spans_the_nodes() {
    let Some(redis) = RedisServer::start(Persistence::Off).await else { return };
    let (a, _b, mut ada, mut bob) = ada_on_a_process_bob_on_a_node(&redis).await;
    for room in ["only-a", "both"] {
        send_v1(&mut ada, &ClientFrame::Join { room: room.into(), after: None }).await;
    }
    send_v1(&mut bob, &ClientFrame::Join { room: "both".into(), after: None }).await;
    directory_becomes(&mut bob, &[("both", 2), (LOBBY, 2), ("only-a", 1)]).await;
    directory_becomes(&mut ada, &[("both", 2), (LOBBY, 2), ("only-a", 1)]).await;
    a.kill().await;
    let killed = std::time::Instant::now();
    directory_becomes(&mut bob, &[("both", 1), (LOBBY, 1)]).await;
    assert!(killed.elapsed() < Duration::from_secs(10), "gone within the expiry");
}
