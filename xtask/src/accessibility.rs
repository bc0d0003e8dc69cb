//! The accessibility stage: axe-core (pinned in `xtask/npm`) checks the release page against
//! WCAG 2.0, 2.1 and 2.2 at levels A and AA, in every view the app has, in the light and the dark
//! colour scheme, and fails listing each violation.
//!
//! Two tabs (windows of one WebDriver session) chat through the relay serving the release build;
//! axe runs in tab A at each step: a fresh page (empty lists), after a short chat, in a room
//! joined with the other tab there (presence, "is typing", an unread count in the room list),
//! with the conversation scrolled up and "New messages ↓" offered, and with the relay gone
//! (reconnecting, its countdown and error, a message waiting).
//!
//! The scheme is the browser's own `prefers-color-scheme`, the media feature the CSS follows:
//! Chromium emulates it through the DevTools protocol (`Emulation.setEmulatedMedia`, which
//! chromedriver passes on), so one session checks both; Firefox reads it from the preference
//! `layout.css.prefers-color-scheme.content-override`, given when the session starts, so each
//! scheme gets a session of its own. Each run first checks that the page really sees the scheme.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use fantoccini::wd::{WebDriverCompatibleCommand, WindowHandle};
use fantoccini::{Client, Locator};
use serde_json::{json, Value};

use crate::e2e::{self, find, poll, Browser, Session, Tabs};

/// axe-core's tags for the WCAG 2.0, 2.1 and 2.2 success criteria at levels A and AA (2.2 added
/// no level-A rule to axe).
const TAGS: [&str; 5] = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"];

/// Where `cargo xtask setup` puts axe-core (`npm ci` in `xtask/npm`).
const AXE: &str = "xtask/npm/node_modules/axe-core/axe.min.js";

/// A colour scheme the page is checked in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Light,
    Dark,
}

impl Scheme {
    const ALL: [Self; 2] = [Self::Light, Self::Dark];

    fn name(self) -> &'static str {
        match self {
            Self::Light => "light",
            Self::Dark => "dark",
        }
    }
}

/// One axe-core violation: a rule and the elements that break it.
#[derive(Debug, serde::Deserialize)]
struct Violation {
    id: String,
    impact: Option<String>,
    help: String,
    nodes: Vec<Node>,
}

#[derive(Debug, serde::Deserialize)]
struct Node {
    target: String,
    summary: String,
}

/// What one browser's runs found, per view and scheme.
#[derive(Debug, Default)]
struct Findings {
    /// `(view, scheme, violations)`, in the order checked.
    runs: Vec<(String, Scheme, Vec<Violation>)>,
}

impl Findings {
    fn violations(&self) -> usize {
        self.runs.iter().map(|(_, _, found)| found.len()).sum()
    }

    fn report(&self, browser: Browser) -> String {
        let mut out = String::new();
        for (view, scheme, found) in &self.runs {
            let _ = writeln!(
                out,
                "  {}, {view}, {} scheme: {} violation(s)",
                browser.name(),
                scheme.name(),
                found.len()
            );
            for violation in found {
                let impact = violation.impact.as_deref().unwrap_or("?");
                let _ = writeln!(out, "    - {} ({impact}): {}", violation.id, violation.help);
                for node in &violation.nodes {
                    let summary = node.summary.replace('\n', " ");
                    let _ = writeln!(out, "        {}: {summary}", node.target);
                }
            }
        }
        out
    }
}

/// Runs axe on every view in `browser`, in both schemes; fails listing each violation.
///
/// # Errors
/// When a violation is found, or the page could not be brought into a view.
pub fn run(browser: Browser, dist: &Path) -> anyhow::Result<()> {
    let axe = std::fs::read_to_string(AXE)
        .with_context(|| format!("cannot read {AXE}: run `cargo xtask setup`"))?;
    let mut findings = Findings::default();
    e2e::block_on(async {
        match browser {
            // One session: the scheme is switched through the DevTools protocol.
            Browser::Chromium => {
                let mut session = Session::start(browser, dist).await?;
                let outcome = walk(&mut session, &axe, &Scheme::ALL, &mut findings).await;
                session.close().await?;
                outcome
            }
            // One session per scheme: Firefox reads it from a preference at start.
            Browser::Firefox => {
                for scheme in Scheme::ALL {
                    let mut capabilities = browser.capabilities()?;
                    let prefs = capabilities
                        .get_mut("moz:firefoxOptions")
                        .and_then(Value::as_object_mut)
                        .context("no moz:firefoxOptions")?
                        .entry("prefs")
                        .or_insert_with(|| json!({}));
                    // 0 = dark, 1 = light (2, the default, follows the browser's theme).
                    let value = if scheme == Scheme::Dark { 0 } else { 1 };
                    prefs["layout.css.prefers-color-scheme.content-override"] = json!(value);
                    let mut session =
                        Session::start_with_capabilities(browser, dist, Vec::new(), capabilities)
                            .await?;
                    let outcome = walk(&mut session, &axe, &[scheme], &mut findings).await;
                    session.close().await?;
                    outcome?;
                }
                Ok(())
            }
        }
    })?;
    let report = findings.report(browser);
    print!("{report}");
    match findings.violations() {
        0 => Ok(()),
        count => bail!("axe-core found {count} violation(s) in {}:\n{report}", browser.name()),
    }
}

