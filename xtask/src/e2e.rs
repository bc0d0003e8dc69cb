//! End-to-end scenarios: the release build, served by the real relay, driven in real browsers
//! through WebDriver (chromedriver for Chromium, geckodriver for Firefox). `failover` holds the
//! one with two relays on Redis behind HAProxy.

mod failover;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::wd::WindowHandle;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

use crate::process::{self, Background};

/// Debian's chromedriver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The geckodriver that `cargo install` put on PATH.
///
/// # Errors
/// When it is not installed.
pub fn geckodriver() -> anyhow::Result<PathBuf> {
    let path = process::output_of(Command::new("sh").args(["-c", "command -v geckodriver"]))
        .context("geckodriver is not installed: run `cargo xtask setup --browsers`")?;
    Ok(PathBuf::from(path.trim()))
}

/// A browser the tests drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Browser {
    Chromium,
    Firefox,
}

impl Browser {
    pub const ALL: [Self; 2] = [Self::Chromium, Self::Firefox];

    pub fn name(self) -> &'static str {
        match self {
            Self::Chromium => "Chromium",
            Self::Firefox => "Firefox",
        }
    }

    /// Starts this browser's WebDriver server on a free port; returns it and its URL.
    pub(crate) fn start_driver(self) -> anyhow::Result<(Background, String)> {
        let port = process::free_port()?;
        let mut command = match self {
            Self::Chromium => {
                let mut command = Command::new(CHROMEDRIVER);
                command.arg(format!("--port={port}"));
                command
            }
            Self::Firefox => {
                let mut command = Command::new(geckodriver()?);
                command.args(["--port", &port.to_string(), "--log", "error"]);
                command
            }
        };
        command.stdout(std::process::Stdio::null());
        let mut driver = Background::spawn(&format!("{} WebDriver", self.name()), &mut command)?;
        process::wait_for_port(port, &mut driver)?;
        Ok((driver, format!("http://127.0.0.1:{port}")))
    }

    /// Starts this browser's WebDriver server and opens a session on it. Close the session
    /// before dropping the server, else the browser outlives it.
    async fn open_session(self) -> anyhow::Result<(Background, Client)> {
        self.open_session_with(self.capabilities()?).await
    }

    /// Like [`Browser::open_session`], with these capabilities.
    async fn open_session_with(
        self,
        capabilities: serde_json::Map<String, Value>,
    ) -> anyhow::Result<(Background, Client)> {
        let (driver, webdriver) = self.start_driver()?;
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&webdriver)
            .await
            .with_context(|| format!("cannot open a {} session", self.name()))?;
        Ok((driver, client))
    }

    /// The capabilities of `webdriver.json` (shared with the wasm-bindgen tests), made headless.
    pub(crate) fn capabilities(self) -> anyhow::Result<serde_json::Map<String, Value>> {
        let text =
            std::fs::read_to_string("webdriver.json").context("cannot read webdriver.json")?;
        let Value::Object(mut capabilities) = serde_json::from_str(&text)? else {
            bail!("webdriver.json must hold an object");
        };
        let (key, headless) = match self {
            Self::Chromium => (
                "goog:chromeOptions",
                json!(["--headless=new", "--no-sandbox", "--window-size=1200,900"]),
            ),
            Self::Firefox => {
                ("moz:firefoxOptions", json!(["-headless", "-width=1200", "-height=900"]))
            }
        };
        let options = capabilities
            .get_mut(key)
            .and_then(Value::as_object_mut)
            .with_context(|| format!("webdriver.json has no {key}"))?;
        let args = options.entry("args").or_insert_with(|| json!([]));
        if let (Some(args), Some(headless)) = (args.as_array_mut(), headless.as_array()) {
            args.extend(headless.iter().cloned());
        }
        // Only this browser's options: chromedriver refuses a session that names Firefox's.
        let options = capabilities.remove(key).expect("checked above");
        let mut only = serde_json::Map::new();
        only.insert(key.to_owned(), options);
        Ok(only)
    }
}

/// The relay serving the release build, a WebDriver server, and a session, for one scenario.
pub(crate) struct Session {
    pub(crate) client: Client,
    pub(crate) app_url: String,
    port: u16,
    dist: PathBuf,
    /// Extra flags for the relay (e.g. `--data-dir`).
    relay_args: Vec<String>,
    relay: Option<Background>,
    _driver: Background,
}

