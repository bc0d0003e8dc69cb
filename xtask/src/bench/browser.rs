//! The browser rows of `cargo xtask bench`: the app's first-load bytes against the budget in
//! `bench/budgets.toml`, and in Chromium and Firefox, the same run, the app against the plain
//! JavaScript page of `bench/plain-page` (the floor): how long a flood from a raw socket takes to
//! be listed, and tab→tab latency.
//!
//! Both pages are served by one release wschat relay (`--static`, the plain page under
//! `/plain/`), started fresh for each flood so that no history pre-fills the list. Times are
//! taken inside the pages: a `MutationObserver` notes when a row enters the list, and a
//! `ResizeObserver` on that row when it is laid out, in the rendering step of the frame that
//! paints it; "listed" below means laid out. The app adds rows in an animation-frame callback,
//! the plain page in its socket handler, to be laid out at the next frame: timing the layout,
//! not the insertion, gives both the same end point, the frame in which the user sees the row.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use fantoccini::key::Key;
use fantoccini::wd::WindowHandle;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

use super::{
    grouped, ms_cell, ratio_cell, Relay, Row, RunningRelay, Scratch, Table, Tools, Verdict,
};
use crate::e2e::{self, Browser};
use crate::process::{self, Background};
use crate::setup::{self, Toolset};
use crate::suite;

/// The budgets of these rows, read by [`Budgets::read`].
const BUDGETS_FILE: &str = "bench/budgets.toml";
/// The flood sizes; the second is also compared with the first.
const FLOODS: [u64; 2] = [2_000, 10_000];
/// Each flood is run this many times per page, the pages taking turns, and the fastest run is
/// kept: the machine is shared, and other work only ever adds time.
const FLOOD_RUNS: usize = 3;
/// A flood not listed in full within this long, or listing nothing new for
/// [`FLOOD_STALL`], is reported as not listed.
const FLOOD_PATIENCE: Duration = Duration::from_secs(120);
const FLOOD_STALL: Duration = Duration::from_secs(20);
/// Tab→tab samples per page, taken in [`LATENCY_ROUNDS`] rounds, the pages taking turns.
const LATENCY_SAMPLES: usize = 40;
const LATENCY_ROUNDS: usize = 2;
/// Time for a page that just connected to settle (the app asks for history and draws it).
const SETTLE: Duration = Duration::from_millis(500);

/// What [`BUDGETS_FILE`] holds.
#[derive(Debug, Clone, PartialEq)]
struct Budgets {
    first_load_bytes: f64,
    first_load_stretch_bytes: f64,
    flood_vs_floor: f64,
    flood_10k_vs_2k: f64,
    latency_p50_vs_floor: f64,
}

impl Budgets {
    fn read() -> anyhow::Result<Self> {
        let path = process::workspace_root().join(BUDGETS_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {BUDGETS_FILE}"))
    }

    /// The file is a flat TOML table of numbers; this reads exactly that (`name = number` lines,
    /// `#` comments, `_` between digits), which needs no TOML crate.
    fn parse(text: &str) -> anyhow::Result<Self> {
        let mut values = std::collections::BTreeMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let (name, value) = line
                .split_once('=')
                .with_context(|| format!("line {}: expected `name = number`", index + 1))?;
            let value: f64 = value.trim().replace('_', "").parse().with_context(|| {
                format!("line {}: {:?} is not a number", index + 1, value.trim())
            })?;
            values.insert(name.trim().to_owned(), value);
        }
        let mut take = |name: &str| values.remove(name).with_context(|| format!("no {name}"));
        let budgets = Self {
            first_load_bytes: take("first_load_bytes")?,
            first_load_stretch_bytes: take("first_load_stretch_bytes")?,
            flood_vs_floor: take("flood_vs_floor")?,
            flood_10k_vs_2k: take("flood_10k_vs_2k")?,
            latency_p50_vs_floor: take("latency_p50_vs_floor")?,
        };
        if let Some(name) = values.keys().next() {
            bail!("unknown budget {name}");
        }
        Ok(budgets)
    }
}

/// Pushes the first-load rows, then the flood and latency rows of each browser, each a group of
/// its own so that one browser failing leaves the other's rows.
pub(super) fn groups(tools: &Tools, scratch: &Scratch, table: &mut Table) {
    let mut prepared = None;
    table.group("first load: release build, html+js+wasm+css, gzip -9", |table| {
        setup::ensure(Toolset::Test)?;
        let budgets = Budgets::read()?;
        let site = Site::build(scratch)?;
        first_load(&site, &budgets, table)?;
        prepared = Some((budgets, site));
        Ok(())
    });
    for browser in Browser::ALL {
        let name = format!("flood and tab→tab latency, {}", browser.name());
        table.group(&name, |table| {
            let (budgets, site) = prepared
                .as_ref()
                .context("no release build to serve (see the first-load group)")?;
            e2e::block_on(in_browser(browser, tools, scratch, site, budgets, table))
        });
    }
    table.note(format!(
        "browser rows: one release relay serves the app and the plain page (bench/plain-page \
         with ?protocol=v1: it asks for wschat.v1 as the app does, so the relay sends both the \
         same frames), its rate limit lifted and other flags at their defaults, fresh for each \
         flood. Flood: wschat-load sends the messages on one socket in the tutorial's JSON, \
         unthrottled (not a browser); the time runs from its first message (system clock) to \
         the last row laid out in tab B (a ResizeObserver on that row fires in the rendering \
         step of the frame that paints it; each page's clock aligned to the system clock); the \
         fastest of {FLOOD_RUNS} runs per page, the pages taking turns. Tab→tab: from Enter \
         pressed in tab A's composer (seen before the page's own handler) to the row laid out \
         in tab B, {LATENCY_ROUNDS} rounds of {} samples per page, the pages taking turns; A \
         and B are two windows of one WebDriver session (not two tabs: a background tab is \
         hidden and gets no animation frames), both checked visible. Chromium's breakdowns \
         come from its Long Animation Frames API (frames over 50 ms, scripts over 5 ms)",
        LATENCY_SAMPLES / LATENCY_ROUNDS
    ));
}

