//! Several relays on one Redis, as `--redis` deploys them: a `redis-server` and an HAProxy of the
//! caller's own, each on a free loopback port with a temporary directory of its own (the Debian
//! packages' system services are never used), for the end-to-end failover scenario and the
//! bench's Redis rows.

#[path = "../../relay/tests/common/haproxy.rs"]
mod haproxy;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::process::{self, Background};

/// Where the Debian-packaged command `name` is installed. `Ok(None)` when it is not and nothing
/// requires it (the caller says SKIPPED); an error when `WSCHAT_REQUIRE_REDIS` is set, as
/// `cargo xtask test` does after installing both packages (as in `relay/tests/redis.rs`).
///
/// # Errors
/// When it is missing and required.
pub fn required(name: &str) -> anyhow::Result<Option<PathBuf>> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    if found.is_none() && std::env::var_os("WSCHAT_REQUIRE_REDIS").is_some() {
        bail!("{name} not found, and WSCHAT_REQUIRE_REDIS is set (apt-get install {name})");
    }
    Ok(found)
}

/// A `redis-server` with the settings the README recommends (`appendonly yes`, `appendfsync
/// always`, `noeviction`); killed when dropped, its directory removed.
pub struct RedisServer {
    port: u16,
    _process: Background,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one and waits until it answers PING; `Ok(None)` when `redis-server` is not
    /// installed and not required.
    ///
    /// # Errors
    /// When it is required but missing, or does not start.
    pub fn start() -> anyhow::Result<Option<Self>> {
        let Some(binary) = required("redis-server")? else { return Ok(None) };
        let dir = tempfile::tempdir()?;
        let port = process::free_port()?;
        let mut server = Background::spawn(
            "redis-server",
            Command::new(binary)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .arg("--dir")
                .arg(dir.path())
                .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
                .args(["--maxmemory-policy", "noeviction", "--daemonize", "no"])
                .args(["--logfile", "redis.log"])
                .stdout(Stdio::null()),
        )?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !answers_ping(port) {
            server.check_running()?;
            if Instant::now() > deadline {
                bail!("redis-server did not answer on port {port} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(Self { port, _process: server, _dir: dir }))
    }

    /// The URL for the relays' `--redis`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else { return false };
    let mut reply = [0; 7];
    stream.set_read_timeout(Some(Duration::from_secs(1))).is_ok()
        && stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// An HAProxy in front of relays, configured from the sample `deploy/haproxy.cfg` (round robin,
/// health checks on `/healthz`, a connection refused by a dead relay retried on another); killed
/// when dropped.
pub struct LoadBalancer {
    pub port: u16,
    _process: Background,
    _dir: tempfile::TempDir,
}

impl LoadBalancer {
    /// Starts one in front of `relays` and waits until it listens; `Ok(None)` when `haproxy` is
    /// not installed and not required.
    ///
    /// # Errors
    /// When it is required but missing, the sample cannot be read, or HAProxy does not start.
    pub fn start(relays: &[SocketAddr]) -> anyhow::Result<Option<Self>> {
        let Some(binary) = required("haproxy")? else { return Ok(None) };
        let sample = process::workspace_root().join("deploy/haproxy.cfg");
        let sample = std::fs::read_to_string(&sample)
            .with_context(|| format!("cannot read {}", sample.display()))?;
        let port = process::free_port()?;
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(&config, haproxy::haproxy_config(&sample, port, relays, None))?;
        // -db: in the foreground, so that it is the child that gets killed.
        let mut balancer = Background::spawn(
            "haproxy",
            Command::new(binary).arg("-db").arg("-f").arg(&config).stdout(Stdio::null()),
        )?;
        process::wait_for_port(port, &mut balancer)?;
        Ok(Some(Self { port, _process: balancer, _dir: dir }))
    }
}

/// The body of `GET path` from a server on 127.0.0.1:`port` (HTTP/1.1, no keep-alive).
///
/// # Errors
/// When nothing answers, or not with 200.
pub fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if head.split_whitespace().nth(1) != Some("200") {
        bail!("GET {path} on port {port}: {}", head.lines().next().unwrap_or("no answer"));
    }
    Ok(body.to_owned())
}

/// A relay's `wschat_connections` gauge: the sockets open on it now.
///
/// # Errors
/// When `/metrics` does not answer or has no such line.
pub fn open_sockets(port: u16) -> anyhow::Result<u64> {
    let metrics = http_get(port, "/metrics")?;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("wschat_connections "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
        .context("no wschat_connections in /metrics")
}