impl Session {
    pub(crate) async fn start(browser: Browser, dist: &Path) -> anyhow::Result<Self> {
        Self::start_with(browser, dist, Vec::new()).await
    }

    /// Like [`Session::start`], with extra flags for the relay.
    pub(crate) async fn start_with(
        browser: Browser,
        dist: &Path,
        relay_args: Vec<String>,
    ) -> anyhow::Result<Self> {
        Self::start_with_capabilities(browser, dist, relay_args, browser.capabilities()?).await
    }

    /// Like [`Session::start_with`], with these browser capabilities (see
    /// [`Browser::capabilities`]).
    pub(crate) async fn start_with_capabilities(
        browser: Browser,
        dist: &Path,
        relay_args: Vec<String>,
        capabilities: serde_json::Map<String, Value>,
    ) -> anyhow::Result<Self> {
        let port = process::free_port()?;
        let (driver, client) = browser.open_session_with(capabilities).await?;
        let mut session = Self {
            client,
            app_url: format!("http://127.0.0.1:{port}/"),
            port,
            dist: dist.to_owned(),
            relay_args,
            relay: None,
            _driver: driver,
        };
        session.start_relay()?;
        Ok(session)
    }

    /// Starts the relay (again) on the session's port.
    pub(crate) fn start_relay(&mut self) -> anyhow::Result<()> {
        let mut args: Vec<&std::ffi::OsStr> = vec!["--static".as_ref(), self.dist.as_os_str()];
        args.extend(self.relay_args.iter().map(std::ffi::OsStr::new));
        self.relay = Some(process::start_relay(self.port, &args)?);
        Ok(())
    }

    /// Kills the relay, as a crash or a deployment would; its in-memory history goes with it.
    pub(crate) fn stop_relay(&mut self) {
        self.relay = None;
    }

    /// Ends the WebDriver session (else the browser outlives the driver), then everything else.
    pub(crate) async fn close(self) -> anyhow::Result<()> {
        self.client.close().await.context("cannot end the WebDriver session")
    }
}

/// What the end-to-end tests check, each in a fresh session of each browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Type in tab A and click Send: A's sent list and B's received list show it; B answers with
    /// Enter and A receives that.
    TwoTabsChat,
    /// Tab A sends while the relay is down; the relay restarts; B receives the message once.
    SendWhileTheRelayIsDown,
    /// Tab B disconnects while A sends 20 messages; when B reconnects it shows all 20, once, in
    /// order.
    ACutOffTabCatchesUp,
    /// Tab A is reloaded while its messages wait for the relay; none is lost.
    ReloadWithPendingMessages,
    /// Markup sent by tab B (an XSS attempt) shows as text in tab A and runs nothing.
    MarkupShowsAsText,
    /// With `--jwt-secret`, a page opened with a token that expires a few seconds later chats,
    /// is closed by the relay when the token expires, and then stops retrying (the same token
    /// would get 401 forever) and asks for a new token.
    AnExpiredTokenAsksForANewOne,
    /// A link `/?room=NAME` opens that room with its history; switching rooms keeps the
    /// address in step.
    ARoomLinkOpensTheRoom,
    /// With `--jwt-secret`, a token whose `rooms` claim does not cover a room is refused it: the
    /// page says so and stays in the lobby.
    ARoomTheTokenDoesNotAllowIsRefused,
    /// Two relays on one Redis behind HAProxy: the relay the page is on is killed with SIGKILL
    /// in the middle of a stream of messages; the page reconnects through HAProxy to the other
    /// and resumes exactly (every message once, in order), and what was typed meanwhile is
    /// delivered.
    FailoverThroughALoadBalancer,
}

