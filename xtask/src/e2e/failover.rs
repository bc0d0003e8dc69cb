//! The failover scenario: two relays on one Redis behind HAProxy (the sample
//! `deploy/haproxy.cfg`), each serving the release build; two tabs open the page through HAProxy
//! while a stream of messages goes on, the relay tab A is connected to is killed with SIGKILL in
//! the middle of it, and the page comes back through HAProxy on the other relay and resumes
//! exactly. Prints how long that took.
//!
//! The stream comes from a plain v1 client (the feeder) connected straight to the relay that
//! stays up: it sees every message of the lobby with its seq, which gives the order both tabs
//! must show.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use fantoccini::Client;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use wschat_protocol::v1::{ClientFrame, ServerFrame, LOBBY, SUBPROTOCOL};

use super::{list, poll, type_and_send, wait_for_states, wait_for_status, Browser};
use crate::nodes::{self, LoadBalancer, RedisServer};
use crate::process::{self, Background};

/// Messages the feeder sends, one every [`STREAM_INTERVAL`] (25 a second).
const STREAM: usize = 100;
const STREAM_INTERVAL: Duration = Duration::from_millis(40);
/// Tab A's relay is killed once this many of the stream's messages are acked.
const KILL_AFTER: usize = 30;
/// What tab A types right after its relay was killed, while it cannot be delivered.
const TYPED_WHILE_DOWN: [&str; 3] = [
    "A: typed while its relay was down (1)",
    "A: typed while its relay was down (2)",
    "A: typed while its relay was down (3)",
];

/// Redis, two relays on it serving the app, HAProxy in front; everything is killed when dropped.
struct Cluster {
    balancer: LoadBalancer,
    /// The relays; `None` once killed.
    nodes: Vec<Option<Background>>,
    ports: Vec<u16>,
    _redis: RedisServer,
}

impl Cluster {
    /// `Ok(None)` when `redis-server` or `haproxy` is not installed and not required.
    fn start(dist: &Path) -> anyhow::Result<Option<Self>> {
        let Some(redis) = RedisServer::start()? else { return Ok(None) };
        let mut nodes = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..2 {
            let port = process::free_port()?;
            let args: Vec<OsString> = vec![
                "--static".into(),
                dist.into(),
                "--redis".into(),
                redis.url().into(),
                // The feeder streams faster than one person types (the default 10/s).
                "--rate".into(),
                "100".into(),
                "--burst".into(),
                "100".into(),
            ];
            nodes.push(Some(process::start_relay(port, &args)?));
            ports.push(port);
        }
        let relays: Vec<SocketAddr> =
            ports.iter().map(|port| (Ipv4Addr::LOCALHOST, *port).into()).collect();
        let Some(balancer) = LoadBalancer::start(&relays)? else { return Ok(None) };
        Ok(Some(Self { balancer, nodes, ports, _redis: redis }))
    }

    fn app_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.balancer.port)
    }

    /// The sockets open on each relay now (0 on a killed one).
    fn sockets(&self) -> anyhow::Result<Vec<u64>> {
        self.nodes
            .iter()
            .zip(&self.ports)
            .map(|(node, port)| match node {
                Some(_) => nodes::open_sockets(*port),
                None => Ok(0),
            })
            .collect()
    }

    /// Waits until the relays hold `total` sockets in all and `before` has grown on exactly one
    /// of them; returns that relay's index: where the tab that just connected is.
    async fn node_of_new_socket(&self, before: &[u64], total: u64) -> anyhow::Result<usize> {
        let read = || async { self.sockets() };
        let now = poll(&format!("{total} sockets on the relays"), read, |counts| {
            counts.iter().sum::<u64>() == total
        })
        .await?;
        let grown: Vec<usize> = (0..now.len()).filter(|&node| now[node] > before[node]).collect();
        match grown.as_slice() {
            [node] => Ok(*node),
            _ => bail!("cannot tell where the new tab connected: {before:?} → {now:?} sockets"),
        }
    }

    /// SIGKILL (dropping a [`Background`] sends it): the relay ends at once, saying nothing to
    /// its clients or to HAProxy.
    fn kill(&mut self, node: usize) {
        self.nodes[node] = None;
    }
}

