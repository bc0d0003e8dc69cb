//! `cargo xtask test`: every check and test, as stages that all run and are summed up at the end.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::accessibility;
use crate::e2e::{self, Browser, Scenario};
use crate::process::{self, cargo, run, Background};
use crate::relay_control::ControlledRelay;
use crate::setup::{self, Toolset};

/// Runs every stage, prints a summary, and fails if any stage failed.
///
/// # Errors
/// When set-up fails or any stage fails.
pub fn run_all() -> anyhow::Result<()> {
    let started = Instant::now();
    setup::ensure(Toolset::Test)?;
    let mut report = Report::default();

    report.stage("formatting (cargo fmt --check)", || {
        run(cargo().args(["fmt", "--all", "--", "--check"]))
    });
    report.stage("lints, native (clippy -D warnings)", || {
        run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))
    });
    report.stage("lints, wasm32 (clippy -D warnings)", || {
        run(cargo().args([
            "clippy",
            "--package",
            "wschat",
            "--target",
            "wasm32-unknown-unknown",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    });
    report.stage("native tests (cargo test --workspace)", || {
        run(cargo().args(["test", "--workspace"]))
    });

    match BrowserTestRelay::start() {
        Ok(relay) => {
            for browser in Browser::ALL {
                report.stage(&format!("browser tests, {}", browser.name()), || {
                    relay.run_browser_tests(browser)
                });
            }
        }
        Err(error) => report.record("browser tests: start a relay", Err(error), Duration::ZERO),
    }

    // Skips itself (and says so) where Python 2.7 is missing.
    report.stage("WebSocket conformance (Autobahn|Testsuite)", || {
        run(Command::new("bash").arg("scripts/autobahn.sh"))
    });

    report.stage("end-to-end, Chromium: two tabs under trunk serve (the dev server)", || {
        e2e::dev_server(Browser::Chromium)
    });

    let dist = process::workspace_root().join("target/e2e-dist");
    // Every end-to-end stage needs it, so it runs whatever WSCHAT_STAGES says.
    let built =
        report.prerequisite("release build (trunk build --release)", || build_release(&dist));
    for browser in Browser::ALL {
        for scenario in Scenario::ALL {
            let name = format!("end-to-end, {}: {}", browser.name(), scenario.name());
            if built {
                report.stage(&name, || scenario.run(browser, &dist));
            } else {
                report.record(&name, Err(anyhow::anyhow!("no release build")), Duration::ZERO);
            }
        }
    }
    for browser in Browser::ALL {
        let name = format!(
            "accessibility, {}: axe-core, WCAG 2.2 A/AA, light and dark, every view",
            browser.name()
        );
        if built {
            report.stage(&name, || accessibility::run(browser, &dist));
        } else {
            report.record(&name, Err(anyhow::anyhow!("no release build")), Duration::ZERO);
        }
    }
    report.finish(started.elapsed())
}

/// Builds the app for release into `dist` and prints the size of each file, raw and gzipped.
///
/// # Errors
/// When Trunk fails or the output cannot be read.
pub fn build_release(dist: &Path) -> anyhow::Result<()> {
    run(Command::new("trunk")
        .args(["build", "--release", "--dist"])
        .arg(dist)
        .env("TRUNK_SKIP_VERSION_CHECK", "true"))?;
    println!("release build in {}:", dist.display());
    let mut files: Vec<_> = std::fs::read_dir(dist)?.collect::<Result<_, _>>()?;
    files.sort_by_key(std::fs::DirEntry::file_name);
    for file in files {
        let raw = file.metadata()?.len();
        let gzipped = process::output_of(
            Command::new("sh")
                .arg("-c")
                .arg(format!("gzip -9 -c '{}' | wc -c", file.path().display())),
        )
        .and_then(|count| count.trim().parse::<u64>().ok())
        .context("cannot run gzip to measure the bundle")?;
        println!(
            "  {:<40} {:>9} bytes raw {:>9} bytes gzip -9",
            file.file_name().to_string_lossy(),
            raw,
            gzipped
        );
    }
    Ok(())
}

/// A relay for the wasm-bindgen browser tests, a port where nothing listens, and one that
/// accepts connections but never answers them.
struct BrowserTestRelay {
    url: String,
    dead_url: String,
    silent_url: String,
    _relay: Background,
    _silent: std::net::TcpListener,
    /// A second relay, which the tests stop and start (the first one serves concurrent tests).
    restartable: ControlledRelay,
}

impl BrowserTestRelay {
    fn start() -> anyhow::Result<Self> {
        run(cargo().args(["build", "--package", "wschat-relay"]))?;
        let port = process::free_port()?;
        // The test runner serves its pages from a port of its own: another origin.
        let relay = process::start_relay(port, &process::ANY_ORIGIN)?;
        // Never accepted: the kernel completes the TCP handshake, and the request goes unanswered.
        let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
        Ok(Self {
            url: format!("ws://127.0.0.1:{port}/ws"),
            dead_url: format!("ws://127.0.0.1:{}/ws", process::free_port()?),
            silent_url: format!("ws://{}/ws", silent.local_addr()?),
            _relay: relay,
            _silent: silent,
            restartable: ControlledRelay::start()?,
        })
    }

    /// `cargo test --target wasm32-unknown-unknown` in one browser. wasm-bindgen-test-runner
    /// prefers GECKODRIVER when both driver variables are set, so the other one is removed.
    fn run_browser_tests(&self, browser: Browser) -> anyhow::Result<()> {
        let mut command = cargo();
        command
            .args(["test", "--package", "wschat", "--target", "wasm32-unknown-unknown"])
            .args(["--test", "browser"])
            .env("WSCHAT_TEST_RELAY", &self.url)
            .env("WSCHAT_TEST_DEAD_RELAY", &self.dead_url)
            .env("WSCHAT_TEST_SILENT_RELAY", &self.silent_url)
            .env("WSCHAT_TEST_RESTARTABLE_RELAY", &self.restartable.url)
            .env("WSCHAT_TEST_RELAY_CONTROL", &self.restartable.control_url);
        // For developers: only the browser tests whose names contain this.
        if let Ok(filter) = std::env::var("WSCHAT_BROWSER_TESTS") {
            command.args(["--", &filter]);
        }
        match browser {
            Browser::Chromium => {
                command.env_remove("GECKODRIVER").env("CHROMEDRIVER", e2e::CHROMEDRIVER);
            }
            Browser::Firefox => {
                command.env_remove("CHROMEDRIVER").env("GECKODRIVER", e2e::geckodriver()?);
            }
        }
        run(&mut command)
    }
}

/// The outcome of every stage.
struct Report {
    stages: Vec<(String, anyhow::Result<()>, Duration)>,
    /// From `WSCHAT_STAGES`: only stages whose name contains one of its comma-separated parts
    /// run (for developers; CI runs all).
    only: Option<String>,
}

impl Default for Report {
    fn default() -> Self {
        Self { stages: Vec::new(), only: std::env::var("WSCHAT_STAGES").ok() }
    }
}

impl Report {
    /// Runs one stage (unless `WSCHAT_STAGES` leaves it out), records how it went, and returns
    /// whether it passed.
    fn stage(&mut self, name: &str, stage: impl FnOnce() -> anyhow::Result<()>) -> bool {
        let wanted = |only: &str| only.split(',').any(|part| name.contains(part.trim()));
        if self.only.as_deref().is_some_and(|only| !wanted(only)) {
            return true;
        }
        self.prerequisite(name, stage)
    }

    /// Runs a stage that others need, whatever `WSCHAT_STAGES` says.
    fn prerequisite(&mut self, name: &str, stage: impl FnOnce() -> anyhow::Result<()>) -> bool {
        println!("\n=== {name}");
        let started = Instant::now();
        let result = stage();
        let passed = result.is_ok();
        self.record(name, result, started.elapsed());
        passed
    }

    fn record(&mut self, name: &str, result: anyhow::Result<()>, took: Duration) {
        if let Err(error) = &result {
            println!("=== FAILED: {name}: {error:#}");
        }
        self.stages.push((name.to_owned(), result, took));
    }

    fn finish(self, took: Duration) -> anyhow::Result<()> {
        println!("\nSummary ({:.0} s in all):", took.as_secs_f64());
        let mut failed = 0;
        for (name, result, took) in &self.stages {
            let verdict = if result.is_ok() { "ok" } else { "FAILED" };
            failed += usize::from(result.is_err());
            println!("  {verdict:<6} {name} ({:.1} s)", took.as_secs_f64());
        }
        println!("stages: {} passed, {failed} failed", self.stages.len() - failed);
        if let Some(only) = &self.only {
            println!("(only the stages named with {only:?}: WSCHAT_STAGES is set)");
        }
        if failed > 0 {
            bail!("{failed} stage(s) failed");
        }
        Ok(())
    }
}