impl Scenario {
    pub const ALL: [Self; 9] = [
        Self::TwoTabsChat,
        Self::SendWhileTheRelayIsDown,
        Self::ACutOffTabCatchesUp,
        Self::ReloadWithPendingMessages,
        Self::MarkupShowsAsText,
        Self::AnExpiredTokenAsksForANewOne,
        Self::ARoomLinkOpensTheRoom,
        Self::ARoomTheTokenDoesNotAllowIsRefused,
        Self::FailoverThroughALoadBalancer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::TwoTabsChat => "two tabs chat",
            Self::SendWhileTheRelayIsDown => "a message sent while the relay is down arrives once",
            Self::ACutOffTabCatchesUp => "a cut-off tab catches up on 20 messages",
            Self::ReloadWithPendingMessages => "a reload loses no pending message",
            Self::MarkupShowsAsText => "an XSS payload shows as text and runs nothing",
            Self::AnExpiredTokenAsksForANewOne => {
                "an expired token stops the retries and asks for a new one"
            }
            Self::ARoomLinkOpensTheRoom => "a room link opens the room with its history",
            Self::ARoomTheTokenDoesNotAllowIsRefused => {
                "a room the token does not allow is refused and the page says so"
            }
            Self::FailoverThroughALoadBalancer => {
                "a page on a relay killed with SIGKILL resumes exactly on another through HAProxy"
            }
        }
    }

    /// Runs the scenario in a fresh session of `browser` against the release build in `dist`.
    ///
    /// # Errors
    /// What the user would have seen go wrong.
    pub fn run(self, browser: Browser, dist: &Path) -> anyhow::Result<()> {
        if self == Self::FailoverThroughALoadBalancer {
            // Its own relays, on Redis, behind HAProxy.
            return block_on(failover::run(browser, dist));
        }
        block_on(async {
            let relay_args = match self {
                Self::AnExpiredTokenAsksForANewOne | Self::ARoomTheTokenDoesNotAllowIsRefused => {
                    vec!["--jwt-secret".to_owned(), TOKEN_SECRET.to_owned()]
                }
                _ => Vec::new(),
            };
            let mut session = Session::start_with(browser, dist, relay_args).await?;
            let outcome = match self {
                Self::TwoTabsChat => chat_between_two_tabs(&session).await,
                Self::SendWhileTheRelayIsDown => send_while_the_relay_is_down(&mut session).await,
                Self::ACutOffTabCatchesUp => a_cut_off_tab_catches_up(&session).await,
                Self::ReloadWithPendingMessages => reload_with_pending_messages(&session).await,
                Self::MarkupShowsAsText => markup_shows_as_text(&session).await,
                Self::AnExpiredTokenAsksForANewOne => an_expired_token(&session).await,
                Self::ARoomLinkOpensTheRoom => a_room_link(&session).await,
                Self::ARoomTheTokenDoesNotAllowIsRefused => a_forbidden_room(&session).await,
                Self::FailoverThroughALoadBalancer => unreachable!("run on its own above"),
            };
            session.close().await?;
            outcome
        })
    }
}

/// `trunk serve` (a debug build, on a free port) with a relay on another free port: the page
/// connects to the relay and two tabs chat, as under `cargo xtask dev`.
///
/// # Errors
/// What the user would have seen go wrong.
pub fn dev_server(browser: Browser) -> anyhow::Result<()> {
    let relay_port = process::free_port()?;
    let page_port = process::free_port()?;
    let page = format!("http://127.0.0.1:{page_port}");
    let _relay = process::start_relay(relay_port, &["--allow-origin", &page])?;
    let mut trunk = Background::spawn(
        "trunk serve",
        Command::new("trunk")
            .args(["serve", "--port", &page_port.to_string(), "--no-autoreload", "--dist"])
            .arg(process::workspace_root().join("target/dev-dist"))
            .env("TRUNK_SKIP_VERSION_CHECK", "true")
            // What a debug build connects to (.cargo/config.toml sets the default, port 5000).
            .env("WSCHAT_DEV_RELAY", format!("ws://127.0.0.1:{relay_port}/ws"))
            .stdout(std::process::Stdio::null()),
    )?;
    // The first debug build of the app can take a while on a cold machine.
    process::wait_for_port_within(page_port, &mut trunk, Duration::from_secs(600))?;
    block_on(async {
        let (driver, client) = browser.open_session().await?;
        let outcome = async {
            client.goto(&format!("{page}/")).await?;
            wait_for_status(&client, "connected").await.context("tab A under trunk serve")?;
            let name_a = display_name(&client).await?;
            let tab_b = client.new_window(true).await?.handle;
            client.switch_to_window(tab_b).await?;
            client.goto(&format!("{page}/")).await?;
            wait_for_status(&client, "connected").await.context("tab B under trunk serve")?;
            let tab_a = client.windows().await?.into_iter().next().context("tab A is gone")?;
            client.switch_to_window(tab_a).await?;
            type_and_send(&client, "through the dev server").await?;
            let tab_b = client.windows().await?.pop().context("tab B is gone")?;
            client.switch_to_window(tab_b).await?;
            expect_list(&client, "received-list", &[(&name_a, "through the dev server")]).await
        }
        .await;
        client.close().await.context("cannot end the WebDriver session")?;
        drop(driver);
        outcome
    })
}

