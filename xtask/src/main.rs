//! `cargo xtask`: wschat's task runner.
//!
//! - `setup`: installs what is missing (wasm32 target, Trunk, wasm-bindgen-cli, and with
//!   `--browsers` Chromium, Firefox and their WebDriver servers). Every other command runs it.
//! - `dev`: the relay on the tutorial's port 5000 plus `trunk serve` on 8080; Ctrl-C stops both.
//! - `dist`: the release build of the app, for `wschat-relay --static dist`.
//! - `test`: every check and test: formatting, lints, native tests, browser tests, end-to-end,
//!   accessibility.
//! - `soak`: a benchmark: 1,000 messages across 5 relay restarts, counting losses and duplicates.
//! - `bench`: a benchmark: the relay beside a bare relay and Node `ws`, the app beside a plain page
//!   in Chromium and Firefox, the first load; every figure a ratio, checked against budgets.
//! - `screenshot`: the end-to-end chat in Chromium, saved as a picture for the README.
//!
//! Modules: `setup` (installs), `process` (child processes and ports), `e2e` (WebDriver
//! scenarios), `accessibility` (axe-core on every view, light and dark), `suite` (the stages of
//! `test`), `relay_control` (a relay the browser tests restart), `nodes` (a Redis and an HAProxy
//! of the caller's own, for relays sharing rooms),
//! `soak` (the soak benchmark), `bench` (the benchmark and its table; `bench/browser.rs` its
//! browser rows).

mod accessibility;
mod bench;
mod e2e;
mod nodes;
mod process;
mod relay_control;
mod setup;
mod soak;
mod suite;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::process::{cargo, run, Background};
use crate::setup::Toolset;

#[derive(Debug, Parser)]
#[command(about = "wschat's task runner", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install whatever is missing to build (and with --browsers, to test) the app.
    Setup {
        /// Also install the browsers and WebDriver servers the tests use.
        #[arg(long)]
        browsers: bool,
    },
    /// Run the relay (port 5000) and `trunk serve` (http://127.0.0.1:8080) until Ctrl-C.
    Dev,
    /// Build the app for release into dist/ (serve it with `wschat-relay --static dist`).
    Dist,
    /// Run every check and test; exits non-zero if any fails.
    Test,
    /// Benchmark: 1,000 messages between two tabs while the relay restarts 5 times; prints lost,
    /// duplicated and out-of-order counts and reconnect times.
    Soak,
    /// Benchmark, all in one run: the relay beside a bare tokio-tungstenite relay (the floor) and
    /// Node `ws` (the peer): fan-out throughput and latency, memory per idle socket, persisted vs
    /// in-memory; the app beside a plain-JavaScript page in Chromium and Firefox: floods of 2,000
    /// and 10,000 messages, tab-to-tab latency; the first load against bench/budgets.toml. Prints
    /// one table and exits non-zero when a budget is missed (WSCHAT_BENCH=NAME,... runs only the
    /// groups whose names contain one of these).
    Bench,
    /// Chat between two tabs in headless Chromium and save tab B as a PNG.
    Screenshot {
        /// Where to write the picture.
        #[arg(default_value = "docs/screenshot.png")]
        output: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = process::workspace_root();
    std::env::set_current_dir(&root).context("cannot enter the workspace root")?;
    process::put_tools_on_path();
    match cli.command {
        Command::Setup { browsers } => {
            setup::ensure(if browsers { Toolset::Test } else { Toolset::Build })
        }
        Command::Dev => dev(),
        Command::Dist => {
            setup::ensure(Toolset::Build)?;
            suite::build_release(&root.join("dist"))
        }
        Command::Test => suite::run_all(),
        Command::Soak => {
            setup::ensure(Toolset::Test)?;
            let dist = root.join("target/e2e-dist");
            suite::build_release(&dist)?;
            run(cargo().args(["build", "--package", "wschat-relay"]))?;
            soak::run(&dist)
        }
        Command::Bench => bench::run(),
        Command::Screenshot { output } => {
            setup::ensure(Toolset::Test)?;
            let dist = root.join("target/e2e-dist");
            suite::build_release(&dist)?;
            e2e::screenshot(&dist, &root.join(output))
        }
    }
}

/// The relay and `trunk serve`, side by side, until either stops (Ctrl-C stops both).
fn dev() -> anyhow::Result<()> {
    setup::ensure(Toolset::Build)?;
    run(cargo().args(["build", "--package", "wschat-relay"]))?;
    let mut relay = Background::spawn(
        "relay",
        std::process::Command::new(process::relay_binary()).args(["--listen", "127.0.0.1:5000"]),
    )?;
    process::wait_for_port(5000, &mut relay)?;
    let mut trunk =
        Background::spawn("trunk serve", std::process::Command::new("trunk").arg("serve"))?;
    println!();
    println!("  wschat: relay on ws://127.0.0.1:5000, app on http://127.0.0.1:8080");
    println!("  Open http://127.0.0.1:8080 in two tabs and chat. Ctrl-C stops both.");
    println!("  (The first build of the app takes a minute or two; Trunk says when it is served.)");
    println!();
    process::wait_for_either(&mut relay, &mut trunk)
}