/// The release build, and a directory that serves it with the plain page beside it.
struct Site {
    dist: PathBuf,
    /// The app at `/`, the plain page at `/plain/index.html`.
    root: PathBuf,
}

impl Site {
    fn build(scratch: &Scratch) -> anyhow::Result<Self> {
        // Its own directory: the end-to-end tests may be serving target/e2e-dist meanwhile.
        let dist = process::workspace_root().join("target/bench-dist");
        suite::build_release(&dist)?;
        let root = scratch.0.join("site");
        copy_dir(&dist, &root)?;
        std::fs::create_dir_all(root.join("plain"))?;
        std::fs::copy(plain_page(), root.join("plain/index.html"))
            .context("cannot copy the plain page")?;
        Ok(Self { dist, root })
    }
}

fn plain_page() -> PathBuf {
    process::workspace_root().join("bench/plain-page/index.html")
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Every file under `dir`, with its path relative to `dir`.
fn files_under(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let name = path.strip_prefix(dir)?.display().to_string();
                files.push((name, path));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The size of `path` compressed with `gzip -9`.
fn gzipped(path: &Path) -> anyhow::Result<u64> {
    let output = Command::new("gzip")
        .args(["-9", "-c"])
        .arg(path)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run gzip")?;
    if !output.status.success() {
        bail!("gzip -9 {} failed ({})", path.display(), output.status);
    }
    Ok(output.stdout.len() as u64)
}

/// The first-load row: what a first visit downloads, each file gzipped, against the budget.
fn first_load(site: &Site, budgets: &Budgets, table: &mut Table) -> anyhow::Result<()> {
    let mut total = 0;
    let mut parts = Vec::new();
    for (name, path) in files_under(&site.dist)? {
        let extension = path.extension().and_then(|extension| extension.to_str());
        if !matches!(extension, Some("html" | "js" | "wasm" | "css")) {
            parts.push(format!("{name} not counted"));
            continue;
        }
        let bytes = gzipped(&path)?;
        total += bytes;
        parts.push(format!("{name} {} B", grouped(bytes as f64)));
    }
    let floor = gzipped(&plain_page())?;
    println!("   app {} B in all (plain page {} B)", grouped(total as f64), grouped(floor as f64));
    let total = total as f64;
    let mut row =
        Row::new("first load, html+js+wasm+css, each gzip -9 (floor: the plain page, for context)");
    row.wschat = bytes(total);
    row.floor = bytes(floor as f64);
    row.ratio = ratio_cell(total / budgets.first_load_bytes, "budget");
    row.budget = format!(
        "≤ {} (stretch ≤ {})",
        bytes(budgets.first_load_bytes),
        bytes(budgets.first_load_stretch_bytes)
    );
    row.verdict = Verdict::check(total <= budgets.first_load_bytes);
    table.push(row);
    let against = |budget: f64| {
        if total <= budget {
            format!("met by {}", bytes(budget - total))
        } else {
            format!("over by {}", bytes(total - budget))
        }
    };
    table.note(format!(
        "first load: budget {}, stretch {}; by file (gzip -9): {}",
        against(budgets.first_load_bytes),
        against(budgets.first_load_stretch_bytes),
        parts.join(", ")
    ));
    Ok(())
}

fn bytes(value: f64) -> String {
    format!("{} B", grouped(value))
}

/// The two pages compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    App,
    Plain,
}

impl Page {
    const BOTH: [Self; 2] = [Self::App, Self::Plain];

    fn name(self) -> &'static str {
        match self {
            Self::App => "app",
            Self::Plain => "plain",
        }
    }

    /// The page's address on a relay listening on `port`. The plain page speaks v1, as the app
    /// does, so that the relay sends both the same frames.
    fn url(self, port: u16) -> String {
        match self {
            Self::App => format!("http://127.0.0.1:{port}/"),
            Self::Plain => format!("http://127.0.0.1:{port}/plain/index.html?protocol=v1"),
        }
    }
}