/// The same chat in Chromium, then a screenshot of tab B for the README.
///
/// # Errors
/// When the chat fails or the picture cannot be written.
pub fn screenshot(dist: &Path, output: &Path) -> anyhow::Result<()> {
    block_on(async {
        let session = Session::start(Browser::Chromium, dist).await?;
        let outcome = async {
            chat_between_two_tabs(&session).await?;
            let client = &session.client;
            let more = ["Shift+Enter makes\na new line", "<b>markup</b> shows as text"];
            for line in more {
                let composer = find(client, "composer").await?;
                // Shift held for Enter makes a new line; the Null key releases it again.
                let new_line = format!("{}{}{}", Key::Shift, Key::Enter, Key::Null);
                composer
                    .send_keys(&format!("{}{}", line.replace('\n', &new_line), Key::Enter))
                    .await?;
            }
            wait_for_list(client, "sent-list", 2).await?;
            client.screenshot().await.context("cannot take the screenshot")
        }
        .await;
        session.close().await?;
        let png = outcome?;
        if let Some(dir) = output.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(output, png)?;
        println!("wrote {}", output.display());
        Ok(())
    })
}

/// Two connected tabs of the app, with the names they chose.
pub(crate) struct Tabs {
    pub(crate) a: WindowHandle,
    pub(crate) name_a: String,
    pub(crate) b: WindowHandle,
    pub(crate) name_b: String,
}

/// Opens the app in tab A and tab B and waits until both are connected; leaves tab A selected.
pub(crate) async fn open_two_tabs(session: &Session) -> anyhow::Result<Tabs> {
    let client = &session.client;
    client.goto(&session.app_url).await?;
    let a = client.window().await?;
    wait_for_status(client, "connected").await.context("tab A")?;
    let name_a = display_name(client).await?;

    let b = client.new_window(true).await?.handle;
    client.switch_to_window(b.clone()).await?;
    client.goto(&session.app_url).await?;
    wait_for_status(client, "connected").await.context("tab B")?;
    let name_b = display_name(client).await?;
    if name_a == name_b {
        bail!("both tabs are called {name_a}: they cannot be told apart");
    }
    client.switch_to_window(a.clone()).await?;
    Ok(Tabs { a, name_a, b, name_b })
}

/// Types `text` into the composer and presses Enter.
pub(crate) async fn type_and_send(client: &Client, text: &str) -> anyhow::Result<()> {
    find(client, "composer").await?.send_keys(&format!("{text}{}", Key::Enter)).await?;
    Ok(())
}

/// Runs the two-tab chat; leaves tab B selected.
async fn chat_between_two_tabs(session: &Session) -> anyhow::Result<()> {
    let client = &session.client;
    let Tabs { a, name_a, b, name_b } = open_two_tabs(session).await?;
    let composer = find(client, "composer").await?;
    composer.send_keys("Hello from tab A").await?;
    find(client, "send").await?.click().await?;
    expect_list(client, "sent-list", &[(&name_a, "Hello from tab A")]).await.context("tab A")?;
    let left = composer.prop("value").await?.unwrap_or_default();
    if !left.is_empty() {
        bail!("tab A's message box still holds {left:?} after sending");
    }
    expect_list(client, "received-list", &[]).await.context("tab A never gets its own message")?;

    client.switch_to_window(b.clone()).await?;
    expect_list(client, "received-list", &[(&name_a, "Hello from tab A")])
        .await
        .context("tab B")?;
    type_and_send(client, "Hi A, B here").await?;
    expect_list(client, "sent-list", &[(&name_b, "Hi A, B here")]).await.context("tab B")?;

    client.switch_to_window(a).await?;
    expect_list(client, "received-list", &[(&name_b, "Hi A, B here")]).await.context("tab A")?;
    client.switch_to_window(b).await?;
    Ok(())
}

