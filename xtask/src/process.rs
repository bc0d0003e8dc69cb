//! Child processes: foreground commands that must succeed, background servers that are stopped
//! when dropped, and the free ports they listen on.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The workspace root (the directory above `xtask/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Where `cargo xtask setup` installs the tools from npm (wasm-opt).
pub fn npm_tools_bin() -> PathBuf {
    workspace_root().join("xtask/npm/node_modules/.bin")
}

/// Puts the npm tools, then `$CARGO_HOME/bin` (where `cargo install` puts Trunk and the drivers),
/// first on PATH.
pub fn put_tools_on_path() {
    let cargo_home = std::env::var_os("CARGO_HOME").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
    });
    let mut paths = vec![npm_tools_bin(), cargo_home.join("bin")];
    paths.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    let path = std::env::join_paths(paths).expect("PATH entries contain no separator");
    // Set once, at start-up, before any thread exists.
    std::env::set_var("PATH", path);
}

/// `cargo`, as the one running this task (so the same toolchain builds everything).
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The relay binary built by `cargo build --package wschat-relay`.
pub fn relay_binary() -> PathBuf {
    workspace_root().join("target/debug/wschat-relay")
}

/// Runs a command in the foreground, echoing it first.
///
/// # Errors
/// When it cannot start or exits unsuccessfully.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    println!("$ {}", describe(command));
    let status = command.status().with_context(|| format!("cannot run {}", describe(command)))?;
    if !status.success() {
        bail!("{} failed ({status})", describe(command));
    }
    Ok(())
}

/// Runs a command quietly and returns its standard output, or `None` when it cannot run or fails.
pub fn output_of(command: &mut Command) -> Option<String> {
    let output = command.stderr(Stdio::null()).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

pub fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(command.get_args().map(|arg| arg.to_string_lossy().into_owned()));
    words.join(" ")
}

/// A server running in the background; killed (and reaped) when dropped.
pub struct Background {
    name: String,
    child: Child,
}

impl Background {
    /// Starts `command`, which inherits this terminal's output.
    ///
    /// # Errors
    /// When it cannot start.
    pub fn spawn(name: &str, command: &mut Command) -> anyhow::Result<Self> {
        let child = command.spawn().with_context(|| format!("cannot start {name}"))?;
        Ok(Self { name: name.to_owned(), child })
    }

    /// Fails if the process has already exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("{} exited ({status})", self.name),
            None => Ok(()),
        }
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to the process with `kill`.
    ///
    /// # Errors
    /// When `kill` cannot run or fails.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        run(Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()))
    }

    /// How the process exited, if it has.
    fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Either may fail only because the process already exited, which is the goal.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until either process exits (the other is stopped when dropped).
///
/// # Errors
/// When the one that exited first failed; a clean exit (as on Ctrl-C) is a success.
pub fn wait_for_either(first: &mut Background, second: &mut Background) -> anyhow::Result<()> {
    loop {
        for process in [&mut *first, &mut *second] {
            if let Some(status) = process.exit_status() {
                if !status.success() {
                    bail!("{} stopped ({status})", process.name);
                }
                println!("{} stopped; stopping the rest", process.name);
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1.
///
/// # Errors
/// When no port can be bound at all.
pub fn free_port() -> anyhow::Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until something accepts connections on 127.0.0.1:`port`, while `server` keeps running.
///
/// # Errors
/// When the server exits first, or after a minute.
pub fn wait_for_port(port: u16, server: &mut Background) -> anyhow::Result<()> {
    wait_for_port_within(port, server, Duration::from_secs(60))
}

/// Like [`wait_for_port`], with a deadline of `patience`.
///
/// # Errors
/// When the server exits first, or after `patience`.
pub fn wait_for_port_within(
    port: u16,
    server: &mut Background,
    patience: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + patience;
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        server.check_running()?;
        if Instant::now() > deadline {
            bail!("{} did not listen on port {port} within {patience:?}", server.name);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Relay flags for pages served from elsewhere, such as the wasm test runner's: any origin.
pub const ANY_ORIGIN: [&str; 2] = ["--allow-origin", "*"];

/// Starts the debug relay on 127.0.0.1:`port` with `args`, logging only warnings, and waits until
/// it listens.
///
/// # Errors
/// When it cannot start or exits before listening.
pub fn start_relay<S: AsRef<std::ffi::OsStr>>(port: u16, args: &[S]) -> anyhow::Result<Background> {
    let mut relay = Background::spawn(
        "relay",
        Command::new(relay_binary())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("RUST_LOG", "wschat_relay=warn"),
    )?;
    wait_for_port(port, &mut relay)?;
    Ok(relay)
}