/// Brings tab A through every view and runs axe in each, in `schemes` (switched through the
/// DevTools protocol when there are several, which only Chromium offers).
async fn walk(
    session: &mut Session,
    axe: &str,
    schemes: &[Scheme],
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let tabs = e2e::open_two_tabs(session).await?;
    let mut audit = Audit { axe, schemes, findings, a: tabs.a.clone() };
    let client = &session.client.clone();

    audit.check(client, "a fresh page", None).await.context("a fresh page")?;

    e2e::type_and_send(client, "Hello from tab A").await?;
    e2e::wait_for_states(client, &["delivered"]).await?;
    client.switch_to_window(tabs.b.clone()).await?;
    e2e::type_and_send(client, "Hi A, B here").await?;
    client.switch_to_window(tabs.a.clone()).await?;
    e2e::expect_list(client, "received-list", &[(&tabs.name_b, "Hi A, B here")]).await?;
    audit.check(client, "after a short chat", None).await.context("after a short chat")?;

    in_a_room(session, &tabs).await?;
    audit
        .check(client, "a room with two people, one typing", Some(&tabs))
        .await
        .context("a room with two people, one typing")?;

    scrolled_up(session, &tabs).await?;
    audit
        .check(client, "the conversation scrolled up, new messages below", None)
        .await
        .context("the conversation scrolled up")?;

    relay_gone(session).await?;
    audit.check(client, "the relay gone: reconnecting", None).await.context("the relay gone")?;
    Ok(())
}

/// Tab A joins a room and B follows; B says something in the lobby first, so A's lobby shows
/// an unread count. Leaves tab A selected.
async fn in_a_room(session: &Session, tabs: &Tabs) -> anyhow::Result<()> {
    let client = &session.client;
    let room = "team-a11y";
    find(client, "room-join").await?.send_keys(room).await?;
    find(client, "room-join-button").await?.click().await?;
    let shown = format!("#{room}");
    poll("the room shown", || e2e::current_room(client), |current| *current == shown).await?;

    client.switch_to_window(tabs.b.clone()).await?;
    e2e::type_and_send(client, "for the lobby, unread in A").await?;
    e2e::wait_for_states(client, &["delivered", "delivered"]).await?;
    find(client, "room-join").await?.send_keys(room).await?;
    find(client, "room-join-button").await?.click().await?;
    poll("B in the room", || e2e::current_room(client), |current| *current == shown).await?;

    client.switch_to_window(tabs.a.clone()).await?;
    let script = "return Array.from(document.querySelectorAll('[data-testid=presence-list] > li'))
        .map(li => li.textContent);";
    let read = || async {
        let names: Vec<String> = serde_json::from_value(client.execute(script, vec![]).await?)?;
        Ok(names)
    };
    poll("both names present", read, |names| {
        names.contains(&tabs.name_a) && names.contains(&tabs.name_b)
    })
    .await?;
    let unread = "[data-testid=room-item][data-room=lobby] [data-testid=unread-count]";
    let read = || async { Ok(client.find(Locator::Css(unread)).await?.text().await?) };
    poll("the lobby's unread count", read, |text| text.contains('1')).await?;
    Ok(())
}

/// Tab B shows "is typing" in tab A (each time it is called: the line goes after 5 s).
async fn b_types(client: &Client, tabs: &Tabs) -> anyhow::Result<()> {
    client.switch_to_window(tabs.b.clone()).await?;
    find(client, "composer").await?.send_keys("x").await?;
    client.switch_to_window(tabs.a.clone()).await?;
    let read = || async { Ok(find(client, "typing").await?.text().await?) };
    poll("the typing line", read, |text| text.contains(&tabs.name_b)).await?;
    Ok(())
}