/// Runs the scenario in a fresh session of `browser`.
///
/// # Errors
/// What the user would have seen go wrong.
pub(super) async fn run(browser: Browser, dist: &Path) -> anyhow::Result<()> {
    let Some(mut cluster) = Cluster::start(dist)? else {
        println!(
            "SKIPPED: redis-server or haproxy not found (apt-get install redis-server haproxy)"
        );
        return Ok(());
    };
    let (driver, client) = browser.open_session().await?;
    let outcome = failover(browser, &client, &mut cluster).await;
    client.close().await.context("cannot end the WebDriver session")?;
    drop(driver);
    outcome
}

async fn failover(browser: Browser, client: &Client, cluster: &mut Cluster) -> anyhow::Result<()> {
    let app = cluster.app_url();
    client.goto(&app).await?;
    let a = client.window().await?;
    wait_for_status(client, "connected").await.context("tab A")?;
    watch_the_page(client).await?;
    let node_a = cluster.node_of_new_socket(&[0, 0], 1).await.context("tab A")?;

    let before = cluster.sockets()?;
    let b = client.new_window(true).await?.handle;
    client.switch_to_window(b.clone()).await?;
    client.goto(&app).await?;
    wait_for_status(client, "connected").await.context("tab B")?;
    let node_b = cluster.node_of_new_socket(&before, 2).await.context("tab B")?;

    client.switch_to_window(a.clone()).await?;
    let visibility: String =
        serde_json::from_value(client.execute("return document.visibilityState;", vec![]).await?)?;
    // The stream starts before tab A writes: the feeder sees every message of the lobby.
    let feeder = Feeder::start(cluster.ports[1 - node_a]).await?;
    let before_the_kill = "A: before the kill";
    type_and_send(client, before_the_kill).await?;
    wait_for_states(client, &["delivered"]).await.context("tab A before the kill")?;
    let acked = || async { Ok(feeder.acked()) };
    poll(&format!("{KILL_AFTER} streamed messages acked"), acked, |count| *count >= KILL_AFTER)
        .await?;
    let killed_at = now_ms();
    cluster.kill(node_a);
    let acked_at_the_kill = feeder.acked();
    for text in TYPED_WHILE_DOWN {
        type_and_send(client, text).await?;
    }
    let back = poll(
        "tab A connected again after its relay was killed",
        || page_log(client),
        |log| resumed(log, killed_at).is_some(),
    )
    .await?;
    let (lost_at, back_at) = resumed(&back, killed_at).context("checked by the poll")?;

    poll(&format!("all {STREAM} streamed messages acked"), acked, |count| *count >= STREAM).await?;
    let everything_typed = ["delivered"; TYPED_WHILE_DOWN.len() + 1];
    wait_for_states(client, &everything_typed).await.context("tab A, everything it typed")?;
    client.switch_to_window(b.clone()).await?;
    let after_the_failover = "B: after the failover";
    type_and_send(client, after_the_failover).await?;
    wait_for_states(client, &["delivered"]).await.context("tab B")?;

    let total = STREAM + TYPED_WHILE_DOWN.len() + 2;
    let seen = || async { Ok(feeder.seen()) };
    poll(&format!("the feeder to see all {total} messages"), seen, |seen| *seen >= total).await?;
    let state = feeder.stop().await?;
    let conversation = &state.conversation;
    let seqs: Vec<u64> = conversation.keys().copied().collect();
    if seqs != (1..=total as u64).collect::<Vec<_>>() {
        bail!("the lobby's seqs are not 1 to {total} once each: {seqs:?}");
    }
    let typed_by_a: HashSet<&str> = [before_the_kill].into_iter().chain(TYPED_WHILE_DOWN).collect();
    let expected_a = conversation_without(conversation, |content| typed_by_a.contains(content));
    let expected_b = conversation_without(conversation, |content| content == after_the_failover);

    let tally_b = expect_conversation(client, &expected_b).await.context("tab B")?;
    client.switch_to_window(a).await?;
    let tally_a = expect_conversation(client, &expected_a).await.context("tab A")?;

    let log = page_log(client).await?;
    // What was stored before tab A was back (the stream's acks say when), which tab A lists once
    // it has caught up.
    let last_stored = state.stored_by(back_at);
    let caught_up = conversation
        .range(..=last_stored)
        .filter(|(_, (_, content))| !typed_by_a.contains(content.as_str()))
        .count();
    let listed_at = log
        .iter()
        .find(|entry| entry.at >= back_at && entry.received >= caught_up)
        .map(|entry| entry.at)
        .context("tab A never listed what was stored before it came back")?;
    let last_before = |at: u64| log.iter().take_while(|entry| entry.at < at).last();
    // What the page listed before it was back (messages that were on their way when the relay
    // died may be listed after the loss was noticed) and had typed after the kill.
    let listed_when_back = last_before(back_at).map_or(0, |entry| entry.received);
    let typed_while_away = last_before(back_at).map_or(0, |entry| entry.sent).saturating_sub(1);
    let tab_b = if node_b == node_a { "on it too, came back too" } else { "on the other" };
    println!(
        "failover, {}: tab A ({visibility}) on relay {} (tab B {tab_b}), killed with SIGKILL after \
         {acked_at_the_kill} of {STREAM} streamed messages; tab A noticed after {} ms, was connected \
         again through HAProxy after {} ms, and listed the {} messages it had missed after {} ms; \
         {total} messages in all: tab A {tally_a}, tab B {tally_b}; the {} messages tab A typed \
         after the kill ({typed_while_away} of them before it was back) delivered once each",
        browser.name(),
        node_a + 1,
        lost_at - killed_at,
        back_at - killed_at,
        caught_up.saturating_sub(listed_when_back),
        listed_at - killed_at,
        TYPED_WHILE_DOWN.len(),
    );
    Ok(())
}