/// One WebDriver session with two windows (not tabs: a background tab is hidden and gets no
/// animation frames, while two windows both stay visible, which [`Windows::check_visible`]
/// checks each time).
struct Windows<'a> {
    client: Client,
    /// Tab A sends (latency rows only).
    a: WindowHandle,
    /// Tab B receives.
    b: WindowHandle,
    browser: Browser,
    tools: &'a Tools,
    scratch: &'a Scratch,
    site: &'a Site,
}

/// The figures of one browser, then its rows.
async fn in_browser(
    browser: Browser,
    tools: &Tools,
    scratch: &Scratch,
    site: &Site,
    budgets: &Budgets,
    table: &mut Table,
) -> anyhow::Result<()> {
    let (driver, client) = open_session(browser).await?;
    let outcome = async {
        let b = client.window().await?;
        let a = client.new_window(false).await?.handle;
        let windows = Windows { client: client.clone(), a, b, browser, tools, scratch, site };
        let floods = floods(&windows).await?;
        flood_rows(browser, budgets, &floods, table);
        let latency = latency(&windows).await?;
        latency_rows(browser, budgets, &latency, table);
        anyhow::Ok(())
    }
    .await;
    // Else the browser outlives its driver.
    let closed = client.close().await;
    drop(driver);
    outcome?;
    closed.context("cannot end the WebDriver session")
}

/// A session of `browser` with the end-to-end tests' capabilities. Firefox is also told not to
/// round its clocks to the millisecond (`privacy.reduceTimerPrecision`), which tab→tab latency
/// needs; Chromium's are precise to 0.1 ms already.
async fn open_session(browser: Browser) -> anyhow::Result<(Background, Client)> {
    let (driver, webdriver) = browser.start_driver()?;
    let mut capabilities = browser.capabilities()?;
    if let Some(options) = capabilities.get_mut("moz:firefoxOptions") {
        options["prefs"]["privacy.reduceTimerPrecision"] = json!(false);
    }
    let client = ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&webdriver)
        .await
        .with_context(|| format!("cannot open a {} session", browser.name()))?;
    Ok((driver, client))
}

impl Windows<'_> {
    /// A fresh relay serving both pages, its per-client rate limit lifted (as for the relay
    /// rows) and every other flag at its default.
    fn relay(&self) -> anyhow::Result<RunningRelay> {
        let root = self.site.root.display().to_string();
        RunningRelay::start(self.tools, self.scratch, Relay::Wschat, &["--static", &root])
    }

    /// Opens `page` in `window` and waits until it is connected and settled.
    async fn open(&self, window: &WindowHandle, page: Page, port: u16) -> anyhow::Result<()> {
        self.client.switch_to_window(window.clone()).await?;
        self.client.goto(&page.url(port)).await?;
        e2e::wait_for_status(&self.client, "connected")
            .await
            .with_context(|| format!("the {} page in {}", page.name(), self.browser.name()))?;
        tokio::time::sleep(SETTLE).await;
        Ok(())
    }

    /// Fails unless the current window's page is visible (a hidden page gets no animation
    /// frames and its timers are slowed: its figures would measure the throttling).
    async fn check_visible(&self, which: &str) -> anyhow::Result<()> {
        let state = self.client.execute("return document.visibilityState;", vec![]).await?;
        if state != json!("visible") {
            bail!("{which} is {state} in {}: its figures would be throttled", self.browser.name());
        }
        Ok(())
    }

    /// How far the current window's high-resolution clock (`performance.timeOrigin +
    /// performance.now()`) runs ahead of the system clock, in ms: the mean difference with
    /// `Date.now()` over 30 ms, less the half millisecond that `Date.now()` truncates on average.
    async fn clock_offset(&self) -> anyhow::Result<f64> {
        let value = self.client.execute(CLOCK_OFFSET, vec![]).await?;
        value.as_f64().context("the clock offset is not a number")
    }
}

/// Measures the clock offset; see [`Windows::clock_offset`].
const CLOCK_OFFSET: &str = "
    const start = performance.now();
    let sum = 0;
    let count = 0;
    while (performance.now() - start < 30) {
        sum += performance.timeOrigin + performance.now() - Date.now();
        count += 1;
    }
    return sum / count - 0.5;";