/// Tab B sends enough for A's conversation to scroll; A scrolls up and B sends one more, which
/// A offers to show with "New messages ↓". Leaves tab A selected.
async fn scrolled_up(session: &Session, tabs: &Tabs) -> anyhow::Result<()> {
    let client = &session.client;
    client.switch_to_window(tabs.b.clone()).await?;
    // The draft left by `b_types` goes first.
    for n in 1..=30 {
        e2e::type_and_send(client, &format!("line {n} to fill the pane")).await?;
    }
    client.switch_to_window(tabs.a.clone()).await?;
    let count = "return document.querySelectorAll('[data-testid=received-list] > li').length;";
    let read =
        || async { Ok(serde_json::from_value::<usize>(client.execute(count, vec![]).await?)?) };
    poll("the 30 lines in tab A", read, |rows| *rows >= 30).await?;
    // To the oldest message, as a user scrolling up would.
    // The pane is laid out from the bottom, where the top is a negative offset (scrollTo clamps
    // to the top whichever way it is laid out).
    let scroll =
        "document.querySelector('[data-testid=received-list]').parentElement.scrollTo(0, -1e6);";
    client.execute(scroll, vec![]).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.switch_to_window(tabs.b.clone()).await?;
    e2e::type_and_send(client, "one more below").await?;
    client.switch_to_window(tabs.a.clone()).await?;
    let read = || async { Ok(find(client, "new-messages").await?.is_displayed().await?) };
    poll("\"new messages\" offered", read, |shown| *shown).await?;
    // It rises into view (unless reduced motion is asked for): checked once it is there.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(())
}

/// Tab A writes while the relay is down: the page reconnects with a countdown, says why, and
/// keeps the message waiting.
async fn relay_gone(session: &mut Session) -> anyhow::Result<()> {
    session.stop_relay();
    let client = &session.client;
    e2e::wait_for_status(client, "reconnecting").await?;
    e2e::type_and_send(client, "waits for the relay").await?;
    let pending = "return document.querySelectorAll('[data-testid=sent-list] > li[data-state=pending]').length;";
    let read =
        || async { Ok(serde_json::from_value::<usize>(client.execute(pending, vec![]).await?)?) };
    poll("a message waiting", read, |count| *count == 1).await?;
    find(client, "relay-error").await?;
    Ok(())
}

/// Runs axe in tab A in each scheme and records what it finds.
struct Audit<'a> {
    axe: &'a str,
    schemes: &'a [Scheme],
    findings: &'a mut Findings,
    a: WindowHandle,
}

impl Audit<'_> {
    /// Checks the view in tab A in every scheme; with `typing`, B types before each check so
    /// that the typing line shows throughout.
    async fn check(
        &mut self,
        client: &Client,
        view: &str,
        typing: Option<&Tabs>,
    ) -> anyhow::Result<()> {
        for &scheme in self.schemes {
            if let Some(tabs) = typing {
                b_types(client, tabs).await?;
            }
            client.switch_to_window(self.a.clone()).await?;
            if self.schemes.len() > 1 {
                client
                    .issue_cmd(Cdp::emulate_color_scheme(scheme))
                    .await
                    .context("chromedriver would not emulate the colour scheme")?;
            }
            let dark: bool = serde_json::from_value(
                client
                    .execute("return matchMedia('(prefers-color-scheme: dark)').matches;", vec![])
                    .await?,
            )?;
            if dark != (scheme == Scheme::Dark) {
                bail!("the page does not see the {} scheme", scheme.name());
            }
            let violations = self.axe(client, scheme).await?;
            println!("{view}, {} scheme: {} violation(s)", scheme.name(), violations.len());
            self.findings.runs.push((view.to_owned(), scheme, violations));
        }
        Ok(())
    }

    async fn axe(&self, client: &Client, scheme: Scheme) -> anyhow::Result<Vec<Violation>> {
        let loaded = "return typeof axe === 'object';";
        if !serde_json::from_value::<bool>(client.execute(loaded, vec![]).await?)? {
            // `axe.min.js` sets `window.axe`; run as a WebDriver script, page CSP does not apply.
            client.execute(self.axe, vec![]).await.context("cannot inject axe-core")?;
        }
        // Transitions or animations would make colours half-way: there are none to wait for
        // beyond a frame, which the scheme change needs to restyle.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let script = "return axe.run(document, {
                runOnly: { type: 'tag', values: arguments[0] },
                resultTypes: ['violations'],
            }).then(result => result.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map(n => ({ target: n.target.join(' '), summary: n.failureSummary || '' })),
            })));";
        let found = client
            .execute(script, vec![json!(TAGS)])
            .await
            .with_context(|| format!("axe-core did not run ({} scheme)", scheme.name()))?;
        Ok(serde_json::from_value(found)?)
    }
}

/// A DevTools protocol command, through chromedriver's `goog/cdp/execute`.
#[derive(Debug)]
struct Cdp {
    body: Value,
}

impl Cdp {
    /// `Emulation.setEmulatedMedia` with `prefers-color-scheme` set to `scheme`.
    fn emulate_color_scheme(scheme: Scheme) -> Self {
        let features = json!([{ "name": "prefers-color-scheme", "value": scheme.name() }]);
        Self {
            body: json!({
                "cmd": "Emulation.setEmulatedMedia",
                "params": { "features": features },
            }),
        }
    }
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/goog/cdp/execute", session_id.unwrap_or_default()))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.body.to_string()))
    }
}