async fn send_while_the_relay_is_down(session: &mut Session) -> anyhow::Result<()> {
    let Tabs { a, name_a, b, .. } = open_two_tabs(session).await?;
    session.stop_relay();
    let client = &session.client;
    wait_for_status(client, "reconnecting").await.context("tab A, relay down")?;
    type_and_send(client, "sent while the relay was down").await?;
    wait_for_states(client, &["pending"]).await.context("tab A keeps it as pending")?;
    session.start_relay()?;
    let client = &session.client;
    wait_for_status(client, "connected").await.context("tab A, relay back")?;
    wait_for_states(client, &["delivered"]).await.context("tab A")?;
    client.switch_to_window(b).await?;
    expect_list(client, "received-list", &[(&name_a, "sent while the relay was down")])
        .await
        .context("tab B receives it exactly once")?;
    client.switch_to_window(a).await?;
    Ok(())
}

async fn a_cut_off_tab_catches_up(session: &Session) -> anyhow::Result<()> {
    let client = &session.client;
    let Tabs { a, name_a, b, .. } = open_two_tabs(session).await?;
    client.switch_to_window(b.clone()).await?;
    find(client, "disconnect").await?.click().await?;
    wait_for_status(client, "disconnected").await.context("tab B")?;

    client.switch_to_window(a).await?;
    let sent: Vec<String> = (1..=20).map(|n| format!("message {n} of 20")).collect();
    for text in &sent {
        type_and_send(client, text).await?;
    }
    wait_for_states(client, &["delivered"; 20]).await.context("tab A")?;

    client.switch_to_window(b).await?;
    if !list(client, "received-list").await?.is_empty() {
        bail!("tab B received messages while disconnected");
    }
    find(client, "reconnect").await?.click().await?;
    wait_for_status(client, "connected").await.context("tab B")?;
    let expected: Vec<(&str, &str)> =
        sent.iter().map(|text| (name_a.as_str(), text.as_str())).collect();
    expect_list(client, "received-list", &expected).await.context("tab B catches up")
}

async fn reload_with_pending_messages(session: &Session) -> anyhow::Result<()> {
    let client = &session.client;
    let Tabs { name_a, b, .. } = open_two_tabs(session).await?;
    // Disconnected (the relay must stay up: it serves the page that is reloaded).
    find(client, "disconnect").await?.click().await?;
    wait_for_status(client, "disconnected").await.context("tab A")?;
    let sent = ["first before the reload", "second before the reload", "third before the reload"];
    for text in sent {
        type_and_send(client, text).await?;
    }
    wait_for_states(client, &["pending"; 3]).await.context("tab A")?;
    client.refresh().await?;
    // The reloaded tab connects by itself and sends what it had kept.
    wait_for_states(client, &["delivered"; 3]).await.context("tab A after the reload")?;
    let shown = list(client, "sent-list").await?;
    let expected: Vec<(String, String)> =
        sent.iter().map(|text| (name_a.clone(), (*text).to_owned())).collect();
    if shown != expected {
        bail!("after the reload tab A's sent list shows {shown:?}, expected {expected:?}");
    }
    client.switch_to_window(b).await?;
    let expected: Vec<(&str, &str)> = sent.iter().map(|text| (name_a.as_str(), *text)).collect();
    expect_list(client, "received-list", &expected).await.context("tab B receives each once")
}

async fn markup_shows_as_text(session: &Session) -> anyhow::Result<()> {
    let client = &session.client;
    let Tabs { a, b, name_b, .. } = open_two_tabs(session).await?;
    let payload = r#"<img src=x onerror="alert('xss');document.title='pwned'"><script>document.title='pwned'</script>"#;
    client.switch_to_window(b).await?;
    type_and_send(client, payload).await?;
    client.switch_to_window(a).await?;
    // If the payload ran, its alert would be open now and this command would fail.
    expect_list(client, "received-list", &[(&name_b, payload)]).await.context("tab A")?;
    let script = "return [document.title,
        document.querySelectorAll('[data-testid=received-list] img, [data-testid=received-list] script').length];";
    let (title, elements): (String, usize) =
        serde_json::from_value(client.execute(script, vec![]).await?)?;
    if title != "wschat" || elements != 0 {
        bail!("the payload was rendered: title {title:?}, {elements} img/script elements");
    }
    Ok(())
}

/// The relay's `--jwt-secret` in [`Scenario::AnExpiredTokenAsksForANewOne`].
const TOKEN_SECRET: &str = "an end-to-end secret of at least 32 bytes";

