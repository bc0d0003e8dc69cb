//! Installs what is missing, idempotently: a second run checks versions and installs nothing.
//!
//! Everything comes from the package registries: Rust crates with `cargo install`, browsers from
//! Debian's packages. Versions are pinned where a mismatch breaks the build.

use std::process::Command;

use anyhow::{bail, Context};

use crate::process::{cargo, output_of, run};

/// Trunk 0.22 needs a newer Rust than these machines have.
const TRUNK_VERSION: &str = "0.21.14";
/// The last geckodriver verified with the Firefox ESR here.
const GECKODRIVER_VERSION: &str = "0.37.1";
/// Debian's packages for the browser tests.
const BROWSER_PACKAGES: [&str; 3] = ["chromium", "chromium-driver", "firefox-esr"];

/// What a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toolset {
    /// Building and serving the app.
    Build,
    /// Building plus the browsers and WebDriver servers the tests drive.
    Test,
}

/// Installs whatever `toolset` needs and is missing.
///
/// # Errors
/// When an install fails.
pub fn ensure(toolset: Toolset) -> anyhow::Result<()> {
    ensure_wasm_target()?;
    ensure_cargo_tool("trunk", &["--locked", "trunk", "--version", TRUNK_VERSION], TRUNK_VERSION)?;
    let bindgen = locked_wasm_bindgen_version()?;
    // Not --locked: wasm-bindgen-cli's own lock file pins a crate version the registry lacks here.
    ensure_cargo_tool("wasm-bindgen", &["wasm-bindgen-cli", "--version", &bindgen], &bindgen)?;
    if toolset == Toolset::Test {
        ensure_debian_packages(&BROWSER_PACKAGES)?;
        ensure_cargo_tool(
            "geckodriver",
            &["--locked", "geckodriver", "--version", GECKODRIVER_VERSION],
            GECKODRIVER_VERSION,
        )?;
    }
    // Trunk builds offline (it must never download tools), so the crates must already be here.
    run(cargo().args(["fetch", "--quiet"]))
}

fn ensure_wasm_target() -> anyhow::Result<()> {
    let installed = output_of(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("rustup is needed to add the wasm32 target")?;
    if !installed.lines().any(|line| line.trim() == "wasm32-unknown-unknown") {
        run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))?;
    }
    Ok(())
}

/// Installs `binary` with `cargo install ARGS` unless `binary --version` already names `version`.
fn ensure_cargo_tool(binary: &str, install_args: &[&str], version: &str) -> anyhow::Result<()> {
    let installed = output_of(Command::new(binary).arg("--version")).unwrap_or_default();
    // The first line only: e.g. "trunk 0.21.14", "wasm-bindgen 0.2.130", "geckodriver 0.37.1 (...)".
    let first_line = installed.lines().next().unwrap_or_default();
    if first_line.split_whitespace().nth(1) == Some(version) {
        return Ok(());
    }
    println!("{binary} {version} is missing (found: {first_line:?}); installing it");
    run(cargo().arg("install").args(install_args))
}

/// The `wasm-bindgen` version in Cargo.lock: the CLI must match it exactly.
fn locked_wasm_bindgen_version() -> anyhow::Result<String> {
    let lock = std::fs::read_to_string("Cargo.lock").context("cannot read Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\"" {
            if let Some(version) = lines.next().and_then(|line| line.strip_prefix("version = ")) {
                return Ok(version.trim_matches('"').to_owned());
            }
        }
    }
    bail!("Cargo.lock has no wasm-bindgen package")
}

fn ensure_debian_packages(packages: &[&str]) -> anyhow::Result<()> {
    if output_of(Command::new("dpkg").arg("-s").args(packages)).is_some() {
        return Ok(());
    }
    if output_of(Command::new("apt-get").arg("--version")).is_none() {
        bail!("install {} with your package manager (apt-get was not found)", packages.join(" "));
    }
    let as_root = output_of(Command::new("id").arg("-u")).is_some_and(|uid| uid.trim() == "0");
    let apt = |args: &[&str]| {
        let mut command = if as_root { Command::new("apt-get") } else { Command::new("sudo") };
        if !as_root {
            command.arg("apt-get");
        }
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    run(&mut apt(&["update"]))?;
    run(apt(&["install", "-y"]).args(packages))
}