/// Counts the rows the flood adds to the received list; notes when the first and the last
/// (`arguments[0]` more than were listed before) enter the list and when the last is laid out;
/// counts frames, and in Chromium sums up the long animation frames. State objects, not plain
/// values, on `window`: Firefox runs WebDriver scripts in a sandbox where a later script sees
/// only objects set by an earlier one.
const FLOOD_RECORDER: &str = "
    const list = document.querySelector('[data-testid=received-list]');
    const now = () => performance.timeOrigin + performance.now();
    const state = {
        before: list.querySelectorAll('li').length, count: 0, firstAt: null, lastAt: null,
        paintedAt: null, frames: 0, longestFrameMs: 0, slowFrames: 0, slowFrameMs: 0, loaf: [],
    };
    state.count = state.before;
    const target = state.before + arguments[0];
    const painted = new ResizeObserver(() => {
        if (state.paintedAt === null) state.paintedAt = now();
        painted.disconnect();
    });
    new MutationObserver((records) => {
        for (const record of records) {
            for (const node of record.addedNodes) {
                if (node.nodeName !== 'LI') continue;
                state.count += 1;
                if (state.firstAt === null) state.firstAt = now();
                if (state.lastAt === null && state.count >= target) {
                    state.lastAt = now();
                    painted.observe(node);
                }
            }
            for (const node of record.removedNodes) {
                if (node.nodeName === 'LI') state.count -= 1;
            }
        }
    }).observe(list, { childList: true, subtree: true });
    let previous = performance.now();
    const frame = () => {
        const time = performance.now();
        const gap = time - previous;
        previous = time;
        state.frames += 1;
        state.longestFrameMs = Math.max(state.longestFrameMs, gap);
        if (gap > 50) { state.slowFrames += 1; state.slowFrameMs += gap; }
        if (state.paintedAt === null) requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
    if (PerformanceObserver.supportedEntryTypes.includes('long-animation-frame')) {
        new PerformanceObserver((entries) => {
            for (const entry of entries.getEntries()) {
                const end = entry.startTime + entry.duration;
                state.loaf.push({
                    start: entry.startTime, duration: entry.duration,
                    beforeRender: (entry.renderStart || end) - entry.startTime,
                    callbacks: (entry.styleAndLayoutStart || end) - (entry.renderStart || end),
                    layout: end - (entry.styleAndLayoutStart || end),
                    scripts: entry.scripts.map((script) => [
                        script.invoker || script.invokerType, script.duration,
                        script.forcedStyleAndLayoutDuration,
                    ]),
                });
            }
        }).observe({ type: 'long-animation-frame' });
    }
    window.benchFlood = state;";

/// The fastest of [`FLOOD_RUNS`] floods of one size for each page.
#[derive(Debug)]
struct Floods {
    messages: u64,
    app: FloodResult,
    plain: FloodResult,
}

/// The best run of one page and size, or why none listed everything.
#[derive(Debug)]
struct FloodResult {
    /// The fastest complete run.
    best: Option<Flood>,
    /// Every run's time (None: not listed in full), for the notes.
    runs: Vec<Option<f64>>,
    /// What went wrong in runs that did not list everything.
    problems: Vec<String>,
}

/// One flood, times in ms from the sender's first message.
#[derive(Debug, Clone)]
struct Flood {
    /// Until the last row was laid out.
    listed_ms: f64,
    /// Until the last row entered the list.
    inserted_ms: f64,
    /// Until the first row entered the list.
    first_ms: f64,
    frames: f64,
    longest_frame_ms: f64,
    slow_frame_ms: f64,
    /// Chromium's long animation frames, summed up (see [`loaf_summary`]).
    breakdown: Option<String>,
}

async fn floods(windows: &Windows<'_>) -> anyhow::Result<Vec<Floods>> {
    let mut sizes = Vec::new();
    for messages in FLOODS {
        let empty = || FloodResult { best: None, runs: Vec::new(), problems: Vec::new() };
        let mut results = [empty(), empty()];
        for run in 1..=FLOOD_RUNS {
            for (page, result) in Page::BOTH.into_iter().zip(&mut results) {
                let outcome = flood(windows, page, messages).await?;
                print!(
                    "   {:<8} {:<5} flood of {:>6}, run {run}: ",
                    windows.browser.name(),
                    page.name(),
                    grouped(messages as f64)
                );
                match outcome {
                    Ok(flood) => {
                        println!(
                            "listed in {:.0} ms (inserted {:.0} ms, first row {:.0} ms; {} frames, \
                             longest {:.0} ms){}",
                            flood.listed_ms,
                            flood.inserted_ms,
                            flood.first_ms,
                            flood.frames,
                            flood.longest_frame_ms,
                            flood.breakdown.as_ref().map(|text| format!("; {text}")).unwrap_or_default()
                        );
                        result.runs.push(Some(flood.listed_ms));
                        if result.best.as_ref().is_none_or(|best| flood.listed_ms < best.listed_ms)
                        {
                            result.best = Some(flood);
                        }
                    }
                    Err(problem) => {
                        println!("{problem}");
                        result.runs.push(None);
                        result.problems.push(problem);
                    }
                }
            }
        }
        let [app, plain] = results;
        sizes.push(Floods { messages, app, plain });
    }
    Ok(sizes)
}

/// One flood of `messages` into a fresh relay, listed by `page` in window B. The outer error
/// is a failure of the bench itself; the inner one says how the page failed to list the flood.
async fn flood(
    windows: &Windows<'_>,
    page: Page,
    messages: u64,
) -> anyhow::Result<Result<Flood, String>> {
    let mut relay = windows.relay()?;
    windows.open(&windows.b, page, relay.port).await?;
    windows.check_visible("tab B").await?;
    let client = &windows.client;
    let offset = windows.clock_offset().await?;
    client.execute(FLOOD_RECORDER, vec![json!(messages)]).await?;
    let sender = Sender::start(windows.tools, &relay.url(), messages)?;
    let started = Instant::now();
    let mut last_count = -1.0;
    let mut last_progress = Instant::now();
    let state = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let state = client.execute("return window.benchFlood;", vec![]).await?;
        let count = number(&state, "count");
        if number(&state, "paintedAt").is_finite() {
            break state;
        }
        if count > last_count {
            last_count = count;
            last_progress = Instant::now();
        }
        if last_progress.elapsed() > FLOOD_STALL || started.elapsed() > FLOOD_PATIENCE {
            break state;
        }
    };
    let sent = sender.finish().await;
    relay.check_alive()?;
    let listed = number(&state, "count") - number(&state, "before");
    let sent = match sent {
        Ok(sent) => sent,
        Err(error) => return Ok(Err(format!("the sender failed: {error:#}"))),
    };
    if sent.messages != messages {
        return Ok(Err(format!(
            "the sender sent {} of {} messages",
            grouped(sent.messages as f64),
            grouped(messages as f64)
        )));
    }
    let since_start = |key: &str| number(&state, key) - offset - sent.started_ms;
    if !number(&state, "paintedAt").is_finite() {
        let status = client
            .execute(
                "return document.querySelector('[data-testid=connection-status]').textContent;",
                vec![],
            )
            .await
            .unwrap_or_default();
        return Ok(Err(format!(
            "listed {} of {} after {:.0} s (page status {status}; relay log: {})",
            grouped(listed),
            grouped(messages as f64),
            started.elapsed().as_secs_f64(),
            relay.log_tail()
        )));
    }
    // Only this run's rows: the relay is fresh, and each row must carry the sender's stamp.
    let stamped: f64 = client
        .execute(
            "return Array.from(document.querySelectorAll('[data-testid=received-list] li'))
                .filter((li) => li.textContent.includes('wschat-load ')).length;",
            vec![],
        )
        .await?
        .as_f64()
        .unwrap_or(f64::NAN);
    if stamped != messages as f64 || listed != messages as f64 {
        return Ok(Err(format!(
            "the list holds {} rows, {} of them from the sender, for {} sent",
            grouped(listed),
            grouped(stamped),
            grouped(messages as f64)
        )));
    }
    let painted_at = number(&state, "paintedAt") - performance_origin(client).await?;
    Ok(Ok(Flood {
        listed_ms: since_start("paintedAt"),
        inserted_ms: since_start("lastAt"),
        first_ms: since_start("firstAt"),
        frames: number(&state, "frames"),
        longest_frame_ms: number(&state, "longestFrameMs"),
        slow_frame_ms: number(&state, "slowFrameMs"),
        breakdown: loaf_summary(&state["loaf"], painted_at),
    }))
}