/// Milliseconds since the Unix epoch, as the page's `Date.now()` counts them.
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

/// Starts recording, in the page, each change of its connection status and of the lengths of its
/// received and sent lists, with the time (`Date.now()`): what the page showed when, without racing the
/// WebDriver calls that read it.
async fn watch_the_page(client: &Client) -> anyhow::Result<()> {
    let script = "
        const status = () =>
            document.querySelector('[data-testid=connection-status]')?.textContent ?? '';
        const count = (list) =>
            document.querySelectorAll(`[data-testid=${list}] > li`).length;
        const shown = () => [status(), count('received-list'), count('sent-list')];
        const log = window.wschatFailoverLog = [[Date.now(), ...shown()]];
        new MutationObserver(() => {
            const last = log[log.length - 1];
            const now = [Date.now(), ...shown()];
            if (now.slice(1).some((value, n) => value !== last[n + 1])) log.push(now);
        }).observe(document.body, { subtree: true, childList: true, characterData: true });";
    client.execute(script, vec![]).await?;
    Ok(())
}

/// One change the page recorded (see [`watch_the_page`]).
#[derive(Debug)]
struct Shown {
    /// `Date.now()` when it changed.
    at: u64,
    status: String,
    /// Entries in the received list.
    received: usize,
    /// Entries in the sent list.
    sent: usize,
}

async fn page_log(client: &Client) -> anyhow::Result<Vec<Shown>> {
    let log = client.execute("return window.wschatFailoverLog;", vec![]).await?;
    let log: Vec<(u64, String, usize, usize)> = serde_json::from_value(log)?;
    let shown =
        log.into_iter().map(|(at, status, received, sent)| Shown { at, status, received, sent });
    Ok(shown.collect())
}

/// When the page, after `killed_at`, first showed another status than connected, and when it
/// showed connected again after that.
fn resumed(log: &[Shown], killed_at: u64) -> Option<(u64, u64)> {
    let after = log.iter().filter(|entry| entry.at >= killed_at);
    let lost = after.clone().find(|entry| entry.status != "connected")?;
    let back =
        after.filter(|entry| entry.at >= lost.at).find(|entry| entry.status == "connected")?;
    Some((lost.at, back.at))
}

/// The lobby's messages as `(source, content)` in seq order, leaving out what `own` says a tab
/// wrote (its sent list shows those, not its received list).
fn conversation_without(
    conversation: &BTreeMap<u64, (String, String)>,
    own: impl Fn(&str) -> bool,
) -> Vec<(String, String)> {
    conversation.values().filter(|(_, content)| !own(content)).cloned().collect()
}

/// How a received list compares with the conversation.
struct Tally {
    shown: usize,
    lost: usize,
    duplicated: usize,
    in_order: bool,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let order = if self.in_order { "in order" } else { "OUT OF ORDER" };
        write!(
            f,
            "{} listed, {} lost, {} duplicated, {order}",
            self.shown, self.lost, self.duplicated
        )
    }
}