/// An HS256 token for `name`, signed with [`TOKEN_SECRET`], that the relay takes for `seconds`.
fn token(name: &str, seconds: u64) -> anyhow::Result<String> {
    token_with(name, seconds, json!({}))
}

/// Like [`token`], with more claims.
fn token_with(name: &str, seconds: u64, more: Value) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    // The relay allows a minute of clock skew past `exp`: the token ends `seconds` from now.
    let now = now - 60;
    let mut claims = json!({ "sub": name, "name": name, "exp": now + seconds });
    if let (Some(claims), Value::Object(more)) = (claims.as_object_mut(), more) {
        claims.extend(more);
    }
    let key = jsonwebtoken::EncodingKey::from_secret(TOKEN_SECRET.as_bytes());
    Ok(jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)?)
}

async fn an_expired_token(session: &Session) -> anyhow::Result<()> {
    let client = &session.client;
    let lifetime = 6;
    client.goto(&format!("{}?token={}", session.app_url, token("tess", lifetime)?)).await?;
    wait_for_status(client, "connected").await.context("with a fresh token")?;
    type_and_send(client, "before the token expires").await?;
    wait_for_states(client, &["delivered"]).await.context("with a fresh token")?;
    let read = || async { Ok(find(client, "connection-status").await?.text().await?) };
    let seen = poll("the status to leave connected", read, |text| text != "connected").await?;
    if seen != "failed" {
        bail!("after the token expired the status says {seen:?}, expected failed (no retries)");
    }
    let error = find(client, "relay-error").await?.text().await?;
    if !error.contains("token expired") {
        bail!("after the token expired the page says {error:?}, not that the token expired");
    }
    // A retry would show "reconnecting" or "connecting" within its first back-off (≤ 0.5 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = find(client, "connection-status").await?.text().await?;
    if status != "failed" {
        bail!("the page went on retrying with the expired token: the status says {status:?}");
    }
    // What is typed now waits for a new token.
    type_and_send(client, "after the token expired").await?;
    wait_for_states(client, &["delivered", "pending"]).await.context("after expiry")
}

pub(crate) async fn current_room(client: &Client) -> anyhow::Result<String> {
    Ok(find(client, "current-room").await?.text().await?)
}

async fn a_room_link(session: &Session) -> anyhow::Result<()> {
    let client = &session.client;
    let room_url = format!("{}?room=Team-Blue", session.app_url);
    client.goto(&room_url).await?;
    wait_for_status(client, "connected").await.context("tab A")?;
    let name_a = display_name(client).await?;
    type_and_send(client, "kept in team-blue").await?;
    wait_for_states(client, &["delivered"]).await.context("tab A")?;
    let a = client.window().await?;
    let b = client.new_window(true).await?.handle;
    client.switch_to_window(b).await?;
    client.goto(&room_url).await?;
    wait_for_status(client, "connected").await.context("tab B")?;
    let read = || current_room(client);
    poll("the room of the link", read, |room| room == "#team-blue").await?;
    expect_list(client, "received-list", &[(&name_a, "kept in team-blue")])
        .await
        .context("tab B opens the room with its history")?;
    // Back to the lobby: the address follows, and the lobby never saw the message.
    let lobby =
        client.find(Locator::Css("[data-testid=room-item][data-room=lobby] button")).await?;
    lobby.click().await?;
    poll("the lobby shown", || current_room(client), |room| room == "#lobby").await?;
    let search: String =
        serde_json::from_value(client.execute("return location.search;", vec![]).await?)?;
    if search.contains("room=") {
        bail!("the address still names a room in the lobby: {search:?}");
    }
    expect_list(client, "received-list", &[]).await.context("the lobby")?;
    client.switch_to_window(a).await?;
    Ok(())
}