/// `performance.timeOrigin` of the current window, in ms since the Unix epoch.
async fn performance_origin(client: &Client) -> anyhow::Result<f64> {
    let value = client.execute("return performance.timeOrigin;", vec![]).await?;
    value.as_f64().context("performance.timeOrigin is not a number")
}

/// Chromium's long animation frames (over 50 ms) up to `until` (ms on the page's clock), summed
/// up: in all, in tasks before the frame's rendering (socket messages and what they run), in
/// animation-frame and observer callbacks, and in style and layout; and the scripts that ran
/// longest, by what invoked them.
fn loaf_summary(frames: &Value, until: f64) -> Option<String> {
    let frames = frames.as_array().filter(|frames| !frames.is_empty())?;
    let mut totals = [0.0; 4];
    let mut scripts: Vec<(String, f64)> = Vec::new();
    for frame in frames.iter().filter(|frame| number(frame, "start") <= until) {
        for (total, key) in
            totals.iter_mut().zip(["duration", "beforeRender", "callbacks", "layout"])
        {
            *total += number(frame, key);
        }
        for script in frame["scripts"].as_array().into_iter().flatten() {
            let invoker = script[0].as_str().unwrap_or("?").to_owned();
            let duration = script[1].as_f64().unwrap_or(0.0);
            match scripts.iter_mut().find(|(name, _)| *name == invoker) {
                Some((_, sum)) => *sum += duration,
                None => scripts.push((invoker, duration)),
            }
        }
    }
    scripts.sort_by(|a, b| b.1.total_cmp(&a.1));
    let top: Vec<String> =
        scripts.iter().take(3).map(|(name, ms)| format!("{name} {ms:.0} ms")).collect();
    Some(format!(
        "long frames {:.0} ms: tasks {:.0} ms, frame callbacks {:.0} ms, style+layout {:.0} ms \
         (scripts: {})",
        totals[0],
        totals[1],
        totals[2],
        totals[3],
        if top.is_empty() { "none over 5 ms".to_owned() } else { top.join(", ") }
    ))
}

