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
/// Debian's packages for the browser tests, and `redis-server` and `haproxy` for the relay's
/// tests on Redis (`relay/tests/redis.rs` starts its own, on free ports with their own files;
/// the packages' system services are not used).
const TEST_PACKAGES: [&str; 5] =
    ["chromium", "chromium-driver", "firefox-esr", "redis-server", "haproxy"];

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
    // apt waits on the network while cargo keeps both cores busy: run them side by side.
    let browsers = (toolset == Toolset::Test)
        .then(|| std::thread::spawn(|| ensure_debian_packages(&TEST_PACKAGES)));
    let started = std::time::Instant::now();
    let tools = ensure_build_tools(toolset);
    if let Some(browsers) = browsers {
        browsers.join().map_err(|_| anyhow::anyhow!("the apt-get thread panicked"))??;
        // Installed now: the Redis (and HAProxy) tests must run, never skip.
        std::env::set_var("WSCHAT_REQUIRE_REDIS", "1");
    }
    tools?;
    // Trunk builds offline (it must never download tools), so the crates must already be here.
    run(cargo().args(["fetch", "--quiet"]))?;
    println!("set-up: everything needed is installed ({:.0} s)", started.elapsed().as_secs_f64());
    Ok(())
}

fn ensure_build_tools(toolset: Toolset) -> anyhow::Result<()> {
    ensure_wasm_target()?;
    ensure_npm_tools()?;
    ensure_cargo_tool("trunk", &["--locked", "trunk", "--version", TRUNK_VERSION], TRUNK_VERSION)?;
    let bindgen = locked_wasm_bindgen_version()?;
    // Not --locked: wasm-bindgen-cli's own lock file pins a crate version the registry lacks here.
    ensure_cargo_tool("wasm-bindgen", &["wasm-bindgen-cli", "--version", &bindgen], &bindgen)?;
    if toolset == Toolset::Test {
        ensure_cargo_tool(
            "geckodriver",
            &["--locked", "geckodriver", "--version", GECKODRIVER_VERSION],
            GECKODRIVER_VERSION,
        )?;
    }
    Ok(())
}

/// The tools from npm (`xtask/npm/package.json`, pinned by its lock file): wasm-opt from a
/// current binaryen, acorn and terser for the JS glue and csso for the CSS (see
/// `xtask/npm/shrink-bundle.mjs`). Their `.bin` is put on PATH by
/// [`crate::process::put_tools_on_path`]. Node.js and npm come from the system (Debian's if
/// missing).
fn ensure_npm_tools() -> anyhow::Result<()> {
    let dir = crate::process::workspace_root().join("xtask/npm");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("package.json"))
            .context("cannot read xtask/npm/package.json")?,
    )?;
    let pinned =
        manifest["dependencies"].as_object().context("package.json has no dependencies")?;
    let installed_version = |name: &str| {
        let path = dir.join("node_modules").join(name).join("package.json");
        let text = std::fs::read_to_string(path).ok()?;
        let installed: serde_json::Value = serde_json::from_str(&text).ok()?;
        installed["version"].as_str().map(str::to_owned)
    };
    let missing: Vec<_> = pinned
        .iter()
        .filter(|(name, version)| installed_version(name).as_deref() != version.as_str())
        .map(|(name, version)| format!("{name}@{}", version.as_str().unwrap_or("?")))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("npm tools missing or at another version: {}; installing them", missing.join(", "));
    if output_of(Command::new("npm").arg("--version")).is_none() {
        ensure_debian_packages(&["nodejs", "npm"])?;
    }
    run(Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--prefix"]).arg(&dir))
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
    let started = std::time::Instant::now();
    // The tools' own release profiles ask for fat LTO and one codegen unit: minutes of build time
    // on two cores for a speed nobody notices in a build tool. One target directory lets the
    // three tools share the dependencies they have in common.
    run(cargo()
        .arg("install")
        .args(install_args)
        .env("CARGO_PROFILE_RELEASE_LTO", "off")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
        .env("CARGO_TARGET_DIR", crate::process::workspace_root().join("target/tools")))?;
    println!("{binary} {version} installed in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
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