async fn a_forbidden_room(session: &Session) -> anyhow::Result<()> {
    let client = &session.client;
    let token = token_with("lee", 600, json!({ "rooms": ["lobby", "team-*"] }))?;
    client.goto(&format!("{}?token={token}&room=secret", session.app_url)).await?;
    wait_for_status(client, "connected").await?;
    let read = || async { Ok(find(client, "relay-error").await?.text().await?) };
    let error = poll("the refusal on the page", read, |text| text.contains("secret")).await?;
    if !error.contains("cannot join") {
        bail!("the page says {error:?} about the refused room");
    }
    poll("the lobby shown", || current_room(client), |room| room == "#lobby").await?;
    let refused =
        client.find_all(Locator::Css("[data-testid=room-item][data-room=secret]")).await?;
    if !refused.is_empty() {
        bail!("the refused room is still listed");
    }
    // A room the claim allows is joined.
    find(client, "room-join").await?.send_keys("team-red").await?;
    find(client, "room-join-button").await?.click().await?;
    poll("team-red shown", || current_room(client), |room| room == "#team-red").await?;
    let joined = "[data-testid=room-item][data-room=team-red][data-joined=true]";
    let read = || async { Ok(client.find_all(Locator::Css(joined)).await?.len()) };
    poll("team-red joined", read, |count| *count == 1).await?;
    Ok(())
}

/// Waits until the sent list's entries have exactly these delivery states, in order.
pub(crate) async fn wait_for_states(client: &Client, states: &[&str]) -> anyhow::Result<()> {
    let script = "return Array.from(document.querySelectorAll('[data-testid=sent-list] > li'))
        .map(li => li.dataset.state);";
    let read = || async {
        let states: Vec<String> = serde_json::from_value(client.execute(script, vec![]).await?)?;
        Ok(states)
    };
    poll(&format!("the sent list to be {states:?}"), read, |seen| seen == states).await.map(|_| ())
}

pub(crate) fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime always builds")
        .block_on(future)
}

pub(crate) async fn find(client: &Client, testid: &str) -> anyhow::Result<Element> {
    client
        .find(Locator::Css(&format!("[data-testid={testid}]")))
        .await
        .with_context(|| format!("no element with data-testid={testid}"))
}

/// Polls `read` until it returns what `done` accepts. A failed read (the page is still loading)
/// is retried too. Fails with the last value or error after 20 s, which only a broken app needs.
pub(crate) async fn poll<T: std::fmt::Debug>(
    what: &str,
    mut read: impl AsyncFnMut() -> anyhow::Result<T>,
    done: impl Fn(&T) -> bool,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let last = match read().await {
            Ok(value) if done(&value) => return Ok(value),
            Ok(value) => format!("{value:?}"),
            Err(error) => format!("{error:#}"),
        };
        if Instant::now() > deadline {
            bail!("gave up waiting for {what}; last saw {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn display_name(client: &Client) -> anyhow::Result<String> {
    let name = find(client, "display-name").await?.prop("value").await?;
    name.filter(|name| !name.is_empty()).context("the tab shows no display name")
}

pub(crate) async fn wait_for_status(client: &Client, status: &str) -> anyhow::Result<()> {
    let read = || async { Ok(find(client, "connection-status").await?.text().await?) };
    poll(&format!("the status to say {status}"), read, |text| text == status).await.map(|_| ())
}

/// The `(source, content)` of each `<li>` in a list.
pub(crate) async fn list(client: &Client, testid: &str) -> anyhow::Result<Vec<(String, String)>> {
    let script = "return Array.from(document.querySelectorAll(`[data-testid=${arguments[0]}] > li`))
        .map(li => [li.querySelector('.source').textContent, li.querySelector('.content').textContent]);";
    let rows = client.execute(script, vec![json!(testid)]).await?;
    Ok(serde_json::from_value(rows)?)
}

async fn wait_for_list(client: &Client, testid: &str, at_least: usize) -> anyhow::Result<()> {
    let read = || list(client, testid);
    poll(&format!("{at_least} entries in {testid}"), read, |rows| rows.len() >= at_least)
        .await
        .map(|_| ())
}

/// Waits until a list shows exactly `expected`; for an empty expectation, checks it stays empty
/// for a moment (long enough for a message to cross the relay, which takes milliseconds).
pub(crate) async fn expect_list(
    client: &Client,
    testid: &str,
    expected: &[(&str, &str)],
) -> anyhow::Result<()> {
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(source, content)| ((*source).to_owned(), (*content).to_owned()))
        .collect();
    if expected.is_empty() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rows = list(client, testid).await?;
        if !rows.is_empty() {
            bail!("{testid} should be empty but shows {rows:?}");
        }
        return Ok(());
    }
    let rows = poll(
        &format!("{testid} to show {expected:?}"),
        || list(client, testid),
        |rows| rows.len() >= expected.len(),
    )
    .await?;
    if rows != expected {
        bail!("{testid} shows {rows:?}, expected {expected:?}");
    }
    Ok(())
}