/// A number in a JSON object, NaN when missing or null.
fn number(value: &Value, key: &str) -> f64 {
    value.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// The flood's sender: `wschat-load` with one connection that sends `messages` in the tutorial's
/// JSON as fast as the relay takes them, and no receiver of its own. Not a browser: the flood
/// must not be limited by the sending page.
struct Sender {
    child: std::process::Child,
    reader: tokio::task::JoinHandle<(Option<f64>, Option<Value>)>,
}

/// What the sender did.
struct Sent {
    /// When it began sending, in ms since the Unix epoch.
    started_ms: f64,
    messages: u64,
}

impl Sender {
    fn start(tools: &Tools, url: &str, messages: u64) -> anyhow::Result<Self> {
        let mut child = Command::new(&tools.load)
            .args(["--url", url, "--json", "--protocol", "tutorial", "--connections", "1"])
            .args(["--senders", "1", "--rate", "0", "--drain", "0s"])
            .args(["--messages", &messages.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start wschat-load")?;
        let stdout = child.stdout.take().context("wschat-load's output")?;
        // With no receiver there is no probe: wschat-load prints `connected` and starts sending
        // at once, so the moment that line arrives is the flood's start (within a fraction of
        // a millisecond on an idle pipe; if late, it shortens both pages' times alike).
        let reader = tokio::task::spawn_blocking(move || {
            let mut started = None;
            let mut summary = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(value) = serde_json::from_str::<Value>(&line) else { continue };
                if value["event"] == "connected" && started.is_none() {
                    started = Some(unix_ms());
                } else if value["event"] == "summary" {
                    summary = Some(value);
                }
            }
            (started, summary)
        });
        Ok(Self { child, reader })
    }

    /// Waits (up to a minute) for the sender to end; returns when it started and what it sent.
    async fn finish(mut self) -> anyhow::Result<Sent> {
        let outcome = tokio::time::timeout(Duration::from_secs(60), &mut self.reader).await;
        // Either fails only when it has already exited, which is the goal.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (started, summary) =
            outcome.context("wschat-load did not finish within a minute")??;
        let summary = summary.context("wschat-load printed no summary")?;
        Ok(Sent {
            started_ms: started.context("wschat-load never connected")?,
            messages: summary.pointer("/messages/sent").and_then(Value::as_u64).unwrap_or(0),
        })
    }
}

fn unix_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64() * 1000.0
}

/// In tab A: notes when Enter is pressed in the composer with a sample's text in it, before the
/// page's own handler runs (`arguments[0]` is the run's tag).
const LATENCY_SENDER: &str = "
    const pattern = new RegExp(arguments[0] + '-(\\\\d+) ');
    const state = { sentAt: {} };
    window.addEventListener('keydown', (event) => {
        if (event.key !== 'Enter' || event.shiftKey) return;
        const match = pattern.exec(event.target.value || '');
        if (match) state.sentAt[match[1]] = performance.timeOrigin + performance.now();
    }, true);
    window.benchLatency = state;";

/// In tab B: notes when each sample's row enters the list and when it is laid out; counts
/// frames, to show that the window is drawn at full rate.
const LATENCY_RECEIVER: &str = "
    const pattern = new RegExp(arguments[0] + '-(\\\\d+) ');
    const now = () => performance.timeOrigin + performance.now();
    const list = document.querySelector('[data-testid=received-list]');
    const state = { listedAt: {}, paintedAt: {}, frames: 0, since: performance.now(), until: 0 };
    const painted = new ResizeObserver((entries) => {
        const time = now();
        for (const entry of entries) {
            const match = pattern.exec(entry.target.textContent);
            if (match && !(match[1] in state.paintedAt)) state.paintedAt[match[1]] = time;
            painted.unobserve(entry.target);
        }
    });
    new MutationObserver((records) => {
        const time = now();
        for (const record of records) {
            for (const node of record.addedNodes) {
                if (node.nodeName !== 'LI') continue;
                const match = pattern.exec(node.textContent);
                if (match && !(match[1] in state.listedAt)) {
                    state.listedAt[match[1]] = time;
                    painted.observe(node);
                }
            }
        }
    }).observe(list, { childList: true, subtree: true });
    const frame = () => {
        state.frames += 1;
        state.until = performance.now();
        requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
    window.benchLatency = state;";

/// Tab→tab latencies of both pages, in ms, from Enter in tab A to the row laid out in tab B.
#[derive(Debug, Default)]
struct Latency {
    /// `[app, plain]`: to the row laid out.
    listed: [Vec<f64>; 2],
    /// `[app, plain]`: to the row entering the list.
    inserted: [Vec<f64>; 2],
    /// Tab B's frame rate in each round, frames/s.
    frame_rates: Vec<f64>,
    /// How far apart the two windows' clocks were in each round, ms.
    skews: Vec<f64>,
}

/// [`LATENCY_SAMPLES`] per page in [`LATENCY_ROUNDS`] rounds, the pages taking turns, through
/// one relay (history does not matter here: each sample is found by its own text).
async fn latency(windows: &Windows<'_>) -> anyhow::Result<Latency> {
    let relay = windows.relay()?;
    let mut latency = Latency::default();
    let per_round = LATENCY_SAMPLES / LATENCY_ROUNDS;
    for round in 0..LATENCY_ROUNDS {
        for (index, page) in Page::BOTH.into_iter().enumerate() {
            let tag = format!("lat{}{round}x{}", page.name(), std::process::id());
            let round_figures = latency_round(windows, page, relay.port, &tag, per_round).await?;
            let Round { listed, inserted, frame_rate, skew } = round_figures;
            println!(
                "   {:<8} {:<5} tab→tab, round {}: p50 {:.2} ms, max {:.2} ms (both windows \
                 visible, tab B drawing {frame_rate:.0} frames/s, clocks {skew:+.2} ms apart)",
                windows.browser.name(),
                page.name(),
                round + 1,
                percentile(&listed, 50.0),
                percentile(&listed, 100.0)
            );
            latency.listed[index].extend(listed);
            latency.inserted[index].extend(inserted);
            latency.frame_rates.push(frame_rate);
            latency.skews.push(skew);
        }
    }
    Ok(latency)
}

/// What one round of tab→tab samples measured.
struct Round {
    /// Each sample's latency until its row was laid out in tab B, ms.
    listed: Vec<f64>,
    /// Until its row entered the list, ms.
    inserted: Vec<f64>,
    /// Tab B's animation frames per second during the round.
    frame_rate: f64,
    /// Tab B's clock offset minus tab A's, ms (corrected for).
    skew: f64,
}

/// One round: both windows on `page`, `samples` messages typed in A, each timed until listed
/// in B.
async fn latency_round(
    windows: &Windows<'_>,
    page: Page,
    port: u16,
    tag: &str,
    samples: usize,
) -> anyhow::Result<Round> {
    let client = &windows.client;
    windows.open(&windows.b, page, port).await?;
    client.execute(LATENCY_RECEIVER, vec![json!(tag)]).await?;
    let offset_b = windows.clock_offset().await?;
    windows.open(&windows.a, page, port).await?;
    client.execute(LATENCY_SENDER, vec![json!(tag)]).await?;
    let offset_a = windows.clock_offset().await?;
    windows.check_visible("tab A").await?;
    let composer = client
        .find(Locator::Css("[data-testid=composer]"))
        .await
        .context("tab A has no composer")?;
    for sample in 0..samples {
        composer.send_keys(&format!("{tag}-{sample} latency sample{}", Key::Enter)).await?;
        // Spread over the frame's phase: the samples should not all land at one point of it.
        let pause = 120 + (sample * 37) % 60;
        tokio::time::sleep(Duration::from_millis(pause as u64)).await;
    }
    let sent = client.execute("return window.benchLatency.sentAt;", vec![]).await?;
    client.switch_to_window(windows.b.clone()).await?;
    windows.check_visible("tab B").await?;
    let read = || async { Ok(client.execute("return window.benchLatency;", vec![]).await?) };
    let all_painted = |state: &Value| {
        state["paintedAt"].as_object().is_some_and(|painted| painted.len() >= samples)
    };
    let state = e2e::poll(&format!("{samples} samples listed in tab B"), read, all_painted).await?;
    let frames = number(&state, "frames");
    let seconds = (number(&state, "until") - number(&state, "since")) / 1000.0;
    let mut listed = Vec::new();
    let mut inserted = Vec::new();
    for sample in 0..samples {
        let key = sample.to_string();
        let sent_at = sent.get(&key).and_then(Value::as_f64).with_context(|| {
            format!("tab A noted no Enter for sample {sample} ({})", windows.browser.name())
        })?;
        // Both clocks brought to the system clock before they are compared.
        let since = |at: f64| at - offset_b - (sent_at - offset_a);
        listed.push(since(number(&state["paintedAt"], &key)));
        inserted.push(since(number(&state["listedAt"], &key)));
    }
    Ok(Round { listed, inserted, frame_rate: frames / seconds, skew: offset_b - offset_a })
}

/// The `p`th percentile by nearest rank (100: the largest).
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|value| value.is_finite()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The flood rows of one browser, with their verdicts, and notes on every run.
fn flood_rows(browser: Browser, budgets: &Budgets, floods: &[Floods], table: &mut Table) {
    let name = browser.name();
    let best = |result: &FloodResult| result.best.as_ref().map(|flood| flood.listed_ms);
    for Floods { messages, app, plain } in floods {
        let mut row = Row::new(format!(
            "flood of {} msgs, {name}: until tab B lists all (floor: plain page)",
            grouped(*messages as f64)
        ));
        row.budget = format!("≤ {}× floor", budgets.flood_vs_floor);
        row.wschat = flood_cell(app, *messages);
        row.floor = flood_cell(plain, *messages);
        row.verdict = match (best(app), best(plain)) {
            (Some(app), Some(plain)) => {
                row.ratio = ratio_cell(app / plain, "floor");
                Verdict::check(app <= budgets.flood_vs_floor * plain)
            }
            // The app did not list the flood: missed, whatever the floor did.
            (None, _) => Verdict::Missed,
            (Some(_), None) => Verdict::NotMeasured,
        };
        table.push(row);
    }
    if let [small, large] = floods {
        let growth = |large: &FloodResult, small: &FloodResult| Some(best(large)? / best(small)?);
        let mut row = Row::new(format!(
            "flood of {} ÷ flood of {}, {name}: time ratio (floor: plain page's)",
            grouped(large.messages as f64),
            grouped(small.messages as f64)
        ));
        row.budget = format!("wschat ≤ {}×", budgets.flood_10k_vs_2k);
        let app = growth(&large.app, &small.app);
        let plain = growth(&large.plain, &small.plain);
        row.wschat = app.map_or("n/a".to_owned(), |ratio| format!("{ratio:.2}×"));
        row.floor = plain.map_or("n/a".to_owned(), |ratio| format!("{ratio:.2}×"));
        if let (Some(app), Some(plain)) = (app, plain) {
            row.ratio = ratio_cell(app / plain, "floor");
        }
        row.verdict = match app {
            Some(app) => Verdict::check(app <= budgets.flood_10k_vs_2k),
            None if best(&large.app).is_none() => Verdict::Missed,
            None => Verdict::NotMeasured,
        };
        table.push(row);
    }
    for Floods { messages, app, plain } in floods {
        table.note(flood_note(name, *messages, app, plain));
    }
}

/// Every run of one flood size, and what the fastest runs spent their time on.
fn flood_note(browser: &str, messages: u64, app: &FloodResult, plain: &FloodResult) -> String {
    let runs = |result: &FloodResult| {
        let runs: Vec<String> = result
            .runs
            .iter()
            .map(|run| run.map_or("not listed".to_owned(), |ms| format!("{ms:.0}")))
            .collect();
        runs.join(", ")
    };
    let mut note = format!(
        "{browser}, flood of {}: runs app {} ms, plain page {} ms",
        grouped(messages as f64),
        runs(app),
        runs(plain)
    );
    for (page, result) in [("app", app), ("plain page", plain)] {
        if !result.problems.is_empty() {
            note.push_str(&format!("; {page} not listed: {}", result.problems.join("; ")));
        }
    }
    if let (Some(app), Some(plain)) = (&app.best, &plain.best) {
        note.push_str(&format!(
            "; fastest runs, app / plain page: first row in the list after {:.0} / {:.0} ms, \
             last row in the list after {:.0} / {:.0} ms, {:.0} / {:.0} ms in frames over 50 ms, \
             longest frame {:.0} / {:.0} ms",
            app.first_ms,
            plain.first_ms,
            app.inserted_ms,
            plain.inserted_ms,
            app.slow_frame_ms,
            plain.slow_frame_ms,
            app.longest_frame_ms,
            plain.longest_frame_ms
        ));
        for (page, flood) in [("app", app), ("plain page", plain)] {
            if let Some(breakdown) = &flood.breakdown {
                note.push_str(&format!("; {page}'s {breakdown}"));
            }
        }
    }
    note
}

/// The latency rows of one browser, p50 with its verdict, and a note on how they were taken.
fn latency_rows(browser: Browser, budgets: &Budgets, latency: &Latency, table: &mut Table) {
    let name = browser.name();
    let [app, plain] = &latency.listed;
    for (label, p) in [("p50", 50.0), ("p99", 99.0)] {
        let mut row = Row::new(format!(
            "tab→tab latency {label}, {name}, {} samples (floor: plain page)",
            app.len()
        ));
        let (app_ms, plain_ms) = (percentile(app, p), percentile(plain, p));
        row.wschat = ms_cell(app_ms);
        row.floor = ms_cell(plain_ms);
        row.ratio = ratio_cell(app_ms / plain_ms, "floor");
        if label == "p50" {
            row.budget = format!("≤ {}× floor", budgets.latency_p50_vs_floor);
            row.verdict = Verdict::check(app_ms <= budgets.latency_p50_vs_floor * plain_ms);
        }
        table.push(row);
    }
    let [app_inserted, plain_inserted] = &latency.inserted;
    let lowest_rate = latency.frame_rates.iter().copied().fold(f64::INFINITY, f64::min);
    let widest_skew = latency.skews.iter().map(|skew| skew.abs()).fold(0.0, f64::max);
    table.note(format!(
        "{name}, tab→tab until the row enters the list (before it is laid out): app p50 {}, \
         plain page p50 {}; both windows visible in every round, tab B drawing at least \
         {lowest_rate:.0} frames/s, the windows' clocks at most {widest_skew:.2} ms apart \
         (corrected for)",
        ms_cell(percentile(app_inserted, 50.0)),
        ms_cell(percentile(plain_inserted, 50.0)),
    ));
}

/// The best time of a flood, or that no run listed all of it.
fn flood_cell(result: &FloodResult, messages: u64) -> String {
    match &result.best {
        Some(flood) => format!("{:.0} ms", flood.listed_ms),
        None => format!("not all {} listed", grouped(messages as f64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The budget file in the repository reads, and a mistake in it is named.
    #[test]
    fn budgets_parse() {
        let text = std::fs::read_to_string(process::workspace_root().join(BUDGETS_FILE)).unwrap();
        let budgets = Budgets::parse(&text).unwrap();
        assert_eq!(budgets.first_load_bytes, 92_160.0);
        assert_eq!(budgets.first_load_stretch_bytes, 76_800.0);
        let error = Budgets::parse(&format!("{text}\nfirst_load_kb = 90\n")).unwrap_err();
        assert!(format!("{error:#}").contains("unknown budget first_load_kb"));
        assert!(Budgets::parse("flood_vs_floor = fast").is_err());
    }

    /// Percentiles by nearest rank.
    #[test]
    fn percentiles() {
        let values: Vec<f64> = (1..=40).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 20.0);
        assert_eq!(percentile(&values, 99.0), 40.0);
        assert_eq!(percentile(&[3.0], 50.0), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
