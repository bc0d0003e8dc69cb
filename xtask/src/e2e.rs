//! End-to-end scenarios: the release build, served by the real relay, driven in real browsers
//! through WebDriver (chromedriver for Chromium, geckodriver for Firefox).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fantoccini::elements::Element;
use fantoccini::key::Key;
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
    fn start_driver(self) -> anyhow::Result<(Background, String)> {
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

    /// The capabilities of `webdriver.json` (shared with the wasm-bindgen tests), made headless.
    fn capabilities(self) -> anyhow::Result<serde_json::Map<String, Value>> {
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
struct Session {
    client: Client,
    app_url: String,
    _driver: Background,
    _relay: Background,
}

impl Session {
    async fn start(browser: Browser, dist: &Path) -> anyhow::Result<Self> {
        let port = process::free_port()?;
        let mut relay = Background::spawn(
            "relay",
            Command::new(process::relay_binary())
                .args(["--listen", &format!("127.0.0.1:{port}"), "--static"])
                .arg(dist)
                .env("RUST_LOG", "wschat_relay=warn"),
        )?;
        process::wait_for_port(port, &mut relay)?;
        let (driver, webdriver) = browser.start_driver()?;
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(browser.capabilities()?)
            .connect(&webdriver)
            .await
            .with_context(|| format!("cannot open a {} session", browser.name()))?;
        Ok(Self {
            client,
            app_url: format!("http://127.0.0.1:{port}/"),
            _driver: driver,
            _relay: relay,
        })
    }

    /// Ends the WebDriver session (else the browser outlives the driver), then everything else.
    async fn close(self) -> anyhow::Result<()> {
        self.client.close().await.context("cannot end the WebDriver session")
    }
}

/// Two tabs of the release build: type in tab A and click Send; the message shows in A's sent list
/// and B's received list. B answers with Enter; the answer shows in both tabs too.
///
/// # Errors
/// What the user would have seen go wrong.
pub fn two_tabs_chat(browser: Browser, dist: &Path) -> anyhow::Result<()> {
    block_on(async {
        let session = Session::start(browser, dist).await?;
        let outcome = chat_between_two_tabs(&session).await;
        session.close().await?;
        outcome.map(|_| ())
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

/// Runs the two-tab chat; leaves tab B selected.
async fn chat_between_two_tabs(session: &Session) -> anyhow::Result<()> {
    let client = &session.client;
    client.goto(&session.app_url).await?;
    let tab_a = client.window().await?;
    wait_for_status(client, "connected").await.context("tab A")?;
    let name_a = display_name(client).await?;

    let tab_b = client.new_window(true).await?.handle;
    client.switch_to_window(tab_b.clone()).await?;
    client.goto(&session.app_url).await?;
    wait_for_status(client, "connected").await.context("tab B")?;
    let name_b = display_name(client).await?;
    if name_a == name_b {
        bail!("both tabs are called {name_a}: they cannot be told apart");
    }

    client.switch_to_window(tab_a.clone()).await?;
    let composer = find(client, "composer").await?;
    composer.send_keys("Hello from tab A").await?;
    find(client, "send").await?.click().await?;
    expect_list(client, "sent-list", &[(&name_a, "Hello from tab A")]).await.context("tab A")?;
    let left = composer.prop("value").await?.unwrap_or_default();
    if !left.is_empty() {
        bail!("tab A's message box still holds {left:?} after sending");
    }
    expect_list(client, "received-list", &[]).await.context("tab A never gets its own message")?;

    client.switch_to_window(tab_b).await?;
    expect_list(client, "received-list", &[(&name_a, "Hello from tab A")])
        .await
        .context("tab B")?;
    find(client, "composer").await?.send_keys(&format!("Hi A, B here{}", Key::Enter)).await?;
    expect_list(client, "sent-list", &[(&name_b, "Hi A, B here")]).await.context("tab B")?;

    client.switch_to_window(tab_a).await?;
    expect_list(client, "received-list", &[(&name_b, "Hi A, B here")]).await.context("tab A")?;
    client.switch_to_window(client.windows().await?.pop().context("tab B is gone")?).await?;
    Ok(())
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime always builds")
        .block_on(future)
}

async fn find(client: &Client, testid: &str) -> anyhow::Result<Element> {
    client
        .find(Locator::Css(&format!("[data-testid={testid}]")))
        .await
        .with_context(|| format!("no element with data-testid={testid}"))
}

/// Polls `read` until it returns what `done` accepts. A failed read (the page is still loading)
/// is retried too. Fails with the last value or error after 20 s, which only a broken app needs.
async fn poll<T: std::fmt::Debug>(
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

async fn display_name(client: &Client) -> anyhow::Result<String> {
    let name = find(client, "display-name").await?.prop("value").await?;
    name.filter(|name| !name.is_empty()).context("the tab shows no display name")
}

async fn wait_for_status(client: &Client, status: &str) -> anyhow::Result<()> {
    let read = || async { Ok(find(client, "connection-status").await?.text().await?) };
    poll(&format!("the status to say {status}"), read, |text| text == status).await.map(|_| ())
}

/// The `(source, content)` of each `<li>` in a list.
async fn list(client: &Client, testid: &str) -> anyhow::Result<Vec<(String, String)>> {
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
async fn expect_list(
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