/// Waits until the selected tab's received list is as long as `expected`, then compares them.
///
/// # Errors
/// Unless the list is exactly `expected`: each message once, in the conversation's order.
async fn expect_conversation(
    client: &Client,
    expected: &[(String, String)],
) -> anyhow::Result<Tally> {
    let read = || list(client, "received-list");
    let wanted = format!("{} received messages", expected.len());
    // A shorter list after the wait is counted below as what it lost.
    let shown = match poll(&wanted, read, |rows| rows.len() >= expected.len()).await {
        Ok(rows) => rows,
        Err(_) => list(client, "received-list").await?,
    };
    let unique: HashSet<&(String, String)> = shown.iter().collect();
    let tally = Tally {
        shown: shown.len(),
        lost: expected.iter().filter(|row| !unique.contains(row)).count(),
        duplicated: shown.len() - unique.len(),
        in_order: shown == expected,
    };
    if tally.lost > 0 || tally.duplicated > 0 || !tally.in_order {
        bail!("the received list shows {tally}: {shown:?}, expected {expected:?}");
    }
    Ok(tally)
}

/// What the feeder knows: the lobby's messages by seq (its own from their acks, the tabs' as
/// they arrive), and when each of its own was acked.
#[derive(Debug, Default)]
struct FeedState {
    conversation: BTreeMap<u64, (String, String)>,
    /// `(seq, now_ms())` of each ack, in the order they came.
    acks: Vec<(u64, u64)>,
}

impl FeedState {
    /// The highest seq of the stream acked by `at` (ms since the epoch): stored by then.
    fn stored_by(&self, at: u64) -> u64 {
        self.acks.iter().filter(|(_, acked)| *acked <= at).map(|(seq, _)| *seq).max().unwrap_or(0)
    }
}

/// A plain v1 client straight on one relay, posting [`STREAM`] messages at a steady pace and
/// noting every message of the lobby.
struct Feeder {
    state: Arc<Mutex<FeedState>>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Feeder {
    async fn start(port: u16) -> anyhow::Result<Self> {
        let url = format!("ws://127.0.0.1:{port}/ws?name=feeder");
        let mut request = url.into_client_request()?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", SUBPROTOCOL.parse()?);
        let (mut socket, _) =
            tokio_tungstenite::connect_async(request).await.context("the feeder cannot connect")?;
        let state = Arc::new(Mutex::new(FeedState::default()));
        let (stop, mut stopped) = oneshot::channel();
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(STREAM_INTERVAL);
            let mut contents = HashMap::new();
            let mut next = 1;
            loop {
                tokio::select! {
                    _ = &mut stopped => {
                        socket.close(None).await?;
                        return Ok(());
                    }
                    _ = ticker.tick(), if next <= STREAM => {
                        let id = format!("stream-{next}");
                        let content = format!("streamed message {next} of {STREAM}");
                        let frame = ClientFrame::Message {
                            room: LOBBY.to_owned(),
                            id: id.clone(),
                            source: "feeder".to_owned(),
                            content: content.clone(),
                        };
                        socket.send(Message::text(frame.to_json())).await?;
                        contents.insert(id, content);
                        next += 1;
                    }
                    frame = socket.next() => {
                        let text = match frame {
                            Some(Ok(Message::Text(text))) => text,
                            Some(Ok(Message::Close(_))) | None => {
                                bail!("the relay that stayed up closed the feeder's socket")
                            }
                            Some(Ok(_)) => continue,
                            Some(Err(error)) => return Err(error.into()),
                        };
                        let mut state = shared.lock().unwrap_or_else(PoisonError::into_inner);
                        match ServerFrame::from_json(&text)? {
                            ServerFrame::Ack { id, seq, .. } => {
                                let content = contents.get(&id).cloned().unwrap_or_default();
                                state.conversation.insert(seq, ("feeder".to_owned(), content));
                                state.acks.push((seq, now_ms()));
                            }
                            ServerFrame::Message { message, .. } => {
                                let row = (message.source, message.content);
                                state.conversation.insert(message.seq, row);
                            }
                            ServerFrame::Error { error, .. } => {
                                bail!("the feeder's message was refused: {}", error.message)
                            }
                            _ => {}
                        }
                    }
                }
            }
        });
        Ok(Self { state, stop, task })
    }

    fn acked(&self) -> usize {
        self.lock().acks.len()
    }

    fn seen(&self) -> usize {
        self.lock().conversation.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops it; returns what it saw.
    ///
    /// # Errors
    /// When it failed on the way (its relay closed it, a message was refused).
    async fn stop(self) -> anyhow::Result<FeedState> {
        // The task may have ended already (with the error returned below).
        let _ = self.stop.send(());
        self.task.await??;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(std::mem::take(&mut *state))
    }
}
