//! Shared by the relay's integration tests: a relay on 127.0.0.1:0 and WebSocket clients.

#![allow(dead_code)] // Each test file uses its own subset.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wschat_protocol::rooms::LOBBY;
use wschat_protocol::v1::{ClientFrame, ServerFrame, StoredMessage, SUBPROTOCOL};
use wschat_protocol::{ChatMessage, RelayFrame};
use wschat_relay::{Config, RateLimit, RunError};

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Guards against a hang, never a performance assertion: far above anything a working relay needs.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A relay running in this process, stopped when `stop` is called or the test ends.
pub struct TestRelay {
    pub address: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), RunError>>,
}

impl TestRelay {
    pub async fn start(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(wschat_relay::run(listener, config, async move {
            // A dropped sender (test over) stops the relay too.
            let _ = stopped.await;
        }));
        Self { address, shutdown: Some(shutdown), task }
    }

    pub async fn connect(&self) -> Client {
        self.connect_to("/ws").await
    }

    /// Connects asking for the `wschat.v1` subprotocol.
    pub async fn connect_v1(&self) -> Client {
        connect_v1_at(self.address).await
    }

    pub async fn connect_to(&self, path: &str) -> Client {
        let url = format!("ws://{}{path}", self.address);
        let (client, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        client
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn stop(mut self) {
        self.shutdown.take().unwrap().send(()).unwrap();
        tokio::time::timeout(PATIENCE, &mut self.task).await.unwrap().unwrap().unwrap();
    }
}

pub fn chat(source: &str, content: &str) -> ChatMessage {
    ChatMessage { source: source.into(), content: content.into() }
}

pub async fn send(client: &mut Client, message: &ChatMessage) {
    client.send(Message::text(message.to_json())).await.unwrap();
}

/// The next text frame a client receives, skipping pings and pongs. (One deadline for the whole
/// wait: the relay's pings must not keep a test that misses a frame waiting forever.)
async fn next_text(client: &mut Client) -> String {
    let wait = async {
        loop {
            match client.next().await.unwrap().unwrap() {
                Message::Text(text) => return text.to_string(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait).await.expect("no text frame in time")
}

/// The next data frame a client receives, decoded.
pub async fn next_frame(client: &mut Client) -> RelayFrame {
    RelayFrame::from_json(&next_text(client).await).unwrap()
}

pub async fn next_chat(client: &mut Client) -> ChatMessage {
    match next_frame(client).await {
        RelayFrame::Chat(message) => message,
        other => panic!("expected a chat message, got {other:?}"),
    }
}

/// Reads until the relay closes the connection; returns the close code it sent, if any.
pub async fn close_code(client: &mut Client) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(PATIENCE, client.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => return frame.map(|frame| frame.code),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// Sends a v1 frame.
pub async fn send_v1(client: &mut Client, frame: &ClientFrame) {
    client.send(Message::text(frame.to_json())).await.unwrap();
}

/// The next v1 frame a client receives, decoded, presence frames skipped (tests about
/// anything else need not care who is in the room: `next_v1_any` keeps them).
pub async fn next_v1(client: &mut Client) -> ServerFrame {
    loop {
        match next_v1_any(client).await {
            ServerFrame::Presence { .. } => continue,
            frame => return frame,
        }
    }
}

/// The next v1 frame a client receives, decoded, whatever it is.
pub async fn next_v1_any(client: &mut Client) -> ServerFrame {
    ServerFrame::from_json(&next_text(client).await).unwrap()
}

/// Asks for the stored messages after `after_seq`; returns them and the answer's `complete`.
pub async fn history(
    client: &mut Client,
    request_id: u64,
    after_seq: u64,
) -> (Vec<StoredMessage>, bool) {
    send_v1(client, &ClientFrame::History { room: LOBBY.into(), request_id, after_seq }).await;
    match next_v1(client).await {
        ServerFrame::History { request_id: answered, messages, complete, .. } => {
            assert_eq!(answered, request_id);
            (messages, complete)
        }
        other => panic!("expected a history answer, got {other:?}"),
    }
}

/// A v1 message from "ada".
pub fn message(id: &str, content: &str) -> ClientFrame {
    ClientFrame::Message {
        room: LOBBY.into(),
        id: id.into(),
        source: "ada".into(),
        content: content.into(),
    }
}

pub async fn http_get(address: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut response)).await.unwrap().unwrap();
    response
}

/// No limit on messages per second worth speaking of: for tests about bursts, not about the rate.
pub fn unlimited() -> RateLimit {
    RateLimit { per_second: 1e6, burst: 1_000_000 }
}

/// The value of one series (`name{labels}`) on the relay's metrics page; 0 when it is absent.
pub async fn metric(relay: &TestRelay, series: &str) -> f64 {
    metric_at(relay.address, series).await
}

/// The value of one series on the metrics page of the relay at `address`; 0 when it is absent.
pub async fn metric_at(address: SocketAddr, series: &str) -> f64 {
    let response = http_get(address, "/metrics").await;
    response
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok()
        })
        .unwrap_or(0.0)
}

/// Waits until a counter reaches `at_least` and returns its value then: a disconnect is counted
/// when its connection's task ends, a moment after the client sees the socket close.
pub async fn metric_reaches(relay: &TestRelay, series: &str, at_least: f64) -> f64 {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let value = metric(relay, series).await;
            if value >= at_least {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{series} never reached {at_least}"))
}

/// The series counting clients evicted for not reading.
pub const SLOW_CONSUMERS: &str = r#"wschat_disconnects_total{kind="slow_consumer"}"#;

/// A WebSocket client written by hand on a plain TCP socket, for what a well-behaved client
/// library will not send (a frame header alone, a lie about a frame's length).
pub struct RawClient {
    pub stream: TcpStream,
}

impl RawClient {
    /// Opens a socket to `path` and completes the handshake (no subprotocol: tutorial mode).
    pub async fn connect(relay: &TestRelay, path: &str) -> Self {
        let mut stream = TcpStream::connect(relay.address).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            relay.address
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        // Byte by byte up to the blank line, so that nothing after the response is consumed.
        let mut response = Vec::new();
        while !response.ends_with(b"\r\n\r\n") {
            let byte = tokio::time::timeout(PATIENCE, stream.read_u8()).await.unwrap().unwrap();
            response.push(byte);
        }
        let response = String::from_utf8(response).unwrap();
        assert!(response.starts_with("HTTP/1.1 101"), "{response}");
        Self { stream }
    }

    /// Sends the header of a masked text frame whose payload is `length` bytes, and nothing else.
    pub async fn send_header(&mut self, length: u64) {
        let mut header = vec![0x81]; // FIN, text
        match length {
            0..=125 => header.push(0x80 | length as u8),
            126..=0xFFFF => {
                header.push(0x80 | 126);
                header.extend_from_slice(&(length as u16).to_be_bytes());
            }
            _ => {
                header.push(0x80 | 127);
                header.extend_from_slice(&length.to_be_bytes());
            }
        }
        header.extend_from_slice(&[0, 0, 0, 0]); // the mask: all zeros leaves the payload as is
        self.stream.write_all(&header).await.unwrap();
    }

    /// Reads frames until the relay's close frame and returns its code and reason; `None` if the
    /// socket ends without one.
    pub async fn close_frame(&mut self) -> Option<(u16, String)> {
        let reading = async {
            loop {
                let mut head = [0; 2];
                self.stream.read_exact(&mut head).await.ok()?;
                let length = match head[1] & 0x7F {
                    126 => u64::from(self.stream.read_u16().await.ok()?),
                    127 => self.stream.read_u64().await.ok()?,
                    short => u64::from(short),
                };
                let mut payload = vec![0; usize::try_from(length).unwrap()];
                self.stream.read_exact(&mut payload).await.ok()?;
                if head[0] & 0x0F == 0x8 {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    return Some((code, String::from_utf8_lossy(&payload[2..]).into_owned()));
                }
            }
        };
        tokio::time::timeout(PATIENCE, reading).await.expect("no close frame in time")
    }
}

impl RawClient {
    /// Sends a whole masked text frame holding `payload` (any bytes, UTF-8 or not).
    pub async fn send_text(&mut self, payload: &[u8]) {
        self.send_header(payload.len() as u64).await;
        self.stream.write_all(payload).await.unwrap();
    }
}

/// Asks for everything after `after_seq` as the app does: page after page while the answer says
/// `more`, each next one after the last seq of the one before. Returns every message, whether
/// the first answer was `complete`, and how many pages it took.
pub async fn history_in_pages(
    client: &mut Client,
    after_seq: u64,
) -> (Vec<StoredMessage>, bool, usize) {
    let (mut all, mut first_complete, mut pages) = (Vec::new(), None, 0);
    let mut after = after_seq;
    loop {
        pages += 1;
        let request_id = pages as u64;
        send_v1(client, &ClientFrame::History { room: LOBBY.into(), request_id, after_seq: after })
            .await;
        let (messages, complete, more) = history_answer(client, request_id).await;
        first_complete.get_or_insert(complete);
        if let Some(last) = messages.last() {
            after = last.seq;
        }
        all.extend(messages);
        if !more {
            return (all, first_complete.unwrap_or(true), pages);
        }
    }
}

/// The answer to history request `request_id`: its messages, `complete` and `more`. Live
/// messages and acks that come first are skipped.
async fn history_answer(client: &mut Client, request_id: u64) -> (Vec<StoredMessage>, bool, bool) {
    loop {
        match next_v1(client).await {
            ServerFrame::History { request_id: answered, messages, complete, more, .. }
                if answered == request_id =>
            {
                return (messages, complete, more)
            }
            ServerFrame::Message { .. } | ServerFrame::Ack { .. } => continue,
            other => panic!("expected a history answer, got {other:?}"),
        }
    }
}

/// Connects to the relay at `address` asking for the `wschat.v1` subprotocol.
pub async fn connect_v1_at(address: SocketAddr) -> Client {
    connect_v1_to(address, "/ws").await
}

/// Connects to `path` (with its query, e.g. `/ws?name=ada`) of the relay at `address`, asking for
/// the `wschat.v1` subprotocol.
pub async fn connect_v1_to(address: SocketAddr, path: &str) -> Client {
    let mut request = format!("ws://{address}{path}").into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", SUBPROTOCOL.parse().unwrap());
    let (client, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["Sec-WebSocket-Protocol"], SUBPROTOCOL);
    client
}

/// The `wschat-relay` command running in a process of its own, for what only a process can
/// suffer: SIGKILL, or limits set on it from outside.
pub struct RelayProcess {
    pub child: tokio::process::Child,
    pub address: SocketAddr,
    /// What it logged, for a failing test to show.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl RelayProcess {
    /// Starts the command on a free port with `args`, and waits until it listens. SIGXFSZ is
    /// ignored (through the shell that starts it), so that a file-size limit set on it later
    /// makes its writes fail with EFBIG, as a full disk makes them fail, rather than killing it.
    pub async fn start(args: &[&std::ffi::OsStr]) -> Self {
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg("trap '' XFSZ; exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_wschat-relay"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "wschat_relay=info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // Its log, from whichever stream it writes to.
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (lines, mut logged) = tokio::sync::mpsc::unbounded_channel::<String>();
        forward_lines(child.stdout.take().unwrap(), lines.clone(), std::sync::Arc::clone(&log));
        forward_lines(child.stderr.take().unwrap(), lines.clone(), std::sync::Arc::clone(&log));
        drop(lines);
        let address = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = logged.recv().await {
                if !line.contains("listening") {
                    continue;
                }
                if let Some(rest) = line.split(" address=").nth(1) {
                    return rest.split_whitespace().next().unwrap().parse().unwrap();
                }
            }
            panic!("the relay exited before listening: {:?}", log.lock().unwrap());
        })
        .await
        .unwrap_or_else(|_| panic!("not listening in time: {:?}", log.lock().unwrap()));
        Self { child, address, log }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id().expect("still running")).unwrap()
    }

    pub async fn connect_v1(&self) -> Client {
        connect_v1_at(self.address).await
    }

    /// SIGKILL: the process ends at once, without closing anything.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        tokio::time::timeout(PATIENCE, self.child.wait()).await.unwrap().unwrap();
    }

    /// What it logged so far.
    pub fn logged(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// Reads `stream` line by line into `log` and `lines`, until it ends.
fn forward_lines(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    lines: tokio::sync::mpsc::UnboundedSender<String>,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::AsyncBufReadExt;
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(stream).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            log.lock().unwrap().push(line.clone());
            // Nobody listens once the relay is up: the log keeps it.
            let _ = lines.send(line);
        }
    });
}
